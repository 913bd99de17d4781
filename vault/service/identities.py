"""Identities of this vault: create, list, show, export a contact card (or, on request, the
age secret key), rotate, revoke.

    >>> created = create_identity(vault, "registry-office")  # doctest: +SKIP
    >>> created.fingerprint                                           # doctest: +SKIP
    'SHA256:...'

Each identity has a current key pair (an Ed25519 signing key and an age X25519 key) and may
have older, retired ones kept for verifying and decrypting the past. Private halves go to
the key store under ``identity:<signing fingerprint>``; the database keeps public keys only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vault.clock import as_utc, isoformat, utcnow
from vault.crypto.age import AgeIdentity, AgeRecipient
from vault.crypto.keys import SigningKey, VerifyKey
from vault.errors import (
    ConflictError,
    KeyStoreError,
    NotFoundError,
    PolicyError,
    UsageError,
    VerificationError,
)
from vault.formats.card import make_card
from vault.names import IDENTITY_NAME
from vault.service import keyhistory
from vault.service.results import Result
from vault.service.vaults import Vault
from vault.store.models import CustodyEvent, Identity, IdentityKey


@dataclass(frozen=True)
class KeyPair:
    """An identity's private keys, fetched from the key store for one operation."""

    fingerprint: str
    signing: SigningKey
    age: AgeIdentity


def secret_name(fingerprint: str) -> str:
    """The key store name of an identity key pair."""
    return f"identity:{fingerprint}"


def check_name(name: str, what: str = "identity") -> None:
    """Names are short and safe in files and shells: letters, digits, ``.``, ``_`` and ``-``."""
    IDENTITY_NAME.check(name, what)


def current_key(identity: Identity) -> IdentityKey:
    """The key pair in use (not retired)."""
    for key in identity.keys:
        if key.retired_at is None:
            return key
    raise NotFoundError(f"identity {identity.name}: has no current key")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class IdentityKeyInfo(Result):
    """One key pair of an identity, current or retired: its public side and its dates."""

    fingerprint: str
    age_recipient: str
    created_at: str
    retired_at: str | None
    revoked_at: str | None


@dataclass(frozen=True, slots=True)
class IdentityInfo(Result):
    """The public view of an identity; ``to_json()`` has the stable field names of ``--json``.

    ``fingerprint``, ``signing_key`` (OpenSSH form) and ``age_recipient`` are those of the
    current key; ``keys`` lists every key pair, oldest first.
    """

    name: str
    org: str | None
    email: str | None
    default: bool
    status: Literal["active", "revoked"]
    fingerprint: str
    signing_key: str
    age_recipient: str
    age_fingerprint: str
    created_at: str
    revoked_at: str | None
    keys: tuple[IdentityKeyInfo, ...]


@dataclass(frozen=True, slots=True)
class IdentityDetail(Result):
    """An identity as ``evault identity show`` has it: its public view and the signed-note
    verifier key of its current key (``checkpoint_key``), which checks the checkpoints it
    signs."""

    identity: IdentityInfo
    checkpoint_key: str

    def to_json(self) -> dict[str, Any]:
        """The identity's JSON object with ``checkpoint_key`` appended (one flat object)."""
        return {**self.identity.to_json(), "checkpoint_key": self.checkpoint_key}


def identity_info(identity: Identity) -> IdentityInfo:
    """The public view of an identity row."""
    key = current_key(identity)
    return IdentityInfo(
        name=identity.name,
        org=identity.org,
        email=identity.email,
        default=identity.is_default,
        status="revoked" if identity.revoked_at else "active",
        fingerprint=key.fingerprint,
        signing_key=VerifyKey(key.signing_key).openssh(identity.name),
        age_recipient=key.age_recipient,
        age_fingerprint=AgeRecipient.parse(key.age_recipient).fingerprint,
        created_at=isoformat(identity.created_at),
        revoked_at=isoformat(identity.revoked_at) if identity.revoked_at else None,
        keys=tuple(
            IdentityKeyInfo(
                fingerprint=k.fingerprint,
                age_recipient=k.age_recipient,
                created_at=isoformat(k.created_at),
                retired_at=isoformat(k.retired_at) if k.retired_at else None,
                revoked_at=isoformat(k.revoked_at) if k.revoked_at else None,
            )
            for k in identity.keys
        ),
    )


