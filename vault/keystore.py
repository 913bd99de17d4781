"""Private keys of the vault: the OS keyring when a real one is there, else a passphrase file.

    >>> store = open_keystore(root, config)          # doctest: +SKIP
    >>> store.put("identity:SHA256:abc", secret)     # doctest: +SKIP
    >>> store.get("identity:SHA256:abc") == secret   # doctest: +SKIP
    True

Choice (``key_storage`` in config.toml, overridden by ``EVAULT_KEY_STORAGE``):

- ``keyring``: through the ``keyring`` package, only with a backend of priority >= 1 (Secret
  Service, macOS Keychain, Windows Credential Locker). ``keyrings.alt`` backends are refused:
  its default file backend keeps base64 plaintext.
- ``file``: ``keys.enc`` inside the vault, sealed with scrypt + AES-256-GCM
  (:mod:`vault.crypto.secretbox`), mode 0600. The passphrase comes from ``EVAULT_PASSPHRASE``,
  ``EVAULT_PASSPHRASE_FILE``, or a prompt when stdin is a terminal.
- ``auto`` (the default): ``keyring`` if such a backend is available, else ``file``.

Nothing here ever writes a private key anywhere else, and nothing logs one.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vault.errors import (
    ConfigError,
    DecryptionError,
    KeyMissingError,
    KeyStoreError,
    UsageError,
)

KEY_FILE = "keys.enc"
_B64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
LOCK_FILE = "keys.lock"
PassphrasePrompt = Callable[[bool], str]
"""Asks the user for the passphrase; the flag says a new key file is being created (confirm)."""


class KeyStore(ABC):
    """Where private keys live. Names are ``identity:<fingerprint>`` and the like."""

    kind: str
    reason: str

    @abstractmethod
    def put(self, name: str, secret: bytes) -> None:
        """Store ``secret`` under ``name``, replacing nothing: names are unique per key."""

    @abstractmethod
    def get(self, name: str) -> bytes:
        """The secret stored under ``name``; KeyMissingError (a KeyStoreError) if absent."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove ``name`` if present."""

    def prepare(self, *, ask: bool = True) -> None:
        """Start, in the background where it can, the slow part of the first :meth:`get`
        (a key file's scrypt), so that a caller with other work to do meanwhile waits less;
        whatever fails there is left for :meth:`get` to report. With ``ask`` False, a
        passphrase that would have to be typed is not asked for yet (the caller's own checks
        come first). The default does nothing."""
        return None


class KeyringStore(KeyStore):
    """Secrets in the OS keyring, under the service ``evault:<vault-id>``."""

    kind = "keyring"

    def __init__(self, backend: Any, vault_id: str, reason: str) -> None:
        self._backend = backend
        self._service = f"evault:{vault_id}"
        self.reason = reason

    def put(self, name: str, secret: bytes) -> None:
        """Store in the keyring; a locked or failing keyring is one clear error."""
        import keyring.errors

        try:
            self._backend.set_password(self._service, name, base64.b64encode(secret).decode())
        except (keyring.errors.KeyringError, OSError) as e:
            raise KeyStoreError(f"keyring: cannot store {name} ({e}); unlock the keyring") from None

    def get(self, name: str) -> bytes:
        """Read from the keyring."""
        import keyring.errors

        try:
            value = self._backend.get_password(self._service, name)
        except (keyring.errors.KeyringError, OSError) as e:
            raise KeyStoreError(f"keyring: cannot read {name} ({e}); unlock the keyring") from None
        if value is None:
            raise KeyMissingError(
                f"keyring: no private key {name} for this vault; was it created on this machine "
                "and this user account?"
            )
        return base64.b64decode(value)

    def delete(self, name: str) -> None:
        """Remove from the keyring if present."""
        import keyring.errors

        with contextlib.suppress(keyring.errors.PasswordDeleteError):
            self._backend.delete_password(self._service, name)


