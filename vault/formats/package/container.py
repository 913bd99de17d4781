"""The ``.evpkg`` container: a POSIX pax tar of payload.age, envelope.json and its signature.

One job: write the container (:func:`write_package` from a payload file,
:class:`PackageWriter` in one pass), read its structure without reading its payload
(:func:`read_package`, :func:`hold_package`, :class:`ScannedPackage`), stream its payload, and
verify the envelope it carries against it (:func:`verify_envelope`).

Two layouts (:data:`LAYOUTS`) are read. Layout 2, written since 2026-12, has payload.age
first and the envelope, which names the payload's digest, behind it: the file is written
front to back and its own SHA-256 taken on the way. Layout 1 has the envelope first; its
payload's data starts at an offset fixed by the envelope's fields (:func:`payload_offset`),
and a pax ``comment`` record before payload.age fills what the final envelope leaves of
that room, so it too was written in one pass, but its digest needed a second read. Both
hold the same three members, so stock ``tar -xf`` unpacks either the same way.
Bad bytes being read are a :class:`~vault.errors.VerificationError`.

Imports: :mod:`.rules`, :mod:`.strict`, :mod:`.documents`, :mod:`vault.formats.safetar`
(``printable``), :mod:`vault.names`, :mod:`vault.durable` (the copy loop), :mod:`vault.crypto`,
:mod:`vault.errors`.
"""

from __future__ import annotations

import calendar
import contextlib
import dataclasses
import hashlib
import io
import os
import re
import stat
import tarfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from vault.crypto import sshsig
from vault.crypto.keys import SigningKey, VerifyKey
from vault.durable import copy_file, write_all
from vault.errors import NotFoundError, UsageError, VerificationError
from vault.formats.package.documents import ENVELOPE_NAMESPACE, Envelope, sign_envelope
from vault.formats.package.rules import MAX_INTEGER, TIME_FORMAT
from vault.formats.package.strict import check_signer, check_signer_key, peek_id, verify_signed
from vault.formats.safetar import printable
from vault.names import PACKAGE_ID

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

ENVELOPE_MEMBER = "envelope.json"
SIGNATURE_MEMBER = "envelope.json.sig"
PAYLOAD_MEMBER = "payload.age"
LAYOUTS = {
    1: (ENVELOPE_MEMBER, SIGNATURE_MEMBER, PAYLOAD_MEMBER),
    2: (PAYLOAD_MEMBER, ENVELOPE_MEMBER, SIGNATURE_MEMBER),
}
"""The members of each container layout, in order: 1 with the envelope first (written
until 2026-12), 2 with the payload first and the envelope last (written since)."""
LAYOUT = 2
"""The layout written: the payload first, so the file's SHA-256 is taken as it is written."""
MEMBERS = LAYOUTS[LAYOUT]

MAX_ENVELOPE = 1024 * 1024
MAX_SIGNATURE = 1024 * 1024
MAX_PAX_HEADER = 64 * 1024

_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
_COPY_CHUNK = 1024 * 1024
_POSIX_MAGIC = b"ustar\x0000"
_OCTAL_FIELD = re.compile(rb" *[0-7]+[ \x00]*")
_NUMBER_FIELDS = {"mode": (100, 108), "uid": (108, 116), "gid": (116, 124), "size": (124, 136),
                  "mtime": (136, 148), "checksum": (148, 156)}
_USTAR_MAX_SIZE = 8**11 - 1  # the largest size a ustar header holds
_PAX_HEADER_NAME = "././@PaxHeader"  # as Python's tarfile names pax extended headers
_PADDING_COMMENT = "evault: room for the envelope, written after the payload"
_HEADER_ENCODING = "utf-8"


