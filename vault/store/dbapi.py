"""A vault's database through its driver alone, for the reads that must start fast.

    >>> reader = Reader.open(root, config.database)                    # doctest: +SKIP
    >>> with reader.transaction():                                     # doctest: +SKIP
    ...     batches = reader.item_rows(case="UA-2026-0042", label=None)

Importing SQLAlchemy costs most of a short command's start-up (~200-300 ms on a small
machine with the ORM, against ~60 ms for the interpreter and click), so ``evault items
list`` reads a vault's own ``vault.db`` with :mod:`sqlite3` and the SQL below, on a
connection set up as :func:`vault.store.db.make_engine` sets up its own
(:data:`SQLITE_PRAGMAS`). Any other database (PostgreSQL, a SQLite URL in ``config.toml``)
runs the same SQL on a driver connection of the SQLAlchemy engine, so both kinds read the
same rows the same way.

The schema is not described twice: the statements name tables and columns only through
:data:`READS`, which ``tests/test_dbapi.py`` checks against :mod:`vault.store.models`, and
:data:`SCHEMA_HEAD` is the one copy of the schema revision every command requires (a test
keeps it equal to Alembic's head). Writes, and settling the metadata key (an older vault's
rows converted, the key store's entry marked), go through the ORM (:mod:`vault.store.sealed`).

May import: the standard library and :mod:`vault.errors`; :mod:`vault.store.db` (SQLAlchemy)
only inside :meth:`Reader.open`, for a database that is not the vault's own ``vault.db``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from vault.errors import ConfigError, VaultError, VerificationError

#: The newest migration in ``vault/migrations/versions``. Every command checks the database
#: against it, so it is a constant rather than read from the scripts: importing Alembic and
#: scanning the migrations cost ~120 ms and ~14 MiB per command. A test keeps it equal to
#: Alembic's head.
SCHEMA_HEAD = "0013"
BUSY_TIMEOUT_MS = 60_000
#: Run on every new SQLite connection, here and by the SQLAlchemy engine alike.
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
    "PRAGMA synchronous=NORMAL",
)
#: The vault's own SQLite database in its folder (:data:`vault.store.vaultdir.SQLITE_NAME`).
SQLITE_NAME = "vault.db"

#: Every table and column the statements here name, by the models' names.
READS: dict[str, tuple[str, ...]] = {
    "alembic_version": ("version_num",),
    "sealed_metadata": ("id",),
    "cases": ("id",),
    "items": ("id", "case_id", "original_name", "size", "sha256", "ingested_at", "intake_seq"),
    "item_labels": ("item_id", "label"),
}
#: The sealed cell :meth:`Reader.item_rows` selects: its table and column, as its
#: associated data binds them (:mod:`vault.store.cells`).
ITEM_NAME = ("items", "original_name")
#: Rows fetched from the driver at a time.
BATCH = 4096


def _read(table: str, *columns: str) -> tuple[str, ...]:
    """``table`` and ``columns`` for a statement: names that :data:`READS` declares."""
    if table not in READS or not set(columns) <= set(READS[table]):
        raise AssertionError(f"{table}{columns}: not declared in READS")
    return (table, *columns)


def schema_refusal(current: str | None) -> ConfigError | None:
    """What to say of a database at revision ``current`` (None: no schema), or None if it is
    at :data:`SCHEMA_HEAD`."""
    if current == SCHEMA_HEAD:
        return None
    if current is None:
        return ConfigError("vault database has no schema: run `evault db upgrade`")
    if current.isdigit() and SCHEMA_HEAD.isdigit() and int(current) > int(SCHEMA_HEAD):
        # A newer evault's (or SQL's): `db upgrade` cannot bring it back, and refuses it.
        return ConfigError(
            f"vault database is at revision {current}, newer than this evault's "
            f"{SCHEMA_HEAD}: use the evault that upgraded it, or {RESTORE}")
    return ConfigError(
        f"vault database is at revision {current}, this evault needs {SCHEMA_HEAD}: "
        "run `evault db upgrade`"
    )


def unrecorded_refusal() -> VerificationError:
    """What to say of a database that holds the schema's tables while ``alembic_version``
    records no revision: dropped or emptied by SQL outside evault (the migrations run in one
    transaction), and migrating it would create those tables again."""
    return VerificationError(
        "vault database: its tables are there but alembic_version records no schema "
        f"revision (its tables changed outside evault?); {RUN_DOCTOR}{RESTORE}")


def single_revision(rows: Sequence[Sequence[Any]]) -> str | None:
    """The revision in the rows of ``alembic_version`` (no row: None); several are refused."""
    if not rows:
        return None
    if len(rows) > 1:
        found = ", ".join(sorted(str(r[0]) for r in rows))
        raise ConfigError(
            f"vault database records several schema revisions ({found}); "
            "run `evault db upgrade` or restore the database from a backup"
        )
    return str(rows[0][0])


#: What a refusal of a cell SQL made unreadable tells the user to do.
RUN_DOCTOR = "run `evault doctor`, and "
RESTORE = "restore the database from a backup"


def failure(orig: object) -> VaultError | None:
    """What to say of a driver's operational error in a transaction when people can act on
    it (the database busy, the disk full, text SQL made unreadable); None: let it
    through."""
    text = str(orig)
    # The driver's OperationalError (psycopg's LockNotAvailable is one): a trigger's message
    # in an IntegrityError may say "locked" too.
    operational = _operational(orig)
    if operational and ("locked" in text or "could not obtain lock" in text):
        return ConfigError("vault database is busy with another evault command; try again")
    if read_only(orig):
        return ConfigError(READ_ONLY)
    if operational and ("disk is full" in text or "disk I/O error" in text):
        return VaultError(
            f"vault database: cannot write ({orig}); this step was rolled back, "
            "free some space and try again"
        )
    if text.startswith("Could not decode to UTF-8"):
        # sqlite3 on TEXT that is not UTF-8: only SQL outside evault writes that.
        return VerificationError(
            "database: a text column holds bytes that are not UTF-8 (written by SQL outside "
            f"evault); {RUN_DOCTOR}{RESTORE}")
    if schema_changed(orig):
        return VerificationError(
            f"vault database: {first_line(orig)} (its tables changed outside evault?); "
            f"{RUN_DOCTOR}{RESTORE}")
    kind = type(orig).__name__
    if text.startswith("database disk image is malformed") or text.startswith(
            "file is not a database"):
        return VerificationError(
            f"vault database: its file is damaged ({first_line(orig)}); {RESTORE}")
    if kind == "InsufficientPrivilege" and "row-level security" in text:
        return VerificationError(  # 42501 too, but a policy only SQL outside evault adds
            f"vault database: {first_line(orig)} (a policy added outside evault); remove "
            "it, then run `evault doctor`")
    if kind == "ReadOnlySqlTransaction":  # 25006: a session setting, or a standby
        return ConfigError(
            f"vault database: {first_line(orig)}; evault writes to its database: connect to "
            "the primary server, without default_transaction_read_only")
    if kind == "QueryCanceled":  # 57014: statement_timeout, or an administrator
        return ConfigError(
            f"vault database: {first_line(orig)}; raise or remove the statement_timeout set "
            "in the vault's database URL or on the server, or ask its administrator")
    if kind == "InsufficientPrivilege":  # PostgreSQL's 42501
        return ConfigError(
            f"vault database: {first_line(orig)}; the role in the vault's database URL needs "
            "every privilege on the vault's tables (those of the role that ran `evault init`)")
    return None


#: What to say when SQLite may not write the vault's database (:func:`read_only`).
READ_ONLY = ("vault database: its file is read-only (attempt to write a readonly database); "
             "check the permissions of the database file, its -wal and -shm files and its "
             "folder")


def read_only(orig: object) -> bool:
    """Whether a driver's error is SQLite's SQLITE_READONLY (in any of its extended forms,
    one message): the database file, its ``-wal`` or ``-shm`` file, or its folder (where
    they are made) may not be written by this user, or is on a read-only file system.
    PostgreSQL's counterpart is a role without privileges (42501: InsufficientPrivilege)."""
    return _operational(orig) and str(orig).startswith("attempt to write a readonly database")


