"""age v1 file encryption (https://age-encryption.org/v1), X25519 recipients only.

    >>> import io
    >>> identity = AgeIdentity.generate()
    >>> sealed = io.BytesIO()
    >>> with AgeWriter(sealed, [identity.recipient]) as w:
    ...     w.write(b"exhibit 7")
    9
    >>> _ = sealed.seek(0)
    >>> AgeReader(sealed, [identity]).read()
    b'exhibit 7'

Files written here are read by the stock ``age`` tool and the other way round. Both ends
stream in 64 KiB chunks with bounded memory: :class:`AgeWriter` and :class:`AgeReader` are
ordinary binary file objects (``tarfile.open(fileobj=..., mode="w|")`` works on them), and
:func:`encrypt` / :func:`decrypt` copy one stream to another.

Reading is strict, as the spec and the C2SP test vectors demand, and every failure is an
:class:`AgeError` of one kind: the header does not parse (:class:`AgeHeaderError`), no
identity opens a stanza (:class:`AgeNoMatchError`), the file asks for a recipient type this
module does not implement (:class:`AgeUnsupportedError`), the header MAC is wrong
(:class:`AgeHMACError`), the payload is damaged or truncated (:class:`AgePayloadError`), or the
ASCII armor is malformed (:class:`AgeArmorError`). A chunk's plaintext is released only once
that chunk has authenticated, and a damaged file fails exactly where the damage is found, so
a reader gets the intact prefix and then the error; a file is known to be complete only when
a read has returned ``b""``.

Armored input (``-----BEGIN AGE ENCRYPTED FILE-----``) is detected and decoded as it streams;
``AgeWriter(..., armor=True)`` writes it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from vault.crypto import bech32
from vault.errors import DecryptionError, UsageError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = [
    "AgeArmorError",
    "AgeError",
    "AgeHMACError",
    "AgeHeaderError",
    "AgeIdentity",
    "AgeNoMatchError",
    "AgePayloadError",
    "AgeReader",
    "AgeRecipient",
    "AgeUnsupportedError",
    "AgeWriter",
    "decrypt",
    "encrypt",
]


class AgeError(DecryptionError):
    """An age file cannot be decrypted; the subclass says at which stage it failed."""


class AgeHeaderError(AgeError):
    """The header (version line, stanzas, MAC line, payload nonce) is malformed."""


class AgeHMACError(AgeError):
    """A file key was unwrapped but the header MAC does not verify."""


class AgePayloadError(AgeError):
    """The payload is damaged, truncated, reordered or followed by extra data."""


class AgeNoMatchError(AgeError):
    """No identity given opens any recipient stanza of the file."""


class AgeArmorError(AgeError):
    """The ASCII armor around the file is malformed."""


class AgeUnsupportedError(AgeError):
    """The file is for a recipient type this module does not implement (scrypt, PQ, SSH)."""


Rng = Callable[[int], bytes]

CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
ENC_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
FILE_KEY_SIZE = 16
NONCE_SIZE = 16
MAX_HEADER_SIZE = 1 << 20
MAX_STANZAS = 1024

_INTRO = b"age-encryption.org/v1\n"
_VERSION_PREFIX = b"age-encryption.org/"
_X25519_INFO = b"age-encryption.org/v1/X25519"
_ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
_ARMOR_END = b"-----END AGE ENCRYPTED FILE-----"
_COLUMNS = 64
_BYTES_PER_LINE = _COLUMNS // 4 * 3
_MAX_ARMOR_WHITESPACE = 1024
_WHITESPACE = frozenset(b" \t\r\n\v\f")
# Native or common types this module cannot open: failing to match a file that carries one
# is "unsupported", not "wrong key". Other unknown types are ignored, as the spec requires.
_UNSUPPORTED_TYPES = frozenset(
    {"scrypt", "mlkem768x25519", "p256tag", "mlkem768p256tag", "ssh-ed25519", "ssh-rsa"}
)
# 16 chunks a round trip to the source or sink: large enough that syscalls and Python
# overhead vanish next to ChaCha20, small enough to stay a bounded ~1 MiB.
_BATCH_CHUNKS = 16
_LOOKAHEAD_BLOCK = 64 * 1024
_MAX_COUNTER = 1 << 88
_HAS_INTO = hasattr(ChaCha20Poly1305, "encrypt_into")  # absent from older cryptography

_RAW_B64 = re.compile(rb"[A-Za-z0-9+/]*")
_FULL_LINES_B64 = re.compile(rb"[A-Za-z0-9+/]+")
_PADDED_B64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_ARGUMENT = re.compile(rb"[\x21-\x7e]+")


def _b64encode_raw(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _b64decode_raw(text: bytes) -> bytes:
    """Canonical unpadded base64, as the header uses; ValueError for anything else."""
    if len(text) % 4 == 1 or not _RAW_B64.fullmatch(text):
        raise ValueError("not unpadded base64")
    data = base64.b64decode(text + b"=" * (-len(text) % 4))
    # Python ignores the unused low bits of the last character; the spec does not.
    if _b64encode_raw(data) != text:
        raise ValueError("not canonical base64")
    return data


def _b64decode_padded(text: bytes) -> bytes:
    """Canonical padded base64, as the armor uses; ValueError for anything else."""
    if len(text) % 4 or not _PADDED_B64.fullmatch(text):
        raise ValueError("not padded base64")
    try:
        data = base64.b64decode(text, validate=True)
    except binascii.Error as e:
        raise ValueError("not padded base64") from e
    if base64.b64encode(data) != text:
        raise ValueError("not canonical base64")
    return data


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _header_mac(file_key: bytes, header: bytes) -> HMAC:
    mac = HMAC(_hkdf(file_key, b"", b"header"), hashes.SHA256())
    mac.update(header)
    return mac


def _stream_nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


# A fixed scalar is enough to spot a low-order point: every clamped scalar is a multiple of
# the cofactor, so any of them maps such a point to the all-zero shared secret.
_LOW_ORDER_PROBE = X25519PrivateKey.from_private_bytes(b"\x01" * 32)


# --- keys ----------------------------------------------------------------------------------


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
        try:
            hrp, data = bech32.decode(s.strip())
        except bech32.Bech32Error as e:
            raise UsageError(f"age recipient: {e}") from None
        if hrp == "age1pq":
            raise UsageError("age recipient: post-quantum (age1pq1) recipients are not supported")
        if hrp != "age":
            raise UsageError("age recipient: must be lowercase and start with 'age1'")
        return cls(data)

    def encode(self) -> str:
        """The ``age1...`` string."""
        return bech32.encode("age", self.raw)

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


# --- header --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stanza:
    type: str
    args: tuple[str, ...]
    body: bytes

    def encode(self) -> bytes:
        args = " ".join((self.type, *self.args)).encode("ascii")
        text = _b64encode_raw(self.body)
        lines = [text[i : i + _COLUMNS] for i in range(0, len(text), _COLUMNS)]
        if len(text) % _COLUMNS == 0:
            # the body must end with a short line, so a body of full lines gets an empty one
            lines.append(b"")
        return b"-> " + args + b"\n" + b"".join(line + b"\n" for line in lines)


@dataclass(frozen=True)
class _Header:
    stanzas: tuple[_Stanza, ...]
    mac: bytes
    signed: bytes  # the header up to and including "---", which the MAC covers


def _encode_header(file_key: bytes, recipients: Iterable[AgeRecipient], rng: Rng) -> bytes:
    signed = _INTRO + b"".join(r._wrap(file_key, rng).encode() for r in recipients) + b"---"
    mac = _header_mac(file_key, signed).finalize()
    return signed + b" " + _b64encode_raw(mac) + b"\n"


def _parse_header(src: _Lookahead) -> _Header:
    seen = bytearray()

    def line() -> bytes:
        budget = MAX_HEADER_SIZE - len(seen)
        text = src.readline(budget)
        if not text.endswith(b"\n"):
            if len(text) >= budget:
                raise AgeHeaderError("age header: larger than 1 MiB")
            if not seen and not text:
                raise AgeHeaderError("age header: the file is empty")
            raise AgeHeaderError("age header: truncated before the mac line")
        return text

    first = line()
    if first != _INTRO:
        if first == b"age-encryption.org/v1\r\n":
            raise AgeHeaderError("age header: lines end in CRLF, was the file opened as text?")
        if first.startswith(_VERSION_PREFIX):
            raise AgeHeaderError("age header: unsupported version, this reads v1 only")
        raise AgeHeaderError("age header: missing version line 'age-encryption.org/v1'")
    seen += first
    stanzas: list[_Stanza] = []
    while True:
        text = line()
        if text.startswith(b"---"):
            parts = text[:-1].split(b" ")
            if parts[0] != b"---" or len(parts) != 2:
                raise AgeHeaderError("age header: malformed mac line")
            try:
                mac = _b64decode_raw(parts[1])
            except ValueError:
                raise AgeHeaderError("age header: mac is not canonical base64") from None
            if len(mac) != 32:
                raise AgeHeaderError("age header: mac is not 32 bytes")
            if not stanzas:
                raise AgeHeaderError("age header: no recipient stanza")
            return _Header(tuple(stanzas), mac, bytes(seen) + b"---")
        if not text.startswith(b"->"):
            raise AgeHeaderError("age header: line is neither a stanza nor the mac line")
        seen += text
        parts = text[:-1].split(b" ")
        if parts[0] != b"->" or len(parts) < 2 or not all(map(_ARGUMENT.fullmatch, parts[1:])):
            raise AgeHeaderError("age header: malformed stanza line")
        if len(stanzas) == MAX_STANZAS:
            raise AgeHeaderError(f"age header: more than {MAX_STANZAS} stanzas")
        body = bytearray()
        while True:
            text = line()
            seen += text
            if len(text) > _COLUMNS + 1:
                raise AgeHeaderError("age header: stanza body line longer than 64 columns")
            try:
                body += _b64decode_raw(text[:-1])
            except ValueError:
                raise AgeHeaderError("age header: stanza body is not canonical base64") from None
            if len(text) <= _COLUMNS:
                break
        args = tuple(a.decode("ascii") for a in parts[1:])
        stanzas.append(_Stanza(args[0], args[1:], bytes(body)))


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


# --- byte sources --------------------------------------------------------------------------


Fill = Callable[[memoryview], int]


def _fill_from(src: BinaryIO) -> Fill:
    readinto = getattr(src, "readinto", None)
    if readinto is None:

        def fill(mv: memoryview) -> int:
            data = src.read(len(mv))
            mv[: len(data)] = data
            return len(data)

        return fill

    def fill_into(mv: memoryview) -> int:
        n = readinto(mv)
        if n is None:
            # 0 would read as end of file, which a truncated-looking file must not fake
            raise BlockingIOError("age: source is non-blocking and has no data now")
        return int(n)

    return fill_into


class _Lookahead:
    """A byte source with the look-ahead the header and armor parsers need.

    Bytes read ahead are served first; once they are gone, ``readinto`` hands the caller's
    buffer straight to the source, so payload reads stay large and copy-free.
    """

    def __init__(self, fill: Fill) -> None:
        self._fill = fill
        self._buf = bytearray()
        self._eof = False

    def _more(self) -> bool:
        if self._eof:
            return False
        block = bytearray(_LOOKAHEAD_BLOCK)
        n = self._fill(memoryview(block))
        if n == 0:
            self._eof = True
            return False
        self._buf += memoryview(block)[:n]
        return True

    def _take(self, n: int) -> bytes:
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def peek(self, n: int) -> bytes:
        while len(self._buf) < n and self._more():
            pass
        return bytes(self._buf[:n])

    def readline(self, limit: int) -> bytes:
        """Up to and including the next LF, at most ``limit`` bytes, or the rest at EOF."""
        searched = 0
        while True:
            i = self._buf.find(b"\n", searched, limit)
            if i >= 0:
                return self._take(i + 1)
            if len(self._buf) >= limit:
                return self._take(limit)
            searched = len(self._buf)
            if not self._more():
                return self._take(len(self._buf))

    def read(self, n: int) -> bytes:
        while len(self._buf) < n and self._more():
            pass
        return self._take(n)

    def readinto(self, mv: memoryview) -> int:
        if self._buf:
            n = min(len(self._buf), len(mv))
            mv[:n] = self._buf[:n]
            del self._buf[:n]
            return n
        if self._eof:
            return 0
        n = self._fill(mv)
        if n == 0:
            self._eof = True
        return n


class _ArmorDecoder:
    """Strict streaming decoder of the PEM-like armor (RFC 7468 strict, 64 columns).

    Allowed: whitespace before and after the block, LF or CRLF line ends, a missing final
    line end. Everything else (empty or over-long lines, short lines before the last,
    non-canonical base64, headers, data outside the block) is an :class:`AgeArmorError`.
    Errors found after some bytes were decoded are held back until those bytes are taken,
    so the payload layer sees every intact chunk before the failure.
    """

    def __init__(self, src: _Lookahead) -> None:
        self._src = src
        self._started = False
        self._ended = False
        self._last_line_seen = False
        self._pending = b""
        self._pending_pos = 0
        self._run = 1  # lines the fast path may take: doubles on success, resets on a miss
        self._error: AgeArmorError | None = None

    def readinto(self, mv: memoryview) -> int:
        n = 0
        while n < len(mv):
            if self._pending_pos < len(self._pending):
                k = min(len(self._pending) - self._pending_pos, len(mv) - n)
                mv[n : n + k] = self._pending[self._pending_pos : self._pending_pos + k]
                self._pending_pos += k
                n += k
                continue
            if self._error is not None:
                if n:
                    break
                raise self._error
            if self._ended:
                break
            self._pending_pos = 0
            try:
                self._pending = self._full_lines(len(mv) - n) or self._next_line()
            except AgeArmorError as e:
                self._pending = b""
                self._error = e
        return n

    def _full_lines(self, wanted: int) -> bytes:
        """Decode a run of full 64-column lines at once; b"" leaves the line to _next_line.

        Line-by-line decoding in Python manages some 16 MB/s; this path checks the line
        ends by stride and the alphabet by one regex, so armored files stream at speed.
        It takes only lines the careful path would take as full lines in the middle.
        """
        if not self._started or self._last_line_seen:
            return b""
        # after a miss, start again from one line, so input built to miss costs no more
        # than a line's worth of look-ahead per line
        lines = min(max(1, wanted // _BYTES_PER_LINE), self._run)
        block = self._src.peek(lines * (_COLUMNS + 2))
        # LF and CRLF may mix; once every CRLF is an LF, each full line is 65 bytes
        flat = block.replace(b"\r\n", b"\n")
        ends = flat[_COLUMNS :: _COLUMNS + 1]
        lines = min(lines, len(ends) - len(ends.lstrip(b"\n")))
        text = flat[: lines * (_COLUMNS + 1)].replace(b"\n", b"")
        # a line holding "=" is the last (it decodes short), left to the careful path
        if not lines or len(text) != lines * _COLUMNS or not _FULL_LINES_B64.fullmatch(text):
            self._run = 1
            return b""
        self._run = min(2 * self._run, 1024)
        rest = block.split(b"\n", lines)[lines]
        self._src.read(len(block) - len(rest))
        return base64.b64decode(text)

    def _line(self) -> tuple[bytes, bool]:
        raw = self._src.readline(_COLUMNS + 2)
        ended = raw.endswith(b"\n")
        text = raw[:-1] if ended else raw
        if text.endswith(b"\r") and ended:
            text = text[:-1]
        return text, ended

    def _next_line(self) -> bytes:
        if not self._started:
            self._skip_whitespace()
            text, ended = self._line()
            if text != _ARMOR_BEGIN or not ended:
                if text.startswith(b"-----"):
                    raise AgeArmorError(f"age armor: first line is not {_ARMOR_BEGIN.decode()}")
                raise AgeArmorError("age: not an age file: no version line and no armor")
            self._started = True
        text, ended = self._line()
        if text == _ARMOR_END:
            self._drain_trailing()
            self._ended = True
            return b""
        if not text and not ended:
            raise AgeArmorError(f"age armor: missing {_ARMOR_END.decode()} line")
        if self._last_line_seen:
            raise AgeArmorError("age armor: a short line must be followed by the end line")
        if len(text) > _COLUMNS:
            raise AgeArmorError("age armor: line longer than 64 columns")
        if not text:
            raise AgeArmorError("age armor: empty line")
        if not ended:
            raise AgeArmorError(f"age armor: missing {_ARMOR_END.decode()} line")
        try:
            data = _b64decode_padded(text)
        except ValueError:
            raise AgeArmorError("age armor: line is not canonical padded base64") from None
        if len(data) < _BYTES_PER_LINE:
            self._last_line_seen = True
        return data

    def _skip_whitespace(self) -> None:
        for _ in range(_MAX_ARMOR_WHITESPACE + 1):
            head = self._src.peek(1)
            if not head or head[0] not in _WHITESPACE:
                return
            self._src.read(1)
        raise AgeArmorError("age armor: too much leading whitespace")

    def _drain_trailing(self) -> None:
        rest = self._src.read(_MAX_ARMOR_WHITESPACE + 1)
        if any(c not in _WHITESPACE for c in rest):
            raise AgeArmorError("age armor: data after the end line")
        if len(rest) > _MAX_ARMOR_WHITESPACE:
            raise AgeArmorError("age armor: too much trailing whitespace")


def _open_source(src: BinaryIO) -> _Lookahead:
    """The binary age file in ``src``, decoding the armor if it starts as armor does."""
    raw = _Lookahead(_fill_from(src))
    head = raw.peek(len(_VERSION_PREFIX))
    if _VERSION_PREFIX.startswith(head):
        # including an empty or cut-short file, which the header parser then reports
        return raw
    return _Lookahead(_ArmorDecoder(raw).readinto)


# --- payload -------------------------------------------------------------------------------


class _PayloadOpener:
    """STREAM decryption: one authenticated chunk at a time, each failure where it is found."""

    def __init__(self, src: _Lookahead, key: bytes) -> None:
        self._src = src
        self._aead = ChaCha20Poly1305(key)
        self._buf = bytearray(_BATCH_CHUNKS * ENC_CHUNK_SIZE + 1)
        self._mv = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._eof = False
        self._counter = 0
        self._last_opened = False
        self._finished = False

    def _fill(self) -> None:
        """Buffer one full chunk plus one byte, or all that is left: enough to spot the end."""
        if self._eof or self._end - self._start > ENC_CHUNK_SIZE:
            return
        if self._start:
            tail = self._end - self._start
            self._buf[:tail] = self._buf[self._start : self._end]
            self._start, self._end = 0, tail
        while self._end - self._start <= ENC_CHUNK_SIZE:
            n = self._src.readinto(self._mv[self._end :])
            if n == 0:
                self._eof = True
                return
            self._end += n

    def _open(self, ct: memoryview, out: memoryview, last: bool) -> bool:
        nonce = _stream_nonce(self._counter, last)
        dst = out[: len(ct) - TAG_SIZE]
        try:
            if _HAS_INTO:
                self._aead.decrypt_into(nonce, ct, None, dst)
            else:
                dst[:] = self._aead.decrypt(nonce, ct, None)
        except InvalidTag:
            # decrypt_into leaves unauthenticated plaintext behind; nobody may see it
            dst[:] = bytes(len(dst))
            return False
        return True

    def next_chunk(self, out: memoryview) -> int:
        """Decrypt the next chunk into ``out`` (at least 64 KiB); 0 at a verified end."""
        while True:
            if self._finished:
                return 0
            self._fill()
            avail = self._end - self._start
            if self._last_opened:
                if avail:
                    raise AgePayloadError("age payload: data after the final chunk")
                self._finished = True
                return 0
            if avail == 0:
                raise AgePayloadError("age payload: truncated, the final chunk is missing")
            if self._counter == _MAX_COUNTER:
                raise AgePayloadError("age payload: more chunks than the nonce can count")
            size = min(avail, ENC_CHUNK_SIZE)
            ct = self._mv[self._start : self._start + size]
            if size < ENC_CHUNK_SIZE:
                if size < TAG_SIZE:
                    raise AgePayloadError("age payload: final chunk shorter than its tag")
                if size == TAG_SIZE and self._counter:
                    raise AgePayloadError("age payload: final chunk is empty")
                last = True
                ok = self._open(ct, out, last=True)
            else:
                # a full chunk may still be the final one; only its tag can tell
                last = False
                ok = self._open(ct, out, last=False)
                if not ok:
                    last = True
                    ok = self._open(ct, out, last=True)
            if not ok:
                raise AgePayloadError(f"age payload: chunk {self._counter} does not authenticate")
            self._start += size
            self._counter += 1
            self._last_opened = last
            if size > TAG_SIZE:
                return size - TAG_SIZE
            # an empty payload: go round once more to check that nothing follows it


# --- public file objects -------------------------------------------------------------------


def _write_all(dst: BinaryIO, data: memoryview) -> None:
    done = 0
    while done < len(data):
        n = dst.write(data[done:])
        if n is None:
            raise BlockingIOError("age: destination is non-blocking and full")
        done += n


class _RawSink:
    def __init__(self, dst: BinaryIO) -> None:
        self._dst = dst

    def write(self, data: memoryview) -> None:
        _write_all(self._dst, data)

    def close(self) -> None:
        pass


class _ArmorSink:
    """Armor encoder: 48 bytes a line, padded base64, the final line short or full."""

    def __init__(self, dst: BinaryIO) -> None:
        self._dst = dst
        self._carry = b""
        _write_all(dst, memoryview(_ARMOR_BEGIN + b"\n"))

    def write(self, data: memoryview) -> None:
        joined = self._carry + bytes(data)
        whole = len(joined) - len(joined) % _BYTES_PER_LINE
        self._carry = joined[whole:]
        text = base64.b64encode(joined[:whole])
        lines = b"".join(text[i : i + _COLUMNS] + b"\n" for i in range(0, len(text), _COLUMNS))
        _write_all(self._dst, memoryview(lines))

    def close(self) -> None:
        tail = base64.b64encode(self._carry) + b"\n" if self._carry else b""
        _write_all(self._dst, memoryview(tail + _ARMOR_END + b"\n"))


class AgeWriter(io.BufferedIOBase):
    """A writable binary file that encrypts to ``recipients`` into ``dst``.

    The header goes out on construction. ``close()`` (or leaving the ``with`` block normally)
    seals the final chunk and flushes ``dst`` without closing it. Leaving the ``with`` block
    by an exception, or dropping the writer unclosed, leaves the final chunk out on purpose,
    so no reader can mistake the truncated output for a complete file.
    """

    def __init__(
        self,
        dst: BinaryIO,
        recipients: Sequence[AgeRecipient],
        *,
        armor: bool = False,
        rng: Rng = os.urandom,
    ) -> None:
        super().__init__()
        self._sealed = True  # until the header is out, there is nothing to finish
        if not recipients:
            raise UsageError("age: at least one recipient is required")
        self._dst = dst
        self._sink: _RawSink | _ArmorSink = _ArmorSink(dst) if armor else _RawSink(dst)
        file_key = rng(FILE_KEY_SIZE)
        header = _encode_header(file_key, recipients, rng)
        nonce = rng(NONCE_SIZE)
        self._sink.write(memoryview(header + nonce))
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._pt = bytearray(CHUNK_SIZE)
        self._pt_fill = 0
        self._pt_used = 0  # high-water mark of _pt: what _wipe must clear
        # The output batch is allocated on the first seal, and a file sealed in a single
        # chunk gets a buffer of just its size: a megabyte zeroed and freed per file was
        # most of the cost of ingesting many small files.
        self._out = bytearray()
        self._out_mv = memoryview(self._out)
        self._out_fill = 0
        # Two batches taken in turn: ``dst`` may go on reading a batch it was handed (on a
        # helper thread, say) until its next write() returns; this refills the other one.
        self._spare = bytearray()
        self._spare_mv = memoryview(self._spare)
        self._counter = 0
        self._written = 0
        self._sealed = False

    def writable(self) -> bool:
        """Always true: this is a write-only stream."""
        return True

    def tell(self) -> int:
        """Plaintext bytes accepted so far."""
        return self._written

    def _seal(self, pt: memoryview, last: bool) -> None:
        if self._counter == _MAX_COUNTER:
            raise UsageError("age: plaintext too long for one file")
        need = len(pt) + TAG_SIZE
        if self._out_fill + need > len(self._out):
            self._drain()
            if need > len(self._out):
                self._out_mv.release()
                self._out = bytearray(need if last else _BATCH_CHUNKS * ENC_CHUNK_SIZE)
                self._out_mv = memoryview(self._out)
        nonce = _stream_nonce(self._counter, last)
        end = self._out_fill + need
        if _HAS_INTO:
            self._aead.encrypt_into(nonce, pt, None, self._out_mv[self._out_fill : end])
        else:
            self._out_mv[self._out_fill : end] = self._aead.encrypt(nonce, pt, None)
        self._out_fill = end
        self._counter += 1

    def _drain(self) -> None:
        if self._out_fill:
            self._sink.write(self._out_mv[: self._out_fill])
            self._out_fill = 0
            self._out, self._spare = self._spare, self._out
            self._out_mv, self._spare_mv = self._spare_mv, self._out_mv

    def write(self, data: ReadableBuffer, /) -> int:
        """Encrypt and buffer ``data`` (bytes-like); returns its full length."""
        if self.closed:
            raise ValueError("write to a closed AgeWriter")
        if self._sealed:
            raise ValueError("write to an AgeWriter that has been finished")
        # released on the way out, even by an exception, so the caller may resize ``data``
        with memoryview(data) as view, view.cast("B") as mv:
            return self._write(mv)

    def _write(self, mv: memoryview) -> int:
        total = len(mv)
        pos = 0
        while pos < total:
            # a full chunk is sealed as non-final only once more data proves it is not last
            if self._pt_fill == CHUNK_SIZE:
                self._seal(memoryview(self._pt), last=False)
                self._pt_fill = 0
            if self._pt_fill == 0 and total - pos > CHUNK_SIZE:
                self._seal(mv[pos : pos + CHUNK_SIZE], last=False)
                pos += CHUNK_SIZE
                continue
            take = min(CHUNK_SIZE - self._pt_fill, total - pos)
            self._pt[self._pt_fill : self._pt_fill + take] = mv[pos : pos + take]
            self._pt_fill += take
            self._pt_used = max(self._pt_used, self._pt_fill)
            pos += take
        self._written += total
        return total

    def flush(self) -> None:
        """Write out every sealed chunk and flush ``dst``; the open chunk stays buffered."""
        if self.closed:
            return
        if not self._sealed:
            self._drain()
        flush = getattr(getattr(self, "_dst", None), "flush", None)
        if flush is not None:
            flush()

    def close(self) -> None:
        """Seal the final chunk, flush ``dst`` and leave it open. Idempotent."""
        if self.closed:
            return
        try:
            if not self._sealed:
                self._seal(memoryview(self._pt)[: self._pt_fill], last=True)
                self._sealed = True
                self._drain()
                self._sink.close()
                self.flush()
        finally:
            self._wipe()
            super().close()

    def _abandon(self) -> None:
        if not self._sealed:
            self._sealed = True
            self._wipe()

    def _wipe(self) -> None:
        if hasattr(self, "_pt"):
            # Only the bytes ever filled can hold plaintext.
            self._pt[: self._pt_used] = bytes(self._pt_used)
            self._pt_fill = 0
            self._out_fill = 0

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._abandon()
        self.close()

    def __del__(self) -> None:
        if hasattr(self, "_sealed"):
            self._abandon()
        super().__del__()


class AgeReader(io.BufferedIOBase):
    """A readable binary file of the plaintext of the age file in ``src``.

    Construction reads the header, finds the file key with ``identities`` and verifies the
    header MAC, raising the matching :class:`AgeError`. Reads then release plaintext one
    authenticated chunk at a time. When a read meets a failure after it already gathered
    plaintext, it returns that plaintext and the next read raises (``read()`` with no size,
    which promises everything, raises at once). ``close()`` leaves ``src`` open.
    """

    def __init__(self, src: BinaryIO, identities: Sequence[AgeIdentity]) -> None:
        super().__init__()
        source = _open_source(src)
        header = _parse_header(source)
        file_key = _unwrap_file_key(header, identities)
        nonce = source.read(NONCE_SIZE)
        if len(nonce) != NONCE_SIZE:
            raise AgeHeaderError("age header: payload nonce is truncated")
        self._opener = _PayloadOpener(source, _hkdf(file_key, nonce, b"payload"))
        self._pt = bytearray(CHUNK_SIZE)
        self._pt_mv = memoryview(self._pt)
        self._pos = 0
        self._end = 0
        self._at_eof = False
        self._error: AgeError | None = None

    def readable(self) -> bool:
        """Always true: this is a read-only stream."""
        return True

    def _refill(self) -> bool:
        """Load the next chunk; False at the verified end of the file."""
        if self._at_eof:
            return False
        if self._error is not None:
            raise self._error.with_traceback(None)
        try:
            n = self._opener.next_chunk(self._pt_mv)
        except AgeError as e:
            self._error = e
            raise
        self._pos, self._end = 0, n
        self._at_eof = n == 0
        return not self._at_eof

    def _readinto(self, buffer: WriteableBuffer, one_chunk: bool) -> int:
        if self.closed:
            raise ValueError("read from a closed AgeReader")
        # released on the way out: a stored error's traceback must not pin ``buffer``
        with memoryview(buffer) as view, view.cast("B") as mv:
            return self._fill_view(mv, one_chunk)

    def _fill_view(self, mv: memoryview, one_chunk: bool) -> int:
        n = 0
        while n < len(mv):
            if self._pos == self._end:
                if n and (one_chunk or self._error is not None):
                    break
                try:
                    if not self._refill():
                        break
                except AgeError:
                    if n:
                        break
                    raise
            k = min(self._end - self._pos, len(mv) - n)
            mv[n : n + k] = self._pt_mv[self._pos : self._pos + k]
            self._pos += k
            n += k
        return n

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        """Fill ``buffer`` with plaintext; fewer bytes only at the end or before an error."""
        return self._readinto(buffer, one_chunk=False)

    def readinto1(self, buffer: WriteableBuffer, /) -> int:
        """Like :meth:`readinto`, but decrypt at most one more chunk."""
        return self._readinto(buffer, one_chunk=True)

    def read(self, size: int | None = -1, /) -> bytes:
        """Up to ``size`` plaintext bytes; all of it (or the error) when ``size`` is -1."""
        if size is None or size < 0:
            parts = []
            while chunk := self.read1(CHUNK_SIZE):
                parts.append(chunk)
            return b"".join(parts)
        buf = bytearray(size)
        n = self.readinto(buf)
        del buf[n:]
        return bytes(buf)

    def read1(self, size: int = -1, /) -> bytes:
        """Up to ``size`` plaintext bytes, decrypting at most one more chunk."""
        buf = bytearray(CHUNK_SIZE if size < 0 else size)
        n = self.readinto1(buf)
        del buf[n:]
        return bytes(buf)

    def close(self) -> None:
        """Forget the buffered plaintext; ``src`` stays open."""
        if hasattr(self, "_pt"):
            self._pt[:] = bytes(len(self._pt))
            self._pos = self._end = 0
        super().close()

    def _copy_to(self, dst: BinaryIO) -> int:
        """Decrypt everything left into ``dst``, writing each batch once it authenticated."""
        out = bytearray(_BATCH_CHUNKS * CHUNK_SIZE)
        mv = memoryview(out)
        total = 0
        fill = 0
        try:
            while True:
                if fill + CHUNK_SIZE > len(out):
                    _write_all(dst, mv[:fill])
                    total += fill
                    fill = 0
                n = self._opener.next_chunk(mv[fill : fill + CHUNK_SIZE])
                if n == 0:
                    break
                fill += n
        except AgeError:
            # what authenticated goes out first, as a chunk-at-a-time reader would see it
            _write_all(dst, mv[:fill])
            raise
        else:
            _write_all(dst, mv[:fill])
        finally:
            out[:] = bytes(len(out))
        return total + fill


def encrypt(
    src: BinaryIO,
    dst: BinaryIO,
    recipients: Sequence[AgeRecipient],
    *,
    armor: bool = False,
) -> int:
    """Encrypt all of ``src`` to ``recipients`` into ``dst``; returns the plaintext size."""
    buf = bytearray(_BATCH_CHUNKS * CHUNK_SIZE)
    mv = memoryview(buf)
    fill = _fill_from(src)
    total = 0
    try:
        with AgeWriter(dst, recipients, armor=armor) as writer:
            while n := fill(mv):
                writer.write(mv[:n])
                total += n
    finally:
        buf[:] = bytes(len(buf))
    return total


def decrypt(src: BinaryIO, dst: BinaryIO, identities: Sequence[AgeIdentity]) -> int:
    """Decrypt the age file in ``src`` into ``dst``; returns the plaintext size.

    On an :class:`AgeError`, ``dst`` holds the plaintext that authenticated before it and
    must be discarded.
    """
    return AgeReader(src, identities)._copy_to(dst)
