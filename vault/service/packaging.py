"""Packages for one body: select, check the release rules, build, send, and receipts.

    >>> draft = plan_package(vault, body_id="ICC-OTP", case="UA-2026-0042")     # doctest: +SKIP
    >>> built = build_package(vault, draft)                                   # doctest: +SKIP
    >>> send_package(vault, built["path"], outbox=Path("/mnt/transfer"))         # doctest: +SKIP

A package is planned in one short transaction (:func:`plan_package`: the checks, and the
custody checkpoint it carries), written with no transaction open (:func:`write_package_files`,
several packages in one pass over their items), sealed (fsync, digest read back) and recorded
in a second transaction that also gives the file its name (:func:`record_package`). Writing
streams each item from its blob through the age decryptor into a BagIt bag written as a tar,
into the age encryptor for the body's keys and the sender's escrow key, straight into the
payload's place in the ``.evpkg`` (:class:`~vault.formats.package.PackageWriter`): no
plaintext touches the disk and memory stays flat. Sending is :func:`prepare_send`,
:func:`deliver` (no database) and :func:`record_sent`, which signs the receipt.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, cast

from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from vault.clock import isoformat, utcnow
from vault.crypto.age import AgeIdentity, AgeReader, AgeRecipient, AgeWriter
from vault.custody.events import Event
from vault.custody.merkle import node_hash
from vault.errors import (
    ConflictError,
    NotFoundError,
    PolicyError,
    UsageError,
    VaultError,
    VerificationError,
)
from vault.faults import crash_point
from vault.formats import package as fmt
from vault.formats import receipt as rfmt
from vault.formats.bagit import BagWriter, add_payload_to_each
from vault.formats.canonical import canonical_json
from vault.service import keyhistory
from vault.service.custody import (
    CustodyLog,
    actor_pair,
    checkpoint_now,
    leaf_hashes,
)
from vault.service.identities import KeyPair, current_key, get_identity
from vault.service.ids import new_id
from vault.service.intake import storage_identity
from vault.service.items import get_case, item_dict
from vault.service.rules import RuleSet, checked_rules, release_verdict
from vault.service.vaults import Vault
from vault.store.blobs import (
    TEMP_PREFIX,
    BlobStore,
    WritebackFile,
    fsync_dir,
    require_folder,
    start_writeback,
)
from vault.store.models import (
    Body,
    CustodyEvent,
    Identity,
    IdentityKey,
    Item,
    ItemLabel,
    ItemTag,
    Package,
    PackageItem,
    PackageRecipient,
    Receipt,
)

COPY_CHUNK = 1 << 20
COPY_STEP = 8 << 20
PACKAGE_COLUMNS = ("id", "body", "items", "bytes", "state", "created_at", "sent_at")


# ----------------------------------------------------------------------------- selection


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


def check_release(items: Sequence[Item], body_id: str, rules: RuleSet) -> None:
    """Refuse if any item carries a label that may not go to ``body_id`` (see rules.py)."""
    for item in items:
        reason = release_verdict((lbl.label for lbl in item.labels), body_id, rules.rules,
                                 rules.default)
        if reason is not None:
            raise PolicyError(f"item {item.id}: {reason}; leave it out of this package")


def _active_keys(body: Body) -> list[fmt.RecipientKey]:
    keys = [fmt.RecipientKey(k.fingerprint, k.age_recipient) for k in body.keys
            if k.revoked_at is None]
    if not keys:
        raise PolicyError(
            f"body {body.id}: has no active key; add one with `evault body key add {body.id}`"
        )
    return keys


# ----------------------------------------------------------------------------- building


def _item_metadata(item: Item, bag_path: str) -> dict[str, Any]:
    """items.json's entry: the vault's full view of the item plus its path in the bag."""
    return {**item_dict(item), "path": bag_path}


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


def _custody_excerpt(
    session: Session, items: Sequence[Item], checkpoint_size: int
) -> bytes:
    """custody.jsonl: each event of the items a body may see (:data:`EXCERPT_ACTIONS`), its
    actor's key and its inclusion proof."""
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
    events = [e for e in rows
              if (signed := _signed_fields(e))[0] in EXCERPT_ACTIONS and signed[1] in wanted]
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


class DraftItem(NamedTuple):
    """An item as a package draft holds it."""

    id: str
    blob_id: str
    size: int
    sha256: str
    path: str  # in the bag, below data/
    seq: int  # intake order


