"""The custody log's formats and checks: events, the Merkle tree, checkpoints, notes.

One job: what a custody log is and how it is checked, without a database: ``events`` (the
signed bytes of an event), ``merkle`` (RFC 9162 hashes and proofs), ``note`` (C2SP signed
notes and checkpoints), ``cosignature`` (C2SP cosignatures), ``verify`` (the checks of
``evault custody verify`` on the rows and keys it is given). Reading and appending the log
of a vault is ``vault.service.custody``'s.

May import: ``vault.formats``, ``vault.crypto``, ``vault.clock`` and ``vault.errors``; never
``vault.service``, ``vault.store`` or SQLAlchemy (checked by import-linter).
"""
