"""Recording new items: their blobs, rows and custody events, one way for intake and open.

    >>> new = NewItem(stored, case="UA-2026-0042", original_name="statement.pdf",  # doctest: +SKIP
    ...               action="item.ingested", details={...})
    >>> recorded = record_items(session, log, pair, [new], now=now)          # doctest: +SKIP
    >>> recorded.item_ids, recorded.redundant                                # doctest: +SKIP

:func:`record_items` records files already stored as blobs (:mod:`vault.service.storing`)
as items, in the caller's transaction: one signed custody event each (``item.ingested`` for
intake, ``item.received`` for open), one bulk INSERT per table. A blob whose bytes (SHA-256
and size) the vault holds already, or that an earlier item of the same call holds, is not
recorded: the item points at the blob kept, and the new blob is listed in
:attr:`Recorded.redundant` for the caller to remove once the transaction has committed.
A blob the vault holds already is trusted for that only once ``holds`` (the caller's:
decrypt it and hash it) says it has those bytes: its row is the database's word, and a
row made up by whoever can write the database would otherwise have evault delete the
verified new blob and point the item at other bytes.

Imports ``vault.store``, a package's :class:`~vault.formats.package.ItemLink` (the one form
of a derived copy's link) and the custody log and ids of the service layer; nothing of
intake or open, which call it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from vault.formats.package import ItemLink
from vault.service.custody import CustodyLog
from vault.service.identities import KeyPair
from vault.service.ids import new_id
from vault.service.storing import Stored
from vault.store.models import Blob, Item, ItemDigest, ItemLabel, ItemTag


@dataclass(frozen=True)
class NewItem:
    """One stored file to record as an item: its blob, its case, what is known of it, and
    the custody event that records it (``action`` and its ``details``; its digests are the
    ones measured while storing)."""

    stored: Stored
    case: str
    original_name: str
    action: str
    details: dict[str, Any]
    title: str | None = None
    description: str | None = None
    source: str | None = None
    collected_at: datetime | None = None
    location: str | None = None
    labels: Sequence[str] = ()
    tags: Sequence[tuple[str, str]] = ()
    #: For an item received in a package: the sender's key, the package and its item id.
    received_from: str | None = None
    source_package: str | None = None
    source_item: str | None = None
    #: For a derived copy: its link to the original (for an item received, the original's
    #: id is the sender's, as ``source_item`` is) and the note on how it was made (intake
    #: only; sealed at rest, never logged).
    derived_from: ItemLink | None = None
    derivation_note: str | None = None


@dataclass(frozen=True)
class Recorded:
    """What :func:`record_items` recorded: the new item ids, in the order given, and the new
    blobs left unrecorded because the vault holds their bytes already (remove them after
    the commit)."""

    item_ids: list[str]
    redundant: list[str] = field(default_factory=list)


def record_items(
    session: Session,
    log: CustodyLog,
    pair: KeyPair,
    items: Sequence[NewItem],
    *,
    now: datetime,
    holds: Callable[[str, str | None, str, int], bool],
) -> Recorded:
    """Record ``items`` in the caller's transaction, their blobs de-duplicated by content.

    The cases must exist or be pending in ``session``. Each item gets a new id and, in the
    order given, one custody event signed by ``pair``, whose seq is its intake order.
    """
    redundant: list[str] = []
    # Rows of blobs said to hold these bytes, not yet checked; and those checked.
    recorded: dict[tuple[str, int], list[tuple[str, str | None]]] = {}
    for b in session.scalars(select(Blob).where(
            Blob.sha256.in_({new.stored.sha256 for new in items}))):
        recorded.setdefault((b.sha256, b.size), []).append((b.id, b.version_id))
    known: dict[tuple[str, int], str] = {}

    def kept(key: tuple[str, int]) -> str | None:
        """The blob of these bytes to keep: one made in this call, or a recorded one that
        ``holds`` has checked (each at most once)."""
        if key not in known:
            for blob_id, version in recorded.pop(key, []):
                if holds(blob_id, version, *key):
                    known[key] = blob_id
                    break
        return known.get(key)

    blob_rows: list[dict[str, Any]] = []
    item_rows: list[dict[str, Any]] = []
    label_rows: list[dict[str, Any]] = []
    tag_rows: list[dict[str, Any]] = []
    digest_rows: list[dict[str, Any]] = []
    events: list[tuple[str, str, dict[str, Any], dict[str, str]]] = []
    for new in items:
        stored = new.stored
        key = (stored.sha256, stored.size)
        blob_id = kept(key)
        if blob_id is None:
            blob_rows.append({"id": stored.blob_id, "size": stored.size,
                              "sha256": stored.sha256, "stored_size": stored.stored_size,
                              "created_at": now, "version_id": stored.version,
                              "retain_until": stored.retain_until})
            known[key] = blob_id = stored.blob_id
        else:
            redundant.append(stored.blob_id)
        item_id = new_id("EV")
        link = new.derived_from
        item_rows.append({
            "id": item_id,
            "case_id": new.case,
            "blob_id": blob_id,
            "original_name": new.original_name,
            "title": new.title,
            "description": new.description,
            "source": new.source,
            "collected_at": new.collected_at,
            "location": new.location,
            "size": stored.size,
            "sha256": stored.sha256,
            "ingested_at": now,
            "ingested_by": pair.fingerprint,
            "received_from": new.received_from,
            "source_package": new.source_package,
            "source_item": new.source_item,
            "derived_from": link.id if link else None,
            "derived_from_sha256": link.sha256 if link else None,
            "derivation": link.relation if link else None,
            "derivation_tool": link.tool if link else None,
            "derivation_note": new.derivation_note,
        })
        label_rows += [{"item_id": item_id, "label": label} for label in new.labels]
        tag_rows += [{"item_id": item_id, "key": k, "value": v} for k, v in new.tags]
        digest_rows += [{"item_id": item_id, "algorithm": a, "hexdigest": h}
                        for a, h in sorted(stored.extra.items())]
        # Only what this vault computed while storing: a sender's claims are checked before.
        events.append((new.action, item_id, new.details,
                       {"sha256": stored.sha256, **stored.extra}))
    for row, seq in zip(item_rows, log.append_many(pair, events, now=now), strict=True):
        row["intake_seq"] = seq
    session.flush()  # new cases first: the items refer to them
    for model, rows in ((Blob, blob_rows), (Item, item_rows), (ItemLabel, label_rows),
                        (ItemTag, tag_rows), (ItemDigest, digest_rows)):
        if rows:
            session.execute(insert(model), rows)
    return Recorded([row["id"] for row in item_rows], redundant)


#: The actions whose signed event creates an item (:func:`record_items`): ``item.ingested``
#: (intake, a derived copy too) and ``item.received`` (open).
CREATING = ("item.ingested", "item.received")
