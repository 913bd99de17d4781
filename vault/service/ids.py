"""Identifiers for items and packages: short, random, unambiguous when read aloud.

    >>> new_id("EV").startswith("EV-") and len(new_id("EV")) == 15
    True

Crockford base32 (no I, L, O, U), 60 random bits: collisions are negligible for any vault,
and an id says nothing about content or order.
"""

from __future__ import annotations

import secrets

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(prefix: str, length: int = 12) -> str:
    """``PREFIX-XXXXXXXXXXXX`` with ``length`` random base32 characters."""
    return prefix + "-" + "".join(secrets.choice(_ALPHABET) for _ in range(length))
