"""``evault case``: case files that group items.

May import: click, :mod:`vault.cli` and :mod:`vault.cli.common`, :mod:`vault.errors`,
:mod:`vault.progress`, :mod:`vault.render`; :mod:`vault.service` only inside the commands
(it loads SQLAlchemy; a command's ``--help`` stays fast).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from vault.cli import top_group
from vault.cli.common import (
    as_option,
    emit_record,
    emit_rows,
    json_option,
    list_output_options,
    with_vault,
)

if TYPE_CHECKING:
    from vault.service.vaults import Vault


@top_group("case")
def case() -> None:
    """\b
    Examples:
      evault case create UA-2026-0042 --title "Fictional shelling of a school"
      evault case list
    """


CASE_COLUMNS = ("id", "title", "items", "bytes", "created_at")


@case.command("create")
@click.argument("case_id", metavar="CASE")
@click.option("--title", help="Short title of the case (stays in this vault).")
@as_option
@json_option
@with_vault
def case_create(
    vault: Vault, case_id: str, title: str | None, as_name: str | None, as_json: bool
) -> None:
    """Create a case.

    \b
    Example:
      evault case create UA-2026-0042 --title "Fictional shelling of a school"
    """
    from vault.service.intake import create_case

    emit_record(create_case(vault, case_id, title=title, as_name=as_name).to_json(), as_json)


@case.command("list")
@list_output_options
@with_vault
def case_list(vault: Vault, fmt: str | None) -> None:
    """List cases with item counts and sizes.

    \b
    Example:
      evault case list --json
    """
    from vault.service.intake import list_cases

    emit_rows([c.to_json() for c in list_cases(vault)], fmt, CASE_COLUMNS)


@case.command("show")
@click.argument("case_id", metavar="CASE")
@json_option
@with_vault
def case_show(vault: Vault, case_id: str, as_json: bool) -> None:
    """Show one case.

    \b
    Example:
      evault case show UA-2026-0042
    """
    from vault.service.intake import show_case

    emit_record(show_case(vault, case_id).to_json(), as_json)
