"""Plaintext left outside the vault by a command killed midway, and how doctor finds it.

``items export`` writes the plaintext under a temporary name next to ``-o``, ``open``
extracts a package into a staging folder inside ``--out``; ``kill -9`` there used to leave
that plaintext under a name nobody knew, and (for an export) no trace in the custody log.
Each now records the temporary in ``<vault>/pending/`` before making it, an export also logs
its intent (``item.export.started``); ``evault doctor`` names what a killed run left and
``--repair`` removes exactly that, never a file that merely looks like a temporary.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

from conftest import Cli
from test_robustness import (
    CASE,
    as_json,
    crash,
    evault_argv,
    evault_env,
    limit_resources,
    make_office,
)

EXPORT_TEMP = re.compile(r"\.tmp-[0-9a-f]{16}-export")
OPEN_TEMP = re.compile(r"\.tmp-[0-9a-f]{16}")


def _actions(cli: Cli, item: str) -> list[dict[str, object]]:
    events: list[dict[str, object]] = as_json(cli, "custody", "show", item, "--json")["events"]
    return events


def _office_with_item(tmp_path: Path) -> tuple[Cli, str, bytes]:
    office = Cli(tmp_path / "office")
    office.init()
    office.ok("identity", "create", "registry-office")
    content = os.urandom(300_000)
    (tmp_path / "statement.pdf").write_bytes(content)
    office.ok("ingest", str(tmp_path / "statement.pdf"), "--case", CASE, "--create-case")
    [item] = as_json(office, "items", "list", "--json")
    return office, str(item["id"]), content


def test_kill_during_items_export_is_logged_found_and_cleaned_by_doctor(tmp_path: Path) -> None:
    office, item, content = _office_with_item(tmp_path)
    out_dir = tmp_path / "copies"
    out_dir.mkdir()
    out = out_dir / "copy.pdf"
    crash("items", "export", item, "-o", str(out), "--reason", "forensic examination",
          vault=office.vault, step="item_export.written")
    # The whole plaintext sits under the temporary name; the target was never made.
    [temp] = [p for p in out_dir.iterdir() if EXPORT_TEMP.fullmatch(p.name)]
    assert not out.exists() and temp.read_bytes() == content
    # The log has the intent, signed, and no completion; it names no path.
    events = _actions(office, item)
    assert [e["action"] for e in events] == ["item.ingested", "item.export.started"]
    token = temp.name[len(".tmp-"):-len("-export")]
    assert events[1]["details"] == {"export": token, "reason": "forensic examination"}
    assert str(tmp_path) not in json.dumps(events)
    # A file that only looks like an export's temporary, recorded nowhere, stays.
    decoy = out_dir / ".tmp-0123456789abcdef-export"
    decoy.write_bytes(b"the user's own file")

    report = office.ok("doctor")
    assert re.fullmatch(
        rf"evault: leftover of an interrupted `items export` of item {item}, started "
        rf"\d+ seconds? ago: {re.escape(str(temp))}; `evault doctor --repair` removes it\n",
        report.stderr), report.stderr
    assert re.search(r"^leftovers: +1$", report.stdout, re.MULTILINE)
    [row] = as_json(office, "doctor", "--json")["leftovers"]
    assert (row["command"], row["item"], row["path"], row["state"], row["on_disk"]) == (
        "items export", item, str(temp), "left", True)
    assert temp.exists()

    repaired = office.ok("doctor", "--repair")
    assert re.fullmatch(
        rf"evault: leftover of an interrupted `items export` of item {item}, started "
        rf"\d+ seconds? ago: {re.escape(str(temp))}: removed; logged item.export.abandoned\n",
        repaired.stderr), repaired.stderr
    assert not temp.exists() and decoy.read_bytes() == b"the user's own file"
    events = _actions(office, item)
    assert [e["action"] for e in events][-1] == "item.export.abandoned"
    assert events[-1]["details"] == {"export": token, "started": events[1]["seq"],
                                     "leftover": True}
    assert office.ok("custody", "verify").stdout.startswith("OK: ")
    again = office.ok("doctor")
    assert re.search(r"^leftovers: +0$", again.stdout, re.MULTILINE)
    assert "leftover of" not in again.stderr
    # The export itself still works, and closes its own intent.
    office.ok("items", "export", item, "-o", str(out), "--reason", "forensic examination")
    assert out.read_bytes() == content
    assert [e["action"] for e in _actions(office, item)][-2:] == [
        "item.export.started", "item.exported"]


def test_kill_during_open_leaves_a_staging_folder_doctor_names_and_removes(
    tmp_path: Path,
) -> None:
    world = make_office(tmp_path)
    world.office.ok("ingest", str(world.evidence), "-r", "--case", CASE, "--create-case")
    built = as_json(world.office, "package", "create", "--to", "ICC-OTP", "--case", CASE,
                    "--send", "--outbox", str(world.outbox), "-o", str(tmp_path / "p.evpkg"),
                    "--json")
    package = world.outbox / f"{built['id']}.evpkg"
    received = tmp_path / "received"
    crash("open", str(package), "--out", str(received), vault=world.icc.vault,
          step="open.staged")
    [staging] = [p for p in received.iterdir() if OPEN_TEMP.fullmatch(p.name)]
    assert staging.is_dir() and any(p.is_file() for p in staging.rglob("*"))
    decoy = received / ".tmp-fedcba9876543210"
    decoy.mkdir()
    (decoy / "keep.txt").write_bytes(b"not evault's")

    report = world.icc.ok("doctor")
    assert re.fullmatch(
        r"evault: leftover of an interrupted `open`, started \d+ seconds? ago: "
        rf"{re.escape(str(staging))}; `evault doctor --repair` removes it\n",
        report.stderr), report.stderr
    repaired = world.icc.ok("doctor", "--repair")
    assert re.fullmatch(
        r"evault: leftover of an interrupted `open`, started \d+ seconds? ago: "
        rf"{re.escape(str(staging))}: removed\n"
        # The blobs the killed run stored are orphans: moved into quarantine, not deleted.
        rf"evault: \d+ orphaned blob\(s\) moved to "
        rf"{re.escape(str(world.icc.vault / 'quarantine'))}: .*\n",
        repaired.stderr), repaired.stderr
    assert not staging.exists() and (decoy / "keep.txt").read_bytes() == b"not evault's"
    assert world.icc.ok("custody", "verify").stdout.startswith("OK: ")
    assert as_json(world.icc, "doctor", "--json")["leftovers"] == []
    world.icc.ok("open", str(package), "--out", str(received))
    assert (received / built["id"]).is_dir()


def test_doctor_leaves_alone_what_a_record_names_but_evault_did_not_make(
    tmp_path: Path,
) -> None:
    """A record planted in pending/ (whoever can write the vault folder) cannot make repair
    delete a symbolic link's target, a folder reached through a link, or a file no logged
    export run made."""
    office, item, _ = _office_with_item(tmp_path)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data").write_bytes(b"precious")
    linked = tmp_path / "linked"
    linked.symlink_to(precious)
    pending = office.vault / "pending"
    pending.mkdir(exist_ok=True)

    def plant(token: str, folder: Path) -> Path:
        record = pending / f"export-{token}.json"
        record.write_text(json.dumps({
            "kind": "export", "token": token, "folder": str(folder), "item": item,
            "started_at": "2026-12-01T00:00:00Z"}))
        return folder / f".tmp-{token}-export"

    link = plant("a" * 16, precious)
    link.symlink_to(precious / "data")
    through = plant("b" * 16, linked)
    (precious / through.name).write_bytes(b"reached through a link")
    unlogged = plant("c" * 16, precious)
    unlogged.write_bytes(b"no export run made me")
    garbage = pending / f"export-{'e' * 16}.json"
    garbage.write_text("[" * 60_000)
    # An open's staging folder of the recorded name goes, but a link inside it is removed
    # as a link: what it points to stays.
    staging = precious / f".tmp-{'d' * 16}"
    staging.mkdir()
    (staging / "escape").symlink_to(precious)
    (pending / f"open-{'d' * 16}.json").write_text(json.dumps({
        "kind": "open", "token": "d" * 16, "folder": str(precious), "item": None,
        "started_at": (datetime.now(timezone.utc) - timedelta(hours=2, seconds=5)).strftime(
            "%Y-%m-%dT%H:%M:%SZ")}))

    repaired = office.ok("doctor", "--repair")
    assert repaired.stderr.splitlines() == [
        f"evault: leftover of an interrupted `items export` of item {item}: {link}: a "
        "symbolic link, which evault never makes there; left alone",
        f"evault: leftover of an interrupted `items export` of item {item}: {through}: "
        f"{linked} is no longer the folder it was (a symbolic link now); left alone",
        f"evault: leftover of an interrupted `items export` of item {item}: {unlogged}: no "
        "item.export.started event of this run in the custody log; left alone",
        f"evault: {garbage}: not a record evault wrote; left alone",
        "evault: leftover of an interrupted `open`, started 2 hours ago: "
        f"{staging}: removed",
    ]
    assert not staging.exists() and garbage.exists()
    assert (precious / "data").read_bytes() == b"precious"
    assert link.is_symlink() and (precious / through.name).exists() and unlogged.exists()
    assert office.ok("custody", "verify").stdout.startswith("OK: ")


def test_doctor_repair_does_not_touch_a_running_export(tmp_path: Path) -> None:
    office, item, content = _office_with_item(tmp_path)
    out = tmp_path / "copy.pdf"
    proc = subprocess.Popen(
        evault_argv("items", "export", item, "-o", str(out), "--reason", "review",
                    vault=office.vault),
        env=evault_env(EVAULT_PAUSE_AT="item_export.written"), stderr=subprocess.PIPE,
        text=True, preexec_fn=limit_resources)
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline() == "evault: paused at item_export.written\n"
        [temp] = [p for p in tmp_path.iterdir() if EXPORT_TEMP.fullmatch(p.name)]
        repaired = office.ok("doctor", "--repair", "--json")
        assert json.loads(repaired.stdout)["leftovers"] == []
        assert temp.read_bytes() == content
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    # Killed now: the same record is a leftover.
    [row] = as_json(office, "doctor", "--json")["leftovers"]
    assert (row["path"], row["state"]) == (str(temp), "left")


def test_export_bookkeeping_stays_out_of_the_package_excerpt(tmp_path: Path) -> None:
    """Bodies get ``item.exported`` as before, never the intent or its token's siblings: an
    earlier evault refuses an excerpt holding actions it does not know."""
    world = make_office(tmp_path)
    world.office.ok("ingest", str(world.evidence / "file-0.bin"), "--case", CASE,
                    "--create-case")
    [item] = as_json(world.office, "items", "list", "--json")
    world.office.ok("items", "export", item["id"], "-o", str(tmp_path / "copy.bin"),
                    "--reason", "review")
    built = as_json(world.office, "package", "create", "--to", "ICC-OTP", "--case", CASE,
                    "--send", "--outbox", str(world.outbox), "-o", str(tmp_path / "p.evpkg"),
                    "--json")
    opened = as_json(world.icc, "open", str(world.outbox / f"{built['id']}.evpkg"), "--out",
                     str(tmp_path / "received"), "--json")
    form = world.icc.ok("report", "custody", opened["items"][0]["id"], "--format",
                        "md").stdout
    assert "item.exported" in form
    assert "item.export.started" not in form and "item.export.abandoned" not in form
