"""The ``evault`` command line: parse, call one service function, render.

    $ evault init --vault ./office-vault
    $ evault --vault ./office-vault identity create registry-office

This is the only module that prints, prompts or exits. Data goes to stdout, messages to
stderr prefixed ``evault:``. Exit codes: 0 ok, 1 error, 2 usage, 3 verification failed.
Heavy modules (SQLAlchemy, alembic, keyring, cryptography) are imported inside the commands,
so ``evault --help`` and ``evault --version`` start fast.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from vault import __version__
from vault.errors import VaultError

if TYPE_CHECKING:
    from vault.service.vaults import Vault

F = TypeVar("F", bound=Callable[..., Any])


class VaultGroup(click.Group):
    """Maps every expected error to one line on stderr and its exit code, in one place."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VaultError as e:
            if _debug(ctx):
                traceback.print_exc()
            click.echo(f"evault: {e}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("evault: interrupted; nothing half-written was kept", err=True)
            ctx.exit(130)
        except OSError as e:
            if _debug(ctx):
                traceback.print_exc()
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"evault: {where}{e.strerror or e}", err=True)
            ctx.exit(1)


def _debug(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(root.params.get("debug")) or os.environ.get("EVAULT_DEBUG") == "1"


def _prompt(creating: bool) -> str:
    return str(
        click.prompt(
            "Passphrase for the vault's key file"
            if not creating
            else "New passphrase for the key file",
            hide_input=True,
            confirmation_prompt=creating,
            err=True,
        )
    )


def vault_option(f: F) -> F:
    """``--vault DIR`` on every command (default: EVAULT_HOME or the user data directory)."""
    return click.option(
        "--vault",
        "vault_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Vault directory (default: $EVAULT_HOME or the user data directory).",
    )(f)


def json_option(f: F) -> F:
    """``--json`` for commands that output one object."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)


def list_output_options(f: F) -> F:
    """``--json``, ``--jsonl`` and ``--csv`` for commands that output rows."""
    f = click.option("--csv", "fmt", flag_value="csv", help="Print CSV with a header row.")(f)
    f = click.option("--jsonl", "fmt", flag_value="jsonl", help="Print one JSON object a line.")(f)
    f = click.option("--json", "fmt", flag_value="json", help="Print a JSON array.")(f)
    return f


def open_vault(vault_dir: Path | None) -> Vault:
    """Open the vault for a command; a passphrase prompt only when stdin is a terminal."""
    from vault.service.vaults import open_vault as _open

    return _open(vault_dir, prompt=_prompt if sys.stdin.isatty() else None)


def with_vault(f: Callable[..., Any]) -> Callable[..., Any]:
    """Open the vault named by ``--vault`` and pass it as ``vault``; close it afterwards."""

    @functools.wraps(f)
    def wrapper(*args: Any, vault_dir: Path | None, **kwargs: Any) -> Any:
        v = open_vault(vault_dir)
        try:
            return f(*args, vault=v, **kwargs)
        finally:
            v.close()

    return vault_option(wrapper)


def say(message: str) -> None:
    """A message for people, on stderr."""
    click.echo(f"evault: {message}", err=True)


def emit_record(data: dict[str, Any], as_json: bool, skip: Sequence[str] = ()) -> None:
    """One object to stdout, as JSON or ``key: value`` lines."""
    from vault.render import render_record, to_json

    click.echo(to_json(data) if as_json else render_record(data, skip), nl=False)


def emit_rows(rows: Sequence[dict[str, Any]], fmt: str | None, columns: Sequence[str]) -> None:
    """Rows to stdout in the chosen shape (table by default)."""
    from vault.render import render_table, to_csv, to_json, to_jsonl

    if fmt == "json":
        click.echo(to_json(list(rows)), nl=False)
    elif fmt == "jsonl":
        click.echo(to_jsonl(rows), nl=False)
    elif fmt == "csv":
        click.echo(to_csv(rows, columns), nl=False)
    else:
        click.echo(render_table(rows, columns), nl=False)


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=VaultGroup, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="evault", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
def cli(debug: bool) -> None:
    """Evidence Vault: keep evidence under a verifiable chain of custody and share it
    confidentially with the bodies that investigate and prosecute.

    \b
    Examples:
      evault init --vault ./office-vault
      evault identity create registry-office --org "Fictional Ministry of Justice"
      evault body add ICC-OTP --name "International Criminal Court, Office of the Prosecutor"
      evault body key add ICC-OTP --card icc-officer.card.json --fingerprint SHA256:...

    Exit codes: 0 ok, 1 error, 2 usage, 3 verification failed.
    """


# ----------------------------------------------------------------------------- vault


@cli.command()
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
    """Create a vault, or upgrade an existing one (idempotent).

    \b
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


@cli.group()
def db() -> None:
    """Database schema of an existing vault.

    \b
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


@cli.command()
@vault_option
@json_option
def doctor(vault_dir: Path | None, as_json: bool) -> None:
    """Check the vault: configuration, database, key store.

    \b
    Example:
      evault doctor
    """
    from vault.service.doctor import diagnose

    report = diagnose(vault_dir)
    emit_record(report, as_json)


# ----------------------------------------------------------------------------- identities


@cli.group()
def identity() -> None:
    """Identities of this vault: signing and decryption keys of a person or office.

    \b
    Examples:
      evault identity create registry-office --org "Fictional Ministry of Justice"
      evault identity list
      evault identity export registry-office -o registry-office.card.json
    """


IDENTITY_COLUMNS = (
    "name",
    "org",
    "default",
    "status",
    "fingerprint",
    "age_recipient",
    "created_at",
)


@identity.command("create")
@click.argument("name")
@click.option("--org", help="Organisation the identity belongs to.")
@click.option("--email", help="Contact address printed on the card.")
@json_option
@with_vault
def identity_create(
    vault: Vault, name: str, org: str | None, email: str | None, as_json: bool
) -> None:
    """Create an identity: an Ed25519 signing key and an age decryption key.

    The private halves go to the key store; the first identity is the vault's default.

    \b
    Example:
      evault identity create registry-office --org "Fictional Ministry of Justice"
    """
    from vault.service.identities import create_identity

    data = create_identity(vault, name, org=org, email=email)
    emit_record(data, as_json, skip=("keys",))
    if not as_json:
        say(f"created identity {name} in the {vault.keystore.kind} key store")


@identity.command("list")
@list_output_options
@with_vault
def identity_list(vault: Vault, fmt: str | None) -> None:
    """List the identities.

    \b
    Example:
      evault identity list --json
    """
    from vault.service.identities import list_identities

    emit_rows(list_identities(vault), fmt, IDENTITY_COLUMNS)


@identity.command("show")
@click.argument("name", required=False)
@json_option
@with_vault
def identity_show(vault: Vault, name: str | None, as_json: bool) -> None:
    """Show one identity (the default one without NAME), with all its keys.

    \b
    Example:
      evault identity show registry-office
    """
    from vault.service.identities import show_identity

    emit_record(show_identity(vault, name), as_json)


@identity.command("export")
@click.argument("name", required=False)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the card to this file (default: stdout).",
)
@with_vault
def identity_export(vault: Vault, name: str | None, output: Path | None) -> None:
    """Export the public contact card of an identity (self-signed JSON).

    Hand the card to the other side and tell them its fingerprint by another channel.

    \b
    Example:
      evault identity export registry-office -o registry-office.card.json
    """
    from vault.service.identities import export_card

    card = export_card(vault, name)
    if output is None:
        click.echo(card, nl=False)
        return
    from vault.store.blobs import atomic_writer

    if output.exists():
        raise click.UsageError(f"{output} exists; choose another file")
    with atomic_writer(output, mode=0o644, overwrite=False) as handle:
        handle.write(card.encode("utf-8"))
    say(f"wrote contact card to {output}")


@identity.command("rotate")
@click.argument("name", required=False)
@json_option
@with_vault
def identity_rotate(vault: Vault, name: str | None, as_json: bool) -> None:
    """Make new keys for an identity; old keys stay for verifying and decrypting the past.

    \b
    Example:
      evault identity rotate registry-office
    """
    from vault.service.identities import rotate_identity

    data = rotate_identity(vault, name)
    emit_record(data, as_json, skip=("keys",))
    if not as_json:
        say(f"rotated identity {data['name']}: new key {data['fingerprint']}")


@identity.command("revoke")
@click.argument("name")
@json_option
@with_vault
def identity_revoke(vault: Vault, name: str, as_json: bool) -> None:
    """Revoke an identity: no new use; what it signed before still verifies.

    \b
    Example:
      evault identity revoke former-officer
    """
    from vault.service.identities import revoke_identity

    data = revoke_identity(vault, name)
    emit_record(data, as_json, skip=("keys",))
    if not as_json:
        say(f"revoked identity {name}")


# ----------------------------------------------------------------------------- bodies

BODY_COLUMNS = ("id", "name", "active_keys", "created_at")


@cli.group()
def body() -> None:
    """Recipient bodies (e.g. ICC-OTP) and the keys of their officers.

    \b
    Examples:
      evault body add ICC-OTP --name "International Criminal Court, Office of the Prosecutor"
      evault body key add ICC-OTP --card icc-officer.card.json --fingerprint SHA256:...
      evault body list
    """


@body.command("add")
@click.argument("body_id", metavar="ID")
@click.option("--name", required=True, help="Full name of the body.")
@json_option
@with_vault
def body_add(vault: Vault, body_id: str, name: str, as_json: bool) -> None:
    """Register a recipient body.

    \b
    Example:
      evault body add UA-OPG --name "Office of the Prosecutor General of Ukraine"
    """
    from vault.service.bodies import add_body

    data = add_body(vault, body_id, name=name)
    emit_record(data, as_json, skip=("keys",))


@body.command("list")
@list_output_options
@with_vault
def body_list(vault: Vault, fmt: str | None) -> None:
    """List the bodies and how many active keys each has.

    \b
    Example:
      evault body list --csv
    """
    from vault.service.bodies import list_bodies

    emit_rows(list_bodies(vault), fmt, BODY_COLUMNS)


@body.command("show")
@click.argument("body_id", metavar="ID")
@json_option
@with_vault
def body_show(vault: Vault, body_id: str, as_json: bool) -> None:
    """Show a body with all its keys.

    \b
    Example:
      evault body show ICC-OTP
    """
    from vault.service.bodies import show_body

    emit_record(show_body(vault, body_id), as_json)


@body.group("key")
def body_key() -> None:
    """Keys of a body's officers.

    \b
    Examples:
      evault body key add ICC-OTP --card icc-officer.card.json --fingerprint SHA256:...
      evault body key revoke ICC-OTP SHA256:...
    """


@body_key.command("add")
@click.argument("body_id", metavar="ID")
@click.option(
    "--card",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Contact card exported by the officer's `evault identity export`.",
)
@click.option("--age", "age_recipient", metavar="AGE1...", help="The officer's age recipient.")
@click.option("--ssh", "ssh_key", metavar="KEY", help="The officer's 'ssh-ed25519 AAAA...' key.")
@click.option(
    "--fingerprint",
    "pin",
    metavar="SHA256:...",
    help="Fingerprint confirmed by the officer; a different key is refused.",
)
@json_option
@with_vault
def body_key_add(
    vault: Vault,
    body_id: str,
    card: Path | None,
    age_recipient: str | None,
    ssh_key: str | None,
    pin: str | None,
    as_json: bool,
) -> None:
    """Add an officer's key to a body, from a contact card or from the two public keys.

    \b
    Examples:
      evault body key add ICC-OTP --card icc-officer.card.json --fingerprint SHA256:...
      evault body key add UA-OPG --age age1... --ssh "ssh-ed25519 AAAA... officer"
    """
    from vault.service.bodies import add_body_key

    data = add_body_key(
        vault,
        body_id,
        card=card.read_bytes() if card else None,
        age_recipient=age_recipient,
        ssh_key=ssh_key,
        pin=pin,
    )
    emit_record(data, as_json)
    if not as_json:
        say(f"added key {data['fingerprint']} to body {body_id}")


@body_key.command("revoke")
@click.argument("body_id", metavar="ID")
@click.argument("fingerprint")
@json_option
@with_vault
def body_key_revoke(vault: Vault, body_id: str, fingerprint: str, as_json: bool) -> None:
    """Revoke a key of a body: no new package is encrypted to it.

    \b
    Example:
      evault body key revoke ICC-OTP SHA256:...
    """
    from vault.service.bodies import revoke_body_key

    data = revoke_body_key(vault, body_id, fingerprint)
    emit_record(data, as_json)
    if not as_json:
        say(f"revoked key {fingerprint} of body {body_id}")


def main() -> None:
    """Console entry point."""
    cli(prog_name="evault")
