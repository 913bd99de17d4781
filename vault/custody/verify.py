"""Verify a custody log from what it is given: one job, the checks of ``custody verify``.

    >>> scan, _ = scan_events(rows, read_time, keys, log_origin, True)   # doctest: +SKIP
    >>> report = LogReport()                                              # doctest: +SKIP
    >>> assemble(report, [scan], head, checkpoints, verifiers, log_origin)  # doctest: +SKIP
    >>> [d.message for d in report.defects]                               # doctest: +SKIP
    []

Each event row is checked on its own (:func:`scan_events`: leaf hash, fields against the
signed bytes, sequence, key and its dates, signature), by the exact fast path of event
parsing below or by :meth:`vault.custody.events.Event.decode`; :func:`assemble` puts runs
of them together into the RFC 9162 tree, in order, and checks the head and the
checkpoints against it. A long log is split into aligned runs (:func:`plan_runs`) that
worker processes read and scan (:func:`scan_run`).

Reading is the caller's (:mod:`vault.service.custody`): rows, keys (from the signed key
history), the head and checkpoint records and the note verifiers come in as arguments.
This module may import vault.custody, vault.crypto, vault.clock and vault.errors; not
vault.service, vault.store or SQLAlchemy.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from vault.clock import isoformat, parse_iso
from vault.crypto.keys import VerifyKey
from vault.custody.events import ACTIONS, EVENT_TYPE, EVENT_VERSION, Event
from vault.custody.merkle import HASH_SIZE, Frontier, range_roots
from vault.custody.note import NoteVerifier, open_checkpoint
from vault.errors import VaultError, VerificationError


class HeadRecord(Protocol):
    """The log's head as stored (vault.store.models.CustodyHead has these)."""

    @property
    def size(self) -> int: ...
    @property
    def root(self) -> bytes: ...
    @property
    def frontier(self) -> bytes: ...


class CheckpointRecord(Protocol):
    """A kept checkpoint as stored (vault.store.models.SignedCheckpoint has these)."""

    @property
    def id(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def root(self) -> bytes: ...
    @property
    def note(self) -> str: ...


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
class KeyInfo:
    """An identity key as the signed key history has it: raw Ed25519 key and its dates."""

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
class Scan:
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
class Run:
    """A worker's task: the events ``lo <= seq < hi`` of the log at ``url``."""

    url: str
    lo: int
    hi: int
    keys: dict[str, KeyInfo]
    log_origin: str
    signatures: bool
    sizes: tuple[int, ...]  # checkpoint sizes with lo < size < hi
    summarise: bool  # an aligned run of at most SCAN_CHUNK: return its subtree roots


def _missing(expected: int, seq: int) -> str:
    missing = f"{expected}" if seq == expected + 1 else f"{expected}-{seq - 1}"
    return f"events {missing} missing: the sequence jumps to {seq}"


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
    Compiled on first use (~12 ms): only a scan needs it."""
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


def scan_events(
    rows: Iterable[Sequence[Any]],
    read_time: Callable[[Any], datetime],
    keys: dict[str, KeyInfo],
    log_origin: str,
    signatures: bool,
) -> tuple[Scan, list[bytes]]:
    """Check each event of ``rows`` (in seq order) on its own; the tree is the caller's.

    Rows are (seq, raw time, actor, action, subject, body, signature, leaf hash); the
    recomputed leaf hashes come back beside the scan, in order.
    """
    out = Scan()
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


def scan_run(run: Run, rows: Iterable[Sequence[Any]], read_time: Callable[[Any], datetime]
             ) -> Scan:
    """A worker's run: scan its ``rows`` (the events ``lo <= seq < hi``, as the worker read
    them); an aligned run also comes back as the roots of its compact range (and of each
    checkpoint size inside it), so that the assembling process need not hash its leaves
    again.
    """
    scan, leaves = scan_events(rows, read_time, run.keys, run.log_origin, run.signatures)
    if run.summarise and leaves:
        inside = {size - run.lo for size in run.sizes if size - run.lo < len(leaves)}
        roots = range_roots(leaves, {len(leaves), *inside})
        scan.lo = run.lo
        scan.roots = roots[len(leaves)]
        scan.inside = {run.lo + m: roots[m] for m in inside}
    return scan


def plan_runs(
    url: str, count: int, lowest: int, highest: int, wanted: Iterable[int],
    keys: dict[str, KeyInfo], log_origin: str, signatures: bool,
) -> list[Run]:
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
        Run(url, lo, hi, keys, log_origin, signatures,
            tuple(s for s in sizes if lo < s < hi), aligned and hi - lo <= SCAN_CHUNK)
        for lo, hi in bounds
    ]


def assemble(
    report: LogReport,
    scans: Iterable[Scan],
    head: HeadRecord | None,
    checkpoints: Sequence[CheckpointRecord],
    verifiers: Sequence[NoteVerifier],
    log_origin: str,
    extra_sizes: Iterable[int] = (),
    checked: Callable[[int], None] | None = None,
) -> tuple[Frontier, dict[int, bytes]]:
    """Join the runs in order: the gaps between them, the tree, its head and checkpoints;
    ``checked`` gets the events put together so far after each run.

    Returns the tree and its roots at the checkpoints' sizes and at ``extra_sizes`` (the
    caller's: the anchor's, the witnessed checkpoints').
    """
    wanted_sizes = {c.size for c in checkpoints} | set(extra_sizes)
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
    return frontier, roots_at


def _add_summary(frontier: Frontier, scan: Scan, lo: int, roots_at: dict[int, bytes]) -> None:
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


def _check_head(report: LogReport, head: HeadRecord | None, frontier: Frontier) -> None:
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
    cp: CheckpointRecord,
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
