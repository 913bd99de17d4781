"""Oversight reports: who got what and when, and one item's chain of custody.

    >>> report = sharing_report(vault, since=None, until=None, body=None)   # doctest: +SKIP
    >>> report.totals.packages                                               # doctest: +SKIP
    5

The sharing report carries ids, counts, sizes and times, never titles, descriptions or file
names, so it can go to an oversight committee as it is. The chain-of-custody form is an
internal court document: it names the item's case, title, source, and collection time and
place (never its description or file name), every event, and who printed it. Both are
returned as data; :mod:`vault.render.reports` lays them out.
"""

from __future__ import annotations

import base64
import hashlib
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.clock import as_utc, isoformat, optional_isoformat, utcnow
from vault.custody.merkle import inclusion_proof, leaf_hash, verify_inclusion
from vault.custody.note import open_checkpoint
from vault.errors import NotFoundError, VaultError, VerificationError
from vault.service.custody import identity_names, leaf_hashes, logged_event, vault_verifiers
from vault.service.identities import acting_identity, current_key
from vault.service.items import Lineage, get_item, lineage
from vault.service.results import Result
from vault.service.vaults import Vault
from vault.store.models import CustodyEvent, Item, Package, PackageItem, SignedCheckpoint

_COUNTS = ("packages", "items", "bytes", "sent", "acknowledged", "approvals", "originals",
           "derivatives")


@dataclass(frozen=True, slots=True)
class SharingRow(Result):
    """One body's line of the sharing report, or the ``TOTAL`` line: packages built in the
    window, the items in them, the bytes of their files, distinct references, how many were
    sent and acknowledged, the median hours from sending to acknowledgement (to one
    decimal; None when none was acknowledged after being sent), the signed release
    approvals the packages carried (issue 18), and of the items, how many were originals and
    how many derived copies (redacted, translated, ...; issue 19)."""

    body: str
    packages: int
    items: int
    bytes: int
    references: int
    sent: int
    acknowledged: int
    median_hours_to_ack: float | None
    approvals: int
    originals: int
    derivatives: int


@dataclass(frozen=True, slots=True)
class SharingReport(Result):
    """The sharing report: its window (ISO 8601 UTC; None for the beginning, or now), one
    row per body by body id, and the totals."""

    since: str | None
    until: str | None
    rows: tuple[SharingRow, ...]
    totals: SharingRow


@dataclass(frozen=True, slots=True)
class EventLine(Result):
    """An event on the chain-of-custody form: its seq, time (ISO 8601 UTC), action, the
    actor's name and key fingerprint, its signed details, and its proof status (in words)."""

    seq: int
    time: str
    action: str
    actor: str
    fingerprint: str
    details: dict[str, Any]
    proof: str


@dataclass(frozen=True, slots=True)
class SenderEventLine(EventLine):
    """An event of the sender's chain: an :class:`EventLine`, with the sender's log (its
    origin) and the tree size its excerpt line gives (as the sender wrote it)."""

    log: str
    tree_size: Any


@dataclass(frozen=True, slots=True)
class SenderChain(Result):
    """A received item's chain at its sender, from the custody excerpt kept when its
    package was opened (at ``opened_at``, ISO 8601 UTC); ``log`` and ``tree_size`` are its
    first event's, None when the excerpt has no event of the item."""

    package: str
    sender: str
    sender_fingerprint: str
    opened_at: str
    log: str | None
    tree_size: Any
    events: tuple[SenderEventLine, ...]


@dataclass(frozen=True, slots=True)
class LatestCheckpoint(Result):
    """The vault's latest checkpoint as the form names it: log origin, size (events), root
    hash (base64) and the fingerprint of the key that signed it."""

    origin: str
    size: int
    root: str
    signed_by: str | None


@dataclass(frozen=True, slots=True)
class Printer(Result):
    """Who printed a form: identity name and key fingerprint."""

    name: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class CustodyReport(Result):
    """One item's chain-of-custody form. ``collected_at`` and ``printed_at`` are ISO 8601
    UTC strings; ``digests`` maps an algorithm to its hex digest, SHA-256 first. For a
    received item, ``received_from`` is the sender's key fingerprint, ``received_from_name``
    the name this vault knows it by, and ``sender_chain`` the sender's events; ``checkpoint``
    is None before the vault's first one. ``derivation`` is, for a derived copy or an item
    copied, its chain both ways (ids, digests, relations and tools; never the note), else
    None."""

    item: str
    case: str
    title: str | None
    source: str | None
    collected_at: str | None
    location: str | None
    size: int
    digests: dict[str, str]
    received_from: str | None
    received_from_name: str | None
    source_package: str | None
    source_item: str | None
    checkpoint: LatestCheckpoint | None
    events: tuple[EventLine, ...]
    sender_chain: SenderChain | None
    printed_at: str
    printed_by: Printer
    derivation: Lineage | None = None


