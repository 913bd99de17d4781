"""Keys only through signed history: every public key the vault uses, derived from its log.

    >>> ensure_anchor(vault)                                          # doctest: +SKIP
    >>> with vault.transaction() as session:                          # doctest: +SKIP
    ...     history = load(vault, session)
    ...     differences(history, session)
    []

Identities' signing and age keys, the storage recipient, every body key (its SSH and its age
half) and contacts are introduced, rotated and revoked by signed custody events that carry
the full key. The tables (``identity_keys``, ``identities.revoked_at``, ``vault_keys``,
``body_keys``, ``contacts``) are a cache of that history: a database holder can rewrite
them, not the events, which are signed by keys only the key store holds.

The history starts at the trust anchor, an entry of the key store (``trust:key-history``)
naming the event that starts it and the fingerprint of the identity that signed it. For a
vault made by this code that is ``identity.created`` of its first identity, signed by
itself, which also introduces the storage key. For a vault made before, it is the
``keys.attested`` event that the first use after the upgrade signs with the key set of the
tables as they were then (trust on first upgrade: what was changed in the tables before is
not detected). Every later key event must be signed by an identity key that the history
already trusts, at a time when that key was neither retired nor revoked.

Only events whose stored ``action`` is a key action are read, so this stays cheap on a long
log. So that a database holder cannot hide a key event from these quick checks (change its
stored action, or its bytes, say to take back a revocation before a package is made), the
key store also lists every key event this vault appended or has checked (``trust:key-events``:
seq and leaf hash); a listed event the quick read does not find as it was is a defect.
``custody verify`` also checks every stored column against the signed bytes.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import event as orm_event
from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.clock import as_utc, isoformat, parse_iso, utcnow
from vault.crypto.age import AgeIdentity, AgeRecipient
from vault.crypto.keys import VerifyKey
from vault.custody.events import Event
from vault.custody.merkle import leaf_hash
from vault.errors import (
    KeyMissingError,
    KeyStoreError,
    UsageError,
    VaultError,
    VerificationError,
)
from vault.service.vaults import Vault
from vault.store.models import (
    Body,
    BodyKey,
    Contact,
    CustodyEvent,
    CustodyHead,
    Identity,
    IdentityKey,
    VaultKey,
)

ANCHOR_NAME = "trust:key-history"
EVENTS_NAME = "trust:key-events"
_NOTED = "evault.key-events"  # key of the key events a transaction appended, in Session.info
# Session.info: the history load derived in this transaction (a _Loaded), and the history
# whose events _trusted listed already.
_LOADED = "evault.key-history"
_LISTED = "evault.key-history-listed"
ATTESTED = "keys.attested"
STORAGE_CREATED = "storage.key_created"
KEY_ACTIONS = frozenset({
    "identity.created",
    "identity.rotated",
    "identity.revoked",
    "body.key_added",
    "body.key_revoked",
    "contact.added",
    "contact.revoked",
    STORAGE_CREATED,
    ATTESTED,
})
REPAIR = "run `evault doctor`"


# ----------------------------------------------------------------------------- the anchor


@dataclass(frozen=True)
class Anchor:
    """Where the signed key history starts: the event's seq and its signer's fingerprint."""

    seq: int
    fingerprint: str

    def to_bytes(self) -> bytes:
        return json.dumps({"v": 1, "seq": self.seq, "fingerprint": self.fingerprint},
                          sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Anchor:
        try:
            obj = json.loads(data)
            seq, fingerprint = obj["seq"], obj["fingerprint"]
            if obj.get("v") != 1 or type(seq) is not int or type(fingerprint) is not str:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise KeyStoreError(
                f"key store: entry {ANCHOR_NAME} is damaged; restore the key store from a backup"
            ) from None
        return cls(seq, fingerprint)


def read_anchor(vault: Vault) -> Anchor | None:
    """The anchor in the key store, or None if there is none (a vault made before it)."""
    try:
        return Anchor.from_bytes(vault.keystore.get(ANCHOR_NAME))
    except KeyMissingError:
        return None


def record_anchor(vault: Vault, anchor: Anchor) -> None:
    """Keep the anchor in the key store (after the event it names is committed)."""
    vault.keystore.put(ANCHOR_NAME, anchor.to_bytes())


def ensure_anchor(vault: Vault, *, now: datetime | None = None) -> Anchor | None:
    """The anchor; for a vault that has identities but none, attest the tables' keys first.

    The attestation is one ``keys.attested`` event signed by the default identity (or the
    first active one), carrying every public key of the tables; the key store then names it.
    None when there is nothing to anchor (no identity) or no identity left to sign.
    """
    anchor = read_anchor(vault)
    if anchor is not None:
        return anchor
    from vault.service.custody import CustodyLog, lock_head
    from vault.service.identities import current_key, load_keypair

    with vault.transaction() as session:
        lock_head(session)  # one attestation, however many commands start at once
        earlier = session.execute(
            select(CustodyEvent.seq, CustodyEvent.actor)
            .where(CustodyEvent.action == ATTESTED).order_by(CustodyEvent.seq).limit(1)
        ).first()
        if earlier is not None:
            # One made before, whose anchor did not reach the key store (an interruption).
            # Only if this key store holds its signer's key: one a database holder inserted,
            # signed by a key of theirs, must not become the root of the history.
            if not _holds_key(vault, str(earlier[1])):
                raise VerificationError(
                    f"custody log: event {earlier[0]}: keys.attested by {earlier[1]}, a key "
                    "this vault's key store does not hold; the key history cannot start "
                    "there; restore the database from a backup"
                )
            anchor = Anchor(int(earlier[0]), str(earlier[1]))
        else:
            signer = _attesting_identity(session)
            if signer is None:
                return None
            pair = load_keypair(vault, current_key(signer))
            row = CustodyLog(vault, session).append(
                pair, ATTESTED, "keys", details=_attestation(session), now=now or utcnow()
            )
            anchor = Anchor(row.seq, pair.fingerprint)
    record_anchor(vault, anchor)
    return anchor


def _holds_key(vault: Vault, fingerprint: str) -> bool:
    """Whether the key store holds the private signing key ``fingerprint``."""
    from vault.crypto.keys import SigningKey
    from vault.service.identities import secret_name

    try:
        secret = vault.keystore.get(secret_name(fingerprint))
    except KeyMissingError:
        return False
    return len(secret) == 64 and SigningKey.from_seed(secret[:32]).public.fingerprint == (
        fingerprint)


def _attesting_identity(session: Session) -> Identity | None:
    active = [i for i in session.scalars(select(Identity).order_by(Identity.id))
              if i.revoked_at is None]
    return next((i for i in active if i.is_default), active[0] if active else None)


def _time(when: datetime | None) -> str | None:
    return isoformat(when) if when is not None else None


def _attestation(session: Session) -> dict[str, Any]:
    """Every public key of the tables, with its times: the details of ``keys.attested``."""
    identities = [
        {
            "name": i.name,
            "revoked_at": _time(i.revoked_at),
            "keys": [
                {"fingerprint": k.fingerprint, "signing_key": VerifyKey(k.signing_key).openssh(),
                 "age_recipient": k.age_recipient, "created_at": _time(k.created_at),
                 "retired_at": _time(k.retired_at), "revoked_at": _time(k.revoked_at)}
                for k in i.keys
            ],
        }
        for i in session.scalars(select(Identity).order_by(Identity.id))
    ]
    bodies = [
        {"body": k.body_id, "fingerprint": k.fingerprint,
         "signing_key": VerifyKey(k.signing_key).openssh(), "age_recipient": k.age_recipient,
         "added_at": _time(k.added_at), "revoked_at": _time(k.revoked_at)}
        for k in session.scalars(select(BodyKey).order_by(BodyKey.id))
    ]
    contacts = [
        {"name": c.name, "fingerprint": c.fingerprint,
         "signing_key": VerifyKey(c.signing_key).openssh(), "age_recipient": c.age_recipient,
         "added_at": _time(c.added_at), "revoked_at": _time(c.revoked_at)}
        for c in session.scalars(select(Contact).order_by(Contact.id))
    ]
    storage = session.get(VaultKey, "storage")
    return {
        "identities": identities,
        "bodies": bodies,
        "contacts": contacts,
        "storage": None if storage is None else {
            "age_recipient": storage.age_recipient, "created_at": _time(storage.created_at)},
    }


def key_details(signing: VerifyKey, age_recipient: str) -> dict[str, str]:
    """The full public key an introducing event carries: fingerprint, SSH and age halves."""
    return {"fingerprint": signing.fingerprint, "signing_key": signing.openssh(),
            "age_recipient": age_recipient}


# ----------------------------------------------------------------------------- the history


@dataclass
class IdentityKeyEntry:
    """One identity key as the signed history has it."""

    identity: str
    signing_key: bytes
    age_recipient: str
    created_at: datetime
    retired_at: datetime | None = None
    revoked_at: datetime | None = None


@dataclass
class PeerKeyEntry:
    """A body key or a contact as the signed history has it."""

    owner: str  # the body id, or the contact's name
    signing_key: bytes
    age_recipient: str
    added_at: datetime
    revoked_at: datetime | None = None


@dataclass
class KeyHistory:
    """The key set derived from the signed events, and what was wrong with those events."""

    anchor: Anchor | None
    identity_keys: dict[str, IdentityKeyEntry] = field(default_factory=dict)
    identities: dict[str, datetime | None] = field(default_factory=dict)  # name -> revoked
    body_keys: dict[tuple[str, str], PeerKeyEntry] = field(default_factory=dict)
    contacts: dict[str, PeerKeyEntry] = field(default_factory=dict)
    storage: str | None = None
    storage_created_at: datetime | None = None
    defects: list[tuple[int | None, str]] = field(default_factory=list)
    seen: dict[int, bytes] = field(default_factory=dict)  # seq -> leaf hash of each key event

    def signer_at(self, fingerprint: str, when: datetime) -> IdentityKeyEntry | None:
        """The identity key ``fingerprint`` if it could sign at ``when``, else None."""
        key = self.identity_keys.get(fingerprint)
        if key is None or when < key.created_at:
            return None
        end = self.ended_at(key)
        return None if end is not None and when > end else key

    def ended_at(self, key: IdentityKeyEntry) -> datetime | None:
        """When ``key`` stopped signing (retired, revoked, or its identity revoked), the
        earliest of these; None while it may still sign."""
        return min((end for end in (key.retired_at, key.revoked_at,
                                    self.identities.get(key.identity)) if end is not None),
                   default=None)


@dataclass
class _Loaded:
    """The history :func:`load` derived in a transaction, for ``anchor``, the log then
    ``size`` events long; ``stale`` once the head is locked (:func:`recheck`)."""

    anchor: Anchor | None
    history: KeyHistory
    size: int
    stale: bool = False


class _Refused(Exception):
    """A key event that may not change the history; the message says why."""


def load(vault: Vault, session: Session, anchor: Anchor | None = None) -> KeyHistory:
    """Derive the key history from the key events at and after the anchor.

    Derived once per transaction and anchor: a command checks its actor, its recipients and
    its rules against the same history, which only a key event this transaction appends
    changes (:func:`note_key_event` forgets it then). Once the log head is locked
    (:func:`recheck`), it is derived again unless :func:`_unchanged` finds the key events
    as they were (another writer may have committed one meanwhile). The result is not to
    be changed."""
    from vault.service.custody import origin

    anchor = anchor or read_anchor(vault)
    loaded: _Loaded | None = session.info.get(_LOADED)
    hidden: list[int] = []
    if loaded is not None and loaded.anchor == anchor:
        if not loaded.stale:
            return loaded.history
        hidden = _hidden_since(session, loaded.size)
        if not hidden and _unchanged(vault, session, loaded.history):
            loaded.stale = False
            return loaded.history
    history = KeyHistory(anchor)
    if anchor is None:
        return history
    rows = session.execute(
        select(CustodyEvent.seq, CustodyEvent.action, CustodyEvent.body, CustodyEvent.signature)
        .where(CustodyEvent.action.in_(sorted(KEY_ACTIONS)), CustodyEvent.seq >= anchor.seq)
        .order_by(CustodyEvent.seq)
    )
    log_origin = origin(vault)
    started = False
    for seq, action, body, signature in rows:
        if not started and seq != anchor.seq:
            history.defects.append(
                (anchor.seq, "the key history's first event, named by the key store, is missing")
            )
        history.seen[seq] = leaf_hash(body)
        try:
            _apply(history, seq, action, body, signature, log_origin, first=not started)
        except _Refused as e:
            history.defects.append((seq, f"key history: {e}"))
        started = True
    if not started:
        history.defects.append(
            (anchor.seq, "the key history's first event, named by the key store, is missing")
        )
    size = _check_listed(vault, session, history)
    for seq in hidden:
        history.defects.append((seq, "key history: a key event appended while this command "
                                     "ran is hidden by its stored action"))
    session.info[_LOADED] = _Loaded(anchor, history, size)
    return history


def _hidden_since(session: Session, size: int) -> list[int]:
    """The events appended since the log was ``size`` events long whose signed body is a
    key event and whose stored action is not (changed with SQL, which hides them from the
    query of the key events): none, unless a database holder is at work."""
    hidden: list[int] = []
    for seq, action, body in session.execute(
            select(CustodyEvent.seq, CustodyEvent.action, CustodyEvent.body)
            .where(CustodyEvent.seq >= size)):
        try:
            signed = json.loads(bytes(body)).get("action")
        except (ValueError, AttributeError):
            signed = None  # not an event at all: custody verify names it
        if signed in KEY_ACTIONS and action != signed:
            hidden.append(seq)
    return hidden


def _unchanged(vault: Vault, session: Session, history: KeyHistory) -> bool:
    """Whether the key events are what ``history`` was derived from: the same events, byte
    for byte (their bodies hashed again, not their stored hashes), and the key store's
    list still read back. What a full derivation adds is the signatures' checks, which
    these bytes passed already."""
    assert history.anchor is not None
    rows = session.execute(
        select(CustodyEvent.seq, CustodyEvent.body)
        .where(CustodyEvent.action.in_(sorted(KEY_ACTIONS)),
               CustodyEvent.seq >= history.anchor.seq))
    if {seq: leaf_hash(body) for seq, body in rows} != history.seen:
        return False
    probe = KeyHistory(history.anchor, seen=history.seen)
    _check_listed(vault, session, probe)
    return not probe.defects


def recheck(session: Session) -> None:
    """The log head is locked: what other writers committed before counts from here on, so
    the next :func:`load` in this transaction first checks that the key events are as the
    history was derived from them (:func:`_unchanged`), and derives it again if not."""
    loaded: _Loaded | None = session.info.get(_LOADED)
    if loaded is not None:
        loaded.stale = True


def forget(session: Session) -> None:
    """The next :func:`load` in this transaction reads the key events again (this
    transaction appended a key event)."""
    session.info.pop(_LOADED, None)


# ----------------------------------------------------------------------------- listed key events


def read_listed(vault: Vault) -> dict[int, bytes]:
    """The key events the key store lists (seq -> leaf hash); empty if it lists none yet."""
    from vault.service.custody import origin

    try:
        data = vault.keystore.get(EVENTS_NAME)
    except KeyMissingError:
        return {}
    try:
        obj = json.loads(data)
        if obj.get("v") != 1 or obj.get("log") != origin(vault):
            raise ValueError
        listed = {int(seq): bytes.fromhex(leaf) for seq, leaf in obj["events"]}
        if any(len(leaf) != 32 for leaf in listed.values()):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise KeyStoreError(
            f"key store: entry {EVENTS_NAME} is damaged or not this vault's; restore the key "
            "store from a backup"
        ) from None
    return listed


def list_events(vault: Vault, events: dict[int, bytes], *, below: int | None = None) -> None:
    """Add ``events`` to the key store's list (and, with ``below``, forget those at or after
    it: a log restored on purpose to that size). Writes only when the list changes."""
    from vault.service.anchor import key_store_lock
    from vault.service.custody import origin

    with key_store_lock(vault):
        listed = read_listed(vault)
        merged = {**listed, **events}
        if below is not None:
            merged = {seq: leaf for seq, leaf in merged.items() if seq < below}
        if merged == listed:
            return
        vault.keystore.put(EVENTS_NAME, json.dumps(
            {"v": 1, "log": origin(vault),
             "events": [[seq, leaf.hex()] for seq, leaf in sorted(merged.items())]},
            sort_keys=True).encode())


def note_key_event(vault: Vault, session: Session, row: CustodyEvent) -> None:
    """A key event was appended: once the transaction commits, the key store lists it."""
    if row.action not in KEY_ACTIONS:
        return
    forget(session)
    noted = session.info.get(_NOTED)
    if noted is None:
        noted = session.info[_NOTED] = {}
        orm_event.listen(session, "after_commit",
                         functools.partial(_list_noted, vault, noted), once=True)
    noted[row.seq] = row.leaf_hash


def _list_noted(vault: Vault, noted: dict[int, bytes], session: Session) -> None:
    # After the commit: a key store that cannot be written now leaves the event unlisted,
    # and the next command that checks the history lists it (raising would report a
    # failure for a step already committed).
    with contextlib.suppress(KeyStoreError, OSError):
        list_events(vault, noted)


def _check_listed(vault: Vault, session: Session, history: KeyHistory) -> int:
    """Every key event the key store lists must be read back as it was: a defect names each
    one removed, rewritten or hidden (its stored action changed). Events at or after the
    head's size are the log anchor's business (a shorter log). Returns that size."""
    assert history.anchor is not None
    size = int(session.scalar(select(CustodyHead.size).where(CustodyHead.id == 1)) or 0)
    for seq, leaf in sorted(read_listed(vault).items()):
        if history.anchor.seq <= seq < size and history.seen.get(seq) != leaf:
            history.defects.append((seq, "key history: a key event the key store lists is "
                                         "missing, rewritten or hidden by its stored action"))
    return size


def _apply(
    history: KeyHistory, seq: int, action: str, body: bytes, signature: bytes,
    log_origin: str, *, first: bool,
) -> None:
    try:
        event = Event.decode(body)
    except VerificationError as e:
        raise _Refused(str(e)) from None
    if (event.seq, event.log, event.action) != (seq, log_origin, action):
        raise _Refused("stored columns differ from the signed event")
    anchor = history.anchor
    assert anchor is not None
    if first:
        if seq != anchor.seq or event.actor != anchor.fingerprint:
            raise _Refused(
                f"not signed by {anchor.fingerprint}, the identity the key store names"
            )
        if event.action == "identity.created":
            signer = _key(event.details)[0]
        elif event.action == ATTESTED:
            signer = _attested_signer(event)
        else:
            raise _Refused(f"{event.action} cannot start the key history")
        if signer.fingerprint != anchor.fingerprint:
            raise _Refused("its key is not the one the key store names")
    else:
        found = history.signer_at(event.actor, event.time)
        if found is None:
            raise _Refused(
                f"signer {event.actor} was not a trusted, unrevoked identity key at "
                f"{isoformat(event.time)}"
            )
        signer = VerifyKey(found.signing_key)
    try:
        signer.verify(signature, body)
    except VaultError:
        if first:
            # The anchor's key is known by its fingerprint in the key store, signature or
            # not: the rest of the log still verifies against it. Nothing else is taken.
            _anchor_key_only(history, event, signer)
        raise _Refused("signature does not verify") from None
    _APPLY[event.action](history, event, first)


def _anchor_key_only(history: KeyHistory, event: Event, signer: VerifyKey) -> None:
    name = event.subject.removeprefix("identity:") if event.action == "identity.created" else ""
    for entry in (event.details, *_attested_keys(event)):
        if entry.get("fingerprint") == signer.fingerprint:
            history.identities.setdefault(name or str(entry.get("identity")), None)
            history.identity_keys[signer.fingerprint] = IdentityKeyEntry(
                name or str(entry.get("identity")), signer.raw, _key(entry)[1],
                _optional_time(entry, "created_at") or event.time,
            )
            return


def _attested_keys(event: Event) -> list[dict[str, Any]]:
    """The identity keys a ``keys.attested`` event carries, each with its identity's name."""
    if event.action != ATTESTED:
        return []
    return [{**key, "identity": _text(identity, "name")}
            for identity in _list(event.details, "identities")
            for key in _list(identity, "keys")]


