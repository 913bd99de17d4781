"""``evault items list`` as a table or CSV, read without SQLAlchemy (issue 23).

    >>> table = list_item_columns(Path("office-vault"), case="UA-2026-0042")  # doctest: +SKIP
    >>> table["id"], table["name"]                                            # doctest: +SKIP
    (['EV-0123456789AB'], ['statement.pdf'])

The listing people run most, and the one that must start fast: the rows come through the
database driver (:class:`vault.store.dbapi.Reader`), not the ORM, whose import alone costs
more than the whole listing of an empty vault should, and go out column by column, not as
an object a row. The one sealed value shown, the file name, is opened for the whole column
in one loop (:class:`vault.store.cells.SealedTexts`); the key file's scrypt runs on a helper
thread while the rows are still being read and laid out
(:meth:`vault.keystore.KeyStore.prepare`). What the listing shows, refuses and says is
that of the ORM's path it replaces, which ``--json`` still takes
(:func:`vault.service.items.list_items`, every sealed value opened); the tests compare the
two.

A vault whose metadata is not settled -- an older vault's rows not yet sealed, or its key
store's entry not yet marked sealed after a crash -- is settled first through the ORM, as
any command would (:func:`vault.store.sealed.settle`).

May import: :mod:`vault.store.dbapi`, :mod:`vault.store.cells`, :mod:`vault.store.vaultdir`,
:mod:`vault.keystore`, :mod:`vault.clock`, :mod:`vault.errors`, and, only to settle a vault,
:mod:`vault.service.vaults` and :mod:`vault.store.sealed`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from vault.clock import isoformat
from vault.errors import NotFoundError
from vault.keystore import KeyStore, PassphrasePrompt, open_keystore
from vault.store.dbapi import ITEM_NAME, NotATime, Reader, row_name
from vault.store.vaultdir import VaultConfig, load_config, resolve

#: The columns of the table and CSV of ``items list``.
ITEM_COLUMNS = ("id", "case", "name", "size", "sha256", "labels", "ingested_at")


def list_item_columns(vault_dir: Path | str | None, *, case: str | None = None,
                      label: str | None = None,
                      prompt: PassphrasePrompt | None = None) -> dict[str, list[Any]]:
    """The items of the vault at ``vault_dir`` (None: the default vault), optionally of one
    case and/or with one label, in ingest order, column by column: each of
    :data:`ITEM_COLUMNS` -> its values, one an item (100,000 items make no row objects). Of
    the sealed metadata only the file name is opened. ``prompt`` asks for the key file's
    passphrase, if one is needed and not in the environment."""
    root = resolve(vault_dir)
    config = load_config(root)
    listing = _Listing(root, config, prompt)
    reader = Reader.open(root, config.database)
    try:
        with reader.transaction():
            settled = reader.sealed()
        if not settled:
            listing.key = _settle(root, config, prompt, None)
        with reader.transaction():
            if case is not None and not reader.has_case(case):
                raise NotFoundError(f"case {case}: not found; see `evault case list`")
            labels: dict[str, list[str]] = {}
            for batch in reader.item_labels(case, label):
                for item_id, name in batch:
                    labels.setdefault(item_id, []).append(name)
            rows: list[Any] = []
            for batch in reader.item_rows(case, label):
                if listing.key is None and listing.store is None and any(
                        r[2] is not None for r in batch):
                    listing.start()  # the key file's scrypt, while the rest is read
                rows += batch
    finally:
        reader.close()
    # Everything but the file names is made first: the key file's scrypt may still be
    # running on its thread.
    ids = [r[0] for r in rows]
    times: dict[Any, str] = {}
    for row in rows:
        if row[5] not in times:
            times[row[5]] = time_text(row[0], row[5])
    columns: dict[str, list[Any]] = {
        "id": ids, "case": [r[1] for r in rows], "name": [],
        "size": [r[3] for r in rows], "sha256": [r[4] for r in rows],
        "labels": [labels.get(i, ()) for i in ids],
        "ingested_at": [times[r[5]] for r in rows],
    }
    columns["name"] = listing.open_names(ids, [r[2] for r in rows])
    return columns


def list_item_rows(vault_dir: Path | str | None, *, case: str | None = None,
                   label: str | None = None,
                   prompt: PassphrasePrompt | None = None) -> list[dict[str, Any]]:
    """:func:`list_item_columns` as rows of :data:`ITEM_COLUMNS`."""
    columns = list_item_columns(vault_dir, case=case, label=label, prompt=prompt)
    return [dict(zip(ITEM_COLUMNS, values, strict=True))
            for values in zip(*(columns[c] for c in ITEM_COLUMNS), strict=True)]


def time_text(item: Any, stored: Any, column: str = "ingested_at") -> str:
    """A time of an item's row as the driver gives it, as a listing prints it: SQLite's text
    read as SQLAlchemy reads it (``datetime.fromisoformat``; naive is UTC), PostgreSQL's
    datetime as it is; one that is not a time (SQL outside evault wrote it) refuses the
    listing, naming the item and the column. The ORM's path (``--json``,
    :func:`vault.service.items.list_items`) reads its times through this too."""
    try:
        return isoformat(stored if isinstance(stored, datetime)
                         else datetime.fromisoformat(stored))
    except (ValueError, TypeError, OverflowError):  # overflow: past year 1 or 9999 in UTC
        raise NotATime("items", column, row=row_name("items", (item,))) from None


class _Listing:
    """The metadata key of one listing: fetched once a sealed cell is met."""

    def __init__(self, root: Path, config: VaultConfig, prompt: PassphrasePrompt | None):
        self.root, self.config, self.prompt = root, config, prompt
        self.store: KeyStore | None = None
        self.key: bytes | None = None

    def start(self) -> None:
        """Open the key store and start its slow part in the background."""
        self.store = open_keystore(self.root, self.config.vault_id, self.config.key_storage,
                                   prompt=self.prompt)
        self.store.prepare()

    def _key(self) -> bytes:
        from vault.store import cells  # and cryptography: only once a sealed cell is met

        if self.key is None:
            if self.store is None:
                self.start()
            assert self.store is not None
            name = cells.key_name(self.config.vault_id)
            entry = cells.read_entry(self.store, name)
            if entry is None:
                raise cells.no_key(name)
            state, key = entry
            # Marked sealed in the database, not yet in the key store (a crash after the
            # conversion committed): the ORM's path marks it, as any command does.
            self.key = key if state == cells.SEALED else _settle(
                self.root, self.config, self.prompt, self.store)
        return self.key

    def open_names(self, ids: list[Any], stored: list[Any]) -> list[str | None]:
        """The file names ``stored`` for the items ``ids``, opened; a cell that does not
        open is refused, naming its row."""
        if all(s is None for s in stored):
            return [None] * len(stored)
        from vault.store import cells

        ids = list(map(str, ids))
        column = cells.SealedTexts(*ITEM_NAME, ids, stored)  # before the key: see start()
        names = column.open(self._key())
        for item_id, cell, name in zip(ids, stored, names, strict=True):
            if name is None and cell is not None:
                raise cells.undecryptable(ITEM_NAME[0], (item_id,), ITEM_NAME[1])
        return names


def _settle(root: Path, config: VaultConfig, prompt: PassphrasePrompt | None,
            store: KeyStore | None) -> bytes:
    """Settle the vault's metadata key through the ORM (convert an older vault's rows, mark
    the key store's entry) and return the key."""
    from vault.service.vaults import open_vault
    from vault.store.sealed import settle

    vault = open_vault(root, prompt=prompt, keystore=store)
    try:
        with vault.transaction() as session:
            return settle(session)
    finally:
        vault.close()
