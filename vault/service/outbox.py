"""Where a package goes: a drop folder, or a body's SFTP drop (``sftp://user@host/path``).

    >>> choice = OutboxChoice("sftp://evidence@drop.icc-cpi.example/incoming")
    >>> outbox_for(vault, session, "ICC-OTP", choice)                            # doctest: +SKIP
    SftpOutbox(url=SftpUrl(user='evidence', ...), host_key=None, ...)

An outbox named on the command line wins; without one, the body's own (``evault body set
BODY --outbox ...``) is used, with the host key pinned for it and its client key file. An
SFTP outbox given on the command line that is the body's own keeps the body's pin.

This module does not import the SFTP library: only :mod:`vault.service.sftp` does, and only
a delivery to an SFTP outbox imports that.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.errors import NotFoundError, UsageError, VaultError, VerificationError
from vault.formats.package.rules import check_fingerprint
from vault.formats.sftp_url import SftpUrl, is_sftp_url
from vault.service.vaults import Vault
from vault.store.models import Body, CustodyEvent

#: The signed custody event that sets a body's own outbox (vault.service.bodies).
SET_ACTION = "body.outbox_set"


@dataclass(frozen=True)
class SftpOutbox:
    """A body's SFTP drop and how to trust and log in to its server.

    ``host_key`` is a pinned ``SHA256:`` fingerprint of the server's host key; without one
    the server must be in ``known_hosts`` (the user's ``~/.ssh/known_hosts`` unless
    ``known_hosts`` names another file). The client key is ``identity_file``'s, else the
    keys of the user's ssh-agent.
    """

    url: SftpUrl
    host_key: str | None = None
    known_hosts: Path | None = None
    identity_file: Path | None = None

    def __str__(self) -> str:
        return str(self.url)


Outbox = Path | SftpOutbox
"""A drop folder or an SFTP drop."""


@dataclass(frozen=True)
class Uploaded:
    """A package delivered to an SFTP drop: where (the drop's URL and the file's remote
    path), the server's host-key fingerprint, and how many bytes an interrupted upload had
    left that were kept (0: uploaded from the start; ``already``: the final name held this
    very package, nothing was uploaded)."""

    url: str
    remote: str
    host_key: str
    resumed_from: int
    already: bool


@dataclass(frozen=True)
class OutboxChoice:
    """What the command line said about the outbox (all optional)."""

    outbox: str | None = None
    host_key: str | None = None
    known_hosts: Path | None = None
    identity_file: Path | None = None

    def __post_init__(self) -> None:
        if self.host_key is not None:
            check_fingerprint(self.host_key, "--host-key")
        if self.outbox is not None and not is_sftp_url(self.outbox):
            extra = [name for name, value in (("--host-key", self.host_key),
                                              ("--known-hosts", self.known_hosts),
                                              ("--identity-file", self.identity_file))
                     if value is not None]
            if extra:
                raise UsageError(f"{extra[0]} goes with an sftp:// outbox, not a folder")


def parse_outbox(text: str) -> Path | SftpUrl:
    """A folder path, or an ``sftp://`` URL parsed strictly."""
    if is_sftp_url(text):
        return SftpUrl.parse(text)
    if not text:
        raise UsageError("outbox: give a folder or an sftp://user@host[:port]/path URL")
    return Path(text)


def outbox_for(vault: Vault, session: Session, body_id: str, choice: OutboxChoice) -> Outbox:
    """The outbox a package for ``body_id`` goes to (see the module's docstring). The body's
    own outbox, pin and key file are used only as its newest signed ``body.outbox_set``
    event has them (:func:`check_signed_outbox`)."""
    body = session.get(Body, body_id)
    if body is None:
        raise NotFoundError(f"body {body_id}: not found; see `evault body list`")
    own = body.outbox
    if choice.outbox is None or (own is not None and choice.outbox == own) or (
            own is not None and is_sftp_url(own) and is_sftp_url(choice.outbox)
            and SftpUrl.parse(own) == SftpUrl.parse(choice.outbox)):
        check_signed_outbox(vault, session, body)
    text = choice.outbox if choice.outbox is not None else own
    if text is None:
        raise UsageError(
            f"body {body_id}: has no outbox; give --outbox DIR or sftp://user@host/path, or "
            f"set one with `evault body set {body_id} --outbox ...`"
        )
    target = parse_outbox(text)
    if isinstance(target, Path):
        return target
    is_own = own is not None and is_sftp_url(own) and SftpUrl.parse(own) == target
    identity = choice.identity_file or (
        Path(body.outbox_identity_file) if is_own and body.outbox_identity_file else None)
    return SftpOutbox(
        url=target,
        host_key=choice.host_key or (body.outbox_host_key if is_own else None),
        known_hosts=choice.known_hosts,
        identity_file=identity,
    )


def signed_outbox(vault: Vault, session: Session, body_id: str
                  ) -> tuple[str | None, str | None, str | None]:
    """A body's (outbox, host key, key file) as its newest ``body.outbox_set`` event signs
    them (the event's own bytes name the body and the action, not only its columns), or
    all None if there is none; a VerificationError if that event cannot be trusted."""
    from vault.custody.events import Event
    from vault.service.rules import checked_own_event

    rows = session.scalars(select(CustodyEvent).where(CustodyEvent.action == SET_ACTION)
                           .order_by(CustodyEvent.seq.desc()))
    for row in rows:
        try:
            if Event.decode(row.body).subject != body_id:
                continue
            details = checked_own_event(vault, session, row, SET_ACTION, body_id,
                                        "outbox").details
        except VaultError as e:
            raise VerificationError(
                f"body {body_id}: custody event {row.seq}, its newest {SET_ACTION}, cannot be "
                f"trusted ({e}); run `evault custody verify`") from None
        return (details.get("outbox"), details.get("host_key"), details.get("identity_file"))
    return (None, None, None)


def check_signed_outbox(vault: Vault, session: Session, body: Body) -> None:
    """Refuse (exit 3) a body whose outbox, pin or key file in the database is not what its
    newest signed ``body.outbox_set`` event says: a database holder must not be able to send
    the body's packages to a server of their choosing."""
    columns = (body.outbox, body.outbox_host_key, body.outbox_identity_file)
    if columns != signed_outbox(vault, session, body.id):
        raise VerificationError(
            f"body {body.id}: its outbox in the database is not the one its newest signed "
            f"{SET_ACTION} event names; the database was altered: nothing was sent; run "
            f"`evault custody verify`, then set it again with `evault body set {body.id} "
            "--outbox ...`")


def outbox_defects(vault: Vault, session: Session) -> list[str]:
    """For ``custody verify``: each body whose outbox columns differ from its signed
    setting, in one line."""
    found = []
    for body in session.scalars(select(Body).order_by(Body.id)):
        try:
            check_signed_outbox(vault, session, body)
        except VerificationError as e:
            found.append(str(e))
    return found


def check_folder(outbox: Outbox) -> None:
    """A folder outbox must exist (an SFTP drop is checked when connecting)."""
    if isinstance(outbox, Path) and not outbox.is_dir():
        if outbox.exists():
            raise NotFoundError(f"outbox {outbox}: is not a folder; give a folder or an "
                                "sftp:// URL")
        raise NotFoundError(f"outbox {outbox}: no such folder; mount or create it first")
