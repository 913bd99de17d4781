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
import sqlalchemy as sa
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


# ------------------------------------------------------------------ the hostile review's finds

#: Times that parse but are not times in UTC: an offset takes them past year 1 or 9999.
OUT_OF_RANGE = ("'0001-01-01 00:00:00+01:00'", "'9999-12-31 23:59:59-01:00'")


@pytest.mark.parametrize("junk", OUT_OF_RANGE)
def test_a_time_past_the_years_python_holds_in_utc_is_not_one(
        tmp_path: Path, database: str | None, junk: str) -> None:
    """Read, then shown in UTC: an OverflowError traceback (exit 1) in every command that
    showed it, and doctor said ``times: ok``."""
    cli, (a, _b) = _two_items(tmp_path, database)
    _sql(cli, database, f"UPDATE items SET ingested_at = {junk} WHERE id = '{a}'",
         f"UPDATE cases SET created_at = {junk}")
    expected = _not_a_time(f"item {a}", "ingested_at")
    for args in (("items", "show", a), ("items", "list"), ("items", "list", "--json")):
        result = cli(*args)
        assert (result.exit_code, result.stdout, result.stderr) == (3, "", expected), args
    for args in (("case", "show", CASE), ("case", "list")):
        result = cli(*args)
        assert (result.exit_code, result.stdout, result.stderr) == (
            3, "", _not_a_time(f"cases {CASE}", "created_at")), args
    result = cli("doctor", "--json")
    assert (result.exit_code, json.loads(result.stdout)["not_times"]) == (
        3, [f"cases {CASE}: created_at", f"item {a}: ingested_at"])


def _drop_not_null(cli: object, database: str | None, *columns: tuple[str, str]) -> None:
    """The insider drops NOT NULL: on SQLite by rewriting the schema (writable_schema)."""
    if database is not None:
        _sql(cli, database, *(f"ALTER TABLE {t} ALTER COLUMN {c} DROP NOT NULL"
                              for t, c in columns))
        return
    import sqlite3

    conn = sqlite3.connect(cli.vault / "vault.db")  # type: ignore[attr-defined]
    conn.execute("PRAGMA writable_schema=ON")
    for table, column in columns:
        conn.execute("UPDATE sqlite_master SET sql = replace(sql, ?, ?) WHERE name = ?",
                     (f"{column} DATETIME NOT NULL", f"{column} DATETIME", table))
    conn.commit()
    conn.close()


def test_null_in_a_time_the_models_declare_not_null_is_not_a_time(
        tmp_path: Path, database: str | None) -> None:
    """``items show``, ``case show``, ``custody verify``: AttributeError tracebacks; doctor
    said ``times: ok``."""
    cli, (a, _b) = _two_items(tmp_path, database)
    _drop_not_null(cli, database, ("items", "ingested_at"), ("cases", "created_at"),
                   ("custody_events", "recorded_at"))
    _sql(cli, database, f"UPDATE items SET ingested_at = NULL WHERE id = '{a}'",
         "UPDATE cases SET created_at = NULL",
         "UPDATE custody_events SET recorded_at = NULL WHERE seq = 2")
    for args, what, column in (
            (("items", "show", a), f"item {a}", "ingested_at"),
            (("items", "list"), f"item {a}", "ingested_at"),
            (("case", "show", CASE), f"cases {CASE}", "created_at"),
            (("custody", "verify"), "custody_events 2", "recorded_at")):
        result = cli(*args)
        assert (result.exit_code, result.stdout, result.stderr) == (
            3, "", _not_a_time(what, column)), args
    result = cli("doctor", "--json")
    assert (result.exit_code, json.loads(result.stdout)["not_times"]) == (
        3, [f"cases {CASE}: created_at", "custody_events 2: recorded_at",
            f"item {a}: ingested_at"])