def _operational(orig: object) -> bool:
    """Whether a driver's error is its OperationalError (by class name, in any driver,
    without importing one)."""
    return any(c.__name__ == "OperationalError" for c in type(orig).__mro__)


def refuse(orig: object) -> None:
    """Raise what :func:`failure` says of the driver's error ``orig``, if it says anything;
    the caller re-raises the error itself otherwise (``except ...: refuse(e.orig); raise``)."""
    said = failure(orig)
    if said is not None:
        raise said from None


#: The drivers' errors for a table or column the statement names that the database lacks, or
#: whose type is not the one the schema gives it: psycopg's classes (PostgreSQL's SQLSTATE
#: 42P01, 42703, 42883 and 42804) by name, so that this module need not import the driver,
#: and sqlite3's messages (which has no column types to change).
_MISSING_CLASSES = ("UndefinedTable", "UndefinedColumn", "UndefinedFunction", "DatatypeMismatch")
_MISSING_TEXTS = re.compile(r"no such (table|column): |table \S+ has no column named ")


def schema_changed(orig: object) -> bool:
    """Whether a driver's error says a table or column of the schema is not there, or not of
    its type: only SQL outside evault drops, renames or retypes one, since every command
    checks the schema revision (and evault's own statements are tested on both databases)."""
    return (type(orig).__name__ in _MISSING_CLASSES
            or _MISSING_TEXTS.match(str(orig)) is not None)


