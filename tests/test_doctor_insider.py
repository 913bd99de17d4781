"""``evault doctor`` against a database insider (who can write the vault's database with
SQL but holds no key).

A ``blobs`` row deleted with SQL made the item's blob an "orphan": doctor said the vault
was healthy (exit 0) and ``doctor --repair`` deleted the only copy of the evidence. Every
blob an item names is now known, with a row or not; an item whose blob has no row is a
failure (exit 3); and ``--repair`` deletes no orphan: it moves them into
``<vault>/quarantine/`` (the rows of an orphan's item, and the event that created it, may
have been deleted or changed too).

An item row's ``ingested_at``, ``size`` or ``sha256`` changed with SQL passed doctor and
``custody verify`` and went into signed packages. Doctor now compares every item row with
the body of the custody event that created it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import SQLITE_ONLY, Cli
from test_sealed_metadata import _sender_and_recipient, _sql, _two_items

RESTORE = ("(changed by SQL outside evault); run `evault custody verify`, then restore the "
           "database from a backup\n")


def _rows(cli: Cli, database: str | None, query: str) -> list[Any]:
    """What the insider reads (the test's own reading of the database)."""
    engine = sa.create_engine(database or f"sqlite:///{cli.vault / 'vault.db'}")
    with engine.connect() as conn:
        rows = [tuple(row) for row in conn.exec_driver_sql(query)]
    engine.dispose()
    return rows


def _no_foreign_keys(database: str | None) -> tuple[str, ...]:
    """PostgreSQL checks foreign keys, unless a superuser says not to (SQLite's are off)."""
    return () if database is None else ("SET session_replication_role = replica",)


def _shown(stdout: str) -> dict[str, str]:
    return {k: v.strip() for k, v in (line.split(":", 1) for line in stdout.splitlines())}


def _blob_of(cli: Cli, database: str | None, item: str) -> str:
    [(blob,)] = _rows(cli, database, f"SELECT blob_id FROM items WHERE id = '{item}'")
    return str(blob)


def _created(cli: Cli, database: str | None, item: str) -> tuple[int, dict[str, Any]]:
    """The seq and body of the event that created ``item``."""
    [(seq, body)] = _rows(cli, database, "SELECT seq, body FROM custody_events WHERE subject = "
                          f"'{item}' AND action IN ('item.ingested', 'item.received')")
    return int(seq), json.loads(bytes(body))


def test_doctor_keeps_the_blob_of_an_item_whose_blob_row_sql_deleted(
        tmp_path: Path, database: str | None) -> None:
    """The reviewer's F1: exit 0, ``orphaned_blobs: 1``, and ``--repair`` unlinked it."""
    cli, (a, _b) = _two_items(tmp_path, database)
    blob = _blob_of(cli, database, a)
    _sql(cli, database, *_no_foreign_keys(database), f"DELETE FROM blobs WHERE id = '{blob}'")
    said = (f"evault: blob {blob} (items {a}): its row is missing from the database (deleted "
            "by SQL outside evault); the blob is kept; restore the database from a backup\n")
    for args in ((), ("--repair",)):
        result = cli("doctor", *args)
        shown = _shown(result.stdout)
        assert (result.exit_code, shown["blobs_unrecorded"], shown["orphaned_blobs"],
                result.stderr) == (3, "1", "0", said), args
        assert (cli.vault / "blobs" / blob[:2] / blob).is_file()
    assert shown["blobs_removed"] == "0"
    result = cli("doctor", "--json")
    assert (result.exit_code, json.loads(result.stdout)["unrecorded"], result.stderr) == (
        3, [f"{blob} (items {a})"], "")
    # The evidence is still there to export.
    cli.ok("items", "export", a, "-o", str(tmp_path / "copy.txt"), "--reason", "fictional")
    assert (tmp_path / "copy.txt").read_text().startswith("fictional file ")


def _quarantined(cli: Cli, blob: str) -> str:
    return (f"evault: 1 orphaned blob(s) moved to {cli.vault / 'quarantine'}: no row names "
            "them, but they may be evidence whose rows were deleted; delete them only once "
            "`evault custody verify` passes and you have checked them\n")


def test_doctor_repair_quarantines_an_orphan_while_a_check_fails(
        tmp_path: Path, database: str | None) -> None:
    """An item's rows and its blob's row all deleted: the blob is an orphan no row names,
    but the signed item.ingested event still names the item; repair moves the blob into the
    quarantine folder, never deletes it."""
    cli, (a, _b) = _two_items(tmp_path, database)
    blob = _blob_of(cli, database, a)
    content = (cli.vault / "blobs" / blob[:2] / blob).read_bytes()
    seq, _body = _created(cli, database, a)
    _sql(cli, database, *_no_foreign_keys(database),
         *(f"DELETE FROM {table} WHERE item_id = '{a}'"
           for table in ("item_labels", "item_tags", "item_digests")),
         f"DELETE FROM items WHERE id = '{a}'", f"DELETE FROM blobs WHERE id = '{blob}'")
    result = cli("doctor", "--repair")
    shown = _shown(result.stdout)
    assert (result.exit_code, shown["orphaned_blobs"], shown["orphans_quarantined"],
            shown["quarantine"], shown["blobs_removed"]) == (
        3, "1", "1", str(cli.vault / "quarantine"), "0")
    assert result.stderr == (
        f"evault: item {a}: its row is missing; its signed item.ingested event (seq {seq}) "
        f"created it {RESTORE}" + _quarantined(cli, blob))
    assert not (cli.vault / "blobs" / blob[:2] / blob).exists()
    assert (cli.vault / "quarantine" / blob).read_bytes() == content


@pytest.mark.parametrize("hide", [
    "UPDATE custody_events SET action = 'item.viewed' WHERE subject = '{a}' "
    "AND action = 'item.ingested'",
    "DELETE FROM custody_events WHERE subject = '{a}'"], ids=["action", "deleted"])
def test_doctor_repair_deletes_no_orphan_whose_creating_event_sql_hid(
        tmp_path: Path, database: str | None, hide: str) -> None:
    """The reviewer's CRITICAL: the item's rows, its blob's row and its digests deleted, and
    its item.ingested event's action column changed (or the event deleted): every check
    passed and --repair unlinked the only copy of the evidence (exit 0). Now the blob is
    moved into quarantine; a deleted event is a gap in the log (exit 3)."""
    cli, (a, _b) = _two_items(tmp_path, database)
    blob = _blob_of(cli, database, a)
    content = (cli.vault / "blobs" / blob[:2] / blob).read_bytes()
    seq, _body = _created(cli, database, a)
    _sql(cli, database, *_no_foreign_keys(database),
         f"DELETE FROM blobs WHERE id = '{blob}'",
         *(f"DELETE FROM {table} WHERE item_id = '{a}'"
           for table in ("item_labels", "item_tags", "item_digests")),
         f"DELETE FROM items WHERE id = '{a}'", hide.format(a=a))
    result = cli("doctor", "--repair")
    shown = _shown(result.stdout)
    gap = hide.startswith("DELETE")
    said = (f"event {seq} is missing from the custody log (deleted by SQL outside "
            "evault?); run `evault custody verify`, then restore the database from a "
            "backup")
    assert (result.exit_code, shown["orphans_quarantined"], shown["blobs_removed"],
            shown["custody_log"], result.stderr) == (
        3 if gap else 0, "1", "0", said if gap else "ok",
        (f"evault: custody log: {said}\n" if gap else "") + _quarantined(cli, blob)), hide
    assert (cli.vault / "quarantine" / blob).read_bytes() == content
    # Nothing in quarantine is a blob to doctor: the next run is as before.
    again = cli("doctor")
    assert (again.exit_code, _shown(again.stdout)["orphaned_blobs"]) == (
        3 if gap else 0, "0")


def test_doctor_repair_never_overwrites_a_quarantined_file(tmp_path: Path) -> None:
    """An orphan whose id is already in quarantine (a run stopped midway, or the same id
    found again) goes in beside it, as ``<blob-id>.1``."""
    cli, _ids = _two_items(tmp_path, None)
    blob = "ab" + "0" * 30
    stray = cli.vault / "blobs" / "ab" / blob
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"fictional leftover of a killed intake")
    (cli.vault / "quarantine").mkdir()
    (cli.vault / "quarantine" / blob).write_bytes(b"fictional quarantined before")
    result = cli("doctor", "--repair")
    assert (result.exit_code, _shown(result.stdout)["orphans_quarantined"], result.stderr) == (
        0, "1", _quarantined(cli, blob))
    assert sorted(p.name for p in (cli.vault / "quarantine").iterdir()) == [blob, f"{blob}.1"]
    assert ((cli.vault / "quarantine" / blob).read_bytes(),
            (cli.vault / "quarantine" / f"{blob}.1").read_bytes()) == (
        b"fictional quarantined before", b"fictional leftover of a killed intake")
    assert not stray.exists()