@dataclass(frozen=True)
class ScannedPackage:
    """A ``.evpkg`` file whose structure has been checked; nothing in it is verified yet.

    ``envelope_bytes`` and ``signature`` are those members as they lie in the file;
    ``payload_offset`` and ``payload_size`` locate ``payload.age`` inside it; ``layout`` is
    the container's (a key of :data:`LAYOUTS`). ``fd`` is the file held open by
    :func:`hold_package` (None from :func:`read_package`).
    """

    envelope_bytes: bytes
    signature: str
    payload_offset: int
    payload_size: int
    path: Path
    fd: int | None = dataclasses.field(default=None, compare=False, repr=False)
    layout: int = 1

    def open_payload(self) -> io.BufferedReader:
        """A binary file object reading exactly ``payload.age`` from the package file.

        From :func:`read_package` the file is opened anew: if it was changed or replaced
        since, the bytes differ from what the envelope's SHA-256 promises, so always hash
        what you read. From :func:`hold_package` it reads the file held open, the one the
        envelope was read from (one reader at a time: they share the file position); a
        file rewritten in place still reads other bytes, so hash those too. A file cut short
        raises :class:`~vault.errors.VerificationError` on the read that reaches the cut.
        """
        raw = _PayloadReader(self.path, self.payload_offset, self.payload_size, fd=self.fd)
        return io.BufferedReader(raw, buffer_size=_COPY_CHUNK)

    def file_state(self) -> tuple[int, ...]:
        """Device, inode, size and modification time of the file held open: the same before
        and after a read of it unless it was written meanwhile."""
        if self.fd is None:
            raise ValueError("file_state: the package file is not held open (hold_package)")
        st = os.fstat(self.fd)
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def verify_envelope(pkg: ScannedPackage, trusted: Iterable[VerifyKey]) -> Envelope:
    """Verify the envelope of a package read by :func:`read_package`; return it parsed.

    Checks, in order: the SSHSIG over the exact bytes in the file (namespace
    evault-envelope) by a key in ``trusted``; the envelope parses strictly; the signer is the
    sender named inside; ``payload.age`` has the size the envelope states. Its SHA-256 is the
    caller's to check while streaming :meth:`ScannedPackage.open_payload`.
    """
    package_id = peek_id(pkg.envelope_bytes, "package_id", PACKAGE_ID)
    label = f"package {package_id}" if package_id else f"package file {printable(pkg.path.name)}"
    signer = verify_signed(
        pkg.envelope_bytes, pkg.signature, ENVELOPE_NAMESPACE, trusted, f"{label}: envelope"
    )
    try:
        envelope = Envelope.from_bytes(pkg.envelope_bytes)
    except VerificationError as e:
        raise VerificationError(f"{label}: {e}") from None
    check_signer(signer, envelope.sender, label, "sender")
    if pkg.payload_size != envelope.payload_size:
        raise VerificationError(
            f"{label}: {PAYLOAD_MEMBER} holds {pkg.payload_size} bytes, "
            f"the envelope says {envelope.payload_size}"
        )
    return envelope


class _PayloadReader(io.RawIOBase):
    """Reads ``size`` bytes from ``offset`` of a file, and never past them; with ``fd``, of
    that open file (a duplicate of it, so closing this reader leaves ``fd`` open)."""

    def __init__(self, path: Path, offset: int, size: int, *, fd: int | None = None) -> None:
        self._label = _file_label(path)
        fd = open_regular(path, self._label) if fd is None else os.dup(fd)
        try:
            self._file = io.FileIO(fd, "rb", closefd=True)
        except BaseException:
            os.close(fd)
            raise
        self._offset = offset
        self._size = size
        self._pos = 0
        self._file.seek(offset)

    def readable(self) -> bool:
        """Always true."""
        return True

    def seekable(self) -> bool:
        """Always true: the region lies in a regular file."""
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        """Read into ``buffer``, at most up to the end of the payload; 0 at its end."""
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._size - self._pos)
        if want <= 0:
            return 0
        n = self._file.readinto(view[:want])
        if not n:
            raise VerificationError(
                f"{self._label}: {PAYLOAD_MEMBER} ends early; the file was truncated"
            )
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move within the payload (positions are relative to its first byte)."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence {whence}")
        target = base + offset
        if target < 0:
            raise ValueError("negative seek position")
        self._pos = target
        self._file.seek(self._offset + min(target, self._size))
        return target

    def tell(self) -> int:
        """The position within the payload."""
        return self._pos

    def close(self) -> None:
        """Close the underlying file."""
        if not self.closed:
            self._file.close()
        super().close()