def get_identity(session: Session, name: str | None) -> Identity:
    """The named identity, or the vault's default when ``name`` is None."""
    if name is None:
        found = session.scalar(select(Identity).where(Identity.is_default.is_(True)))
        if found is None:
            raise NotFoundError("no identity in this vault: run `evault identity create NAME`")
        return found
    found = session.scalar(select(Identity).where(Identity.name == name))
    if found is None:
        raise NotFoundError(f"identity {name}: not found; see `evault identity list`")
    return found


def identity_count(session: Session) -> int:
    """How many identities this vault has (revoked ones included)."""
    return int(session.scalar(select(func.count()).select_from(Identity)) or 0)


def acting_identity(session: Session, name: str | None) -> Identity:
    """The identity a command acts as; a revoked one may not act."""
    identity = get_identity(session, name)
    if identity.revoked_at is not None:
        raise PolicyError(
            f"identity {identity.name}: revoked since {isoformat(identity.revoked_at)}; "
            "act as another identity with --as"
        )
    return identity


def load_keypair(vault: Vault, key: IdentityKey) -> KeyPair:
    """Fetch a key pair's private halves from the key store and check they match the row."""
    secret = vault.keystore.get(secret_name(key.fingerprint))
    if len(secret) != 64:
        raise KeyStoreError(f"key store: entry for {key.fingerprint} is damaged")
    signing = SigningKey.from_seed(secret[:32])
    age = AgeIdentity.from_raw(secret[32:])
    if signing.public.fingerprint != key.fingerprint or str(age.recipient) != key.age_recipient:
        raise KeyStoreError(f"key store: entry for {key.fingerprint} does not match the vault")
    return KeyPair(key.fingerprint, signing, age)


def _new_key(vault: Vault, identity: Identity, now: datetime) -> tuple[IdentityKey, KeyPair]:
    signing, age = SigningKey.generate(), AgeIdentity.generate()
    key = IdentityKey(
        identity=identity,
        signing_key=signing.public.raw,
        fingerprint=signing.public.fingerprint,
        age_recipient=str(age.recipient),
        created_at=now,
    )
    # The key store first: if it refuses, the transaction rolls back and no row names a key
    # that does not exist. A crash between the two leaves an unused secret, never a lost one.
    vault.keystore.put(secret_name(key.fingerprint), signing.seed() + age.raw())
    return key, KeyPair(key.fingerprint, signing, age)


def create_identity(
    vault: Vault,
    name: str,
    *,
    org: str | None = None,
    email: str | None = None,
    as_name: str | None = None,
    now: datetime | None = None,
) -> IdentityInfo:
    """Create an identity with fresh keys; the first one becomes the vault's default.

    The first identity signs its own creation, the first event of the key history, which
    also introduces the vault's storage key; the key store then keeps its fingerprint as the
    history's anchor. Every later identity is introduced by an existing one (``as_name``,
    else the default), so that a key enters the history only through a key already in it.
    """
    check_name(name)
    now = now or utcnow()
    anchor: keyhistory.Anchor | None = None
    with vault.transaction() as session:
        if session.scalar(select(Identity.id).where(Identity.name == name)) is not None:
            raise ConflictError(f"identity {name}: exists already; choose another name")
        is_first = session.scalar(select(Identity.id).limit(1)) is None
        if is_first:
            _refuse_restart(vault)
        introducer = None if is_first else _checked_pair(vault, session, as_name)
        identity = Identity(name=name, org=org, email=email, is_default=is_first, created_at=now)
        session.add(identity)
        key, pair = _new_key(vault, identity, now)
        session.add(key)
        session.flush()
        details = keyhistory.key_details(pair.signing.public, key.age_recipient)
        if is_first:
            details["storage_recipient"] = _new_storage_key(vault, session, now)
        row = _log(vault, session, introducer or pair, "identity.created", identity, now,
                   details)
        if is_first:
            anchor = keyhistory.Anchor(row.seq, key.fingerprint)
        result = identity_info(identity)
    if anchor is not None:
        keyhistory.record_anchor(vault, anchor)
    return result


