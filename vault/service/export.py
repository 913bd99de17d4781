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

``reshare`` sends again what was sent before, so "already sent" cannot tell it what is done:
a reshare run lists the packages it builds in a file (:data:`RESHARE_RUN`) before writing
them, and only its normal end removes the file. While the file is there, a body's package
with the same items listed in it is the interrupted run's own: one built but not sent is
resumed, one sent counts as done ("already shared"). So the re-run of an interrupted reshare
finishes it, and sends each body one package, not two.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from vault.clock import utcnow
from vault.errors import NotFoundError, UsageError, VaultError
from vault.faults import crash_point
from vault.service.identities import KeyPair
from vault.service.items import get_case
from vault.service.outbox import Outbox, OutboxChoice, check_folder, outbox_for, parse_outbox
from vault.service.packaging.build import (
    WrittenPackage,
    discard_package_file,
    finish_package,
    seal_package_file,
    write_package_files,
)
from vault.service.packaging.plan import (
    PackageDraft,
    active_keys,
    decide_release,
    plan_package,
    select_items,
)
from vault.service.packaging.send import (
    Delivery,
    deliver,
    prepare_send,
    record_sent,
    remove_stale_copies,
    send_package,
)
from vault.service.results import Result
from vault.service.rules import checked_rules
from vault.service.vaults import Vault
from vault.store.models import Body, Item, Package, PackageItem, PackageState

log = logging.getLogger("evault")

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EXPORTS = "exports"
EXPORT_LOCK = ".export.lock"
RESHARE_RUN = ".export-reshare"
"""In the vault folder while a ``reshare`` export has not come to its end: the ids of the
packages it built, one a line."""
PLAN_KEYS = {"case", "label", "tags", "items", "reference", "purpose"}
SHARED = (PackageState.SENT, PackageState.ACKNOWLEDGED)
"""The states of a package whose items count as shared with its body."""


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


@dataclass(frozen=True, slots=True, kw_only=True)
class BodyResult(Result):
    """What happened for one body (one ``--jsonl`` line): its status (``shared``,
    ``resumed``, ``already shared``, ``nothing to share``, ``failed``; ``would share``,
    ``would resume`` or ``would fail: WHY`` in a dry run), the package sent and its sharing
    receipt, the items and the bytes sent (to be sent, in a dry run), the ids of the items
    its release rules withheld, and a failure's message.

    ``exit_code`` is the failure's exit status (3 when it was a failed verification); the
    command line decides its own with it, and it is not part of ``to_json()``.
    """

    body: str
    status: str
    package: str | None = None
    receipt: str | None = None
    items: int = 0
    bytes: int = 0
    withheld: tuple[str, ...] = ()
    error: str | None = None
    exit_code: int = 0

    @property
    def failed(self) -> bool:
        """True if this body's export failed."""
        return self.status == "failed"

    @property
    def would_fail(self) -> bool:
        """True if a dry run found that this body's export would fail."""
        return self.status.startswith("would fail")

    def to_json(self) -> dict[str, Any]:
        """Stable fields for scripts: all but ``exit_code``."""
        out = Result.to_json(self)
        del out["exit_code"]
        return out


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


def validate(vault: Vault, plans: Sequence[BodyPlan], *, bodies: bool = True) -> None:
    """Refuse unknown or repeated bodies, cases and items before anything is written
    (unknown bodies only if ``bodies``: a dry run shows them as "would fail")."""
    seen: set[str] = set()
    for plan in plans:
        if plan.body in seen:
            raise UsageError(f"body {plan.body}: named twice; name each body once")
        seen.add(plan.body)
    with vault.transaction() as session:
        for plan in plans:
            if bodies and session.get(Body, plan.body) is None:
                raise NotFoundError(f"body {plan.body}: not found; see `evault body list`")
            if plan.case:
                get_case(session, plan.case)
            for item_id in plan.items:
                if session.get(Item, item_id) is None:
                    raise NotFoundError(f"item {item_id}: not found (plan for {plan.body})")


Progress = Callable[[str, int, int, int, int], None]
"""(body, bodies done, bodies total, bytes done, bytes total)."""


