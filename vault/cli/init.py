"""``evault init`` and ``evault db``: create a vault, and keep its database schema current.

May import: click, :mod:`vault.cli` and :mod:`vault.cli.common`, :mod:`vault.errors`,
:mod:`vault.progress`, :mod:`vault.render`; :mod:`vault.service` only inside the commands
(it loads SQLAlchemy; a command's ``--help`` stays fast).
"""

from __future__ import annotations

from pathlib import Path

import click

from vault.cli import top_command, top_group
from vault.cli.common import (
    emit_record,
    json_option,
    say,
    vault_option,
)


@top_command("init")
@vault_option
@click.option(
    "--db",
    "database",
    metavar="URL",
    help="Database URL (default: SQLite vault.db "
    "inside the vault), e.g. postgresql+psycopg://user@host/dbname",
)
@json_option
def init(vault_dir: Path | None, database: str | None, as_json: bool) -> None:
    """\b
    Examples:
      evault init --vault ./office-vault
      evault init --vault ./team-vault --db postgresql+psycopg://evault@db.example/evault
    """
    from vault.service.vaults import init_vault

    result = init_vault(vault_dir, database=database)
    data = {
        "vault": str(result.root),
        "created": result.created,
        "database": result.database,
        "revision": result.revision,
    }
    emit_record(data, as_json)
    if not as_json:
        say(("created vault at " if result.created else "vault is ready at ") + str(result.root))


@top_group("db")
def db() -> None:
    """\b
    Examples:
      evault db current
      evault db upgrade
    """


@db.command("upgrade")
@vault_option
def db_upgrade(vault_dir: Path | None) -> None:
    """Upgrade the vault's database to this evault's schema.

    \b
    Example:
      evault db upgrade --vault ./office-vault
    """
    from vault.service.vaults import upgrade_vault

    before, after = upgrade_vault(vault_dir)
    if before == after:
        say(f"database is at {after} already")
    else:
        say(f"database upgraded from {before or 'empty'} to {after}")


@db.command("current")
@vault_option
@json_option
def db_current(vault_dir: Path | None, as_json: bool) -> None:
    """Show the database's schema revision and the code's.

    \b
    Example:
      evault db current --json
    """
    from vault.service.vaults import current

    rev, head = current(vault_dir)
    emit_record({"current": rev, "head": head, "up_to_date": rev == head}, as_json)
