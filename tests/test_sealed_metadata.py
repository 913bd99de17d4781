"""Metadata sealed at rest: what a thief of the database reads, swaps between rows, and the
conversion of vaults made before (tests/vectors/old-vault-pair, made by the evault of schema
0004)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest
import sqlalchemy as sa
from conftest import Cli
from test_robustness import crash

from vault.store.db import SCHEMA_HEAD

CASE = "UA-2026-0042"
OLD = Path(__file__).resolve().parent / "vectors" / "old-vault-pair"
#: What the demo-like flow below writes; none of it may be found in either database.
SECRETS = {
    "case title": "Ashgrove shelling (fictional)",
    "file name": "Pemberwick-statement.txt",
    "title": "Thistlecombe witness account",
    "description": "Wrenfield description of events",
    "source": "Corvane field office",
    "location": "Dunmarrow village",
    "tag value": "Hollinsby",
    "reference": "OTP-REQ-2026-733",
    "purpose": "Mossgarth request for assistance",
}


def _dump(cli: Cli, database: str | None) -> bytes:
    """Everything a thief of the database holds: the SQLite files, or a pg_dump."""
    if database is None:
        return b"".join(p.read_bytes() for p in sorted(cli.vault.glob("vault.db*")))
    url = sa.engine.make_url(database)
    schema = unquote(str(url.query["options"])).split("search_path=")[1]
    return subprocess.run(
        ["pg_dump", "-h", str(url.host), "-p", str(url.port or 5432),
         "-U", str(url.username), "-n", schema, str(url.database)],
        capture_output=True, check=True).stdout


def _found(data: bytes, secrets: dict[str, str] | list[str]) -> list[str]:
    values = secrets.values() if isinstance(secrets, dict) else secrets
    return [s for s in values if s.encode() in data]


def _sender_and_recipient(tmp: Path, database: str | None) -> tuple[Cli, Cli, str]:
    office, icc = Cli(tmp / "office"), Cli(tmp / "icc")
    office.init(database)
    fp = json.loads(office.ok("identity", "create", "registry-office", "--json").stdout)
    icc.init()
    icc.ok("identity", "create", "icc-officer")
    icc.ok("identity", "export", "icc-officer", "-o", str(tmp / "icc.card.json"))
    office.ok("identity", "export", "registry-office", "-o", str(tmp / "office.card.json"))
    office.ok("body", "add", "ICC-OTP", "--name", "Fictional ICC-OTP")
    office.ok("body", "key", "add", "ICC-OTP", "--card", str(tmp / "icc.card.json"))
    icc.ok("contact", "add", str(tmp / "office.card.json"), "--fingerprint", fp["fingerprint"])
    evidence = tmp / "evidence"
    evidence.mkdir()
    (evidence / SECRETS["file name"]).write_text("fictional statement\n")
    office.ok("case", "create", CASE, "--title", SECRETS["case title"])
    office.ok("ingest", str(evidence / SECRETS["file name"]), "--case", CASE,
              "--title", SECRETS["title"], "--source", SECRETS["source"],
              "--location", SECRETS["location"], "--description", SECRETS["description"],
              "--tag", f"witness={SECRETS['tag value']}")
    outbox = tmp / "outbox"
    outbox.mkdir()
    package = json.loads(office.ok(
        "package", "create", "--to", "ICC-OTP", "--case", CASE, "--tag",
        f"witness={SECRETS['tag value']}", "--reference", SECRETS["reference"], "--purpose",
        SECRETS["purpose"], "-o", str(tmp / "p.evpkg"), "--json").stdout)
    office.ok("send", str(tmp / "p.evpkg"), "--outbox", str(outbox))
    icc.ok("open", str(outbox / f"{package['id']}.evpkg"), "--out", str(tmp / "received"))
    return office, icc, package["id"]


def test_a_thief_of_either_database_reads_no_metadata(tmp_path: Path,
                                                      database: str | None) -> None:
    office, icc, package = _sender_and_recipient(tmp_path, database)
    # Everything is still shown in clear to the vault's own user...
    item = json.loads(office.ok("items", "list", "--json").stdout)[0]
    assert (item["name"], item["title"], item["description"], item["source"],
            item["location"], item["tags"]) == (
        SECRETS["file name"], SECRETS["title"], SECRETS["description"], SECRETS["source"],
        SECRETS["location"], {"witness": SECRETS["tag value"]})
    shown = json.loads(office.ok("package", "show", package, "--json").stdout)
    assert (shown["reference"], shown["purpose"]) == (SECRETS["reference"], SECRETS["purpose"])
    case = json.loads(office.ok("case", "show", CASE, "--json").stdout)
    assert case["title"] == SECRETS["case title"]
    received = json.loads(icc.ok("items", "list", "--json").stdout)[0]
    assert (received["name"], received["title"]) == (SECRETS["file name"], SECRETS["title"])
    # ...and to nobody who has only the database.
    assert _found(_dump(office, database), SECRETS) == []
    assert _found(_dump(icc, None), SECRETS) == []


def _two_items(tmp: Path, database: str | None) -> tuple[Cli, list[str]]:
    cli = Cli(tmp / "v")
    cli.init(database)
    cli.ok("identity", "create", "registry-office")
    for n in (1, 2):
        (tmp / f"f{n}.txt").write_text(f"fictional file {n}\n")
        cli.ok("ingest", str(tmp / f"f{n}.txt"), "--case", CASE, "--create-case",
               "--title", f"Fictional title {n}", "--source", f"Fictional source {n}",
               "--tag", f"k=fictional value {n}")
    ids = [i["id"] for i in json.loads(cli.ok("items", "list", "--json").stdout)]
    return cli, ids


def _sql(cli: Cli, database: str | None, *statements: str) -> None:
    """The attacker: SQL on the database, nothing else."""
    engine = sa.create_engine(database or f"sqlite:///{cli.vault / 'vault.db'}")
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()


def _refused(cli: Cli, where: str, column: str, *command: str) -> None:
    result = cli(*command)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "", (
        f"evault: {where}: {column} does not decrypt under this vault's metadata key "
        "(altered, or moved from another row or column); restore the database from a "
        "backup\n"))


def test_values_swapped_between_rows_are_detected(tmp_path: Path,
                                                  database: str | None) -> None:
    cli, (a, b) = _two_items(tmp_path, database)
    _sql(cli, database,
         f"UPDATE items SET title = (SELECT title FROM items WHERE id = '{b}') "
         f"WHERE id = '{a}'")
    _refused(cli, f"items {a}", "title", "items", "list", "--json")
    _refused(cli, f"items {a}", "title", "items", "show", a)
    # The table shows only the name of each item's sealed values, and opens only the name.
    _sql(cli, database,
         f"UPDATE items SET original_name = (SELECT original_name FROM items WHERE id = '{a}') "
         f"WHERE id = '{b}'")
    _refused(cli, f"items {b}", "original_name", "items", "list")
    _refused(cli, f"items {b}", "original_name", "items", "list", "--csv")


def test_values_swapped_between_columns_and_tags_are_detected(tmp_path: Path,
                                                              database: str | None) -> None:
    cli, (a, b) = _two_items(tmp_path, database)
    _sql(cli, database, f"UPDATE items SET source = title WHERE id = '{b}'")
    _refused(cli, f"items {b}", "source", "items", "show", b)
    _sql(cli, database,
         f"UPDATE item_tags SET value = (SELECT value FROM item_tags WHERE item_id = '{b}') "
         f"WHERE item_id = '{a}'")
    _refused(cli, f"item_tags {a}/k", "value", "items", "show", a)


def test_doctor_opens_every_sealed_value_which_no_listing_does(tmp_path: Path,
                                                               database: str | None) -> None:
    """The table opens only the file names: a title and a tag value swapped between rows
    pass it unseen, and doctor names both cells and exits 3; an intact vault says ok."""
    cli, (a, b) = _two_items(tmp_path, database)
    report = json.loads(cli.ok("doctor", "--json").stdout)
    assert (report["sealed_values"], "undecryptable" in report) == ("ok", False)
    _sql(cli, database,
         f"UPDATE items SET title = (SELECT title FROM items WHERE id = '{b}') "
         f"WHERE id = '{a}'",
         f"UPDATE item_tags SET value = (SELECT value FROM item_tags WHERE item_id = '{a}') "
         f"WHERE item_id = '{b}'")
    assert cli.ok("items", "list").stdout.count("f1.txt") == 1
    result = cli("doctor")
    assert result.exit_code == 3
    shown = dict(line.split(":", 1) for line in result.stdout.splitlines())
    assert shown["sealed_values"].strip() == (
        "2 value(s) do not decrypt under this vault's metadata key; restore the database "
        "from a backup")
    assert result.stderr == "".join(
        f"evault: {cell}: does not decrypt under this vault's metadata key (altered, or "
        "moved from another row or column); restore the database from a backup\n"
        for cell in (f"items {a}: title", f"item_tags {b}/k: value"))
    report = json.loads(cli("doctor", "--json").stdout)
    assert report["undecryptable"] == [f"items {a}: title", f"item_tags {b}/k: value"]


def _doctor_names(cli: Cli, *cells: str) -> None:
    result = cli("doctor")
    assert (result.exit_code, result.stderr) == (3, "".join(
        f"evault: {cell}: does not decrypt under this vault's metadata key (altered, or "
        "moved from another row or column); restore the database from a backup\n"
        for cell in cells))


def test_a_stored_value_that_is_not_utf8_is_named_not_a_traceback(tmp_path: Path) -> None:
    """SQLite keeps any bytes in a TEXT column, and its Python driver fails the whole query
    on one that is not UTF-8: each listing and doctor name the cell instead (exit 3)."""
    cli, (a, b) = _two_items(tmp_path, None)
    _sql(cli, None, f"UPDATE items SET original_name = CAST(X'ff41' AS TEXT) WHERE id = '{a}'")
    for command in (("items", "list"), ("items", "list", "--csv"), ("items", "list", "--json")):
        _refused(cli, f"items {a}", "original_name", *command)
    _doctor_names(cli, f"items {a}: original_name")
    _sql(cli, None,
         f"UPDATE items SET original_name = (SELECT original_name FROM items WHERE id = '{b}'), "
         f"title = CAST(X'c3' AS TEXT) WHERE id = '{a}'",
         f"UPDATE items SET original_name = CAST(X'e2' AS TEXT) WHERE id = '{b}'",
         f"UPDATE item_tags SET value = CAST(X'80' AS TEXT) WHERE item_id = '{b}'")
    _doctor_names(cli, f"items {a}: original_name", f"items {a}: title",
                  f"items {b}: original_name", f"item_tags {b}/k: value")
    _refused(cli, f"item_tags {b}/k", "value", "items", "list", "--jsonl")


@pytest.mark.parametrize(("check", "statement"), [
    ("sealed_values", "UPDATE items SET id = CAST(X'45562dff' AS TEXT) WHERE id = '{a}'"),
    ("key_history", "UPDATE identities SET email = CAST(X'ff41' AS TEXT)"),
])
def test_doctor_fails_on_a_clear_cell_that_is_not_utf8(tmp_path: Path, check: str,
                                                       statement: str) -> None:
    """A clear column (an item's id, an identity's email) holding bytes that are not UTF-8
    stops the reading of the sealed values or of the key tables: doctor said ``not checked:
    ...`` and exited 0, as if the key store were locked. It is a failed check (exit 3), the
    rest still reported. SQLite only: a PostgreSQL database in UTF-8 refuses such bytes."""
    cli, (a, _b) = _two_items(tmp_path, None)
    conn = sqlite3.connect(cli.vault / "vault.db")
    with conn:
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute(statement.format(a=a))
    conn.close()
    # Doctor does not send the user to run doctor (it did).
    failed = ("failed: database: a text column holds bytes that are not UTF-8 (written by SQL "
              "outside evault); restore the database from a backup")
    other = {"sealed_values": "key_history", "key_history": "sealed_values"}[check]
    result = cli("doctor")
    shown = {k: v.strip() for k, v in (line.split(":", 1) for line in result.stdout.splitlines())}
    assert (result.exit_code, shown[check], shown[other], shown["blobs_missing"],
            result.stderr) == (3, failed, "ok", "0", "")
    result = cli("doctor", "--json")
    report = json.loads(result.stdout)
    assert (result.exit_code, report[check], report[other], result.stderr) == (
        3, failed, "ok", "")


@pytest.mark.parametrize("stored", ["'text, not bytes'", "-1", "1.5", "100000000000000"])
def test_a_binary_value_of_another_type_is_named_not_a_traceback(tmp_path: Path,
                                                                 stored: str) -> None:
    """A text, a negative, a real or a huge integer where a sealed document (bytes) is kept:
    doctor named no cell but raised (TypeError, ValueError, MemoryError: ``bytes(10**14)``
    asks for 100 TB)."""
    office, _icc, _package = _sender_and_recipient(tmp_path, None)
    engine = sa.create_engine(f"sqlite:///{office.vault / 'vault.db'}")
    with engine.connect() as conn:
        (receipt,) = conn.exec_driver_sql("SELECT id FROM receipts").scalars().all()
    engine.dispose()
    _sql(office, None, f"UPDATE receipts SET document = {stored}")
    _doctor_names(office, f"receipts {receipt}: document")
    result = office("receipt", "list")
    assert (result.exit_code, result.stderr) == (3, (
        f"evault: receipts {receipt}: document does not decrypt under this vault's metadata "
        "key (altered, or moved from another row or column); restore the database from a "
        "backup\n"))


def test_text_that_does_not_encode_is_refused_not_a_traceback(tmp_path: Path) -> None:
    """A file name in another encoding than UTF-8 (``os.fsdecode`` gives it lone
    surrogates), or such an argument, cannot be sealed: a usage error, not the
    UnicodeEncodeError of the sealing, and nothing written."""
    import os

    cli = Cli(tmp_path / "v")
    cli.init()
    cli.ok("identity", "create", "registry-office")
    cli.ok("case", "create", CASE)
    odd = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"\xff\x1b[2J.txt"))
    Path(odd).write_text("fictional\n")
    (tmp_path / "ok.txt").write_text("fictional\n")
    not_utf8 = ("not valid UTF-8 (byte 0xff); pass it as UTF-8 (check the encoding of the "
                "terminal or script)")
    for command, message in (
            (("ingest", odd, "--case", CASE),
             f"{tmp_path}/\\xff\\x1b[2J.txt: the file name is not UTF-8, and evault keeps "
             "names as UTF-8 text; ingest a copy under a UTF-8 name (the original can go in "
             "--description)"),
            # Refused by the command line itself now, before anything is opened.
            (("ingest", str(tmp_path / "ok.txt"), "--case", CASE, "--title", "t\udcff"),
             f"--title: {not_utf8}"),
            (("ingest", str(tmp_path / "ok.txt"), "--case", CASE, "--tag", "k=\udcff"),
             f"--tag: {not_utf8}"),
            (("case", "create", "UA-2026-0043", "--title", "\udcff"), f"--title: {not_utf8}")):
        result = cli(*command)
        assert (result.exit_code, result.stdout, result.stderr) == (
            2, "", f"evault: {message}\n"), command
    assert cli.ok("items", "list", "--json").stdout == "[]\n"
    assert [c["id"] for c in json.loads(cli.ok("case", "list", "--json").stdout)] == [CASE]


def test_plaintext_written_by_the_attacker_is_refused(tmp_path: Path,
                                                      database: str | None) -> None:
    cli, (a, _b) = _two_items(tmp_path, database)
    # Even with the marker row gone, as if the vault had never been converted.
    _sql(cli, database, f"UPDATE items SET location = 'Fictional planted place' "
                        f"WHERE id = '{a}'", "DELETE FROM sealed_metadata")
    _refused(cli, f"items {a}", "location", "items", "list", "--json")
    _refused(cli, f"items {a}", "location", "items", "list", "--jsonl")
    _sql(cli, database, f"UPDATE items SET original_name = 'planted.jpg' WHERE id = '{a}'")
    _refused(cli, f"items {a}", "original_name", "items", "list")


def test_listing_an_empty_vault_does_not_open_the_key_store(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    cli = Cli(tmp_path / "v")
    cli.init()
    monkeypatch.delenv("EVAULT_PASSPHRASE")
    assert cli.ok("items", "list").stdout == "id  case  name  size  sha256  labels  ingested_at\n"
    assert cli.ok("case", "list").exit_code == 0
    assert not (tmp_path / "v" / "keys.enc").exists()


# ----------------------------------------------------------------------------- old vaults


def _old_vaults(tmp: Path) -> tuple[Cli, Cli, dict[str, object]]:
    for name in ("office", "icc"):
        shutil.copytree(OLD / name, tmp / name)
    expected = json.loads((OLD / "expected.json").read_text())
    return Cli(tmp / "office"), Cli(tmp / "icc"), expected


def _listings(office: Cli, icc: Cli, expected: dict[str, object]) -> dict[str, str]:
    outputs = expected["outputs"]
    assert isinstance(outputs, dict)
    got = {}
    for key in outputs:
        where, *args = key.split()
        cli = office if where == "office" else icc
        if args[-1] == "ITEM0":
            args[-1] = json.loads(outputs[f"{where} items list --json"])[0]["id"]
        got[key] = cli.ok(*args).stdout
    return got


def _plaintext_left(cli: Cli, expected: dict[str, object]) -> list[str]:
    secrets = expected["secrets"]
    assert isinstance(secrets, list)
    return _found(b"".join(p.read_bytes() for p in sorted(cli.vault.glob("vault.db*"))),
                  secrets)


def test_an_old_vault_is_converted_once_and_lists_as_before(tmp_path: Path) -> None:
    office, icc, expected = _old_vaults(tmp_path)
    assert _plaintext_left(office, expected) != []
    refused = office("items", "list")
    assert (refused.exit_code, refused.stderr) == (1, (
        f"evault: vault database is at revision 0004, this evault needs {SCHEMA_HEAD}: "
        "run `evault db upgrade`\n"))
    for cli in (office, icc):
        cli.ok("db", "upgrade")
    first = office.ok("case", "list")
    assert first.stderr == (
        "evault: sealed 13 metadata values of this vault under its metadata key "
        "(first use after upgrade)\n")
    assert icc.ok("items", "list").stderr == (
        "evault: sealed 8 metadata values of this vault under its metadata key "
        "(first use after upgrade)\n")
    assert _listings(office, icc, expected) == expected["outputs"]
    assert _plaintext_left(office, expected) == []
    assert _plaintext_left(icc, expected) == []
    assert office.ok("case", "list").stderr == ""
    for cli in (office, icc):
        assert cli.ok("custody", "verify").exit_code == 0


@pytest.mark.parametrize("step", ["metadata.converted", "metadata.committed"])
def test_a_conversion_killed_midway_is_finished_by_the_next_command(tmp_path: Path,
                                                                   step: str) -> None:
    office, icc, expected = _old_vaults(tmp_path)
    office.ok("db", "upgrade")
    crash("items", "list", vault=office.vault, step=step)
    if step == "metadata.converted":
        assert _plaintext_left(office, expected) != []  # rolled back: still wholly old
    again = office("items", "list")  # in-process: only the killed command needs a process
    assert again.exit_code == 0, again.stderr
    assert again.stdout == expected["outputs"]["office items list"]  # type: ignore[index]
    assert again.stderr == ("" if step == "metadata.committed" else (
        "evault: sealed 13 metadata values of this vault under its metadata key "
        "(first use after upgrade)\n"))
    icc.ok("db", "upgrade")
    assert _listings(office, icc, expected) == expected["outputs"]
    assert _plaintext_left(office, expected) == []


@pytest.mark.postgres
def test_an_old_vault_on_postgresql_is_converted(tmp_path: Path, pg_url: str) -> None:
    """The old office vault's rows, as evault 0004 wrote them, moved to PostgreSQL at 0004."""
    from vault.store import db
    from vault.store.models import Base

    office, icc, expected = _old_vaults(tmp_path)
    target = db.make_engine(pg_url)
    db.upgrade(target, "0004")
    source = db.make_engine(f"sqlite:///{office.vault / 'vault.db'}")
    # The tables of 0004 (later revisions add tables, 0005 and on) and their columns (later
    # revisions add columns too, 0008 and on), read before the copy's transaction.
    inspector = sa.inspect(source)
    columns = {name: {c["name"] for c in inspector.get_columns(name)}
               for name in inspector.get_table_names()}
    with source.connect() as src, target.begin() as dst:
        dst.exec_driver_sql("DELETE FROM custody_head")  # the migrations' empty head
        for table in Base.metadata.sorted_tables:
            if table.name not in columns:
                continue
            old = sa.Table(table.name, sa.MetaData(),
                           *[sa.Column(c.name, c.type, primary_key=c.primary_key)
                             for c in table.c if c.name in columns[table.name]])
            rows = [dict(r._mapping) for r in src.execute(sa.select(old))]
            if rows:
                dst.execute(old.insert(), rows)
    source.dispose()
    target.dispose()
    (office.vault / "vault.db").unlink()
    config = office.vault / "config.toml"
    config.write_text(config.read_text().replace(
        "\nkey_storage", f"\ndatabase = {json.dumps(pg_url)}\nkey_storage", 1))
    office.ok("db", "upgrade")
    icc.ok("db", "upgrade")
    assert _listings(office, icc, expected) == expected["outputs"]
    assert _found(_dump(office, pg_url), expected["secrets"]) == []  # type: ignore[arg-type]
    assert office.ok("custody", "verify").exit_code == 0


