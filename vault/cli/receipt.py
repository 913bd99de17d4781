"""``evault receipt``: sharing receipts of sent packages, and recipients' acknowledgements.

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
    emit_record,
    emit_rows,
    json_option,
    list_output_options,
    say,
    with_vault,
)

if TYPE_CHECKING:
    from vault.service.vaults import Vault


@top_group("receipt")
def receipt() -> None:
    """\b
    Examples:
      evault receipt list --body ICC-OTP
      evault receipt export RCP-0123456789AB -o receipt.json
    """


@receipt.command("list")
@click.option("--body", metavar="BODY", help="Only receipts for this body.")
@click.option("--since", metavar="ISO8601", help="Only receipts from this time on.")
@list_output_options
@with_vault
def receipt_list(vault: Vault, body: str | None, since: str | None, fmt: str | None) -> None:
    """List sharing receipts.

    \b
    Example:
      evault receipt list --since 2026-11-01T00:00:00Z --json
    """
    from vault.service.intake import parse_collected_at
    from vault.service.packaging.receipts import list_receipts

    when = parse_collected_at(since, "--since") if since else None
    rows = [r.to_json() for r in list_receipts(vault, body=body, since=when)]
    emit_rows(rows, fmt, ("id", "package", "body", "items", "sent_at", "envelope_sha256"))


@receipt.command("show")
@click.argument("receipt_id", metavar="ID")
@json_option
@with_vault
def receipt_show(vault: Vault, receipt_id: str, as_json: bool) -> None:
    """Show a sharing receipt.

    \b
    Example:
      evault receipt show RCP-0123456789AB
    """
    from vault.service.packaging.receipts import show_receipt

    shown = show_receipt(vault, receipt_id)
    if as_json:
        emit_record(shown.to_json(), True)
    else:
        record = {k: v for k, v in shown.document.items() if k != "checkpoint"}
        if "timestamps" in record:  # base64 tokens: their count here, their times in verify
            record["timestamps"] = (f"{len(record['timestamps'])} RFC 3161 token(s); "
                                    "`evault verify` on the exported receipt checks them")
        emit_record(record, False)


@receipt.command("export")
@click.argument("receipt_id", metavar="ID")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The receipt file; its signature goes to FILE.sig.",
)
@with_vault
def receipt_export(vault: Vault, receipt_id: str, output: Path) -> None:
    """Export a receipt (exact signed bytes) and its SSHSIG signature (FILE.sig).

    \b
    Example:
      evault receipt export RCP-0123456789AB -o receipt.json
    """
    from vault.service.packaging.receipts import export_receipt

    document, signature = export_receipt(vault, receipt_id, output)
    say(f"wrote {document} and {signature}")


@receipt.command("import")
@click.argument("ack_file", metavar="ACK", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@with_vault
def receipt_import(vault: Vault, ack_file: Path, as_json: bool) -> None:
    """Import a recipient's acknowledgement (ACK and ACK.sig) of a package sent from here.

    An acknowledgement of version 2 also carries the body's cosignature of the checkpoint the
    package carried; it is verified and kept, and `custody verify` checks the log against it.
    Refused (exit 3): a signer the package was not encrypted to, a receipt time before the
    send (5 minutes of clock skew allowed), a checkpoint the signer did not sign, other items.

    \b
    Example:
      evault receipt import PKG-0123456789AB.ack.json
    """
    from vault.service.packaging.receipts import import_ack

    ack = import_ack(vault, ack_file)
    emit_record(ack.to_json(), as_json)
    if as_json:
        return
    if ack.already_acknowledged:
        say(f"package {ack.package} already acknowledged by {ack.by} of "
            f"{ack.body}; this acknowledgement was imported before, nothing changed")
    else:
        witnessed = (f"; {ack.body} witnessed this vault's log at size "
                     f"{ack.witnessed_size}" if ack.witnessed_size is not None else "")
        say(f"package {ack.package} acknowledged by {ack.by} of {ack.body}{witnessed}")
