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