def _refuse_restart(vault: Vault) -> None:
    """A first identity may not start a second key history: an identity table emptied by a
    database holder must not get the key store's anchor (and all it trusts) replaced."""
    anchor = keyhistory.read_anchor(vault)
    if anchor is not None:
        raise VerificationError(
            f"identities: the table is empty, but the key store's key history starts at "
            f"event {anchor.seq} by {anchor.fingerprint}; restore the database from a backup "
            "and run `evault custody verify`"
        )


def _new_storage_key(vault: Vault, session: Session, now: datetime) -> str:
    """The vault's storage key, made with its first identity: blobs are encrypted to it."""
    from vault.store.models import VaultKey

    identity = AgeIdentity.generate()
    recipient = str(identity.recipient)
    vault.keystore.put(f"storage:{recipient}", identity.raw())
    session.add(VaultKey(purpose="storage", age_recipient=recipient, created_at=now))
    return recipient


def list_identities(vault: Vault) -> list[IdentityInfo]:
    """Every identity, in creation order."""
    with vault.transaction() as session:
        return [identity_info(i) for i in session.scalars(select(Identity).order_by(Identity.id))]


def show_identity(vault: Vault, name: str | None) -> IdentityDetail:
    """One identity (the default when ``name`` is None), with the signed-note verifier key of
    its current key (``checkpoint_key``), which checks the checkpoints it signs."""
    from vault.custody.note import NoteVerifier
    from vault.service.custody import origin

    with vault.transaction() as session:
        identity = get_identity(session, name)
        public = VerifyKey(current_key(identity).signing_key)
        checkpoint_key = NoteVerifier.for_key(origin(vault), public).vkey()
        return IdentityDetail(identity_info(identity), checkpoint_key)


def export_card(vault: Vault, name: str | None) -> str:
    """The identity's public contact card, self-signed with its current key."""
    with vault.transaction() as session:
        identity = get_identity(session, name)
        if identity.revoked_at is not None:
            raise PolicyError(f"identity {identity.name}: revoked; its card may not be handed out")
        key = current_key(identity)
        pair = load_keypair(vault, key)
        return make_card(
            identity.name,
            pair.signing,
            key.age_recipient,
            created_at=isoformat(key.created_at),
            org=identity.org,
            email=identity.email,
        )


@dataclass(frozen=True)
class SecretKeyExport:
    """What ``export_secret_age_key`` did: which key, and the identity file's text when it
    goes to stdout (``None`` when it was written to a file)."""

    name: str
    fingerprint: str
    generation: int
    age_recipient: str
    text: str | None


def export_secret_age_key(
    vault: Vault, name: str | None, output: Path | None, *, now: datetime | None = None
) -> SecretKeyExport:
    """Export the identity's current age secret key as an age identity file.

    ``output`` is a new file (written atomically with mode 0600, never replacing one), or
    ``None`` for the text to be printed by the caller. Either way a signed custody event
    ``identity.secret_exported`` records which key generation left the key store; the key
    itself goes nowhere else. The file appears only if the event is committed.
    """
    from vault.durable import discard_staged, publish_staged, stage_files

    now = now or utcnow()
    if output is not None and (output.exists() or output.is_symlink()):
        raise UsageError(f"{output} exists; choose another file (a secret key never replaces one)")
    published: Path | None = None
    try:
        with vault.transaction() as session:
            identity = get_identity(session, name)
            if identity.revoked_at is not None:
                raise PolicyError(
                    f"identity {identity.name}: revoked; its secret key may not be exported"
                )
            key = current_key(identity)
            generation = identity.keys.index(key) + 1
            # Its rows checked against the signed key history (a revocation cleared in the
            # table is not a way back), as for every identity that acts.
            pair = _checked_pair(vault, session, identity.name)
            text = pair.age.identity_file(isoformat(now))
            staged = stage_files([(output, text.encode("ascii"))], mode=0o600) if output else []
            try:
                _log(vault, session, pair, "identity.secret_exported", identity, now,
                     {"fingerprint": key.fingerprint, "generation": generation,
                      "age_recipient": key.age_recipient,
                      "destination": "file" if output else "stdout"})
            except BaseException:
                discard_staged(staged)
                raise
            if output is not None:
                publish_staged(staged)
                published = output
            result = SecretKeyExport(identity.name, key.fingerprint, generation,
                                     key.age_recipient, None if output else text)
    except FileExistsError:
        raise UsageError(f"{output} exists; choose another file") from None
    except BaseException:
        # The event was not committed: the key file must not outlive it.
        if published is not None:
            published.unlink(missing_ok=True)
        raise
    return result


