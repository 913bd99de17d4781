"""Files of the vault on disk: atomic writes and the blob folder.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write_bytes(d / "a.txt", b"hello")
    >>> (d / "a.txt").read_bytes()
    b'hello'

Every file the vault keeps is written under a temporary name in the same directory, fsynced,
renamed into place and the directory fsynced, so a crash leaves the old file or the new one.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

TEMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (a rename) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def require_folder(target: Path) -> None:
    """Refuse to write ``target`` into a folder that does not exist, naming that folder (the
    temporary file the write would start with means nothing to the user)."""
    folder = target.parent
    if not folder.is_dir():
        from vault.errors import NotFoundError

        raise NotFoundError(f"{folder}: no such folder for {target.name}; create it first")


@contextlib.contextmanager
def atomic_writer(
    target: Path, *, mode: int = 0o600, overwrite: bool = True, temp_name: str | None = None,
) -> Iterator[BinaryIO]:
    """Yield a file to write; on success it replaces ``target`` atomically, on error it vanishes.

    With ``overwrite=False`` an existing ``target`` is never replaced (the final step uses
    ``link`` + ``unlink``, which fails if the name exists), so two writers cannot clobber.
    ``temp_name`` is the temporary's name (a caller that journals it, see
    :mod:`vault.service.pending`); by default a random one.
    """
    require_folder(target)
    temp = target.with_name(temp_name or f"{TEMP_PREFIX}{secrets.token_hex(8)}-{target.name}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(temp, target)
        else:
            os.link(temp, target)
            os.unlink(temp)
        fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def stage_files(files: list[tuple[Path, bytes]], *, mode: int = 0o644) -> list[tuple[Path, Path]]:
    """Write each file, synced, under a temporary name beside its target; (temp, target) pairs.

    Together with :func:`publish_staged` this writes a group of files (a document and its
    signature) all or nothing. Leftover temporaries of an earlier interrupted write to the
    same name are removed first.
    """
    import glob

    for target, _data in files:
        require_folder(target)
    staged: list[tuple[Path, Path]] = []
    try:
        for target, data in files:
            pattern = f"{TEMP_PREFIX}{'[0-9a-f]' * 12}-{glob.escape(target.name)}"
            for stale in target.parent.glob(pattern):
                stale.unlink(missing_ok=True)
            temp = target.with_name(f"{TEMP_PREFIX}{secrets.token_hex(6)}-{target.name}")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            staged.append((temp, target))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    except BaseException:
        discard_staged(staged)
        raise
    return staged


def discard_staged(staged: list[tuple[Path, Path]]) -> None:
    """Remove staged temporaries (the group is abandoned)."""
    for temp, _ in staged:
        temp.unlink(missing_ok=True)


def publish_staged(staged: list[tuple[Path, Path]]) -> None:
    """Give staged files their names, never replacing an existing file; all or none."""
    done: list[Path] = []
    try:
        for temp, target in staged:
            os.link(temp, target)
            done.append(target)
        for temp, _ in staged:
            os.unlink(temp)
        for parent in {target.parent for _, target in staged}:
            fsync_dir(parent)
    except BaseException:
        for target in done:
            target.unlink(missing_ok=True)
        discard_staged(staged)
        raise


def atomic_write_bytes(target: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``target`` with ``data`` atomically."""
    with atomic_writer(target, mode=mode) as handle:
        handle.write(data)


BLOB_ID_BYTES = 16
_BLOB_ID = re.compile(f"[0-9a-f]{{{2 * BLOB_ID_BYTES}}}")
INTAKE_LOCK = ".intake.lock"


def new_blob_id() -> str:
    """A random blob name: it says nothing about the content (not its digest)."""
    return secrets.token_hex(BLOB_ID_BYTES)


