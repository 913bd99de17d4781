"""Intake: read each evidence file once, hash it and encrypt it at rest, record its custody.

    >>> fields = IntakeFields(case="UA-2026-0042")                    # doctest: +SKIP
    >>> ingest(vault, rows_from_paths([Path("statement.pdf")], fields))  # doctest: +SKIP

Every file is validated before anything is written, in a first pass that keeps no list of
them (:class:`IntakePlan`); the second pass walks them again as they are stored, so that
memory does not grow with their number. Each file is then read exactly once: the
same bytes feed SHA-256 (and any legacy digests) and the age encryptor, which writes into a
new blob under a random name. Blobs are made durable with one sync per batch, then one
transaction records the batch's items, digests and custody events. A crash leaves complete
items or none; stray blobs are removed by ``evault doctor --repair``. Each batch's results
go to the caller once it is committed (:func:`ingest_batches`).
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import json
import os
import re
import signal
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from vault.clock import isoformat, parse_iso, utcnow
from vault.crypto.age import AgeIdentity, AgeRecipient
from vault.crypto.certs import count_certificates
from vault.errors import (
    ConfigError,
    ConflictError,
    NotFoundError,
    OptionsError,
    UsageError,
    VaultError,
)
from vault.faults import crash_point
from vault.formats.package import ItemLink
from vault.formats.provenance import Checks
from vault.names import CASE_ID, DERIVATION_TOOL, ITEM_ID, LABEL, MAX_TOOL, RELATIONS, TAG_KEY
from vault.service import keyhistory
from vault.service.custody import CustodyLog, actor_pair
from vault.service.identities import KeyPair
from vault.service.items import get_case
from vault.service.progress import Progress
from vault.service.recording import NewItem, record_items
from vault.service.results import Result
from vault.service.storing import Expected, Stored, blob_holds, store_path, store_paths
from vault.service.vaults import Vault
from vault.store.blobs import Blobs
from vault.store.models import Case, Item, VaultKey

if TYPE_CHECKING:
    # At run time only where workers are started: multiprocessing costs every command
    # that imports intake (package, open, items export) ~6 ms.
    from concurrent.futures import Future, ProcessPoolExecutor

BATCH_FILES = 2000
BATCH_BYTES = 1 << 30
#: The last batches of a large intake shrink, down to this many files: the last one is
#: recorded alone, once the workers are done (a whole batch of 2,000 took ~0.5 s there).
TAIL_FILES = 250
LEGACY_DIGESTS = ("md5", "sha1")
# Bulk intake of many small files spreads them over worker processes: below these figures
# starting the workers (~0.1 s) costs more than it saves.
PARALLEL_MIN_FILES = 256
SMALL_FILE = 4 << 20
WORKER_CHUNK = 64
MAX_WORKERS = 4
MANIFEST_FIELDS = (
    "path", "case", "title", "description", "source", "collected_at", "location", "tags", "labels"
)




@dataclass(frozen=True)
class Derivation:
    """A derived copy's link: the original item's id, the relation, the tool that made it
    (``name version``) and a note (who made it and why; sealed at rest, never logged)."""

    original: str
    relation: str
    tool: str | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        ITEM_ID.check(self.original, "--derived-from")
        if self.relation not in RELATIONS:
            raise UsageError(f"--relation {self.relation!r}: use one of {', '.join(RELATIONS)}")
        if self.tool is not None and not DERIVATION_TOOL.matches(self.tool):
            raise UsageError(f"--tool: one line of at most {MAX_TOOL} bytes, such as "
                             "\"redactor 2.1\"")


@dataclass(frozen=True)
class IntakeFields:
    """The metadata given for the files of one ingest (or one manifest row)."""

    case: str
    title: str | None = None
    description: str | None = None
    source: str | None = None
    collected_at: datetime | None = None
    location: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    labels: tuple[str, ...] = ()
    derivation: Derivation | None = None


@dataclass(frozen=True)
class IntakeRow:
    """One file to ingest, validated."""

    path: Path
    fields: IntakeFields
    size: int | None = None  # as seen when validated; reading measures the file again
    identity: tuple[int, int] | None = None  # device and inode, as seen when validated


#: Case titles, on both databases (PostgreSQL's column had this limit before it was sealed).
CASE_TITLE_MAX = 500


def check_case_id(case: str) -> None:
    """Case ids are short and safe: letters, digits, '.', '_', '/' and '-', no '..' part."""
    CASE_ID.check(case)


def parse_collected_at(text: str, where: str = "--collected-at") -> datetime:
    """An ISO 8601 time with a zone, or a usage error that shows the form."""
    try:
        return parse_iso(text)
    except ValueError:
        raise UsageError(
            f"{where}: {text!r} is not an ISO 8601 time with a zone, e.g. 2026-03-14T09:30:00Z"
        ) from None


def parse_tags(items: Sequence[str], where: str = "--tag") -> tuple[tuple[str, str], ...]:
    """``KEY=VALUE`` pairs, keys unique."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not TAG_KEY.matches(key):
            raise UsageError(f"{where}: {item!r} is not KEY=VALUE with {TAG_KEY.text}")
        if key in out:
            raise UsageError(f"{where}: tag {key!r} is given twice")
        out[key] = value
    return tuple(sorted(out.items()))


def parse_labels(items: Sequence[str], where: str = "--label") -> tuple[str, ...]:
    """Handling labels: lowercase words such as ``restricted-icc``."""
    for label in items:
        LABEL.check(label, where)
    return tuple(sorted(set(items)))


def check_fields(fields: IntakeFields, where: str) -> IntakeFields:
    """Validate one set of metadata."""
    check_case_id(fields.case)
    parse_labels(fields.labels, where)
    return fields


# ----------------------------------------------------------------------------- selecting files


