"""The CI gate: with ``EVAULT_CI=1`` (``.ci/run`` sets it) a skipped test fails instead.

A test skips where a machine lacks what it needs (a stock tool, ``EVAULT_TEST_PG_URL``,
root to mount the small file systems of the disk-full tests, a Secret Service). On a
developer's machine that is a visible skip; in CI, which provides all of it, it would be a
green run that did not test, so every skip becomes a failure that keeps its reason. The
only skips let through are listed in :data:`ALLOWED_SKIPS`, each with why it is
legitimate on every machine. Expected failures (``xfail``) are not skips and stay as
they are.

tests/conftest.py imports the hook; tests/test_suite_rules.py runs it on a small suite.
This module imports pytest and nothing of :mod:`vault`.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

GATE = "EVAULT_CI"

#: Skip reasons (a prefix of the message) the gate lets through, each with why it is
#: legitimate even in CI. Empty: on the CI machine (Linux, root, every tool, PostgreSQL,
#: a Secret Service in its own step) nothing in the suite has a reason to skip.
ALLOWED_SKIPS: dict[str, str] = {}


def gate_is_on() -> bool:
    """Whether this run is CI's (``EVAULT_CI=1``)."""
    return os.environ.get(GATE) == "1"


def skip_reason(report: pytest.TestReport) -> str:
    """The message of a skip report (``Skipped: `` taken off)."""
    longrepr: Any = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def allowed(reason: str) -> bool:
    """Whether ``reason`` is one of :data:`ALLOWED_SKIPS`."""
    return any(reason.startswith(prefix) for prefix in ALLOWED_SKIPS)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """Under the gate, turn a skip (of setup or of the test) into a failure with its reason."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail") or not gate_is_on():
        return
    reason = skip_reason(report)
    if allowed(reason):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"skipped under {GATE}=1, where nothing may skip: {reason}\n"
        "(CI provides every tool and service the suite uses; tests/ci_gate.py lists the "
        "skips it allows)"
    )
