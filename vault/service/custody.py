"""The custody log of a vault: append events, checkpoint, prove, and verify everything
(reading what :mod:`vault.custody.verify` checks).

    >>> with vault.transaction() as session:                         # doctest: +SKIP
    ...     log = CustodyLog(vault, session)
    ...     log.append(pair, "case.created", "UA-2026-0042", now=now)
    >>> [d.message for d in verify_log(vault).defects]               # doctest: +SKIP
    []

Each event is stored as the canonical bytes its actor signed; its leaf hash goes into the
RFC 9162 tree whose frontier sits in the single ``custody_head`` row. Appends lock that row
(``BEGIN IMMEDIATE`` on SQLite, ``SELECT ... FOR UPDATE`` on PostgreSQL), so concurrent
commands produce one consistent log.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from sqlalchemy import (
    Connection,
    Dialect,
    Engine,
    func,
    insert,
    null,
    select,
)
from sqlalchemy.orm import Session

from vault.clock import as_utc, isoformat, utcnow
from vault.crypto.keys import VerifyKey
from vault.custody.events import Event
from vault.custody.merkle import (
    Frontier,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from vault.custody.note import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    open_checkpoint,
    sign_checkpoint,
)
from vault.errors import ConflictError, NotFoundError, UsageError, VerificationError
from vault.service import anchor, keyhistory, timestamping
from vault.service.identities import KeyPair, acting_identity, current_key, load_keypair
from vault.service.progress import Progress
from vault.service.results import Result, Sparse
from vault.service.vaults import Vault
from vault.service.witness import witness_defects, witnessed_checkpoints
from vault.store import db, dbapi
from vault.store.models import CustodyEvent, CustodyHead, Identity, IdentityKey, SignedCheckpoint

if TYPE_CHECKING:
    from vault.custody.verify import Defect, LogReport, Run, Scan
    from vault.service.audit import Consistency


def origin(vault: Vault) -> str:
    """The log's name in events and checkpoints: ``evault/<vault-id>``."""
    return f"evault/{vault.config.vault_id}"


def lock_head(session: Session) -> CustodyHead:
    """The log head, locked for this transaction."""
    stmt = select(CustodyHead).where(CustodyHead.id == 1)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    head = session.scalar(stmt)
    if head is None:
        raise VerificationError("custody log: the head row is missing; the database is damaged")
    # Key events other writers committed before the lock count from here on.
    keyhistory.recheck(session)
    return head