def test_the_old_vault_fixture_still_holds_plaintext() -> None:
    """The fixture is what older evault left: its metadata in clear, at schema 0004."""
    with sqlite3.connect(OLD / "office" / "vault.db") as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0004",)]
        titles = conn.execute("SELECT title FROM items WHERE title IS NOT NULL").fetchall()
    assert titles == [("Tumbledown witness",)]


def test_case_titles_over_500_characters_are_refused(tmp_path: Path) -> None:
    """PostgreSQL's column enforced 500 before it was sealed; now both databases do."""
    cli = Cli(tmp_path / "v")
    cli.init()
    cli.ok("identity", "create", "registry-office")
    result = cli("case", "create", CASE, "--title", "t" * 501)
    assert (result.exit_code, result.stderr) == (2, (
        f"evault: case {CASE}: --title has 501 characters, more than the 500 that fit in "
        "cases; shorten it\n"))
    cli.ok("case", "create", CASE, "--title", "t" * 500)


def test_the_metadata_key_lives_in_the_key_store(tmp_path: Path) -> None:
    """``meta:<vault id>``: format version 1, state sealed (1), then the 256-bit key."""
    from vault.keystore import FileKeyStore
    from vault.store.vaultdir import load_config

    cli, _ids = _two_items(tmp_path, None)
    vault_id = load_config(cli.vault).vault_id
    entry = FileKeyStore(cli.vault, None, "test").get(f"meta:{vault_id}")
    assert (len(entry), entry[:2]) == (34, b"\x01\x01")
    assert entry[2:] not in (cli.vault / "vault.db").read_bytes()
