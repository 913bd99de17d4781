"""Robustness under crashes: ``kill -9`` at every named step of every writing command.

Each test runs one command in a subprocess with ``EVAULT_CRASH_AT=<step>`` (see
vault/faults.py), so it dies by SIGKILL exactly there, as in a power cut: no cleanup runs.
Then, on SQLite and on PostgreSQL:

- ``evault custody verify`` accepts the log;
- ``evault doctor --json`` shows no item without its blob, and after ``--repair`` no
  temporary file and no orphaned blob;
- nothing half-written is visible: a file without the temporary prefix is complete (its
  digest is the one the vault recorded), the outbox holds only complete packages;
- running the command again completes the work, once (one package, one receipt).

A randomised loop kills ``export`` and ``ingest`` at random moments on top of the named
steps. The helpers at the top (running ``evault`` in a subprocess with resource limits,
checking a one-line refusal, building the sender and recipient vaults) are shared by the
other ``test_robustness_*`` files.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_PASSPHRASE, Cli, pg_base_url, reuse_world, schema_url

CASE = "UA-2026-0042"
BODIES = ("ICC-OTP", "UA-OPG")
TEMP_PREFIX = ".tmp-"
MEMORY_LIMIT = 1 << 30  # address space of a subprocess: enough for evault, not for a bomb
CPU_LIMIT = 120

# ----------------------------------------------------------------------------- subprocesses


def limit_resources() -> None:
    """In the child: bounded memory and CPU, no core file."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_LIMIT, CPU_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def evault_env(crash_at: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a subprocess: the test key file passphrase, an optional crash."""
    env = {**os.environ, "EVAULT_KEY_STORAGE": "file", "EVAULT_PASSPHRASE": TEST_PASSPHRASE}
    env.pop("EVAULT_CRASH_AT", None)
    env.pop("EVAULT_DEBUG", None)
    if crash_at:
        env["EVAULT_CRASH_AT"] = crash_at
    env.update(extra)
    return env


def evault_argv(*args: str, vault: Path | None = None) -> list[str]:
    """The command line of ``evault ARGS [--vault VAULT]`` run from this checkout."""
    return [sys.executable, "-m", "vault", *args, *(["--vault", str(vault)] if vault else [])]