def test_doctor_repair_quarantines_the_orphans_of_a_healthy_vault(tmp_path: Path) -> None:
    """What repair is for: a blob file no row names, in a vault whose checks all pass, is
    moved out of blobs/ (not deleted)."""
    cli, _ids = _two_items(tmp_path, None)
    blob = "ab" + "0" * 30
    stray = cli.vault / "blobs" / "ab" / blob
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"fictional leftover of a killed intake")
    result = cli("doctor", "--repair")
    shown = _shown(result.stdout)
    assert (result.exit_code, shown["orphaned_blobs"], shown["orphans_quarantined"],
            shown["blobs_removed"], result.stderr, stray.exists()) == (
        0, "1", "1", "0", _quarantined(cli, blob), False)
    assert (cli.vault / "quarantine" / blob).read_bytes() == (
        b"fictional leftover of a killed intake")


def _other_shards(blob: str) -> tuple[str, str]:
    """The first and the last shard in the order doctor reads them, other than the blob's
    own."""
    others = [f"{n:02x}" for n in range(256) if f"{n:02x}" != blob[:2]]
    return others[0], others[-1]


def test_a_blob_in_another_shard_is_missing_and_repair_moves_it_back(tmp_path: Path) -> None:
    """A blob file moved into another shard than its own counted as present, though every
    command reads it from its own shard: it is missing (exit 3), named with where it was
    found; ``--repair`` moves it back and the item exports again. A second file of its
    name and another size, in another shard, is named and left where it is (exit 1), then
    and after: a row names it, and the rows cannot tell which copy is good (an earlier
    version quarantined it, with the advice to delete it)."""
    cli, (a, _b) = _two_items(tmp_path, None)
    blob = _blob_of(cli, None, a)
    home = cli.vault / "blobs" / blob[:2] / blob
    first, last = _other_shards(blob)
    stray = cli.vault / "blobs" / first / blob
    stray.parent.mkdir(exist_ok=True)
    data = home.read_bytes()
    home.rename(stray)
    second = cli.vault / "blobs" / last / blob
    second.parent.mkdir(exist_ok=True)
    second.write_bytes(data + b"fictional")

    result = cli("doctor")
    shown = _shown(result.stdout)
    assert (result.exit_code, shown["blobs_missing"], shown["misplaced"],
            shown["orphaned_blobs"], shown["stray_copies"]) == (3, "1", "1", "0", "1")
    left = (f"evault: {second}: named as a blob a row names, but not that blob where evault "
            "reads it (another copy, a decoy or a link); left in place: compare it with the "
            "blob and remove it by hand\n")
    assert result.stderr == (
        f"evault: blob {blob} (items {a}): missing from {cli.vault / 'blobs'}, found in "
        f"another shard ({stray}); `evault doctor --repair` moves it back\n{left}")
    report = json.loads(cli("doctor", "--json").stdout)
    assert (report["missing"], report["misplaced"]) == ([f"{blob} (items {a})"], [str(stray)])

    result = cli("doctor", "--repair")
    shown = _shown(result.stdout)
    assert (result.exit_code, shown["blobs_missing"], shown["blobs_restored"],
            shown["orphaned_blobs"]) == (1, "0", "1", "0"), result.stderr
    assert "misplaced" not in shown
    assert result.stderr == left + (
        "evault: 1 blob(s) found in another shard moved back to their own; run `evault "
        "custody verify`\n")
    assert (home.read_bytes(), stray.exists(), second.read_bytes()) == (
        data, False, data + b"fictional")
    cli.ok("items", "export", a, "-o", str(tmp_path / "copy.txt"), "--reason", "fictional")
    result = cli("doctor", "--repair")
    assert (result.exit_code, _shown(result.stdout)["orphaned_blobs"], result.stderr,
            second.exists()) == (1, "0", left, True)
    assert not (cli.vault / "quarantine").exists()


def _moved_beside_a_decoy(tmp_path: Path, decoy_of: Callable[[int], bytes]
                          ) -> tuple[Cli, str, Path, Path, Path, bytes]:
    """Two items; the first's blob moved from its place (``home``) to the last other shard
    (``real``), and a decoy of its name, ``decoy_of(its size)``, in the first (``decoy``,
    read first). Returns (cli, item, home, real, decoy, the blob's bytes)."""
    cli, (a, _b) = _two_items(tmp_path, None)
    blob = _blob_of(cli, None, a)
    home = cli.vault / "blobs" / blob[:2] / blob
    real, decoy = (cli.vault / "blobs" / shard / blob for shard in _other_shards(blob)[::-1])
    real.parent.mkdir(exist_ok=True)
    decoy.parent.mkdir(exist_ok=True)
    data = home.read_bytes()
    home.rename(real)
    decoy.write_bytes(decoy_of(len(data)))
    return cli, a, home, real, decoy, data


def test_a_decoy_named_as_a_missing_blob_is_not_moved_back_in_its_place(
        tmp_path: Path) -> None:
    """The second review's case: the blob moved to a shard that sorts late, a decoy of
    other bytes under its name in one that sorts first. The decoy was moved back (exit 0,
    the item no longer decrypted), and the next repair quarantined the real file with the
    advice to delete it. Only a file of the size the blob's row records is moved back; the
    decoy is named and left."""
    cli, a, home, real, decoy, data = _moved_beside_a_decoy(tmp_path, lambda n: os.urandom(200))
    result = cli("doctor", "--repair")
    shown = _shown(result.stdout)
    assert (result.exit_code, shown["blobs_restored"], shown["stray_copies"],
            shown["orphaned_blobs"]) == (1, "1", "1", "0"), result.stderr
    assert (home.read_bytes(), real.exists(), decoy.exists()) == (data, False, True)
    assert result.stderr.startswith(f"evault: {decoy}: named as a blob a row names")
    cli.ok("items", "export", a, "-o", str(tmp_path / "copy.txt"), "--reason", "fictional")


def test_two_files_that_could_be_a_missing_blob_are_both_left(tmp_path: Path) -> None:
    """A decoy of the recorded size (which the database and `ls -l` tell) beside the real
    blob, both in other shards: which one is the blob the rows cannot tell, so neither is
    moved back. Both are named; the blob is missing (exit 3)."""
    cli, _a, home, real, decoy, data = _moved_beside_a_decoy(tmp_path, lambda n: b"X" * n)
    result = cli("doctor", "--repair")
    shown = _shown(result.stdout)
    assert (result.exit_code, shown["blobs_missing"], shown["stray_copies"]) == (3, "1", "2")
    assert "blobs_restored" not in shown and "misplaced" not in shown
    assert [line.split(": ")[1] for line in result.stderr.splitlines()[1:]] == [
        str(decoy), str(real)]
    assert (real.read_bytes(), decoy.exists(), home.exists()) == (data, True, False)


