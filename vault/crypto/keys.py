"""Ed25519 signing keys and their public forms (OpenSSH line, ``SHA256:`` fingerprint).

    >>> key = SigningKey.generate()
    >>> pub = key.public
    >>> pub.verify(key.sign(b"event"), b"event")
    >>> pub.fingerprint.startswith("SHA256:")
    True

The fingerprint is what ``ssh-keygen -l`` prints: SHA-256 over the SSH wire encoding of the
public key, base64 without padding.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from vault.errors import UsageError, VerificationError

SSH_ED25519 = b"ssh-ed25519"


def ssh_string(data: bytes) -> bytes:
    """Encode ``data`` as an SSH wire ``string``: a 32-bit big-endian length, then the bytes."""
    return struct.pack(">I", len(data)) + data


class SshReader:
    """Reads SSH wire-format fields from a byte string, refusing truncation."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def string(self) -> bytes:
        """Read one length-prefixed ``string``."""
        if self._pos + 4 > len(self._data):
            raise ValueError("truncated length")
        (n,) = struct.unpack_from(">I", self._data, self._pos)
        self._pos += 4
        if self._pos + n > len(self._data):
            raise ValueError("truncated string")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def uint32(self) -> int:
        """Read one 32-bit big-endian unsigned integer."""
        if self._pos + 4 > len(self._data):
            raise ValueError("truncated uint32")
        (n,) = struct.unpack_from(">I", self._data, self._pos)
        self._pos += 4
        return int(n)

    def at_end(self) -> bool:
        """True when every byte has been consumed."""
        return self._pos == len(self._data)


@dataclass(frozen=True)
class VerifyKey:
    """An Ed25519 public key; constructing one from bytes validates its length."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise UsageError("ed25519 public key: must be 32 bytes")

    @classmethod
    def from_ssh_blob(cls, blob: bytes) -> VerifyKey:
        """Parse the SSH wire encoding ``string "ssh-ed25519" || string key``."""
        try:
            r = SshReader(blob)
            kind = r.string()
            raw = r.string()
            if not r.at_end():
                raise ValueError("trailing bytes")
        except ValueError as e:
            raise UsageError(f"ssh public key: malformed key blob ({e})") from None
        if kind != SSH_ED25519:
            raise UsageError(
                f"ssh public key: type {kind.decode('ascii', 'replace')} is not supported; "
                "use an ssh-ed25519 key"
            )
        return cls(raw)

    @classmethod
    def from_openssh(cls, line: str) -> VerifyKey:
        """Parse an OpenSSH public key line ``ssh-ed25519 AAAA... [comment]``."""
        parts = line.strip().split()
        if len(parts) < 2:
            raise UsageError("ssh public key: expected 'ssh-ed25519 AAAA... [comment]'")
        if parts[0] != "ssh-ed25519":
            raise UsageError(
                f"ssh public key: type {parts[0]} is not supported; use an ssh-ed25519 key"
            )
        try:
            blob = base64.b64decode(parts[1], validate=True)
        except (binascii.Error, ValueError):  # ValueError: a character outside ASCII
            raise UsageError("ssh public key: the key is not valid base64") from None
        return cls.from_ssh_blob(blob)

    @property
    def ssh_blob(self) -> bytes:
        """The SSH wire encoding of this key."""
        return ssh_string(SSH_ED25519) + ssh_string(self.raw)

    def openssh(self, comment: str = "") -> str:
        """The OpenSSH one-line form, with an optional comment."""
        line = "ssh-ed25519 " + base64.b64encode(self.ssh_blob).decode("ascii")
        return f"{line} {comment}" if comment else line

    @property
    def fingerprint(self) -> str:
        """``SHA256:<base64, no padding>``, exactly as ``ssh-keygen -l`` prints it."""
        digest = hashlib.sha256(self.ssh_blob).digest()
        return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")

    def verify(self, signature: bytes, message: bytes) -> None:
        """Raise :class:`VerificationError` unless ``signature`` is this key's over ``message``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except InvalidSignature:
            raise VerificationError("ed25519 signature does not verify") from None


class SigningKey:
    """An Ed25519 private key. Its bytes leave this object only for the key store."""

    __slots__ = ("_key",)

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> SigningKey:
        """A new random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """The key for a 32-byte seed (the form the key store keeps)."""
        if len(seed) != 32:
            raise UsageError("ed25519 private key: seed must be 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def seed(self) -> bytes:
        """The 32-byte seed; only the key store should ever ask for it."""
        from cryptography.hazmat.primitives import serialization

        return self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    @property
    def public(self) -> VerifyKey:
        """The matching public key."""
        from cryptography.hazmat.primitives import serialization

        return VerifyKey(
            self._key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        )

    def sign(self, message: bytes) -> bytes:
        """A 64-byte Ed25519 signature over ``message``."""
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"SigningKey({self.public.fingerprint})"
