"""BagIt 1.0 bags (RFC 8493) written and read as one streamed tar, verified while it streams.

    >>> import io
    >>> from datetime import date
    >>> from vault.formats.bagit import BagWriter, read_bag
    >>> out = io.BytesIO()
    >>> writer = BagWriter(out, "package-1", bagging_date=date(2024, 5, 1))
    >>> writer.add_payload("note.txt", io.BytesIO(b"hello"), 5)[:16]
    '2cf24dba5fb0a30e'
    >>> writer.add_tag_file("evault/items.json", b"[]")
    >>> summary = writer.finish([("Source-Organization", "Registry Office")])
    >>> writer.add_tag_file("evault/statement.json", b"{}", in_tagmanifest=False)
    >>> writer.close()
    >>> bag = read_bag(io.BytesIO(out.getvalue()), root="package-1")
    >>> bag.manifest == summary.manifest, bag.tagmanifest_sha256 == summary.tagmanifest_sha256
    (True, True)

Writing, in this order (anything else raises ``RuntimeError``, a bug in the caller):

1. ``BagWriter(out, root, bagging_date=...)`` writes ``root/``, ``root/bagit.txt`` and
   ``root/data/``;
2. ``add_payload`` for every payload file and ``add_tag_file`` for the tag files the tag
   manifest must cover (``evault/items.json``), in any mix;
3. ``finish(info)`` writes ``bag-info.txt``, ``manifest-sha256.txt`` and
   ``tagmanifest-sha256.txt`` and returns the :class:`BagSummary` whose
   ``tagmanifest_sha256`` a signed statement can name;
4. ``add_tag_file(..., in_tagmanifest=False)`` for that statement (allowed before
   ``finish`` too);
5. ``close()`` ends the tar stream; ``out`` stays open.

If any call raises, the stream is incomplete: discard ``out``.

Reading is :func:`read_bag`: one pass over the tar through :mod:`vault.formats.safetar`,
hashing every member as it streams (and writing it under ``extract_to`` if asked), then
checking ``bagit.txt``, ``bag-info.txt`` and both manifests against what streamed past.
Because the manifests come after the payload in this writer's streams, payload digests are
compared at the end; every problem found is listed on the :class:`BagError`.

Paths in manifests are percent-encoded as RFC 8493 section 2.1.3 requires (``%``, CR and
LF, and only those). bagit-python 1.9 does not decode ``%25`` (bagit-python issue 157), so
it reports a payload file whose name contains ``%`` as missing; this module follows the RFC.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import tarfile
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import BinaryIO, TypeVar, cast

from vault.errors import UsageError, VerificationError
from vault.formats.safetar import (
    Extraction,
    Limits,
    UnsafeArchiveError,
    iter_safe_members,
    member_chunks,
    open_tar_stream,
    printable,
)

__all__ = [
    "BAGIT_TXT",
    "MAX_TAG_FILES_TOTAL",
    "MAX_TAG_FILE_SIZE",
    "BagContents",
    "BagError",
    "BagSummary",
    "BagWriter",
    "PayloadCopy",
    "add_payload_to_each",
    "decode_manifest_path",
    "encode_manifest_path",
    "read_bag",
]

BAGIT_TXT = b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
"""The exact bytes of every ``bagit.txt`` this module writes."""

MAX_TAG_FILE_SIZE = 16 << 20
"""Tag files are held in memory while a bag is read; larger ones are refused."""

MAX_TAG_FILES_TOTAL = 64 << 20
"""All the tag files of one bag together (they are held at once): a bag whose tag files come
to more is refused at the header of the one that crosses the line, before its data is read."""

PayloadCopy = Callable[[str, int], AbstractContextManager[Callable[[bytes], object]]]
"""Where :func:`read_bag` sends a second copy of each payload file as it streams:
``copy(path in bag, declared size)`` gives a context whose value takes the file's chunks in
order; it ends normally once the file has streamed whole, and with the error otherwise."""

_T = TypeVar("_T")
_DEFAULT_LIMITS = Limits()
_MANIFEST = "manifest-sha256.txt"
_TAGMANIFEST = "tagmanifest-sha256.txt"
_MANIFEST_NAME = re.compile(r"(tag)?manifest-([^/]+)\.txt")
_RESERVED_LABELS = {"bagging-date", "payload-oxum"}
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_MANIFEST_LINE = re.compile(r"([0-9A-Fa-f]{64})[ \t]+([^ \t].*)")
_OXUM = re.compile(r"([0-9]{1,20})\.([0-9]{1,20})")  # bounded: int() of 4300+ digits raises
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_PERCENT_ESCAPE = re.compile(r"%(25|0[AaDd])")
_UNESCAPE = {"25": "%", "0A": "\n", "0D": "\r"}
_PLACEHOLDER_DIGEST = "0" * 64  # a SHA-256 in hex, for sizing


class _Counter:
    """The ``out`` of a sizing :class:`BagWriter`: takes every write, keeps nothing."""

    def write(self, data: bytes | memoryview) -> int:
        return len(data)


class BagError(VerificationError):
    """A bag does not verify; ``problems`` lists every finding, one line each."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        """``message`` is the one-line summary; ``problems`` the itemised findings."""
        super().__init__(message)
        self.problems: list[str] = list(problems) or [message]


class SourceSizeError(VerificationError):
    """A payload's source ended before, or went past, the size it was added with."""