def test_doctor_repair_leaves_a_stray_that_is_no_file(tmp_path: Path) -> None:
    """A symbolic link named like a missing blob, in another shard, is not the blob: not
    moved back, not quarantined, left; the blob is missing (exit 3)."""
    cli, (a, _b) = _two_items(tmp_path, None)
    blob = _blob_of(cli, None, a)
    home = cli.vault / "blobs" / blob[:2] / blob
    outside = tmp_path / "outside"
    home.rename(outside)
    other = "00" if blob[:2] != "00" else "01"
    stray = cli.vault / "blobs" / other / blob
    stray.parent.mkdir(exist_ok=True)
    stray.symlink_to(outside)
    result = cli("doctor", "--repair")
    shown = _shown(result.stdout)
    assert (result.exit_code, shown["blobs_missing"], shown["orphaned_blobs"]) == (3, "1", "0")
    assert "misplaced" not in shown and "blobs_restored" not in shown
    assert result.stderr == (
        f"evault: blob {blob} (items {a}): missing from {cli.vault / 'blobs'}; restore it "
        f"from a backup, then run `evault custody verify`\nevault: {stray}: named as a blob "
        "a row names, but not that blob where evault reads it (another copy, a decoy or a "
        "link); left in place: compare it with the blob and remove it by hand\n")
    assert stray.is_symlink() and not home.exists()


def test_a_non_file_at_a_blobs_place_does_not_send_the_blob_to_quarantine(
        tmp_path: Path) -> None:
    """The hostile review's case: the blob moved to another shard, a dangling symbolic link
    (or a fifo, a folder) put at its own path. Counted by name, the blob was "present" and
    the real file an orphan that repair quarantined, with the advice to delete it. The
    blob is missing; repair cannot put it back over the link (named, left); the file is
    kept in blobs/."""
    cli, (a, _b) = _two_items(tmp_path, None)
    blob = _blob_of(cli, None, a)
    home = cli.vault / "blobs" / blob[:2] / blob
    other = "00" if blob[:2] != "00" else "01"
    stray = cli.vault / "blobs" / other / blob
    stray.parent.mkdir(exist_ok=True)
    home.rename(stray)
    home.symlink_to(tmp_path / "nothing-here")
    result = cli("doctor", "--repair")
    shown = _shown(result.stdout)
    assert (result.exit_code, shown["blobs_missing"], shown["blobs_restored"],
            shown["orphaned_blobs"], shown["misplaced"], shown["stray_copies"]) == (
        3, "1", "0", "0", "1", "1")
    assert (f"evault: {stray}: cannot be moved into {home.parent} (File exists); left in "
            "place\n") in result.stderr
    assert stray.is_file() and not (cli.vault / "quarantine").exists()


def test_an_id_sql_made_a_path_is_never_moved_back(tmp_path: Path) -> None:
    """An item's blob_id set with SQL to ``..x``, and a file of that name in a shard: the
    move back would have linked it into ``blobs/..``, the vault's folder. Not a blob id:
    never moved; the blob is missing."""
    cli, (a, _b) = _two_items(tmp_path, None)
    _sql(cli, None, f"UPDATE items SET blob_id = '..x' WHERE id = '{a}'")
    planted = cli.vault / "blobs" / "00" / "..x"
    planted.parent.mkdir(exist_ok=True)
    planted.write_bytes(b"fictional file of the insider")
    result = cli("doctor", "--repair")
    shown = _shown(result.stdout)
    assert (result.exit_code, shown["orphaned_blobs"]) == (3, "0")
    assert "blobs_restored" not in shown and "misplaced" not in shown
    assert not (cli.vault / "..x").exists() and planted.exists()


