"""``evault doctor``: what the vault is made of and whether it is healthy.

    >>> report = diagnose(Path("./office-vault"), repair=True)   # doctest: +SKIP
    >>> report.key_store, report.blobs_removed                    # doctest: +SKIP
    ('file', 0)

Packages built and never sent are listed (``unsent_packages``); they are kept, even with
``repair``: the next step is to send them (or re-run the export that built them).

It also compares the key tables with the signed key history (:mod:`vault.service.keyhistory`):
``key_history`` says whether they agree, ``key_history_differences`` lists every row that
does not; with ``repair`` the rows are rewritten from the verified history.

With ``repair``, temporary blob files of interrupted commands are removed (with the partial
copies a killed repair left in ``<vault>/quarantine/``), and blobs that
no committed row refers to (orphans) are moved, never deleted, into ``<vault>/quarantine/``
(``orphans_quarantined``): doctor cannot know from the database alone that a blob nobody
names is not evidence whose rows were deleted with SQL. It waits for running intakes first
(they hold the intake lock), so it never moves a blob that is about to be committed. What
it cannot move (a file in ``blobs/`` that is not a regular one, a quarantine disk full) is
left in place and named in ``orphans_skipped``. Blobs
on S3 are checked the same way (``blob_store`` names the bucket): objects no row refers to
are orphans, which repair leaves in place (``orphans_left``), rows whose object (of the
version recorded) is gone are missing, and multipart uploads a killed writer left pending
are ``temporary_files``, which repair aborts. On a team vault the intake lock is a
PostgreSQL advisory lock, so repair waits for every machine's intakes.

``leftovers`` lists the plaintext an ``items export`` or ``open`` killed midway left outside
the vault, as recorded in ``<vault>/pending/`` (:mod:`vault.service.pending`): only what a
record names, never a file that merely looks like a temporary. With ``repair`` each is
removed (an exact name, of the kind recorded, not a symbolic link, owned by this user, in the
folder recorded) and an export's open intent is closed with ``item.export.abandoned``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from sqlalchemy import Connection, Select, func, select, type_coerce
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, aliased
from sqlalchemy.types import NullType

from vault.clock import isoformat, utcnow
from vault.durable import TEMP_PREFIX, copy_file, is_regular_file
from vault.errors import ConfigError, VaultError, VerificationError
from vault.formats.canonical import parse_json_object
from vault.keystore import choose
from vault.service import keyhistory, pending, recording
from vault.service.results import Sparse
from vault.service.vaults import Vault, open_vault
from vault.store import db, dbapi
from vault.store.blobs import Blobs, BlobStore, is_blob_id, make_shard
from vault.store.dbapi import RESTORE, RUN_DOCTOR, NotATime, row_name
from vault.store.models import (
    Base,
    Blob,
    Body,
    CustodyEvent,
    CustodyHead,
    Identity,
    Item,
    Package,
    PackageState,
    UTCDateTime,
)
from vault.store.sealed import undecryptable

if TYPE_CHECKING:
    from vault.store.s3blobs import S3BlobStore


#: How ``key_history`` or ``sealed_values`` begins when a verification failure stopped the
#: check (a cell the driver cannot read, a key history that cannot start): a failure, not a
#: check skipped as ``not checked`` is.
FAILED = "failed: "
#: How a check's value begins when it was not run: no key store here for ``sealed_values``
#: or ``key_history``; for ``blob_store``, doctor stopped there (:attr:`DoctorReport.stopped`).
NOT_CHECKED = "not checked: "


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyHistoryCheck(Sparse):
    """``key_history``: ``ok``, or what is wrong; ``keys_repaired`` with repair;
    ``key_history_differences`` when rows differ from the signed history."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"keys_repaired", "key_history_differences"})
    keys_repaired: int | None = None
    key_history: str
    key_history_differences: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Leftover(Sparse):
    """One leftover of a killed ``items export`` or ``open`` (see :func:`check_leftovers`);
    a record that cannot be read has only command ``unknown``, path and state."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset(
        {"item", "what", "started_at", "age_seconds", "on_disk", "logged"})
    command: str
    item: str | None = None
    path: str
    what: str | None = None
    started_at: str | None = None
    age_seconds: int | None = None
    on_disk: bool | None = None
    state: str
    logged: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DoctorReport(Sparse):
    """``evault doctor``'s report. A vault whose schema is not current has only the fields
    up to ``key_store_reason``; ``blobs_removed`` and ``keys_repaired`` come with repair."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({
        "schema_changed", "identities", "bodies", "items", "release_rules", "unsent_packages",
        "blob_store",
        "object_lock", "blobs", "blobs_missing", "missing", "temporary_files",
        "misplaced", "blobs_restored", "stray_copies", "blobs_unrecorded", "unrecorded",
        "orphaned_blobs", "orphans_quarantined",
        "quarantine", "orphans_skipped", "orphans_left", "blobs_removed", "keys_repaired",
        "key_history", "key_history_differences", "sealed_values", "undecryptable", "times",
        "not_times", "custody_log", "item_rows", "item_differences", "leftovers"})
    vault: str
    vault_id: str
    database: str
    schema: str | None
    schema_ok: bool
    #: Why the schema is not the one evault made, when SQL outside evault changed it (its
    #: tables there, its recorded revision gone): a failure. A vault merely behind the code
    #: (``evault db upgrade`` brings it to head) has none.
    schema_changed: str | None = None
    key_store: str
    key_store_reason: str
    identities: int | None = None
    bodies: int | None = None
    items: int | None = None
    release_rules: str | None = None
    unsent_packages: tuple[str, ...] | None = None
    blob_store: str | None = None
    object_lock: str | None = None
    blobs: int | None = None
    blobs_missing: int | None = None
    #: Each missing blob, as ``BLOB (items EV-..., ...)``.
    missing: tuple[str, ...] | None = None
    #: Of a blob folder: missing blobs found in another shard than their own (where evault
    #: never reads them), each as its path; ``--repair`` moves each back (``blobs_restored``):
    #: those are then no longer missing, nor named here (one it could not move is named in
    #: ``orphans_skipped`` too).
    misplaced: tuple[str, ...] | None = None
    blobs_restored: int | None = None
    #: Of a blob folder: other files named as a blob a row names (a second copy in another
    #: shard, a decoy, a symbolic link), each as its path: left where they are, never
    #: quarantined (a row names them; which copy is good, the rows cannot tell).
    stray_copies: tuple[str, ...] | None = None
    temporary_files: int | None = None
    #: Blobs an item names that have no ``blobs`` row (deleted by SQL outside evault): never
    #: orphans, a failure; each in ``unrecorded`` as ``BLOB (items EV-...)``.
    blobs_unrecorded: int | None = None
    unrecorded: tuple[str, ...] | None = None
    orphaned_blobs: int | None = None
    #: With repair, of a blob folder: orphaned blobs moved into ``quarantine`` (never deleted:
    #: what no row names may be evidence whose rows were deleted with SQL).
    orphans_quarantined: int | None = None
    quarantine: str | None = None
    #: With repair, of a blob folder: each orphan left in ``blobs/``, as ``PATH: why`` (not
    #: a regular file, or it could not be moved); the others are still moved.
    orphans_skipped: tuple[str, ...] | None = None
    #: With repair, of an S3 bucket: orphaned objects left in place (removed by hand only).
    orphans_left: int | None = None
    #: With repair: temporary files of killed commands removed (never a complete blob).
    blobs_removed: int | None = None
    keys_repaired: int | None = None
    key_history: str | None = None
    key_history_differences: tuple[str, ...] | None = None
    #: ``ok`` when every sealed metadata value opens under the metadata key, else how many
    #: do not (each in ``undecryptable``), why they were not checked (``not checked: ...``)
    #: or what stopped the check (``failed: ...``).
    sealed_values: str | None = None
    undecryptable: tuple[str, ...] | None = None
    #: ``ok`` when every time of every row is one, else how many are not (each in
    #: ``not_times``, as ``item EV-...: ingested_at``), or what stopped the check
    #: (``failed: ...``).
    times: str | None = None
    not_times: tuple[str, ...] | None = None
    #: ``ok`` when the custody log's seqs run 0..N-1 and N is its head's size, else the line
    #: that names the first seq that is not there (or what stopped the check).
    custody_log: str | None = None
    #: ``ok`` when every item row says what the signed event that created it says (see
    #: :func:`check_item_rows`), else how many differences (each in ``item_differences``),
    #: or what stopped the check (``failed: ...``).
    item_rows: str | None = None
    item_differences: tuple[str, ...] | None = None
    leftovers: tuple[Leftover, ...] | None = None

    @property
    def stopped(self) -> str | None:
        """Why doctor stopped before its checks of the blobs and the records, or None: the
        schema is not this evault's (``evault db upgrade``), or the blob store could not be
        opened (``config.toml`` and the database disagree, or the database refused the
        read). ``evault doctor`` then exits 1: it vouched for nothing past that point."""
        if not self.schema_ok:
            return str(dbapi.schema_refusal(self.schema))
        if self.blob_store is not None and self.blob_store.startswith(NOT_CHECKED):
            return self.blob_store.removeprefix(NOT_CHECKED)
        return None

    @property
    def not_checked(self) -> tuple[str, ...]:
        """The checks that did not run, each as ``name: why`` (the key store could not be
        opened here: no passphrase, keys.enc gone): ``evault doctor`` then exits 1, since it
        cannot vouch for what they check."""
        return tuple(f"{name}: {value.removeprefix(NOT_CHECKED)}"
                     for name, value in (("key_history", self.key_history),
                                         ("sealed_values", self.sealed_values))
                     if value is not None and value.startswith(NOT_CHECKED))

    @property
    def failed(self) -> bool:
        """Whether a check failed as a verification does (``evault doctor`` exits 3): the
        vault is not what its records say, and doctor cannot mend it. Blobs missing (the
        evidence is gone), release rules that differ from the signed ones (changed outside
        evault), key tables that differ from the signed history, sealed values that do not
        decrypt, times that are not times, blobs items name without a ``blobs`` row, a
        schema whose recorded revision SQL removed (``schema_changed``), item
        rows that differ from the signed events that created them, a custody log with a gap,
        or a check the database stopped (``FAILED``: SQL outside evault made a cell
        unreadable). Leftovers of killed commands (temporary files and plaintext ``--repair``
        removes, orphaned blobs it quarantines) and unsent packages are no failure; a check
        not run (``not checked``: no key store here) is no failure either, but no all-clear
        (:attr:`not_checked`)."""
        return bool(
            self.schema_changed or self.blobs_missing or self.blobs_unrecorded
            or self.release_rules not in (None, "signed")
            or self.key_history_differences or self.undecryptable or self.not_times
            or self.item_differences
            or self.custody_log not in (None, "ok")
            or any((value or "").startswith(FAILED) for value in (
                self.key_history, self.sealed_values, self.times, self.item_rows)))


