"""Read untrusted tar streams without letting them write, link or grow outside their bounds.

    >>> import io, tarfile, tempfile
    >>> from pathlib import Path
    >>> from vault.formats.safetar import Limits, extract_all
    >>> buf = io.BytesIO()
    >>> with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
    ...     info = tarfile.TarInfo("bag/data/note.txt")
    ...     info.size = 5
    ...     tf.addfile(info, io.BytesIO(b"hello"))
    >>> with tempfile.TemporaryDirectory() as dest:
    ...     extract_all(io.BytesIO(buf.getvalue()), Path(dest), root="bag", limits=Limits())
    ['data/note.txt']

The checks run in two places. ``open_tar_stream`` installs a header guard inside
:mod:`tarfile` itself, because ``tarfile`` reads pax and GNU extension headers whole into
memory, and chains of them recursively, before a caller ever sees the member: the guard caps
their size, refuses GNU sparse members and remembers how the archive ended.
``iter_safe_members`` then judges each member (type, name, size, duplicates) and, once the
stream is exhausted, insists on a proper end-of-archive marker followed by nothing but zero
padding, so a corrupt header cannot silently cut the archive short.

Every refusal is an :class:`UnsafeArchiveError`, a :class:`~vault.errors.VerificationError`.
Writing goes through :class:`Extraction`, which joins paths with :func:`safe_join`, creates
folders with mode 0o700 and files with ``open(path, "xb")`` (never overwriting), and removes
what it wrote if the read fails.
"""

from __future__ import annotations

import contextlib
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, ClassVar, TypeVar, cast

from vault.durable import WritebackFile
from vault.errors import VaultError, VerificationError

__all__ = [
    "CHUNK_SIZE",
    "Extraction",
    "Limits",
    "UnsafeArchiveError",
    "extract_all",
    "iter_safe_members",
    "member_chunks",
    "open_tar_stream",
    "printable",
    "safe_join",
]

CHUNK_SIZE = 64 * 1024
"""Bytes per read and write when streaming member data (the fastest size with tarfile's
default record buffer, measured); memory stays near this size."""

_GiB = 1 << 30

# Exceptions tarfile raises on malformed input besides its own TarError family (for example
# int() on a GNU sparse pax record, or a long chain of extension headers, which tarfile
# follows recursively). Converting them keeps "any hostile byte gives a VerificationError".
_TARFILE_FAILURES = (tarfile.TarError, EOFError, ValueError, OverflowError, RecursionError)

_EXTENSION_TYPES = frozenset(
    {
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    }
)
_FILE_TYPES = frozenset({tarfile.REGTYPE, tarfile.AREGTYPE})
_TYPE_NAMES = {
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "fifo",
    tarfile.CONTTYPE: "contiguous file",
    tarfile.GNUTYPE_SPARSE: "gnu sparse file",
}


class UnsafeArchiveError(VerificationError):
    """A tar stream breaks a safety rule (path, member type, size, structure); reading stops."""


@dataclass(frozen=True)
class Limits:
    """Bounds on an untrusted tar stream; each is checked before the data it bounds is read.

    Sizes are the sizes members declare in their headers, so a tar bomb is refused at its
    header. ``max_total_size`` should not exceed the free space where the archive is
    extracted; the default only stops absurd declarations.
    """

    max_members: int = 100_000
    max_member_size: int = 1024 * _GiB
    max_total_size: int = 1024 * _GiB
    max_name_length: int = 4096
    """Bytes of a member name in UTF-8."""
    max_component_length: int = 255
    """Bytes of one path component in UTF-8; common file systems allow no more."""
    max_header_size: int = 64 * 1024
    """Bytes of one pax or GNU extension header, which tarfile holds in memory and parses
    with a regular expression (CPython before 3.11.10/3.12.6 backtracks on crafted input,
    CVE-2024-6232), so it is kept small."""

    def __post_init__(self) -> None:
        for name in (
            "max_members",
            "max_member_size",
            "max_total_size",
            "max_name_length",
            "max_component_length",
            "max_header_size",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"limits: {name} must be a positive integer, not {value!r}")
        if self.max_header_size < self.max_name_length + 512:
            # A pax header must be able to carry the longest name allowed.
            raise ValueError("limits: max_header_size must exceed max_name_length by 512")


def printable(name: str) -> str:
    """Render a member or file name on one line for a message: control characters, and bytes
    that were not UTF-8, become backslash escapes; everything else is left as it is."""
    out = []
    for ch in name:
        code = ord(ch)
        if code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xDC80 <= code <= 0xDCFF:
            # surrogateescape's stand-in for an undecodable byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF or code in (0x85, 0x2028, 0x2029):
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