def test_doctor_repair_says_it_waits_for_an_intake_and_goes_on_after_it(
        tmp_path: Path) -> None:
    """Repair waits for the commands storing blobs (they hold the intake lock shared): that
    wait was silent, a hang to whoever ran it. After two seconds it says so on one line, and
    goes on once the lock is free."""
    import sys

    from vault.durable import file_lock
    from vault.service.doctor import WAIT_NOTICE

    cli, _ids = _two_items(tmp_path, None)
    blobs = cli.vault / "blobs"
    evault = Path(sys.executable).with_name("evault")
    with file_lock(blobs / ".intake.lock", exclusive=False):
        proc = subprocess.Popen([str(evault), "doctor", "--repair", "--vault", str(cli.vault)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        line = proc.stderr.readline()  # blocks until doctor says it is waiting
        assert proc.poll() is None
    out, err = proc.communicate(timeout=60)
    assert WAIT_NOTICE == 2.0
    assert (proc.returncode, line, err) == (0, (
        f"evault: doctor --repair is waiting for the intake lock of {blobs}: another evault "
        "command is storing blobs (an ingest or an open; on a team vault, on any machine); "
        "it goes on once they are done (Ctrl-C stops it, nothing repaired)\n"), "")
    assert _shown(out)["blobs_missing"] == "0"


def test_doctor_links_without_following_whatever_os_link_was_at_import() -> None:
    """What the platform supports, by name: a test that replaced ``os.link`` (to fake a
    cross-device link) when doctor was first imported made every later repair of that
    process follow symbolic links."""
    from vault.service import doctor

    assert doctor._LINK_FOLLOWS is (os.link not in os.supports_follow_symlinks) is False


def test_an_orphan_swapped_for_a_symbolic_link_as_it_is_moved_is_left(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between repair's check that an orphan is a regular file and its link into
    quarantine, whoever can write blobs/ swaps it for a symbolic link: what was linked is a
    link, which is taken back out of quarantine, and the orphan's name is left and named."""
    cli, _ids = _two_items(tmp_path, None)
    blob = "ab" + "0" * 30
    stray = cli.vault / "blobs" / "ab" / blob
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"fictional orphan")
    target = tmp_path / "elsewhere"
    target.write_bytes(b"fictional file outside the vault")
    link = os.link

    def swapped(src: Any, dst: Any, **kwargs: Any) -> None:
        if src == blob and stray.is_file() and not stray.is_symlink():
            stray.unlink()
            stray.symlink_to(target)
        link(src, dst, **kwargs)

    monkeypatch.setattr(os, "link", swapped)
    result = cli("doctor", "--repair")
    assert (result.exit_code, _shown(result.stdout)["orphans_quarantined"]) == (1, "0")
    assert result.stderr == (f"evault: {stray}: is a symbolic link, not a blob file; left in "
                             "place: check it and remove it by hand\n")
    assert stray.is_symlink() and list((cli.vault / "quarantine").iterdir()) == []
    assert target.read_bytes() == b"fictional file outside the vault"


def _cross_device_links(monkeypatch: pytest.MonkeyPatch, blobs: Path) -> list[Path]:
    """Make ``os.link`` out of ``blobs`` fail as it fails from another file system (EXDEV);
    the sources it refused are listed in the list returned."""
    link = os.link
    refused: list[Path] = []

    def cross(src: Any, dst: Any, **kwargs: Any) -> None:
        folder = kwargs.get("src_dir_fd")
        if folder is not None:  # a name in the folder of that descriptor
            src = Path(os.readlink(f"/proc/self/fd/{folder}")) / src
        if Path(src).is_relative_to(blobs):
            refused.append(Path(src))
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(src), None, str(dst))
        link(src, dst, **kwargs)

    monkeypatch.setattr(os, "link", cross)
    return refused


def test_doctor_repair_copies_an_orphan_from_another_file_system(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A blob folder on another file system than the vault folder (a disk mounted on
    ``blobs/``): the link into quarantine failed with EXDEV and ``doctor --repair`` stopped
    at the first orphan ("Invalid cross-device link"). It copies it instead, fsynced, and
    removes the blob only then; a file already in quarantine is still never overwritten."""
    cli, _ids = _two_items(tmp_path, None)
    blob = "ab" + "0" * 30
    stray = cli.vault / "blobs" / "ab" / blob
    stray.parent.mkdir(exist_ok=True)
    content = os.urandom(3 << 20)  # several steps of a copy through a buffer
    stray.write_bytes(content)
    os.chmod(stray, 0o600)
    quarantine = cli.vault / "quarantine"
    quarantine.mkdir()
    (quarantine / blob).write_bytes(b"fictional quarantined before")
    refused = _cross_device_links(monkeypatch, cli.vault / "blobs")
    result = cli("doctor", "--repair")
    assert (result.exit_code, _shown(result.stdout)["orphans_quarantined"], result.stderr,
            refused, stray.exists()) == (0, "1", _quarantined(cli, blob), [stray], False)
    assert sorted(p.name for p in quarantine.iterdir()) == [blob, f"{blob}.1"]  # no temporary
    assert ((quarantine / blob).read_bytes(), (quarantine / f"{blob}.1").read_bytes()) == (
        b"fictional quarantined before", content)
    assert stat.S_IMODE((quarantine / f"{blob}.1").stat().st_mode) == 0o600
    again = cli("doctor", "--json")
    assert (again.exit_code, json.loads(again.stdout)["orphaned_blobs"]) == (0, 0)


def test_doctor_repair_moves_nothing_out_of_a_shard_that_is_a_symbolic_link(
        tmp_path: Path) -> None:
    """A shard of ``blobs/`` that is a symbolic link (evault never makes one) to a folder
    outside the vault: its files were orphans, and repair moved them into quarantine,
    removing them from that folder. Each is now named and left where it is."""
    cli, _ids = _two_items(tmp_path, None)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ("ef" + "0" * 30)).write_bytes(b"fictional file outside the vault")
    (cli.vault / "blobs" / "ef").symlink_to(outside)
    result = cli("doctor", "--repair")
    assert (result.exit_code, result.stderr) == (1, (
        f"evault: {cli.vault / 'blobs' / 'ef' / ('ef' + '0' * 30)}: its folder is a "
        "symbolic link, which evault never makes; left in place: check it and remove it "
        "by hand\n"))
    assert (outside / ("ef" + "0" * 30)).read_bytes() == b"fictional file outside the vault"
    assert list((cli.vault / "quarantine").iterdir()) == []


def _refused_quarantine(cli: Cli, kind: str, outside: Path) -> str:
    """Make ``<vault>/quarantine`` of ``kind``; what ``doctor --repair`` says of it."""
    quarantine = cli.vault / "quarantine"
    step = "move it aside"
    if kind == "symlink":
        outside.mkdir()
        quarantine.symlink_to(outside)
        problem = "is a symbolic link, which evault never makes"
    elif kind == "file":
        quarantine.write_bytes(b"")
        problem = "is not a folder"
    else:
        quarantine.mkdir(mode=0o700)
        if kind == "another user's":
            if os.geteuid() != 0:
                pytest.skip("giving a folder to another user needs root")
            os.chown(quarantine, 65534, 65534)
            problem = f"is owned by uid 65534, not by this user (uid {os.geteuid()})"
            step = "move it aside, or run doctor as its owner"
        else:
            os.chmod(quarantine, 0o777)
            problem = "can be written by other users (mode 0777)"
            step = "check what is in it and `chmod 700` it"
    return (f"evault: {quarantine}: {problem}; nothing was repaired: {step}, then run "
            "`evault doctor --repair` again\n")


@pytest.mark.parametrize("cross_device", [False, True], ids=["same disk", "another disk"])
@pytest.mark.parametrize("kind", ["symlink", "file", "another user's", "writable"])
def test_doctor_repair_refuses_a_quarantine_folder_it_cannot_trust(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, cross_device: bool) -> None:
    """Reviewer hr2's MEDIUM: a ``quarantine`` that was a symbolic link to a folder outside
    the vault was followed by the link and by the copy, so whoever could write the vault
    folder chose where root's repair put (and named) the orphans. The folder is now opened
    without following a link, and refused, with nothing repaired, if it is a link, not a
    folder, another user's, or writable by others."""
    cli, _ids = _two_items(tmp_path, None)
    blob = "ab" + "0" * 30
    stray = cli.vault / "blobs" / "ab" / blob
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"fictional orphan")
    temporary = stray.with_name(f".tmp-{'cd' * 16}")  # a killed intake's
    temporary.write_bytes(b"fictional part of a blob")
    outside = tmp_path / "outside"
    said = _refused_quarantine(cli, kind, outside)
    if cross_device:
        _cross_device_links(monkeypatch, cli.vault / "blobs")
    result = cli("doctor", "--repair")
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", said)
    assert stray.read_bytes() == b"fictional orphan" and temporary.exists()
    assert not outside.exists() or list(outside.iterdir()) == []
    result = cli("doctor")  # without --repair the folder is not used: the report as before
    assert (result.exit_code, _shown(result.stdout)["orphaned_blobs"], result.stderr) == (
        0, "1", "")


def test_doctor_repair_links_no_file_a_symbolic_link_in_blobs_points_to(
        tmp_path: Path) -> None:
    """The hard link into quarantine, now made from a descriptor of the shard
    (``linkat``), must not follow a symbolic link named like a blob (``AT_SYMLINK_FOLLOW``,
    ``os.link``'s default there): quarantine would hold a second name of the file it points
    to, anywhere on the vault's file system. (Linux's ``link`` by path never followed it.)"""
    cli, _ids = _two_items(tmp_path, None)
    blob = "ab" + "0" * 30
    target = tmp_path / "elsewhere.txt"
    target.write_bytes(b"fictional file outside the vault")
    link = cli.vault / "blobs" / "ab" / blob
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(target)
    result = cli("doctor", "--repair")
    assert (result.exit_code, result.stderr) == (1, (
        f"evault: {link}: is a symbolic link, not a blob file; left in place: check it and "
        "remove it by hand\n"))
    assert (target.read_bytes(), target.stat().st_nlink) == (
        b"fictional file outside the vault", 1)
    assert link.is_symlink() and list((cli.vault / "quarantine").iterdir()) == []


@pytest.mark.parametrize("cross_device", [False, True], ids=["same disk", "another disk"])
def test_doctor_repair_names_each_orphan_it_cannot_move_and_moves_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cross_device: bool) -> None:
    """Reviewer hr2's LOW: one orphan that was not a regular file (a symbolic link, a
    folder named like a blob) stopped the whole repair, with a message that named no file
    ("Is a directory", "Operation not permitted"), and a name in a shard that is no blob id
    was a traceback ("not a blob id"). Each is now named on a line of its own and left in
    place (exit 1: they are the user's to look at); the other orphans are moved, from the
    shard they are in (an id found in another shard than its own was counted as moved and
    left)."""
    cli, _ids = _two_items(tmp_path, None)
    shard = cli.vault / "blobs" / "ab"
    shard.mkdir(exist_ok=True)
    link, folder, fifo = (shard / f"ab{n:030d}" for n in range(3))
    link.symlink_to(tmp_path / "elsewhere")
    folder.mkdir()
    os.mkfifo(fifo)
    orphan, misplaced, odd = (shard / f"ab{'f' * 30}", shard / ("cd" + "1" * 30),
                              shard / "not-a-blob")
    for path in (orphan, misplaced, odd):
        path.write_bytes(f"fictional {path.name}".encode())
    if cross_device:
        _cross_device_links(monkeypatch, cli.vault / "blobs")
    result = cli("doctor", "--repair")
    shown = _shown(result.stdout)
    assert (result.exit_code, shown["orphaned_blobs"], shown["orphans_quarantined"],
            shown["orphans_skipped"]) == (1, "6", "3", "3")
    assert result.stderr == (
        f"evault: 3 orphaned blob(s) moved to {cli.vault / 'quarantine'}: no row names "
        "them, but they may be evidence whose rows were deleted; delete them only once "
        "`evault custody verify` passes and you have checked them\n"
        f"evault: {link}: is a symbolic link, not a blob file; left in place: check it and "
        "remove it by hand\n"
        f"evault: {folder}: is a folder, not a blob file; left in place: check it and "
        "remove it by hand\n"
        f"evault: {fifo}: is a fifo, not a blob file; left in place: check it and remove it "
        "by hand\n")
    assert sorted((p.name, p.read_bytes()) for p in (cli.vault / "quarantine").iterdir()) == [
        (p.name, f"fictional {p.name}".encode()) for p in sorted((orphan, misplaced, odd))]
    assert link.is_symlink() and folder.is_dir() and stat.S_ISFIFO(fifo.lstat().st_mode)
    assert not any(p.exists() for p in (orphan, misplaced, odd))
    as_json = cli("doctor", "--repair", "--json")
    assert (as_json.exit_code, json.loads(as_json.stdout)["orphans_skipped"]) == (1, [
        f"{link}: is a symbolic link, not a blob file; left in place: check it and remove "
        "it by hand",
        f"{folder}: is a folder, not a blob file; left in place: check it and remove it by "
        "hand",
        f"{fifo}: is a fifo, not a blob file; left in place: check it and remove it by "
        "hand"])


