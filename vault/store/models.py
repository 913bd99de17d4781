"""The vault's tables, as typed SQLAlchemy 2 models; the schema itself comes from migrations.

    >>> from vault.store.models import Base
    >>> sorted(Base.metadata.tables)[:2]
    ['bodies', 'body_keys']

No private key and no plaintext evidence is ever a column here: identities and bodies carry
public keys only; the key store holds the private halves, keyed by signing fingerprint.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy import false as sa_false
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from vault.store.dbapi import NotATime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base whose metadata names constraints stably, so migrations can refer to them."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A time, stored in UTC (a ``DateTime(timezone=True)``, as before); SQLite gives it back
    naive (see ``vault.clock.as_utc``).

    One read as a time that is not one -- any text SQL outside evault wrote on SQLite, a
    time no datetime holds on PostgreSQL (``infinity``; :func:`vault.store.db.make_engine`
    has psycopg give those as their text) -- raises :class:`vault.store.dbapi.NotATime`
    naming the table and column, whichever command loaded the row, instead of a
    ``ValueError`` of the parsing. A column's type sees only the value, not the row:
    :meth:`vault.service.vaults.Vault.transaction` names the row."""

    impl = DateTime(timezone=True)
    cache_ok = True
    #: The table and column of this type's column (set below, once the tables exist).
    where: tuple[str, str] = ("?", "?")
    #: Whether the models declare the column NOT NULL (set below): a NULL SQL put there
    #: (after dropping the constraint) is no time either, refused as one.
    required: bool = False

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any]:
        parse = super().result_processor(dialect, coltype)
        table, column = self.where
        required = self.required

        def read(value: Any) -> Any:
            if value is None:
                if required:
                    raise NotATime(table, column, stored=None)
                return None
            try:
                time = parse(value) if parse is not None else value
                if not isinstance(time, datetime):
                    raise TypeError(value)
                if time.tzinfo is not None:
                    # In UTC now, as every reader shows it: a time whose offset takes it
                    # past year 1 or 9999 in UTC (only SQL writes one) is refused here, not
                    # by an OverflowError wherever it is shown.
                    time = time.astimezone(timezone.utc)
            except (ValueError, TypeError, OverflowError):
                raise NotATime(table, column, stored=value) from None
            return time

        return read


class PackageState(str, enum.Enum):
    """What became of a package built here, stored and shown as these words.

    >>> PackageState.SENT == "sent", str(PackageState.SENT), f"{PackageState.SENT}"
    (True, 'sent', 'sent')
    """

    #: Its file written and recorded, not yet delivered.
    BUILT = "built"
    #: Delivered into an outbox; its sharing receipt signed.
    SENT = "sent"
    #: The body's signed acknowledgement imported.
    ACKNOWLEDGED = "acknowledged"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return self.value.__format__(spec)


class PackageStateColumn(TypeDecorator[PackageState]):
    """``packages.state``: the :class:`PackageState`'s word in a VARCHAR(16), as before."""

    impl = String(16)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else PackageState(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> PackageState | None:
        return None if value is None else PackageState(value)


class Identity(Base):
    """A person or office of this vault that signs and decrypts; private keys live elsewhere."""

    __tablename__ = "identities"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    org: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(200))
    is_default: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    keys: Mapped[list[IdentityKey]] = relationship(
        back_populates="identity", order_by="IdentityKey.id"
    )


class IdentityKey(Base):
    """One generation of an identity's key pair; rotation adds a row and retires the old one."""

    __tablename__ = "identity_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id"), index=True)
    signing_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    age_recipient: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    identity: Mapped[Identity] = relationship(back_populates="keys")


class Body(Base):
    """A recipient organisation, such as ICC-OTP, with the keys of its officers."""

    __tablename__ = "bodies"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: The body's own outbox (``evault body set --outbox``): a folder or an sftp:// URL,
    #: the server's pinned host-key fingerprint and the client key file for it.
    outbox: Mapped[str | None] = mapped_column(Text)
    outbox_host_key: Mapped[str | None] = mapped_column(String(100))
    outbox_identity_file: Mapped[str | None] = mapped_column(Text)

    keys: Mapped[list[BodyKey]] = relationship(back_populates="body", order_by="BodyKey.id")


