"""``open`` in one pass: each payload file goes into its blob as it is decrypted and checked.

The package's payload is still read twice (its SHA-256 first, decrypting nothing, then the
decrypting pass, hashing it again); the extracted files are no longer read back to be
encrypted at rest. These tests hold the pass to its promises: the blob is made of the very
chunks whose digest was checked, and a package refused at any later step, or a failure
while recording, leaves no blob behind (and a `kill -9` leaves one that `doctor --repair`
removes).
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, copy_template
from test_opening import World, _out_is_empty, _package_world
from test_opening import sqlite_vaults as sqlite_vaults  # the module's template vaults
from test_robustness import as_json, crash, evault_argv, evault_env, limit_resources

from vault.errors import VerificationError


@pytest.fixture
def world(sqlite_vaults: Path, tmp_path: Path) -> World:
    """test_opening's world: its three vaults (a copy) and a package for ICC-OTP."""
    copy_template(sqlite_vaults, tmp_path)
    office_fp, icc_fp = json.loads((tmp_path / "fingerprints.json").read_text())
    return _package_world(tmp_path, office_fp, icc_fp)


def _blob_files(cli_vault: Path) -> list[Path]:
    return sorted(p for p in (cli_vault / "blobs").rglob("*")
                  if p.is_file() and p.name != ".intake.lock")


