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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import select, type_coerce
from sqlalchemy.orm import Session
from sqlalchemy.types import NullType

from vault.clock import isoformat, optional_isoformat, utcnow
from vault.custody.events import Event
from vault.errors import ConflictError, NotFoundError, UsageError, VaultError, VerificationError
from vault.names import ITEM_ID
from vault.service.listing import time_text
from vault.service.progress import Progress
from vault.service.results import Result, Sparse
from vault.service.vaults import Vault
from vault.store.models import Blob, Case, CustodyEvent, Item, ItemDigest, ItemLabel, ItemTag
from vault.store.sealed import column_opener, stored_form


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


def _chosen(session: Session, case: str | None, label: str | None) -> list[Any]:
    """The WHERE clauses of a listing: one case (which must exist) and/or one label."""
    where: list[Any] = []
    if case is not None:
        get_case(session, case)
        where.append(Item.case_id == case)
    if label:
        where.append(Item.id.in_(select(ItemLabel.item_id).where(ItemLabel.label == label)))
    return where


def _labels_of(session: Session, chosen: Any) -> dict[str, list[str]]:
    labels: dict[str, list[str]] = {}
    for item_id, name in session.execute(
            select(ItemLabel.item_id, ItemLabel.label).where(ItemLabel.item_id.in_(chosen))
            .order_by(ItemLabel.item_id, ItemLabel.label)):
        labels.setdefault(item_id, []).append(name)
    return labels


def list_items(
    vault: Vault, *, case: str | None = None, label: str | None = None
) -> list[ItemInfo]:
    """Items, optionally of one case and/or with one label, in ingest order.

    Read as columns, not ORM objects (four queries, whatever the count): at 100,000 items
    building objects and their three collections cost most of the time and memory."""
    with vault.transaction() as session:
        where = _chosen(session, case, label)
        chosen = select(Item.id).where(*where).scalar_subquery()
        labels = _labels_of(session, chosen)
        tags: dict[str, dict[str, str]] = {}
        tag_value = column_opener(session, ItemTag, "value")
        for item_id, key, value in session.execute(
                select(ItemTag.item_id, ItemTag.key, stored_form(session, ItemTag.value))
                .where(ItemTag.item_id.in_(chosen)).order_by(ItemTag.item_id, ItemTag.key)):
            tags.setdefault(item_id, {})[key] = tag_value((item_id, key), value)
        digests: dict[str, dict[str, str]] = {}
        for item_id, algorithm, hexdigest in session.execute(
                select(ItemDigest.item_id, ItemDigest.algorithm, ItemDigest.hexdigest)
                .where(ItemDigest.item_id.in_(chosen))
                .order_by(ItemDigest.item_id, ItemDigest.algorithm)):
            digests.setdefault(item_id, {})[algorithm] = hexdigest
        name, title, description, source, location = (
            column_opener(session, Item, c)
            for c in ("original_name", "title", "description", "source", "location"))
        # The times as the driver gives them, read as the table's path reads them: on SQLite
        # a text SQL made not a time is refused naming the item, not SQLAlchemy's ValueError.
        collected_at, ingested_at = (type_coerce(c, NullType()).label(c.key)
                                     for c in (Item.collected_at, Item.ingested_at))
        rows = session.execute(
            select(Item.id, Item.case_id,
                   *(stored_form(session, c).label(c.key) for c in (
                       Item.original_name, Item.title, Item.description, Item.source)),
                   collected_at, stored_form(session, Item.location).label("location"),
                   Item.size, Item.sha256, ingested_at, Item.ingested_by)
            .where(*where).order_by(Item.intake_seq))
        return [
            ItemInfo(
                id=r.id,
                case=r.case_id,
                name=name((r.id,), r.original_name),
                title=title((r.id,), r.title),
                description=description((r.id,), r.description),
                source=source((r.id,), r.source),
                collected_at=(None if r.collected_at is None
                              else time_text(r.id, r.collected_at, "collected_at")),
                location=location((r.id,), r.location),
                size=r.size,
                sha256=r.sha256,
                digests=digests.get(r.id, {}),
                labels=tuple(labels.get(r.id, ())),
                tags=tags.get(r.id, {}),
                ingested_at=time_text(r.id, r.ingested_at),
                ingested_by=r.ingested_by,
            )
            for r in rows
        ]


