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

from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

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
        ids = [row.id for row in rows]
        events: list[CustodyEvent] = []
        for start in range(0, len(ids), _BATCH):
            events.extend(session.scalars(
                select(CustodyEvent).where(CustodyEvent.subject.in_(ids[start:start + _BATCH]))
            ))
        return export_of(session, vault.config.vault_id, rows, events, case=case_id)


def export_of(
    session: Session,
    vault_id: str,
    items: Sequence[Item],
    events: Iterable[CustodyEvent],
    *,
    case: str | None,
    names: dict[str, str] | None = None,
) -> CaseUcoExport:
    """The export of ``items`` (in the order given) and of ``events`` (put in log order):
    what ``export-case-uco`` writes, and what a package made with ``--with-case-uco``
    carries as ``evault/case-uco.jsonld`` (its items and the events of its custody
    excerpt). Each event is read from its signed bytes. ``names`` are the identity names
    to give, by key fingerprint (default: every identity of this vault's)."""
    if names is None:
        names = identity_names(session)
    exported: list[ExportEvent] = []
    for row in events:
        # The signed bytes, not the columns that repeat them (custody verify checks
        # that both agree).
        event = Event.decode(row.body)
        exported.append(ExportEvent(
            seq=event.seq, time=isoformat(event.time), action=event.action,
            item=event.subject, actor=event.actor,
            actor_name=names.get(event.actor), leaf_hash=row.leaf_hash.hex(),
        ))
    exported.sort(key=lambda e: e.seq)
    return CaseUcoExport(
        vault_id=vault_id, tool_version=__version__, case=case,
        items=tuple(
            ExportItem(
                id=row.id, file_name=row.original_name, size=row.size,
                digests=digests_of(row.sha256, [(d.algorithm, d.hexdigest) for d in row.digests]),
            )
            for row in items
        ),
        events=tuple(exported),
    )