def _file_label(path: Path) -> str:
    return f"package file {printable(path.name)[:100]}"


def open_regular(path: Path, label: str) -> int:
    """Open for reading without blocking on a fifo or device, and insist on a regular file."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise NotFoundError(f"{label}: does not exist") from None
    except OSError as e:
        raise UsageError(f"{label}: cannot be opened ({(e.strerror or str(e)).lower()})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise VerificationError(f"{label}: is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def padded(size: int) -> int:
    return -(-size // _BLOCK) * _BLOCK


def _header(name: str, size: int, mtime: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    """One ustar header block with the container's fixed metadata."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = kind
    return info.tobuf(format=tarfile.USTAR_FORMAT, encoding=_HEADER_ENCODING, errors="strict")


def _small_member(name: str, data: bytes, mtime: int) -> bytes:
    """Header, data and zero padding of the envelope or its signature."""
    return _header(name, len(data), mtime) + data + bytes(padded(len(data)) - len(data))


def _pax_record(keyword: str, value: str) -> bytes:
    """``"<length> <keyword>=<value>\\n"``, the length counting its own digits."""
    body = f" {keyword}={value}\n".encode(_HEADER_ENCODING)
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length = len(str(length)) + len(body)
    return str(length).encode("ascii") + body


def _pax_padding(length: int) -> bytes:
    """One pax ``comment`` record of exactly ``length`` bytes (stock tar ignores comments)."""
    fixed = len(str(length)) + len(" comment=\n")
    text = _PADDING_COMMENT.ljust(length - fixed)
    record = f"{length} comment={text}\n".encode("ascii")
    assert len(record) == length
    return record


def _widest(envelope: Envelope) -> Envelope:
    """The same envelope with the longest payload size and digest it can carry."""
    return dataclasses.replace(envelope, payload_size=MAX_INTEGER, payload_sha256="f" * 64)


def payload_offset(envelope: Envelope, signature_size: int) -> int:
    """Layout 1: where the payload's data starts in the package of ``envelope``, whatever
    its payload.

    The front of the container was sized before the payload was known: envelope.json at
    the longest payload size it can state, envelope.json.sig (``signature_size`` bytes; an
    Ed25519 SSHSIG always has the same length), and payload.age's headers, a pax extended
    header of at least one block and the ustar header. The pax header's ``comment`` record
    takes up whatever the actual envelope leaves, so every package of this envelope has its
    payload here.
    """
    envelope_size = len(_widest(envelope).to_bytes())
    return 5 * _BLOCK + padded(envelope_size) + padded(signature_size)


def front_bytes(
    envelope: bytes, signature: bytes, payload_size: int, mtime: int, room: int
) -> bytes:
    """Layout 1: the container's bytes before the payload's data, exactly ``room`` of them."""
    head = _small_member(ENVELOPE_MEMBER, envelope, mtime)
    head += _small_member(SIGNATURE_MEMBER, signature, mtime)
    pax_size = room - len(head) - 2 * _BLOCK
    if pax_size < _BLOCK or pax_size % _BLOCK:
        raise UsageError("write package: the envelope and its signature do not fit the room "
                         "left for them; a package's front is sized from its own envelope")
    records = b""
    ustar_size = payload_size
    if payload_size > _USTAR_MAX_SIZE:  # 8 GiB and more: the size goes in the pax header
        records = _pax_record("size", str(payload_size))
        ustar_size = 0
    records += _pax_padding(pax_size - len(records))
    pax = _header(_PAX_HEADER_NAME, pax_size, mtime, tarfile.XHDTYPE)
    return head + pax + records + _header(PAYLOAD_MEMBER, ustar_size, mtime)


def tail_bytes(room: int, payload_size: int) -> bytes:
    """Layout 1: zero padding to the block, two zero blocks, then to a whole record."""
    tail = padded(payload_size) - payload_size + 2 * _BLOCK
    tail += -(room + payload_size + tail) % _RECORD
    return bytes(tail)


