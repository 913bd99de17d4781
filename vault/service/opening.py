"""The recipient's side: open a package into the vault, and acknowledge it.

    >>> open_package(vault, Path("PKG-0123456789AB.evpkg"), out_dir=Path("in"))  # doctest: +SKIP
    >>> acknowledge(vault, "PKG-0123456789AB", output=Path("ack.json"))         # doctest: +SKIP

``open`` verifies everything (:mod:`vault.service.inspection`) while extracting into a
staging folder inside ``--out``, renamed only when every check passed; the items then enter
this vault encrypted at rest, with an ``item.received`` event naming the sender, the
original digests and, for a derived copy, its signed link to the original (the original's
id in the sender's vault and its SHA-256, the relation, the tool), and the sender's custody
excerpt kept: custody continues across organisations. They are recorded as intake records its items
(:func:`vault.service.recording.record_items`): bytes the vault holds already are not stored
twice. The sender imports the acknowledgement with
:func:`vault.service.packaging.receipts.import_ack`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vault.clock import as_utc, isoformat, parse_iso, utcnow
from vault.crypto import sshsig
from vault.crypto.keys import VerifyKey
from vault.custody.events import Event
from vault.durable import (
    discard_staged,
    free_signed_pair,
    fsync_dir,
    publish_staged,
    stage_files,
)
from vault.errors import (
    ConflictError,
    NotFoundError,
    UsageError,
    VerificationError,
)
from vault.faults import crash_point
from vault.formats.package import (
    Envelope,
    Party,
    Statement,
    read_package,
)
from vault.formats.receipt import ACK_NAMESPACE, Acknowledgement, ReceiptItem, sign_document
from vault.service import keyhistory, pending, timestamping, witness
from vault.service.contacts import known_senders
from vault.service.custody import (
    CustodyLog,
    actor_pair,
    checkpoint_now,
)
from vault.service.identities import acting_identity, identity_count, load_keypair
from vault.service.inspection import (
    OwnKeys,
    PackageReport,
    check_claimed_digest,
    inspect_package,
)
from vault.service.intake import blob_check, storage_recipient
from vault.service.progress import Progress
from vault.service.recording import NewItem, record_items
from vault.service.results import Result, Sparse
from vault.service.storing import BlobCopies, file_digests
from vault.service.vaults import Vault
from vault.store.models import (
    BodyKey,
    Case,
    Contact,
    CustodyEvent,
    IdentityKey,
    ReceivedPackage,
)


@dataclass(frozen=True, slots=True)
class OpenedItem(Result):
    """An item received by ``open``: its new id in this vault, its id in the sender's
    package, its file name, size in bytes and hex SHA-256."""

    id: str
    source_item: str
    name: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class OpenedPackage(Sparse):
    """What ``open`` received: the package, its sender (the name this vault knows the key
    by, else the envelope's) and key fingerprint, the body it was for, its items, how many
    of the sender's custody events were proven, when the sender's key was revoked here (ISO
    8601 UTC; None unless opened with ``--allow-revoked``), and the folder of its files.
    ``timestamps`` are the envelope's RFC 3161 tokens as checked (absent without tokens);
    ``timestamps_unchecked`` counts tokens no trusted TSA certificate could check (absent
    when none)."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset(
        {"timestamps", "timestamps_unchecked", "approved_by"})
    package: str
    sender: str
    sender_fingerprint: str
    body: str
    items: tuple[OpenedItem, ...]
    sender_custody_events: int
    sender_revoked_at: str | None
    out: str
    timestamps: tuple[timestamping.Attested, ...] | None = None
    timestamps_unchecked: int | None = None
    approved_by: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class AckWritten(Result):
    """An acknowledgement signed by ``ack``: the package, the file and its ``.sig``, and the
    identity (name, key fingerprint) that signed it."""

    package: str
    ack: str
    signature: str
    recipient: str
    fingerprint: str


