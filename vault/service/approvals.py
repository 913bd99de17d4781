"""Release approvals: who must agree before items go to a body, and the agreements kept.

    >>> set_body_policy(vault, "ICC-OTP", 2, ["state-legal", "defense-legal", "nsc-legal"],
    ...                 as_name="registry-office")                          # doctest: +SKIP
    >>> requirement(policy, "ICC-OTP", {"witness-identity"})                 # doctest: +SKIP
    Requirement(body='ICC-OTP', need=2, of=(...), required=('nsc-legal',))

The policy lives in ``config.toml`` (``[approvals.bodies]``: a body needs ``need``
approvals of the approvers ``of``; ``[approvals.labels]``: an item with the label needs each
named approver in addition, whatever the body). A body with no entry and items without such
labels need no approval. As with the release rules (:mod:`vault.service.rules`), every change
made with ``evault approval policy`` is a signed ``approval.policy_changed`` custody event
carrying the whole resulting policy, and a policy edited by hand stops package build and
export until it is signed (``evault approval policy sign``) or undone.

An approver is a name: an identity of this vault, or a contact whose card was added pinned
by fingerprint (another office's officer). Its key is the one the vault's signed key
history has for that name, looked up when an approval is imported or counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.clock import utcnow
from vault.crypto.keys import VerifyKey
from vault.errors import ConflictError, NotFoundError, UsageError, VaultError, VerificationError
from vault.names import LABEL, PARTY_NAME
from vault.service import keyhistory
from vault.service.bodies import get_body
from vault.service.custody import actor_pair, lock_head, record
from vault.service.results import Result
from vault.service.rules import checked_own_event
from vault.service.vaults import Vault
from vault.store.models import Contact, CustodyEvent, Identity
from vault.store.vaultdir import load_config, write_config

ACTION = "approval.policy_changed"
#: The subject of every policy event: ``evault custody show approval-policy``.
SUBJECT = "approval-policy"


@dataclass(frozen=True)
class Policy:
    """Who must approve a release: per body (need, of) and per label (required approvers)."""

    bodies: dict[str, tuple[int, tuple[str, ...]]]
    labels: dict[str, tuple[str, ...]]

    def to_dict(self) -> dict[str, Any]:
        """Canonical form, as signed: names sorted."""
        return {"bodies": {b: {"need": need, "of": sorted(of)}
                           for b, (need, of) in self.bodies.items()},
                "labels": {label: sorted(names) for label, names in self.labels.items()}}

    def normal(self) -> Policy:
        """The same policy with each name list sorted."""
        return Policy({b: (need, tuple(sorted(of))) for b, (need, of) in self.bodies.items()},
                      {k: tuple(sorted(v)) for k, v in self.labels.items()})

    @property
    def empty(self) -> bool:
        """True if nothing needs an approval."""
        return not self.bodies and not self.labels


@dataclass(frozen=True, slots=True)
class Requirement(Result):
    """What a release of some items to ``body`` needs: ``need`` approvals among ``of`` (0
    and none if the body has no entry), and every approver in ``required`` (from labels)."""

    body: str
    need: int
    of: tuple[str, ...]
    required: tuple[str, ...]

    @property
    def approvers(self) -> tuple[str, ...]:
        """Every approver whose approval counts, sorted."""
        return tuple(sorted(set(self.of) | set(self.required)))

    def missing(self, approved: Iterable[str]) -> str | None:
        """None if ``approved`` (approver names) meet it; else who is missing, in words."""
        have = set(approved)
        gaps: list[str] = []
        counted = len(have & set(self.of))
        if counted < self.need:
            others = sorted(set(self.of) - have)
            gaps.append(f"{self.need - counted} more of {', '.join(others)}")
        gaps += [name for name in self.required if name not in have]
        return "; ".join(gaps) or None


def requirement(policy: Policy, body: str, labels: Iterable[str]) -> Requirement | None:
    """What releasing items with ``labels`` to ``body`` needs; None if nothing."""
    need, of = policy.bodies.get(body, (0, ()))
    required = sorted({name for label in labels for name in policy.labels.get(label, ())})
    if not need and not required:
        return None
    return Requirement(body, need, tuple(sorted(of)), tuple(required))


# ----------------------------------------------------------------------------- signed history


def configured(vault: Vault) -> Policy:
    """The policy ``config.toml`` holds now."""
    return Policy(dict(vault.config.approvals_bodies), dict(vault.config.approvals_labels))


def signed(vault: Vault, session: Session) -> Policy | None:
    """The policy of the newest ``approval.policy_changed`` event, or None if there is none;
    the event must be this vault's, signed by one of its identity keys."""
    row = session.scalars(select(CustodyEvent).where(CustodyEvent.action == ACTION)
                          .order_by(CustodyEvent.seq.desc()).limit(1)).first()
    if row is None:
        return None
    try:
        details = checked_own_event(vault, session, row, ACTION, SUBJECT,
                                    "approval policy").details
        return Policy(
            {str(b): (int(v["need"]), tuple(str(n) for n in v["of"]))
             for b, v in details["bodies"].items()},
            {str(k): tuple(str(n) for n in v) for k, v in details["labels"].items()})
    except VaultError as e:
        why = str(e)
    except (KeyError, TypeError, AttributeError, ValueError):
        why = "its details are not an approval policy"
    raise VerificationError(
        f"custody event {row.seq}: the newest approval.policy_changed event cannot be trusted "
        f"({why}), so the approval policy cannot be checked; run `evault custody verify`")


