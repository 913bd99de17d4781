"""The CASE/UCO export's data: one item, or a case's items, and their custody events.

    >>> from vault.service.case_uco import case_uco_export  # doctest: +SKIP
    >>> export = case_uco_export(vault, item="EV-0123456789AB")  # doctest: +SKIP
    >>> render_case_uco(export)  # vault.formats.case_uco  # doctest: +SKIP

One job: read what :mod:`vault.formats.case_uco` writes. The events are the ones whose
subject is one of the items (those ``evault custody show ITEM`` and the chain-of-custody
form list), asked of the database by subject, a few hundred items a query, so an item of a
long log costs its own events, never the whole log. Of an item's sealed metadata only the
original file name is read out; titles, descriptions, sources, places, tags and notes stay.

May import: the layers below the service layer, as every service does.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from vault import __version__
from vault.clock import isoformat
from vault.custody.events import Event
from vault.errors import UsageError
from vault.formats.case_uco import CaseUcoExport, ExportEvent, ExportItem, digests_of
from vault.service.custody import identity_names
from vault.service.items import get_case, get_item
from vault.service.vaults import Vault
from vault.store.models import CustodyEvent, Item

#: Items asked about in one query (a bound parameter each).
_BATCH = 500


def case_uco_export(
    vault: Vault, *, item: str | None = None, case: str | None = None
) -> CaseUcoExport:
    """One item (``item``) or every item of a case (``case``, in intake order), with the
    custody events about them in log order; exactly one of the two is given."""
    if (item is None) == (case is None):
        raise UsageError("export-case-uco: give one ITEM or --case CASE")
    with vault.transaction() as session:
        if item is not None:
            rows = [get_item(session, item)]
            case_id = rows[0].case_id
        else:
            assert case is not None
            case_id = get_case(session, case).id
            rows = list(session.scalars(
                select(Item).where(Item.case_id == case_id)
                .options(selectinload(Item.digests)).order_by(Item.intake_seq)))
        items = tuple(
            ExportItem(
                id=row.id, file_name=row.original_name, size=row.size,
                digests=digests_of(row.sha256, [(d.algorithm, d.hexdigest) for d in row.digests]),
            )
            for row in rows
        )
        names = identity_names(session)
        events: list[ExportEvent] = []
        ids = [i.id for i in items]
        for start in range(0, len(ids), _BATCH):
            for row in session.scalars(
                select(CustodyEvent).where(CustodyEvent.subject.in_(ids[start:start + _BATCH]))
            ):
                # The signed bytes, not the columns that repeat them (custody verify checks
                # that both agree).
                event = Event.decode(row.body)
                events.append(ExportEvent(
                    seq=event.seq, time=isoformat(event.time), action=event.action,
                    item=event.subject, actor=event.actor,
                    actor_name=names.get(event.actor), leaf_hash=row.leaf_hash.hex(),
                ))
        events.sort(key=lambda e: e.seq)
        return CaseUcoExport(
            vault_id=vault.config.vault_id, tool_version=__version__, case=case_id,
            items=items, events=tuple(events),
        )

