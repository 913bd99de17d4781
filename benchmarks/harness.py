"""Measuring commands: wall time, peak RSS, rounds that alternate evault and a stock tool.

    >>> sample = run_timed(["age", "--version"], env=dict(os.environ))   # doctest: +SKIP
    >>> sample.seconds, sample.maxrss_kib                                  # doctest: +SKIP

Wall time is ``time.perf_counter`` around the whole child process (start-up included). Peak
RSS is what ``/usr/bin/time -f %M`` (GNU time) reports, the kernel's ``ru_maxrss`` of the
command: for a shell pipeline it is the largest process of the pipeline, for evault the
larger of evault and its worker processes.

The machine is shared and noisy, so every case runs evault and its stock equivalent one
after the other in the same round, several rounds, swapping which goes first each round,
and reports medians and the median of the per-round ratios. Before each measured command
the harness runs ``sync`` (untimed), so that no command pays for the previous one's
unwritten data.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

TIME = "/usr/bin/time"
MIB = 1 << 20
GIB = 1 << 30


class BenchError(RuntimeError):
    """A command the benchmark depends on failed; the message carries its stderr."""


@dataclass(frozen=True)
class Sample:
    """One timed run of one command."""

    seconds: float
    maxrss_kib: int


def run_timed(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    expect: Sequence[int] = (0,),
) -> Sample:
    """Run ``argv`` to completion; return its wall time and peak RSS (stdout discarded).

    The command runs under ``/usr/bin/time -f %M``: a child forked from this (large) Python
    process would have its pre-exec image counted in its own ``ru_maxrss``, while GNU time
    is small and reports the peak of the command it starts. Its fork and exec add about a
    millisecond to every sample, evault's and stock's alike.
    """
    with tempfile.NamedTemporaryFile(prefix="evault-bench-rss-") as rss, \
            tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.run(
            [TIME, "-f", "%M", "-o", rss.name, *argv], env=dict(env), cwd=cwd,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, check=False,
        )
        seconds = time.perf_counter() - start
        if proc.returncode not in expect:
            err.seek(0)
            text = err.read().decode("utf-8", "replace").strip()
            raise BenchError(f"{' '.join(argv)}: exit {proc.returncode}: {text[-2000:]}")
        lines = Path(rss.name).read_text().split()
    # GNU time prints the peak RSS in KiB, on the last line (after any signal notice).
    return Sample(seconds, int(lines[-1]))


def run_checked(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: Path | None = None
) -> str:
    """Run an untimed setup command and return its stdout."""
    proc = subprocess.run(list(argv), env=dict(env), cwd=cwd, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def sh(script: str) -> list[str]:
    """A stock pipeline, run as one ``sh -c`` process tree."""
    return ["sh", "-c", script]


@dataclass
class Pairs:
    """The samples of one comparison, round by round."""

    evault: list[Sample] = field(default_factory=list)
    stock: list[Sample] = field(default_factory=list)

    @property
    def evault_median(self) -> float:
        """Median wall time of evault."""
        return statistics.median(s.seconds for s in self.evault)

    @property
    def stock_median(self) -> float | None:
        """Median wall time of the stock equivalent, if there is one."""
        return statistics.median(s.seconds for s in self.stock) if self.stock else None

    @property
    def ratio_median(self) -> float | None:
        """Median of the per-round ratios evault / stock."""
        if not self.stock:
            return None
        return statistics.median(
            e.seconds / s.seconds for e, s in zip(self.evault, self.stock, strict=True)
        )

    @property
    def evault_maxrss_kib(self) -> int:
        """The largest peak RSS of evault over the rounds."""
        return max(s.maxrss_kib for s in self.evault)


def alternate(
    rounds: int,
    evault: Callable[[int], Sample],
    stock: Callable[[int], Sample] | None,
    *,
    prepare: Callable[[int], None] | None = None,
    cleanup: Callable[[int], None] | None = None,
    log: Callable[[str], None] = print,
    label: str = "",
) -> Pairs:
    """Run evault and stock once each per round, in alternating order; setup is not timed."""
    pairs = Pairs()
    for n in range(rounds):
        if prepare:
            prepare(n)
        order: list[tuple[str, Callable[[int], Sample]]] = [("evault", evault)]
        if stock is not None:
            order.append(("stock", stock))
            if n % 2:
                order.reverse()
        for who, fn in order:
            # Whatever the previous command left unwritten (the stock tools do not fsync)
            # goes to disk now, outside the timing, so it does not slow the next one down.
            os.sync()
            sample = fn(n)
            (pairs.evault if who == "evault" else pairs.stock).append(sample)
        if cleanup:
            cleanup(n)
        e = pairs.evault[-1]
        s = f", stock {pairs.stock[-1].seconds:.3f} s" if stock is not None else ""
        log(f"  {label} round {n + 1}/{rounds}: evault {e.seconds:.3f} s "
            f"({e.maxrss_kib / 1024:.0f} MiB){s}")
    return pairs


def write_random_file(path: Path, size: int, *, chunk: int = 4 * MIB) -> None:
    """A file of ``size`` random bytes (random, so nothing compresses or dedupes)."""
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n


def clear(path: Path) -> None:
    """Remove a file or a folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
