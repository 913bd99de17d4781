"""The files that leave the building, written and read strictly: one module a format.

One job: the bytes of each evault document and container, and nothing of a vault's state:
``package`` (envelope, statement, the ``.evpkg`` container), ``receipt`` (sharing receipts
and acknowledgements), ``approval`` (approval requests and approvals), ``card`` (contact
cards), ``bagit`` (RFC 8493 bags), ``case_uco`` (the CASE/UCO JSON-LD export), ``safetar``
(untrusted tar streams), ``canonical`` (the
JSON that is signed), ``kinds`` (which kind of file a byte string is). Every version a
format had is still read (tests prove it).

May import: ``vault.crypto``, ``vault.names``, ``vault.durable`` and ``vault.errors``;
never ``vault.custody``, ``vault.service``, ``vault.store`` or the key store (checked by
import-linter).
"""
