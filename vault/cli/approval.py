"""``evault approval``: the signed approval policy, requests, and the approvals kept.

May import: click, :mod:`vault.cli` and :mod:`vault.cli.common`, :mod:`vault.errors`;
:mod:`vault.service` only inside the commands (a command's ``--help`` stays fast).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from vault.cli import top_group
from vault.cli.common import (
    as_option,
    emit_record,
    emit_rows,
    json_option,
    list_output_options,
    say,
    with_vault,
)
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
    addition). Each change is a signed approval.policy_changed custody event.

    \b
    Examples:
      evault approval policy set --body ICC-OTP --need 2 --of state-legal,defense-legal,nsc-legal
      evault approval policy list
    """


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
    """Remove a body's or a label's entry.

    \b
    Example:
      evault approval policy remove --label witness-identity
    """
    from vault.service.approvals import remove_policy

    change = remove_policy(vault, body=body, label=label, as_name=as_name)
    _said(change, f"no approval policy for {'body ' + body if body else 'label ' + str(label)}",
          as_json)


@policy.command("sign")
@as_option
@json_option
@with_vault
def policy_sign(vault: Vault, as_name: str | None, as_json: bool) -> None:
    """Adopt a hand edit of config.toml's [approvals] as the signed policy.

    \b
    Example:
      evault approval policy sign --as registry-office
    """
    from vault.service.approvals import sign_policy

    _said(sign_policy(vault, as_name=as_name), "approval policy signed", as_json)


@policy.command("list")
@json_option
@with_vault
def policy_list(vault: Vault, as_json: bool) -> None:
    """The policy, and whether config.toml holds the signed one.

    \b
    Example:
      evault approval policy list --json
    """
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


@approval.command("request")
@click.option("--to", "body_id", required=True, metavar="BODY", help="The receiving body.")
@click.option("--item", "item_ids", multiple=True, metavar="ID", help="An item; repeatable.")
@click.option("--case", "case_id", metavar="CASE", help="All items of a case (with filters).")
@click.option("--label", metavar="LABEL", help="With --case: only items with this label.")
@click.option("--tag", "tags", multiple=True, metavar="K=V",
              help="With --case: only items with this tag; repeatable.")
@click.option("--purpose", required=True, help="Why the release is asked for (one line).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The request file; its signature goes to FILE.sig.")
@as_option
@json_option
@with_vault
def approval_request(vault: Vault, body_id: str, item_ids: tuple[str, ...],
                     case_id: str | None, label: str | None, tags: tuple[str, ...],
                     purpose: str, output: Path, as_name: str | None, as_json: bool) -> None:
    """Sign a request naming exactly what would go to BODY (the items `package create`
    would take, each by id and SHA-256), for the approvers to answer.

    \b
    Example:
      evault approval request --to ICC-OTP --case UA-2026-0042 --purpose "RFA 17" -o req.json
    """
    from vault.service.approvals import request_approval
    from vault.service.intake import parse_tags

    written = request_approval(vault, body_id, output, purpose=purpose, item_ids=item_ids,
                               case=case_id, label=label, tags=parse_tags(tags),
                               as_name=as_name)
    if as_json:
        emit_record(written.to_json(), True)
    else:
        say(f"wrote approval request {written.request} for {written.body} ({written.items} "
            f"item(s)) to {written.file} and {written.signature}; logged approval.requested")


@approval.command("sign")
@click.argument("request", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The signed answer; its signature goes to FILE.sig.")
@click.option("--refuse", is_flag=True, help="Refuse the release (needs --reason).")
@click.option("--reason", metavar="TEXT", help="With --refuse: why, in one line.")
@as_option
@json_option
@with_vault
def approval_sign(vault: Vault, request: Path, output: Path, refuse: bool,
                  reason: str | None, as_name: str | None, as_json: bool) -> None:
    """Answer a request from a known sender: approve it, or refuse it with a reason.

    \b
    Examples:
      evault approval sign req.json --as state-legal -o approval-state-legal.json
      evault approval sign req.json --refuse --reason "Witness at risk" -o refusal.json
    """
    from vault.service.approvals import sign_approval

    written = sign_approval(vault, request, output, refuse=refuse, reason=reason,
                            as_name=as_name)
    if as_json:
        emit_record(written.to_json(), True)
    else:
        said = "approved" if written.decision == "approve" else "refused"
        say(f"{written.approver} {said} request {written.request} for {written.body}: "
            f"wrote {written.file} and {written.signature}; logged approval.signed")


@approval.command("import")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path), metavar="APPROVAL...")
@as_option
@json_option
@with_vault
def approval_import(vault: Vault, files: tuple[Path, ...], as_name: str | None,
                    as_json: bool) -> None:
    """Keep approvers' answers to this vault's requests (each FILE with its FILE.sig),
    signed by the keys the approval policy names.

    \b
    Example:
      evault approval import approval-state-legal.json approval-defense-legal.json
    """
    from vault.service.approvals import import_approval

    done = [import_approval(vault, path, as_name=as_name) for path in files]
    if as_json:
        emit_rows([d.to_json() for d in done], "json", ())
        return
    for d in done:
        what = "approval" if d.decision == "approve" else "refusal"
        say(f"{what} of request {d.request} by {d.approver} "
            + ("kept; logged approval.imported" if d.imported else "kept already"))


@approval.command("list")
@click.option("--body", metavar="BODY", help="Only requests for this body.")
@list_output_options
@with_vault
def approval_list(vault: Vault, body: str | None, fmt: str | None) -> None:
    """The requests this vault made, with who approved and who refused each.

    \b
    Example:
      evault approval list --body ICC-OTP
    """
    from vault.service.approvals import list_requests

    rows = [r.to_json() for r in list_requests(vault, body=body)]
    if fmt is None:
        rows = [{**r, "approved_by": ", ".join(r["approved_by"]) or "-",
                 "refused_by": ", ".join(r["refused_by"]) or "-"} for r in rows]
    emit_rows(rows, fmt, ("request", "body", "items", "created_at", "approved_by",
                          "refused_by"))


@approval.command("show")
@click.argument("request_id", metavar="ID")
@json_option
@with_vault
def approval_show(vault: Vault, request_id: str, as_json: bool) -> None:
    """One request this vault made, its items and every answer kept for it.

    \b
    Example:
      evault approval show APR-0123456789AB
    """
    from vault.service.approvals import show_request

    shown = show_request(vault, request_id)
    if as_json:
        emit_record(shown.to_json(), True)
        return
    record = shown.to_json()
    record["items"] = ", ".join(shown.items)
    record["answers"] = "; ".join(
        f"{a.approver} {a.decision}d at {a.signed_at}" + (f" ({a.reason})" if a.reason else "")
        for a in shown.answers) or "-"
    emit_record(record, False)
