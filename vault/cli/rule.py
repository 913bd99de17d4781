"""``evault rule``: the signed release rules (which bodies may receive which labels).

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
    json_option,
    say,
    with_vault,
)
from vault.names import RELATIONS

if TYPE_CHECKING:
    from vault.service.rules import Change
    from vault.service.vaults import Vault


@top_group("rule")
def rule() -> None:
    """A label without a rule goes to no body (unless `evault rule default allow`).

    \b
    Examples:
      evault rule add restricted-icc ICC-OTP
      evault rule add sealed --none
      evault rule list
    """


def _rule_said(change: Change, what: str, as_json: bool) -> None:
    if as_json:
        emit_record(change.to_json(), as_json)
    else:
        say(f"{what}; logged rule.changed" if change.changed else f"{what} (unchanged)")


def _releases(bodies: tuple[str, ...] | None, relations: dict[str, str] | None = None) -> str:
    if bodies is None:
        return "has no rule"
    return f"releases to {_bodies(bodies, relations or {})}" if bodies else "releases to no body"


def _bodies(bodies: tuple[str, ...], relations: dict[str, str]) -> str:
    """``ICC-OTP, UN-HRMMU (redacted copy only)``: each body, and the copy it gets if not the
    original."""
    return ", ".join(f"{b} ({relations[b]} copy only)" if b in relations else b for b in bodies)


@rule.command("add")
@click.argument("label")
@click.argument("bodies", nargs=-1, metavar="BODY...")
@click.option("--none", "none", is_flag=True, help="A rule that releases to no body.")
@click.option("--relation", type=click.Choice(("original", *RELATIONS)),
              help="The copy these bodies get: a derived copy (redacted, ...) sent instead of "
                   "the original, or the original again.")
@as_option
@json_option
@with_vault
def rule_add(vault: Vault, label: str, bodies: tuple[str, ...], none: bool,
             relation: str | None, as_name: str | None, as_json: bool) -> None:
    """Create the rule for a label, or add bodies to it.

    With --relation, those bodies get only that derived copy of an item carrying the label
    (`evault ingest --derived-from ITEM --relation ...`), sent in its place.

    \b
    Examples:
      evault rule add restricted-icc ICC-OTP
      evault rule add witness-identity UN-HRMMU --relation redacted
      evault rule add sealed --none
    """
    from vault.service.rules import add_rule

    change = add_rule(vault, label, bodies, none=none, relation=relation, as_name=as_name)
    _rule_said(change, f"rule for {label}: "
               f"{_releases(change.rules.rules[label], change.rules.relations.get(label))}",
               as_json)


@rule.command("remove")
@click.argument("label")
@click.argument("bodies", nargs=-1, metavar="[BODY...]")
@as_option
@json_option
@with_vault
def rule_remove(vault: Vault, label: str, bodies: tuple[str, ...], as_name: str | None,
                as_json: bool) -> None:
    """Remove the rule for a label, or only some bodies from it.

    \b
    Examples:
      evault rule remove restricted-icc UA-OPG
      evault rule remove restricted-icc
    """
    from vault.service.rules import remove_rule

    change = remove_rule(vault, label, bodies, as_name=as_name)
    left = change.rules.rules.get(label)
    _rule_said(change, f"rule for {label}: " + (
        "removed" if left is None else _releases(left, change.rules.relations.get(label))),
               as_json)


@rule.command("default")
@click.argument("default", type=click.Choice(["deny", "allow"]))
@as_option
@json_option
@with_vault
def rule_default(vault: Vault, default: str, as_name: str | None, as_json: bool) -> None:
    """What a label without a rule does: deny (goes to no body) or allow (goes to all).

    \b
    Example:
      evault rule default deny
    """
    from vault.service.rules import set_default

    change = set_default(vault, default, as_name=as_name)
    _rule_said(change, f"default: {default} ({_DEFAULT_MEANS[default]})", as_json)


_DEFAULT_MEANS = {"deny": "a label without a rule goes to no body",
                  "allow": "a label without a rule goes to every body"}


@rule.command("sign")
@as_option
@json_option
@with_vault
def rule_sign(vault: Vault, as_name: str | None, as_json: bool) -> None:
    """Adopt config.toml's release rules as they are: after an upgrade or a hand edit.

    \b
    Example:
      evault rule sign --as registry-office
    """
    from vault.service.rules import sign_rules

    change = sign_rules(vault, as_name=as_name)
    n = len(change.rules.rules)
    _rule_said(change, f"release rules signed: {n} rule{'s' if n != 1 else ''}, default "
               f"{change.rules.default}", as_json)


@rule.command("list")
@json_option
@with_vault
def rule_list(vault: Vault, as_json: bool) -> None:
    """List the rules, the default, and labels in use that have no rule.

    \b
    Example:
      evault rule list --json
    """
    from vault.render import render_table
    from vault.service.rules import list_rules

    data = list_rules(vault)
    if as_json:
        emit_record(data.to_json(), as_json)
        return
    rows = [{"label": r.label,
             "bodies": _bodies(r.bodies, r.relations) or "(none)" if r.rule
             else f"(no rule: {r.note})"} for r in data.rules]
    click.echo(render_table(rows, ("label", "bodies")), nl=False)
    click.echo(f"default: {data.default} ({_DEFAULT_MEANS[data.default]})")
    if data.difference:
        click.echo(data.difference)
