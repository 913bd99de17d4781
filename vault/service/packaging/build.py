"""Building a planned package: its file written, made durable, recorded and named.

    >>> draft = plan_package(vault, body_id="ICC-OTP", case="UA-2026-0042")     # doctest: +SKIP
    >>> built = build_package(vault, draft)                                   # doctest: +SKIP

A package is written with no transaction open (:func:`write_package_files`, several
packages in one pass over their items, each file's SHA-256 taken as it is written),
sealed (fsync) and recorded in a second transaction that also gives the file its name
(:func:`record_package`). Writing
streams each item from its blob through the age decryptor into a BagIt bag written as a tar,
into the age encryptor for the body's keys and the sender's escrow key, straight into the
``.evpkg`` behind payload.age's header (:class:`~vault.formats.package.PackageWriter`), whose
size is known before: each bag is first sized by the same calls on a writer that only
counts. No plaintext touches the disk and memory stays flat.

Imports :mod:`~vault.service.packaging.plan` (the draft and the checks it repeats),
:mod:`~vault.service.packaging.records` and :mod:`~vault.service.packaging.digest` of this
package, the custody log, ``vault.formats``, ``vault.crypto.age`` and ``vault.store``; never
sending or receipts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from vault.clock import isoformat
from vault.crypto.age import AgeError, AgeReader, AgeRecipient, AgeWriter, encrypted_size
from vault.durable import WritebackFile, fsync_dir
from vault.errors import InternalError, NotFoundError, PolicyError, VaultError, VerificationError
from vault.faults import crash_point
from vault.formats.bagit import BagWriter, SourceSizeError, add_payload_to_each
from vault.formats.package import (
    Envelope,
    PackageWriter,
    Party,
    PayloadSizeError,
    Statement,
    StatementItem,
    sign_statement,
)
from vault.service.custody import CustodyLog
from vault.service.items import blob_unreadable, content_unlike_row
from vault.service.packaging.digest import FileStamp
from vault.service.packaging.plan import (
    CASE_UCO,
    DraftItem,
    PackageDraft,
    check_release,
    decide_release,
    select_items,
)
from vault.service.packaging.records import PackageInfo, package_info
from vault.service.rules import checked_rules
from vault.service.vaults import Vault
from vault.store.blobs import Blobs
from vault.store.models import Body, Package, PackageItem, PackageRecipient, PackageState


@dataclass(frozen=True)
class WrittenPackage:
    """A package written under its temporary name and not yet recorded."""

    draft: PackageDraft
    envelope: Envelope
    envelope_bytes: bytes
    statement_bytes: bytes
    sha256: str  # of the whole file, taken as it was written
    size: int
    stamp: FileStamp  # of the file right after its last byte was written


def build_package(vault: Vault, draft: PackageDraft) -> PackageInfo:
    """Write, seal and record a planned package: ``package create`` after
    :func:`plan_package`. Nothing is left behind if it fails."""
    return finish_package(vault, write_package_file(vault, draft))


def write_package_file(vault: Vault, draft: PackageDraft) -> WrittenPackage:
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
) -> list[WrittenPackage | VaultError]:
    """Write several packages together, each under its temporary name (no database).

    One pass over the items they hold between them, in intake order: each item's blob is
    read and decrypted with the storage key once, its plaintext hashed once and checked
    against the recorded SHA-256, and streamed into the bag of every package that holds
    it; each bag goes through the encryptor to its body's keys and the sender's escrow key
    into its own file. No plaintext touches the disk. So five bodies sharing a case cost
    one decryption and one hash of it, not five.

    A refusal (a damaged blob, content that differs from its digest) fails only the
    packages holding that item: their files are removed and the error takes their place
    in the result, in the order of ``drafts``. So does a bug of evault's in a package's
    writers (:class:`~vault.formats.package.PayloadSizeError`: a payload not of the size
    computed for it), for that package, or for the packages holding the item being written
    when it struck: an :class:`~vault.errors.InternalError` (:func:`_writer_bug`). Anything
    else (a full disk, Ctrl-C) removes every file and raises. ``progress`` is called after
    each item with the bytes written for it into all packages.
    """
    if not drafts:
        return []
    outs: list[_PackageOut] = []
    try:
        for draft in drafts:
            outs.append(_PackageOut(draft))
        store = vault.blob_store()
        for item, holders in _items_of(outs):
            live = [(out, path) for out, path in holders if out.error is None]
            if not live:
                continue
            try:
                with _open_blob(store, item) as src:
                    try:
                        plain = cast(BinaryIO, AgeReader(src, [live[0][0].draft.storage]))
                        digest = add_payload_to_each([(out.bag, path) for out, path in live],
                                                     plain, item.size)
                    except AgeError as e:
                        raise blob_unreadable(item.id, e) from None
                    except SourceSizeError:  # age authenticates the length: not the row's
                        raise content_unlike_row(item.id, "size") from None
                if digest != item.sha256:
                    raise content_unlike_row(item.id, "SHA-256")
            except VaultError as e:
                for out, _ in live:
                    out.fail(e)
            except PayloadSizeError as e:  # a writer's bug (its sizing): these packages alone
                for out, _ in live:
                    out.fail(_writer_bug(out.draft, e))
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


def _open_blob(store: Blobs, item: DraftItem) -> BinaryIO:
    """The item's blob; a missing one is named by its item (it fails only its packages)."""
    try:
        return store.open(item.blob_id, item.blob_version)
    except FileNotFoundError:
        raise NotFoundError(
            f"item {item.id}: its blob {item.blob_id} is missing from {store.where}; run "
            "`evault doctor`, and restore the blob from a backup") from None
    except NotFoundError as e:
        raise NotFoundError(f"item {item.id}: {e}") from None


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
        self.written: WrittenPackage | None = None
        self._files = contextlib.ExitStack()
        try:
            self._open()
        except VaultError as e:  # this package alone is refused (e.g. its envelope)
            self.fail(e)
        except PayloadSizeError as e:  # a writer's bug (its sizing): this package alone
            self.fail(_writer_bug(draft, e))
        except BaseException:
            self.fail(None)
            raise

    def _open(self) -> None:
        draft = self.draft
        self._sender = Party(draft.sender_name, draft.pair.fingerprint)
        self._created_at = isoformat(draft.now)
        envelope = Envelope(
            package_id=draft.package_id,
            sender=self._sender,
            body=draft.body_id,
            recipients=draft.recipients,
            escrow=draft.escrow,
            created_at=self._created_at,
            payload_size=0,  # PackageWriter fills in the payload's size and digest
            payload_sha256="0" * 64,
            checkpoint=draft.checkpoint,
            timestamps=draft.timestamps,
            version=2 if draft.timestamps else 1,
        )
        keys = [AgeRecipient.parse(r.age_recipient) for r in [*draft.recipients, draft.escrow]]
        # payload.age comes first in the file, its size in its tar header: the bag is sized
        # before it is written, by the same calls on a writer that only counts.
        sizer = BagWriter.sizing(draft.package_id, bagging_date=draft.now.date())
        for item in draft.items:
            sizer.count_payload(item.path, item.size)
        _write_tag_files(sizer, draft, self._sender, self._created_at)
        sizer.close()
        payload_size = encrypted_size(keys, sizer.size)
        self.file = self._files.enter_context(WritebackFile(draft.temp, "xb"))
        self.package = self._files.enter_context(PackageWriter(
            cast(BinaryIO, self.file), envelope, draft.pair.signing, payload_size))
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
            statement_bytes = _write_tag_files(self.bag, draft, self._sender, self._created_at)
            self.bag.close()
            self.writer.close()
            container = self.package.finish()
            # A package never changes once written: read-only, for every name it gets
            # (the outbox may link to this very file, see _deliver).
            fd = self.file.fileno()
            os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) & ~0o222)
            stamp = _stamp(os.fstat(fd))
            self._files.close()
        except VaultError as e:
            self.fail(e)
            return
        except PayloadSizeError as e:  # a writer's bug (its sizing): this package alone
            self.fail(_writer_bug(draft, e))
            return
        self.written = WrittenPackage(
            draft, container.envelope, container.envelope_bytes, statement_bytes,
            container.sha256, container.size, stamp)


