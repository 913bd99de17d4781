"""Where a vault lives and what its ``config.toml`` says.

    >>> from pathlib import Path
    >>> from vault.store.vaultdir import VaultConfig
    >>> VaultConfig(vault_id="0f1e2d3c").database_url(Path("/srv/vault"))
    'sqlite:////srv/vault/vault.db'

A vault is a directory with ``config.toml``, a ``blobs/`` folder (or, with ``blobs =
"s3://bucket/prefix"``, a bucket on S3-compatible storage) and, by default, the SQLite
database ``vault.db``. ``EVAULT_HOME`` or ``--vault`` choose the directory; otherwise the
platform's user data directory.
"""

from __future__ import annotations

import json
import os
import re
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vault.errors import ConfigError, NotFoundError, UsageError
from vault.names import RELATIONS

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
#: What a body of a release rule gets when the rule names no derived copy for it.
ORIGINAL = "original"
#: What a checkpoint-signing command does when TSAs are configured and none answers:
#: ``required`` refuses (unless ``--no-timestamp``), ``when-available`` goes on, pending.
TIMESTAMPS_CHOICES = ("required", "when-available")
_TSA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Under the arcs 0 and 1 the second arc is below 40 (X.660), as `cryptography` insists.
_APPROVER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: Object Lock modes (S3): governance (users with a special permission may shorten it) or
#: compliance (no one may, not even the account's root, until it ends).
OBJECT_LOCK_MODES = ("governance", "compliance")
MAX_RETAIN_DAYS = 36_500
_OID = re.compile(r"([01]\.([0-9]|[1-3][0-9])|2\.(0|[1-9][0-9]*))(\.(0|[1-9][0-9]*))*")


@dataclass(frozen=True)
class TsaConfig:
    """One RFC 3161 time-stamp authority (a ``[[tsa]]`` table of ``config.toml``).

    ``ca`` are PEM files of the certificates its tokens must chain to; a relative path is
    relative to the vault folder. ``policy`` is the policy OID its tokens must carry, if
    set; ``timeout`` the seconds to wait for it.
    """

    name: str
    url: str
    ca: tuple[str, ...]
    policy: str | None = None
    timeout: float = 10.0

    def ca_paths(self, root: Path) -> list[Path]:
        """The CA files, relative ones resolved against the vault folder ``root``."""
        return [root / Path(c).expanduser() for c in self.ca]

    def to_toml(self) -> list[str]:
        """The ``[[tsa]]`` table's lines."""
        lines = ["[[tsa]]", f"name = {json.dumps(self.name)}", f"url = {json.dumps(self.url)}",
                 f"ca = {json.dumps(list(self.ca))}"]
        if self.policy:
            lines.append(f"policy = {json.dumps(self.policy)}")
        if self.timeout != 10.0:
            lines.append(f"timeout = {self.timeout!r}")
        return lines

    @classmethod
    def from_toml(cls, raw: object, source: Path, index: int) -> TsaConfig:
        """One ``[[tsa]]`` table, checked; a mistake names the file, the table and the key."""
        where = f"{source}: [[tsa]] number {index + 1}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a table")
        unknown = sorted(set(raw) - {"name", "url", "ca", "policy", "timeout"})
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}; the keys are name, url, "
                              "ca, policy and timeout")
        name = raw.get("name")
        if not isinstance(name, str) or not _TSA_NAME.fullmatch(name):
            raise ConfigError(f"{where}: name must be 1-64 letters, digits, '.', '_' or '-'")
        url = raw.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"{where} ({name}): url must be an http:// or https:// URL")
        ca = raw.get("ca")
        if isinstance(ca, str):
            ca = [ca]
        if not isinstance(ca, list) or not ca or not all(isinstance(c, str) and c for c in ca):
            raise ConfigError(f"{where} ({name}): ca must name the PEM file(s) of the "
                              "certificates its tokens chain to")
        policy = raw.get("policy")
        if policy is not None and (not isinstance(policy, str) or not _OID.fullmatch(policy)):
            raise ConfigError(f"{where} ({name}): policy must be an OID such as 1.2.3.4")
        timeout = raw.get("timeout", 10.0)
        if (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                or not 0 < timeout <= 300):
            raise ConfigError(f"{where} ({name}): timeout must be seconds, above 0 and at "
                              "most 300")
        return cls(name=name, url=url, ca=tuple(ca), policy=policy, timeout=float(timeout))