def payload_headers(payload_size: int, mtime: int) -> bytes:
    """Layout 2: payload.age's headers, the first bytes of the file.

    A ustar header; from 8 GiB on, whose size a ustar header cannot hold, a pax extended
    header with a ``size`` record before it (as GNU tar and Python's tarfile write it).
    """
    if payload_size <= _USTAR_MAX_SIZE:
        return _header(PAYLOAD_MEMBER, payload_size, mtime)
    records = _pax_record("size", str(payload_size))
    pax = _header(_PAX_HEADER_NAME, len(records), mtime, tarfile.XHDTYPE)
    fill = bytes(padded(len(records)) - len(records))
    return pax + records + fill + _header(PAYLOAD_MEMBER, 0, mtime)


def back_bytes(envelope: bytes, signature: bytes, mtime: int, end_of_payload: int,
               payload_size: int) -> bytes:
    """Layout 2: everything after payload.age's data, which ends at byte ``end_of_payload``
    of the file: its padding, envelope.json, envelope.json.sig, two zero blocks, and zeros
    to a whole 10240-byte record, as tar does."""
    back = bytes(padded(payload_size) - payload_size)
    back += _small_member(ENVELOPE_MEMBER, envelope, mtime)
    back += _small_member(SIGNATURE_MEMBER, signature, mtime)
    back += bytes(2 * _BLOCK)
    return back + bytes(-(end_of_payload + len(back)) % _RECORD)


def _epoch(created_at: str) -> int:
    return calendar.timegm(time.strptime(created_at, TIME_FORMAT))


def write_package(target: Path, envelope: bytes, signature: str, payload: Path, *,
                  layout: int = LAYOUT) -> None:
    """Write the ``.evpkg`` tar to ``target`` from the payload file ``payload``.

    ``envelope`` and ``signature`` are what :func:`sign_envelope` returned; ``payload`` is
    the age-encrypted file whose size and SHA-256 the envelope states. The signature must
    verify over the envelope by the sender it names, and the payload file must have the
    envelope's ``payload_size``, else :class:`~vault.errors.UsageError` (nothing in a package
    written here can fail these checks later). Metadata is fixed (mode 0644, owner 0:0, no
    names, mtime = ``created_at``), so the same inputs give the same bytes: those
    :class:`PackageWriter` writes, in the default layout 2 (payload first); ``layout=1``
    writes the envelope first, as packages made before layout 2 were.

    ``target`` is created or truncated and fsynced before returning; write it under a
    temporary name and rename it. On an error it is left incomplete for the caller to
    remove. OS errors (disk full, permissions) propagate as :class:`OSError`.
    """
    if not isinstance(envelope, bytes):
        raise UsageError("write package: envelope must be bytes")
    if len(envelope) > MAX_ENVELOPE:
        raise UsageError(f"write package: envelope is larger than {MAX_ENVELOPE} bytes")
    if layout not in LAYOUTS:
        raise UsageError(f"write package: layout must be one of {sorted(LAYOUTS)}")
    try:
        parsed = Envelope.from_bytes(envelope)
    except VerificationError as e:
        raise UsageError(f"write package: {e}") from None
    label = f"write package {parsed.package_id}"
    if not isinstance(signature, str) or not signature.isascii():
        raise UsageError(f"{label}: signature must be ascii armored text")
    sig_bytes = signature.encode("ascii")
    if len(sig_bytes) > MAX_SIGNATURE:
        raise UsageError(f"{label}: signature is larger than {MAX_SIGNATURE} bytes")
    try:
        signer = sshsig.verify(signature, envelope, ENVELOPE_NAMESPACE)
    except VerificationError as e:
        raise UsageError(f"{label}: signature does not verify over the envelope ({e})") from None
    if signer.fingerprint != parsed.sender.fingerprint:
        raise UsageError(f"{label}: signature is not by the sender {parsed.sender.fingerprint}")

    mtime = _epoch(parsed.created_at)
    src = open_regular(Path(payload), f"{label}: payload")
    try:
        size = os.fstat(src).st_size
        if size != parsed.payload_size:
            raise UsageError(
                f"{label}: payload file holds {size} bytes, the envelope says {parsed.payload_size}"
            )
        if layout == 1:
            room = payload_offset(parsed, len(sig_bytes))
            head = front_bytes(envelope, sig_bytes, size, mtime, room)
        else:
            head = payload_headers(size, mtime)
        with open(target, "wb", buffering=0) as out:
            dst = out.fileno()
            write_all(dst, head)
            copied = copy_file(src, dst, size)
            if copied != size:
                raise UsageError(f"{label}: payload file shrank to {copied} bytes while copied")
            if layout == 1:
                write_all(dst, tail_bytes(len(head), size))
            else:
                write_all(dst, back_bytes(envelope, sig_bytes, mtime, len(head) + size, size))
            os.fsync(dst)
    finally:
        os.close(src)