def _check_file(
    path: Path, follow_symlinks: bool, where: str, lst: os.stat_result | None = None
) -> os.stat_result:
    """Refuse anything but a readable regular file (a link only if followed); its status
    (of the link's target, for a link). ``lst``: its ``lstat``, if the caller has it."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:  # os.fsdecode gave the bytes of another encoding as surrogates
        shown = str(os.fsencode(path))[2:-1]
        raise UsageError(
            f"{shown}: the file name is not UTF-8, and evault keeps names as UTF-8 text; "
            "ingest a copy under a UTF-8 name (the original can go in --description)"
        ) from None
    try:
        st = lst if lst is not None else os.lstat(path)
    except FileNotFoundError:
        raise NotFoundError(f"{where}: no such file; check the path") from None
    except PermissionError:
        raise VaultError(f"{where}: permission denied; check the file's permissions") from None
    except OSError as e:  # e.g. a name too long, a loop of links
        raise VaultError(f"{where}: cannot be read ({e.strerror or e})") from None
    if stat.S_ISLNK(st.st_mode):
        if not follow_symlinks:
            raise UsageError(
                f"{where}: is a symbolic link; pass --follow-symlinks to ingest its target"
            )
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise NotFoundError(f"{where}: symbolic link to a missing file") from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{where}: is a directory; pass --recursive to ingest what it holds")
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{where}: is not a regular file (device, socket or pipe)")
    if not os.access(path, os.R_OK):
        raise VaultError(f"{where}: permission denied; check the file's permissions")
    return st


def _key(st: os.stat_result) -> int:
    """A file's (device, inode) as one int: what makes two names one file."""
    return (st.st_dev << 64) | st.st_ino


def _walk(root: Path, follow_symlinks: bool, folders: set[int],
          again: bool = False) -> Iterator[tuple[Path, os.stat_result | None, bool]]:
    """The files under ``root``, each with its ``lstat`` and whether its folder was walked
    before in this command (``folders``: the folders walked so far, by :func:`_key`)."""
    key = _key(os.stat(root))
    again = again or key in folders
    folders.add(key)
    # Sorted, so that the order of items (and of custody events) is reproducible. While the
    # folder is walked only its names are kept, in one string (~12 bytes a name rather than
    # ~70 as a list of str, ~200 as DirEntry objects): a folder may hold a million files.
    for name in _sorted_names(root):
        path = root / name
        try:
            lst = os.lstat(path)
        except OSError:  # gone since listed: _check_file names the error
            yield path, None, again
            continue
        is_link = stat.S_ISLNK(lst.st_mode)
        if is_link and not follow_symlinks:
            raise UsageError(
                f"{path}: is a symbolic link; pass --follow-symlinks to ingest its target"
            )
        if stat.S_ISDIR(lst.st_mode) or (is_link and path.is_dir()):
            yield from _walk(path, follow_symlinks, folders, again)
        else:
            yield path, lst, again


def _sorted_names(folder: Path) -> Iterator[str]:
    """The names in ``folder``, sorted, kept packed in one string as they are given out."""
    names = os.listdir(folder)
    if not names:
        return
    names.sort()
    packed = "\0".join(names)  # no name holds NUL
    del names
    start = 0
    while (end := packed.find("\0", start)) >= 0:
        yield packed[start:end]
        start = end + 1
    yield packed[start:]


def _path_rows(
    paths: Sequence[Path],
    fields: IntakeFields,
    *,
    recursive: bool,
    follow_symlinks: bool,
) -> Iterator[IntakeRow]:
    """The command-line paths expanded and validated, one row at a time, in order.

    Each file once, however it is named: another spelling of its path, a link to it or to
    a folder above it, or a hard link (another name of the same inode) is refused as the
    second sighting of the file. For that this remembers, by device and inode, every
    folder walked and the files that can be reached twice: with links followed every
    file; else those named on the command line and those with more than one name. A file
    with one name (the common case) is then reached a second time only through a folder
    walked before, which is known, so nothing is kept for it.
    """
    check_fields(fields, "ingest")
    files: set[int] = set()
    folders: set[int] = set()

    def twice(file: Path) -> UsageError:
        return UsageError(f"{file}: given twice; each file is ingested once per command")

    for path in paths:
        if recursive and path.is_dir() and (follow_symlinks or not path.is_symlink()):
            for file, lst, again in _walk(path, follow_symlinks, folders):
                st = _check_file(file, follow_symlinks, str(file), lst)
                key = _key(st)
                if again or key in files:
                    raise twice(file)
                if follow_symlinks or st.st_nlink > 1:
                    files.add(key)
                yield IntakeRow(file, fields, st.st_size, (st.st_dev, st.st_ino))
            continue
        st = _check_file(path, follow_symlinks, str(path))
        key = _key(st)
        if key in files or (
            not follow_symlinks and st.st_nlink == 1 and folders
            and _key(os.stat(os.path.dirname(path) or ".")) in folders
        ):
            # Without links followed, a file with one name was walked if its folder was.
            raise twice(path)
        files.add(key)
        yield IntakeRow(path, fields, st.st_size, (st.st_dev, st.st_ino))


def rows_from_paths(
    paths: Sequence[Path],
    fields: IntakeFields,
    *,
    recursive: bool = False,
    follow_symlinks: bool = False,
) -> list[IntakeRow]:
    """Expand and validate the command-line paths; nothing is read or written yet."""
    rows = list(_path_rows(paths, fields, recursive=recursive,
                           follow_symlinks=follow_symlinks))
    if not rows:
        raise UsageError("ingest: no files to ingest")
    return rows


def _read_manifest(manifest: Path) -> str:
    try:
        text = manifest.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFoundError(f"{manifest}: no such manifest") from None
    except UnicodeDecodeError:
        raise UsageError(f"{manifest}: not UTF-8 text") from None
    if manifest.suffix.lower() not in (".csv", ".jsonl", ".ndjson"):
        raise UsageError(f"{manifest}: manifest must be .csv or .jsonl")
    return text


