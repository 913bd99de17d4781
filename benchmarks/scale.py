"""Case 11, the scale table: ingest, export and custody verify at 1x, 10x, 100x (and 1000x)
a base size, and how the cost of one unit grows with the size.

Each kind of work runs the command of case 4, 5 or 6 (evault alone, no stock side) at the
scale's sizes (``Scale.scale_files``, ``scale_items`` and ``scale_events``, the first being
the base). Every command is a new process, so every wall time carries the start-up
(interpreter, imports, scrypt to open the key store: one to two seconds on this shared
machine), which at the small sizes is most of it. So every round of every size also runs
the same command on one unit, its start-up: ``ingest`` of one file, ``export`` of a case of
one item, ``custody verify`` of the log as ``init`` and ``identity create`` left it. The two
run back to back, swapping which goes first each round (``alternate``, the start-up in the
stock's place), so both see the same noise of this shared machine.

For each size the table gives the median wall time, the start-up's, the peak RSS, and the
cost of one unit after the start-up: the median over the rounds of (wall - start-up) /
(n - n0), n0 the start-up's units. That is what should stay flat if the work is linear.
Where the start-up is more than three quarters of the wall time the difference is within
the start-up's own noise: the figure is shown in brackets and no growth is read from it.
Growth is the per-unit cost over the base's (the first size whose figure is readable) and
over the previous size's; a step above 1.5 is flagged WORSE THAN LINEAR. A peak RSS more
than 10 % above the previous size's (the start-up's, for the base) is flagged MEMORY GROWS:
each of these commands works a batch at a time and should not hold more for more units.
Every peak includes scrypt's 128 MiB while the key store opens (released right after), so
a command's own memory shows only once it passes that.

Rounds: ``ctx.rounds`` per size, except the largest size of each kind, which runs once (at
full scale its run alone is tens of seconds to minutes on two cores).
"""

from __future__ import annotations

import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cases import (
    BODIES,
    Context,
    Row,
    _many_files,
    export_template,
    fmt_seconds,
    grow_custody_log,
)
from harness import MIB, BenchError, Pairs, Sample, alternate, clear

CASE = "BENCH-11"
#: The goal: one more unit costs at most this much more than at the previous size.
STEP_LIMIT = 1.5
#: A per-unit cost after start-up is read only where the work is at least this share of the
#: wall time: on this shared machine the start-up itself varies by 10-30 % between runs, so
#: on a smaller rest the difference is mostly noise.
READABLE = 0.25
#: Peak RSS above this times the previous size's is flagged.
RSS_STEP = 1.10
#: The case's time budget at full scale, for the note on sizes not run.
BUDGET_S = 6 * 60
GOAL = f"linear: per-unit cost within {STEP_LIMIT}x from each size to the next"


@dataclass
class Kind:
    """One kind of work: what it is, its unit, and each size's samples (``evault``) with
    its start-up's of the same rounds (``stock``: the same command on ``start_units``)."""

    name: str
    unit: str
    start_units: int
    sizes: list[tuple[int, Pairs]] = field(default_factory=list)
    why: str = ""  # why the sizes stop where they do, if short of 1000x at full scale

    @property
    def start(self) -> list[Sample]:
        """Every start-up sample of the kind, all sizes together."""
        return [s for _, pairs in self.sizes for s in pairs.stock]


@dataclass(frozen=True)
class Step:
    """One size of a kind, read against its start-up and the previous size."""

    units: int
    pairs: Pairs
    net_unit: float  # median over the rounds of (wall - start-up) / (n - n0)
    readable: bool  # the work is at least READABLE of the wall time
    vs_base: float | None
    vs_previous: float | None
    rss_step: float  # peak RSS over the previous size's (its start-up's, for the base)

    @property
    def worse(self) -> bool:
        """The per-unit cost grew by more than STEP_LIMIT from the previous size."""
        return self.vs_previous is not None and self.vs_previous > STEP_LIMIT

    @property
    def memory(self) -> bool:
        """The peak RSS grew by more than RSS_STEP from the previous size."""
        return self.rss_step > RSS_STEP


