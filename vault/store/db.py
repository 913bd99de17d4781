"""Engines, sessions and schema revisions for a vault's database.

    >>> engine = make_engine("sqlite:///:memory:")
    >>> engine.dialect.name
    'sqlite'

SQLite gets WAL, foreign keys and a busy timeout so that concurrent commands wait instead of
failing; ``BEGIN IMMEDIATE`` on write transactions so that appends to the custody log are
serialised across processes. The schema is created only by the Alembic migrations in
``vault/migrations/`` (package data, so an installed wheel carries them);
:func:`check_schema` turns a vault that is behind the code into one clear message.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Collection, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Dialect,
    Engine,
    Select,
    create_engine,
    event,
    func,
    inspect,
    select,
    type_coerce,
)
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import NullType

from vault.errors import ConfigError, VaultError, VerificationError
from vault.store.dbapi import (
    BUSY_TIMEOUT_MS,
    RESTORE,
    SCHEMA_HEAD,
    SQLITE_PRAGMAS,
    NotATime,
    cannot_connect,
    refuse,
    row_name,
    schema_refusal,
    single_revision,
    unrecorded_refusal,
)

__all__ = ["BUSY_TIMEOUT_MS", "SCHEMA_HEAD"]  # defined in vault.store.dbapi, used from here
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the vault's connection settings."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "isolation_level": None},
        )
        _configure_sqlite(engine)
        return engine
    if url.startswith("postgresql"):
        try:
            engine = create_engine(url, pool_pre_ping=True)
        except ModuleNotFoundError:
            raise ConfigError(
                "database: PostgreSQL needs psycopg; install evault with the extra "
                "`pip install 'evault[postgres]'`"
            ) from None
        _configure_postgresql(engine)
        return engine
    raise ConfigError(
        f"database: unsupported URL {url.split(':', 1)[0]!r}; use sqlite or postgresql"
    )


def worker_engine(url: str) -> Engine:
    """An engine for a worker process's plain reads of ``url`` (custody verify's): no pool,
    no ``BEGIN IMMEDIATE`` on SQLite; on PostgreSQL the times read as :func:`make_engine`'s
    engines read them."""
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    if engine.dialect.name == "postgresql":
        _configure_postgresql(engine)
    return engine


def _configure_postgresql(engine: Engine) -> None:
    event.listen(engine, "connect", _session_settings)
    event.listen(engine, "connect", _times_python_cannot_hold_as_text)


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling is switched off (isolation_level=None) so that we can
    # issue BEGIN IMMEDIATE ourselves: a writer takes the lock when it starts, not at its first
    # write, so two processes never deadlock upgrading a shared lock.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:  # as vault.store.dbapi's own connections
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A read_only() scan takes no write lock: a deferred BEGIN, one snapshot.
        read = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")


def _session_settings(dbapi_connection: Any, _record: Any) -> None:
    """Times in the form psycopg parses, whatever the database or role sets: a
    ``DateStyle`` other than ISO (``ALTER DATABASE ... SET DateStyle = 'SQL, DMY'``, which
    needs no key) made psycopg refuse every time, in every command, doctor's too. Set for
    the session and committed (a SET rolled back with its transaction is undone)."""
    dbapi_connection.execute("SET DateStyle TO 'ISO'")
    dbapi_connection.execute("SET TimeZone TO 'UTC'")
    dbapi_connection.commit()


def _times_python_cannot_hold_as_text(dbapi_connection: Any, _record: Any) -> None:
    """psycopg gives a ``timestamptz`` no datetime holds (``infinity``, a year before 1 or
    after 9999: only SQL outside evault writes one) as its text, not a ``DataError`` that
    fails the whole query unnamed: :class:`vault.store.models.UTCDateTime` (and ``items
    list``'s reading) then refuses it as not a time, naming its row."""
    from psycopg.adapt import Loader
    from psycopg.pq import Format

    adapters = dbapi_connection.adapters
    info = adapters.types["timestamptz"]
    parse = adapters.get_loader(info.oid, Format.TEXT)  # psycopg's own (its C one, if built)

    class TimeOrText(Loader):
        def __init__(self, oid: int, context: Any = None) -> None:
            super().__init__(oid, context)
            self._parse = parse(oid, context)

        def load(self, data: Any) -> Any:
            try:
                return self._parse.load(data)
            except Exception:  # DataError; anything else psycopg cannot parse, too
                return bytes(data).decode("utf-8", "replace")

    adapters.register_loader(info.oid, TimeOrText)


def name_row(engine: Engine, refusal: NotATime) -> NotATime:
    """``refusal`` of a time that is not one, naming its row: the row of its table whose
    column holds the value refused (as the driver gave it; NULL in a NOT NULL column). If
    several rows hold it, which of them was being loaded is not known: the refusal names
    none and says how many (doctor names each). The refusal as it is when the row cannot be
    found (a value the driver cannot compare, say)."""
    from vault.store.models import Base  # the tables: only once a time is refused

    table = Base.metadata.tables.get(refusal.table)
    if refusal.row is not None or table is None or refusal.column not in table.c:
        return refusal
    raw = type_coerce(table.c[refusal.column], NullType())
    held = (raw.is_(None) if refusal.stored is None
            else raw == type_coerce(refusal.stored, NullType()))
    key = list(table.primary_key.columns)
    try:
        with engine.connect() as conn:
            ids = conn.execute(select(*key).where(held).order_by(*key).limit(2)).all()
            rows = len(ids) if len(ids) < 2 else conn.execute(
                select(func.count()).select_from(table).where(held)).scalar_one()
    except (SQLAlchemyError, VaultError):
        return refusal
    if not ids:
        return refusal
    if rows > 1:
        return NotATime(refusal.table, refusal.column, rows=rows, stored=refusal.stored)
    return NotATime(refusal.table, refusal.column, row=row_name(refusal.table, tuple(ids[0])),
                    stored=refusal.stored)


#: The execution option of :func:`read_only`'s connections.
READ_ONLY = "evault_read_only"


@contextlib.contextmanager
def read_only(engine: Engine) -> Iterator[Connection]:
    """A connection in one read-only transaction, rolled back at the end, for a scan of
    every row of a table: on SQLite a deferred ``BEGIN`` (one snapshot, without the write
    lock every other transaction takes: a doctor scanning millions of rows would stop
    every writer meanwhile); on PostgreSQL ``READ ONLY``. Give a scan's SELECT the option
    ``yield_per`` to stream its rows (a server-side cursor on PostgreSQL, not every row
    fetched first). The transaction is begun here, so that :func:`raw_rows` (a driver
    cursor, which begins nothing) reads in it too: every page of a scan from one snapshot."""
    with engine.connect() as conn:
        conn.execution_options(**{READ_ONLY: True})
        transaction = conn.begin()
        try:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            yield conn
        finally:
            transaction.rollback()


def raw_rows(
    conn: Connection, stmt: Select[Any], *, unconverted: Collection[int] = ()
) -> Generator[Sequence[Any], None, None]:
    """The rows of ``stmt`` as the DBAPI cursor gives them, for scans of millions of rows.

    Through SQLAlchemy each row costs a Row object and type processing; here the SELECT is
    still built and quoted by SQLAlchemy for the connection's dialect (bound values are
    inlined, so only for integers and the like), and only the columns whose type needs
    converting are converted, except those in ``unconverted`` (by position), which the caller
    converts itself (e.g. once per distinct value).
    """
    dialect = conn.dialect
    processors = [_result_processor(c, dialect) for c in stmt.selected_columns]
    convert = [(i, p) for i, p in enumerate(processors) if p is not None and i not in unconverted]
    sql = str(stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql)
        while batch := cursor.fetchmany(2048):
            if not convert:
                yield from batch
                continue
            for row in batch:
                values = list(row)
                for i, process in convert:
                    values[i] = process(values[i])
                yield values
    finally:
        cursor.close()


def column_reader(column: ColumnElement[Any], dialect: Dialect) -> Callable[[Any], Any]:
    """What :func:`raw_rows` leaves undone for a column in ``unconverted``: the raw value
    as the driver gives it -> the value SQLAlchemy would give."""
    process = _result_processor(column, dialect)
    return process if process is not None else (lambda raw: raw)


def _result_processor(column: ColumnElement[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    processor: Callable[[Any], Any] | None = column.type.dialect_impl(dialect).result_processor(
        dialect, None
    )
    return processor


@contextlib.contextmanager
def advisory_lock(engine: Engine, name: str, *,
                  shared: bool = False) -> Iterator[Callable[[], None] | None]:
    """A lock across machines: on PostgreSQL a session-level advisory lock named ``name``,
    taken (waiting for it) on a connection of its own and held until the block ends; yields
    a check that raises :class:`ConfigError` if the lock has been lost meanwhile (its
    connection dropped, the server ended its session: the lock went with it). On SQLite it
    takes nothing and yields None: the caller locks a file instead (a SQLite vault lives on
    one machine).

    Advisory locks are per database, not per schema: the key is made of ``name`` and the
    schema the vault's tables are in (``current_schema()``), which every machine of the
    vault shares, so ``name`` says only what is locked. (Not a per-machine setting such as
    config.toml's ``vault_id``: a machine that joined with ``init --db`` has an id of its
    own, and a lock by it would not keep that machine's intakes from another's repair.)
    """
    if engine.dialect.name != "postgresql":
        yield None
        return
    kind = "pg_advisory_lock_shared" if shared else "pg_advisory_lock"
    with engine.connect() as conn:
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar()
        scoped = f"{schema}\0{name}".encode()
        key = int.from_bytes(hashlib.sha256(scoped).digest()[:8], "big", signed=True)
        conn.exec_driver_sql(f"SELECT {kind}({key})")
        conn.commit()  # end the implicit transaction; the lock belongs to the session

        def check() -> None:
            # The key's two halves, as pg_locks shows an advisory lock of one bigint.
            high, low = (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF
            try:
                held = conn.exec_driver_sql(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND "
                    f"pid = pg_backend_pid() AND classid = {high} AND objid = {low} "
                    "AND objsubid = 1 AND granted").scalar()
                conn.commit()
            except Exception:
                held = 0
            if not held:
                raise ConfigError(
                    f"vault database: the lock {name!r} was lost (the connection that held "
                    "it dropped); nothing of this step was recorded: run it again")

        try:
            yield check
        finally:
            # Closing returns the connection to the pool, which does not end the session:
            # unlock explicitly (a dead process's session ends, and its locks with it).
            try:
                conn.exec_driver_sql(f"SELECT {kind.replace('lock', 'unlock')}({key})")
                conn.commit()
            except Exception:
                conn.invalidate()  # closed for good: its session, and the lock, end


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit (the CLI renders them)."""
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Any:
    """An Alembic ``Config`` for ``url`` whose scripts are the package's ``vault/migrations/``."""
    from alembic.config import Config

    if not (MIGRATIONS / "env.py").is_file():
        raise ConfigError(f"migrations not found at {MIGRATIONS}: reinstall evault")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = url
    return config


def head_revision() -> str:
    """The newest migration this code knows (see :data:`SCHEMA_HEAD`)."""
    return SCHEMA_HEAD


def migrations_head() -> str:
    """The head of the migration scripts as Alembic reads them (used by the tests)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def current_revision(bind: Engine | Connection) -> str | None:
    """The revision the database is at, or None for an empty database (``bind``: an engine,
    or a connection whose transaction it reads in).

    Read straight from Alembic's ``alembic_version`` table, as Alembic's own
    ``MigrationContext.get_current_revision`` does, without importing Alembic.
    """
    try:
        with contextlib.ExitStack() as stack:
            conn = bind if isinstance(bind, Connection) else stack.enter_context(bind.connect())
            if not inspect(conn).has_table("alembic_version"):
                return None
            rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").fetchall()
    except OperationalError as e:  # a file SQLite cannot open (a read-only mount), no server
        refuse(e.orig)
        raise cannot_connect(e.orig) from None
    return single_revision(rows)


def unrecorded_schema(bind: Engine | Connection, revision: str | None
                      ) -> VerificationError | None:
    """The refusal of a database at ``revision`` (:func:`current_revision`'s) that holds
    tables of the schema while ``alembic_version`` records no revision (dropped or emptied:
    only SQL outside evault does that, since the migrations run in one transaction), or
    None. Migrating it would create those tables again; another application's tables in the
    same database are no concern of evault's."""
    from vault.store.models import Base

    if revision is not None:
        return None
    if not set(Base.metadata.tables) & set(inspect(bind).get_table_names()):
        return None
    return unrecorded_refusal()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run the migrations up to ``revision`` on ``engine``'s database; refuse, before any
    migration runs, one whose recorded revision SQL outside evault removed
    (:func:`unrecorded_schema`) or one at a revision these migrations do not know."""
    from alembic import command
    from alembic.script import ScriptDirectory

    config = alembic_config(str(engine.url.render_as_string(hide_password=False)))
    current: str | None = None
    with engine.begin() as conn:
        try:
            current = current_revision(conn)
            refusal = unrecorded_schema(conn, current)
            if refusal is not None:
                raise refusal
            if current is not None and current not in {
                    s.revision for s in ScriptDirectory.from_config(config).walk_revisions()}:
                raise ConfigError(
                    f"vault database is at revision {current}, which this evault does not "
                    f"know (its newest is {SCHEMA_HEAD}): use the evault that upgraded it, "
                    f"or {RESTORE}")
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
        except DBAPIError as e:  # a table the migrations alter dropped with SQL, the disk full
            refuse(e.orig)
            # Anything else: the tables are not what the recorded revision says (one it
            # creates exists already: the revision was set back with SQL). The migration's
            # transaction is rolled back; nothing changed.
            raise VerificationError(
                f"vault database: migrating from revision {current or 'empty'} failed "
                f"({e.orig}): its tables do not match the revision it records (changed "
                f"outside evault?); nothing was changed; {RESTORE}") from None


def downgrade(engine: Engine, revision: str) -> None:
    """Run the migrations down to ``revision`` (``base`` empties the database)."""
    from alembic import command

    config = alembic_config(str(engine.url.render_as_string(hide_password=False)))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def check_schema(engine: Engine) -> None:
    """Refuse a database that is not at the code's head revision, saying what to run."""
    revision = current_revision(engine)
    refusal = unrecorded_schema(engine, revision) or schema_refusal(revision)
    if refusal is not None:
        raise refusal


def open_engine(url: str, *, check: bool = True) -> Engine:
    """:func:`make_engine`, connected once to :func:`check_schema` (unless not ``check``);
    a database that cannot be reached is one :class:`ConfigError`."""
    engine = make_engine(url)
    try:
        if check:
            check_schema(engine)
    except OperationalError as e:
        engine.dispose()
        raise cannot_connect(e.orig) from None
    except BaseException:
        engine.dispose()
        raise
    return engine
