"""New identifiers for items, packages, receipts and approval requests: short, random,
unambiguous when read aloud.

    >>> new_id("EV").startswith("EV-") and len(new_id("EV")) == 15
    True

Crockford base32 (no I, L, O, U), 60 random bits: collisions are negligible for any vault,
and an id says nothing about content or order. What an id may look like is
:mod:`vault.names`' (``PACKAGE_ID``, ``ITEM_ID``, ``RECEIPT_ID``,
``APPROVAL_REQUEST_ID``).
"""

from __future__ import annotations

import secrets

from vault.names import CROCKFORD_ALPHABET as _ALPHABET


def new_id(prefix: str, length: int = 12) -> str:
    """``PREFIX-XXXXXXXXXXXX`` with ``length`` random base32 characters."""
    # One draw of 5 bits a character (uniform, as secrets.choice per character would be,
    # which reads the system's random source once a character: ~25 us an id).
    bits = secrets.randbits(5 * length)
    chars = [_ALPHABET[(bits >> (5 * i)) & 31] for i in range(length)]
    return prefix + "-" + "".join(chars)
