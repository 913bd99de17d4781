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

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.clock import isoformat, parse_iso, utcnow
from vault.crypto import sshsig
from vault.crypto.keys import VerifyKey
from vault.durable import discard_staged, free_signed_pair, publish_staged, stage_files
from vault.errors import (
    ConflictError,
    NotFoundError,
    PolicyError,
    UsageError,
    VaultError,
    VerificationError,
)
from vault.formats.approval import (
    APPROVAL_NAMESPACE,
    APPROVAL_REQUEST_NAMESPACE,
    APPROVE,
    REFUSE,
    Approval,
    ApprovalRequest,
    selection_digest,
    verify_approval,
    verify_request,
)
from vault.formats.canonical import canonical_json, parse_json_object
from vault.formats.package import Party
from vault.formats.receipt import ReceiptItem
from vault.formats.safetar import printable
from vault.names import LABEL, PARTY_NAME
from vault.service import keyhistory
from vault.service.bodies import get_body
from vault.service.custody import actor_pair, lock_head, record
from vault.service.ids import new_id
from vault.service.results import Result
from vault.service.rules import checked_own_event
from vault.service.vaults import Vault
from vault.store.models import (
    Contact,
    CustodyEvent,
    Identity,
    ReceivedApproval,
    SentApprovalRequest,
)
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


# ----------------------------------------------------------------------------- requests


def _selection(items: Sequence[Any]) -> tuple[ReceiptItem, ...]:
    return tuple(ReceiptItem(i.id, i.size, i.sha256) for i in items)


def _write_signed(output: Path, data: bytes, signature: str, session: Session) -> list[Any]:
    """Stage a document and its .sig before the commit; published by the caller after it,
    removed if the transaction rolls back."""
    staged = stage_files([(output, data), (output.with_name(output.name + ".sig"),
                                           signature.encode())])
    sa_event.listen(session, "after_rollback", lambda _s: discard_staged(staged), once=True)
    return staged


@dataclass(frozen=True, slots=True)
class RequestWritten(Result):
    """An approval request signed here: its id, body, how many items, the selection's
    SHA-256, and the file and its signature."""

    request: str
    body: str
    items: int
    selection_sha256: str
    file: str
    signature: str


def request_approval(
    vault: Vault, body: str, output: Path, *, purpose: str, item_ids: Sequence[str] = (),
    case: str | None = None, label: str | None = None, tags: Sequence[tuple[str, str]] = (),
    as_name: str | None = None, now: datetime | None = None,
) -> RequestWritten:
    """Sign a request for approval of exactly one selection (the items ``package create``
    would take, release rules applied) for ``body``; write it and its signature."""
    from vault.service.custody import CustodyLog, origin
    from vault.service.identities import acting_identity
    from vault.service.packaging.plan import check_release, decide_release, select_items
    from vault.service.rules import checked_rules

    now = now or utcnow()
    sig_path = free_signed_pair(output)
    with vault.transaction() as session:
        get_body(session, body)
        items = select_items(session, item_ids=item_ids, case=case, label=label, tags=tags)
        items = check_release(decide_release(vault, session, items, body,
                                             checked_rules(vault, session)))
        identity = acting_identity(session, as_name)
        pair = actor_pair(vault, session, as_name)
        document = ApprovalRequest(
            request_id=new_id("APR"), body=body, items=_selection(items),
            selection_sha256=selection_digest(body, items), purpose=purpose,
            requester=Party(identity.name, pair.fingerprint), origin=origin(vault),
            created_at=isoformat(now))
        data = document.to_bytes()
        signature = sshsig.sign(pair.signing, data, APPROVAL_REQUEST_NAMESPACE)
        session.add(SentApprovalRequest(
            id=document.request_id, body_id=body, selection_sha256=document.selection_sha256,
            document=data, signature=signature, created_at=now))
        CustodyLog(vault, session).append(
            pair, "approval.requested", document.request_id,
            details={"body": body, "items": len(items)},
            digests={"request": hashlib.sha256(data).hexdigest(),
                     "selection": document.selection_sha256}, now=now)
        staged = _write_signed(output, data, signature, session)
    publish_staged(staged)
    return RequestWritten(document.request_id, body, len(items), document.selection_sha256,
                          str(output), str(sig_path))


