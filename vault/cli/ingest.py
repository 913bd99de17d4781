"""``evault ingest``: evidence files into the vault.

May import: click, :mod:`vault.cli` and :mod:`vault.cli.common`, :mod:`vault.errors`,
:mod:`vault.names` (the relations ``--relation`` offers), :mod:`vault.progress`,
:mod:`vault.render`; :mod:`vault.service` only inside the commands (it loads SQLAlchemy; a
command's ``--help`` stays fast).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vault.cli import top_command
from vault.cli.common import (
    as_option,
    list_output_options,
    say,
    with_vault,
)
from vault.errors import OptionsError
from vault.names import RELATIONS
from vault.progress import interrupt, progress_line

if TYPE_CHECKING:
    from vault.service.vaults import Vault


INGEST_COLUMNS = ("id", "case", "name", "size", "sha256")


@top_command("ingest")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--manifest",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV or JSON-lines file, one row per file with the same fields.",
)
@click.option("--case", "case_id", metavar="CASE", help="Case the items belong to.")
@click.option("--create-case", is_flag=True, help="Create the case if it does not exist.")
@click.option("--title", help="Title of the item(s).")
@click.option("--description", help="Description of the item(s).")
@click.option("--source", help="Where the evidence came from.")
@click.option("--collected-at", metavar="ISO8601", help="Collection time, e.g. 2026-03-14T09:30Z.")
@click.option("--location", help="Collection place.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="A tag; repeatable.")
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="LABEL",
    help="A handling label (release rules act on these); repeatable.",
)
@click.option("--recursive", "-r", is_flag=True, help="Ingest the files inside directories.")
@click.option("--follow-symlinks", is_flag=True, help="Ingest the targets of symbolic links.")
@click.option(
    "--also-digest",
    metavar="md5,sha1",
    default="",
    help="Legacy digests to compute too, for forensic cross-reference.",
)
@click.option("--derived-from", metavar="ITEM",
              help="The item these files were made from (with --relation).")
@click.option("--relation", type=click.Choice(RELATIONS),
    help="How they were made from --derived-from.")
@click.option("--tool", metavar='"NAME VERSION"', help="With --derived-from: the tool used.")
@click.option("--note", metavar="TEXT",
              help="With --derived-from: who made it and why (sealed, never logged).")
@as_option
@list_output_options
@with_vault
def ingest(
    vault: Vault,
    paths: tuple[Path, ...],
    manifest: Path | None,
    case_id: str | None,
    create_case: bool,
    title: str | None,
    description: str | None,
    source: str | None,
    collected_at: str | None,
    location: str | None,
    tags: tuple[str, ...],
    labels: tuple[str, ...],
    recursive: bool,
    follow_symlinks: bool,
    also_digest: str,
    derived_from: str | None,
    relation: str | None,
    tool: str | None,
    note: str | None,
    as_name: str | None,
    fmt: str | None,
) -> None:
    """\b
    Examples:
      evault ingest statement.pdf --case UA-2026-0042 --title "Witness statement" \\
          --collected-at 2026-03-14T09:30:00Z --label restricted-icc
      evault ingest ./photos --recursive --case UA-2026-0042 --also-digest md5,sha1
      evault ingest --manifest batch.csv --create-case
      evault ingest statement-Red.pdf --case UA-2026-0042 --derived-from EV-0123456789AB \
          --relation redacted --tool "redactor 2.1" --note "Witness name removed"
    """
    from vault.render import RowsText, cell_width
    from vault.service import intake

    if not paths and not manifest:
        raise OptionsError("give files to ingest, or --manifest FILE")
    if paths and manifest:
        raise OptionsError("give files to ingest or --manifest FILE, not both")
    # The whole selection is validated first, keeping no list of it: the files are walked
    # (or the manifest parsed) again as they are stored, and printed a batch at a time. The
    # table's columns are sized by the first pass, so it is the one table it always was.
    widths = {"case": 0, "name": 0, "size": 0}

    def seen(row: intake.IntakeRow) -> None:
        for column, value in (("case", row.fields.case), ("name", row.path.name),
                              ("size", row.size)):
            widths[column] = max(widths[column], cell_width(value))

    # The key file's scrypt (~0.4 s) starts on a helper thread, to run while the files are
    # walked and validated, instead of after them (not when the passphrase must be typed:
    # a file that is missing is said before the prompt).
    vault.keystore.prepare(ask=False)
    plan = intake.plan_from_options(
        paths, manifest, case=case_id, title=title, description=description, source=source,
        collected_at=collected_at, location=location, tags=tags, labels=labels,
        recursive=recursive, follow_symlinks=follow_symlinks, derived_from=derived_from,
        relation=relation, tool=tool, note=note, seen=seen if fmt is None else None,
    )
    digests = [a.strip() for a in also_digest.split(",") if a.strip()]
    text = RowsText(fmt, INGEST_COLUMNS + tuple(digests), widths)
    ingested = [0, 0]  # files, bytes

    on_terminal = sys.stdout.isatty()

    def printed(results: list[intake.IngestedItem]) -> None:
        if on_terminal:
            interrupt()  # rows on the terminal start below the progress line, not on it
        click.echo(text.part([r.to_json() for r in results]), nl=False)
        ingested[0] += len(results)
        ingested[1] += sum(r.size for r in results)

    with progress_line("ingest") as line:
        files, nbytes = [0, plan.files], [0, 0]

        def files_done(done: int, total: int) -> None:
            files[:] = done, total
            if line is not None:
                line.update(done, total, nbytes=(nbytes[0], nbytes[1]))

        def bytes_read(done: int, total: int) -> None:
            nbytes[:] = done, total
            if line is not None:
                line.update(files[0], files[1], nbytes=(done, total))

        try:
            intake.ingest_batches(
                vault,
                plan,
                printed,
                as_name=as_name,
                create_case=create_case,
                also_digest=digests,
                follow_symlinks=follow_symlinks,
                progress=files_done if line else None,
                bytes_progress=bytes_read if line else None,
            )
        except BaseException:
            # What was printed stays one whole JSON array: the items that were ingested.
            with contextlib.suppress(OSError):
                click.echo(text.cut_short(), nl=False)
            raise
    click.echo(text.end(), nl=False)
    if fmt is None:
        say(f"ingested {ingested[0]} file(s), {ingested[1]} bytes")