def _approvals_carried(session: Any, package_ids: Sequence[str]) -> dict[str, int]:
    """Package id -> how many approvals it carried, from its signed ``package.built`` event."""
    from vault.custody.events import Event

    carried: dict[str, int] = {}
    for row in session.scalars(select(CustodyEvent).where(
            CustodyEvent.action == "package.built", CustodyEvent.subject.in_(package_ids))):
        approvers = Event.decode(row.body).details.get("approvals") or []
        carried[row.subject] = len(approvers)
    return carried


def sharing_report(
    vault: Vault,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    body: str | None = None,
) -> SharingReport:
    """Per body: packages built in the window, their items, bytes, references, how many were
    sent and acknowledged, and the median time from sending to acknowledgement."""
    with vault.transaction() as session:
        stmt = select(Package).order_by(Package.body_id, Package.created_at)
        if body:
            stmt = stmt.where(Package.body_id == body)
        packages = [
            p for p in session.scalars(stmt)
            if (since is None or as_utc(p.created_at) >= since)
            and (until is None or as_utc(p.created_at) < until)
        ]
        approved = _approvals_carried(session, [p.id for p in packages])
        derived = set(session.scalars(
            select(PackageItem.item_id).join(Item, Item.id == PackageItem.item_id).where(
                PackageItem.package_id.in_([p.id for p in packages]),
                Item.derivation.is_not(None)))) if packages else set()
        counts: dict[str, dict[str, int]] = {}
        references: dict[str, set[str]] = {}
        waits: dict[str, list[float]] = {}
        for p in packages:
            count = counts.setdefault(p.body_id, dict.fromkeys(_COUNTS, 0))
            references.setdefault(p.body_id, set())
            count["packages"] += 1
            count["items"] += len(p.items)
            count["bytes"] += p.file_size
            if p.reference:
                references[p.body_id].add(p.reference)
            count["approvals"] += approved.get(p.id, 0)
            copies = sum(1 for pi in p.items if pi.item_id in derived)
            count["derivatives"] += copies
            count["originals"] += len(p.items) - copies
            if p.sent_at is not None:
                count["sent"] += 1
            if p.acknowledged_at is not None:
                count["acknowledged"] += 1
                if p.sent_at is not None:
                    hours = (as_utc(p.acknowledged_at) - as_utc(p.sent_at)).total_seconds() / 3600
                    waits.setdefault(p.body_id, []).append(max(hours, 0.0))
    rows = tuple(
        _sharing_row(body_id, counts[body_id], len(references[body_id]),
                     waits.get(body_id, []))
        for body_id in sorted(counts)
    )
    totals = _sharing_row(
        "TOTAL", {k: sum(getattr(r, k) for r in rows) for k in _COUNTS},
        sum(r.references for r in rows), [h for w in waits.values() for h in w])
    return SharingReport(
        since=isoformat(since) if since else None,
        until=isoformat(until) if until else None,
        rows=rows,
        totals=totals,
    )


def _sharing_row(body: str, count: dict[str, int], references: int,
                 waits: list[float]) -> SharingRow:
    return SharingRow(
        body=body, packages=count["packages"], items=count["items"], bytes=count["bytes"],
        references=references, sent=count["sent"], acknowledged=count["acknowledged"],
        median_hours_to_ack=round(statistics.median(waits), 1) if waits else None,
        approvals=count["approvals"], originals=count["originals"],
        derivatives=count["derivatives"],
    )


def custody_report(
    vault: Vault, item_id: str, *, as_name: str | None = None, now: datetime | None = None
) -> CustodyReport:
    """One item's chain of custody, as the form a court files: what the item is (case,
    title, source, collection time and place, digests), every event with its actor and
    proof status, the sender's chain for a received item, the latest checkpoint, and who
    printed it when (``as_name`` or the default identity)."""
    derivation = _derivation(vault, item_id)
    with vault.transaction() as session:
        item = get_item(session, item_id)
        names = identity_names(session)
        printer = acting_identity(session, as_name)
        rows = session.scalars(
            select(CustodyEvent).where(CustodyEvent.subject == item_id)
            .order_by(CustodyEvent.seq)
        ).all()
        if not rows:
            raise NotFoundError(f"item {item_id}: no custody events")
        cp_row = session.scalar(
            select(SignedCheckpoint).order_by(SignedCheckpoint.id.desc()).limit(1))
        checkpoint = None
        leaves: list[bytes] = []
        if cp_row is not None:
            checkpoint, _ = open_checkpoint(cp_row.note, vault_verifiers(vault, session))
            leaves = leaf_hashes(session, checkpoint.size)
        events = []
        for row in rows:
            event = logged_event(row)
            status = "after the latest checkpoint"
            if checkpoint is not None and row.seq < checkpoint.size:
                try:
                    verify_inclusion(leaf_hash(row.body), row.seq, checkpoint.size,
                                     inclusion_proof(leaves, row.seq, checkpoint.size),
                                     checkpoint.root_hash)
                    status = "included (proof verified)"
                except VerificationError:
                    status = "NOT included: proof fails"
            events.append(EventLine(
                seq=event.seq, time=event.time, action=event.action,
                actor=names.get(event.actor, "unknown"),
                fingerprint=event.actor, details=event.details, proof=status,
            ))
        received = None
        if item.source_package is not None:
            received = _sender_chain(vault, session, item.source_package, item.source_item)
        return CustodyReport(
            item=item.id,
            case=item.case_id,
            title=item.title,
            source=item.source,
            collected_at=optional_isoformat(item.collected_at),
            location=item.location,
            size=item.size,
            digests={"sha256": item.sha256, **{d.algorithm: d.hexdigest for d in item.digests}},
            received_from=item.received_from,
            received_from_name=received.sender if received else None,
            source_package=item.source_package,
            source_item=item.source_item,
            checkpoint=None if checkpoint is None else LatestCheckpoint(
                origin=checkpoint.origin, size=checkpoint.size,
                root=base64.b64encode(checkpoint.root_hash).decode(),
                signed_by=cp_row.signer if cp_row else None,
            ),
            events=tuple(events),
            sender_chain=received,
            printed_at=isoformat(now or utcnow()),
            printed_by=Printer(name=printer.name, fingerprint=current_key(printer).fingerprint),
            derivation=derivation,
        )