class CustodyLog:
    """Appends events within the caller's transaction; the head is updated as it goes."""

    def __init__(self, vault: Vault, session: Session) -> None:
        self._vault = vault
        self._session = session
        self._origin = origin(vault)
        self._head = lock_head(session)
        self._frontier = Frontier.from_bytes(self._head.frontier)
        if self._frontier.size != self._head.size:
            raise VerificationError("custody log: head size and frontier disagree")
        anchor.guard(vault, session, self._head, self._frontier)

    def append(
        self,
        actor: KeyPair,
        action: str,
        subject: str,
        *,
        details: dict[str, Any] | None = None,
        digests: dict[str, str] | None = None,
        now: datetime | None = None,
    ) -> CustodyEvent:
        """Sign and append one event."""
        time = now or utcnow()
        self._check_signer(actor, time)
        event = Event(
            log=self._origin,
            seq=self._frontier.size,
            time=time,
            actor=actor.fingerprint,
            action=action,
            subject=subject,
            details=details or {},
            digests=digests or {},
        )
        body, signature = event.sign(actor.signing)
        leaf = leaf_hash(body)
        row = CustodyEvent(
            seq=event.seq,
            recorded_at=event.time,
            actor=event.actor,
            action=action,
            subject=subject,
            body=body,
            signature=signature,
            leaf_hash=leaf,
        )
        self._session.add(row)
        self._frontier.append(leaf)
        self._update_head()
        keyhistory.note_key_event(self._vault, self._session, row)
        return row

    def append_many(
        self,
        actor: KeyPair,
        entries: Sequence[tuple[str, str, dict[str, Any], dict[str, str]]],
        *,
        now: datetime | None = None,
    ) -> list[int]:
        """Sign and append events given as (action, subject, details, digests), in order.

        The same events as as many :meth:`append` calls, inserted in one statement with
        one head update: what a batch of thousands of intakes needs. Returns their seqs.
        """
        if not entries:
            return []
        if actor.signing.public.fingerprint != actor.fingerprint:
            raise ValueError("the signing key is not the event's actor")
        if any(action in keyhistory.KEY_ACTIONS for action, *_ in entries):
            # append notes each key event for the key store's list (and the history).
            raise ValueError("key events are appended one at a time")
        time = now or utcnow()
        self._check_signer(actor, time)
        rows: list[dict[str, Any]] = []
        for action, subject, details, digests in entries:
            event = Event(
                log=self._origin,
                seq=self._frontier.size,
                time=time,
                actor=actor.fingerprint,
                action=action,
                subject=subject,
                details=details,
                digests=digests,
            )
            # What Event.sign does, less its per-event key check (made once above).
            body = event.encode()
            leaf = leaf_hash(body)
            rows.append({
                "seq": event.seq,
                "recorded_at": time,
                "actor": actor.fingerprint,
                "action": action,
                "subject": subject,
                "body": body,
                "signature": actor.signing.sign(body),
                "leaf_hash": leaf,
            })
            self._frontier.append(leaf)
        self._session.execute(insert(CustodyEvent), rows)
        self._update_head()
        return [int(row["seq"]) for row in rows]

    def _check_signer(self, actor: KeyPair, when: datetime) -> None:
        """With the head locked, the actor's key may sign, by the signed key history, both at
        ``when`` (as ``custody verify`` will check) and now: a revocation or rotation another
        command committed since this one checked its actor, or since it started, counts. A
        history with defects is refused as the commands' own checks refuse it (a database
        holder who damages it does not switch this check off); a vault whose history is not
        anchored yet has only its tables, checked before."""
        history = keyhistory.load(self._vault, self._session)
        if history.anchor is None:
            return
        if history.defects:
            seq, message = history.defects[0]
            raise VerificationError(
                f"custody log: event {seq}: {message}; run `evault custody verify`")
        fingerprint = actor.fingerprint
        at = as_utc(when)
        key = history.identity_keys.get(fingerprint)
        end = history.ended_at(key) if key is not None else None
        if key is None:
            why = "is not one of this vault's keys"
        elif at < key.created_at:
            why = (f"was created at {isoformat(key.created_at)}, after this command started "
                   f"({isoformat(at)})")
        elif end is not None and end < max(at, utcnow()):
            why = f"was revoked or retired at {isoformat(end)}"
        else:
            return
        raise ConflictError(
            f"identity key {fingerprint}: the signed key history says it {why} (by another "
            "command meanwhile, or its rows were changed outside evault); nothing was "
            "recorded: check `evault identity list` and run the command again as a current "
            "identity")

    def _update_head(self) -> None:
        self._head.size = self._frontier.size
        self._head.root = self._frontier.root()
        self._head.frontier = self._frontier.to_bytes()


def record(
    vault: Vault,
    session: Session,
    actor: KeyPair,
    action: str,
    subject: str,
    *,
    details: dict[str, Any] | None = None,
    digests: dict[str, str] | None = None,
    now: datetime | None = None,
) -> CustodyEvent:
    """Append one event in the caller's transaction."""
    return CustodyLog(vault, session).append(
        actor, action, subject, details=details, digests=digests, now=now
    )


def actor_pair(vault: Vault, session: Session, name: str | None) -> KeyPair:
    """The key pair of the identity acting (``--as NAME``, else the default); its rows must
    agree with the signed key history (a revocation cleared in the table does not count)."""
    key = current_key(acting_identity(session, name))
    keyhistory.check_actor(vault, session, key)
    return load_keypair(vault, key)


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggedEvent(Result):
    """A custody event as the log holds it, for display: the fields its actor signed (``log``
    ``evault/<vault-id>``, ``time`` an ISO 8601 UTC string, ``actor`` the signing key's
    fingerprint, ``details`` as signed, ``digests`` algorithm -> hex digest), then its
    ``leaf_hash`` (hex) and the actor's Ed25519 ``signature`` (base64)."""

    log: str
    seq: int
    time: str
    actor: str
    action: str
    subject: str
    details: dict[str, Any]
    digests: dict[str, str]
    leaf_hash: str
    signature: str