# --- each key action -------------------------------------------------------------------------


def _text(details: dict[str, Any], name: str) -> str:
    value = details.get(name)
    if type(value) is not str:
        raise _Refused(f"details carry no {name}")
    return value


def _optional_time(details: dict[str, Any], name: str) -> datetime | None:
    value = details.get(name)
    if value is None:
        return None
    try:
        return parse_iso(_text(details, name))
    except ValueError:
        raise _Refused(f"{name} is not a time") from None


def _key(details: dict[str, Any]) -> tuple[VerifyKey, str]:
    """The full key an event carries, its fingerprint checked: (SSH half, age half)."""
    try:
        signing = VerifyKey.from_openssh(_text(details, "signing_key"))
        age = str(AgeRecipient.parse(_text(details, "age_recipient")))
    except (VaultError, ValueError):
        raise _Refused("the key it carries is malformed") from None
    if signing.fingerprint != _text(details, "fingerprint"):
        raise _Refused("the key it carries does not have its fingerprint")
    return signing, age


def _subject(event: Event, prefix: str) -> str:
    if not event.subject.startswith(prefix):
        raise _Refused(f"subject {event.subject} is not {prefix}...")
    return event.subject[len(prefix):]


def _identity_created(history: KeyHistory, event: Event, first: bool) -> None:
    name = _subject(event, "identity:")
    if name in history.identities:
        raise _Refused(f"identity {name} exists already")
    signing, age = _key(event.details)
    if signing.fingerprint in history.identity_keys:
        raise _Refused(f"key {signing.fingerprint} exists already")
    storage = event.details.get("storage_recipient")
    if storage is not None:
        if not first or history.storage is not None:
            raise _Refused("only the first identity introduces the storage key")
        history.storage = _text(event.details, "storage_recipient")
        history.storage_created_at = event.time
    history.identities[name] = None
    history.identity_keys[signing.fingerprint] = IdentityKeyEntry(
        name, signing.raw, age, event.time
    )


