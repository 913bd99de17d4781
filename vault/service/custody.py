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
import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Dialect,
    Engine,
    create_engine,
    func,
    insert,
    null,
    select,
)
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from vault.clock import as_utc, isoformat, parse_iso, utcnow
from vault.crypto.keys import VerifyKey
from vault.custody.events import ACTIONS, EVENT_TYPE, EVENT_VERSION, Event
from vault.custody.merkle import (
    HASH_SIZE,
    Frontier,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    range_roots,
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
from vault.service import anchor, keyhistory
from vault.service.identities import KeyPair, acting_identity, current_key, load_keypair
from vault.service.progress import Progress
from vault.service.vaults import Vault
from vault.service.witness import Witnessed, witness_defects, witnessed_checkpoints
from vault.store import db
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
    """The key pair of the identity acting (``--as NAME``, else the default); its rows must
    agree with the signed key history (a revocation cleared in the table does not count)."""
    key = current_key(acting_identity(session, name))
    keyhistory.check_actor(vault, session, key)
    return load_keypair(vault, key)


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
    anchor.guard(vault, session, head)
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
    witnessed: int = 0
    signatures_checked: int = 0
    defects: list[Defect] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        return {
            "ok": not self.defects,
            "events": self.size,
            "checkpoints": self.checkpoints,
            "witnessed": self.witnessed,
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
# too), so two cores need two processes. A run starts on a multiple of SCAN_CHUNK, a power
# of two, so a worker can hand back its run's tree as the roots of a few perfect subtrees.
PARALLEL_MIN = 20_000
SCAN_CHUNK = 1 << 14


@dataclass
class _Scan:
    """What one ordered pass over a run of events found (in a worker or in this process)."""

    rows: int = 0
    first: int | None = None
    last: int | None = None
    leaves: bytes = b""  # recomputed leaf hashes, in order
    defects: list[tuple[int | None, str]] = field(default_factory=list)
    signatures: int = 0
    # Set by a worker whose run starts at leaf ``lo`` of an aligned tree: the run's leaves as
    # the roots of their compact range, and the same for each checkpoint size inside the run.
    lo: int | None = None
    roots: list[bytes] = field(default_factory=list)
    inside: dict[int, list[bytes]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Run:
    """A worker's task: the events ``lo <= seq < hi`` of the log at ``url``."""

    url: str
    lo: int
    hi: int
    keys: dict[str, _KeyInfo]
    log_origin: str
    signatures: bool
    sizes: tuple[int, ...]  # checkpoint sizes with lo < size < hi
    summarise: bool  # an aligned run of at most SCAN_CHUNK: return its subtree roots


def _missing(expected: int, seq: int) -> str:
    missing = f"{expected}" if seq == expected + 1 else f"{expected}-{seq - 1}"
    return f"events {missing} missing: the sequence jumps to {seq}"


# --- reading -----------------------------------------------------------------------------
#
# A million events are read with vault.store.db.raw_rows (plain DBAPI tuples); the one column
# whose type needs converting, the time, repeats from event to event and is converted once
# per distinct value.


def _event_columns(signatures: bool) -> list[Any]:
    """The columns ``_scan`` unpacks; the signature only when it is to be checked."""
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
) -> Iterator[Sequence[Any]]:
    """The events matching ``where`` in seq order, as the DBAPI gives them; the time (column
    1) is left to _scan's reader (see _time_reader)."""
    stmt = select(*_event_columns(signatures)).where(*where).order_by(CustodyEvent.seq)
    return db.raw_rows(conn, stmt.limit(limit), unconverted={1})


def _paged_rows(conn: Connection, signatures: bool, highest: int) -> Iterator[Sequence[Any]]:
    """Every event up to seq ``highest`` in seq order, SCAN_CHUNK at a time (flat memory on
    any driver). Bounded as counted, so that events appended meanwhile stay out, as they
    would from one SELECT.
    """
    where: list[Any] = [CustodyEvent.seq <= highest]
    while True:
        count = 0
        for row in _raw_rows(conn, signatures, *where, limit=SCAN_CHUNK):
            count += 1
            yield row
        if count < SCAN_CHUNK:
            return
        where = [CustodyEvent.seq > row[0], CustodyEvent.seq <= highest]


def _time_reader(dialect: Dialect) -> Callable[[Any], datetime]:
    """Raw stored time -> the UTC datetime the ORM would give (SQLite stores text)."""
    process = db.column_reader(CustodyEvent.__table__.c.recorded_at, dialect)
    return lambda raw: as_utc(process(raw))


# --- the fast, exact path of event parsing ---------------------------------------------------
#
# Event.decode parses an event, re-encodes it and compares the bytes (canonical form). Most of
# its cost is Python around the C JSON codec, which a log of a million events feels. Two
# faster paths return the same fields for the events they accept, and pass everything else
# (a damaged, tampered or merely unusual event) on to Event.decode, which reports it exactly
# as before.
#
# The fastest, _PlainEvents, needs no JSON parser: it accepts an event only when its bytes are
# exactly the canonical event that its own row describes (seq, time, actor, action, subject
# as stored, this log's name), with every string free of anything JSON escapes and a
# `details` and `digests` that a strict grammar of canonical JSON matches whole (objects of
# scalars and flat lists, keys strictly ascending, integers below 10**15). Such bytes are
# what canonical_json writes for that event, so Event.decode would accept them with the
# row's own fields: nothing is left to compare.
#
# The second, _fast_fields, takes what the first leaves (escapes, nested details, a row that
# disagrees with its event): it accepts an event only when its bytes are exactly
# ``json.dumps(json.loads(bytes))`` with the canonical settings (which rules out duplicate
# keys and any other spelling), no float and no integer beyond 2**53 occurs (canonical_json
# refuses those), every field has the type Event.decode demands, the action is known and
# the time is in the very form isoformat() writes.

_EVENT_FIELDS = frozenset(
    {"type", "v", "log", "seq", "time", "actor", "action", "subject", "details", "digests"}
)
_CANONICAL_TIME = re.compile(r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_EVENT_LIMIT = 1024 * 1024  # Event.decode's limit
_INT_LIMIT = 2**53  # canonical_json's limit

# A JSON string's text that json.dumps(ensure_ascii=False) writes unescaped: no quote, no
# backslash, no control character (everything else, non-ASCII included, goes out as is).
# Possessive: a string's text ends at its quote, there is nothing to backtrack into.
_PLAIN_TEXT = r'[^"\\\x00-\x1f]*+'
_PLAIN = re.compile(_PLAIN_TEXT)
# Canonical integers of at most 15 digits (below 10**15, so well within 2**53): no sign on
# zero, no leading zero.
_SMALL_INT = r"(?:0|-?[1-9][0-9]{0,14}+)"
_SCALAR = rf'(?:"{_PLAIN_TEXT}"|{_SMALL_INT}|true|false|null)'
_FLAT_VALUE = rf"(?:{_SCALAR}|\[(?:{_SCALAR}(?:,{_SCALAR})*+)?\])"
_DIGEST_VALUE = f'"{_PLAIN_TEXT}"'
_DETAILS_KEYS = 16
_DIGESTS_KEYS = 8


def _object_pattern(value: str, keys: int) -> str:
    """A canonical JSON object of up to ``keys`` members, each key captured in order."""
    members = f'"({_PLAIN_TEXT})":{value}'
    for _ in range(keys - 1):
        members = f'"({_PLAIN_TEXT})":{value}(?:,{members})?'
    return rf"\{{(?:{members})?\}}"


@functools.cache
def _middle() -> re.Pattern[str]:
    """What lies between `"details":` and `,"log":` in a plain event, whatever its keys:
    groups 1-16 are the keys of details, 17-24 those of digests, to be checked for order.
    Compiled on first use (~12 ms): every command that logs imports this module, only
    verify needs it."""
    return re.compile(
        _object_pattern(_FLAT_VALUE, _DETAILS_KEYS)
        + ',"digests":'
        + _object_pattern(_DIGEST_VALUE, _DIGESTS_KEYS)
    )


_SHAPES_PER_SCAN = 64
_TAIL_END = f'","type":"{EVENT_TYPE}","v":{EVENT_VERSION}}}'


@functools.lru_cache(maxsize=256)
def _shape(details: tuple[str, ...], digests: tuple[str, ...]) -> re.Pattern[str]:
    """The same as _middle() for exactly these keys (already known ascending), spelled out.

    Matching literal keys is several times cheaper than capturing and comparing them, and
    the events of one action nearly always carry the same keys.
    """

    def members(keys: tuple[str, ...], value: str) -> str:
        return ",".join(f'"{re.escape(key)}":{value}' for key in keys)

    return re.compile(
        rf"\{{{members(details, _FLAT_VALUE)}\}},"
        rf'"digests":\{{{members(digests, _DIGEST_VALUE)}\}}'
    )


def _ascending(keys: Sequence[str | None]) -> bool:
    """Captured keys (None after the last) strictly ascending: sorted, and no duplicate."""
    previous = keys[0]
    if previous is None:
        return True
    for key in keys[1:]:
        if key is None:
            return True
        if key <= previous:
            return False
        previous = key
    return True


def _signed_time(when: datetime) -> str | None:
    """The time text a canonical event stored at ``when`` carries, or None if none can."""
    if when.microsecond or when.year < 1000:
        return None
    text = isoformat(when)
    if not _CANONICAL_TIME.fullmatch(text) or parse_iso(text) != when:
        return None
    return text


class _PlainEvents:
    """Recognises, for one scan, the events whose bytes are exactly the canonical event their
    row describes (see above), and learns the key shapes of details and digests it meets.
    """

    def __init__(self, log_origin: str, actors: Iterable[str]) -> None:
        # The log's name and the actors are checked free of escapes once, not per event: an
        # event of an actor outside these (or of a log whose name needs escapes) is not plain.
        plain_origin = _PLAIN.fullmatch(log_origin) is not None
        self._actors = frozenset(a for a in actors if _PLAIN.fullmatch(a)) if plain_origin else ()
        self._log_seq = f',"log":"{log_origin}","seq":'
        self._shapes: dict[str, re.Pattern[str]] = {}  # action -> its last shape
        self._learned = 0

    def match(self, body: bytes, seq: int, actor: str, action: str, subject: str,
              when: str | None) -> bool:
        """True if ``body`` is the canonical event of this row; ``when`` is the stored time
        as :func:`_signed_time` writes it.
        """
        if not (
            when is not None
            and len(body) <= _EVENT_LIMIT
            and 0 <= seq <= _INT_LIMIT
            and action in ACTIONS
            and actor in self._actors
            # Printable has no control character; a quote or backslash would need escaping.
            and type(subject) is str
            and subject.isprintable()
            and '"' not in subject
            and "\\" not in subject
        ):
            return False
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return False
        head = f'{{"action":"{action}","actor":"{actor}","details":'
        tail = f'{self._log_seq}{seq},"subject":"{subject}","time":"{when}{_TAIL_END}'
        if not (text.startswith(head) and text.endswith(tail)):
            return False
        start, end = len(head), len(text) - len(tail)
        shape = self._shapes.get(action)
        if shape is not None and shape.fullmatch(text, start, end):
            return True
        middle = _middle().fullmatch(text, start, end)
        if middle is None:
            return False
        keys = middle.groups()
        details, digests = keys[:_DETAILS_KEYS], keys[_DETAILS_KEYS:]
        if not (_ascending(details) and _ascending(digests)):
            return False
        if self._learned < _SHAPES_PER_SCAN:
            self._learned += 1
            self._shapes[action] = _shape(
                tuple(k for k in details if k is not None),
                tuple(k for k in digests if k is not None),
            )
        return True


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


def _event_defects(
    seq: int, stored: tuple[datetime, str, str, str], body: bytes, log_origin: str,
    defects: list[tuple[int | None, str]],
) -> tuple[str, datetime] | None:
    """Parse an event the careful way and compare it with its row: (actor, time) if it
    parsed. ``stored`` is the row's (time, actor, action, subject).
    """
    fields = _fast_fields(body)
    if fields is None:
        try:
            event = Event.decode(body)
        except VerificationError as e:
            defects.append((seq, str(e)))
            return None
        fields = (event.log, event.seq, event.time, event.actor, event.action, event.subject)
    e_log, e_seq, e_time, e_actor, e_action, e_subject = fields
    stored_time, actor, action, subject = stored
    if (seq, stored_time, actor, action, subject) != fields[1:]:
        mismatched = [
            name
            for name, value, signed in (
                ("seq", seq, e_seq),
                ("time", stored_time, e_time),
                ("actor", actor, e_actor),
                ("action", action, e_action),
                ("subject", subject, e_subject),
            )
            if value != signed
        ]
        defects.append((seq, f"stored {', '.join(mismatched)} differ from the signed event"))
    if e_log != log_origin:
        defects.append((seq, f"belongs to another log ({e_log})"))
    return e_actor, e_time


def _scan(
    rows: Iterable[Sequence[Any]],
    read_time: Callable[[Any], datetime],
    keys: dict[str, _KeyInfo],
    log_origin: str,
    signatures: bool,
) -> tuple[_Scan, list[bytes]]:
    """Check each event of ``rows`` (in seq order) on its own; the tree is the caller's.

    Rows are (seq, raw time, actor, action, subject, body, signature, leaf hash); the
    recomputed leaf hashes come back beside the scan, in order.
    """
    out = _Scan()
    defects = out.defects
    leaves: list[bytes] = []
    add_leaf = leaves.append
    sha256 = hashlib.sha256  # leaf_hash, inlined: a million calls
    verifiers: dict[bytes, VerifyKey] = {}
    plain = _PlainEvents(log_origin, keys).match
    raw_time: Any = None
    stored_time = when = None
    first: int | None = None
    expected = -1
    for seq, recorded_at, actor, action, subject, body, signature, stored_leaf in rows:
        if first is None:
            first = seq
        elif seq != expected:
            defects.append((None, _missing(expected, seq)))
        expected = seq + 1
        leaf = sha256(b"\x00" + body).digest()
        add_leaf(leaf)
        if leaf != stored_leaf:
            defects.append((seq, "stored leaf hash does not match the event's bytes"))
        if stored_time is None or recorded_at != raw_time:
            # Times repeat (whole seconds, batches): convert each distinct one once.
            raw_time = recorded_at
            stored_time = read_time(recorded_at)
            when = _signed_time(stored_time)
        e_actor: str = actor
        e_time: datetime = stored_time
        if not plain(body, seq, actor, action, subject, when):
            parsed = _event_defects(
                seq, (stored_time, actor, action, subject), body, log_origin, defects
            )
            if parsed is None:
                continue
            e_actor, e_time = parsed
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
    out.first = first
    out.last = expected - 1 if first is not None else None
    out.rows = len(leaves)
    out.leaves = b"".join(leaves)
    return out, leaves


_READERS: dict[str, Engine] = {}


def _scan_range(run: _Run) -> _Scan:
    """Worker process: read events ``lo <= seq < hi`` over a connection of its own, scan them.

    One plain SELECT, no write lock: each run is read as one consistent snapshot, and the
    log only ever grows at its end, beyond the runs asked for. An aligned run also comes
    back as the roots of its compact range (and of each checkpoint size inside it), so that
    this process need not hash its leaves again.
    """
    engine = _READERS.get(run.url)
    if engine is None:
        engine = _READERS[run.url] = create_engine(run.url, poolclass=NullPool)
    with engine.connect() as conn:
        rows = _raw_rows(
            conn, run.signatures, CustodyEvent.seq >= run.lo, CustodyEvent.seq < run.hi
        )
        read_time = _time_reader(conn.dialect)
        scan, leaves = _scan(rows, read_time, run.keys, run.log_origin, run.signatures)
    if run.summarise and leaves:
        inside = {size - run.lo for size in run.sizes if size - run.lo < len(leaves)}
        roots = range_roots(leaves, {len(leaves), *inside})
        scan.lo = run.lo
        scan.roots = roots[len(leaves)]
        scan.inside = {run.lo + m: roots[m] for m in inside}
    return scan


def _runs(
    url: str, count: int, lowest: int, highest: int, wanted: Iterable[int],
    keys: dict[str, _KeyInfo], log_origin: str, signatures: bool,
) -> list[_Run]:
    """The workers' tasks: aligned runs of SCAN_CHUNK seqs over the log's ``count`` events.

    Runs start on multiples of SCAN_CHUNK. A log whose seqs reach far beyond its count (a
    tampered row with a huge seq) gets one last open run for the rest instead of millions of
    empty ones.
    """
    start = lowest - lowest % SCAN_CHUNK
    stop = min(highest + 1, start + -(-(count + lowest - start) // SCAN_CHUNK) * SCAN_CHUNK)
    bounds = [(lo, min(lo + SCAN_CHUNK, stop)) for lo in range(start, stop, SCAN_CHUNK)]
    if stop <= highest:
        bounds.append((stop, highest + 1))
    sizes = sorted(set(wanted))
    aligned = SCAN_CHUNK & (SCAN_CHUNK - 1) == 0  # subtrees line up only for a power of two
    return [
        _Run(url, lo, hi, keys, log_origin, signatures,
             tuple(s for s in sizes if lo < s < hi), aligned and hi - lo <= SCAN_CHUNK)
        for lo, hi in bounds
    ]


def _rules_defects(vault: Vault, session: Session) -> list[Defect]:
    """A defect if config.toml's release rules are not those of the newest rule.changed."""
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
    report = LogReport()
    log_origin = origin(vault)
    history_anchor = keyhistory.ensure_anchor(vault)
    # The key store's anchor, read before the log: writers move it only after they commit,
    # so the log read afterwards cannot be older than it in honest use.
    pinned = anchor.load(vault)
    extra = () if pinned is None else (pinned.size,)
    with vault.transaction() as session:
        # The identity keys come from the signed key history, not from the table; every
        # row of the key tables that differs from that history is a defect.
        trust = keyhistory.audit(vault, session, history_anchor)
        report.defects.extend(Defect(seq, message) for seq, message in trust.defects)
        keys = {fp: _KeyInfo(k.raw, k.created_at, k.revoked_at) for fp, k in trust.keys.items()}
        checkpoints = session.scalars(select(CheckpointRow).order_by(CheckpointRow.id)).all()
        head = session.get(CustodyHead, 1)
        verifiers = [NoteVerifier.for_key(_signer_name(vault), VerifyKey(k.raw))
                     for k in keys.values()]
        report.defects += _rules_defects(vault, session)
        witnessed = witnessed_checkpoints(session, verifiers, log_origin)
        count, lowest, highest = session.execute(
            select(func.count(), func.min(CustodyEvent.seq), func.max(CustodyEvent.seq))
        ).one()
        parallel = workers > 1 and count >= PARALLEL_MIN
        if not parallel:
            conn = session.connection()
            rows = _paged_rows(conn, signatures, highest) if count else iter(())
            scan, _ = _scan(rows, _time_reader(conn.dialect), keys, log_origin, signatures)
            tree = _assemble(report, [scan], head, checkpoints, verifiers, log_origin, extra,
                             _counted(progress, count), witnessed=witnessed)
    if parallel:
        url = vault.engine.url.render_as_string(hide_password=False)
        sizes = [*(c.size for c in checkpoints), *extra, *(w.size for w in witnessed)]
        tasks = _runs(url, count, lowest, highest, sizes, keys, log_origin, signatures)
        # Imported here: multiprocessing costs every other command's start-up a few ms.
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            tree = _assemble(report, pool.map(_scan_range, tasks), head, checkpoints,
                             verifiers, log_origin, extra, _counted(progress, count),
                             witnessed=witnessed)
    # The anchor in the key store: the recomputed tree must extend it (vault.service.anchor).
    frontier, roots_at = tree
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


def _assemble(
    report: LogReport,
    scans: Iterable[_Scan],
    head: CustodyHead | None,
    checkpoints: Sequence[CheckpointRow],
    verifiers: Sequence[NoteVerifier],
    log_origin: str,
    extra_sizes: Iterable[int] = (),
    checked: Callable[[int], None] | None = None,
    *,
    witnessed: Sequence[Witnessed] = (),
) -> tuple[Frontier, dict[int, bytes]]:
    """Join the runs in order: the gaps between them, the tree, its head and checkpoints,
    and the checkpoints bodies witnessed; ``checked`` gets the events put together so far
    after each run.

    Returns the tree and its roots at the checkpoints' and witnessed sizes and at
    ``extra_sizes``.
    """
    wanted_sizes = ({c.size for c in checkpoints} | {w.size for w in witnessed}
                    | set(extra_sizes))
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
        if checked:
            checked(report.size)
        if scan.lo is not None and scan.lo == frontier.size:
            _add_summary(frontier, scan, scan.lo, roots_at)
        else:
            _add_leaves(frontier, scan.leaves, wanted_sizes, roots_at)
        if frontier.size in wanted_sizes:
            roots_at[frontier.size] = frontier.root()
    _check_head(report, head, frontier)
    report.checkpoints = len(checkpoints)
    for cp in checkpoints:
        _check_checkpoint(report, cp, roots_at, verifiers, log_origin)
    report.witnessed = len(witnessed)
    report.defects.extend(Defect(None, m) for m in witness_defects(witnessed, roots_at))
    return frontier, roots_at


def _add_summary(frontier: Frontier, scan: _Scan, lo: int, roots_at: dict[int, bytes]) -> None:
    """A run whose first leaf is the tree's next: its subtree roots instead of its leaves.

    The tree's size is then the run's start, a multiple of SCAN_CHUNK, so every subtree of
    the run starts on its own boundary; a checkpoint inside the run is the tree so far plus
    that prefix of the run.
    """
    for size, roots in scan.inside.items():
        prefix = frontier.copy()
        prefix.append_range(roots, size - lo)
        roots_at[size] = prefix.root()
    frontier.append_range(scan.roots, scan.rows)


def _add_leaves(
    frontier: Frontier, leaves: bytes, wanted_sizes: set[int], roots_at: dict[int, bytes]
) -> None:
    """A run that does not line up with the tree (after a gap, or read in this process):
    leaf by leaf, noting the root at every checkpoint size passed.
    """
    view = memoryview(leaves)
    append = frontier.append
    if wanted_sizes:
        for i in range(0, len(view), HASH_SIZE):
            append(view[i : i + HASH_SIZE].tobytes())
            if frontier.size in wanted_sizes:
                roots_at[frontier.size] = frontier.root()
    else:
        for i in range(0, len(view), HASH_SIZE):
            append(view[i : i + HASH_SIZE].tobytes())


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
