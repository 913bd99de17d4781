"""``evault items``: list, show and export (decrypt) the vault's items.

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
    emit_columns,
    emit_record,
    emit_rows,
    json_option,
    list_output_options,
    open_vault,
    passphrase_prompt,
    say,
    vault_option,
    with_vault,
)
from vault.progress import progress_line

if TYPE_CHECKING:
    from vault.service.vaults import Vault



@top_group("items")
def items() -> None:
    """\b
    Examples:
      evault items list --case UA-2026-0042
      evault items show EV-0123456789AB
      evault items verify-link EV-0123456789AB
      evault items export EV-0123456789AB -o copy.pdf --reason "expert review"
    """


@items.command("list")
@click.option("--case", "case_id", metavar="CASE", help="Only items of this case.")
@click.option("--label", metavar="LABEL", help="Only items with this label.")
@list_output_options
@vault_option
def items_list(vault_dir: Path | None, case_id: str | None, label: str | None,
               fmt: str | None) -> None:
    """List items.

    \b
    Examples:
      evault items list --case UA-2026-0042
      evault items list --label restricted-icc --csv
    """
    # The table and CSV (ITEM_COLUMNS only) are read without the ORM: it would be most of
    # their time (vault.service.listing); --json shows every field, through the ORM.
    from vault.service.listing import ITEM_COLUMNS, list_item_columns

    if fmt not in ("json", "jsonl"):
        emit_columns(list_item_columns(vault_dir, case=case_id, label=label,
                                       prompt=passphrase_prompt()), fmt, ITEM_COLUMNS)
        return
    from vault.service.items import list_items

    vault = open_vault(vault_dir)
    try:
        rows = [i.to_json() for i in list_items(vault, case=case_id, label=label)]
    finally:
        vault.close()
    emit_rows(rows, fmt, ITEM_COLUMNS)


@items.command("show")
@click.argument("item_id", metavar="ID")
@json_option
@with_vault
def items_show(vault: Vault, item_id: str, as_json: bool) -> None:
    """Show an item's metadata and digests, and for a derived copy (or an item copied) the
    derivation chain both ways.

    For an image, video, audio file or PDF, what its C2PA manifest was found to be worth at
    intake (trusted, valid, invalid, or none: unknown provenance), and for a ProofMode
    bundle whether its proof matched its media: as the signed intake event records them.

    \b
    Example:
      evault items show EV-0123456789AB --json
    """
    from vault.service.items import lineage, provenance, show_item

    record = show_item(vault, item_id).to_json()
    found = provenance(vault, item_id)
    if found and not as_json:
        from vault.render.provenance import describe_c2pa, describe_proofmode

        describe = {"c2pa": describe_c2pa, "proofmode": describe_proofmode}
        record.update({k: describe[k](v) for k, v in found.items()})
    else:
        record.update(found)
    links = lineage(vault, item_id)
    if not links.empty:
        shown = links.to_json()
        if not as_json:
            def said(link: dict[str, str | None]) -> str:
                # An original not held here is named by its id in the sender's vault.
                away = "not held here" if link.get("sender") else None
                how = ", ".join(x for x in (link["relation"], link["tool"], away) if x)
                of = f" of {link['of']}" if link["of"] and link["of"] != item_id else ""
                return f"{link['id']} ({how}{of})" if how else str(link["id"])

            shown = {"derived_from": " <- ".join(map(said, shown["derived_from"])) or None,
                     "derivatives": ", ".join(map(said, shown["derivatives"])) or None,
                     "note": links.note}
        record.update(shown)
    emit_record(record, as_json)


@items.command("verify-link")
@click.argument("item_id", metavar="ITEM")
@click.option("--original", metavar="ITEM|FILE",
              help="The original to check against: an item id of this vault or a file "
              "(default: the original this vault holds).")
@json_option
@with_vault
def items_verify_link(vault: Vault, item_id: str, original: str | None, as_json: bool) -> None:
    """Check that a derived copy's original has the SHA-256 its link names.

    The original is --original, else the item the link names: for a copy made here, its
    original here; for a copy received in a package, the item received from the same
    sender under the id the link names. Exit 3 if the SHA-256 differs, 1 if there is no
    original to check against.

    \b
    Examples:
      evault items verify-link EV-0123456789AB
      evault items verify-link EV-0123456789AB --original statement.pdf --json
    """
    from vault.service.items import verify_link

    checked = verify_link(vault, item_id, original)
    if as_json:
        emit_record(checked.to_json(), True)
    else:
        click.echo(checked.line())


@items.command("export")
@click.argument("item_id", metavar="ID")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the decrypted content.",
)
@click.option("--reason", required=True, help="Why the content is needed (logged).")
@click.option("--force", is_flag=True, help="Replace the output file if it exists.")
@as_option
@json_option
@with_vault
def items_export(
    vault: Vault,
    item_id: str,
    output: Path,
    reason: str,
    force: bool,
    as_name: str | None,
    as_json: bool,
) -> None:
    """Decrypt an item for authorised use; the digest is checked and the export logged.

    \b
    Example:
      evault items export EV-0123456789AB -o copy.pdf --reason "forensic examination"
    """
    from vault.service.items import export_item

    with progress_line("items export") as line:
        exported = export_item(vault, item_id, output, reason=reason, as_name=as_name,
                               force=force, progress=line.update_bytes if line else None)
    emit_record(exported.to_json(), as_json)
    if not as_json:
        say(f"exported item {item_id} to {output}; the export is in the custody log")
