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


def open_many(key: bytes, table: str, column: str, rows: Sequence[str],
              boxes: Sequence[bytes | None]) -> list[bytes | None]:
    """:func:`column_opener` over a whole column in one loop: the plaintext of each box for
    the row at the same place in ``rows``, or None (a None box, or one that does not open)."""
    decrypt = _cipher(key).decrypt
    prefix = associated_data(VERSION, table, column, "")
    start = 1 + NONCE_SIZE
    out: list[bytes | None] = []
    put = out.append
    for row, box in zip(rows, boxes, strict=True):
        if box is None or len(box) < OVERHEAD or box[0] != VERSION:
            put(None)
            continue
        try:
            put(decrypt(box[1:start], box[start:], prefix + row.encode()))
        except InvalidTag:
            put(None)
    return out
