"""The custody log of a vault: append events, checkpoint, prove, and verify everything.

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
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, create_engine, func, insert, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from vault.clock import as_utc, isoformat, utcnow
from vault.crypto.keys import VerifyKey
from vault.custody.events import ACTIONS, EVENT_TYPE, EVENT_VERSION, Event
from vault.custody.merkle import (
    HASH_SIZE,
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
from vault.errors import NotFoundError, UsageError, VaultError, VerificationError
from vault.service.identities import KeyPair, acting_identity, current_key, load_keypair
from vault.service.vaults import Vault
from vault.store.models import Checkpoint as CheckpointRow
from vault.store.models import CustodyEvent, CustodyHead, Identity, IdentityKey


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
    return head


class CustodyLog:
    """Appends events within the caller's transaction; the head is updated as it goes."""

    def __init__(self, vault: Vault, session: Session) -> None:
        self._session = session
        self._origin = origin(vault)
        self._head = lock_head(session)
        self._frontier = Frontier.from_bytes(self._head.frontier)
        if self._frontier.size != self._head.size:
            raise VerificationError("custody log: head size and frontier disagree")

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
        event = Event(
            log=self._origin,
            seq=self._frontier.size,
            time=now or utcnow(),
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
        time = now or utcnow()
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
    """The key pair of the identity acting (``--as NAME``, else the default)."""
    return load_keypair(vault, current_key(acting_identity(session, name)))


# ----------------------------------------------------------------------------- reading


def event_dict(row: CustodyEvent) -> dict[str, Any]:
    """An event for display: the signed fields plus the leaf hash and signature."""
    event = Event.decode(row.body)
    return {
        **{k: v for k, v in event.to_dict().items() if k not in ("type", "v")},
        "leaf_hash": row.leaf_hash.hex(),
        "signature": base64.b64encode(row.signature).decode(),
    }


def show_subject(vault: Vault, subject: str) -> list[dict[str, Any]]:
    """Every event about ``subject`` (an item, package, case, identity or body), in order."""
    with vault.transaction() as session:
        rows = session.scalars(
            select(CustodyEvent).where(CustodyEvent.subject == subject).order_by(CustodyEvent.seq)
        ).all()
        if not rows:
            raise NotFoundError(f"{subject}: no custody events; check the id")
        return [event_dict(r) for r in rows]


# ----------------------------------------------------------------------------- checkpoints


def _signer_name(vault: Vault) -> str:
    return origin(vault)


def checkpoint_now(
    vault: Vault, session: Session, pair: KeyPair, now: datetime | None = None
) -> tuple[str, int]:
    """Sign a checkpoint of the log as it is in ``session`` and keep it; (note, tree size)."""
    head = lock_head(session)
    checkpoint = Checkpoint(origin(vault), head.size, head.root)
    note = sign_checkpoint(checkpoint, NoteSigner(_signer_name(vault), pair.signing))
    session.add(
        CheckpointRow(
            size=head.size,
            root=head.root,
            signer=pair.fingerprint,
            note=note,
            created_at=now or utcnow(),
        )
    )
    return note, head.size


def make_checkpoint(vault: Vault, as_name: str | None, *, now: datetime | None = None) -> str:
    """Sign a checkpoint of the log as it is now and keep it; return the signed note."""
    with vault.transaction() as session:
        return checkpoint_now(vault, session, actor_pair(vault, session, as_name), now)[0]


def vault_verifiers(vault: Vault, session: Session) -> list[NoteVerifier]:
    """Note verifiers for every key this vault's identities ever had."""
    keys = session.scalars(select(IdentityKey)).all()
    return [NoteVerifier.for_key(_signer_name(vault), VerifyKey(k.signing_key)) for k in keys]


def verifier_key(vault: Vault, session: Session) -> str:
    """The ``name+keyid+key`` verifier line of the default identity's current key."""
    identity = acting_identity(session, None)
    key = VerifyKey(current_key(identity).signing_key)
    return NoteVerifier.for_key(_signer_name(vault), key).vkey()


def latest_checkpoint(session: Session) -> CheckpointRow:
    """The newest checkpoint, or a NotFoundError that says how to make one."""
    row = session.scalar(select(CheckpointRow).order_by(CheckpointRow.id.desc()).limit(1))
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


def prove_subject(vault: Vault, subject: str) -> dict[str, Any]:
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
                proofs.append({"seq": row.seq, "action": row.action, "status": "after checkpoint"})
                continue
            leaf = leaf_hash(row.body)
            path = inclusion_proof(leaves, row.seq, checkpoint.size)
            verify_inclusion(leaf, row.seq, checkpoint.size, path, checkpoint.root_hash)
            proofs.append(
                {
                    "seq": row.seq,
                    "action": row.action,
                    "leaf_hash": base64.b64encode(leaf).decode(),
                    "proof": [base64.b64encode(h).decode() for h in path],
                    "status": "included",
                }
            )
        return {
            "subject": subject,
            "checkpoint": cp_row.note,
            "tree_size": checkpoint.size,
            "root_hash": base64.b64encode(checkpoint.root_hash).decode(),
            "events": proofs,
        }


def prove_consistency(vault: Vault, old_note: str, new_note: str) -> dict[str, Any]:
    """Check two signed checkpoints of this vault and prove the log only grew between them."""
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
        return {
            "old_size": old.size,
            "new_size": new.size,
            "old_root": base64.b64encode(old.root_hash).decode(),
            "new_root": base64.b64encode(new.root_hash).decode(),
            "proof": [base64.b64encode(h).decode() for h in path],
            "status": "consistent",
        }


# ----------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class Defect:
    """One thing wrong in the log; ``seq`` is None for defects of the whole log."""

    seq: int | None
    message: str

    def __str__(self) -> str:
        return f"event {self.seq}: {self.message}" if self.seq is not None else self.message


@dataclass
class LogReport:
    """What ``custody verify`` found."""

    size: int = 0
    checkpoints: int = 0
    signatures_checked: int = 0
    defects: list[Defect] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        return {
            "ok": not self.defects,
            "events": self.size,
            "checkpoints": self.checkpoints,
            "signatures_checked": self.signatures_checked,
            "defects": [{"seq": d.seq, "message": d.message} for d in self.defects],
        }


@dataclass(frozen=True)
class _KeyInfo:
    raw: bytes
    created_at: datetime
    revoked_at: datetime | None


# A log this long is read by worker processes, each a run of SCAN_CHUNK sequence numbers;
# shorter ones in this process. Parsing an event holds the GIL (and Ed25519 verification
# too), so two cores need two processes.
PARALLEL_MIN = 20_000
SCAN_CHUNK = 1 << 14

_EVENT_ROW = (
    CustodyEvent.seq,
    CustodyEvent.recorded_at,
    CustodyEvent.actor,
    CustodyEvent.action,
    CustodyEvent.subject,
    CustodyEvent.body,
    CustodyEvent.signature,
    CustodyEvent.leaf_hash,
)


@dataclass
class _Scan:
    """What one ordered pass over a run of events found (in a worker or in this process)."""

    rows: int = 0
    first: int | None = None
    last: int | None = None
    leaves: bytearray = field(default_factory=bytearray)  # recomputed leaf hashes, in order
    defects: list[tuple[int | None, str]] = field(default_factory=list)
    signatures: int = 0


def _missing(expected: int, seq: int) -> str:
    missing = f"{expected}" if seq == expected + 1 else f"{expected}-{seq - 1}"
    return f"events {missing} missing: the sequence jumps to {seq}"


# --- the fast, exact path of event parsing ---------------------------------------------------
#
# Event.decode parses an event, re-encodes it and compares the bytes (canonical form). Most of
# its cost is Python around the C JSON codec, which a log of a million events feels. The
# function below gets the same fields for the common case with the C codec alone: it accepts
# an event only when its bytes are exactly ``json.dumps(json.loads(bytes))`` with the
# canonical settings (which rules out duplicate keys and any other spelling), no float and no
# integer beyond 2**53 occurs (canonical_json refuses those), every field has the type
# Event.decode demands, the action is known and the time is in the very form isoformat()
# writes. For such bytes Event.decode would return the same fields, so anything else (a
# damaged, tampered or merely unusual event) goes to Event.decode, which reports it exactly
# as before.

_EVENT_FIELDS = frozenset(
    {"type", "v", "log", "seq", "time", "actor", "action", "subject", "details", "digests"}
)
_CANONICAL_TIME = re.compile(r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_EVENT_LIMIT = 1024 * 1024  # Event.decode's limit
_INT_LIMIT = 2**53  # canonical_json's limit


class _SlowPath(Exception):
    """The event is not plainly canonical: let Event.decode judge it."""


def _refuse(text: str) -> Any:
    raise _SlowPath


def _bounded_int(text: str) -> int:
    value = int(text)
    if abs(value) > _INT_LIMIT:
        raise _SlowPath
    return value


# Floats, NaN and Infinity have no canonical form, nor integers beyond 2**53: met, they send
# the event the slow way.
_fast_json = json.JSONDecoder(
    parse_float=_refuse, parse_int=_bounded_int, parse_constant=_refuse
)
_canonical = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def _fast_fields(body: bytes) -> tuple[str, int, datetime, str, str, str] | None:
    """(log, seq, time, actor, action, subject) of a plainly canonical event, else None."""
    if len(body) > _EVENT_LIMIT:
        return None
    try:
        text = body.decode("utf-8")
        obj, end = _fast_json.raw_decode(text)
        if end != len(text) or type(obj) is not dict or obj.keys() != _EVENT_FIELDS:
            return None
        log, seq, time, actor = obj["log"], obj["seq"], obj["time"], obj["actor"]
        action, subject, v = obj["action"], obj["subject"], obj["v"]
        if not (
            obj["type"] == EVENT_TYPE
            and type(v) is int
            and v == EVENT_VERSION
            and type(seq) is int
            and seq >= 0
            and type(log) is str
            and type(actor) is str
            and type(subject) is str
            and type(action) is str
            and action in ACTIONS
            and type(time) is str
            and _CANONICAL_TIME.fullmatch(time)
            and type(obj["details"]) is dict
            and type(obj["digests"]) is dict
            and all(type(d) is str for d in obj["digests"].values())
        ):
            return None
        if _canonical(obj).encode("utf-8") != body:
            return None
        when = datetime.fromisoformat(time[:-1] + "+00:00")
    except (_SlowPath, ValueError, RecursionError):
        return None
    return log, seq, when, actor, action, subject


def _scan(
    rows: Iterable[Sequence[Any]],
    keys: dict[str, _KeyInfo],
    log_origin: str,
    signatures: bool,
) -> _Scan:
    """Check each event of ``rows`` (in seq order) on its own; the tree is the caller's."""
    out = _Scan()
    defects = out.defects
    verifiers: dict[bytes, VerifyKey] = {}
    expected = -1
    for seq, recorded_at, actor, action, subject, body, signature, stored_leaf in rows:
        if out.first is None:
            out.first = seq
        elif seq != expected:
            defects.append((None, _missing(expected, seq)))
        expected = seq + 1
        leaf = leaf_hash(body)
        out.leaves += leaf
        out.rows += 1
        if leaf != stored_leaf:
            defects.append((seq, "stored leaf hash does not match the event's bytes"))
        fields = _fast_fields(body)
        if fields is None:
            try:
                event = Event.decode(body)
            except VerificationError as e:
                defects.append((seq, str(e)))
                continue
            fields = (event.log, event.seq, event.time, event.actor, event.action, event.subject)
        e_log, e_seq, e_time, e_actor, e_action, e_subject = fields
        stored_time = as_utc(recorded_at)
        if (seq, stored_time, actor, action, subject) != fields[1:]:
            mismatched = [
                name
                for name, stored, signed in (
                    ("seq", seq, e_seq),
                    ("time", stored_time, e_time),
                    ("actor", actor, e_actor),
                    ("action", action, e_action),
                    ("subject", subject, e_subject),
                )
                if stored != signed
            ]
            defects.append((seq, f"stored {', '.join(mismatched)} differ from the signed event"))
        if e_log != log_origin:
            defects.append((seq, f"belongs to another log ({e_log})"))
        key = keys.get(e_actor)
        if key is None:
            defects.append((seq, f"actor {e_actor} is not a key of this vault"))
            continue
        if e_time < key.created_at:
            defects.append((seq, "dated before its actor's key was created"))
        if key.revoked_at is not None and e_time > key.revoked_at:
            defects.append(
                (seq, f"signed after its key was revoked ({isoformat(key.revoked_at)})")
            )
        if signatures:
            verifier = verifiers.get(key.raw)
            if verifier is None:
                verifier = verifiers[key.raw] = VerifyKey(key.raw)
            try:
                verifier.verify(signature, body)
            except VaultError:
                defects.append((seq, "signature does not verify"))
            out.signatures += 1
    out.last = expected - 1 if out.first is not None else None
    return out


_READERS: dict[str, Engine] = {}


def _scan_range(task: tuple[str, int, int, dict[str, _KeyInfo], str, bool]) -> _Scan:
    """Worker process: read events ``lo <= seq < hi`` over a connection of its own, scan them.

    One plain SELECT, no write lock: each run is read as one consistent snapshot, and the
    log only ever grows at its end, beyond the runs asked for.
    """
    url, lo, hi, keys, log_origin, signatures = task
    engine = _READERS.get(url)
    if engine is None:
        engine = _READERS[url] = create_engine(url, poolclass=NullPool)
    with engine.connect() as conn:
        rows = conn.execute(
            select(*_EVENT_ROW)
            .where(CustodyEvent.seq >= lo, CustodyEvent.seq < hi)
            .order_by(CustodyEvent.seq)
        )
        return _scan(rows, keys, log_origin, signatures)


def verify_log(vault: Vault, *, signatures: bool = True, workers: int = 2) -> LogReport:
    """Re-derive everything and list every defect: leaves, fields, sequence, tree, checkpoints,
    and (unless ``signatures`` is False) every signature.

    A long log is read by ``workers`` processes in runs of sequence numbers, each checking
    its events (and their signatures); this process puts the recomputed leaves together into
    the tree, in order, and checks the head and the checkpoints against it.
    """
    report = LogReport()
    log_origin = origin(vault)
    with vault.transaction() as session:
        keys = {
            k.fingerprint: _KeyInfo(
                k.signing_key, as_utc(k.created_at), as_utc(k.revoked_at) if k.revoked_at else None
            )
            for k in session.scalars(select(IdentityKey))
        }
        checkpoints = session.scalars(select(CheckpointRow).order_by(CheckpointRow.id)).all()
        head = session.get(CustodyHead, 1)
        verifiers = vault_verifiers(vault, session)
        count, lowest, highest = session.execute(
            select(func.count(), func.min(CustodyEvent.seq), func.max(CustodyEvent.seq))
        ).one()
        if workers <= 1 or count < PARALLEL_MIN:
            result = session.execute(
                select(*_EVENT_ROW).order_by(CustodyEvent.seq).execution_options(yield_per=20_000)
            )
            scans: Iterable[_Scan] = [_scan(result, keys, log_origin, signatures)]
            _assemble(report, scans, head, checkpoints, verifiers, log_origin)
    if not (workers <= 1 or count < PARALLEL_MIN):
        url = vault.engine.url.render_as_string(hide_password=False)
        tasks = [(url, lo, min(lo + SCAN_CHUNK, highest + 1), keys, log_origin, signatures)
                 for lo in range(lowest, highest + 1, SCAN_CHUNK)]
        # Imported here: multiprocessing costs every other command's start-up a few ms.
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            _assemble(report, pool.map(_scan_range, tasks), head, checkpoints, verifiers,
                      log_origin)
    report.defects.sort(key=lambda d: (-1 if d.seq is None else d.seq, d.message))
    return report


def _assemble(
    report: LogReport,
    scans: Iterable[_Scan],
    head: CustodyHead | None,
    checkpoints: Sequence[CheckpointRow],
    verifiers: Sequence[NoteVerifier],
    log_origin: str,
) -> None:
    """Join the runs in order: the gaps between them, the tree, its head and checkpoints."""
    wanted_sizes = {c.size for c in checkpoints}
    roots_at: dict[int, bytes] = {}
    frontier = Frontier()
    if 0 in wanted_sizes:
        roots_at[0] = frontier.root()
    expected = 0
    for scan in scans:
        if scan.first is None or scan.last is None:
            continue
        if scan.first != expected:
            report.defects.append(Defect(None, _missing(expected, scan.first)))
        expected = scan.last + 1
        report.defects.extend(Defect(seq, message) for seq, message in scan.defects)
        report.size += scan.rows
        report.signatures_checked += scan.signatures
        leaves = memoryview(scan.leaves)
        append = frontier.append
        if wanted_sizes:
            for i in range(0, len(leaves), HASH_SIZE):
                append(leaves[i : i + HASH_SIZE].tobytes())
                if frontier.size in wanted_sizes:
                    roots_at[frontier.size] = frontier.root()
        else:
            for i in range(0, len(leaves), HASH_SIZE):
                append(leaves[i : i + HASH_SIZE].tobytes())
    _check_head(report, head, frontier)
    report.checkpoints = len(checkpoints)
    for cp in checkpoints:
        _check_checkpoint(report, cp, roots_at, verifiers, log_origin)


def _check_head(report: LogReport, head: CustodyHead | None, frontier: Frontier) -> None:
    if head is None:
        report.defects.append(Defect(None, "the log head row is missing"))
        return
    if head.size != frontier.size:
        report.defects.append(
            Defect(None, f"log head says {head.size} events, the log has {frontier.size}")
        )
    elif head.root != frontier.root():
        report.defects.append(Defect(None, "log head root differs from the recomputed tree"))
    elif head.frontier != frontier.to_bytes():
        report.defects.append(Defect(None, "log head frontier differs from the recomputed tree"))


def _check_checkpoint(
    report: LogReport,
    cp: CheckpointRow,
    roots_at: dict[int, bytes],
    verifiers: Sequence[NoteVerifier],
    log_origin: str,
) -> None:
    where = f"checkpoint {cp.id} (size {cp.size})"
    try:
        checkpoint, _ = open_checkpoint(cp.note, verifiers)
    except VerificationError as e:
        report.defects.append(Defect(None, f"{where}: {e}"))
        return
    if (checkpoint.origin, checkpoint.size, checkpoint.root_hash) != (log_origin, cp.size, cp.root):
        report.defects.append(Defect(None, f"{where}: stored fields differ from the signed note"))
    root = roots_at.get(cp.size)
    if root is None:
        report.defects.append(Defect(None, f"{where}: the log is shorter than the checkpoint"))
    elif root != checkpoint.root_hash:
        report.defects.append(
            Defect(None, f"{where}: root differs from the recomputed tree; history was rewritten")
        )


def identity_names(session: Session) -> dict[str, str]:
    """Fingerprint -> identity name, for display."""
    out: dict[str, str] = {}
    for key in session.scalars(select(IdentityKey)):
        identity = session.get(Identity, key.identity_id)
        if identity is not None:
            out[key.fingerprint] = identity.name
    return out