def _trusted(
    vault: Vault, path: Path, trust_sender: str | None, allow_revoked: bool = False
) -> tuple[list[VerifyKey], str | None]:
    """The sender keys to accept, and when the one trusted by ``--trust-sender`` was revoked
    here (None if it was not): a revoked key opens only with ``--allow-revoked``."""
    keyhistory.ensure_anchor(vault)
    with vault.transaction() as session:
        keyhistory.check_senders(vault, session)
        keys = known_senders(session)
        revoked = _revocation(session, trust_sender) if trust_sender else None
    if allow_revoked and not trust_sender:
        raise UsageError("--allow-revoked: give it with --trust-sender FINGERPRINT, the "
                         "revoked key you mean to accept")
    revoked_at = None
    if trust_sender:
        signer = sshsig.parse(read_package(path).signature).public_key
        if signer.fingerprint != trust_sender:
            raise VerificationError(
                f"{path.name}: signed by {signer.fingerprint}, not by --trust-sender "
                f"{trust_sender}; do not open it"
            )
        if revoked is not None and signer.fingerprint not in keys:
            what, when = revoked
            if not allow_revoked:
                raise VerificationError(
                    f"{path.name}: signed by {signer.fingerprint}, the key of {what}, revoked "
                    f"at {isoformat(when)}; --trust-sender does not override a revocation: "
                    "add --allow-revoked to open it anyway"
                )
            revoked_at = isoformat(when)
        keys[signer.fingerprint] = signer
    return list(keys.values()), revoked_at


def _revocation(session: Any, fingerprint: str) -> tuple[str, datetime] | None:
    """Whose key ``fingerprint`` was in this vault, and when it was revoked (None if never)."""
    contact = session.scalar(select(Contact).where(Contact.fingerprint == fingerprint))
    if contact is not None and contact.revoked_at is not None:
        return f"contact {contact.name}", as_utc(contact.revoked_at)
    for key in session.scalars(select(BodyKey).where(BodyKey.fingerprint == fingerprint)):
        if key.revoked_at is not None:
            return f"an officer of body {key.body_id}", as_utc(key.revoked_at)
    own = session.scalar(select(IdentityKey).where(IdentityKey.fingerprint == fingerprint))
    if own is not None and own.revoked_at is not None:
        # A key of this vault's own, revoked (stolen, say): no less revoked than a contact's.
        return (f"identity {own.identity.name} of this vault", as_utc(own.revoked_at))
    return None


def _identities(vault: Vault, as_name: str | None) -> OwnKeys:
    """Every age key (current and retired, not revoked) of the acting identity."""
    with vault.transaction() as session:
        identity = acting_identity(session, as_name)
        pairs = [load_keypair(vault, k) for k in identity.keys if k.revoked_at is None]
        return OwnKeys(tuple(p.age for p in pairs), identity.name,
                       only=identity_count(session) == 1)


