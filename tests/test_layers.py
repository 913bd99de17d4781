"""The import layers hold: the contract in pyproject.toml, as `make lint` checks it.

`make lint` runs `lint-imports`; this runs the same check in the suite, so a run of pytest
alone catches a service that imports presentation, or a store that imports a service.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent


def test_each_module_imports_only_the_layers_below_its_own() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    # --no-cache: two pytest workers must not write one cache directory at once.
    result = subprocess.run([str(lint_imports), "--no-cache", "--no-logo"], cwd=CHECKOUT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 broken" in result.stdout
