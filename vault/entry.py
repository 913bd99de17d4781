"""The ``evault`` console entry point.

``evault --version`` is answered here, before the command line (click and every command's
definition) is imported: scripts and package managers call it to probe the tool, and it
costs a third of the start-up otherwise. Everything else goes to :func:`vault.cli.main`.
"""

from __future__ import annotations

import sys

from vault import __version__


def main() -> None:
    """Console entry point."""
    if sys.argv[1:] == ["--version"]:
        sys.stdout.write(f"evault {__version__}\n")
        return
    from vault.cli import main as cli_main

    cli_main()
