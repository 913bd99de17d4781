"""The parties a document names: :class:`Party` (who signs) and :class:`RecipientKey`.

One job: the two value objects every package document shares, each checking its fields on
construction, and :func:`check_recipients` for a document's list of recipient keys.

Imports: :mod:`.rules`, :mod:`vault.names`, :mod:`vault.crypto.age` (to check an age
recipient), :mod:`vault.errors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vault.crypto.age import AgeRecipient
from vault.errors import UsageError
from vault.formats.package.rules import check_fingerprint, check_tuple, fail
from vault.names import PARTY_NAME


@dataclass(frozen=True)
class Party:
    """Who signs a document: an identity name (not free text) and its signing key fingerprint."""

    name: str
    fingerprint: str

    def __post_init__(self) -> None:
        PARTY_NAME.check(self.name, "party: name")
        check_fingerprint(self.fingerprint, "party: fingerprint")

    def to_json(self) -> dict[str, Any]:
        """The JSON object form."""
        return {"name": self.name, "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class RecipientKey:
    """One key a payload is encrypted to: the holder's signing fingerprint and age recipient."""

    fingerprint: str
    age_recipient: str

    def __post_init__(self) -> None:
        check_fingerprint(self.fingerprint, "recipient key: fingerprint")
        if not isinstance(self.age_recipient, str):
            raise fail("recipient key: age_recipient", "an 'age1...' string")
        try:
            parsed = AgeRecipient.parse(self.age_recipient)
        except UsageError as e:
            raise UsageError(f"recipient key: age_recipient is not usable ({e})") from None
        # parse() forgives surrounding blanks; a document carries only the exact form.
        if parsed.encode() != self.age_recipient:
            raise fail("recipient key: age_recipient", "exactly the 'age1...' form")

    def to_json(self) -> dict[str, Any]:
        """The JSON object form."""
        return {"fingerprint": self.fingerprint, "age_recipient": self.age_recipient}


def check_recipients(recipients: object, escrow: object, where: str) -> None:
    check_tuple(recipients, RecipientKey, f"{where}: recipients")
    if not isinstance(escrow, RecipientKey):
        raise fail(f"{where}: escrow", "a RecipientKey")
    assert isinstance(recipients, tuple)
    # A body key listed twice is a broken key list, not a choice. The escrow key may
    # coincide with a body key (a package addressed to the sender's own office).
    if len({k.fingerprint for k in recipients}) != len(recipients):
        raise UsageError(f"{where}: a recipient fingerprint appears twice")
    if len({k.age_recipient for k in recipients}) != len(recipients):
        raise UsageError(f"{where}: an age recipient appears twice")

