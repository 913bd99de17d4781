"""Cryptography, and the only code that imports ``cryptography`` (a ruff rule checks it).

One job: the primitives and specified formats evault builds on, each to its specification
and its published vectors: ``age`` (file encryption, age v1), ``sshsig`` (OpenSSH SSHSIG
signatures), ``keys`` (Ed25519 keys, their OpenSSH lines and fingerprints), ``secretbox``
(the passphrase-sealed key file), ``metabox`` (sealed metadata cells), ``bech32``.

May import: ``cryptography``, the standard library and ``vault.errors``; nothing else of
``vault`` (the import-linter contracts in ``pyproject.toml`` check it).
"""