def _identity_rotated(history: KeyHistory, event: Event, first: bool) -> None:
    name = _subject(event, "identity:")
    previous = history.identity_keys.get(_text(event.details, "previous"))
    if previous is None or previous.identity != name or event.actor != _text(
        event.details, "previous"
    ):
        raise _Refused(f"not signed by the outgoing key of identity {name}")
    signing, age = _key(event.details)
    if signing.fingerprint in history.identity_keys:
        raise _Refused(f"key {signing.fingerprint} exists already")
    previous.retired_at = event.time
    history.identity_keys[signing.fingerprint] = IdentityKeyEntry(
        name, signing.raw, age, event.time
    )


def _identity_revoked(history: KeyHistory, event: Event, first: bool) -> None:
    name = _subject(event, "identity:")
    if name not in history.identities or history.identities[name] is not None:
        raise _Refused(f"identity {name} is unknown or revoked already")
    history.identities[name] = event.time
    for key in history.identity_keys.values():
        if key.identity == name and key.revoked_at is None:
            key.revoked_at = event.time


def _body_key_added(history: KeyHistory, event: Event, first: bool) -> None:
    signing, age = _key(event.details)
    where = (event.subject, signing.fingerprint)
    if where in history.body_keys:
        raise _Refused(f"body {event.subject} has key {signing.fingerprint} already")
    history.body_keys[where] = PeerKeyEntry(event.subject, signing.raw, age, event.time)


