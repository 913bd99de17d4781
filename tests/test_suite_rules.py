"""Rules of the test suite itself: markers select what they say, the CI gate fails skips."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import TESTS

ROOT = TESTS.parent


def collected(*args: str) -> list[str]:
    """The ids ``pytest --collect-only`` selects with ``args``, in a subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         *args],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [line for line in proc.stdout.splitlines() if "::" in line]


def test_the_database_server_marker_selects_exactly_its_tests() -> None:
    """Every PostgreSQL instance of a test carries the ``postgres`` marker (conftest.py
    ``BACKENDS``), and only those: ``-m 'not postgres'`` runs on a machine without one."""
    without = collected("-m", "not postgres")
    only = collected("-m", "postgres")
    assert len(without) > 1000 and len(only) > 100
    assert [t for t in without if "postgres" in t.lower()] == []
    assert [t for t in only if "postgres" not in t.lower()] == []
    assert not set(without) & set(only)
