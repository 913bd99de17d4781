"""``package create`` in one call: one package for one body planned, built and, given an
outbox, sent.

    >>> create_package(vault, body_id="ICC-OTP", case="UA-2026-0042")  # doctest: +SKIP

The sequence a front end would otherwise repeat:
:func:`~vault.service.packaging.plan.plan_package`,
:func:`~vault.service.packaging.build.build_package`, then
:func:`~vault.service.packaging.send.send_package` of the package just built.

Imports :mod:`~vault.service.packaging.plan`, :mod:`~vault.service.packaging.build`,
:mod:`~vault.service.packaging.send` and :mod:`~vault.service.packaging.records` (the result),
and the tag rule of intake; no module of this package imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from vault.service.intake import parse_tags
from vault.service.outbox import OutboxChoice, check_folder, outbox_for
from vault.service.packaging.build import build_package
from vault.service.packaging.plan import plan_package
from vault.service.packaging.records import PackageInfo
from vault.service.packaging.send import send_package
from vault.service.vaults import Vault


def create_package(
    vault: Vault,
    *,
    body_id: str,
    item_ids: Sequence[str] = (),
    case: str | None = None,
    label: str | None = None,
    tags: Sequence[str] = (),
    reference: str | None = None,
    purpose: str | None = None,
    confidential_reference: bool = False,
    as_name: str | None = None,
    output: Path | None = None,
    force: bool = False,
    outbox: OutboxChoice | None = None,
    notice: Callable[[str], None] | None = None,
    with_case_uco: bool = False,
) -> PackageInfo:
    """``evault package create``: one package for one body planned (:func:`plan_package`),
    built (:func:`build_package`) and, given an ``outbox`` (what the command line said: its
    folder or SFTP drop, else the body's own), sent (:func:`send_package`).

    ``tags`` are ``KEY=VALUE`` filters, read as ``ingest --tag`` reads them. Returns the
    built package, or the sent one (a
    :class:`~vault.service.packaging.records.SentPackage`, with its receipt). ``notice`` is
    told, in one line each, of every original the release rules replaced by a derived copy.
    ``with_case_uco`` puts the CASE/UCO document in the bag (``evault/case-uco.jsonld``).
    """
    target = None
    if outbox is not None:  # an outbox that cannot be used is refused before building
        with vault.transaction() as session:
            target = outbox_for(vault, session, body_id, outbox)
        check_folder(target)
    draft = plan_package(
        vault,
        body_id=body_id,
        item_ids=item_ids,
        case=case,
        label=label,
        tags=list(parse_tags(tags)),
        reference=reference,
        purpose=purpose,
        confidential_reference=confidential_reference,
        as_name=as_name,
        output=output,
        force=force,
        with_case_uco=with_case_uco,
    )
    for original, copy, relation in draft.substituted:
        if notice is not None:
            notice(f"item {original}: its {relation} copy {copy} goes to {body_id} instead, "
                   "as the release rules ask")
    built = build_package(vault, draft)
    if target is None:
        return built
    return send_package(vault, built.id, outbox=target, as_name=as_name)