def rotate_identity(
    vault: Vault, name: str | None, *, now: datetime | None = None
) -> IdentityInfo:
    """New keys for an identity; the old ones stay for verifying and decrypting the past."""
    now = now or utcnow()
    with vault.transaction() as session:
        identity = acting_identity(session, name)
        old = current_key(identity)
        old_pair = _checked_pair(vault, session, identity.name)
        old.retired_at = now
        key, _pair = _new_key(vault, identity, now)
        session.add(key)
        session.flush()
        session.refresh(identity)
        # Signed by the outgoing key, so the step from old to new is itself attested.
        _log(vault, session, old_pair, "identity.rotated", identity, now,
             {"previous": old.fingerprint,
              **keyhistory.key_details(_pair.signing.public, key.age_recipient)},
             ending=[old.fingerprint])
        return identity_info(identity)


def revoke_identity(
    vault: Vault, name: str, *, as_name: str | None = None, now: datetime | None = None
) -> IdentityInfo:
    """Stop all new use of an identity; what it signed before still verifies.

    The revocation is signed by ``as_name`` when given, else by the identity itself at the
    moment of revocation: the last thing its keys sign.
    """
    now = now or utcnow()
    with vault.transaction() as session:
        identity = get_identity(session, name)
        if identity.revoked_at is not None:
            raise ConflictError(
                f"identity {name}: revoked already, since {isoformat(identity.revoked_at)}"
            )
        actor = acting_identity(session, as_name) if as_name else identity
        pair = _checked_pair(vault, session, actor.name)
        _log(vault, session, pair, "identity.revoked", identity, now,
             {"fingerprints": [k.fingerprint for k in identity.keys]},
             ending=[k.fingerprint for k in identity.keys])
        identity.revoked_at = now
        for key in identity.keys:
            if key.revoked_at is None:
                key.revoked_at = now
        return identity_info(identity)


def _checked_pair(vault: Vault, session: Session, name: str | None) -> KeyPair:
    """The acting identity's keys, its rows checked against the signed key history."""
    identity = acting_identity(session, name)
    keyhistory.check_actor(vault, session, current_key(identity))
    return load_keypair(vault, current_key(identity))


def _log(
    vault: Vault,
    session: Session,
    pair: KeyPair,
    action: str,
    identity: Identity,
    now: datetime,
    details: dict[str, Any],
    *,
    ending: Sequence[str] = (),
) -> CustodyEvent:
    """Append the identity's event. ``ending``: the keys it revokes or retires at ``now``,
    which must have signed nothing dated later (another machine's clock ahead of this
    one's): such an event would fail `custody verify` for good once they end before it."""
    from vault.service.custody import CustodyLog

    log = CustodyLog(vault, session)  # the head locked: no key signs meanwhile
    if ending:
        seq, latest = session.execute(
            select(CustodyEvent.seq, CustodyEvent.recorded_at)
            .where(CustodyEvent.actor.in_(list(ending)))
            .order_by(CustodyEvent.recorded_at.desc(), CustodyEvent.seq.desc()).limit(1)
        ).one_or_none() or (None, None)
        if latest is not None and as_utc(latest) > as_utc(now):
            raise ConflictError(
                f"identity {identity.name}: its key signed event {seq} at "
                f"{isoformat(latest)}, later than this machine's time {isoformat(now)} (a "
                "clock behind another machine's?); nothing was recorded: check this "
                "machine's clock, or wait until then, and run the command again")
    return log.append(pair, action, f"identity:{identity.name}", details=details, now=now)