@dataclass(frozen=True)
class ObjectLock:
    """The retention each new blob on S3 gets: ``mode`` for ``days`` after it is written."""

    mode: str
    days: int

    def __post_init__(self) -> None:
        if self.mode not in OBJECT_LOCK_MODES:
            raise UsageError(f"object lock: mode {self.mode!r}: use governance or compliance")
        # A whole number: 2.0 would equal the database's 2 yet be written `2.0` in the spec
        # bulk-intake workers parse.
        if (isinstance(self.days, bool) or not isinstance(self.days, int)
                or not 1 <= self.days <= MAX_RETAIN_DAYS):
            raise UsageError(f"object lock: retention of {self.days} days: give 1 to "
                             f"{MAX_RETAIN_DAYS} days")

    @property
    def text(self) -> str:
        """``mode:days``, as the vault's database records it."""
        return f"{self.mode}:{self.days}"

    @classmethod
    def parse(cls, text: str) -> ObjectLock:
        """The inverse of :attr:`text`."""
        mode, _, days = text.partition(":")
        if not days.isdigit():
            raise UsageError(f"object lock: {text!r} is not MODE:DAYS")
        return cls(mode, int(days))


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
    #: label -> body -> the copy that body gets instead of the original (a relation such as
    #: "redacted"); a body of a rule that is not named here gets the original.
    release_relations: dict[str, dict[str, str]] = field(default_factory=dict)
    timestamps: str = "required"
    tsa: tuple[TsaConfig, ...] = ()
    #: Release approvals: body -> (how many approvals, of which approvers) ...
    approvals_bodies: dict[str, tuple[int, tuple[str, ...]]] = field(default_factory=dict)
    #: ... and label -> approvers each required in addition (``[approvals.labels]``).
    approvals_labels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Where blobs live: None for the ``blobs/`` folder, or an ``s3://bucket/prefix`` URL
    #: (endpoint and credentials come from the AWS environment, never from here).
    blobs: str | None = None
    #: The retention new blobs on S3 get (None: none asked for).
    object_lock: ObjectLock | None = None
    #: PEM files of the certificates a C2PA manifest's signer must chain to, to be
    #: ``trusted`` at intake (``[c2pa] trust_anchors``, relative to the vault folder);
    #: none: no signer is trusted.
    c2pa_trust_anchors: tuple[str, ...] = ()

    @classmethod
    def new(cls, database: str | None = None, *, blobs: str | None = None,
            object_lock: ObjectLock | None = None) -> VaultConfig:
        """A configuration for a new vault with a fresh random id."""
        return cls(vault_id=uuid.uuid4().hex, database=database, blobs=blobs,
                   object_lock=object_lock)

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
        if self.blobs:
            lines += ["# Blobs on S3: endpoint, region and credentials come from the AWS "
                      "environment.", f"blobs = {json.dumps(self.blobs)}"]
        if self.object_lock:
            lines.append(f"object_lock = {{ mode = {json.dumps(self.object_lock.mode)}, "
                         f"days = {self.object_lock.days} }}")
        lines += [
            "",
            "# Change release rules with `evault rule add|remove|default`: each change is a signed",
            "# custody event, and a hand edit here stops package build and export until signed.",
            "# A label without a rule goes to no body unless the default is \"allow\".",
            f"release_rules_default = {json.dumps(self.release_rules_default)}",
            "",
            "# Release rules: a label on an item may go only to the bodies listed for it.",
            "# An empty list means the item may go to no body at all. A table names the copy",
            "# each body gets: \"original\", or a derived copy such as \"redacted\".",
            "[release_rules]",
        ]
        lines += [
            f"{json.dumps(label)} = {self._rule_toml(label, bodies)}"
            for label, bodies in sorted(self.release_rules.items())
        ]
        if self.approvals_bodies or self.approvals_labels:
            lines += ["", "# Release approvals: change them with `evault approval policy` (signed,",
                      "# as the release rules are).", "[approvals.bodies]"]
            lines += [f"{json.dumps(body)} = {{ need = {need}, of = {json.dumps(list(of))} }}"
                      for body, (need, of) in sorted(self.approvals_bodies.items())]
            lines += ["", "[approvals.labels]"]
            lines += [f"{json.dumps(label)} = {json.dumps(list(names))}"
                      for label, names in sorted(self.approvals_labels.items())]
        if self.tsa or self.timestamps != "required":
            lines[3:3] = [f"timestamps = {json.dumps(self.timestamps)}"]
        for tsa in self.tsa:
            lines += ["", *tsa.to_toml()]
        if self.c2pa_trust_anchors:
            lines += ["", "# The trust anchors (PEM files) C2PA manifests are checked against "
                      "at intake.", "[c2pa]",
                      f"trust_anchors = {json.dumps(list(self.c2pa_trust_anchors))}"]
        return "\n".join(lines) + "\n"

    def _rule_toml(self, label: str, bodies: tuple[str, ...]) -> str:
        """A rule's value: the list of bodies, or, if a body gets only a derived copy, a
        table of body to the copy it gets."""
        relations = self.release_relations.get(label)
        if not relations:
            return json.dumps(list(bodies))
        pairs = ", ".join(f"{json.dumps(b)} = {json.dumps(relations.get(b, ORIGINAL))}"
                          for b in bodies)
        return f"{{ {pairs} }}"

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
        blobs, object_lock = _blob_settings(data, source)
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
        relations: dict[str, dict[str, str]] = {}
        for label, bodies in rules_raw.items():
            if isinstance(bodies, dict):
                for body, copy in bodies.items():
                    if copy not in (ORIGINAL, *RELATIONS):
                        raise ConfigError(
                            f"{source}: release rule {label!r}: body {body!r} gets {copy!r}; "
                            f"use \"{ORIGINAL}\" or one of {', '.join(RELATIONS)}")
                rules[label] = tuple(bodies)
                if any(copy != ORIGINAL for copy in bodies.values()):
                    relations[label] = {b: c for b, c in bodies.items() if c != ORIGINAL}
                continue
            if not isinstance(bodies, list) or not all(isinstance(b, str) for b in bodies):
                raise ConfigError(f"{source}: release rule {label!r} must be a list of body "
                                  "ids, or a table of body id to the copy it gets")
            rules[label] = tuple(bodies)
        timestamps = data.get("timestamps", "required")
        if timestamps not in TIMESTAMPS_CHOICES:
            raise ConfigError(f"{source}: timestamps must be \"required\" or "
                              "\"when-available\"")
        tsa_raw = data.get("tsa", [])
        if not isinstance(tsa_raw, list):
            raise ConfigError(f"{source}: tsa must be an array of tables ([[tsa]])")
        tsas = tuple(TsaConfig.from_toml(t, source, i) for i, t in enumerate(tsa_raw))
        bodies_policy, labels_policy = _approvals(data.get("approvals", {}), source)
        anchors = _c2pa_anchors(data.get("c2pa", {}), source)
        names = [t.name for t in tsas]
        for name in names:
            if names.count(name) > 1:
                raise ConfigError(f"{source}: two [[tsa]] tables are named {name!r}; "
                                  "give each TSA its own name")
        return cls(
            vault_id=vault_id,
            database=database,
            key_storage=key_storage,
            organisation=organisation,
            release_rules=rules,
            release_rules_default=default,
            release_relations=relations,
            timestamps=timestamps,
            tsa=tsas,
            approvals_bodies=bodies_policy,
            approvals_labels=labels_policy,
            blobs=blobs,
            object_lock=object_lock,
            c2pa_trust_anchors=tuple(anchors),
        )


