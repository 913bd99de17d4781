"""Known senders from other organisations, pinned by fingerprint and revocable.

    >>> add_contact(vault, Path("office.card.json").read_bytes())  # doctest: +SKIP

A package opens only if its envelope is signed by a known sender: an active contact, a key
of a body added with ``evault body key add``, or a fingerprint the user names with
``--trust-sender``. Revoking a contact stops trusting new packages from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.clock import as_utc, isoformat, utcnow
from vault.crypto.keys import VerifyKey
from vault.errors import ConflictError, NotFoundError, VerificationError
from vault.formats.card import load_card
from vault.service.custody import CustodyLog, actor_pair
from vault.service.keyhistory import key_details
from vault.service.results import Result
from vault.service.vaults import Vault
from vault.store.models import BodyKey, Contact, IdentityKey

CONTACT_COLUMNS = ("name", "org", "fingerprint", "status", "added_at")


@dataclass(frozen=True, slots=True)
class ContactInfo(Result):
    """Public view of a contact; ``to_json()`` has the stable field names of ``--json``."""

    name: str
    org: str | None
    email: str | None
    fingerprint: str
    signing_key: str
    age_recipient: str
    status: Literal["active", "revoked"]
    added_at: str
    revoked_at: str | None


def contact_info(contact: Contact) -> ContactInfo:
    """The public view of a contact row."""
    return ContactInfo(
        name=contact.name,
        org=contact.org,
        email=contact.email,
        fingerprint=contact.fingerprint,
        signing_key=VerifyKey(contact.signing_key).openssh(contact.name),
        age_recipient=contact.age_recipient,
        status="revoked" if contact.revoked_at else "active",
        added_at=isoformat(contact.added_at),
        revoked_at=isoformat(contact.revoked_at) if contact.revoked_at else None,
    )


def add_contact(
    vault: Vault, card: bytes, *, pin: str | None = None, as_name: str | None = None,
    now: datetime | None = None,
) -> ContactInfo:
    """Add a sender from their contact card; ``pin`` is the fingerprint confirmed with them."""
    parsed = load_card(card)
    if pin is not None and pin != parsed.fingerprint:
        raise VerificationError(
            f"contact {parsed.name}: key fingerprint is {parsed.fingerprint}, expected {pin}; "
            "do not add this card until its holder confirms the fingerprint"
        )
    now = now or utcnow()
    with vault.transaction() as session:
        existing = session.scalar(select(Contact).where(Contact.fingerprint == parsed.fingerprint))
        if existing is not None:
            raise ConflictError(f"contact {existing.name}: key {parsed.fingerprint} is known "
                                "already")
        namesake = session.scalar(select(Contact).where(Contact.name == parsed.name,
                                                        Contact.revoked_at.is_(None)))
        if namesake is not None:
            raise ConflictError(
                f"contact {parsed.name}: a contact of that name has key {namesake.fingerprint} "
                f"already; a card under a known name is refused (revoke the old contact first "
                "if its holder confirms a new key)"
            )
        contact = Contact(name=parsed.name, org=parsed.org, email=parsed.email,
                          signing_key=parsed.signing_key.raw, fingerprint=parsed.fingerprint,
                          age_recipient=parsed.age_recipient, card=parsed.text, added_at=now)
        session.add(contact)
        CustodyLog(vault, session).append(
            actor_pair(vault, session, as_name), "contact.added", f"contact:{parsed.fingerprint}",
            details={"name": parsed.name,
                     **key_details(parsed.signing_key, parsed.age_recipient),
                     "pinned": pin is not None}, now=now,
        )
        return contact_info(contact)


def _find(session: Session, ref: str) -> Contact:
    stmt = select(Contact).where(
        (Contact.fingerprint == ref) | (Contact.name == ref)
    ).order_by(Contact.id)
    found = session.scalars(stmt).all()
    if not found:
        raise NotFoundError(f"contact {ref}: not found; see `evault contact list`")
    if len(found) > 1:
        raise ConflictError(f"contact {ref}: several contacts have this name; use the fingerprint")
    return found[0]


def list_contacts(vault: Vault) -> list[ContactInfo]:
    """All contacts, in the order they were added."""
    with vault.transaction() as session:
        return [contact_info(c) for c in session.scalars(select(Contact).order_by(Contact.id))]


def show_contact(vault: Vault, ref: str) -> ContactInfo:
    """One contact, by name or fingerprint."""
    with vault.transaction() as session:
        return contact_info(_find(session, ref))


def revoke_contact(
    vault: Vault, ref: str, *, as_name: str | None = None, now: datetime | None = None
) -> ContactInfo:
    """Stop trusting a contact's key for new packages."""
    now = now or utcnow()
    with vault.transaction() as session:
        contact = _find(session, ref)
        if contact.revoked_at is not None:
            raise ConflictError(f"contact {contact.name}: revoked already, since "
                                f"{isoformat(contact.revoked_at)}")
        contact.revoked_at = now
        CustodyLog(vault, session).append(
            actor_pair(vault, session, as_name), "contact.revoked",
            f"contact:{contact.fingerprint}", details={"fingerprint": contact.fingerprint},
            now=now,
        )
        return contact_info(contact)


def known_senders(session: Session, *, at: datetime | None = None) -> dict[str, VerifyKey]:
    """Fingerprint -> key of every sender this vault trusts now (or at time ``at``).

    Active contacts, keys of bodies (not revoked), and this vault's own identities' keys
    (an office reopening what it sent with its escrow key).
    """
    keys: dict[str, VerifyKey] = {}

    def live(revoked: datetime | None) -> bool:
        return revoked is None or (at is not None and as_utc(at) <= as_utc(revoked))

    for c in session.scalars(select(Contact)):
        if live(c.revoked_at):
            keys[c.fingerprint] = VerifyKey(c.signing_key)
    for b in session.scalars(select(BodyKey)):
        if live(b.revoked_at):
            keys[b.fingerprint] = VerifyKey(b.signing_key)
    for k in session.scalars(select(IdentityKey)):
        if live(k.revoked_at):
            keys[k.fingerprint] = VerifyKey(k.signing_key)
    return keys
