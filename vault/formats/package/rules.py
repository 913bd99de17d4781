"""Field rules: what each value in a document that leaves the vault may look like.

One job: the limits, patterns and ``check_*`` functions shared by every signed document
(envelope, statement, sharing receipt, acknowledgement, approval request, approval). Every
value in these documents is an id, a digest, a fingerprint, a time or a short identifier,
but for a few one-line texts (:func:`check_line`: a reference, a purpose, a reason); these
rules keep free text (titles, descriptions, file names) out of what travels in clear. A
value that breaks a rule is a :class:`~vault.errors.UsageError` (a reader turns it into a
:class:`~vault.errors.VerificationError`, :func:`vault.formats.package.strict.reading`).

The rules for ids and names (``PACKAGE_ID``, ``ITEM_ID``, ``RECEIPT_ID``,
``APPROVAL_REQUEST_ID``, ``BODY_ID``, ``PARTY_NAME``) are :mod:`vault.names`', shared with
the rest of the vault.

Imports: :mod:`vault.errors` only (the bottom layer of :mod:`vault.formats.package`).
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Collection
from typing import Any

from vault.errors import UsageError

FORMAT_VERSION = 1

MAX_DOCUMENT = 16 * 1024 * 1024
MAX_CHECKPOINT = 1024 * 1024  # what vault.custody.note accepts as a signed note
MAX_REFERENCE = 256
MAX_INTEGER = 2**53  # the largest integer canonical JSON carries exactly
MAX_TIMESTAMPS = 8  # RFC 3161 tokens a document carries over its checkpoint
MAX_TIMESTAMP = 64 * 1024  # bytes of one token (a TSA's answer is a few kB)

# -- field rules ---------------------------------------------------------------------------
#
# Every value in these documents is an id, a digest, a fingerprint, a time or a short
# identifier: the rules below are what keeps free text (titles, descriptions, file names)
# out of what travels in clear.

# The ids and names (package, item and receipt ids, body ids, party names) are
# vault.names' rules, shared with the commands that make them.
SHA256_RULE = re.compile("[0-9a-f]{64}")
FINGERPRINT_RULE = re.compile("SHA256:[A-Za-z0-9+/]{43}")
TIME_RULE = re.compile("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_NOTE_SIGNATURE_PREFIX = "\u2014 "  # EM DASH, space: a signed note's signature lines


def fail(where: str, rule: str) -> UsageError:
    return UsageError(f"{where} must be {rule}")


def check_rule(value: object, rule: re.Pattern[str], where: str, says: str) -> None:
    if not isinstance(value, str) or rule.fullmatch(value) is None:
        raise fail(where, says)


def check_sha256(value: object, where: str) -> None:
    check_rule(value, SHA256_RULE, where, "a sha-256 digest in 64 lowercase hex digits")


def check_fingerprint(value: object, where: str) -> None:
    says = "a 'SHA256:' fingerprint with 43 base64 characters"
    check_rule(value, FINGERPRINT_RULE, where, says)
    assert isinstance(value, str)
    # 43 characters hold 258 bits; only the encoding of a 32-byte digest can ever match a key.
    try:
        digest = base64.b64decode(value[7:] + "=", validate=True)
    except binascii.Error:
        raise fail(where, says) from None
    if base64.b64encode(digest).decode("ascii").rstrip("=") != value[7:]:
        raise fail(where, says)


def check_time(value: object, where: str) -> None:
    says = "a utc time written YYYY-MM-DDTHH:MM:SSZ"
    check_rule(value, TIME_RULE, where, says)
    assert isinstance(value, str)
    try:
        time.strptime(value, TIME_FORMAT)
    except ValueError:
        raise fail(where, says) from None


def check_size(value: object, where: str) -> None:
    if type(value) is not int or not 0 <= value <= MAX_INTEGER:
        raise fail(where, f"an integer from 0 to {MAX_INTEGER}")


def check_text(value: object, where: str, *, limit: int) -> str:
    if not isinstance(value, str):
        raise fail(where, "a string")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        raise fail(where, "valid unicode text (no lone surrogates)") from None
    if len(encoded) > limit:
        raise UsageError(f"{where} is longer than {limit} bytes")
    return value


def check_line(value: object, where: str, *, limit: int = MAX_REFERENCE) -> str:
    """One line of printable text, at most ``limit`` UTF-8 bytes: a reference, a purpose or
    a reason, the few free-text fields a document carries."""
    text = check_text(value, where, limit=limit)
    # One line of printable text: it is shown in reports and must not forge other lines.
    if not text or text != text.strip() or any(_is_control(c) for c in text):
        raise fail(where, "one line of text without control characters or outer spaces")
    return text


def _is_control(ch: str) -> bool:
    code = ord(ch)
    return code < 0x20 or 0x7F <= code < 0xA0 or code in (0x2028, 0x2029)


def looks_like_note(text: str) -> bool:
    """A signed note's shape: text, a blank line, then only ``— `` signature lines."""
    if not text.endswith("\n"):
        return False
    body, blank, signatures = text[:-1].rpartition("\n\n")
    if not blank or not body:
        return False
    return all(
        line.startswith(_NOTE_SIGNATURE_PREFIX) and len(line) > len(_NOTE_SIGNATURE_PREFIX)
        for line in signatures.split("\n")
    )


def check_checkpoint(value: object, where: str) -> None:
    # The checkpoint is opaque here (formats does not import custody); only its shape and
    # size are checked, so that nothing else can ride in this one long string.
    text = check_text(value, where, limit=MAX_CHECKPOINT)
    if not looks_like_note(text):
        raise fail(where, "a signed note (text, a blank line, then '— ' signature lines)")


def check_timestamps(value: object, where: str) -> None:
    """RFC 3161 tokens over a document's checkpoint: 1 to 8 strings, each the canonical
    base64 of at most 64 KiB (what they are is checked where trust is decided)."""
    if (not isinstance(value, tuple) or not value or len(value) > MAX_TIMESTAMPS
            or not all(isinstance(v, str) for v in value)):
        raise fail(where, f"a list of 1 to {MAX_TIMESTAMPS} base64 RFC 3161 tokens")
    for i, text in enumerate(value):
        try:
            der = base64.b64decode(text, validate=True)
        except binascii.Error:
            raise fail(f"{where}[{i}]", "base64") from None
        if not der or len(der) > MAX_TIMESTAMP or base64.b64encode(der).decode() != text:
            raise fail(f"{where}[{i}]", f"canonical base64 of 1 to {MAX_TIMESTAMP} bytes")


def check_header(
    doc: object, where: str, expected_type: str, versions: Collection[int] = (FORMAT_VERSION,)
) -> None:
    fmt = getattr(doc, "format", None)
    version = getattr(doc, "version", None)
    if fmt != expected_type:
        raise fail(f"{where}: format", repr(expected_type))
    if type(version) is not int or version not in versions:
        raise fail(f"{where}: version", " or ".join(str(v) for v in sorted(versions)))


def check_tuple(value: object, cls: type, where: str, *, nonempty: bool = True) -> None:
    if not isinstance(value, tuple) or not all(isinstance(v, cls) for v in value):
        raise fail(where, f"a tuple of {cls.__name__}")
    if nonempty and not value:
        raise UsageError(f"{where} must not be empty")



def check_unique_ids(items: tuple[Any, ...], where: str) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise UsageError(f"{where}: item {item.id} is listed twice")
        seen.add(item.id)

