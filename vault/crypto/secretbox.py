"""Passphrase encryption for the key file: scrypt derives the key, AES-256-GCM seals the data.

    >>> salt = new_salt()
    >>> key = derive_key("correct horse", salt, 10)
    >>> open_with_key(seal_with_key(b"secret", key, salt, 10), key)
    b'secret'

The key store (:class:`vault.keystore.FileKeyStore`) derives the key once per process and
file, reads the cost and salt with :func:`box_params`, and seals and opens with the key.

Layout: ``magic(8) || log2(N)(1) || salt(16) || nonce(12) || ciphertext+tag``; the header is
authenticated as associated data, so a changed work factor or salt is refused too.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from vault.errors import DecryptionError

MAGIC = b"EVKEYS1\n"
#: New key files: N = 2**17 (r=8, p=1), about 0.33 s and 128 MiB once per command on the
#: reference machine. The work factor is in each file's header, so files made at 2**15 by
#: earlier versions still open (and keep their cost when rewritten).
DEFAULT_WORK_FACTOR = 17
MAX_WORK_FACTOR = 22


HEADER_LEN = len(MAGIC) + 1 + 16 + 12


_DERIVED: dict[tuple[bytes, int, bytes], bytes] = {}


def derive_key(passphrase: str, salt: bytes, work_factor: int) -> bytes:
    """The AES key for ``passphrase``: the slow step, done once per process and key file.

    The cache lives in this process's memory only (a command is one process; tests and
    long-lived callers open many vault handles) and is keyed by a digest of the passphrase,
    never the passphrase itself.
    """
    import hashlib

    slot = (salt, work_factor, hashlib.sha256(passphrase.encode("utf-8")).digest())
    if slot not in _DERIVED:
        kdf = Scrypt(salt=salt, length=32, n=2**work_factor, r=8, p=1)
        _DERIVED[slot] = kdf.derive(passphrase.encode("utf-8"))
    return _DERIVED[slot]


def new_salt() -> bytes:
    """A fresh scrypt salt."""
    return os.urandom(16)


def box_params(box: bytes) -> tuple[int, bytes]:
    """(work factor, salt) of a box, validated."""
    if len(box) < HEADER_LEN + 16 or not box.startswith(MAGIC):
        raise DecryptionError("key file: not an evault key file, or truncated")
    work_factor = box[len(MAGIC)]
    if not 10 <= work_factor <= MAX_WORK_FACTOR:
        raise DecryptionError("key file: unsupported scrypt work factor")
    return work_factor, box[len(MAGIC) + 1 : len(MAGIC) + 17]


def seal_with_key(plaintext: bytes, key: bytes, salt: bytes, work_factor: int) -> bytes:
    """Seal under an already derived key (a fresh nonce each time)."""
    header = MAGIC + bytes([work_factor]) + salt + os.urandom(12)
    return header + AESGCM(key).encrypt(header[-12:], plaintext, header)


def open_with_key(box: bytes, key: bytes) -> bytes:
    """Open a box with an already derived key."""
    box_params(box)
    try:
        return AESGCM(key).decrypt(box[HEADER_LEN - 12 : HEADER_LEN], box[HEADER_LEN:],
                                   box[:HEADER_LEN])
    except InvalidTag:
        raise DecryptionError("key file: wrong passphrase, or the file is damaged") from None