@dataclass
class PackageDraft:
    """A package decided in one short transaction: what goes in, to whom, signed by whom.

    Its file is written outside any transaction (:func:`write_package_file`), so a build of
    many GiB does not hold the vault's write lock, and recorded in a second one
    (:func:`record_package`), which checks again what may have changed meanwhile.
    """

    package_id: str
    body_id: str
    target: Path
    temp: Path
    force: bool
    recipients: tuple[fmt.RecipientKey, ...]
    escrow: fmt.RecipientKey
    pair: KeyPair
    sender_name: str
    org: str
    storage: AgeIdentity
    checkpoint: str
    checkpoint_size: int
    excerpt: bytes
    items: tuple[DraftItem, ...]
    metadata: list[dict[str, Any]]
    reference: str | None
    purpose: str | None
    confidential_reference: bool
    now: datetime


@dataclass(frozen=True)
class PackageFile:
    """A package written under its temporary name and not yet recorded."""

    draft: PackageDraft
    envelope: fmt.Envelope
    envelope_bytes: bytes
    statement_bytes: bytes


def build_package(vault: Vault, draft: PackageDraft) -> dict[str, Any]:
    """Write, seal and record a planned package: ``package create`` after
    :func:`plan_package`. Nothing is left behind if it fails."""
    return finish_package(vault, write_package_file(vault, draft))[0]


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
) -> PackageDraft:
    """Check everything and sign the custody checkpoint one package for one body will carry.

    Its file will be ``output``, else ``<package-id>.evpkg`` in ``directory`` (default:
    here). Refusals come before anything is written. The checkpoint is kept even if the
    build then fails: it is a true signed statement of the log, and keeping it here keeps
    checkpoints in the order of the log (one signed now and stored later could follow a
    bigger one).
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
        recipients = _active_keys(body)
        items = select_items(session, item_ids=item_ids, case=case, label=label, tags=tags)
        check_release(items, body_id, checked_rules(vault, session))
        identity = get_identity(session, as_name)
        pair = actor_pair(vault, session, as_name)
        escrow = fmt.RecipientKey(pair.fingerprint, current_key(identity).age_recipient)
        for key in recipients:
            if escrow.fingerprint == key.fingerprint or escrow.age_recipient == key.age_recipient:
                raise PolicyError(
                    f"body {body_id}: key {key.fingerprint} is the sender's own key, which "
                    "every package is encrypted to anyway (escrow); a body's keys are its "
                    f"officers': revoke it with `evault body key revoke {body_id} "
                    f"{key.fingerprint}`"
                )
        storage = storage_identity(vault, session)
        checkpoint, checkpoint_size = checkpoint_now(vault, session, pair, now)
        excerpt = _custody_excerpt(session, items, checkpoint_size)
        paths = [f"{item.id}/{item.original_name}" for item in items]
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
            excerpt=excerpt,
            items=tuple(DraftItem(item.id, item.blob_id, item.size, item.sha256, path,
                                  item.intake_seq)
                        for item, path in zip(items, paths, strict=True)),
            metadata=[_item_metadata(item, f"data/{path}")
                      for item, path in zip(items, paths, strict=True)],
            reference=reference,
            purpose=purpose,
            confidential_reference=confidential_reference,
            now=now,
        )


def write_package_file(vault: Vault, draft: PackageDraft) -> PackageFile:
    """Write one package under its temporary name (no database); removed again on failure."""
    [written] = write_package_files(vault, [draft])
    if isinstance(written, VaultError):
        raise written
    return written


def write_package_files(
    vault: Vault,
    drafts: Sequence[PackageDraft],
    *,
    progress: Callable[[int], None] | None = None,
) -> list[PackageFile | VaultError]:
    """Write several packages together, each under its temporary name (no database).

    One pass over the items they hold between them, in intake order: each item's blob is
    read and decrypted with the storage key once, its plaintext hashed once and checked
    against the recorded SHA-256, and streamed into the bag of every package that holds
    it; each bag goes through the encryptor to its body's keys and the sender's escrow key
    into its own file. No plaintext touches the disk. So five bodies sharing a case cost
    one decryption and one hash of it, not five.

    A refusal (a damaged blob, content that differs from its digest) fails only the
    packages holding that item: their files are removed and the error takes their place
    in the result, in the order of ``drafts``. Anything else (a full disk, Ctrl-C) removes
    every file and raises. ``progress`` is called after each item with the bytes written
    for it into all packages.
    """
    if not drafts:
        return []
    outs: list[_PackageOut] = []
    try:
        for draft in drafts:
            outs.append(_PackageOut(draft))
        store = BlobStore(vault.blobs)
        for item, holders in _items_of(outs):
            live = [(out, path) for out, path in holders if out.error is None]
            if not live:
                continue
            try:
                with store.open(item.blob_id) as src:
                    plain = cast(BinaryIO, AgeReader(src, [live[0][0].draft.storage]))
                    digest = add_payload_to_each([(out.bag, path) for out, path in live],
                                                 plain, item.size)
                if digest != item.sha256:
                    raise VerificationError(
                        f"item {item.id}: stored content does not match its SHA-256; "
                        "run `evault custody verify` and report the blob as damaged"
                    )
            except VaultError as e:
                for out, _ in live:
                    out.fail(e)
            if progress:
                progress(item.size * len(live))
        for out in outs:
            out.complete()
    except BaseException:
        for out in outs:
            out.fail(None)
        raise
    crash_point("package.payload_written")
    return [out.written or cast(VaultError, out.error) for out in outs]


def _items_of(
    outs: Sequence[_PackageOut],
) -> list[tuple[DraftItem, list[tuple[_PackageOut, str]]]]:
    """Every item of the packages once, in intake order (each package's own order), with
    the packages holding it and its path in each."""
    holders: dict[str, tuple[DraftItem, list[tuple[_PackageOut, str]]]] = {}
    for out in outs:
        for item in out.draft.items:
            holders.setdefault(item.id, (item, []))[1].append((out, item.path))
    return sorted(holders.values(), key=lambda entry: entry[0].seq)


class _PackageOut:
    """One package being written: its file, the container, the encryptor and the bag."""

    def __init__(self, draft: PackageDraft) -> None:
        self.draft = draft
        self.error: VaultError | None = None
        self.written: PackageFile | None = None
        self._files = contextlib.ExitStack()
        try:
            self._open()
        except VaultError as e:  # this package alone is refused (e.g. its envelope)
            self.fail(e)
        except BaseException:
            self.fail(None)
            raise

    def _open(self) -> None:
        draft = self.draft
        self._sender = fmt.Party(draft.sender_name, draft.pair.fingerprint)
        self._created_at = isoformat(draft.now)
        envelope = fmt.Envelope(
            package_id=draft.package_id,
            sender=self._sender,
            body=draft.body_id,
            recipients=draft.recipients,
            escrow=draft.escrow,
            created_at=self._created_at,
            payload_size=0,  # PackageWriter fills in the payload's size and digest
            payload_sha256="0" * 64,
            checkpoint=draft.checkpoint,
        )
        self.file = self._files.enter_context(WritebackFile(draft.temp, "xb"))
        self.package = self._files.enter_context(
            fmt.PackageWriter(cast(BinaryIO, self.file), envelope, draft.pair.signing))
        keys = [AgeRecipient.parse(r.age_recipient) for r in [*draft.recipients, draft.escrow]]
        self.writer = AgeWriter(cast(BinaryIO, self.package), keys)
        self.bag = BagWriter(cast(BinaryIO, self.writer), draft.package_id,
                             bagging_date=draft.now.date())

    def fail(self, error: VaultError | None) -> None:
        """Stop writing this package and remove its file; ``error`` says why, if it is a
        refusal of this package alone."""
        if self.error is None:
            self.error = error
        self.written = None
        if hasattr(self, "bag"):
            self.bag.abandon()
        self._files.close()
        discard_package_file(self.draft)

    def complete(self) -> None:
        """Add the tag files and the signed statement, finish the container, make the file
        read-only; a refusal goes into ``error``."""
        if self.error is not None:
            return
        draft = self.draft
        try:
            bag = self.bag
            bag.add_tag_file("evault/items.json",
                             json.dumps(draft.metadata, indent=2, ensure_ascii=False).encode())
            bag.add_tag_file("evault/custody.jsonl", draft.excerpt)
            info = [
                ("Source-Organization", draft.org),
                ("External-Identifier", draft.package_id),
                ("EVault-Body", draft.body_id),
                ("EVault-Sender", f"{draft.sender_name} {draft.pair.fingerprint}"),
            ]
            if draft.reference:
                info.append(("EVault-Reference", draft.reference))
            if draft.purpose:
                info.append(("EVault-Purpose", draft.purpose))
            summary = bag.finish(info)
            statement = fmt.Statement(
                package_id=draft.package_id,
                body=draft.body_id,
                recipients=draft.recipients,
                escrow=draft.escrow,
                sender=self._sender,
                created_at=self._created_at,
                items=tuple(fmt.StatementItem(item.id, f"data/{item.path}", item.size,
                                              item.sha256) for item in draft.items),
                tagmanifest_sha256=summary.tagmanifest_sha256,
            )
            statement_bytes, statement_sig = fmt.sign_statement(statement, draft.pair.signing)
            bag.add_tag_file("evault/statement.json", statement_bytes, in_tagmanifest=False)
            bag.add_tag_file("evault/statement.json.sig", statement_sig.encode(),
                             in_tagmanifest=False)
            bag.close()
            self.writer.close()
            envelope, envelope_bytes, _ = self.package.finish()
            # A package never changes once written: read-only, for every name it gets
            # (the outbox may link to this very file, see _deliver).
            fd = self.file.fileno()
            os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) & ~0o222)
            self._files.close()
        except VaultError as e:
            self.fail(e)
            return
        self.written = PackageFile(draft, envelope, envelope_bytes, statement_bytes)


def discard_package_file(draft: PackageDraft) -> None:
    """Remove a package's temporary file, if any (a build that failed or was refused)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(draft.temp)


def finish_package(
    vault: Vault, written: PackageFile, sealed: Callable[[], Sealed] | None = None
) -> tuple[dict[str, Any], FileStamp]:
    """Make the written file durable, take its digest, record it and give it its name; the
    file is removed if any of it fails. ``sealed`` gives the first two if they are being
    done already (:func:`seal_package_file` on another thread).

    Returns the package and the stamp of the file as its digest was read.
    """
    try:
        seal = sealed() if sealed is not None else seal_package_file(written)
        return record_package(vault, written, seal.sha256, seal.size), seal.stamp
    except BaseException:
        discard_package_file(written.draft)
        raise


@dataclass(frozen=True)
class Sealed:
    """A written package file made durable, and its digest read back."""

    stamp: FileStamp
    sha256: str
    size: int


def seal_package_file(written: PackageFile) -> Sealed:
    """fsync the written file and read back its SHA-256 meanwhile (no database)."""
    path = written.draft.temp
    stamp = file_stamp(path)
    sha256, size = sync_and_digest(path)
    return Sealed(stamp, sha256, size)


FileStamp = tuple[int, int, int, int]
"""A file's device, inode, size and modification time (ns)."""


def file_stamp(path: Path) -> FileStamp:
    """The :data:`FileStamp` of ``path``: equal stamps mean the same file, not rewritten."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def sync_and_digest(path: Path) -> tuple[str, int]:
    """fsync ``path`` and read back its SHA-256 and size (from the page cache) meanwhile."""
    with open(path, "rb") as f, ThreadPoolExecutor(max_workers=1) as pool:
        synced = pool.submit(os.fsync, f.fileno())
        try:
            return file_digest(path)
        finally:
            synced.result()


def record_package(
    vault: Vault, written: PackageFile, file_sha256: str, file_size: int
) -> dict[str, Any]:
    """Record a written package (state ``built``) and give its file its name, in one
    transaction; the file is removed if that transaction rolls back.

    What may have changed since :func:`plan_package` is checked again: a body key revoked or
    a label whose release rule now forbids this body refuses the package.
    """
    draft = written.draft
    envelope = written.envelope
    item_ids = [item.id for item in draft.items]
    with vault.transaction() as session:
        body = session.get(Body, draft.body_id)
        if body is None:
            raise NotFoundError(f"body {draft.body_id}: not found; see `evault body list`")
        active = {k.fingerprint for k in body.keys if k.revoked_at is None}
        for key in draft.recipients:
            if key.fingerprint not in active:
                raise PolicyError(
                    f"body {draft.body_id}: key {key.fingerprint} was revoked while package "
                    f"{draft.package_id} was being built; nothing was kept, build it again"
                )
        check_release(select_items(session, item_ids=item_ids), draft.body_id,
                      checked_rules(vault, session))
        everyone = [*draft.recipients, draft.escrow]
        row = Package(
            id=draft.package_id,
            body_id=draft.body_id,
            sender=draft.pair.fingerprint,
            created_at=draft.now,
            reference=draft.reference,
            purpose=draft.purpose,
            confidential_reference=draft.confidential_reference,
            envelope=written.envelope_bytes,
            envelope_sha256=hashlib.sha256(written.envelope_bytes).hexdigest(),
            statement_sha256=hashlib.sha256(written.statement_bytes).hexdigest(),
            payload_sha256=envelope.payload_sha256,
            payload_size=envelope.payload_size,
            file_sha256=file_sha256,
            file_size=file_size,
            path=str(draft.target),
            checkpoint_size=draft.checkpoint_size,
            state="built",
            items=[PackageItem(item_id=item.id, position=n, bag_path=f"data/{item.path}")
                   for n, item in enumerate(draft.items)],
            recipients=[
                PackageRecipient(fingerprint=r.fingerprint, age_recipient=r.age_recipient,
                                 escrow=r is draft.escrow, position=n)
                for n, r in enumerate(everyone)
            ],
        )
        session.add(row)
        CustodyLog(vault, session).append(
            draft.pair,
            "package.built",
            draft.package_id,
            details={
                "body": draft.body_id,
                "items": item_ids,
                "recipients": [r.fingerprint for r in draft.recipients],
                "escrow": draft.escrow.fingerprint,
            },
            digests={"envelope": row.envelope_sha256, "payload": row.payload_sha256,
                     "file": file_sha256},
            now=draft.now,
        )
        session.flush()
        crash_point("package.before_commit")
        # The name is taken last, inside the transaction: if the commit fails the file is
        # removed (below), and a crash before this point leaves only the temporary file.
        if draft.force:
            os.replace(draft.temp, draft.target)
        else:
            os.link(draft.temp, draft.target)
            os.unlink(draft.temp)
        fsync_dir(draft.target.parent)
        _unlink_on_rollback(session, draft.target)
        result = package_dict(row, draft.body_id)
    crash_point("package.after_commit")
    return result


def _unlink_on_rollback(session: Session, path: Path) -> None:
    """Remove ``path`` if this transaction rolls back (its commit fails): a package file
    must not outlive the rows and the checkpoint it names."""

    def remove(_session: Session) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    sa_event.listen(session, "after_rollback", remove, once=True)


def file_digest(path: Path) -> tuple[str, int]:
    """SHA-256 and size of a file, read once.

    The next chunk is read while the last one is hashed on a helper thread (both release
    the GIL), so a large file costs about its hashing time, not reading plus hashing.
    """
    digest = hashlib.sha256()
    size = 0
    buffers = (bytearray(COPY_CHUNK), bytearray(COPY_CHUNK))
    turn = 0
    pending: Future[None] | None = None
    with open(path, "rb", buffering=0) as f, ThreadPoolExecutor(max_workers=1) as pool:
        try:
            while True:
                # Read into one buffer while the other is hashed; submit the next hash
                # only after the last one finished, so each buffer is free when refilled.
                view = memoryview(buffers[turn])
                n = f.readinto(view)
                if pending is not None:
                    pending.result()
                    pending = None
                if not n:
                    break
                pending = pool.submit(digest.update, view[:n])
                size += n
                turn ^= 1
        finally:
            if pending is not None:
                pending.exception()
    return digest.hexdigest(), size


# ----------------------------------------------------------------------------- views


def package_dict(row: Package, body_id: str | None = None) -> dict[str, Any]:
    """The public view of a package (ids, digests, state; no titles or names)."""
    return {
        "id": row.id,
        "body": body_id or row.body_id,
        "state": row.state,
        "items": len(row.items),
        "item_ids": [pi.item_id for pi in row.items],
        "bytes": row.file_size,
        "path": row.path,
        "sender": row.sender,
        "recipients": [r.fingerprint for r in row.recipients if not r.escrow],
        "escrow": next((r.fingerprint for r in row.recipients if r.escrow), None),
        "envelope_sha256": row.envelope_sha256,
        "payload_sha256": row.payload_sha256,
        "file_sha256": row.file_sha256,
        "reference": row.reference,
        "purpose": row.purpose,
        "created_at": isoformat(row.created_at),
        "sent_at": isoformat(row.sent_at) if row.sent_at else None,
        "outbox": row.outbox,
        "acknowledged_at": isoformat(row.acknowledged_at) if row.acknowledged_at else None,
    }


def get_package(session: Session, package_id: str) -> Package:
    """The package with this id."""
    row = session.get(Package, package_id)
    if row is None:
        raise NotFoundError(f"package {package_id}: not found; see `evault package list`")
    return row


def list_packages(vault: Vault, *, body: str | None = None) -> list[dict[str, Any]]:
    """Packages, newest last."""
    with vault.transaction() as session:
        stmt = select(Package).order_by(Package.created_at, Package.id)
        if body:
            stmt = stmt.where(Package.body_id == body)
        return [package_dict(p) for p in session.scalars(stmt)]


def show_package(vault: Vault, package_id: str) -> dict[str, Any]:
    """One package."""
    with vault.transaction() as session:
        return package_dict(get_package(session, package_id))


# ----------------------------------------------------------------------------- sending


def _resolve_package(session: Session, package: str) -> tuple[Package, Path]:
    """A package given by id or by the path of its file."""
    path = Path(package)
    if path.is_file():
        pkg = fmt.read_package(path)
        envelope = fmt.Envelope.from_bytes(pkg.envelope_bytes)
        row = get_package(session, envelope.package_id)
        if hashlib.sha256(pkg.envelope_bytes).hexdigest() != row.envelope_sha256:
            raise VerificationError(
                f"{path}: envelope differs from package {row.id} as built; do not send it"
            )
        return row, path
    row = get_package(session, package)
    return row, Path(row.path)


@dataclass(frozen=True)
class Delivery:
    """A built package cleared for sending: its file, that file's SHA-256 as built, and the
    outbox it goes to."""

    package_id: str
    source: Path
    expected: str
    outbox: Path
    #: The source's stamp when this process read ``expected`` from it, if it just did: a
    #: hard link to that same, unchanged file is then not read a second time.
    read_at: FileStamp | None = None

    @property
    def final(self) -> Path:
        """The package's name in the outbox."""
        return self.outbox / f"{self.package_id}.evpkg"


def send_package(
    vault: Vault,
    package: str,
    *,
    outbox: Path,
    as_name: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Deliver a package into a drop folder atomically, re-check the copy, log and sign a receipt.

    Sending a package again into a folder that already holds the identical file changes
    nothing and says so; another file of the same name is refused.
    """
    now = now or utcnow()
    delivery, pair = prepare_send(vault, package, outbox=outbox, as_name=as_name)
    deliver(delivery)
    return record_sent(vault, delivery, pair, now)


def prepare_send(
    vault: Vault, package: str, *, outbox: Path, as_name: str | None = None
) -> tuple[Delivery, KeyPair]:
    """Check that a package (id or file) was built and not sent; the sender's keys."""
    if not outbox.is_dir():
        raise NotFoundError(f"outbox {outbox}: no such folder; mount or create it first")
    with vault.transaction() as session:
        row, source = _resolve_package(session, package)
        if row.state != "built":
            raise ConflictError(
                f"package {row.id}: sent already at {isoformat(row.sent_at or utcnow())} to "
                f"{row.outbox}; nothing to do"
            )
        if not source.is_file():
            raise NotFoundError(f"package {row.id}: file {source} is missing; rebuild it")
        _check_release_now(vault, session, row)
        return (Delivery(row.id, source, row.file_sha256, outbox),
                actor_pair(vault, session, as_name))


def _check_release_now(vault: Vault, session: Session, row: Package) -> None:
    """Refuse to send a package whose items the release rules no longer let go to its body
    (a rule changed after it was built)."""
    rules = checked_rules(vault, session)
    for item in select_items(session, item_ids=[pi.item_id for pi in row.items]):
        reason = release_verdict((lbl.label for lbl in item.labels), row.body_id, rules.rules,
                                 rules.default)
        if reason is not None:
            raise PolicyError(
                f"package {row.id}: item {item.id}: {reason}, since it was built; build a "
                "new package without it"
            )


def deliver(delivery: Delivery) -> None:
    """Give the package its name in the outbox, checked against its digest as built.

    No database: this is the part of sending that may run beside other work.
    """
    final = delivery.final
    # Leftovers of an interrupted delivery of this package go first, whichever way this
    # send goes on: one killed between naming the copy and removing its temporary name
    # left both, and the copy is then found in place below.
    for stale in final.parent.glob(f"{TEMP_PREFIX}*-{final.name}"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    if final.exists():
        if file_digest(final)[0] != delivery.expected:
            raise ConflictError(
                f"{final}: exists with other content; remove it or use another outbox"
            )
    else:
        _deliver(delivery, final)
    crash_point("send.delivered")


def record_sent(
    vault: Vault, delivery: Delivery, pair: KeyPair, now: datetime
) -> dict[str, Any]:
    """Log a delivered package as sent (the package and each item) and sign its receipt."""
    with vault.transaction() as session:
        row = get_package(session, delivery.package_id)
        if row.state != "built":
            raise ConflictError(f"package {row.id}: sent by another command meanwhile")
        row.state = "sent"
        row.sent_at = now
        row.outbox = str(delivery.outbox.absolute())
        log = CustodyLog(vault, session)
        details = {"body": row.body_id, "outbox_file": delivery.final.name}
        log.append(pair, "package.sent", row.id, details=details,
                   digests={"file": delivery.expected, "envelope": row.envelope_sha256},
                   now=now)
        for pi in row.items:
            log.append(pair, "package.sent", pi.item_id,
                       details={"package": row.id, "body": row.body_id}, now=now)
        receipt = _make_receipt(vault, session, row, pair, now)
        result = {**package_dict(row), "receipt": receipt.id, "delivered": str(delivery.final)}
    crash_point("send.after_commit")
    return result


def _deliver(delivery: Delivery, final: Path) -> None:
    """Put ``source`` into the outbox under a temporary name, check it, then name it.

    On the vault's own file system the outbox gets a second name for the built file (a hard
    link: no second copy to write, and package files are read-only); elsewhere a copy,
    fsynced. Either way the file under the temporary name is read back and must have the
    SHA-256 recorded at build before it gets its final name: never a partial or different
    file in the outbox. (:func:`deliver` has removed leftovers of an interrupted delivery.)
    """
    source, expected = delivery.source, delivery.expected
    temp = final.with_name(f"{TEMP_PREFIX}{secrets.token_hex(6)}-{final.name}")
    try:
        if not _link(source, temp):
            with open(source, "rb") as src, open(temp, "xb") as dst:
                _copy_file(src.fileno(), dst.fileno())
                os.fchmod(dst.fileno(), stat.S_IMODE(os.fstat(dst.fileno()).st_mode) & ~0o222)
            copied, _size = sync_and_digest(temp)
        elif delivery.read_at is not None and file_stamp(temp) == delivery.read_at:
            # The very file whose digest this process has just read (and synced), unchanged
            # since: a third read of the same bytes would prove nothing more.
            copied = expected
        else:
            copied, _size = sync_and_digest(temp)
        if copied != expected:
            raise VerificationError(
                f"{final}: the file made in the outbox does not match the package as built; "
                f"nothing was left there; check {source} with `evault verify` or rebuild it"
            )
        crash_point("send.copied")
        os.link(temp, final)
        crash_point("send.linked")
        os.unlink(temp)
        fsync_dir(final.parent)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        if isinstance(e, OSError) and not e.filename:  # a write: say which file and where
            raise VaultError(f"{final}: cannot be written ({e.strerror or e}); nothing was "
                             "left in the outbox") from None
        raise


def _link(source: Path, temp: Path) -> bool:
    """Give ``source`` the name ``temp`` too, if both are on one file system that allows it."""
    try:
        os.link(source, temp)
    except OSError as e:
        if e.errno in _NO_LINK:
            return False
        raise
    return True


_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP,
            errno.ENOSYS}

_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTSUP}


def _copy_file(src: int, dst: int) -> None:
    """Copy the rest of ``src`` into ``dst``: in the kernel (copy_file_range) where the file
    systems allow, else through a buffer; each step is handed to the disk at once."""
    kernel = hasattr(os, "copy_file_range")
    done = 0
    while True:
        if kernel:
            try:
                n = os.copy_file_range(src, dst, COPY_STEP)
            except OSError as e:
                if e.errno not in _NO_KERNEL_COPY:
                    raise
                n = 0
            if not n:
                # e.g. another file system; and the end is confirmed by a plain read, as
                # some file systems report 0 early: carry on from where it stopped.
                kernel = False
                continue
        else:
            chunk = os.read(src, COPY_CHUNK)
            n = len(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(dst, view):]
        if not n:
            return
        start_writeback(dst, done, n)
        done += n


# ----------------------------------------------------------------------------- receipts


def _make_receipt(
    vault: Vault, session: Session, row: Package, pair: KeyPair, now: datetime
) -> Receipt:
    identity = session.scalars(
        select(Identity).join(IdentityKey).where(IdentityKey.fingerprint == pair.fingerprint)
    ).one()
    checkpoint, _size = checkpoint_now(vault, session, pair, now)
    items = session.scalars(select(Item).where(Item.id.in_([pi.item_id for pi in row.items])))
    by_id = {i.id: i for i in items}
    reference = row.reference
    document = rfmt.SharingReceipt(
        receipt_id=new_id("RCP"),
        package_id=row.id,
        body=row.body_id,
        sender=fmt.Party(identity.name, pair.fingerprint),
        recipients=tuple(r.fingerprint for r in row.recipients if not r.escrow),
        items=tuple(
            rfmt.ReceiptItem(pi.item_id, by_id[pi.item_id].size, by_id[pi.item_id].sha256)
            for pi in row.items
        ),
        envelope_sha256=row.envelope_sha256,
        payload_sha256=row.payload_sha256,
        reference=None if row.confidential_reference else reference,
        reference_sha256=(hashlib.sha256(reference.encode()).hexdigest()
                          if reference and row.confidential_reference else None),
        sent_at=isoformat(now),
        checkpoint=checkpoint,
    )
    data = document.to_bytes()
    receipt = Receipt(
        id=document.receipt_id,
        package_id=row.id,
        body_id=row.body_id,
        created_at=now,
        document=data,
        signature=rfmt.sign_document(data, pair.signing, rfmt.RECEIPT_NAMESPACE),
    )
    session.add(receipt)
    return receipt


def receipt_dict(receipt: Receipt) -> dict[str, Any]:
    """A receipt's public view: the signed document's fields and its signature."""
    document = json.loads(receipt.document)
    return {"id": receipt.id, "package": receipt.package_id, "body": receipt.body_id,
            "created_at": isoformat(receipt.created_at), "document": document}


def list_receipts(
    vault: Vault, *, body: str | None = None, since: datetime | None = None
) -> list[dict[str, Any]]:
    """Sharing receipts, oldest first."""
    with vault.transaction() as session:
        stmt = select(Receipt).order_by(Receipt.created_at, Receipt.id)
        if body:
            stmt = stmt.where(Receipt.body_id == body)
        if since:
            stmt = stmt.where(Receipt.created_at >= since)
        out = []
        for r in session.scalars(stmt):
            doc = json.loads(r.document)
            out.append({"id": r.id, "package": r.package_id, "body": r.body_id,
                        "items": len(doc["items"]), "sent_at": doc["sent_at"],
                        "envelope_sha256": doc["envelope_sha256"]})
        return out


def get_receipt(session: Session, receipt_id: str) -> Receipt:
    """The receipt with this id."""
    row = session.get(Receipt, receipt_id)
    if row is None:
        raise NotFoundError(f"receipt {receipt_id}: not found; see `evault receipt list`")
    return row


def show_receipt(vault: Vault, receipt_id: str) -> dict[str, Any]:
    """One receipt."""
    with vault.transaction() as session:
        return receipt_dict(get_receipt(session, receipt_id))


def export_receipt(vault: Vault, receipt_id: str, output: Path) -> tuple[Path, Path]:
    """Write the receipt's exact signed bytes to ``output`` and its signature to ``output.sig``
    (both or neither)."""
    from vault.store.blobs import publish_staged, stage_files

    sig_path = output.with_name(output.name + ".sig")
    for path in (output, sig_path):
        if path.exists():
            raise ConflictError(f"{path}: exists already; choose another -o")
    require_folder(output)
    with vault.transaction() as session:
        row = get_receipt(session, receipt_id)
        document, signature = row.document, row.signature
    publish_staged(stage_files([(output, document), (sig_path, signature.encode())]))
    return output, sig_path
