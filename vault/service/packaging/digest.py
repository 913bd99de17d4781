"""A package file's SHA-256 and size, read once; fsynced meanwhile; its identity stamp.

    >>> sha256, size = sync_and_digest(Path("PKG-0123456789AB.evpkg"))          # doctest: +SKIP

Building reads a package file back to record its digest; sending reads the copy in the
outbox back before naming it. No database; imports the standard library only.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

COPY_CHUNK = 1 << 20


FileStamp = tuple[int, int, int, int]
"""A file's device, inode, size and modification time (ns)."""


def file_stamp(path: Path) -> FileStamp:
    """The :data:`FileStamp` of ``path``: equal stamps mean the same file, not rewritten."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def sync_and_digest(path: Path) -> tuple[str, int]:
    """fsync ``path`` and read back its SHA-256 and size (from the page cache) meanwhile."""
    with open(path, "rb") as f, ThreadPoolExecutor(max_workers=1) as pool:
        synced = pool.submit(os.fsync, f.fileno())
        try:
            return file_digest(path)
        finally:
            synced.result()


def file_digest(path: Path) -> tuple[str, int]:
    """SHA-256 and size of a file, read once.

    The next chunk is read while the last one is hashed on a helper thread (both release
    the GIL), so a large file costs about its hashing time, not reading plus hashing.
    """
    digest = hashlib.sha256()
    size = 0
    buffers = (bytearray(COPY_CHUNK), bytearray(COPY_CHUNK))
    turn = 0
    pending: Future[None] | None = None
    with open(path, "rb", buffering=0) as f, ThreadPoolExecutor(max_workers=1) as pool:
        try:
            while True:
                # Read into one buffer while the other is hashed; submit the next hash
                # only after the last one finished, so each buffer is free when refilled.
                view = memoryview(buffers[turn])
                n = f.readinto(view)
                if pending is not None:
                    pending.result()
                    pending = None
                if not n:
                    break
                pending = pool.submit(digest.update, view[:n])
                size += n
                turn ^= 1
        finally:
            if pending is not None:
                pending.exception()
    return digest.hexdigest(), size

