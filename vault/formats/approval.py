"""Approval requests (made by the sender) and approvals (made by each approver).

    >>> from vault.crypto.keys import SigningKey
    >>> registry, counsel = SigningKey.generate(), SigningKey.generate()
    >>> items = (ReceiptItem("EV-0123456789AB", 5, "ab" * 32),)
    >>> request = ApprovalRequest(
    ...     request_id="APR-0123456789AB", body="ICC-OTP", items=items,
    ...     selection_sha256=selection_digest("ICC-OTP", items),
    ...     purpose="Disclosure under OTP-CR-2026/114",
    ...     requester=Party("registry", registry.public.fingerprint),
    ...     origin="evault/0123456789abcdef", created_at="2026-11-27T09:00:00Z")
    >>> request_bytes = request.to_bytes()
    >>> request_sig = sign_document(request_bytes, registry, APPROVAL_REQUEST_NAMESPACE)
    >>> verify_request(request_bytes, request_sig, [registry.public]) == request
    True
    >>> approval = Approval(
    ...     request_id=request.request_id,
    ...     request_sha256=hashlib.sha256(request_bytes).hexdigest(),
    ...     body=request.body, selection_sha256=request.selection_sha256,
    ...     decision=APPROVE, reason=None,
    ...     approver=Party("state-legal", counsel.public.fingerprint),
    ...     signed_at="2026-11-27T11:00:00Z")
    >>> data = approval.to_bytes()
    >>> signature = sign_document(data, counsel, APPROVAL_NAMESPACE)
    >>> verify_approval(data, signature, [counsel.public]) == approval
    True

What is approved is a *selection*: one body and a set of items, each by id and SHA-256
(:func:`selection_digest`). An **approval request** names the selection, why it would be
released (``purpose``, one line) and who asks; an **approval** is one approver's signed
decision (approve, or refuse with a reason) on exactly that request and selection. Changing
any item or the body changes the selection's digest, so an approval of another selection
never counts for this one. Neither document has room for a title, a description or a file
name: the free text is one line of ``purpose`` or ``reason``.

Both are canonical JSON, signed as they are with SSHSIG (namespaces
:data:`APPROVAL_REQUEST_NAMESPACE` and :data:`APPROVAL_NAMESPACE`), so ``ssh-keygen -Y
verify`` checks them; parsing is as strict as :mod:`vault.formats.receipt`'s, with the same
field rules (:mod:`vault.formats.package.rules`) and strict readers
(:mod:`vault.formats.package.strict`).

Imports: :mod:`vault.formats.receipt` (``ReceiptItem``, ``sign_document``),
:mod:`vault.formats.package.parties`, ``.rules`` and ``.strict``,
:mod:`vault.formats.canonical`, :mod:`vault.names`, :mod:`vault.crypto`, :mod:`vault.errors`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from vault.crypto.keys import VerifyKey
from vault.errors import UsageError
from vault.formats.canonical import canonical_json
from vault.formats.package.parties import Party
from vault.formats.package.rules import (
    FORMAT_VERSION,
    check_header,
    check_line,
    check_sha256,
    check_text,
    check_time,
    check_tuple,
    check_unique_ids,
    fail,
)
from vault.formats.package.strict import (
    finish_bytes,
    load_document,
    peek_id,
    read_party,
    reading,
    require_canonical,
    verify_document,
)
from vault.formats.receipt import ReceiptItem, read_items, sign_document
from vault.names import APPROVAL_REQUEST_ID, BODY_ID, ITEM_ID

__all__ = [
    "APPROVAL_NAMESPACE",
    "APPROVAL_REQUEST_NAMESPACE",
    "APPROVAL_REQUEST_TYPE",
    "APPROVAL_TYPE",
    "APPROVE",
    "DECISIONS",
    "MAX_ORIGIN",
    "MAX_SELECTION",
    "REFUSE",
    "Approval",
    "ApprovalRequest",
    "Party",
    "ReceiptItem",
    "selection_digest",
    "sign_document",
    "verify_approval",
    "verify_request",
]

APPROVAL_REQUEST_NAMESPACE = "evault-approval-request"
APPROVAL_NAMESPACE = "evault-approval"
APPROVAL_REQUEST_TYPE = "evault-approval-request"
APPROVAL_TYPE = "evault-approval"
APPROVE = "approve"
REFUSE = "refuse"
DECISIONS = (APPROVE, REFUSE)
MAX_SELECTION = 100_000
"""The most items one request may name (a package holds no more either)."""
MAX_ORIGIN = 128
"""The most UTF-8 bytes of a request's ``origin`` (the sending vault's log, ``evault/<id>``)."""


class Selected(Protocol):
    """Anything that names an item by id and SHA-256 (a ReceiptItem, a statement's item)."""

    @property
    def id(self) -> str: ...

    @property
    def sha256(self) -> str: ...


def selection_digest(body: str, items: Iterable[Selected]) -> str:
    """The SHA-256 (hex) of a selection: ``body`` and each item's id and SHA-256.

    It is the digest of the canonical JSON ``{"body": BODY, "items": [{"id": ID, "sha256":
    HEX}, ...]}`` with the items sorted by id, so the order they are given in does not
    matter; sizes are not part of it (the SHA-256 fixes the content). A bad body id, item id
    or digest, an item named twice or no item at all is a UsageError.
    """
    BODY_ID.check(body, "selection: body")
    pairs: dict[str, str] = {}
    for item in items:
        ITEM_ID.check(item.id, "selection: item id")
        check_sha256(item.sha256, f"selection: item {item.id}: sha256")
        if item.id in pairs:
            raise UsageError(f"selection: item {item.id} is listed twice")
        pairs[item.id] = item.sha256
    if not pairs:
        raise UsageError("selection: names no item")
    listed = [{"id": i, "sha256": pairs[i]} for i in sorted(pairs)]
    return hashlib.sha256(canonical_json({"body": body, "items": listed})).hexdigest()


def _check_origin(value: object, where: str) -> None:
    text = check_text(value, where, limit=MAX_ORIGIN)
    # A log's name, as custody notes carry it: one printable word, so it can neither forge
    # a line in a report nor hide a second name after a space.
    if not text or not text.isprintable() or any(c.isspace() for c in text):
        raise fail(where, f"a log origin such as evault/<vault-id> (1 to {MAX_ORIGIN} bytes, "
                   "printable, no spaces)")


@dataclass(frozen=True)
class ApprovalRequest:
    """The sender's signed request that approvers approve releasing a selection to a body.

    ``selection_sha256`` is :func:`selection_digest` of ``body`` and ``items``; a request
    whose digest does not match them cannot be made (UsageError) nor read
    (VerificationError). ``origin`` is the requesting vault's log, so that an approval
    coming back can be matched to the vault that asked.
    """

    request_id: str
    body: str
    items: tuple[ReceiptItem, ...]
    selection_sha256: str
    purpose: str
    requester: Party
    origin: str
    created_at: str
    format: str = APPROVAL_REQUEST_TYPE
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        what = "approval request"
        check_header(self, what, APPROVAL_REQUEST_TYPE)
        APPROVAL_REQUEST_ID.check(self.request_id, f"{what}: request_id")
        BODY_ID.check(self.body, f"{what}: body")
        check_tuple(self.items, ReceiptItem, f"{what}: items")
        if len(self.items) > MAX_SELECTION:
            raise UsageError(f"{what}: items must be at most {MAX_SELECTION}")
        check_unique_ids(self.items, what)
        check_sha256(self.selection_sha256, f"{what}: selection_sha256")
        # The digest is what approvals name: one that does not match the items would let an
        # approval of one selection be counted for another.
        if self.selection_sha256 != selection_digest(self.body, self.items):
            raise UsageError(
                f"{what}: selection_sha256 is not the digest of its body and items"
            )
        check_line(self.purpose, f"{what}: purpose")
        if not isinstance(self.requester, Party):
            raise fail(f"{what}: requester", "a Party")
        _check_origin(self.origin, f"{what}: origin")
        check_time(self.created_at, f"{what}: created_at")

    def to_bytes(self) -> bytes:
        """The canonical JSON bytes: what is signed and what is written to disk."""
        return finish_bytes(
            {
                "type": self.format,
                "version": self.version,
                "request_id": self.request_id,
                "body": self.body,
                "items": [i.to_json() for i in self.items],
                "selection_sha256": self.selection_sha256,
                "purpose": self.purpose,
                "requester": self.requester.to_json(),
                "origin": self.origin,
                "created_at": self.created_at,
            },
            "approval request",
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ApprovalRequest:
        """Parse approval request bytes strictly; raise VerificationError naming the rule."""
        what = "approval request"
        obj = load_document(data, what, APPROVAL_REQUEST_TYPE, _REQUEST_FIELDS)
        with reading(what):
            request = cls(
                version=obj["version"],
                request_id=obj["request_id"],
                body=obj["body"],
                items=read_items(obj["items"], what),
                selection_sha256=obj["selection_sha256"],
                purpose=obj["purpose"],
                requester=read_party(obj["requester"], what, "requester"),
                origin=obj["origin"],
                created_at=obj["created_at"],
            )
        require_canonical(request.to_bytes(), data, what)
        return request


_REQUEST_FIELDS = (
    "request_id",
    "body",
    "items",
    "selection_sha256",
    "purpose",
    "requester",
    "origin",
    "created_at",
)


@dataclass(frozen=True)
class Approval:
    """One approver's signed decision on one approval request.

    ``request_sha256`` is the SHA-256 of the request's exact bytes; ``body`` and
    ``selection_sha256`` are copied from it, so the approval says what it approves without
    the request at hand. ``decision`` is :data:`APPROVE` (``reason`` None) or :data:`REFUSE`
    (``reason`` one line of text, required).
    """

    request_id: str
    request_sha256: str
    body: str
    selection_sha256: str
    decision: str
    reason: str | None
    approver: Party
    signed_at: str
    format: str = APPROVAL_TYPE
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        what = "approval"
        check_header(self, what, APPROVAL_TYPE)
        APPROVAL_REQUEST_ID.check(self.request_id, f"{what}: request_id")
        check_sha256(self.request_sha256, f"{what}: request_sha256")
        BODY_ID.check(self.body, f"{what}: body")
        check_sha256(self.selection_sha256, f"{what}: selection_sha256")
        if not isinstance(self.decision, str) or self.decision not in DECISIONS:
            raise fail(f"{what}: decision", f"{APPROVE!r} or {REFUSE!r}")
        if self.decision == REFUSE:
            # A refusal is shown to the sender as the reason nothing was released.
            if self.reason is None:
                raise UsageError(f"{what}: a refusal needs a reason")
            check_line(self.reason, f"{what}: reason")
        elif self.reason is not None:
            raise UsageError(f"{what}: an approval has no reason (reason must be null)")
        if not isinstance(self.approver, Party):
            raise fail(f"{what}: approver", "a Party")
        check_time(self.signed_at, f"{what}: signed_at")

    def to_bytes(self) -> bytes:
        """The canonical JSON bytes: what is signed and what is written to disk."""
        return finish_bytes(
            {
                "type": self.format,
                "version": self.version,
                "request_id": self.request_id,
                "request_sha256": self.request_sha256,
                "body": self.body,
                "selection_sha256": self.selection_sha256,
                "decision": self.decision,
                "reason": self.reason,
                "approver": self.approver.to_json(),
                "signed_at": self.signed_at,
            },
            "approval",
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Approval:
        """Parse approval bytes strictly; raise VerificationError naming the rule."""
        what = "approval"
        obj = load_document(data, what, APPROVAL_TYPE, _APPROVAL_FIELDS)
        with reading(what):
            approval = cls(
                version=obj["version"],
                request_id=obj["request_id"],
                request_sha256=obj["request_sha256"],
                body=obj["body"],
                selection_sha256=obj["selection_sha256"],
                decision=obj["decision"],
                reason=obj["reason"],
                approver=read_party(obj["approver"], what, "approver"),
                signed_at=obj["signed_at"],
            )
        require_canonical(approval.to_bytes(), data, what)
        return approval


_APPROVAL_FIELDS = (
    "request_id",
    "request_sha256",
    "body",
    "selection_sha256",
    "decision",
    "reason",
    "approver",
    "signed_at",
)


# -- verifying -----------------------------------------------------------------------------


def verify_request(
    data: bytes, signature: str | bytes, trusted: Iterable[VerifyKey]
) -> ApprovalRequest:
    """Verify an approval request's SSHSIG (namespace evault-approval-request) by a key in
    ``trusted`` over exactly ``data``, parse it strictly and check the signer is its
    requester."""
    request_id = peek_id(data, "request_id", APPROVAL_REQUEST_ID)
    return verify_document(
        data, signature, trusted, namespace=APPROVAL_REQUEST_NAMESPACE, what="approval request",
        label=f"approval request {request_id}" if request_id else "approval request",
        parse=ApprovalRequest.from_bytes, party=lambda r: r.requester, role="requester")


def verify_approval(
    data: bytes, signature: str | bytes, trusted: Iterable[VerifyKey]
) -> Approval:
    """Verify an approval's SSHSIG (namespace evault-approval) by a key in ``trusted`` over
    exactly ``data``, parse it strictly and check the signer is the approver named inside."""
    request_id = peek_id(data, "request_id", APPROVAL_REQUEST_ID)
    return verify_document(
        data, signature, trusted, namespace=APPROVAL_NAMESPACE, what="approval",
        label=f"approval of {request_id}" if request_id else "approval",
        parse=Approval.from_bytes, party=lambda a: a.approver, role="approver")