def show_item(vault: Vault, item_id: str) -> ItemInfo:
    """One item with all its metadata and digests."""
    with vault.transaction() as session:
        return item_info(get_item(session, item_id))


#: The keys of an ``item.ingested`` event's details that say what the file said of its own
#: provenance (:mod:`vault.formats.provenance`).
PROVENANCE_KEYS = ("c2pa", "proofmode")


def provenance(vault: Vault, item_id: str) -> dict[str, Any]:
    """What the file of an item said of its own provenance when it was ingested (its C2PA
    manifest, its ProofMode proof), as its signed intake event records it, the signature
    checked: a row anyone with the database could edit is never the source. Empty for an
    item received in a package, or ingested before intake checked provenance."""
    with vault.transaction() as session:
        event = signed_intake(vault, session, get_item(session, item_id))
        return {k: event.details[k] for k in PROVENANCE_KEYS
                if isinstance(event.details.get(k), dict)}


@dataclass(frozen=True, slots=True)
class Link(Sparse):
    """One step of a derivation: the item, its SHA-256, how it relates (``relation``,
    ``tool``) and, for a derivative, the item it was made from (``of``).

    ``sender`` is set only for an original this vault does not hold: a received copy's link
    names it by its id in the sender's vault (that sender's key fingerprint) and by the
    SHA-256 the sender signed."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"sender"})
    id: str
    sha256: str
    relation: str | None
    tool: str | None
    of: str | None = None
    sender: str | None = None


@dataclass(frozen=True, slots=True)
class Lineage(Result):
    """Where an item stands among derived copies: ``derived_from`` the chain up to the
    first original (the nearest first), ``derivatives`` every copy made from it, directly
    or from one of its copies (each with the relation to the item it was made from, in
    intake order), and the ``note`` of its own derivation (sealed at rest).

    Items received in packages link as their senders signed it: a received copy's original
    is the item received from the same sender whose id there (``source_item``) the link
    names; until that arrives, the chain ends with the link itself (:attr:`Link.sender`)."""

    derived_from: tuple[Link, ...]
    derivatives: tuple[Link, ...]
    note: str | None

    @property
    def empty(self) -> bool:
        """True for an item that is neither a copy nor copied."""
        return not self.derived_from and not self.derivatives


def original_of(session: Session, item: Item) -> Item | None:
    """The item of this vault a derived copy was made from, or None (not a copy, or its
    original is not here). A copy made here names its original by id; a copy received in
    a package names it by its id in the sender's vault, so its original is the item received
    from the same sender with that ``source_item`` (the newest, if it came more than once)."""
    if item.derived_from is None:
        return None
    if item.received_from is None:
        return session.get(Item, item.derived_from)
    found = list(session.scalars(select(Item).where(
        Item.received_from == item.received_from, Item.source_item == item.derived_from)
        .order_by(Item.intake_seq.desc())))
    # One whose SHA-256 is the link's first, if the sender sent that id more than once.
    return next((i for i in found if i.sha256 == item.derived_from_sha256),
                found[0] if found else None)


def _copies(session: Session, items: Sequence[Item]) -> list[tuple[Item, Item]]:
    """The derived copies made from ``items`` (each with the one it was made from), in
    intake order: copies made here name the item's id; copies received from the sender of
    a received item name its id in that sender's vault."""
    by_id = {i.id: i for i in items}
    found = [(c, by_id[c.derived_from or ""]) for c in session.scalars(select(Item).where(
        Item.received_from.is_(None), Item.derived_from.in_(list(by_id))))]
    senders: dict[str, dict[str, Item]] = {}
    for i in items:
        if i.received_from is not None and i.source_item is not None:
            senders.setdefault(i.received_from, {})[i.source_item] = i
    for sender, sources in senders.items():
        found += [(c, sources[c.derived_from or ""]) for c in session.scalars(select(Item).where(
            Item.received_from == sender, Item.derived_from.in_(list(sources))))]
    return sorted(found, key=lambda pair: pair[0].intake_seq)


