"""A team vault on several machines: one PostgreSQL database, one S3 bucket (issue 21).

Each "machine" is a folder of its own holding a copy of the first machine's vault folder
(``config.toml`` and ``keys.enc``, key storage ``file``), as a colleague's computer would;
each runs real ``evault`` processes, all at once, against the one database (a schema of
the test PostgreSQL) and the one bucket (a real SeaweedFS, scripts/s3_server.py). First every
machine ingests its own files at the same time, then every machine exports the case to the
same bodies at the same time while one machine ingests more, then one export finishes the
job. What must hold whatever order the processes ran in:

- one custody log, its seqs exactly 0..n-1 (no gap, no repeat), and ``custody verify``
  passes on every machine;
- every file ingested is exactly one item;
- each item reached each body exactly once, across all the packages of all the machines
  (two exports deciding at once would each send the same items: the PostgreSQL advisory
  lock of ``export`` is what keeps them apart, see
  ``test_exports_of_two_machines_wait_for_each_other_on_postgresql``);
- the bucket holds exactly the blobs the rows name (doctor: 0 orphaned, 0 missing, no
  pending upload).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_PASSPHRASE, Cli
from s3_server import S3Server

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parent.parent
MACHINES = 3
FILES_EACH = 6
LATE_FILES = 4
CASE = "TEAM-2026-0007"
BODIES = ("BODY-NORTH", "BODY-SOUTH")
PREFIX = "team-a/blobs"




def _env() -> dict[str, str]:
    """A machine's evault environment: this test's (AWS_*, EVAULT_HOME) with the key file."""
    env = {**os.environ, "EVAULT_KEY_STORAGE": "file", "EVAULT_PASSPHRASE": TEST_PASSPHRASE}
    for name in ("EVAULT_CRASH_AT", "EVAULT_PAUSE_AT", "EVAULT_DEBUG"):
        env.pop(name, None)
    return env


def _start(vault: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "vault", *args, "--vault", str(vault)],
                            cwd=ROOT, env=env or _env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(procs: list[tuple[str, subprocess.Popen[str]]]) -> dict[str, str]:
    """Wait for every process; each must exit 0 with nothing on stderr. Their stdouts."""
    outs: dict[str, str] = {}
    problems = []
    try:
        for what, proc in procs:
            out, err = proc.communicate(timeout=180)
            outs[what] = out
            if proc.returncode != 0 or err:
                problems.append(f"{what}: exit {proc.returncode}: {err}")
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert not problems, "\n".join(problems)
    return outs


def _files(folder: Path, tag: str, count: int) -> dict[str, str]:
    """``count`` small files of distinct random content; their SHA-256 by name."""
    folder.mkdir(parents=True)
    digests = {}
    for n in range(count):
        data = f"fictional statement {tag}-{n}\n".encode() + os.urandom(1000 + 997 * n)
        (folder / f"statement-{tag}-{n}.txt").write_bytes(data)
        digests[f"statement-{tag}-{n}.txt"] = hashlib.sha256(data).hexdigest()
    return digests


def _team_vault(tmp_path: Path, pg_url: str, bucket: str) -> list[Path]:
    """The first machine's vault (identity, case, two keyed bodies), then copies of its
    folder as the other machines; their vault folders."""
    first = Cli(tmp_path / "machine-1" / "vault")
    first.ok("init", "--db", pg_url, "--blobs", f"s3://{bucket}/{PREFIX}")
    first.ok("identity", "create", "team-registrar", "--org", "Fictional Team Office")
    first.ok("case", "create", CASE, "--title", "Fictional team case")
    from vault.crypto.age import AgeIdentity
    from vault.crypto.keys import SigningKey

    for body in BODIES:
        first.ok("body", "add", body, "--name", f"Fictional {body.title()}")
        first.ok("body", "key", "add", body, "--age", str(AgeIdentity.generate().recipient),
                 "--ssh", SigningKey.generate().public.openssh(f"officer@{body.lower()}"))
    vaults = [first.vault]
    for m in range(2, MACHINES + 1):
        # What a colleague copies: the settings and the key file (no blobs/ folder: the
        # blobs are in the bucket; the rest of the folder is lock files).
        copy = tmp_path / f"machine-{m}" / "vault"
        copy.mkdir(parents=True, mode=0o700)
        for name in ("config.toml", "keys.enc"):
            shutil.copy2(first.vault / name, copy / name)
        vaults.append(copy)
    assert not (first.vault / "blobs").exists()
    return vaults


def _rows(pg_url: str, sql: str) -> list[Any]:
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(sql)]
    finally:
        engine.dispose()


def test_machines_ingest_and_export_at_once_into_one_postgresql_and_bucket(
        aws_env: None, server: S3Server, pg_url: str, tmp_path: Path) -> None:
    bucket = server.bucket()
    vaults = _team_vault(tmp_path, pg_url, bucket)
    expected: dict[str, str] = {}  # file name -> SHA-256

    # 1. Every machine ingests its own files, all at once.
    procs = []
    for m, vault in enumerate(vaults, 1):
        folder = vault.parent / "evidence"
        expected |= _files(folder, f"m{m}", FILES_EACH)
        procs.append((f"ingest on machine {m}",
                      _start(vault, "ingest", str(folder), "-r", "--case", CASE, "--json")))
    for what, out in _finish(procs).items():
        assert len(json.loads(out)) == FILES_EACH, what

    # 2. Every machine exports the case to both bodies at once, each into its own outbox,
    # while machine 1 ingests a late batch.
    late = vaults[0].parent / "late"
    expected |= _files(late, "late", LATE_FILES)
    procs = [("late ingest on machine 1",
              _start(vaults[0], "ingest", str(late), "-r", "--case", CASE, "--json"))]
    for m, vault in enumerate(vaults, 1):
        outbox = vault.parent / "outbox"
        outbox.mkdir()
        procs.append((f"export on machine {m}",
                      _start(vault, "export", "--to", ",".join(BODIES), "--case", CASE,
                             "--outbox", str(outbox), "--jsonl")))
    outs = _finish(procs)
    exported = [json.loads(line) for what, out in outs.items() if what.startswith("export")
                for line in out.splitlines()]
    assert {row["status"] for row in exported} <= {"shared", "already shared"}, exported

    # 3. One export after them all: whatever the late batch added reaches the bodies.
    _finish([("final export on machine 3",
              _start(vaults[2], "export", "--to", ",".join(BODIES), "--case", CASE,
                     "--outbox", str(vaults[2].parent / "outbox"), "--jsonl"))])

    # One log, gap-free, verified on every machine.
    for m, vault in enumerate(vaults, 1):
        verified = Cli(vault)("custody", "verify")
        assert verified.exit_code == 0, (m, verified.stdout, verified.stderr)
    seqs = [seq for (seq,) in _rows(pg_url, "SELECT seq FROM custody_events ORDER BY seq")]
    ((size,),) = _rows(pg_url, "SELECT size FROM custody_head")
    assert seqs == list(range(size))

    # Every file is exactly one item.
    items = _rows(pg_url, "SELECT id, sha256, blob_id FROM items")
    assert Counter(sha for _, sha, _ in items) == Counter(expected.values())
    item_ids = {item_id for item_id, _, _ in items}

    # Each item reached each body exactly once, in packages sent.
    pairs = _rows(pg_url, "SELECT pi.item_id, p.body_id, p.state FROM package_items pi "
                  "JOIN packages p ON p.id = pi.package_id")
    assert {state for _, _, state in pairs} == {"sent"}, pairs
    shared = Counter((item_id, body) for item_id, body, _ in pairs)
    assert sorted(shared) == sorted((i, b) for i in item_ids for b in BODIES)
    assert set(shared.values()) == {1}, [k for k, n in shared.items() if n > 1]
    # Every package sent is in the outbox of the machine that sent it, once.
    sent = _rows(pg_url, "SELECT id, outbox FROM packages")
    delivered = sorted(f.name for v in vaults for f in (v.parent / "outbox").iterdir())
    assert delivered == sorted(f"{pid}.evpkg" for pid, _ in sent)
    assert all((Path(outbox) / f"{pid}.evpkg").is_file() for pid, outbox in sent), sent

    # The bucket holds exactly the blobs the rows name, and no pending upload.
    blob_ids = {blob_id for (blob_id,) in _rows(pg_url, "SELECT id FROM blobs")}
    assert blob_ids == {blob_id for _, _, blob_id in items}
    client = server.client()
    listed = {o["Key"] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket) for o in page.get("Contents", [])}
    assert listed == {f"{PREFIX}/{b}" for b in blob_ids}
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    doctor = json.loads(Cli(vaults[1]).ok("doctor", "--json").stdout)
    assert (doctor["blobs"], doctor["orphaned_blobs"], doctor["blobs_missing"],
            doctor["temporary_files"]) == (len(blob_ids), 0, 0, 0), doctor


def _waiting_for_advisory_lock(pg_url: str, app: str) -> bool:
    """Whether the session named ``app`` (PGAPPNAME) waits for an advisory lock now."""
    rows = _rows(pg_url, "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a "
                 "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND NOT l.granted "
                 f"AND a.application_name = '{app}'")
    return bool(rows[0][0])


def test_exports_of_two_machines_wait_for_each_other_on_postgresql(
        aws_env: None, server: S3Server, pg_url: str, tmp_path: Path) -> None:
    """Machine 1's export, paused after its first body (inside its export), holds machine
    2's export of the same case at the advisory lock; released, machine 2 decides with what
    machine 1 sent and sends nothing again. Without the lock machine 2 would never wait
    there (this test fails on that, whatever the timing), and would decide before machine 1
    recorded its second body."""
    vaults = _team_vault(tmp_path, pg_url, server.bucket())
    first = Cli(vaults[0])
    evidence = vaults[0].parent / "evidence"
    _files(evidence, "m1", 3)
    first.ok("ingest", str(evidence), "-r", "--case", CASE)
    export = ("export", "--to", ",".join(BODIES), "--case", CASE, "--jsonl")
    outboxes = []
    for vault in vaults[:2]:
        outboxes.append(vault.parent / "outbox")
        outboxes[-1].mkdir()
    paused = _start(vaults[0], *export, "--outbox", str(outboxes[0]),
                    env={**_env(), "EVAULT_PAUSE_AT": "export.after_body"})
    waiting = None
    try:
        assert paused.stderr is not None
        line = paused.stderr.readline()
        assert line == "evault: paused at export.after_body\n", line + paused.stderr.read()
        app = f"evault-test-{os.getpid()}-{tmp_path.name}"[:60]
        waiting = _start(vaults[1], *export, "--outbox", str(outboxes[1]),
                         env={**_env(), "PGAPPNAME": app})
        deadline = time.monotonic() + 60
        while not _waiting_for_advisory_lock(pg_url, app):
            assert waiting.poll() is None, (
                f"machine 2's export did not wait for machine 1's: exit {waiting.returncode}, "
                f"{waiting.communicate()}")
            assert time.monotonic() < deadline, "machine 2's export never waited for the lock"
            time.sleep(0.05)
        # Machine 1 has sent to its first body only; machine 2 has decided nothing.
        assert _rows(pg_url, "SELECT body_id, state FROM packages") == [(BODIES[0], "sent")]
        paused.send_signal(signal.SIGUSR1)
        # It pauses again after its second body, still holding the lock.
        line = paused.stderr.readline()
        assert line == "evault: paused at export.after_body\n", line + paused.stderr.read()
        assert waiting.poll() is None and _waiting_for_advisory_lock(pg_url, app)
        paused.send_signal(signal.SIGUSR1)
        outs = _finish([("export on machine 1", paused), ("export on machine 2", waiting)])
    finally:
        for proc in (paused, waiting):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    statuses = {what: [(r["body"], r["status"]) for r in map(json.loads, out.splitlines())]
                for what, out in outs.items()}
    assert statuses == {
        "export on machine 1": [(BODIES[0], "shared"), (BODIES[1], "shared")],
        "export on machine 2": [(BODIES[0], "already shared"), (BODIES[1], "already shared")],
    }
    assert sorted(_rows(pg_url, "SELECT body_id, state FROM packages")) == [
        (BODIES[0], "sent"), (BODIES[1], "sent")]
    assert list(outboxes[1].iterdir()) == []
