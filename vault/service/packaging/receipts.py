"""Sharing receipts and acknowledgements, the sender's record of what each body got.

    >>> [r.package for r in list_receipts(vault, body="ICC-OTP")]              # doctest: +SKIP
    >>> import_ack(vault, Path("ack.json"))                                   # doctest: +SKIP

A receipt is signed as a package is sent (:func:`make_receipt`, in the sending transaction);
it is listed, shown and exported here with its exact signed bytes. An acknowledgement, signed
by the body on its side (:func:`vault.service.opening.acknowledge`), comes back and is
checked against the package sent and the body's keys before it is recorded
(:func:`import_ack`): the package is then ``acknowledged``.

Imports the custody log, key history and witness modules of the service layer (and the
results base), ``vault.formats``, ``vault.custody`` and ``vault.store``; no other module of
this package.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.clock import as_utc, isoformat, parse_iso, utcnow
from vault.crypto.keys import VerifyKey
from vault.custody.note import NoteVerifier, open_checkpoint
from vault.durable import free_signed_pair, publish_staged, stage_files
from vault.errors import NotFoundError, VaultError, VerificationError
from vault.faults import crash_point
from vault.formats.package import Party
from vault.formats.receipt import (
    RECEIPT_NAMESPACE,
    RECEIPT_VERSION_DESTINATION,
    RECEIPT_VERSION_TIMESTAMPED,
    Acknowledgement,
    Destination,
    ReceiptItem,
    SharingReceipt,
    sign_document,
    verify_ack,
)
from vault.service import keyhistory, timestamping, witness
from vault.service.custody import CustodyLog, actor_pair, checkpoint_now, origin, vault_verifiers
from vault.service.identities import KeyPair
from vault.service.ids import new_id
from vault.service.items import check_signed_rows
from vault.service.results import Result
from vault.service.vaults import Vault
from vault.store.models import (
    Body,
    Identity,
    IdentityKey,
    Item,
    Package,
    PackageState,
    Receipt,
    ReceivedAck,
)


def make_receipt(
    vault: Vault, session: Session, row: Package, pair: KeyPair, now: datetime,
    *, destination: Destination | None = None, refused: str = "nothing was sent",
) -> Receipt:
    """Sign the sharing receipt of a package being sent, in the sending transaction; one
    uploaded to an SFTP drop names it (``destination``, receipt version 3). ``refused``
    says what was left undone if an item's row is refused (:func:`check_signed_rows`)."""
    identity = session.scalars(
        select(Identity).join(IdentityKey).where(IdentityKey.fingerprint == pair.fingerprint)
    ).one()
    checkpoint, _size, tokens = checkpoint_now(vault, session, pair, now)
    items = list(session.scalars(
        select(Item).where(Item.id.in_([pi.item_id for pi in row.items]))))
    check_signed_rows(vault, session, items, refused)  # in the sending transaction
    by_id = {i.id: i for i in items}
    reference = row.reference
    document = SharingReceipt(
        receipt_id=new_id("RCP"),
        package_id=row.id,
        body=row.body_id,
        sender=Party(identity.name, pair.fingerprint),
        recipients=tuple(r.fingerprint for r in row.recipients if not r.escrow),
        items=tuple(
            ReceiptItem(pi.item_id, by_id[pi.item_id].size, by_id[pi.item_id].sha256)
            for pi in row.items
        ),
        envelope_sha256=row.envelope_sha256,
        payload_sha256=row.payload_sha256,
        reference=None if row.confidential_reference else reference,
        reference_sha256=(hashlib.sha256(reference.encode()).hexdigest()
                          if reference and row.confidential_reference else None),
        sent_at=isoformat(now),
        checkpoint=checkpoint,
        timestamps=timestamping.encode(tokens),
        destination=destination,
        version=(RECEIPT_VERSION_DESTINATION if destination is not None
                 else RECEIPT_VERSION_TIMESTAMPED if tokens else 1),
    )
    data = document.to_bytes()
    receipt = Receipt(
        id=document.receipt_id,
        package_id=row.id,
        body_id=row.body_id,
        created_at=now,
        document=data,
        signature=sign_document(data, pair.signing, RECEIPT_NAMESPACE),
    )
    session.add(receipt)
    return receipt