def lineage(vault: Vault, item_id: str) -> Lineage:
    """The derivation chain of an item, in both directions (see :class:`Lineage`)."""
    with vault.transaction() as session:
        item = get_item(session, item_id)
        # Each link says how the item below it was made from it.
        chain: list[Link] = []
        seen = {item.id}
        below = item
        while below.derived_from is not None:
            parent = original_of(session, below)
            if parent is not None and below.received_from is not None and (
                    parent.sha256 != below.derived_from_sha256):
                parent = None  # not the original the link names: `items verify-link` says so
            if parent is None:
                if below.received_from is not None and below.derived_from_sha256:
                    chain.append(Link(below.derived_from, below.derived_from_sha256,
                                      below.derivation, below.derivation_tool,
                                      sender=below.received_from))
                break
            if parent.id in seen:
                break
            seen.add(parent.id)
            chain.append(Link(parent.id, parent.sha256, below.derivation,
                              below.derivation_tool))
            below = parent
        down: list[Link] = []
        frontier = [item]
        while frontier:
            copies = [(c, of) for c, of in _copies(session, frontier) if c.id not in seen]
            seen.update(c.id for c, _ in copies)
            down += [Link(c.id, c.sha256, c.derivation, c.derivation_tool, of.id)
                     for c, of in copies]
            frontier = [c for c, _ in copies]
        return Lineage(tuple(chain), tuple(down), item.derivation_note)


@dataclass(frozen=True, slots=True)
class LinkChecked(Result):
    """A derived copy whose original matched its link (``items verify-link``): the copy,
    the relation and tool, the original as the link names it (``link_id``, for a received
    copy its id in the sender's vault; ``sender`` that sender's key, else None), what was
    checked (``original``: an item of this vault, or a file) and the SHA-256 both share."""

    item: str
    relation: str
    tool: str | None
    link_id: str
    sender: str | None
    original: str
    original_kind: str
    sha256: str

    def line(self) -> str:
        """The one line ``items verify-link`` prints."""
        what = self.original if self.original_kind == "item" else (
            f"{self.link_id} (file {self.original})")
        return (f"item {self.item}: {self.relation} copy of {what}: the original's SHA-256 "
                f"matches ({self.sha256})")


def verify_link(vault: Vault, item_id: str, original: str | None = None) -> LinkChecked:
    """Check a derived copy's link against its original: ``original`` (an item id of this
    vault, or else a file path, hashed as it streams), else the original this vault holds
    (:func:`original_of`). Raises :class:`NotFoundError` when there is nothing to check
    against and :class:`VerificationError` when the original's SHA-256 is not the one the
    link names."""
    with vault.transaction() as session:
        item = get_item(session, item_id)
        if item.derived_from is None or item.derivation is None:
            raise NotFoundError(f"item {item_id}: not a derived copy; nothing to verify")
        from vault.service.rules import own_keys

        # Each intake event checked once, with the key history read once.
        keys = own_keys(vault, session)
        copy_event = signed_intake(vault, session, item, keys=keys)
        _check_signed_link(item, copy_event)
        if item.received_from is not None:
            _check_signed_source(item, copy_event, item.received_from, None)
        expected = item.derived_from_sha256
        if expected is None:
            raise NotFoundError(f"item {item_id}: its link names no SHA-256 of the original; "
                                "nothing to verify")
        relation, tool, sender = item.derivation, item.derivation_tool, item.received_from
        link_id = item.derived_from
        if original is not None and ITEM_ID.matches(original):
            found: Item | None = get_item(session, original)
            chosen = True
        elif original is None:
            found = original_of(session, item)
            chosen = False
            if found is None:
                raise NotFoundError(
                    f"item {item_id}: its original {link_id} (SHA-256 {expected}) is not in "
                    "this vault; open the package that carries it, or give --original FILE")
        else:
            found = None
            chosen = True
        if found is not None:
            found_event = signed_intake(vault, session, found, keys=keys)
            what, kind, actual = found.id, "item", _signed_digest(found, found_event)
            if not chosen and sender is not None:
                _check_signed_source(found, found_event, sender, link_id)
        else:
            assert original is not None
            what, kind, actual = original, "file", _file_sha256(Path(original))
    if actual != expected:
        if chosen:
            advice = (f"{'the file' if kind == 'file' else what} is not the original the "
                      "link names")
        elif sender is not None:
            advice = "the sender's signed link is false; ask the sender"
        else:
            advice = ("this vault's record of the link is false; run `evault custody "
                      "verify`")
        raise VerificationError(
            f"item {item_id}: {relation} copy of {link_id}: the link does not match: it "
            f"names SHA-256 {expected}, but {kind} {what} has {actual}; {advice}")
    return LinkChecked(item=item_id, relation=relation, tool=tool, link_id=link_id,
                       sender=sender, original=what, original_kind=kind, sha256=actual)