def mismatch_message() -> str:
    """The one line that stops package build and export after a hand edit."""
    return ("config.toml's approval policy differs from the signed history; see `evault "
            "approval policy list`, then adopt the edit with `evault approval policy sign --as "
            "NAME` or restore the file")


def checked_policy(vault: Vault, session: Session) -> Policy:
    """The configured policy, if it is the signed one; else a VerificationError (exit 3)."""
    config = configured(vault).normal()
    history = signed(vault, session)
    if config != (history.normal() if history is not None else Policy({}, {})):
        raise VerificationError(mismatch_message())
    return config


# ----------------------------------------------------------------------------- approvers


def approver_keys(vault: Vault, session: Session, names: Iterable[str]) -> dict[str, VerifyKey]:
    """Name -> key of each approver that is an identity of this vault (its current key) or
    an active contact, as the signed key history has them; names that are neither are
    left out (the caller says they cannot approve)."""
    from vault.service.contacts import known_senders
    from vault.service.identities import current_key

    keyhistory.check_senders(vault, session)
    known = known_senders(session)
    keys: dict[str, VerifyKey] = {}
    for name in names:
        identity = session.scalar(select(Identity).where(Identity.name == name,
                                                         Identity.revoked_at.is_(None)))
        fingerprints = [current_key(identity).fingerprint] if identity is not None else []
        fingerprints += list(session.scalars(select(Contact.fingerprint).where(
            Contact.name == name, Contact.revoked_at.is_(None))))
        found = [known[f] for f in fingerprints if f in known]
        if len(found) == 1:
            keys[name] = found[0]
        elif len(found) > 1:
            raise ConflictError(f"approver {name}: is both an identity and a contact (or two "
                                "contacts); rename one, or approvals by that name are ambiguous")
    return keys


# ----------------------------------------------------------------------------- changes


@dataclass(frozen=True, slots=True)
class PolicyChange(Result):
    """What a policy command did: the resulting policy, or ``changed=False``."""

    policy: Policy
    changed: bool

    def to_json(self) -> dict[str, Any]:
        """``changed`` first, then the policy as signed (``bodies``, ``labels``)."""
        return {"changed": self.changed, **self.policy.to_dict()}


def _current(vault: Vault, session: Session) -> Policy:
    lock_head(session)
    vault.config = load_config(vault.root)
    return checked_policy(vault, session)


def _commit(vault: Vault, session: Session, new: Policy, change: dict[str, Any],
            as_name: str | None, now: datetime | None) -> PolicyChange:
    new = new.normal()
    pair = actor_pair(vault, session, as_name)
    record(vault, session, pair, ACTION, SUBJECT, details={**change, **new.to_dict()},
           now=now or utcnow())
    session.flush()
    config = replace(vault.config, approvals_bodies=dict(new.bodies),
                     approvals_labels=dict(new.labels))
    write_config(vault.root, config)
    vault.config = config
    return PolicyChange(new, True)


