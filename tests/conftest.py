"""Shared fixtures: stock tools, vector folders, throwaway vaults."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from ci_gate import pytest_runtest_makereport  # noqa: F401  (the CI gate: EVAULT_CI=1)

# The S3 modules' `server` (a SeaweedFS per module) and `aws_env` fixtures; a module with a
# `server` of its own (the SFTP tests') keeps its own.
pytest_plugins = ["s3_fixtures"]

TESTS = Path(__file__).resolve().parent
VECTORS = TESTS / "vectors"
# scripts/local_tsa.py, the real RFC 3161 TSA the tests and the demo run, imports as local_tsa.
sys.path.insert(0, str(TESTS.parent / "scripts"))


def require_tool(name: str) -> str:
    """Path of a stock tool; skip with a visible reason (a failure under the CI gate:
    ``.ci/run`` installs every tool, so a missing one there is a broken set-up)."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"stock tool {name!r} is not installed (.ci/run installs it)")
    return path


def json_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a parsed JSON value (keys and indexes), the root ``()`` first: where
    the mutation strategies of the fuzz tests change, remove or add a value."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += json_paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += json_paths(v, (*prefix, i))
    return out


# ----------------------------------------------------------------------------- vaults and CLI

import secrets  # noqa: E402
from collections.abc import Callable, Hashable, Iterator, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from click.testing import CliRunner, Result  # noqa: E402

PG_ENV = "EVAULT_TEST_PG_URL"
TEST_PASSPHRASE = "fictional test passphrase"


def isolate(env: pytest.MonkeyPatch, home: Path) -> None:
    """Its own EVAULT_HOME, the passphrase key file, no real keyring: for every test, and
    for module-scoped fixtures (which run before a test's own isolation)."""
    env.setenv("EVAULT_HOME", str(home))
    env.setenv("EVAULT_KEY_STORAGE", "file")
    env.setenv("EVAULT_PASSPHRASE", TEST_PASSPHRASE)
    env.delenv("EVAULT_PASSPHRASE_FILE", raising=False)
    env.delenv("EVAULT_DEBUG", raising=False)
    # In-process only: new key files get the lowest scrypt cost the reader accepts, so that
    # hundreds of throwaway vaults stay fast. Subprocesses and users keep the default.
    env.setattr("vault.crypto.secretbox.DEFAULT_WORK_FACTOR", 10)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test: its own EVAULT_HOME, the passphrase key file, no real keyring."""
    isolate(monkeypatch, tmp_path / "default-home")


def pg_base_url() -> str:
    """The PostgreSQL URL for tests; skip with a reason when unset (a failure under the CI
    gate)."""
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(
            f"PostgreSQL tests need {PG_ENV}, e.g. postgresql+psycopg://postgres@127.0.0.1/test"
        )
    return url


def schema_url(base: str, schema: str) -> str:
    """The URL of ``schema`` in the test database at ``base``, for every session evault opens
    with it: the schema's tables on the search path (it comes last in the URL), and commits
    that return without waiting for their WAL to reach the disk (``synchronous_commit=off``,
    about 1 to 15 ms less per commit on this machine). A commit is visible to every other
    session as soon as it returns, as before; only a crash of the server itself could lose
    the last ones, and no test stops the server."""
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csynchronous_commit%3Doff%20-csearch_path%3D{schema}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema for one test, dropped afterwards."""
    schema = _pg_create_schema()
    try:
        yield _pg_url_of(schema)
    finally:
        _pg_drop_schema(schema)


#: The two database backends, for ``parametrize`` and fixture ``params``: every PostgreSQL
#: instance carries the ``postgres`` marker, so ``-m postgres`` and ``-m 'not postgres'``
#: select exactly the PostgreSQL tests (tests/test_test_suite.py checks it).
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