def _rules_state(v: Vault, session: Session) -> str:
    """"signed", or the line that says how config.toml's rules differ from the signed ones."""
    from vault.service.rules import configured, difference, mismatch_message, signed

    try:
        what = difference(configured(v), signed(v, session))
    except VerificationError as e:
        return str(e)
    return "signed" if what is None else mismatch_message(what)


def diagnose(vault_dir: Path | str | None, *, repair: bool = False,
             notice: Callable[[str], None] | None = None) -> DoctorReport:
    """A report of the vault's parts; raises only if the vault cannot be opened at all.
    ``notice`` is told, once, if repair has waited :data:`WAIT_NOTICE` seconds for the
    intake lock (another command is storing blobs)."""
    v = open_vault(vault_dir, check_schema=False)
    try:
        try:
            revision = db.current_revision(v.engine)
            unrecorded = db.unrecorded_schema(v.engine, revision)
        except DBAPIError as e:  # read outside Vault.transaction, which names the rest
            dbapi.refuse(e.orig)
            raise
        head = db.head_revision()
        choice = choose(v.config.key_storage)
        report = DoctorReport(
            vault=str(v.root),
            vault_id=v.config.vault_id,
            database=v.engine.url.render_as_string(hide_password=True),
            schema=revision,
            schema_ok=revision == head,
            schema_changed=_doctors(unrecorded) if unrecorded is not None else None,
            key_store=choice.kind,
            key_store_reason=choice.reason,
        )
        if revision != head:
            return report
        found: dict[str, Any] = {}
        blobs: Blobs | None
        try:
            blobs = v.blob_store()
        except ConfigError as e:
            # config.toml and the database disagree, or the database refused the read: no
            # blob is checked and nothing repaired, but the records are checked all the same
            # (a setting added with SQL must not hide an item row it forged).
            blobs = None
            found["blob_store"] = f"{NOT_CHECKED}{e}"
            repair = False
        except VerificationError as e:  # its settings table dropped or renamed with SQL
            raise VerificationError(_doctors(e)) from None
        else:
            found["blob_store"] = blobs.where
            if v.config.object_lock:
                found["object_lock"] = v.config.object_lock.text
        lock = (_announced(blobs.intake_lock(exclusive=True), notice, _WAITING.format(
                    blobs.where)) if repair and blobs is not None
                else contextlib.nullcontext())
        # Held to the end with repair: the blobs are removed only once every check has run.
        with lock, contextlib.ExitStack() as held:
            with _counting(v) as session:
                found["identities"] = session.scalar(select(func.count()).select_from(Identity))
                found["bodies"] = session.scalar(select(func.count()).select_from(Body))
                found["items"] = session.scalar(select(func.count()).select_from(Item))
                found["release_rules"] = _rules_state(v, session)
                # Built and never sent: an interrupted export's, or `package create` without
                # `send`.
                found["unsent_packages"] = tuple(session.scalars(
                    select(Package.id).where(Package.state == PackageState.BUILT)
                    .order_by(Package.created_at)))
                known: dict[str, str | None] = {}
                sizes: dict[str, int] = {}  # each blob's stored size, as its row says
                for blob_id, version, stored_size in session.execute(
                        select(Blob.id, Blob.version_id, Blob.stored_size)):
                    known[blob_id] = version
                    sizes[blob_id] = stored_size
                # Every blob a row names is known, with a `blobs` row or not: a row deleted
                # with SQL must not make the evidence an orphan that repair removes.
                # (An item whose blob_id SQL made NULL is named by check_item_rows.)
                named = {b for b in session.scalars(select(Item.blob_id).distinct())
                         if isinstance(b, str)}
            scan = None
            if isinstance(blobs, BlobStore):
                scan = _check_folder(v, blobs, known, named, sizes)
            elif blobs is not None:
                scan = _check_bucket(v, cast("S3BlobStore", blobs), known, named)
            # Opened (made) and checked before anything is repaired: a quarantine folder
            # that cannot be trusted stops the repair with nothing changed.
            quarantine = (held.enter_context(_Quarantine.opened(quarantine_folder(v)))
                          if repair and scan is not None and (scan.orphan_files or scan.copies)
                          else None)
            if scan is not None:
                found.update(scan.found)
            else:  # the rows alone still say which blobs items name without a `blobs` row
                rowless = sorted(named - set(known))
                found["blobs_unrecorded"] = len(rowless)
                if rowless:
                    found["unrecorded"] = _with_items(v, rowless[:NAMED])
            keys = check_key_history(v, repair=repair)
            found.update(check_sealed_values(v))
            found.update(check_times(v))
            found.update(check_custody_log(v))
            found.update(check_item_rows(v))
            report = dataclasses.replace(
                report, **found, keys_repaired=keys.keys_repaired,
                key_history=keys.key_history,
                key_history_differences=keys.key_history_differences,
                leftovers=tuple(check_leftovers(v, repair=repair)))
            if repair and scan is not None:
                report = _repair_blobs(report, scan, quarantine)
        return report
    finally:
        v.close()