def run_evault(
    *args: str,
    vault: Path | None = None,
    crash_at: str | None = None,
    timeout: float = 120,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``evault`` in a subprocess with bounded memory and CPU and a wall-clock timeout."""
    return subprocess.run(
        evault_argv(*args, vault=vault), env=env or evault_env(crash_at), cwd=cwd,
        capture_output=True, text=True, timeout=timeout, preexec_fn=limit_resources,
    )


def crash(*args: str, vault: Path, step: str, cwd: Path | None = None) -> None:
    """Run a command that must die by SIGKILL at ``step`` (so the step is really reached)."""
    proc = run_evault(*args, vault=vault, crash_at=step, cwd=cwd)
    assert proc.returncode == -signal.SIGKILL, (
        f"{step} not reached: exit {proc.returncode}, stderr {proc.stderr!r}")
    assert "Traceback" not in proc.stderr


def assert_refusal(result: Any, code: int, *fragments: str) -> str:
    """A clean refusal: exit ``code``, exactly one ``evault: ...`` line on stderr, no
    traceback anywhere; return the message. Works for CliRunner results and subprocesses."""
    rc = getattr(result, "exit_code", getattr(result, "returncode", None))
    err = result.stderr
    out = result.stdout
    assert rc == code, f"exit {rc}, expected {code}: stderr {err!r}"
    assert err.startswith("evault: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err and "Traceback" not in out
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    return str(err[len("evault: "):-1])


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def as_json(cli: Cli, *args: str) -> Any:
    return json.loads(cli.ok(*args).stdout)


# ----------------------------------------------------------------------------- vaults


@dataclass
class Office:
    """A sending office, a recipient (ICC-OTP) and a second body (UA-OPG)."""

    office: Cli
    icc: Cli
    tmp: Path
    evidence: Path
    outbox: Path
    office_card: Path
    office_fp: str
    icc_fp: str


def backend_url(request: pytest.FixtureRequest, backend: str) -> str | None:
    """None for SQLite (the vault's own vault.db); a fresh schema on PostgreSQL."""
    return None if backend == "sqlite" else str(request.getfixturevalue("pg_url"))


def extra_pg_schema(request: pytest.FixtureRequest) -> str:
    """A second fresh PostgreSQL schema (for a second vault in one test), dropped after."""
    import sqlalchemy as sa

    base = pg_base_url()
    schema = "evr_" + secrets.token_hex(6)
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")

    def drop() -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()

    request.addfinalizer(drop)
    return schema_url(base, schema)


def matrix(steps: list[str], on_postgres: list[str]) -> list[Any]:
    """Every step on SQLite; on PostgreSQL the steps whose outcome the backend can change
    (each subprocess costs about a second, so the PostgreSQL side is a selection)."""
    return ([pytest.param("sqlite", s, id=f"sqlite-{s}") for s in steps]
            + [pytest.param("postgres", s, id=f"postgres-{s}", marks=pytest.mark.postgres)
               for s in on_postgres])


def evidence_files(folder: Path, sizes: tuple[int, ...] = (20, 70_000, 300_000)) -> Path:
    """Files of distinct random content (one spans several age chunks)."""
    folder.mkdir(parents=True, exist_ok=True)
    for n, size in enumerate(sizes):
        (folder / f"file-{n}.bin").write_bytes(os.urandom(size))
    return folder


def make_office(tmp: Path, database: str | None = None, recipient_db: str | None = None,
                second_body: bool = False) -> Office:
    """The office, ICC-OTP's vault (and UA-OPG's with ``second_body``) at ``tmp``: each
    test's own copy of a world the test process builds once per backend (conftest's
    ``reuse_world``)."""
    office_fp, icc_fp = reuse_world(
        ("robustness-office", second_body), tmp, [database, recipient_db],
        lambda folder, dbs: _build_office(folder, dbs[0], dbs[1], second_body))
    return Office(Cli(tmp / "office"), Cli(tmp / "icc"), tmp, tmp / "evidence", tmp / "outbox",
                  tmp / "office.card.json", office_fp, icc_fp)


def _build_office(tmp: Path, database: str | None, recipient_db: str | None,
                  second_body: bool) -> tuple[str, str]:
    office = Cli(tmp / "office")
    office.init(database)
    office_fp = as_json(office, "identity", "create", "registry-office", "--org",
                        "Fictional Ministry of Justice", "--json")["fingerprint"]
    office_card = tmp / "office.card.json"
    office.ok("identity", "export", "-o", str(office_card))
    icc = Cli(tmp / "icc")
    icc.init(recipient_db)
    icc_fp = as_json(icc, "identity", "create", "icc-officer", "--json")["fingerprint"]
    icc_card = tmp / "icc.card.json"
    icc.ok("identity", "export", "-o", str(icc_card))
    office.ok("body", "add", "ICC-OTP", "--name", "Fictional ICC-OTP")
    office.ok("body", "key", "add", "ICC-OTP", "--card", str(icc_card), "--fingerprint", icc_fp)
    if second_body:
        opg = Cli(tmp / "opg")
        opg.init()
        opg.ok("identity", "create", "opg-officer")
        opg_card = tmp / "opg.card.json"
        opg.ok("identity", "export", "-o", str(opg_card))
        office.ok("body", "add", "UA-OPG", "--name", "Fictional UA-OPG")
        office.ok("body", "key", "add", "UA-OPG", "--card", str(opg_card))
    icc.ok("contact", "add", str(office_card), "--fingerprint", office_fp)
    (tmp / "outbox").mkdir()
    evidence_files(tmp / "evidence")
    return office_fp, icc_fp


def check_healthy(cli: Cli) -> dict[str, Any]:
    """The vault verifies, no item lacks its blob, and repair leaves no leftover."""
    verified = cli("custody", "verify")
    assert verified.exit_code == 0, verified.stdout + verified.stderr
    before = as_json(cli, "doctor", "--json")
    assert before["blobs_missing"] == 0, before
    cli.ok("doctor", "--repair", "--json")
    after = as_json(cli, "doctor", "--json")
    assert (after["temporary_files"], after["orphaned_blobs"], after["blobs_missing"]) == (
        0, 0, 0), after
    return before


def check_items_complete(cli: Cli, tmp: Path, *originals: Path) -> None:
    """Every item decrypts to exactly one of the original files."""
    digests = {sha256_file(p) for folder in originals for p in folder.iterdir()}
    for item in as_json(cli, "items", "list", "--json"):
        assert item["sha256"] in digests
        out = tmp / f"check-{item['id']}"
        cli.ok("items", "export", item["id"], "-o", str(out), "--reason", "robustness check")
        assert sha256_file(out) == item["sha256"]
        out.unlink()


def check_outbox(cli: Cli, outbox: Path, *, temporaries: bool = True) -> list[str]:
    """Every complete-looking file in the outbox is a whole package the vault recorded as
    sent (or about to be); return their names. ``temporaries=False``: none may remain."""
    packages = {p["id"]: p for p in as_json(cli, "package", "list", "--json")}
    names = []
    for path in sorted(outbox.iterdir()):
        if path.name.startswith(TEMP_PREFIX):
            assert temporaries, f"temporary file left in the outbox: {path.name}"
            continue
        package_id = path.name.removesuffix(".evpkg")
        assert package_id in packages, f"{path.name}: not a package of this vault"
        shown = as_json(cli, "package", "show", package_id, "--json")
        assert sha256_file(path) == shown["file_sha256"], f"{path.name}: partial or altered"
        names.append(path.name)
    return names


def sent_packages(cli: Cli) -> list[dict[str, Any]]:
    return [p for p in as_json(cli, "package", "list", "--json")
            if p["state"] in ("sent", "acknowledged")]


# ----------------------------------------------------------------------------- ingest


@pytest.mark.parametrize("backend,step", matrix(
    ["ingest.blob_written", "ingest.before_commit"], ["ingest.before_commit"]))
def test_kill_during_ingest(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str, step: str
) -> None:
    world = make_office(tmp_path, backend_url(request, backend))
    cli = world.office
    crash("ingest", str(world.evidence), "-r", "--case", CASE, "--create-case",
          vault=cli.vault, step=step)
    report = check_healthy(cli)
    assert report["items"] == 0  # one transaction per batch: complete items or none
    assert as_json(cli, "case", "list", "--json") == []
    cli.ok("ingest", str(world.evidence), "-r", "--case", CASE, "--create-case")
    assert len(as_json(cli, "items", "list", "--json")) == 3
    check_items_complete(cli, tmp_path, world.evidence)
    check_healthy(cli)


# ----------------------------------------------------------------------------- package create


@pytest.mark.parametrize("backend,step", matrix(
    ["package.payload_written", "package.before_commit", "package.after_commit"],
    ["package.before_commit"]))
def test_kill_during_package_create(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str, step: str
) -> None:
    world = make_office(tmp_path, backend_url(request, backend))
    cli = world.office
    cli.ok("ingest", str(world.evidence), "-r", "--case", CASE, "--create-case")
    folder = tmp_path / "built"
    folder.mkdir()
    target = folder / "icc.evpkg"
    args = ("package", "create", "--to", "ICC-OTP", "--case", CASE, "-o", str(target))
    crash(*args, vault=cli.vault, step=step)
    check_healthy(cli)
    packages = as_json(cli, "package", "list", "--json")
    if step == "package.after_commit":
        (package,) = packages
        assert target.is_file() and sha256_file(target) == as_json(
            cli, "package", "show", package["id"], "--json")["file_sha256"]
    else:
        # Not committed: no package, no custody event, and no file under the final name.
        assert packages == [] and not target.exists()
        assert all(p.name.startswith(TEMP_PREFIX) for p in folder.iterdir())
    rerun = cli(*args)
    if target.exists() and packages:
        assert_refusal(rerun, 1, "exists already")
    else:
        assert rerun.exit_code == 0, rerun.stderr
    (package,) = as_json(cli, "package", "list", "--json")
    verified = world.icc("verify", str(target), "--as", "icc-officer")
    assert verified.exit_code == 0, verified.stdout
    assert package["state"] == "built"
    check_healthy(cli)


# ----------------------------------------------------------------------------- send


@pytest.mark.parametrize("backend,step", matrix(
    ["send.copied", "send.linked", "send.delivered", "send.after_commit"],
    ["send.linked", "send.delivered"]))
def test_kill_during_send(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str, step: str
) -> None:
    world = make_office(tmp_path, backend_url(request, backend))
    cli = world.office
    cli.ok("ingest", str(world.evidence), "-r", "--case", CASE, "--create-case")
    target = tmp_path / "icc.evpkg"
    pid = as_json(cli, "package", "create", "--to", "ICC-OTP", "--case", CASE, "-o",
                  str(target), "--json")["id"]
    crash("send", pid, "--outbox", str(world.outbox), vault=cli.vault, step=step)
    check_healthy(cli)
    delivered = check_outbox(cli, world.outbox)
    state = as_json(cli, "package", "show", pid, "--json")["state"]
    receipts = as_json(cli, "receipt", "list", "--json")
    if step == "send.after_commit":
        assert state == "sent" and len(receipts) == 1 and delivered == [f"{pid}.evpkg"]
    else:
        assert state == "built" and receipts == []
        assert delivered == ([] if step == "send.copied" else [f"{pid}.evpkg"])
    rerun = cli("send", pid, "--outbox", str(world.outbox))
    if state == "sent":
        assert_refusal(rerun, 1, f"package {pid}: sent already")
    else:
        assert rerun.exit_code == 0, rerun.stderr
    # Exactly one complete file, no temporary left, one receipt for one package.
    assert check_outbox(cli, world.outbox, temporaries=False) == [f"{pid}.evpkg"]
    assert [r["package"] for r in as_json(cli, "receipt", "list", "--json")] == [pid]
    check_healthy(cli)


# ----------------------------------------------------------------------------- export


@pytest.mark.postgres
@pytest.mark.parametrize("step", ["send.copied", "export.after_body"])
def test_kill_during_export_on_postgresql(tmp_path: Path, pg_url: str, step: str) -> None:
    """tests/test_export.py covers every step on SQLite; these are the same on PostgreSQL."""
    world = make_office(tmp_path, pg_url, second_body=True)
    cli = world.office
    cli.ok("ingest", str(world.evidence), "-r", "--case", CASE, "--create-case")
    args = ("export", "--to", ",".join(BODIES), "--case", CASE, "--outbox", str(world.outbox),
            "--jsonl")
    crash(*args, vault=cli.vault, step=step)
    check_healthy(cli)
    check_outbox(cli, world.outbox)
    rerun = cli.ok(*args)
    statuses = {json.loads(line)["status"] for line in rerun.stdout.splitlines()}
    assert statuses <= {"shared", "already shared", "resumed"}
    sent = sent_packages(cli)
    assert sorted(p["body"] for p in sent) == sorted(BODIES)  # exactly one per body
    receipts = as_json(cli, "receipt", "list", "--json")
    assert sorted(r["package"] for r in receipts) == sorted(p["id"] for p in sent)
    assert sorted(check_outbox(cli, world.outbox, temporaries=False)) == sorted(
        f"{p['id']}.evpkg" for p in sent)
    check_healthy(cli)


# ----------------------------------------------------------------------------- ack and import


@dataclass
class Sent:
    world: Office
    package: Path
    pid: str


def _sent_and_opened(tmp_path: Path, database: str | None, recipient_db: str | None) -> Sent:
    world = make_office(tmp_path, database, recipient_db)
    world.office.ok("ingest", str(world.evidence), "-r", "--case", CASE, "--create-case")
    built = as_json(world.office, "package", "create", "--to", "ICC-OTP", "--case", CASE,
                    "--send", "--outbox", str(world.outbox), "-o", str(tmp_path / "p.evpkg"),
                    "--json")
    package = world.outbox / f"{built['id']}.evpkg"
    world.icc.ok("open", str(package), "--out", str(tmp_path / "received"))
    return Sent(world, package, built["id"])


@pytest.mark.parametrize("backend,step", matrix(
    ["ack.before_commit", "ack.after_commit"], ["ack.after_commit"]))
def test_kill_during_ack(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str, step: str
) -> None:
    recipient_db = None if backend == "sqlite" else extra_pg_schema(request)
    sent = _sent_and_opened(tmp_path, None, recipient_db)
    icc = sent.world.icc
    ack = tmp_path / "ack.json"
    crash("ack", sent.pid, "-o", str(ack), vault=icc.vault, step=step)
    # No ack under its name either way: it is published only after the commit; the staged
    # files wait under temporary names (SIGKILL runs no cleanup).
    assert not ack.exists() and not Path(f"{ack}.sig").exists()
    temps = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX))
    assert sorted(t.split("-", 2)[2] for t in temps) == ["ack.json", "ack.json.sig"], temps
    check_healthy(icc)
    icc.ok("ack", sent.pid, "-o", str(ack))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)] == []
    # The checkpoint in the ack belongs to the recipient's history as it stays.
    later = tmp_path / "later-checkpoint.txt"
    icc.ok("custody", "checkpoint", "-o", str(later))
    consistent = icc("custody", "consistency", str(ack), str(later))
    assert consistent.exit_code == 0, consistent.stdout + consistent.stderr
    sent.world.office.ok("receipt", "import", str(ack))
    assert as_json(sent.world.office, "package", "show", sent.pid, "--json")["state"] == (
        "acknowledged")
    check_healthy(icc)


