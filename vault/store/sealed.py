"""Metadata sealed at rest: which columns, the key in the key store, and the ORM hooks.

    >>> sorted(SEALED_COLUMNS)[:2]
    ['approval_requests.document', 'approvals.document']

The free text a thief of ``vault.db`` (or of a backup, or a ``pg_dump``) would read -- titles,
descriptions, original file names, sources, places, tag values, case titles, package
references and purposes, the sharing receipts that repeat a reference, the statements of
received packages that list original file names, and the approval requests and answers that
carry a purpose or a reason -- is stored encrypted
(:mod:`vault.crypto.metabox`: AES-256-GCM, a fresh nonce per value, the table, column and row
id as associated data). Text columns hold the sealed bytes in base64; binary columns hold
them as they are. Every other column stays clear (ids, sizes, digests, times, labels,
fingerprints, public keys, states).

The key is a random 256-bit key in the vault's key store under ``meta:<vault id>``, made on
first use. Its entry also records whether the vault's rows are all sealed: a vault made by an
older evault is converted by the first command that reads or writes metadata, inside that
command's own transaction (so a crash leaves it wholly old or wholly sealed), and only after
that transaction commits is the entry marked sealed. Until then a value that does not open is
taken for old plaintext and sealed; after it, such a value is an error (exit 3) naming the row.

The hooks make this invisible above the store: objects are decrypted as they are loaded
(``load``/``refresh`` events), encrypted for the length of a flush and given their plaintext
back after it, and ORM bulk INSERTs have their parameters sealed (``do_orm_execute``). A
session takes part when its ``info`` carries a :class:`MetadataKey` (see :func:`bind`), as
every session of :meth:`vault.service.vaults.Vault.transaction` does.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    LargeBinary,
    Table,
    cast,
    event,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from vault.crypto import metabox
from vault.errors import UsageError, VerificationError
from vault.faults import crash_point
from vault.keystore import KeyStore
from vault.store import cells
from vault.store.cells import CONVERTING, ENTRY_VERSION, SEALED
from vault.store.models import (
    Base,
    Case,
    Item,
    ItemTag,
    Package,
    PackageItem,
    Receipt,
    ReceivedApproval,
    ReceivedPackage,
    SealedMetadata,
    SentApprovalRequest,
)

log = logging.getLogger("evault")

INFO = "evault.metadata_key"
_SESSION_KEY = "evault.metadata_key.bytes"
_RESTORE = "evault.metadata_key.restore"
#: PostgreSQL advisory lock taken while the key is made or old rows are converted.
_PG_LOCK = 0x65766D74


@dataclass(frozen=True)
class Spec:
    """The sealed columns of one table and the columns that identify its rows."""

    model: type[Base]
    ids: tuple[str, ...]
    columns: tuple[str, ...]
    binary: frozenset[str] = frozenset()

    @property
    def table(self) -> str:
        return str(self.model.__tablename__)

    def row(self, values: Sequence[Any]) -> str:
        """The row id as bound into the associated data."""
        return cells.row_text(values)

    def where(self, values: Sequence[Any]) -> str:
        """The row as an error message names it."""
        return f"{self.table} {'/'.join(str(v) for v in values)}"

    def seal(self, key: bytes, column: str, row: Sequence[Any], value: Any) -> Any:
        """The stored form of ``value`` for this cell."""
        try:
            plain = value if column in self.binary else str(value).encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates: a file name or argument in another encoding (os.fsdecode).
            raise UsageError(
                f"{self.table}.{column}: {value!r} is not UTF-8 text; give it in UTF-8"
            ) from None
        box = metabox.seal(key, bytes(plain), self.table, column, self.row(row))
        return box if column in self.binary else base64.b64encode(box).decode("ascii")

    def open(self, key: bytes, column: str, row: Sequence[Any], stored: Any) -> Any | None:
        """The value of a stored cell, or None if it was not sealed for this cell and key."""
        return self.opener(key, column)(row, stored)

    def opener(self, key: bytes, column: str) -> Callable[[Sequence[Any], Any], Any | None]:
        """:meth:`open` for many cells of one column: ``(row ids, stored) -> value or
        None``, the cipher and the associated data's fixed part made once."""
        if column in self.binary:
            open_box = metabox.column_opener(key, self.table, column)

            def open_binary(row: Sequence[Any], stored: Any) -> Any | None:
                # SQLite keeps any type in any column: bytes() of a text would raise, of a
                # negative integer too, and of a large one would allocate that many bytes.
                if not isinstance(stored, bytes | bytearray | memoryview):
                    return None
                return open_box(self.row(row), bytes(stored))

            return open_binary

        # Text as stored, or its bytes (stored_form): base64 of the box either way.
        open_cell = cells.text_opener(key, self.table, column)

        def open_text(row: Sequence[Any], stored: Any) -> Any | None:
            return open_cell(self.row(row), stored)

        return open_text