@dataclass(frozen=True)
class WrittenContainer:
    """What :meth:`PackageWriter.finish` wrote: the envelope (parsed, its canonical bytes
    and its signature) and the whole file's SHA-256 and size."""

    envelope: Envelope
    envelope_bytes: bytes
    signature: str
    sha256: str
    size: int


class PayloadSizeError(RuntimeError):
    """A package's payload did not come to the size stated in its header (computed before
    it was written): a bug in evault's sizing, not in the data. The exporters fail that
    package alone, as an internal error to report; any other ``RuntimeError`` (a recursion,
    a missing implementation) is a bug of another kind and is not caught as this one."""


class PackageWriter:
    """Writes a ``.evpkg`` container (layout 2) in one pass, hashing the file as it goes.

        size = age.encrypted_size(keys, bag_size)     # payload.age's size, stated first
        with PackageWriter(out, draft, key, size) as writer:  # out: a new file for writing
            writer.write(ciphertext)                  # the age payload, in order
            written = writer.finish()                 # envelope, signature, file digest

    payload.age comes first, so its tar header, which states its size, is written before
    its first byte: the caller knows the size in advance (a bag's size from
    :meth:`~vault.formats.bagit.BagWriter.sizing`, the age file's from it). Each write is
    hashed twice, for the payload's SHA-256 the envelope names and for the file's, and
    written, on two helper threads (hashlib and file writes release the GIL) while the
    caller prepares the next. :meth:`finish` puts the payload's size and SHA-256 into the
    ``draft`` envelope (whose own values for them are ignored), signs it with ``key`` (the
    sender's) and writes it, its signature and the end of the archive behind the payload.
    The file is byte for byte what :func:`write_package` writes for the same envelope and
    payload, and its SHA-256 comes without reading it back.

    A payload that comes out longer or shorter than ``payload_size`` is a bug in the
    caller's sizing: :class:`PayloadSizeError`. ``out`` is flushed, not synced: fsync it, then give
    it its name. If anything raises, the file is incomplete: remove it.
    """

    def __init__(self, out: BinaryIO, draft: Envelope, key: SigningKey,
                 payload_size: int) -> None:
        if isinstance(payload_size, bool) or not isinstance(payload_size, int) or not (
                0 <= payload_size <= MAX_INTEGER):
            raise UsageError("package writer: the payload size must be a non-negative integer")
        check_signer_key(key, draft.sender, f"envelope {draft.package_id}")  # before any byte
        self._out = out
        self._draft = draft
        self._key = key
        self._mtime = _epoch(draft.created_at)
        self._declared = payload_size
        self._payload_digest = hashlib.sha256()
        self._file_digest = hashlib.sha256()
        self._size = 0
        self._pools = (ThreadPoolExecutor(max_workers=1), ThreadPoolExecutor(max_workers=1))
        self._pending: list[Future[None]] = []
        self._finished = False
        head = payload_headers(payload_size, self._mtime)
        self._file_digest.update(head)
        out.write(head)
        self._head = len(head)

    def __enter__(self) -> PackageWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Wait for the helper threads and stop them (after an error too)."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.exception()
        for pool in self._pools:
            pool.shutdown(wait=True)

    def write(self, data: bytes | memoryview) -> int:
        """Append payload bytes.

        ``data`` is hashed and written on the helper threads, without a copy: leave it
        unchanged until the next call of write(), flush() or finish() returns, as
        :class:`~vault.crypto.age.AgeWriter` does (it fills its other batch meanwhile).
        """
        if self._finished:
            raise RuntimeError("package writer: write after finish")
        if self._size + len(data) > self._declared:
            raise PayloadSizeError(f"package writer: the payload runs past the {self._declared} "
                               "bytes stated in its header")
        self._wait()
        self._pending = [self._pools[0].submit(self._payload_digest.update, data),
                         self._pools[1].submit(self._consume, data)]
        self._size += len(data)
        return len(data)

    def flush(self) -> None:
        """Wait until everything written so far is hashed and in the file."""
        self._wait()

    def _consume(self, chunk: bytes | memoryview) -> None:
        self._file_digest.update(chunk)
        self._out.write(chunk)

    def _wait(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def finish(self) -> WrittenContainer:
        """Complete the file: the envelope, its signature and the file's digest."""
        self._wait()
        self._finished = True
        if self._size != self._declared:
            raise PayloadSizeError(f"package writer: the payload came to {self._size} bytes, "
                               f"its header states {self._declared}")
        envelope = dataclasses.replace(
            self._draft, payload_size=self._size, payload_sha256=self._payload_digest.hexdigest()
        )
        data, signature = sign_envelope(envelope, self._key)
        back = back_bytes(data, signature.encode("ascii"), self._mtime,
                          self._head + self._size, self._size)
        self._file_digest.update(back)
        self._out.write(back)
        self._out.flush()
        return WrittenContainer(envelope, data, signature, self._file_digest.hexdigest(),
                                self._head + self._size + len(back))


@dataclass(frozen=True)
class _Member:
    name: str
    type: bytes
    size: int
    offset: int  # of the data


_TYPE_NAMES = {
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.DIRTYPE: "directory",
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "fifo",
    tarfile.CONTTYPE: "contiguous file",
    tarfile.GNUTYPE_SPARSE: "gnu sparse file",
}
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE)
_EXTENSIONS = frozenset(
    {
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    }
)


