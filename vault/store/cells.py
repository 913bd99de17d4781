"""Sealed metadata cells without SQLAlchemy: opening them, and the key store's entry.

    >>> from base64 import b64encode
    >>> from vault.crypto import metabox
    >>> key = metabox.new_key()
    >>> box = metabox.seal(key, b"Shelling of the school", "items", "title", "EV-0123456789AB")
    >>> open_texts(key, "items", "title", ["EV-0123456789AB", "EV-BA9876543210"],
    ...            [b64encode(box), b64encode(box)])
    ['Shelling of the school', None]

The half of :mod:`vault.store.sealed` that a reader of rows through the driver
(:mod:`vault.store.dbapi`) needs too: a text cell holds base64 of a :mod:`vault.crypto.metabox`
box bound to its table, column and row id; :func:`open_texts` opens a whole column's cells
in one loop (a listing of 100,000 items opens 100,000; :class:`SealedTexts` does it in two
steps, the first before the key is at hand), :func:`text_opener` one at a time,
with the same outcome for every input (``tests/test_dbapi.py``). The metadata key lives in
the key store under ``meta:<vault id>`` with a state byte (:func:`read_entry`).

May import: the standard library, :mod:`vault.crypto`, :mod:`vault.keystore`, :mod:`vault.errors`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Any

from vault.crypto import metabox
from vault.errors import KeyMissingError, KeyStoreError, VerificationError
from vault.keystore import KeyStore

#: Key store entry: ``ENTRY_VERSION || state || key``.
ENTRY_VERSION = 1
CONVERTING, SEALED = 0, 1


def key_name(vault_id: str) -> str:
    """The key store's name of a vault's metadata key."""
    return f"meta:{vault_id}"


def read_entry(store: KeyStore, name: str) -> tuple[int, bytes] | None:
    """``(state, key)`` of the metadata key stored under ``name``, or None if there is none;
    a damaged entry is a :class:`KeyStoreError`."""
    try:
        entry = store.get(name)
    except KeyMissingError:
        return None
    if (len(entry) != 2 + metabox.KEY_SIZE or entry[0] != ENTRY_VERSION
            or entry[1] not in (CONVERTING, SEALED)):
        raise KeyStoreError(
            f"key store: entry {name} is damaged; restore the key store from a backup"
        )
    return entry[1], entry[2:]


def no_key(name: str) -> KeyStoreError:
    """The refusal of a vault whose database holds sealed metadata but whose key store has no
    metadata key."""
    return KeyStoreError(
        f"key store: no metadata key {name}, but the database holds sealed "
        "metadata; restore the key store from the backup made with this database"
    )


def row_text(values: Sequence[Any]) -> str:
    """A row's id as bound into the associated data (its id columns joined by NUL)."""
    return "\0".join(str(v) for v in values)


def undecryptable(table: str, row: Sequence[Any], column: str) -> VerificationError:
    """The refusal of a cell that does not open under the vault's metadata key."""
    where = f"{table} {'/'.join(str(v) for v in row)}"
    return VerificationError(
        f"{where}: {column} does not decrypt under this vault's metadata key "
        "(altered, or moved from another row or column); restore the database from a backup"
    )


def text_opener(key: bytes, table: str, column: str) -> Callable[[str, Any], str | None]:
    """``(row id text, stored) -> value``, or None if the stored cell (text, or its bytes as
    :func:`vault.store.sealed.stored_form` selects it) is not a value sealed for this cell."""
    open_box = metabox.column_opener(key, table, column)

    def open_text(row: str, stored: Any) -> str | None:
        try:
            plain = open_box(row, base64.b64decode(stored, validate=True))
            return None if plain is None else plain.decode("utf-8")
        except (binascii.Error, ValueError, TypeError):  # UnicodeDecodeError too
            return None

    return open_text


class SealedTexts:
    """The sealed text cells of one column, made ready to open before the key is at hand
    (base64 decoded, nonces and associated data cut out: see
    :class:`vault.crypto.metabox.ColumnBoxes`), then opened in one loop by :meth:`open`."""

    def __init__(self, table: str, column: str, rows: Sequence[str],
                 stored: Sequence[Any]) -> None:
        boxes: list[bytes | None] = []
        put = boxes.append
        b64 = base64.b64decode
        for cell in stored:
            if cell is None:
                put(None)
                continue
            try:
                put(b64(cell, validate=True))
            except (binascii.Error, ValueError, TypeError):
                put(b"")  # never a box: opens to None
        self._boxes = metabox.ColumnBoxes(table, column, rows, boxes)

    def open(self, key: bytes) -> list[str | None]:
        """:func:`text_opener`'s value of each cell, in order: None where a cell does not
        open (a None cell stays None)."""
        plain = self._boxes.open(key)
        try:
            return [None if p is None else p.decode("utf-8") for p in plain]
        except UnicodeDecodeError:
            pass  # some are not text: which, cell by cell
        out: list[str | None] = []
        for value in plain:
            try:
                out.append(None if value is None else value.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(None)
        return out


def open_texts(key: bytes, table: str, column: str, rows: Sequence[str],
               stored: Sequence[Any]) -> list[str | None]:
    """:func:`text_opener` over a column: the value of each ``stored`` cell of the row whose
    id text is in ``rows`` at the same place (None where a cell does not open; a None cell
    stays None)."""
    return SealedTexts(table, column, rows, stored).open(key)