@pytest.mark.parametrize("backend,step", matrix(
    ["import.before_commit", "import.after_commit"], ["import.before_commit"]))
def test_kill_during_receipt_import(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str, step: str
) -> None:
    sent = _sent_and_opened(tmp_path, backend_url(request, backend), None)
    ack = tmp_path / "ack.json"
    sent.world.icc.ok("ack", sent.pid, "-o", str(ack))
    office = sent.world.office
    crash("receipt", "import", str(ack), vault=office.vault, step=step)
    check_healthy(office)
    state = as_json(office, "package", "show", sent.pid, "--json")["state"]
    assert state == ("sent" if step == "import.before_commit" else "acknowledged")
    rerun = office("receipt", "import", str(ack))
    # Either way the re-run succeeds: the same ack imported again is already acknowledged.
    assert rerun.exit_code == 0, rerun.stderr
    if state == "acknowledged":
        assert "already acknowledged" in rerun.stderr
    events = as_json(office, "custody", "show", sent.pid, "--json")["events"]
    assert [e["action"] for e in events].count("package.acknowledged") == 1
    check_healthy(office)


# ----------------------------------------------------------------------------- random kills


def test_random_kills_during_export_and_ingest(tmp_path: Path, database: str | None) -> None:
    """Kill ``export`` and ``ingest`` after random delays, then finish the work: one package
    and one receipt per body, every item complete. The seed is random and shown on failure;
    ``EVAULT_KILL_SEED=N`` replays one."""
    seed = int(os.environ.get("EVAULT_KILL_SEED", secrets.randbelow(2**32)))
    rng = random.Random(seed)
    world = make_office(tmp_path, database, second_body=True)
    cli = world.office
    cli.ok("ingest", str(world.evidence), "-r", "--case", CASE, "--create-case")
    more = evidence_files(tmp_path / "more", (1_500_000, 1_000_000, 10))
    export = ("export", "--to", ",".join(BODIES), "--case", CASE, "--outbox", str(world.outbox))
    ingest = ("ingest", str(more), "-r", "--case", CASE)
    kills = []
    for _ in range(3):
        args = export if rng.random() < 0.6 else ingest
        delay = rng.uniform(0.3, 1.4)
        proc = subprocess.Popen(evault_argv(*args, vault=cli.vault), env=evault_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                preexec_fn=limit_resources)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        kills.append((args[0], round(delay, 2), proc.returncode))
        assert "Traceback" not in err, (seed, kills, err)
    context = f"seed {seed}, kills {kills}"
    verified = cli("custody", "verify")
    assert verified.exit_code == 0, (context, verified.stdout)
    check_outbox(cli, world.outbox)
    # Finish: ingest what is missing, then export; nothing is duplicated.
    ingested = {i["sha256"] for i in as_json(cli, "items", "list", "--json")}
    if sha256_file(more / "file-0.bin") not in ingested:
        cli.ok("ingest", str(more), "-r", "--case", CASE)
    final = cli(*export, "--jsonl")
    assert final.exit_code == 0, (context, final.stderr)
    receipts = as_json(cli, "receipt", "list", "--json")
    sent = sent_packages(cli)
    assert sorted(r["package"] for r in receipts) == sorted(p["id"] for p in sent), context
    assert sorted(check_outbox(cli, world.outbox, temporaries=False)) == sorted(
        f"{p['id']}.evpkg" for p in sent), context
    for body in BODIES:  # every item reached every body, none twice
        shared = [i for p in sent if p["body"] == body for i in p["item_ids"]]
        assert len(shared) == len(set(shared)), context
        assert set(shared) == {i["id"] for i in as_json(cli, "items", "list", "--json")}, context
    check_items_complete(cli, tmp_path, world.evidence, more)
    check_healthy(cli)


