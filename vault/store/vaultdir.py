"""Where a vault lives and what its ``config.toml`` says.

    >>> from pathlib import Path
    >>> from vault.store.vaultdir import VaultConfig
    >>> VaultConfig(vault_id="0f1e2d3c").database_url(Path("/srv/vault"))
    'sqlite:////srv/vault/vault.db'

A vault is a directory with ``config.toml``, a ``blobs/`` folder and, by default, the SQLite
database ``vault.db``. ``EVAULT_HOME`` or ``--vault`` choose the directory; otherwise the
platform's user data directory.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vault.errors import ConfigError, NotFoundError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_NAME = "config.toml"
BLOBS_NAME = "blobs"
SQLITE_NAME = "vault.db"
KEY_STORAGE_CHOICES = ("auto", "keyring", "file")
#: What happens to a label that has no release rule: ``deny`` (fail closed) unless set.
RULES_DEFAULT_CHOICES = ("deny", "allow")


def default_home() -> Path:
    """``EVAULT_HOME`` if set, else the platform's user data directory for evault."""
    env = os.environ.get("EVAULT_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("evault", appauthor=False))


def resolve(vault: Path | str | None) -> Path:
    """The vault directory for ``--vault`` (or the default), made absolute."""
    return (Path(vault).expanduser() if vault else default_home()).absolute()


@dataclass(frozen=True)
class VaultConfig:
    """The settings of one vault, as read from its ``config.toml``."""

    vault_id: str
    database: str | None = None
    key_storage: str = "auto"
    organisation: str | None = None
    release_rules: dict[str, tuple[str, ...]] = field(default_factory=dict)
    release_rules_default: str = "deny"

    @classmethod
    def new(cls, database: str | None = None) -> VaultConfig:
        """A configuration for a new vault with a fresh random id."""
        return cls(vault_id=uuid.uuid4().hex, database=database)

    def database_url(self, root: Path) -> str:
        """The SQLAlchemy URL: the configured one, or ``vault.db`` inside ``root``."""
        return self.database or f"sqlite:///{root / SQLITE_NAME}"

    def to_toml(self) -> str:
        """The file's text; strings are written as JSON strings, which TOML accepts."""
        lines = [
            "# Evidence Vault configuration. Private keys are never stored here.",
            f"vault_id = {json.dumps(self.vault_id)}",
            f"key_storage = {json.dumps(self.key_storage)}",
        ]
        if self.database:
            lines.append(f"database = {json.dumps(self.database)}")
        if self.organisation:
            lines.append(f"organisation = {json.dumps(self.organisation)}")
        lines += [
            "",
            "# Change release rules with `evault rule add|remove|default`: each change is a signed",
            "# custody event, and a hand edit here stops package build and export until signed.",
            "# A label without a rule goes to no body unless the default is \"allow\".",
            f"release_rules_default = {json.dumps(self.release_rules_default)}",
            "",
            "# Release rules: a label on an item may go only to the bodies listed for it.",
            "# An empty list means the item may go to no body at all.",
            "[release_rules]",
        ]
        lines += [
            f"{json.dumps(label)} = {json.dumps(list(bodies))}"
            for label, bodies in sorted(self.release_rules.items())
        ]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, text: str, source: Path) -> VaultConfig:
        """Parse and validate ``config.toml``; any mistake names the file and the key."""
        try:
            data: dict[str, Any] = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{source}: not valid TOML ({e})") from None
        except RecursionError:
            raise ConfigError(f"{source}: not valid TOML (nested too deeply)") from None
        vault_id = data.get("vault_id")
        if not isinstance(vault_id, str) or not vault_id:
            raise ConfigError(f"{source}: vault_id is missing; the file is damaged")
        key_storage = data.get("key_storage", "auto")
        if key_storage not in KEY_STORAGE_CHOICES:
            raise ConfigError(
                f"{source}: key_storage must be one of {', '.join(KEY_STORAGE_CHOICES)}"
            )
        database = data.get("database")
        if database is not None and (not isinstance(database, str) or not database.strip()):
            raise ConfigError(f"{source}: database must be a URL string; remove the line for "
                              "the vault's own SQLite database")
        organisation = data.get("organisation")
        if organisation is not None and (not isinstance(organisation, str)
                                         or not organisation.strip()):
            raise ConfigError(f"{source}: organisation must be a name; remove the line if "
                              "there is none")
        rules_raw = data.get("release_rules", {})
        if not isinstance(rules_raw, dict):
            raise ConfigError(f"{source}: [release_rules] must be a table")
        default = data.get("release_rules_default", "deny")
        if default not in RULES_DEFAULT_CHOICES:
            raise ConfigError(
                f"{source}: release_rules_default must be \"deny\" or \"allow\"; "
                "set it with `evault rule default deny|allow`"
            )
        rules: dict[str, tuple[str, ...]] = {}
        for label, bodies in rules_raw.items():
            if not isinstance(bodies, list) or not all(isinstance(b, str) for b in bodies):
                raise ConfigError(f"{source}: release rule {label!r} must be a list of body ids")
            rules[label] = tuple(bodies)
        return cls(
            vault_id=vault_id,
            database=database,
            key_storage=key_storage,
            organisation=organisation,
            release_rules=rules,
            release_rules_default=default,
        )


def load_config(root: Path) -> VaultConfig:
    """Read the vault's configuration, or say how to create a vault."""
    path = root / CONFIG_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFoundError(
            f"no vault at {root}: run `evault init --vault {root}` or pass --vault"
        ) from None
    return VaultConfig.from_toml(text, path)


def write_config(root: Path, config: VaultConfig) -> None:
    """Write ``config.toml`` atomically (temporary file, fsync, rename)."""
    from vault.durable import atomic_write_bytes

    atomic_write_bytes(root / CONFIG_NAME, config.to_toml().encode("utf-8"), mode=0o600)


def check_new_vault_dir(root: Path) -> bool:
    """True if ``root`` already is a vault; raise if it is a non-empty directory of other files."""
    if (root / CONFIG_NAME).is_file():
        return True
    if root.exists():
        if not root.is_dir():
            raise UsageError(f"{root}: exists and is not a directory; choose another --vault")
        if any(root.iterdir()):
            raise UsageError(
                f"{root}: directory is not empty and is not a vault; choose an empty or new one"
            )
    return False
