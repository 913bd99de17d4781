"""Case 10: ingest by 1, 2 and 4 machines at once into one PostgreSQL and one S3 bucket.

A team vault (issue 21): ``evault init --db postgresql+psycopg://... --blobs s3://...``,
then one folder per worker holding a copy of the vault's ``config.toml`` and ``keys.enc``
(a colleague's machine). The fixed workload (``--scale full``: 2,000 files of 64 KiB and 8
of 64 MiB) is split evenly: worker ``j`` of ``W`` ingests the data folders ``j, j + W,
...`` of four, so every worker gets the same number of small and big files. The ``W``
``evault ingest`` processes start together from one ``sh -c`` and the wall time is until
the last has finished (start-up, key unlock and scrypt of every worker included).

The stock side of each worker count: ``W`` processes at once, each uploading the same
share of the same files as they are (no encryption, no hashing, no database) with boto3's
managed ``upload_file`` (the engine of ``aws s3 cp``: multipart above 8 MiB, up to ten
parts in flight), against the same server: what moving these bytes to this bucket costs
at all on this machine.

Every measurement starts from the same state: a new PostgreSQL schema, a new SeaweedFS
server per round (scripts/s3_server.py, on 127.0.0.1, its data in the work folder's file
system), a new bucket and a new vault; after it, untimed, the run is checked (as many
items as files, the custody log's seqs 0..n-1 with no gap, one object per item in the
bucket) and the schema dropped.

The database: ``EVAULT_BENCH_PG_URL``, else ``EVAULT_TEST_PG_URL`` (as the tests; .ci/run
sets it), e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/test``.
"""

from __future__ import annotations

import os
import resource
import secrets
import shlex
import shutil
import statistics
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cases import Context, Row
from harness import MIB, BenchError, Pairs, Sample, run_timed, sh, write_random_file

ROOT = Path(__file__).resolve().parent.parent
WORKERS = (1, 2, 4)
SMOKE_WORKERS = (1, 2)  # smoke scale: each worker process costs ~2 s of CPU whatever it does
PARTS = 4  # data folders; a worker ingests PARTS / W of them
CASE = "BENCH-TEAM"
PREFIX = "team/blobs"


def pg_base_url() -> str:
    """The PostgreSQL server the case makes its schemas in."""
    url = os.environ.get("EVAULT_BENCH_PG_URL") or os.environ.get("EVAULT_TEST_PG_URL")
    if not url:
        raise BenchError("ingest-workers: needs PostgreSQL: set EVAULT_BENCH_PG_URL or "
                         "EVAULT_TEST_PG_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:"
                         "5432/test)")
    return url


@contextmanager
def pg_schema(base: str) -> Iterator[str]:
    """A new schema, dropped afterwards; the URL whose connections use it."""
    import sqlalchemy as sa

    schema = "evb_" + secrets.token_hex(6)
    engine = sa.create_engine(base)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in base else "?"
        try:
            yield f"{base}{sep}options=-csearch_path%3D{schema}"
        finally:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    finally:
        engine.dispose()


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(sql)]
    finally:
        engine.dispose()


