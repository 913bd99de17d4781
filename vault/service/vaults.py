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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from vault.errors import ConfigError, UsageError, VaultError
from vault.keystore import KeyStore, PassphrasePrompt, open_keystore
from vault.store import db, sealed
from vault.store.vaultdir import (
    BLOBS_NAME,
    SQLITE_NAME,
    VaultConfig,
    check_new_vault_dir,
    load_config,
    resolve,
    write_config,
)


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

    @property
    def blobs(self) -> Path:
        """The folder of encrypted blobs."""
        return self.root / BLOBS_NAME

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
        except OperationalError as e:
            if "locked" in str(e.orig) or "could not obtain lock" in str(e.orig):
                raise ConfigError(
                    "vault database is busy with another evault command; try again"
                ) from None
            if "disk is full" in str(e.orig) or "disk I/O error" in str(e.orig):
                raise VaultError(
                    f"vault database: cannot write ({e.orig}); this step was rolled back, "
                    "free some space and try again"
                ) from None
            raise
        except DataError as e:
            # PostgreSQL enforces column lengths (SQLite does not): a name, organisation or
            # title longer than its column is the user's input, not a bug.
            table = re.search(r"(?:INSERT INTO|UPDATE) (\w+)", str(e.statement or ""))
            where = f" of {table.group(1)}" if table else ""
            reason = str(e.orig).splitlines()[0] if e.orig else "value out of range"
            raise UsageError(
                f"vault database: a value{where} does not fit its field ({reason}); shorten it"
            ) from None

    def close(self) -> None:
        """Release database connections."""
        self.engine.dispose()


def open_vault(
    vault: Path | str | None = None,
    *,
    prompt: PassphrasePrompt | None = None,
    check_schema: bool = True,
) -> Vault:
    """Open an existing vault; refuse one whose database is behind the code."""
    root = resolve(vault)
    config = load_config(root)
    engine = db.make_engine(config.database_url(root))
    try:
        if check_schema:
            db.check_schema(engine)
    except OperationalError as e:
        engine.dispose()
        raise ConfigError(f"vault database: cannot connect ({e.orig})") from None
    except BaseException:
        engine.dispose()
        raise
    return Vault(root=root, config=config, engine=engine, prompt=prompt)


@dataclass(frozen=True)
class InitResult:
    """What ``init`` did."""

    root: Path
    created: bool
    database: str
    revision: str


def init_vault(vault: Path | str | None = None, *, database: str | None = None) -> InitResult:
    """Create a vault, or bring an existing one to the current schema (idempotent).

    A new vault is built whole in a staging folder beside ``vault`` and renamed into place
    only when its database is migrated, so a failed or killed ``init`` leaves no half-made
    vault: the next ``init`` starts afresh (and removes a killed one's staging folder).
    """
    root = resolve(vault)
    exists = check_new_vault_dir(root)
    if exists:
        config = load_config(root)
        if database and database != config.database:
            raise ConfigError(
                f"{root}: already a vault with another database; init does not move vaults"
            )
        url = config.database_url(root)
        revision = _migrate(url)
        if config.database is None:
            os.chmod(root / SQLITE_NAME, 0o600)
    else:
        config = VaultConfig.new(database=database)
        if database:
            _check_reachable(database)
        url = config.database_url(root)
        revision = _create(root, config)
    return InitResult(root=root, created=not exists, database=_redact(url), revision=revision)


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
        raise ConfigError(f"vault database: cannot connect ({e.orig})") from None
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
        (stage / BLOBS_NAME).mkdir(mode=0o700)
        write_config(stage, config)
        crash_point("init.config_written")
        revision = _migrate(config.database_url(stage))
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