#: For a test of the ``cli`` (or ``database``) fixture whose subject no database can change:
#: what the arguments, paths or files alone decide, refused before anything is written
#: (a path named twice, a tampered card), or what is read from a file. It runs on SQLite
#: only: its PostgreSQL instance proved the same again (about 0.5 s more each).
SQLITE_ONLY = pytest.mark.parametrize("database", ["sqlite"], indirect=True)


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest) -> str | None:
    """Run the test on SQLite (None: the default vault.db) and on PostgreSQL."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("pg_url"))


@dataclass
class Cli:
    """Runs ``evault`` in-process against one vault directory."""

    vault: Path

    def __call__(self, *args: str, input: str | None = None, vault: bool = True) -> Result:
        from vault.cli import cli

        argv = list(args)
        if vault:
            argv = [*argv, "--vault", str(self.vault)]
        return CliRunner().invoke(cli, argv, input=input, catch_exceptions=False)

    def ok(self, *args: str, input: str | None = None) -> Result:
        """Run and require exit 0, showing stderr when it fails."""
        result = self(*args, input=input)
        assert result.exit_code == 0, f"exit {result.exit_code}: {result.stderr}"
        return result

    def init(self, database: str | None = None) -> Cli:
        """A new vault here, as ``evault init [--db DATABASE]`` makes it, for tests whose
        subject is something else. It copies a vault that ``init`` made once per test
        process and gives the copy a vault id of its own: ``init`` writes nothing else that
        differs between two new vaults (config.toml with a random ``vault_id`` and the
        database URL, an empty ``blobs``, and the database migrated to head with the same
        fixed rows), and running the migrations was the largest part of most tests' set-up.
        On PostgreSQL (a ``pg_url`` schema) the copy of the database is the template
        schema's ``pg_dump``, run in the test's schema; without pg_dump, or for another URL,
        it runs ``init``. tests/test_vault_init.py and the crash tests run ``init`` itself."""
        schema = re.search(r"search_path%3D(evt_[0-9a-f]{12})$", database or "")
        if database is None:
            _copy_new_vault(self.vault, None)
        elif schema is None or shutil.which("pg_dump") is None:
            self.ok("init", "--db", database)
        else:
            _copy_new_vault(self.vault, (database, schema[1]))
        return self


#: The test process's new vaults as `evault init` made them, by backend, once made: the
#: folder, and on PostgreSQL its schema's name and pg_dump (SQL that recreates it).
_NEW_VAULTS: dict[str, tuple[Path, str, str]] = {}


def _new_vault(backend: str) -> tuple[Path, str, str]:
    import atexit
    import tempfile

    if backend in _NEW_VAULTS:
        return _NEW_VAULTS[backend]
    folder = tempfile.mkdtemp(prefix="evault-new-vault-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    made = Path(folder) / "vault"
    schema = dump = ""
    with pytest.MonkeyPatch.context() as env:
        isolate(env, made.parent / "no-default-vault")
        if backend == "sqlite":
            Cli(made).ok("init")
        else:
            schema = _pg_create_schema()
            try:
                Cli(made).ok("init", "--db", _pg_url_of(schema))
                dump = _pg_dump(schema)
            finally:
                _pg_drop_schema(schema)
    _NEW_VAULTS[backend] = (made, schema, dump)
    return _NEW_VAULTS[backend]


def _pg_url_of(schema: str) -> str:
    """The URL of ``schema`` in the test database, as :func:`pg_url` gives it."""
    return schema_url(pg_base_url(), schema)


def _pg_dsn() -> str:
    """The test database's URL for psycopg and pg_dump (no SQLAlchemy driver name)."""
    import sqlalchemy as sa

    dsn = sa.engine.make_url(pg_base_url()).set(drivername="postgresql")
    return str(dsn.render_as_string(hide_password=False))


def _pg_connect() -> Any:
    """A psycopg connection to the test database, its commits as :func:`schema_url`'s."""
    import psycopg

    return psycopg.connect(_pg_dsn(), options="-c synchronous_commit=off")


def _pg_create_schema() -> str:
    """A new schema named as :func:`pg_url` names one (so :meth:`Cli.init` copies into it)."""
    schema = "evt_" + secrets.token_hex(6)
    with _pg_connect() as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    return schema


def _pg_drop_schema(schema: str) -> None:
    with _pg_connect() as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE".encode())


def _pg_dump(schema: str) -> str:
    """SQL that recreates ``schema``'s tables and rows in an existing empty schema."""
    import subprocess

    dump = subprocess.run(
        ["pg_dump", "--schema", schema, "--inserts", "--no-owner", "--no-privileges",
         "--dbname", _pg_dsn()],
        check=True, capture_output=True, text=True).stdout
    # Without psql's own commands (\restrict), nor the CREATE SCHEMA pg_url did.
    return "\n".join(line for line in dump.splitlines()
                     if not line.startswith("\\") and line != f"CREATE SCHEMA {schema};")


def _pg_load(dump: str, schema: str, into: str) -> None:
    """Run ``dump`` (of ``schema``) in the empty schema ``into``."""
    assert schema in dump, dump
    with _pg_connect() as conn:
        # No parameters: many statements in one, committed at once on leaving.
        conn.execute(dump.replace(schema, into).encode())


