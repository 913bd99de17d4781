"""Custody events: the canonical bytes an actor signs and the Merkle tree hashes as a leaf.

    >>> from datetime import datetime, timezone
    >>> event = Event(log="evault/0f1e", seq=0, time=datetime(2026, 11, 28, tzinfo=timezone.utc),
    ...               actor="SHA256:abc", action="case.created", subject="UA-2026-0042")
    >>> Event.decode(event.encode()) == event
    True

An event names its log (``evault/<vault-id>``) so that it cannot be replayed into another
vault's log, and its sequence number so that it cannot move within one. Titles, descriptions
and file names never go into an event: details carry ids, sizes, digests, labels and reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from vault.clock import isoformat, parse_iso
from vault.crypto.keys import SigningKey, VerifyKey
from vault.errors import VerificationError
from vault.formats.canonical import canonical_json, parse_json_object

EVENT_TYPE = "evault-custody-event"
EVENT_VERSION = 1

ACTIONS = frozenset(
    {
        "case.created",
        "item.ingested",
        "item.export.started",
        "item.exported",
        "item.export.abandoned",
        "item.received",
        "package.built",
        "package.sent",
        "package.acknowledged",
        "package.opened",
        "identity.created",
        "identity.rotated",
        "identity.revoked",
        "identity.secret_exported",
        "body.added",
        "body.key_added",
        "body.key_revoked",
        "body.outbox_set",
        "contact.added",
        "contact.revoked",
        "rule.changed",
        "storage.key_created",
        "keys.attested",
        "custody.reanchored",
        "checkpoint.timestamped",
        "approval.policy_changed",
        "approval.requested",
        "approval.signed",
        "approval.imported",
    }
)


@dataclass(frozen=True)
class Event:
    """One custody event, before or after signing."""

    log: str
    seq: int
    time: datetime
    actor: str
    action: str
    subject: str
    details: dict[str, Any] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON object with stable field names."""
        return {
            "type": EVENT_TYPE,
            "v": EVENT_VERSION,
            "log": self.log,
            "seq": self.seq,
            "time": isoformat(self.time),
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "details": self.details,
            "digests": self.digests,
        }

    def encode(self) -> bytes:
        """The canonical bytes that are signed, stored and hashed."""
        if self.action not in ACTIONS:
            raise ValueError(f"unknown custody action {self.action!r}")
        return canonical_json(self.to_dict())

    def sign(self, key: SigningKey) -> tuple[bytes, bytes]:
        """The canonical bytes and the actor's Ed25519 signature over them."""
        if key.public.fingerprint != self.actor:
            raise ValueError("the signing key is not the event's actor")
        body = self.encode()
        return body, key.sign(body)

    @classmethod
    def decode(cls, body: bytes) -> Event:
        """Parse stored bytes strictly; they must be exactly canonical."""
        obj = parse_json_object(body, "custody event", limit=1024 * 1024)
        if obj.get("type") != EVENT_TYPE or obj.get("v") != EVENT_VERSION:
            raise VerificationError("custody event: not an evault custody event of version 1")
        try:
            event = cls(
                log=_str(obj, "log"),
                seq=_int(obj, "seq"),
                time=parse_iso(_str(obj, "time")),
                actor=_str(obj, "actor"),
                action=_str(obj, "action"),
                subject=_str(obj, "subject"),
                details=_dict(obj, "details"),
                digests={str(k): str(v) for k, v in _dict(obj, "digests").items()},
            )
        except ValueError as e:
            raise VerificationError(f"custody event: {e}") from None
        if set(obj) != set(event.to_dict()):
            raise VerificationError("custody event: unexpected or missing fields")
        try:
            canonical = event.encode()
        except ValueError as e:  # an unknown action, a float or an over-large integer
            raise VerificationError(f"custody event: {e}") from None
        if canonical != body:
            raise VerificationError("custody event: bytes are not in canonical form")
        return event


def verify_event(body: bytes, signature: bytes, key: VerifyKey) -> None:
    """Raise VerificationError unless ``signature`` is ``key``'s over ``body``."""
    key.verify(signature, body)


def _str(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise ValueError(f"field {name!r} must be a string")
    return value


def _int(obj: dict[str, Any], name: str) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"field {name!r} must be a non-negative integer")
    return value


def _dict(obj: dict[str, Any], name: str) -> dict[str, Any]:
    value = obj.get(name)
    if not isinstance(value, dict):
        raise ValueError(f"field {name!r} must be an object")
    return value
