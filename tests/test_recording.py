"""Items are recorded one way, by intake and by open: bytes already held get no second blob."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Cli
from test_opening import World
from test_opening import sqlite_vaults as sqlite_vaults  # the fixture world uses
from test_opening import world as world  # the fixture


def _blob_files(cli: Cli) -> list[Path]:
    return sorted(p for p in (cli.vault / "blobs").rglob("*") if p.is_file()
                  and not p.name.startswith(".intake"))


def test_opening_bytes_already_in_the_vault_stores_no_second_blob(world: World) -> None:
    icc = world.icc
    # The recipient holds the photo already (its own copy, ingested before the package came).
    photo = world.tmp / "evidence" / "photo.jpg"
    icc.ok("ingest", str(photo), "--case", "ICC-LOCAL", "--create-case")
    before = _blob_files(icc)
    assert len(before) == 1
    out = world.tmp / "received"
    opened = json.loads(icc.ok("open", str(world.package), "--out", str(out),
                               "--json").stdout)
    # One new blob: the statement. The photo's bytes point at the blob held before.
    after = _blob_files(icc)
    assert len(after) == 2 and set(before) < set(after)
    received = {i["name"]: i for i in opened["items"]}
    assert sorted(received) == ["photo.jpg", "statement W-1.txt"]
    photo_item = received["photo.jpg"]["id"]
    shown = json.loads(icc.ok("items", "show", photo_item, "--json").stdout)
    assert shown["sha256"] == received["photo.jpg"]["sha256"]
    events = json.loads(icc.ok("custody", "show", photo_item, "--json").stdout)["events"]
    assert [e["action"] for e in events] == ["item.received"]
    assert events[0]["details"]["package"] == world.package_id
    # The item reads back from the shared blob, its digest checked on the way.
    copy = world.tmp / "copy.jpg"
    icc.ok("items", "export", photo_item, "-o", str(copy), "--reason", "test")
    assert copy.read_bytes() == photo.read_bytes()
    assert icc.ok("custody", "verify").exit_code == 0
    doctor = json.loads(icc.ok("doctor", "--json").stdout)
    assert doctor["orphaned_blobs"] == 0 and doctor["blobs_missing"] == 0
