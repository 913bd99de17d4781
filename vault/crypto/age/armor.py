"""The ASCII armor of age files (``-----BEGIN AGE ENCRYPTED FILE-----``, strict RFC 7468,
64 columns): a streaming encoder, a streaming strict decoder, and telling armored input from
binary (cf. filippo.io/age ``armor``).

Its one job is the armor; it never looks inside the age file it wraps beyond the version
prefix. It may import :mod:`.errors`, :mod:`.byteio` and :mod:`.header` (the column width and
the version prefix).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import BinaryIO

from vault.crypto.age.byteio import _fill_from, _Lookahead, _write_all
from vault.crypto.age.errors import AgeArmorError
from vault.crypto.age.header import _COLUMNS, _VERSION_PREFIX

_ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
_ARMOR_END = b"-----END AGE ENCRYPTED FILE-----"
_BYTES_PER_LINE = _COLUMNS // 4 * 3
_MAX_ARMOR_WHITESPACE = 1024
_WHITESPACE = frozenset(b" \t\r\n\v\f")

_FULL_LINES_B64 = re.compile(rb"[A-Za-z0-9+/]+")
_PADDED_B64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")


def _b64decode_padded(text: bytes) -> bytes:
    """Canonical padded base64, as the armor uses; ValueError for anything else."""
    if len(text) % 4 or not _PADDED_B64.fullmatch(text):
        raise ValueError("not padded base64")
    try:
        data = base64.b64decode(text, validate=True)
    except binascii.Error as e:
        raise ValueError("not padded base64") from e
    if base64.b64encode(data) != text:
        raise ValueError("not canonical base64")
    return data


class _ArmorDecoder:
    """Strict streaming decoder of the PEM-like armor (RFC 7468 strict, 64 columns).

    Allowed: whitespace before and after the block, LF or CRLF line ends, a missing final
    line end. Everything else (empty or over-long lines, short lines before the last,
    non-canonical base64, headers, data outside the block) is an :class:`AgeArmorError`.
    Errors found after some bytes were decoded are held back until those bytes are taken,
    so the payload layer sees every intact chunk before the failure.
    """

    def __init__(self, src: _Lookahead) -> None:
        self._src = src
        self._started = False
        self._ended = False
        self._last_line_seen = False
        self._pending = b""
        self._pending_pos = 0
        self._run = 1  # lines the fast path may take: doubles on success, resets on a miss
        self._error: AgeArmorError | None = None

    def readinto(self, mv: memoryview) -> int:
        n = 0
        while n < len(mv):
            if self._pending_pos < len(self._pending):
                k = min(len(self._pending) - self._pending_pos, len(mv) - n)
                mv[n : n + k] = self._pending[self._pending_pos : self._pending_pos + k]
                self._pending_pos += k
                n += k
                continue
            if self._error is not None:
                if n:
                    break
                raise self._error
            if self._ended:
                break
            self._pending_pos = 0
            try:
                self._pending = self._full_lines(len(mv) - n) or self._next_line()
            except AgeArmorError as e:
                self._pending = b""
                self._error = e
        return n

    def _full_lines(self, wanted: int) -> bytes:
        """Decode a run of full 64-column lines at once; b"" leaves the line to _next_line.

        Line-by-line decoding in Python manages some 16 MB/s; this path checks the line
        ends by stride and the alphabet by one regex, so armored files stream at speed.
        It takes only lines the careful path would take as full lines in the middle.
        """
        if not self._started or self._last_line_seen:
            return b""
        # after a miss, start again from one line, so input built to miss costs no more
        # than a line's worth of look-ahead per line
        lines = min(max(1, wanted // _BYTES_PER_LINE), self._run)
        block = self._src.peek(lines * (_COLUMNS + 2))
        # LF and CRLF may mix; once every CRLF is an LF, each full line is 65 bytes
        flat = block.replace(b"\r\n", b"\n")
        ends = flat[_COLUMNS :: _COLUMNS + 1]
        lines = min(lines, len(ends) - len(ends.lstrip(b"\n")))
        text = flat[: lines * (_COLUMNS + 1)].replace(b"\n", b"")
        # a line holding "=" is the last (it decodes short), left to the careful path
        if not lines or len(text) != lines * _COLUMNS or not _FULL_LINES_B64.fullmatch(text):
            self._run = 1
            return b""
        self._run = min(2 * self._run, 1024)
        rest = block.split(b"\n", lines)[lines]
        self._src.read(len(block) - len(rest))
        return base64.b64decode(text)

    def _line(self) -> tuple[bytes, bool]:
        raw = self._src.readline(_COLUMNS + 2)
        ended = raw.endswith(b"\n")
        text = raw[:-1] if ended else raw
        if text.endswith(b"\r") and ended:
            text = text[:-1]
        return text, ended

    def _next_line(self) -> bytes:
        if not self._started:
            self._skip_whitespace()
            text, ended = self._line()
            if text != _ARMOR_BEGIN or not ended:
                if text.startswith(b"-----"):
                    raise AgeArmorError(f"age armor: first line is not {_ARMOR_BEGIN.decode()}")
                raise AgeArmorError("age: not an age file: no version line and no armor")
            self._started = True
        text, ended = self._line()
        if text == _ARMOR_END:
            self._drain_trailing()
            self._ended = True
            return b""
        if not text and not ended:
            raise AgeArmorError(f"age armor: missing {_ARMOR_END.decode()} line")
        if self._last_line_seen:
            raise AgeArmorError("age armor: a short line must be followed by the end line")
        if len(text) > _COLUMNS:
            raise AgeArmorError("age armor: line longer than 64 columns")
        if not text:
            raise AgeArmorError("age armor: empty line")
        if not ended:
            raise AgeArmorError(f"age armor: missing {_ARMOR_END.decode()} line")
        try:
            data = _b64decode_padded(text)
        except ValueError:
            raise AgeArmorError("age armor: line is not canonical padded base64") from None
        if len(data) < _BYTES_PER_LINE:
            self._last_line_seen = True
        return data

    def _skip_whitespace(self) -> None:
        for _ in range(_MAX_ARMOR_WHITESPACE + 1):
            head = self._src.peek(1)
            if not head or head[0] not in _WHITESPACE:
                return
            self._src.read(1)
        raise AgeArmorError("age armor: too much leading whitespace")

    def _drain_trailing(self) -> None:
        rest = self._src.read(_MAX_ARMOR_WHITESPACE + 1)
        if any(c not in _WHITESPACE for c in rest):
            raise AgeArmorError("age armor: data after the end line")
        if len(rest) > _MAX_ARMOR_WHITESPACE:
            raise AgeArmorError("age armor: too much trailing whitespace")


def _open_source(src: BinaryIO) -> _Lookahead:
    """The binary age file in ``src``, decoding the armor if it starts as armor does."""
    raw = _Lookahead(_fill_from(src))
    head = raw.peek(len(_VERSION_PREFIX))
    if _VERSION_PREFIX.startswith(head):
        # including an empty or cut-short file, which the header parser then reports
        return raw
    return _Lookahead(_ArmorDecoder(raw).readinto)


class _ArmorSink:
    """Armor encoder: 48 bytes a line, padded base64, the final line short or full."""

    def __init__(self, dst: BinaryIO) -> None:
        self._dst = dst
        self._carry = b""
        _write_all(dst, memoryview(_ARMOR_BEGIN + b"\n"))

    def write(self, data: memoryview) -> None:
        joined = self._carry + bytes(data)
        whole = len(joined) - len(joined) % _BYTES_PER_LINE
        self._carry = joined[whole:]
        text = base64.b64encode(joined[:whole])
        lines = b"".join(text[i : i + _COLUMNS] + b"\n" for i in range(0, len(text), _COLUMNS))
        _write_all(self._dst, memoryview(lines))

    def close(self) -> None:
        tail = base64.b64encode(self._carry) + b"\n" if self._carry else b""
        _write_all(self._dst, memoryview(tail + _ARMOR_END + b"\n"))