#: Seconds repair waits for the intake lock before it says so.
WAIT_NOTICE = 2.0
_WAITING = ("doctor --repair is waiting for the intake lock of {}: another evault command "
            "is storing blobs (an ingest or an open; on a team vault, on any machine); it "
            "goes on once they are done (Ctrl-C stops it, nothing repaired)")


@contextlib.contextmanager
def _announced(lock: contextlib.AbstractContextManager[None],
               notice: Callable[[str], None] | None, message: str) -> Iterator[None]:
    """Hold ``lock``; if taking it takes longer than :data:`WAIT_NOTICE`, tell ``notice``
    ``message`` once (from a timer thread), so that a wait is not a silent hang."""
    import threading

    with contextlib.ExitStack() as held:
        timer = threading.Timer(WAIT_NOTICE, notice or (lambda _: None), (message,))
        timer.daemon = True
        timer.start()
        try:
            held.enter_context(lock)
        finally:
            timer.cancel()
        yield


@contextlib.contextmanager
def _counting(v: Vault) -> Iterator[Session]:
    """The transaction of doctor's counts and lists: a table they read that SQL dropped or
    renamed stops doctor with one line (exit 3), since every later check reads it too."""
    try:
        with v.transaction() as session:
            yield session
    except VerificationError as e:
        raise VerificationError(_doctors(e)) from None


@dataclass(frozen=True, slots=True)
class _BlobScan:
    """What a blob check found (``found``: the report's fields) and what repair may do:
    remove temporaries (each a call that removes it) and quarantine orphans (of a blob
    folder, ``orphan_files``, each ``blobs/<shard>/<name>``, which :meth:`_Quarantine.move`
    moves; None for a bucket, whose ``orphans`` are left in place)."""

    found: dict[str, Any]
    temporaries: list[Callable[[], None]]
    orphans: int
    orphan_files: list[Path] | None
    #: Partial copies a killed repair left in quarantine (see :func:`_killed_copies`).
    copies: list[str] = dataclasses.field(default_factory=list)
    #: Missing blobs found in another shard than their own, which repair moves back.
    misplaced: list[Path] = dataclasses.field(default_factory=list)


def _repair_blobs(report: DoctorReport, scan: _BlobScan,
                  quarantine: _Quarantine | None) -> DoctorReport:
    """Remove the temporaries; move the orphaned blobs of a folder into ``quarantine`` (a
    bucket's are left in place). No orphan is deleted, whatever the checks say: a blob no
    row names may be evidence whose rows were deleted with SQL (and the events that created
    them deleted or changed too), which the database alone cannot tell."""
    for remove in scan.temporaries:
        remove()
    if quarantine is not None:
        for name in scan.copies:  # the orphan each was copied from is still in blobs/
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=quarantine.fd)
    removed = len(scan.temporaries) + len(scan.copies)
    report = _restore_misplaced(report, scan.misplaced)
    if scan.orphan_files is None:
        return dataclasses.replace(report, orphans_left=scan.orphans, blobs_removed=removed)
    moved = 0
    skipped = list(report.orphans_skipped or ())  # the strays not moved back, if any
    if quarantine is not None:
        # One orphan that cannot be moved is named and left; the others are still moved.
        moved = sum(quarantine.move(path, skipped) for path in scan.orphan_files)
    return dataclasses.replace(
        report, orphans_quarantined=moved,
        quarantine=str(quarantine.path) if quarantine is not None and moved else None,
        orphans_skipped=tuple(skipped) or None,
        blobs_removed=removed)


def quarantine_folder(v: Vault) -> Path:
    """Where ``doctor --repair`` moves orphaned blobs: in the vault, beside ``blobs/`` (as a
    rule on the same file system: a link; else a copy, see :meth:`_Quarantine.move`), and
    not scanned as blobs."""
    return v.root / "quarantine"


#: ``os.link``'s ``follow_symlinks``: False (a link of a symbolic link itself, never of
#: what it points to: ``linkat`` without ``AT_SYMLINK_FOLLOW``) where the platform can.
#: (By name: what the platform supports, whatever ``os.link`` is when this is imported.)
_LINK_FOLLOWS = all(f.__name__ != "link" for f in os.supports_follow_symlinks)