def _copy_new_vault(target: Path, postgres: tuple[str, str] | None) -> None:
    """``init`` at ``target``: on SQLite, or on PostgreSQL as (URL, its empty schema)."""
    import uuid

    made, schema, dump = _new_vault("sqlite" if postgres is None else "postgres")
    if target.exists() and not any(target.iterdir()):
        target.rmdir()  # as init, which may be given an empty folder made beforehand
    shutil.copytree(made, target, symlinks=True)
    config = target / "config.toml"
    text, count = re.subn(r'(?m)^vault_id = "[0-9a-f]{32}"$',
                          f'vault_id = "{uuid.uuid4().hex}"', config.read_text())
    assert count == 1, text
    if postgres is not None:
        url, into = postgres
        assert schema in text and schema in dump, (text, dump)
        text = text.replace(schema, into)
        assert f"database = {json.dumps(url)}" in text.splitlines(), text
        _pg_load(dump, schema, into)
    config.write_text(text)


@dataclass
class _World:
    folder: Path
    schemas: list[str | None]  # the template's PostgreSQL schema in each slot, or None
    dumps: list[str]
    value: Any


#: The worlds :func:`reuse_world` built in this test process, by key and backends.
_WORLDS: dict[tuple[Hashable, tuple[bool, ...]], _World] = {}


def reuse_world(key: Hashable, target: Path, databases: Sequence[str | None],
                build: Callable[[Path, list[str | None]], Any]) -> Any:
    """A world of vaults at ``target`` as ``build(target, databases)`` would make it, for a
    helper that tests call with their own ``tmp_path`` and databases (None: SQLite; a
    ``pg_url``: a fresh PostgreSQL schema, one per slot). The test process runs ``build``
    once for each ``key`` and pattern of backends, in a folder and schemas of its own, then
    copies the result into each test's ``target``: the folder's entries, and each schema as
    its ``pg_dump`` loaded into the test's schema, whose URL the copied ``config.toml``
    files then name. The vaults keep the template's ``vault_id`` (as :func:`copy_template`
    does). Returns what ``build`` returned, which must name no path (the template's are
    not the test's). ``build`` runs isolated as a test does, with no default vault."""
    import atexit
    import tempfile

    kinds = tuple(db is not None for db in databases)
    world = _WORLDS.get((key, kinds))
    if world is None:
        folder = Path(tempfile.mkdtemp(prefix="evault-world-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        made = folder / "world"
        made.mkdir()
        schemas: list[str | None] = [_pg_create_schema() if pg else None for pg in kinds]
        try:
            with pytest.MonkeyPatch.context() as env:
                isolate(env, folder / "no-default-vault")
                value = build(made, [None if s is None else _pg_url_of(s) for s in schemas])
            dumps = [_pg_dump(s) if s else "" for s in schemas]
        finally:
            for s in schemas:
                if s is not None:
                    _pg_drop_schema(s)
        world = _WORLDS[(key, kinds)] = _World(made, schemas, dumps, value)
    targets: list[tuple[str, str, str]] = []  # (template schema, test schema, test URL)
    for schema, dump, url in zip(world.schemas, world.dumps, databases, strict=True):
        if schema is not None:
            assert url is not None
            into = re.search(r"search_path%3D(\w+)$", url)
            assert into is not None, url
            _pg_load(dump, schema, into[1])
            targets.append((schema, into[1], url))
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(world.folder, target, symlinks=True, dirs_exist_ok=True)
    for config in target.rglob("config.toml") if targets else ():
        text = config.read_text()
        for schema, into, url in targets:
            if schema in text:
                text = text.replace(schema, into)
                assert f"database = {json.dumps(url)}" in text.splitlines(), text
        config.write_text(text)
    return world.value


def build_template(tmp_path_factory: pytest.TempPathFactory, name: str,
                   build: Callable[[Path], object]) -> Path:
    """A folder made once by ``build(folder)`` (vaults, cards, files), for a module-scoped
    fixture whose tests each get a copy of it (:func:`copy_template`): the set-up runs once
    per module and test process instead of once per test. ``build`` runs isolated as a test
    does, with no default vault."""
    folder = tmp_path_factory.mktemp(name)
    with pytest.MonkeyPatch.context() as env:
        isolate(env, folder.parent / f"{folder.name}-no-default-vault")
        build(folder)
    return folder


def copy_template(template: Path, target: Path) -> None:
    """Copy every entry of ``template`` into ``target`` (a test's own ``tmp_path``), so that
    the test changes its copy as it likes. Only for SQLite vaults: a PostgreSQL vault's
    database is not in its folder."""
    for entry in template.iterdir():
        if entry.is_dir():
            shutil.copytree(entry, target / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, target / entry.name)


@pytest.fixture
def cli(tmp_path: Path, database: str | None) -> Cli:
    """A new, initialised vault on each database backend."""
    return Cli(tmp_path / "vault").init(database)


@pytest.fixture
def sqlite_cli(tmp_path: Path) -> Cli:
    """A new, initialised SQLite vault, for tests that are about something else."""
    return Cli(tmp_path / "vault").init()