def _body_key_revoked(history: KeyHistory, event: Event, first: bool) -> None:
    key = history.body_keys.get((event.subject, _text(event.details, "fingerprint")))
    if key is None or key.revoked_at is not None:
        raise _Refused(f"body {event.subject}: the key is unknown or revoked already")
    key.revoked_at = event.time


def _contact_added(history: KeyHistory, event: Event, first: bool) -> None:
    signing, age = _key(event.details)
    fingerprint = signing.fingerprint
    if _subject(event, "contact:") != fingerprint or fingerprint in history.contacts:
        raise _Refused(f"contact {signing.fingerprint}: another subject, or known already")
    history.contacts[signing.fingerprint] = PeerKeyEntry(
        _text(event.details, "name"), signing.raw, age, event.time
    )


def _contact_revoked(history: KeyHistory, event: Event, first: bool) -> None:
    contact = history.contacts.get(_subject(event, "contact:"))
    if contact is None or contact.revoked_at is not None:
        raise _Refused(f"{event.subject}: unknown or revoked already")
    contact.revoked_at = event.time


def _storage_created(history: KeyHistory, event: Event, first: bool) -> None:
    if history.storage is not None:
        raise _Refused("the vault has a storage key already")
    history.storage = _text(event.details, "age_recipient")
    history.storage_created_at = event.time