def _check_names(names: Sequence[str], what: str) -> tuple[str, ...]:
    if not names:
        raise UsageError(f"{what}: name one or more approvers")
    for name in names:
        PARTY_NAME.check(name, f"{what}: approver {name!r}")
    if len(set(names)) != len(names):
        raise UsageError(f"{what}: an approver is named twice")
    return tuple(sorted(names))


def set_body_policy(vault: Vault, body: str, need: int, of: Sequence[str], *,
                    as_name: str | None = None, now: datetime | None = None) -> PolicyChange:
    """Releases to ``body`` need ``need`` approvals among ``of``."""
    names = _check_names(of, f"approval policy for {body}")
    if not 1 <= need <= len(names):
        raise UsageError(f"approval policy for {body}: --need must be from 1 to the "
                         f"{len(names)} approvers named")
    with vault.transaction() as session:
        get_body(session, body)
        current = _current(vault, session)
        if current.bodies.get(body) == (need, names):
            return PolicyChange(current, False)
        new = Policy({**current.bodies, body: (need, names)}, current.labels)
        return _commit(vault, session, new, {"change": "set", "body": body}, as_name, now)


def set_label_policy(vault: Vault, label: str, names: Sequence[str], *,
                     as_name: str | None = None, now: datetime | None = None) -> PolicyChange:
    """Items with ``label`` need each of ``names`` to approve, whatever the body."""
    LABEL.check(label, "approval policy")
    required = _check_names(names, f"approval policy for label {label}")
    with vault.transaction() as session:
        current = _current(vault, session)
        if current.labels.get(label) == required:
            return PolicyChange(current, False)
        new = Policy(current.bodies, {**current.labels, label: required})
        return _commit(vault, session, new, {"change": "set", "label": label}, as_name, now)


def remove_policy(vault: Vault, *, body: str | None = None, label: str | None = None,
                  as_name: str | None = None, now: datetime | None = None) -> PolicyChange:
    """Remove a body's or a label's entry."""
    if (body is None) == (label is None):
        raise UsageError("approval policy remove: give --body BODY or --label LABEL")
    with vault.transaction() as session:
        current = _current(vault, session)
        bodies, labels = dict(current.bodies), dict(current.labels)
        if body is not None:
            if bodies.pop(body, None) is None:
                raise NotFoundError(f"approval policy: none for body {body}; see `evault "
                                    "approval policy list`")
            change = {"change": "remove", "body": body}
        else:
            assert label is not None
            if labels.pop(label, None) is None:
                raise NotFoundError(f"approval policy: none for label {label}; see `evault "
                                    "approval policy list`")
            change = {"change": "remove", "label": label}
        return _commit(vault, session, Policy(bodies, labels), change, as_name, now)


def sign_policy(vault: Vault, *, as_name: str | None = None,
                now: datetime | None = None) -> PolicyChange:
    """Adopt config.toml's policy as it is (a deliberate hand edit)."""
    with vault.transaction() as session:
        lock_head(session)
        vault.config = load_config(vault.root)
        config = configured(vault).normal()
        history = signed(vault, session)
        if config == (history.normal() if history is not None else Policy({}, {})):
            return PolicyChange(config, False)
        for body in config.bodies:
            get_body(session, body)
        for label in config.labels:
            LABEL.check(label, "config.toml: approval policy")
        return _commit(vault, session, config, {"change": "sign"}, as_name, now)


@dataclass(frozen=True, slots=True)
class PolicyList(Result):
    """``evault approval policy list``: the policy, and whether config.toml is signed."""

    bodies: dict[str, dict[str, Any]]
    labels: dict[str, list[str]]
    signed: bool


def list_policy(vault: Vault) -> PolicyList:
    """The configured policy and whether it is the signed one."""
    with vault.transaction() as session:
        config = configured(vault).normal()
        history = signed(vault, session)
    same = config == (history.normal() if history is not None else Policy({}, {}))
    shown = config.to_dict()
    return PolicyList(shown["bodies"], shown["labels"], same)
