"""``evault package`` and ``evault send``: build, list, show and send packages, and print
their verification sheets.

May import: click, :mod:`vault.cli` and :mod:`vault.cli.common`, :mod:`vault.errors`,
:mod:`vault.progress`, :mod:`vault.render`; :mod:`vault.service` only inside the commands
(it loads SQLAlchemy; a command's ``--help`` stays fast).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from vault.cli import top_command, top_group
from vault.cli.common import (
    as_option,
    emit_record,
    emit_rows,
    json_option,
    list_output_options,
    outbox_options,
    paper_for,
    paper_option,
    say,
    timestamp_option,
    with_vault,
    write_or_print,
)
from vault.errors import OptionsError

if TYPE_CHECKING:
    from vault.service.outbox import OutboxChoice
    from vault.service.vaults import Vault


@top_group("package")
def package() -> None:
    """\b
    Examples:
      evault package create --to ICC-OTP --case UA-2026-0042 --reference OTP-REQ-17
      evault package create --to UA-OPG --item EV-0123456789AB --send --outbox /mnt/transfer
      evault package list
    """


@package.command("create")
@click.option("--to", "body_id", required=True, metavar="BODY", help="The receiving body.")
@click.option("--item", "item_ids", multiple=True, metavar="ID", help="An item; repeatable.")
@click.option("--case", "case_id", metavar="CASE", help="All items of a case (with filters).")
@click.option("--label", metavar="LABEL", help="With --case: only items with this label.")
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="K=V",
    help="With --case: only items with this tag; repeatable.",
)
@click.option("--reference", metavar="REF", help="The body's request reference.")
@click.option("--purpose", help="Why the evidence is shared (inside the encrypted bag).")
@click.option(
    "--confidential-reference",
    is_flag=True,
    help="Put only the reference's SHA-256 in the sharing receipt.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Package file (default: ./<package-id>.evpkg).",
)
@click.option("--force", is_flag=True, help="Replace the output file if it exists.")
@click.option("--with-case-uco", is_flag=True,
              help="Add evault/case-uco.jsonld: the items and their custody excerpt as "
              "CASE/UCO (signed with the rest).")
@click.option("--send", "send_now", is_flag=True,
              help="Send it right away, to --outbox or the body's own outbox.")
@outbox_options(required_help="With --send: drop folder or sftp:// drop (default: the body's "
                "own, `evault body set --outbox`).")
@as_option
@json_option
@with_vault
@timestamp_option
def package_create(
    vault: Vault,
    body_id: str,
    item_ids: tuple[str, ...],
    case_id: str | None,
    label: str | None,
    tags: tuple[str, ...],
    reference: str | None,
    purpose: str | None,
    confidential_reference: bool,
    output: Path | None,
    force: bool,
    with_case_uco: bool,
    send_now: bool,
    outbox: OutboxChoice,
    as_name: str | None,
    as_json: bool,
) -> None:
    """Build one package for one body, refusing anything the release rules forbid. With
    --send it is sent as `evault send` sends it.

    \b
    Examples:
      evault package create --to ICC-OTP --case UA-2026-0042 --label restricted-icc
      evault package create --to UA-OPG --item EV-0123456789AB -o opg.evpkg
      evault package create --to ICC-OTP --case UA-2026-0042 --send --outbox /mnt/transfer
      evault package create --to ICC-OTP --case UA-2026-0042 --send   # the body's outbox
    """
    from vault.service.outbox import OutboxChoice
    from vault.service.packaging.create import create_package
    from vault.service.packaging.records import SentPackage

    if outbox != OutboxChoice() and not send_now:
        raise OptionsError("--outbox, --host-key, --known-hosts and --identity-file go with "
                           "--send")
    package = create_package(
        vault,
        body_id=body_id,
        item_ids=item_ids,
        case=case_id,
        label=label,
        tags=tags,
        reference=reference,
        purpose=purpose,
        confidential_reference=confidential_reference,
        as_name=as_name,
        output=output,
        force=force,
        outbox=outbox if send_now else None,
        notice=say,
        with_case_uco=with_case_uco,
    )
    emit_record(package.to_json(), as_json)
    if not as_json:
        sent = f"; sent, receipt {package.receipt}" if isinstance(package, SentPackage) else ""
        say(f"built package {package.id} for {body_id}: {package.items} item(s), "
            f"{package.bytes} bytes{sent}")


@package.command("list")
@click.option("--body", metavar="BODY", help="Only packages for this body.")
@list_output_options
@with_vault
def package_list(vault: Vault, body: str | None, fmt: str | None) -> None:
    """List packages with their state: built, sent, acknowledged.

    \b
    Example:
      evault package list --body ICC-OTP
    """
    from vault.service.packaging.records import PACKAGE_COLUMNS, list_packages

    emit_rows([p.to_json() for p in list_packages(vault, body=body)], fmt, PACKAGE_COLUMNS)


@package.command("show")
@click.argument("package_id", metavar="ID")
@json_option
@with_vault
def package_show(vault: Vault, package_id: str, as_json: bool) -> None:
    """Show one package: items, keys, digests, state.

    \b
    Example:
      evault package show PKG-0123456789AB
    """
    from vault.service.packaging.records import show_package

    emit_record(show_package(vault, package_id).to_json(), as_json)


@package.command("sheet")
@click.argument("package_id", metavar="ID")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md", "html"]),
    default="md",
    show_default=True,
    help="Markdown (a table) or one self-contained, printable HTML page.",
)
@paper_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the sheet to this file (default: stdout).",
)
@with_vault
def package_sheet(
    vault: Vault, package_id: str, fmt: str, paper: str | None, output: Path | None
) -> None:
    """A printable one-page verification sheet: ids, fingerprints, times, digests, checks.

    No titles, descriptions or file names; the commands to check each value with stock
    tools (ssh-keygen, sha256sum, age, bagit.py) are on the sheet. The HTML page prints on
    one A4 or Letter page (--paper) for a package of up to 25 items.

    \b
    Examples:
      evault package sheet PKG-0123456789AB
      evault package sheet PKG-0123456789AB --format html --paper letter -o sheet.html
    """
    from vault.render.sheet import render_sheet
    from vault.service.sheet import sheet_data

    if output is not None and output.exists():
        raise OptionsError(f"{output} exists; choose another file")
    paper = paper_for(fmt, paper)
    write_or_print(render_sheet(sheet_data(vault, package_id), fmt, paper=paper), output)


@top_command("send")
@click.argument("package_ref", metavar="PACKAGE")
@outbox_options(required_help="Drop folder (a mounted transfer share, removable media) or the "
                "body's SFTP drop; default: the body's own (`evault body set --outbox`).")
@as_option
@json_option
@with_vault
@timestamp_option
def send(vault: Vault, package_ref: str, outbox: OutboxChoice, as_name: str | None,
         as_json: bool) -> None:
    """The copy's digest is checked again; a `package.sent` event is logged for the package and
    each item. To an sftp:// drop: the server's host key must be pinned (--host-key, or the
    body's) or in known_hosts, else nothing is sent (exit 3); the package is uploaded under a
    temporary name, its SHA-256 read back, then named; an interrupted upload is resumed by
    sending again. The receipt and the event name the URL and the host key.

    \b
    Examples:
      evault send PKG-0123456789AB.evpkg --outbox /mnt/transfer
      evault send PKG-0123456789AB --outbox /media/usb
      evault send PKG-0123456789AB --outbox sftp://evidence@drop.icc-cpi.example/incoming \\
        --host-key SHA256:... --identity-file ~/.ssh/icc_drop
      evault send PKG-0123456789AB          # to the body's own outbox
    """
    from vault.service.packaging.send import send_package

    sent = send_package(vault, package_ref, outbox=outbox, as_name=as_name)
    emit_record(sent.to_json(), as_json)
    if not as_json:
        say(f"sent package {sent.id} to {sent.delivered}; receipt {sent.receipt}")