class _TarScan:
    """Walks the headers of a package file with positional reads, never its payload.

    Every length is checked against the file size before anything is read, extension
    headers are capped at 64 KiB and may not chain, so hostile input costs a bounded amount
    of memory and a number of reads that does not depend on declared sizes.
    """

    def __init__(self, fd: int, size: int, label: str) -> None:
        self.fd = fd
        self.size = size
        self.label = label

    def error(self, rule: str) -> VerificationError:
        return VerificationError(f"{self.label}: {rule}")

    def read(self, offset: int, length: int, what: str) -> bytes:
        if offset + length > self.size:
            raise self.error(f"is truncated ({what} runs past the end of the file)")
        data = os.pread(self.fd, length, offset)
        if len(data) != length:
            raise self.error(f"is truncated ({what} runs past the end of the file)")
        return data

    def header(self, offset: int) -> tarfile.TarInfo | None:
        """The header block at ``offset``; None for a zero (end-of-archive) block."""
        if offset == 0 and self.size < _BLOCK:
            raise self.error("is not a tar archive (shorter than one 512-byte header)")
        block = self.read(offset, _BLOCK, f"the header at byte {offset}")
        if block.count(0) == _BLOCK:
            return None
        if block[257:265] != _POSIX_MAGIC:
            if offset == 0:
                raise self.error("is not a posix tar archive (no 'ustar' header)")
            raise self.error(f"has a header that is not posix tar at byte {offset}")
        for name, (start, end) in _NUMBER_FIELDS.items():
            # Python's tarfile reads "+15" or "1_5" as octal, GNU tar "+15" as base-64:
            # readers that disagree on a size see other members (two envelopes, one file).
            if not _OCTAL_FIELD.fullmatch(block[start:end]):
                raise self.error(f"has a tar header whose {name} is not plain octal digits "
                                 f"at byte {offset}")
        try:
            return tarfile.TarInfo.frombuf(block, _HEADER_ENCODING, "strict")
        except (tarfile.TarError, ValueError, OverflowError, UnicodeDecodeError):
            raise self.error(f"has a corrupt tar header at byte {offset}") from None

    def member(self, offset: int) -> tuple[_Member, int] | None:
        """The member whose headers start at ``offset`` and where the next one starts."""
        info = self.header(offset)
        if info is None:
            return None
        records: dict[str, str] = {}
        if info.type == tarfile.XHDTYPE:
            if info.size > MAX_PAX_HEADER:
                raise self.error(f"has a pax header over {MAX_PAX_HEADER} bytes")
            data = self.read(offset + _BLOCK, info.size, "a pax header")
            records = self.pax_records(data)
            offset += _BLOCK + padded(info.size)
            info = self.header(offset)
            if info is None:
                raise self.error("has a pax header that is followed by no member")
        if info.type in _EXTENSIONS:
            raise self.error(f"has an extension header of type {info.type!r}, not accepted here")
        name = records.get("path", info.name)
        size = info.size
        if "size" in records:
            if not re.fullmatch("[0-9]{1,20}", records["size"]):
                raise self.error("has a pax size record that is not a decimal number")
            size = int(records["size"])
        if size < 0:
            raise self.error(f"member {printable(name)[:100]!r} has a negative size")
        data_at = offset + _BLOCK
        return _Member(name, info.type, size, data_at), data_at + padded(size)

    def pax_records(self, data: bytes) -> dict[str, str]:
        """Parse ``"<length> <keyword>=<value>\\n"`` records, strictly."""
        records: dict[str, str] = {}
        pos = 0
        while pos < len(data):
            space = data.find(b" ", pos, pos + 8)
            digits = data[pos:space]
            if space < 0 or not digits.isdigit():
                raise self.error("has a malformed pax record")
            end = pos + int(digits)
            if end <= space + 1 or end > len(data) or data[end - 1] != 0x0A:
                raise self.error("has a malformed pax record")
            keyword, equals, value = data[space + 1 : end - 1].partition(b"=")
            if not equals or not keyword:
                raise self.error("has a malformed pax record")
            try:
                key, text = keyword.decode("utf-8"), value.decode("utf-8")
            except UnicodeDecodeError:
                raise self.error("has a pax record that is not utf-8") from None
            if key in records:
                raise self.error(f"has a pax header that repeats {printable(key)[:40]!r}")
            # GNU sparse maps and link targets would make stock tar see other data.
            if key.startswith("GNU.sparse") or key == "linkpath":
                raise self.error(f"has a pax {printable(key)[:40]!r} record, not accepted here")
            records[key] = text
            pos = end
        return records

    def check_padding(self, member: _Member) -> None:
        pad = padded(member.size) - member.size
        if pad and self.read(member.offset + member.size, pad, "padding").count(0) != pad:
            raise self.error(f"has data hidden in the padding after {member.name}")

    def check_end(self, offset: int) -> None:
        """After the last member: two zero blocks, then nothing but zeros, in whole blocks."""
        rest = self.size - offset
        if rest < 2 * _BLOCK:
            raise self.error("is truncated (the end-of-archive marker is missing)")
        if rest % _BLOCK:
            raise self.error("does not end on a 512-byte block")
        while offset < self.size:
            chunk = os.pread(self.fd, min(_COPY_CHUNK, self.size - offset), offset)
            if not chunk:
                raise self.error("is truncated (it shrank while being read)")
            if chunk.count(0) != len(chunk):
                raise self.error("has data after its end-of-archive marker")
            offset += len(chunk)