def encode_manifest_path(p: str) -> str:
    """Percent-encode ``%``, CR and LF, and only those, for a manifest (RFC 8493 2.1.3)."""
    return p.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def decode_manifest_path(s: str) -> str:
    """Undo :func:`encode_manifest_path`: decode ``%25``, ``%0D`` and ``%0A`` (any case).

    Any other ``%`` sequence is left as it is, so manifests from writers that never
    encoded ``%`` still read as they were meant.
    """
    return _PERCENT_ESCAPE.sub(lambda m: _UNESCAPE[m.group(1).upper()], s)


@dataclass(frozen=True)
class BagSummary:
    """What a finished bag declares: Payload-Oxum, manifest and the tag manifest's digest."""

    payload_oxum: str
    manifest: dict[str, str]
    """Bag-relative payload path (``data/...``, not encoded) to SHA-256 hex digest."""
    tagmanifest_sha256: str
    """SHA-256 hex digest of the bytes of ``tagmanifest-sha256.txt``."""


@dataclass(frozen=True)
class BagContents:
    """A bag that verified: its metadata, manifests and tag files.

    Only tag files listed in ``tagmanifest`` are covered by ``tagmanifest_sha256``; a caller
    that trusts a tag file through a signed statement of that digest must check it is listed.
    """

    info: list[tuple[str, str]]
    """bag-info.txt elements in file order, Bagging-Date and Payload-Oxum included."""
    manifest: dict[str, str]
    """Bag-relative payload path (``data/...``) to SHA-256 hex digest."""
    tag_files: dict[str, bytes]
    """Every file outside ``data/`` (bag-relative path to bytes), manifests included."""
    payload_bytes: int
    root: str
    """The bag's top folder in the tar."""
    tagmanifest: dict[str, str]
    """Bag-relative tag file path to SHA-256 hex digest, as listed in the tag manifest."""
    tagmanifest_sha256: str
    """SHA-256 hex digest of the bytes of ``tagmanifest-sha256.txt``."""


# --- names -----------------------------------------------------------------------------------


def _check_component(part: str, what: str) -> None:
    shown = printable(what)
    if part in ("", ".", ".."):
        raise UsageError(f"{shown}: empty, '.' or '..' path components are not allowed")
    if "\x00" in part:
        raise UsageError(f"{shown}: nul characters are not allowed in names")
    try:
        encoded = part.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{shown}: name is not valid unicode text") from None
    if len(encoded) > _DEFAULT_LIMITS.max_component_length:
        raise UsageError(
            f"{shown}: a path component is longer than {_DEFAULT_LIMITS.max_component_length} bytes"
        )


def _is_reserved_top_level(rel: str) -> bool:
    return rel in ("bagit.txt", "bag-info.txt", "fetch.txt", "data") or bool(
        _MANIFEST_NAME.fullmatch(rel)
    )


# --- writing ---------------------------------------------------------------------------------

_OPEN, _FINISHED, _CLOSED, _FAILED = "open", "finished", "closed", "failed"


_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
# Chunks large enough that per-chunk overhead vanishes next to the hashing and the
# encryption behind them, small enough that a bag streams in a few MiB of memory.
_COPY_CHUNK = 512 * 1024
_READ_CHUNK = 256 * 1024
# From this size on, a payload is hashed on a helper thread while the next chunk is read
# and the current one written: hashlib releases the GIL, so on two cores the copy costs
# max(hash, the rest) instead of their sum. One thread serves a whole bag.
_THREADED_HASH_MIN = 256 * 1024


def _read_exactly(src: BinaryIO, view: memoryview) -> int:
    """Fill ``view`` from ``src`` (a decrypting stream may return short reads before its
    end); fewer bytes only at the end of the source."""
    readinto = getattr(src, "readinto", None)
    got = 0
    while got < len(view):
        if readinto is not None:
            n = readinto(view[got:])
        else:
            data = src.read(len(view) - got)
            n = len(data)
            view[got : got + n] = data
        if not n:
            break
        got += n
    return got


