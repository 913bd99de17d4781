"""Sealed metadata values: AES-256-GCM under the vault's metadata key, bound to their cell.

    >>> key = new_key()
    >>> box = seal(key, b"Shelling of the school", "items", "title", "EV-0123456789AB")
    >>> open_value(key, box, "items", "title", "EV-0123456789AB")
    b'Shelling of the school'
    >>> open_value(key, box, "items", "title", "EV-BA9876543210") is None
    True

Layout: ``version(1) || nonce(12) || ciphertext+tag(16)``, a fresh random nonce per value.
The associated data names the format version, the table, the column and the row's id, so a
value copied into another row or column, or from another vault, does not open: the caller
gets ``None`` and names the cell in its error.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1
KEY_SIZE = 32
NONCE_SIZE = 12
OVERHEAD = 1 + NONCE_SIZE + 16

_CIPHERS: dict[bytes, AESGCM] = {}


def new_key() -> bytes:
    """A fresh random 256-bit metadata key."""
    return os.urandom(KEY_SIZE)


def _cipher(key: bytes) -> AESGCM:
    cipher = _CIPHERS.get(key)
    if cipher is None:
        if len(key) != KEY_SIZE:
            raise ValueError("metadata key must be 32 bytes")
        cipher = _CIPHERS[key] = AESGCM(key)
    return cipher


def associated_data(version: int, table: str, column: str, row: str) -> bytes:
    """What a value is bound to: the format version and its cell (table, column, row id)."""
    return b"\0".join(
        (b"evault-metadata", bytes([version]), table.encode(), column.encode(), row.encode())
    )


def seal(key: bytes, plaintext: bytes, table: str, column: str, row: str) -> bytes:
    """Encrypt ``plaintext`` for one cell, with a fresh nonce."""
    nonce = os.urandom(NONCE_SIZE)
    aad = associated_data(VERSION, table, column, row)
    return bytes([VERSION]) + nonce + _cipher(key).encrypt(nonce, plaintext, aad)


def open_value(key: bytes, box: bytes, table: str, column: str, row: str) -> bytes | None:
    """The plaintext of a sealed cell, or None if it is not one sealed for this cell and key."""
    return column_opener(key, table, column)(row, box)


def column_opener(key: bytes, table: str, column: str) -> Callable[[str, bytes], bytes | None]:
    """:func:`open_value` for many cells of one column: ``(row, box) -> plaintext or None``,
    the cipher and the associated data's fixed part made once (a listing opens 100,000)."""
    cipher = _cipher(key)
    prefix = associated_data(VERSION, table, column, "")
    start = 1 + NONCE_SIZE

    def open_cell(row: str, box: bytes) -> bytes | None:
        if len(box) < OVERHEAD or box[0] != VERSION:
            return None
        try:
            return cipher.decrypt(box[1:start], box[start:], prefix + row.encode())
        except InvalidTag:
            return None

    return open_cell


class ColumnBoxes:
    """The boxes of many cells of one column, made ready to open before the key is at hand
    (nonce, ciphertext and associated data cut out: none of it secret), then opened in one
    loop by :meth:`open`, with the outcome of :func:`column_opener` for each: a listing
    prepares 100,000 while the key file's scrypt runs, and opens them once it is done."""

    def __init__(self, table: str, column: str, rows: Sequence[str],
                 boxes: Sequence[bytes | None]) -> None:
        prefix = associated_data(VERSION, table, column, "")
        start = 1 + NONCE_SIZE
        pairs = list(zip(rows, boxes, strict=True))
        try:
            self._cells = [
                None if box is None or len(box) < OVERHEAD or box[0] != VERSION
                else (box[1:start], box[start:], prefix + row.encode())
                for row, box in pairs]
            return
        except UnicodeEncodeError:
            pass  # no row id of a real row: its cell cannot open
        cells: list[tuple[bytes, bytes, bytes] | None] = []
        for row, box in pairs:
            try:
                cells.append(None if box is None or len(box) < OVERHEAD or box[0] != VERSION
                             else (box[1:start], box[start:], prefix + row.encode()))
            except UnicodeEncodeError:
                cells.append(None)
        self._cells = cells

    def open(self, key: bytes) -> list[bytes | None]:
        """The plaintext of each box, in order, or None where a box does not open (or was
        None)."""
        decrypt = _cipher(key).decrypt
        try:
            return [None if cell is None else decrypt(*cell) for cell in self._cells]
        except InvalidTag:
            pass  # some do not open: which, cell by cell
        out: list[bytes | None] = []
        for cell in self._cells:
            try:
                out.append(None if cell is None else decrypt(*cell))
            except InvalidTag:
                out.append(None)
        return out
