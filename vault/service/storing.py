"""Reading evidence files into new blobs: each file read once, hashed and encrypted at rest.

    >>> stored = store_path(BlobStore(root), "statement.pdf", recipient, (),   # doctest: +SKIP
    ...                     follow_symlinks=False, hasher_pool=None)
    >>> stored.sha256, stored.blob_id                                            # doctest: +SKIP

:func:`store_path` reads one file into one blob; :func:`store_paths` does it for a list of
small files in a worker process, where bulk intake spreads them over the cores (an X25519
key agreement per file holds the GIL). This module knows nothing of the database, so that a
worker process imports only the cryptography it needs.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

from vault.crypto.age import AgeIdentity, AgeReader, AgeRecipient, AgeWriter
from vault.durable import BackgroundWriter
from vault.errors import VaultError, VerificationError
from vault.formats.provenance import HEAD_SIZE, Checks, examine, sniff
from vault.store.blobs import Blobs, BlobStore

READ_SIZE = 1 << 20
ASYNC_HASH_MIN = 256 * 1024  # smaller chunks are hashed inline: a thread hop costs more
BACKGROUND_WRITE_MIN = 1 << 20  # a smaller blob is written inline: a thread costs more


@dataclass(frozen=True)
class Stored:
    """One file stored: its new blob and what was measured while reading it."""

    blob_id: str
    size: int
    sha256: str
    stored_size: int
    extra: dict[str, str] = field(default_factory=dict)
    #: On S3: the object version written and when its retention ends (else None).
    version: str | None = None
    retain_until: datetime | None = None
    #: What the file says of its own origin (:func:`vault.formats.provenance.examine`),
    #: when provenance was checked and the file is of a kind that has it.
    provenance: dict[str, Any] | None = None


class _Counter:
    """A write-through wrapper that counts the bytes of the encrypted blob."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.count = 0

    def write(self, data: bytes) -> int:
        n = self.out.write(data)
        self.count += len(data)
        return n if n is not None else len(data)

    def flush(self) -> None:
        self.out.flush()


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    """The change time too: a writer can put the modification time back (``os.utime``), and
    then the provenance finding, from the second read, was of bytes the blob does not hold."""
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns, a.st_ctime_ns) == (
        b.st_dev, b.st_ino, b.st_size, b.st_mtime_ns, b.st_ctime_ns)


def store_path(
    blobs: Blobs,
    path: str | os.PathLike[str],
    recipient: AgeRecipient,
    algorithms: Sequence[str],
    *,
    follow_symlinks: bool,
    hasher_pool: ThreadPoolExecutor | None,
    reading: Callable[[int], None] | None = None,
    checks: Checks | None = None,
    expect: Expected | None = None,
) -> Stored:
    """Read ``path`` once into a new blob, computing its digests on the way; ``reading``
    gets the bytes read so far after each chunk.

    Only a regular file is read (a path that is now a fifo, a device or a folder is refused
    before a byte is read, and never blocks), and, with ``expect``, only the file that was
    validated, unchanged since the command began (:class:`Expected`).

    With ``checks``, a file that is an image, a video, audio, a PDF or a zip is then read a
    second time, from the same open file, for what it says of its own provenance
    (:func:`vault.formats.provenance.examine`): a C2PA manifest or a ProofMode bundle.

    A file that cannot be opened, or that changes while it is read, is a
    :class:`~vault.errors.VaultError` and leaves no blob.
    """
    flags = (os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
             | (0 if follow_symlinks else os.O_NOFOLLOW))
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise VaultError(f"{path}: cannot open ({e.strerror}); nothing was stored") from None
    with os.fdopen(fd, "rb", buffering=0) as raw:
        before = os.fstat(raw.fileno())
        if not stat.S_ISREG(before.st_mode):
            raise VaultError(f"{path}: is not a regular file any more; nothing was stored, "
                             "ingest it again when it is stable")
        if expect is not None:
            expect.check(path, before)
        src = raw if reading is None else cast(BinaryIO, _Reading(raw, reading))
        hashers = [hashlib.sha256()] + [hashlib.new(a) for a in algorithms]
        with blobs.create() as (blob_id, out):
            counter = _Counter(out)
            writer = AgeWriter(counter, [recipient])  # type: ignore[arg-type]
            total = _pump(src, writer, hashers, hasher_pool, before.st_size)
            writer.close()
            provenance = _provenance(raw, checks) if checks is not None else None
            after = os.fstat(raw.fileno())
            if total != before.st_size or not _same_file(before, after):
                raise VaultError(
                    f"{path}: changed while being read; nothing of it was stored, "
                    "ingest it again when it is stable"
                )
    return _stored(blobs, blob_id, total, hashers[0].hexdigest(), counter.count,
                   extra={a: h.hexdigest() for a, h in zip(algorithms, hashers[1:], strict=True)},
                   provenance=provenance)


