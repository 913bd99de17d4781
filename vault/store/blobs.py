"""The blob store: the ``blobs/`` folder of age-encrypted files, each under a random name.

    >>> import tempfile, pathlib
    >>> store = BlobStore(pathlib.Path(tempfile.mkdtemp()))
    >>> with store.create() as (blob_id, f):
    ...     _ = f.write(b"age-encrypted bytes")
    >>> store.sync([blob_id])
    >>> with store.open(blob_id) as f:
    ...     f.read()
    b'age-encrypted bytes'

One job: where blobs live, writing one under a temporary name, making a batch durable,
reading, removing and scanning them, and the lock that keeps ``doctor --repair`` away from
blobs not yet committed. How a file is made durable is :mod:`vault.durable`'s.
:class:`Blobs` is what the services use, whichever store a vault has: this folder, or an
S3 bucket (:mod:`vault.store.s3blobs`).

Imports: :mod:`vault.durable` only.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol, cast

from vault.durable import (
    TEMP_PREFIX,
    WritebackFile,
    file_lock,
    fsync_dir,
    is_regular_file,
    syncfs,
)

BLOB_ID_BYTES = 16
_BLOB_ID = re.compile(f"[0-9a-f]{{{2 * BLOB_ID_BYTES}}}")
INTAKE_LOCK = ".intake.lock"


def new_blob_id() -> str:
    """A random blob name: it says nothing about the content (not its digest)."""
    return secrets.token_hex(BLOB_ID_BYTES)


@dataclass(frozen=True)
class Placement:
    """Where a new blob was put, beyond its id, for its row: the S3 object version and the
    date its Object Lock retention ends (both None in a folder)."""

    version: str | None
    retain_until: datetime | None


class Blobs(Protocol):
    """A blob store: :class:`BlobStore` (a folder) or
    :class:`~vault.store.s3blobs.S3BlobStore` (a bucket)."""

    @property
    def spec(self) -> str:
        """What a worker process opens the same store by (a path or an ``s3://`` URL)."""

    @property
    def where(self) -> str:
        """The store's name in messages."""

    def intake_lock(self, *, exclusive: bool = False) -> AbstractContextManager[None]:
        """Shared while blobs are written and not yet committed; exclusive for repair."""

    def create(self) -> AbstractContextManager[tuple[str, BinaryIO]]:
        """Yield (blob id, writable file); the blob exists once the block ends."""

    def placement(self, blob_id: str) -> Placement | None:
        """The version and retention of a blob this object just wrote, if the store has any."""

    def sync(self, blob_ids: list[str]) -> None:
        """Make new blobs durable before the rows that name them are committed."""

    def open(self, blob_id: str, version: str | None = None) -> BinaryIO:
        """Read a blob (that version of it, where the store keeps versions)."""

    def remove(self, blob_id: str) -> None:
        """Delete a blob no row refers to."""


class BlobStore:
    """The ``blobs/`` folder: ``blobs/<2 hex>/<32 hex>``, each an age-encrypted file.

    Writers hold a shared lock on ``blobs/.intake.lock`` while their blobs are not yet
    committed to the database; ``evault doctor --repair`` takes it exclusively before it
    removes leftovers, so it never deletes a blob another command is about to commit.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._shards: set[str] = set()  # shard folders known to exist (one mkdir each)

    @property
    def spec(self) -> str:
        """The folder's path."""
        return str(self.root)

    @property
    def where(self) -> str:
        """The folder's path."""
        return str(self.root)

    def placement(self, blob_id: str) -> Placement | None:
        """None: a file has no version or retention."""
        return None

    def path(self, blob_id: str) -> Path:
        """Where a blob lives."""
        if not _BLOB_ID.fullmatch(blob_id):
            raise ValueError(f"not a blob id: {blob_id!r}")
        return self.root / blob_id[:2] / blob_id

    def intake_lock(self, *, exclusive: bool = False) -> AbstractContextManager[None]:
        """Shared for writers, exclusive for repair."""
        return file_lock(self.root / INTAKE_LOCK, exclusive=exclusive)

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
            make_shard(shard)
            self._shards.add(blob_id[:2])
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileNotFoundError:
            # The shard folder was removed since this store made it: make it again.
            make_shard(shard)
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
        if syncfs(self.root):
            return
        for blob_id in blob_ids:  # pragma: no cover - non-Linux fallback
            fd = os.open(self.path(blob_id), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for parent in {self.path(b).parent for b in blob_ids}:  # pragma: no cover
            fsync_dir(parent)

    def open(self, blob_id: str, version: str | None = None) -> BinaryIO:
        """Open a blob for reading (a folder keeps no versions: ``version`` is None)."""
        return open(self.path(blob_id), "rb")

    def remove(self, blob_id: str) -> None:
        """Delete a blob (one no row refers to)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(blob_id))

    def scan(self) -> tuple[list[Path], list[Path]]:
        """(temporary leftovers, complete blob files) found on disk, each as its path in its
        shard: a blob file's name is its id, in the shard it is found in (not always the
        one its id names: doctor moves what it finds)."""
        temps: list[Path] = []
        files: list[Path] = []
        for shard in sorted(self.root.iterdir()):
            if not shard.is_dir():
                continue
            # A temporary is a regular file in a real shard, or nothing: never one reached
            # through a shard that is a symbolic link (evault makes none), which repair would
            # delete outside the vault. What else is there is left to doctor's orphan check,
            # which names it.
            real = not shard.is_symlink()
            for entry in sorted(shard.iterdir()):
                if entry.name.startswith(TEMP_PREFIX) and real and is_regular_file(entry):
                    temps.append(entry)
                else:
                    files.append(entry)
        return temps, files


def is_blob_id(name: str) -> bool:
    """Whether ``name`` is a blob id (and so a file name in the shard it names)."""
    return _BLOB_ID.fullmatch(name) is not None


def make_shard(path: str) -> None:
    """``mkdir`` of one shard folder; one that exists already is fine."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