def _manifest_rows(
    text: str, manifest: Path, defaults: IntakeFields | None, *, follow_symlinks: bool
) -> Iterator[IntakeRow]:
    """The rows of a manifest's ``text``, validated, one at a time, in order."""
    if manifest.suffix.lower() == ".csv":
        records = _csv_records(text, manifest)
    else:
        records = _jsonl_records(text, manifest)
    # Each file by its device and inode, as _path_rows knows them: the line that named it
    # first (its path is read again from the manifest to say how it was named twice).
    seen: dict[int, int] = {}
    for line, record in records:
        where = f"{manifest}:{line}"
        row = _manifest_row(record, where, manifest.parent, defaults)
        st = _check_file(row.path, follow_symlinks, f"{where}: {row.path}")
        first = seen.setdefault(_key(st), line)
        if first != line:
            named = _manifest_path(text, manifest, defaults, first)
            if named.resolve() == row.path.resolve():
                raise UsageError(
                    f"{where}: path {row.path} is listed twice (first at line {first})")
            # Another name of the same file: a link, a hard link.
            raise UsageError(f"{where}: path {row.path} is the file listed at line {first}")
        yield replace(row, size=st.st_size, identity=(st.st_dev, st.st_ino))


def _manifest_path(text: str, manifest: Path, defaults: IntakeFields | None,
                   line: int) -> Path:
    """The path the manifest's row at ``line`` names (read when it is named again)."""
    records = (_csv_records(text, manifest) if manifest.suffix.lower() == ".csv"
               else _jsonl_records(text, manifest))
    for number, record in records:
        if number == line:
            return _manifest_row(record, f"{manifest}:{line}", manifest.parent, defaults).path
    raise AssertionError(f"{manifest}:{line}: row not found again")  # pragma: no cover


def rows_from_manifest(
    manifest: Path, defaults: IntakeFields | None = None, *, follow_symlinks: bool = False
) -> list[IntakeRow]:
    """Read a CSV or JSON-lines manifest whole; validate every row before anything is written.

    Relative paths are taken from the manifest's folder. A bad row names its line number.
    """
    text = _read_manifest(manifest)
    rows = list(_manifest_rows(text, manifest, defaults, follow_symlinks=follow_symlinks))
    if not rows:
        raise UsageError(f"{manifest}: the manifest lists no files")
    return rows


@dataclass(frozen=True)
class IntakePlan:
    """The files of one ingest, validated whole, but not kept: ``rows()`` expands and
    validates them again, one at a time, as they are stored, so that an ingest of a
    million files holds no list of a million rows.

    ``files`` and ``bytes`` are what the validating pass found (the progress line's
    totals), ``cases`` and ``originals`` the cases and ``--derived-from`` items the rows
    name (checked before any file is read). ``started_ns`` is when the validating pass
    began: a file is stored only if it is the one validated (same device and inode) and
    unchanged since then (its ctime; :class:`~vault.service.storing.Expected`), so a file
    replaced, moved (it could be walked twice), added or rewritten between or during the
    passes is refused when it would be stored, and the files stored before it are kept.
    """

    files: int
    bytes: int
    cases: frozenset[str]
    originals: frozenset[str]
    source: Callable[[], Iterator[IntakeRow]] = field(repr=False)
    started_ns: int

    def rows(self) -> Iterator[IntakeRow]:
        """The rows again, validated as the first time, in the same order."""
        return self.source()

    @classmethod
    def of(
        cls,
        source: Callable[[], Iterator[IntakeRow]],
        *,
        empty: str = "ingest: no files to ingest",
        seen: Callable[[IntakeRow], None] | None = None,
    ) -> IntakePlan:
        """Validate every row of ``source`` (a usage error ``empty`` if there is none);
        ``seen`` is called with each, e.g. to size a table's columns."""
        started_ns = time.time_ns()
        files = nbytes = 0
        cases: set[str] = set()
        originals: set[str] = set()
        for row in source():
            files += 1
            nbytes += row.size or 0
            cases.add(row.fields.case)
            if row.fields.derivation is not None:
                originals.add(row.fields.derivation.original)
            if seen is not None:
                seen(row)
        if not files:
            raise UsageError(empty)
        return cls(files, nbytes, frozenset(cases), frozenset(originals), source, started_ns)

    @classmethod
    def of_rows(cls, rows: Sequence[IntakeRow]) -> IntakePlan:
        """A plan of rows already validated and held."""
        return cls.of(lambda: iter(rows))


def plan_from_options(
    paths: Sequence[Path],
    manifest: Path | None,
    *,
    case: str | None,
    title: str | None = None,
    description: str | None = None,
    source: str | None = None,
    collected_at: str | None = None,
    location: str | None = None,
    tags: Sequence[str] = (),
    labels: Sequence[str] = (),
    recursive: bool = False,
    follow_symlinks: bool = False,
    derived_from: str | None = None,
    relation: str | None = None,
    tool: str | None = None,
    note: str | None = None,
    seen: Callable[[IntakeRow], None] | None = None,
) -> IntakePlan:
    """The files of ``evault ingest``: ``paths``, or the rows of ``manifest``, with the
    fields given as options (``--collected-at`` ISO 8601, ``--tag`` KEY=VALUE and
    ``--label`` parsed and checked here); ``case`` is needed unless a manifest names each
    row's. Every row is validated here (``seen`` is called with each); nothing is read or
    written yet."""
    fields = None
    derivation = None
    if (derived_from is None) != (relation is None):
        raise OptionsError("--derived-from ITEM and --relation RELATION go together")
    if derived_from is None and (tool is not None or note is not None):
        raise OptionsError("--tool and --note describe a derived copy: give --derived-from")
    if derived_from is not None and relation is not None:
        if manifest is not None:
            raise OptionsError("--derived-from is for files given on the command line, not a "
                               "--manifest")
        derivation = Derivation(derived_from, relation, tool, note)
    if case:
        fields = IntakeFields(
            case=case,
            title=title,
            description=description,
            source=source,
            collected_at=parse_collected_at(collected_at) if collected_at else None,
            location=location,
            tags=parse_tags(tags),
            labels=parse_labels(labels),
            derivation=derivation,
        )
    if manifest is not None:
        # The manifest's text is kept (and parsed again for the second pass), so that the
        # rows stored are the rows validated even if the file is rewritten meanwhile.
        text = _read_manifest(manifest)
        return IntakePlan.of(
            lambda: _manifest_rows(text, manifest, fields, follow_symlinks=follow_symlinks),
            empty=f"{manifest}: the manifest lists no files", seen=seen)
    if fields is None:
        raise OptionsError("--case CASE is required")
    given, chosen = list(paths), fields
    return IntakePlan.of(
        lambda: _path_rows(given, chosen, recursive=recursive, follow_symlinks=follow_symlinks),
        seen=seen)


