"""Identifiers for items and packages: short, random, unambiguous when read aloud.

    >>> new_id("EV").startswith("EV-") and len(new_id("EV")) == 15
    True

Crockford base32 (no I, L, O, U), 60 random bits: collisions are negligible for any vault,
and an id says nothing about content or order.
"""

from __future__ import annotations

import re
import secrets

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

_CASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,63}")
_CASE_BAD_PARTS = frozenset({"", ".", ".."})

CASE_ID_RULE = ("1-64 letters, digits, '.', '_', '/' or '-', starting with a letter or digit, "
                "with no empty, '.' or '..' part between '/'")
"""The case-id rule in words, for the messages of intake and of open."""


def is_case_id(text: str) -> bool:
    """True if ``text`` may name a case: short, and no path to climb, whether it was typed
    here or sent by another office (a case id becomes a folder name in exports).

    >>> is_case_id("UA-2026-0042"), is_case_id("UA/2026/0042"), is_case_id("A/../../etc")
    (True, True, False)
    """
    return _CASE.fullmatch(text) is not None and not _CASE_BAD_PARTS & set(text.split("/"))


def new_id(prefix: str, length: int = 12) -> str:
    """``PREFIX-XXXXXXXXXXXX`` with ``length`` random base32 characters."""
    # One draw of 5 bits a character (uniform, as secrets.choice per character would be,
    # which reads the system's random source once a character: ~25 us an id).
    bits = secrets.randbits(5 * length)
    chars = [_ALPHABET[(bits >> (5 * i)) & 31] for i in range(length)]
    return prefix + "-" + "".join(chars)
