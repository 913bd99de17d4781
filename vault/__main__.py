"""The ``evault`` program: the console script, ``python -m vault`` and the checkout's
``cli.py`` all run :func:`main`.

    $ python -m vault --version
    evault 0.1.0

``evault --version`` is answered here, before the command line (click and the root command
of :mod:`vault.cli`) is imported: scripts and package managers call it to probe the tool, and
it costs a third of the start-up otherwise. Everything else goes to :data:`vault.cli.cli`.

May import: :mod:`vault` and, for anything but ``--version``, :mod:`vault.cli`.
"""

from __future__ import annotations

import sys

from vault import __version__


def main() -> None:
    """Run ``evault`` with the process's arguments."""
    if sys.argv[1:] == ["--version"]:
        sys.stdout.write(f"evault {__version__}\n")
        return
    from vault.cli import cli

    cli(prog_name="evault")


if __name__ == "__main__":
    main()
