"""The vault's anchor against rollback and truncation of its custody log.

    >>> with vault.transaction() as session:             # doctest: +SKIP
    ...     guard(vault, session, lock_head(session))    # exit 3 unless the log extends it

The key store keeps, under ``trust:checkpoint``, the newest head of the log this vault
signed: its size, root and Merkle frontier (inside the authenticated seal of ``keys.enc``, or
an entry of its own in the OS keyring). Someone who holds only the database, or a backup of
it, cannot change that entry, so deleting the newest events and recomputing ``custody_head``,
or putting back an older copy of the whole database, leaves a log that no longer extends it.

- Every writer of the log (:class:`vault.service.custody.CustodyLog`, and
  :func:`~vault.service.custody.checkpoint_now`, which signs what goes out in packages) calls
  :func:`guard` once it holds the head's lock. It folds the leaves after the anchored size
  into the stored frontier and compares the result with the head: O(events since the
  anchor), the same check as an RFC 9162 consistency proof from the anchored tree to the
  head (the frontier is what that proof's verifier rebuilds). After the transaction commits,
  the anchor moves forward to the new head; it never moves back, so two writers racing can
  at worst leave it at the older of two heads, each a prefix of the committed log.
- ``custody verify`` checks the anchor against the tree it recomputes from the events
  themselves (:func:`verify_messages`), and moves it forward when the log is whole.
- A vault made before the anchor existed has no entry: its first writer or verify records one.
- Restoring an older backup on purpose: :func:`reanchor` (``evault custody reanchor``)
  accepts the log as it is, if it verifies otherwise, and logs a signed
  ``custody.reanchored`` event naming the sizes and roots it went from and to.

A team vault on PostgreSQL has one key store per machine: each keeps its own anchor, a prefix
of the shared log, and each catches a rollback below the newest head it has seen.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from vault.custody.merkle import Frontier, ProofError, leaf_hash
from vault.errors import ConflictError, KeyMissingError, KeyStoreError, VerificationError
from vault.service.results import Result
from vault.service.vaults import Vault
from vault.store.models import CustodyEvent, CustodyHead

ENTRY = "trust:checkpoint"
FORMAT = "evault-log-anchor"
VERSION = 1
SHORTER = "the log is shorter than the last checkpoint this vault signed"
DIFFERS = "the log differs from the last checkpoint this vault signed"
NEXT_STEP = (
    "restore the newer database; if an older backup was restored on purpose, "
    "run `evault custody reanchor --as NAME`"
)
REANCHORED = "custody.reanchored"
SUBJECT = "custody-log"
_STATE = "evault.anchor"  # key of this module's state in Session.info
LOCK_FILE = ".anchor.lock"  # in the vault folder: one read-and-move of the anchor at a time


@dataclass(frozen=True, eq=False)
class Anchor:
    """The newest head of the log this vault signed: size, root and frontier."""

    size: int
    root: bytes
    frontier: Frontier

    @classmethod
    def at(cls, frontier: Frontier) -> Anchor:
        """The anchor of a tree given by its frontier."""
        return cls(frontier.size, frontier.root(), frontier.copy())

    def encode(self, log_origin: str) -> bytes:
        """The key store entry: a small JSON object, versioned."""
        return json.dumps(
            {
                "type": FORMAT,
                "v": VERSION,
                "log": log_origin,
                "size": self.size,
                "root": base64.b64encode(self.root).decode(),
                "frontier": base64.b64encode(self.frontier.to_bytes()).decode(),
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, data: bytes, log_origin: str) -> Anchor:
        """Read an entry; a damaged or foreign one is a key-store error (exit 1)."""
        damaged = KeyStoreError(
            f"key store entry {ENTRY}: damaged or not this vault's; restore the key store "
            "from a backup"
        )
        try:
            obj = json.loads(data)
            if obj["type"] != FORMAT or obj["v"] != VERSION or obj["log"] != log_origin:
                raise damaged
            frontier = Frontier.from_bytes(base64.b64decode(obj["frontier"], validate=True))
            root = base64.b64decode(obj["root"], validate=True)
            size = obj["size"]
        except (ValueError, KeyError, TypeError, ProofError):
            raise damaged from None
        if type(size) is not int or frontier.size != size or frontier.root() != root:
            raise damaged
        return cls(size, root, frontier)


def _origin(vault: Vault) -> str:
    # As vault.service.custody.origin, which imports this module.
    return f"evault/{vault.config.vault_id}"


def load(vault: Vault) -> Anchor | None:
    """The anchor in the vault's key store, or None if none was recorded yet."""
    try:
        data = vault.keystore.get(ENTRY)
    except KeyMissingError:
        return None
    return Anchor.decode(data, _origin(vault))