def open_package(
    vault: Vault,
    path: Path,
    *,
    out_dir: Path,
    as_name: str | None = None,
    trust_sender: str | None = None,
    allow_revoked: bool = False,
    now: datetime | None = None,
    verifying: Progress | None = None,
    storing: Progress | None = None,
    tsa_ca: Sequence[Path] = (),
) -> OpenedPackage:
    """Verify a package whole, then extract it into ``out_dir/<package-id>`` and receive it.

    ``verifying`` gets (payload bytes read, twice the payload size) while the package is
    checked: its payload read once for its digest (nothing decrypted before it matches the
    signed envelope), then once more to decrypt it; ``storing`` then gets (bytes stored, bytes
    in all) while its files are encrypted into this vault. The envelope recorded is the one
    verified, from the file held open meanwhile, whatever is at ``path`` by then."""
    now = now or utcnow()
    if not path.is_file():
        raise NotFoundError(f"{path}: no such package file")
    trusted, revoked_at = _trusted(vault, path, trust_sender, allow_revoked)
    pkg = read_package(path)
    try:
        peek = Envelope.from_bytes(pkg.envelope_bytes)
    except VerificationError:
        peek = None
    if peek is not None and not any(k.fingerprint == peek.sender.fingerprint for k in trusted):
        with vault.transaction() as session:
            revoked = _revocation(session, peek.sender.fingerprint)
        if revoked is not None:
            whose, when = revoked
            raise VerificationError(
                f"package {peek.package_id}: sender {peek.sender.name} "
                f"({peek.sender.fingerprint}) is the key of {whose}, revoked at "
                f"{isoformat(when)}; to open it anyway, pass --trust-sender "
                f"{peek.sender.fingerprint} --allow-revoked"
            )
        raise VerificationError(
            f"package {peek.package_id}: sender {peek.sender.name} ({peek.sender.fingerprint}) "
            "is not a known contact; add their card with `evault contact add` or pass "
            "--trust-sender FINGERPRINT"
        )
    identities = _identities(vault, as_name)
    tsa_roots = timestamping.trusted_roots(vault.root, vault.config.tsa, tsa_ca)
    with vault.transaction() as session:
        if peek is not None and session.get(ReceivedPackage, peek.package_id) is not None:
            raise ConflictError(f"package {peek.package_id}: opened already in this vault")
    if peek is not None and (out_dir / peek.package_id).exists():
        # Checked again once verified (the file may change meanwhile); refused here before
        # any work, and before a blob is made.
        raise ConflictError(f"{out_dir / peek.package_id}: exists already; choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    token = pending.new_token()
    staging = out_dir / pending.open_temp_name(token)
    # Recorded (fsynced) in the vault's journal before the folder exists: a kill -9 while the
    # sender's plaintext is checked leaves a record `evault doctor` finds the folder by. Not a
    # custody event: nothing here is custody yet (the package may be hostile and is not
    # verified), and the path of --out is office-internal.
    blobs = vault.blob_store()
    # Each payload file goes into its blob as it is decrypted and checked, in the same pass
    # that extracts it; the blobs are removed again unless everything passes and is recorded.
    # Not under Object Lock: a blob there cannot be taken back (a delete leaves the locked
    # version), so a refused package would leave its ciphertext for the retention period;
    # the files are stored from the extracted copies once everything passed.
    copies = BlobCopies(blobs, storage_recipient(vault),
                        streaming=vault.config.object_lock is None)
    with pending.recorded(vault.root, "open", token, pending.real_folder(out_dir)) as entry, \
            blobs.intake_lock():
        # Made by inspect_package once the payload is the one signed; removed on any failure.
        try:
            report = None
            report = inspect_package(path, trusted=trusted, identities=identities,
                                     extract_to=staging, progress=verifying,
                                     copy_payload=copies if copies.streaming else None)
            crash_point("open.staged")
            signer = report.sender_key.fingerprint
            if trust_sender and signer != trust_sender:
                # Checked on the first look at the file; the package verified may be another.
                raise VerificationError(f"{path.name}: signed by {signer}, not by "
                                        f"--trust-sender {trust_sender}; do not open it")
            final = out_dir / report.package_id
            if final.exists():
                raise ConflictError(f"{final}: exists already; choose another --out")
            if report.package_id != (peek.package_id if peek else None):
                # The file changed between the first look and the one verified.
                with vault.transaction() as session:
                    if session.get(ReceivedPackage, report.package_id) is not None:
                        raise ConflictError(
                            f"package {report.package_id}: opened already in this vault")
            # The envelope's RFC 3161 tokens, checked before anything is received.
            envelope = report.envelope
            attested = (timestamping.check_tokens(
                envelope.timestamps, envelope.checkpoint, tsa_roots,
                f"package {report.package_id}") if envelope.timestamps and tsa_roots else [])
            result = _receive(vault, report, copies, staging, final, as_name, now, storing,
                              revoked_at, attested)
            if envelope.timestamps and not tsa_roots:
                result = replace(result, timestamps_unchecked=len(envelope.timestamps))
            os.rename(staging, final)
            fsync_dir(out_dir)
        except BaseException:
            copies.discard()  # none once recorded: _receive keeps them then
            shutil.rmtree(staging, ignore_errors=True)
            entry.keep = staging.exists()
            raise
        finally:
            # Held while open runs: `evault doctor` leaves a locked staging folder alone.
            if report is not None and report.staging_lock is not None:
                os.close(report.staging_lock)
    return result


def _receive(
    vault: Vault,
    report: PackageReport,
    copies: BlobCopies,
    staging: Path,
    final: Path,
    as_name: str | None,
    now: datetime,
    progress: Progress | None = None,
    revoked_at: str | None = None,
    attested: Sequence[timestamping.Attested] = (),
) -> OpenedPackage:
    """Record the verified files, stored at rest by ``copies`` as they were decrypted
    (unless ``copies`` does not stream: stored now, from the extracted files), and their
    custody;
    ``revoked_at`` (the sender's key was revoked then, and opened with --allow-revoked)
    goes into the ``package.opened`` event. ``final`` is where ``staging`` is renamed to
    once received. ``progress`` gets (bytes, bytes in all) once the blobs are
    durable. On a failure here the caller discards the blobs; once recorded they are kept."""
    assert report.statement is not None and report.matched_key is not None
    assert report.bag is not None
    statement = report.statement
    envelope = report.envelope
    metadata = {str(i["id"]): i for i in report.items}
    blobs = copies.blobs
    stored = []
    total = sum(item.size for item in statement.items)
    hasher = ThreadPoolExecutor(max_workers=1) if not copies.streaming else None
    try:
        for item in statement.items:
            meta = metadata[item.id]
            case = str(meta.get("case") or f"RECEIVED-{envelope.package_id}")
            claimed = {str(k): str(v) for k, v in (meta.get("digests") or {}).items()}
            legacy = sorted(set(claimed) - {"sha256"})
            if copies.streaming:
                # The digest read_bag computed of the very chunks the blob was made of.
                result = copies.stored(item.path, report.bag.manifest.get(item.path, ""))
            else:
                result = copies.store_file(item.path, staging / item.path, legacy, hasher)
            if (result.sha256, result.size) != (item.sha256, item.size):
                raise VerificationError(
                    f"package {envelope.package_id}: item {item.id} was stored as "
                    f"{result.size} bytes with SHA-256 {result.sha256}, not as signed (it "
                    "changed on disk while being received?); nothing was received")
            if legacy and copies.streaming:
                # MD5 or SHA-1 the sender lists: computed from the extracted file, which the
                # SHA-256 ties to the bytes stored (a second read, for these items only).
                digests = file_digests(staging / item.path, ["sha256", *legacy])
                if digests.pop("sha256") != result.sha256:
                    raise VerificationError(
                        f"package {envelope.package_id}: item {item.id} changed on disk while "
                        "being received")
                result = replace(result, extra=digests)
            stored.append((item, meta, case, result))
            for algorithm, value in sorted(result.extra.items()):
                check_claimed_digest(envelope.package_id, item.id, algorithm,
                                     claimed[algorithm], value)
        blobs.sync([s[3].blob_id for s in stored])
        if progress is not None:
            progress(total, total)
        with vault.transaction() as session:
            pair = actor_pair(vault, session, as_name)
            log = CustodyLog(vault, session)
            for case in sorted({s[2] for s in stored}):
                if session.get(Case, case) is None:
                    session.add(Case(id=case, title=None, created_at=now))
                    log.append(pair, "case.created", case, now=now,
                               details={"received_in": envelope.package_id})
            recorded = record_items(session, log, pair, [
                NewItem(
                    result,
                    case=case,
                    original_name=Path(item.path).name,
                    action="item.received",
                    details={"package": envelope.package_id,
                             "sender": envelope.sender.fingerprint,
                             "source_item": item.id, "case": case, "size": item.size,
                             "labels": [str(lb) for lb in meta.get("labels") or []],
                             **({"derived_from": item.derived_from.to_json()}
                                if item.derived_from else {})},
                    title=_text(meta, "title"),
                    description=_text(meta, "description"),
                    source=_text(meta, "source"),
                    collected_at=_time(meta.get("collected_at")),
                    location=_text(meta, "location"),
                    labels=[str(lb) for lb in meta.get("labels") or []],
                    tags=[(str(k), str(v)) for k, v in (meta.get("tags") or {}).items()],
                    received_from=envelope.sender.fingerprint,
                    source_package=envelope.package_id,
                    source_item=item.id,
                    # As signed in the statement: the original's id in the sender's
                    # vault, like source_item (items.lineage finds it here by both).
                    derived_from=item.derived_from,
                )
                for item, meta, case, result in stored
            ], now=now, holds=blob_check(vault, session))
            received = tuple(
                OpenedItem(id=local_id, source_item=item.id, name=Path(item.path).name,
                           size=item.size, sha256=item.sha256)
                for local_id, (item, _meta, _case, _result)
                in zip(recorded.item_ids, stored, strict=True))
            assert report.statement_bytes is not None
            assert report.statement_signature is not None
            assert report.statement_sha256 is not None
            session.add(ReceivedPackage(
                package_id=envelope.package_id, sender=envelope.sender.fingerprint,
                body_id=envelope.body, envelope=report.envelope_bytes,
                envelope_sha256=report.envelope_sha256, statement=report.statement_bytes,
                statement_signature=report.statement_signature,
                statement_sha256=report.statement_sha256,
                custody_excerpt=report.custody_excerpt, opened_at=now,
                opened_by=pair.fingerprint, recipient_key=report.matched_key.fingerprint,
                out_dir=str(final),
            ))
            known = session.scalar(select(Contact.name).where(
                Contact.fingerprint == envelope.sender.fingerprint))
            log.append(pair, "package.opened", envelope.package_id,
                       details={"sender": envelope.sender.fingerprint, "body": envelope.body,
                                "items": [r.id for r in received],
                                "sender_events": report.custody_events,
                                **({"sender_revoked_at": revoked_at} if revoked_at else {}),
                                **({"timestamps": [a.to_json() for a in attested]}
                                   if attested else {}),
                                **({"approved_by": list(report.approved_by)}
                                   if report.approved_by else {})},
                       digests={"envelope": report.envelope_sha256,
                                "statement": report.statement_sha256}, now=now)
    except IntegrityError:
        with vault.transaction() as session:
            if session.get(ReceivedPackage, envelope.package_id) is None:
                raise
        # Another `open` of the same package committed first.
        raise ConflictError(f"package {envelope.package_id}: opened already in this vault "
                            "(by another open that finished first)") from None
    finally:
        if hasher is not None:
            hasher.shutdown(wait=True)
    copies.keep()  # recorded: the blobs are the vault's now, whatever fails next
    # Committed: the bytes of these were in the vault already, under another blob.
    for blob_id in recorded.redundant:
        blobs.remove(blob_id)
    return OpenedPackage(
        package=envelope.package_id,
        # The name this vault knows the key by, not the one the envelope gives itself.
        sender=known or envelope.sender.name,
        sender_fingerprint=envelope.sender.fingerprint,
        body=envelope.body,
        items=received,
        sender_custody_events=report.custody_events,
        sender_revoked_at=revoked_at,
        out=str(final),
        timestamps=tuple(attested) or None,
        approved_by=report.approved_by,
    )


def _text(meta: dict[str, Any], key: str) -> str | None:
    value = meta.get(key)
    return value if isinstance(value, str) else None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_iso(value)
    except ValueError:
        return None


# ----------------------------------------------------------------------------- acknowledging


def _received(session: Any, ref: str) -> ReceivedPackage:
    path = Path(ref)
    if path.is_file():
        envelope_bytes = read_package(path).envelope_bytes
        package_id = Envelope.from_bytes(envelope_bytes).package_id
        row = session.get(ReceivedPackage, package_id)
        if row is not None and hashlib.sha256(envelope_bytes).hexdigest() != row.envelope_sha256:
            raise VerificationError(f"{path}: envelope differs from package {package_id} as "
                                    "opened; do not acknowledge it")
    else:
        package_id = ref
        row = session.get(ReceivedPackage, package_id)
    if row is None:
        raise NotFoundError(f"package {package_id}: not opened in this vault; run `evault open` "
                            "first")
    return row  # type: ignore[no-any-return]


def _check_opened(vault: Vault, session: Session, row: ReceivedPackage) -> None:
    """The row an ack is made from must be what this vault signed when it opened the package
    (its ``package.opened`` event: digests of envelope and statement, sender, body, time): a
    database holder rewriting the row must not get the officer to sign a false receipt time
    or digest."""
    pid = row.package_id
    event = opened_event(vault, session, pid)
    if event is None:
        raise VerificationError(f"package {pid}: no package.opened event signed by this vault "
                                "names it; nothing was acknowledged: run `evault custody "
                                "verify` and `evault doctor`")
    signed, seq = event
    differs = [what for what, ok in (
        ("envelope", signed.digests.get("envelope") == row.envelope_sha256
         == hashlib.sha256(row.envelope).hexdigest()),
        ("statement", signed.digests.get("statement") == row.statement_sha256
         == hashlib.sha256(row.statement).hexdigest()),
        ("sender", signed.details.get("sender") == row.sender),
        ("body", signed.details.get("body") == row.body_id),
        ("opened at", isoformat(signed.time) == isoformat(row.opened_at)),
    ) if not ok]
    if differs:
        raise VerificationError(
            f"package {pid}: its record in this vault differs from the signed package.opened "
            f"event {seq} ({', '.join(differs)}); nothing was acknowledged: run `evault "
            "custody verify` and `evault doctor`")


def opened_event(vault: Vault, session: Session, pid: str) -> tuple[Event, int] | None:
    """The ``package.opened`` event of ``pid`` in this vault's log whose signature verifies
    with an identity key of this vault (its rows the signed key history's), and its seq."""
    keys = {k.fingerprint: k for k in session.scalars(select(IdentityKey))}
    for row in session.scalars(select(CustodyEvent).where(CustodyEvent.subject == pid)
                               .order_by(CustodyEvent.seq)):
        try:
            event = Event.decode(row.body)
        except VerificationError:
            continue
        key = keys.get(event.actor)
        if event.action != "package.opened" or event.subject != pid or key is None:
            continue
        keyhistory.check_actor(vault, session, key)
        try:
            VerifyKey(key.signing_key).verify(row.signature, row.body)
        except VerificationError:
            continue
        return event, row.seq
    return None


def acknowledge(
    vault: Vault, ref: str, *, output: Path, as_name: str | None = None,
    now: datetime | None = None,
) -> AckWritten:
    """Sign an acknowledgement of a package opened here; write it and its signature."""
    now = now or utcnow()
    sig_path = free_signed_pair(output)
    with vault.transaction() as session:
        row = _received(session, ref)
        identity = acting_identity(session, as_name)
        pair = actor_pair(vault, session, as_name)
        _check_opened(vault, session, row)
        statement = Statement.from_bytes(row.statement)
        log = CustodyLog(vault, session)
        log.append(pair, "package.acknowledged", row.package_id,
                   details={"sender": row.sender, "body": row.body_id},
                   digests={"envelope": row.envelope_sha256, "statement": row.statement_sha256},
                   now=now)
        session.flush()
        checkpoint, _, tokens = checkpoint_now(vault, session, pair, now)
        ack = Acknowledgement(
            package_id=row.package_id,
            body=row.body_id,
            recipient=Party(identity.name, pair.fingerprint),
            envelope_sha256=row.envelope_sha256,
            statement_sha256=row.statement_sha256,
            items=tuple(ReceiptItem(i.id, i.size, i.sha256) for i in statement.items),
            received_at=isoformat(row.opened_at),
            checkpoint=checkpoint,
            cosigned_checkpoint=witness.cosign_envelope(row, pair, now),
            timestamps=timestamping.encode(tokens),
            version=3 if tokens else 2,
        )
        data = ack.to_bytes()
        signature = sign_document(data, pair.signing, ACK_NAMESPACE)
        row.acknowledged_at = now
        # Staged (written, synced) before the commit, so a full disk or a read-only folder
        # rolls the step back; published only after it, so an ack never vouches for a
        # history this vault did not keep. A crash between the two leaves temporary files,
        # which the next `ack` to the same name removes.
        staged = stage_files([(output, data), (sig_path, signature.encode())])
        sa_event.listen(session, "after_rollback", lambda _s: discard_staged(staged), once=True)
        crash_point("ack.before_commit")
    crash_point("ack.after_commit")
    publish_staged(staged)
    return AckWritten(package=row.package_id, ack=str(output), signature=str(sig_path),
                      recipient=identity.name, fingerprint=pair.fingerprint)