class _Quarantine:
    """``<vault>/quarantine/``, opened once without following a symbolic link (see
    :meth:`opened`): every name made, opened or removed in it is relative to that
    descriptor, so nothing is written through a link planted there, before or since."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    @classmethod
    @contextlib.contextmanager
    def opened(cls, path: Path) -> Iterator[_Quarantine]:
        """The folder, made 0700 if missing. A ConfigError, raised before anything is
        repaired, if it is a symbolic link (to a folder outside the vault, where root's
        repair would put the orphans) or not a folder, another user's, or writable by
        others (who could swap what repair links there)."""
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        again = "nothing was repaired: {}, then run `evault doctor --repair` again"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            what = ("is a symbolic link, which evault never makes" if os.path.islink(path)
                    else "is not a folder")
            raise ConfigError(f"{path}: {what}; {again.format('move it aside')}") from None
        try:
            info = os.fstat(fd)
            if info.st_uid != os.geteuid():
                raise ConfigError(f"{path}: is owned by uid {info.st_uid}, not by this user "
                                  f"(uid {os.geteuid()}); "
                                  + again.format("move it aside, or run doctor as its owner"))
            if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise ConfigError(
                    f"{path}: can be written by other users (mode "
                    f"{stat.S_IMODE(info.st_mode):04o}); "
                    + again.format("check what is in it and `chmod 700` it"))
            yield cls(path, fd)
        finally:
            os.close(fd)

    def move(self, source: Path, skipped: list[str]) -> bool:
        """Move one blob file into the folder (as its name, ``<blob-id>``, or ``<blob-id>.N``
        if that is taken: nothing there is overwritten), then flush both folders; True once
        it is moved, False if it was gone already. A hard link where it can, of the file
        named, never of what a symbolic link there points to; where the blob folder is on
        another file system (EXDEV: a disk mounted on ``blobs/``, or ``blobs`` a symbolic
        link to one), a copy, fsynced and linked to its name the same way. The blob is
        removed only once its copy in the folder is on disk, and (a copy) only if its name
        still is the file copied: one renamed over it meanwhile is left, and named. (That
        check and the unlink are two steps; a rename between them is not seen.) Its shard
        is opened without following a link (evault never makes one there), and the blob
        reached from it.

        What is not a regular file (a symbolic link, a folder, a fifo named like a blob),
        and what cannot be moved, is left in place and named, as ``PATH: why``, in
        ``skipped``."""
        try:
            shard = os.open(source.parent,
                            os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:  # gone since the scan
            return False
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                skipped.append(self._cannot(source, e))
            else:
                skipped.append(f"{source}: its folder is a symbolic link, which evault never "
                               f"makes; {_CHECK_IT}")
            return False
        try:
            return self._move(source, shard, skipped)
        except _Left as e:
            skipped.append(str(e))
        except OSError as e:
            skipped.append(self._cannot(source, e))
        finally:
            os.close(shard)
        return False

    def _cannot(self, source: Path, e: OSError) -> str:
        """``PATH: why`` of an OSError: its names are relative to a folder, so say the
        path."""
        return (f"{source}: cannot be moved into {self.path} ({e.strerror or e}); left in "
                "place for the next `evault doctor --repair`")

    def _move(self, source: Path, shard: int, skipped: list[str]) -> bool:
        name = source.name
        try:
            kind = _kind(name, shard)
        except FileNotFoundError:  # gone since the scan
            return False
        if kind is not None:
            raise _Left(f"{source}: {kind}; {_CHECK_IT}")
        try:
            linked = self._link(name, shard, name)
        except FileNotFoundError:  # gone since the scan
            return False
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            copied = self._copy(source, shard)
            if copied is None:  # gone since the scan
                return False
            copy, of = copied
            try:
                target = self._link(copy, self.fd, name)
            finally:
                os.unlink(copy, dir_fd=self.fd)
            os.fsync(self.fd)
            # The copy was read from a descriptor, the source is removed by its name: a file
            # put there meanwhile (a rename over it) was never copied, and is left. (A link
            # is of the name itself: no such check is needed there.)
            try:
                now = os.stat(name, dir_fd=shard, follow_symlinks=False)
            except FileNotFoundError:  # removed meanwhile: its copy is kept
                return True
            if (now.st_dev, now.st_ino) != (of.st_dev, of.st_ino):
                skipped.append(f"{source}: was replaced while it was being copied (the copy "
                               f"is {self.path / target}); the file now there is left in "
                               "place for the next `evault doctor --repair`")
                return True
        else:
            kind = _taken_back_unless_file(linked, self.fd)
            if kind is not None:  # left where it was
                raise _Left(f"{source}: {kind}; {_CHECK_IT}")
            os.fsync(self.fd)
        os.unlink(name, dir_fd=shard)
        os.fsync(shard)
        return True

    def _link(self, name: str, folder: int, blob_id: str) -> str:
        """Link ``name`` of ``folder`` into this one as ``<blob-id>``, or the first free
        ``<blob-id>.N``; that name."""
        for n in range(1_000_000):
            target = blob_id if n == 0 else f"{blob_id}.{n}"
            try:
                # Fails if target exists: never overwrites.
                os.link(name, target, src_dir_fd=folder, dst_dir_fd=self.fd,
                        follow_symlinks=_LINK_FOLLOWS)
            except FileExistsError:
                continue
            return target
        raise VaultError(f"{self.path}: no free name for blob {blob_id}")  # pragma: no cover

    def _copy(self, source: Path, shard: int) -> tuple[str, os.stat_result] | None:
        """The name in this folder of a whole, fsynced copy of ``source`` (a regular file,
        never reached through a symbolic link), made 0600 and owned by whoever runs doctor,
        and the ``fstat`` of the file copied; None if ``source`` is gone. A copy cut short
        is removed.

        No mode bit of ``source`` is kept: whoever can write ``blobs/`` could plant a
        setuid, setgid or world-writable file there, which root's copy would make a
        setuid-root one. ``O_NONBLOCK``: a fifo named like a blob is refused at once, not
        waited on while doctor holds the vault's intake lock."""
        try:
            src = os.open(source.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                          | os.O_CLOEXEC, dir_fd=shard)
        except FileNotFoundError:
            return None
        except OSError as e:  # swapped since it was checked
            if e.errno != errno.ELOOP:
                raise
            raise _Left(f"{source}: {_not_a_blob(stat.S_IFLNK)}; {_CHECK_IT}") from None
        try:
            info = os.fstat(src)
            kind = _not_a_blob(info.st_mode)
            if kind is not None:
                raise _Left(f"{source}: {kind}; {_CHECK_IT}")
            temp = f"{TEMP_PREFIX}{secrets.token_hex(8)}-{source.name}"
            dst = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                          | os.O_CLOEXEC, 0o600, dir_fd=self.fd)
            try:
                try:
                    copied = copy_file(src, dst, writeback=True)
                    if copied != info.st_size:
                        raise _Left(f"{source}: changed while it was copied into "
                                    f"{self.path} ({copied} of its {info.st_size} bytes); "
                                    "left in place for the next `evault doctor --repair`")
                    os.fsync(dst)
                finally:
                    os.close(dst)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp, dir_fd=self.fd)
                raise
            return temp, info
        finally:
            os.close(src)


class _Left(Exception):
    """An orphan :meth:`_Quarantine.move` leaves in place: ``PATH: why``."""


#: What to do with a file left in ``blobs/`` that is not a blob.
_CHECK_IT = "left in place: check it and remove it by hand"

_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"),
          (stat.S_ISFIFO, "a fifo"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))


def _kind(name: str, folder: int) -> str | None:
    """What ``name`` in the folder of descriptor ``folder`` is if not a regular file (as
    :func:`_not_a_blob` says it), never following a link; None for a regular file."""
    return _not_a_blob(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode)


def _taken_back_unless_file(name: str, folder: int) -> str | None:
    """After a link made as ``name`` in ``folder``: None if it is a regular file; else what
    it is, with that name removed again (the source was swapped for a symbolic link or
    another non-file between its check and the link, which is of that)."""
    kind = _kind(name, folder)
    if kind is not None:
        os.unlink(name, dir_fd=folder)
    return kind