def steps(kind: Kind) -> list[Step]:
    """Each size of ``kind`` with its per-unit cost and growth figures."""
    out: list[Step] = []
    base: float | None = None
    previous: float | None = None  # the previous size's per-unit cost, if readable
    rss: int | None = None
    for units, pairs in kind.sizes:
        net_unit = statistics.median(
            (e.seconds - s.seconds) / (units - kind.start_units)
            for e, s in zip(pairs.evault, pairs.stock, strict=True))
        wall = pairs.evault_median
        readable = net_unit * (units - kind.start_units) >= READABLE * wall
        vs_base = vs_previous = None
        if readable:
            base = base if base is not None else net_unit
            vs_base = net_unit / base
            vs_previous = net_unit / previous if previous is not None else None
        previous = net_unit if readable else None
        before = rss if rss is not None else max(s.maxrss_kib for s in pairs.stock)
        out.append(Step(units, pairs, net_unit, readable, vs_base, vs_previous,
                        pairs.evault_maxrss_kib / before))
        rss = pairs.evault_maxrss_kib
    return out


def fmt_us(seconds: float) -> str:
    """A per-unit cost in microseconds: ``1,052 µs``, ``48.3 µs``."""
    us = seconds * 1e6
    return f"{us:,.0f} µs" if abs(us) >= 100 else f"{us:.1f} µs"


def _long(seconds: float) -> str:
    """``2.5 min`` from a minute up, else as :func:`fmt_seconds`."""
    return f"{seconds / 60:.1f} min" if seconds >= 60 else fmt_seconds(seconds)


