"""The primitives every layer of age shares: HKDF-SHA-256, the file-key and tag sizes, the
injectable randomness source.

Its one job is the building blocks the header, key and payload layers have in common (cf.
filippo.io/age ``primitives.go``). It may import ``cryptography`` and nothing of :mod:`vault`.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

Rng = Callable[[int], bytes]

TAG_SIZE = 16
FILE_KEY_SIZE = 16


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)
