"""Evidence Vault: keep evidence under a verifiable chain of custody and share it confidentially.

    $ evault init && evault identity create registry-office --org "Fictional Ministry"

The package is layered: ``vault.cli`` parses and renders, ``vault.service`` holds the use cases,
and ``vault.store``, ``vault.crypto``, ``vault.custody``, ``vault.formats`` and
``vault.keystore`` do the work underneath.
"""

__version__ = "0.1.0"