class BodyKey(Base):
    """One officer's public keys for a body, pinned by signing fingerprint, revocable."""

    __tablename__ = "body_keys"
    __table_args__ = (UniqueConstraint("body_id", "fingerprint"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    body_id: Mapped[str] = mapped_column(ForeignKey("bodies.id"), index=True)
    label: Mapped[str | None] = mapped_column(String(200))
    signing_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    fingerprint: Mapped[str] = mapped_column(String(64))
    age_recipient: Mapped[str] = mapped_column(String(100))
    card: Mapped[str | None] = mapped_column(Text)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    body: Mapped[Body] = relationship(back_populates="keys")


class VaultKey(Base):
    """Public halves of the vault's own keys, e.g. the storage key blobs are encrypted to."""

    __tablename__ = "vault_keys"

    purpose: Mapped[str] = mapped_column(String(32), primary_key=True)
    age_recipient: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Case(Base):
    """A case file that groups items, e.g. ``UA-2026-0042``."""

    __tablename__ = "cases"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Sealed at rest (vault.store.sealed): longer than the title. SQLite enforces no length;
    # PostgreSQL's column became TEXT in migration 0005.
    title: Mapped[str | None] = mapped_column(String(500).with_variant(Text(), "postgresql"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Blob(Base):
    """One encrypted file in the blob store (the ``blobs/`` folder or an S3 bucket); its
    random name says nothing about its content."""

    __tablename__ = "blobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    stored_size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # On S3: the object version written (a versioned bucket), read back by that version so
    # that a newer version put over it is never read; and when its Object Lock retention
    # ends, as the store reported it after the upload. Both None in a folder store.
    version_id: Mapped[str | None] = mapped_column(String(1024))
    retain_until: Mapped[datetime | None] = mapped_column(UTCDateTime())


class VaultSetting(Base):
    """A setting every machine of the vault must agree on (``blobs``: where blobs live;
    ``object_lock``: the retention asked for them), kept in ``config.toml`` too."""

    __tablename__ = "vault_settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Item(Base):
    """One acquisition of an evidence file, with its metadata and digests."""

    __tablename__ = "items"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id"), index=True)
    blob_id: Mapped[str] = mapped_column(ForeignKey("blobs.id"), index=True)
    original_name: Mapped[str] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(Text)
    collected_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    location: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    ingested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ingested_by: Mapped[str] = mapped_column(String(64))
    # The seq of the custody event that recorded the intake: the order items came in.
    intake_seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    # For items received in a package: whence they came, so custody continues across vaults.
    received_from: Mapped[str | None] = mapped_column(String(64))
    source_package: Mapped[str | None] = mapped_column(String(32))
    source_item: Mapped[str | None] = mapped_column(String(32))
    # For a derived copy (redacted, translated, transcribed, excerpted, transcoded): the item
    # it was made from, its SHA-256 as the link names it, how, with which tool, and a note
    # (sealed at rest, like a title). For an item received in a package, ``derived_from`` is
    # the original's id in the sender's vault, as ``source_item`` is the item's own.
    derived_from: Mapped[str | None] = mapped_column(String(32), index=True)
    derived_from_sha256: Mapped[str | None] = mapped_column(String(64))
    derivation: Mapped[str | None] = mapped_column(String(16))
    derivation_tool: Mapped[str | None] = mapped_column(String(128))
    derivation_note: Mapped[str | None] = mapped_column(Text)

    case: Mapped[Case] = relationship()
    blob: Mapped[Blob] = relationship()
    labels: Mapped[list[ItemLabel]] = relationship(
        cascade="all, delete-orphan", order_by="ItemLabel.label"
    )
    tags: Mapped[list[ItemTag]] = relationship(cascade="all, delete-orphan", order_by="ItemTag.key")
    digests: Mapped[list[ItemDigest]] = relationship(
        cascade="all, delete-orphan", order_by="ItemDigest.algorithm"
    )


class ItemLabel(Base):
    """A handling label on an item (release rules act on these)."""

    __tablename__ = "item_labels"

    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), primary_key=True)
    label: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class ItemTag(Base):
    """A ``key=value`` tag on an item."""

    __tablename__ = "item_tags"

    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ItemDigest(Base):
    """A further digest of an item's content (md5, sha1) for forensic cross-reference."""

    __tablename__ = "item_digests"

    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16), primary_key=True)
    hexdigest: Mapped[str] = mapped_column(String(128))