def _read_signed(path: Path, what: str) -> tuple[bytes, str]:
    sig = path.with_name(path.name + ".sig")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"{path}: no such {what} file") from None
    try:
        return data, sig.read_text(encoding="ascii")
    except FileNotFoundError:
        raise NotFoundError(f"{path}: its signature {sig.name} is missing; keep FILE and "
                            "FILE.sig together") from None
    except UnicodeDecodeError:
        raise VerificationError(f"{path}: {sig.name} is not an ssh signature") from None


@dataclass(frozen=True, slots=True)
class ApprovalWritten(Result):
    """An answer signed here: the request, the decision, the signer, the files."""

    request: str
    body: str
    decision: str
    approver: str
    fingerprint: str
    file: str
    signature: str


def sign_approval(
    vault: Vault, request_path: Path, output: Path, *, refuse: bool = False,
    reason: str | None = None, as_name: str | None = None, now: datetime | None = None,
) -> ApprovalWritten:
    """Answer a request from a known sender (or this vault): approve it, or refuse it with
    a reason; write the signed answer and its signature."""
    from vault.service.contacts import known_senders
    from vault.service.custody import CustodyLog
    from vault.service.identities import acting_identity

    now = now or utcnow()
    if refuse and not reason:
        raise UsageError("approval sign --refuse: say why with --reason TEXT")
    if reason and not refuse:
        raise UsageError("approval sign: --reason goes with --refuse")
    data, signature = _read_signed(request_path, "approval request")
    sig_path = free_signed_pair(output)
    with vault.transaction() as session:
        keyhistory.check_senders(vault, session)
        request = verify_request(data, signature, known_senders(session).values())
        identity = acting_identity(session, as_name)
        pair = actor_pair(vault, session, as_name)
        answer = Approval(
            request_id=request.request_id, request_sha256=hashlib.sha256(data).hexdigest(),
            body=request.body, selection_sha256=request.selection_sha256,
            decision=REFUSE if refuse else APPROVE, reason=reason if refuse else None,
            approver=Party(identity.name, pair.fingerprint), signed_at=isoformat(now))
        document = answer.to_bytes()
        answer_sig = sshsig.sign(pair.signing, document, APPROVAL_NAMESPACE)
        CustodyLog(vault, session).append(
            pair, "approval.signed", request.request_id,
            details={"decision": answer.decision, "body": request.body,
                     "requester": request.requester.fingerprint},
            digests={"request": answer.request_sha256,
                     "approval": hashlib.sha256(document).hexdigest()}, now=now)
        staged = _write_signed(output, document, answer_sig, session)
    publish_staged(staged)
    return ApprovalWritten(request.request_id, request.body, answer.decision, identity.name,
                           pair.fingerprint, str(output), str(sig_path))


@dataclass(frozen=True, slots=True)
class ApprovalImported(Result):
    """An answer kept here: the request, the approver (its name in the policy), the
    decision, and whether it was new (``imported``) or kept already."""

    request: str
    approver: str
    fingerprint: str
    decision: str
    imported: bool


