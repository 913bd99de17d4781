"""Planning a package: which items go to which body, checked, with the checkpoint it carries.

    >>> draft = plan_package(vault, body_id="ICC-OTP", case="UA-2026-0042")     # doctest: +SKIP
    >>> [item.id for item in draft.items]                                       # doctest: +SKIP

:func:`plan_package` decides a package in one short transaction: the items
(:func:`select_items`), the release rules (:func:`check_release`), the body's active keys
and the sender's escrow key, the signed custody checkpoint and the custody excerpt the
package will carry (:data:`EXCERPT_ACTIONS`). Its result, a :class:`PackageDraft`, is what
:mod:`vault.service.packaging.build` writes. Nothing is written here but the checkpoint.

Imports the service modules it plans with (custody, identities, items, rules, keyhistory,
intake's storage key, the CASE/UCO export), ``vault.formats.package``, ``vault.custody``
and ``vault.store``; never the other modules of this package.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, selectinload

from vault.clock import utcnow
from vault.crypto.age import AgeIdentity
from vault.custody.events import Event
from vault.custody.merkle import node_hash
from vault.durable import TEMP_PREFIX, require_folder
from vault.errors import (
    ConflictError,
    NotFoundError,
    PolicyError,
    UsageError,
    VerificationError,
)
from vault.formats.canonical import canonical_json
from vault.formats.case_uco import render_case_uco
from vault.formats.package import ItemLink, RecipientKey
from vault.service import approvals, keyhistory, timestamping
from vault.service.case_uco import export_of
from vault.service.custody import actor_pair, checkpoint_now, leaf_hashes
from vault.service.identities import KeyPair, current_key, get_identity
from vault.service.ids import new_id
from vault.service.intake import storage_identity
from vault.service.items import (
    check_signed_rows,
    get_case,
    item_info,
    original_of,
    signed_intake,
)
from vault.service.rules import (
    RuleSet,
    a_copy,
    checked_rules,
    copy_verdict,
    own_keys,
    release_verdict,
)
from vault.service.vaults import Vault
from vault.store.models import (
    Blob,
    Body,
    CustodyEvent,
    Identity,
    IdentityKey,
    Item,
    ItemLabel,
    ItemTag,
)


def select_items(
    session: Session,
    *,
    item_ids: Sequence[str] = (),
    case: str | None = None,
    label: str | None = None,
    tags: Sequence[tuple[str, str]] = (),
) -> list[Item]:
    """The items a package will hold, in intake order; unknown ids and empty results refused."""
    if item_ids and (case or label or tags):
        raise UsageError("package create: give --item IDs, or --case with filters, not both")
    if not item_ids and not case:
        raise UsageError("package create: choose items with --item ID... or --case CASE")
    stmt = select(Item).options(
        selectinload(Item.labels), selectinload(Item.tags), selectinload(Item.digests)
    )
    if item_ids:
        found = {i.id: i for i in session.scalars(stmt.where(Item.id.in_(item_ids)))}
        for item_id in item_ids:
            if item_id not in found:
                raise NotFoundError(f"item {item_id}: not found; see `evault items list`")
        if len(set(item_ids)) != len(item_ids):
            raise UsageError("package create: an item is given twice")
        return sorted(found.values(), key=lambda i: i.intake_seq)
    assert case is not None
    get_case(session, case)
    stmt = stmt.where(Item.case_id == case)
    if label:
        stmt = stmt.where(Item.id.in_(select(ItemLabel.item_id).where(ItemLabel.label == label)))
    for key, _value in tags:
        stmt = stmt.where(Item.id.in_(select(ItemTag.item_id).where(ItemTag.key == key)))
    # Tag values are sealed at rest (vault.store.sealed): compared once decrypted.
    items = [item for item in session.scalars(stmt.order_by(Item.intake_seq))
             if all(any(t.key == k and t.value == v for t in item.tags) for k, v in tags)]
    if not items:
        filters = "".join(
            [f" with label {label}" if label else ""] + [f" tagged {k}={v}" for k, v in tags]
        )
        raise NotFoundError(f"case {case}: no items{filters}; nothing to package")
    return items


@dataclass(frozen=True)
class Release:
    """What the release rules make of a selection for one body: the items that go (in
    intake order), those withheld (with why, in one phrase), and the originals replaced by
    the derived copy a rule names for that body, as (original, copy, relation)."""

    items: list[Item]
    withheld: list[tuple[Item, str]]
    substituted: list[tuple[str, str, str]]


def decide_release(vault: Vault, session: Session, items: Sequence[Item], body_id: str,
                   rules: RuleSet, *, substitute: bool = True) -> Release:
    """Apply the release rules to ``items`` for ``body_id``.

    An item whose label lets the body have only a derived copy (``rule add ... --relation
    redacted``) is replaced by its newest such copy, made from it directly, when
    ``substitute`` (choosing a package's items); without one, or without ``substitute``
    (checking a package already built), it is withheld. The copy must itself be free to go.
    An item's labels, and whether it is a copy and of which item, are read as its signed
    intake event has them, not only from rows a database holder could change
    (:class:`_SignedIntake`); a copy is bound by the labels of the items it was made from.
    """
    intake = _SignedIntake(vault, session, items)
    chosen: dict[str, Item] = {}
    withheld: list[tuple[Item, str]] = []
    substituted: list[tuple[str, str, str]] = []
    for item in items:
        labels = intake.labels(item)
        reason = release_verdict(labels, body_id, rules.rules, rules.default)
        wanted = rules.copy_for(labels, body_id) if reason is None else None
        if reason is None and (wanted is None or wanted[1] == item.derivation):
            chosen.setdefault(item.id, item)
            continue
        if reason is None and wanted is not None:
            label, relation = wanted
            reason = (f"label {label} may go to {body_id} only as {a_copy(relation)} "
                      "(release rule)")
            copy = intake.newest_copy(item, relation) if substitute else None
            if substitute and copy is None:
                reason += (f", and it has none; make one with `evault ingest FILE "
                           f"--derived-from {item.id} --relation {relation}`")
            if copy is not None:
                why = copy_verdict(intake.labels(copy), copy.derivation, body_id, rules)
                if why is None:
                    chosen.setdefault(copy.id, copy)
                    substituted.append((item.id, copy.id, relation))
                    continue
                reason += f"; its {relation} copy {copy.id} may not go either: {why}"
        assert reason is not None
        withheld.append((item, reason))
    return Release(sorted(chosen.values(), key=lambda i: i.intake_seq), withheld, substituted)


class _SignedIntake:
    """Items' signed intake events (``item.ingested``, or ``item.received``), read for one
    release decision: its label rows and derivation columns must say what the signed event
    says, so a database holder who deletes a label row, or marks an item as another's
    redacted copy, stops the package (exit 3) instead of releasing it."""

    def __init__(self, vault: Vault, session: Session, items: Sequence[Item]) -> None:
        self.vault = vault
        self.session = session
        self.keys: Callable[[str], bytes | None] | None = None
        self.checked: set[str] = set()
        seqs = [i.intake_seq for i in items]
        self.rows: dict[int, CustodyEvent] = {}
        for start in range(0, len(seqs), 5000):  # one query per 5,000, not one per item
            self.rows.update((row.seq, row) for row in session.scalars(select(CustodyEvent)
                             .where(CustodyEvent.seq.in_(seqs[start:start + 5000]))))

    def check(self, item: Item) -> None:
        """Refuse (exit 3) an item whose rows differ from its signed intake event."""
        if item.id in self.checked:
            return
        self.keys = self.keys or own_keys(self.vault, self.session)
        action = "item.received" if item.received_from is not None else "item.ingested"
        event = signed_intake(self.vault, self.session, item,
                              row=self.rows.get(item.intake_seq), keys=self.keys,
                              after="nothing was packaged; run `evault custody verify`")
        signed_labels = event.details.get("labels")
        if signed_labels is not None:  # an item received before labels were signed: none
            missing = sorted({str(lb) for lb in signed_labels}
                             - {lbl.label for lbl in item.labels})
            if missing:
                raise VerificationError(
                    f"item {item.id}: the label {missing[0]} its signed {action} event names "
                    "is missing from the database; nothing was packaged; run `evault custody "
                    "verify`")
        link: Any = event.details.get("derived_from")
        signed = ((link.get("id"), link.get("relation"), link.get("sha256"))
                  if isinstance(link, dict) else (None, None, None))
        if signed != (item.derived_from, item.derivation, item.derived_from_sha256):
            said = (a_copy(item.derivation) + (f" of {item.derived_from}"
                                                    if item.derived_from else "")
                    if item.derivation else "not a derived copy")
            raise VerificationError(
                f"item {item.id}: the database says it is {said}, its signed intake event "
                "does not; nothing was packaged; run `evault custody verify`")
        self.checked.add(item.id)

    def labels(self, item: Item) -> list[str]:
        """The item's labels and those of the items it was made from, each checked: a copy
        is restricted as its original is (one ingested before copies took their original's
        labels included)."""
        found: list[str] = []
        seen: set[str] = set()
        current: Item | None = item
        while current is not None and current.id not in seen:
            self.check(current)
            seen.add(current.id)
            found += [lbl.label for lbl in current.labels if lbl.label not in found]
            current = original_of(self.session, current)
        return found

    def newest_copy(self, item: Item, relation: str) -> Item | None:
        """The newest copy made from ``item`` directly by ``relation``, if any: made here,
        or received from the sender ``item`` came from, whose signed link names it by its id
        there and its SHA-256. Every copy of the item is checked, so that one marked in the
        database as of another kind cannot hide the newest."""
        made = and_(Item.derived_from == item.id, Item.received_from.is_(None))
        if item.received_from is not None and item.source_item is not None:
            made = or_(made, and_(Item.received_from == item.received_from,
                                  Item.derived_from == item.source_item,
                                  Item.derived_from_sha256 == item.sha256))
        copies = list(self.session.scalars(
            select(Item).options(selectinload(Item.labels), selectinload(Item.tags),
                                 selectinload(Item.digests))
            .where(made).order_by(Item.intake_seq.desc())))
        for copy in copies:
            self.check(copy)
        return next((c for c in copies if c.derivation == relation), None)


def check_release(release: Release) -> list[Item]:
    """The items that go (see :func:`decide_release`); refuse if the rules withhold any."""
    for item, reason in release.withheld:
        raise PolicyError(f"item {item.id}: {reason}; leave it out of this package")
    return release.items


def active_keys(body: Body) -> list[RecipientKey]:
    keys = [RecipientKey(k.fingerprint, k.age_recipient) for k in body.keys
            if k.revoked_at is None]
    if not keys:
        raise PolicyError(
            f"body {body.id}: has no active key; add one with `evault body key add {body.id}`"
        )
    return keys



def _item_metadata(item: Item, bag_path: str, link: ItemLink | None) -> dict[str, Any]:
    """items.json's entry: the vault's full view of the item plus its path in the bag, and
    for a derived copy the link its statement item signs (never more of the original)."""
    return {**item_info(item).to_json(), "path": bag_path,
            **({"derived_from": link.to_json()} if link is not None else {})}


def item_link(session: Session, item: Item) -> ItemLink | None:
    """The link a package carries for a derived copy: the original's id and SHA-256 as this
    vault knows them, the relation and the tool.

    A copy made here names its original by its id here. A copy received in a package keeps
    the link its sender signed (the original's id in the sender's vault), except when this
    vault holds that original and its SHA-256 is the one the link names: it is then named
    by its id here, so that a body that received the original from this vault too finds it.
    An original held here with another SHA-256 does not become the link's: what goes on is
    the sender's claim, unchanged, for the body to check.
    """
    if item.derived_from is None or item.derivation is None:
        return None
    sha256 = item.derived_from_sha256
    if item.received_from is None:
        held = session.get(Item, item.derived_from)
        original = item.derived_from
        if sha256 is None and held is not None:
            sha256 = held.sha256
    else:
        held = original_of(session, item)
        original = held.id if held is not None and held.sha256 == sha256 else item.derived_from
    if sha256 is None:
        return None
    return ItemLink(original, sha256, item.derivation, item.derivation_tool)


#: The events of an item that its package's custody excerpt carries: how the sending office
#: came to hold it (``item.ingested``; ``item.received``, which names the sender it came from)
#: and what it did with it in house (``item.exported``). Events that name a body or another
#: package (``package.sent`` and ``package.acknowledged`` of the packages that carried the
#: item before) stay out: a body must not learn who else received the same items. The
#: inclusion proofs of the events carried hold only hashes of the others. An action added
#: to the log later stays out until it is named here (docs/security.md, the excerpt claim):
#: so do ``item.export.started`` and ``item.export.abandoned``, this office's bookkeeping of
#: export runs, which an earlier evault would refuse to find in an excerpt.
EXCERPT_ACTIONS = frozenset({"item.ingested", "item.received", "item.exported"})


def _excerpt_events(
    session: Session, items: Sequence[Item], checkpoint_size: int
) -> list[CustodyEvent]:
    """The events of the items a body may see (:data:`EXCERPT_ACTIONS`) before the
    checkpoint, in log order: those the custody excerpt carries, and with
    ``--with-case-uco`` the CASE/UCO document too."""
    ids = [i.id for i in items]
    rows = session.scalars(
        select(CustodyEvent)
        .where(CustodyEvent.subject.in_(ids), CustodyEvent.seq < checkpoint_size,
               CustodyEvent.action.in_(EXCERPT_ACTIONS))
        .order_by(CustodyEvent.seq)
    ).all()
    # The signed bytes decide, not the action and subject columns a database holder can
    # relabel (another item's event relabelled as one of these would travel to the body).
    wanted = set(ids)
    return [e for e in rows
            if (signed := _signed_fields(e))[0] in EXCERPT_ACTIONS and signed[1] in wanted]


def _custody_excerpt(
    session: Session, items: Sequence[Item], checkpoint_size: int
) -> bytes:
    """custody.jsonl: each event of the items a body may see (:func:`_excerpt_events`), its
    actor's key and its inclusion proof."""
    events = _excerpt_events(session, items, checkpoint_size)
    keys = {k.fingerprint: k for k in session.scalars(select(IdentityKey))}
    leaves = leaf_hashes(session, checkpoint_size) if events else []
    path = _inclusion_paths(leaves)
    lines = []
    for event in events:
        key = keys.get(event.actor)
        proof = path(event.seq)
        lines.append(
            canonical_json(
                {
                    "seq": event.seq,
                    "event": event.body.decode("utf-8"),
                    "signature": base64.b64encode(event.signature).decode(),
                    "actor_key": _openssh(key.signing_key) if key else None,
                    "tree_size": checkpoint_size,
                    "proof": [base64.b64encode(h).decode() for h in proof],
                }
            )
            + b"\n"
        )
    return b"".join(lines)


def _signed_fields(event: CustodyEvent) -> tuple[str, str]:
    """The action and subject in an event's signed bytes."""
    try:
        decoded = Event.decode(event.body)
        return decoded.action, decoded.subject
    except VerificationError as e:
        reason = str(e).removeprefix("custody event: ")
        raise VerificationError(f"custody event {event.seq}: {reason}; nothing was packaged; "
                                "run `evault custody verify`") from None


def _inclusion_paths(leaves: list[bytes]) -> Callable[[int], list[bytes]]:
    """Inclusion proofs in the tree of ``leaves``, every level of the tree built once.

    The proofs of ``merkle.inclusion_proof``, which rebuilds the whole tree for each proof:
    a package of a thousand items, each with a few events, paid minutes for that. As there,
    the tree is built bottom-up, an odd last node carried up a level unchanged (RFC 9162).
    """
    levels = [leaves]
    while len(levels[-1]) > 1:
        level = levels[-1]
        parents = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) & 1:
            parents.append(level[-1])
        levels.append(parents)

    def path(index: int) -> list[bytes]:
        proof = []
        for level in levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                proof.append(level[sibling])
            index >>= 1
        return proof

    return path


