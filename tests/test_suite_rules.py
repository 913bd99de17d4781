"""Rules of the test suite itself: markers select what they say, the CI gate fails skips."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TESTS

ROOT = TESTS.parent


#: Runs ``pytest --collect-only`` once for each selection given as JSON in argv[1], in one
#: process: the second collection finds the test modules imported by the first, which is
#: most of the time a collection of the suite takes. --assert=plain: no test runs, so their
#: asserts need no rewriting, which was half of that time (where PYTHONDONTWRITEBYTECODE
#: keeps pytest from caching the rewritten modules).
COLLECT_EACH = """
import contextlib, io, json, sys
import pytest

for args in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "--assert=plain",
                            *args])
    print(json.dumps({"code": int(code), "out": out.getvalue()}))
"""


def collected(*selections: list[str]) -> list[list[str]]:
    """The ids ``pytest --collect-only`` selects with each of ``selections`` (its
    arguments), in one subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run(
        [sys.executable, "-c", COLLECT_EACH, json.dumps(selections)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(runs) == len(selections), proc.stdout + proc.stderr
    for run in runs:
        assert run["code"] == 0, run["out"] + proc.stderr
    return [[line for line in run["out"].splitlines() if "::" in line] for run in runs]


def test_the_database_server_marker_selects_exactly_its_tests() -> None:
    """Every PostgreSQL instance of a test carries the ``postgres`` marker (conftest.py
    ``BACKENDS``), and only those: ``-m 'not postgres'`` runs on a machine without one."""
    without, only = collected(["-m", "not postgres"], ["-m", "postgres"])
    assert len(without) > 1000 and len(only) > 100
    assert [t for t in without if "postgres" in t.lower()] == []
    assert [t for t in only if "postgres" not in t.lower()] == []
    assert not set(without) & set(only)


GATED_SUITE = '''
import pytest

def test_passes():
    pass

def test_skips_in_the_test():
    pytest.skip("stock tool 'age' is not installed")

@pytest.fixture
def tool():
    pytest.skip("no root to mount a tmpfs")

def test_skips_in_a_fixture(tool):
    pass

@pytest.mark.skipif(True, reason="not on this platform")
def test_skipif():
    pass

@pytest.mark.xfail(strict=True, reason="a known bug elsewhere")
def test_expected_failure():
    assert False
'''


def run_gated_suite(tmp_path: Path, gate: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_gated.py").write_text(GATED_SUITE)
    env = {k: v for k, v in os.environ.items() if k not in ("EVAULT_CI", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = str(TESTS)
    if gate is not None:
        env["EVAULT_CI"] = gate
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "ci_gate", "-p", "no:cacheprovider", "-q",
         "-rA", "test_gated.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )


def test_the_ci_gate_fails_every_skip_with_its_reason(tmp_path: Path) -> None:
    proc = run_gated_suite(tmp_path, "1")
    assert proc.returncode == 1, proc.stdout
    summary = proc.stdout.strip().splitlines()[-1]
    assert "1 passed" in summary and "1 xfailed" in summary and "skipped" not in summary
    for reason in ("stock tool 'age' is not installed", "no root to mount a tmpfs",
                   "not on this platform"):
        assert f"skipped under EVAULT_CI=1, where nothing may skip: {reason}" in proc.stdout


def test_without_the_gate_skips_stay_skips(tmp_path: Path) -> None:
    for gate in (None, "0", ""):
        proc = run_gated_suite(tmp_path, gate)
        assert proc.returncode == 0, proc.stdout
        assert "1 passed, 3 skipped, 1 xfailed" in proc.stdout


def test_the_allowed_skips_each_give_a_reason() -> None:
    from ci_gate import ALLOWED_SKIPS

    assert all(prefix and why for prefix, why in ALLOWED_SKIPS.items())


def test_an_allowed_skip_passes_the_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    import ci_gate

    monkeypatch.setitem(ci_gate.ALLOWED_SKIPS, "not on this platform", "a reason")
    assert ci_gate.allowed("not on this platform (windows)")
    assert not ci_gate.allowed("stock tool 'age' is not installed")
