"""The packages this vault has recorded: found by id, listed, shown, in one public view.

    >>> [p.state for p in list_packages(vault, body="ICC-OTP")]                # doctest: +SKIP
    ['sent', 'built']

:class:`PackageInfo` (:func:`package_info`) is the view every command shows of a package
(ids, digests, state; no titles or names); a package just sent adds its receipt and outbox
file (:class:`SentPackage`). Imports ``vault.store`` and ``vault.service.vaults`` (and the
results base) only.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.clock import isoformat
from vault.errors import NotFoundError
from vault.service.results import Result
from vault.service.vaults import Vault
from vault.store.models import Package

PACKAGE_COLUMNS = ("id", "body", "items", "bytes", "state", "created_at", "sent_at")
"""The columns of ``package list``'s table."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PackageInfo(Result):
    """The public view of a package (ids, digests, state; no titles or names).

    ``state`` is ``built``, ``sent`` or ``acknowledged``; ``items`` counts ``item_ids``
    (in the package's order); ``bytes`` is the size of the ``.evpkg`` file at ``path``.
    ``sender``, ``recipients`` (the body's keys) and ``escrow`` (the sender's own key) are
    SSH key fingerprints; the ``*_sha256`` fields are hex digests of the envelope, the
    encrypted payload and the whole file. ``created_at``, ``sent_at`` and
    ``acknowledged_at`` are ISO 8601 UTC strings; ``outbox`` is the folder it was sent to.
    """

    id: str
    body: str
    state: str
    items: int
    item_ids: tuple[str, ...]
    bytes: int
    path: str
    sender: str
    recipients: tuple[str, ...]
    escrow: str | None
    envelope_sha256: str
    payload_sha256: str
    file_sha256: str
    reference: str | None
    purpose: str | None
    created_at: str
    sent_at: str | None
    outbox: str | None
    acknowledged_at: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SentPackage(PackageInfo):
    """A package just sent: its public view, the id of the sharing receipt signed for it,
    and the path of its file in the outbox."""

    receipt: str
    delivered: str

    @classmethod
    def of(cls, package: PackageInfo, *, receipt: str, delivered: str) -> SentPackage:
        """``package``'s view with its receipt and outbox file added."""
        view = {f.name: getattr(package, f.name) for f in fields(PackageInfo)}
        return cls(**view, receipt=receipt, delivered=delivered)


def package_info(row: Package, body_id: str | None = None) -> PackageInfo:
    """The public view of a package row (its body given as ``body_id``, if given)."""
    return PackageInfo(
        id=row.id,
        body=body_id or row.body_id,
        state=row.state.value,
        items=len(row.items),
        item_ids=tuple(pi.item_id for pi in row.items),
        bytes=row.file_size,
        path=row.path,
        sender=row.sender,
        recipients=tuple(r.fingerprint for r in row.recipients if not r.escrow),
        escrow=next((r.fingerprint for r in row.recipients if r.escrow), None),
        envelope_sha256=row.envelope_sha256,
        payload_sha256=row.payload_sha256,
        file_sha256=row.file_sha256,
        reference=row.reference,
        purpose=row.purpose,
        created_at=isoformat(row.created_at),
        sent_at=isoformat(row.sent_at) if row.sent_at else None,
        outbox=row.outbox,
        acknowledged_at=isoformat(row.acknowledged_at) if row.acknowledged_at else None,
    )


def get_package(session: Session, package_id: str) -> Package:
    """The package with this id."""
    row = session.get(Package, package_id)
    if row is None:
        raise NotFoundError(f"package {package_id}: not found; see `evault package list`")
    return row


def list_packages(vault: Vault, *, body: str | None = None) -> list[PackageInfo]:
    """Packages, newest last."""
    with vault.transaction() as session:
        stmt = select(Package).order_by(Package.created_at, Package.id)
        if body:
            stmt = stmt.where(Package.body_id == body)
        return [package_info(p) for p in session.scalars(stmt)]


def show_package(vault: Vault, package_id: str) -> PackageInfo:
    """One package."""
    with vault.transaction() as session:
        return package_info(get_package(session, package_id))

