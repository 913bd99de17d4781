"""Sharing receipts (made by the sender) and acknowledgements (made by the recipient).

    >>> from vault.crypto.keys import SigningKey
    >>> sender, officer = SigningKey.generate(), SigningKey.generate()
    >>> receipt = SharingReceipt(
    ...     receipt_id="RCP-0123456789AB", package_id="PKG-0123456789AB", body="ICC-OTP",
    ...     sender=Party("registry", sender.public.fingerprint),
    ...     recipients=(officer.public.fingerprint,),
    ...     items=(ReceiptItem("EV-0123456789AB", 5, "ab" * 32),),
    ...     envelope_sha256="cd" * 32, payload_sha256="ef" * 32,
    ...     reference=None, reference_sha256=reference_digest("OTP-CR-2026/114"),
    ...     sent_at="2026-11-28T09:00:00Z",
    ...     checkpoint="vault.example/custody\\n2\\nAAAA\\n\\n— vault.example/custody AAAA\\n")
    >>> data = receipt.to_bytes()
    >>> signature = sign_document(data, sender, RECEIPT_NAMESPACE)
    >>> verify_receipt(data, signature, [sender.public]) == receipt
    True

A **sharing receipt** records that a package went to a body: which items (ids, sizes,
SHA-256), encrypted to which keys (fingerprints), the digests of the envelope and payload,
and the sender's custody checkpoint after the send. An **acknowledgement** is the
recipient's signed word that it received the package whole: it repeats the envelope's and
the statement's digests and the items, with the recipient's own checkpoint. Neither has room
for a title, a description or a file name; the one free-text field is the receipt's
``reference`` (a case or letter reference), which may be replaced by its SHA-256
(:meth:`SharingReceipt.with_reference_hashed`) before the receipt is shown to anyone who
should not read it.

Both are canonical JSON, signed as they are with SSHSIG (namespaces
:data:`RECEIPT_NAMESPACE` and :data:`ACK_NAMESPACE`), so ``ssh-keygen -Y verify`` checks
them; parsing is as strict as :mod:`vault.formats.package`'s, with its field rules
(:mod:`vault.formats.package.rules`) and strict readers (:mod:`vault.formats.package.strict`).

Imports: :mod:`vault.formats.package.parties`, ``.rules`` and ``.strict``,
:mod:`vault.names`, :mod:`vault.crypto`, :mod:`vault.errors`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from vault.crypto import sshsig
from vault.crypto.keys import SigningKey, VerifyKey
from vault.errors import UsageError

# The field rules and strict-reading helpers are shared with the package documents: one
# definition of what an id, a digest, a fingerprint or a time looks like for every file
# that leaves the vault.
from vault.formats.package.parties import Party
from vault.formats.package.rules import (
    FORMAT_VERSION,
    MAX_REFERENCE,
    check_checkpoint,
    check_fingerprint,
    check_header,
    check_line,
    check_sha256,
    check_size,
    check_text,
    check_time,
    check_timestamps,
    check_tuple,
    check_unique_ids,
    fail,
)
from vault.formats.package.strict import (
    finish_bytes,
    load_document,
    peek_id,
    read_array,
    read_object,
    read_party,
    reading,
    require_canonical,
    verify_document,
)
from vault.formats.sftp_url import SftpUrl
from vault.names import BODY_ID, ITEM_ID, PACKAGE_ID, RECEIPT_ID

__all__ = [
    "ACKNOWLEDGEMENT_TYPE",
    "ACK_NAMESPACE",
    "ACK_VERSION",
    "RECEIPT_NAMESPACE",
    "SHARING_RECEIPT_TYPE",
    "Acknowledgement",
    "Destination",
    "Party",
    "ReceiptItem",
    "SharingReceipt",
    "reference_digest",
    "sign_document",
    "verify_ack",
    "verify_receipt",
]

RECEIPT_NAMESPACE = "evault-receipt"
ACK_NAMESPACE = "evault-ack"
SHARING_RECEIPT_TYPE = "evault-sharing-receipt"
ACKNOWLEDGEMENT_TYPE = "evault-acknowledgement"
ACK_VERSION = 2
"""Acknowledgements carry the sender's cosigned checkpoint from version 2 on, and RFC 3161
tokens over the recipient's checkpoint in version 3 (written only when there are tokens);
1 and 2 are still read."""
RECEIPT_VERSION_TIMESTAMPED = 2
"""Sharing receipts carry RFC 3161 tokens over their checkpoint in version 2 (written only
when there are tokens); version 1 is still written without and read."""
RECEIPT_VERSION_DESTINATION = 3
"""Sharing receipts name the SFTP drop a package was uploaded to, and the server's host key,
in version 3 (``destination``; written only for an SFTP delivery, with or without tokens:
``timestamps`` may be empty from this version on); versions 1 and 2 are still written for
folder deliveries and read."""


@dataclass(frozen=True)
class ReceiptItem:
    """One item as a receipt names it: id, size and SHA-256, nothing more."""

    id: str
    size: int
    sha256: str

    def __post_init__(self) -> None:
        ITEM_ID.check(self.id, "receipt item: id")
        check_size(self.size, f"receipt item {self.id}: size")
        check_sha256(self.sha256, f"receipt item {self.id}: sha256")

    def to_json(self) -> dict[str, Any]:
        """The JSON object form."""
        return {"id": self.id, "size": self.size, "sha256": self.sha256}


def reference_digest(reference: str) -> str:
    """The SHA-256 (hex) of a reference's UTF-8 bytes, as ``reference_sha256`` carries it."""
    text = check_text(reference, "reference", limit=MAX_REFERENCE)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Destination:
    """Where a package was delivered over SFTP: the drop's URL (no secret: it cannot carry
    a password) and the SHA-256 fingerprint of the host key the server proved it holds."""

    url: str
    host_key: str

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or str(SftpUrl.parse(self.url)) != self.url:
            raise fail("destination: url", "an sftp://user@host[:port]/path URL as written")
        check_fingerprint(self.host_key, "destination: host_key")

    def to_json(self) -> dict[str, Any]:
        """The JSON object form."""
        return {"url": self.url, "host_key": self.host_key}