def _openssh(raw: bytes) -> str:
    from vault.crypto.keys import VerifyKey

    return VerifyKey(raw).openssh()


def _sender_org(vault: Vault, identity: Identity) -> str:
    return identity.org or vault.config.organisation or identity.name


def blob_versions(vault: Vault, session: Session, blob_ids: Sequence[str]) -> dict[str, str]:
    """The S3 object version each blob was written as (blobs on S3 in a versioned bucket
    only; a folder keeps none, and nothing is asked of its database)."""
    if vault.config.blobs is None:
        return {}
    out: dict[str, str] = {}
    unique = sorted(set(blob_ids))
    for start in range(0, len(unique), 5000):
        out.update((blob_id, version) for blob_id, version in session.execute(
            select(Blob.id, Blob.version_id).where(Blob.id.in_(unique[start:start + 5000]),
                                                  Blob.version_id.is_not(None)))
            if version is not None)
    return out


class DraftItem(NamedTuple):
    """An item as a package draft holds it."""

    id: str
    blob_id: str
    size: int
    sha256: str
    path: str  # in the bag, below data/
    seq: int  # intake order
    link: ItemLink | None = None  # a derived copy's link to its original (item_link)
    blob_version: str | None = None  # the S3 object version its blob was written as


@dataclass
class PackageDraft:
    """A package decided in one short transaction: what goes in, to whom, signed by whom.

    Its file is written outside any transaction
    (:func:`~vault.service.packaging.build.write_package_file`), so a build of many GiB does
    not hold the vault's write lock, and recorded in a second one
    (:func:`~vault.service.packaging.build.record_package`), which checks again what may
    have changed meanwhile.
    """

    package_id: str
    body_id: str
    target: Path
    temp: Path
    force: bool
    recipients: tuple[RecipientKey, ...]
    escrow: RecipientKey
    pair: KeyPair
    sender_name: str
    org: str
    storage: AgeIdentity
    checkpoint: str
    checkpoint_size: int
    timestamps: tuple[str, ...]
    excerpt: bytes
    items: tuple[DraftItem, ...]
    metadata: list[dict[str, Any]]
    reference: str | None
    purpose: str | None
    confidential_reference: bool
    now: datetime
    #: The approvals that let this selection go, as bag tag files (path, bytes), and the
    #: approvers counted (:func:`vault.service.approvals.check_quorum`); none if not needed.
    approval_files: tuple[tuple[str, bytes], ...] = ()
    approvers: tuple[str, ...] = ()
    #: Originals the release rules replaced by a derived copy: (original, copy, relation).
    substituted: tuple[tuple[str, str, str], ...] = ()
    #: With ``--with-case-uco``: the tag file ``evault/case-uco.jsonld`` (:data:`CASE_UCO`),
    #: the package's items and the events of its custody excerpt as CASE/UCO JSON-LD.
    case_uco: bytes | None = None