def _stored(blobs: Blobs, blob_id: str, size: int, sha256: str, stored_size: int,
            **measured: Any) -> Stored:
    """The :class:`Stored` of a blob just written, with where the store placed it."""
    placed = blobs.placement(blob_id)
    return Stored(blob_id=blob_id, size=size, sha256=sha256, stored_size=stored_size,
                  version=placed.version if placed else None,
                  retain_until=placed.retain_until if placed else None, **measured)


class BlobCopies:
    """Files stored as another reader streams them: each into a new blob, encrypted at rest
    on the way (:data:`vault.formats.bagit.PayloadCopy`, for ``open``'s bag reader, which
    hashes them). ``made`` maps each file's path to (blob id, bytes, encrypted bytes).

    With ``streaming`` False (a store where a blob cannot be taken back) nothing is stored
    as it streams: :meth:`store_file` stores each file once what it came from passed.
    The blobs are the caller's to account for: :meth:`discard` removes every one made,
    for when what they came from is refused; hold the store's intake lock meanwhile.
    """

    def __init__(self, blobs: Blobs, recipient: AgeRecipient, *, streaming: bool) -> None:
        self.blobs = blobs
        self.recipient = recipient
        self.streaming = streaming
        self.made: dict[str, tuple[str, int, int]] = {}

    @contextlib.contextmanager
    def __call__(self, path: str, size: int) -> Iterator[Callable[[bytes], object]]:
        """A new blob for the file ``path`` of ``size`` bytes; the value takes its chunks."""
        if path in self.made:
            raise VerificationError(f"{path}: streamed twice; nothing was stored")
        with self.blobs.create() as (blob_id, out), contextlib.ExitStack() as stack:
            if size >= BACKGROUND_WRITE_MIN:
                # The blob is written on a helper thread while the next chunk is encrypted.
                out = cast(BinaryIO, stack.enter_context(BackgroundWriter(out)))
            counter = _Counter(out)
            with AgeWriter(counter, [self.recipient]) as writer:  # type: ignore[arg-type]
                yield writer.write
                written = writer.tell()
        self.made[path] = (blob_id, written, counter.count)

    def store_file(self, path: str, file: Path, algorithms: Sequence[str],
                   hasher_pool: ThreadPoolExecutor | None) -> Stored:
        """Store the extracted ``file`` of ``path`` by reading it (:func:`store_path`), for
        a store where a blob cannot be taken back: made only once the package passed."""
        if path in self.made:
            raise VerificationError(f"{path}: stored twice; nothing was stored")
        result = store_path(self.blobs, file, self.recipient, algorithms,
                            follow_symlinks=False, hasher_pool=hasher_pool)
        self.made[path] = (result.blob_id, result.size, result.stored_size)
        return result

    def stored(self, path: str, sha256: str) -> Stored:
        """The blob made for ``path``, as :func:`store_path` would describe it; ``sha256``
        is the digest the reader computed of the same chunks."""
        if path not in self.made:
            raise VerificationError(f"{path}: no blob was made of it; nothing was stored")
        blob_id, size, stored_size = self.made[path]
        return _stored(self.blobs, blob_id, size, sha256, stored_size)

    def keep(self) -> None:
        """The blobs made are recorded: :meth:`discard` leaves them from now on."""
        self.made.clear()

    def discard(self) -> None:
        """Remove every blob made so far (and not kept)."""
        for blob_id, _, _ in self.made.values():
            self.blobs.remove(blob_id)
        self.made.clear()