def test_a_not_a_time_crosses_processes_with_its_message() -> None:
    """custody verify's workers raise it through a ProcessPoolExecutor, which pickles it:
    it could not be unpickled (keyword-only arguments), and the pool broke, traceback."""
    import pickle

    from vault.store.dbapi import NotATime

    for sent in (NotATime("custody_events", "recorded_at", stored=1.5),
                 NotATime("items", "ingested_at", row="item EV-1", step=""),
                 NotATime("items", "ingested_at", rows=2, stored="junk")):
        got = pickle.loads(pickle.dumps(sent))
        assert (type(got), str(got), got.table, got.column, got.row, got.rows, got.stored,
                got.step) == (NotATime, str(sent), sent.table, sent.column, sent.row,
                              sent.rows, sent.stored, sent.step)


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("mode", ["in-process", "workers"])
def test_custody_verify_refuses_a_time_in_one_line_either_way(
        tmp_path: Path, database: str | None, monkeypatch: pytest.MonkeyPatch,
        mode: str) -> None:
    """Through workers (a log of PARALLEL_MIN events or more) the refusal broke the pool
    with a traceback; in this process it was followed on stderr by the row generator's
    ``Exception ignored ... Cannot operate on a closed database``."""
    import gc

    from vault.custody import verify

    if mode == "workers":
        monkeypatch.setattr(verify, "PARALLEL_MIN", 1)
        monkeypatch.setattr(verify, "SCAN_CHUNK", 2)
    cli, _ids = _two_items(tmp_path, database)
    junk = "1.5" if database is None else "'infinity'"  # a REAL on SQLite
    _sql(cli, database, f"UPDATE custody_events SET recorded_at = {junk} WHERE seq = 3")
    result = cli("custody", "verify")
    gc.collect()  # a generator left open is closed here at the latest
    assert (result.exit_code, result.stdout, result.stderr) == (
        3, "", _not_a_time("custody_events 3", "recorded_at"))


def test_several_rows_holding_the_same_junk_are_not_named_as_one(
        tmp_path: Path, database: str | None) -> None:
    """``items show B`` named item A, the first row holding the same value."""
    cli, (a, b) = _two_items(tmp_path, database)
    _sql(cli, database, f"UPDATE items SET ingested_at = {_junk(database)}")
    for item in (a, b):
        result = cli("items", "show", item)
        assert (result.exit_code, result.stdout, result.stderr) == (
            3, "", "evault: items: 2 rows' ingested_at are not times (written by SQL outside "
                   "evault); run `evault doctor`, and restore the database from a backup\n")


@pytest.mark.postgres
def test_a_datestyle_the_postgres_database_sets_does_not_stop_evault(pg_url: str,
                                                            tmp_path: Path) -> None:
    """``ALTER DATABASE/ROLE ... SET DateStyle = 'SQL, DMY'`` (here the same setting given
    to the vault's connections alone, so other tests are untouched): psycopg cannot parse
    such times, and every command, doctor's too, traced back."""
    cli, (a, _b) = _two_items(tmp_path, pg_url)
    config = cli.vault / "config.toml"
    text = config.read_text()
    assert text.count("options=-c") == 1  # conftest.schema_url's options, search_path last
    config.write_text(text.replace("options=-c",
                                   "options=-cdatestyle%3DSQL%2CDMY%20-ctimezone%3DEST5EDT"
                                   "%20-c"))
    shown = json.loads(cli.ok("items", "show", a, "--json").stdout)
    assert shown["ingested_at"].endswith("Z")
    assert cli.ok("items", "list").stdout.count("Z") >= 2
    cli.ok("custody", "verify")
    assert json.loads(cli.ok("doctor", "--json").stdout)["times"] == "ok"


def test_doctor_names_a_table_sql_changed_in_one_failed_line(tmp_path: Path) -> None:
    """A column dropped or a table renamed: doctor traced back (exit 1)."""
    cli, _ids = _two_items(tmp_path, None)
    _sql(cli, None, "ALTER TABLE items DROP COLUMN collected_at",
         "ALTER TABLE receipts RENAME TO receipts_old")
    result = cli("doctor")
    shown = {k: v.strip() for k, v in (line.split(":", 1) for line in result.stdout.splitlines())}
    assert (result.exit_code, result.stderr, shown["times"], shown["sealed_values"]) == (
        3, "", "failed: vault database: no such column: items.collected_at (its tables "
               "changed outside evault?); restore the database from a backup",
        "failed: vault database: no such table: receipts (its tables changed outside "
        "evault?); restore the database from a backup")


