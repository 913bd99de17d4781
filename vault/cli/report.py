"""``evault report``: reports for oversight, and the chain-of-custody form.

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
    paper_for,
    paper_option,
    with_vault,
    write_or_print,
)

if TYPE_CHECKING:
    from vault.service.vaults import Vault


@top_group("report")
def report() -> None:
    """\b
    Examples:
      evault report sharing --since 2026-01-01T00:00:00Z --format md
      evault report custody EV-0123456789AB --format html -o custody.html
    """


@report.command("sharing")
@click.option("--since", metavar="ISO8601", help="Packages built from this time (UTC).")
@click.option("--until", metavar="ISO8601", help="Packages built before this time (UTC).")
@click.option("--body", metavar="BODY", help="Only this body.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "md", "csv", "json"]),
    default="table",
    show_default=True,
)
@with_vault
def report_sharing(
    vault: Vault, since: str | None, until: str | None, body: str | None, fmt: str
) -> None:
    """Per body: packages, items, bytes, references, sent, acknowledged, time to ack; totals.

    No titles, descriptions or file names: it can go to an oversight committee as it is.

    \b
    Examples:
      evault report sharing --format md
      evault report sharing --body ICC-OTP --since 2026-11-01T00:00:00Z --format csv
    """
    from vault.render.reports import render_sharing
    from vault.service.intake import parse_collected_at
    from vault.service.reports import sharing_report

    data = sharing_report(
        vault,
        since=parse_collected_at(since, "--since") if since else None,
        until=parse_collected_at(until, "--until") if until else None,
        body=body,
    )
    click.echo(render_sharing(data, fmt), nl=False)


@report.command("custody")
@click.argument("item_id", metavar="ITEM")
@click.option("--format", "fmt", type=click.Choice(["md", "html"]), default="md", show_default=True)
@paper_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file (default: stdout).",
)
@click.option("--as", "as_name", metavar="NAME",
              help="Identity named as printing the form (default: default).")
@with_vault
def report_custody(
    vault: Vault, item_id: str, fmt: str, paper: str | None, output: Path | None,
    as_name: str | None,
) -> None:
    """A printable chain-of-custody form for one item, for a court file.

    The item's case, title, source, collection time and place and digests; every event
    with time, actor name and fingerprint and proof status; the sender's chain for a
    received item; the latest checkpoint; who printed it (--as, else the default
    identity) and when; a signature line.

    \b
    Example:
      evault report custody EV-0123456789AB --format html --paper letter -o custody.html
    """
    from vault.render.reports import render_custody
    from vault.service.reports import custody_report

    data = custody_report(vault, item_id, as_name=as_name)
    write_or_print(render_custody(data, fmt, paper=paper_for(fmt, paper)), output)