def blob_holds(blobs: Blobs, identity: AgeIdentity, blob_id: str, version: str | None,
               sha256: str, size: int) -> bool:
    """Whether the blob decrypts, with the storage key ``identity``, to ``size`` bytes of
    SHA-256 ``sha256``: what its row says, which whoever can write the database can make
    up. False for a blob that is missing, does not decrypt, or holds other bytes."""
    digest = hashlib.sha256()
    total = 0
    try:
        with blobs.open(blob_id, version) as src:
            reader = AgeReader(src, [identity])
            while chunk := reader.read(READ_SIZE):
                digest.update(chunk)
                total += len(chunk)
    except (OSError, VaultError):
        return False
    return total == size and digest.hexdigest() == sha256


def file_digests(path: str | os.PathLike[str], algorithms: Sequence[str]) -> dict[str, str]:
    """The hex digests of the file at ``path`` (no symlink followed), one read."""
    hashers = {a: hashlib.new(a) for a in algorithms}
    buffer = bytearray(READ_SIZE)
    view = memoryview(buffer)
    try:
        # Never blocks: a fifo put in the file's place would hold this read (and the
        # intake lock of its caller) for as long as nobody writes to it.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise VaultError(f"{path}: cannot open ({e.strerror})") from None
    with os.fdopen(fd, "rb", buffering=0) as src:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise VaultError(f"{path}: is no longer a regular file; nothing was stored")
        while n := src.readinto(view):
            for h in hashers.values():
                h.update(view[:n])
    return {a: h.hexdigest() for a, h in hashers.items()}


def _provenance(raw: io.FileIO, checks: Checks) -> dict[str, Any] | None:
    """The provenance finding for the open file ``raw``, or None for a file of a kind that
    has none. The file's first bytes say its kind; only then is it read again (buffered,
    from its start), so that the many small files of a bulk intake cost one short read."""
    kind = sniff(os.pread(raw.fileno(), HEAD_SIZE, 0))
    if kind is None:
        return None
    buffered = io.BufferedReader(raw, 1 << 16)
    try:
        return examine(buffered, kind, checks)
    finally:
        buffered.detach()  # the file stays open: store_path closes it


class _Reading:
    """A file read through ``readinto`` that tells ``reading`` the bytes read so far."""

    def __init__(self, src: BinaryIO, reading: Callable[[int], None]) -> None:
        self._src = src
        self._reading = reading
        self._read = 0

    def readinto(self, buffer: Any) -> int:
        n = int(self._src.readinto(buffer) or 0)  # type: ignore[attr-defined]
        self._read += n
        self._reading(self._read)
        return n


@dataclass(frozen=True)
class Expected:
    """What a file was when an ingest validated it: its device and inode (None where it was
    not looked at), and when the command began (ns since the epoch).

    :func:`store_path` refuses another file under the same name (a folder above it swapped
    for a link, say), and a file changed after the command began: moved, renamed, linked
    or rewritten, which sets its ctime (a file moved from a folder already walked to one
    not yet walked would otherwise be stored twice). A ctime later than now (a clock set
    back) says nothing and is let through.
    """

    identity: tuple[int, int] | None
    since_ns: int

    def check(self, path: str | os.PathLike[str], st: os.stat_result) -> None:
        """Refuse ``st``, the open file's status, if it is not what was validated."""
        if self.identity is not None and (st.st_dev, st.st_ino) != self.identity:
            raise VaultError(f"{path}: is not the file that was checked (replaced while this "
                             "ingest ran); nothing was stored, ingest it again when it is "
                             "stable")
        if self.since_ns <= st.st_ctime_ns <= time.time_ns():
            raise VaultError(f"{path}: changed while this ingest ran (moved, renamed, linked "
                             "or rewritten after it began); nothing of it was stored, ingest "
                             "it again when it is stable")