def _check_signed_link(item: Item, event: Event) -> None:
    """The link in the item's row must be the one its signed intake ``event`` names
    (:func:`signed_intake`): the check must not rest on a row anyone with the database can
    edit."""
    signed = event.details.get("derived_from")
    recorded = {"id": item.derived_from, "sha256": item.derived_from_sha256,
                "relation": item.derivation,
                **({"tool": item.derivation_tool} if item.derivation_tool else {})}
    if signed != recorded:
        raise VerificationError(
            f"item {item.id}: its link in this vault's database is not the one its signed "
            f"intake event {item.intake_seq} names; the database was altered: run `evault "
            "custody verify` and restore the database from a backup")


def signed_intake(vault: Vault, session: Session, item: Item, *,
                  row: CustodyEvent | None = None,
                  keys: Callable[[str], bytes | None] | None = None,
                  after: str = "run `evault custody verify` and restore the database from a "
                               "backup") -> Event:
    """The item's intake event (``item.ingested``, or ``item.received``), its signature
    checked with the vault's key history: what a comparison may rest on, as the item's
    columns can be changed by anyone with the database. ``row`` and ``keys``
    (:func:`vault.service.rules.own_keys`) save looking them up again for many items;
    ``after`` is the next step a refusal names."""
    from vault.service.rules import checked_own_event

    action = "item.received" if item.received_from is not None else "item.ingested"
    if row is None and item.intake_seq is not None:  # NULL only by SQL outside evault
        # (session.get of a NULL key would print SQLAlchemy's warning before the refusal)
        row = session.get(CustodyEvent, item.intake_seq)
    try:
        if row is None:
            raise VerificationError("it is missing")
        return checked_own_event(vault, session, row, action, item.id, "intake", keys)
    except VaultError as e:
        raise VerificationError(
            f"item {item.id}: its {action} event cannot be trusted ({e}); {after}") from None


def check_signed_rows(vault: Vault, session: Session, items: Sequence[Item], done: str) -> None:
    """Refuse (exit 3) an item whose row's size or SHA-256 is not what its intake event
    (:func:`signed_intake`: the event at its ``intake_seq``, its signature checked with the
    vault's key history) signed: SQL outside evault changed the row, and what a package, a
    receipt or an export says of the item is taken from it. ``done`` says what was left
    undone (``nothing was sent``)."""
    from vault.service.rules import own_keys

    if not items:
        return
    keys = own_keys(vault, session)
    untrusted = f"{done}; run `evault custody verify`, and restore the database from a backup"
    # The intake events in a query per 500 items, not one each (an export of 1,000 items).
    seqs = [item.intake_seq for item in items if item.intake_seq is not None]
    rows = {row.seq: row for start in range(0, len(seqs), 500) for row in session.scalars(
        select(CustodyEvent).where(CustodyEvent.seq.in_(seqs[start:start + 500])))}
    for item in items:
        event = signed_intake(vault, session, item, keys=keys, after=untrusted,
                              row=rows.get(item.intake_seq))
        size, sha256 = event.details.get("size"), event.digests.get("sha256")
        if (size is not None and (type(item.size) is not int or item.size != size)) or (
                sha256 is not None and item.sha256 != sha256):
            raise VerificationError(
                f"item {item.id}: its row's size or SHA-256 is not what the event that created "
                f"it signed (changed by SQL outside evault); {done}; run `evault doctor`, which "
                "names the difference, and restore the database from a backup")