class _Waited(Exception):
    """What :func:`_within` raises in the code it cut short."""


@contextlib.contextmanager
def _within(seconds: float) -> Iterator[None]:
    """Cut the block short with :class:`_Waited` after ``seconds`` (SIGALRM): a test of
    something that must not wait fails instead of hanging."""
    def waited(_signum: int, _frame: object) -> None:
        raise _Waited(f"still waiting after {seconds} s")

    before = signal.signal(signal.SIGALRM, waited)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


@pytest.mark.parametrize("swapped", [False, True], ids=["there", "swapped in"])
def test_doctor_repair_does_not_wait_on_a_fifo_named_like_a_blob(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swapped: bool) -> None:
    """Reviewer hr2: the copy opened the orphan for reading without O_NONBLOCK, so a fifo
    named like a blob kept ``doctor --repair`` waiting for a writer, holding the vault's
    intake lock (every ingest waited too). Only a regular file is copied: a fifo is named
    and left, found before the link, or (swapped in after that check) when the copy opens
    it."""
    import vault.service.doctor as doctor

    cli, _ids = _two_items(tmp_path, None)
    blob = "ab" + "0" * 30
    fifo = cli.vault / "blobs" / "ab" / blob
    fifo.parent.mkdir(exist_ok=True)
    os.mkfifo(fifo)
    _cross_device_links(monkeypatch, cli.vault / "blobs")
    if swapped:  # the check before the link saw a file
        checks = iter([None])
        not_a_blob = doctor._not_a_blob
        monkeypatch.setattr(doctor, "_not_a_blob",
                            lambda mode: next(checks, not_a_blob(mode)))
    with _within(10):
        result = cli("doctor", "--repair")
    assert (result.exit_code, _shown(result.stdout)["orphans_skipped"], result.stderr) == (
        1, "1", f"evault: {fifo}: is a fifo, not a blob file; left in place: check it and "
                "remove it by hand\n")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert list((cli.vault / "quarantine").iterdir()) == []


