"""Progress on a terminal: one stderr line, rewritten in place, for long commands.

Shown only when stderr is a terminal; a pipe, a file or a test runner gets nothing at all,
so that scripts read the same stderr as before. The line is rewritten at most
:data:`EVERY` seconds apart (the last figures are always shown), and ends with a newline
when the work is done, or before any message (:func:`interrupt`), so that an error never
lands in the middle of it. Standard library only: it costs the CLI's start-up nothing.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

EVERY = 0.1
"""Seconds between two drawings of the line at least (ten a second)."""

_shown: ProgressLine | None = None
"""The line on screen now and not finished, if any."""


def interrupt() -> None:
    """End the line on screen, if any, so that a message after it starts on its own line."""
    if _shown is not None:
        _shown.finish()


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


class ProgressLine:
    """One ``\\r``-rewritten line: label, done/total, bytes, MB/s and time left.

    ``update(done, total)`` counts things (files, events); with ``nbytes=(done, total)``
    also bytes, which set the rate and the time left. ``finish()`` ends the line with a
    newline (nothing if nothing was drawn).
    """

    def __init__(
        self,
        label: str,
        *,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._label = label
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._start = clock()
        self._drawn_at: float | None = None
        self._width = 0
        self._pending = ""

    @classmethod
    def on_terminal(cls, label: str) -> ProgressLine | None:
        """A line on stderr when it is a terminal; else None (no progress at all)."""
        return cls(label) if sys.stderr.isatty() else None

    def update(
        self, done: int, total: int, *, nbytes: tuple[int, int] | None = None, what: str = ""
    ) -> None:
        """New figures; drawn now if the last drawing is :data:`EVERY` seconds old, or
        if they are the last (done reaches total)."""
        global _shown
        now = self._clock()
        self._pending = self._text(done, total, nbytes, what, now - self._start)
        last = done >= total and (nbytes is None or nbytes[0] >= nbytes[1])
        if last or self._drawn_at is None or now - self._drawn_at >= EVERY:
            self._draw(now)
            _shown = self

    def update_bytes(self, done: int, total: int) -> None:
        """New figures in bytes alone (one thing being read or written)."""
        self.update(done, total, nbytes=(done, total), what="bytes")

    def finish(self) -> None:
        """End the line (the last figures, then a newline); nothing if none was drawn."""
        global _shown
        if self._drawn_at is not None:
            if self._pending:
                self._draw(self._clock())
            self._stream.write("\n")
            self._stream.flush()
            self._drawn_at = None
        if _shown is self:
            _shown = None

    def _draw(self, now: float) -> None:
        text = self._pending
        pad = " " * max(0, self._width - len(text))
        self._stream.write(f"\r{text}{pad}")
        self._stream.flush()
        self._width = len(text)
        self._drawn_at = now
        self._pending = ""

    def _text(
        self, done: int, total: int, nbytes: tuple[int, int] | None, what: str, elapsed: float
    ) -> str:
        if what == "bytes":
            parts = [f"evault: {self._label}"]
        else:
            parts = [f"evault: {self._label} {done}/{total}" + (f" {what}" if what else "")]
        if nbytes is not None:
            got, of = nbytes
            rate = got / elapsed if elapsed > 0 else 0.0
            parts.append(f"{_mb(got)} of {_mb(of)}")
            parts.append(f"{rate / 1e6:.1f} MB/s")
            if got < of and rate > 0:
                parts.append(f"~{(of - got) / rate:.0f} s left")
        elif 0 < done < total and elapsed > 0:
            parts.append(f"~{(total - done) * elapsed / done:.0f} s left")
        return ", ".join(parts)


@contextlib.contextmanager
def progress_line(label: str) -> Iterator[ProgressLine | None]:
    """A :class:`ProgressLine` on stderr when it is a terminal (else None), finished when
    the block ends, however it ends: an error message after it starts on its own line."""
    line = ProgressLine.on_terminal(label)
    try:
        yield line
    finally:
        if line is not None:
            line.finish()