def _attested_signer(event: Event) -> VerifyKey:
    for key in _attested_keys(event):
        if key.get("fingerprint") == event.actor:
            return _key(key)[0]
    raise _Refused("its signer is not among the keys it attests")


def _list(details: dict[str, Any], name: str) -> list[dict[str, Any]]:
    value = details.get(name)
    if type(value) is not list or not all(type(v) is dict for v in value):
        raise _Refused(f"details carry no list of {name}")
    return value


def _attested(history: KeyHistory, event: Event, first: bool) -> None:
    if not first:
        raise _Refused("only the first event of the key history may attest keys")
    for identity in _list(event.details, "identities"):
        name = _text(identity, "name")
        history.identities[name] = _optional_time(identity, "revoked_at")
        for key in _list(identity, "keys"):
            signing, age = _key(key)
            history.identity_keys[signing.fingerprint] = IdentityKeyEntry(
                name, signing.raw, age, _required_time(key, "created_at"),
                _optional_time(key, "retired_at"), _optional_time(key, "revoked_at"),
            )
    for key in _list(event.details, "bodies"):
        signing, age = _key(key)
        body = _text(key, "body")
        history.body_keys[(body, signing.fingerprint)] = PeerKeyEntry(
            body, signing.raw, age, _required_time(key, "added_at"),
            _optional_time(key, "revoked_at"),
        )
    for key in _list(event.details, "contacts"):
        signing, age = _key(key)
        history.contacts[signing.fingerprint] = PeerKeyEntry(
            _text(key, "name"), signing.raw, age, _required_time(key, "added_at"),
            _optional_time(key, "revoked_at"),
        )
    storage = event.details.get("storage")
    if storage is not None:
        if type(storage) is not dict:
            raise _Refused("details carry a malformed storage key")
        history.storage = _text(storage, "age_recipient")
        history.storage_created_at = _required_time(storage, "created_at")