def test_doctor_repair_keeps_a_file_put_in_an_orphans_place_while_it_was_copied(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reviewer hr2's LOW-MEDIUM: the copy read the orphan from a descriptor, then removed
    the orphan by its name, so a file renamed over that name during the copy was deleted
    without ever being copied (in neither place). The name must still be the file copied;
    else the file there is left, and named."""
    import vault.service.doctor as doctor

    cli, _ids = _two_items(tmp_path, None)
    blob = "ab" + "0" * 30
    stray = cli.vault / "blobs" / "ab" / blob
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"fictional orphan A")
    _cross_device_links(monkeypatch, cli.vault / "blobs")
    copy_file = doctor.copy_file

    def copy_then_swap(src: int, dst: int, *args: Any, **kwargs: Any) -> int:
        n = copy_file(src, dst, *args, **kwargs)
        swapped = stray.with_name("swap")
        swapped.write_bytes(b"fictional file B, never copied")
        os.rename(swapped, stray)  # what another writer does meanwhile
        return n

    monkeypatch.setattr(doctor, "copy_file", copy_then_swap)
    result = cli("doctor", "--repair")
    quarantine = cli.vault / "quarantine"
    assert (result.exit_code, _shown(result.stdout)["orphans_quarantined"],
            result.stderr) == (1, "1", _quarantined(cli, blob) + (
        f"evault: {stray}: was replaced while it was being copied (the copy is "
        f"{quarantine / blob}); the file now there is left in place for the next "
        "`evault doctor --repair`\n"))
    assert [p.read_bytes() for p in quarantine.iterdir()] == [b"fictional orphan A"]
    assert stray.read_bytes() == b"fictional file B, never copied"
    # Left for the next repair, which moves it beside A.
    monkeypatch.setattr(doctor, "copy_file", copy_file)
    result = cli("doctor", "--repair")
    assert (result.exit_code, result.stderr) == (0, _quarantined(cli, blob))
    assert (quarantine / f"{blob}.1").read_bytes() == b"fictional file B, never copied"


def test_doctor_counts_and_repair_removes_the_copy_a_killed_repair_left(
        tmp_path: Path) -> None:
    """Reviewer hr2's LOW: a repair killed while it copied an orphan left
    ``quarantine/.tmp-<hex>-<blob-id>``, which no later doctor counted or removed. It is a
    temporary file as the others are (the orphan is still in blobs/ and is moved again); a
    name of another shape in quarantine is left alone."""
    cli, _ids = _two_items(tmp_path, None)
    blob = "ab" + "0" * 30
    stray = cli.vault / "blobs" / "ab" / blob
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"fictional orphan")
    quarantine = cli.vault / "quarantine"
    quarantine.mkdir(mode=0o700)
    (quarantine / f".tmp-{'0f' * 8}-{blob}").write_bytes(b"fictional orph")
    (quarantine / ".tmp-put-there-by-hand").write_bytes(b"fictional note")
    result = cli("doctor")
    assert (result.exit_code, _shown(result.stdout)["temporary_files"]) == (0, "1")
    result = cli("doctor", "--repair")
    shown = _shown(result.stdout)
    assert (result.exit_code, shown["blobs_removed"], shown["orphans_quarantined"],
            result.stderr) == (0, "1", "1", _quarantined(cli, blob))
    assert sorted(p.name for p in quarantine.iterdir()) == [".tmp-put-there-by-hand", blob]
    assert (quarantine / blob).read_bytes() == b"fictional orphan"
    result = cli("doctor")
    assert (result.exit_code, _shown(result.stdout)["temporary_files"]) == (0, "0")


def test_doctor_counts_nothing_behind_a_quarantine_that_is_a_symbolic_link(
        tmp_path: Path) -> None:
    """What a quarantine that is a symbolic link points to is not the vault's: doctor
    neither counts nor removes a copy's name there (with orphans, repair refuses it)."""
    cli, _ids = _two_items(tmp_path, None)
    outside = tmp_path / "outside"
    outside.mkdir()
    planted = outside / f".tmp-{'0f' * 8}-{'ab' + '0' * 30}"
    planted.write_bytes(b"fictional file outside the vault")
    (cli.vault / "quarantine").symlink_to(outside)
    for args in ((), ("--repair",)):
        result = cli("doctor", *args)
        assert (result.exit_code, _shown(result.stdout)["temporary_files"], result.stderr) == (
            0, "0", ""), args
    assert planted.read_bytes() == b"fictional file outside the vault"


@contextlib.contextmanager
def _blobs_on_a_disk_of_their_own(tmp_path: Path) -> Iterator[Cli]:
    """A vault with one item whose ``blobs/`` is a tmpfs mounted there (root only; else the
    test skips): a real second file system, where a link into quarantine fails with EXDEV."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs on blobs/ needs root; the EXDEV test above still runs")
    cli = Cli(tmp_path / "vault").init()
    blobs = cli.vault / "blobs"
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4096k,mode=0700", "tmpfs",
                              str(blobs)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        cli.ok("identity", "create", "registry-office")
        evidence = tmp_path / "evidence.txt"
        evidence.write_text("fictional evidence\n")
        cli.ok("ingest", str(evidence), "--case", "UA-2026-0042", "--create-case")
        yield cli
    finally:
        subprocess.run(["umount", "-l", str(blobs)], check=False)


def test_doctor_repair_moves_an_orphan_off_a_disk_mounted_on_blobs(tmp_path: Path) -> None:
    """The same on a real second file system, where this test may mount one (root)."""
    with _blobs_on_a_disk_of_their_own(tmp_path) as cli:
        blob = "ab" + "0" * 30
        stray = cli.vault / "blobs" / "ab" / blob
        stray.parent.mkdir(exist_ok=True)
        stray.write_bytes(b"fictional leftover of a killed intake")
        assert stray.stat().st_dev != cli.vault.stat().st_dev
        result = cli("doctor", "--repair")
        assert (result.exit_code, result.stderr, stray.exists()) == (
            0, _quarantined(cli, blob), False)
        assert (cli.vault / "quarantine" / blob).read_bytes() == (
            b"fictional leftover of a killed intake")
        assert sorted(p.name for p in (cli.vault / "quarantine").iterdir()) == [blob]
        cli.ok("custody", "verify")


def test_doctor_repair_copies_no_setuid_bit_off_another_disk(tmp_path: Path) -> None:
    """Reviewer hr2's HIGH: the copy took the orphan's mode (``fchmod(dst, S_IMODE(src))``),
    so a setuid, setgid, world-writable file another user planted in ``blobs/`` became one
    owned by whoever ran ``doctor --repair``: as root, a setuid-root program. The copy is
    made 0600 and keeps no mode bit of the orphan."""
    with _blobs_on_a_disk_of_their_own(tmp_path) as cli:
        blob = "ab" + "0" * 30
        stray = cli.vault / "blobs" / "ab" / blob
        stray.parent.mkdir(exist_ok=True)
        stray.write_bytes(b"#!/bin/sh\nid\n")
        os.chmod(stray, 0o6777)
        result = cli("doctor", "--repair")
        assert (result.exit_code, result.stderr, stray.exists()) == (
            0, _quarantined(cli, blob), False)
        copy = (cli.vault / "quarantine" / blob).stat()
        assert (stat.S_IMODE(copy.st_mode), copy.st_uid) == (0o600, os.geteuid())


def test_doctor_fails_on_item_rows_that_differ_from_the_events_that_created_them(
        tmp_path: Path, database: str | None) -> None:
    """The reviewer's F4: a forged ingested_at, size and SHA-256 passed doctor (exit 0)."""
    cli, (a, b) = _two_items(tmp_path, database)
    assert json.loads(cli.ok("doctor", "--json").stdout)["item_rows"] == "ok"
    seq_a, body_a = _created(cli, database, a)
    seq_b, body_b = _created(cli, database, b)
    forged = "'2001-09-09 01:46:40.000000'" if database is None else "'2001-09-09 01:46:40+00'"
    _sql(cli, database, f"UPDATE items SET ingested_at = {forged} WHERE id = '{a}'",
         f"UPDATE items SET size = size + 1, sha256 = '{'0' * 64}' WHERE id = '{b}'")
    size = body_b["details"]["size"]
    lines = sorted([
        (a, 2, f"item {a}: ingested_at is 2001-09-09T01:46:40Z, its signed item.ingested "
               f"event (seq {seq_a}) says {body_a['time']}"),
        (b, 0, f"item {b}: sha256 is {'0' * 64}, its signed item.ingested event (seq {seq_b}) "
               f"says {body_b['digests']['sha256']}"),
        (b, 1, f"item {b}: size is {size + 1}, its signed item.ingested event (seq {seq_b}) "
               f"says {size}"),
    ])
    result = cli("doctor")
    assert (result.exit_code, _shown(result.stdout)["item_rows"]) == (
        3, "3 difference(s) from the signed events that created the items (changed by SQL "
           "outside evault); run `evault custody verify`, then restore the database from a "
           "backup")
    assert result.stderr == "".join(f"evault: {line} {RESTORE}" for _i, _n, line in lines)
    result = cli("doctor", "--json")
    assert (result.exit_code, json.loads(result.stdout)["item_differences"], result.stderr) == (
        3, [line for _i, _n, line in lines], "")
    # The export that meets the forged row names the row (it said "report the blob as
    # damaged" alone).
    out = tmp_path / "copy.txt"
    result = cli("items", "export", b, "-o", str(out), "--reason", "fictional review")
    assert (result.exit_code, result.stderr, out.exists()) == (
        3, _forged(b, "nothing was written"), False)



def test_a_setting_added_with_sql_does_not_hide_a_forged_row_from_doctor(
        tmp_path: Path, database: str | None) -> None:
    """The review of doctor's exit 1: one more statement (a `blobs` setting config.toml does
    not name, an object_lock no evault wrote) turned a forged row's exit 3 into "doctor
    stopped" and exit 1. The records are checked even when the blob store is not, and a
    setting that does not parse is a failed verification."""
    cli, (_a, b) = _two_items(tmp_path, database)
    _sql(cli, database, f"UPDATE items SET size = size + 1 WHERE id = '{b}'",
         "INSERT INTO vault_settings (name, value) VALUES ('blobs', 's3://fictional/x')")
    result = cli("doctor")
    assert (result.exit_code, _shown(result.stdout)["blob_store"].split(": ", 1)[0]) == (
        3, "not checked")
    assert _shown(result.stdout)["item_rows"].startswith("1 difference(s) from the signed ")
    _sql(cli, database, "DELETE FROM vault_settings WHERE name = 'blobs'",
         "INSERT INTO vault_settings (name, value) VALUES ('object_lock', 'bogus')")
    result = cli("doctor")
    assert result.exit_code == 3
    assert result.stderr.startswith("evault: vault database: setting object_lock: ")
    assert result.stderr.endswith(" (changed outside evault?); restore the database from a "
                                  "backup\n")


def _forged(item: str, done: str) -> str:
    return (f"evault: item {item}: its row's size or SHA-256 is not what the event that "
            f"created it signed (changed by SQL outside evault); {done}; run `evault doctor`, "
            "which names the difference, and restore the database from a backup\n")


@pytest.mark.parametrize("forgery", [
    "size = size + 1", "size = -1", "size = 'abc'", "size = 12.5",
    "sha256 = upper(sha256)", f"sha256 = '{'0' * 64}'", "sha256 = x'00'"])
def test_a_forged_row_is_refused_before_a_package_a_receipt_or_an_export_says_it(
        tmp_path: Path, forgery: str) -> None:
    """The second review: `send` signed a receipt with the size and SHA-256 SQL put in the
    row (F1); a size that is not a count was a usage error, and `send` delivered the
    package before refusing it (F2, F3); bytes for the SHA-256 traced back (F4)."""
    office, _icc, _package = _sender_and_recipient(tmp_path, None)
    [item] = [i["id"] for i in json.loads(office.ok("items", "list", "--json").stdout)]
    built = tmp_path / "built.evpkg"
    office.ok("package", "create", "--to", "ICC-OTP", "--item", item, "-o", str(built))
    receipts = office.ok("receipt", "list").stdout
    _sql(office, None, f"UPDATE items SET {forgery}")
    again, outbox, copy = tmp_path / "again.evpkg", tmp_path / "drop", tmp_path / "copy"
    outbox.mkdir()
    result = office("package", "create", "--to", "ICC-OTP", "--item", item, "-o", str(again))
    assert (result.exit_code, result.stdout, result.stderr, again.exists()) == (
        3, "", _forged(item, "nothing was packaged"), False)
    result = office("send", str(built), "--outbox", str(outbox))
    assert (result.exit_code, result.stdout, result.stderr, list(outbox.iterdir())) == (
        3, "", _forged(item, "nothing was sent"), [])
    assert office.ok("receipt", "list").stdout == receipts
    result = office("items", "export", item, "-o", str(copy), "--reason", "fictional review")
    assert (result.exit_code, result.stdout, result.stderr, copy.exists()) == (
        3, "", _forged(item, "nothing was written"), False)


def test_doctor_fails_on_an_item_no_event_created(tmp_path: Path) -> None:
    """The creating event's action column rewritten: no event creates the item any more
    (``custody verify`` names the event; doctor, the item)."""
    cli, (a, _b) = _two_items(tmp_path, None)
    seq, _body = _created(cli, None, a)
    _sql(cli, None, f"UPDATE custody_events SET action = 'item.exported' WHERE seq = {seq}")
    result = cli("doctor", "--json")
    assert (result.exit_code, json.loads(result.stdout)["item_differences"], result.stderr) == (
        3, [f"item {a}: no signed item.ingested or item.received event created it"], "")


def test_doctor_compares_a_received_item_with_its_item_received_event(tmp_path: Path) -> None:
    """Items received in a package are created by ``item.received``, which carries the case
    too."""
    _office, icc, _package = _sender_and_recipient(tmp_path, None)
    [item] = [i["id"] for i in json.loads(icc.ok("items", "list", "--json").stdout)]
    seq, body = _created(icc, None, item)
    assert body["action"] == "item.received"
    _sql(icc, None, "INSERT INTO cases (id, title, created_at) VALUES "
                    "('UA-2026-0099', NULL, '2026-11-28 09:30:00.000000')",
         f"UPDATE items SET case_id = 'UA-2026-0099' WHERE id = '{item}'")
    result = icc("doctor", "--json")
    assert (result.exit_code, json.loads(result.stdout)["item_differences"], result.stderr) == (
        3, [f"item {item}: case_id is UA-2026-0099, its signed item.received event (seq {seq}) "
            f"says {body['details']['case']}"], "")


def _nullable(cli: Cli, database: str | None, *columns: str) -> None:
    """The insider drops NOT NULL from columns of ``items`` (on SQLite by rewriting the
    schema with writable_schema, then a new connection)."""
    if database is not None:
        _sql(cli, database, *(f"ALTER TABLE items ALTER COLUMN {c} DROP NOT NULL"
                              for c in columns))
        return
    import re
    import sqlite3

    conn = sqlite3.connect(cli.vault / "vault.db")
    [(sql,)] = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'items'").fetchall()
    for column in columns:
        sql = re.sub(rf"(\b{column} [A-Z]+(\(\d+\))?) NOT NULL", r"\1", sql)
    conn.execute("PRAGMA writable_schema=ON")
    conn.execute("UPDATE sqlite_master SET sql = ? WHERE name = 'items'", (sql,))
    conn.commit()
    conn.close()


def test_doctor_fails_on_a_case_id_sql_made_null(tmp_path: Path, database: str | None) -> None:
    """The reviewer's HIGH: NULL was skipped as no value, so doctor exited 0 and `package
    create --case` left the item out unnoticed."""
    cli, (a, _b) = _two_items(tmp_path, database)
    seq, body = _created(cli, database, a)
    _nullable(cli, database, "case_id")
    _sql(cli, database, f"UPDATE items SET case_id = NULL WHERE id = '{a}'")
    result = cli("doctor")
    assert (result.exit_code, result.stderr) == (
        3, f"evault: item {a}: case_id is NULL, its signed item.ingested event (seq {seq}) "
           f"says {body['details']['case']} {RESTORE}")


def test_a_null_sha256_size_or_intake_seq_is_refused_in_one_line(
        tmp_path: Path, database: str | None) -> None:
    """`items show` printed SQLAlchemy's SAWarning (a NULL primary key looked up) before
    its one line; doctor skipped the NULLs (exit 0)."""
    cli, (a, _b) = _two_items(tmp_path, database)
    seq, body = _created(cli, database, a)
    _nullable(cli, database, "sha256", "size", "intake_seq")
    _sql(cli, database, f"UPDATE items SET sha256 = NULL, size = NULL, intake_seq = NULL "
                        f"WHERE id = '{a}'")
    result = cli("items", "show", a)
    assert (result.exit_code, result.stdout, result.stderr) == (
        3, "", f"evault: item {a}: its item.ingested event cannot be trusted (it is missing); "
               "run `evault custody verify` and restore the database from a backup\n")
    said = f"its signed item.ingested event (seq {seq}) says"
    result = cli("doctor")
    assert (result.exit_code, result.stderr) == (3, (
        f"evault: item {a}: sha256 is NULL, {said} {body['digests']['sha256']} {RESTORE}"
        f"evault: item {a}: size is NULL, {said} {body['details']['size']} {RESTORE}"
        f"evault: item {a}: intake_seq is NULL, {said} {seq} {RESTORE}"))


def test_doctor_names_a_null_blob_id_and_does_not_crash(tmp_path: Path) -> None:
    """The reviewer's MEDIUM: NULL blob_id with another blob missing crashed sorted()
    (TypeError, traceback); alone it printed "blob None (no item)"."""
    cli, (a, b) = _two_items(tmp_path, None)
    blob_b = _blob_of(cli, None, b)
    _nullable(cli, None, "blob_id")
    _sql(cli, None, f"UPDATE items SET blob_id = NULL WHERE id = '{a}'")
    (cli.vault / "blobs" / blob_b[:2] / blob_b).unlink()
    result = cli("doctor")
    assert (result.exit_code, result.stderr) == (3, (
        f"evault: blob {blob_b} (items {b}): missing from {cli.vault / 'blobs'}; restore it "
        "from a backup, then run `evault custody verify`\n"
        f"evault: item {a}: blob_id is NULL {RESTORE}"))


@pytest.mark.parametrize("value", ["CAST(body AS TEXT)", "1.5", "9223372036854775807",
                                   "1000000000"])
def test_doctor_names_an_event_body_that_is_not_bytes(tmp_path: Path, value: str) -> None:
    """The reviewer's MEDIUM: `bytes(body)` crashed on text or a real (traceback), and on an
    integer allocated that many bytes (1 GB for 1000000000)."""
    cli, (a, _b) = _two_items(tmp_path, None)
    seq, _body = _created(cli, None, a)
    _sql(cli, None, f"UPDATE custody_events SET body = {value} WHERE seq = {seq}")
    kind = {"CAST(body AS TEXT)": "str", "1.5": "float"}.get(value, "int")
    result = cli("doctor")
    assert (result.exit_code, result.stderr) == (3, (
        f"evault: event {seq}: its body is {kind}, not bytes {RESTORE}"
        f"evault: item {a}: no signed item.ingested or item.received event created it "
        f"{RESTORE}"))


def test_doctor_fails_in_one_line_on_an_items_column_sql_renamed(tmp_path: Path) -> None:
    """The reviewer's MEDIUM: a renamed column crashed the item-row check (traceback)."""
    cli, _ids = _two_items(tmp_path, None)
    _sql(cli, None, "ALTER TABLE items RENAME COLUMN intake_seq TO s2")
    result = cli("doctor", "--json")
    assert (result.exit_code, json.loads(result.stdout)["item_rows"], result.stderr) == (
        3, "failed: vault database: no such column: items.intake_seq (its tables changed "
           "outside evault?); restore the database from a backup", "")


def test_doctor_fails_on_a_creating_events_columns_that_differ_from_its_body(
        tmp_path: Path, database: str | None) -> None:
    """The event that created A given B's id in its subject column: its body still says
    A; a gap in the seqs, or a log longer than its head, is a failure too."""
    cli, (a, b) = _two_items(tmp_path, database)
    seq, _body = _created(cli, database, a)
    _sql(cli, database, f"UPDATE custody_events SET subject = '{b}' WHERE seq = {seq}")
    result = cli("doctor", "--json")
    assert (result.exit_code, json.loads(result.stdout)["item_differences"][0]) == (
        3, f"event {seq}: its columns say item.ingested of {b}, its signed body "
           f"item.ingested of {a}")
    _sql(cli, database, f"UPDATE custody_events SET subject = '{a}' WHERE seq = {seq}",
         "UPDATE custody_head SET size = size + 1")
    [(size,)] = _rows(cli, database, "SELECT size FROM custody_head")
    result = cli("doctor", "--json")
    assert (result.exit_code, json.loads(result.stdout)["custody_log"]) == (
        3, f"event {size - 1} is missing from the custody log (deleted by SQL outside "
           "evault?); run `evault custody verify`, then restore the database from a backup")


@pytest.mark.postgres
def test_doctor_names_a_postgres_column_sql_retyped_by_the_type_of_its_value(
        pg_url: str, tmp_path: Path) -> None:
    """The reviewer's finding: with items.size retyped to text, doctor said "size is 6, its
    signed item.ingested event says 6"."""
    cli, (a, b) = _two_items(tmp_path, pg_url)
    _sql(cli, pg_url, "ALTER TABLE items ALTER COLUMN size TYPE text")
    lines = []
    for item in sorted((a, b)):
        seq, body = _created(cli, pg_url, item)
        size = body["details"]["size"]
        lines.append(f"item {item}: size is '{size}' (str), its signed item.ingested event "
                     f"(seq {seq}) says {size}")
    result = cli("doctor", "--json")
    assert (result.exit_code, json.loads(result.stdout)["item_differences"]) == (3, lines)


@pytest.mark.parametrize("seq", [100_000, -1])
def test_a_second_creating_event_sql_added_does_not_vouch_for_a_forged_row(
        tmp_path: Path, seq: int) -> None:
    """The third review: a copy of the item's creating event with the forged digest and
    size in its body, inserted at a seq past the log's end (or before it), was the event
    the check read, and `send` signed a receipt with the forged values (exit 0). The check
    now reads the event at the item's intake_seq, its signature verified."""
    import sqlite3

    office, _icc, _package = _sender_and_recipient(tmp_path, None)
    [item] = [i["id"] for i in json.loads(office.ok("items", "list", "--json").stdout)]
    built = tmp_path / "built.evpkg"
    office.ok("package", "create", "--to", "ICC-OTP", "--item", item, "-o", str(built))
    receipts = office.ok("receipt", "list").stdout
    signed_seq, body = _created(office, None, item)
    forged = {**body, "digests": {**body["digests"], "sha256": "f" * 64},
              "details": {**body["details"], "size": 4242}}
    conn = sqlite3.connect(office.vault / "vault.db")
    with conn:
        row = conn.execute("SELECT recorded_at, actor, action, subject, signature, leaf_hash "
                           f"FROM custody_events WHERE seq = {signed_seq}").fetchone()
        conn.execute("INSERT INTO custody_events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (seq, row[0], row[1], row[2], row[3],
                      json.dumps(forged, separators=(",", ":"), sort_keys=True).encode(),
                      row[4], row[5]))
        conn.execute(f"UPDATE items SET sha256 = '{'f' * 64}', size = 4242")
    conn.close()
    outbox = tmp_path / "drop"
    outbox.mkdir()
    result = office("send", str(built), "--outbox", str(outbox))
    assert (result.exit_code, result.stderr, list(outbox.iterdir())) == (
        3, _forged(item, "nothing was sent"), [])
    assert office.ok("receipt", "list").stdout == receipts