def _derivation(vault: Vault, item_id: str) -> Lineage | None:
    """The item's derivation chain for the form: links only, the note left out (it stays
    sealed, like the item's description)."""
    found = lineage(vault, item_id)
    return None if found.empty else replace(found, note=None)


def _sender_chain(vault: Vault, session: Session, package_id: str,
                  source_item: str | None) -> SenderChain:
    """The sender's events about a received item, from the custody excerpt kept when its
    package was opened; each signature is checked again against the key the excerpt names,
    and each event's inclusion against the envelope's checkpoint. The envelope and the number
    of events are the ones the vault's signed ``package.opened`` event names, so a database
    holder can neither cut the excerpt nor swap the envelope it is proven against."""
    from vault.crypto.keys import VerifyKey
    from vault.custody.events import Event
    from vault.custody.note import Checkpoint
    from vault.formats.package import Envelope
    from vault.service.opening import opened_event
    from vault.store.models import Contact, ReceivedPackage

    row = session.get(ReceivedPackage, package_id)
    if row is None:
        raise NotFoundError(f"package {package_id}: not among the packages this vault opened; "
                            "run `evault custody verify`")
    opened = opened_event(vault, session, package_id)
    if opened is None or not (opened[0].digests.get("envelope") == row.envelope_sha256
                              == hashlib.sha256(row.envelope).hexdigest()):
        raise VerificationError(f"package {package_id}: its stored envelope is not the one "
                                "the package.opened event this vault signed names; run "
                                "`evault custody verify`")
    counted = opened[0].details.get("sender_events")
    held = len(row.custody_excerpt.splitlines())
    if counted != held:
        raise VerificationError(
            f"package {package_id}: its stored custody excerpt holds {held} event(s), the "
            f"package.opened event this vault signed counted {counted}; the excerpt was "
            "changed in the database: run `evault custody verify`")
    envelope = Envelope.from_bytes(row.envelope)
    note = envelope.checkpoint
    checkpoint = Checkpoint.from_text(note[:note.index("\n\n") + 1])
    names = {c.fingerprint: c.name for c in session.scalars(select(Contact))}
    # The name this vault knows the key by; the envelope's only for a sender it does not know
    # (a signed envelope may call its sender anything).
    names.setdefault(envelope.sender.fingerprint, envelope.sender.name)
    events = []
    for number, line in enumerate(row.custody_excerpt.splitlines(), start=1):
        try:
            entry = json.loads(line)
            body = str(entry["event"]).encode("utf-8")
            event = Event.decode(body)
        except (ValueError, KeyError, TypeError, VaultError):
            raise VerificationError(f"package {package_id}: line {number} of its stored custody "
                                    "excerpt is malformed; run `evault custody verify`") from None
        if event.subject != source_item:
            continue
        try:
            key = VerifyKey.from_openssh(str(entry["actor_key"]))
            if key.fingerprint != event.actor:
                raise VerificationError("the key given is not the event's actor")
            key.verify(base64.b64decode(entry["signature"], validate=True), body)
            if event.log != checkpoint.origin or entry.get("seq") != event.seq:
                raise VerificationError("not an event of the envelope's log")
            verify_inclusion(leaf_hash(body), event.seq, checkpoint.size,
                             [base64.b64decode(h, validate=True) for h in entry["proof"]],
                             checkpoint.root_hash)
            status = "signature verified"
        except (ValueError, KeyError, TypeError, VaultError):
            status = f"NOT verified (excerpt line {number})"
        events.append(SenderEventLine(
            seq=event.seq, time=isoformat(event.time), action=event.action,
            actor=names.get(event.actor, "not named in the package"),
            fingerprint=event.actor, details=event.details, proof=status,
            log=event.log, tree_size=entry.get("tree_size"),
        ))
    return SenderChain(
        package=package_id,
        sender=names[envelope.sender.fingerprint],
        sender_fingerprint=envelope.sender.fingerprint,
        opened_at=isoformat(row.opened_at),
        log=events[0].log if events else None,
        tree_size=events[0].tree_size if events else None,
        events=tuple(events),
    )
