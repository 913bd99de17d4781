"""The journal of commands that write plaintext outside the vault: ``<vault>/pending/``.

    >>> token = new_token()
    >>> with recorded(root, "export", token, folder, item="EV-0123456789AB"):  # doctest: +SKIP
    ...     write(folder / export_temp_name(token))

``items export`` and ``open`` write plaintext under a temporary name in a folder of the
user's (next to ``-o``, inside ``--out``). Killed there (``kill -9``, a power cut), no
cleanup runs and the plaintext stays under a name nobody knows. So before the temporary
file or folder exists, the command writes one small record here, fsynced: what it is
about to create (the folder's real path and a random token; the temporary name follows
from the token) and when. The record is removed once the command has finished or cleaned
up after itself; a record that remains names a leftover, and ``evault doctor`` reports it
(``--repair`` removes it).

The record stays here, in the vault folder, and never in the custody log: the folder a user
exports to is office-internal (a path, often with a case or a person in it), and custody
events travel to bodies in package excerpts and must carry no names (threat model claim 4).
The signed log holds the intent itself (``item.export.started`` with the token), this file
only where its leftover would be.

While its command runs, the record is locked (``flock``, taken before the record has its
name and released by the kernel when the process dies), so ``doctor --repair`` never
touches the temporary of a command still running.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from vault.clock import isoformat, parse_iso, utcnow
from vault.durable import TEMP_PREFIX, fsync_dir

PENDING = "pending"
KINDS = ("export", "open")
_TOKEN = re.compile(r"[0-9a-f]{16}")
_RECORD = re.compile(r"(export|open)-([0-9a-f]{16})\.json")
_RECORD_LIMIT = 64 * 1024


def new_token() -> str:
    """A random token naming one run of a command (its record and its temporary)."""
    return secrets.token_hex(8)


def export_temp_name(token: str) -> str:
    """The temporary name of an ``items export`` in its target's folder."""
    return f"{TEMP_PREFIX}{token}-export"


def open_temp_name(token: str) -> str:
    """The staging folder of an ``open`` inside ``--out``."""
    return f"{TEMP_PREFIX}{token}"


def temp_name(kind: str, token: str) -> str:
    return export_temp_name(token) if kind == "export" else open_temp_name(token)


@dataclass
class Entry:
    """One record: ``kind`` (export or open), its token, the folder's real path, when the
    command started, and (exports) the item."""

    kind: str
    token: str
    folder: Path
    started_at: datetime
    item: str | None = None
    keep: bool = False  # set by the command: leave the record for doctor (see recorded)

    @property
    def temp(self) -> Path:
        """The temporary file (export) or folder (open) this record stands for."""
        return self.folder / temp_name(self.kind, self.token)


def real_folder(path: Path) -> Path:
    """The absolute path of an existing folder, symbolic links resolved: what the record
    keeps, so that doctor can tell a folder swapped for a link since."""
    return Path(os.path.realpath(path))


@contextlib.contextmanager
def recorded(
    vault_root: Path, kind: str, token: str, folder: Path, *, item: str | None = None,
) -> Iterator[Entry]:
    """Record the temporary about to be made, durably, and hold the record locked while the
    block runs; remove it afterwards unless the block set ``entry.keep`` (it could not clean
    up, or the custody log could not record how it ended)."""
    assert kind in KINDS and _TOKEN.fullmatch(token)
    entry = Entry(kind, token, folder, utcnow(), item)
    pending = vault_root / PENDING
    if not pending.is_dir():
        pending.mkdir(mode=0o700, exist_ok=True)
        fsync_dir(vault_root)
    final = pending / f"{kind}-{token}.json"
    temp = pending / f"{TEMP_PREFIX}{kind}-{token}.json"
    data = json.dumps({
        "kind": kind, "token": token, "folder": str(folder),
        "started_at": isoformat(entry.started_at), "item": item,
    }, sort_keys=True).encode()
    fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        # Locked before it has its name: doctor can never see it unlocked while we run.
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, data)
        os.fsync(fd)
        os.rename(temp, final)
        fsync_dir(pending)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    try:
        yield entry
    finally:
        if not entry.keep:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(final)
        os.close(fd)


