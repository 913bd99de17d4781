"""Disk full, read-only folders, paths that cannot be written: one clean line, nothing
half-written, the vault intact, and the same command succeeding once the cause is gone.

Real file systems where the test runs as root and may mount: a small tmpfs for a full disk
(the outbox, or the whole vault), and a tmpfs remounted read-only. Root ignores permission
bits, so "cannot write here" is also made with a path whose parent is a regular file, which
stops root too. Where mounting is not possible those tests skip with the reason, and the
in-process ones still run: a commit that fails as a full SQLite disk makes it fail (the
database's own "database or disk is full").
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Cli
from test_robustness import (
    CASE,
    TEMP_PREFIX,
    Office,
    as_json,
    assert_refusal,
    check_healthy,
    check_outbox,
    make_office,
)

Mount = Callable[..., Path]


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Mount]:
    """``mount(name, size_kib, read_only=False)``: a fresh tmpfs folder, unmounted after."""
    mounted: list[Path] = []

    def make(name: str, size_kib: int, read_only: bool = False) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root; the in-process tests still run")
        target = tmp_path / name
        target.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0755",
                               "tmpfs", str(target)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(target)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(target)], check=True)
        return target

    yield make
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.fixture
def world(tmp_path: Path) -> Office:
    office = make_office(tmp_path)
    office.office.ok("ingest", str(office.evidence), "-r", "--case", CASE, "--create-case")
    return office


def _built(world: Office) -> str:
    target = world.tmp / "icc.evpkg"
    return str(as_json(world.office, "package", "create", "--to", "ICC-OTP", "--case", CASE,
                       "-o", str(target), "--json")["id"])


def _state(cli: Cli, package_id: str) -> str:
    return str(as_json(cli, "package", "show", package_id, "--json")["state"])


# ----------------------------------------------------------------------------- disk full


def test_send_and_export_to_a_full_outbox(world: Office, mount: Mount) -> None:
    cli = world.office
    pid = _built(world)
    full = mount("full-outbox", 128)  # the package is about 400 KB
    assert_refusal(cli("send", pid, "--outbox", str(full)), 1, f"{full}/{pid}.evpkg: cannot "
                   "be written (No space left on device); nothing was left in the outbox")
    assert list(full.iterdir()) == []  # the partial copy is gone
    assert _state(cli, pid) == "built" and as_json(cli, "receipt", "list", "--json") == []
    # export builds into the vault, then fails to deliver: that body's result says why.
    result = cli("export", "--to", "ICC-OTP", "--case", CASE, "--outbox", str(full), "--jsonl")
    assert_refusal(result, 1, "export failed for ICC-OTP")
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["status"] == "failed" and "No space left on device" in row["error"]
    assert list(full.iterdir()) == []
    check_healthy(cli)
    # With room, the same commands finish the work: the built package is resumed, not rebuilt.
    rows = [json.loads(line) for line in cli.ok(
        "export", "--to", "ICC-OTP", "--case", CASE, "--outbox", str(world.outbox),
        "--jsonl").stdout.splitlines()]
    assert [r["status"] for r in rows] == ["resumed"]
    assert check_outbox(cli, world.outbox, temporaries=False) == [f"{rows[0]['package']}.evpkg"]
    assert len(as_json(cli, "receipt", "list", "--json")) == 1


@pytest.mark.parametrize("free_kib", [0, 48, 96])
def test_a_vault_on_a_full_disk(tmp_path: Path, mount: Mount, free_kib: int) -> None:
    """The vault itself on a full disk: blobs cannot be written, or the database cannot
    grow (SQLite's "database or disk is full"); either way one line, and nothing kept."""
    disk = mount("disk", 2048)
    cli = Cli(disk / "vault")
    cli.ok("init")
    cli.ok("identity", "create", "registry-office")
    evidence = tmp_path / "evidence.bin"
    evidence.write_bytes(os.urandom(20_000))
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(filler, "wb") as f:
        f.write(b"\0" * max(free - free_kib * 1024, 0))
    results = [cli("ingest", str(evidence), "--case", CASE, "--create-case"),
               cli("custody", "checkpoint"), cli("body", "add", "ICC-OTP", "--name", "ICC")]
    for result in results:
        if result.exit_code != 0:
            assert_refusal(result, 1)
            assert any(w in result.stderr for w in ("No space left", "cannot write",
                                                    "cannot connect")), result.stderr
    assert any(r.exit_code != 0 for r in results)
    filler.unlink()
    report = check_healthy(cli)
    items = as_json(cli, "items", "list", "--json")
    assert report["items"] == len(items) <= 1  # complete or absent
    cli.ok("ingest", str(evidence), "--case", CASE, "--create-case")
    check_healthy(cli)


def test_doctor_repair_with_a_full_quarantine_disk(world: Office, mount: Mount) -> None:
    """``<vault>/quarantine`` a small disk of its own: the link from ``blobs/`` fails
    (EXDEV), the copy of a large orphan runs out of room. That orphan stays in ``blobs/``,
    named with its path (no longer "No space left on device" alone), its partial copy is
    removed, and a small orphan after it is still moved."""
    cli = world.office
    shard = cli.vault / "blobs" / "ab"
    shard.mkdir(exist_ok=True)
    large, small = shard / ("ab" + "0" * 30), shard / ("ab" + "1" * 30)
    content = os.urandom(1 << 20)
    large.write_bytes(content)
    small.write_bytes(b"fictional small orphan")
    quarantine = mount("office/quarantine", 128)
    result = cli("doctor", "--repair")
    shown = {k: v.strip() for k, v in (line.split(":", 1) for line in result.stdout.splitlines())}
    assert (result.exit_code, shown["orphans_quarantined"], shown["orphans_skipped"]) == (
        1, "1", "1")
    assert result.stderr == (
        f"evault: 1 orphaned blob(s) moved to {quarantine}: no row names them, but they may "
        "be evidence whose rows were deleted; delete them only once `evault custody verify` "
        "passes and you have checked them\n"
        f"evault: {large}: cannot be moved into {quarantine} (No space left on device); left "
        "in place for the next `evault doctor --repair`\n")
    assert large.read_bytes() == content and not small.exists()
    assert [p.name for p in quarantine.iterdir()] == [small.name]  # no partial copy
    cli.ok("custody", "verify")


# ----------------------------------------------------------------------------- read-only


def test_read_only_folders(world: Office, mount: Mount) -> None:
    cli = world.office
    pid = _built(world)
    ro = mount("read-only", 1024, read_only=True)
    assert_refusal(cli("send", pid, "--outbox", str(ro)), 1, "Read-only file system")
    assert _state(cli, pid) == "built"
    items = as_json(cli, "items", "list", "--json")
    assert_refusal(cli("items", "export", items[0]["id"], "-o", str(ro / "copy.bin"),
                       "--reason", "check"), 1, "Read-only file system")
    events = as_json(cli, "custody", "show", items[0]["id"], "--json")["events"]
    assert [e["action"] for e in events] == ["item.ingested"]  # no export logged
    cli.ok("send", pid, "--outbox", str(world.outbox))
    icc = world.icc
    package = world.outbox / f"{pid}.evpkg"
    assert_refusal(icc("open", str(package), "--out", str(ro / "received")), 1,
                   "Read-only file system")
    assert as_json(icc, "items", "list", "--json") == []
    icc.ok("open", str(package), "--out", str(world.tmp / "received"))
    assert_refusal(icc("ack", pid, "-o", str(ro / "ack.json")), 1, "Read-only file system")
    events = as_json(icc, "custody", "show", pid, "--json")["events"]
    assert [e["action"] for e in events] == ["package.opened"]  # the ack was rolled back
    check_healthy(icc)
    check_healthy(cli)
    assert list(ro.iterdir()) == []


# ----------------------------------------------------------------------------- read-only database


def _honouring_modes() -> Callable[[], None] | None:
    """What a child process runs before evault so that a file's mode bits stop it: nothing
    for a user; for root, whom they do not stop, the drop of CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH from its bounding set (root keeps neither through exec, and meets
    the bits as the owner of the vault's files does)."""
    if os.geteuid() != 0:
        return None

    def drop() -> None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    return drop


def _bound_by_modes(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``evault ARGS`` (or, for ``-c``, ``python -c``) in a process that mode bits stop."""
    # The installed command, not `python -m vault`, which would import a folder named
    # "vault" in ``cwd`` (a test's vault) instead of the code.
    argv = ([sys.executable, *args] if args[0] == "-c"
            else [str(Path(sys.executable).with_name("evault")), *args])
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=120,
                          preexec_fn=_honouring_modes())


def _check_modes_stop_writes(path: Path, cwd: Path) -> None:
    """Skip, saying why, where no child process can be made that ``path``'s mode stops."""
    try:
        probe = _bound_by_modes("-c", f"open({str(path)!r}, 'r+b')", cwd=cwd)
    except subprocess.SubprocessError as e:  # the bounding set could not be dropped
        pytest.skip(f"cannot start a process that file modes stop here: {e}")
    if "PermissionError" not in probe.stderr:
        pytest.skip(f"a process here writes {path} despite its mode: {probe.stderr!r}")


def test_a_read_only_database_file_or_folder_is_one_line(tmp_path: Path) -> None:
    """A SQLite vault whose vault.db (mode 0444) or folder (0555) its user may not write
    (PostgreSQL's role without privileges is named already): every write traced back with
    SQLite's "attempt to write a readonly database"; a folder read-only before the first
    connection said "cannot connect (attempt to write a readonly database)". One line now
    (exit 1, as a configuration error), nothing written, and reads still work where SQLite
    can read."""
    from vault.errors import ConfigError
    from vault.store import dbapi

    assert type(dbapi.failure(sqlite3.OperationalError(
        "attempt to write a readonly database"))) is ConfigError
    cli = Cli(tmp_path / "vault").init()
    cli.ok("identity", "create", "registry-office")
    evidence = tmp_path / "evidence.txt"
    evidence.write_text("fictional evidence\n")
    database = cli.vault / "vault.db"
    line = ("evault: vault database: its file is read-only (attempt to write a readonly "
            "database); check the permissions of the database file, its -wal and -shm files "
            "and its folder\n")
    writes = [("identity", "create", "officer"), ("case", "create", CASE),
              ("ingest", str(evidence), "--case", CASE, "--create-case")]
    beside = [database.with_name(f"vault.db{suffix}") for suffix in ("-wal", "-shm")]
    os.chmod(database, 0o444)
    try:
        _check_modes_stop_writes(database, tmp_path)
        for args in writes:
            result = _bound_by_modes(*args, "--vault", str(cli.vault), cwd=tmp_path)
            assert (result.returncode, result.stdout, result.stderr) == (1, "", line), args
        listed = _bound_by_modes("identity", "list", "--json", "--vault", str(cli.vault),
                                 cwd=tmp_path)
        assert [i["name"] for i in json.loads(listed.stdout)] == ["registry-office"]
        # The folder read-only, with no -wal or -shm file left to open: the first statement.
        os.chmod(database, 0o600)
        for path in beside:
            if path.exists():
                os.chmod(path, 0o600)
        cli.ok("identity", "list")  # the last connection to close removes them
        assert [p for p in beside if p.exists()] == []
        os.chmod(cli.vault, 0o555)
        for args in [("items", "list"), ("identity", "list"), *writes]:
            result = _bound_by_modes(*args, "--vault", str(cli.vault), cwd=tmp_path)
            assert (result.returncode, result.stdout, result.stderr) == (1, "", line), args
    finally:
        os.chmod(cli.vault, 0o700)
        for path in [database, *beside]:
            if path.exists():
                os.chmod(path, 0o600)
    # Nothing was half-written: no identity, case, item or blob; then the same writes work.
    assert [i["name"] for i in as_json(cli, "identity", "list", "--json")] == [
        "registry-office"]
    assert as_json(cli, "case", "list", "--json") == []
    report = as_json(cli, "doctor", "--json")
    assert (report["items"], report["blobs"], report["orphaned_blobs"]) == (0, 0, 0)
    for args in writes:
        cli.ok(*args)
    check_healthy(cli)


# ----------------------------------------------------------------------------- cannot write


def test_paths_that_cannot_be_written(world: Office) -> None:
    """A parent that is a regular file stops root as well as anyone: each command refuses
    with one line and leaves the vault as it was."""
    cli = world.office
    blocker = world.tmp / "a-file"
    blocker.write_text("not a folder")
    below = blocker / "x"
    pid = _built(world)
    item = as_json(cli, "items", "list", "--json")[0]["id"]
    before = cli.ok("custody", "verify").stdout
    # An outbox that is a file (--outbox takes a folder or an sftp:// URL, so evault, not
    # click, refuses it: one line).
    assert_refusal(cli("send", pid, "--outbox", str(blocker)), 1)
    for args, code in [
        (("send", pid, "--outbox", str(below)), 1),
        (("items", "export", item, "-o", str(below), "--reason", "r"), 1),
        (("package", "create", "--to", "ICC-OTP", "--case", CASE, "-o", str(below)), 1),
        (("custody", "checkpoint", "-o", str(below)), 1),
        (("identity", "export", "-o", str(below)), 1),
        (("export", "--to", "ICC-OTP", "--case", CASE, "--outbox", str(below)), 1),
        (("ingest", "--manifest", str(below.with_suffix(".csv")), "--case", CASE), 1),
    ]:
        result = cli(*args)
        assert_refusal(result, code)
    assert cli.ok("custody", "verify").stdout == before  # nothing was logged
    assert _state(cli, pid) == "built" and blocker.read_text() == "not a folder"
    icc = world.icc
    cli.ok("send", pid, "--outbox", str(world.outbox))
    icc.ok("open", str(world.outbox / f"{pid}.evpkg"), "--out", str(world.tmp / "in"))
    assert_refusal(icc("ack", pid, "-o", str(below)), 1)
    assert_refusal(icc("open", str(world.outbox / f"{pid}.evpkg"), "--out", str(below)), 1)
    assert [e["action"] for e in as_json(icc, "custody", "show", pid, "--json")["events"]] == [
        "package.opened"]
    if os.geteuid() != 0:  # permission bits, where they apply
        locked = world.tmp / "locked"
        locked.mkdir(mode=0o555)
        assert_refusal(cli("send", pid, "--outbox", str(locked)), 1, "Permission denied")


# ----------------------------------------------------------------------------- failed commits


@pytest.fixture
def failing_commit(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """``arm("module.function")``: the next commit after that function runs fails the way
    a full SQLite disk makes it fail. Works without root, on any file system."""
    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.orm import Session

    armed: list[bool] = []

    def fail(_session: Session) -> None:
        if armed:
            armed.clear()
            raise OperationalError("COMMIT", {}, sqlite3.OperationalError(
                "database or disk is full"))

    event.listen(Session, "before_commit", fail)

    def arm(target: str) -> None:
        module, name = target.rsplit(".", 1)
        original = getattr(__import__(module, fromlist=[name]), name)

        def wrapped(*args: object, **kwargs: object) -> object:
            monkeypatch.setattr(target, original)  # one shot
            armed.append(True)
            return original(*args, **kwargs)

        monkeypatch.setattr(target, wrapped)

    yield arm
    event.remove(Session, "before_commit", fail)


def test_commits_that_fail_leave_nothing_behind(
    world: Office, failing_commit: Callable[[str], None]
) -> None:
    cli = world.office
    # package create: the file was linked in place before the commit; it must go again.
    failing_commit("vault.service.packaging.build.package_info")
    target = world.tmp / "p.evpkg"
    assert_refusal(cli("package", "create", "--to", "ICC-OTP", "--case", CASE, "-o",
                       str(target)), 1, "database or disk is full", "try again")
    assert not target.exists()
    assert [p.name for p in world.tmp.iterdir() if p.name.startswith(TEMP_PREFIX)] == []
    assert as_json(cli, "package", "list", "--json") == []
    # ingest: the blobs written for the batch are removed again.
    more = world.tmp / "more.bin"
    more.write_bytes(os.urandom(5000))
    failing_commit("vault.service.intake.CustodyLog")
    assert_refusal(cli("ingest", str(more), "--case", CASE), 1, "database or disk is full")
    assert len(as_json(cli, "items", "list", "--json")) == 3
    check_healthy(cli)
    # ack: the staged files are removed, nothing is published.
    pid = _built(world)
    cli.ok("send", pid, "--outbox", str(world.outbox))
    icc = world.icc
    icc.ok("open", str(world.outbox / f"{pid}.evpkg"), "--out", str(world.tmp / "in"))
    failing_commit("vault.service.opening.stage_files")
    ack = world.tmp / "ack.json"
    assert_refusal(icc("ack", pid, "-o", str(ack)), 1, "database or disk is full")
    assert sorted(p.name for p in world.tmp.iterdir() if "ack" in p.name) == []
    icc.ok("ack", pid, "-o", str(ack))
    cli.ok("receipt", "import", str(ack))
    check_healthy(icc)
    check_healthy(cli)


def test_syncfs_calls_the_c_library_without_starting_a_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """syncfs found the C library with ctypes.util.find_library, which runs `ldconfig -p`
    (a process, a few ms) on every call: once per 2,000 files ingested, and per open."""
    from vault import durable

    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a process was started: {args}")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    assert durable.syncfs(tmp_path) is True
    with pytest.raises(FileNotFoundError):
        durable.syncfs(tmp_path / "missing")


def test_a_vault_on_a_read_only_mount_is_one_line_for_doctor_and_db_upgrade(
        tmp_path: Path, mount: Mount) -> None:
    """A vault folder on a file system mounted read-only, with no -wal or -shm file: SQLite
    cannot open vault.db at all ("unable to open database file"), and doctor and `db
    upgrade`, which read the schema's revision before anything else, traced back."""
    source = Cli(tmp_path / "vault").init()
    source.ok("identity", "create", "registry-office")
    area = mount("ro-area", 8192)
    shutil.copytree(source.vault, area / "vault")
    for beside in ("vault.db-wal", "vault.db-shm"):
        (area / "vault" / beside).unlink(missing_ok=True)
    subprocess.run(["mount", "-o", "remount,ro", str(area)], check=True)
    cli = Cli(area / "vault")
    for args in [("doctor",), ("db", "upgrade"), ("db", "current")]:
        result = cli(*args)
        assert (result.exit_code, result.stdout, result.stderr) == (
            1, "", "evault: vault database: cannot connect (unable to open database file)\n"
        ), args