SPECS: dict[type[Base], Spec] = {
    spec.model: spec
    for spec in (
        Spec(Case, ("id",), ("title",)),
        Spec(Item, ("id",), ("original_name", "title", "description", "source", "location",
                             "derivation_note")),
        Spec(ItemTag, ("item_id", "key"), ("value",)),
        Spec(Package, ("id",), ("reference", "purpose")),
        # The path in the bag is ``data/<item id>/<original file name>``.
        Spec(PackageItem, ("package_id", "item_id"), ("bag_path",)),
        Spec(Receipt, ("id",), ("document",), frozenset({"document"})),
        Spec(ReceivedPackage, ("package_id",), ("statement",), frozenset({"statement"})),
        # Approval requests repeat a purpose, refusals give a reason.
        Spec(SentApprovalRequest, ("id",), ("document",), frozenset({"document"})),
        Spec(ReceivedApproval, ("request_id", "fingerprint"), ("document",),
             frozenset({"document"})),
    )
}
#: ``table.column`` of every sealed column (the README lists them).
SEALED_COLUMNS = frozenset(f"{s.table}.{c}" for s in SPECS.values() for c in s.columns)


class MetadataKey:
    """The metadata key of one vault, fetched (or made) from its key store when first needed.

    :meth:`check` runs before a statement on sealed tables: if the database has no
    ``sealed_metadata`` row it opens the key store at once and converts an older vault's
    rows (before any row is read). Otherwise the key store is opened only when a sealed
    value is actually read or written (:meth:`for_session`), so listing an empty vault does
    not ask for a passphrase.
    """

    def __init__(self, keystore: Callable[[], KeyStore], vault_id: str) -> None:
        self._keystore = keystore
        self.name = cells.key_name(vault_id)
        self._key: bytes | None = None
        self._marked = False

    def check(self, session: Session) -> None:
        """Convert an older vault's rows if the database is not marked sealed."""
        if self._key is not None or self._marked or _SESSION_KEY in session.info:
            return
        if session.connection().execute(select(SealedMetadata.id)).first() is not None:
            self._marked = True
            return
        session.info[_SESSION_KEY] = self._prepare(session, create=True)

    def for_session(self, session: Session, *, create: bool = False) -> bytes:
        """The key; ``create``: make it if the key store has none (a write to a new vault)."""
        key = session.info.get(_SESSION_KEY)
        if key is None:
            key = self._key if self._key is not None else self._prepare(session, create)
            session.info[_SESSION_KEY] = key
        assert isinstance(key, bytes)
        return key

    def _prepare(self, session: Session, create: bool) -> bytes:
        conn = session.connection()
        if conn.dialect.name == "postgresql":
            # SQLite's BEGIN IMMEDIATE already holds the write lock here.
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK})")
        marked = conn.execute(select(SealedMetadata.id)).first() is not None
        store = self._keystore()
        entry = self._read(store)
        if entry is None:
            if not create:
                raise cells.no_key(self.name)
            state, key = (SEALED if marked else CONVERTING), metabox.new_key()
            store.put(self.name, bytes([ENTRY_VERSION, state]) + key)
        else:
            state, key = entry
        if not marked and state == CONVERTING:
            count = convert(conn, key)
            if count:
                log.warning(
                    "sealed %d metadata value%s of this vault under its metadata key "
                    "(first use after upgrade)", count, "" if count == 1 else "s",
                )
        if not marked:
            # With the key store marked sealed, a row that is not sealed is an error when
            # read: the marker is only a hint (someone deleted it, or restored an old backup).
            conn.execute(insert(SealedMetadata).values(id=1, version=metabox.VERSION))
            crash_point("metadata.converted")
        if state == SEALED:
            self._key = key
            return key

        def mark_sealed(_session: Session) -> None:
            crash_point("metadata.committed")
            store.put(self.name, bytes([ENTRY_VERSION, SEALED]) + key)
            self._key = key
            _checkpoint_wal(conn.engine)

        event.listen(session, "after_commit", mark_sealed, once=True)
        return key

    def _read(self, store: KeyStore) -> tuple[int, bytes] | None:
        return cells.read_entry(store, self.name)


def settle(session: Session) -> bytes:
    """What every command's first statement on sealed tables does, for a reader that reads
    rows without the ORM (:mod:`vault.service.listing`): convert an older vault's rows if the
    database is not marked sealed, then return the metadata key, marking the key store's
    entry sealed once ``session`` commits if it is not yet. Needs a session of
    :meth:`vault.service.vaults.Vault.transaction` (with a :class:`MetadataKey`)."""
    holder = _key_of(session)
    if holder is None:
        raise ValueError("settle: a session without a metadata key")
    holder.check(session)
    return holder.for_session(session)