def export(
    vault: Vault,
    plans: Sequence[BodyPlan],
    *,
    outbox: Path | OutboxChoice,
    dry_run: bool = False,
    reshare: bool = False,
    as_name: str | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
    with_case_uco: bool = False,
) -> list[BodyResult]:
    """Export to every planned body; each body's failure is kept in its result.

    ``outbox`` is one folder for every body, or what the command line said
    (:class:`~vault.service.outbox.OutboxChoice`): one folder or SFTP drop for every body,
    or, when it named none, each body's own outbox (a body without one is refused before
    anything is written). ``with_case_uco`` puts each new package's items and custody
    excerpt in its bag as CASE/UCO (``evault/case-uco.jsonld``)."""
    validate(vault, plans, bodies=not dry_run)
    outboxes = _outboxes(vault, plans, outbox)
    exports = vault.root / EXPORTS
    exports.mkdir(mode=0o700, exist_ok=True)
    lock = contextlib.nullcontext() if dry_run else _one_export_at_a_time(vault)
    with lock:
        run = _reshare_run(vault.root) if reshare else None
        results = _export(vault, plans, outboxes=outboxes, exports=exports, dry_run=dry_run,
                          reshare=reshare, run=run, as_name=as_name, progress=progress,
                          now=now, with_case_uco=with_case_uco)
        if reshare and not dry_run:
            (vault.root / RESHARE_RUN).unlink(missing_ok=True)
        return results


def _outboxes(
    vault: Vault, plans: Sequence[BodyPlan], given: Path | OutboxChoice
) -> dict[str, Outbox]:
    """Each planned body's outbox (folders checked to exist); a body unknown here is left
    out, for the run to report."""
    choice = OutboxChoice(str(given)) if isinstance(given, Path) else given
    out: dict[str, Outbox] = {}
    with vault.transaction() as session:
        for plan in plans:
            if session.get(Body, plan.body) is not None:
                out[plan.body] = outbox_for(vault, session, plan.body, choice)
    for target in set(out.values()):
        check_folder(target)
    if not out and choice.outbox is not None:  # no known body: still check the folder
        folder = parse_outbox(choice.outbox)
        if isinstance(folder, Path):
            check_folder(folder)
    return out


def _reshare_run(root: Path) -> set[str]:
    """The packages an interrupted reshare run built (none if no run was interrupted)."""
    try:
        return set((root / RESHARE_RUN).read_text(encoding="ascii").split())
    except FileNotFoundError:
        return set()
    except UnicodeDecodeError:
        raise VaultError(
            f"{root / RESHARE_RUN}: not a list of package ids; remove it (the re-run then "
            "builds and sends every package again)"
        ) from None


