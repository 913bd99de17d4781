"""``evault export``: one package for each of several bodies, idempotently.

May import: click, :mod:`vault.cli` and :mod:`vault.cli.common`, :mod:`vault.errors`,
:mod:`vault.progress`, :mod:`vault.render`; :mod:`vault.service` only inside the commands
(it loads SQLAlchemy; a command's ``--help`` stays fast).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from vault.cli import top_command
from vault.cli.common import (
    as_option,
    outbox_options,
    say,
    timestamp_option,
    with_vault,
)
from vault.errors import OptionsError, Reported
from vault.progress import ProgressLine, progress_line

if TYPE_CHECKING:
    from vault.service.export import Progress as ExportProgress
    from vault.service.outbox import OutboxChoice
    from vault.service.vaults import Vault


def _progress_printer(line: ProgressLine | None) -> ExportProgress | None:
    """Export's progress (body, bodies done and in all, bytes) drawn on ``line``, if any."""
    if line is None:
        return None

    def show(body: str, done: int, total: int, done_bytes: int, total_bytes: int) -> None:
        line.update(done, total, nbytes=(done_bytes, total_bytes), what=body)

    return show


@top_command("export")
@click.option(
    "--to",
    "bodies",
    metavar="BODY,BODY,...",
    help="Bodies to export to (with --plan: a subset of the plan's bodies).",
)
@click.option("--case", "case_id", metavar="CASE", help="Share this case with every body.")
@click.option(
    "--plan",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML plan selecting items, reference and purpose per body.",
)
@outbox_options(required_help="Drop folder or SFTP drop for every body's package; default: "
                "each body's own (`evault body set BODY --outbox ...`).")
@click.option("--dry-run", is_flag=True, help="Print what would go to whom; change nothing.")
@click.option("--reshare", is_flag=True, help="Make new packages even for items already sent.")
@click.option("--jsonl", "as_jsonl", is_flag=True, help="One JSON result per body.")
@click.option("--with-case-uco", is_flag=True,
              help="Add evault/case-uco.jsonld to each new package (CASE/UCO, signed).")
@as_option
@with_vault
@timestamp_option
def export_cmd(
    vault: Vault,
    bodies: str | None,
    case_id: str | None,
    plan: Path | None,
    outbox: OutboxChoice,
    dry_run: bool,
    reshare: bool,
    as_jsonl: bool,
    with_case_uco: bool,
    as_name: str | None,
) -> None:
    """A re-run after success makes nothing new ("already shared"); a re-run after an
    interruption finishes what is missing, never a duplicate package or receipt. Exit 1 if
    any body failed (the others' results are kept).

    \b
    Examples:
      evault export --to ICC-OTP,UA-OPG,EUROJUST-JIT --case UA-2026-0042 --outbox /mnt/out
      evault export --plan plan.toml --outbox /mnt/out --dry-run
      evault export --to UA-OPG --case UA-2026-0042 --outbox /mnt/out --jsonl
      evault export --to ICC-OTP,UA-OPG --case UA-2026-0042   # each body's own outbox
    """
    from vault.render import to_jsonl
    from vault.service.export import export, load_plan, plans_for_case

    names = [b.strip() for b in (bodies or "").split(",") if b.strip()]
    if bool(case_id) == bool(plan):
        raise OptionsError("give --case CASE or --plan PLAN.toml")
    if plan is not None:
        plans = load_plan(plan, names)
    else:
        if not names:
            raise OptionsError("--case needs --to BODY,BODY,...")
        assert case_id is not None
        plans = plans_for_case(names, case_id)
    with progress_line("export") as line:
        results = export(
            vault,
            plans,
            outbox=outbox,
            dry_run=dry_run,
            reshare=reshare,
            as_name=as_name,
            progress=_progress_printer(line),
            with_case_uco=with_case_uco,
        )
    rows = [r.to_json() for r in results]
    if as_jsonl:
        click.echo(to_jsonl(rows), nl=False)
    else:
        click.echo(_export_table(rows, dry_run), nl=False)
    would_fail = [r.body for r in results if r.would_fail]
    if would_fail:
        say(f"dry run: export would fail for {', '.join(would_fail)}; see the error column")
        raise Reported(verification=False)
    failed = [r.body for r in results if r.failed]
    if failed:
        others = "the other bodies succeeded" if len(failed) < len(results) else "none succeeded"
        say(f"export failed for {', '.join(failed)}; {others}")
        # Exit 3 when nothing succeeded and every failure was a failed verification (e.g. a
        # body key that differs from the signed key history), else 1.
        verification = len(failed) == len(results) and all(
            r.exit_code == 3 for r in results if r.failed)
        raise Reported(verification=verification)


def _export_table(rows: list[dict[str, Any]], dry_run: bool) -> str:
    """The export table, then one line per body that release rules kept items from.

    Its bytes column is named for what it counts: the plaintext of the items a dry run
    would send, or the size of the package file a run sent."""
    from vault.render import render_table

    size = "plaintext_bytes" if dry_run else "package_bytes"
    table = [{**r, size: r["bytes"], "withheld": len(r["withheld"])} for r in rows]
    text = render_table(table, ("body", "status", "package", "items", "withheld", size,
                                "receipt", "error"))
    kept = [f"withheld from {r['body']} by release rules: {', '.join(r['withheld'])}"
            for r in rows if r["withheld"]]
    return text + "".join(f"\n{line}" for line in kept) + ("\n" if kept else "")
