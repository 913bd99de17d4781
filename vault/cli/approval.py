"""``evault approval``: the signed approval policy, requests, and the approvals kept.

May import: click, :mod:`vault.cli` and :mod:`vault.cli.common`, :mod:`vault.errors`;
:mod:`vault.service` only inside the commands (a command's ``--help`` stays fast).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from vault.cli import top_group
from vault.cli.common import as_option, emit_record, json_option, say, with_vault
from vault.errors import OptionsError

if TYPE_CHECKING:
    from vault.service.approvals import PolicyChange
    from vault.service.vaults import Vault


@top_group("approval")
def approval() -> None:
    """A release to a body can need the signed agreement of named offices: the policy says
    who and how many, `approval request` asks them for exactly one selection, and `package
    create`/`export` refuse that selection without a quorum.

    \b
    Examples:
      evault approval policy set --body ICC-OTP --need 2 --of state-legal,defense-legal,nsc-legal
      evault approval policy set --label witness-identity --require nsc-legal
      evault approval policy list
    """


@approval.group("policy")
def policy() -> None:
    """Who must approve releases: per body (how many of whom) and per label (who in
    addition). Each change is a signed approval.policy_changed custody event."""


def _said(change: PolicyChange, what: str, as_json: bool) -> None:
    if as_json:
        emit_record(change.to_json(), True)
    else:
        say(f"{what}; logged approval.policy_changed" if change.changed
            else f"{what} (unchanged)")


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


@policy.command("set")
@click.option("--body", metavar="BODY", help="The body whose releases need approvals.")
@click.option("--need", type=int, metavar="N", help="With --body: how many approvals.")
@click.option("--of", "of", metavar="NAME,NAME,...", help="With --body: the approvers.")
@click.option("--label", metavar="LABEL", help="A label whose items need more approvers.")
@click.option("--require", metavar="NAME,NAME,...",
              help="With --label: approvers each required, whatever the body.")
@as_option
@json_option
@with_vault
def policy_set(vault: Vault, body: str | None, need: int | None, of: str | None,
               label: str | None, require: str | None, as_name: str | None,
               as_json: bool) -> None:
    """Set a body's or a label's entry (replacing it).

    \b
    Examples:
      evault approval policy set --body ICC-OTP --need 2 --of state-legal,defense-legal,nsc-legal
      evault approval policy set --label witness-identity --require nsc-legal
    """
    from vault.service.approvals import set_body_policy, set_label_policy

    if body is not None and label is None and require is None:
        if need is None or not of:
            raise OptionsError("--body needs --need N and --of NAME,NAME,...")
        change = set_body_policy(vault, body, need, _names(of), as_name=as_name)
        _said(change, f"releases to {body} need {need} approval(s) of {', '.join(_names(of))}",
              as_json)
    elif label is not None and body is None and need is None and of is None:
        if not require:
            raise OptionsError("--label needs --require NAME,NAME,...")
        change = set_label_policy(vault, label, _names(require), as_name=as_name)
        _said(change, f"items labelled {label} need the approval of "
              f"{', '.join(_names(require))}", as_json)
    else:
        raise OptionsError("give --body BODY --need N --of NAMES, or --label LABEL --require "
                           "NAMES")


@policy.command("remove")
@click.option("--body", metavar="BODY")
@click.option("--label", metavar="LABEL")
@as_option
@json_option
@with_vault
def policy_remove(vault: Vault, body: str | None, label: str | None, as_name: str | None,
                  as_json: bool) -> None:
    """Remove a body's or a label's entry."""
    from vault.service.approvals import remove_policy

    change = remove_policy(vault, body=body, label=label, as_name=as_name)
    _said(change, f"no approval policy for {'body ' + body if body else 'label ' + str(label)}",
          as_json)


@policy.command("sign")
@as_option
@json_option
@with_vault
def policy_sign(vault: Vault, as_name: str | None, as_json: bool) -> None:
    """Adopt a hand edit of config.toml's [approvals] as the signed policy."""
    from vault.service.approvals import sign_policy

    _said(sign_policy(vault, as_name=as_name), "approval policy signed", as_json)


@policy.command("list")
@json_option
@with_vault
def policy_list(vault: Vault, as_json: bool) -> None:
    """The policy, and whether config.toml holds the signed one."""
    from vault.service.approvals import list_policy

    listed = list_policy(vault)
    if as_json:
        emit_record(listed.to_json(), True)
        return
    lines = [f"body {b}: {v['need']} of {', '.join(v['of'])}"
             for b, v in sorted(listed.bodies.items())]
    lines += [f"label {k}: requires {', '.join(v)}" for k, v in sorted(listed.labels.items())]
    click.echo("\n".join(lines or ["no release needs an approval"]))
    if not listed.signed:
        from vault.service.approvals import mismatch_message

        say(f"warning: {mismatch_message()}")