def _required_time(details: dict[str, Any], name: str) -> datetime:
    when = _optional_time(details, name)
    if when is None:
        raise _Refused(f"details carry no {name}")
    return when


_APPLY = {
    "identity.created": _identity_created,
    "identity.rotated": _identity_rotated,
    "identity.revoked": _identity_revoked,
    "body.key_added": _body_key_added,
    "body.key_revoked": _body_key_revoked,
    "contact.added": _contact_added,
    "contact.revoked": _contact_revoked,
    STORAGE_CREATED: _storage_created,
    ATTESTED: _attested,
}


# ----------------------------------------------------------------------------- the tables


def _same_time(a: datetime | None, b: datetime | None) -> bool:
    return (a is None and b is None) or (
        a is not None and b is not None and as_utc(a) == as_utc(b)
    )


def _revocation(table: datetime | None, signed: datetime | None) -> str | None:
    """What differs between a row's revocation and the history's, or None."""
    if _same_time(table, signed):
        return None
    if table is None:
        assert signed is not None
        return f"revoked in the signed history since {isoformat(signed)}, not in the table"
    if signed is None:
        return "revoked in the table, not in the signed history"
    return "revocation time differs from the signed history"


def _key_differences(
    signing_key: bytes, fingerprint: str, age_recipient: str, entry_key: bytes, entry_age: str,
) -> list[str]:
    out = []
    if signing_key != entry_key or VerifyKey(signing_key).fingerprint != fingerprint:
        out.append("signing key differs from the signed history")
    if age_recipient != entry_age:
        out.append("age recipient differs from the signed history")
    return out


def identity_differences(history: KeyHistory, identity: Identity) -> list[str]:
    """What differs between one identity's rows and the history, each naming the row."""
    out = []
    where = f"identity {identity.name}"
    if identity.name not in history.identities:
        return [f"{where}: not in the signed history"]
    revocation = _revocation(identity.revoked_at, history.identities[identity.name])
    if revocation:
        out.append(f"{where}: {revocation}")
    for key in identity.keys:
        out += [f"{where} key {key.fingerprint}: {m}" for m in _identity_key(history, key)]
    return out


def _identity_key(history: KeyHistory, key: IdentityKey) -> list[str]:
    entry = history.identity_keys.get(key.fingerprint)
    if entry is None or entry.identity != key.identity.name:
        return ["not in the signed history"]
    out = _key_differences(key.signing_key, key.fingerprint, key.age_recipient,
                           entry.signing_key, entry.age_recipient)
    if not _same_time(key.created_at, entry.created_at):
        out.append("creation time differs from the signed history")
    if not _same_time(key.retired_at, entry.retired_at):
        out.append("retirement differs from the signed history")
    revocation = _revocation(key.revoked_at, entry.revoked_at)
    if revocation:
        out.append(revocation)
    return out


def body_differences(history: KeyHistory, body_id: str, keys: Iterable[BodyKey]) -> list[str]:
    """What differs between one body's key rows and the history, each naming the row."""
    out = []
    seen = set()
    for key in keys:
        seen.add(key.fingerprint)
        where = f"body {body_id} key {key.fingerprint}"
        entry = history.body_keys.get((body_id, key.fingerprint))
        if entry is None:
            out.append(f"{where}: not in the signed history")
            continue
        found = _key_differences(key.signing_key, key.fingerprint, key.age_recipient,
                                 entry.signing_key, entry.age_recipient)
        revocation = _revocation(key.revoked_at, entry.revoked_at)
        out += [f"{where}: {m}" for m in [*found, *([revocation] if revocation else [])]]
    for (body, fingerprint) in history.body_keys:
        if body == body_id and fingerprint not in seen:
            out.append(f"body {body_id} key {fingerprint}: in the signed history, not in the table")
    return out


