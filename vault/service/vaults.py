"""Opening and creating vaults: configuration, database, blob folder and key store together.

    >>> v = init_vault(Path("/tmp/demo-vault"))       # doctest: +SKIP
    >>> with v.vault.transaction() as session: ...    # doctest: +SKIP

:class:`Vault` is what every use case receives. It owns the engine and hands out one
transaction per step (``with vault.transaction() as session``); query functions below it never
commit.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.exc import DatabaseError, DataError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from vault.durable import file_lock
from vault.errors import ConfigError, UsageError, VerificationError
from vault.keystore import KeyStore, PassphrasePrompt, open_keystore
from vault.store import db, dbapi, sealed
from vault.store.blobs import INTAKE_LOCK, Blobs, BlobStore
from vault.store.models import VaultSetting
from vault.store.vaultdir import (
    BLOBS_NAME,
    SQLITE_NAME,
    ObjectLock,
    VaultConfig,
    check_new_vault_dir,
    load_config,
    resolve,
    write_config,
)

#: The ``vault_settings`` rows every machine's ``config.toml`` must agree with.
BLOBS_SETTING = "blobs"
OBJECT_LOCK_SETTING = "object_lock"


@dataclass
class Vault:
    """An open vault."""

    root: Path
    config: VaultConfig
    engine: Engine
    prompt: PassphrasePrompt | None = None
    # The command's --no-timestamp: sign checkpoints without asking the TSAs (they are kept
    # pending; see vault.service.timestamping).
    skip_timestamps: bool = False
    _sessions: sessionmaker[Session] | None = None
    _keystore: KeyStore | None = field(default=None, repr=False)
    _blob_store: Blobs | None = field(default=None, repr=False)

    @property
    def blobs(self) -> Path:
        """The folder of encrypted blobs (of a vault whose blobs are not on S3)."""
        return self.root / BLOBS_NAME

    def blob_store(self) -> Blobs:
        """The vault's blob store, made at first use: the ``blobs/`` folder, or the S3
        bucket ``config.toml`` names, once the database agrees (see :func:`check_blob_settings`)."""
        if self._blob_store is None:
            check_blob_settings(self.root, self.config, read_blob_settings(self.engine))
            if self.config.blobs is None:
                self._blob_store = BlobStore(self.blobs)
            else:
                from vault.clock import utcnow
                from vault.store.s3blobs import S3BlobStore, S3Location

                self._blob_store = S3BlobStore(
                    S3Location.parse(self.config.blobs), object_lock=self.config.object_lock,
                    intake_lock=self._shared_intake_lock, clock=utcnow)
        return self._blob_store

    @contextlib.contextmanager
    def _shared_intake_lock(self, exclusive: bool) -> Iterator[Callable[[], None] | None]:
        """The intake lock of blobs on S3: a PostgreSQL advisory lock, which every machine
        of a team vault sees (yields the check that it is still held), or (SQLite: one
        machine) a file lock in the vault folder."""
        with db.advisory_lock(self.engine, "evault:intake", shared=not exclusive) as check:
            if check is not None:
                yield check
                return
            with file_lock(self.root / INTAKE_LOCK, exclusive=exclusive):
                yield None

    @property
    def keystore(self) -> KeyStore:
        """The key store, opened on first use (it may ask for a passphrase)."""
        if self._keystore is None:
            self._keystore = open_keystore(
                self.root, self.config.vault_id, self.config.key_storage, prompt=self.prompt
            )
        return self._keystore

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """One database transaction: committed on success, rolled back on any error."""
        if self._sessions is None:
            self._sessions = db.session_factory(self.engine)
            # Metadata columns are sealed under a key from the key store (vault.store.sealed).
            sealed.bind(self._sessions, sealed.MetadataKey(
                lambda: self.keystore, self.config.vault_id))
        try:
            with self._sessions.begin() as session:
                yield session
        except dbapi.NotATime as e:
            # A time SQL made not a time, refused by its column's type, which does not
            # know the row: name it here.
            raise db.name_row(self.engine, e) from None
        except DataError as e:
            # PostgreSQL enforces column lengths (SQLite does not): a name, organisation or
            # title longer than its column is the user's input, not a bug.
            table = re.search(r"(?:INSERT INTO|UPDATE) (\w+)", str(e.statement or ""))
            where = f" of {table.group(1)}" if table else ""
            reason = str(e.orig).splitlines()[0] if e.orig else "value out of range"
            raise UsageError(
                f"vault database: a value{where} does not fit its field ({reason}); shorten it"
            ) from None
        except DatabaseError as e:
            # What people can act on (dbapi.failure): the database busy or its disk full, its
            # tables or its file changed outside evault, a role or a session setting that
            # refuses evault's statements. Any other (an IntegrityError, say) is a bug,
            # raised as it is.
            dbapi.refuse(e.orig)
            raise

    def close(self) -> None:
        """Release database connections."""
        self.engine.dispose()


def open_vault(
    vault: Path | str | None = None,
    *,
    prompt: PassphrasePrompt | None = None,
    check_schema: bool = True,
    keystore: KeyStore | None = None,
) -> Vault:
    """Open an existing vault; refuse one whose database is behind the code. ``keystore``:
    its key store, if the caller has opened it already (a passphrase is asked only once)."""
    root = resolve(vault)
    config = load_config(root)
    engine = db.open_engine(config.database_url(root), check=check_schema)
    return Vault(root=root, config=config, engine=engine, prompt=prompt, _keystore=keystore)


def object_lock(mode: str | None, days: int | None) -> ObjectLock | None:
    """``init``'s ``--object-lock MODE --retain-days N``: both or neither."""
    if mode is None and days is None:
        return None
    if mode is None or days is None:
        raise UsageError("init: --object-lock and --retain-days go together; give both, or "
                         "neither for no retention")
    return ObjectLock(mode, days)