@dataclass(frozen=True, slots=True)
class ReceiptInfo(Result):
    """A receipt's public view: its ids, when it was signed (ISO 8601 UTC) and the signed
    document as parsed from its exact bytes (the fields of
    :class:`~vault.formats.receipt.SharingReceipt`, as that receipt's version wrote them)."""

    id: str
    package: str
    body: str
    created_at: str
    document: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ReceiptSummary(Result):
    """A row of ``receipt list``: the receipt, its package and body, how many items it
    names, when the package was sent (ISO 8601 UTC) and the envelope's hex SHA-256."""

    id: str
    package: str
    body: str
    items: int
    sent_at: str
    envelope_sha256: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportedAck(Result):
    """An acknowledgement imported (or found imported before: ``already_acknowledged``).

    ``by`` and ``fingerprint`` are the signer's name and SSH key fingerprint; ``received_at``
    is the time it says the package was received (ISO 8601 UTC, as written); ``state`` is the
    package's state after the import; ``witnessed_size`` is the size of this vault's log
    checkpoint the body cosigned, if the acknowledgement carries a cosignature.
    """

    package: str
    body: str
    by: str
    fingerprint: str
    received_at: str
    state: str
    already_acknowledged: bool
    witnessed_size: int | None


def receipt_info(receipt: Receipt) -> ReceiptInfo:
    """A receipt row's public view (its signature is not part of it; see export)."""
    document = json.loads(receipt.document)
    return ReceiptInfo(receipt.id, receipt.package_id, receipt.body_id,
                       isoformat(receipt.created_at), document)


def list_receipts(
    vault: Vault, *, body: str | None = None, since: datetime | None = None
) -> list[ReceiptSummary]:
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
            out.append(ReceiptSummary(r.id, r.package_id, r.body_id, len(doc["items"]),
                                      doc["sent_at"], doc["envelope_sha256"]))
        return out


def get_receipt(session: Session, receipt_id: str) -> Receipt:
    """The receipt with this id."""
    row = session.get(Receipt, receipt_id)
    if row is None:
        raise NotFoundError(f"receipt {receipt_id}: not found; see `evault receipt list`")
    return row


def show_receipt(vault: Vault, receipt_id: str) -> ReceiptInfo:
    """One receipt."""
    with vault.transaction() as session:
        return receipt_info(get_receipt(session, receipt_id))


def export_receipt(vault: Vault, receipt_id: str, output: Path) -> tuple[Path, Path]:
    """Write the receipt's exact signed bytes to ``output`` and its signature to ``output.sig``
    (both or neither)."""
    sig_path = free_signed_pair(output)
    with vault.transaction() as session:
        row = get_receipt(session, receipt_id)
        document, signature = row.document, row.signature
    publish_staged(stage_files([(output, document), (sig_path, signature.encode())]))
    return output, sig_path


# ----------------------------------------------------------------------------- acknowledgements


ACK_CLOCK_SKEW = timedelta(minutes=5)
"""How far an ack's ``received_at`` may lie before the package was sent (or built, if never
marked sent), or after the import: the two vaults' clocks may differ by this much, and no
more."""


def _ack_problems(
    vault: Vault, ack: Acknowledgement, package: Package, session: Session,
    signer: VerifyKey, received_at: datetime, now: datetime,
) -> list[str]:
    """Why ``ack`` (its signature already verified) cannot be a genuine acknowledgement of
    ``package``: each reason, in the order a reader checks them; empty if none."""
    problems = []
    recipients = {r.fingerprint for r in package.recipients if not r.escrow}
    if ack.recipient.fingerprint not in recipients:
        problems.append(f"it is signed by {ack.recipient.fingerprint}, a key of "
                        f"{package.body_id} the package was not encrypted to")
    if ack.body != package.body_id:
        problems.append(f"it names body {ack.body}, the package went to {package.body_id}")
    sent = as_utc(package.sent_at or package.created_at)
    if received_at < sent - ACK_CLOCK_SKEW:
        problems.append(f"it says received at {ack.received_at}, before the package was sent at "
                        f"{isoformat(sent)} (allowing {_minutes(ACK_CLOCK_SKEW)} of clock skew)")
    if received_at > now + ACK_CLOCK_SKEW:
        problems.append(f"it says received at {ack.received_at}, after now ({isoformat(now)}; "
                        f"allowing {_minutes(ACK_CLOCK_SKEW)} of clock skew)")
    own_log = origin(vault)
    if ack.checkpoint.split("\n", 1)[0] == own_log:
        # The officer's key signs only its own log's checkpoints (claim 26): one of this
        # vault's log is a tree head this vault never signed.
        problems.append(f"its checkpoint names {own_log}, this vault's own log, which only "
                        "this vault's identities sign; an acknowledgement carries a checkpoint "
                        "of its signer's log")
    problem = _checkpoint_problem(ack.checkpoint, signer)
    if problem:
        problems.append(f"its checkpoint does not verify under the signer's key ({problem})")
    if ack.envelope_sha256 != package.envelope_sha256:
        problems.append("its envelope digest differs from the package sent")
    if package.statement_sha256 and ack.statement_sha256 != package.statement_sha256:
        problems.append("its statement digest differs from the package sent")
    items = [session.get(Item, pi.item_id) for pi in package.items]
    expected = sorted((i.id, i.size, i.sha256) for i in items if i is not None)
    if sorted((i.id, i.size, i.sha256) for i in ack.items) != expected:
        problems.append("its item ids, sizes or digests differ from the package's")
    return problems