@dataclass(frozen=True)
class SharingReceipt:
    """The sender's signed record that a package was shared with a body.

    ``recipients`` are the fingerprints of the body keys the payload was encrypted to (the
    escrow key is the sender's own and is not listed). At most one of ``reference`` and
    ``reference_sha256`` is set. From version 2 on, ``timestamps`` are RFC 3161 tokens over
    ``checkpoint`` (base64 DER ``TimeStampResp``, one per TSA). From version 3 on,
    ``destination`` names the SFTP drop and the server's host key (folder deliveries write
    version 1 or 2, which have none), and ``timestamps`` may be empty.
    """

    receipt_id: str
    package_id: str
    body: str
    sender: Party
    recipients: tuple[str, ...]
    items: tuple[ReceiptItem, ...]
    envelope_sha256: str
    payload_sha256: str
    reference: str | None
    reference_sha256: str | None
    sent_at: str
    checkpoint: str
    timestamps: tuple[str, ...] = ()
    destination: Destination | None = None
    format: str = SHARING_RECEIPT_TYPE
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        what = "sharing receipt"
        check_header(self, what, SHARING_RECEIPT_TYPE, tuple(_RECEIPT_FIELDS_BY_VERSION))
        if self.version >= RECEIPT_VERSION_DESTINATION:
            if not isinstance(self.destination, Destination):
                raise fail(f"{what}: destination", "an SFTP destination (url, host_key)")
            if self.timestamps != ():
                check_timestamps(self.timestamps, f"{what}: timestamps")
        else:
            if self.destination is not None:
                raise UsageError(f"{what}: version {self.version} has no destination; write "
                                 f"version {RECEIPT_VERSION_DESTINATION}")
            _check_timestamps(self.version, RECEIPT_VERSION_TIMESTAMPED, self.timestamps, what)
        RECEIPT_ID.check(self.receipt_id, f"{what}: receipt_id")
        PACKAGE_ID.check(self.package_id, f"{what}: package_id")
        BODY_ID.check(self.body, f"{what}: body")
        if not isinstance(self.sender, Party):
            raise fail(f"{what}: sender", "a Party")
        check_tuple(self.recipients, str, f"{what}: recipients")
        for i, fingerprint in enumerate(self.recipients):
            check_fingerprint(fingerprint, f"{what}: recipients[{i}]")
        if len(set(self.recipients)) != len(self.recipients):
            raise UsageError(f"{what}: a recipient fingerprint appears twice")
        check_tuple(self.items, ReceiptItem, f"{what}: items")
        check_unique_ids(self.items, what)
        check_sha256(self.envelope_sha256, f"{what}: envelope_sha256")
        check_sha256(self.payload_sha256, f"{what}: payload_sha256")
        if self.reference is not None and self.reference_sha256 is not None:
            raise UsageError(f"{what}: reference and reference_sha256 are both set; keep one")
        if self.reference is not None:
            check_line(self.reference, f"{what}: reference")
        if self.reference_sha256 is not None:
            check_sha256(self.reference_sha256, f"{what}: reference_sha256")
        check_time(self.sent_at, f"{what}: sent_at")
        check_checkpoint(self.checkpoint, f"{what}: checkpoint")

    def with_reference_hashed(self) -> SharingReceipt:
        """This receipt with ``reference`` replaced by its SHA-256 (unchanged if none).

        The result is a different document: sign it anew before it leaves the vault.
        """
        if self.reference is None:
            return self
        return replace(self, reference=None, reference_sha256=reference_digest(self.reference))

    def to_bytes(self) -> bytes:
        """The canonical JSON bytes: what is signed and what is written to disk."""
        return finish_bytes(
            {
                "type": self.format,
                "version": self.version,
                "receipt_id": self.receipt_id,
                "package_id": self.package_id,
                "body": self.body,
                "sender": self.sender.to_json(),
                "recipients": list(self.recipients),
                "items": [i.to_json() for i in self.items],
                "envelope_sha256": self.envelope_sha256,
                "payload_sha256": self.payload_sha256,
                "reference": self.reference,
                "reference_sha256": self.reference_sha256,
                "sent_at": self.sent_at,
                "checkpoint": self.checkpoint,
                **({"timestamps": list(self.timestamps)}
                   if self.version >= RECEIPT_VERSION_TIMESTAMPED else {}),
                **({"destination": self.destination.to_json()}
                   if self.destination is not None else {}),
            },
            "sharing receipt",
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SharingReceipt:
        """Parse sharing receipt bytes strictly; raise VerificationError naming the rule."""
        what = "sharing receipt"
        obj = load_document(data, what, SHARING_RECEIPT_TYPE, _RECEIPT_FIELDS,
                            _RECEIPT_FIELDS_BY_VERSION)
        with reading(what):
            receipt = cls(
                version=obj["version"],
                timestamps=tuple(read_array(obj.get("timestamps", []), what, "timestamps")),
                receipt_id=obj["receipt_id"],
                package_id=obj["package_id"],
                body=obj["body"],
                sender=read_party(obj["sender"], what, "sender"),
                recipients=tuple(read_array(obj["recipients"], what, "recipients")),
                items=read_items(obj["items"], what),
                envelope_sha256=obj["envelope_sha256"],
                payload_sha256=obj["payload_sha256"],
                reference=obj["reference"],
                reference_sha256=obj["reference_sha256"],
                sent_at=obj["sent_at"],
                checkpoint=obj["checkpoint"],
                destination=_read_destination(obj.get("destination"), what),
            )
        require_canonical(receipt.to_bytes(), data, what)
        return receipt


_RECEIPT_FIELDS = (
    "receipt_id",
    "package_id",
    "body",
    "sender",
    "recipients",
    "items",
    "envelope_sha256",
    "payload_sha256",
    "reference",
    "reference_sha256",
    "sent_at",
    "checkpoint",
)
_RECEIPT_FIELDS_BY_VERSION = {
    1: _RECEIPT_FIELDS,
    RECEIPT_VERSION_TIMESTAMPED: (*_RECEIPT_FIELDS, "timestamps"),
    RECEIPT_VERSION_DESTINATION: (*_RECEIPT_FIELDS, "timestamps", "destination"),
}


def _read_destination(value: object, what: str) -> Destination | None:
    """A receipt's ``destination`` object (exactly url and host_key), if it has one."""
    if value is None:
        return None
    obj = read_object(value, ("url", "host_key"), what, "destination")
    return Destination(url=obj["url"], host_key=obj["host_key"])


@dataclass(frozen=True)
class Acknowledgement:
    """The recipient's signed word that a package arrived whole.

    ``envelope_sha256`` and ``statement_sha256`` are the SHA-256 of the exact envelope and
    statement bytes the recipient verified; ``checkpoint`` is the recipient's own custody
    checkpoint after recording the receipt. From version 2 on, ``cosigned_checkpoint`` is the
    sender's checkpoint from the envelope with the recipient's cosignature line appended
    (:mod:`vault.custody.cosignature`): the recipient witnesses the sender's log. Version 1
    acknowledgements have none (``cosigned_checkpoint`` is None) and are still read. Version
    3 adds ``timestamps``: RFC 3161 tokens over ``checkpoint`` (base64 DER, one per TSA).
    """

    package_id: str
    body: str
    recipient: Party
    envelope_sha256: str
    statement_sha256: str
    items: tuple[ReceiptItem, ...]
    received_at: str
    checkpoint: str
    cosigned_checkpoint: str | None = None
    timestamps: tuple[str, ...] = ()
    format: str = ACKNOWLEDGEMENT_TYPE
    version: int = ACK_VERSION

    def __post_init__(self) -> None:
        what = "acknowledgement"
        check_header(self, what, ACKNOWLEDGEMENT_TYPE, tuple(_ACK_FIELDS_BY_VERSION))
        _check_timestamps(self.version, 3, self.timestamps, what)
        if self.version >= 2:
            check_checkpoint(self.cosigned_checkpoint, f"{what}: cosigned_checkpoint")
        elif self.cosigned_checkpoint is not None:
            raise UsageError(f"{what}: version 1 has no cosigned_checkpoint")
        PACKAGE_ID.check(self.package_id, f"{what}: package_id")
        BODY_ID.check(self.body, f"{what}: body")
        if not isinstance(self.recipient, Party):
            raise fail(f"{what}: recipient", "a Party")
        check_sha256(self.envelope_sha256, f"{what}: envelope_sha256")
        check_sha256(self.statement_sha256, f"{what}: statement_sha256")
        check_tuple(self.items, ReceiptItem, f"{what}: items")
        check_unique_ids(self.items, what)
        check_time(self.received_at, f"{what}: received_at")
        check_checkpoint(self.checkpoint, f"{what}: checkpoint")

    def to_bytes(self) -> bytes:
        """The canonical JSON bytes: what is signed and what is written to disk."""
        return finish_bytes(
            {
                "type": self.format,
                "version": self.version,
                "package_id": self.package_id,
                "body": self.body,
                "recipient": self.recipient.to_json(),
                "envelope_sha256": self.envelope_sha256,
                "statement_sha256": self.statement_sha256,
                "items": [i.to_json() for i in self.items],
                "received_at": self.received_at,
                "checkpoint": self.checkpoint,
                **(
                    {"cosigned_checkpoint": self.cosigned_checkpoint}
                    if self.version >= 2 else {}
                ),
                **({"timestamps": list(self.timestamps)} if self.version >= 3 else {}),
            },
            "acknowledgement",
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Acknowledgement:
        """Parse acknowledgement bytes strictly; raise VerificationError naming the rule."""
        what = "acknowledgement"
        obj = load_document(data, what, ACKNOWLEDGEMENT_TYPE, _ACK_FIELDS, _ACK_FIELDS_BY_VERSION)
        with reading(what):
            ack = cls(
                version=obj["version"],
                cosigned_checkpoint=obj.get("cosigned_checkpoint"),
                timestamps=tuple(read_array(obj.get("timestamps", []), what, "timestamps")),
                package_id=obj["package_id"],
                body=obj["body"],
                recipient=read_party(obj["recipient"], what, "recipient"),
                envelope_sha256=obj["envelope_sha256"],
                statement_sha256=obj["statement_sha256"],
                items=read_items(obj["items"], what),
                received_at=obj["received_at"],
                checkpoint=obj["checkpoint"],
            )
        require_canonical(ack.to_bytes(), data, what)
        return ack


_ACK_FIELDS = (
    "package_id",
    "body",
    "recipient",
    "envelope_sha256",
    "statement_sha256",
    "items",
    "received_at",
    "checkpoint",
)
_ACK_FIELDS_BY_VERSION = {1: _ACK_FIELDS, 2: (*_ACK_FIELDS, "cosigned_checkpoint"),
                          3: (*_ACK_FIELDS, "cosigned_checkpoint", "timestamps")}


def _check_timestamps(version: int, since: int, timestamps: object, what: str) -> None:
    """A document's tokens: required from version ``since`` on, absent before it."""
    if version >= since:
        check_timestamps(timestamps, f"{what}: timestamps")
    elif timestamps != ():
        raise UsageError(f"{what}: version {version} has no timestamps; write version {since}")


def read_items(value: object, what: str) -> tuple[ReceiptItem, ...]:
    """A document's ``items`` array read into ReceiptItems (each exactly id, size, sha256)."""
    items = []
    for i, v in enumerate(read_array(value, what, "items")):
        obj = read_object(v, ("id", "size", "sha256"), what, f"items[{i}]")
        items.append(ReceiptItem(id=obj["id"], size=obj["size"], sha256=obj["sha256"]))
    return tuple(items)


# -- signing -------------------------------------------------------------------------------


def sign_document(doc_bytes: bytes, key: SigningKey, namespace: str) -> str:
    """The armored SSHSIG of ``doc_bytes`` under ``namespace`` (:func:`sshsig.sign`).

    Pass the exact bytes of ``to_bytes()`` and :data:`RECEIPT_NAMESPACE` or
    :data:`ACK_NAMESPACE`.
    """
    return sshsig.sign(key, doc_bytes, namespace)


def verify_receipt(
    data: bytes, signature: str | bytes, trusted: Iterable[VerifyKey]
) -> SharingReceipt:
    """Verify a sharing receipt's SSHSIG (namespace evault-receipt) by a key in ``trusted``
    over exactly ``data``, parse it strictly and check the signer is its sender."""
    receipt_id = peek_id(data, "receipt_id", RECEIPT_ID)
    return verify_document(
        data, signature, trusted, namespace=RECEIPT_NAMESPACE, what="sharing receipt",
        label=f"sharing receipt {receipt_id}" if receipt_id else "sharing receipt",
        parse=SharingReceipt.from_bytes, party=lambda r: r.sender, role="sender")


def verify_ack(
    data: bytes, signature: str | bytes, trusted: Iterable[VerifyKey]
) -> Acknowledgement:
    """Verify an acknowledgement's SSHSIG (namespace evault-ack) by a key in ``trusted`` over
    exactly ``data``, parse it strictly and check the signer is the recipient named inside."""
    package_id = peek_id(data, "package_id", PACKAGE_ID)
    return verify_document(
        data, signature, trusted, namespace=ACK_NAMESPACE, what="acknowledgement",
        label=f"acknowledgement of {package_id}" if package_id else "acknowledgement",
        parse=Acknowledgement.from_bytes, party=lambda a: a.recipient, role="recipient")