def make_parts(ctx: Context) -> tuple[list[Path], int, int]:
    """PARTS folders with an equal share of the scale's small and big files; (folders,
    files, bytes)."""
    scale = ctx.scale
    root = ctx.work / "data" / "team"
    small, big = scale.team_small, scale.team_big
    if small % PARTS or big % PARTS:
        raise BenchError(f"ingest-workers: file counts must divide by {PARTS}")
    ctx.log(f"  making {small} files of {scale.team_small_size // 1024} KiB and {big} of "
            f"{scale.team_big_size // MIB} MiB in {PARTS} folders")
    parts = []
    for p in range(PARTS):
        folder = root / f"part-{p}"
        folder.mkdir(parents=True)
        for n in range(small // PARTS):
            (folder / f"small-{n:05d}.bin").write_bytes(os.urandom(scale.team_small_size))
        for n in range(big // PARTS):
            write_random_file(folder / f"big-{n:02d}.bin", scale.team_big_size)
        parts.append(folder)
    return parts, small + big, small * scale.team_small_size + big * scale.team_big_size


def _team_vault(ctx: Context, env: Mapping[str, str], url: str, bucket: str,
                workers: int) -> list[Path]:
    """A new team vault (identity, case) and ``workers`` machine folders of it."""
    first = ctx.fresh("team-vault")
    ctx.evault.setup(first, "init", "--db", url, "--blobs", f"s3://{bucket}/{PREFIX}",
                     env=env)
    ctx.evault.setup(first, "identity", "create", "team-registrar", "--org", "Bench", env=env)
    ctx.evault.setup(first, "case", "create", CASE, env=env)
    machines = []
    for w in range(workers):
        machine = ctx.fresh(f"team-machine-{w}")
        machine.mkdir(mode=0o700)
        for name in ("config.toml", "keys.enc"):
            shutil.copy2(first / name, machine / name)
        machines.append(machine)
    shutil.rmtree(first)
    return machines


def _together(commands: list[list[str]]) -> list[str]:
    """One ``sh -c`` that starts every command at once and fails if any failed."""
    starts = " ".join(f"{shlex.join(c)} & p{i}=$!;" for i, c in enumerate(commands))
    waits = " ".join(f"wait $p{i} || rc=1;" for i in range(len(commands)))
    return sh(f"rc=0; {starts} {waits} exit $rc")


def _shares(parts: list[Path], workers: int) -> list[list[Path]]:
    return [parts[w::workers] for w in range(workers)]


def _check(url: str, client: Any, bucket: str, files: int) -> None:
    """The run did what it says: an item per file, a gap-free log, an object per item."""
    ((items,),) = _rows(url, "SELECT count(*) FROM items")
    ((count, low, high),) = _rows(url, "SELECT count(*), min(seq), max(seq) FROM custody_events")
    ((size,),) = _rows(url, "SELECT size FROM custody_head")
    objects = sum(page.get("KeyCount", 0) for page in client.get_paginator(
        "list_objects_v2").paginate(Bucket=bucket, Prefix=f"{PREFIX}/"))
    if items != files or (count, low, high) != (size, 0, size - 1) or objects != files:
        raise BenchError(f"ingest-workers: {files} files gave {items} items, custody events "
                         f"{count} (seq {low}..{high}, head {size}), {objects} objects")


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a running process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    """User and system CPU time of every finished descendant of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Cpu:
    """CPU seconds of the measured commands (every process they started, worker processes
    included) and of the S3 server meanwhile, per worker count and side."""

    seconds: dict[tuple[int, str, str], list[float]] = field(default_factory=dict)

    @contextmanager
    def measure(self, workers: int, who: str, server_pid: int) -> Iterator[None]:
        before = (_children_cpu(), _cpu_seconds(server_pid))
        yield
        after = (_children_cpu(), _cpu_seconds(server_pid))
        for name, spent in (("command", after[0] - before[0]), ("server", after[1] - before[1])):
            self.seconds.setdefault((workers, who, name), []).append(spent)

    def median(self, workers: int, who: str, name: str) -> float:
        return statistics.median(self.seconds[(workers, who, name)])


def upload(bucket: str, prefix: str, *folders: str) -> None:
    """The stock side, in a child process: every file of ``folders`` uploaded as it is."""
    import boto3

    client = boto3.client("s3")
    for folder in folders:
        for path in sorted(Path(folder).iterdir()):
            client.upload_file(str(path), bucket, f"{prefix}/{Path(folder).name}/{path.name}")


def case_ingest_workers(ctx: Context) -> list[Row]:
    """10. Ingest by 1, 2 and 4 worker processes at once into one PostgreSQL + one bucket,
    against as many boto3 uploads of the same files."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from s3_server import S3Server, s3_unavailable

    reason = s3_unavailable()
    if reason:
        raise BenchError(f"ingest-workers: no S3 server here: {reason}")
    base = pg_base_url()
    parts, files, volume = make_parts(ctx)
    counts = WORKERS if ctx.scale.name == "full" else SMOKE_WORKERS
    pairs = {w: Pairs() for w in counts}
    cpu = Cpu()
    for n in range(ctx.rounds):
        with S3Server() as server:
            aws = {**server.env(), "AWS_CONFIG_FILE": str(ctx.work / "no-aws-config"),
                   "AWS_SHARED_CREDENTIALS_FILE": str(ctx.work / "no-aws-credentials")}
            client = server.client()
            assert server.proc is not None
            weed = server.proc.pid
            # The server makes its first volumes at the first write: not any side's time.
            warm = server.bucket()
            client.put_object(Bucket=warm, Key="warm-up", Body=os.urandom(MIB))
            order = list(counts) if n % 2 == 0 else list(reversed(counts))
            for w in order:
                shares = _shares(parts, w)
                for who in (("evault", "stock") if (n + w) % 2 else ("stock", "evault")):
                    bucket = server.bucket()
                    if who == "stock":
                        env = {**ctx.stock_env, **aws}
                        argv = _together([[sys.executable, __file__, "upload", bucket, PREFIX,
                                           *map(str, share)] for share in shares])
                        os.sync()
                        with cpu.measure(w, who, weed):
                            pairs[w].stock.append(run_timed(argv, env=env))
                        continue
                    with pg_schema(base) as url:
                        env = {**ctx.evault.base_env, **aws}
                        machines = _team_vault(ctx, env, url, bucket, w)
                        argv = _together([
                            [ctx.evault.exe, "ingest", *map(str, share), "-r", "--case", CASE,
                             "--vault", str(machine)]
                            for machine, share in zip(machines, shares, strict=True)])
                        os.sync()
                        with cpu.measure(w, who, weed):
                            sample: Sample = run_timed(argv, env=env)
                        pairs[w].evault.append(sample)
                        _check(url, client, bucket, files)
                        for machine in machines:
                            shutil.rmtree(machine)
                e, s = pairs[w].evault[-1], pairs[w].stock[-1]
                ctx.log(f"  ingest-workers round {n + 1}/{ctx.rounds}, {w} worker(s): evault "
                        f"{e.seconds:.3f} s ({e.maxrss_kib / 1024:.0f} MiB), stock "
                        f"{s.seconds:.3f} s")
    one = pairs[1].evault_median
    rows = []
    scale = ctx.scale
    what = (f"{scale.team_small:,} x {scale.team_small_size // 1024} KiB + {scale.team_big} x "
            f"{scale.team_big_size // MIB} MiB")
    for w in counts:
        t = pairs[w].evault_median
        stock = pairs[w].stock_median or 0.0
        rounds = ", ".join(f"{s.seconds:.2f}" for s in pairs[w].evault)
        rows.append(Row(
            f"10. ingest {what} into PostgreSQL + S3 by {w} worker(s)", pairs[w], "report",
            None,
            [f"{w} worker(s): {files / t:,.0f} files/s, {volume / t / 1e6:,.1f} MB/s, "
             f"speed-up {one / t:.2f} vs 1 worker (rounds {rounds} s); stock (boto3 "
             f"upload_file x {w}): {files / stock:,.0f} files/s, "
             f"{volume / stock / 1e6:,.1f} MB/s",
             f"{w} worker(s), CPU seconds (medians): evault "
             f"{cpu.median(w, 'evault', 'command'):.1f} + S3 server "
             f"{cpu.median(w, 'evault', 'server'):.1f} in {t:.1f} s of wall time "
             f"on {os.cpu_count()} cores; stock {cpu.median(w, 'stock', 'command'):.1f} + "
             f"{cpu.median(w, 'stock', 'server'):.1f} in {stock:.1f} s"]))
    if ctx.rounds > 1:
        spread = statistics.pstdev(s.seconds for s in pairs[1].evault) / one
        rows[0].notes.append(f"1 worker: spread of the rounds {spread:.0%} of the median")
    shutil.rmtree(parts[0].parent)
    return rows


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "upload":
        upload(sys.argv[2], sys.argv[3], *sys.argv[4:])