def _minutes(delta: timedelta) -> str:
    return f"{int(delta.total_seconds() // 60)} minutes"


def _checkpoint_problem(note: str, signer: VerifyKey) -> str | None:
    """Why the recipient's own checkpoint in an ack is not signed by the ack's signer."""
    origin = note.split("\n", 1)[0]
    try:
        open_checkpoint(note, [NoteVerifier.for_key(origin, signer)])
    except VaultError as e:
        return str(e)
    return None


def import_ack(
    vault: Vault, ack_path: Path, *, now: datetime | None = None
) -> ImportedAck:
    """Sender side: verify an acknowledgement against the body's keys and record it."""
    now = now or utcnow()
    sig_path = ack_path.with_name(ack_path.name + ".sig")
    for path in (ack_path, sig_path):  # a pipe planted in a drop folder must not block us
        if path.exists() and not path.is_file():
            raise VerificationError(f"{path}: is not a regular file")
    try:
        data = ack_path.read_bytes()
        signature = sig_path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise NotFoundError(f"{e.filename}: no such file; an ack comes with its .sig") from None
    except UnicodeDecodeError:
        raise VerificationError(f"{sig_path}: not an SSH signature") from None
    try:
        claimed = Acknowledgement.from_bytes(data)
    except VerificationError as e:
        raise VerificationError(f"{ack_path.name}: {e}") from None
    pid = claimed.package_id
    with vault.transaction() as session:
        package = session.get(Package, pid)
        if package is None:
            raise VerificationError(f"ack for package {pid}: no such package was sent from "
                                    "this vault")
        body = session.get(Body, package.body_id)
        assert body is not None
        keyhistory.check_body(vault, session, body)  # the signer's key is the history's
        received_at = parse_iso(claimed.received_at)
        trusted = [VerifyKey(k.signing_key) for k in body.keys
                   if k.revoked_at is None or as_utc(k.revoked_at) >= received_at]
        try:
            ack = verify_ack(data, signature, trusted)
        except VerificationError as e:
            raise VerificationError(
                f"ack for package {pid}: {e}; it is not from a key of {body.id}"
            ) from None
        signer = next(VerifyKey(k.signing_key) for k in body.keys
                      if k.fingerprint == ack.recipient.fingerprint)
        problems = _ack_problems(vault, ack, package, session, signer, received_at, now)
        if problems:
            raise VerificationError(f"ack for package {pid}: " + "; ".join(problems))
        cosigned = witness.check_cosignature(ack, package, signer,
                                             vault_verifiers(vault, session))
        digest = hashlib.sha256(data).hexdigest()
        existing = session.get(ReceivedAck, pid)
        result = ImportedAck(
            package=pid, body=package.body_id, by=ack.recipient.name,
            fingerprint=ack.recipient.fingerprint, received_at=ack.received_at,
            state=package.state.value, already_acknowledged=existing is not None,
            witnessed_size=cosigned.checkpoint.size if cosigned else None)
        if existing is not None and existing.document_sha256 == digest:
            # The same genuine ack imported again (a retry, a second copy in the drop
            # folder): nothing to record and nothing wrong.
            return result
        if existing is not None:
            raise VerificationError(
                f"ack for package {pid}: an acknowledgement was imported already at "
                f"{isoformat(existing.imported_at)}; this one is a replay"
            )
        pair = actor_pair(vault, session, None)
        session.add(ReceivedAck(package_id=pid, signer=ack.recipient.fingerprint,
                                    document=data, signature=signature, document_sha256=digest,
                                    received_at=received_at, imported_at=now))
        if cosigned is not None:
            witness.keep(session, cosigned, ack, package, now)
        package.state = PackageState.ACKNOWLEDGED
        package.acknowledged_at = received_at
        log = CustodyLog(vault, session)
        details = {"body": package.body_id, "by": ack.recipient.fingerprint,
                   "received_at": ack.received_at}
        log.append(pair, "package.acknowledged", pid, details=details,
                   digests={"ack": digest}, now=now)
        for pi in package.items:
            log.append(pair, "package.acknowledged", pi.item_id,
                       details={"package": pid, "body": package.body_id}, now=now)
        crash_point("import.before_commit")
        result = replace(result, state=package.state.value)
    crash_point("import.after_commit")
    return result

