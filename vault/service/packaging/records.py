"""The packages this vault has recorded: found by id, listed, shown, in one public view.

    >>> [p["state"] for p in list_packages(vault, body="ICC-OTP")]             # doctest: +SKIP
    ['sent', 'built']

:func:`package_dict` is the view every command shows of a package (ids, digests, state; no
titles or names). Imports ``vault.store`` and ``vault.service.vaults`` only.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.clock import isoformat
from vault.errors import NotFoundError
from vault.service.vaults import Vault
from vault.store.models import Package

PACKAGE_COLUMNS = ("id", "body", "items", "bytes", "state", "created_at", "sent_at")
"""The columns of ``package list``'s table."""


def package_dict(row: Package, body_id: str | None = None) -> dict[str, Any]:
    """The public view of a package (ids, digests, state; no titles or names)."""
    return {
        "id": row.id,
        "body": body_id or row.body_id,
        "state": row.state.value,
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