def logged_event(row: CustodyEvent) -> LoggedEvent:
    """An event row for display: the signed fields plus the leaf hash and signature."""
    event = Event.decode(row.body)
    return LoggedEvent(
        log=event.log,
        seq=event.seq,
        time=isoformat(event.time),
        actor=event.actor,
        action=event.action,
        subject=event.subject,
        details=event.details,
        digests=event.digests,
        leaf_hash=row.leaf_hash.hex(),
        signature=base64.b64encode(row.signature).decode(),
    )


def show_subject(vault: Vault, subject: str) -> list[LoggedEvent]:
    """Every event about ``subject`` (an item, package, case, identity or body), in order."""
    with vault.transaction() as session:
        rows = session.scalars(
            select(CustodyEvent).where(CustodyEvent.subject == subject).order_by(CustodyEvent.seq)
        ).all()
        if not rows:
            raise NotFoundError(f"{subject}: no custody events; check the id")
        return [logged_event(r) for r in rows]


# ----------------------------------------------------------------------------- checkpoints


def _signer_name(vault: Vault) -> str:
    return origin(vault)


class Signed(NamedTuple):
    """A checkpoint signed and kept: the note, the tree size, and the RFC 3161 tokens over
    the note (DER ``TimeStampResp``; none without configured TSAs)."""

    note: str
    size: int
    timestamps: tuple[bytes, ...]


def checkpoint_now(
    vault: Vault, session: Session, pair: KeyPair, now: datetime | None = None
) -> Signed:
    """Sign a checkpoint of the log as it is in ``session``, timestamp it with the configured
    TSAs (:func:`vault.service.timestamping.stamp`) and keep both."""
    head = lock_head(session)
    anchor.guard(vault, session, head)
    checkpoint = Checkpoint(origin(vault), head.size, head.root)
    note = sign_checkpoint(checkpoint, NoteSigner(_signer_name(vault), pair.signing))
    row = SignedCheckpoint(
        size=head.size,
        root=head.root,
        signer=pair.fingerprint,
        note=note,
        created_at=now or utcnow(),
    )
    session.add(row)
    return Signed(note, head.size, timestamping.stamp(vault, session, row, now))


def make_checkpoint(vault: Vault, as_name: str | None, *, now: datetime | None = None) -> Signed:
    """Sign a checkpoint of the log as it is now, timestamp it and keep it."""
    with vault.transaction() as session:
        return checkpoint_now(vault, session, actor_pair(vault, session, as_name), now)


def vault_verifiers(vault: Vault, session: Session) -> list[NoteVerifier]:
    """Note verifiers for every key this vault's identities ever had, as the signed key
    history has them (the table's only in a vault without a history anchor yet)."""
    anchor = keyhistory.read_anchor(vault)
    if anchor is not None:
        history = keyhistory.load(vault, session, anchor)
        raw = [k.signing_key for k in history.identity_keys.values()]
    else:
        raw = [k.signing_key for k in session.scalars(select(IdentityKey))]
    return [NoteVerifier.for_key(_signer_name(vault), VerifyKey(key)) for key in raw]


def verifier_key(vault: Vault, session: Session) -> str:
    """The ``name+keyid+key`` verifier line of the default identity's current key."""
    identity = acting_identity(session, None)
    key = VerifyKey(current_key(identity).signing_key)
    return NoteVerifier.for_key(_signer_name(vault), key).vkey()


def latest_checkpoint(session: Session) -> SignedCheckpoint:
    """The newest checkpoint, or a NotFoundError that says how to make one."""
    row = session.scalar(select(SignedCheckpoint).order_by(SignedCheckpoint.id.desc()).limit(1))
    if row is None:
        raise NotFoundError("custody log: no checkpoint yet; run `evault custody checkpoint`")
    return row