def save(vault: Vault, anchor: Anchor) -> None:
    """Replace the anchor in the key store."""
    vault.keystore.put(ENTRY, anchor.encode(_origin(vault)))


def _shorter(size: int, pinned: Anchor) -> str:
    return f"{SHORTER} ({size} events, the checkpoint has {pinned.size})"


def _differs(size: int, pinned: Anchor) -> str:
    return f"{DIFFERS} (its first {pinned.size} of {size} events are not the ones signed)"


def is_anchor_defect(message: str) -> bool:
    """Whether a defect of ``custody verify`` is one of this module's."""
    return message.startswith((SHORTER, DIFFERS))


# ----------------------------------------------------------------------------- writers


@dataclass
class _State:
    """One transaction's anchor: checked once, moved forward after the commit."""

    pinned: Anchor | None
    force: bool = False  # reanchor: replace the anchor even if the new head is not longer
    heads: list[Frontier] = field(default_factory=list)


def guard(vault: Vault, session: Session, head: CustodyHead, live: Frontier | None = None) -> None:
    """Refuse (exit 3) a log whose locked ``head`` does not extend the anchor; once the
    transaction commits, move the anchor to the head as committed.

    ``live`` is the frontier the caller appends to (its final state is what commits); without
    one, the head as it is now. The check runs once per transaction: later appends in it
    build on a head already checked.
    """
    state = session.info.get(_STATE)
    if state is None:
        pinned = load(vault)
        if pinned is not None:
            reason = _mismatch(session, pinned, head)
            if reason is not None:
                raise VerificationError(f"custody log: {reason}; {NEXT_STEP}")
        state = _watch(vault, session, _State(pinned))
    state.heads.append(live if live is not None else Frontier.from_bytes(head.frontier))


def _watch(vault: Vault, session: Session, state: _State) -> _State:
    session.info[_STATE] = state
    event.listen(session, "after_commit", functools.partial(_advance, vault, state), once=True)
    return state


def _mismatch(session: Session, pinned: Anchor, head: CustodyHead) -> str | None:
    """Why ``head`` does not extend ``pinned``, or None: the events after the anchored size,
    their leaves recomputed from their bytes, folded into the anchored frontier, must give
    the head's frontier and root exactly.
    """
    if head.size < pinned.size:
        return _shorter(head.size, pinned)
    frontier = pinned.frontier.copy()
    rows = session.execute(
        select(CustodyEvent.seq, CustodyEvent.body, CustodyEvent.leaf_hash)
        .where(CustodyEvent.seq >= pinned.size, CustodyEvent.seq < head.size)
        .order_by(CustodyEvent.seq)
    )
    for seq, body, stored in rows:
        leaf = leaf_hash(body)
        if seq != frontier.size or leaf != stored:
            break
        frontier.append(leaf)
    if (
        frontier.size != head.size
        or frontier.root() != head.root
        or frontier.to_bytes() != head.frontier
    ):
        return _differs(head.size, pinned)
    return None