def _writer_bug(draft: PackageDraft, e: PayloadSizeError) -> InternalError:
    """A package refused for a bug in its writers (the payload did not come to the size
    computed before it, see :class:`~vault.formats.package.PackageWriter`): the
    user cannot fix it, so the message says to report it, and the run goes on."""
    error = InternalError(
        f"package {draft.package_id}: not built: an internal error in evault ({e}); its file "
        "was removed; please report this bug to evault's maintainers")
    error.__cause__ = e  # --debug shows where it came from
    return error


def _write_tag_files(bag: BagWriter, draft: PackageDraft, sender: Party,
                     created_at: str) -> bytes:
    """Add a package's tag files, finish its bag and add the signed statement; return the
    statement's bytes. The bag's payload is in; only ``close()`` is left.

    The same calls size the bag before it is written (a :meth:`BagWriter.sizing` writer):
    everything added here is fixed by the draft, but for digests, which have a fixed length.
    """
    bag.add_tag_file("evault/items.json",
                     json.dumps(draft.metadata, indent=2, ensure_ascii=False).encode())
    bag.add_tag_file("evault/custody.jsonl", draft.excerpt)
    for path, data in draft.approval_files:  # listed in the tag manifest: signed
        bag.add_tag_file(path, data)
    if draft.case_uco is not None:  # listed in the tag manifest: signed
        bag.add_tag_file(CASE_UCO, draft.case_uco)
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
    statement = Statement(
        package_id=draft.package_id,
        body=draft.body_id,
        recipients=draft.recipients,
        escrow=draft.escrow,
        sender=sender,
        created_at=created_at,
        items=tuple(StatementItem(item.id, f"data/{item.path}", item.size,
                                  item.sha256, item.link) for item in draft.items),
        tagmanifest_sha256=summary.tagmanifest_sha256,
        # Version 1 unless a derived copy's link needs version 2: a body whose
        # evault predates links still opens every package without one.
        version=2 if any(item.link for item in draft.items) else 1,
    )
    statement_bytes, statement_sig = sign_statement(statement, draft.pair.signing)
    bag.add_tag_file("evault/statement.json", statement_bytes, in_tagmanifest=False)
    bag.add_tag_file("evault/statement.json.sig", statement_sig.encode(),
                     in_tagmanifest=False)
    return statement_bytes