def _c2pa_anchors(raw: object, source: Path) -> list[str]:
    """The ``[c2pa]`` table's ``trust_anchors``, checked."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: c2pa must be a table ([c2pa])")
    unknown = sorted(set(raw) - {"trust_anchors"})
    if unknown:
        raise ConfigError(f"{source}: [c2pa]: unknown key {unknown[0]!r}; the key is "
                          "trust_anchors")
    anchors = raw.get("trust_anchors", [])
    if isinstance(anchors, str):
        anchors = [anchors]
    if not isinstance(anchors, list) or not all(isinstance(a, str) and a for a in anchors):
        raise ConfigError(f"{source}: [c2pa]: trust_anchors must name the PEM file(s) of the "
                          "certificates a C2PA signer must chain to")
    return anchors


def _blob_settings(data: dict[str, Any], source: Path) -> tuple[str | None, ObjectLock | None]:
    """``blobs`` and ``object_lock``, checked."""
    blobs = data.get("blobs")
    if blobs is not None:
        if not isinstance(blobs, str) or not blobs.startswith("s3://"):
            raise ConfigError(f"{source}: blobs must be an s3://BUCKET/PREFIX URL; remove the "
                              "line for the vault's own blobs/ folder")
        from vault.store.s3blobs import S3Location

        try:
            S3Location.parse(blobs)
        except UsageError as e:
            raise ConfigError(f"{source}: blobs: {e}") from None
    raw = data.get("object_lock")
    if raw is None:
        return blobs, None
    if blobs is None:
        raise ConfigError(f"{source}: object_lock needs blobs on S3 (blobs = \"s3://...\")")
    if not isinstance(raw, dict) or set(raw) != {"mode", "days"}:
        raise ConfigError(f"{source}: object_lock must be {{ mode = \"compliance\", "
                          "days = N }")
    try:
        return blobs, ObjectLock(raw["mode"], raw["days"])
    except (UsageError, TypeError) as e:
        raise ConfigError(f"{source}: {e}") from None


def _names(value: object, where: str) -> tuple[str, ...]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(n, str) and _APPROVER.fullmatch(n) for n in value)):
        raise ConfigError(f"{where} must list approver names (letters, digits, '._-')")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where} names an approver twice")
    return tuple(value)


def _approvals(raw: object, source: Path) -> tuple[dict[str, tuple[int, tuple[str, ...]]],
                                                   dict[str, tuple[str, ...]]]:
    """``[approvals.bodies]`` and ``[approvals.labels]``, checked."""
    if not isinstance(raw, dict) or set(raw) - {"bodies", "labels"}:
        raise ConfigError(f"{source}: [approvals] holds only the tables bodies and labels")
    bodies_raw, labels_raw = raw.get("bodies", {}), raw.get("labels", {})
    if not isinstance(bodies_raw, dict) or not isinstance(labels_raw, dict):
        raise ConfigError(f"{source}: [approvals.bodies] and [approvals.labels] must be tables")
    bodies: dict[str, tuple[int, tuple[str, ...]]] = {}
    for body, entry in bodies_raw.items():
        where = f"{source}: approvals for body {body}"
        if not isinstance(entry, dict) or set(entry) != {"need", "of"}:
            raise ConfigError(f"{where} must be {{ need = N, of = [NAME, ...] }}")
        of = _names(entry["of"], f"{where}: of")
        need = entry["need"]
        if isinstance(need, bool) or not isinstance(need, int) or not 1 <= need <= len(of):
            raise ConfigError(f"{where}: need must be from 1 to the {len(of)} approvers named")
        bodies[body] = (need, of)
    labels = {label: _names(names, f"{source}: approvals for label {label}")
              for label, names in labels_raw.items()}
    return bodies, labels


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