class BagWriter:
    """Write one bag as a deterministic pax tar stream; see the module docstring for the order.

    Members carry a fixed mtime (midnight UTC of ``bagging_date``), uid and gid 0, empty
    owner names, mode 0o644 (folders 0o755), so equal calls give equal bytes.
    """

    def __init__(self, out: BinaryIO, root: str, *, bagging_date: date) -> None:
        """Start the stream in ``out`` (written sequentially, never seeked, never closed)."""
        self._sizing = False
        _check_component(root, f"bag folder {root}")
        if "/" in root:
            raise UsageError(f"bag folder {printable(root)}: must be a single name")
        self._root = root
        self._date = bagging_date
        self._mtime = int(
            datetime(
                bagging_date.year, bagging_date.month, bagging_date.day, tzinfo=timezone.utc
            ).timestamp()
        )
        # The tar stream is written here, headers by tarfile's TarInfo.tobuf, exactly as
        # tarfile's "w|" mode would lay it out (PAX format, UTF-8, 512-byte blocks, the
        # end padded to a 10240-byte record). Payload goes to ``out`` in 512 KiB writes:
        # tarfile's stream re-slices every write into 10 KiB records, which cost more
        # than the encryption behind it.
        self._out = out
        self._offset = 0
        self._pool: ThreadPoolExecutor | None = None
        self._state = _OPEN
        self._names: set[str] = set()
        self._folders: set[str] = {"data"}
        self._manifest: dict[str, str] = {}
        self._tag_digests: dict[str, str] = {}
        self._octets = 0
        self._add_folder("")
        self._add_bytes("bagit.txt", BAGIT_TXT, in_tagmanifest=True)
        self._add_folder("data")

    @classmethod
    def sizing(cls, root: str, *, bagging_date: date) -> BagWriter:
        """A writer that writes nothing and counts: the size of a bag known before it is
        written (a container that states its payload's size first needs it).

        Make the same calls as for the real bag, with :meth:`count_payload` in place of
        each payload; :attr:`size` after :meth:`close` is the real bag's size in bytes.
        Its digests of payload files are placeholders of the real ones' length, so tag
        files computed from them have the same length but other bytes: keep it for sizes.
        """
        bag = cls(cast(BinaryIO, _Counter()), root, bagging_date=bagging_date)
        bag._sizing = True
        return bag

    @property
    def size(self) -> int:
        """Bytes of the tar stream written (or, by :meth:`sizing`, counted) so far."""
        return self._offset

    def count_payload(self, path: str, size: int) -> None:
        """On a :meth:`sizing` writer: count ``data/<path>`` of ``size`` bytes as
        :meth:`add_payload` would write it, without the bytes (same rules for names)."""
        if not self._sizing:
            raise RuntimeError("bag writer: count_payload is for a sizing writer")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise UsageError(f"payload {printable(path)}: size must be a non-negative integer")
        self._require(_OPEN, action="add a payload file")
        if path.startswith("/"):
            raise UsageError(f"payload {printable(path)}: absolute paths are not allowed")
        rel = f"data/{path}"
        self._claim(rel, f"payload {path}")

        def count() -> None:
            self._header(self._info(rel, size))
            self._offset += size
            self._pad(size)

        self._guarded(count)
        self._manifest[rel] = _PLACEHOLDER_DIGEST
        self._octets += size

    # members

    def _info(self, rel: str, size: int, *, folder: bool = False) -> tarfile.TarInfo:
        info = tarfile.TarInfo(f"{self._root}/{rel}" if rel else self._root)
        info.type = tarfile.DIRTYPE if folder else tarfile.REGTYPE
        info.size = size
        info.mtime = self._mtime
        info.mode = 0o755 if folder else 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    def _write(self, data: bytes | memoryview) -> None:
        self._out.write(data)
        self._offset += len(data)

    def _header(self, info: tarfile.TarInfo) -> None:
        self._write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def _pad(self, size: int) -> None:
        if size % _BLOCK:
            self._write(bytes(_BLOCK - size % _BLOCK))

    def _add_folder(self, rel: str) -> None:
        self._header(self._info(rel, 0, folder=True))

    def _add_bytes(self, rel: str, data: bytes, *, in_tagmanifest: bool) -> str:
        def write() -> None:
            self._header(self._info(rel, len(data)))
            self._write(data)
            self._pad(len(data))

        self._guarded(write)
        digest = hashlib.sha256(data).hexdigest()
        if in_tagmanifest:
            self._tag_digests[rel] = digest
        return digest

    def _hash_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1)
        return self._pool

    def _stop_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _guarded(self, action: Callable[[], _T]) -> _T:
        try:
            return action()
        except BaseException:
            self._stop_pool()
            self._state = _FAILED
            raise

    def _claim(self, rel: str, what: str) -> None:
        """Reserve a bag-relative file path that the reader will accept back unchanged."""
        shown = printable(what)
        if rel.startswith("/"):
            raise UsageError(f"{shown}: absolute paths are not allowed")
        parts = rel.split("/")
        for part in parts:
            _check_component(part, what)
        full = f"{self._root}/{rel}".encode()
        if len(full) > _DEFAULT_LIMITS.max_name_length:
            raise UsageError(
                f"{shown}: the path is longer than {_DEFAULT_LIMITS.max_name_length} bytes"
            )
        parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
        if rel in self._names:
            raise UsageError(f"{shown}: the bag already holds a file of that name")
        if rel in self._folders or any(parent in self._names for parent in parents):
            raise UsageError(f"{shown}: a file and a folder cannot share a name")
        self._names.add(rel)
        self._folders.update(parents)

    def _require(self, *states: str, action: str) -> None:
        if self._state not in states:
            raise RuntimeError(
                f"bag writer: cannot {action} while the writer is {self._state} (order: "
                "payload and tag files, finish(), unlisted tag files, close())"
            )

    # public

    def add_payload(self, path: str, src: BinaryIO, size: int) -> str:
        """Stream exactly ``size`` bytes of ``src`` into ``data/<path>``; return their SHA-256.

        ``path`` is ``/``-separated; spaces, ``%``, CR, LF and any letters are kept as they
        are. Empty, ``.`` and ``..`` components, absolute paths and NUL raise
        :class:`~vault.errors.UsageError`; a source with fewer or more bytes than ``size``
        raises :class:`~vault.errors.VerificationError` (and the stream is then unusable).
        """
        return add_payload_to_each([(self, path)], src, size)

    def add_tag_file(self, path: str, data: bytes, *, in_tagmanifest: bool = True) -> None:
        """Add a tag file at ``path`` (bag-relative, outside ``data/``), e.g. ``evault/items.json``.

        With ``in_tagmanifest=True`` (the default) it must come before :meth:`finish`, which
        lists it in ``tagmanifest-sha256.txt``. With ``False`` it is not listed, and may be
        added after :meth:`finish` (a statement naming the tag manifest's digest).
        """
        if in_tagmanifest:
            self._require(_OPEN, action="add a tag file listed in the tag manifest")
        else:
            self._require(_OPEN, _FINISHED, action="add a tag file")
        shown = printable(path)
        if _is_reserved_top_level(path) or path.startswith("data/"):
            raise UsageError(f"tag file {shown}: the name is reserved by bagit")
        if path[:1].isspace():
            # Manifest lines separate digest and path by whitespace, so a leading space
            # would be lost on reading.
            raise UsageError(f"tag file {shown}: a name cannot start with whitespace")
        if len(data) > MAX_TAG_FILE_SIZE:
            raise UsageError(
                f"tag file {shown}: {len(data)} bytes exceeds the limit of "
                f"{MAX_TAG_FILE_SIZE} bytes"
            )
        self._claim(path, f"tag file {path}")
        self._add_bytes(path, bytes(data), in_tagmanifest=in_tagmanifest)

    def finish(self, info: Sequence[tuple[str, str]]) -> BagSummary:
        """Write ``bag-info.txt``, ``manifest-sha256.txt`` and ``tagmanifest-sha256.txt``.

        ``bag-info.txt`` holds Bagging-Date, Payload-Oxum and then ``info`` in order.
        Labels must be non-empty, without ``:``, CR or LF and without surrounding
        whitespace; values without CR or LF; Bagging-Date and Payload-Oxum are written here
        and refused in ``info`` (:class:`~vault.errors.UsageError`). Each element is one
        line: folding is optional in RFC 8493 and bagit-python would read a folded value
        back with the line break inside it.
        """
        self._require(_OPEN, action="finish the bag")
        elements = [
            ("Bagging-Date", self._date.isoformat()),
            ("Payload-Oxum", f"{self._octets}.{len(self._manifest)}"),
        ]
        for label, value in info:
            _check_element(label, value)
            elements.append((label, value))
        bag_info = "".join(f"{label}: {value}\n" for label, value in elements).encode()
        manifest = dict(sorted(self._manifest.items()))
        self._add_bytes("bag-info.txt", bag_info, in_tagmanifest=True)
        self._add_bytes(_MANIFEST, _manifest_bytes(manifest), in_tagmanifest=True)
        tagmanifest = _manifest_bytes(dict(sorted(self._tag_digests.items())))
        tagmanifest_sha256 = self._add_bytes(_TAGMANIFEST, tagmanifest, in_tagmanifest=False)
        self._state = _FINISHED
        return BagSummary(
            payload_oxum=elements[1][1],
            manifest=manifest,
            tagmanifest_sha256=tagmanifest_sha256,
        )

    def close(self) -> None:
        """End the tar stream (end-of-archive marker and padding); ``out`` is left open."""
        self._require(_FINISHED, action="close the bag")

        def end() -> None:
            # Two zero blocks end the archive; zeros fill the last record, as tar -b20 does.
            trailer = 2 * _BLOCK
            trailer += -(self._offset + trailer) % _RECORD
            self._write(bytes(trailer))

        self._stop_pool()
        self._guarded(end)
        self._state = _CLOSED

    def abandon(self) -> None:
        """Give up this bag (an error elsewhere): its helper thread ends, the stream stays
        incomplete and the writer unusable. Does nothing to a closed bag."""
        if self._state != _CLOSED:
            _fail([self])