def leaf_hashes(session: Session, size: int) -> list[bytes]:
    """The leaf hashes of the first ``size`` events, in order, each checked against its bytes.

    The stored column is only a copy: a proof built on it alone would vouch for an event
    whose bytes were rewritten behind it.
    """
    rows = session.execute(
        select(CustodyEvent.seq, CustodyEvent.body, CustodyEvent.leaf_hash)
        .where(CustodyEvent.seq < size)
        .order_by(CustodyEvent.seq)
    )
    out = []
    for seq, body, stored in rows:
        leaf = leaf_hash(body)
        if leaf != stored:
            raise VerificationError(
                f"custody log: event {seq}: stored leaf hash does not match the event's bytes; "
                "run `evault custody verify`"
            )
        out.append(leaf)
    if len(out) != size:
        raise VerificationError(
            f"custody log: {len(out)} events below size {size}; run `evault custody verify`"
        )
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class EventInclusion(Sparse):
    """One event's place in the checkpointed tree: ``status`` ``included``, with its
    ``leaf_hash`` and the inclusion ``proof`` (base64 hashes, leaf to root), or ``after
    checkpoint`` (appended since; no hash nor proof)."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"leaf_hash", "proof"})
    seq: int
    action: str
    leaf_hash: str | None = None
    proof: tuple[str, ...] | None = None
    status: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SubjectProof(Result):
    """The inclusion proofs of a subject's events against the latest checkpoint: its signed
    note, the tree size it commits to and its root hash (base64)."""

    subject: str
    checkpoint: str
    tree_size: int
    root_hash: str
    events: tuple[EventInclusion, ...]


def prove_subject(vault: Vault, subject: str) -> SubjectProof:
    """Inclusion proofs of every event of ``subject`` against the latest checkpoint."""
    with vault.transaction() as session:
        cp_row = latest_checkpoint(session)
        checkpoint, _ = open_checkpoint(cp_row.note, vault_verifiers(vault, session))
        rows = session.scalars(
            select(CustodyEvent).where(CustodyEvent.subject == subject).order_by(CustodyEvent.seq)
        ).all()
        if not rows:
            raise NotFoundError(f"{subject}: no custody events; check the id")
        leaves = leaf_hashes(session, checkpoint.size)
        proofs = []
        for row in rows:
            if row.seq >= checkpoint.size:
                proofs.append(EventInclusion(seq=row.seq, action=row.action,
                                             status="after checkpoint"))
                continue
            leaf = leaf_hash(row.body)
            path = inclusion_proof(leaves, row.seq, checkpoint.size)
            verify_inclusion(leaf, row.seq, checkpoint.size, path, checkpoint.root_hash)
            proofs.append(
                EventInclusion(
                    seq=row.seq,
                    action=row.action,
                    leaf_hash=base64.b64encode(leaf).decode(),
                    proof=tuple(base64.b64encode(h).decode() for h in path),
                    status="included",
                )
            )
        return SubjectProof(
            subject=subject,
            checkpoint=cp_row.note,
            tree_size=checkpoint.size,
            root_hash=base64.b64encode(checkpoint.root_hash).decode(),
            events=tuple(proofs),
        )


def prove_consistency(vault: Vault, old_note: str, new_note: str) -> Consistency:
    """Check two signed checkpoints of this vault and prove the log only grew between them
    (the proof an auditor checks with :func:`vault.service.audit.verify_with_proof`)."""
    from vault.service.audit import Consistency

    with vault.transaction() as session:
        verifiers = vault_verifiers(vault, session)
        old, _ = open_checkpoint(old_note, verifiers)
        new, _ = open_checkpoint(new_note, verifiers)
        for cp, which in ((old, "old"), (new, "new")):
            if cp.origin != origin(vault):
                raise VerificationError(
                    f"{which} checkpoint: origin {cp.origin} is not this vault's log"
                )
        if old.size > new.size:
            raise UsageError("custody consistency: OLD is larger than NEW; swap them")
        head = lock_head(session)
        if new.size > head.size:
            raise VerificationError(
                f"new checkpoint: size {new.size} is beyond this log's {head.size} events; "
                "the checkpoint is not from this log's history"
            )
        leaves = leaf_hashes(session, new.size)
        path = consistency_proof(leaves, old.size, new.size) if old.size else []
        if old.size:
            verify_consistency(old.size, new.size, path, old.root_hash, new.root_hash)
        else:
            from vault.custody.merkle import EMPTY_ROOT

            if old.root_hash != EMPTY_ROOT:
                raise VerificationError("old checkpoint: size 0 with a root other than empty")
        from vault.custody.merkle import root_of

        if root_of(leaves) != new.root_hash:
            raise VerificationError(
                f"new checkpoint: root at size {new.size} differs from this log's; "
                "the history was rewritten"
            )
        return Consistency(
            origin=origin(vault),
            old_size=old.size,
            new_size=new.size,
            old_root=base64.b64encode(old.root_hash).decode(),
            new_root=base64.b64encode(new.root_hash).decode(),
            proof=tuple(base64.b64encode(h).decode() for h in path),
            status="consistent",
        )


# ----------------------------------------------------------------------------- verification
#
# The checks themselves are vault.custody.verify's; this part reads what they need (the
# events, the key history, the head and checkpoints, the anchor, the witnessed bodies) and
# hands it over. A million events are read with vault.store.db.raw_rows (plain DBAPI tuples);
# the one column whose type needs converting, the time, repeats from event to event and is
# converted once per distinct value. vault.custody.verify is imported on use: only verify
# needs it (its regular expressions are compiled on import).


def _event_columns(signatures: bool) -> list[Any]:
    """The columns ``scan_events`` unpacks; the signature only when it is to be checked."""
    return [
        CustodyEvent.seq,
        CustodyEvent.recorded_at,
        CustodyEvent.actor,
        CustodyEvent.action,
        CustodyEvent.subject,
        CustodyEvent.body,
        CustodyEvent.signature if signatures else null(),
        CustodyEvent.leaf_hash,
    ]


def _raw_rows(
    conn: Connection, signatures: bool, *where: Any, limit: int | None = None
) -> Generator[Sequence[Any], None, None]:
    """The events matching ``where`` in seq order, as the DBAPI gives them; the time (column
    1) is left to scan_events's reader (see _time_reader)."""
    stmt = select(*_event_columns(signatures)).where(*where).order_by(CustodyEvent.seq)
    return db.raw_rows(conn, stmt.limit(limit), unconverted={1})