class CustodyEvent(Base):
    """One custody event: the exact canonical bytes its actor signed, and their leaf hash.

    ``seq`` is the event's leaf index in the Merkle tree; the other columns repeat fields of
    ``body`` for queries and are checked against it by ``custody verify``.
    """

    __tablename__ = "custody_events"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32), index=True)
    subject: Mapped[str] = mapped_column(String(64), index=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[bytes] = mapped_column(LargeBinary(64))
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class CustodyHead(Base):
    """The single row holding the log's size, root and frontier; locked by every append."""

    __tablename__ = "custody_head"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    frontier: Mapped[bytes] = mapped_column(LargeBinary)


class SignedCheckpoint(Base):
    """A checkpoint of this vault's custody log as signed here (C2SP signed note), kept."""

    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    signer: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Set when TSAs are configured but none answered (``--no-timestamp`` or ``timestamps =
    # "when-available"``): ``evault timestamp --pending`` obtains its tokens later.
    timestamp_pending: Mapped[bool] = mapped_column(Boolean, default=False,
                                                    server_default=sa_false())


class Package(Base):
    """One package built for one body: what went in, to which keys, and what became of it."""

    __tablename__ = "packages"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    body_id: Mapped[str] = mapped_column(ForeignKey("bodies.id"), index=True)
    sender: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    reference: Mapped[str | None] = mapped_column(Text)
    purpose: Mapped[str | None] = mapped_column(Text)
    confidential_reference: Mapped[bool] = mapped_column(default=False)
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    envelope_sha256: Mapped[str] = mapped_column(String(64))
    statement_sha256: Mapped[str | None] = mapped_column(String(64))
    payload_sha256: Mapped[str] = mapped_column(String(64))
    payload_size: Mapped[int] = mapped_column(BigInteger)
    file_sha256: Mapped[str] = mapped_column(String(64))
    file_size: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(Text)
    checkpoint_size: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[PackageState] = mapped_column(PackageStateColumn())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    outbox: Mapped[str | None] = mapped_column(Text)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    items: Mapped[list[PackageItem]] = relationship(
        cascade="all, delete-orphan", order_by="PackageItem.position"
    )
    recipients: Mapped[list[PackageRecipient]] = relationship(
        cascade="all, delete-orphan", order_by="PackageRecipient.position"
    )


class PackageItem(Base):
    """An item inside a package, with its path in the bag."""

    __tablename__ = "package_items"

    package_id: Mapped[str] = mapped_column(ForeignKey("packages.id"), primary_key=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), primary_key=True, index=True)
    position: Mapped[int] = mapped_column()
    bag_path: Mapped[str] = mapped_column(Text)


class PackageRecipient(Base):
    """A key a package's payload is encrypted to (the body's keys, and the sender's escrow)."""

    __tablename__ = "package_recipients"

    package_id: Mapped[str] = mapped_column(ForeignKey("packages.id"), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    age_recipient: Mapped[str] = mapped_column(String(100))
    escrow: Mapped[bool] = mapped_column(default=False)
    position: Mapped[int] = mapped_column()


class Receipt(Base):
    """A signed sharing receipt (made when a package is sent): the document and its signature."""

    __tablename__ = "receipts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    package_id: Mapped[str] = mapped_column(ForeignKey("packages.id"), index=True)
    body_id: Mapped[str] = mapped_column(ForeignKey("bodies.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    document: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[str] = mapped_column(Text)


class Contact(Base):
    """A known sender from another organisation, pinned by fingerprint, revocable."""

    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    org: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(200))
    signing_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    age_recipient: Mapped[str] = mapped_column(String(100))
    card: Mapped[str] = mapped_column(Text)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ReceivedPackage(Base):
    """A package this vault opened: what was verified, kept for the chain of custody."""

    __tablename__ = "received_packages"

    package_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    sender: Mapped[str] = mapped_column(String(64))
    body_id: Mapped[str] = mapped_column(String(64))
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    envelope_sha256: Mapped[str] = mapped_column(String(64))
    statement: Mapped[bytes] = mapped_column(LargeBinary)
    statement_signature: Mapped[str] = mapped_column(Text)
    statement_sha256: Mapped[str] = mapped_column(String(64))
    custody_excerpt: Mapped[bytes] = mapped_column(LargeBinary)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    opened_by: Mapped[str] = mapped_column(String(64))
    recipient_key: Mapped[str] = mapped_column(String(64))
    out_dir: Mapped[str] = mapped_column(Text)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SealedMetadata(Base):
    """One row once every sealed column holds sealed values (see ``vault.store.sealed``).

    A hint that saves opening the key store before a query: the key store's own entry is
    what decides, so deleting or adding this row only costs a check, it unseals nothing.
    """

    __tablename__ = "sealed_metadata"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column()


class ReceivedAck(Base):
    """A recipient's signed acknowledgement of a package this vault sent, as imported here
    (the document itself is :class:`vault.formats.receipt.Acknowledgement`)."""

    __tablename__ = "acknowledgements"

    package_id: Mapped[str] = mapped_column(ForeignKey("packages.id"), primary_key=True)
    signer: Mapped[str] = mapped_column(String(64))
    document: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[str] = mapped_column(Text)
    document_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WitnessedCheckpoint(Base):
    """A checkpoint of this vault's log that a body cosigned in an acknowledgement.

    ``note`` is the whole cosigned note as the acknowledgement carried it (this vault's
    signature and the body's cosignature); ``size`` and ``root`` are copies for queries.
    """

    __tablename__ = "witnessed_checkpoints"

    package_id: Mapped[str] = mapped_column(ForeignKey("packages.id"), primary_key=True)
    body_id: Mapped[str] = mapped_column(ForeignKey("bodies.id"), index=True)
    cosigner: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    cosigned_at: Mapped[datetime] = mapped_column(UTCDateTime())
    note: Mapped[str] = mapped_column(Text)
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CheckpointTimestamp(Base):
    """An RFC 3161 time-stamp token over one of this vault's signed checkpoints.

    ``token`` is the TSA's whole DER ``TimeStampResp`` over the checkpoint's signed note (its
    text and signature line, as kept in ``checkpoints.note``); it proves the signature existed
    at ``attested_at``, checked when it came in. ``tsa`` is the configured TSA's name.
    """

    __tablename__ = "checkpoint_timestamps"

    id: Mapped[int] = mapped_column(primary_key=True)
    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("checkpoints.id"), index=True)
    tsa: Mapped[str] = mapped_column(String(64))
    attested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    token: Mapped[bytes] = mapped_column(LargeBinary)
    obtained_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SentApprovalRequest(Base):
    """An approval request this vault signed: the exact document and its signature (the
    document itself is :class:`vault.formats.approval.ApprovalRequest`)."""

    __tablename__ = "approval_requests"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    body_id: Mapped[str] = mapped_column(ForeignKey("bodies.id"), index=True)
    selection_sha256: Mapped[str] = mapped_column(String(64), index=True)
    document: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ReceivedApproval(Base):
    """An approver's signed answer (approve or refuse) to a request of this vault, imported
    and checked: by the key the approval policy's name had then, for that very request."""

    __tablename__ = "approvals"
    __table_args__ = (UniqueConstraint("request_id", "fingerprint"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("approval_requests.id"), index=True)
    approver: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))
    document: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[str] = mapped_column(Text)
    document_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime())


# Each time column's type learns its table and column, for its refusal of a value that is not
# a time (UTCDateTime() makes one type object a column).
for _table in Base.metadata.tables.values():
    for _column in _table.columns:
        if isinstance(_column.type, UTCDateTime):
            _column.type.where = (_table.name, _column.name)
            _column.type.required = not _column.nullable
