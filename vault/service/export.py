"""Bulk export: one package per body, only what each body may receive, idempotent and resumable.

    >>> plans = plans_for_case(["ICC-OTP", "UA-OPG"], "UA-2026-0042")          # doctest: +SKIP
    >>> [r.status for r in export(vault, plans, outbox=Path("/mnt/transfer"))]  # doctest: +SKIP
    ['shared', 'shared']

For each body: the selected items, less those its release rules forbid, less those already
sent to it (unless ``reshare``), go into one package, which is built into the vault's
``exports/`` folder and then sent to the outbox. A re-run after success makes nothing new
("already shared"); a re-run after an interruption sends a package that was built but not
sent ("resumed") instead of building a duplicate, and ``send`` itself never leaves a partial
file in the outbox nor signs two receipts. A failing body does not stop the others.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from vault.clock import utcnow
from vault.errors import NotFoundError, UsageError, VaultError
from vault.faults import crash_point
from vault.service.identities import KeyPair
from vault.service.packaging import (
    Delivery,
    PackageFile,
    deliver,
    finish_package,
    plan_package,
    prepare_send,
    record_sent,
    select_items,
    write_package_file,
)
from vault.service.vaults import Vault
from vault.store.models import Body, Case, Item, Package, PackageItem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EXPORTS = "exports"
EXPORT_LOCK = ".export.lock"
PLAN_KEYS = {"case", "label", "tags", "items", "reference", "purpose"}


@dataclass(frozen=True)
class BodyPlan:
    """What one body should receive."""

    body: str
    case: str | None = None
    label: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    items: tuple[str, ...] = ()
    reference: str | None = None
    purpose: str | None = None


@dataclass
class BodyResult:
    """What happened for one body (one ``--jsonl`` line)."""

    body: str
    status: str
    items: int = 0
    bytes: int = 0
    package: str | None = None
    receipt: str | None = None
    withheld: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def failed(self) -> bool:
        """True if this body's export failed."""
        return self.status == "failed"

    def to_dict(self) -> dict[str, Any]:
        """Stable fields for scripts."""
        return {
            "body": self.body,
            "status": self.status,
            "package": self.package,
            "receipt": self.receipt,
            "items": self.items,
            "bytes": self.bytes,
            "withheld": self.withheld,
            "error": self.error,
        }


def plans_for_case(bodies: Sequence[str], case: str) -> list[BodyPlan]:
    """The same case for every body."""
    return [BodyPlan(body=b, case=case) for b in bodies]