class BlobStore:
    """The ``blobs/`` folder: ``blobs/<2 hex>/<32 hex>``, each an age-encrypted file.

    Writers hold a shared lock on ``blobs/.intake.lock`` while their blobs are not yet
    committed to the database; ``evault doctor --repair`` takes it exclusively before it
    removes leftovers, so it never deletes a blob another command is about to commit.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._shards: set[str] = set()  # shard folders known to exist (one mkdir each)

    def path(self, blob_id: str) -> Path:
        """Where a blob lives."""
        if not _BLOB_ID.fullmatch(blob_id):
            raise ValueError(f"not a blob id: {blob_id!r}")
        return self.root / blob_id[:2] / blob_id

    @contextlib.contextmanager
    def intake_lock(self, *, exclusive: bool = False) -> Iterator[None]:
        """Shared for writers, exclusive for repair."""
        import fcntl

        fd = os.open(self.root / INTAKE_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def create(self) -> Iterator[tuple[str, BinaryIO]]:
        """Yield (blob id, file) to write; on success it is renamed into place, not fsynced.

        Call :meth:`sync` before committing the rows that refer to new blobs. On error the
        temporary file is removed.
        """
        blob_id = new_blob_id()
        # Plain strings, not Path objects: bulk intake calls this for every small file.
        shard = os.path.join(self.root, blob_id[:2])
        final = os.path.join(shard, blob_id)
        temp = os.path.join(shard, f"{TEMP_PREFIX}{blob_id}")
        if blob_id[:2] not in self._shards:
            _make_shard(shard)
            self._shards.add(blob_id[:2])
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileNotFoundError:
            # The shard folder was removed since this store made it: make it again.
            _make_shard(shard)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with WritebackFile(fd, "wb") as handle:
                yield blob_id, cast(BinaryIO, handle)
            os.rename(temp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise

    def sync(self, blob_ids: list[str]) -> None:
        """Make the named blobs and their directory entries durable."""
        if not blob_ids:
            return
        if _syncfs(self.root):
            return
        for blob_id in blob_ids:  # pragma: no cover - non-Linux fallback
            fd = os.open(self.path(blob_id), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for parent in {self.path(b).parent for b in blob_ids}:  # pragma: no cover
            fsync_dir(parent)

    def open(self, blob_id: str) -> BinaryIO:
        """Open a blob for reading."""
        return open(self.path(blob_id), "rb")

    def remove(self, blob_id: str) -> None:
        """Delete a blob (one no row refers to)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(blob_id))

    def scan(self) -> tuple[list[Path], list[str]]:
        """(temporary leftovers, ids of complete blob files) found on disk."""
        temps: list[Path] = []
        ids: list[str] = []
        for shard in sorted(self.root.iterdir()):
            if not shard.is_dir():
                continue
            for entry in sorted(shard.iterdir()):
                if entry.name.startswith(TEMP_PREFIX):
                    temps.append(entry)
                else:
                    ids.append(entry.name)
        return temps, ids


WRITEBACK_STEP = 8 << 20


class WritebackFile(io.FileIO):
    """A file being written that every WRITEBACK_STEP bytes asks the kernel to start
    writing them to disk, so that the final fsync or syncfs finds little left to do.
    Durability still comes from that sync alone; this only moves the disk's work earlier,
    to overlap the encryption of what follows. Used for new blobs and package files."""

    _start: int | None = None  # where the range not yet handed to the kernel begins
    _end = 0

    def write(self, data: ReadableBuffer, /) -> int:
        if self._start is None:
            self._start = self._end = self.tell()
        n = super().write(data)
        if n:
            self._end += n
            if self._end - self._start >= WRITEBACK_STEP:
                start_writeback(self.fileno(), self._start, self._end - self._start)
                self._start = self._end
        return n or 0

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        self._start = None
        return super().seek(offset, whence)


_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range: Any = None


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a just-written range of a file to disk, and return.

    ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` on Linux; elsewhere nothing. It promises no
    durability (an fsync or syncfs still must follow) but lets the disk work while the
    caller goes on, instead of all at the final sync.
    """
    global _sync_file_range
    if _sync_file_range is None:
        _sync_file_range = False
        if sys.platform.startswith("linux"):
            import ctypes

            # The C library is already loaded: look in the process's own symbols
            # (ctypes.util.find_library would run ldconfig, ~15 ms).
            function = getattr(ctypes.CDLL(None), "sync_file_range", None)
            if function is not None:
                function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
                function.restype = ctypes.c_int
                _sync_file_range = function
    if _sync_file_range:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _make_shard(path: str) -> None:
    """``mkdir`` of one shard folder; one that exists already is fine."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not os.path.isdir(path):
            raise


def _syncfs(path: Path) -> bool:
    """``syncfs(2)`` on the file system holding ``path``: one call for a whole batch."""
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):  # pragma: no cover
        return False
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:  # pragma: no cover
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.syncfs(fd) != 0:  # pragma: no cover
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)
    return True