def import_approval(vault: Vault, path: Path, *, as_name: str | None = None,
                    now: datetime | None = None) -> ApprovalImported:
    """Keep an approver's answer to a request of this vault: signed by the key the policy's
    approver name has (an identity here, or a pinned contact), for that exact request."""
    from vault.service.custody import CustodyLog

    now = now or utcnow()
    data, signature = _read_signed(path, "approval")
    with vault.transaction() as session:
        policy = checked_policy(vault, session)
        names = {n for _, of in policy.bodies.values() for n in of}
        names |= {n for required in policy.labels.values() for n in required}
        keys = approver_keys(vault, session, sorted(names))
        by_key = {key.fingerprint: name for name, key in keys.items()}
        try:
            answer = verify_approval(data, signature, keys.values())
        except VerificationError as e:
            raise VerificationError(f"{path.name}: {e}; only the approvers the policy names "
                                    "(with keys not revoked) count") from None
        label = f"{path.name}: approval of {answer.request_id}"
        row = session.get(SentApprovalRequest, answer.request_id)
        if row is None:
            raise VerificationError(f"{label}: this vault made no such request; do not rely "
                                    "on it")
        if (answer.request_sha256 != hashlib.sha256(row.document).hexdigest()
                or answer.body != row.body_id
                or answer.selection_sha256 != row.selection_sha256):
            raise VerificationError(f"{label}: it answers another request than the one this "
                                    "vault signed under that id; do not rely on it")
        approver = by_key[answer.approver.fingerprint]
        digest = hashlib.sha256(data).hexdigest()
        kept = session.scalar(select(ReceivedApproval).where(
            ReceivedApproval.request_id == answer.request_id,
            ReceivedApproval.fingerprint == answer.approver.fingerprint))
        if kept is not None:
            if kept.document_sha256 == digest:
                return ApprovalImported(answer.request_id, approver,
                                        answer.approver.fingerprint, answer.decision, False)
            raise ConflictError(f"{label}: {approver} answered this request already "
                                f"({kept.decision}); a second answer is not taken")
        session.add(ReceivedApproval(
            request_id=answer.request_id, approver=approver,
            fingerprint=answer.approver.fingerprint, decision=answer.decision, document=data,
            signature=signature, document_sha256=digest, signed_at=parse_iso(answer.signed_at),
            imported_at=now))
        CustodyLog(vault, session).append(
            actor_pair(vault, session, as_name), "approval.imported", answer.request_id,
            details={"approver": approver, "fingerprint": answer.approver.fingerprint,
                     "decision": answer.decision},
            digests={"approval": digest}, now=now)
    return ApprovalImported(answer.request_id, approver, answer.approver.fingerprint,
                            answer.decision, True)


@dataclass(frozen=True, slots=True)
class RequestInfo(Result):
    """A request of this vault and the answers kept for it (approver names)."""

    request: str
    body: str
    items: int
    selection_sha256: str
    purpose: str
    created_at: str
    approved_by: tuple[str, ...]
    refused_by: tuple[str, ...]


def list_requests(vault: Vault, *, body: str | None = None) -> list[RequestInfo]:
    """Every request this vault made (newest first), with who approved and who refused."""
    with vault.transaction() as session:
        query = select(SentApprovalRequest).order_by(SentApprovalRequest.created_at.desc(),
                                                     SentApprovalRequest.id)
        if body is not None:
            query = query.where(SentApprovalRequest.body_id == body)
        out = []
        for row in session.scalars(query):
            document = ApprovalRequest.from_bytes(row.document)
            answers = list(session.scalars(select(ReceivedApproval).where(
                ReceivedApproval.request_id == row.id).order_by(ReceivedApproval.approver)))
            # The decision as the signed answer says it, not as the column does.
            decisions = [(a.approver, Approval.from_bytes(a.document).decision)
                         for a in answers]
            out.append(RequestInfo(
                row.id, row.body_id, len(document.items), document.selection_sha256,
                document.purpose, document.created_at,
                tuple(name for name, d in decisions if d == APPROVE),
                tuple(name for name, d in decisions if d == REFUSE)))
    return out


# ----------------------------------------------------------------------------- the check


@dataclass(frozen=True)
class Quorum:
    """The approvals that let a selection go: the requirement, the request (document and
    signature) and each counted approval (approver name, document, signature)."""

    requirement: Requirement
    request: tuple[bytes, str]
    approvals: tuple[tuple[str, bytes, str], ...]

    @property
    def approvers(self) -> tuple[str, ...]:
        """The approvers counted, sorted."""
        return tuple(sorted(name for name, _, _ in self.approvals))