_LAYOUT = ("a package holds exactly payload.age, envelope.json and envelope.json.sig in that "
           "order (or, as written before layout 2, envelope.json, envelope.json.sig and "
           "payload.age)")


def _check_member(scan: _TarScan, member: _Member, order: tuple[str, ...], index: int,
                  seen: list[str]) -> None:
    shown = printable(member.name)[:100]
    if member.type not in _REGULAR:
        kind = _TYPE_NAMES.get(member.type, f"type {member.type!r}")
        raise scan.error(f"member {shown!r} is a {kind}; only regular files are accepted")
    if member.name in seen:
        raise scan.error(f"has a duplicate member {shown!r}")
    if index >= len(order):
        raise scan.error(f"has a fourth member {shown!r}; {_LAYOUT}")
    if member.name != order[index]:
        if member.name in order:
            raise scan.error(
                f"members are out of order: {shown!r} where {order[index]!r} belongs; {_LAYOUT}"
            )
        raise scan.error(f"has an unexpected member {shown!r}; {_LAYOUT}")
    limits = {ENVELOPE_MEMBER: MAX_ENVELOPE, SIGNATURE_MEMBER: MAX_SIGNATURE}
    if member.name in limits and member.size > limits[member.name]:
        raise scan.error(f"{shown} is larger than {limits[member.name]} bytes")
    if member.offset + padded(member.size) > scan.size:
        raise scan.error(f"is truncated ({shown} runs past the end of the file)")