def first_line(orig: object) -> str:
    """A driver's message without PostgreSQL's ``LINE 2: ...`` context and caret."""
    return (str(orig).splitlines() or [""])[0]


def row_name(table: str, ids: Sequence[object]) -> str:
    """A row as refusals name it: ``item EV-...`` for an item (as ``items list`` always
    has), else the table and the primary key, as a sealed cell is named (``cases UA-1``)."""
    key = "/".join(str(i)[:64] for i in ids)
    return f"item {key}" if table == "items" else f"{table} {key}"


class NotATime(VerificationError):
    """A time column of a row holding what is not a time: SQL outside evault wrote it (on
    SQLite any text; on PostgreSQL a time no Python datetime holds, such as ``infinity``; on
    either NULL in a column the models declare NOT NULL).

    ``row`` names the row (:func:`row_name`); None when the reader of the value could not
    know it (a column's type sees only the value): the message then names the table, and
    :func:`vault.store.db.name_row` finds the row from ``stored``, the value as the driver
    gave it. ``rows``: how many rows hold that value, when more than one does (which of
    them was being read is not known). ``step`` is what to do next: doctor, which names
    every such cell, says only :data:`RESTORE`."""

    def __init__(self, table: str, column: str, *, row: str | None = None,
                 rows: int = 1, stored: object = None, step: str = RUN_DOCTOR) -> None:
        self.table, self.column, self.row, self.stored = table, column, row, stored
        self.rows, self.step = rows, step
        if row is not None:
            what = f"{row}: its {column} is not a time"
        elif rows > 1:
            what = f"{table}: {rows} rows' {column} are not times"
        else:
            what = f"{table}: a row's {column} is not a time"
        super().__init__(f"{what} (written by SQL outside evault); {step}{RESTORE}")

    def __reduce__(self) -> tuple[Any, ...]:
        # custody verify's worker processes raise it across a ProcessPoolExecutor, which
        # pickles it: the default (the class called with ``args``, the message) fails on
        # keyword-only arguments and breaks the whole pool.
        return (_not_a_time, (self.table, self.column, self.row, self.rows, self.stored,
                              self.step))


def _not_a_time(table: str, column: str, row: str | None, rows: int, stored: object,
                step: str) -> NotATime:
    """:class:`NotATime` as unpickled."""
    return NotATime(table, column, row=row, rows=rows, stored=stored, step=step)


def cannot_connect(orig: object) -> ConfigError:
    """The refusal of a database that cannot be reached (or opened) at all: on SQLite, a
    folder that is read-only stops the first statement (WAL needs its ``-shm`` file)."""
    if read_only(orig):
        return ConfigError(READ_ONLY)
    return ConfigError(f"vault database: cannot connect ({orig})")


