"""Recipient bodies and their officers' keys.

    >>> add_body(vault, "ICC-OTP", name="International Criminal Court")     # doctest: +SKIP
    >>> add_body_key(vault, "ICC-OTP", card=Path("card.json").read_bytes())  # doctest: +SKIP
    >>> set_body_outbox(vault, "ICC-OTP", outbox="sftp://evidence@drop.example/in",
    ...                 host_key="SHA256:...")                                # doctest: +SKIP

A body has one or more keys, each an Ed25519 signing key (pinned by its ``SHA256:``
fingerprint) and an age recipient. Packages go to every active key of a body; a revoked key
receives nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.clock import isoformat, utcnow
from vault.crypto.age import AgeRecipient
from vault.crypto.keys import VerifyKey
from vault.errors import ConflictError, NotFoundError, UsageError, VerificationError
from vault.formats.card import load_card
from vault.formats.package.rules import check_fingerprint
from vault.names import NEW_BODY_ID
from vault.service.keyhistory import key_details
from vault.service.results import Result
from vault.service.vaults import Vault
from vault.store.models import Body, BodyKey


@dataclass(frozen=True, slots=True)
class BodyKeyInfo(Result):
    """Public view of one body key: an officer's signing key and age recipient, its dates."""

    fingerprint: str
    label: str | None
    signing_key: str
    age_recipient: str
    status: Literal["active", "revoked"]
    added_at: str
    revoked_at: str | None


@dataclass(frozen=True, slots=True)
class BodyInfo(Result):
    """Public view of a body; ``to_json()`` has the stable field names of ``--json``."""

    id: str
    name: str
    created_at: str
    active_keys: int
    keys: tuple[BodyKeyInfo, ...]
    #: The body's own outbox (a folder or an sftp:// drop), its SFTP server's pinned host
    #: key and the client key file for it (``evault body set``), if set.
    outbox: str | None = None
    host_key: str | None = None
    identity_file: str | None = None


def body_key_info(key: BodyKey) -> BodyKeyInfo:
    """The public view of a body key row."""
    return BodyKeyInfo(
        fingerprint=key.fingerprint,
        label=key.label,
        signing_key=VerifyKey(key.signing_key).openssh(),
        age_recipient=key.age_recipient,
        status="revoked" if key.revoked_at else "active",
        added_at=isoformat(key.added_at),
        revoked_at=isoformat(key.revoked_at) if key.revoked_at else None,
    )


def body_info(body: Body) -> BodyInfo:
    """The public view of a body row, with its keys."""
    return BodyInfo(
        id=body.id,
        name=body.name,
        created_at=isoformat(body.created_at),
        active_keys=sum(1 for k in body.keys if k.revoked_at is None),
        keys=tuple(body_key_info(k) for k in body.keys),
        outbox=body.outbox,
        host_key=body.outbox_host_key,
        identity_file=body.outbox_identity_file,
    )


def get_body(session: Session, body_id: str) -> Body:
    """The body with this id, or a NotFoundError that says how to list them."""
    body = session.get(Body, body_id)
    if body is None:
        raise NotFoundError(f"body {body_id}: not found; see `evault body list`")
    return body


def _log(
    vault: Vault,
    session: Session,
    as_name: str | None,
    action: str,
    body_id: str,
    details: dict[str, Any],
    now: datetime,
) -> None:
    from vault.service.custody import CustodyLog, actor_pair

    pair = actor_pair(vault, session, as_name)
    CustodyLog(vault, session).append(pair, action, body_id, details=details, now=now)


def add_body(
    vault: Vault,
    body_id: str,
    *,
    name: str,
    as_name: str | None = None,
    now: datetime | None = None,
) -> BodyInfo:
    """Register a recipient body."""
    NEW_BODY_ID.check(body_id)
    if not name.strip():
        raise UsageError(f"body {body_id}: --name must not be empty")
    with vault.transaction() as session:
        if session.get(Body, body_id) is not None:
            raise ConflictError(f"body {body_id}: exists already; see `evault body show {body_id}`")
        now = now or utcnow()
        body = Body(id=body_id, name=name.strip(), created_at=now)
        session.add(body)
        session.flush()
        _log(vault, session, as_name, "body.added", body_id, {}, now)
        return body_info(body)


def list_bodies(vault: Vault) -> list[BodyInfo]:
    """Every body, by id."""
    with vault.transaction() as session:
        return [body_info(b) for b in session.scalars(select(Body).order_by(Body.id))]


def show_body(vault: Vault, body_id: str) -> BodyInfo:
    """One body with its keys."""
    with vault.transaction() as session:
        return body_info(get_body(session, body_id))


@dataclass(frozen=True, slots=True)
class OutboxSet(Result):
    """A body's outbox after ``body set``; ``changed`` is False when it was so already
    (nothing was logged)."""

    body: str
    outbox: str | None
    host_key: str | None
    identity_file: str | None
    changed: bool