def test_doctor_reads_the_times_without_the_write_lock_and_counts_past_those_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """check_times ran in a write transaction (BEGIN IMMEDIATE): every writer waited for
    the scan of the whole custody log. It names at most NAMED cells, counting all."""
    import sqlite3

    from vault.service import doctor

    cli, (a, b) = _two_items(tmp_path, None)
    _sql(cli, None, "UPDATE items SET ingested_at = 'yesterday'",
         "UPDATE cases SET created_at = 'yesterday'")
    scan = doctor._not_times
    writes: list[str] = []

    def scan_while_writing(*args: object) -> int:
        other = sqlite3.connect(cli.vault / "vault.db", timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # "database is locked" while doctor holds it
            other.execute("ROLLBACK")
            writes.append("written")
        finally:
            other.close()
        return scan(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(doctor, "_not_times", scan_while_writing)
    monkeypatch.setattr(doctor, "NAMED", 2)
    result = cli("doctor", "--json")
    report = json.loads(result.stdout)
    assert (result.exit_code, report["times"], report["not_times"], len(writes) > 0) == (
        3, "3 value(s) are not times (written by SQL outside evault); restore the database "
           "from a backup", [f"cases {CASE}: created_at", f"item {min(a, b)}: ingested_at"],
        True)


def test_doctors_failed_times_line_does_not_send_the_user_to_doctor(tmp_path: Path) -> None:
    cli, (a, _b) = _two_items(tmp_path, None)
    _sql(cli, None, f"UPDATE items SET ingested_at = CAST(X'FF' AS TEXT) WHERE id = '{a}'")
    result = cli("doctor", "--json")
    assert (result.exit_code, json.loads(result.stdout)["times"]) == (
        3, "failed: database: a text column holds bytes that are not UTF-8 (written by SQL "
           "outside evault); restore the database from a backup")


def test_a_table_or_column_sql_dropped_stops_every_command_in_one_line(
        tmp_path: Path, database: str | None) -> None:
    """The custody log's table renamed, an item column dropped: `custody verify`, `items
    show` and doctor itself traced back (exit 1). Each now names what is missing (exit 3)."""
    cli, (a, _b) = _two_items(tmp_path, database)
    _sql(cli, database, "ALTER TABLE items DROP COLUMN source")
    column = ("no such column: items.source" if database is None
              else "column items.source does not exist")
    result = cli("items", "show", a)
    assert (result.exit_code, result.stdout, result.stderr) == (
        3, "", f"evault: vault database: {column} (its tables changed outside evault?); "
               "run `evault doctor`, and restore the database from a backup\n")
    _sql(cli, database, "ALTER TABLE custody_events RENAME TO custody_events_old")
    table = ("no such table: custody_events" if database is None
             else 'relation "custody_events" does not exist')
    said = f"vault database: {table} (its tables changed outside evault?); "
    for args in [("custody", "verify"), ("custody", "show", a)]:
        result = cli(*args)
        assert (result.exit_code, result.stdout, result.stderr) == (
            3, "", f"evault: {said}run `evault doctor`, and restore the database from a "
                   "backup\n"), args
    for args in [("doctor",), ("doctor", "--repair")]:
        result = cli(*args)
        assert (result.exit_code, result.stdout, result.stderr) == (
            3, "", f"evault: {said}restore the database from a backup\n"), args


def _missing(database: str | None, sqlite: str, postgres: str) -> str:
    return sqlite if database is None else postgres


def test_the_settings_table_and_a_written_column_sql_renamed_are_one_line_too(
        tmp_path: Path, database: str | None) -> None:
    """The reviewer's F1 and F2: ``vault_settings`` is read outside any transaction (a
    traceback from doctor, ingest, export and packaging), and SQLite says a column an
    INSERT names is missing in other words ("table T has no column named C")."""
    office, _icc, _package = _sender_and_recipient(tmp_path, database)
    [item] = [i["id"] for i in json.loads(office.ok("items", "list", "--json").stdout)]
    out = tmp_path / "again.evpkg"
    _sql(office, database,
         "ALTER TABLE packages RENAME COLUMN statement_sha256 TO statement_sha256_old")
    column = _missing(database, "table packages has no column named statement_sha256",
                      'column "statement_sha256" of relation "packages" does not exist')
    result = office("package", "create", "--to", "ICC-OTP", "--item", item, "-o", str(out))
    assert (result.exit_code, result.stdout, result.stderr, out.exists()) == (
        3, "", f"evault: vault database: {column} (its tables changed outside evault?); "
               "run `evault doctor`, and restore the database from a backup\n", False)
    _sql(office, database, "ALTER TABLE vault_settings RENAME TO vault_settings_old")
    table = _missing(database, "no such table: vault_settings",
                     'relation "vault_settings" does not exist')
    said = f"vault database: {table} (its tables changed outside evault?); "
    (tmp_path / "new.txt").write_text("fictional new file\n")
    for args in [("ingest", str(tmp_path / "new.txt"), "--case", CASE),
                 ("items", "export", item, "-o", str(tmp_path / "copy"), "--reason", "r"),
                 ("package", "create", "--to", "ICC-OTP", "--item", item, "-o", str(out))]:
        result = office(*args)
        assert (result.exit_code, result.stdout, result.stderr) == (
            3, "", f"evault: {said}run `evault doctor`, and restore the database from a "
                   "backup\n"), args
    result = office("doctor")
    assert (result.exit_code, result.stderr) == (
        3, f"evault: {said}restore the database from a backup\n")
    assert not out.exists() and not (tmp_path / "copy").exists()


@pytest.mark.postgres
def test_a_column_type_postgres_sql_changed_is_one_line(pg_url: str, tmp_path: Path) -> None:
    """The reviewer's F3: a retyped column made PostgreSQL refuse evault's own statements
    (42883, an operator for text and bigint), which traced back."""
    cli, _ids = _two_items(tmp_path, pg_url)
    _sql(cli, pg_url, "ALTER TABLE custody_events ALTER COLUMN seq TYPE text")
    result = cli("custody", "verify", "--quick")
    assert (result.exit_code, result.stdout, result.stderr) == (
        3, "", "evault: vault database: operator does not exist: text >= bigint (its tables "
               "changed outside evault?); run `evault doctor`, and restore the database from "
               "a backup\n")


@pytest.mark.postgres
def test_a_postgres_role_without_privileges_is_told_what_it_lacks(pg_url: str,
                                                                  tmp_path: Path) -> None:
    """A role that may not read a table of the vault (an operator's mistake, not an
    insider's): a traceback from every command, `items list` included."""
    import uuid

    cli, _ids = _two_items(tmp_path, pg_url)
    role = f"evault_limited_{uuid.uuid4().hex[:12]}"
    schema = pg_url.rsplit("search_path%3D", 1)[1]
    _sql(cli, pg_url, f"CREATE ROLE {role} LOGIN", f"GRANT USAGE ON SCHEMA {schema} TO {role}",
         f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}",
         f"REVOKE ALL ON items FROM {role}")
    try:
        config = cli.vault / "config.toml"
        text = config.read_text()
        assert text.count("//postgres@") == 1
        config.write_text(text.replace("//postgres@", f"//{role}@"))
        said = ("evault: vault database: permission denied for table items; the role in the "
                "vault's database URL needs every privilege on the vault's tables (those of "
                "the role that ran `evault init`)\n")
        for args in [("items", "list"), ("items", "list", "--json"), ("case", "show", CASE),
                     ("doctor",)]:
            result = cli(*args)
            assert (result.exit_code, result.stdout, result.stderr) == (1, "", said), args
    finally:
        _sql(cli, pg_url, f"DROP OWNED BY {role}", f"DROP ROLE {role}")


def test_a_damaged_sqlite_file_is_one_line(tmp_path: Path) -> None:
    """The second review: a page of vault.db overwritten traced back from `items list` and
    `items show` (sqlite3.DatabaseError, which no handler named)."""
    import sqlite3

    cli, (a, _b) = _two_items(tmp_path, None)
    db = cli.vault / "vault.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'items'").fetchone()
    (size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    with open(db, "r+b") as f:
        f.seek((root - 1) * size)
        f.write(b"\xa5" * size)
    for args in [("items", "list"), ("items", "show", a)]:
        result = cli(*args)
        assert (result.exit_code, result.stdout, result.stderr) == (
            3, "", "evault: vault database: its file is damaged (database disk image is "
                   "malformed); restore the database from a backup\n"), args


@pytest.mark.postgres
def test_postgres_settings_and_policies_that_refuse_evault_are_one_line(
        pg_url: str, tmp_path: Path) -> None:
    """The second review: a read-only default transaction, a statement timeout and a
    row-level security policy traced back (or, for the policy, was called a missing
    privilege)."""
    import uuid

    cli, _ids = _two_items(tmp_path, pg_url)
    (tmp_path / "new.txt").write_text("fictional new file\n")
    config = cli.vault / "config.toml"
    text = config.read_text()
    assert text.count("search_path%3D") == 1
    config.write_text(text.replace("search_path%3D", "default_transaction_read_only%3Don"
                                   "%20-csearch_path%3D"))
    result = cli("ingest", str(tmp_path / "new.txt"), "--case", CASE)
    assert (result.exit_code, result.stderr.split("; ", 1)[1]) == (
        1, "evault writes to its database: connect to the primary server, without "
           "default_transaction_read_only\n")
    assert result.stderr.startswith("evault: vault database: cannot execute ")
    # Another session holds the tables, so the first read waits past the timeout whatever
    # the machine's speed (a 1 ms timeout alone let doctor finish on a fast machine).
    config.write_text(text.replace("search_path%3D", "statement_timeout%3D200%20-csearch_path%3D"))
    engine = sa.create_engine(pg_url)
    with engine.begin() as holder:
        holder.exec_driver_sql("LOCK TABLE identities, items, custody_events "
                               "IN ACCESS EXCLUSIVE MODE")
        result = cli("doctor")
        assert (result.exit_code, result.stderr) == (
            1, "evault: vault database: canceling statement due to statement timeout; raise "
               "or remove the statement_timeout set in the vault's database URL or on the "
               "server, or ask its administrator\n")
        # Held before doctor opens the blob store: it said "not checked" and exited 0. It
        # goes on to the records now, whose first read times out the same way.
        holder.exec_driver_sql("LOCK TABLE vault_settings IN ACCESS EXCLUSIVE MODE")
        stopped = cli("doctor")
    engine.dispose()
    assert (stopped.exit_code, stopped.stderr) == (1, result.stderr)
    role = f"evault_rls_{uuid.uuid4().hex[:12]}"
    schema = pg_url.rsplit("search_path%3D", 1)[1]
    _sql(cli, pg_url, f"CREATE ROLE {role} LOGIN", f"GRANT USAGE ON SCHEMA {schema} TO {role}",
         f"GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO {role}",
         f"GRANT ALL ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
         "ALTER TABLE custody_events ENABLE ROW LEVEL SECURITY",
         "CREATE POLICY only_reads ON custody_events FOR SELECT USING (true)")
    try:
        config.write_text(text.replace("//postgres@", f"//{role}@"))
        result = cli("ingest", str(tmp_path / "new.txt"), "--case", CASE)
        assert (result.exit_code, result.stderr) == (
            3, "evault: vault database: new row violates row-level security policy for table "
               '"custody_events" (a policy added outside evault); remove it, then run `evault '
               "doctor`\n")
    finally:
        _sql(cli, pg_url, "DROP POLICY only_reads ON custody_events",
             f"DROP OWNED BY {role}", f"DROP ROLE {role}")
