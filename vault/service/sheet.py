"""The values of a package's printable verification sheet, as courts and registries ask for.

    >>> sheet = sheet_data(vault, "PKG-0123456789AB")               # doctest: +SKIP
    >>> sheet.file_name                                             # doctest: +SKIP
    'PKG-0123456789AB.evpkg'

The sheet lists what anyone can check with stock tools: the package id, body, sender and
key fingerprints, times, the SHA-256 and size of the file, the envelope and the payload, the
custody checkpoint, and each item's id, size and SHA-256, followed by the commands that check
them (``docs/verify-by-hand.md``). Like every record that leaves the vault it carries no
titles, descriptions, file names, reference or purpose. :func:`sheet_data` gathers the
values (checking the stored envelope against its digest and its checkpoint's signature);
:mod:`vault.render.sheet` lays them out.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from vault import __version__
from vault.clock import isoformat, utcnow
from vault.custody.note import open_checkpoint
from vault.errors import VerificationError
from vault.formats.package import Envelope
from vault.service.results import Result
from vault.service.vaults import Vault


@dataclass(frozen=True, slots=True)
class SheetItem(Result):
    """An item of the package on its sheet: id, size in bytes and hex SHA-256 only."""

    id: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class PackageSheet(Result):
    """The values of a package's verification sheet: ids, key fingerprints, times, sizes
    and digests only.

    ``created_at``, ``sent_at`` and ``acknowledged_at`` are ISO 8601 UTC strings, the last
    two None until then; ``acknowledged_by`` is the fingerprint of the key that signed the
    acknowledgement. ``recipients`` are the fingerprints of the keys the payload is
    encrypted to. Digests are hex SHA-256, but ``checkpoint_root``, the custody
    checkpoint's root hash, is base64. ``receipt`` is the id of the package's first sharing
    receipt (None before it is sent); ``version`` is the evault that printed the sheet.
    """

    package: str
    body: str
    state: str
    sender: str
    sender_fingerprint: str
    recipients: tuple[str, ...]
    escrow: str
    created_at: str
    sent_at: str | None
    acknowledged_at: str | None
    acknowledged_by: str | None
    file_name: str
    file_sha256: str
    file_size: int
    envelope_sha256: str
    statement_sha256: str | None
    payload_sha256: str
    payload_size: int
    checkpoint_origin: str
    checkpoint_size: int
    checkpoint_root: str
    items: tuple[SheetItem, ...]
    receipt: str | None
    printed_at: str
    version: str


def sheet_data(vault: Vault, package_id: str, *, now: datetime | None = None) -> PackageSheet:
    """The values of a package's sheet: ids, fingerprints, times, sizes and digests only."""
    from vault.service.custody import vault_verifiers
    from vault.service.packaging.records import get_package
    from vault.store.models import Item, Receipt, ReceivedAck

    with vault.transaction() as session:
        row = get_package(session, package_id)
        if hashlib.sha256(row.envelope).hexdigest() != row.envelope_sha256:
            raise VerificationError(f"package {row.id}: the stored envelope does not match its "
                                    "SHA-256; run `evault custody verify`")
        envelope = Envelope.from_bytes(row.envelope)
        checkpoint, _ = open_checkpoint(envelope.checkpoint, vault_verifiers(vault, session))
        ids = [pi.item_id for pi in row.items]
        by_id = {i.id: i for i in session.scalars(select(Item).where(Item.id.in_(ids)))}
        receipt = session.scalar(
            select(Receipt).where(Receipt.package_id == row.id).order_by(Receipt.created_at)
        )
        ack = session.get(ReceivedAck, row.id)
        return PackageSheet(
            package=row.id,
            body=row.body_id,
            state=row.state.value,
            sender=envelope.sender.name,
            sender_fingerprint=envelope.sender.fingerprint,
            recipients=tuple(k.fingerprint for k in envelope.recipients),
            escrow=envelope.escrow.fingerprint,
            created_at=envelope.created_at,
            sent_at=isoformat(row.sent_at) if row.sent_at else None,
            acknowledged_at=isoformat(row.acknowledged_at) if row.acknowledged_at else None,
            acknowledged_by=ack.signer if ack else None,
            file_name=f"{row.id}.evpkg",
            file_sha256=row.file_sha256,
            file_size=row.file_size,
            envelope_sha256=row.envelope_sha256,
            statement_sha256=row.statement_sha256,
            payload_sha256=envelope.payload_sha256,
            payload_size=envelope.payload_size,
            checkpoint_origin=checkpoint.origin,
            checkpoint_size=checkpoint.size,
            checkpoint_root=base64.b64encode(checkpoint.root_hash).decode(),
            items=tuple(SheetItem(id=i, size=by_id[i].size, sha256=by_id[i].sha256)
                        for i in ids),
            receipt=receipt.id if receipt else None,
            printed_at=isoformat(now or utcnow()),
            version=__version__,
        )
