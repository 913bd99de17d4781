"""``evault identity``: this vault's identities, their keys and contact cards.

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
    say,
    with_vault,
    write_or_print,
)

if TYPE_CHECKING:
    from vault.service.vaults import Vault


@top_group("identity")
def identity() -> None:
    """\b
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
@as_option
@json_option
@with_vault
def identity_create(
    vault: Vault, name: str, org: str | None, email: str | None, as_name: str | None,
    as_json: bool,
) -> None:
    """Create an identity: an Ed25519 signing key and an age decryption key.

    The private halves go to the key store; the first identity is the vault's default.
    Every later one is introduced (its creation signed) by the default identity, or --as.

    \b
    Example:
      evault identity create registry-office --org "Fictional Ministry of Justice"
    """
    from vault.service.identities import create_identity

    created = create_identity(vault, name, org=org, email=email, as_name=as_name)
    emit_record(created.to_json(), as_json, skip=("keys",))
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

    emit_rows([i.to_json() for i in list_identities(vault)], fmt, IDENTITY_COLUMNS)


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

    emit_record(show_identity(vault, name).to_json(), as_json)


@identity.command("export")
@click.argument("name", required=False)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this new file (default: stdout; with --secret-age-key, '-' for stdout).",
)
@click.option(
    "--secret-age-key",
    is_flag=True,
    help="Export the current age SECRET key as an age identity file (mode 0600), not the card.",
)
@with_vault
def identity_export(
    vault: Vault, name: str | None, output: Path | None, secret_age_key: bool
) -> None:
    """Export the public contact card of an identity (self-signed JSON).

    Hand the card to the other side and tell them its fingerprint by another channel.

    With --secret-age-key, write the identity's current age secret key instead, in the form
    age-keygen writes, so that stock `age -d -i FILE` can decrypt packages sent to it. The
    export is logged (identity.secret_exported); keep the file offline and delete it after use.

    \b
    Examples:
      evault identity export registry-office -o registry-office.card.json
      evault identity export icc-officer --secret-age-key -o icc-officer.agekey
    """
    if secret_age_key:
        _export_secret_age_key(vault, name, output)
        return
    from vault.render import json_safe
    from vault.service.identities import export_card

    # Escaped as every JSON evault prints: the signature covers the values, not the text.
    write_or_print(json_safe(export_card(vault, name)), output, what="contact card")


def _export_secret_age_key(vault: Vault, name: str | None, output: Path | None) -> None:
    from vault.errors import UsageError
    from vault.service.identities import export_secret_age_key

    if output is None:
        raise UsageError(
            "--secret-age-key writes a secret key: give -o FILE, or -o - to print it to stdout"
        )
    to_stdout = str(output) == "-"
    done = export_secret_age_key(vault, name, None if to_stdout else output)
    if done.text is not None:
        click.echo(done.text, nl=False)
    where = "stdout" if to_stdout else f"{output} (mode 0600)"
    advice = "" if to_stdout else "; delete it when you no longer need it"
    say(
        f"wrote the age secret key of {done.name} (key generation {done.generation}, "
        f"{done.fingerprint}) to {where}; logged identity.secret_exported{advice}"
    )


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

    rotated = rotate_identity(vault, name)
    emit_record(rotated.to_json(), as_json, skip=("keys",))
    if not as_json:
        say(f"rotated identity {rotated.name}: new key {rotated.fingerprint}")


@identity.command("revoke")
@click.argument("name")
@as_option
@json_option
@with_vault
def identity_revoke(vault: Vault, name: str, as_name: str | None, as_json: bool) -> None:
    """Revoke an identity: no new use; what it signed before still verifies.

    \b
    Example:
      evault identity revoke former-officer
    """
    from vault.service.identities import revoke_identity

    revoked = revoke_identity(vault, name, as_name=as_name)
    emit_record(revoked.to_json(), as_json, skip=("keys",))
    if not as_json:
        say(f"revoked identity {name}")