# --- header guard --------------------------------------------------------------------------


_TRUNCATED = "truncated"


class _HeaderGuard:
    """What the guard saw while tarfile parsed headers; one per opened archive."""

    def __init__(self, max_header_size: int) -> None:
        self.max_header_size = max_header_size
        self.end_marker_seen = False
        self.bad_header: str | None = None


_G = TypeVar("_G", bound="_GuardedTarInfo")


class _GuardedTarInfo(tarfile.TarInfo):
    """TarInfo whose parsing refuses what tarfile would otherwise load or loop over."""

    guard: ClassVar[_HeaderGuard]

    @classmethod
    def frombuf(cls: type[_G], buf: bytes | bytearray, encoding: str, errors: str) -> _G:
        guard = cls.guard
        end_marker = len(buf) == tarfile.BLOCKSIZE and buf.count(0) == tarfile.BLOCKSIZE
        guard.end_marker_seen = guard.end_marker_seen or end_marker
        try:
            info = super().frombuf(buf, encoding, errors)
        except tarfile.HeaderError as e:
            # tarfile ends the archive quietly on a bad or short header that is not the
            # first; remember it so iter_safe_members refuses instead of taking a prefix.
            if len(buf) != tarfile.BLOCKSIZE:
                guard.bad_header = _TRUNCATED
            elif not end_marker:
                guard.bad_header = str(e)
            raise
        if info.type == tarfile.GNUTYPE_SPARSE:
            raise UnsafeArchiveError(
                f"tar member {printable(info.name)}: gnu sparse members are not accepted"
            )
        if info.type in _EXTENSION_TYPES and info.size > guard.max_header_size:
            raise UnsafeArchiveError(
                f"tar extension header of {info.size} bytes exceeds the limit of "
                f"{guard.max_header_size} bytes"
            )
        return info


def open_tar_stream(src: BinaryIO, *, limits: Limits) -> tarfile.TarFile:
    """Open an uncompressed tar stream for one sequential pass, with the header guard in place.

    ``src`` needs only ``read``; it is not closed with the archive. Iterate the result with
    :func:`iter_safe_members`, which refuses archives not opened here.
    """
    guard = _HeaderGuard(limits.max_header_size)
    tarinfo_class = type("_GuardedTarInfoForStream", (_GuardedTarInfo,), {"guard": guard})
    try:
        # "r|" and not "r|*": no decompression, so no compression bomb.
        return tarfile.open(
            fileobj=src,
            mode="r|",
            tarinfo=tarinfo_class,
            encoding="utf-8",
            errors="surrogateescape",
        )
    except _TARFILE_FAILURES as e:
        raise UnsafeArchiveError(f"tar stream cannot be read: {_reason(e)}") from None


def _reason(e: BaseException) -> str:
    if isinstance(e, RecursionError):
        return "too many chained extension headers"
    text = str(e).strip().lower().rstrip(".")
    return printable(text) if text else type(e).__name__.lower()


def _guard_of(tf: tarfile.TarFile) -> _HeaderGuard:
    cls = tf.tarinfo
    if not (isinstance(cls, type) and issubclass(cls, _GuardedTarInfo)):
        raise ValueError("iter_safe_members needs an archive opened with open_tar_stream")
    return cls.guard


# --- member checks -------------------------------------------------------------------------


def _split_name(name: str, limits: Limits) -> list[str]:
    """Normalised components of a member name, or UnsafeArchiveError."""
    shown = printable(name)
    if "\x00" in name:
        raise UnsafeArchiveError(f"tar member {shown}: name contains a nul character")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeArchiveError(f"tar member {shown}: name is not valid utf-8") from None
    if len(encoded) > limits.max_name_length:
        raise UnsafeArchiveError(
            f"tar member {shown[:80]}...: name is longer than {limits.max_name_length} bytes"
        )
    if name.startswith("/"):
        raise UnsafeArchiveError(f"tar member {shown}: absolute names are not accepted")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    for part in parts:
        if part == "..":
            raise UnsafeArchiveError(f"tar member {shown}: '..' components are not accepted")
        if len(part.encode("utf-8")) > limits.max_component_length:
            raise UnsafeArchiveError(
                f"tar member {shown}: a path component is longer than "
                f"{limits.max_component_length} bytes"
            )
    return parts


