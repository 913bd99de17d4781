"""Package envelopes, statements and the ``.evpkg`` container that carries them.

    >>> import hashlib, tempfile
    >>> from pathlib import Path
    >>> from vault.crypto.age import AgeIdentity
    >>> from vault.crypto.keys import SigningKey
    >>> key, officer = SigningKey.generate(), SigningKey.generate()
    >>> body_key = RecipientKey(officer.public.fingerprint, str(AgeIdentity.generate().recipient))
    >>> escrow = RecipientKey(key.public.fingerprint, str(AgeIdentity.generate().recipient))
    >>> folder = Path(tempfile.mkdtemp())
    >>> (folder / "payload.age").write_bytes(b"age-encrypted bytes")
    19
    >>> envelope = Envelope(
    ...     package_id="PKG-0123456789AB", sender=Party("registry", key.public.fingerprint),
    ...     body="ICC-OTP", recipients=(body_key,), escrow=escrow,
    ...     created_at="2026-11-28T09:00:00Z", payload_size=19,
    ...     payload_sha256=hashlib.sha256(b"age-encrypted bytes").hexdigest(),
    ...     checkpoint="vault.example/custody\\n1\\nAAAA\\n\\n— vault.example/custody AAAA\\n")
    >>> data, signature = sign_envelope(envelope, key)
    >>> write_package(folder / "p.evpkg", data, signature, folder / "payload.age")
    >>> pkg = read_package(folder / "p.evpkg")
    >>> verify_envelope(pkg, [key.public]) == envelope
    True
    >>> with pkg.open_payload() as f:
    ...     f.read()
    b'age-encrypted bytes'
    >>> import shutil; shutil.rmtree(folder)

Three documents live here. The **envelope** is the outside of a package: who sent it, to
which body, encrypted to which keys, and the size and SHA-256 of the encrypted payload. It
travels in clear, so by construction it has no room for titles, descriptions or file names:
every field is an id, a digest, a fingerprint, a time or a signed checkpoint. The
**statement** travels inside the encrypted payload (a BagIt tag file) and lists each item's
bag path, size and SHA-256, and for a derived copy its link to the original
(:class:`ItemLink`: the original's id and SHA-256, the relation, the tool; version 2).
Both are canonical JSON (:func:`~vault.formats.canonical.canonical_json`); those exact bytes
are signed (SSHSIG, namespaces :data:`ENVELOPE_NAMESPACE` and :data:`STATEMENT_NAMESPACE`)
and written, so ``ssh-keygen -Y verify ... < envelope.json`` checks the file as it lies on
disk. Parsing is strict: exact ``type`` and ``version``, every field present with its JSON
type, no unknown field, every value matching its rule, and the bytes in canonical form, so
one document has exactly one byte representation.

The **container** (``.evpkg``) is a POSIX pax tar holding exactly three regular files. In
layout 2, written now, they are ``payload.age``, ``envelope.json`` and
``envelope.json.sig``, in this order: :class:`PackageWriter` writes the payload's tar
header (its size is known in advance), the payload once, straight into the file, and the
envelope that names its digest behind it, taking the file's own SHA-256 as it goes. Layout
1, written before, has ``envelope.json`` and ``envelope.json.sig`` first; both are read
(:data:`LAYOUTS`), and :func:`write_package` writes either from a payload file (copied in
the kernel). Stock ``tar -xf`` unpacks both the same way. :func:`read_package` only reads
headers, the envelope and the signature, so a package of many GiB costs a few seeks.
Every field a constructor receives is checked: a bad
argument is a :class:`~vault.errors.UsageError`, bad bytes being read a
:class:`~vault.errors.VerificationError`.

The package has one job a module, each importing only the modules above it in this list
(its docstring says which):

- :mod:`.rules`: the field rules, limits and ``check_*`` functions every signed document
  shares (receipts and acknowledgements too);
- :mod:`.parties`: :class:`Party` and :class:`RecipientKey`;
- :mod:`.strict`: strict reading of canonical JSON documents, signature and signer checks;
- :mod:`.documents`: the envelope and the statement, signing them, verifying a statement;
- :mod:`.container`: the ``.evpkg`` tar, written and read, and verifying its envelope.

Import the public names below from here; the other formats import the shared rules and
readers from :mod:`.rules` and :mod:`.strict`. What kind of evault file a byte string is
(package, document or signed note) is :mod:`vault.formats.kinds`' job.
"""

from __future__ import annotations

from vault.formats.package.container import (
    ENVELOPE_MEMBER,
    LAYOUT,
    LAYOUTS,
    MAX_ENVELOPE,
    MAX_SIGNATURE,
    MEMBERS,
    PAYLOAD_MEMBER,
    SIGNATURE_MEMBER,
    PackageWriter,
    PayloadSizeError,
    ScannedPackage,
    WrittenContainer,
    hold_package,
    payload_offset,
    read_package,
    verify_envelope,
    write_package,
)
from vault.formats.package.documents import (
    ENVELOPE_NAMESPACE,
    ENVELOPE_TYPE,
    STATEMENT_NAMESPACE,
    STATEMENT_TYPE,
    Envelope,
    ItemLink,
    Statement,
    StatementItem,
    sign_envelope,
    sign_statement,
    verify_statement,
)
from vault.formats.package.parties import Party, RecipientKey
from vault.formats.package.rules import MAX_DOCUMENT

__all__ = [
    "ENVELOPE_MEMBER",
    "ENVELOPE_NAMESPACE",
    "ENVELOPE_TYPE",
    "LAYOUT",
    "LAYOUTS",
    "MAX_DOCUMENT",
    "MAX_ENVELOPE",
    "MAX_SIGNATURE",
    "MEMBERS",
    "PAYLOAD_MEMBER",
    "SIGNATURE_MEMBER",
    "STATEMENT_NAMESPACE",
    "STATEMENT_TYPE",
    "Envelope",
    "ItemLink",
    "PackageWriter",
    "Party",
    "PayloadSizeError",
    "RecipientKey",
    "ScannedPackage",
    "Statement",
    "StatementItem",
    "WrittenContainer",
    "hold_package",
    "payload_offset",
    "read_package",
    "sign_envelope",
    "sign_statement",
    "verify_envelope",
    "verify_statement",
    "write_package",
]