class Reader:
    """Read transactions on a vault's database, through its driver's connection.

    Rows come as the driver gives them: on SQLite a sealed text column is selected as its
    bytes (as :func:`vault.store.sealed.stored_form` does) and a time as its stored text."""

    def __init__(self, conn: Any, dialect: str, errors: type[BaseException],
                 close: Callable[[], None]) -> None:
        self._conn = conn
        self.dialect = dialect
        self._errors = errors  # the driver's DatabaseError: failure() picks what it names
        self._close = close
        self._mark = "?" if dialect == "sqlite" else "%s"

    @classmethod
    def open(cls, root: Path, database: str | None) -> Reader:
        """Connect to the vault at ``root`` (``database``: the URL its ``config.toml``
        names, or None for its own ``vault.db``) and refuse a schema that is not at
        :data:`SCHEMA_HEAD`, as :func:`vault.service.vaults.open_vault` does."""
        if database is not None:
            return cls._through_engine(database)
        import sqlite3

        try:
            conn = sqlite3.connect(root / SQLITE_NAME, timeout=BUSY_TIMEOUT_MS / 1000,
                                   isolation_level=None)
        except sqlite3.OperationalError as e:
            raise cannot_connect(e) from None
        try:
            for pragma in SQLITE_PRAGMAS:
                conn.execute(pragma).close()
            revision = _sqlite_revision(conn)
            refusal = (unrecorded_refusal() if revision is None and _sqlite_has_tables(conn)
                       else schema_refusal(revision))
        except sqlite3.OperationalError as e:
            conn.close()
            raise cannot_connect(e) from None
        except BaseException:
            conn.close()
            raise
        if refusal is not None:
            conn.close()
            raise refusal
        return cls(conn, "sqlite", sqlite3.DatabaseError, conn.close)

    @classmethod
    def _through_engine(cls, url: str) -> Reader:
        from vault.store import db

        engine = db.open_engine(url)
        try:
            raw = engine.raw_connection()
        except BaseException:
            engine.dispose()
            raise

        def close() -> None:
            try:
                raw.close()
            finally:
                engine.dispose()

        dbapi = engine.dialect.loaded_dbapi
        return cls(raw.driver_connection, engine.dialect.name, dbapi.DatabaseError, close)

    def close(self) -> None:
        """Release the connection."""
        self._close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One read transaction, rolled back at the end: on SQLite one snapshot of the
        database, without the write lock the ORM's transactions take. A busy database or a
        full disk is named as :meth:`vault.service.vaults.Vault.transaction` names them."""
        try:
            if self.dialect == "sqlite":
                self._conn.execute("BEGIN").close()
            try:
                yield
            finally:
                self._conn.rollback()
        except self._errors as e:
            refuse(e)
            raise

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> Iterator[list[Any]]:
        """The rows of ``sql`` in batches of :data:`BATCH`."""
        cursor = self._conn.cursor()
        try:
            cursor.execute(sql.replace("?", self._mark), tuple(params))
            while batch := cursor.fetchmany(BATCH):
                yield batch
        finally:
            cursor.close()

    def sealed(self) -> bool:
        """Whether the database is marked as holding only sealed metadata (see
        :class:`vault.store.sealed.MetadataKey`); if not, the ORM converts it first."""
        table, column = _read("sealed_metadata", "id")
        return any(self._rows(f"SELECT {column} FROM {table}"))

    def has_case(self, case: str) -> bool:
        """Whether case ``case`` exists."""
        table, column = _read("cases", "id")
        return any(self._rows(f"SELECT {column} FROM {table} WHERE {column} = ?", (case,)))

    def _chosen(self, case: str | None, label: str | None) -> tuple[str, list[str]]:
        """The WHERE clause (on ``items``) and its values for one case and/or one label."""
        items, case_id, item_id = _read("items", "case_id", "id")
        labels, label_item, label_name = _read("item_labels", "item_id", "label")
        where, params = [], []
        if case is not None:
            where.append(f"{items}.{case_id} = ?")
            params.append(case)
        if label:
            where.append(f"{items}.{item_id} IN (SELECT {labels}.{label_item} FROM {labels} "
                         f"WHERE {labels}.{label_name} = ?)")
            params.append(label)
        return (f" WHERE {' AND '.join(where)}" if where else ""), params

    def item_labels(self, case: str | None, label: str | None) -> Iterator[list[Any]]:
        """``(item id, label)`` of the chosen items, in batches, by item id then label."""
        items, item_id = _read("items", "id")
        labels, label_item, label_name = _read("item_labels", "item_id", "label")
        where, params = self._chosen(case, label)
        return self._rows(
            f"SELECT {labels}.{label_item}, {labels}.{label_name} FROM {labels} "
            f"WHERE {labels}.{label_item} IN (SELECT {items}.{item_id} FROM {items}{where}) "
            f"ORDER BY {labels}.{label_item}, {labels}.{label_name}", params)

    def item_rows(self, case: str | None, label: str | None) -> Iterator[list[Any]]:
        """``(id, case id, stored file name, size, sha256, ingested at)`` of the chosen
        items, in batches, in ingest order."""
        items, *columns, seq = _read(ITEM_NAME[0], "id", "case_id", ITEM_NAME[1], "size",
                                     "sha256", "ingested_at", "intake_seq")
        selected = [f"{items}.{c}" for c in columns]
        if self.dialect == "sqlite":  # bytes, whatever a damaged cell holds
            selected[2] = f"CAST({selected[2]} AS BLOB)"
        where, params = self._chosen(case, label)
        return self._rows(f"SELECT {', '.join(selected)} FROM {items}{where} "
                          f"ORDER BY {items}.{seq}", params)


def _sqlite_revision(conn: Any) -> str | None:
    """The revision in ``alembic_version``, asked as SQLAlchemy's ``has_table`` asks SQLite
    whether the table exists, then as :func:`vault.store.db.current_revision` reads it."""
    table, column = _read("alembic_version", "version_num")
    if not any(conn.execute(f'PRAGMA {schema}.table_info("{table}")').fetchall()
               for schema in ("main", "temp")):
        return None
    return single_revision(conn.execute(f"SELECT {column} FROM {table}").fetchall())


def _sqlite_has_tables(conn: Any) -> bool:
    """Whether the database holds any table :data:`READS` names but ``alembic_version``."""
    tables = [t for t in READS if t != "alembic_version"]
    marks = ", ".join("?" * len(tables))
    return conn.execute(f"SELECT 1 FROM sqlite_master WHERE type = 'table' AND name IN "
                        f"({marks})", tables).fetchone() is not None