def load_plan(path: Path, only: Sequence[str] = ()) -> list[BodyPlan]:
    """Read a plan file: one ``[bodies.ID]`` table per body with case, label, tags, items,
    reference, purpose (and ``[defaults]`` for all). ``only`` restricts it to some bodies.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(f"{path}: no such plan file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: not valid TOML ({e})") from None
    except RecursionError:
        raise UsageError(f"{path}: not valid TOML (nested too deeply)") from None
    unknown = set(data) - {"defaults", "bodies"}
    if unknown:
        raise UsageError(f"{path}: unknown table {sorted(unknown)[0]!r}; use [defaults] and "
                         "[bodies.ID]")
    defaults = data.get("defaults", {})
    bodies = data.get("bodies", {})
    if not isinstance(bodies, dict) or not bodies:
        raise UsageError(f"{path}: no [bodies.ID] table; the plan names no body")
    plans = []
    for body_id, entry in bodies.items():
        where = f"{path}: [bodies.{body_id}]"
        if not isinstance(entry, dict):
            raise UsageError(f"{where} must be a table")
        merged = {**defaults, **entry}
        bad = set(merged) - PLAN_KEYS
        if bad:
            raise UsageError(f"{where}: unknown key {sorted(bad)[0]!r}")
        tags = merged.get("tags", {})
        items = merged.get("items", [])
        if not isinstance(tags, dict) or not isinstance(items, list):
            raise UsageError(f"{where}: tags must be a table and items a list")
        for name in ("case", "label", "reference", "purpose"):
            if merged.get(name) is not None and not isinstance(merged[name], str):
                raise UsageError(f"{where}: {name} must be a string")
        if not items and not merged.get("case"):
            raise UsageError(f"{where}: give items or a case")
        plans.append(BodyPlan(
            body=body_id,
            case=merged.get("case") if not items else None,
            label=merged.get("label"),
            tags=tuple(sorted((str(k), str(v)) for k, v in tags.items())),
            items=tuple(str(i) for i in items),
            reference=merged.get("reference"),
            purpose=merged.get("purpose"),
        ))
    if only:
        named = {p.body for p in plans}
        missing = [b for b in only if b not in named]
        if missing:
            raise UsageError(f"--to {missing[0]}: not in the plan {path}")
        plans = [p for p in plans if p.body in only]
    return plans


def validate(vault: Vault, plans: Sequence[BodyPlan]) -> None:
    """Refuse unknown or repeated bodies, cases and items before anything is written."""
    seen: set[str] = set()
    for plan in plans:
        if plan.body in seen:
            raise UsageError(f"body {plan.body}: named twice; name each body once")
        seen.add(plan.body)
    with vault.transaction() as session:
        for plan in plans:
            if session.get(Body, plan.body) is None:
                raise NotFoundError(f"body {plan.body}: not found; see `evault body list`")
            if plan.case and session.get(Case, plan.case) is None:
                raise NotFoundError(f"case {plan.case}: not found; see `evault case list`")
            for item_id in plan.items:
                if session.get(Item, item_id) is None:
                    raise NotFoundError(f"item {item_id}: not found (plan for {plan.body})")


Progress = Callable[[str, int, int, int, int], None]
"""(body, bodies done, bodies total, bytes done, bytes total)."""


def export(
    vault: Vault,
    plans: Sequence[BodyPlan],
    *,
    outbox: Path,
    dry_run: bool = False,
    reshare: bool = False,
    as_name: str | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> list[BodyResult]:
    """Export to every planned body; each body's failure is kept in its result."""
    if not outbox.is_dir():
        raise NotFoundError(f"outbox {outbox}: no such folder; mount or create it first")
    validate(vault, plans)
    exports = vault.root / EXPORTS
    exports.mkdir(mode=0o700, exist_ok=True)
    lock = contextlib.nullcontext() if dry_run else _one_export_at_a_time(vault.root)
    with lock:
        return _export(vault, plans, outbox=outbox, exports=exports, dry_run=dry_run,
                       reshare=reshare, as_name=as_name, progress=progress, now=now)


@contextlib.contextmanager
def _one_export_at_a_time(root: Path) -> Iterator[None]:
    """Exports of one vault run one after the other: a second one waits, then decides with
    what the first one shared (two at once would each send the same items to a body)."""
    import fcntl

    fd = os.open(root / EXPORT_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _export(
    vault: Vault,
    plans: Sequence[BodyPlan],
    *,
    outbox: Path,
    exports: Path,
    dry_run: bool,
    reshare: bool,
    as_name: str | None,
    progress: Progress | None,
    now: datetime | None,
) -> list[BodyResult]:
    """Bodies in order, two at a time: while one body's package is written (on this thread,
    with the helpers of the writers), the previous one's is finished on a second thread:
    made durable, read back, recorded, delivered and receipted. Each is its own transaction,
    so neither holds the vault's write lock while the other works."""
    wanted = [_decide(vault, plan, reshare) for plan in plans]
    total = sum(w[2] for w in wanted)
    done_bytes = 0
    results: list[BodyResult] = []

    def settle(outcome: BodyResult | Future[BodyResult], size: int) -> None:
        nonlocal done_bytes
        result = outcome if isinstance(outcome, BodyResult) else outcome.result()
        results.append(result)
        crash_point("export.after_body")
        done_bytes += size
        if progress:
            progress(result.body, len(results), len(plans), done_bytes, total)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="evault-finish") as finisher:
        previous: tuple[BodyResult | Future[BodyResult], int] | None = None
        for plan, (item_ids, withheld, size, pending) in zip(plans, wanted, strict=True):
            result = BodyResult(body=plan.body, status="", items=len(item_ids), bytes=size,
                                withheld=withheld)
            outcome: BodyResult | Future[BodyResult]
            try:
                step = _start(vault, plan, result, item_ids, pending, outbox=outbox,
                              exports=exports, dry_run=dry_run, as_name=as_name, now=now)
            except VaultError as e:
                result.status, result.error = "failed", str(e)
                step = None
            outcome = result if step is None else finisher.submit(step)
            if previous is not None:
                settle(*previous)
            previous = (outcome, size)
        if previous is not None:
            settle(*previous)
    return results