def read_blob_settings(engine: Engine) -> tuple[str | None, ObjectLock | None]:
    """Where the database says blobs live (None: each machine's ``blobs/`` folder) and the
    Object Lock it says they get.

    Read outside any transaction (no ``BEGIN IMMEDIATE`` on SQLite), so a command may ask
    for its blob store while it holds a write transaction of its own."""
    table = VaultSetting.__table__
    stmt = select(table.c.name, table.c.value)
    with engine.connect() as conn:
        try:
            rows = {str(name): str(value) for name, value in db.raw_rows(conn, stmt)}
        except Exception as e:  # the driver's own error: raw_rows is not SQLAlchemy's
            dbapi.refuse(e)
            raise
    lock = rows.get(OBJECT_LOCK_SETTING)
    try:
        return rows.get(BLOBS_SETTING), ObjectLock.parse(lock) if lock else None
    except UsageError as e:  # only SQL outside evault writes what ObjectLock cannot parse
        raise VerificationError(
            f"vault database: setting object_lock: {e} (changed outside evault?); "
            f"{dbapi.RUN_DOCTOR}{dbapi.RESTORE}") from None


def check_blob_settings(root: Path, config: VaultConfig,
                        recorded: tuple[str | None, ObjectLock | None]) -> None:
    """Refuse a machine whose ``config.toml`` names another blob store or Object Lock than
    the vault's database: its blobs would go where the other machines do not look."""
    blobs, lock = recorded
    source = root / "config.toml"
    if blobs != config.blobs:
        said = f"blobs on {config.blobs}" if config.blobs else "blobs in its blobs/ folder"
        records = f"blobs on {blobs}" if blobs else "blobs in each vault folder's blobs/"
        raise ConfigError(
            f"{source}: says {said}, but the vault's database records {records}; make "
            "config.toml say what the database does (copy it from a machine of the vault)")
    if lock != config.object_lock:
        said = f"object lock {config.object_lock.text}" if config.object_lock else "no object lock"
        records = f"object lock {lock.text}" if lock else "none"
        raise ConfigError(
            f"{source}: says {said}, but the vault's database records {records}; make "
            "config.toml say what the database does (copy it from a machine of the vault)")


@dataclass(frozen=True)
class InitResult:
    """What ``init`` did."""

    root: Path
    created: bool
    database: str
    revision: str
    blobs: str | None = None
    object_lock: ObjectLock | None = None


def init_vault(
    vault: Path | str | None = None, *, database: str | None = None, blobs: str | None = None,
    object_lock: ObjectLock | None = None,
) -> InitResult:
    """Create a vault, or bring an existing one to the current schema (idempotent).

    A new vault is built whole in a staging folder beside ``vault`` and renamed into place
    only when its database is migrated, so a failed or killed ``init`` leaves no half-made
    vault: the next ``init`` starts afresh (and removes a killed one's staging folder).
    ``blobs`` (an ``s3://`` URL) puts its blobs in a bucket, checked to answer first, and
    records that in the database, which every machine of the vault must then agree with.
    """
    root = resolve(vault)
    if object_lock is not None and blobs is None:
        raise UsageError("init: --object-lock needs --blobs s3://BUCKET/PREFIX (a folder "
                         "has no Object Lock)")
    exists = check_new_vault_dir(root)
    if exists:
        config = load_config(root)
        if database and database != config.database:
            raise ConfigError(
                f"{root}: already a vault with another database; init does not move vaults"
            )
        if (blobs and blobs != config.blobs) or (object_lock and object_lock != config.object_lock):
            raise ConfigError(
                f"{root}: already a vault with its blobs {_blobs_text(config)}; init does not "
                "move blobs")
        url = config.database_url(root)
        revision = _migrate(url)
        if config.database is None:
            os.chmod(root / SQLITE_NAME, 0o600)
    else:
        if blobs is not None:
            from vault.store.s3blobs import S3Location

            blobs = S3Location.parse(blobs).url
        config = VaultConfig.new(database=database, blobs=blobs, object_lock=object_lock)
        if database:
            _check_reachable(database)
        if blobs is not None:
            _check_bucket(config)
        url = config.database_url(root)
        revision = _create(root, config)
    return InitResult(root=root, created=not exists, database=_redact(url), revision=revision,
                      blobs=config.blobs, object_lock=config.object_lock)


