"""``evault doctor``: check the vault and repair what a killed command left behind.

May import: click, :mod:`vault.cli` and :mod:`vault.cli.common`, :mod:`vault.errors`,
:mod:`vault.progress`, :mod:`vault.render`; :mod:`vault.service` only inside the commands
(it loads SQLAlchemy; a command's ``--help`` stays fast).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from vault.cli import top_command
from vault.cli.common import (
    emit_record,
    json_option,
    say,
    vault_option,
)
from vault.errors import Reported

if TYPE_CHECKING:
    from vault.service.doctor import Leftover


@top_command("doctor")
@vault_option
@click.option(
    "--repair", is_flag=True,
    help="Remove leftover temporary files; move orphaned blobs into <vault>/quarantine/ "
    "(never delete them; on S3 they are left in place); rewrite the key tables from the "
    "signed key history.",
)
@json_option
def doctor(vault_dir: Path | None, repair: bool, as_json: bool) -> None:
    """Exit 3 if the vault is not what its records say: its tables are there without their
    recorded schema revision (SQL removed it), a blob is missing (the evidence is
    gone; restore it), config.toml's release rules differ from the signed ones, the key
    tables differ from the signed key history (--repair rewrites them from it), a sealed
    metadata value does not decrypt, a time is not a time, an item names a blob that has no
    row, or an item row differs from the signed event that created it (changed with SQL;
    restore the database), the custody log has a gap, or the database stopped a check.
    Exit 1 if it stopped before those checks: the schema is behind this evault (run
    `evault db upgrade`), or config.toml names another blob store than the database does;
    or if it could not open the key store to check the key history and the sealed values;
    or if --repair refused the quarantine folder (nothing repaired), or left a file in
    blobs/ it could not move, or a file named as a blob is not that blob (each named).
    Leftovers --repair removes, and packages not yet sent, are named with exit 0; --repair
    deletes no orphaned blob: it moves them into <vault>/quarantine/ to be checked.

    \b
    Examples:
      evault doctor
      evault doctor --repair
    """
    from vault.service.doctor import diagnose, not_a_time

    report = diagnose(vault_dir, repair=repair, notice=say)
    leftovers = report.leftovers or ()
    shown = report.to_json()
    if not as_json and report.leftovers is not None:
        shown["leftovers"] = len(leftovers)  # each named on stderr below
    if not as_json and report.misplaced is not None:
        shown["misplaced"] = len(report.misplaced)  # each named with its blob below
    if not as_json and report.stray_copies is not None:
        shown["stray_copies"] = len(report.stray_copies)  # each named below
    if not as_json and report.orphans_skipped is not None:
        shown["orphans_skipped"] = len(report.orphans_skipped)  # each named below
    emit_record(shown, as_json)
    if not as_json:
        if report.schema_changed:
            say(report.schema_changed)
        for pid in report.unsent_packages or ():
            say(f"package {pid}: built but never sent; re-run the export that built it, or "
                f"send it with `evault send {pid} --outbox DIR`")
        for row in leftovers:
            say(_leftover_line(row))
        strays = {Path(path).name: path for path in report.misplaced or ()}
        for blob in report.missing or ():
            stray = strays.get(blob.split(" ", 1)[0])
            if stray is not None and not repair:
                say(f"blob {blob}: missing from {report.blob_store}, found in another shard "
                    f"({stray}); `evault doctor --repair` moves it back")
            else:
                say(f"blob {blob}: missing from {report.blob_store}; restore it from a "
                    "backup, then run `evault custody verify`")
        for path in report.stray_copies or ():
            say(f"{path}: named as a blob a row names, but not that blob where evault reads "
                "it (another copy, a decoy or a link); left in place: compare it with the "
                "blob and remove it by hand")
        if report.blobs_restored:
            say(f"{report.blobs_restored} blob(s) found in another shard moved back to their "
                "own; run `evault custody verify`")
        for blob in report.unrecorded or ():
            say(f"blob {blob}: its row is missing from the database (deleted by SQL outside "
                "evault); the blob is kept; restore the database from a backup")
        for cell in report.undecryptable or ():
            say(f"{cell}: does not decrypt under this vault's metadata key (altered, or moved "
                "from another row or column); restore the database from a backup")
        for cell in report.not_times or ():
            say(not_a_time(cell))
        for line in report.item_differences or ():
            say(f"{line} (changed by SQL outside evault); run `evault custody verify`, then "
                "restore the database from a backup")
        if report.custody_log not in (None, "ok"):
            say(f"custody log: {report.custody_log}")
        if report.orphans_quarantined:
            say(f"{report.orphans_quarantined} orphaned blob(s) moved to {report.quarantine}: "
                "no row names them, but they may be evidence whose rows were deleted; delete "
                "them only once `evault custody verify` passes and you have checked them")
        for line in report.orphans_skipped or ():
            say(line)
        if report.orphans_left:
            say(f"{report.orphans_left} orphaned object(s) left in {report.blob_store}: no row "
                "names them, but they may be evidence whose rows were deleted; remove them by "
                "hand only once `evault custody verify` passes and you have checked them")
    if report.failed:
        # Evidence gone, rules or rows changed outside evault, or the database could not be
        # read for a check: a failed verification, which --repair does not mend.
        raise Reported(verification=True)
    if report.stopped is not None:
        # Nothing past that point was checked: no all-clear, whatever the reason.
        say(f"doctor stopped before checking the blobs and the records: {report.stopped}")
        raise Reported(verification=False)
    if report.not_checked:
        for line in report.not_checked:
            say(f"doctor could not check {line}")
        raise Reported(verification=False)
    if report.orphans_skipped or report.stray_copies:
        # Files in blobs/ left for the user to look at (each named above).
        raise Reported(verification=False)


def _leftover_line(row: Leftover) -> str:
    """One line about a leftover of a killed ``items export`` or ``open``."""
    if row.command == "unknown":
        return f"{row.path}: {row.state.removeprefix('refused: ')}; left alone"
    of = f"`{row.command}`" + (f" of item {row.item}" if row.item is not None else "")
    age = _age(row.age_seconds or 0)
    where = row.path if row.on_disk else f"{row.path} (nothing left there)"
    state = row.state
    if state == "left":
        return (f"leftover of an interrupted {of}, started {age} ago: {where}; "
                "`evault doctor --repair` removes it")
    if state.startswith("refused: "):
        return f"leftover of an interrupted {of}: {row.path}: {state[9:]}; left alone"
    logged = f"; logged {row.logged}" if row.logged else ""
    return f"leftover of an interrupted {of}, started {age} ago: {where}: {state}{logged}"


def _age(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"