def check_quorum(vault: Vault, session: Session, body: str, items: Sequence[Any]) -> Quorum | None:
    """None if releasing ``items`` (rows with id, size, sha256 and labels) to ``body`` needs
    no approval; the quorum that allows it; else a PolicyError naming who is missing, or
    who refused."""
    policy = checked_policy(vault, session)
    labels = {lbl.label for item in items for lbl in item.labels}
    need = requirement(policy, body, labels)
    if need is None:
        return None
    digest = selection_digest(body, items)
    keys = approver_keys(vault, session, need.approvers)
    best: Quorum | None = None
    gaps: list[str] = []
    for row in session.scalars(select(SentApprovalRequest).where(
            SentApprovalRequest.body_id == body,
            SentApprovalRequest.selection_sha256 == digest).order_by(SentApprovalRequest.id)):
        # The rows are the database's: what counts is what the signed documents say.
        try:
            request = ApprovalRequest.from_bytes(row.document)
        except VerificationError as e:
            raise VerificationError(f"approval request {row.id}: the copy kept here cannot "
                                    f"be read ({e}); run `evault custody verify`") from None
        request_sha256 = hashlib.sha256(row.document).hexdigest()
        if (request.request_id, request.body, request.selection_sha256) != (row.id, body,
                                                                              digest):
            raise VerificationError(f"approval request {row.id}: the copy kept here is for "
                                    "another request or selection than its row says; run "
                                    "`evault custody verify`")
        counted: list[tuple[str, bytes, str]] = []
        for answer in session.scalars(select(ReceivedApproval).where(
                ReceivedApproval.request_id == row.id).order_by(ReceivedApproval.approver)):
            key = keys.get(answer.approver)
            if key is None or key.fingerprint != answer.fingerprint:
                continue  # no longer this approver's key (revoked, or another now)
            checked = verify_approval(answer.document, answer.signature, [key])
            if (checked.request_id, checked.request_sha256, checked.body,
                    checked.selection_sha256) != (row.id, request_sha256, body, digest):
                raise VerificationError(f"approval of {row.id} by {answer.approver}: the copy "
                                        "kept here answers another request or selection; run "
                                        "`evault custody verify`")
            if checked.decision == REFUSE:
                raise PolicyError(f"release to {body}: {answer.approver} refused request "
                                  f"{row.id} for this selection ({checked.reason}); it cannot "
                                  "go without a new request")
            counted.append((answer.approver, answer.document, answer.signature))
        missing = need.missing(name for name, _, _ in counted)
        if missing is None:
            best = Quorum(need, (row.document, row.signature), tuple(counted))
            break
        gaps.append(f"request {row.id} lacks {missing}")
    if best is None:
        where = "; ".join(gaps) if gaps else "no request was made for it"
        raise PolicyError(
            f"release to {body}: this selection (SHA-256 {digest[:16]}...) needs approvals "
            f"({need.need} of {', '.join(need.of) or '-'}"
            + (f"; and {', '.join(need.required)}" if need.required else "")
            + f"): {where}; ask with `evault approval request --to {body} ...`, then "
            "`evault approval import` each answer")
    return best


#: Where a package carries its approvals: the declaration, the request and each answer.
DECLARATION = "evault/approvals.json"
FOLDER = "evault/approvals/"


