"""What ids and names may look like: one :class:`Rule` for each kind, used by every layer.

    >>> CASE_ID.matches("UA-2026-0042"), CASE_ID.matches("A/../../etc")
    (True, False)
    >>> PACKAGE_ID.check("PKG-12", "envelope: package_id")
    Traceback (most recent call last):
    ...
    vault.errors.UsageError: envelope: package_id must be 'PKG-' and 12 crockford base32 characters

One job: each rule's pattern (the whole string must match), the rule in words that error
messages quote, and one check that refuses a value with the message its callers have
always given. Case ids, identity and body names, labels and tag keys as typed here, and the
ids and names a signed document carries (:mod:`vault.formats.package`) live here, so that
intake, open, the key and body commands and the document readers cannot drift apart.

A name typed at ``identity create`` or ``body add`` (:data:`IDENTITY_NAME`,
:data:`NEW_BODY_ID`) follows the same pattern as the document rules (:data:`PARTY_NAME`,
:data:`BODY_ID`): a name accepted here can always be signed into a document.

Imports: :mod:`vault.errors` only, so that every layer may import it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from vault.errors import UsageError

CROCKFORD_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
"""Crockford base32 (no I, L, O, U): the characters of a random id (``vault.service.ids``)."""

_CROCKFORD12 = "[0-9A-HJKMNP-TV-Z]{12}"  # 12 characters of CROCKFORD_ALPHABET


@dataclass(frozen=True)
class Rule:
    """A kind of id or name: its pattern, the rule in words, and the refusal's wording.

    ``refusal`` is formatted with ``where`` (what the caller names the value), ``value``
    and ``text``; ``also`` is a further test a value that matches must pass.
    """

    pattern: re.Pattern[str]
    text: str
    refusal: str = "{where} must be {text}"
    also: Callable[[str], bool] | None = None

    def matches(self, value: object) -> bool:
        """True if ``value`` is a string this rule accepts."""
        if not isinstance(value, str) or self.pattern.fullmatch(value) is None:
            return False
        return self.also is None or self.also(value)

    def check(self, value: object, where: str = "") -> None:
        """Refuse ``value`` with a :class:`~vault.errors.UsageError` unless it matches."""
        if not self.matches(value):
            raise UsageError(self.refusal.format(where=where, value=value, text=self.text))


# -- ids made here (vault.service.ids.new_id), as a signed document carries them ------------

PACKAGE_ID = Rule(re.compile("PKG-" + _CROCKFORD12), "'PKG-' and 12 crockford base32 characters")
ITEM_ID = Rule(re.compile("EV-" + _CROCKFORD12), "'EV-' and 12 crockford base32 characters")
RECEIPT_ID = Rule(re.compile("RCP-" + _CROCKFORD12), "'RCP-' and 12 crockford base32 characters")
APPROVAL_REQUEST_ID = Rule(re.compile("APR-" + _CROCKFORD12),
                           "'APR-' and 12 crockford base32 characters")

# -- names as a signed document carries them -------------------------------------------------

BODY_ID = Rule(re.compile("[A-Z0-9][A-Z0-9._-]{0,63}"),
               "a body id such as ICC-OTP (A-Z, 0-9, '._-')")
PARTY_NAME = Rule(re.compile("[A-Za-z0-9][A-Za-z0-9._-]{0,63}"),
                  "an identity name (A-Z, a-z, 0-9, '._-')")

# -- names as typed here ---------------------------------------------------------------------

IDENTITY_NAME = Rule(
    re.compile("[A-Za-z0-9][A-Za-z0-9._-]{0,63}"),
    "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
    "{where} name {value!r}: use {text}",
)
NEW_BODY_ID = Rule(
    re.compile("[A-Z0-9][A-Z0-9._-]{0,63}"),
    "1-64 capitals, digits, '.', '_' or '-'",
    "body id {value!r}: use {text} (e.g. ICC-OTP)",
)

_CASE_BAD_PARTS = frozenset({"", ".", ".."})

CASE_ID = Rule(
    re.compile("[A-Za-z0-9][A-Za-z0-9._/-]{0,63}"),
    "1-64 letters, digits, '.', '_', '/' or '-', starting with a letter or digit, "
    "with no empty, '.' or '..' part between '/'",
    "case id {value!r}: use {text} (e.g. UA-2026-0042)",
    # Short, and no path to climb, whether typed here or sent by another office: a case id
    # becomes a folder name in exports.
    also=lambda text: not _CASE_BAD_PARTS & set(text.split("/")),
)
LABEL = Rule(
    re.compile("[a-z0-9][a-z0-9._-]{0,63}"),
    "lowercase letters, digits, '.-_'",
    "{where}: label {value!r} must be {text}",
)
"""A handling label, such as ``restricted-icc`` (release rules name them)."""

TAG_KEY = Rule(re.compile("[A-Za-z0-9][A-Za-z0-9._-]{0,63}"), "a simple key")
"""The key of a ``KEY=VALUE`` tag."""

# -- derived copies --------------------------------------------------------------------------

RELATIONS = ("redacted", "translation", "transcript", "excerpt", "transcode")
"""How a derived copy relates to the item it was made from (``ingest --relation``); a
package's statement carries the same words (:class:`vault.formats.package.ItemLink`), and a
release rule may require a body to get such a copy instead of the original."""

MAX_TOOL = 128

DERIVATION_TOOL = Rule(
    re.compile(".+"),
    f"one printable line of at most {MAX_TOOL} bytes, such as \"redactor 2.1\"",
    # isprintable() first: a lone surrogate does not encode.
    also=lambda text: (text.isprintable() and bool(text.strip())
                       and len(text.encode("utf-8")) <= MAX_TOOL),
)
"""The tool that made a derived copy (``name version``), as typed and as a statement
carries it."""
