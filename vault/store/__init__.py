"""Where a vault keeps things: its database, its blob store, its folder and sealed columns.

One job: persistence: ``db`` (engines, sessions, schema revisions), ``models`` (the tables),
``sealed`` (metadata sealed at rest, through the ORM), ``blobs`` (the age-encrypted blob
store), ``s3blobs`` (the same blobs on S3-compatible object storage; the only module that
imports ``boto3``, lazily), ``vaultdir`` (the folder and its ``config.toml``).

May import: ``vault.keystore``, ``vault.crypto``, ``vault.durable``, ``vault.faults`` and
``vault.errors`` (and, by the layers, ``vault.formats``); never ``vault.service`` or
``vault.custody`` (checked by import-linter).
"""