def _not_a_blob(mode: int) -> str | None:
    """None for a regular file (as every blob is); else what it is, as a line says it."""
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _KINDS if test(mode)), "something other than a file")
    return f"is {kind}, not a blob file"


def _check_folder(v: Vault, blobs: BlobStore, known: dict[str, str | None],
                  named: set[str], sizes: dict[str, int]) -> _BlobScan:
    """The blob folder against the rows: missing, unrecorded and orphaned blobs, temporary
    files, and files named as a blob that are not it (``stray_copies``)."""
    temps, files = blobs.scan()
    # Interrupted package builds leave temporary ciphertext in exports/.
    # Regular files only, and not through an exports/ that is a symbolic link (evault makes
    # none): repair deletes these.
    exports = v.root / "exports"
    if exports.is_dir() and not exports.is_symlink():
        temps += sorted(p for p in exports.iterdir() if p.name.startswith(".tmp-")
                        and is_regular_file(p))
    ids = set(known) | named

    def home(f: Path) -> bool:
        return f.parent.name == f.name[:2]

    # A blob is a regular file where evault reads it, in the shard its id names, or it is
    # missing (a symbolic link, a folder or a fifo there is not the blob).
    placed = {f.name for f in files if home(f) and is_regular_file(f)}
    missing = sorted(ids - placed)
    # Each by its path, in the shard it is in: a name no blob id is is an orphan, moved from
    # there. A missing blob found in another shard is moved back by repair: the regular
    # file of a blob's id in a real shard (not a symbolic link) whose size is the one its
    # row records, if it is the only one. Any other file named as a blob a row names (a
    # second copy, a decoy, a link, or a second file that would do) is not an orphan,
    # since a row names it, and which copy is good the rows alone cannot tell: it is named
    # and left where it is, never moved or quarantined.
    candidates: dict[str, list[Path]] = {}
    orphans: list[Path] = []
    strays: list[Path] = []
    for f in files:
        if f.name not in ids:
            orphans.append(f)
        elif f.name in placed and home(f):
            continue
        elif (f.name not in placed and not home(f) and is_blob_id(f.name)
              and not f.parent.is_symlink() and (size := _file_size(f)) is not None
              and size == sizes.get(f.name, size)):
            candidates.setdefault(f.name, []).append(f)
        else:
            strays.append(f)
    misplaced = {blob_id: found[0] for blob_id, found in candidates.items() if len(found) == 1}
    strays = sorted(strays + [f for found in candidates.values() if len(found) > 1
                              for f in found])
    copies = _killed_copies(quarantine_folder(v))
    found = _blob_counts(v, known, named, missing, len(temps) + len(copies), len(orphans))
    if misplaced:
        found["misplaced"] = tuple(str(p) for p in misplaced.values())
    if strays:
        found["stray_copies"] = tuple(str(p) for p in strays)
    return _BlobScan(found, [functools.partial(_unlink, temp) for temp in temps],
                     len(orphans), orphans, copies, list(misplaced.values()))


def _file_size(path: Path) -> int | None:
    """The size of ``path`` if it is a regular file (a link is not followed); else None."""
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _restore_misplaced(report: DoctorReport, misplaced: list[Path]) -> DoctorReport:
    """Move each missing blob found in another shard back into its own (never over a file
    there, never a symbolic link or other non-file), then flush both folders; those moved
    are no longer missing, and each one left is named in ``orphans_skipped`` as ``PATH:
    why``."""
    if not misplaced:
        return report
    restored: list[str] = []
    left: list[Path] = []
    skipped = list(report.orphans_skipped or ())
    for source in misplaced:
        why = _move_back(source)
        if why is None:
            restored.append(source.name)
        else:
            left.append(source)
            skipped.append(f"{source}: {why}")
    still = [line for line in report.missing or ()
             if line.split(" ", 1)[0] not in restored]
    return dataclasses.replace(
        report, blobs_restored=len(restored),
        blobs_missing=(report.blobs_missing or 0) - len(restored),
        missing=tuple(still) or None, misplaced=tuple(str(p) for p in left) or None,
        orphans_skipped=tuple(skipped) or None)


