"""X25519 recipients (``age1...``) and identities (``AGE-SECRET-KEY-1...``): their Bech32
text forms, wrapping a file key into an ``X25519`` stanza and finding the file key in a parsed
header (cf. filippo.io/age ``x25519.go``).

Its one job is the keys. Passphrase (scrypt), post-quantum and SSH recipients are not
implemented; a file that needs one is an :class:`AgeUnsupportedError`. It may import
:mod:`.errors`, :mod:`.primitives`, :mod:`.header`, :mod:`vault.crypto.bech32`,
:mod:`vault.errors` and ``cryptography``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from vault.crypto import bech32
from vault.crypto.age.errors import (
    AgeHeaderError,
    AgeHMACError,
    AgeNoMatchError,
    AgeUnsupportedError,
)
from vault.crypto.age.header import _b64decode_raw, _b64encode_raw, _Header, _header_mac, _Stanza
from vault.crypto.age.primitives import FILE_KEY_SIZE, TAG_SIZE, Rng, _hkdf
from vault.errors import UsageError

_X25519_INFO = b"age-encryption.org/v1/X25519"
# Native or common types this module cannot open: failing to match a file that carries one
# is "unsupported", not "wrong key". Other unknown types are ignored, as the spec requires.
_UNSUPPORTED_TYPES = frozenset(
    {"scrypt", "mlkem768x25519", "p256tag", "mlkem768p256tag", "ssh-ed25519", "ssh-rsa"}
)


# A fixed scalar is enough to spot a low-order point: every clamped scalar is a multiple of
# the cofactor, so any of them maps such a point to the all-zero shared secret.
_LOW_ORDER_PROBE = X25519PrivateKey.from_private_bytes(b"\x01" * 32)


@dataclass(frozen=True, repr=False)
class AgeRecipient:
    """An X25519 public key (``age1...``); construction checks it is a usable point."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise UsageError("age recipient: key must be 32 bytes")
        try:
            _LOW_ORDER_PROBE.exchange(X25519PublicKey.from_public_bytes(self.raw))
        except ValueError:
            raise UsageError("age recipient: key is a low-order point") from None

    @classmethod
    def parse(cls, s: str) -> AgeRecipient:
        """Parse an ``age1...`` string, as ``age-keygen -y`` prints it."""
        return _parse_recipient(s)

    def encode(self) -> str:
        """The ``age1...`` string."""
        return _encode_recipient(self.raw)

    @property
    def fingerprint(self) -> str:
        """``SHA256:<base64, no padding>`` of the ``age1...`` string: short enough to read out
        over the phone when an officer's age key is pinned (``--age-fingerprint``)."""
        digest = hashlib.sha256(self.encode().encode("ascii")).digest()
        return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")

    def __str__(self) -> str:
        return self.encode()

    def __repr__(self) -> str:
        return f"AgeRecipient({self.encode()!r})"

    def _wrap(self, file_key: bytes, rng: Rng) -> _Stanza:
        ephemeral = X25519PrivateKey.from_private_bytes(rng(32))
        share = ephemeral.public_key().public_bytes_raw()
        secret = ephemeral.exchange(X25519PublicKey.from_public_bytes(self.raw))
        key = _hkdf(secret, share + self.raw, _X25519_INFO)
        body = ChaCha20Poly1305(key).encrypt(bytes(12), file_key, None)
        return _Stanza("X25519", (_b64encode_raw(share).decode("ascii"),), body)


# A command reads the same few public keys many times (each key event of the history, each
# recipient of a package): their pure-Python Bech32 and the low-order check are done once per
# process. Only public keys are remembered; a string that does not parse is refused each time.
@functools.lru_cache(maxsize=4096)
def _parse_recipient(s: str) -> AgeRecipient:
    try:
        hrp, data = bech32.decode(s.strip())
    except bech32.Bech32Error as e:
        raise UsageError(f"age recipient: {e}") from None
    if hrp == "age1pq":
        raise UsageError("age recipient: post-quantum (age1pq1) recipients are not supported")
    if hrp != "age":
        raise UsageError("age recipient: must be lowercase and start with 'age1'")
    return AgeRecipient(data)


@functools.lru_cache(maxsize=4096)
def _encode_recipient(raw: bytes) -> str:
    return bech32.encode("age", raw)


