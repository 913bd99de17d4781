"""Sending a built package: into a drop folder (the outbox), checked, logged as sent.

    >>> send_package(vault, "PKG-0123456789AB", outbox=Path("/mnt/transfer"))  # doctest: +SKIP
    >>> send_package(vault, "PKG-0123456789AB",                                # doctest: +SKIP
    ...              outbox=OutboxChoice("sftp://evidence@drop.example/incoming"))

Sending is :func:`prepare_send` (the package was built and not sent, the release rules still
allow it), :func:`deliver` (no database: the file gets its name in the outbox only once the
copy there reads back with the digest recorded at build; an ``sftp://`` outbox is uploaded to
by :mod:`vault.service.sftp`, imported only then) and :func:`record_sent`, which logs
the package and its items as sent and signs the sharing receipt
(:func:`~vault.service.packaging.receipts.make_receipt`).

Imports :mod:`~vault.service.packaging.plan` (the release check),
:mod:`~vault.service.packaging.records`, :mod:`~vault.service.packaging.digest` and
:mod:`~vault.service.packaging.receipts` of this package, the custody log,
``vault.formats.package`` and ``vault.store``; never building.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session

from vault.clock import isoformat, utcnow
from vault.durable import TEMP_PREFIX, copy_file, fsync_dir
from vault.errors import ConflictError, NotFoundError, PolicyError, VaultError, VerificationError
from vault.faults import crash_point
from vault.formats.package import Envelope, read_package
from vault.formats.receipt import Destination
from vault.service.custody import CustodyLog, actor_pair
from vault.service.identities import KeyPair
from vault.service.items import check_signed_rows
from vault.service.outbox import (
    Outbox,
    OutboxChoice,
    SftpOutbox,
    Uploaded,
    check_folder,
    outbox_for,
)
from vault.service.packaging.digest import (
    file_digest,
    sync_and_digest,
)
from vault.service.packaging.plan import decide_release, select_items
from vault.service.packaging.receipts import make_receipt
from vault.service.packaging.records import SentPackage, get_package, package_info
from vault.service.rules import checked_rules
from vault.service.vaults import Vault
from vault.store.models import Item, Package, PackageState


def _resolve_package(session: Session, package: str) -> tuple[Package, Path]:
    """A package given by id or by the path of its file."""
    path = Path(package)
    if path.is_file():
        pkg = read_package(path)
        envelope = Envelope.from_bytes(pkg.envelope_bytes)
        row = get_package(session, envelope.package_id)
        if hashlib.sha256(pkg.envelope_bytes).hexdigest() != row.envelope_sha256:
            raise VerificationError(
                f"{path}: envelope differs from package {row.id} as built; do not send it"
            )
        return row, path
    row = get_package(session, package)
    return row, Path(row.path)


@dataclass(frozen=True)
class Delivery:
    """A built package cleared for sending: its file, that file's SHA-256 as built, and the
    outbox it goes to."""

    package_id: str
    source: Path
    expected: str
    outbox: Outbox

    @property
    def name(self) -> str:
        """The package's file name in the outbox."""
        return f"{self.package_id}.evpkg"

    @property
    def final(self) -> Path:
        """The package's path in a folder outbox."""
        assert isinstance(self.outbox, Path), "an SFTP outbox has no local path"
        return self.outbox / self.name


def send_package(
    vault: Vault,
    package: str,
    *,
    outbox: Outbox | OutboxChoice,
    as_name: str | None = None,
    now: datetime | None = None,
) -> SentPackage:
    """Deliver a package into a drop folder atomically, or upload it to an SFTP drop, re-check
    the copy, log and sign a receipt.

    ``outbox`` is a folder or an SFTP drop, or what the command line said
    (:class:`~vault.service.outbox.OutboxChoice`: the body's own outbox if it named none).
    Sending a package again into a folder that already holds the identical file changes
    nothing and says so; another file of the same name is refused.
    """
    now = now or utcnow()
    delivery, pair = prepare_send(vault, package, outbox=outbox, as_name=as_name)
    uploaded = deliver(delivery)
    return record_sent(vault, delivery, pair, now, uploaded)


def prepare_send(
    vault: Vault, package: str, *, outbox: Outbox | OutboxChoice, as_name: str | None = None
) -> tuple[Delivery, KeyPair]:
    """Check that a package (id or file) was built and not sent; the sender's keys."""
    if not isinstance(outbox, OutboxChoice):
        check_folder(outbox)
    with vault.transaction() as session:
        row, source = _resolve_package(session, package)
        if isinstance(outbox, OutboxChoice):
            outbox = outbox_for(vault, session, row.body_id, outbox)
            check_folder(outbox)
        if row.state is not PackageState.BUILT:
            raise ConflictError(
                f"package {row.id}: sent already at {isoformat(row.sent_at or utcnow())} to "
                f"{row.outbox}; nothing to do"
            )
        if not source.is_file():
            raise NotFoundError(f"package {row.id}: file {source} is missing; rebuild it")
        items = _check_release_now(vault, session, row)
        # What the receipt will sign of each item, checked before anything is delivered.
        check_signed_rows(vault, session, items, "nothing was sent")
        return (Delivery(row.id, source, row.file_sha256, outbox),
                actor_pair(vault, session, as_name))