def _checkpoint_wal(engine: Engine) -> None:
    """After a conversion: SQLite's write-ahead log still holds the pages as they were."""
    if engine.dialect.name != "sqlite":
        return
    raw = engine.raw_connection()
    try:
        raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        raw.close()


def bind(sessions: sessionmaker[Session], key: MetadataKey) -> None:
    """Make every session of ``sessions`` seal and open metadata with ``key``."""
    sessions.configure(info={INFO: key})


def convert(conn: Connection, key: bytes) -> int:
    """Seal every value that is not sealed yet for its cell; return how many were sealed.

    Run on a vault whose key store entry is not yet marked sealed: an older vault's
    plaintext, or rows a crashed conversion left (those open already and stay as they are).
    """
    if conn.dialect.name == "sqlite":
        # The old plaintext is overwritten, not left in the pages' free space.
        conn.exec_driver_sql("PRAGMA secure_delete = ON")
    count = 0
    for spec in SPECS.values():
        table = spec.model.__table__
        assert isinstance(table, Table)
        ids = [table.c[n] for n in spec.ids]
        columns = [table.c[n] for n in spec.columns]
        openers = {name: spec.opener(key, name) for name in spec.columns}
        for row in conn.execute(select(*ids, *columns)).all():
            row_id = tuple(row[: len(ids)])
            changes: dict[str, Any] = {}
            for name, stored in zip(spec.columns, row[len(ids):], strict=True):
                if stored is None or openers[name](row_id, stored) is not None:
                    continue
                changes[name] = spec.seal(key, name, row_id, stored)
            if changes:
                conn.execute(update(table).where(
                    *[c == v for c, v in zip(ids, row_id, strict=True)]).values(changes))
                count += len(changes)
    return count


def stored_form(bind: Session | Connection, column: Any) -> Any:
    """A sealed text column as a reader of columns selects it: on SQLite as its bytes, as
    SQLite keeps any bytes in a TEXT column and its driver fails the whole query on a value
    that is not UTF-8 (the openers take bytes as well as text, and name such a cell)."""
    dialect = (bind.get_bind() if isinstance(bind, Session) else bind).dialect
    return cast(column, LargeBinary) if dialect.name == "sqlite" else column


def undecryptable(session: Session) -> list[str]:
    """Every sealed cell that does not open under this vault's metadata key, as
    ``table row-id: column`` (``evault doctor``): a listing reads only what it shows, this
    reads them all. The key is fetched at the first cell that holds a value; a vault not
    sealed yet (see :class:`MetadataKey`) is converted first, as by any command."""
    holder = _key_of(session)
    if holder is None:
        return []
    holder.check(session)
    conn = session.connection()
    openers: dict[tuple[Spec, str], Callable[[Sequence[Any], Any], Any | None]] = {}
    bad: list[str] = []
    for spec in SPECS.values():
        table = spec.model.__table__
        assert isinstance(table, Table)
        ids = [table.c[n] for n in spec.ids]
        columns = [table.c[n] if n in spec.binary else stored_form(conn, table.c[n])
                   for n in spec.columns]
        for row in conn.execute(select(*ids, *columns)):
            row_id = tuple(row[: len(ids)])
            for name, stored in zip(spec.columns, row[len(ids):], strict=True):
                if stored is None:
                    continue
                opener = openers.get((spec, name))
                if opener is None:
                    opener = openers[spec, name] = spec.opener(holder.for_session(session), name)
                if opener(row_id, stored) is None:
                    bad.append(f"{spec.where(row_id)}: {name}")
    return bad


def open_object(obj: Base, key: bytes, names: Iterable[str] | None = None) -> None:
    """Replace the stored (sealed) values of a loaded object by their plaintext."""
    spec = SPECS[type(obj)]
    state = obj.__dict__
    row = [state.get(n) for n in spec.ids]
    for name in spec.columns if names is None else names:
        if name not in spec.columns or state.get(name) is None:
            continue
        value = spec.open(key, name, row, state[name])
        if value is None:
            raise _undecryptable(spec, row, name)
        # As the loader itself populates a fresh object: no history, nothing to flush.
        state[name] = value


def _undecryptable(spec: Spec, row: Sequence[Any], name: str) -> VerificationError:
    return cells.undecryptable(spec.table, row, name)