def test_a_row_changed_between_delivery_and_receipt_says_the_file_was_delivered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The third review: the receipt's own check refused a row SQL changed while the file
    was being delivered, and said "nothing was sent" with the file in the outbox."""
    from vault.service.packaging import send

    office, _icc, _package = _sender_and_recipient(tmp_path, None)
    [item] = [i["id"] for i in json.loads(office.ok("items", "list", "--json").stdout)]
    built = tmp_path / "built.evpkg"
    office.ok("package", "create", "--to", "ICC-OTP", "--item", item, "-o", str(built))
    deliver = send.deliver

    def deliver_then_forge(delivery: Any) -> Any:
        uploaded = deliver(delivery)
        _sql(office, None, "UPDATE items SET size = size + 1")
        return uploaded

    monkeypatch.setattr(send, "deliver", deliver_then_forge)
    outbox = tmp_path / "drop"
    outbox.mkdir()
    result = office("send", str(built), "--outbox", str(outbox))
    [copy] = list(outbox.iterdir())
    assert (result.exit_code, result.stderr) == (3, _forged(
        item, f"the package was delivered to {copy} but is not recorded as sent and has no "
              "receipt: take that file back from the outbox"))


def test_only_the_drivers_operational_errors_are_read_as_busy_or_full() -> None:
    """The third review: a trigger's IntegrityError that said "locked" read as "busy with
    another evault command; try again"."""
    import sqlite3

    from vault.errors import ConfigError
    from vault.store.dbapi import failure

    assert failure(sqlite3.IntegrityError("custody row locked: legal hold")) is None
    assert failure(sqlite3.IntegrityError("disk is full of holds")) is None
    busy = failure(sqlite3.OperationalError("database is locked"))
    assert (type(busy), str(busy)) == (
        ConfigError, "vault database is busy with another evault command; try again")