def store_paths(
    store: str,
    recipient: str,
    algorithms: tuple[str, ...],
    follow_symlinks: bool,
    paths: Sequence[str],
    checks: Checks | None = None,
    expects: Sequence[Expected | None] | None = None,
) -> list[Stored]:
    """Store each of ``paths`` in order (a worker process's task: plain arguments only, and
    ``checks`` and ``expects``, one for each path, as :func:`store_path` takes them).

    All or nothing: if one file fails, the blobs this call wrote are removed before the
    error is raised, so the caller has only the blobs of results it received to account for.
    """
    blobs = _blob_store(store)
    key = AgeRecipient.parse(recipient)
    done: list[Stored] = []
    try:
        for n, path in enumerate(paths):
            done.append(store_path(blobs, path, key, algorithms,
                                   follow_symlinks=follow_symlinks, hasher_pool=None,
                                   checks=checks, expect=expects[n] if expects else None))
    except BaseException:
        for stored in done:
            blobs.remove(stored.blob_id)
        raise
    return done


@functools.lru_cache(maxsize=4)
def _blob_store(spec: str) -> Blobs:
    """One store per blob store and process (``spec``: a folder, or an ``s3://`` URL): a
    folder store remembers the shard folders it made, so a worker does not try to make them
    again for every run of files; an S3 store keeps its client and connections."""
    if spec.startswith("s3://"):
        from vault.store.s3blobs import S3BlobStore

        return S3BlobStore.from_spec(spec)
    return BlobStore(Path(spec))


def _pump(
    src: BinaryIO,
    writer: AgeWriter,
    hashers: Sequence[Any],
    pool: ThreadPoolExecutor | None,
    size_hint: int,
) -> int:
    """Copy src into writer while the hashers see the same bytes; hashing overlaps encryption.

    hashlib releases the GIL on large buffers, so a second thread hashes chunk N while this
    one encrypts it: on two cores the file costs max(hash, encrypt), not their sum. Chunks
    are read into buffers sized for the file (``size_hint``, at most READ_SIZE): while one
    is hashed on the pool the next chunk goes into the other, and a buffer is refilled only
    after its hash is done. A file hashed here (small, or no pool) needs one buffer.
    Nothing past ``size_hint`` is taken: a file that grows while it is read (one that
    never ends, say) stops the copy at its first byte more, and the caller refuses it.
    """

    def digest(chunk: memoryview) -> None:
        for h in hashers:
            h.update(chunk)

    # Small files are the common case of bulk intake: their buffers are small too.
    size = max(64 * 1024, min(READ_SIZE, size_hint + 1))
    buffers = [bytearray(size)]
    total = 0
    turn = 0
    pending: Future[None] | None = None
    while True:
        if turn == len(buffers):
            buffers.append(bytearray(size))
        view = memoryview(buffers[turn])
        n = src.readinto(view)  # type: ignore[attr-defined]
        if not n:
            break
        chunk = view[:n]
        total += n
        if total > size_hint:  # grew since its size was taken: refused, read no further
            break
        if pending is not None:
            pending.result()
            pending = None
        if pool is None or n < ASYNC_HASH_MIN:
            digest(chunk)
        else:
            pending = pool.submit(digest, chunk)
        writer.write(chunk)  # keeps no reference to chunk once it returns
        if pending is not None:
            turn ^= 1
    if pending is not None:
        pending.result()
    return total
