"""``python -m vault`` runs the CLI."""

from vault.cli import main

main()