def _blobs_text(config: VaultConfig) -> str:
    if config.blobs is None:
        return "in its blobs/ folder"
    lock = f" under object lock {config.object_lock.text}" if config.object_lock else ""
    return f"on {config.blobs}{lock}"


def _check_bucket(config: VaultConfig) -> None:
    """Fail before creating anything if the bucket does not answer (or lacks Object Lock)."""
    from vault.store.s3blobs import S3BlobStore, S3Location

    assert config.blobs is not None
    S3BlobStore(S3Location.parse(config.blobs), object_lock=config.object_lock).check()


def _check_prefix_unused(url: str) -> None:
    """Refuse a new vault's prefix that holds an object or a pending upload already: two
    vaults on one prefix take each other's blobs for orphans, and either one's ``doctor
    --repair`` would delete the other's evidence."""
    from vault.store.s3blobs import S3BlobStore, S3Location

    found = S3BlobStore(S3Location.parse(url)).first_key()
    if found is not None:
        raise ConfigError(
            f"{url}: the prefix holds objects already ({found}): another vault's? Give each "
            "vault a prefix of its own (or, for a machine joining a team vault, the team's "
            "--db)")


def _record_blob_settings(url: str, config: VaultConfig, root: Path) -> None:
    """Write where blobs live into a new vault's database, or check that the database (a
    team's, which other vaults' machines use already) says the same."""
    from sqlalchemy import func

    from vault.store.models import Blob

    engine = db.make_engine(url)
    try:
        with db.session_factory(engine).begin() as session:
            recorded = {name: value for name, value in session.execute(
                select(VaultSetting.name, VaultSetting.value))}
            wanted = {BLOBS_SETTING: config.blobs,
                      OBJECT_LOCK_SETTING: config.object_lock.text if config.object_lock
                      else None}
            if not recorded and not any(wanted.values()):
                return
            if not recorded and not session.scalar(select(func.count()).select_from(Blob)):
                if config.blobs is not None:
                    _check_prefix_unused(config.blobs)
                session.add_all(VaultSetting(name=k, value=v) for k, v in wanted.items() if v)
                return
            check_blob_settings(root, config, read_blob_settings(engine))
    finally:
        engine.dispose()


def _check_reachable(url: str) -> None:
    """Fail before creating anything if the database server is unreachable."""
    engine = db.make_engine(url)
    try:
        with engine.connect():
            pass
    except OperationalError as e:
        raise ConfigError(f"database: cannot connect ({e.orig})") from None
    finally:
        engine.dispose()


def _migrate(url: str) -> str:
    engine = db.make_engine(url)
    try:
        db.upgrade(engine)
        return db.current_revision(engine) or ""
    except OperationalError as e:
        raise dbapi.cannot_connect(e.orig) from None
    finally:
        engine.dispose()


_STAGE = re.compile(r"\.(?P<name>.+)\.init-(?P<pid>\d+)-[0-9a-f]{8}")


def _create(root: Path, config: VaultConfig) -> str:
    """Build the vault in ``.NAME.init-PID-RANDOM`` beside ``root``, then rename it into place."""
    import secrets
    import shutil

    from vault.faults import crash_point

    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_stages(root)
    stage = root.parent / f".{root.name}.init-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        stage.mkdir(mode=0o700)
        if config.blobs is None:
            (stage / BLOBS_NAME).mkdir(mode=0o700)
        write_config(stage, config)
        crash_point("init.config_written")
        revision = _migrate(config.database_url(stage))
        _record_blob_settings(config.database_url(stage), config, root)
        if config.database is None:
            os.chmod(stage / SQLITE_NAME, 0o600)
        crash_point("init.migrated")
        # rename(2) replaces an empty directory, so `--vault` may name one made beforehand.
        os.rename(stage, root)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return revision


def _remove_dead_stages(root: Path) -> None:
    """Staging folders for ``root`` left by an ``init`` that was killed (its process is gone)."""
    import shutil

    for path in root.parent.iterdir():
        match = _STAGE.fullmatch(path.name)
        if match is None or match["name"] != root.name:
            continue
        try:
            os.kill(int(match["pid"]), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass  # alive, or not ours to signal: leave it


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def upgrade_vault(vault: Path | str | None = None) -> tuple[str | None, str]:
    """Upgrade an existing vault's database to head; return (before, after)."""
    v = open_vault(vault, check_schema=False)
    try:
        before = db.current_revision(v.engine)
        db.upgrade(v.engine)
        return before, db.current_revision(v.engine) or ""
    finally:
        v.close()


def current(vault: Path | str | None = None) -> tuple[str | None, str]:
    """The vault's revision and the code's head."""
    v = open_vault(vault, check_schema=False)
    try:
        return db.current_revision(v.engine), db.head_revision()
    finally:
        v.close()