def tag_files(quorum: Quorum) -> tuple[tuple[str, bytes], ...]:
    """The bag tag files of a quorum: ``evault/approvals.json`` declares the requirement
    (need, of, required) and each counted approval (approver, fingerprint, file); the
    request and each approval follow with their signatures. The tag manifest lists them,
    so the sender's signed statement covers them."""
    files: list[tuple[str, bytes]] = [
        (f"{FOLDER}request.json", quorum.request[0]),
        (f"{FOLDER}request.json.sig", quorum.request[1].encode()),
    ]
    listed = []
    for name, document, signature in quorum.approvals:
        answer = Approval.from_bytes(document)
        path = f"{FOLDER}{name}.json"
        files += [(path, document), (f"{path}.sig", signature.encode())]
        listed.append({"approver": name, "fingerprint": answer.approver.fingerprint,
                       "file": path})
    need = quorum.requirement
    declaration = {"type": "evault-approvals", "version": 1, "need": need.need,
                   "of": list(need.of), "required": list(need.required),
                   "request": f"{FOLDER}request.json", "approvals": listed}
    return ((DECLARATION, canonical_json(declaration)), *files)


_DECLARED = {"type", "version", "need", "of", "required", "request", "approvals"}
_LISTED = {"approver", "fingerprint", "file"}


def _declared_names(value: object, field: str) -> tuple[str, ...]:
    if type(value) is not list or not all(PARTY_NAME.matches(n) for n in value) \
            or len(set(value)) != len(value):
        raise VerificationError(f"{field} must be a list of distinct approver names")
    return tuple(value)


def _read_declaration(declared: Mapping[str, Any], body: str
                      ) -> tuple[Requirement, list[tuple[str, str, str]]]:
    """The requirement and the listed approvals (name, fingerprint, file) of a package's
    declaration, read strictly: a hostile sender's types, counts and names are refused."""
    if set(declared) != _DECLARED or declared["type"] != "evault-approvals" \
            or type(declared["version"]) is not int or declared["version"] != 1:
        raise VerificationError("not an evault-approvals declaration of version 1")
    of = _declared_names(declared["of"], "of")
    required = _declared_names(declared["required"], "required")
    need = declared["need"]
    if type(need) is not int or not (1 <= need <= len(of) or (need == 0 and not of)) \
            or not (need or required):
        raise VerificationError("need must be a count from 1 to the approvers in of (or 0 "
                                "with none, when required names some)")
    if declared["request"] != FOLDER + "request.json":
        raise VerificationError(f"request must be {FOLDER}request.json")
    if type(declared["approvals"]) is not list:
        raise VerificationError("approvals must be a list")
    listed: list[tuple[str, str, str]] = []
    for entry in declared["approvals"]:
        if type(entry) is not dict or set(entry) != _LISTED \
                or not PARTY_NAME.matches(entry["approver"]) \
                or type(entry["fingerprint"]) is not str \
                or entry["file"] != f"{FOLDER}{entry['approver']}.json":
            raise VerificationError("each approval must be {approver, fingerprint, file} with "
                                    f"an approver name and file {FOLDER}<approver>.json")
        name = entry["approver"]
        if name in {n for n, _, _ in listed}:
            raise VerificationError(f"approver {name} is listed twice")
        if name not in of and name not in required:
            raise VerificationError(f"approver {name} is neither in of nor in required")
        listed.append((name, entry["fingerprint"], entry["file"]))
    return Requirement(body, need, of, required), listed