def _paged_rows(conn: Connection, signatures: bool,
                highest: int) -> Generator[Sequence[Any], None, None]:
    """Every event up to seq ``highest`` in seq order, SCAN_CHUNK at a time (flat memory on
    any driver). Bounded as counted, so that events appended meanwhile stay out, as they
    would from one SELECT.
    """
    from vault.custody import verify

    chunk = verify.SCAN_CHUNK
    where: list[Any] = [CustodyEvent.seq <= highest]
    while True:
        count = 0
        with contextlib.closing(_raw_rows(conn, signatures, *where, limit=chunk)) as rows:
            for row in rows:
                count += 1
                yield row
        if count < chunk:
            return
        where = [CustodyEvent.seq > row[0], CustodyEvent.seq <= highest]


def _time_reader(dialect: Dialect) -> Callable[[Any], datetime]:
    """Raw stored time -> the UTC datetime the ORM would give (SQLite stores text)."""
    process = db.column_reader(CustodyEvent.__table__.c.recorded_at, dialect)
    return lambda raw: as_utc(process(raw))


_READERS: dict[str, Engine] = {}


def _scan_range(run: Run) -> Scan:
    """Worker process: read events ``lo <= seq < hi`` over a connection of its own, scan them
    (:func:`vault.custody.verify.scan_run`).

    One plain SELECT, no write lock: each run is read as one consistent snapshot, and the
    log only ever grows at its end, beyond the runs asked for.
    """
    from vault.custody.verify import scan_run

    engine = _READERS.get(run.url)
    if engine is None:
        engine = _READERS[run.url] = db.worker_engine(run.url)
    with engine.connect() as conn, contextlib.closing(_raw_rows(
            conn, run.signatures, CustodyEvent.seq >= run.lo, CustodyEvent.seq < run.hi
    )) as rows:  # closed before the connection, whatever scan_run raises
        return scan_run(run, rows, _time_reader(conn.dialect))


def _rules_defects(vault: Vault, session: Session) -> list[Defect]:
    """A defect if config.toml's release rules are not those of the newest rule.changed."""
    from vault.custody.verify import Defect
    from vault.service.rules import configured, difference, mismatch_message, signed

    try:
        what = difference(configured(vault), signed(vault, session))
    except VerificationError as e:
        return [Defect(None, str(e))]
    return [] if what is None else [Defect(None, mismatch_message(what))]


