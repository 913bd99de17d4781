"""Issue 19's hostile review (the link in packages): a hostile sender's package and a
holder of the recipient's database, each refused. The attacks were found by review; each
test fails on the code before its fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from sqlalchemy import update
from test_derived_packages import Office, _ingest, _office, _shown
from test_robustness import assert_refusal

from vault.service.vaults import open_vault
from vault.store.models import Item

DB_ALTERED = ("the database was altered: run `evault custody verify` and restore the "
              "database from a backup")


def _sql(cli: Cli, item: str, **values: Any) -> None:
    """The item's row changed with SQL, as a database holder without the keys can."""
    v = open_vault(cli.vault)
    try:
        with v.transaction() as session:
            session.execute(update(Item).where(Item.id == item).values(**values))
    finally:
        v.close()


def _send_unchecked(o: Office, mp: pytest.MonkeyPatch, *keys: str, name: str,
                    drop_excerpt: bool = False) -> tuple[Path, str]:
    """A hostile sender: an evault that signs whatever its database says, and may leave
    the custody excerpt out."""
    with mp.context() as hostile:
        hostile.setattr("vault.service.packaging.plan._SignedIntake.check",
                        lambda self, item: None)
        if drop_excerpt:
            hostile.setattr("vault.service.packaging.plan._custody_excerpt",
                            lambda session, items, size: b"")
        return o.send(*keys, name=name)


def _plain(o: Office, key: str, text: bytes, *args: str) -> None:
    path = o.tmp / f"{key}.txt"
    path.write_bytes(text)
    row = _ingest(o.a, path, *args)
    o.ids[key], o.sha[key] = row["id"], row["sha256"]


def _lying_copy(o: Office, mp: pytest.MonkeyPatch, false: str) -> None:
    """A sender whose signed event, statement and items.json agree on a false digest."""
    from vault.service.intake import _Original

    with mp.context() as lying:
        lying.setattr("vault.service.intake._originals",
                      lambda session, rows: {o.ids["O"]: _Original(false, ())})
        o.ids["R"] = _ingest(o.a, o.files["R"], "--derived-from", o.ids["O"], "--relation",
                             "redacted")["id"]


def test_a_link_on_an_item_the_senders_log_records_as_an_original_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    o = _office(tmp_path, None, derive=False)
    _plain(o, "X", b"fictional unredacted statement naming witness W-9\n")
    _sql(o.a, o.ids["X"], derived_from=o.ids["O"], derived_from_sha256=o.sha["O"],
         derivation="redacted")
    path, pid = _send_unchecked(o, monkeypatch, "X", name="x")
    result = o.b("open", str(path), "--out", str(o.tmp / "received"))
    assert result.exit_code == 3
    assert result.stderr.startswith(f"evault: package {pid}: evault/custody.jsonl line 1: item "
                                    f"{o.ids['X']}: the signed statement's link (")
    assert result.stderr.endswith(") is not the one the sender's item.ingested event 5 names "
                                  "(none); the sender's records disagree; ask the sender\n")


def test_a_linked_item_without_its_intake_event_in_the_excerpt_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    o = _office(tmp_path, None)
    _sql(o.a, o.ids["R"], derived_from_sha256="cd" * 32)
    path, pid = _send_unchecked(o, monkeypatch, "R", name="r", drop_excerpt=True)
    assert_refusal(o.b("open", str(path), "--out", str(o.tmp / "received")), 3,
                   f"package {pid}: evault/custody.jsonl lacks item {o.ids['R']}'s intake "
                   "event, which its link must agree with; ask the sender for a new package")


def test_a_database_holder_cannot_make_another_item_the_original(tmp_path: Path) -> None:
    o = _office(tmp_path, None)
    _plain(o, "X", b"fictional unrelated photo\n")
    ids = o.open(o.send("R", "X", name="rx")[0])
    r_b, x_b = ids[o.ids["R"]], ids[o.ids["X"]]
    assert o.b("items", "verify-link", r_b).exit_code == 1
    # X passed off as R's original: its source id and digest set to the original's.
    _sql(o.b, x_b, source_item=o.ids["O"], sha256=o.sha["O"])
    assert_refusal(o.b("items", "verify-link", r_b), 3,
                   f"item {x_b}: its SHA-256 in this vault's database is not the one its "
                   f"signed intake event names; {DB_ALTERED}")
    _sql(o.b, x_b, sha256=o.sha["X"])  # only the source id: the signed event names another
    assert_refusal(o.b("items", "verify-link", r_b), 3,
                   f"item {x_b}: its sender or source item in this vault's database is not the "
                   f"one its signed item.received event names; {DB_ALTERED}")


def test_a_database_holder_cannot_hide_a_senders_false_link(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    o = _office(tmp_path, None, derive=False)
    false = "ab" * 32
    _lying_copy(o, monkeypatch, false)
    r_b = o.open(o.send("R", name="copy")[0])[o.ids["R"]]
    o_b = o.open(o.send("O", name="original")[0])[o.ids["O"]]
    assert o.b("items", "verify-link", r_b).exit_code == 3
    _sql(o.b, o_b, sha256=false)
    assert_refusal(o.b("items", "verify-link", r_b), 3,
                   f"item {o_b}: its SHA-256 in this vault's database is not the one its signed "
                   f"intake event names; {DB_ALTERED}")


def test_a_database_holder_cannot_change_whom_a_copy_came_from(tmp_path: Path) -> None:
    o = _office(tmp_path, None)
    r_b = o.open(o.send("R", name="copy")[0])[o.ids["R"]]
    _sql(o.b, r_b, received_from="SHA256:" + "A" * 43)
    assert_refusal(o.b("items", "verify-link", r_b), 3,
                   f"item {r_b}: its sender or source item in this vault's database is not the "
                   f"one its signed item.received event names; {DB_ALTERED}")


def test_lineage_does_not_join_a_copy_to_an_original_its_link_contradicts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    o = _office(tmp_path, None, derive=False)
    false = "ab" * 32
    _lying_copy(o, monkeypatch, false)
    r_b = o.open(o.send("R", name="copy")[0])[o.ids["R"]]
    o_b = o.open(o.send("O", name="original")[0])[o.ids["O"]]
    [link] = _shown(o.b, r_b)["derived_from"]
    # The link as signed, not the item received under that id with another digest.
    assert (link["id"], link["sha256"]) == (o.ids["O"], false)
    assert o_b not in o.b("custody", "show", r_b).stdout