# ----------------------------------------------------------------------------- Ctrl-C


@pytest.mark.skipif(sys.platform != "linux", reason="worker processes are used on Linux only")
def test_ctrl_c_during_bulk_intake_leaves_whole_items_only(sqlite_cli: Cli, tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group, worker processes included: what remains is
    whole items with their blobs, no temporary file and no blob without an item."""
    cli = sqlite_cli
    cli.ok("identity", "create", "registry-office", "--org", "Fictional Ministry of Justice")
    folder = tmp_path / "many"
    folder.mkdir()
    for n in range(3000):  # enough for the worker processes (256 and more)
        (folder / f"f{n:04d}.bin").write_bytes(os.urandom(2048))
    proc = subprocess.Popen(
        evault_argv("ingest", str(folder), "-r", "--case", CASE, "--create-case",
                    vault=cli.vault),
        env=evault_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    blobs = cli.vault / "blobs"
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:  # interrupt mid-way
        if blobs.is_dir() and any(p.is_file() for p in blobs.rglob("*")):
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:  # it finished first: still a valid outcome
        assert err == "evault: ingested 3000 file(s), 6144000 bytes\n"
    else:
        assert (proc.returncode, err) == (130, "evault: interrupted; nothing half-written "
                                          "was kept\n")
    items = as_json(cli, "items", "list", "--json")
    on_disk = [p for p in blobs.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert len(on_disk) == len({i["sha256"] for i in items}) == len(items)
    assert [p for p in blobs.rglob(".tmp*")] == []
    doctor = as_json(cli, "doctor", "--json")
    assert (doctor["temporary_files"], doctor["orphaned_blobs"]) == (0, 0)
    check_healthy(cli)


# ----------------------------------------------------------------------------- docs


def test_every_test_named_in_the_threat_model_exists() -> None:
    """docs/security.md backs each claim with ``file::test``: each must exist."""
    import re

    tests = Path(__file__).resolve().parent
    text = (tests.parent / "docs" / "security.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(test_\w+\.py)::(test_\w+)`", text))
    files = set(re.findall(r"`(test_\w+\.py)`", text))
    assert len(named) > 40
    missing = [f"{f}::{t}" for f, t in sorted(named)
               if not re.search(rf"^def {t}\(", (tests / f).read_text(), re.MULTILINE)]
    missing += [f for f in sorted(files) if not (tests / f).is_file()]
    assert missing == []


def test_the_threat_models_claims_are_numbered_in_order() -> None:
    """Claims are cited by number (README, notes, code comments): 1, 2, 3... with none
    left unnumbered."""
    import re

    text = (Path(__file__).resolve().parent.parent / "docs" / "security.md").read_text(
        encoding="utf-8")
    numbers = [int(n) for n in re.findall(r"^(\d+)\. \*\*", text, re.MULTILINE)]
    assert numbers == list(range(1, len(numbers) + 1))
    assert re.findall(r"^\D\D\. \*\*", text, re.MULTILINE) == []


def test_every_crash_step_is_in_the_code_and_exercised() -> None:
    """Each named step of vault/faults.py is reached by the code (a refactor that drops a
    crash_point would silently weaken these tests) and killed at by some test."""
    import re

    from vault.faults import STEPS

    root = Path(__file__).resolve().parent.parent
    code = "".join(p.read_text() for p in (root / "vault").rglob("*.py"))
    placed = set(re.findall(r'crash_point\("([a-z_.]+)"\)', code))
    assert placed == set(STEPS)
    tests = "".join((root / "tests" / f).read_text()
                    for f in ("test_robustness.py", "test_export.py",
                              "test_sealed_metadata.py", "test_robustness_leftovers.py",
                              "test_sftp.py"))
    assert [s for s in STEPS if f'"{s}"' not in tests] == []


@pytest.mark.parametrize("step", ["init.config_written", "init.migrated"])
def test_init_killed_midway_leaves_no_vault_and_the_next_init_completes(
    tmp_path: Path, step: str
) -> None:
    """A first `init` killed after writing its configuration, or after migrating, leaves no
    half-made vault at --vault; the next `init` makes a whole one there."""
    vault = tmp_path / "office"
    crash("init", vault=vault, step=step)
    assert not vault.exists()
    (staged,) = tmp_path.iterdir()
    assert staged.name.startswith(".office.init-")
    # The next commands in-process: only the killed init needs a process of its own.
    done = Cli(vault)("init")
    assert done.exit_code == 0, done.stderr
    assert "created:  yes\n" in done.stdout
    # The dead init's staging folder is gone too.
    assert [p.name for p in tmp_path.iterdir()] == ["office"]
    assert Cli(vault)("doctor").exit_code == 0
    assert Cli(vault)("identity", "create", "registry-office").exit_code == 0


def test_init_into_an_empty_directory_killed_midway_leaves_it_empty(tmp_path: Path) -> None:
    vault = tmp_path / "office"
    vault.mkdir()
    crash("init", vault=vault, step="init.config_written")
    assert list(vault.iterdir()) == []
    assert Cli(vault)("init").exit_code == 0  # in-process: only the killed init needs one
    assert (vault / "config.toml").is_file()


def test_init_that_fails_in_the_migrations_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failure the issue saw (an install without the migration scripts): init refuses
    with one line and leaves no vault, so a fixed install's `init` starts clean."""
    from click.testing import CliRunner

    from vault.cli import cli
    from vault.store import db

    vault = tmp_path / "office"
    with monkeypatch.context() as m:
        m.setattr(db, "MIGRATIONS", tmp_path / "no-migrations")
        result = CliRunner().invoke(cli, ["init", "--vault", str(vault)])
    assert_refusal(result, 1, "migrations not found")
    assert list(tmp_path.iterdir()) == []
    assert CliRunner().invoke(cli, ["init", "--vault", str(vault)]).exit_code == 0
