"""Times that SQL outside evault made not times, and doctor's exit code for a damaged vault.

A database insider (who can write the vault's database with SQL but holds no key) can put
any text in a time column on SQLite, and on PostgreSQL a time no Python datetime holds
(``'infinity'``, a year before 1 or after 9999). ``items list`` refused such a time in one
line; every other command that loads the row through the ORM gave a traceback (SQLite) or
called it a value the user should shorten (PostgreSQL, exit 2), and doctor said the vault
was healthy. Each now refuses in the listing's one line (exit 3), and doctor names every
such cell and exits 3, as it now does for missing blobs and release rules that differ from
the signed ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_sealed_metadata import CASE, _sender_and_recipient, _sql, _two_items


def _not_a_time(what: str, column: str, step: str = "run `evault doctor`, and ") -> str:
    return (f"evault: {what}: its {column} is not a time (written by SQL outside evault); "
            f"{step}restore the database from a backup\n")


def _junk(database: str | None) -> str:
    """What the insider writes: any text on SQLite; on PostgreSQL a time Python has not."""
    return "'yesterday'" if database is None else "'infinity'"


@pytest.mark.parametrize("column", ["ingested_at", "collected_at"])
def test_every_command_that_loads_the_item_refuses_in_the_listings_line(
        tmp_path: Path, database: str | None, column: str) -> None:
    office, _icc, _package = _sender_and_recipient(tmp_path, database)
    item = json.loads(office.ok("items", "list", "--json").stdout)[0]["id"]
    _sql(office, database, f"UPDATE items SET {column} = {_junk(database)}")
    expected = _not_a_time(f"item {item}", column)
    out = tmp_path / "out"
    out.mkdir()
    commands = [
        ("items", "show", item), ("items", "show", item, "--json"), ("items", "list", "--json"),
        ("items", "export", item, "-o", str(out / "copy.txt"), "--reason", "fictional review"),
        ("package", "create", "--to", "ICC-OTP", "--case", CASE, "-o", str(out / "p.evpkg")),
        ("custody", "show", item), ("report", "custody", item),
        ("export-case-uco", item, "-o", str(out / "case.json")),
        ("items", "verify-link", item),
    ]
    if column == "ingested_at":  # the table and CSV show no collected_at
        commands += [("items", "list"), ("items", "list", "--csv")]
    for args in commands:
        result = office(*args)
        assert (result.exit_code, result.stdout, result.stderr) == (3, "", expected), args
    assert list(out.iterdir()) == []


def test_a_time_of_another_table_names_its_row(tmp_path: Path, database: str | None) -> None:
    """Not only items: any row the ORM loads, named as a sealed cell is (table and id)."""
    cli, _ids = _two_items(tmp_path, database)
    _sql(cli, database, f"UPDATE cases SET created_at = {_junk(database)}")
    result = cli("case", "show", CASE)
    assert (result.exit_code, result.stdout, result.stderr) == (
        3, "", _not_a_time(f"cases {CASE}", "created_at"))


def test_doctor_names_every_time_that_is_not_one(tmp_path: Path, database: str | None) -> None:
    """``items list`` sends the user to doctor, which said the vault was healthy (exit 0)."""
    cli, (a, b) = _two_items(tmp_path, database)
    report = json.loads(cli.ok("doctor", "--json").stdout)
    assert (report["times"], "not_times" in report) == ("ok", False)
    _sql(cli, database,
         f"UPDATE items SET ingested_at = {_junk(database)} WHERE id = '{a}'",
         f"UPDATE items SET collected_at = {_junk(database)} WHERE id = '{b}'",
         f"UPDATE cases SET created_at = {_junk(database)}")
    # By table, then by row (the ids are random), as doctor names them.
    cells = [f"cases {CASE}: created_at",
             *sorted([f"item {a}: ingested_at", f"item {b}: collected_at"])]
    result = cli("doctor")
    shown = {k: v.strip() for k, v in (line.split(":", 1) for line in result.stdout.splitlines())}
    assert (result.exit_code, shown["times"], shown["sealed_values"], shown["key_history"]) == (
        3, "3 value(s) are not times (written by SQL outside evault); restore the database "
           "from a backup", "ok", "ok")
    assert result.stderr == "".join(
        _not_a_time(*cell.split(": "), step="") for cell in cells)
    result = cli("doctor", "--json")
    report = json.loads(result.stdout)
    assert (result.exit_code, report["not_times"], result.stderr) == (3, cells, "")


def test_doctor_fails_on_a_missing_blob(tmp_path: Path) -> None:
    """Evidence that is gone is no healthy vault: doctor named it and exited 0, so a script
    could not tell it from a healthy one. ``--repair`` cannot bring it back: still 3."""
    import sqlite3

    cli, (a, _b) = _two_items(tmp_path, None)
    conn = sqlite3.connect(cli.vault / "vault.db")
    [(blob,)] = conn.execute("SELECT blob_id FROM items WHERE id = ?", (a,)).fetchall()
    conn.close()
    (cli.vault / "blobs" / blob[:2] / blob).unlink()
    said = (f"evault: blob {blob} (items {a}): missing from {cli.vault / 'blobs'}; "
            "restore it from a backup, then run `evault custody verify`\n")
    for args in ((), ("--repair",)):
        result = cli("doctor", *args)
        shown = {k: v.strip() for k, v in
                 (line.split(":", 1) for line in result.stdout.splitlines())}
        assert (result.exit_code, shown["blobs_missing"], result.stderr) == (3, "1", said), args
    result = cli("doctor", "--json")
    assert (result.exit_code, json.loads(result.stdout)["missing"], result.stderr) == (
        3, [f"{blob} (items {a})"], "")


def test_doctor_fails_on_release_rules_that_differ_from_the_signed_ones(
        tmp_path: Path) -> None:
    """config.toml's rules edited by hand: package create, export and custody verify exit 3;
    doctor showed the difference and exited 0."""
    cli, _ids = _two_items(tmp_path, None)
    for body in ("ICC-OTP", "UA-OPG"):
        cli.ok("body", "add", body, "--name", f"Fictional {body}")
    cli.ok("rule", "add", "restricted-icc", "ICC-OTP", "--as", "registry-office")
    config = cli.vault / "config.toml"
    text = config.read_text()
    assert '"restricted-icc" = ["ICC-OTP"]' in text
    config.write_text(text.replace('"restricted-icc" = ["ICC-OTP"]',
                                   '"restricted-icc" = ["ICC-OTP", "UA-OPG"]'))
    said = ("config.toml's release rules differ from the signed history (body UA-OPG added "
            "to rule for restricted-icc by hand); see `evault rule list`, then adopt the edit with "
            "`evault rule sign --as NAME` or restore the file")
    result = cli("doctor")
    shown = {k: v.strip() for k, v in (line.split(":", 1) for line in result.stdout.splitlines())}
    assert (result.exit_code, shown["release_rules"], result.stderr) == (3, said, "")
    result = cli("doctor", "--json")
    assert (result.exit_code, json.loads(result.stdout)["release_rules"]) == (3, said)
    cli.ok("rule", "sign", "--as", "registry-office")
    assert json.loads(cli.ok("doctor", "--json").stdout)["release_rules"] == "signed"