def plan_package(
    vault: Vault,
    *,
    body_id: str,
    item_ids: Sequence[str] = (),
    case: str | None = None,
    label: str | None = None,
    tags: Sequence[tuple[str, str]] = (),
    reference: str | None = None,
    purpose: str | None = None,
    confidential_reference: bool = False,
    as_name: str | None = None,
    output: Path | None = None,
    directory: Path | None = None,
    force: bool = False,
    now: datetime | None = None,
    with_case_uco: bool = False,
) -> PackageDraft:
    """Check everything and sign the custody checkpoint one package for one body will carry.

    Its file will be ``output``, else ``<package-id>.evpkg`` in ``directory`` (default:
    here). Refusals come before anything is written. The checkpoint is kept even if the
    build then fails: it is a true signed statement of the log, and keeping it here keeps
    checkpoints in the order of the log (one signed now and stored later could follow a
    bigger one). ``with_case_uco`` adds the CASE/UCO document (:func:`_case_uco`).
    """
    now = now or utcnow()
    package_id = new_id("PKG")
    target = (output or (directory or Path()) / f"{package_id}.evpkg").absolute()
    if target.exists() and not force:
        raise ConflictError(f"{target}: exists already; choose another -o or pass --force")
    require_folder(target)
    keyhistory.ensure_anchor(vault, now=now)
    with vault.transaction() as session:
        body = session.get(Body, body_id)
        if body is None:
            raise NotFoundError(f"body {body_id}: not found; see `evault body list`")
        keyhistory.check_body(vault, session, body)
        recipients = active_keys(body)
        items = select_items(session, item_ids=item_ids, case=case, label=label, tags=tags)
        release = decide_release(vault, session, items, body_id,
                                 checked_rules(vault, session))
        items = check_release(release)
        check_signed_rows(vault, session, items, "nothing was packaged")
        quorum = approvals.check_quorum(vault, session, body_id, items)
        identity = get_identity(session, as_name)
        pair = actor_pair(vault, session, as_name)
        escrow = RecipientKey(pair.fingerprint, current_key(identity).age_recipient)
        for key in recipients:
            if escrow.fingerprint == key.fingerprint or escrow.age_recipient == key.age_recipient:
                raise PolicyError(
                    f"body {body_id}: key {key.fingerprint} is the sender's own key, which "
                    "every package is encrypted to anyway (escrow); a body's keys are its "
                    f"officers': revoke it with `evault body key revoke {body_id} "
                    f"{key.fingerprint}`"
                )
        storage = storage_identity(vault, session)
        checkpoint, checkpoint_size, timestamps = checkpoint_now(vault, session, pair, now)
        excerpt = _custody_excerpt(session, items, checkpoint_size)
        paths = [f"{item.id}/{item.original_name}" for item in items]
        links = [item_link(session, item) for item in items]
        versions = blob_versions(vault, session, [item.blob_id for item in items])
        return PackageDraft(
            package_id=package_id,
            body_id=body_id,
            target=target,
            temp=target.with_name(f"{TEMP_PREFIX}{package_id}.evpkg"),
            force=force,
            recipients=tuple(recipients),
            escrow=escrow,
            pair=pair,
            sender_name=identity.name,
            org=_sender_org(vault, identity),
            storage=storage,
            checkpoint=checkpoint,
            checkpoint_size=checkpoint_size,
            timestamps=timestamping.encode(timestamps),
            excerpt=excerpt,
            items=tuple(DraftItem(item.id, item.blob_id, item.size, item.sha256, path,
                                  item.intake_seq, link, versions.get(item.blob_id))
                        for item, path, link in zip(items, paths, links, strict=True)),
            metadata=[_item_metadata(item, f"data/{path}", link)
                      for item, path, link in zip(items, paths, links, strict=True)],
            reference=reference,
            purpose=purpose,
            confidential_reference=confidential_reference,
            now=now,
            approval_files=approvals.tag_files(quorum) if quorum else (),
            approvers=quorum.approvers if quorum else (),
            substituted=tuple(release.substituted),
            case_uco=(_case_uco(vault, session, items, checkpoint_size,
                                {pair.fingerprint: identity.name})
                      if with_case_uco else None),
        )


#: The tag file of a package made with ``--with-case-uco``: listed in the tag manifest like
#: every other ``evault/`` file, so the sender's signed statement covers it.
CASE_UCO = "evault/case-uco.jsonld"


def _case_uco(
    vault: Vault, session: Session, items: Sequence[Item], checkpoint_size: int,
    sender: dict[str, str],
) -> bytes:
    """The package's items, and the events its custody excerpt carries (the same ones: no
    event a body may not see), as the CASE/UCO JSON-LD ``export-case-uco`` writes; the case
    is named when every item is of one case. Of the identities that signed them only the
    sender (``sender``: its key's fingerprint and name, which the envelope names anyway) is
    named: the excerpt gives the body the others' keys, not their names."""
    cases = {item.case_id for item in items}
    export = export_of(session, vault.config.vault_id, items,
                       _excerpt_events(session, items, checkpoint_size),
                       case=cases.pop() if len(cases) == 1 else None, names=sender)
    return render_case_uco(export).encode("utf-8")