@contextlib.contextmanager
def _moving(vault: Vault) -> Iterator[None]:
    """Serialise reading and moving the anchor among this machine's processes (flock)."""
    fd = os.open(vault.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


key_store_lock = _moving  # also serialises keyhistory's list of key events


def _advance(vault: Vault, state: _State, session: Session) -> None:
    """After the commit: the anchor moves to the newest head this transaction committed.

    Never backwards (unless reanchoring): the entry is read again under a lock, since
    another process may have moved it meanwhile. A key store that cannot be written now
    leaves the older anchor, still a prefix of the committed log: safe, and the next writer
    moves it. (Raising here would report a failure for a step already committed.)
    """
    newest = max(state.heads, key=lambda f: f.size, default=None)
    if newest is None:
        return
    if not state.force and state.pinned is not None and newest.size <= state.pinned.size:
        return  # nothing appended (a checkpoint alone): the anchor is there already
    with contextlib.suppress(KeyStoreError, OSError), _moving(vault):
        current = None if state.force else load(vault)
        if state.force or current is None or newest.size > current.size:
            save(vault, Anchor.at(newest))


# ----------------------------------------------------------------------------- verify


def verify_messages(pinned: Anchor | None, roots_at: dict[int, bytes], size: int) -> list[str]:
    """``custody verify``'s check: the tree recomputed from the events (``size`` leaves, and
    its root at every size asked for in ``roots_at``) must extend the anchor.
    """
    if pinned is None:
        return []
    if size < pinned.size:
        return [_shorter(size, pinned)]
    if roots_at.get(pinned.size) != pinned.root:
        return [_differs(size, pinned)]
    return []


def after_verify(vault: Vault, pinned: Anchor | None, frontier: Frontier, whole: bool) -> None:
    """A log that verified whole moves the anchor forward (or records the first one; an
    empty log has nothing to anchor, and a new vault gets no key file from a verify)."""
    if whole and frontier.size and (pinned is None or frontier.size > pinned.size):
        # A folder that cannot take the lock file (read-only) keeps the older anchor.
        with contextlib.suppress(OSError), _moving(vault):
            current = load(vault)
            if current is None or frontier.size > current.size:
                save(vault, Anchor.at(frontier))


# ----------------------------------------------------------------------------- reanchor


@dataclass(frozen=True, slots=True, kw_only=True)
class Reanchored(Result):
    """What ``custody reanchor`` accepted: the size of the last checkpoint this vault signed
    (``previous_size``), the size of the log accepted in its place, the seq of the
    ``custody.reanchored`` event that records it, and the log's size with that event."""

    previous_size: int
    accepted_size: int
    event: int
    size: int


def reanchor(vault: Vault, as_name: str | None, *, now: datetime | None = None) -> Reanchored:
    """Accept the log as it is now, after an older backup was restored on purpose.

    The log must verify except for the anchor; the acceptance is a signed event naming the
    anchor given up and the head accepted, and the anchor then moves to the new head.
    """
    # Imported here: vault.service.custody imports this module for its writers.
    from vault.service.custody import CustodyLog, actor_pair, lock_head, verify_log

    pinned = load(vault)
    report = verify_log(vault)
    others = [d for d in report.defects if not is_anchor_defect(d.message)]
    if others:
        raise VerificationError(
            f"custody log: {len(others)} defect(s) besides the rollback; reanchor accepts only "
            "a log that verifies otherwise; run `evault custody verify`"
        )
    if pinned is None or len(others) == len(report.defects):
        raise ConflictError(
            "custody log: the log extends the last checkpoint this vault signed; "
            "nothing to reanchor"
        )
    with vault.transaction() as session:
        _watch(vault, session, _State(pinned, force=True))
        pair = actor_pair(vault, session, as_name)
        head = lock_head(session)
        accepted, accepted_root = head.size, head.root.hex()  # before the append moves it
        log = CustodyLog(vault, session)
        row = log.append(
            pair,
            REANCHORED,
            SUBJECT,
            details={
                "from_size": pinned.size,
                "from_root": pinned.root.hex(),
                "to_size": accepted,
                "to_root": accepted_root,
            },
            now=now,
        )
        seq = row.seq
    from vault.service import keyhistory

    keyhistory.list_events(vault, {}, below=seq)  # those rolled back are gone
    return Reanchored(previous_size=pinned.size, accepted_size=accepted, event=seq,
                      size=seq + 1)