def set_body_outbox(
    vault: Vault,
    body_id: str,
    *,
    outbox: str | None = None,
    host_key: str | None = None,
    identity_file: Path | None = None,
    clear: bool = False,
    as_name: str | None = None,
    now: datetime | None = None,
) -> OutboxSet:
    """Set (or with ``clear``, remove) a body's own outbox: a folder, or an ``sftp://`` drop
    with its server's pinned host-key fingerprint and the client key file to log in with.

    Without ``outbox``, or with the body's current one, its pin and key file are kept
    unless given (to pin a new host key, say). Each
    change is a signed custody event ``body.outbox_set`` carrying the whole new setting.
    """
    from vault.service.outbox import parse_outbox, signed_outbox

    if clear and (outbox or host_key or identity_file):
        raise UsageError("body set: --clear-outbox goes alone")
    if host_key is not None:
        check_fingerprint(host_key, "--host-key")
    with vault.transaction() as session:
        body = get_body(session, body_id)
        # What is kept comes from the newest signed setting, not from columns a database
        # holder could have changed (a change here also puts right such columns).
        own, own_pin, own_key_file = signed_outbox(vault, session, body_id)
        if clear:
            new: tuple[str | None, str | None, str | None] = (None, None, None)
        else:
            text = outbox if outbox is not None else own
            if text is None:
                raise UsageError(f"body {body_id}: has no outbox yet; give --outbox DIR or "
                                 "sftp://user@host/path")
            target = parse_outbox(text)
            # The same outbox again (or none given): only what is given changes; another
            # outbox starts without the old one's pin and key file.
            keep = outbox is None or (own is not None
                                      and str(parse_outbox(own)) == str(target))
            pin = host_key or (own_pin if keep else None)
            key_file = (str(identity_file.absolute()) if identity_file is not None
                        else own_key_file if keep else None)
            if isinstance(target, Path):
                if host_key is not None or identity_file is not None:
                    raise UsageError("body set: --host-key and --identity-file go with an "
                                     "sftp:// outbox, not a folder")
                new = (str(target.absolute()), None, None)
            else:
                new = (str(target), pin, key_file)
        old = (own, own_pin, own_key_file)
        body.outbox, body.outbox_host_key, body.outbox_identity_file = new
        if new != old:
            details = {"outbox": new[0], "host_key": new[1], "identity_file": new[2]}
            _log(vault, session, as_name, "body.outbox_set", body_id, details, now or utcnow())
        return OutboxSet(body_id, *new, changed=new != old)


def add_body_key(
    vault: Vault,
    body_id: str,
    *,
    card: bytes | None = None,
    age_recipient: str | None = None,
    ssh_key: str | None = None,
    pin: str | None = None,
    age_pin: str | None = None,
    as_name: str | None = None,
    now: datetime | None = None,
) -> BodyKeyInfo:
    """Add an officer's key to a body, from a contact card or from the two public keys.

    ``pin`` is the SSH key's fingerprint obtained from the officer by another channel, and
    ``age_pin`` the age recipient's; a key whose fingerprint differs is refused. A card is
    signed by its SSH key, so ``pin`` covers its age recipient too; the two bare keys are
    bound by nothing, so pinning one of them requires pinning both.
    """
    label: str | None
    card_text: str | None
    if card is not None:
        if age_recipient or ssh_key:
            raise UsageError("body key add: give either --card or --age and --ssh, not both")
        parsed = load_card(card)
        signing, recipient, label, card_text = (
            parsed.signing_key,
            parsed.age_recipient,
            parsed.name,
            parsed.text,
        )
    else:
        if not (age_recipient and ssh_key):
            raise UsageError("body key add: give --card FILE, or both --age age1... and --ssh KEY")
        signing = VerifyKey.from_openssh(ssh_key)
        recipient = str(AgeRecipient.parse(age_recipient))
        parts = ssh_key.split(None, 2)
        label, card_text = (parts[2] if len(parts) > 2 else None), None
        if pin is not None and age_pin is None:
            raise UsageError(
                "body key add: --fingerprint pins only the --ssh key; give --age-fingerprint "
                "too (the officer's `evault identity show` prints it), or add their --card"
            )
    if pin is not None and pin != signing.fingerprint:
        raise VerificationError(
            f"body {body_id}: key fingerprint is {signing.fingerprint}, expected {pin}; "
            "do not add this key until its holder confirms the fingerprint"
        )
    age_fingerprint = AgeRecipient.parse(recipient).fingerprint
    if age_pin is not None and age_pin != age_fingerprint:
        raise VerificationError(
            f"body {body_id}: age key fingerprint is {age_fingerprint}, expected {age_pin}; "
            "do not add this key until its holder confirms the fingerprint"
        )
    with vault.transaction() as session:
        body = get_body(session, body_id)
        for existing in body.keys:
            if existing.fingerprint == signing.fingerprint:
                raise ConflictError(
                    f"body {body_id}: key {signing.fingerprint} is there already"
                    + (" (revoked)" if existing.revoked_at else "")
                )
        key = BodyKey(
            body=body,
            label=label,
            signing_key=signing.raw,
            fingerprint=signing.fingerprint,
            age_recipient=recipient,
            card=card_text,
            added_at=now or utcnow(),
        )
        session.add(key)
        session.flush()
        details = {**key_details(signing, key.age_recipient), "pinned": pin is not None}
        _log(vault, session, as_name, "body.key_added", body_id, details, key.added_at)
        return body_key_info(key)


def revoke_body_key(
    vault: Vault,
    body_id: str,
    fingerprint: str,
    *,
    as_name: str | None = None,
    now: datetime | None = None,
) -> BodyKeyInfo:
    """Revoke one key of a body: no package is encrypted to it from now on."""
    with vault.transaction() as session:
        body = get_body(session, body_id)
        for key in body.keys:
            if key.fingerprint == fingerprint:
                if key.revoked_at is not None:
                    raise ConflictError(
                        f"body {body_id}: key {fingerprint} revoked already, since "
                        f"{isoformat(key.revoked_at)}"
                    )
                key.revoked_at = now or utcnow()
                details = {"fingerprint": fingerprint}
                _log(vault, session, as_name, "body.key_revoked", body_id, details, key.revoked_at)
                return body_key_info(key)
        raise NotFoundError(
            f"body {body_id}: has no key {fingerprint}; see `evault body show {body_id}`"
        )
