"""The vault's tables, as typed SQLAlchemy 2 models; the schema itself comes from migrations.

    >>> from vault.store.models import Base
    >>> sorted(Base.metadata.tables)[:2]
    ['bodies', 'body_keys']

No private key and no plaintext evidence is ever a column here: identities and bodies carry
public keys only; the key store holds the private halves, keyed by signing fingerprint.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    DateTime,
    ForeignKey,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

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


def UTCDateTime() -> DateTime:
    """Timestamps are stored in UTC; SQLite gives them back naive (see ``vault.clock.as_utc``)."""
    return DateTime(timezone=True)


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

