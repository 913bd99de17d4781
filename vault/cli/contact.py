"""``evault contact``: known senders from other organisations.

May import: click, :mod:`vault.cli` and :mod:`vault.cli.common`, :mod:`vault.errors`,
:mod:`vault.progress`, :mod:`vault.render`; :mod:`vault.service` only inside the commands
(it loads SQLAlchemy; a command's ``--help`` stays fast).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from vault.cli import top_group
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


@top_group("contact")
def contact() -> None:
    """\b
    Examples:
      evault contact add registry-office.card.json --fingerprint SHA256:...
      evault contact list
      evault contact revoke registry-office
    """


@contact.command("add")
@click.argument("card", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--fingerprint",
    "pin",
    metavar="SHA256:...",
    help="Fingerprint confirmed by the sender; a different key is refused.",
)
@as_option
@json_option
@with_vault
def contact_add(
    vault: Vault, card: Path, pin: str | None, as_name: str | None, as_json: bool
) -> None:
    """Add a sender from their contact card.

    \b
    Example:
      evault contact add registry-office.card.json --fingerprint SHA256:...
    """
    from vault.service.contacts import add_contact

    added = add_contact(vault, read_card(card), pin=pin, as_name=as_name)
    emit_record(added.to_json(), as_json)
    if not as_json:
        say(f"added contact {added.name} ({added.fingerprint})")
    if pin is None:
        say(f"warning: contact {added.name}: key {added.fingerprint} not pinned: confirm it "
            "with the sender by another channel (--fingerprint next time)")


@contact.command("list")
@list_output_options
@with_vault
def contact_list(vault: Vault, fmt: str | None) -> None:
    """List contacts.

    \b
    Example:
      evault contact list --json
    """
    from vault.service.contacts import CONTACT_COLUMNS, list_contacts

    emit_rows([c.to_json() for c in list_contacts(vault)], fmt, CONTACT_COLUMNS)


@contact.command("show")
@click.argument("ref", metavar="NAME|FINGERPRINT")
@json_option
@with_vault
def contact_show(vault: Vault, ref: str, as_json: bool) -> None:
    """Show a contact.

    \b
    Example:
      evault contact show registry-office
    """
    from vault.service.contacts import show_contact

    emit_record(show_contact(vault, ref).to_json(), as_json)


@contact.command("revoke")
@click.argument("ref", metavar="NAME|FINGERPRINT")
@as_option
@json_option
@with_vault
def contact_revoke(vault: Vault, ref: str, as_name: str | None, as_json: bool) -> None:
    """Stop trusting a contact for new packages.

    \b
    Example:
      evault contact revoke SHA256:...
    """
    from vault.service.contacts import revoke_contact

    revoked = revoke_contact(vault, ref, as_name=as_name)
    emit_record(revoked.to_json(), as_json)
    if not as_json:
        say(f"revoked contact {revoked.name}")