def verify_log(
    vault: Vault, *, signatures: bool = True, workers: int = 2, progress: Progress | None = None
) -> LogReport:
    """Re-derive everything and list every defect: leaves, fields, sequence, tree, checkpoints,
    and (unless ``signatures`` is False) every signature. ``progress`` gets (events checked,
    events in the log) as each run of events is put together.

    A long log is read by ``workers`` processes in runs of sequence numbers, each checking
    its events (and their signatures); this process puts the runs together into the tree,
    in order, and checks the head and the checkpoints against it.
    """
    from vault.custody import verify
    from vault.custody.verify import Defect, KeyInfo, LogReport, assemble, plan_runs, scan_events

    report = LogReport()
    log_origin = origin(vault)
    history_anchor = keyhistory.ensure_anchor(vault)
    # The key store's anchor, read before the log: writers move it only after they commit,
    # so the log read afterwards cannot be older than it in honest use.
    pinned = anchor.load(vault)
    extra: tuple[int, ...] = () if pinned is None else (pinned.size,)
    with vault.transaction() as session:
        # The identity keys come from the signed key history, not from the table; every
        # row of the key tables that differs from that history is a defect.
        trust = keyhistory.audit(vault, session, history_anchor)
        report.defects.extend(Defect(seq, message) for seq, message in trust.defects)
        keys = {fp: KeyInfo(k.raw, k.created_at, k.revoked_at) for fp, k in trust.keys.items()}
        checkpoints = session.scalars(select(SignedCheckpoint).order_by(SignedCheckpoint.id)).all()
        head = session.get(CustodyHead, 1)
        verifiers = [NoteVerifier.for_key(_signer_name(vault), VerifyKey(k.raw))
                     for k in keys.values()]
        report.defects += _rules_defects(vault, session)
        from vault.service.outbox import outbox_defects

        report.defects += [Defect(None, line) for line in outbox_defects(vault, session)]
        witnessed = witnessed_checkpoints(session, verifiers, log_origin)
        # The tree's roots are wanted at the witnessed sizes too (witness_defects below).
        sizes = (*extra, *(w.size for w in witnessed))
        count, lowest, highest = session.execute(
            select(func.count(), func.min(CustodyEvent.seq), func.max(CustodyEvent.seq))
        ).one()
        parallel = workers > 1 and count >= verify.PARALLEL_MIN
        if not parallel:
            conn = session.connection()
            # Closed before the transaction ends, whatever scan_events raises (a time that
            # is not one): else the cursor is closed later, on a closed database, and
            # Python prints that on stderr after the one line of the refusal.
            empty: tuple[Sequence[Any], ...] = ()
            with contextlib.closing(_paged_rows(conn, signatures, highest) if count
                                    else (row for row in empty)) as rows:
                scan, _ = scan_events(rows, _time_reader(conn.dialect), keys, log_origin,
                                      signatures)
            tree = assemble(report, [scan], head, checkpoints, verifiers, log_origin, sizes,
                            _counted(progress, count))
    if parallel:
        url = vault.engine.url.render_as_string(hide_password=False)
        wanted = [*(c.size for c in checkpoints), *sizes]
        tasks = plan_runs(url, count, lowest, highest, wanted, keys, log_origin, signatures)
        # Imported here: multiprocessing costs every other command's start-up a few ms.
        from concurrent.futures import ProcessPoolExecutor

        try:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                tree = assemble(report, pool.map(_scan_range, tasks), head, checkpoints,
                                verifiers, log_origin, sizes, _counted(progress, count))
        except dbapi.NotATime as e:  # a worker's, named as Vault.transaction names one
            raise db.name_row(vault.engine, e) from None
    frontier, roots_at = tree
    report.witnessed = len(witnessed)
    report.defects.extend(Defect(None, m) for m in witness_defects(witnessed, roots_at))
    # The anchor in the key store: the recomputed tree must extend it (vault.service.anchor).
    report.defects.extend(
        Defect(None, m) for m in anchor.verify_messages(pinned, roots_at, frontier.size)
    )
    anchor.after_verify(vault, pinned, frontier, whole=not report.defects)
    report.defects.sort(key=lambda d: (-1 if d.seq is None else d.seq, d.message))
    return report


def _counted(progress: Progress | None, total: int) -> Callable[[int], None] | None:
    """(events so far) to ``progress`` as (events so far, events in all)."""
    if progress is None:
        return None
    return lambda done: progress(done, total)


def identity_names(session: Session) -> dict[str, str]:
    """Fingerprint -> identity name, for display."""
    out: dict[str, str] = {}
    for key in session.scalars(select(IdentityKey)):
        identity = session.get(Identity, key.identity_id)
        if identity is not None:
            out[key.fingerprint] = identity.name
    return out
