"""``evault body``: recipient bodies and the keys of their officers.

May import: click, :mod:`vault.cli` and :mod:`vault.cli.common`, :mod:`vault.errors`,
:mod:`vault.progress`, :mod:`vault.render`; :mod:`vault.service` only inside the commands
(it loads SQLAlchemy; a command's ``--help`` stays fast).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from vault.cli import RecordedPath, top_group
from vault.cli.common import (
    as_option,
    emit_record,
    emit_rows,
    json_option,
    list_output_options,
    read_card,
    say,
    with_vault,
)

if TYPE_CHECKING:
    from vault.service.vaults import Vault


BODY_COLUMNS = ("id", "name", "active_keys", "created_at")


@top_group("body")
def body() -> None:
    """\b
    Examples:
      evault body add ICC-OTP --name "International Criminal Court, Office of the Prosecutor"
      evault body key add ICC-OTP --card icc-officer.card.json --fingerprint SHA256:...
      evault body set ICC-OTP --outbox sftp://evidence@drop.icc-cpi.example/in --host-key SHA256:...
      evault body list
    """


@body.command("add")
@click.argument("body_id", metavar="ID")
@click.option("--name", required=True, help="Full name of the body.")
@as_option
@json_option
@with_vault
def body_add(vault: Vault, body_id: str, name: str, as_name: str | None, as_json: bool) -> None:
    """Register a recipient body.

    \b
    Example:
      evault body add UA-OPG --name "Office of the Prosecutor General of Ukraine"
    """
    from vault.service.bodies import add_body

    added = add_body(vault, body_id, name=name, as_name=as_name)
    emit_record(added.to_json(), as_json, skip=("keys",))


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

    emit_rows([b.to_json() for b in list_bodies(vault)], fmt, BODY_COLUMNS)


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

    emit_record(show_body(vault, body_id).to_json(), as_json)


@body.command("set")
@click.argument("body_id", metavar="ID")
@click.option("--outbox", metavar="DIR|sftp://USER@HOST[:PORT]/PATH",
              help="The body's own outbox, used by send, package create --send and export "
                   "when they name none.")
@click.option("--host-key", metavar="SHA256:...",
              help="The SFTP server's host-key fingerprint, confirmed with the body by another "
                   "channel (else ~/.ssh/known_hosts must know the host).")
@click.option("--identity-file", type=RecordedPath(dir_okay=False, path_type=Path),
              help="SSH private key to log in to the drop with (else the keys of ssh-agent).")
@click.option("--clear-outbox", is_flag=True, help="Remove the body's outbox.")
@as_option
@json_option
@with_vault
def body_set(
    vault: Vault,
    body_id: str,
    outbox: str | None,
    host_key: str | None,
    identity_file: Path | None,
    clear_outbox: bool,
    as_name: str | None,
    as_json: bool,
) -> None:
    """Set a body's own outbox: a folder, or its SFTP drop with the server's host key pinned.

    Each change is a signed custody event `body.outbox_set`. Without --outbox, the body's
    outbox is kept and only --host-key or --identity-file change (a new server key that the
    body confirmed). No password is ever taken: log in with ssh-agent or a key file.

    \b
    Examples:
      evault body set ICC-OTP --outbox sftp://evidence@drop.icc-cpi.example/incoming \\
        --host-key SHA256:... --identity-file ~/.ssh/icc_drop
      evault body set UA-OPG --outbox /mnt/transfer/opg
      evault body set ICC-OTP --clear-outbox
    """
    from vault.service.bodies import set_body_outbox

    done = set_body_outbox(vault, body_id, outbox=outbox, host_key=host_key,
                           identity_file=identity_file, clear=clear_outbox, as_name=as_name)
    emit_record(done.to_json(), as_json)
    if not as_json:
        where = done.outbox or "none"
        pin = f", host key {done.host_key}" if done.host_key else ""
        say(f"body {body_id}: outbox {where}{pin}" + ("" if done.changed else " (unchanged)"))


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
@click.option(
    "--age-fingerprint",
    "age_pin",
    metavar="SHA256:...",
    help="Fingerprint of the age key confirmed by the officer (needed with --ssh --fingerprint).",
)
@as_option
@json_option
@with_vault
def body_key_add(
    vault: Vault,
    body_id: str,
    card: Path | None,
    age_recipient: str | None,
    ssh_key: str | None,
    pin: str | None,
    age_pin: str | None,
    as_name: str | None,
    as_json: bool,
) -> None:
    """Add an officer's key to a body, from a contact card or from the two public keys.

    A card is signed by its SSH key, so --fingerprint pins the whole card; the bare --ssh and
    --age keys are pinned only by --fingerprint and --age-fingerprint together (both printed
    by the officer's `evault identity show`). A key added unpinned is logged so, with a warning.

    \b
    Examples:
      evault body key add ICC-OTP --card icc-officer.card.json --fingerprint SHA256:...
      evault body key add UA-OPG --age age1... --ssh "ssh-ed25519 AAAA... officer" \\
        --fingerprint SHA256:... --age-fingerprint SHA256:...
    """
    from vault.service.bodies import add_body_key

    key = add_body_key(
        vault,
        body_id,
        card=read_card(card) if card else None,
        age_recipient=age_recipient,
        ssh_key=ssh_key,
        pin=pin,
        age_pin=age_pin,
        as_name=as_name,
    )
    emit_record(key.to_json(), as_json)
    if not as_json:
        say(f"added key {key.fingerprint} to body {body_id}")
    if pin is None:
        say(f"warning: body {body_id}: key {key.fingerprint} not pinned: confirm it with "
            "the officer by another channel (--fingerprint next time)")


@body_key.command("revoke")
@click.argument("body_id", metavar="ID")
@click.argument("fingerprint")
@as_option
@json_option
@with_vault
def body_key_revoke(
    vault: Vault, body_id: str, fingerprint: str, as_name: str | None, as_json: bool
) -> None:
    """Revoke a key of a body: no new package is encrypted to it.

    \b
    Example:
      evault body key revoke ICC-OTP SHA256:...
    """
    from vault.service.bodies import revoke_body_key

    revoked = revoke_body_key(vault, body_id, fingerprint, as_name=as_name)
    emit_record(revoked.to_json(), as_json)
    if not as_json:
        say(f"revoked key {fingerprint} of body {body_id}")