def test_open_stores_from_the_stream_and_never_rereads_the_extracted_files(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """No file of the staging folder is opened to be stored: store_path is never called and
    the legacy-digest reread runs only for the item whose MD5 the sender lists. What each
    blob holds is exactly the file received."""
    from vault.service import opening, storing

    def no_store_path(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("open read an extracted file back to store it")

    reread: list[str] = []
    real_digests = storing.file_digests

    def spy_digests(path: Any, algorithms: Any) -> dict[str, str]:
        reread.append(Path(path).name)
        return real_digests(path, algorithms)

    monkeypatch.setattr(storing, "store_path", no_store_path)
    monkeypatch.setattr(opening, "file_digests", spy_digests)
    out = world.tmp / "received"
    opened = json.loads(world.icc.ok("open", str(world.package), "--out", str(out),
                                     "--json").stdout)
    # Both items were ingested with --also-digest md5: each has a claim, each is reread.
    assert sorted(reread) == ["photo.jpg", "statement W-1.txt"]
    assert len(_blob_files(world.icc.vault)) == 2
    for item in opened["items"]:
        copy = world.tmp / f"copy-{item['id']}"
        world.icc.ok("items", "export", item["id"], "-o", str(copy), "--reason", "check")
        assert copy.read_bytes() == (world.tmp / "evidence" / item["name"]).read_bytes()
        files = list((out / opened["package"]).rglob(item["name"]))
        assert [f.read_bytes() for f in files] == [copy.read_bytes()]


def test_without_legacy_claims_nothing_is_read_back(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A package whose items.json lists SHA-256 alone: the open touches no extracted file."""
    from vault.service import opening

    package = world.tmp / "plain.evpkg"
    (world.tmp / "map.png").write_bytes(b"a fictional map\n" * 5000)
    world.office.ok("ingest", str(world.tmp / "map.png"), "--case", "PLAIN-1",
                    "--create-case")
    world.office.ok("package", "create", "--to", "ICC-OTP", "--case", "PLAIN-1", "-o",
                    str(package))

    def no_reread(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("open read an extracted file back")

    monkeypatch.setattr(opening, "file_digests", no_reread)
    opened = json.loads(world.icc.ok("open", str(package), "--out",
                                     str(world.tmp / "plain-out"), "--json").stdout)
    assert [i["name"] for i in opened["items"]] == ["map.png"]
    assert len(_blob_files(world.icc.vault)) == 1


@pytest.mark.parametrize("where", ["custody", "statement", "record"])
def test_a_package_refused_after_its_files_streamed_leaves_no_blob(
        world: World, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """The blobs exist once the payload has streamed; a refusal at a later check (the
    sender's custody excerpt, the signed statement) or a failure while recording removes
    them all, with the staging folder."""
    from vault.service import inspection, opening

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise VerificationError(f"package {world.package_id}: refused at {where} (test)")

    seen: list[int] = []

    def refuse_after_blobs(*args: Any, **kwargs: Any) -> None:
        seen.append(len(_blob_files(world.icc.vault)))
        refuse()

    target = {"custody": (inspection, "_check_custody"),
              "statement": (inspection, "_check_statement"),
              "record": (opening, "record_items")}[where]
    original = getattr(*target)
    monkeypatch.setattr(*target, refuse_after_blobs)
    out = world.tmp / "out"
    result = world.icc("open", str(world.package), "--out", str(out))
    assert (result.exit_code, result.stderr) == (
        3, f"evault: package {world.package_id}: refused at {where} (test)\n")
    assert seen == [2]  # both files were in blobs when the refusal came
    assert _blob_files(world.icc.vault) == []
    _out_is_empty(out)
    assert json.loads(world.icc.ok("items", "list", "--json").stdout) == []
    monkeypatch.setattr(*target, original)
    world.icc.ok("open", str(world.package), "--out", str(out))
    assert len(_blob_files(world.icc.vault)) == 2


def test_a_payload_cut_mid_file_leaves_no_blob_and_no_temporary(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The decrypting pass fails inside a payload file (here: its blob's writer fails on the
    second chunk): the half-written blob's temporary and the finished ones are removed."""
    from vault.service import storing

    calls: list[int] = []
    real = storing.AgeWriter.write

    def failing_write(self: Any, data: Any) -> int:
        calls.append(len(data))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(storing.AgeWriter, "write", failing_write)
    out = world.tmp / "out"
    result = world.icc("open", str(world.package), "--out", str(out))
    assert result.exit_code == 1
    assert re.fullmatch(r"evault: .*no space left on device.*\n", result.stderr.lower())
    assert list((world.icc.vault / "blobs").rglob(".tmp*")) == []
    assert _blob_files(world.icc.vault) == []
    _out_is_empty(out)


def test_kill_during_open_leaves_blobs_doctor_repair_removes(world: World) -> None:
    """`kill -9` once the files are staged and stored, before anything is recorded: the
    blobs are orphans doctor counts, and --repair moves them into quarantine (never deletes
    them) and removes the staging folder."""
    out = world.tmp / "received"
    crash("open", str(world.package), "--out", str(out), vault=world.icc.vault,
          step="open.staged")
    assert len(_blob_files(world.icc.vault)) == 2
    report = as_json(world.icc, "doctor", "--json")
    assert report["orphaned_blobs"] == 2
    assert as_json(world.icc, "doctor", "--repair", "--json")["orphans_quarantined"] == 2
    assert _blob_files(world.icc.vault) == []
    assert len(list((world.icc.vault / "quarantine").iterdir())) == 2
    _out_is_empty(out)
    world.icc.ok("open", str(world.package), "--out", str(out))
    assert len(_blob_files(world.icc.vault)) == 2
    assert as_json(world.icc, "doctor", "--json")["orphaned_blobs"] == 0


# ----------------------------------------------------------------------- short writes


class _ShortFile(io.FileIO):
    """A raw file whose write takes at most 7 bytes at a time, as a raw write may."""

    def write(self, data: Any, /) -> int:
        return super().write(memoryview(data)[:7])


def test_a_writeback_file_writes_all_it_is_given_even_when_the_raw_write_is_short(
        tmp_path: Path) -> None:
    """open's extracted files and every blob go through WritebackFile unbuffered: a raw
    write that takes part of a chunk must not lose the rest."""
    from vault.durable import WritebackFile

    class Short(WritebackFile, _ShortFile):
        pass

    data = bytes(range(256)) * 100
    with Short(str(tmp_path / "f"), "wb") as out:
        assert out.write(data) == len(data)
        assert out.write(memoryview(data)[5:40]) == 35
    assert (tmp_path / "f").read_bytes() == data + data[5:40]


def test_a_background_writer_hands_on_everything_and_raises_the_writes_error(
        tmp_path: Path) -> None:
    """BackgroundWriter tells its caller all was written: it must then write all, however
    little each write of the file takes, and a failed write is raised, not lost."""
    from vault.durable import BackgroundWriter

    data = os.urandom(100_000)
    with _ShortFile(str(tmp_path / "f"), "wb") as raw, BackgroundWriter(raw) as out:
        for start in range(0, len(data), 30_000):
            assert out.write(data[start:start + 30_000]) == len(data[start:start + 30_000])
        out.flush()
    assert (tmp_path / "f").read_bytes() == data

    class Full:
        def write(self, data: Any) -> int:
            raise OSError(28, "No space left on device")

        def flush(self) -> None:
            pass

    writer = BackgroundWriter(Full())  # type: ignore[arg-type]
    writer.write(b"first")  # handed over; its error comes with the next call that waits
    with pytest.raises(OSError, match="No space left"):
        writer.write(b"second")
    writer.close()


# ------------------------------------------------------------------ hostile review findings


def _paused_open(world: World, out: Path) -> subprocess.Popen[str]:
    """`evault open` of the world's package in a real process, paused at open.staged (its
    files decrypted, checked, extracted and in blobs; nothing recorded); SIGUSR1 goes on."""
    proc = subprocess.Popen(
        evault_argv("open", str(world.package), "--out", str(out), vault=world.icc.vault),
        env=evault_env(EVAULT_PAUSE_AT="open.staged"), stderr=subprocess.PIPE, text=True,
        preexec_fn=limit_resources)
    assert proc.stderr is not None
    assert proc.stderr.readline() == "evault: paused at open.staged\n"
    return proc


def _finish(proc: subprocess.Popen[str]) -> str:
    try:
        proc.send_signal(signal.SIGUSR1)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return err


def test_two_opens_of_one_package_at_once_one_wins_the_other_is_a_conflict(
        world: World) -> None:
    """Two runs into two --out folders: the second to commit was a traceback (a unique
    constraint of the database); it is now the one line of a conflict, exit 1, and its
    blobs and staging folder are gone."""
    proc = _paused_open(world, world.tmp / "a")
    try:
        world.icc.ok("open", str(world.package), "--out", str(world.tmp / "b"))
    finally:
        err = _finish(proc)
    assert (proc.returncode, err) == (1, f"evault: package {world.package_id}: opened already "
                                         "in this vault (by another open that finished first)\n")
    assert len(_blob_files(world.icc.vault)) == 2  # the winner's
    assert as_json(world.icc, "doctor", "--json")["orphaned_blobs"] == 0
    _out_is_empty(world.tmp / "a")


@pytest.mark.parametrize("swap", ["fifo", "other bytes"])
def test_an_extracted_file_swapped_before_its_md5_is_read_refuses_without_hanging(
        world: World, swap: str) -> None:
    """Someone who can write --out replaces an extracted file before the MD5 the sender
    lists is computed from it: other bytes are refused (its SHA-256 differs), and a fifo,
    which blocked the read (with the intake lock held) until someone wrote to it, is refused
    at once."""
    out = world.tmp / "out"
    proc = _paused_open(world, out)
    try:
        [photo] = list(out.rglob("photo.jpg"))
        photo.unlink()
        if swap == "fifo":
            os.mkfifo(photo)
        else:
            photo.write_bytes(b"other bytes")
    finally:
        err = _finish(proc)
    expected = (r"evault: .*photo\.jpg: is no longer a regular file; nothing was stored\n"
                if swap == "fifo" else
                rf"evault: package {world.package_id}: item \S+ changed on disk while being "
                r"received\n")
    assert re.fullmatch(expected, err), err
    assert proc.returncode == (1 if swap == "fifo" else 3)
    assert _blob_files(world.icc.vault) == []
    _out_is_empty(out)


def test_a_symlink_planted_as_the_intake_lock_is_refused_not_followed(world: World) -> None:
    """Whoever can write the blob folder puts a symbolic link where the intake lock is:
    evault would have created (and locked) the file it points at."""
    lock = world.icc.vault / "blobs" / ".intake.lock"
    lock.unlink(missing_ok=True)
    target = world.tmp / "created-by-evault"
    lock.symlink_to(target)
    result = world.icc("open", str(world.package), "--out", str(world.tmp / "out"))
    assert (result.exit_code, result.stderr) == (3, (
        f"evault: lock file {lock}: is a symbolic link, which evault never makes; remove it "
        "and run the command again\n"))
    assert not target.exists()
    lock.unlink()
    world.icc.ok("open", str(world.package), "--out", str(world.tmp / "out"))


def test_under_object_lock_files_are_stored_only_once_the_package_passed(
        aws_env: None, server: Any, tmp_path: Path) -> None:
    """A blob under S3 Object Lock cannot be taken back (a delete leaves the locked
    version): a refused open must not have made one, so on such a store `open` stores the
    extracted files after every check, as before the one-pass open."""
    bucket = server.bucket(object_lock=True)
    office, icc = Cli(tmp_path / "office"), Cli(tmp_path / "icc")
    office.ok("init")
    office.ok("identity", "create", "registry-office")
    icc.ok("init", "--blobs", f"s3://{bucket}/icc", "--object-lock", "compliance",
           "--retain-days", "1")
    icc.ok("identity", "create", "icc-officer")
    icc.ok("identity", "export", "-o", str(tmp_path / "icc.card.json"))
    office.ok("identity", "export", "-o", str(tmp_path / "office.card.json"))
    fingerprint = as_json(office, "identity", "show", "registry-office", "--json")["fingerprint"]
    office.ok("body", "add", "ICC-OTP", "--name", "Fictional ICC-OTP")
    office.ok("body", "key", "add", "ICC-OTP", "--card", str(tmp_path / "icc.card.json"))
    icc.ok("contact", "add", str(tmp_path / "office.card.json"), "--fingerprint", fingerprint)
    evidence = tmp_path / "statement.txt"
    evidence.write_bytes(b"a fictional witness statement\n" * 40_000)  # over 1 MiB
    office.ok("ingest", str(evidence), "--case", "C-1", "--create-case", "--also-digest", "md5")
    package = tmp_path / "p.evpkg"
    office.ok("package", "create", "--to", "ICC-OTP", "--case", "C-1", "-o", str(package))
    client = server.client()

    def versions() -> int:
        listed = client.list_object_versions(Bucket=bucket, Prefix="icc/")
        return len(listed.get("Versions", [])) + len(listed.get("DeleteMarkers", []))

    before = versions()
    from vault.service import inspection

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise VerificationError("package refused at its custody check (test)")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inspection, "_check_custody", refuse)
        result = icc("open", str(package), "--out", str(tmp_path / "out"))
    assert (result.exit_code, result.stderr) == (
        3, "evault: package refused at its custody check (test)\n")
    assert versions() == before  # nothing written, so nothing locked
    opened = as_json(icc, "open", str(package), "--out", str(tmp_path / "out"), "--json")
    assert versions() == before + 1
    [item] = opened["items"]
    icc.ok("items", "export", item["id"], "-o", str(tmp_path / "copy.txt"), "--reason", "check")
    assert (tmp_path / "copy.txt").read_bytes() == evidence.read_bytes()


# ------------------------------------------- de-duplication trusts no row it has not checked


def _claim_bytes_of(vault: Path, path: Path) -> str:
    """As someone who can write the database (not the keys, not the blob folder): make the
    row of an existing blob claim the SHA-256 and size of ``path``'s bytes. Returns that
    blob's id."""
    import hashlib
    import sqlite3

    data = path.read_bytes()
    db = sqlite3.connect(vault / "vault.db")
    with db:
        [(blob_id,)] = db.execute("SELECT id FROM blobs").fetchall()
        db.execute("UPDATE blobs SET sha256 = ?, size = ? WHERE id = ?",
                    (hashlib.sha256(data).hexdigest(), len(data), blob_id))
    db.close()
    return str(blob_id)


@pytest.mark.parametrize("command", ["open", "ingest"])
def test_a_blob_row_that_lies_about_its_bytes_is_not_deduplicated_onto(
        world: World, command: str) -> None:
    """The blob a new item would share is checked first (decrypted and hashed): a row
    changed to claim the new file's digest, pointing at other bytes, made evault delete the
    verified new blob and point the item at those other bytes. Now the new blob is kept."""
    decoy = world.tmp / "decoy.txt"
    decoy.write_bytes(b"a fictional note already in the vault\n")
    world.icc.ok("ingest", str(decoy), "--case", "DECOY-1", "--create-case")
    photo = world.tmp / "evidence" / "photo.jpg"
    planted = _claim_bytes_of(world.icc.vault, photo)
    if command == "open":
        out = world.tmp / "out"
        opened = as_json(world.icc, "open", str(world.package), "--out", str(out), "--json")
        [item] = [i["id"] for i in opened["items"] if i["name"] == "photo.jpg"]
    else:
        item = as_json(world.icc, "ingest", str(photo), "--case", "DECOY-1", "--json")[0]["id"]
    assert planted in [p.name for p in _blob_files(world.icc.vault)]  # nothing deleted
    copy = world.tmp / "copy.jpg"
    world.icc.ok("items", "export", item, "-o", str(copy), "--reason", "check")
    assert copy.read_bytes() == photo.read_bytes()


def test_an_honest_duplicate_still_shares_one_blob(world: World) -> None:
    """The check passes for a blob that holds the bytes: one blob for both items."""
    photo = world.tmp / "evidence" / "photo.jpg"
    world.icc.ok("ingest", str(photo), "--case", "DUP-1", "--create-case")
    opened = as_json(world.icc, "open", str(world.package), "--out", str(world.tmp / "out"),
                     "--json")
    assert len(opened["items"]) == 2
    assert len(_blob_files(world.icc.vault)) == 2  # photo.jpg's, shared; the statement's