def _note_reshare_run(root: Path, package_ids: Sequence[str]) -> None:
    """List packages about to be built by this reshare run, durably, before they exist."""
    fd = os.open(root / RESHARE_RUN, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, "".join(f"{pid}\n" for pid in package_ids).encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _one_export_at_a_time(vault: Vault) -> Iterator[None]:
    """Exports of one vault run one after the other: a second one waits, then decides with
    what the first one shared (two at once would each send the same items to a body). On a
    team vault (PostgreSQL) the lock is an advisory lock every machine sees; the file lock
    keeps one machine's exports apart on SQLite and PostgreSQL alike (its reshare run
    record is a file of this vault folder)."""
    from vault.durable import file_lock
    from vault.store.db import advisory_lock

    with file_lock(vault.root / EXPORT_LOCK), advisory_lock(vault.engine, "evault:export"):
        yield


FAN_OUT = 8
"""Packages written together at most (each holds a few MiB of buffers and a thread)."""


@dataclass
class _Body:
    """One body's way through an export."""

    plan: BodyPlan
    result: BodyResult
    item_ids: list[str]
    pending: str | None  # a package built by an earlier run and not sent
    size: int
    pair: KeyPair | None = None
    delivery: Delivery | None = None  # set when there is a package to send
    draft: PackageDraft | None = None  # set when a package is to be built now
    written: WrittenPackage | VaultError | None = None
    sealed: Callable[[], None] | None = None  # waits for its file's seal, made on a helper


def _export(
    vault: Vault,
    plans: Sequence[BodyPlan],
    *,
    outboxes: dict[str, Outbox],
    exports: Path,
    dry_run: bool,
    reshare: bool,
    run: set[str] | None,
    as_name: str | None,
    progress: Progress | None,
    now: datetime | None,
    with_case_uco: bool = False,
) -> list[BodyResult]:
    """Bodies in groups of up to :data:`FAN_OUT`. A group's new packages are written
    together, in one pass over their items (:func:`write_package_files`: an item shared
    with five bodies is decrypted and hashed once); then body by body, in the order given,
    each is made durable and read back (on two threads, ahead of the body being
    recorded), recorded, delivered and receipted, each step its own transaction."""
    bodies = []
    for plan in plans:
        item_ids, withheld, size, pending = _decide(vault, plan, reshare, run)
        failure = None
        outbox = outboxes.get(plan.body)
        if not dry_run and outbox is not None:
            try:
                if _record_delivered(vault, plan.body, pending, outbox=outbox, as_name=as_name,
                                     now=now):
                    item_ids, withheld, size, pending = _decide(vault, plan, reshare, run)
            except VaultError as e:
                failure = e
        result = BodyResult(body=plan.body, status="", items=len(item_ids),
                            bytes=size if dry_run else 0, withheld=tuple(withheld))
        if failure is not None:
            result = _failed(result, failure)
            item_ids, pending, size = [], None, 0
        bodies.append(_Body(plan, result, item_ids, pending, size))
    shown = _Shown(progress, len(bodies), sum(b.size for b in bodies))
    for start in range(0, len(bodies), FAN_OUT):
        group = bodies[start : start + FAN_OUT]
        for body in group:
            if body.result.failed:
                continue
            try:
                _start(vault, body, outbox=outboxes.get(body.plan.body), exports=exports,
                       dry_run=dry_run, as_name=as_name, now=now,
                       with_case_uco=with_case_uco)
            except VaultError as e:
                body.result = _failed(body.result, e)
        building = [b for b in group if b.draft is not None]
        if reshare and not dry_run:
            _note_reshare_run(vault.root, [b.draft.package_id for b in building if b.draft])
        label = ",".join(b.plan.body for b in building)
        written = write_package_files(vault, [b.draft for b in building if b.draft],
                                      progress=functools.partial(shown.wrote, label))
        for body, outcome in zip(building, written, strict=True):
            body.written = outcome
        _finish_group(vault, group, shown, outboxes=outboxes, now=now)
        shown.next_group()
    return [b.result for b in bodies]


def _failed(result: BodyResult, e: VaultError) -> BodyResult:
    """``result`` as a failure: status ``failed``, with ``e``'s message and exit status."""
    return replace(result, status="failed", error=str(e), exit_code=e.exit_code)


class _Shown:
    """Progress as shown: bodies finished, and bytes of the bodies finished plus those
    written so far into the packages of the group being built."""

    def __init__(self, progress: Progress | None, bodies: int, total: int) -> None:
        self._progress = progress
        self._bodies = bodies
        self._total = total
        self._finished = 0
        self._finished_bytes = 0
        self._written = 0  # in this group
        self._written_finished = 0  # of that, bodies already finished

    def wrote(self, label: str, n: int) -> None:
        self._written += n
        self._show(label)

    def finished(self, body: _Body) -> None:
        crash_point("export.after_body")
        self._finished += 1
        self._finished_bytes += body.size
        if body.draft is not None:
            self._written_finished += body.size
        self._show(body.plan.body)

    def next_group(self) -> None:
        self._written = self._written_finished = 0

    def _show(self, label: str) -> None:
        if self._progress:
            done = self._finished_bytes + max(0, self._written - self._written_finished)
            self._progress(label, self._finished, self._bodies, min(done, self._total),
                           self._total)


def _decide(
    vault: Vault, plan: BodyPlan, reshare: bool, run: set[str] | None = None
) -> tuple[list[str], list[str], int, str | None]:
    """(items to send, items withheld by release rules, their bytes, a built-unsent package).

    With ``reshare``, a package of the same items that an interrupted reshare run built
    (listed in ``run``) is resumed if built and not sent, and done if sent (then no items
    are left to send and the last value is that sent package, for the table to name)."""
    with vault.transaction() as session:
        try:
            items = select_items(session, item_ids=plan.items, case=plan.case, label=plan.label,
                                 tags=plan.tags)
        except NotFoundError:
            items = []
        release = decide_release(vault, session, items, plan.body, checked_rules(vault, session))
        allowed = release.items
        withheld = [item for item, _reason in release.withheld]
        shared = set(session.scalars(
            select(PackageItem.item_id).join(Package).where(
                Package.body_id == plan.body, Package.state.in_(SHARED))
        ))
        todo = allowed if reshare else [i for i in allowed if i.id not in shared]
        ids = [i.id for i in todo]
        pending = None
        if ids and (not reshare or run):
            query = select(Package).where(Package.body_id == plan.body)
            if reshare:
                query = query.where(Package.id.in_(sorted(run or ())))
            for pkg in session.scalars(query.order_by(Package.created_at)):
                if [pi.item_id for pi in pkg.items] != ids:
                    continue
                if pkg.state is PackageState.BUILT and Path(pkg.path).is_file():
                    pending = pkg.id
                elif reshare and pkg.state is not PackageState.BUILT:
                    # The interrupted run sent it: nothing to send, and the table names it.
                    todo, ids, pending = [], [], pkg.id
                    break
        return ids, [i.id for i in withheld], sum(i.size for i in todo), pending


def _record_delivered(
    vault: Vault,
    body_id: str,
    resuming: str | None,
    *,
    outbox: Outbox,
    as_name: str | None,
    now: datetime | None,
) -> list[str]:
    """Record as sent the packages of this body that a killed run named in this outbox but
    did not record (killed between delivery and its commit); return their ids.

    They are out of the building: the body may have taken them already, so the custody log
    must say they were sent, and the items they carried are not sent again. The package
    being resumed (built for exactly the items of this run) is left to the run itself.
    Each is checked as :func:`send_package` checks a package sent twice into one folder:
    the file there must have the digest recorded at build. For an SFTP drop this is not
    looked for (it would cost a connection per body on every run): such a package stays
    built and unsent, and `evault doctor` lists it.
    """
    if not isinstance(outbox, Path):
        return []
    with vault.transaction() as session:
        built = [pkg.id for pkg in session.scalars(
            select(Package).where(Package.body_id == body_id, Package.state == PackageState.BUILT)
            .order_by(Package.created_at)) if pkg.id != resuming]
    left = []
    for package_id in built:
        final = outbox / f"{package_id}.evpkg"
        if final.exists():
            left.append(package_id)
            continue
        remove_stale_copies(final)  # killed before the copy had its name
    for package_id in left:
        sent = send_package(vault, package_id, outbox=outbox, as_name=as_name, now=now)
        log.warning(f"package {package_id}: was in {outbox} already, delivered by an "
                    f"interrupted run; recorded as sent to {body_id} now (receipt "
                    f"{sent.receipt})")
    return left


def _start(
    vault: Vault,
    body: _Body,
    *,
    outbox: Outbox | None,
    exports: Path,
    dry_run: bool,
    as_name: str | None,
    now: datetime | None,
    with_case_uco: bool = False,
) -> None:
    """Decide what this body gets now: nothing, a package built earlier (checked for
    sending), or a new package (planned, to be written with the group)."""
    plan = body.plan
    if not body.item_ids:
        with vault.transaction() as session:
            any_shared = session.scalar(select(Package.id).where(
                Package.body_id == plan.body, Package.state.in_(SHARED)))
        # The package is the one an interrupted reshare run sent, if any.
        body.result = replace(body.result,
                              status="already shared" if any_shared else "nothing to share",
                              package=body.pending)
    elif dry_run:
        status, error = _would(vault, plan.body)
        if error is None:
            status = "would resume" if body.pending else "would share"
        body.result = replace(body.result, status=status, error=error, package=body.pending)
    elif outbox is None:
        raise NotFoundError(f"body {plan.body}: not found; see `evault body list`")
    elif body.pending is not None:
        body.delivery, body.pair = prepare_send(vault, body.pending, outbox=outbox,
                                                as_name=as_name)
        body.result = replace(body.result, status="resumed")
    else:
        body.draft = plan_package(
            vault, body_id=plan.body, item_ids=body.item_ids, reference=plan.reference,
            purpose=plan.purpose, as_name=as_name, directory=exports, now=now,
            with_case_uco=with_case_uco,
        )
        body.pair = body.draft.pair
        body.result = replace(body.result, status="shared")


def _would(vault: Vault, body_id: str) -> tuple[str, str | None]:
    """For a dry run: ("would fail: WHY", the real run's error), or ("", None) if the body
    can receive a package (it exists and has an active key)."""
    with vault.transaction() as session:
        body = session.get(Body, body_id)
        if body is None:
            return ("would fail: body not found",
                    f"body {body_id}: not found; see `evault body list`")
        try:
            active_keys(body)
        except VaultError as e:
            return "would fail: no active key", str(e)
    return "", None


def _finish_group(
    vault: Vault, group: Sequence[_Body], shown: _Shown, *, outboxes: dict[str, Outbox],
    now: datetime | None,
) -> None:
    """Seal, record, deliver and receipt the group's packages, body by body."""
    handed = 0  # bodies given to _finish, which removes a body's file if it fails
    try:
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="evault-seal") as pool:
            for body in group:
                if isinstance(body.written, WrittenPackage):
                    body.sealed = pool.submit(seal_package_file, body.written).result
            for body in group:
                handed += 1
                _finish(vault, body, outbox=outboxes.get(body.plan.body), now=now)
                shown.finished(body)
    except BaseException:
        for body in group[handed:]:
            if isinstance(body.written, WrittenPackage):
                discard_package_file(body.written.draft)
        raise


def _finish(
    vault: Vault, body: _Body, *, outbox: Outbox | None, now: datetime | None
) -> None:
    """Record this body's new package (if any), deliver and receipt it; a refusal is kept
    in the body's result."""
    try:
        if isinstance(body.written, VaultError):
            raise body.written
        if isinstance(body.written, WrittenPackage):
            built = finish_package(vault, body.written, body.sealed)
            assert outbox is not None  # a body without one was refused before building
            body.delivery = Delivery(built.id, Path(built.path), built.file_sha256, outbox)
        if body.delivery is None or body.pair is None:
            return
        uploaded = deliver(body.delivery)
        sent = record_sent(vault, body.delivery, body.pair, now or utcnow(), uploaded)
    except VaultError as e:
        body.result = _failed(body.result, e)
        return
    body.result = replace(body.result, package=sent.id, receipt=sent.receipt,
                          bytes=sent.bytes)
