"""Shared fixtures: stock tools, vector folders, throwaway vaults."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from ci_gate import pytest_runtest_makereport  # noqa: F401  (the CI gate: EVAULT_CI=1)

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
from collections.abc import Iterator  # noqa: E402
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


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema for one test, dropped afterwards."""
    import sqlalchemy as sa

    base = pg_base_url()
    schema = "evt_" + secrets.token_hex(6)
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


#: The two database backends, for ``parametrize`` and fixture ``params``: every PostgreSQL
#: instance carries the ``postgres`` marker, so ``-m postgres`` and ``-m 'not postgres'``
#: select exactly the PostgreSQL tests (tests/test_test_suite.py checks it).
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


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


@pytest.fixture
def cli(tmp_path: Path, database: str | None) -> Cli:
    """A new, initialised vault on each database backend."""
    runner = Cli(tmp_path / "vault")
    args = ["init"] + (["--db", database] if database else [])
    runner.ok(*args)
    return runner


@pytest.fixture
def sqlite_cli(tmp_path: Path) -> Cli:
    """A new, initialised SQLite vault, for tests that are about something else."""
    runner = Cli(tmp_path / "vault")
    runner.ok("init")
    return runner