@SQLITE_ONLY
def test_doctor_repair_deletes_nothing_through_a_shard_or_exports_that_is_a_link(
        tmp_path: Path, database: str | None) -> None:
    """The second review: a shard (or exports/) that is a symbolic link was followed by the
    scan, and each `.tmp-` file in the folder it points to deleted by root's repair. And a
    folder named like a temporary stopped the whole repair ("Is a directory")."""
    cli, _ids = _two_items(tmp_path, database)
    outside = tmp_path / "outside"
    outside.mkdir()
    victims = [outside / ".tmp-someone-elses-work", outside / ".tmp-other"]
    for victim in victims:
        victim.write_bytes(b"fictional file outside the vault")
    (cli.vault / "blobs" / "zz").symlink_to(outside)
    exports = cli.vault / "exports"
    if exports.exists():
        exports.rmdir()
    exports.symlink_to(outside)
    shard = cli.vault / "blobs" / "ab"
    shard.mkdir(exist_ok=True)
    (shard / ".tmp-x").mkdir()
    orphan = shard / ("ab" + "0" * 30)
    orphan.write_bytes(b"fictional orphan")
    result = cli("doctor", "--repair")
    assert [v.exists() for v in victims] == [True, True]
    assert (cli.vault / "quarantine" / orphan.name).read_bytes() == b"fictional orphan"
    assert (shard / ".tmp-x").is_dir()
    blobs = cli.vault / "blobs"
    assert (result.exit_code, _shown(result.stdout)["temporary_files"]) == (1, "0")
    assert result.stderr.splitlines()[1:] == [
        f"evault: {blobs}/ab/.tmp-x: is a folder, not a blob file; left in place: check it "
        "and remove it by hand",
        *(f"evault: {blobs}/zz/{name}: its folder is a symbolic link, which evault never "
          "makes; left in place: check it and remove it by hand"
          for name in (".tmp-other", ".tmp-someone-elses-work"))]


@SQLITE_ONLY  # PostgreSQL's foreign key keeps the row; SQL on SQLite needs no pragma off
def test_a_blob_row_deleted_with_sql_fails_doctor_without_the_blob_store(
        tmp_path: Path, database: str | None) -> None:
    """The second review: which blobs items name without a `blobs` row needs only the
    database, but was computed with the blob scan: a setting config.toml does not name
    turned that exit 3 into exit 1."""
    cli, (a, _b) = _two_items(tmp_path, database)
    blob = _blob_of(cli, database, a)
    _sql(cli, database, f"DELETE FROM blobs WHERE id = '{blob}'",
         "INSERT INTO vault_settings (name, value) VALUES ('blobs', 's3://fictional/x')")
    result = cli("doctor")
    assert (result.exit_code, _shown(result.stdout)["blobs_unrecorded"]) == (3, "1")
    assert f"blob {blob} (items {a}): its row is missing from the database" in result.stderr
