"""Benchmarks of evault against the stock tools that do the same job.

    $ .venv/bin/python benchmarks/run.py                      # full scale, 3 rounds
    $ .venv/bin/python benchmarks/run.py --scale smoke        # seconds: checks the harness
    $ .venv/bin/python benchmarks/run.py --only ingest,open --rounds 5
    $ .venv/bin/python benchmarks/run.py --only scale         # case 11: the scale table

Prints a Markdown table (case, evault median, stock median, median of the per-round ratios
evault/stock, evault's peak RSS, the goal and whether it is met) and writes it, with the
machine it ran on, to ``benchmarks/results/<UTC timestamp>-<scale>.md``. All data and
vaults live in a temporary folder (``--tmp``, default the system's) removed at the end.
See benchmarks/README.md for what each case compares.
"""

from __future__ import annotations

import argparse
import compileall
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from cases import CASES, SCALES, STOCK, Context, Row, fmt_seconds, selected
from harness import TIME, BenchError

HERE = Path(__file__).resolve().parent
STOCK_TOOLS = ("age", "age-keygen", "openssl", "sha256sum", "tar", "find", "xargs", "sh", "sftp",
               "scp")


def machine() -> list[str]:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        age = subprocess.run(["age", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        age = "missing"
    return [
        f"- machine: {os.cpu_count()} cores (`nproc`), {cpu}, Linux {platform.release()}",
        f"- Python {platform.python_version()}, age {age}",
    ]


def table(rows: list[Row]) -> list[str]:
    """The results as a Markdown table."""
    out = [
        "| case | evault median | stock median | median ratio | evault peak RSS | goal | met? |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in rows:
        ratio = r.pairs.ratio_median
        met = "—" if r.met is None else ("yes" if r.met else "**no**")
        out.append(
            f"| {r.case} | {fmt_seconds(r.pairs.evault_median)} | "
            f"{fmt_seconds(r.pairs.stock_median)} | "
            f"{'—' if ratio is None else f'{ratio:.2f}'} | "
            f"{r.pairs.evault_maxrss_kib / 1024:.0f} MiB | {r.goal} | {met} |"
        )
    return out


def report(rows: list[Row], names: list[str], scale: str, rounds: int, started: datetime,
           seconds: float) -> str:
    """The whole results page."""
    lines = [
        f"# Benchmarks, {scale} scale, {started:%Y-%m-%d %H:%M} UTC",
        "",
        *machine(),
        f"- {rounds} round(s) per case (start-up: more), evault and stock alternating; "
        f"the whole run took {seconds / 60:.1f} min",
        "",
        *table(rows),
        "",
    ]
    for r in rows:
        if r.table:
            lines += [*r.table, ""]
    notes = [n for r in rows for n in r.notes]
    if notes:
        lines += ["Notes:", "", *[f"- {n}" for n in notes], ""]
    lines += ["Stock equivalents:", "", *[f"- {n}: {STOCK[n]}" for n in names], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(
        description="Benchmark evault against stock tools (see benchmarks/README.md)."
    )
    parser.add_argument("--scale", choices=sorted(SCALES), default="full",
                        help="full: 1 GiB files, 1M events (minutes); smoke: seconds")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds per case (default: 3 at full scale, 1 at smoke)")
    parser.add_argument("--only", default="",
                        help=f"comma-separated cases: {','.join(CASES)} (default: all)")
    parser.add_argument("--out", type=Path, default=HERE / "results",
                        help="folder for the results file (default: benchmarks/results)")
    parser.add_argument("--tmp", type=Path, default=None,
                        help="where the throwaway data and vaults go (default: system temp)")
    args = parser.parse_args(argv)
    scale = SCALES[args.scale]
    rounds = args.rounds if args.rounds is not None else (3 if scale.name == "full" else 1)
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    try:
        names = selected([c.strip() for c in args.only.split(",") if c.strip()])
    except BenchError as e:
        parser.error(str(e))
    missing = [t for t in STOCK_TOOLS if not any(
        (Path(d) / t).exists() for d in os.environ.get("PATH", "").split(os.pathsep) if d)]
    if not Path(TIME).is_file():
        missing.append(f"{TIME} (Debian's time package)")
    if missing:
        print(f"bench: stock tools missing: {', '.join(missing)}", file=sys.stderr)
        return 1

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    # A regular install (pip) compiles the package; an editable one does not, and with
    # PYTHONDONTWRITEBYTECODE every measured command would compile it again at start-up.
    compileall.compile_dir(HERE.parent / "vault", quiet=1)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    rows: list[Row] = []
    try:
        with tempfile.TemporaryDirectory(prefix="evault-bench-", dir=args.tmp) as tmp:
            ctx = Context(scale, rounds, Path(tmp), log=log)
            for name in names:
                log(f"== {name} ({scale.name})")
                case_start = time.perf_counter()
                rows += CASES[name](ctx)
                log(f"   {name}: {time.perf_counter() - case_start:.1f} s")
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    page = report(rows, names, scale.name, rounds, started, time.perf_counter() - t0)
    print(page)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"{started:%Y%m%dT%H%M%SZ}-{scale.name}.md"
    target.write_text(page, encoding="utf-8")
    log(f"bench: results written to {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