def iter_safe_members(
    tf: tarfile.TarFile, *, root: str | None, limits: Limits
) -> Iterator[tuple[tarfile.TarInfo, str]]:
    """Yield each regular file of ``tf`` with its normalised path, refusing anything unsafe.

    The path drops empty and ``.`` components; with ``root`` it is relative to that top
    folder (every member must lie inside it), without it is the whole name. Directories
    are checked and skipped. Refused with :class:`UnsafeArchiveError`: absolute names,
    ``..`` components, names outside ``root``, NUL or non-UTF-8 in names, links, devices,
    fifos and other special members, duplicate names (compared exactly after
    normalisation), a file where a folder is also named, and anything over ``limits``.
    After the last member the stream must hold an end-of-archive marker and only zero
    padding. Read each yielded member's data with :func:`member_chunks` before advancing.
    """
    guard = _guard_of(tf)
    files: set[str] = set()
    folders: set[str] = set()
    members = 0
    total = 0
    while True:
        try:
            member = tf.next()
        except _TARFILE_FAILURES as e:
            raise UnsafeArchiveError(f"tar stream is corrupt: {_reason(e)}") from None
        if member is None:
            break
        members += 1
        if members > limits.max_members:
            raise UnsafeArchiveError(f"tar stream has more than {limits.max_members} members")
        shown = printable(member.name)
        parts = _split_name(member.name, limits)
        if root is not None and parts:
            if parts[0] != root:
                raise UnsafeArchiveError(
                    f"tar member {shown}: lies outside the top folder {printable(root)}"
                )
            parts = parts[1:]
        path = "/".join(parts)
        parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
        if any(parent in files for parent in parents):
            raise UnsafeArchiveError(f"tar member {shown}: a parent folder is a file")

        if member.isdir():
            if path in files:
                raise UnsafeArchiveError(f"tar member {shown}: folder has the name of a file")
            folders.add(path)
            folders.update(parents)
            continue
        if member.type not in _FILE_TYPES or member.sparse is not None:
            kind = _TYPE_NAMES.get(member.type, f"type {member.type!r}")
            raise UnsafeArchiveError(f"tar member {shown}: {kind} members are not accepted")
        if not parts:
            raise UnsafeArchiveError(f"tar member {shown}: a file needs a name inside the folder")
        if path in files:
            raise UnsafeArchiveError(f"tar member {shown}: duplicate name")
        if path in folders:
            raise UnsafeArchiveError(f"tar member {shown}: file has the name of a folder")
        if member.size < 0 or member.size > limits.max_member_size:
            raise UnsafeArchiveError(
                f"tar member {shown}: declared size {member.size} is outside the limit of "
                f"{limits.max_member_size} bytes"
            )
        total += member.size
        if total > limits.max_total_size:
            raise UnsafeArchiveError(
                f"tar member {shown}: archive exceeds the total size limit of "
                f"{limits.max_total_size} bytes"
            )
        files.add(path)
        folders.update(parents)
        yield member, path

    _check_end(tf, guard)


def _check_end(tf: tarfile.TarFile, guard: _HeaderGuard) -> None:
    if guard.bad_header == _TRUNCATED:
        raise UnsafeArchiveError("tar stream is truncated: no end-of-archive marker")
    if guard.bad_header is not None:
        raise UnsafeArchiveError(f"tar stream is corrupt: {printable(guard.bad_header.lower())}")
    if not guard.end_marker_seen:
        raise UnsafeArchiveError("tar stream is truncated: no end-of-archive marker")
    # After the first zero block only zero padding may follow; anything else is data the
    # archive does not account for.
    try:
        while chunk := tf.fileobj.read(CHUNK_SIZE):
            if chunk.count(0) != len(chunk):
                raise UnsafeArchiveError("tar stream has data after its end-of-archive marker")
    except _TARFILE_FAILURES as e:
        raise UnsafeArchiveError(f"tar stream is corrupt: {_reason(e)}") from None


def member_chunks(
    tf: tarfile.TarFile, member: tarfile.TarInfo, *, chunk_size: int = CHUNK_SIZE
) -> Iterator[bytes]:
    """Yield the data of the current member in chunks of at most ``chunk_size`` bytes.

    A stream that ends inside the member raises :class:`UnsafeArchiveError`.
    """
    try:
        reader = tf.extractfile(member)
        if reader is None:
            raise UnsafeArchiveError(f"tar member {printable(member.name)}: has no data")
        with reader:
            remaining = member.size
            while remaining > 0:
                chunk = reader.read(min(chunk_size, remaining))
                if not chunk:
                    raise tarfile.ReadError("unexpected end of data")
                remaining -= len(chunk)
                yield chunk
    except _TARFILE_FAILURES as e:
        raise UnsafeArchiveError(
            f"tar member {printable(member.name)}: data cannot be read: {_reason(e)}"
        ) from None


