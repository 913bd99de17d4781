"""Byte sources and sinks shared by the header, armor and payload layers of age.

Its one job is moving bytes with bounded memory: a fill function over any binary file
(``readinto`` when it has one), :class:`_Lookahead` with the look-ahead the header and armor
parsers need, and a write-all over non-blocking-aware sinks. It knows nothing of age itself
and may import nothing of :mod:`vault`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

_LOOKAHEAD_BLOCK = 64 * 1024


Fill = Callable[[memoryview], int]


def _fill_from(src: BinaryIO) -> Fill:
    readinto = getattr(src, "readinto", None)
    if readinto is None:

        def fill(mv: memoryview) -> int:
            data = src.read(len(mv))
            mv[: len(data)] = data
            return len(data)

        return fill

    def fill_into(mv: memoryview) -> int:
        n = readinto(mv)
        if n is None:
            # 0 would read as end of file, which a truncated-looking file must not fake
            raise BlockingIOError("age: source is non-blocking and has no data now")
        return int(n)

    return fill_into


class _Lookahead:
    """A byte source with the look-ahead the header and armor parsers need.

    Bytes read ahead are served first; once they are gone, ``readinto`` hands the caller's
    buffer straight to the source, so payload reads stay large and copy-free.
    """

    def __init__(self, fill: Fill) -> None:
        self._fill = fill
        self._buf = bytearray()
        self._eof = False

    def _more(self) -> bool:
        if self._eof:
            return False
        block = bytearray(_LOOKAHEAD_BLOCK)
        n = self._fill(memoryview(block))
        if n == 0:
            self._eof = True
            return False
        self._buf += memoryview(block)[:n]
        return True

    def _take(self, n: int) -> bytes:
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def peek(self, n: int) -> bytes:
        while len(self._buf) < n and self._more():
            pass
        return bytes(self._buf[:n])

    def readline(self, limit: int) -> bytes:
        """Up to and including the next LF, at most ``limit`` bytes, or the rest at EOF."""
        searched = 0
        while True:
            i = self._buf.find(b"\n", searched, limit)
            if i >= 0:
                return self._take(i + 1)
            if len(self._buf) >= limit:
                return self._take(limit)
            searched = len(self._buf)
            if not self._more():
                return self._take(len(self._buf))

    def read(self, n: int) -> bytes:
        while len(self._buf) < n and self._more():
            pass
        return self._take(n)

    def readinto(self, mv: memoryview) -> int:
        if self._buf:
            n = min(len(self._buf), len(mv))
            mv[:n] = self._buf[:n]
            del self._buf[:n]
            return n
        if self._eof:
            return 0
        n = self._fill(mv)
        if n == 0:
            self._eof = True
        return n


def _write_all(dst: BinaryIO, data: memoryview) -> None:
    done = 0
    while done < len(data):
        n = dst.write(data[done:])
        if n is None:
            raise BlockingIOError("age: destination is non-blocking and full")
        done += n


class _RawSink:
    def __init__(self, dst: BinaryIO) -> None:
        self._dst = dst

    def write(self, data: memoryview) -> None:
        _write_all(self._dst, data)

    def close(self) -> None:
        pass