def column_opener(
    session: Session, model: type[Base], column: str
) -> Callable[[Sequence[Any], Any], Any]:
    """For rows read as columns rather than objects (which the load hook opens): a function
    ``(row ids, stored) -> value`` that opens the cells of one sealed column, refusing one
    that does not open as :func:`open_object` does. The key is fetched at the first cell
    that holds a value, so reading an empty table asks for no passphrase; a session without
    a metadata key gets the values as stored."""
    holder = _key_of(session)
    if holder is None:
        return lambda row, stored: stored
    spec = SPECS[model]
    opener: list[Callable[[Sequence[Any], Any], Any | None]] = []

    def open_cell(row: Sequence[Any], stored: Any) -> Any:
        if stored is None:
            return None
        if not opener:
            opener.append(spec.opener(holder.for_session(session), column))
        value = opener[0](row, stored)
        if value is None:
            raise _undecryptable(spec, row, column)
        return value

    return open_cell


# ----------------------------------------------------------------------------- ORM hooks


def _key_of(session: Session | None) -> MetadataKey | None:
    if session is None:
        return None
    key = session.info.get(INFO)
    return key if isinstance(key, MetadataKey) else None


def _on_load(obj: Base, context: Any) -> None:
    key = _key_of(context.session)
    if key is not None and any(obj.__dict__.get(n) is not None for n in SPECS[type(obj)].columns):
        open_object(obj, key.for_session(context.session))


def _on_refresh(obj: Base, context: Any, names: Iterable[str] | None) -> None:
    key = _key_of(context.session)
    if key is not None:
        open_object(obj, key.for_session(context.session), names)


for _model in SPECS:
    event.listen(_model, "load", _on_load)
    event.listen(_model, "refresh", _on_refresh)


def _parents(session: Session) -> dict[int, str]:
    """Tags added through ``Item.tags`` and package items through ``Package.items`` have no
    parent id before the flush: their parent's."""
    out: dict[int, str] = {}
    for parent in (*session.new, *session.dirty):
        children = (parent.__dict__.get("tags", ()) if isinstance(parent, Item)
                    else parent.__dict__.get("items", ()) if isinstance(parent, Package) else ())
        out.update((id(child), parent.id) for child in children)
    return out


@event.listens_for(Session, "before_flush")
def _seal_for_flush(session: Session, _flush: UOWTransaction, _instances: Any) -> None:
    holder = _key_of(session)
    if holder is None:
        return
    changed = [
        (obj, name, obj.__dict__[name])
        for obj in (*session.new, *session.dirty)
        if type(obj) in SPECS
        for name in SPECS[type(obj)].columns
        if obj.__dict__.get(name) is not None and inspect(obj).attrs[name].history.has_changes()
    ]
    if not changed:
        return
    holder.check(session)
    key = holder.for_session(session, create=True)
    parents: dict[int, str] | None = None
    restore: list[tuple[Base, str, Any]] = session.info.setdefault(_RESTORE, [])
    for obj, name, value in changed:
        spec = SPECS[type(obj)]
        row = [getattr(obj, n) for n in spec.ids]
        if row[0] is None and isinstance(obj, ItemTag | PackageItem):
            parents = _parents(session) if parents is None else parents
            row[0] = parents[id(obj)]
        setattr(obj, name, spec.seal(key, name, row, value))
        restore.append((obj, name, value))


@event.listens_for(Session, "after_flush_postexec")
def _plaintext_after_flush(session: Session, _flush: UOWTransaction) -> None:
    for obj, name, value in session.info.pop(_RESTORE, []):
        set_committed_value(obj, name, value)


@event.listens_for(Session, "do_orm_execute")
def _prepare_statement(state: ORMExecuteState) -> Any:
    holder = _key_of(state.session)
    if holder is None:
        return None
    if state.is_select:
        models = {m.class_ for m in state.all_mappers}
    elif state.is_insert or state.is_update:
        models = {state.bind_mapper.class_} if state.bind_mapper is not None else set()
    else:
        return None
    sealed = models & SPECS.keys()
    if not sealed:
        return None
    # Before the statement runs: an older vault is converted before any row is read.
    holder.check(state.session)
    if state.is_select:
        return None
    key = holder.for_session(state.session, create=True)
    spec = SPECS[next(iter(sealed))]
    params = state.parameters
    if isinstance(params, list) and params:
        return state.invoke_statement(params=[_sealed_params(spec, key, p) for p in params])
    if isinstance(params, Mapping) and set(params) & set(spec.columns):
        return state.invoke_statement(params=_sealed_params(spec, key, params))
    return None


def _sealed_params(spec: Spec, key: bytes, params: Mapping[str, Any]) -> dict[str, Any]:
    if any(name not in params for name in spec.ids):
        raise ValueError(f"{spec.table}: a bulk write of sealed columns needs the row's id")
    row = [params[n] for n in spec.ids]
    return {
        name: spec.seal(key, name, row, params[name])
        for name in spec.columns
        if params.get(name) is not None
    }