# --- writing -------------------------------------------------------------------------------

# Characters a path component cannot carry on this platform without changing its meaning.
_FORBIDDEN = frozenset({"\x00", "/"} | ({"\\", ":"} if os.name == "nt" else set()))


def safe_join(base: Path, rel: str) -> Path:
    """``base / rel`` for a relative, ``/``-separated path that stays inside ``base``.

    Refused with :class:`UnsafeArchiveError`: empty paths and components, ``.`` and ``..``,
    absolute paths, NUL (and on Windows ``\\`` and ``:``), and any result that, following
    symlinks already present under ``base``, resolves outside it.
    """
    shown = printable(rel)
    if rel.startswith("/"):
        raise UnsafeArchiveError(f"path {shown}: absolute paths are not accepted")
    parts = rel.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise UnsafeArchiveError(f"path {shown}: empty, '.' or '..' component")
        if any(ch in _FORBIDDEN for ch in part):
            raise UnsafeArchiveError(f"path {shown}: component contains a forbidden character")
    target = base.joinpath(*parts)
    if not target.resolve().is_relative_to(base.resolve()):
        raise UnsafeArchiveError(f"path {shown}: resolves outside {printable(str(base))}")
    return target


def _private_file(path: str, flags: int) -> int:
    # Evidence may be plaintext: readable by the owner only, whatever the umask.
    return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), 0o600)


class Extraction:
    """Files written under one existing folder during one read of an archive.

    Create each file with :meth:`create`; if the read fails, :meth:`discard` removes every
    file and folder this object created, so a refused archive leaves nothing behind.
    """

    def __init__(self, dest: Path) -> None:
        """Write under ``dest``, which must be an existing folder."""
        if not dest.is_dir():
            raise VaultError(f"extraction folder {printable(str(dest))} does not exist")
        self.dest = dest
        self._files: list[Path] = []
        self._folders: list[Path] = []

    def create(self, rel: str) -> BinaryIO:
        """Open a new file at ``dest/rel`` for writing, creating parent folders (mode 0o700).

        An existing file or folder of that name is never overwritten: it raises
        :class:`UnsafeArchiveError` (on case-insensitive file systems two names differing
        only in case collide here).
        """
        target = safe_join(self.dest, rel)
        try:
            folder = self.dest
            for part in rel.split("/")[:-1]:
                folder = folder / part
                if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
                    raise UnsafeArchiveError(f"path {printable(rel)}: a parent is not a folder")
                if not folder.exists():
                    folder.mkdir(mode=0o700)
                    self._folders.append(folder)
            fd = _private_file(str(target), os.O_WRONLY | os.O_CREAT | os.O_EXCL
                               | getattr(os, "O_CLOEXEC", 0))
            # Unbuffered (tar members stream in large chunks), handed to the disk as written.
            handle = cast(BinaryIO, WritebackFile(fd, "wb"))
        except FileExistsError:
            raise UnsafeArchiveError(
                f"path {printable(rel)}: already exists in the extraction folder"
            ) from None
        except OSError as e:
            raise VaultError(
                f"cannot write {printable(rel)} under {printable(str(self.dest))}: "
                f"{(e.strerror or str(e)).lower()}"
            ) from None
        self._files.append(target)
        return handle

    def discard(self) -> None:
        """Remove every file and folder created so far, newest first."""
        for path in reversed(self._files):
            path.unlink(missing_ok=True)
        for folder in reversed(self._folders):
            # A folder that is not empty holds something this extraction did not create.
            with contextlib.suppress(OSError):
                folder.rmdir()
        self._files.clear()
        self._folders.clear()


def extract_all(src: BinaryIO, dest: Path, *, root: str | None, limits: Limits) -> list[str]:
    """Extract every regular file of a tar stream under the existing folder ``dest``.

    Paths are taken relative to ``root`` when given (see :func:`iter_safe_members`). On any
    refusal the files already written are removed again. Returns the extracted paths in
    archive order.
    """
    extraction = Extraction(dest)
    written: list[str] = []
    try:
        tf = open_tar_stream(src, limits=limits)
        with tf:
            for member, path in iter_safe_members(tf, root=root, limits=limits):
                with extraction.create(path) as out:
                    for chunk in member_chunks(tf, member):
                        out.write(chunk)
                written.append(path)
    except BaseException:
        extraction.discard()
        raise
    return written
