"""The use cases: one module a thing a person does with a vault; they own the transactions.

One job: each command's work, start to end, returning data (the command line renders it):
intake, items, packaging (plan, build, send, receipts), export, opening and acknowledging,
custody, audit and witness, identities, bodies, contacts, release rules, doctor. Identities,
bodies, contacts, items, intake and cases, packaging (packages built, sent and shown,
receipts, acknowledgements imported), opening and acknowledging, export, the package sheet,
the reports, release rules, doctor, custody (show, prove, consistency, reanchor) and audit
return frozen dataclasses (``results.Result``: ``to_json()`` is what is printed); the others
still return dicts, to be converted likewise.

May import: ``vault.custody``, ``vault.store``, ``vault.formats``, ``vault.keystore``,
``vault.crypto`` and the modules below them; never the command line, ``click`` or
``vault.render`` (checked by import-linter).
"""
