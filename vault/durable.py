"""Durable file writes: a file is whole under its name, or not there, even after a crash.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write_bytes(d / "a.txt", b"hello")
    >>> (d / "a.txt").read_bytes()
    b'hello'

One job: the ways the vault makes a file durable. Every file the vault keeps is written
under a temporary name (:data:`TEMP_PREFIX`) in the same directory, fsynced, renamed into
place and the directory fsynced, so a crash leaves the old file or the new one
(:func:`atomic_writer`); a group of files is staged and published all or nothing
(:func:`stage_files`, :func:`publish_staged`); many new files are made durable with one
:func:`syncfs`; a file being written hands its pages to the disk as it goes
(:class:`WritebackFile`); and :func:`copy_file` is the one copy loop, in the kernel where it
can be, with one set of errnos (:data:`NO_KERNEL_COPY`) that mean "not this way here".
The order of fsync, rename and unlink in each is part of what crash tests check: keep it.
The blob store (:mod:`vault.store.blobs`) and the package writers build on these.

Imports: :mod:`vault.errors` only, so that every layer may use it.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from vault.errors import ConflictError, NotFoundError, VerificationError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

TEMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def file_lock(path: Path, *, exclusive: bool = True) -> Iterator[None]:
    """Hold ``flock`` on ``path`` (made 0600 if missing), shared or exclusive, waiting for
    it, until the block ends: the lock of one machine's evault commands."""
    import fcntl

    try:
        # Never through a symbolic link: whoever can write the folder could otherwise make
        # evault create or lock a file of their choosing.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise VerificationError(f"lock file {path}: is a symbolic link, which evault never "
                                "makes; remove it and run the command again") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise VerificationError(f"lock file {path}: is not a regular file, which evault "
                                    "always makes; remove it and run the command again")
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def is_regular_file(path: str | Path, *, dir_fd: int | None = None) -> bool:
    """Whether ``path`` (relative to ``dir_fd``, if given) is a regular file, not followed if
    it is a symbolic link; False if it is gone."""
    try:
        return stat.S_ISREG(os.stat(path, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


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
        raise NotFoundError(f"{folder}: no such folder for {target.name}; create it first")


def free_signed_pair(output: Path) -> Path:
    """Where a signed document's signature goes (``output.sig``), once ``output`` and it are
    both free to write in a folder that exists; a ConflictError names the one that exists."""
    signature = output.with_name(output.name + ".sig")
    for path in (output, signature):
        if path.exists():
            raise ConflictError(f"{path}: exists already; choose another -o")
    require_folder(output)
    return signature


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


# Errors that mean "this way of copying is not available here", not "the copy failed".
NO_KERNEL_COPY = frozenset(
    code
    for code in (
        getattr(errno, name, None)
        for name in ("EXDEV", "ENOSYS", "EINVAL", "EOPNOTSUPP", "ENOTSUP", "ENOTSOCK", "EBADF")
    )
    if code is not None
)
COPY_STEP = 8 << 20  # a step of a copy in the kernel
COPY_CHUNK = 1 << 20  # a step of a copy through a buffer


def copy_file(src: int, dst: int, size: int | None = None, *, writeback: bool = False) -> int:
    """Copy ``size`` bytes (None: the rest) from ``src``'s position to ``dst``'s; return how
    many were copied (fewer if ``src`` ended first).

    In the kernel first, so a file of many GiB never passes through Python:
    copy_file_range, then sendfile, then a 1 MiB read/write loop. Each way continues where
    the previous stopped, as all use and advance the file positions; one that is not
    available here (:data:`NO_KERNEL_COPY`) or that copies nothing hands on to the next, so
    the end is confirmed by a plain read (some file systems report 0 early). With
    ``writeback`` each step is handed to the disk at once (:func:`start_writeback`), for a
    file that is fsynced afterwards.
    """
    ways: list[Callable[[int], int]] = []  # the kernel's ways, best first
    if hasattr(os, "copy_file_range"):
        ways.append(lambda n: os.copy_file_range(src, dst, n))
    if hasattr(os, "sendfile"):
        ways.append(lambda n: os.sendfile(dst, src, None, n))
    offset = os.lseek(dst, 0, os.SEEK_CUR) if writeback else 0
    done = 0
    while size is None or done < size:
        want = COPY_STEP if size is None else min(size - done, COPY_STEP)
        if ways:
            try:
                n = ways[0](want)
            except OSError as e:
                if e.errno not in NO_KERNEL_COPY:
                    raise
                n = 0
            if not n:
                ways.pop(0)
                continue
        else:
            chunk = os.read(src, min(want, COPY_CHUNK))
            n = len(chunk)
            if not n:
                break
            write_all(dst, chunk)
        if writeback:
            start_writeback(dst, offset + done, n)
        done += n
    return done


def write_all(fd: int, data: ReadableBuffer) -> None:
    """``os.write`` until all of ``data`` is written."""
    _write_whole(lambda view: os.write(fd, view), data)


def _write_whole(write: Callable[[memoryview], int | None], data: ReadableBuffer) -> int:
    """Call ``write`` until it has taken all of ``data`` (a raw write may take only part of
    it); the number of bytes. One that takes nothing is an I/O error, not a loop."""
    with memoryview(data) as whole, whole.cast("B") as view:
        done = 0
        while done < len(view):
            n = write(view[done:])
            if not n:
                raise OSError(errno.EIO, "write: the file took none of the data")
            done += n
    return done


WRITEBACK_STEP = 8 << 20


class WritebackFile(io.FileIO):
    """A file being written, whose ``write`` always writes all it is given, that every
    WRITEBACK_STEP bytes asks the kernel to start writing them to disk, so that the final
    fsync or syncfs finds little left to do. Durability still comes from that sync alone;
    this only moves the disk's work earlier, to overlap the encryption of what follows. Used
    for new blobs, package files and the files `open` extracts."""

    _start: int | None = None  # where the range not yet handed to the kernel begins
    _end = 0

    def write(self, data: ReadableBuffer, /) -> int:
        """Write all of ``data`` (a raw write may take only part of it: this goes on until
        it is all written, so callers that hand the file a buffer once never lose a tail)."""
        if self._start is None:
            self._start = self._end = self.tell()
        done = _write_whole(super().write, data)
        self._end += done
        if self._end - self._start >= WRITEBACK_STEP:
            start_writeback(self.fileno(), self._start, self._end - self._start)
            self._start = self._end
        return done

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        self._start = None
        return super().seek(offset, whence)


class BackgroundWriter:
    """Writes to ``out`` on a helper thread while the caller prepares what comes next.

    ``write(data)`` waits for the previous write, hands ``data`` over and returns at once:
    leave ``data`` unchanged until the next ``write``, ``flush`` or ``close`` returns (as
    :class:`~vault.crypto.age.AgeWriter` does with its two batches). An error of a write is
    raised by the call that waits for it. Use it as a context manager: leaving the block,
    even by an error, waits for the last write, so ``out`` can be closed after it.
    """

    def __init__(self, out: BinaryIO) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._out = out
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: Any = None

    def write(self, data: ReadableBuffer, /) -> int:
        self._wait()
        # All of it, however little each write takes: this caller is told it was.
        self._pending = self._pool.submit(_write_whole, self._out.write, data)
        with memoryview(data) as view:
            return view.nbytes

    def flush(self) -> None:
        self._wait()
        self._out.flush()

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Wait for the last write and stop the thread; an error of that write is raised."""
        try:
            self._wait()
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
            return
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.exception()  # wait; the error in flight is the one to report
        self._pool.shutdown(wait=True)


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


def syncfs(path: Path) -> bool:
    """``syncfs(2)`` on the file system holding ``path``: one call for a whole batch; False
    where there is no such call (then fsync each file and its folder)."""
    import ctypes

    if not sys.platform.startswith("linux"):  # pragma: no cover
        return False
    # The C library is already loaded: look in the process's own symbols
    # (ctypes.util.find_library would run ldconfig, a process, on every call).
    function = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
    if function is None:  # pragma: no cover
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        if function(fd) != 0:  # pragma: no cover
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)
    return True