def _csv_records(text: str, manifest: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    unknown = set(reader.fieldnames or ()) - set(MANIFEST_FIELDS)
    if unknown:
        raise UsageError(f"{manifest}:1: unknown column {sorted(unknown)[0]!r}")
    if "path" not in (reader.fieldnames or ()):
        raise UsageError(f"{manifest}:1: the header needs a 'path' column")
    try:
        for record in reader:
            if None in record:
                raise UsageError(f"{manifest}:{reader.line_num}: more cells than columns")
            yield reader.line_num, {k: v for k, v in record.items() if v not in (None, "")}
    except csv.Error as e:  # e.g. a cell over the csv module's field size limit
        raise UsageError(f"{manifest}:{reader.line_num}: not valid CSV ({e})") from None


#: Where str.splitlines() ends a line.
_LINE_END = re.compile("\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def _lines(text: str) -> Iterator[str]:
    """``text.splitlines()``, one line at a time rather than a list of every line (a
    manifest may list a million files)."""
    start = 0
    for end in _LINE_END.finditer(text):
        yield text[start:end.start()]
        start = end.end()
    if start < len(text):
        yield text[start:]


def _jsonl_records(text: str, manifest: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UsageError(f"{manifest}:{number}: not valid JSON ({e.msg})") from None
        except RecursionError:
            raise UsageError(f"{manifest}:{number}: not valid JSON (nested too deeply)") from None
        if not isinstance(record, dict):
            raise UsageError(f"{manifest}:{number}: each line must be a JSON object")
        unknown = set(record) - set(MANIFEST_FIELDS)
        if unknown:
            raise UsageError(f"{manifest}:{number}: unknown field {sorted(unknown)[0]!r}")
        yield number, record


def _as_list(value: Any, where: str, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(";") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise UsageError(f"{where}: {name} must be a list of strings (or ';'-separated in CSV)")


def _manifest_row(
    record: dict[str, Any], where: str, base: Path, defaults: IntakeFields | None
) -> IntakeRow:
    path = record.get("path")
    if not isinstance(path, str) or not path:
        raise UsageError(f"{where}: path is missing")
    if "\x00" in path:
        raise UsageError(f"{where}: path contains a NUL character")
    for name in ("case", "title", "description", "source", "collected_at", "location"):
        if record.get(name) is not None and not isinstance(record[name], str):
            raise UsageError(f"{where}: {name} must be a string")
    case = record.get("case") or (defaults.case if defaults else None)
    if not case:
        raise UsageError(f"{where}: case is missing (give it in the row or with --case)")
    tags_raw = record.get("tags")
    if isinstance(tags_raw, dict):
        tag_items = [f"{k}={v}" for k, v in tags_raw.items()]
    else:
        tag_items = _as_list(tags_raw, where, "tags")
    collected = record.get("collected_at")
    base_fields = defaults or IntakeFields(case=case)
    fields = replace(
        base_fields,
        case=case,
        title=record.get("title", base_fields.title),
        description=record.get("description", base_fields.description),
        source=record.get("source", base_fields.source),
        collected_at=(
            parse_collected_at(collected, f"{where}: collected_at")
            if collected else base_fields.collected_at
        ),
        location=record.get("location", base_fields.location),
        tags=parse_tags(tag_items, f"{where}: tags") if tag_items else base_fields.tags,
        labels=(
            parse_labels(_as_list(record.get("labels"), where, "labels"), f"{where}: labels")
            if record.get("labels") else base_fields.labels
        ),
    )
    try:
        check_fields(fields, where)
    except UsageError as e:
        raise UsageError(f"{where}: {e}") from None
    full = Path(path) if os.path.isabs(path) else base / path
    return IntakeRow(full, fields)


# ----------------------------------------------------------------------------- storage key


def storage_recipient(vault: Vault, as_name: str | None = None) -> AgeRecipient:
    """The vault's storage key, which blobs are encrypted to, checked first against the
    signed key history and the key store (exit 3 if the row was changed).

    A vault made before the storage key came with its first identity gets one here, on
    first use, introduced by a ``storage.key_created`` event signed by ``as_name``.
    """
    keyhistory.ensure_anchor(vault)
    with vault.transaction() as session:
        row = session.get(VaultKey, "storage")
        if row is not None:
            keyhistory.check_storage(vault, session, row)
            return AgeRecipient.parse(row.age_recipient)
    identity = AgeIdentity.generate()
    recipient = str(identity.recipient)
    vault.keystore.put(f"storage:{recipient}", identity.raw())
    try:
        with vault.transaction() as session:
            now = utcnow()
            session.add(VaultKey(purpose="storage", age_recipient=recipient, created_at=now))
            session.flush()
            CustodyLog(vault, session).append(
                actor_pair(vault, session, as_name), keyhistory.STORAGE_CREATED, "storage",
                details={"age_recipient": recipient}, now=now,
            )
    except IntegrityError:
        # Another process created it first; theirs is the one in use.
        vault.keystore.delete(f"storage:{recipient}")
        with vault.transaction() as session:
            row = session.get(VaultKey, "storage")
            if row is None:
                raise
            keyhistory.check_storage(vault, session, row)
            return AgeRecipient.parse(row.age_recipient)
    return identity.recipient


def blob_check(vault: Vault, session: Session) -> Callable[[str, str | None, str, int], bool]:
    """``record_items``'s ``holds``: whether a recorded blob decrypts to the bytes its row
    says (:func:`vault.service.storing.blob_holds`); the storage key is loaded on the
    first check, so a call that finds no duplicate never loads it."""
    blobs = vault.blob_store()
    key: list[AgeIdentity] = []

    def holds(blob_id: str, version: str | None, sha256: str, size: int) -> bool:
        if not key:
            key.append(storage_identity(vault, session))
        return blob_holds(blobs, key[0], blob_id, version, sha256, size)

    return holds


def storage_identity(vault: Vault, session: Session) -> AgeIdentity:
    """The private storage key, from the key store."""
    row = session.get(VaultKey, "storage")
    if row is None:
        raise NotFoundError("vault: no storage key yet; nothing was ever ingested")
    return AgeIdentity.from_raw(vault.keystore.get(f"storage:{row.age_recipient}"))


# ----------------------------------------------------------------------------- reading once


@dataclass(frozen=True)
class StoredFile:
    """One file read, hashed and encrypted into a new blob."""

    row: IntakeRow
    blob_id: str
    size: int
    sha256: str
    stored_size: int
    extra: dict[str, str] = field(default_factory=dict)
    version: str | None = None
    retain_until: datetime | None = None
    provenance: dict[str, Any] | None = None

    @classmethod
    def of(cls, row: IntakeRow, stored: Stored) -> StoredFile:
        return cls(row, stored.blob_id, stored.size, stored.sha256, stored.stored_size,
                   stored.extra, stored.version, stored.retain_until, stored.provenance)


def store_file(
    blobs: Blobs,
    row: IntakeRow,
    recipient: AgeRecipient,
    algorithms: Sequence[str],
    *,
    follow_symlinks: bool,
    hasher_pool: ThreadPoolExecutor | None,
    reading: Callable[[int], None] | None = None,
    checks: Checks | None = None,
    since_ns: int | None = None,
) -> StoredFile:
    """Read ``row.path`` once into a new blob, computing its digests on the way (and, with
    ``checks``, what it says of its own provenance); with ``since_ns``, only if it is the
    file validated, unchanged since then (:func:`_expected`)."""
    stored = store_path(blobs, row.path, recipient, algorithms,
                        follow_symlinks=follow_symlinks, hasher_pool=hasher_pool,
                        reading=reading, checks=checks, expect=_expected(row, since_ns))
    return StoredFile.of(row, stored)


def _expected(row: IntakeRow, since_ns: int | None) -> Expected | None:
    """What :func:`store_path` must find at ``row.path``: the file validated, unchanged
    since the command began at ``since_ns`` (None: nothing checked)."""
    return None if since_ns is None else Expected(row.identity, since_ns)


def provenance_checks(vault: Vault) -> Checks:
    """What intake checks files' provenance against: the C2PA trust anchors named by
    ``[c2pa] trust_anchors`` in ``config.toml`` (relative to the vault folder), each file
    read and checked to hold PEM certificates before any evidence file is read; their text
    is the files' one after another, each ending in a newline (what ``cat`` gives)."""
    texts: list[str] = []
    for name in vault.config.c2pa_trust_anchors:
        path = vault.root / Path(name).expanduser()
        where = f"{vault.root / 'config.toml'}: [c2pa] trust_anchors: {path}"
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"{where}: no such file; put the trust anchors' PEM file there "
                              "or remove it from the list") from None
        except OSError as e:
            raise ConfigError(f"{where}: cannot be read ({e.strerror or e})") from None
        try:
            count_certificates(pem)
            text = pem.decode("ascii")
            # A file not ending in a newline would run into the next one's BEGIN line, and
            # the C2PA library would drop that one's certificate without a word.
            texts.append(text if text.endswith("\n") else text + "\n")
        except (ValueError, UnicodeDecodeError):
            raise ConfigError(f"{where}: not a PEM certificate file; give the C2PA trust "
                              "anchors' certificates in PEM form") from None
    return Checks("".join(texts) if texts else None)


def _worker_count(files: int) -> int:
    """Worker processes for an intake of ``files``: none for a few files or on one core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if (cores or 1) < 2 or files < PARALLEL_MIN_FILES:
        return 0
    return min(cores or 1, MAX_WORKERS)


def _is_small(row: IntakeRow) -> bool:
    if row.size is not None:
        return row.size <= SMALL_FILE
    try:
        return os.stat(row.path).st_size <= SMALL_FILE
    except OSError:
        return False  # stored in this process, which reports the error in its turn


def _chunks(rows: Iterable[IntakeRow]) -> Iterator[tuple[list[IntakeRow], bool]]:
    """Rows in order, as runs of up to WORKER_CHUNK small files, or one large file."""
    run: list[IntakeRow] = []
    for row in rows:
        if _is_small(row):
            run.append(row)
            if len(run) == WORKER_CHUNK:
                yield run, True
                run = []
            continue
        if run:
            yield run, True
            run = []
        yield [row], False
    if run:
        yield run, True


def _stored_in_order(
    blobs: Blobs,
    rows: Iterable[IntakeRow],
    recipient: AgeRecipient,
    algorithms: Sequence[str],
    *,
    follow_symlinks: bool,
    hasher: ThreadPoolExecutor,
    workers: ProcessPoolExecutor | None,
    window: int = 8,
    reading: Callable[[int], None] | None = None,
    checks: Checks | None = None,
    since_ns: int | None = None,
) -> Generator[StoredFile, None, None]:
    """Store every row, yielding results in the rows' order.

    Without ``workers`` each file is stored here. With them, runs of small files are stored
    by the worker processes, up to ``window`` runs ahead of what is yielded, and large files
    here (where a helper thread hashes while this one encrypts). If this stops early (an
    error, or the caller stops), blobs that were stored but not yet yielded are removed: the
    caller answers only for what it received.
    """
    if workers is None:
        for row in rows:
            yield store_file(blobs, row, recipient, algorithms,
                             follow_symlinks=follow_symlinks, hasher_pool=hasher,
                             reading=reading, checks=checks, since_ns=since_ns)
        return
    from concurrent.futures.process import BrokenProcessPool

    task = (blobs.spec, str(recipient), tuple(algorithms), follow_symlinks)
    ahead: deque[_Ahead] = deque()
    try:
        for run, small in _chunks(rows):
            ahead.append(_Ahead(run))
            if small:
                # A run handed to the workers must be on record before Ctrl-C can stop this
                # (seen: an interrupt inside submit() left a whole run's blobs behind).
                with _interrupts_deferred():
                    ahead[-1].future = workers.submit(store_paths, *task,
                                                      [str(r.path) for r in run], checks,
                                                      [_expected(r, since_ns) for r in run])
            while len(ahead) > window:
                yield from _collect(blobs, ahead[0], recipient, algorithms, follow_symlinks,
                                    hasher, reading, checks, since_ns)
                ahead.popleft()
        while ahead:
            yield from _collect(blobs, ahead[0], recipient, algorithms, follow_symlinks, hasher,
                                reading, checks, since_ns)
            ahead.popleft()
    except BrokenProcessPool:  # from a result, or from the next submit after a worker died
        raise VaultError(
            "ingest: a worker process stopped unexpectedly (out of memory?); the unfinished "
            "batch was not kept; run `evault doctor --repair`, then the same ingest again"
        ) from None
    finally:
        _discard(blobs, ahead)


@dataclass
class _Ahead:
    """A run of rows on its way: stored by a worker (``future``) or here (no future)."""

    rows: list[IntakeRow]
    future: Future[list[Stored]] | None = None
    handed: int = 0  # results yielded: the caller's to keep or remove, never ours


def _collect(
    blobs: Blobs,
    entry: _Ahead,
    recipient: AgeRecipient,
    algorithms: Sequence[str],
    follow_symlinks: bool,
    hasher: ThreadPoolExecutor,
    reading: Callable[[int], None] | None = None,
    checks: Checks | None = None,
    since_ns: int | None = None,
) -> Iterator[StoredFile]:
    if entry.future is None:
        here = store_file(blobs, entry.rows[0], recipient, algorithms,
                          follow_symlinks=follow_symlinks, hasher_pool=hasher,
                          reading=reading, checks=checks, since_ns=since_ns)
        entry.handed = 1
        yield here
        return
    results = entry.future.result()
    for row, stored in zip(entry.rows, results, strict=True):
        # Counted as handed before it is: if this stops in between, one blob is left for
        # `doctor --repair`, rather than one removed under an item the caller committed.
        entry.handed += 1
        yield StoredFile.of(row, stored)


def _discard(blobs: Blobs, ahead: deque[_Ahead]) -> None:
    """Cancel the runs not started; remove the blobs that finished runs stored and that were
    not handed to the caller (waiting for runs still going)."""
    for entry in ahead:
        if entry.future is not None:
            entry.future.cancel()
    for entry in ahead:
        future = entry.future
        if future is None or future.cancelled():
            continue
        if future.exception() is not None:
            continue  # a failed run removed its own blobs (store_paths); a killed one cannot
        for s in future.result()[entry.handed:]:
            blobs.remove(s.blob_id)
    ahead.clear()


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C back until the block ends, then answer it as before. Python runs signal
    handlers in the main thread only, so elsewhere this does nothing (and need not)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[Any] = []
    previous = signal.signal(signal.SIGINT, lambda *args: caught.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            if callable(previous):
                previous(*caught[0])
            elif previous == signal.SIG_DFL:
                signal.raise_signal(signal.SIGINT)


def _worker_ignores_interrupts() -> None:
    """Ctrl-C reaches every process of the terminal's group; in a worker it would break the
    pool mid-file and leave a temporary blob. The main process alone answers it: it stops
    handing out runs, waits for the running ones and removes what they stored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start_workers(count: int) -> ProcessPoolExecutor | None:
    """``count`` worker processes, forked now, before this process starts any thread.

    Forked rather than spawned: they start in milliseconds with everything imported, and a
    script that calls :func:`ingest` needs no ``__main__`` guard. They inherit the open
    database connection but never use it, and leave with ``os._exit`` (no finalizers), as
    multiprocessing's workers do. Linux only; elsewhere intake stays in this process.
    """
    if not count or sys.platform != "linux":
        return None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=count, mp_context=multiprocessing.get_context("fork"),
                               initializer=_worker_ignores_interrupts)
    # The first task forks every worker, before the pool's own manager thread starts.
    pool.submit(int).result()
    return pool


# ----------------------------------------------------------------------------- recording


@dataclass(frozen=True, slots=True)
class IngestedItem(Result):
    """One file ingested: its new item id, case, file name, size in bytes and hex SHA-256.

    ``legacy_digests`` maps each ``--also-digest`` algorithm (``md5``, ``sha1``) to its hex
    digest, in the order asked for; ``to_json()`` gives each its own key after ``sha256``, as
    the table gives each its own column, so that object has no ``legacy_digests`` key.
    """

    id: str
    case: str
    name: str
    size: int
    sha256: str
    legacy_digests: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The fields, with the legacy digests spread as keys of their own."""
        out = Result.to_json(self)
        del out["legacy_digests"]
        return {**out, **self.legacy_digests}


def _missing_cases(session: Session, cases: set[str], create: bool) -> list[str]:
    existing = set(session.scalars(select(Case.id).where(Case.id.in_(cases))))
    missing = sorted(cases - existing)
    if missing and not create:
        raise NotFoundError(
            f"case {missing[0]}: not found; create it with `evault case create {missing[0]}` "
            "or pass --create-case"
        )
    return missing


def _ensure_cases(
    session: Session, log: CustodyLog, pair: KeyPair, cases: set[str], create: bool,
    now: datetime,
) -> None:
    for case in _missing_cases(session, cases, create):
        session.add(Case(id=case, title=None, created_at=now))
        log.append(pair, "case.created", case, now=now)


class _Original(NamedTuple):
    sha256: str
    labels: tuple[str, ...]


def _originals(session: Session, rows: Sequence[IntakeRow]) -> dict[str, _Original]:
    """Original item id -> its SHA-256 and labels, for the derived copies among ``rows``; an
    original that is not an item of this vault is refused."""
    return _found_originals(
        session, {r.fields.derivation.original for r in rows if r.fields.derivation is not None})


def _found_originals(session: Session, wanted: set[str]) -> dict[str, _Original]:
    """Original item id -> its SHA-256 and labels, for each of ``wanted``; one that is not
    an item of this vault is refused."""
    found = {item.id: _Original(item.sha256, tuple(lbl.label for lbl in item.labels))
             for item in session.scalars(select(Item).options(selectinload(Item.labels))
                                         .where(Item.id.in_(wanted)))} if wanted else {}
    for original in sorted(wanted - set(found)):
        raise NotFoundError(f"--derived-from {original}: no such item in this vault; see "
                            "`evault items list`")
    return found


def _labels(row: IntakeRow, originals: dict[str, _Original]) -> tuple[str, ...]:
    """A file's labels: its own, then for a derived copy those of its original it has not
    already (a redacted copy of a restricted statement is restricted too, until a release
    rule names the copy a body may have: ``rule add ... --relation redacted``)."""
    own = row.fields.labels
    d = row.fields.derivation
    if d is None:
        return own
    return own + tuple(lb for lb in originals[d.original].labels if lb not in own)


def _link(row: IntakeRow, originals: dict[str, _Original]) -> ItemLink | None:
    """A derived copy's link: the original's id and SHA-256, the relation and the tool
    (never the note). It goes into the signed ``item.ingested`` details as
    ``derived_from``, and so into every package that carries the copy."""
    d = row.fields.derivation
    if d is None:
        return None
    return ItemLink(d.original, originals[d.original].sha256, d.relation, d.tool)


def _record_batch(
    vault: Vault,
    batch: list[StoredFile],
    as_name: str | None,
    create_case: bool,
    now: datetime,
) -> tuple[list[IngestedItem], list[str]]:
    """One transaction for a batch; returns the items and the blobs made redundant by dedupe
    (:func:`~vault.service.recording.record_items`)."""
    with vault.transaction() as session:
        pair = actor_pair(vault, session, as_name)
        log = CustodyLog(vault, session)
        _ensure_cases(session, log, pair, {s.row.fields.case for s in batch}, create_case, now)
        originals = _originals(session, [s.row for s in batch])
        links = [_link(stored.row, originals) for stored in batch]
        recorded = record_items(session, log, pair, [
            NewItem(
                Stored(stored.blob_id, stored.size, stored.sha256, stored.stored_size,
                       stored.extra, stored.version, stored.retain_until),
                case=stored.row.fields.case,
                original_name=stored.row.path.name,
                action="item.ingested",
                details={"case": stored.row.fields.case, "size": stored.size,
                         "labels": list(_labels(stored.row, originals)),
                         **({"derived_from": link.to_json()} if link else {}),
                         **(stored.provenance or {})},
                title=stored.row.fields.title,
                description=stored.row.fields.description,
                source=stored.row.fields.source,
                collected_at=stored.row.fields.collected_at,
                location=stored.row.fields.location,
                labels=_labels(stored.row, originals),
                tags=stored.row.fields.tags,
                derived_from=link,
                derivation_note=(stored.row.fields.derivation.note
                                 if stored.row.fields.derivation else None),
            )
            for stored, link in zip(batch, links, strict=True)
        ], now=now, holds=blob_check(vault, session))
        out = [
            IngestedItem(
                id=item_id,
                case=stored.row.fields.case,
                name=stored.row.path.name,
                size=stored.size,
                sha256=stored.sha256,
                legacy_digests=dict(stored.extra),
            )
            for item_id, stored in zip(recorded.item_ids, batch, strict=True)
        ]
        crash_point("ingest.before_commit")
    return out, recorded.redundant


def ingest(
    vault: Vault,
    rows: Sequence[IntakeRow] | IntakePlan,
    *,
    as_name: str | None = None,
    create_case: bool = False,
    also_digest: Sequence[str] = (),
    follow_symlinks: bool = False,
    now: datetime | None = None,
    progress: Progress | None = None,
    bytes_progress: Progress | None = None,
) -> list[IngestedItem]:
    """Ingest validated rows in batches; return one result per item (all of them: for many
    files, :func:`ingest_batches` hands them over a batch at a time instead)."""
    results: list[IngestedItem] = []
    ingest_batches(vault, rows, results.extend, as_name=as_name, create_case=create_case,
                   also_digest=also_digest, follow_symlinks=follow_symlinks, now=now,
                   progress=progress, bytes_progress=bytes_progress)
    return results


def ingest_batches(
    vault: Vault,
    rows: Sequence[IntakeRow] | IntakePlan,
    on_batch: Callable[[list[IngestedItem]], None],
    *,
    as_name: str | None = None,
    create_case: bool = False,
    also_digest: Sequence[str] = (),
    follow_symlinks: bool = False,
    now: datetime | None = None,
    progress: Progress | None = None,
    bytes_progress: Progress | None = None,
) -> None:
    """Ingest validated rows (or a plan's, read again as they are stored) in batches; give
    ``on_batch`` the results of each batch, in order, once it is committed. Nothing is kept
    of a batch once it is handed over, so memory does not grow with the number of files.

    ``progress`` is called with (files stored, files in all) after each file is hashed
    and encrypted; the last call has both equal. ``bytes_progress`` gets (bytes read,
    bytes in all, as the files measured when validated) as a large file is read here, and
    after each file."""
    for algorithm in also_digest:
        if algorithm not in LEGACY_DIGESTS:
            raise UsageError(f"--also-digest: {algorithm!r} is not one of md5, sha1")
    plan = rows if isinstance(rows, IntakePlan) else IntakePlan.of_rows(rows)
    now = now or utcnow()
    # Refuse early, before reading any file: the acting identity and the cases must exist.
    with vault.transaction() as session:
        actor_pair(vault, session, as_name)
        _missing_cases(session, set(plan.cases), create_case)
        _found_originals(session, set(plan.originals))
    checks = provenance_checks(vault)
    recipient = storage_recipient(vault, as_name)
    blobs = vault.blob_store()
    committed = 0
    done = 0
    total_bytes = plan.bytes
    done_bytes = 0

    def reading(n: int) -> None:
        if bytes_progress is not None:
            bytes_progress(min(done_bytes + n, total_bytes), total_bytes)

    # What exists now (the imported code, mostly) is left out of the collector's passes for
    # the length of the intake, in this process and the workers forked from it: a bulk
    # intake spent ~9 % of its CPU time in them.
    gc.freeze()
    workers = None
    try:
        workers = _start_workers(_worker_count(plan.files))
        with blobs.intake_lock(), ThreadPoolExecutor(max_workers=1) as pool:
            # Workers may run a batch ahead, so that they go on while a batch is recorded.
            stream = _stored_in_order(blobs, plan.rows(), recipient, also_digest,
                                      follow_symlinks=follow_symlinks, hasher=pool,
                                      workers=workers,
                                      window=max(8, BATCH_FILES // WORKER_CHUNK),
                                      reading=reading if bytes_progress else None,
                                      checks=checks, since_ns=plan.started_ns)
            batch: list[StoredFile] = []
            batch_bytes = 0

            def commit() -> None:
                nonlocal committed
                out = _commit(vault, blobs, batch, as_name, create_case, now)  # empties batch
                committed += len(out)
                on_batch(out)

            try:
                for stored in stream:
                    batch.append(stored)
                    crash_point("ingest.blob_written")
                    batch_bytes += stored.size
                    done += 1
                    done_bytes += stored.size
                    if bytes_progress:
                        reading(0)
                    if progress:
                        # More files than counted only if the tree grew between the passes.
                        progress(done, max(done, plan.files))
                    if (len(batch) >= _batch_limit(plan.files - committed)
                            or batch_bytes >= BATCH_BYTES):
                        commit()
                        batch_bytes = 0
                if batch:
                    commit()
            except BaseException as e:
                stream.close()  # stops the workers' runs, removes what they stored unseen
                for stored in batch:
                    blobs.remove(stored.blob_id)
                if committed and isinstance(e, VaultError):
                    raise type(e)(f"{e} ({committed} earlier files were ingested)") from None
                raise
    finally:
        if workers is not None:
            workers.shutdown(wait=True, cancel_futures=True)
        gc.unfreeze()


def _batch_limit(files_left: int) -> int:
    """The files of the next batch, of ``files_left`` not yet committed: BATCH_FILES, then
    halving towards the end (to TAIL_FILES), so that little is left to record alone."""
    return min(BATCH_FILES, max(TAIL_FILES, files_left // 2))


def _commit(
    vault: Vault,
    blobs: Blobs,
    batch: list[StoredFile],
    as_name: str | None,
    create_case: bool,
    now: datetime,
) -> list[IngestedItem]:
    blobs.sync([s.blob_id for s in batch])
    out, redundant = _record_batch(vault, batch, as_name, create_case, now)
    for blob_id in redundant:
        blobs.remove(blob_id)
    batch.clear()
    return out


# ----------------------------------------------------------------------------- cases


@dataclass(frozen=True, slots=True)
class CaseInfo(Result):
    """A case: its id, title, how many items it holds and their plaintext size in bytes,
    and when it was opened (ISO 8601 UTC)."""

    id: str
    title: str | None
    items: int
    bytes: int
    created_at: str


def create_case(
    vault: Vault, case: str, *, title: str | None, as_name: str | None,
    now: datetime | None = None,
) -> CaseInfo:
    """Open a case file."""
    check_case_id(case)
    if title is not None and len(title) > CASE_TITLE_MAX:
        # The column's old limit, now kept here: sealed, the stored value is longer.
        raise UsageError(
            f"case {case}: --title has {len(title)} characters, more than the "
            f"{CASE_TITLE_MAX} that fit in cases; shorten it"
        )
    now = now or utcnow()
    with vault.transaction() as session:
        if session.get(Case, case) is not None:
            raise ConflictError(f"case {case}: exists already; see `evault case show {case}`")
        pair = actor_pair(vault, session, as_name)
        session.add(Case(id=case, title=title, created_at=now))
        CustodyLog(vault, session).append(pair, "case.created", case, now=now)
        session.flush()
        return _case_info(session, session.get(Case, case))  # type: ignore[arg-type]


def _case_info(session: Session, case: Case) -> CaseInfo:
    from sqlalchemy import func

    count, size = session.execute(
        select(func.count(Item.id), func.coalesce(func.sum(Item.size), 0)).where(
            Item.case_id == case.id
        )
    ).one()
    return CaseInfo(
        id=case.id,
        title=case.title,
        items=int(count),
        bytes=int(size),
        created_at=isoformat(case.created_at),
    )


def list_cases(vault: Vault) -> list[CaseInfo]:
    """Every case with its item count and size."""
    with vault.transaction() as session:
        return [_case_info(session, c) for c in session.scalars(select(Case).order_by(Case.id))]


def show_case(vault: Vault, case: str) -> CaseInfo:
    """One case."""
    with vault.transaction() as session:
        return _case_info(session, get_case(session, case))