def _ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def table(kinds: list[Kind]) -> list[str]:
    """The scale table: one line for each size of each kind."""
    out = [
        "Scale (case 11): per unit = median over the rounds of (wall - start-up) / (n - n0), "
        "the start-up being the same command on n0 units (one file, one item, the log of a new "
        "vault) run back to back with it; in brackets where the start-up is over "
        f"{1 - READABLE:.0%} of the wall time (too small a rest to read). Growth: that cost "
        f"over the base's and over the previous size's; a step above {STEP_LIMIT} is WORSE "
        f"THAN LINEAR, a peak RSS over {RSS_STEP:.2f}x the previous size's (the start-up's, "
        "for the base) is MEMORY GROWS.",
        "",
        "| kind | n | x base | rounds | median wall | start-up | per unit | growth vs base | "
        "vs previous size | peak RSS | flag |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for kind in kinds:
        base = kind.sizes[0][0]
        for st in steps(kind):
            net = fmt_us(st.net_unit) if st.readable else f"({fmt_us(st.net_unit)})"
            flags = [f for f, on in (("**WORSE THAN LINEAR**", st.worse),
                                     ("**MEMORY GROWS**", st.memory)) if on]
            out.append(
                f"| {kind.name} | {st.units:,} | {st.units // base:,}x | {len(st.pairs.evault)} | "
                f"{fmt_seconds(st.pairs.evault_median)} | "
                f"{fmt_seconds(st.pairs.stock_median)} | {net} | "
                f"{_ratio(st.vs_base)} | {_ratio(st.vs_previous)} | "
                f"{st.pairs.evault_maxrss_kib / 1024:.0f} MiB | {', '.join(flags)} |"
            )
    return out


def _notes(ctx: Context, kind: Kind) -> list[str]:
    """What was run for ``kind``, why it stops where it does, and what its memory did."""
    read = steps(kind)
    sizes = [n for n, _ in kind.sizes]
    base = sizes[0]
    rounds = ", ".join(str(len(p.evault)) for _, p in kind.sizes)
    start = statistics.median(s.seconds for s in kind.start)
    notes = [f"scale, {kind.name}: {', '.join(f'{n:,}' for n in sizes)} {kind.unit}s "
             f"({', '.join(f'{n // base:,}x' for n in sizes)}), rounds {rounds}; start-up "
             f"({kind.start_units:,} {kind.unit}{'s' if kind.start_units != 1 else ''}) "
             f"{fmt_seconds(start)}, median of its {len(kind.start)} runs"]
    last = read[-1]
    if ctx.scale.name == "full" and sizes[-1] < 1000 * base:
        target = 1000 * base
        guess = start + last.net_unit * (target - kind.start_units)
        notes.append(f"scale, {kind.name}: stopped at {sizes[-1] // base:,}x: 1000x "
                     f"({target:,} {kind.unit}s) would take about {_long(guess)} a round "
                     f"at this run's {fmt_us(last.net_unit)} per {kind.unit}, against the "
                     f"case's budget of about {BUDGET_S // 60} min for all kinds"
                     + (f"; {kind.why}" if kind.why else ""))
    worse = [st for st in read if st.worse]
    if worse:
        notes.append(f"scale, {kind.name}: WORSE THAN LINEAR at " + ", ".join(
            f"{st.units:,} {kind.unit}s ({st.vs_previous:.2f}x the previous size's cost "
            f"per {kind.unit})" for st in worse))
    unread = [st.units for st in read if not st.readable]
    if unread:
        notes.append(f"scale, {kind.name}: at {', '.join(f'{n:,}' for n in unread)} "
                     f"{kind.unit}s the start-up is over {1 - READABLE:.0%} of the wall time; "
                     "no growth is read there")
    peaks = [max(s.maxrss_kib for s in kind.start),
             *(p.evault_maxrss_kib for _, p in kind.sizes)]
    rise = peaks[-1] - peaks[0]
    grew = [st.units for st in read if st.memory]
    memory = (f"peak RSS {peaks[0] / 1024:.0f} MiB at start-up, then "
              f"{', '.join(f'{k / 1024:.0f}' for k in peaks[1:])} MiB")
    if rise >= 1024:
        per_unit = rise * 1024 / (sizes[-1] - kind.start_units)
        memory += (f" (+{rise / 1024:.0f} MiB at {sizes[-1]:,} {kind.unit}s, about "
                   f"{per_unit:,.0f} bytes per {kind.unit})")
    if grew:
        notes.append(f"scale, {kind.name}: MEMORY GROWS: {memory}; more than "
                     f"{RSS_STEP - 1:.0%} a step at {', '.join(f'{n:,}' for n in grew)}")
    else:
        notes.append(f"scale, {kind.name}: {memory}: flat within {RSS_STEP - 1:.0%} a step "
                     "(each peak includes scrypt's 128 MiB while the key store opens: growth "
                     "that stays below it does not show)")
    return notes


def _rounds(ctx: Context, units: int, sizes: tuple[int, ...]) -> int:
    """The largest size runs once; the others ``ctx.rounds`` times."""
    return 1 if units == sizes[-1] else ctx.rounds


def _measure(ctx: Context, label: str, units: int, rounds: int, run: Callable[[int], Sample],
             start: Callable[[int], Sample], prepare: Callable[[int], None] | None = None,
             cleanup: Callable[[int], None] | None = None) -> Pairs:
    """``run`` at ``units`` and ``start`` (the same on one unit) back to back, ``rounds``
    times; the start-up in the stock's place."""
    return alternate(rounds, run, start, prepare=prepare, cleanup=cleanup, log=ctx.log,
                     label=f"scale {label} @{units:,} (stock: its start-up)")


def _ingest(ctx: Context) -> Kind:
    """``evault ingest D --recursive --case C --create-case`` into a fresh office vault copy;
    start-up: the same of one file."""
    scale = ctx.scale
    size = scale.scale_file_size
    one = _many_files(ctx, "scale-files-1", 1, size, 1000)
    leftovers: list[Path] = [one]
    kind = Kind(f"ingest of {size // 1024} KiB files", "file", 1)

    state: dict[str, Path] = {}

    def ingest(vault: str, folder: str) -> Sample:
        return ctx.evault.timed(state[vault], "ingest", str(state[folder]), "--recursive",
                                "--case", CASE, "--create-case")

    def prepare(n: int) -> None:
        state["vault"] = ctx.copy_vault(ctx.office_vault, "scale-ingest")
        state["one"] = ctx.copy_vault(ctx.office_vault, "scale-ingest-one")

    def cleanup(n: int) -> None:
        # Deleted after the last size, as case 4 does: creating files is ~10x slower for a
        # while after tens of thousands were deleted on this machine's disk.
        leftovers.extend((state["vault"], state["one"]))

    state["one-files"] = one
    for units in scale.scale_files:
        state["files"] = _many_files(ctx, f"scale-files-{units}", units, size, 1000)
        leftovers.append(state["files"])
        pairs = _measure(ctx, "ingest", units, _rounds(ctx, units, scale.scale_files),
                         lambda n: ingest("vault", "files"), lambda n: ingest("one", "one-files"),
                         prepare, cleanup)
        kind.sizes.append((units, pairs))
    for path in leftovers:
        clear(path)
    return kind


def _export(ctx: Context) -> Kind:
    """``evault export --to A,B,C,D,E --case C --outbox O`` of a case that grows between the
    sizes (its items ingested untimed), each round on a fresh copy of the vault; start-up:
    the same from a vault whose case has one item."""
    scale = ctx.scale
    size = scale.scale_item_size
    vaults: dict[str, Path] = {}
    for name, units in (("one", 1), ("grown", 0)):
        vaults[name], _ = export_template(ctx, f"template-scale-export-{name}")
        ctx.evault.setup(vaults[name], "case", "create", CASE)
        if units:
            folder = _many_files(ctx, "scale-items-1", units, size, 1000)
            ctx.evault.setup(vaults[name], "ingest", str(folder), "--recursive", "--case", CASE)
            clear(folder)
    kind = Kind(f"export of {_size(size)} items to 5 bodies", "item", 1)
    have = 0

    state: dict[str, Path] = {}

    def export(name: str) -> Sample:
        return ctx.evault.timed(state[name], "export", "--to", ",".join(BODIES), "--case", CASE,
                                "--outbox", str(state[f"{name}-outbox"]))

    def prepare(n: int) -> None:
        for name, template in vaults.items():
            state[name] = ctx.copy_vault(template, f"scale-export-{name}")
            state[f"{name}-outbox"] = ctx.fresh("scale-outbox")
            state[f"{name}-outbox"].mkdir()

    def cleanup(n: int) -> None:
        for path in state.values():
            clear(path)

    for units in scale.scale_items:
        folder = _many_files(ctx, f"scale-items-{units}", units - have, size, 1000)
        ctx.log(f"  ingesting {units - have:,} more items into the exporting vault (setup)")
        ctx.evault.setup(vaults["grown"], "ingest", str(folder), "--recursive", "--case", CASE)
        clear(folder)
        have = units
        pairs = _measure(ctx, "export", units, _rounds(ctx, units, scale.scale_items),
                         lambda n: export("grown"), lambda n: export("one"), prepare, cleanup)
        kind.sizes.append((units, pairs))
    for template in vaults.values():
        clear(template)
    return kind


def _size(size: int) -> str:
    return f"{size // 1024} KiB" if size < MIB else f"{size // MIB} MiB"


def _custody(ctx: Context) -> list[Kind]:
    """``evault custody verify --quick`` and ``evault custody verify`` on one log, grown
    between the sizes by benchmarks/custody_gen.py (signed events and a checkpoint each
    time); start-up: the same on the log of a new vault (``init``, ``identity create``)."""
    sizes = ctx.scale.scale_events
    vaults = {}
    for name in ("one", "grown"):
        vaults[name] = ctx.work / f"scale-custody-{name}"
        shutil.copytree(ctx.office_vault, vaults[name], symlinks=True)
        size = grow_custody_log(ctx, vaults[name], 0)  # the log as it is, with a checkpoint
    if size >= sizes[0]:
        raise BenchError(f"scale: a new vault's log already has {size} events")
    why = ("1,000,000 events would also take minutes to generate (two processes signing); "
           "case 6 verifies 1,000,001 at full scale")
    modes = {
        ("custody", "verify", "--quick"): Kind("custody verify --quick", "event", size, why=why),
        ("custody", "verify"): Kind("custody verify (full, signatures)", "event", size, why=why),
    }
    for units in sizes:
        ctx.log(f"  growing the custody log to {units:,} signed events (setup)")
        size = grow_custody_log(ctx, vaults["grown"], units - size)
        if size != units:
            raise BenchError(f"scale: the custody log has {size} events, not {units}")
        for args, kind in modes.items():

            def verify(name: str, args: tuple[str, ...] = args) -> Sample:
                return ctx.evault.timed(vaults[name], *args)

            pairs = _measure(ctx, " ".join(args), units, _rounds(ctx, units, sizes),
                             lambda n: verify("grown"), lambda n: verify("one"))
            kind.sizes.append((units, pairs))
    for vault in vaults.values():
        clear(vault)
    return list(modes.values())


def case_scale(ctx: Context) -> list[Row]:
    """11. The scale table: ingest, export and custody verify at growing sizes."""
    # Ingest last: it creates and leaves the most files (over 100,000 at full scale), whose
    # deletion slows the file creation of whatever runs next on this disk.
    kinds = [_export(ctx), *_custody(ctx), _ingest(ctx)]
    rows = []
    for kind in kinds:
        read = steps(kind)
        sizes = [n for n, _ in kind.sizes]
        checked = [st for st in read if st.vs_previous is not None]
        met = None if not checked else not any(st.worse for st in checked)
        rows.append(Row(
            f"11. scale: {kind.name}, {sizes[0]:,} to {sizes[-1]:,} {kind.unit}s "
            f"({sizes[-1] // sizes[0]:,}x); wall and RSS at {sizes[-1]:,}",
            Pairs(evault=kind.sizes[-1][1].evault), GOAL, met, _notes(ctx, kind)))
    rows[0].table = table(kinds)
    return rows