def blob_unreadable(item_id: str, error: Exception, done: str = "") -> VerificationError:
    """The refusal of an item whose blob does not decrypt (``error``, the age reader's);
    ``done``, if given, says what was left undone (``nothing was written``)."""
    return VerificationError(
        f"item {item_id}: its blob does not decrypt ({error}); {done + '; ' if done else ''}"
        "report the blob as damaged or replaced and restore it from a backup")


def content_unlike_row(item_id: str, what: str, done: str = "") -> VerificationError:
    """The refusal of an item whose blob decrypts to content of another ``what`` (``size``,
    ``SHA-256``) than its row records: the row or the blob was changed, and doctor tells
    which; ``done`` as for :func:`blob_unreadable`."""
    return VerificationError(
        f"item {item_id}: stored content does not match the {what} its row records (the blob "
        f"damaged, or the row changed by SQL outside evault); {done + '; ' if done else ''}"
        "run `evault doctor`, which names a changed row, else report the blob as damaged")


def _signed_digest(item: Item, event: Event) -> str:
    """The item's SHA-256 as its signed intake ``event`` has it (and its row must agree)."""
    signed = event.digests.get("sha256")
    if signed != item.sha256:
        raise VerificationError(
            f"item {item.id}: its SHA-256 in this vault's database is not the one its signed "
            "intake event names; the database was altered: run `evault custody verify` and "
            "restore the database from a backup")
    return signed


def _check_signed_source(item: Item, event: Event, sender: str,
                         source_item: str | None) -> None:
    """A received item came from ``sender`` (and is its ``source_item``, when given) as its
    signed ``item.received`` ``event`` says, not only as its row says."""
    details = event.details
    if details.get("sender") != sender or (
            source_item is not None and details.get("source_item") != source_item):
        raise VerificationError(
            f"item {item.id}: its sender or source item in this vault's database is not the "
            "one its signed item.received event names; the database was altered: run `evault "
            "custody verify` and restore the database from a backup")


def _file_sha256(path: Path) -> str:
    """A file's SHA-256, read in 1 MiB chunks (never whole)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except FileNotFoundError:
        raise NotFoundError(f"--original {path}: no such file or item; give an item id "
                            "(EV-...) of this vault or the path of a file") from None
    except IsADirectoryError:
        raise UsageError(f"--original {path}: is a directory; give a file") from None
    except OSError as e:
        raise VaultError(f"--original {path}: cannot be read ({e.strerror or e})") from None
    return digest.hexdigest()


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
    from vault.crypto.age import AgeError, AgeReader
    from vault.durable import atomic_writer, require_folder
    from vault.faults import crash_point
    from vault.service import pending
    from vault.service.custody import CustodyLog, actor_pair
    from vault.service.intake import storage_identity

    if not reason.strip():
        raise UsageError("items export: --reason must say why the content is needed")
    if output.exists() and not force:
        raise ConflictError(f"{output}: exists already; choose another path or pass --force")
    require_folder(output)
    with vault.transaction() as session:
        item = get_item(session, item_id)
        check_signed_rows(vault, session, [item], "nothing was written")
        pair = actor_pair(vault, session, as_name)
        identity = storage_identity(vault, session)
        blob_id, expected, size = item.blob_id, item.sha256, item.size
        version = (session.scalar(select(Blob.version_id).where(Blob.id == blob_id))
                   if vault.config.blobs else None)
    blobs = vault.blob_store()
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
            with blobs.open(blob_id, version) as src, atomic_writer(
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
                try:
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
                except AgeError as e:
                    raise blob_unreadable(item_id, e, "nothing was written") from None
                crash_point("item_export.written")
                if digest.hexdigest() != expected or written != size:
                    raise content_unlike_row(item_id, "size" if written != size else "SHA-256",
                                             "nothing was written")
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