def add_payload_to_each(
    targets: Sequence[tuple[BagWriter, str]], src: BinaryIO, size: int
) -> str:
    """Stream exactly ``size`` bytes of ``src`` into ``data/<path>`` of each bag at once;
    return their SHA-256.

    The source is read and hashed once and every bag gets the same bytes and the same
    manifest line: one item going into the packages of several bodies is decrypted and
    checked once, not once per body. The rules are those of :meth:`BagWriter.add_payload`.
    A name refused for the first bag leaves every bag as it was; once anything else raises,
    every bag given is unusable.
    """
    if not targets:
        raise RuntimeError("bag writer: a payload needs at least one bag")
    shown = printable(f"data/{targets[0][1]}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise UsageError(f"payload {printable(targets[0][1])}: size must be a non-negative "
                         "integer")
    for bag, path in targets:
        bag._require(_OPEN, action="add a payload file")
        if path.startswith("/"):
            raise UsageError(f"payload {printable(path)}: absolute paths are not allowed")
    bags = [bag for bag, _ in targets]
    if any(bag._sizing for bag in bags):
        raise RuntimeError("bag writer: a sizing writer takes count_payload, not payloads")
    rels = [f"data/{path}" for _, path in targets]
    for n, (bag, rel, (_, path)) in enumerate(zip(bags, rels, targets, strict=True)):
        try:
            bag._claim(rel, f"payload {path}")
        except BaseException:
            if n:  # the bags before this one hold the name without its file: unusable
                _fail(bags)
            raise
    try:
        for bag, rel in zip(bags, rels, strict=True):
            bag._header(bag._info(rel, size))
        digest = hashlib.sha256()
        pool = bags[0]._hash_pool() if size >= _THREADED_HASH_MIN else None
        # At least four chunks a file when threaded, so that most of its hashing overlaps.
        step = max(64 * 1024, min(_COPY_CHUNK, size // 4)) if pool else min(_COPY_CHUNK, size)
        buffers = [bytearray(step) for _ in range(2)]
        pending: Future[None] | None = None
        done = 0
        try:
            while done < size:
                # Two buffers: one is being hashed while the other is filled and written;
                # a buffer is refilled only after its hash finished (``pending`` below).
                view = memoryview(buffers[(done // step) % 2])[: min(step, size - done)]
                n = _read_exactly(src, view)
                if n < len(view):
                    raise SourceSizeError(
                        f"payload {shown}: source ended after {done + n} of {size} bytes"
                    )
                if pending is not None:
                    pending.result()
                    pending = None
                if pool is not None:
                    pending = pool.submit(digest.update, view)
                else:
                    digest.update(view)
                for bag in bags:
                    bag._write(view)
                done += n
            if pending is not None:
                pending.result()
        finally:
            if pending is not None:
                # an error left a hash running on a buffer: let it finish first
                pending.exception()
        for bag in bags:
            bag._pad(size)
        if src.read(1):
            raise SourceSizeError(
                f"payload {shown}: source holds more than the declared {size} bytes"
            )
    except BaseException:
        _fail(bags)
        raise
    hexdigest = digest.hexdigest()
    for bag, rel in zip(bags, rels, strict=True):
        bag._manifest[rel] = hexdigest
        bag._octets += size
    return hexdigest


def _fail(bags: Sequence[BagWriter]) -> None:
    for bag in bags:
        bag._stop_pool()
        bag._state = _FAILED


def _check_element(label: str, value: str) -> None:
    shown = printable(label)
    if not label or label != label.strip() or ":" in label or any(c in label for c in "\r\n"):
        raise UsageError(
            f"bag-info label {shown}: must be non-empty, without ':', line breaks or "
            "surrounding whitespace"
        )
    if label.lower() in _RESERVED_LABELS:
        raise UsageError(f"bag-info label {shown}: is written by the bag writer itself")
    if "\r" in value or "\n" in value:
        raise UsageError(f"bag-info {shown}: values cannot contain line breaks")
    for text in (label, value):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"bag-info {shown}: not valid unicode text") from None


def _manifest_bytes(entries: dict[str, str]) -> bytes:
    # Two spaces, as bagit-python and sha256sum write them.
    return "".join(
        f"{digest}  {encode_manifest_path(path)}\n" for path, digest in entries.items()
    ).encode()


# --- reading ---------------------------------------------------------------------------------


def _text(name: str, data: bytes, problems: list[str]) -> str | None:
    if data.startswith(b"\xef\xbb\xbf"):
        problems.append(f"{name}: starts with a byte-order mark, which rfc 8493 forbids")
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        problems.append(f"{name}: not valid utf-8 (byte {e.start})")
        return None


def _lines(text: str) -> list[str]:
    # Only LF, CR and CRLF end a line (RFC 8493); str.splitlines would also split on
    # characters that are legal in file names.
    lines = _LINE_BREAK.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _parse_elements(name: str, text: str, problems: list[str]) -> list[tuple[str, str]]:
    """Metadata elements of a tag file (RFC 8493 2.2.2), with folded lines joined."""
    elements: list[list[str]] = []
    for number, line in enumerate(_lines(text), 1):
        if line == "":
            continue
        if line[0] in " \t":
            if not elements:
                problems.append(f"{name} line {number}: continuation line without a label")
            else:
                # "Except for linebreaks, such padding does not form part of the value."
                elements[-1][1] += "\n" + line.lstrip(" \t")
            continue
        label, colon, rest = line.partition(":")
        if not colon:
            problems.append(f"{name} line {number}: no ':' after the label")
            continue
        if not label or label != label.strip(" \t"):
            problems.append(f"{name} line {number}: label is empty or has surrounding whitespace")
            continue
        if rest and rest[0] not in " \t":
            problems.append(f"{name} line {number}: ':' must be followed by a space or tab")
            continue
        elements.append([label, rest[1:]])
    return [(label, value) for label, value in elements]


def _parse_manifest(
    name: str, data: bytes, problems: list[str], *, payload: bool
) -> dict[str, str]:
    """Entries of a manifest (decoded path to lowercase digest); malformed lines are problems."""
    text = _text(name, data, problems)
    if text is None:
        return {}
    entries: dict[str, str] = {}
    for number, line in enumerate(_lines(text), 1):
        if line == "":
            continue
        match = _MANIFEST_LINE.fullmatch(line)
        if match is None:
            problems.append(f"{name} line {number}: not '<sha-256 hex digest> <path>'")
            continue
        digest, encoded = match.group(1).lower(), match.group(2)
        path = decode_manifest_path(encoded)
        shown = printable(encode_manifest_path(path))
        if payload and not path.startswith("data/"):
            problems.append(f"{name} line {number}: {shown} is not a payload file in data/")
        elif not payload and (path.startswith("data/") or path == _TAGMANIFEST):
            problems.append(f"{name} line {number}: {shown} cannot be listed in a tag manifest")
        elif path in entries:
            problems.append(f"{name} line {number}: {shown} is listed more than once")
        else:
            entries[path] = digest
    return entries


def _both(first: Callable[[bytes], object], second: Callable[[bytes], object]
          ) -> Callable[[bytes], None]:
    def both(chunk: bytes) -> None:
        first(chunk)
        second(chunk)
    return both


class _BagReader:
    """State of one pass over a bag's tar: digests, tag files, early Payload-Oxum bound."""

    def __init__(self, root: str | None, extraction: Extraction | None,
                 copy: PayloadCopy | None = None) -> None:
        self.root = root
        self.extraction = extraction
        self.copy = copy
        self.payload: dict[str, str] = {}
        self.payload_bytes = 0
        self.tag_files: dict[str, bytes] = {}
        self.tag_bytes = 0  # declared sizes of the tag files in tag_files, in all
        self.tag_digests: dict[str, str] = {}
        self.info: list[tuple[str, str]] = []
        self.info_problems: list[str] = []
        self.oxum: tuple[int, int] | None = None
        self.oxum_text = ""
        self.pool: ThreadPoolExecutor | None = None  # hashes payload, shut down by read_bag

    def bag_path(self, name: str) -> str:
        """Path relative to the bag folder; with no root given, the first file fixes it."""
        top, _, rel = name.partition("/")
        if self.root is None:
            self.root = top
        if top != self.root or not rel:
            raise UnsafeArchiveError(
                f"tar member {printable(name)}: lies outside the bag folder {printable(self.root)}"
            )
        return rel

    def take(self, tf: tarfile.TarFile, member: tarfile.TarInfo, rel: str) -> None:
        """Hash (and keep or extract) one member."""
        if rel.startswith("data/"):
            self._check_oxum_bound(member, rel)
            self.payload[rel] = self._stream(tf, member, rel, keep=None)
            self.payload_bytes += member.size
            return
        if member.size > MAX_TAG_FILE_SIZE:
            raise BagError(
                f"bag {printable(self.root or '(empty)')}: tag file {printable(rel)} has "
                f"{member.size} bytes, over the limit of {MAX_TAG_FILE_SIZE}"
            )
        if self.tag_bytes + member.size > MAX_TAG_FILES_TOTAL:
            raise BagError(
                f"bag {printable(self.root or '(empty)')}: tag file {printable(rel)} would bring "
                f"the files outside data/ to {self.tag_bytes + member.size} bytes, over the "
                f"limit of {MAX_TAG_FILES_TOTAL} in all; ask the sender to put large files in "
                "data/"
            )
        self.tag_bytes += member.size
        kept: list[bytes] = []
        self.tag_digests[rel] = self._stream(tf, member, rel, keep=kept)
        data = b"".join(kept)
        self.tag_files[rel] = data
        if rel == "bag-info.txt":
            self._read_bag_info(data)

    def _stream(
        self, tf: tarfile.TarFile, member: tarfile.TarInfo, rel: str, *, keep: list[bytes] | None
    ) -> str:
        digest = hashlib.sha256()
        # A large payload file is hashed on a helper thread while the next chunk is read
        # (decrypted) and this one written out; each chunk is a new bytes object.
        pool = self._hash_pool() if keep is None and member.size >= _THREADED_HASH_MIN else None
        pending: Future[None] | None = None
        with contextlib.ExitStack() as files:
            out = None
            if self.extraction is not None:
                out = files.enter_context(self.extraction.create(rel))
            copy = None
            if keep is None and self.copy is not None:
                copy = files.enter_context(self.copy(rel, member.size))
            # On the helper thread, the extracted copy is written too (writes release the
            # GIL): the decryption and the caller's copy go on here meanwhile.
            consume = digest.update if out is None else _both(digest.update, out.write)
            try:
                for chunk in member_chunks(tf, member, chunk_size=_READ_CHUNK):
                    if pool is not None:
                        if pending is not None:
                            pending.result()
                        pending = pool.submit(consume, chunk)
                    else:
                        consume(chunk)
                    if copy is not None:
                        copy(chunk)
                    if keep is not None:
                        keep.append(chunk)
                if pending is not None:
                    pending.result()
            finally:
                if pending is not None:
                    pending.exception()  # an error left a hash running: let it finish first
        return digest.hexdigest()

    def _hash_pool(self) -> ThreadPoolExecutor:
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=1)
        return self.pool

    def _check_oxum_bound(self, member: tarfile.TarInfo, rel: str) -> None:
        # Only when bag-info.txt came before the payload; BagWriter puts it last, and then
        # Limits bound the stream and the comparison happens at the end.
        if self.oxum is None:
            return
        octets, count = self.oxum
        if self.payload_bytes + member.size > octets or len(self.payload) + 1 > count:
            raise BagError(
                f"bag {printable(self.root or '(empty)')}: payload exceeds Payload-Oxum "
                f"{self.oxum_text} at {printable(rel)}"
            )

    def _read_bag_info(self, data: bytes) -> None:
        problems = self.info_problems
        text = _text("bag-info.txt", data, problems)
        if text is None:
            return
        self.info = _parse_elements("bag-info.txt", text, problems)
        oxums = [value for label, value in self.info if label.lower() == "payload-oxum"]
        dates = [value for label, value in self.info if label.lower() == "bagging-date"]
        if len(oxums) != 1:
            problems.append(f"bag-info.txt: needs one Payload-Oxum, has {len(oxums)}")
        else:
            match = _OXUM.fullmatch(oxums[0])
            if match is None:
                problems.append(f"bag-info.txt: Payload-Oxum {printable(oxums[0])} is malformed")
            else:
                self.oxum = (int(match.group(1)), int(match.group(2)))
                self.oxum_text = oxums[0]
        if len(dates) > 1:
            problems.append("bag-info.txt: Bagging-Date appears more than once")
        for value in dates:
            if not _is_iso_date(value):
                problems.append(f"bag-info.txt: Bagging-Date {printable(value)} is not yyyy-mm-dd")

    def verify(self) -> list[str]:
        """Every problem of the bag as a whole, in a stable order."""
        problems: list[str] = []
        self._verify_bagit_txt(problems)
        if "bag-info.txt" not in self.tag_files:
            problems.append("bag-info.txt: missing")
        problems.extend(self.info_problems)
        if self.oxum is not None:
            octets, count = self.oxum
            if (octets, count) != (self.payload_bytes, len(self.payload)):
                problems.append(
                    f"bag-info.txt: Payload-Oxum {self.oxum_text} does not match the payload "
                    f"({self.payload_bytes}.{len(self.payload)})"
                )
        for rel in sorted(self.tag_files):
            match = _MANIFEST_NAME.fullmatch(rel)
            if match and match.group(2) != "sha256":
                problems.append(f"{printable(rel)}: only sha256 manifests are supported")
            elif rel == "fetch.txt":
                problems.append("fetch.txt: bags that fetch payload are not supported")
            elif rel == "data":
                problems.append("data: must be the payload folder, not a file")
        self._verify_manifest(problems)
        self._verify_tagmanifest(problems)
        return problems

    def _verify_bagit_txt(self, problems: list[str]) -> None:
        data = self.tag_files.get("bagit.txt")
        if data is None:
            problems.append("bagit.txt: missing")
            return
        text = _text("bagit.txt", data, problems)
        if text is None:
            return
        elements = _parse_elements("bagit.txt", text, problems)
        labels = [label for label, _ in elements]
        if labels != ["BagIt-Version", "Tag-File-Character-Encoding"]:
            problems.append(
                "bagit.txt: must hold BagIt-Version then Tag-File-Character-Encoding, "
                f"has {printable(', '.join(labels)) or 'nothing'}"
            )
        values = dict(elements)
        version = values.get("BagIt-Version")
        if version is not None and version != "1.0":
            problems.append(f"bagit.txt: BagIt-Version {printable(version)} is not 1.0")
        encoding = values.get("Tag-File-Character-Encoding")
        if encoding is not None and encoding.upper() != "UTF-8":
            problems.append(
                f"bagit.txt: Tag-File-Character-Encoding {printable(encoding)} is not utf-8"
            )

    def _verify_manifest(self, problems: list[str]) -> None:
        data = self.tag_files.get(_MANIFEST)
        if data is None:
            problems.append(f"{_MANIFEST}: missing")
            return
        listed = _parse_manifest(_MANIFEST, data, problems, payload=True)
        _compare(_MANIFEST, listed, self.payload, problems, unlisted=True)

    def _verify_tagmanifest(self, problems: list[str]) -> None:
        data = self.tag_files.get(_TAGMANIFEST)
        if data is None:
            problems.append(f"{_TAGMANIFEST}: missing")
            return
        listed = _parse_manifest(_TAGMANIFEST, data, problems, payload=False)
        # Unlisted tag files are allowed (a statement about this very manifest cannot be
        # listed in it), but the files that bind the payload must be.
        for required in ("bagit.txt", "bag-info.txt", _MANIFEST):
            if required not in listed:
                problems.append(f"{_TAGMANIFEST}: does not list {required}")
        _compare(_TAGMANIFEST, listed, self.tag_digests, problems, unlisted=False)

    def contents(self) -> BagContents:
        """The verified result; call only when :meth:`verify` found nothing."""
        listed = _parse_manifest(_TAGMANIFEST, self.tag_files[_TAGMANIFEST], [], payload=False)
        return BagContents(
            info=self.info,
            manifest=dict(sorted(self.payload.items())),
            tag_files=self.tag_files,
            payload_bytes=self.payload_bytes,
            root=self.root or "",
            tagmanifest=listed,
            tagmanifest_sha256=self.tag_digests[_TAGMANIFEST],
        )


def _is_iso_date(value: str) -> bool:
    if _ISO_DATE.fullmatch(value) is None:
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _compare(
    name: str,
    listed: dict[str, str],
    actual: dict[str, str],
    problems: list[str],
    *,
    unlisted: bool,
) -> None:
    for path, digest in listed.items():
        shown = printable(encode_manifest_path(path))
        if path not in actual:
            problems.append(f"{shown}: listed in {name} but not in the bag")
        elif actual[path] != digest:
            problems.append(f"{shown}: sha256 {actual[path]} does not match {digest} in {name}")
    if unlisted:
        for path in sorted(actual.keys() - listed.keys()):
            problems.append(f"{printable(encode_manifest_path(path))}: not listed in {name}")


def read_bag(
    src: BinaryIO,
    *,
    root: str | None = None,
    extract_to: Path | None = None,
    limits: Limits = _DEFAULT_LIMITS,
    copy_payload: PayloadCopy | None = None,
) -> BagContents:
    """Read a bag's tar stream once, verify it whole, and return what it holds.

    ``root`` is the expected top folder (``None``: whatever the first file names).
    With ``extract_to`` (an existing folder) every file is written to
    ``extract_to/<path in bag>`` as it streams, so ``extract_to`` becomes the bag folder;
    if anything fails, the files written are removed again. Extract into a fresh staging
    folder and move it into place only once this returns. Without it, payload is hashed
    and dropped. With ``copy_payload`` (see :data:`PayloadCopy`) each payload file also
    streams into a copy of the caller's, whatever the bag turns out to be: the caller
    discards its copies if this raises. Memory holds one chunk of payload, the tag files
    (each at most :data:`MAX_TAG_FILE_SIZE`, together at most :data:`MAX_TAG_FILES_TOTAL`)
    and one digest per file.

    Raises :class:`~vault.formats.safetar.UnsafeArchiveError` for an unsafe or corrupt tar,
    :class:`BagError` (``problems`` lists every finding) for a bag that does not verify.
    """
    if root is not None:
        _check_component(root, f"bag folder {root}")
        if "/" in root:
            raise UsageError(f"bag folder {printable(root)}: must be a single name")
    extraction = Extraction(extract_to) if extract_to is not None else None
    reader = _BagReader(root, extraction, copy_payload)
    try:
        tf = open_tar_stream(src, limits=limits)
        with tf:
            for member, name in iter_safe_members(tf, root=root, limits=limits):
                rel = name if root is not None else reader.bag_path(name)
                reader.take(tf, member, rel)
        problems = reader.verify()
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise BagError(
                f"bag {printable(reader.root or '(empty)')} does not verify: {problems[0]}{more}",
                problems,
            )
        return reader.contents()
    except BaseException:
        if extraction is not None:
            extraction.discard()
        raise
    finally:
        if reader.pool is not None:
            reader.pool.shutdown(wait=True)