def _decide(
    vault: Vault, plan: BodyPlan, reshare: bool
) -> tuple[list[str], list[str], int, str | None]:
    """(items to send, items withheld by release rules, their bytes, a built-unsent package)."""
    with vault.transaction() as session:
        try:
            items = select_items(session, item_ids=plan.items, case=plan.case, label=plan.label,
                                 tags=plan.tags)
        except NotFoundError:
            items = []
        rules = vault.config.release_rules
        allowed: list[Item] = []
        withheld: list[Item] = []
        for item in items:
            blocked = any(
                lbl.label in rules and plan.body not in rules[lbl.label] for lbl in item.labels
            )
            (withheld if blocked else allowed).append(item)
        shared = set(session.scalars(
            select(PackageItem.item_id).join(Package).where(
                Package.body_id == plan.body, Package.state.in_(("sent", "acknowledged")))
        ))
        todo = allowed if reshare else [i for i in allowed if i.id not in shared]
        ids = [i.id for i in todo]
        pending = None
        if ids and not reshare:
            for pkg in session.scalars(select(Package).where(
                    Package.body_id == plan.body, Package.state == "built")):
                if [pi.item_id for pi in pkg.items] == ids and Path(pkg.path).is_file():
                    pending = pkg.id
        return ids, [i.id for i in withheld], sum(i.size for i in todo), pending


def _start(
    vault: Vault,
    plan: BodyPlan,
    result: BodyResult,
    item_ids: list[str],
    pending: str | None,
    *,
    outbox: Path,
    exports: Path,
    dry_run: bool,
    as_name: str | None,
    now: datetime | None,
) -> Callable[[], BodyResult] | None:
    """Do this body's part that needs this thread (deciding, writing its package) and
    return the rest to run on the finishing thread; None if there is no rest."""
    if not item_ids:
        with vault.transaction() as session:
            any_shared = session.scalar(select(Package.id).where(
                Package.body_id == plan.body, Package.state.in_(("sent", "acknowledged"))))
        result.status = "already shared" if any_shared else "nothing to share"
        return None
    if dry_run:
        result.status = "would resume" if pending else "would share"
        result.package = pending
        return None
    if pending is not None:
        delivery, pair = prepare_send(vault, pending, outbox=outbox, as_name=as_name)
        result.status = "resumed"
        return lambda: _finish(vault, result, delivery, pair, None, outbox=outbox, now=now)
    draft = plan_package(
        vault, body_id=plan.body, item_ids=item_ids, reference=plan.reference,
        purpose=plan.purpose, as_name=as_name, directory=exports, now=now,
    )
    written = write_package_file(vault, draft)
    result.status = "shared"
    return lambda: _finish(vault, result, None, draft.pair, written, outbox=outbox, now=now)


def _finish(
    vault: Vault,
    result: BodyResult,
    delivery: Delivery | None,
    pair: KeyPair,
    written: PackageFile | None,
    *,
    outbox: Path,
    now: datetime | None,
) -> BodyResult:
    """Record a written package (if any), deliver it and record it sent; a failure is kept
    in the result. Touches the database and files, never the key store."""
    try:
        if written is not None:
            built, stamp = finish_package(vault, written)
            delivery = Delivery(built["id"], Path(built["path"]), built["file_sha256"], outbox,
                                read_at=stamp)
        assert delivery is not None
        deliver(delivery)
        sent = record_sent(vault, delivery, pair, now or utcnow())
    except VaultError as e:
        result.status, result.error = "failed", str(e)
        return result
    result.package, result.receipt = sent["id"], sent["receipt"]
    result.bytes = sent["bytes"]
    return result
