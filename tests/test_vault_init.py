"""The vault itself: init, schema revisions, doctor, migrations against models."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import BACKENDS, Cli

from vault.store import db
from vault.store.models import Base


def test_init_creates_the_vault_layout(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "v")
    result = cli.ok("init", "--json")
    data = json.loads(result.stdout)
    assert data["created"] is True
    assert data["vault"] == str(tmp_path / "v")
    assert data["revision"] == db.head_revision()
    assert (tmp_path / "v" / "config.toml").is_file()
    assert (tmp_path / "v" / "blobs").is_dir()
    assert stat.S_IMODE((tmp_path / "v" / "vault.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "v" / "config.toml").stat().st_mode) == 0o600


def test_init_is_idempotent(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "v")
    first = json.loads(cli.ok("init", "--json").stdout)
    config = (tmp_path / "v" / "config.toml").read_text()
    second = cli.ok("init")
    assert "created:  no" in second.stdout
    assert second.stderr == f"evault: vault is ready at {tmp_path / 'v'}\n"
    assert (tmp_path / "v" / "config.toml").read_text() == config
    assert first["revision"] == db.head_revision()


def test_init_refuses_a_non_empty_directory_that_is_not_a_vault(tmp_path: Path) -> None:
    target = tmp_path / "documents"
    target.mkdir()
    (target / "letter.txt").write_text("fictional")
    result = Cli(target)("init")
    assert result.exit_code == 2
    assert result.stderr == (
        f"evault: {target}: directory is not empty and is not a vault; choose an empty or new one\n"
    )
    assert sorted(p.name for p in target.iterdir()) == ["letter.txt"]


def test_init_uses_evault_home_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home-vault"
    monkeypatch.setenv("EVAULT_HOME", str(home))
    result = Cli(home)("init", vault=False)
    assert result.exit_code == 0
    assert (home / "config.toml").is_file()


def test_commands_on_a_missing_vault_say_how_to_create_one(tmp_path: Path) -> None:
    result = Cli(tmp_path / "nowhere")("identity", "list")
    assert result.exit_code == 1
    assert result.stderr == (
        f"evault: no vault at {tmp_path / 'nowhere'}: run `evault init --vault "
        f"{tmp_path / 'nowhere'}` or pass --vault\n"
    )


def test_a_vault_behind_the_code_is_told_to_upgrade(sqlite_cli: Cli) -> None:
    engine = db.make_engine(f"sqlite:///{sqlite_cli.vault / 'vault.db'}")
    db.downgrade(engine, "base")
    engine.dispose()
    result = sqlite_cli("identity", "list")
    assert result.exit_code == 1
    assert result.stderr == "evault: vault database has no schema: run `evault db upgrade`\n"
    current = json.loads(sqlite_cli.ok("db", "current", "--json").stdout)
    assert current == {"current": None, "head": db.head_revision(), "up_to_date": False}
    # Behind the code is no failed verification, but doctor checked nothing past the
    # schema: it names it, and exits 1 (it exited 0, an all-clear for an unchecked vault).
    result = sqlite_cli("doctor", "--json")
    assert (result.exit_code, result.stderr) == (
        1, "evault: doctor stopped before checking the blobs and the records: vault "
           "database has no schema: run `evault db upgrade`\n")
    report = json.loads(result.stdout)
    assert (report["schema"], report["schema_ok"], "schema_changed" in report) == (
        None, False, False)
    upgraded = sqlite_cli.ok("db", "upgrade")
    assert upgraded.stderr == f"evault: database upgraded from empty to {db.head_revision()}\n"
    assert sqlite_cli.ok("identity", "list").stdout.startswith("name")


def test_a_schema_whose_revision_sql_dropped_is_one_line_and_fails_doctor(
        cli: Cli, database: str | None) -> None:
    """``alembic_version`` dropped with SQL: `db upgrade` (and `init`) traced back, migrating
    from nothing onto the tables already there ("table bodies already exists"); the other
    commands said to run `db upgrade`; doctor said ``schema_ok: no`` and exited 0."""
    engine = db.make_engine(database or f"sqlite:///{cli.vault / 'vault.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE alembic_version")
    said = ("vault database: its tables are there but alembic_version records no schema "
            "revision (its tables changed outside evault?); ")
    for args in [("db", "upgrade"), ("init",), ("identity", "list"), ("items", "list")]:
        result = cli(*args)
        assert (result.exit_code, result.stdout, result.stderr) == (
            3, "", f"evault: {said}run `evault doctor`, and restore the database from a "
                   "backup\n"), args
    result = cli("doctor")
    assert (result.exit_code, result.stderr) == (
        3, f"evault: {said}restore the database from a backup\n")
    assert "schema_ok:        no\n" in result.stdout
    report = json.loads(cli("doctor", "--json").stdout)
    assert (report["schema"], report["schema_ok"], report["schema_changed"]) == (
        None, False, f"{said}restore the database from a backup")
    # A revision these migrations do not know (a newer evault's, or SQL's): no traceback.
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO alembic_version (version_num) VALUES ('0099')")
    engine.dispose()
    result = cli("db", "upgrade")
    assert (result.exit_code, result.stderr) == (
        1, f"evault: vault database is at revision 0099, which this evault does not know (its "
           f"newest is {db.SCHEMA_HEAD}): use the evault that upgraded it, or restore the "
           "database from a backup\n")
    # The other commands and doctor said to run `db upgrade`, which refuses it.
    newer = (f"vault database is at revision 0099, newer than this evault's {db.SCHEMA_HEAD}: "
             "use the evault that upgraded it, or restore the database from a backup\n")
    result = cli("identity", "list")
    assert (result.exit_code, result.stderr) == (1, f"evault: {newer}")
    result = cli("doctor")
    assert (result.exit_code, result.stderr) == (
        1, f"evault: doctor stopped before checking the blobs and the records: {newer}")
    # Set back to a revision the migrations know: they ran over the tables there and traced
    # back ("table ... already exists"); `init` called it "cannot connect".
    engine = db.make_engine(database or f"sqlite:///{cli.vault / 'vault.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
    engine.dispose()
    for args in [("db", "upgrade"), ("init",)]:
        result = cli(*args)
        assert result.exit_code == 3, (args, result.stderr)
        assert result.stderr.startswith(
            "evault: vault database: migrating from revision 0001 failed ("), args
        assert result.stderr.endswith(
            "): its tables do not match the revision it records (changed outside evault?); "
            "nothing was changed; restore the database from a backup\n"), args
    assert "already exists" in result.stderr


def test_doctor_stops_with_exit_1_where_config_names_another_blob_store(
        sqlite_cli: Cli) -> None:
    """config.toml naming a bucket the database does not record: doctor printed
    ``blob_store: not checked: ...``, checked nothing more, and exited 0."""
    config = sqlite_cli.vault / "config.toml"
    text = config.read_text()
    assert text.count("\nkey_storage = ") == 1
    config.write_text(text.replace("\nkey_storage = ",
                                   '\nblobs = "s3://fictional-bucket/evidence"\nkey_storage = '))
    result = sqlite_cli("doctor")
    said = (f"{config}: says blobs on s3://fictional-bucket/evidence, but the vault's "
            "database records blobs in each vault folder's blobs/; make config.toml say what "
            "the database does (copy it from a machine of the vault)")
    assert (result.exit_code, result.stderr) == (
        1, f"evault: doctor stopped before checking the blobs and the records: {said}\n")
    assert f"blob_store:       not checked: {said}\n" in result.stdout
    # The records are checked all the same: a setting must not hide a forged row.
    assert "items:            0\n" in result.stdout
    assert "custody_log:      ok\n" in result.stdout


def test_doctor_reports_the_key_store_and_why(sqlite_cli: Cli) -> None:
    report = json.loads(sqlite_cli.ok("doctor", "--json").stdout)
    assert report["key_store"] == "file"
    assert report["key_store_reason"] == "key_storage = file (EVAULT_KEY_STORAGE)"
    assert report["schema_ok"] is True
    assert report["identities"] == 0


def test_sqlite_connection_settings(sqlite_cli: Cli) -> None:
    engine = db.make_engine(f"sqlite:///{sqlite_cli.vault / 'vault.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == db.BUSY_TIMEOUT_MS
    engine.dispose()


def _autogenerate_diff(url: str) -> list[object]:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = db.make_engine(url)
    db.upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    return list(diff)


def test_migrations_and_models_agree_on_sqlite(tmp_path: Path) -> None:
    assert _autogenerate_diff(f"sqlite:///{tmp_path / 'm.db'}") == []


@pytest.mark.postgres
def test_migrations_and_models_agree_on_postgres(pg_url: str) -> None:
    assert _autogenerate_diff(pg_url) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_upgrade_to_head_and_downgrade_to_base(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from sqlalchemy import inspect

    url = (
        f"sqlite:///{tmp_path / 'm.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    engine = db.make_engine(url)
    db.upgrade(engine)
    assert db.current_revision(engine) == db.head_revision()
    with engine.connect() as conn:
        assert set(Base.metadata.tables) <= set(inspect(conn).get_table_names())
    db.downgrade(engine, "base")
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) == {"alembic_version"}
    assert db.current_revision(engine) is None
    engine.dispose()


def test_schema_head_constant_is_the_migrations_head() -> None:
    # Commands check the schema against db.SCHEMA_HEAD without importing Alembic; a new
    # migration must move the constant too.
    assert db.migrations_head() == db.SCHEMA_HEAD


def test_several_recorded_revisions_are_refused(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "v")
    cli.ok("init")
    engine = db.make_engine(f"sqlite:///{tmp_path / 'v' / 'vault.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO alembic_version (version_num) VALUES ('0003')")
    engine.dispose()
    result = cli("items", "list")
    assert result.exit_code == 1
    assert result.stderr == (
        f"evault: vault database records several schema revisions (0003, {db.SCHEMA_HEAD}); "
        "run `evault db upgrade` or restore the database from a backup\n"
    )


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -c CODE ARGS...`` in a fresh interpreter, from the checkout."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env={**os.environ},
        cwd=Path(__file__).resolve().parent.parent,
    )


def _loaded_after(argvs: list[list[str]], names: Sequence[str]) -> list[str]:
    """Which of the modules ``names`` a fresh interpreter holds after running ``evault ARGV``
    for each of ``argvs`` (each must exit 0)."""
    code = (
        "import json, sys\n"
        "from vault.cli import cli\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        cli.main(argv, prog_name='evault')\n"
        "    except SystemExit as e:\n"
        "        assert not e.code, (argv, e.code)\n"
        "print('LOADED', json.dumps([m for m in json.loads(sys.argv[2]) if m in sys.modules]))\n"
    )
    out = _python(code, json.dumps(argvs), json.dumps(list(names)))
    assert out.returncode == 0, out.stderr
    last = out.stdout.splitlines()[-1]
    assert last.startswith("LOADED "), out.stdout + out.stderr
    return list(json.loads(last.removeprefix("LOADED ")))


def test_vault_commands_do_not_import_alembic(tmp_path: Path) -> None:
    # The per-command schema check reads alembic_version itself (start-up time, memory).
    cli = Cli(tmp_path / "v")
    cli.ok("init")
    assert _loaded_after([["items", "list", "--vault", str(tmp_path / "v")]], ["alembic"]) == []


def test_the_items_table_and_csv_import_no_sqlalchemy(tmp_path: Path) -> None:
    # Issue 23: `items list` reads through the database driver (vault.store.dbapi); the ORM
    # alone would cost more than the whole listing of an empty vault may take. --json
    # still goes through the ORM.
    cli = Cli(tmp_path / "v")
    cli.ok("init")
    vault = ["--vault", str(tmp_path / "v")]
    assert _loaded_after([["items", "list", *vault]], ["sqlalchemy", "cryptography"]) == []
    cli.ok("identity", "create", "registry-office")
    (tmp_path / "f.txt").write_text("fictional\n")
    cli.ok("ingest", str(tmp_path / "f.txt"), "--case", "C-1", "--create-case", "--label", "l")
    listings = [["items", "list", *vault], ["items", "list", "--csv", *vault],
                ["items", "list", "--case", "C-1", "--label", "l", *vault]]
    assert _loaded_after(listings, ["sqlalchemy", "alembic"]) == []
    assert _loaded_after([["items", "list", "--json", *vault]], ["sqlalchemy"]) == ["sqlalchemy"]


def test_help_and_version_import_no_heavy_modules() -> None:
    from vault.cli import COMMANDS

    commands = sorted({entry.where.partition(":")[0] for entry in COMMANDS.values()})
    heavy = ["sqlalchemy", "alembic", "keyring", "cryptography", "vault.cli.common",
             "logging", *commands]
    assert _loaded_after([["--help"], ["--version"]], heavy) == []


def test_a_commands_help_imports_no_heavy_modules() -> None:
    # Each command group's module is loaded for its --help; the service layer (SQLAlchemy,
    # cryptography) only when a command runs.
    from vault.cli import COMMANDS

    heavy = ["sqlalchemy", "alembic", "keyring", "cryptography", "vault.service.vaults"]
    assert _loaded_after([[name, "--help"] for name in sorted(COMMANDS)], heavy) == []


def test_entry_point_answers_version_without_the_cli() -> None:
    # The console script answers --version before importing click; its line must stay the
    # one the click command prints (test_version).
    from vault import __version__

    code = (
        "import sys\n"
        "from vault.__main__ import main\n"
        "main()\n"
        "print('CLICK', 'click' in sys.modules)\n"
    )
    out = _python(code, "--version")
    assert (out.returncode, out.stdout, out.stderr) == (
        0,
        f"evault {__version__}\nCLICK False\n",
        "",
    )
    entry = "from vault.__main__ import main; main()"
    other = _python(entry, "--version", "--help")
    assert other.returncode == 0, other.stderr
    assert other.stdout == f"evault {__version__}\n"  # click's own eager --version
    helped = _python(entry, "--help")
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("Usage: evault [OPTIONS] COMMAND [ARGS]...\n")


def test_every_way_in_runs_the_one_main() -> None:
    # The console script, python -m vault and the checkout's cli.py: one path, one main().
    import configparser

    from vault import __version__

    root = Path(__file__).resolve().parent.parent
    setup = configparser.ConfigParser()
    setup.read(root / "setup.cfg")
    scripts = setup["options.entry_points"]["console_scripts"].split()
    assert scripts == ["evault", "=", "vault.__main__:main"]
    assert "from vault.__main__ import main\n" in (root / "cli.py").read_text()
    for argv in ([sys.executable, "-m", "vault"], [sys.executable, str(root / "cli.py")]):
        out = subprocess.run([*argv, "--version"], capture_output=True, text=True, cwd=root)
        assert (out.returncode, out.stdout, out.stderr) == (0, f"evault {__version__}\n", "")


def test_commands_raise_only_vault_errors() -> None:
    # Exit codes are mapped in vault/cli/__init__.py alone: a command raises a
    # vault.errors class (OptionsError for options that do not go together, Reported after
    # printing its findings), never click's usage errors or SystemExit itself.
    root = Path(__file__).resolve().parent.parent / "vault" / "cli"
    for module in sorted(root.glob("*.py")):
        if module.name == "__init__.py":
            continue
        text = module.read_text()
        for banned in ("SystemExit", "sys.exit", "click.UsageError", "click.BadParameter",
                       "ctx.fail", "ctx.exit", "click.ClickException"):
            assert banned not in text, f"{module.name}: {banned}"


def test_version() -> None:
    from vault import __version__

    result = Cli(Path("."))("--version", vault=False)
    assert result.stdout == f"evault {__version__}\n"


def _all_commands() -> list[list[str]]:
    import click

    from vault.cli import cli

    out: list[list[str]] = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        out.append(path)
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)  # the root loads each command's module
                assert sub is not None
                walk(sub, [*path, name])

    walk(cli, [])
    return out


@pytest.mark.parametrize("path", _all_commands(), ids=lambda p: " ".join(p) or "evault")
def test_every_command_has_help_with_an_example(path: list[str]) -> None:
    result = Cli(Path("."))(*path, "--help", vault=False)
    assert result.exit_code == 0
    assert "Example" in result.stdout, f"evault {' '.join(path)} --help has no example"
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    if path:
        assert f"evault {' '.join(path)}" in readme, (
            f"README does not document evault {' '.join(path)}"
        )


def test_the_help_page_lists_the_commands_as_click_would() -> None:
    # evault --help lists the commands from vault.cli.COMMANDS without defining them; the
    # table must say what the commands' own help says, and the page must be click's.
    import click

    from vault.cli import COMMANDS, cli

    root = click.Context(cli)
    loaded = {name: cli.get_command(root, name) for name in COMMANDS}
    real = {
        name: " ".join(((cmd.help if cmd else "") or "").split("\n\n")[0].split())
        for name, cmd in loaded.items()
    }
    assert real == {name: entry.summary for name, entry in COMMANDS.items()}
    for width in (60, 80, 100, 120):
        ctx = click.Context(cli, info_name="evault", terminal_width=width,
                            max_content_width=100)
        ours, clicks = ctx.make_formatter(), ctx.make_formatter()
        cli.format_commands(ctx, ours)
        click.Group.format_commands(cli, ctx, clicks)
        assert ours.getvalue() == clicks.getvalue()
    page = Cli(Path("."))("--help", vault=False).stdout
    listed = page.split("Commands:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in listed] == sorted(COMMANDS)


def test_usage_errors_exit_2(sqlite_cli: Cli) -> None:
    result = sqlite_cli("identity", "create")
    assert result.exit_code == 2
    assert "Missing argument 'NAME'" in result.stderr


@pytest.mark.parametrize(("line", "message"), [
    ('database = ""', "database must be a URL string; remove the line for the vault's own "
     "SQLite database"),
    ("database = 5", "database must be a URL string; remove the line for the vault's own "
     "SQLite database"),
    ('organisation = " "', "organisation must be a name; remove the line if there is none"),
    ("organisation = []", "organisation must be a name; remove the line if there is none"),
])
def test_an_empty_or_wrong_config_value_is_named_not_taken_for_the_default(
        sqlite_cli: Cli, line: str, message: str) -> None:
    config = sqlite_cli.vault / "config.toml"
    lines = config.read_text().split("\n")
    lines.insert(2, line)  # a top-level key, before the first table
    config.write_text("\n".join(lines))
    result = sqlite_cli("items", "list")
    assert (result.exit_code, result.stderr) == (1, f"evault: {config}: {message}\n")


def test_doctor_exits_1_when_the_key_store_cannot_be_opened_to_check(sqlite_cli: Cli) -> None:
    """keys.enc moved away: doctor said ``not checked`` for the key history and the sealed
    values and exited 0, so a sealed value changed with SQL went from exit 3 to exit 0 by a
    move of one file. It now names what it could not check, and exits 1."""
    sqlite_cli.ok("identity", "create", "registry-office")
    evidence = sqlite_cli.vault.parent / "statement.txt"
    evidence.write_text("fictional statement\n")
    sqlite_cli.ok("ingest", str(evidence), "--case", "UA-2026-0042", "--create-case",
                  "--title", "Fictional statement")
    assert sqlite_cli.ok("doctor").stderr == ""
    (sqlite_cli.vault / "keys.enc").rename(sqlite_cli.vault / "keys.enc.away")
    result = sqlite_cli("doctor")
    lines = result.stderr.splitlines()
    assert (result.exit_code, len(lines)) == (1, 2), result.stderr
    assert lines[0].startswith("evault: doctor could not check key_history: ")
    assert lines[1].startswith("evault: doctor could not check sealed_values: ")
    assert "key_history:      not checked: " in result.stdout