class FileKeyStore(KeyStore):
    """Secrets in one passphrase-sealed file, rewritten atomically under a lock."""

    kind = "file"

    def __init__(self, root: Path, prompt: PassphrasePrompt | None, reason: str) -> None:
        self.path = root / KEY_FILE
        self._lock_path = root / LOCK_FILE
        self._prompt = prompt
        self._passphrase: str | None = None
        # (work factor, salt, derived key): scrypt runs once per process, not per access.
        self._derived: tuple[int, bytes, bytes] | None = None
        self._deriving: threading.Thread | None = None
        self.reason = reason

    def _get_passphrase(self, creating: bool) -> str:
        if self._passphrase is None:
            self._passphrase = resolve_passphrase(self._prompt, creating)
        return self._passphrase

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def prepare(self, *, ask: bool = True) -> None:
        """Ask for the passphrase (if it must be typed, and ``ask``) and run the key file's
        scrypt on a helper thread (it releases the GIL): :meth:`get` then waits only for
        what is left of it. The derived key goes only where :meth:`get` would put it (the
        process's cache in :func:`vault.crypto.secretbox.derive_key`)."""
        if self._derived is not None or self._deriving is not None:
            return
        if not ask and self._passphrase is None and not passphrase_given():
            return
        from vault.crypto.secretbox import HEADER_LEN, box_params, derive_key

        try:
            with self.path.open("rb") as f:
                work_factor, salt = box_params(f.read(HEADER_LEN + 16))
            passphrase = self._get_passphrase(False)
        except Exception:  # get says what is wrong, as it would have without this
            return

        def derive() -> None:
            with contextlib.suppress(Exception):  # get derives again and reports it
                derive_key(passphrase, salt, work_factor)

        self._deriving = threading.Thread(target=derive, name="evault-scrypt", daemon=True)
        self._deriving.start()

    def _key_for(self, work_factor: int, salt: bytes, creating: bool) -> bytes:
        from vault.crypto.secretbox import derive_key

        if self._deriving is not None:
            self._deriving.join()
            self._deriving = None
        if self._derived is None or self._derived[:2] != (work_factor, salt):
            key = derive_key(self._get_passphrase(creating), salt, work_factor)
            self._derived = (work_factor, salt, key)
        return self._derived[2]

    def _load(self) -> dict[str, str]:
        from vault.crypto.secretbox import box_params, open_with_key

        try:
            box = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            work_factor, salt = box_params(box)
            plain = open_with_key(box, self._key_for(work_factor, salt, False))
        except DecryptionError:
            # A key-store error (exit 1), not a failed verification of evidence (exit 3).
            raise KeyStoreError(
                f"{self.path}: wrong passphrase, or the key file is damaged; "
                "give the passphrase it was created with"
            ) from None
        try:
            data = json.loads(plain)
        except (ValueError, RecursionError):  # not UTF-8, not JSON, nested too deeply
            data = None
        # An object of base64 strings, as _save writes it; anything else is damage (found by
        # fuzzing the contents: a number or bad base64 raised TypeError or binascii.Error).
        if not isinstance(data, dict) or not all(
            isinstance(v, str) and _B64.fullmatch(v) for v in data.values()
        ):
            raise KeyStoreError(f"{self.path}: damaged key file")
        return data

    def _save(self, data: dict[str, str], creating: bool) -> None:
        from vault.crypto.secretbox import DEFAULT_WORK_FACTOR, new_salt, seal_with_key
        from vault.durable import atomic_write_bytes

        if self._derived is None:
            self._key_for(DEFAULT_WORK_FACTOR, new_salt(), creating)
        assert self._derived is not None
        work_factor, salt, key = self._derived
        box = seal_with_key(json.dumps(data, sort_keys=True).encode(), key, salt, work_factor)
        atomic_write_bytes(self.path, box, mode=0o600)

    def put(self, name: str, secret: bytes) -> None:
        """Add ``name`` to the key file, creating it (mode 0600) on first use."""
        with self._locked():
            creating = not self.path.exists()
            data = self._load()
            data[name] = base64.b64encode(secret).decode()
            self._save(data, creating)

    def get(self, name: str) -> bytes:
        """Read ``name`` from the key file."""
        with self._locked():
            data = self._load()
        if name not in data:
            raise KeyMissingError(f"{self.path}: no private key {name}; the key file may be older")
        return base64.b64decode(data[name])

    def delete(self, name: str) -> None:
        """Remove ``name`` from the key file."""
        with self._locked():
            data = self._load()
            if data.pop(name, None) is not None:
                self._save(data, False)


#: A new key file needs a passphrase at least this long; existing key files open with any.
MIN_PASSPHRASE_LENGTH = 12


def passphrase_given() -> bool:
    """Whether :func:`resolve_passphrase` finds a passphrase without asking for one."""
    return bool(os.environ.get("EVAULT_PASSPHRASE") or os.environ.get("EVAULT_PASSPHRASE_FILE"))


