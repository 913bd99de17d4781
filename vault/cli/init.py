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
@click.option(
    "--blobs", "blobs", metavar="s3://BUCKET/PREFIX",
    help="Keep blobs in this S3 bucket (AWS S3, MinIO, Ceph, SeaweedFS) instead of the "
    "vault's blobs/ folder; endpoint, region and credentials come from the AWS environment "
    "(AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, ...), never from config.toml.",
)
@click.option(
    "--object-lock", "lock_mode", type=click.Choice(["governance", "compliance"]),
    help="Give every new blob S3 Object Lock retention in this mode (the bucket must have "
    "Object Lock enabled); needs --retain-days.",
)
@click.option(
    "--retain-days", type=click.IntRange(1, 36_500), metavar="DAYS",
    help="How long each blob's Object Lock retention lasts after it is written.",
)
@json_option
def init(vault_dir: Path | None, database: str | None, blobs: str | None,
         lock_mode: str | None, retain_days: int | None, as_json: bool) -> None:
    """\b
    Examples:
      evault init --vault ./office-vault
      evault init --vault ./team-vault --db postgresql+psycopg://evault@db.example/evault
      evault init --vault ./team-vault --db postgresql+psycopg://evault@db.example/evault \\
          --blobs s3://evidence/office-a --object-lock compliance --retain-days 3650
    """
    from vault.service.vaults import init_vault, object_lock

    lock = object_lock(lock_mode, retain_days)
    result = init_vault(vault_dir, database=database, blobs=blobs, object_lock=lock)
    data = {
        "vault": str(result.root),
        "created": result.created,
        "database": result.database,
        "revision": result.revision,
        "blobs": result.blobs or "blobs/",
        **({"object_lock": result.object_lock.text} if result.object_lock else {}),
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