def _move_back(source: Path) -> str | None:
    """Link ``blobs/<other shard>/<id>`` as ``blobs/<id[:2]>/<id>`` and remove the stray
    name; None once done, else why it was left (a file already there is never replaced)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    home = source.parent.parent / source.name[:2]
    try:
        make_shard(str(home))
        src = os.open(source.parent, flags)
    except OSError as e:
        return f"cannot be moved back ({e.strerror or e}); left in place"
    try:
        try:
            dst = os.open(home, flags)
        except OSError as e:
            return f"cannot be moved into {home} ({e.strerror or e}); left in place"
        try:
            kind = _kind(source.name, src)
            if kind is not None:
                return f"{kind}; {_CHECK_IT}"
            os.link(source.name, source.name, src_dir_fd=src, dst_dir_fd=dst,
                    follow_symlinks=_LINK_FOLLOWS)
            kind = _taken_back_unless_file(source.name, dst)
            if kind is not None:
                return f"{kind}; {_CHECK_IT}"
            os.fsync(dst)
        except OSError as e:
            return f"cannot be moved into {home} ({e.strerror or e}); left in place"
        finally:
            os.close(dst)
        # The blob is in its place: a stray name that cannot be removed is an orphan for
        # the next repair, not a failure of this one.
        with contextlib.suppress(OSError):
            os.unlink(source.name, dir_fd=src)
            os.fsync(src)
    finally:
        os.close(src)
    return None


#: The name of :meth:`_Quarantine._copy`'s temporary: ``.tmp-<16 hex>-<orphan's name>``.
_COPY = re.compile(rf"{re.escape(TEMP_PREFIX)}[0-9a-f]{{16}}-.+", re.DOTALL)


def _killed_copies(folder: Path) -> list[str]:
    """The names in quarantine of the partial copies a killed ``doctor --repair`` left (a
    copy is made under a temporary name, then linked to the orphan's): regular files of
    that name only, read without following a link; none if the folder is not a real one
    (repair refuses it)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        return [name for name in sorted(os.listdir(fd))
                if _COPY.fullmatch(name) and is_regular_file(name, dir_fd=fd)]
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _check_bucket(v: Vault, blobs: S3BlobStore, known: dict[str, str | None],
                  named: set[str]) -> _BlobScan:
    """The bucket against the rows: missing, unrecorded and orphaned objects, pending
    uploads."""
    pending_uploads, listed = blobs.scan()
    orphans = sorted(set(listed) - set(known) - named)
    # A blob recorded with a version (a versioned bucket) is there only if that version is,
    # listed or hidden by a delete marker, whatever newer version its key now lists; one
    # without, if its key is listed (as is one an item names without a `blobs` row: its
    # version is not known).
    kept = blobs.versions() if any(known.values()) else set()
    listed_ids = set(listed)
    missing = sorted({b for b, version in known.items()
                      if (b not in listed_ids if version is None else (b, version) not in kept)}
                     | {b for b in named - set(known) if b not in listed_ids})
    found = _blob_counts(v, known, named, missing, len(pending_uploads), len(orphans))
    return _BlobScan(found, [functools.partial(blobs.abort_pending, upload)
                             for upload in pending_uploads], len(orphans), None)


def _blob_counts(v: Vault, known: dict[str, str | None], named: set[str], missing: list[str],
                 temps: int, orphans: int) -> dict[str, Any]:
    unrecorded = sorted(named - set(known))
    found: dict[str, Any] = {"blobs": len(known), "blobs_missing": len(missing),
                             "temporary_files": temps, "blobs_unrecorded": len(unrecorded),
                             "orphaned_blobs": orphans}
    if missing:
        found["missing"] = _with_items(v, missing[:NAMED])
    if unrecorded:
        found["unrecorded"] = _with_items(v, unrecorded[:NAMED])
    return found


def _with_items(v: Vault, blob_ids: list[str]) -> tuple[str, ...]:
    """Each blob as ``BLOB (items EV-..., ...)``, or ``BLOB (no item)``."""
    with v.transaction() as session:
        items: dict[str, list[str]] = {}
        for blob_id, item_id in session.execute(
                select(Item.blob_id, Item.id).where(Item.blob_id.in_(blob_ids))
                .order_by(Item.id)):
            items.setdefault(blob_id, []).append(item_id)
    return tuple(f"{b} (items {', '.join(items[b])})" if b in items else f"{b} (no item)"
                 for b in blob_ids)


def check_sealed_values(vault: Vault) -> dict[str, Any]:
    """``sealed_values`` and ``undecryptable``: every sealed metadata value opened, which no
    listing does (each opens only what it shows). A value changed or moved with SQL does not
    open; nothing is repaired (the plaintext is not known): restore the database."""
    try:
        with vault.transaction() as session:
            bad = undecryptable(session)
    except VerificationError as e:  # a cell SQL made unreadable: a failed check
        return {"sealed_values": f"{FAILED}{_doctors(e)}"}
    except SQLAlchemyError as e:  # a table or column SQL dropped or renamed
        return {"sealed_values": f"{FAILED}{_stopped(e)}"}
    except VaultError as e:  # the key store cannot be opened here: say so, go on
        return {"sealed_values": f"{NOT_CHECKED}{e}"}
    if not bad:
        return {"sealed_values": "ok"}
    return {"sealed_values": f"{len(bad)} value(s) do not decrypt under this vault's metadata "
                             "key; restore the database from a backup",
            "undecryptable": tuple(bad)}


#: At most this many cells are named (as blobs missing are); the rest are counted.
NAMED = 1000
#: Rows fetched at a time by :func:`check_times`.
TIME_BATCH = 4096


def check_times(vault: Vault) -> dict[str, Any]:
    """``times`` and ``not_times``: every time column of every row read as the commands
    read it (the column's type, :class:`vault.store.models.UTCDateTime`: a time past year 1
    or 9999 in UTC, and NULL in a NOT NULL column, are no times either), one SELECT a
    table, which no listing does (``items list`` reads ``ingested_at`` only). A time SQL
    outside evault made not one stops every command that loads its row; nothing is repaired
    (the time is not known): restore the database.

    Read in one read-only transaction, streamed (:func:`vault.store.db.read_only`): no
    write lock is held for the scan of a custody log of millions of events. A value equal
    to the one before it in its column (times repeat: whole seconds, batches) is not read
    again. At most :data:`NAMED` cells are named; all are counted."""
    bad: list[str] = []
    found = 0
    try:
        with db.read_only(vault.engine) as conn:
            for name, table in sorted(Base.metadata.tables.items()):
                times = [c for c in table.columns if isinstance(c.type, UTCDateTime)]
                if not times:
                    continue
                key = list(table.primary_key.columns)
                reads = [db.column_reader(c, conn.dialect) for c in times]
                stmt = select(*key, *(type_coerce(c, NullType()).label(c.name) for c in times))
                result = conn.execute(stmt.order_by(*key)
                                      .execution_options(yield_per=TIME_BATCH))
                with contextlib.closing(result):
                    found += _not_times(name, len(key), times, reads, result, bad)
    except (SQLAlchemyError, vault.engine.dialect.loaded_dbapi.Error) as e:
        return {"times": f"{FAILED}{_scan_stopped(e)}"}
    if not found:
        return {"times": "ok"}
    return {"times": f"{found} value(s) are not times (written by SQL outside evault); "
                     f"{RESTORE}",
            "not_times": tuple(bad)}


def _not_times(table: str, keys: int, columns: list[Any], reads: list[Callable[[Any], Any]],
               rows: Iterable[Sequence[Any]], bad: list[str]) -> int:
    """How many time cells of ``rows`` (``keys`` primary key values, then the times of
    ``columns`` as the driver gives them) are not times; the first of them, up to
    :data:`NAMED` in all, are added to ``bad``."""
    found = 0
    good: list[Any] = [_UNSEEN] * len(columns)
    for row in rows:
        for i, read in enumerate(reads):
            value = row[keys + i]
            if value is not None and value == good[i]:
                continue
            try:
                read(value)
            except NotATime:
                found += 1
                if len(bad) < NAMED:
                    bad.append(f"{row_name(table, row[:keys])}: {columns[i].name}")
                continue
            good[i] = value
    return found


#: No value a column holds (for :func:`_not_times`'s first row).
_UNSEEN = object()


def _doctors(refusal: VaultError) -> str:
    """A refusal as doctor says it: doctor is the next step it names to run."""
    return str(refusal).replace(RUN_DOCTOR, "")


def _stopped(e: Exception) -> str:
    """A database error (SQLAlchemy's or the driver's own) that stopped a check, in one
    line."""
    orig = e.orig if isinstance(e, DBAPIError) and e.orig is not None else e
    return (f"vault database: {dbapi.first_line(orig)} (its tables changed outside evault?); "
            f"{RESTORE}")


def _scan_stopped(e: Exception) -> str:
    """What stopped a scan of :func:`vault.store.db.read_only` (which, unlike
    :meth:`Vault.transaction`, maps no driver error), as a ``failed:`` check says it: a cell
    the driver cannot read (text that is not UTF-8), else a table or column SQL dropped or
    renamed. A refusal people act on otherwise (the database busy, the disk full) is raised,
    as every command raises it."""
    said = dbapi.failure(e.orig if isinstance(e, DBAPIError) else e)
    if said is None:
        return _stopped(e)
    if not isinstance(said, VerificationError):
        raise said from None
    return _doctors(said)


#: Rows read a query: the log and the items table are read in pages of this many.
PAGE = 5000


@dataclass(frozen=True, slots=True)
class _Signed:
    """What an item's creating event signed, which its row must repeat."""

    seq: int
    action: str
    sha256: str | None
    size: object
    ingested_at: str
    case: object


def check_custody_log(vault: Vault) -> dict[str, Any]:
    """``custody_log``: ``ok`` when the log's seqs run 0..N-1, without a gap, and N is the
    size its head (``custody_head``) records: one count, min and max (seq is the primary key),
    and the first missing seq looked for only when they disagree. An event deleted with SQL
    (the one that created an item whose rows were deleted too) shows here; whether the events
    are the signed ones is ``custody verify``'s to say."""
    verify = "run `evault custody verify`, then restore the database from a backup"
    try:
        with db.read_only(vault.engine) as conn:
            count, low, high = conn.execute(select(
                func.count(), func.min(CustodyEvent.seq), func.max(CustodyEvent.seq))).one()
            sizes = list(conn.scalars(select(CustodyHead.size)))
            gap = None
            if count and low != 0:
                gap = 0
            elif count and high != count - 1:
                later = aliased(CustodyEvent)
                gap = conn.scalar(
                    select(func.min(CustodyEvent.seq + 1))
                    .where(CustodyEvent.seq < high,
                           ~select(later.seq).where(later.seq == CustodyEvent.seq + 1)
                           .exists()))
    except (SQLAlchemyError, vault.engine.dialect.loaded_dbapi.Error) as e:
        return {"custody_log": f"{FAILED}{_scan_stopped(e)}"}
    if len(sizes) != 1:
        return {"custody_log": f"the custody log's head has {len(sizes)} rows, not 1 (changed "
                               f"by SQL outside evault?); {verify}"}
    size = sizes[0]
    if gap is None and size is not None and size > count:
        gap = count
    if gap is not None:
        return {"custody_log": f"event {gap} is missing from the custody log (deleted by SQL "
                               f"outside evault?); {verify}"}
    if size != count:
        return {"custody_log": f"event {size} is past the custody log's head, which says "
                               f"{size} event(s) (changed by SQL outside evault?); {verify}"}
    return {"custody_log": "ok"}


def check_item_rows(vault: Vault) -> dict[str, Any]:
    """``item_rows`` and ``item_differences``: every item row's ``sha256``, ``size``,
    ``ingested_at`` (to the second, as the event has it), ``case_id`` and ``intake_seq``
    against the body of the custody event that created it (``item.ingested``,
    ``item.received``; its subject is the item), and against its blob's row (the same
    bytes). SQL outside evault can change a row, which ``items show``, listings and packages
    then repeat, and ``custody verify`` does not read; an item no event created, and an event
    whose item row is gone, are differences too. The bodies are only decoded here: whether
    they are signed is ``custody verify``'s to say. Read in pages: held at once are one
    page and the expected values of the items not yet read. Nothing is repaired: restore
    the database."""
    found: list[str] = []
    try:
        with db.read_only(vault.engine) as conn:  # no write lock for the scan of the log
            expected = _signed_items(conn, found)
            _compare_items(conn, expected, found)
    except (SQLAlchemyError, vault.engine.dialect.loaded_dbapi.Error) as e:
        return {"item_rows": f"{FAILED}{_scan_stopped(e)}"}
    for item_id, signed in sorted(expected.items()):
        found.append(f"item {item_id}: its row is missing; its signed {signed.action} event "
                     f"(seq {signed.seq}) created it")
    if not found:
        return {"item_rows": "ok"}
    return {"item_rows": f"{len(found)} difference(s) from the signed events that created the "
                         "items (changed by SQL outside evault); run `evault custody verify`, "
                         f"then {RESTORE}",
            "item_differences": tuple(found[:NAMED])}


def _signed_items(conn: Connection, found: list[str]) -> dict[str, _Signed]:
    """Item id -> what its creating event signed, from the log read in pages of ``PAGE``
    events; an event that cannot be read, or a second one for an item, goes into ``found``."""
    expected: dict[str, _Signed] = {}
    after = -1
    while True:
        # The driver's rows (no Row objects, no type processing): the body is checked for
        # bytes below, whatever SQL stored there.
        page = list(db.raw_rows(conn, cast("Select[Any]", (
            select(CustodyEvent.seq, type_coerce(CustodyEvent.body, NullType()),
                   CustodyEvent.action, CustodyEvent.subject)
            .where(CustodyEvent.action.in_(recording.CREATING), CustodyEvent.seq > after)
            .order_by(CustodyEvent.seq).limit(PAGE)))))
        for seq, body, row_action, row_subject in page:
            # Parsed, not re-encoded as Event.decode does (which doubled doctor's time on a
            # log of 100,000 events): that the bytes are canonical and signed is `custody
            # verify`'s to check; here they only say what the row must repeat.
            try:
                if not isinstance(body, (bytes, memoryview)):  # SQL stored text or a number
                    raise ValueError(f"its body is {type(body).__name__}, not bytes")
                event = parse_json_object(bytes(body), "custody event", limit=1024 * 1024)
                action, subject, details, digests = (event.get("action"), event.get("subject"),
                                                     event.get("details"), event.get("digests"))
                # Compared as signed with the row's time formatted once (not parsed here).
                time = str(event.get("time"))
                if not (action in recording.CREATING and event.get("seq") == seq
                        and isinstance(subject, str) and isinstance(details, dict)
                        and isinstance(digests, dict)):
                    raise ValueError("not the item event its row says")
                if (row_action, row_subject) != (action, subject):
                    raise ValueError(f"its columns say {row_action} of {row_subject}, its "
                                     f"signed body {action} of {subject}")
            except (VerificationError, ValueError) as e:
                found.append(f"event {seq}: {e}")
                continue
            if subject in expected:
                found.append(f"item {subject}: created twice (events "
                             f"{expected[subject].seq} and {seq})")
                continue
            expected[subject] = _Signed(seq, str(action), digests.get("sha256"),
                                        details.get("size"), time, details.get("case"))
        if len(page) < PAGE:
            return expected
        after = page[-1][0]


def _compare_items(conn: Connection, expected: dict[str, _Signed], found: list[str]) -> None:
    """Each item row, read in pages of ``PAGE``, against ``expected`` (its entry taken out
    once read) and its blob's row; each difference into ``found``."""
    read = db.column_reader(Item.__table__.c.ingested_at, conn.dialect)
    after = ""
    while True:
        page = list(db.raw_rows(conn, cast("Select[Any]", (
            select(Item.id, Item.sha256, Item.size,
                   type_coerce(Item.ingested_at, NullType()), Item.case_id, Item.intake_seq,
                   Blob.sha256, Blob.size, Item.blob_id)
            .outerjoin(Blob, Blob.id == Item.blob_id)
            .where(Item.id > after).order_by(Item.id).limit(PAGE)))))
        for item_id, sha256, size, raw, case, seq, blob_sha256, blob_size, blob in page:
            if blob is None:
                found.append(f"item {item_id}: blob_id is NULL")
            signed = expected.pop(item_id, None)
            if signed is None:
                found.append(f"item {item_id}: no signed {' or '.join(recording.CREATING)} event "
                             "created it")
                continue
            try:
                ingested_at: str | None = isoformat(read(raw))
            except NotATime:  # named by check_times (NULL too)
                ingested_at = signed.ingested_at
            said = f"its signed {signed.action} event (seq {signed.seq}) says"
            for field, row, event in (
                    ("sha256", sha256, signed.sha256), ("size", size, signed.size),
                    ("ingested_at", ingested_at, signed.ingested_at),
                    ("case_id", case, signed.case), ("intake_seq", seq, signed.seq)):
                # NULL where the event has a value is a difference too (a NOT NULL dropped
                # with SQL): a listing by case would leave the item out.
                if event is not None and row != event:
                    found.append(f"item {item_id}: {field} is {_cell(row, event)}, {said} "
                                 f"{event}")
            # The blob's row against the signed bytes (the row's, if the event has none):
            # a row changed with the item's is named once above.
            bytes_ = (signed.sha256 or sha256, size if signed.size is None else signed.size)
            if blob_sha256 is not None and (blob_sha256, blob_size) != bytes_:
                found.append(f"item {item_id}: its blob's row names other bytes (sha256 "
                             f"{blob_sha256}, size {blob_size})")
        if len(page) < PAGE:
            return
        after = page[-1][0]


def _cell(row: object, event: object) -> str:
    """A row's value as a difference names it: NULL; quoted, with its type, where it would
    read as the signed value (a column SQL retyped: ``'6' (str)`` against ``6``)."""
    if row is None:
        return "NULL"
    if str(row) == str(event):
        return f"{row!r} ({type(row).__name__})"
    return str(row)


def not_a_time(cell: str) -> str:
    """The line that names one of ``not_times`` (``item EV-...: ingested_at``): the
    refusal every command gives, but for doctor's next step."""
    row, column = cell.rsplit(": ", 1)
    return str(NotATime("", column, row=row, step=""))


def check_key_history(vault: Vault, *, repair: bool) -> KeyHistoryCheck:
    """``key_history``: ``ok``, or how many rows of the key tables differ from the signed
    history (and, with ``repair``, ``keys_repaired``: how many were rewritten from it)."""
    try:
        anchor = keyhistory.ensure_anchor(vault)
    except VerificationError as e:  # an attestation this key store did not sign
        return KeyHistoryCheck(key_history=f"{FAILED}{_doctors(e)}")
    except VaultError as e:  # a locked key store, no passphrase given
        return KeyHistoryCheck(key_history=f"{NOT_CHECKED}{e}")
    if anchor is None:
        return KeyHistoryCheck(key_history="no identity yet")
    repaired: int | None = None
    try:
        if repair:
            with vault.transaction() as session:
                repaired = len(keyhistory.repair(vault, session))
        with vault.transaction() as session:
            history = keyhistory.load(vault, session, anchor)
            found = [f"event {seq}: {m}" for seq, m in history.defects]
            found += keyhistory.differences(history, session)
    except VerificationError as e:  # a cell of the key tables SQL made unreadable
        return KeyHistoryCheck(keys_repaired=repaired, key_history=f"{FAILED}{_doctors(e)}")
    except SQLAlchemyError as e:  # a table or column SQL dropped or renamed
        return KeyHistoryCheck(keys_repaired=repaired, key_history=f"{FAILED}{_stopped(e)}")
    except VaultError as e:
        return KeyHistoryCheck(keys_repaired=repaired,
                               key_history=f"not {'repaired' if repair else 'checked'}: {e}")
    if not found:
        return KeyHistoryCheck(keys_repaired=repaired, key_history="ok")
    advice = "run `evault custody verify`" if history.defects else "run `evault doctor --repair`"
    return KeyHistoryCheck(
        keys_repaired=repaired,
        key_history=f"{len(found)} difference(s) from the signed history; {advice}",
        key_history_differences=tuple(found),
    )


LEFTOVER_WHAT = {
    "export": "plaintext of an interrupted `items export`",
    "open": "plaintext of an interrupted `open`, not all checked",
}


def check_leftovers(vault: Vault, *, repair: bool) -> list[Leftover]:
    """What killed ``items export`` and ``open`` runs left behind, one :class:`Leftover` each:
    command, item (exports), path, started_at, age_seconds, on_disk, and ``state``: ``left``
    (repair removes it), ``refused: WHY`` (not removed, even with repair), ``removed`` or
    ``gone`` (nothing was on disk) after repair, ``removed; not logged: WHY``; and
    ``logged``, the event repair appended (an export whose intent was open)."""
    out = []
    now = utcnow()
    for found in pending.abandoned(vault.root):
        try:
            entry = found.entry
            if entry is None:
                out.append(Leftover(command="unknown", path=str(found.record),
                                    state=f"refused: {found.problem}"))
                continue
            on_disk = os.path.lexists(entry.temp)
            row = Leftover(
                command="items export" if entry.kind == "export" else "open",
                item=entry.item or None,
                path=str(entry.temp),
                what=LEFTOVER_WHAT[entry.kind],
                started_at=isoformat(entry.started_at),
                age_seconds=max(0, int((now - entry.started_at).total_seconds())),
                on_disk=on_disk,
                state="",
            )
            state, logged = _leftover_state(vault, entry, on_disk, repair=repair)
            out.append(dataclasses.replace(row, state=state, logged=logged))
            if state in ("removed", "gone"):  # else the record stays for the next run
                found.remove()
        finally:
            found.close()
    return out


def _leftover_state(
    vault: Vault, entry: pending.Entry, on_disk: bool, *, repair: bool
) -> tuple[str, str | None]:
    """A leftover's ``state`` and ``logged`` (see :func:`check_leftovers`); with repair it is
    removed, and an export whose intent is open is logged as abandoned."""
    problem = pending.ours(entry)
    events: dict[str, int] = {}
    if problem is None and entry.kind == "export":
        events = _export_events(vault, entry)
        if on_disk and "item.export.started" not in events and not _empty_file(entry.temp):
            # Plaintext is written only after the intent is logged: killed before,
            # the temporary is empty.
            problem = "no item.export.started event of this run in the custody log"
    if problem is not None:
        return f"refused: {problem}", None
    if not repair:
        return "left", None
    problem = pending.remove(entry)
    if problem is not None:
        return f"refused: {problem}", None
    state = "removed" if on_disk else "gone"
    if entry.kind == "export" and "item.export.started" in events and not (
            {"item.exported", "item.export.abandoned"} & set(events)):
        try:
            _log_abandoned(vault, entry, events["item.export.started"], leftover=on_disk)
        except VaultError as e:  # a locked key store: the record stays for next time
            return f"{state}; not logged: {e}", None
        return state, "item.export.abandoned"
    return state, None


def _empty_file(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    return stat.S_ISREG(st.st_mode) and st.st_size == 0


def _export_events(vault: Vault, entry: pending.Entry) -> dict[str, int]:
    from vault.service.items import export_events

    assert entry.item is not None
    with vault.transaction() as session:
        return export_events(session, entry.item, entry.token)


def _log_abandoned(vault: Vault, entry: pending.Entry, started: int, *, leftover: bool) -> None:
    from vault.service.custody import CustodyLog, actor_pair

    assert entry.item is not None
    with vault.transaction() as session:
        pair = actor_pair(vault, session, None)
        CustodyLog(vault, session).append(
            pair, "item.export.abandoned", entry.item,
            details={"export": entry.token, "started": started, "leftover": leftover},
        )