@dataclass
class Found:
    """A record whose command is no longer running, held locked until :meth:`close`."""

    entry: Entry | None  # None: the record is not one this code wrote (see problem)
    record: Path
    fd: int
    problem: str | None = None

    def remove(self) -> None:
        """Delete the record (its leftover is dealt with)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.record)

    def close(self) -> None:
        os.close(self.fd)


def abandoned(vault_root: Path) -> list[Found]:
    """The records of commands that ended without removing theirs (killed), each locked.

    A record being written or held by a running command is skipped. A file in ``pending/``
    that is not a record is skipped too; a record that does not parse is returned with a
    ``problem`` and no entry."""
    pending = vault_root / PENDING
    if not pending.is_dir() or pending.is_symlink():
        return []
    found = []
    for path in sorted(pending.iterdir()):
        match = _RECORD.fullmatch(path.name)
        if match is None:
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:  # gone meanwhile, or a symbolic link (ELOOP)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its command is running
            os.close(fd)
            continue
        held = os.fstat(fd)
        try:
            now_there = os.lstat(path)
        except FileNotFoundError:  # its command finished while we waited for the lock
            os.close(fd)
            continue
        if not stat.S_ISREG(held.st_mode) or (held.st_dev, held.st_ino) != (
                now_there.st_dev, now_there.st_ino):
            os.close(fd)
            continue
        entry, problem = _parse(os.read(fd, _RECORD_LIMIT), match[1], match[2])
        found.append(Found(entry, path, fd, problem))
    return found


def _parse(data: bytes, kind: str, token: str) -> tuple[Entry | None, str | None]:
    """The entry of a record named ``<kind>-<token>.json``, or why it is not one."""
    try:
        obj = json.loads(data)
        folder = obj["folder"]
        item = obj.get("item")
        if not (
            isinstance(obj, dict) and obj.get("kind") == kind and obj.get("token") == token
            and isinstance(folder, str) and os.path.isabs(folder) and "\0" not in folder
            and os.path.normpath(folder) == folder
            and (item is None or isinstance(item, str)) and (kind == "open") == (item is None)
        ):
            return None, "not a record evault wrote"
        return Entry(kind, token, Path(folder), parse_iso(str(obj["started_at"])), item), None
    except (ValueError, KeyError, TypeError, RecursionError):
        return None, "not a record evault wrote"


def ours(entry: Entry) -> str | None:
    """None if ``entry.temp`` is what its command made (so doctor may remove it), else why
    not. Only the exact name the record stands for, in a folder that is still the real
    folder recorded (no symbolic link swapped in), owned by this user, and of the right
    kind: a file for an export, a folder for an open, never a symbolic link."""
    try:
        fd = open_folder(entry.folder)
    except FileNotFoundError:
        return None
    except _NotReal as e:
        return str(e)
    try:
        return _problem(entry, fd)
    finally:
        os.close(fd)


def remove(entry: Entry) -> str | None:
    """Delete ``entry.temp`` if it is still what its command made (see :func:`ours`); None
    once it is gone, else why it was left. Every step works from a descriptor of the folder
    opened without following links, so a link swapped in after the check leads nowhere."""
    try:
        fd = open_folder(entry.folder)
    except FileNotFoundError:
        return None
    except _NotReal as e:
        return str(e)
    try:
        problem = _problem(entry, fd)
        if problem is not None:
            return problem
        name = temp_name(entry.kind, entry.token)
        if entry.kind == "export":
            os.unlink(name, dir_fd=fd)
        else:
            _remove_tree(name, fd)
            os.rmdir(name, dir_fd=fd)
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"could not be removed ({e.strerror})"
    finally:
        os.close(fd)
    return None


def _remove_tree(name: str, parent: int) -> None:
    """Empty the folder ``name`` of ``parent`` (a descriptor), following no link: a link
    inside is removed as a link. (``shutil.rmtree`` takes ``dir_fd`` only from 3.11.)"""
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
    try:
        with os.scandir(fd) as entries:
            children = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
        for child, is_dir in children:
            if is_dir:
                _remove_tree(child, fd)
                os.rmdir(child, dir_fd=fd)
            else:
                os.unlink(child, dir_fd=fd)
    finally:
        os.close(fd)


class _NotReal(Exception):
    """A component of the recorded folder is a symbolic link (or not a folder)."""


def open_folder(folder: Path) -> int:
    """A descriptor of ``folder``, reached from ``/`` one component at a time without
    following any link: the recorded path is a real path, so a link in it is a swap."""
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in folder.parts[1:]:
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                raise
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _NotReal(f"{folder} is no longer the folder it was (a symbolic "
                                   "link now)") from None
                raise _NotReal(f"{folder} cannot be read ({e.strerror})") from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def hold(fd: int) -> None:
    """Lock the temporary ``fd`` (just made) for as long as the command runs: the kernel
    releases it when the process dies, so only a killed run's temporary is free."""
    fcntl.flock(fd, fcntl.LOCK_EX)


def _in_use(name: str, folder: int) -> bool:
    """True if the temporary ``name`` of ``folder`` is held by a running command."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _problem(entry: Entry, fd: int) -> str | None:
    try:
        st = os.lstat(temp_name(entry.kind, entry.token), dir_fd=fd)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link, which evault never makes there"
    wanted = stat.S_ISREG if entry.kind == "export" else stat.S_ISDIR
    if not wanted(st.st_mode):
        return f"not the {'file' if entry.kind == 'export' else 'folder'} evault made"
    if st.st_uid != os.geteuid():
        return "owned by another user"
    if _in_use(temp_name(entry.kind, entry.token), fd):
        return "in use by a running command"
    return None
