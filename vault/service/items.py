"""Items of the vault: list, show, and export a decrypted copy for authorised use.

    >>> rows = list_items(vault, case="UA-2026-0042")                      # doctest: +SKIP
    >>> export_item(vault, rows[0].id, Path("copy.pdf"), reason="review")    # doctest: +SKIP

Export decrypts the blob into a temporary file next to the target, checks the SHA-256 while
writing, and renames only if it matches. ``item.export.started`` (before any plaintext is
written) and ``item.exported`` (before the file takes its name) record actor and reason, tied
by a random token (``details.export``); a run that fails logs ``item.export.abandoned``.
A run killed midway leaves its intent open and a record in ``<vault>/pending/`` that names its
temporary file, for ``evault doctor`` (see :mod:`vault.service.pending`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from vault.clock import isoformat, optional_isoformat, utcnow
from vault.errors import ConflictError, NotFoundError, UsageError, VerificationError
from vault.service.progress import Progress
from vault.service.results import Result
from vault.service.vaults import Vault
from vault.store.models import Case, Item, ItemLabel

ITEM_COLUMNS = ("id", "case", "name", "size", "sha256", "labels", "ingested_at")


@dataclass(frozen=True, slots=True)
class ItemInfo(Result):
    """The full view of an item (this vault's own display; never put into receipts or logs).

    ``digests`` maps an algorithm to its hex digest and ``tags`` a key to its value, each
    sorted by its key; ``labels`` are sorted. ``collected_at`` and ``ingested_at`` are ISO
    8601 UTC strings.
    """

    id: str
    case: str
    name: str
    title: str | None
    description: str | None
    source: str | None
    collected_at: str | None
    location: str | None
    size: int
    sha256: str
    digests: dict[str, str]
    labels: tuple[str, ...]
    tags: dict[str, str]
    ingested_at: str
    ingested_by: str


@dataclass(frozen=True, slots=True)
class ExportedItem(Result):
    """What ``items export`` wrote: the item, the file, its size and its checked SHA-256."""

    id: str
    path: str
    size: int
    sha256: str


def item_info(item: Item) -> ItemInfo:
    """The full view of an item row."""
    return ItemInfo(
        id=item.id,
        case=item.case_id,
        name=item.original_name,
        title=item.title,
        description=item.description,
        source=item.source,
        collected_at=optional_isoformat(item.collected_at),
        location=item.location,
        size=item.size,
        sha256=item.sha256,
        digests={d.algorithm: d.hexdigest for d in item.digests},
        labels=tuple(label.label for label in item.labels),
        tags={t.key: t.value for t in item.tags},
        ingested_at=isoformat(item.ingested_at),
        ingested_by=item.ingested_by,
    )


def get_item(session: Session, item_id: str) -> Item:
    """The item with this id."""
    item = session.get(Item, item_id)
    if item is None:
        raise NotFoundError(f"item {item_id}: not found; see `evault items list`")
    return item


def get_case(session: Session, case_id: str) -> Case:
    """The case with this id; a typo is named, never read as an empty case."""
    case = session.get(Case, case_id)
    if case is None:
        raise NotFoundError(f"case {case_id}: not found; see `evault case list`")
    return case


def list_items(
    vault: Vault, *, case: str | None = None, label: str | None = None
) -> list[ItemInfo]:
    """Items, optionally of one case and/or with one label, in ingest order."""
    with vault.transaction() as session:
        stmt = select(Item).options(
            selectinload(Item.labels), selectinload(Item.tags), selectinload(Item.digests)
        )
        if case is not None:
            get_case(session, case)
            stmt = stmt.where(Item.case_id == case)
        if label:
            labelled = select(ItemLabel.item_id).where(ItemLabel.label == label)
            stmt = stmt.where(Item.id.in_(labelled))
        stmt = stmt.order_by(Item.intake_seq)
        return [item_info(i) for i in session.scalars(stmt)]


def show_item(vault: Vault, item_id: str) -> ItemInfo:
    """One item with all its metadata and digests."""
    with vault.transaction() as session:
        return item_info(get_item(session, item_id))


@dataclass(frozen=True, slots=True)
class Link(Result):
    """One step of a derivation: the item, its SHA-256, how it relates (``relation``,
    ``tool``) and, for a derivative, the item it was made from (``of``)."""

    id: str
    sha256: str
    relation: str | None
    tool: str | None
    of: str | None = None


@dataclass(frozen=True, slots=True)
class Lineage(Result):
    """Where an item stands among derived copies: ``derived_from`` the chain up to the
    first original (the nearest first), ``derivatives`` every copy made from it, directly
    or from one of its copies (each with the relation to the item it was made from, in
    intake order), and the ``note`` of its own derivation (sealed at rest)."""

    derived_from: tuple[Link, ...]
    derivatives: tuple[Link, ...]
    note: str | None

    @property
    def empty(self) -> bool:
        """True for an item that is neither a copy nor copied."""
        return not self.derived_from and not self.derivatives


def _link(item: Item) -> Link:
    return Link(item.id, item.sha256, item.derivation, item.derivation_tool, item.derived_from)


def lineage(vault: Vault, item_id: str) -> Lineage:
    """The derivation chain of an item, in both directions (see :class:`Lineage`)."""
    with vault.transaction() as session:
        item = get_item(session, item_id)
        up: list[Link] = []
        seen = {item.id}
        parent_id = item.derived_from
        while parent_id is not None and parent_id not in seen:
            parent = session.get(Item, parent_id)
            if parent is None:
                break
            seen.add(parent.id)
            up.append(Link(parent.id, parent.sha256, None, None))
            parent_id = parent.derived_from
        # Each link says how the item before it was made from it: shift the relations up.
        chain: list[Link] = []
        below = item
        for link in up:
            chain.append(Link(link.id, link.sha256, below.derivation, below.derivation_tool))
            below = session.get(Item, link.id) or below
        down: list[Link] = []
        frontier = [item.id]
        while frontier:
            children = list(session.scalars(select(Item).where(
                Item.derived_from.in_(frontier)).order_by(Item.intake_seq)))
            children = [c for c in children if c.id not in seen]
            seen.update(c.id for c in children)
            down += [_link(c) for c in children]
            frontier = [c.id for c in children]
        return Lineage(tuple(chain), tuple(down), item.derivation_note)


def export_item(
    vault: Vault,
    item_id: str,
    output: Path,
    *,
    reason: str,
    as_name: str | None = None,
    force: bool = False,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> ExportedItem:
    """Write the plaintext of an item to ``output`` (the user asked for it), logging why.
    ``progress`` gets (bytes written, bytes of the item) after each chunk."""
    # Imported here: the listing commands of this module should not pay for cryptography,
    # the custody log and intake at start-up.
    from vault.crypto.age import AgeReader
    from vault.durable import atomic_writer, require_folder
    from vault.faults import crash_point
    from vault.service import pending
    from vault.service.custody import CustodyLog, actor_pair
    from vault.service.intake import storage_identity
    from vault.store.blobs import BlobStore

    if not reason.strip():
        raise UsageError("items export: --reason must say why the content is needed")
    if output.exists() and not force:
        raise ConflictError(f"{output}: exists already; choose another path or pass --force")
    require_folder(output)
    with vault.transaction() as session:
        item = get_item(session, item_id)
        pair = actor_pair(vault, session, as_name)
        identity = storage_identity(vault, session)
        blob_id, expected, size = item.blob_id, item.sha256, item.size
    blobs = BlobStore(vault.blobs)
    digest = hashlib.sha256()
    written = 0
    logged = False
    token = pending.new_token()
    folder = pending.real_folder(output.parent)
    # The temporary's place goes into the vault's journal before the temporary exists, and
    # the intent is signed once it exists (empty) and before any plaintext is written: a kill
    # -9 while the plaintext is written leaves a record `evault doctor` finds it by, and a
    # folder that cannot be written fails before anything is logged. The signed intent names
    # the token, never the path.
    started: int | None = None
    with pending.recorded(vault.root, "export", token, folder, item=item_id) as entry:
        try:
            with blobs.open(blob_id) as src, atomic_writer(
                    output, mode=0o600, temp_name=pending.export_temp_name(token)) as out:
                # Held while it runs: doctor leaves a locked temporary alone, whatever its
                # record in pending/ has become (a copy renamed over it is not locked).
                pending.hold(out.fileno())
                with vault.transaction() as session:
                    started = CustodyLog(vault, session).append(
                        pair, "item.export.started", item_id,
                        details={"export": token, "reason": reason.strip()},
                        digests={"sha256": expected}, now=now or utcnow(),
                    ).seq
                reader = AgeReader(src, [identity])
                while True:
                    chunk = reader.read(1 << 20)
                    if not chunk:
                        break
                    digest.update(chunk)
                    out.write(chunk)
                    written += len(chunk)
                    if progress:
                        progress(written, size)
                crash_point("item_export.written")
                if digest.hexdigest() != expected or written != size:
                    raise VerificationError(
                        f"item {item_id}: stored content does not match its SHA-256; nothing "
                        "was written; run `evault custody verify` and report the blob as damaged"
                    )
                # Logged before the file takes its name: a crash in between over-reports an
                # export, it never hides one.
                with vault.transaction() as session:
                    CustodyLog(vault, session).append(
                        pair,
                        "item.exported",
                        item_id,
                        details={"export": token, "reason": reason.strip(),
                                 "started": started},
                        digests={"sha256": expected},
                        now=now or utcnow(),
                    )
                logged = True
        except BaseException:
            # The temporary is gone (atomic_writer removed it): close the intent. If even that
            # cannot be logged (the database is what failed), the record stays for doctor.
            # Logged as exported, a failed rename over-reports it, as before.
            try:
                if started is not None and not logged:
                    with vault.transaction() as session:
                        CustodyLog(vault, session).append(
                            pair, "item.export.abandoned", item_id,
                            details={"export": token, "started": started, "leftover": False},
                            now=utcnow())
            except Exception:
                entry.keep = True
            raise
    return ExportedItem(id=item_id, path=str(output), size=written, sha256=expected)


EXPORT_ACTIONS = ("item.export.started", "item.exported", "item.export.abandoned")
"""The events of one ``items export`` run, tied together by ``details.export`` (its token).
``item.exported`` (the only one older versions knew) has no token when logged by them."""


def export_events(session: Session, item_id: str, token: str) -> dict[str, int]:
    """The actions logged for export run ``token`` of ``item_id``, each with its seq."""
    from vault.custody.events import Event
    from vault.store.models import CustodyEvent

    rows = session.scalars(select(CustodyEvent).where(
        CustodyEvent.subject == item_id, CustodyEvent.action.in_(EXPORT_ACTIONS)))
    found = {}
    for row in rows:
        if Event.decode(row.body).details.get("export") == token:
            found[row.action] = row.seq
    return found

