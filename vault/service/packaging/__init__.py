"""Packages for one body: planned, built, sent, and the receipts that record them.

    >>> from vault.service.packaging.plan import plan_package                  # doctest: +SKIP
    >>> from vault.service.packaging.build import build_package                # doctest: +SKIP
    >>> from vault.service.packaging.send import send_package                  # doctest: +SKIP
    >>> draft = plan_package(vault, body_id="ICC-OTP", case="UA-2026-0042")     # doctest: +SKIP
    >>> built = build_package(vault, draft)                                   # doctest: +SKIP
    >>> send_package(vault, built.path, outbox=Path("/mnt/transfer"))           # doctest: +SKIP

One module a job, imported by its own name (this ``__init__`` imports nothing, so a command
loads only the part it runs):

- :mod:`~vault.service.packaging.create`: ``package create`` in one call: plan, build and,
  given an outbox, send.
- :mod:`~vault.service.packaging.plan`: the items, the checks, the checkpoint; a draft.
- :mod:`~vault.service.packaging.build`: the draft's file written, sealed, recorded, named.
- :mod:`~vault.service.packaging.send`: a built package into the outbox, logged as sent.
- :mod:`~vault.service.packaging.receipts`: sharing receipts signed, listed, exported;
  acknowledgements imported.
- :mod:`~vault.service.packaging.records`: the packages recorded, found, listed, shown.
- :mod:`~vault.service.packaging.digest`: a package file's SHA-256 read back, fsynced.

They import the rest of the service layer, ``vault.formats``, ``vault.custody``,
``vault.crypto`` and ``vault.store``, and one another only downwards in that list's order
of use: create imports plan, build, send and records; build and send import plan and records; send
imports receipts; none but create imports build or send.
"""
