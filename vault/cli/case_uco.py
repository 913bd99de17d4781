"""``evault export-case-uco``: an item or a case and its custody as CASE/UCO JSON-LD.

May import: click, :mod:`vault.cli` and :mod:`vault.cli.common`, :mod:`vault.errors`;
:mod:`vault.service` and :mod:`vault.formats` only inside the command (they load
SQLAlchemy; ``--help`` stays fast). Nothing here or below imports an RDF library.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from vault.cli import top_command
from vault.cli.common import with_vault, write_or_print
from vault.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from vault.service.vaults import Vault


@top_command("export-case-uco")
@click.argument("item_id", metavar="ITEM", required=False)
@click.option("--case", "case_id", metavar="CASE", help="Every item of this case.")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The JSON-LD file to write (a new file).",
)
@with_vault
def export_case_uco(
    vault: Vault, item_id: str | None, case_id: str | None, output: Path
) -> None:
    """Each item is a uco-observable:File (file name, size, SHA-256 and the digests taken
    at intake); each custody event about it a case-investigation:InvestigativeAction
    (action, time, the identity that signed it, evault and its version, the item) whose
    result is a case-investigation:ProvenanceRecord; the case an Investigation. No title,
    description, source, place or tag. The same vault gives the same bytes.

    \b
    Examples:
      evault export-case-uco EV-0123456789AB -o EV-0123456789AB.jsonld
      evault export-case-uco --case UA-2026-0042 -o UA-2026-0042.jsonld
    """
    if item_id is not None and case_id is not None:
        raise UsageError("export-case-uco: give ITEM or --case CASE, not both")
    if item_id is None and case_id is None:
        raise UsageError("export-case-uco: give an ITEM or --case CASE")
    folder = output.parent
    if not folder.is_dir():
        raise NotFoundError(f"export-case-uco: folder {folder} does not exist; create it or "
                            "choose another -o")
    from vault.service.case_uco import case_uco_export

    export = case_uco_export(vault, item=item_id, case=case_id)
    what = f"{len(export.items)} item(s) and {len(export.events)} custody event(s)"
    write_or_print(export.render(), output, what=what)
