"""The signed documents of a package: the :class:`Envelope` and the :class:`Statement`.

One job: the two documents' fields, canonical bytes, strict parsing, signing and (for the
statement) verification. The **envelope** is the outside of a package: who sent it, to which
body, encrypted to which keys, and the size and SHA-256 of the encrypted payload; it travels
in clear. The **statement** travels inside the encrypted payload (a BagIt tag file) and lists
each item's bag path, size and SHA-256, and for a derived copy its :class:`ItemLink` to the
original (from version 2 on). An envelope is verified with the package file it came
in (:func:`vault.formats.package.container.verify_envelope`).

Imports: :mod:`.rules`, :mod:`.parties`, :mod:`.strict`, :mod:`vault.names`,
:mod:`vault.crypto`, :mod:`vault.errors`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from vault.crypto import sshsig
from vault.crypto.keys import SigningKey, VerifyKey
from vault.errors import UsageError, VerificationError
from vault.formats.package.parties import Party, RecipientKey, check_recipients
from vault.formats.package.rules import (
    FORMAT_VERSION,
    check_checkpoint,
    check_header,
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
    check_signer,
    check_signer_key,
    finish_bytes,
    load_document,
    peek_id,
    read_array,
    read_key,
    read_keys,
    read_object,
    read_party,
    reading,
    require_canonical,
    verify_signed,
)
from vault.names import BODY_ID, DERIVATION_TOOL, ITEM_ID, PACKAGE_ID, RELATIONS

ENVELOPE_NAMESPACE = "evault-envelope"
STATEMENT_NAMESPACE = "evault-statement"
ENVELOPE_TYPE = "evault-package"
STATEMENT_TYPE = "evault-statement"

# -- envelope ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """The signed outside of a package; carries ids, keys and digests, never content.

    ``recipients`` are the body's keys, ``escrow`` the sender's own key so the office can
    reopen what it sent, ``checkpoint`` the sender's custody checkpoint (signed note text)
    after the package was recorded. From version 2 on, ``timestamps`` are RFC 3161 tokens
    over that checkpoint (base64 DER ``TimeStampResp``, one per TSA); a package without
    tokens is still written as version 1, and version 1 is still read.
    """

    package_id: str
    sender: Party
    body: str
    recipients: tuple[RecipientKey, ...]
    escrow: RecipientKey
    created_at: str
    payload_size: int
    payload_sha256: str
    checkpoint: str
    timestamps: tuple[str, ...] = ()
    format: str = ENVELOPE_TYPE
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        check_header(self, "envelope", ENVELOPE_TYPE, tuple(_ENVELOPE_FIELDS_BY_VERSION))
        if self.version >= 2:
            check_timestamps(self.timestamps, "envelope: timestamps")
        elif self.timestamps != ():
            raise UsageError("envelope: version 1 has no timestamps; write version 2")
        PACKAGE_ID.check(self.package_id, "envelope: package_id")
        if not isinstance(self.sender, Party):
            raise fail("envelope: sender", "a Party")
        BODY_ID.check(self.body, "envelope: body")
        check_recipients(self.recipients, self.escrow, "envelope")
        check_time(self.created_at, "envelope: created_at")
        check_size(self.payload_size, "envelope: payload_size")
        check_sha256(self.payload_sha256, "envelope: payload_sha256")
        check_checkpoint(self.checkpoint, "envelope: checkpoint")

    @property
    def all_recipients(self) -> tuple[RecipientKey, ...]:
        """Every key the payload is encrypted to: the body's keys, then the escrow key."""
        return (*self.recipients, self.escrow)

    def to_bytes(self) -> bytes:
        """The canonical JSON bytes: what is signed and what is written to disk."""
        return finish_bytes(
            {
                "type": self.format,
                "version": self.version,
                "package_id": self.package_id,
                "sender": self.sender.to_json(),
                "body": self.body,
                "recipients": [k.to_json() for k in self.recipients],
                "escrow": self.escrow.to_json(),
                "created_at": self.created_at,
                "payload_size": self.payload_size,
                "payload_sha256": self.payload_sha256,
                "checkpoint": self.checkpoint,
                **({"timestamps": list(self.timestamps)} if self.version >= 2 else {}),
            },
            "envelope",
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        """Parse envelope bytes strictly; raise VerificationError naming the broken rule."""
        what = "envelope"
        obj = load_document(data, what, ENVELOPE_TYPE, _ENVELOPE_FIELDS,
                            _ENVELOPE_FIELDS_BY_VERSION)
        with reading(what):
            envelope = cls(
                version=obj["version"],
                timestamps=tuple(read_array(obj.get("timestamps", []), what, "timestamps")),
                package_id=obj["package_id"],
                sender=read_party(obj["sender"], what, "sender"),
                body=obj["body"],
                recipients=read_keys(obj["recipients"], what, "recipients"),
                escrow=read_key(obj["escrow"], what, "escrow"),
                created_at=obj["created_at"],
                payload_size=obj["payload_size"],
                payload_sha256=obj["payload_sha256"],
                checkpoint=obj["checkpoint"],
            )
        require_canonical(envelope.to_bytes(), data, what)
        return envelope


_ENVELOPE_FIELDS = (
    "package_id",
    "sender",
    "body",
    "recipients",
    "escrow",
    "created_at",
    "payload_size",
    "payload_sha256",
    "checkpoint",
)
_ENVELOPE_FIELDS_BY_VERSION = {1: _ENVELOPE_FIELDS, 2: (*_ENVELOPE_FIELDS, "timestamps")}

# -- statement -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemLink:
    """A derived copy's link to the item it was made from: the original's id (in the
    sender's vault) and SHA-256, the relation (one of :data:`vault.names.RELATIONS`) and the
    tool that made it (``name version``), if named. Never the original's content, title or
    any note: a recipient can check an original it receives against ``sha256``."""

    id: str
    sha256: str
    relation: str
    tool: str | None = None

    def __post_init__(self) -> None:
        ITEM_ID.check(self.id, "derived_from.id")
        check_sha256(self.sha256, "derived_from.sha256")
        if self.relation not in RELATIONS:
            raise fail("derived_from.relation", f"one of {', '.join(RELATIONS)}")
        if self.tool is not None and not DERIVATION_TOOL.matches(self.tool):
            raise fail("derived_from.tool", DERIVATION_TOOL.text)

    def to_json(self) -> dict[str, Any]:
        """The JSON object form; ``tool`` only when there is one."""
        return {"id": self.id, "sha256": self.sha256, "relation": self.relation,
                **({"tool": self.tool} if self.tool is not None else {})}


@dataclass(frozen=True)
class StatementItem:
    """One item in the bag: its id, bag path ``data/<id>/<original name>``, size and SHA-256,
    and for a derived copy its link to the original (``derived_from``, version 2)."""

    id: str
    path: str
    size: int
    sha256: str
    derived_from: ItemLink | None = None

    def __post_init__(self) -> None:
        ITEM_ID.check(self.id, "statement item: id")
        path = check_text(self.path, f"statement item {self.id}: path", limit=4096)
        prefix = f"data/{self.id}/"
        name = path[len(prefix) :]
        if not path.startswith(prefix):
            raise fail(f"statement item {self.id}: path", f"under {prefix}")
        # One plain file name under the item's folder, as the bag writer lays it out.
        if name in ("", ".", "..") or "/" in name or "\0" in name:
            raise fail(f"statement item {self.id}: path", f"{prefix} and one file name")
        if len(name.encode("utf-8")) > 255:
            raise UsageError(f"statement item {self.id}: file name is longer than 255 bytes")
        check_size(self.size, f"statement item {self.id}: size")
        check_sha256(self.sha256, f"statement item {self.id}: sha256")
        if self.derived_from is not None:
            if not isinstance(self.derived_from, ItemLink):
                raise fail(f"statement item {self.id}: derived_from", "an ItemLink")
            if self.derived_from.id == self.id:
                raise UsageError(f"statement item {self.id}: derived_from names the item "
                                 "itself")

    def to_json(self) -> dict[str, Any]:
        """The JSON object form (``derived_from`` only for a derived copy)."""
        return {"id": self.id, "path": self.path, "size": self.size, "sha256": self.sha256,
                **({"derived_from": self.derived_from.to_json()}
                   if self.derived_from is not None else {})}


@dataclass(frozen=True)
class Statement:
    """The signed list of a package's items; it travels inside the encrypted payload.

    It repeats the envelope's ids and keys so that what was encrypted can be bound to what
    the outside claims, and names the bag's tag manifest by its SHA-256. Version 2 adds
    ``derived_from`` to the items that are derived copies (:class:`ItemLink`); a statement
    with no link is still written as version 1, and version 1 is still read.
    """

    package_id: str
    body: str
    recipients: tuple[RecipientKey, ...]
    escrow: RecipientKey
    sender: Party
    created_at: str
    items: tuple[StatementItem, ...]
    tagmanifest_sha256: str
    format: str = STATEMENT_TYPE
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        check_header(self, "statement", STATEMENT_TYPE, tuple(_STATEMENT_FIELDS_BY_VERSION))
        PACKAGE_ID.check(self.package_id, "statement: package_id")
        BODY_ID.check(self.body, "statement: body")
        check_recipients(self.recipients, self.escrow, "statement")
        if not isinstance(self.sender, Party):
            raise fail("statement: sender", "a Party")
        check_time(self.created_at, "statement: created_at")
        check_tuple(self.items, StatementItem, "statement: items")
        check_unique_ids(self.items, "statement")
        linked = [i.id for i in self.items if i.derived_from is not None]
        # One document, one byte string: a statement without links is version 1 only.
        if self.version >= 2 and not linked:
            raise UsageError("statement: version 2 carries at least one derived_from; write "
                             "version 1")
        if self.version < 2 and linked:
            raise UsageError(f"statement item {linked[0]}: version 1 has no derived_from; "
                             "write version 2")
        check_sha256(self.tagmanifest_sha256, "statement: tagmanifest_sha256")

    @property
    def all_recipients(self) -> tuple[RecipientKey, ...]:
        """Every key the payload is encrypted to: the body's keys, then the escrow key."""
        return (*self.recipients, self.escrow)

    def to_bytes(self) -> bytes:
        """The canonical JSON bytes: what is signed and what is written into the bag."""
        return finish_bytes(
            {
                "type": self.format,
                "version": self.version,
                "package_id": self.package_id,
                "body": self.body,
                "recipients": [k.to_json() for k in self.recipients],
                "escrow": self.escrow.to_json(),
                "sender": self.sender.to_json(),
                "created_at": self.created_at,
                "items": [i.to_json() for i in self.items],
                "tagmanifest_sha256": self.tagmanifest_sha256,
            },
            "statement",
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Statement:
        """Parse statement bytes strictly; raise VerificationError naming the broken rule."""
        what = "statement"
        obj = load_document(data, what, STATEMENT_TYPE, _STATEMENT_FIELDS,
                            _STATEMENT_FIELDS_BY_VERSION)
        with reading(what):
            items = tuple(
                _read_statement_item(v, what, f"items[{i}]", obj["version"])
                for i, v in enumerate(read_array(obj["items"], what, "items"))
            )
            statement = cls(
                version=obj["version"],
                package_id=obj["package_id"],
                body=obj["body"],
                recipients=read_keys(obj["recipients"], what, "recipients"),
                escrow=read_key(obj["escrow"], what, "escrow"),
                sender=read_party(obj["sender"], what, "sender"),
                created_at=obj["created_at"],
                items=items,
                tagmanifest_sha256=obj["tagmanifest_sha256"],
            )
        require_canonical(statement.to_bytes(), data, what)
        return statement


_STATEMENT_FIELDS = (
    "package_id",
    "body",
    "recipients",
    "escrow",
    "sender",
    "created_at",
    "items",
    "tagmanifest_sha256",
)
# The document's own fields are the same; version 2 lets an item carry ``derived_from``.
_STATEMENT_FIELDS_BY_VERSION = {1: _STATEMENT_FIELDS, 2: _STATEMENT_FIELDS}
_ITEM_FIELDS = ("id", "path", "size", "sha256")
_LINK_FIELDS = ("id", "sha256", "relation")


def _read_statement_item(value: object, what: str, where: str, version: int) -> StatementItem:
    linked = isinstance(value, dict) and "derived_from" in value
    if linked and version < 2:
        raise VerificationError(f"{what}: {where}.derived_from: version 1 has no derived_from")
    obj = read_object(value, (*_ITEM_FIELDS, *(("derived_from",) if linked else ())), what,
                      where)
    link = None
    if linked:
        raw = obj["derived_from"]
        fields = (*_LINK_FIELDS, *(("tool",) if isinstance(raw, dict) and "tool" in raw else ()))
        found = read_object(raw, fields, what, f"{where}.derived_from")
        try:
            # A tool is named or its key left out: null would be a second form of "none".
            if "tool" in found and found["tool"] is None:
                raise fail("derived_from.tool", DERIVATION_TOOL.text)
            link = ItemLink(id=found["id"], sha256=found["sha256"], relation=found["relation"],
                            tool=found.get("tool"))
        except UsageError as e:
            named = obj["id"] if ITEM_ID.matches(obj["id"]) else where
            raise UsageError(f"statement item {named}: {e}") from None
    return StatementItem(id=obj["id"], path=obj["path"], size=obj["size"], sha256=obj["sha256"],
                         derived_from=link)

# -- signing -------------------------------------------------------------------------------


def sign_envelope(envelope: Envelope, key: SigningKey) -> tuple[bytes, str]:
    """The envelope's canonical bytes and their armored SSHSIG (namespace evault-envelope).

    ``key`` must be the sender's: its fingerprint must equal ``envelope.sender.fingerprint``.
    """
    check_signer_key(key, envelope.sender, f"envelope {envelope.package_id}")
    data = envelope.to_bytes()
    return data, sshsig.sign(key, data, ENVELOPE_NAMESPACE)


def sign_statement(statement: Statement, key: SigningKey) -> tuple[bytes, str]:
    """The statement's canonical bytes and their armored SSHSIG (namespace evault-statement)."""
    check_signer_key(key, statement.sender, f"statement {statement.package_id}")
    data = statement.to_bytes()
    return data, sshsig.sign(key, data, STATEMENT_NAMESPACE)


def verify_statement(
    data: bytes, signature: str | bytes, trusted: Iterable[VerifyKey]
) -> Statement:
    """Verify a statement's SSHSIG (namespace evault-statement) by a key in ``trusted`` over
    exactly ``data``, parse it strictly and check the signer is its sender; return it."""
    package_id = peek_id(data, "package_id", PACKAGE_ID)
    label = f"package {package_id}: statement" if package_id else "statement"
    signer = verify_signed(data, signature, STATEMENT_NAMESPACE, trusted, label)
    try:
        statement = Statement.from_bytes(data)
    except VerificationError as e:
        raise VerificationError(str(e).replace("statement", label, 1)) from None
    check_signer(signer, statement.sender, label, "sender")
    return statement