class AgeIdentity:
    """An X25519 private key (``AGE-SECRET-KEY-1...``); its repr shows only the recipient."""

    __slots__ = ("_key", "_public", "recipient")

    recipient: AgeRecipient

    def __init__(self, key: X25519PrivateKey) -> None:
        self._key = key
        self._public = key.public_key().public_bytes_raw()
        self.recipient = AgeRecipient(self._public)

    @classmethod
    def generate(cls, *, rng: Rng = os.urandom) -> AgeIdentity:
        """A fresh identity from ``rng`` (the OS CSPRNG unless a test injects one)."""
        return cls.from_raw(rng(32))

    @classmethod
    def from_raw(cls, raw: bytes) -> AgeIdentity:
        """The identity whose 32-byte scalar is ``raw`` (as :meth:`raw` returns it)."""
        if len(raw) != 32:
            raise UsageError("age identity: key must be 32 bytes")
        return cls(X25519PrivateKey.from_private_bytes(bytes(raw)))

    @classmethod
    def parse(cls, s: str) -> AgeIdentity:
        """Parse an ``AGE-SECRET-KEY-1...`` string, as ``age-keygen`` writes it."""
        try:
            hrp, data = bech32.decode(s.strip())
        except bech32.Bech32Error as e:
            raise UsageError(f"age identity: {e}") from None
        if hrp == "AGE-SECRET-KEY-PQ-":
            raise UsageError("age identity: post-quantum identities are not supported")
        if hrp != "AGE-SECRET-KEY-":
            raise UsageError("age identity: must be uppercase and start with 'AGE-SECRET-KEY-1'")
        return cls.from_raw(data)

    def raw(self) -> bytes:
        """The 32-byte scalar, for the key store; never log it."""
        return self._key.private_bytes_raw()

    def encode(self) -> str:
        """The ``AGE-SECRET-KEY-1...`` string, for an identity file the user asked for."""
        return bech32.encode("AGE-SECRET-KEY-", self.raw())

    def identity_file(self, created_at: str) -> str:
        """An identity file as ``age-keygen`` writes it: ``# created:`` and ``# public key:``
        comment lines, then the secret key. Only for a file the user asked for.
        """
        return (
            f"# created: {created_at}\n# public key: {self.recipient.encode()}\n{self.encode()}\n"
        )

    def __repr__(self) -> str:
        return f"AgeIdentity(recipient={self.recipient.encode()!r})"

    def _unwrap(self, share: bytes, body: bytes) -> bytes | None:
        try:
            secret = self._key.exchange(X25519PublicKey.from_public_bytes(share))
        except ValueError:
            raise AgeHeaderError("age header: x25519 stanza share is a low-order point") from None
        key = _hkdf(secret, share + self._public, _X25519_INFO)
        try:
            return ChaCha20Poly1305(key).decrypt(bytes(12), body, None)
        except InvalidTag:
            return None


def _x25519_stanzas(header: _Header) -> list[tuple[bytes, bytes]]:
    """Share and body of each X25519 stanza, each checked before any key touches it."""
    found = []
    for s in header.stanzas:
        if s.type != "X25519":
            continue
        if len(s.args) != 1:
            raise AgeHeaderError("age header: x25519 stanza must have exactly one argument")
        try:
            share = _b64decode_raw(s.args[0].encode("ascii"))
        except ValueError:
            raise AgeHeaderError("age header: x25519 share is not canonical base64") from None
        if len(share) != 32:
            raise AgeHeaderError("age header: x25519 share is not 32 bytes")
        # checked before decrypting, so a wrong length cannot become a partitioning oracle
        if len(s.body) != FILE_KEY_SIZE + TAG_SIZE:
            raise AgeHeaderError("age header: x25519 stanza body is not 32 bytes")
        found.append((share, s.body))
    return found


def _unwrap_file_key(header: _Header, identities: Sequence[AgeIdentity]) -> bytes:
    types = [s.type for s in header.stanzas]
    if "scrypt" in types and len(types) != 1:
        raise AgeHeaderError("age header: an scrypt stanza must be the only stanza")
    stanzas = _x25519_stanzas(header)
    for identity in identities:
        for share, body in stanzas:
            file_key = identity._unwrap(share, body)
            if file_key is not None:
                try:
                    _header_mac(file_key, header.signed).verify(header.mac)
                except InvalidSignature:
                    raise AgeHMACError("age header: mac does not verify") from None
                return file_key
    unsupported = sorted(_UNSUPPORTED_TYPES.intersection(types))
    if unsupported:
        raise AgeUnsupportedError(
            "age: no identity matched, and the file has stanzas this build cannot open"
            f" ({', '.join(unsupported)}): try the age tool"
        )
    raise AgeNoMatchError("age: no identity matched: is the file for another key?")