def read_package(path: Path) -> ScannedPackage:
    """Check a ``.evpkg`` file's structure and read its envelope and signature.

    Refused with :class:`~vault.errors.VerificationError`: anything but a POSIX tar; members
    other than exactly envelope.json, envelope.json.sig and payload.age in that order;
    links, devices, folders and other non-regular members; duplicates; pax headers over
    64 KiB, chained extension headers, GNU sparse records; an envelope or signature over
    1 MiB; a truncated file; non-zero padding or data after the end-of-archive marker; a
    path that is not a regular file (never opened in a way that blocks). The payload is not
    read: see :meth:`ScannedPackage.open_payload`. Nothing is verified cryptographically:
    call :func:`verify_envelope` next.
    """
    path = Path(path)
    label = _file_label(path)
    fd = open_regular(path, label)
    try:
        return _scan_package(fd, path, label, hold=False)
    finally:
        os.close(fd)


@contextlib.contextmanager
def hold_package(path: Path) -> Iterator[ScannedPackage]:
    """:func:`read_package` on a file that stays open until the block ends.

    Every later read through the :class:`ScannedPackage` (its :meth:`~ScannedPackage.open_payload`)
    is of the file whose envelope and signature it holds, even if another file is renamed
    over ``path`` or it is removed meanwhile: what is verified and what is used are one file.
    """
    path = Path(path)
    label = _file_label(path)
    fd = open_regular(path, label)
    try:
        yield _scan_package(fd, path, label, hold=True)
    finally:
        os.close(fd)


def _scan_package(fd: int, path: Path, label: str, *, hold: bool) -> ScannedPackage:
    """The checks of :func:`read_package` on the open file ``fd``."""
    scan = _TarScan(fd, os.fstat(fd).st_size, label)
    found: dict[str, _Member] = {}
    order = LAYOUTS[1]
    layout = 1
    offset = 0
    for index in range(len(order) + 1):
        step = scan.member(offset)
        if step is None:
            if index < len(order):
                raise scan.error(f"has {index} members; {_LAYOUT}")
            break
        member, offset = step
        if index == 0 and member.name == PAYLOAD_MEMBER:  # the payload first: layout 2
            layout = 2
            order = LAYOUTS[2]
        _check_member(scan, member, order, index, list(found))
        scan.check_padding(member)
        found[member.name] = member
    scan.check_end(offset)
    envelope = found[ENVELOPE_MEMBER]
    signature = found[SIGNATURE_MEMBER]
    payload = found[PAYLOAD_MEMBER]
    envelope_bytes = scan.read(envelope.offset, envelope.size, ENVELOPE_MEMBER)
    sig_bytes = scan.read(signature.offset, signature.size, SIGNATURE_MEMBER)
    try:
        sig_text = sig_bytes.decode("ascii")
    except UnicodeDecodeError:
        raise VerificationError(f"{label}: {SIGNATURE_MEMBER} is not ascii text") from None
    return ScannedPackage(
        envelope_bytes=envelope_bytes,
        signature=sig_text,
        payload_offset=payload.offset,
        payload_size=payload.size,
        path=path,
        fd=fd if hold else None,
        layout=layout,
    )
