"""The age header: recipient stanzas, their text form, the header MAC, strict parsing
(cf. filippo.io/age ``internal/format``).

Its one job is the bytes from the version line up to and including the MAC line. It knows
stanzas as type, arguments and body only; what a stanza means is :mod:`.keys`' job. It may
import :mod:`.errors`, :mod:`.primitives`, :mod:`.byteio` and ``cryptography``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.hmac import HMAC

from vault.crypto.age.byteio import _Lookahead
from vault.crypto.age.errors import AgeHeaderError
from vault.crypto.age.primitives import _hkdf

MAX_HEADER_SIZE = 1 << 20
MAX_STANZAS = 1024

_INTRO = b"age-encryption.org/v1\n"
_VERSION_PREFIX = b"age-encryption.org/"
_COLUMNS = 64

_RAW_B64 = re.compile(rb"[A-Za-z0-9+/]*")
_ARGUMENT = re.compile(rb"[\x21-\x7e]+")


def _b64encode_raw(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _b64decode_raw(text: bytes) -> bytes:
    """Canonical unpadded base64, as the header uses; ValueError for anything else."""
    if len(text) % 4 == 1 or not _RAW_B64.fullmatch(text):
        raise ValueError("not unpadded base64")
    data = base64.b64decode(text + b"=" * (-len(text) % 4))
    # Python ignores the unused low bits of the last character; the spec does not.
    if _b64encode_raw(data) != text:
        raise ValueError("not canonical base64")
    return data


def _header_mac(file_key: bytes, header: bytes) -> HMAC:
    mac = HMAC(_hkdf(file_key, b"", b"header"), hashes.SHA256())
    mac.update(header)
    return mac


@dataclass(frozen=True)
class _Stanza:
    type: str
    args: tuple[str, ...]
    body: bytes

    def encode(self) -> bytes:
        args = " ".join((self.type, *self.args)).encode("ascii")
        text = _b64encode_raw(self.body)
        lines = [text[i : i + _COLUMNS] for i in range(0, len(text), _COLUMNS)]
        if len(text) % _COLUMNS == 0:
            # the body must end with a short line, so a body of full lines gets an empty one
            lines.append(b"")
        return b"-> " + args + b"\n" + b"".join(line + b"\n" for line in lines)


@dataclass(frozen=True)
class _Header:
    stanzas: tuple[_Stanza, ...]
    mac: bytes
    signed: bytes  # the header up to and including "---", which the MAC covers


def _encode_header(file_key: bytes, stanzas: Iterable[_Stanza]) -> bytes:
    """The header for ``stanzas``, MAC line included; ``stanzas`` may be a generator."""
    signed = _INTRO + b"".join(s.encode() for s in stanzas) + b"---"
    mac = _header_mac(file_key, signed).finalize()
    return signed + b" " + _b64encode_raw(mac) + b"\n"


def _parse_header(src: _Lookahead) -> _Header:
    seen = bytearray()

    def line() -> bytes:
        budget = MAX_HEADER_SIZE - len(seen)
        text = src.readline(budget)
        if not text.endswith(b"\n"):
            if len(text) >= budget:
                raise AgeHeaderError("age header: larger than 1 MiB")
            if not seen and not text:
                raise AgeHeaderError("age header: the file is empty")
            raise AgeHeaderError("age header: truncated before the mac line")
        return text

    first = line()
    if first != _INTRO:
        if first == b"age-encryption.org/v1\r\n":
            raise AgeHeaderError("age header: lines end in CRLF, was the file opened as text?")
        if first.startswith(_VERSION_PREFIX):
            raise AgeHeaderError("age header: unsupported version, this reads v1 only")
        raise AgeHeaderError("age header: missing version line 'age-encryption.org/v1'")
    seen += first
    stanzas: list[_Stanza] = []
    while True:
        text = line()
        if text.startswith(b"---"):
            parts = text[:-1].split(b" ")
            if parts[0] != b"---" or len(parts) != 2:
                raise AgeHeaderError("age header: malformed mac line")
            try:
                mac = _b64decode_raw(parts[1])
            except ValueError:
                raise AgeHeaderError("age header: mac is not canonical base64") from None
            if len(mac) != 32:
                raise AgeHeaderError("age header: mac is not 32 bytes")
            if not stanzas:
                raise AgeHeaderError("age header: no recipient stanza")
            return _Header(tuple(stanzas), mac, bytes(seen) + b"---")
        if not text.startswith(b"->"):
            raise AgeHeaderError("age header: line is neither a stanza nor the mac line")
        seen += text
        parts = text[:-1].split(b" ")
        if parts[0] != b"->" or len(parts) < 2 or not all(map(_ARGUMENT.fullmatch, parts[1:])):
            raise AgeHeaderError("age header: malformed stanza line")
        if len(stanzas) == MAX_STANZAS:
            raise AgeHeaderError(f"age header: more than {MAX_STANZAS} stanzas")
        body = bytearray()
        while True:
            text = line()
            seen += text
            if len(text) > _COLUMNS + 1:
                raise AgeHeaderError("age header: stanza body line longer than 64 columns")
            try:
                body += _b64decode_raw(text[:-1])
            except ValueError:
                raise AgeHeaderError("age header: stanza body is not canonical base64") from None
            if len(text) <= _COLUMNS:
                break
        args = tuple(a.decode("ascii") for a in parts[1:])
        stanzas.append(_Stanza(args[0], args[1:], bytes(body)))