def contact_differences(history: KeyHistory, contacts: Sequence[Contact]) -> list[str]:
    """What differs between the contact rows and the history."""
    out = []
    for contact in contacts:
        where = f"contact {contact.name} key {contact.fingerprint}"
        entry = history.contacts.get(contact.fingerprint)
        if entry is None:
            out.append(f"{where}: not in the signed history")
            continue
        found = _key_differences(contact.signing_key, contact.fingerprint,
                                 contact.age_recipient, entry.signing_key, entry.age_recipient)
        if contact.name != entry.owner:
            # A contact's name is whose approvals its key gives (vault.service.approvals).
            found.append(f"name differs from the signed history ({entry.owner})")
        revocation = _revocation(contact.revoked_at, entry.revoked_at)
        out += [f"{where}: {m}" for m in [*found, *([revocation] if revocation else [])]]
    known = {c.fingerprint for c in contacts}
    out += [f"contact {entry.owner} key {fingerprint}: in the signed history, not in the table"
            for fingerprint, entry in history.contacts.items() if fingerprint not in known]
    return out


def storage_differences(history: KeyHistory, row: VaultKey | None) -> list[str]:
    """What differs between the storage key row and the history."""
    if row is None:
        return [] if history.storage is None else [
            "storage key: in the signed history, not in the table"]
    if history.storage is None:
        return [f"storage key {row.age_recipient}: not in the signed history"]
    if row.age_recipient != history.storage:
        return [f"storage key {row.age_recipient}: age recipient differs from the signed history"]
    return []


def differences(history: KeyHistory, session: Session) -> list[str]:
    """Every row of the key tables that differs from the signed history, one message each."""
    identities = session.scalars(select(Identity).order_by(Identity.id)).all()
    out = [m for i in identities for m in identity_differences(history, i)]
    names = {i.name for i in identities}
    out += [f"identity {name}: in the signed history, not in the table"
            for name in history.identities if name not in names]
    known = {k.fingerprint for i in identities for k in i.keys}
    out += [f"identity {k.identity} key {fp}: in the signed history, not in the table"
            for fp, k in history.identity_keys.items() if fp not in known and k.identity in names]
    bodies = {b.id: b.keys for b in session.scalars(select(Body).order_by(Body.id))}
    for body_id in sorted(bodies.keys() | {b for b, _ in history.body_keys}):
        out += body_differences(history, body_id, bodies.get(body_id, []))
    out += contact_differences(history, session.scalars(select(Contact).order_by(Contact.id)).all())
    out += storage_differences(history, session.get(VaultKey, "storage"))
    return out


# ----------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class VerifiedKey:
    """An identity key as ``custody verify`` checks events with it."""

    raw: bytes
    created_at: datetime
    revoked_at: datetime | None


@dataclass
class Audit:
    """What ``custody verify`` and ``doctor`` need: the keys to check events with, and every
    defect of the history and of the tables (``anchored`` False: no anchor, tables used)."""

    keys: dict[str, VerifiedKey]
    defects: list[tuple[int | None, str]]
    anchored: bool


def audit(vault: Vault, session: Session, anchor: Anchor | None) -> Audit:
    """The identity keys from the signed history, and every way the history and the tables
    are wrong. Without an anchor (a vault with no identity, or none left to attest) the
    keys are the table's, as before."""
    if anchor is None:
        keys = {
            k.fingerprint: VerifiedKey(k.signing_key, as_utc(k.created_at),
                                       as_utc(k.revoked_at) if k.revoked_at else None)
            for k in session.scalars(select(IdentityKey))
        }
        return Audit(keys, [], False)
    history = load(vault, session, anchor)
    keys = {fp: VerifiedKey(k.signing_key, k.created_at, _earliest(k.revoked_at,
                                                                   history.identities.get(k.identity)))
            for fp, k in history.identity_keys.items()}
    defects = list(history.defects)
    defects += [(None, f"key table: {m}") for m in differences(history, session)]
    return Audit(keys, defects, True)


def _earliest(*times: datetime | None) -> datetime | None:
    present = [t for t in times if t is not None]
    return min(present) if present else None


def _trusted(vault: Vault, session: Session) -> KeyHistory | None:
    """The history for a command about to use keys; refuses one whose events are damaged."""
    history = load(vault, session)
    if history.anchor is None:
        return None
    if history.defects:
        seq, message = history.defects[0]
        raise VerificationError(
            f"custody log: event {seq}: {message}; run `evault custody verify`"
        )
    # Key events appended elsewhere (a team vault's peers) are listed from now on; a folder
    # that cannot take the lock file (read-only) or a key store that refuses leaves them out.
    # Once per history a transaction derives.
    if session.info.get(_LISTED) is not history:
        with contextlib.suppress(KeyStoreError, OSError):
            list_events(vault, history.seen)
        session.info[_LISTED] = history
    return history


def _refuse(messages: list[str]) -> None:
    if messages:
        raise VerificationError(f"{messages[0]}; {REPAIR}")


