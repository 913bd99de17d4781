"""The typed results' one JSON form (vault.service.results): its examples run as written."""

from __future__ import annotations

import doctest

from vault.service import results as results_module


def test_module_examples_run() -> None:
    outcome = doctest.testmod(results_module)
    assert outcome.attempted > 0
    assert outcome.failed == 0