def _check_release_now(vault: Vault, session: Session, row: Package) -> list[Item]:
    """Refuse to send a package whose items the release rules no longer let go to its body
    (a rule changed after it was built); its items."""
    items = select_items(session, item_ids=[pi.item_id for pi in row.items])
    release = decide_release(vault, session, items, row.body_id, checked_rules(vault, session),
                             substitute=False)
    for item, reason in release.withheld:
        raise PolicyError(
            f"package {row.id}: item {item.id}: {reason}, since it was built; build a "
            "new package without it"
        )
    return items


def remove_stale_copies(final: Path) -> None:
    """Remove the temporary copies an interrupted delivery to ``final`` left beside it."""
    for stale in final.parent.glob(f"{TEMP_PREFIX}*-{final.name}"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def deliver(delivery: Delivery) -> Uploaded | None:
    """Give the package its name in the outbox, checked against its digest as built; for an
    SFTP drop, what the upload was (None for a folder).

    No database: this is the part of sending that may run beside other work.
    """
    if isinstance(delivery.outbox, SftpOutbox):
        from vault.service.sftp import upload  # the SFTP library, only when it is used

        uploaded = upload(delivery.outbox, delivery.source, delivery.name, delivery.expected)
        crash_point("send.delivered")
        return uploaded
    final = delivery.final
    # Leftovers of an interrupted delivery of this package go first, whichever way this
    # send goes on: one killed between naming the copy and removing its temporary name
    # left both, and the copy is then found in place below.
    remove_stale_copies(final)
    if final.exists():
        if file_digest(final)[0] != delivery.expected:
            raise ConflictError(
                f"{final}: exists with other content; remove it or use another outbox"
            )
    else:
        _deliver(delivery, final)
    crash_point("send.delivered")
    return None


def record_sent(
    vault: Vault, delivery: Delivery, pair: KeyPair, now: datetime,
    uploaded: Uploaded | None = None,
) -> SentPackage:
    """Log a delivered package as sent (the package and each item) and sign its receipt; an
    SFTP delivery (``uploaded``) is recorded with the drop's URL and the server's host key,
    in the ``package.sent`` event and in the receipt."""
    with vault.transaction() as session:
        row = get_package(session, delivery.package_id)
        if row.state is not PackageState.BUILT:
            raise ConflictError(f"package {row.id}: sent by another command meanwhile")
        row.state = PackageState.SENT
        row.sent_at = now
        outbox = delivery.outbox
        row.outbox = str(outbox) if isinstance(outbox, SftpOutbox) else str(outbox.absolute())
        log = CustodyLog(vault, session)
        details = {"body": row.body_id, "outbox_file": delivery.name}
        destination = None
        if uploaded is not None:
            details |= {"outbox_url": uploaded.url, "host_key": uploaded.host_key}
            destination = Destination(url=uploaded.url, host_key=uploaded.host_key)
        log.append(pair, "package.sent", row.id, details=details,
                   digests={"file": delivery.expected, "envelope": row.envelope_sha256},
                   now=now)
        for pi in row.items:
            log.append(pair, "package.sent", pi.item_id,
                       details={"package": row.id, "body": row.body_id}, now=now)
        where = (f"{uploaded.url}/{delivery.name}" if uploaded is not None
                 else str(delivery.final))
        # Checked before the delivery too: a row changed since then is refused here, with
        # the file already in the outbox.
        receipt = make_receipt(
            vault, session, row, pair, now, destination=destination,
            refused=f"the package was delivered to {where} but is not recorded as sent and "
                    "has no receipt: take that file back from the outbox")
        result = SentPackage.of(package_info(row), receipt=receipt.id, delivered=where)
    crash_point("send.after_commit")
    return result


def _deliver(delivery: Delivery, final: Path) -> None:
    """Put ``source`` into the outbox under a temporary name, check it, then name it.

    On the vault's own file system the outbox gets a second name for the built file (a hard
    link: no second copy to write, and package files are read-only); elsewhere a copy,
    fsynced. Either way the file under the temporary name is read back and must have the
    SHA-256 recorded at build before it gets its final name: never a partial or different
    file in the outbox. (:func:`deliver` has removed leftovers of an interrupted delivery.)
    """
    source, expected = delivery.source, delivery.expected
    temp = final.with_name(f"{TEMP_PREFIX}{secrets.token_hex(6)}-{final.name}")
    try:
        if not _link(source, temp):
            with open(source, "rb") as src, open(temp, "xb") as dst:
                copy_file(src.fileno(), dst.fileno(), writeback=True)
                os.fchmod(dst.fileno(), stat.S_IMODE(os.fstat(dst.fileno()).st_mode) & ~0o222)
        # Read back, a copy or a second name for the built file alike: the digest recorded
        # was taken from the bytes as they were written, so this is the one read of what
        # is there.
        copied, _size = sync_and_digest(temp)
        if copied != expected:
            raise VerificationError(
                f"{final}: the file made in the outbox does not match the package as built; "
                f"nothing was left there; check {source} with `evault verify` or rebuild it"
            )
        crash_point("send.copied")
        os.link(temp, final)
        crash_point("send.linked")
        os.unlink(temp)
        fsync_dir(final.parent)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        if isinstance(e, OSError) and not e.filename:  # a write: say which file and where
            raise VaultError(f"{final}: cannot be written ({e.strerror or e}); nothing was "
                             "left in the outbox") from None
        raise


def _link(source: Path, temp: Path) -> bool:
    """Give ``source`` the name ``temp`` too, if both are on one file system that allows it."""
    try:
        os.link(source, temp)
    except OSError as e:
        if e.errno in _NO_LINK:
            return False
        raise
    return True


_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP,
            errno.ENOSYS}
