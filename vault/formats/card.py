"""Contact cards: the public keys of one identity, self-signed so that tampering shows.

    >>> from vault.crypto.keys import SigningKey
    >>> from vault.crypto.age import AgeIdentity
    >>> key, age = SigningKey.generate(), AgeIdentity.generate()
    >>> text = make_card("icc-officer", key, str(age.recipient), created_at="2026-11-28T09:00:00Z")
    >>> load_card(text).name
    'icc-officer'

A card is a JSON object; ``signature`` is an SSHSIG (namespace ``evault-card``) by the card's
own signing key over the canonical JSON of every other field. A valid self-signature proves
the card is whole, not who made it: pin the fingerprint (``--fingerprint``) you got from the
holder by another channel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from vault.crypto import sshsig
from vault.crypto.age import AgeRecipient
from vault.crypto.keys import SigningKey, VerifyKey
from vault.errors import VaultError, VerificationError
from vault.formats.canonical import canonical_json, parse_json_object

CARD_TYPE = "evault-contact-card"
CARD_VERSION = 1
NAMESPACE = "evault-card"
_FIELDS = (
    "type",
    "version",
    "name",
    "org",
    "email",
    "signing_key",
    "fingerprint",
    "age_recipient",
    "created_at",
)


@dataclass(frozen=True)
class ContactCard:
    """A verified contact card."""

    name: str
    org: str | None
    email: str | None
    signing_key: VerifyKey
    age_recipient: str
    created_at: str
    text: str

    @property
    def fingerprint(self) -> str:
        """The signing key's ``SHA256:`` fingerprint."""
        return self.signing_key.fingerprint


def _body(
    name: str,
    org: str | None,
    email: str | None,
    key: VerifyKey,
    age_recipient: str,
    created_at: str,
) -> dict[str, Any]:
    return {
        "type": CARD_TYPE,
        "version": CARD_VERSION,
        "name": name,
        "org": org,
        "email": email,
        "signing_key": key.openssh(),
        "fingerprint": key.fingerprint,
        "age_recipient": age_recipient,
        "created_at": created_at,
    }


def make_card(
    name: str,
    key: SigningKey,
    age_recipient: str,
    *,
    created_at: str,
    org: str | None = None,
    email: str | None = None,
) -> str:
    """The card's JSON text, self-signed with ``key``."""
    body = _body(name, org, email, key.public, age_recipient, created_at)
    signature = sshsig.sign(key, canonical_json(body), NAMESPACE)
    return json.dumps({**body, "signature": signature}, indent=2, ensure_ascii=False) + "\n"


def load_card(data: str | bytes) -> ContactCard:
    """Parse and verify a card; raise VerificationError if it is malformed or tampered."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    obj = parse_json_object(raw, "contact card", limit=64 * 1024)
    if obj.get("type") != CARD_TYPE:
        raise VerificationError("contact card: not an evault contact card (type field)")
    if obj.get("version") != CARD_VERSION:
        raise VerificationError(f"contact card: unsupported version {obj.get('version')!r}")
    unknown = set(obj) - set(_FIELDS) - {"signature"}
    if unknown:
        raise VerificationError(f"contact card: unknown field {sorted(unknown)[0]!r}")
    for name in ("name", "signing_key", "fingerprint", "age_recipient", "created_at", "signature"):
        if not isinstance(obj.get(name), str) or not obj[name]:
            raise VerificationError(f"contact card: field {name!r} is missing or not a string")
    for name in ("org", "email"):
        if obj.get(name) is not None and not isinstance(obj[name], str):
            raise VerificationError(f"contact card: field {name!r} must be a string")
    try:
        key = VerifyKey.from_openssh(obj["signing_key"])
        AgeRecipient.parse(obj["age_recipient"])
    except VaultError as e:
        raise VerificationError(f"contact card: {e}") from None
    if key.fingerprint != obj["fingerprint"]:
        raise VerificationError(
            "contact card: fingerprint field does not match its signing key; the card was altered"
        )
    body = {k: obj.get(k) for k in _FIELDS}
    try:
        sshsig.verify(obj["signature"], canonical_json(body), NAMESPACE, trusted=[key])
    except VerificationError:
        raise VerificationError(
            f"contact card {obj['name']}: self-signature does not verify; the card was altered"
        ) from None
    return ContactCard(
        name=obj["name"],
        org=obj.get("org"),
        email=obj.get("email"),
        signing_key=key,
        age_recipient=obj["age_recipient"],
        created_at=obj["created_at"],
        text=raw.decode("utf-8"),
    )