def check_packaged(package_id: str, files: Mapping[str, bytes], body: str,
                   items: Sequence[Any], origin: str | None = None) -> tuple[str, ...] | None:
    """The approvers a decrypted package's bag shows for its own selection (``body`` and the
    statement's ``items``), against the requirement it declares; None if it carries no
    approvals. Any approval that is not for exactly this selection, not signed by the key
    declared, or a refusal, and a declaration the approvals do not meet, is a
    VerificationError (exit 3)."""
    def fail(why: str) -> VerificationError:
        return VerificationError(f"package {package_id}: approvals: {why}; do not rely on "
                                 "them, ask the sender")

    data = files.get(DECLARATION)
    if data is None:
        if any(name.startswith(FOLDER) for name in files):
            raise fail(f"files under {FOLDER} but no {DECLARATION}")
        return None
    try:
        declared = parse_json_object(data, DECLARATION)
        need, listed = _read_declaration(declared, body)
    except VaultError as e:
        raise fail(f"{DECLARATION} cannot be read ({e})") from None
    expected = {FOLDER + "request.json", FOLDER + "request.json.sig"}
    expected |= {p for _, _, path in listed for p in (path, f"{path}.sig")}
    stray = sorted(name for name in files if name.startswith(FOLDER) and name not in expected)
    if stray:
        raise fail(f"{printable(stray[0])} is not declared in {DECLARATION}")
    digest = selection_digest(body, items)

    def signed(path: str) -> tuple[bytes, str, VerifyKey]:
        document, signature = files.get(path), files.get(f"{path}.sig")
        if document is None or signature is None:
            raise fail(f"{path} or its signature is missing")
        text = signature.decode("ascii", "replace")
        try:
            return document, text, sshsig.parse(text).public_key
        except VaultError as e:
            raise fail(f"{path}.sig: {e}") from None

    request_bytes, request_sig, request_key = signed(FOLDER + "request.json")
    try:
        request = verify_request(request_bytes, request_sig, [request_key])
    except VaultError as e:
        raise fail(str(e)) from None
    if request.body != body or request.selection_sha256 != digest:
        raise fail(f"request {request.request_id} is for another selection than this package")
    if origin is not None and request.origin != origin:
        # The sender's own request, not one another vault gathered approvals for.
        raise fail(f"request {request.request_id} was made by another vault than the sender's")
    names: list[str] = []
    signers: set[str] = set()
    for name, fingerprint, path in listed:
        document, signature, key = signed(path)
        if key.fingerprint != fingerprint:
            raise fail(f"{path} is signed by {key.fingerprint}, not by the key declared")
        try:
            answer = verify_approval(document, signature, [key])
        except VaultError as e:
            raise fail(str(e)) from None
        if (answer.request_sha256 != hashlib.sha256(request_bytes).hexdigest()
                or answer.body != body or answer.selection_sha256 != digest):
            raise fail(f"{name}'s approval is for another selection than this package")
        if answer.decision != APPROVE:
            raise fail(f"{name} refused ({answer.reason})")
        if key.fingerprint in signers:
            raise fail(f"{name}'s approval is signed by a key that approved under another "
                       "name already; one signer counts once")
        signers.add(key.fingerprint)
        names.append(name)
    missing = need.missing(names)
    if missing is not None:
        raise fail(f"they do not meet the policy the package declares (missing {missing})")
    return tuple(sorted(names))


@dataclass(frozen=True, slots=True)
class AnswerInfo(Result):
    """One answer kept for a request, as its signed document says: the approver (its name
    in the policy), the key, the decision, the reason of a refusal, when it was signed."""

    approver: str
    fingerprint: str
    decision: str
    reason: str | None
    signed_at: str


@dataclass(frozen=True, slots=True)
class RequestShown(Result):
    """``approval show``: a request of this vault, its items, and every answer kept."""

    request: str
    body: str
    purpose: str
    requester: str
    created_at: str
    selection_sha256: str
    items: tuple[str, ...]
    answers: tuple[AnswerInfo, ...]


def show_request(vault: Vault, request_id: str) -> RequestShown:
    """One request this vault made and the answers kept for it."""
    with vault.transaction() as session:
        row = session.get(SentApprovalRequest, request_id)
        if row is None:
            raise NotFoundError(f"approval request {request_id}: not found; see `evault "
                                "approval list`")
        document = ApprovalRequest.from_bytes(row.document)
        answers = []
        for kept in session.scalars(select(ReceivedApproval).where(
                ReceivedApproval.request_id == row.id).order_by(ReceivedApproval.approver)):
            answer = Approval.from_bytes(kept.document)
            answers.append(AnswerInfo(kept.approver, answer.approver.fingerprint,
                                      answer.decision, answer.reason, answer.signed_at))
    return RequestShown(document.request_id, document.body, document.purpose,
                        f"{document.requester.name} {document.requester.fingerprint}",
                        document.created_at, document.selection_sha256,
                        tuple(i.id for i in document.items), tuple(answers))