def check_storage(vault: Vault, session: Session, row: VaultKey) -> None:
    """Before encrypting to the storage key: the row is the history's, and the key store
    holds its private half."""
    history = _trusted(vault, session)
    if history is not None:
        _refuse(storage_differences(history, row))
    try:
        secret = vault.keystore.get(f"storage:{row.age_recipient}")
    except KeyMissingError:
        secret = b""
    if len(secret) != 32 or str(AgeIdentity.from_raw(secret).recipient) != row.age_recipient:
        _refuse([f"storage key {row.age_recipient}: is not the public half of the storage key "
                 "in the key store"])


def check_body(vault: Vault, session: Session, body: Body) -> None:
    """Before encrypting to a body's keys: every row of the body is the history's."""
    history = _trusted(vault, session)
    if history is not None:
        _refuse(body_differences(history, body.id, body.keys))


def check_senders(vault: Vault, session: Session) -> None:
    """Before trusting a signature by a known sender: every contact, body key and identity
    row is the history's (a contact added or a revocation cleared in the table is not)."""
    history = _trusted(vault, session)
    if history is None:
        return
    found = contact_differences(history, session.scalars(select(Contact)).all())
    for body in session.scalars(select(Body).order_by(Body.id)):
        found += body_differences(history, body.id, body.keys)
    for identity in session.scalars(select(Identity).order_by(Identity.id)):
        found += identity_differences(history, identity)
    _refuse(found)


def check_actor(vault: Vault, session: Session, key: IdentityKey) -> None:
    """Before an identity acts: its rows are the history's (a revocation cleared in the
    table is not a way back)."""
    history = _trusted(vault, session)
    if history is not None:
        _refuse(identity_differences(history, key.identity))


# ----------------------------------------------------------------------------- repair


def repair(vault: Vault, session: Session) -> list[str]:
    """Rewrite the key tables from the verified history; returns what differed.

    Rows the history has are set to it; body keys and contacts it lacks are removed and
    those it has are added back (an identity or its keys are not invented: those stay
    reported). Refused if the history itself has defects: nothing to repair from then.
    """
    history = load(vault, session)
    if history.anchor is None:
        raise UsageError("key history: no trust anchor in the key store; nothing to repair from")
    if history.defects:
        seq, message = history.defects[0]
        raise VerificationError(
            f"custody log: event {seq}: {message}; the key tables cannot be repaired from it"
        )
    changed = differences(history, session)
    if changed:
        _repair_identities(history, session)
        _repair_body_keys(history, session)
        _repair_contacts(history, session)
        _repair_storage(history, session)
        session.flush()
    return changed


def _repair_identities(history: KeyHistory, session: Session) -> None:
    for identity in session.scalars(select(Identity)):
        if identity.name in history.identities:
            identity.revoked_at = history.identities[identity.name]
    for key in session.scalars(select(IdentityKey)):
        entry = history.identity_keys.get(key.fingerprint)
        if entry is not None:
            key.signing_key, key.age_recipient = entry.signing_key, entry.age_recipient
            key.created_at, key.retired_at = entry.created_at, entry.retired_at
            key.revoked_at = entry.revoked_at


def _repair_body_keys(history: KeyHistory, session: Session) -> None:
    present = set()
    for row in session.scalars(select(BodyKey)):
        entry = history.body_keys.get((row.body_id, row.fingerprint))
        if entry is None:
            session.delete(row)
            continue
        present.add((row.body_id, row.fingerprint))
        row.signing_key, row.age_recipient = entry.signing_key, entry.age_recipient
        row.revoked_at = entry.revoked_at
    for (body_id, fingerprint), entry in history.body_keys.items():
        if (body_id, fingerprint) not in present and session.get(Body, body_id) is not None:
            session.add(BodyKey(body_id=body_id, label=None, signing_key=entry.signing_key,
                                fingerprint=fingerprint, age_recipient=entry.age_recipient,
                                card=None, added_at=entry.added_at, revoked_at=entry.revoked_at))


def _repair_contacts(history: KeyHistory, session: Session) -> None:
    present = set()
    for row in session.scalars(select(Contact)):
        entry = history.contacts.get(row.fingerprint)
        if entry is None:
            session.delete(row)
            continue
        present.add(row.fingerprint)
        row.name = entry.owner
        row.signing_key, row.age_recipient = entry.signing_key, entry.age_recipient
        row.revoked_at = entry.revoked_at
    for fingerprint, entry in history.contacts.items():
        if fingerprint not in present:
            session.add(Contact(name=entry.owner, signing_key=entry.signing_key,
                                fingerprint=fingerprint, age_recipient=entry.age_recipient,
                                card="", added_at=entry.added_at, revoked_at=entry.revoked_at))


def _repair_storage(history: KeyHistory, session: Session) -> None:
    row = session.get(VaultKey, "storage")
    if history.storage is None or history.storage_created_at is None:
        if row is not None:
            session.delete(row)
    elif row is None:
        session.add(VaultKey(purpose="storage", age_recipient=history.storage,
                             created_at=history.storage_created_at))
    else:
        row.age_recipient = history.storage