def resolve_passphrase(prompt: PassphrasePrompt | None, creating: bool) -> str:
    """``EVAULT_PASSPHRASE``, else the first line of ``EVAULT_PASSPHRASE_FILE``, else a prompt.

    When ``creating`` a key file, a passphrase shorter than :data:`MIN_PASSPHRASE_LENGTH`
    characters is refused (:class:`UsageError`, exit 2), whichever of the three it came from.
    """
    value = os.environ.get("EVAULT_PASSPHRASE")
    if value:
        return _checked(_utf8(value, "EVAULT_PASSPHRASE"), "EVAULT_PASSPHRASE", creating)
    path = os.environ.get("EVAULT_PASSPHRASE_FILE")
    if path:
        try:
            line = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise KeyStoreError(
                f"EVAULT_PASSPHRASE_FILE {path}: cannot read ({e.strerror})"
            ) from None
        except UnicodeDecodeError:
            raise KeyStoreError(f"EVAULT_PASSPHRASE_FILE {path}: not valid UTF-8; save the "
                                "passphrase in it as UTF-8") from None
        if not line or not line[0]:
            raise KeyStoreError(f"EVAULT_PASSPHRASE_FILE {path}: the first line is empty")
        return _checked(line[0], f"EVAULT_PASSPHRASE_FILE {path}", creating)
    if prompt is not None:
        return _checked(prompt(creating), "the passphrase typed", creating)
    raise KeyStoreError(
        "key file store needs a passphrase: set EVAULT_PASSPHRASE or EVAULT_PASSPHRASE_FILE, "
        "or run in a terminal to be asked"
    )


def _utf8(value: str, source: str) -> str:
    """``value`` if it is valid UTF-8 text (an environment variable that is not arrives with
    lone surrogates, which scrypt cannot take), else a one-line KeyStoreError."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise KeyStoreError(f"{source}: not valid UTF-8; set it as UTF-8 (check the encoding "
                            "of the script or terminal that sets it)") from None
    return value


def _checked(passphrase: str, source: str, creating: bool) -> str:
    if creating and len(passphrase) < MIN_PASSPHRASE_LENGTH:
        raise UsageError(
            f"{source}: a new key file needs a passphrase of at least {MIN_PASSPHRASE_LENGTH} "
            f"characters, this one has {len(passphrase)}; choose a longer one"
        )
    return passphrase


@dataclass(frozen=True)
class Choice:
    """Which key store a vault uses and why, as ``evault doctor`` reports it."""

    kind: str
    reason: str
    backend: Any = None


def _real_keyring() -> Any | None:
    """The best keyring backend with priority >= 1 that is not a plaintext or null one."""
    from keyring.backend import get_all_keyring
    from keyring.backends import chainer, fail

    best: Any = None
    for backend in get_all_keyring():
        module = type(backend).__module__
        if module.startswith("keyrings.alt") or isinstance(
            backend, chainer.ChainerBackend | fail.Keyring
        ):
            continue
        if module == "keyring.backends.null":
            continue
        if backend.priority >= 1 and (best is None or backend.priority > best.priority):
            best = backend
    return best


def choose(setting: str) -> Choice:
    """Decide the store for ``setting`` (auto | keyring | file), honouring EVAULT_KEY_STORAGE."""
    env = os.environ.get("EVAULT_KEY_STORAGE")
    source = "config.toml"
    if env:
        setting, source = env, "EVAULT_KEY_STORAGE"
    if setting not in ("auto", "keyring", "file"):
        raise ConfigError(f"{source}: key storage {setting!r} is not one of auto, keyring, file")
    if setting == "file":
        return Choice("file", f"key_storage = file ({source})")
    backend = _real_keyring()
    if backend is not None:
        name = f"{type(backend).__module__}.{type(backend).__name__}"
        return Choice(
            "keyring", f"{name} (priority {backend.priority}), key_storage = {setting}", backend
        )
    if setting == "keyring":
        raise KeyStoreError(
            f"{source}: key_storage = keyring, but no OS keyring is available (Secret Service, "
            "Keychain, Credential Locker); start one or use key_storage = file"
        )
    return Choice("file", "no OS keyring with priority >= 1 is available; key_storage = auto")


def open_keystore(
    root: Path, vault_id: str, setting: str, *, prompt: PassphrasePrompt | None = None
) -> KeyStore:
    """The key store of the vault at ``root``."""
    choice = choose(setting)
    if choice.kind == "keyring":
        return KeyringStore(choice.backend, vault_id, choice.reason)
    return FileKeyStore(root, prompt, choice.reason)