def discard_package_file(draft: PackageDraft) -> None:
    """Remove a package's temporary file, if any (a build that failed or was refused)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(draft.temp)


def finish_package(
    vault: Vault, written: WrittenPackage, sealed: Callable[[], None] | None = None
) -> PackageInfo:
    """Make the written file durable, record it with its digest and give it its name; the
    file is removed if any of it fails. ``sealed`` waits for the first step if it is being
    done already (:func:`seal_package_file` on another thread)."""
    try:
        if sealed is not None:
            sealed()
        else:
            seal_package_file(written)
        return record_package(vault, written)
    except BaseException:
        discard_package_file(written.draft)
        raise


def seal_package_file(written: WrittenPackage) -> None:
    """fsync the written file (no database).

    Its SHA-256 was taken as it was written, not read back: the file must still be the
    one stamped right after its last byte (same device, inode, size and modification
    time), or it is refused (exit 3). That catches a careless change, not a determined one
    (a write during the build, a modification time put back): what stands between a
    changed file and a body is that every delivery reads the delivered file back and
    compares it with the digest recorded here, the digest of what was written.
    """
    with open(written.draft.temp, "rb") as f:
        os.fsync(f.fileno())
        stamp = _stamp(os.fstat(f.fileno()))
    if stamp != written.stamp:
        raise VerificationError(
            f"package {written.draft.package_id}: its file changed after it was written; "
            "nothing was recorded, build the package again")


def _stamp(st: os.stat_result) -> FileStamp:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def record_package(vault: Vault, written: WrittenPackage) -> PackageInfo:
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
        check_release(decide_release(vault, session, select_items(session, item_ids=item_ids),
                                     draft.body_id, checked_rules(vault, session),
                                     substitute=False))
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
            file_sha256=written.sha256,
            file_size=written.size,
            path=str(draft.target),
            checkpoint_size=draft.checkpoint_size,
            state=PackageState.BUILT,
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
                **({"approvals": list(draft.approvers)} if draft.approvers else {}),
            },
            digests={"envelope": row.envelope_sha256, "payload": row.payload_sha256,
                     "file": written.sha256},
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
        result = package_info(row, draft.body_id)
    crash_point("package.after_commit")
    return result


def _unlink_on_rollback(session: Session, path: Path) -> None:
    """Remove ``path`` if this transaction rolls back (its commit fails): a package file
    must not outlive the rows and the checkpoint it names."""

    def remove(_session: Session) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    sa_event.listen(session, "after_rollback", remove, once=True)
