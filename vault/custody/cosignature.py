"""Cosignatures of checkpoints (C2SP tlog-cosignature, Ed25519 ``cosignature/v1``).

    >>> from vault.crypto.keys import SigningKey
    >>> from vault.custody.note import Checkpoint, NoteSigner, sign_checkpoint
    >>> log_key, officer = SigningKey.from_seed(bytes(32)), SigningKey.from_seed(bytes([1]) * 32)
    >>> note = sign_checkpoint(Checkpoint("evault/example", 3, bytes(32)),
    ...                        NoteSigner("evault/example", log_key))
    >>> cosigner = Cosigner.for_key(witness_name("ICC-OTP"), officer.public)
    >>> cosigned = cosign(note, witness_name("ICC-OTP"), officer, 1796547600)
    >>> found = open_cosignature(cosigned, cosigner)
    >>> found.checkpoint.size, found.timestamp, found.name
    (3, 1796547600, 'evault-witness/ICC-OTP')

A recipient that acknowledges a package *witnesses* the sender's log: it appends to the
checkpoint note the envelope carried one more signature line,

    — <name> base64(key ID || u64 big-endian timestamp || Ed25519 signature)

where the key ID is SHA-256(name || 0x0A || 0x04 || public key)[:4] and the signature is over
``"cosignature/v1\\ntime <timestamp>\\n"`` followed by the checkpoint text (the note without its
signature lines), exactly as the spec says. The note stays a valid signed note: readers that
do not know the cosigner skip the line. The name is ``evault-witness/<body id>``: which body
vouches, in the words of the sender who addressed the package to it.

What a cosignature states here: at ``timestamp`` the body's officer held a package whose
signed envelope carried this checkpoint of the sender's log. A recipient sees only the
checkpoints of the packages it opens and keeps no proofs between them, so it does not make
the spec's further claim that this is the largest consistent tree head it has observed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from vault.crypto.keys import SigningKey, VerifyKey
from vault.custody.note import (
    KEY_ID_SIZE,
    Checkpoint,
    _decode_note,
    _name_problem,
    _parse_signature_line,
    open_note,
)
from vault.errors import UsageError, VerificationError

COSIGNATURE_TYPE = b"\x04"  # Ed25519 cosignature/v1, as the spec numbers it
COSIGNATURE_HEADER = "cosignature/v1"
WITNESS_PREFIX = "evault-witness/"
LAST_TIMESTAMP = 253402300799
"""9999-12-31T23:59:59Z. The spec allows up to 2^63-1; later times than this have no date to
show, so a cosignature dated after it is refused."""
_TIMESTAMP_SIZE = 8
_SIGNATURE_SIZE = 64
_KEY_ID_HEX = re.compile(r"[0-9a-f]{8}")


def witness_name(body: str) -> str:
    """The cosigner name a body's officers sign under: ``evault-witness/<body id>``."""
    return WITNESS_PREFIX + body


def cosignature_key_id(name: str, public: VerifyKey) -> bytes:
    """The 4-byte key ID: SHA-256(name || 0x0A || 0x04 || Ed25519 public key)[:4]."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + COSIGNATURE_TYPE + public.raw).digest()
    return digest[:KEY_ID_SIZE]


def cosigned_message(text: str, timestamp: int) -> bytes:
    """The bytes an Ed25519 cosignature signs: header line, time line, checkpoint text."""
    return f"{COSIGNATURE_HEADER}\ntime {timestamp}\n{text}".encode()


@dataclass(frozen=True)
class Cosigner:
    """A trusted cosigner key: its name, key ID and Ed25519 public key."""

    name: str
    key_id: bytes
    public: VerifyKey

    def __post_init__(self) -> None:
        problem = _name_problem(self.name)
        if problem:
            raise UsageError(f"cosigner key: {problem}")
        if self.key_id != cosignature_key_id(self.name, self.public):
            raise UsageError(f"cosigner key {self.name}: key id does not match the name and key")

    @classmethod
    def for_key(cls, name: str, public: VerifyKey) -> Cosigner:
        """The cosigner ``public`` is under ``name``."""
        problem = _name_problem(name)
        if problem:
            raise UsageError(f"cosigner key: {problem}")
        return cls(name, cosignature_key_id(name, public), public)

    def vkey(self) -> str:
        """The verifier key: ``name+hex(key ID)+base64(0x04 || public key)``."""
        typed = base64.b64encode(COSIGNATURE_TYPE + self.public.raw).decode("ascii")
        return f"{self.name}+{self.key_id.hex()}+{typed}"

    @classmethod
    def parse(cls, vkey: str) -> Cosigner:
        """Read a verifier key written by :meth:`vkey` (type 0x04 only)."""
        name, _, rest = vkey.partition("+")
        hex_id, _, key_b64 = rest.partition("+")
        if not _KEY_ID_HEX.fullmatch(hex_id.lower()):
            raise UsageError(f"cosigner key {name}: expected name+<8 hex digits>+<base64 key>")
        try:
            typed = base64.b64decode(key_b64, validate=True)
        except (binascii.Error, ValueError):
            raise UsageError(f"cosigner key {name}: the key is not valid base64") from None
        if typed[:1] != COSIGNATURE_TYPE or len(typed) != 1 + 32:
            raise UsageError(f"cosigner key {name}: only ed25519 cosignature keys (type 0x04, "
                             "32 bytes) are supported")
        return cls(name, bytes.fromhex(hex_id), VerifyKey(typed[1:]))


def cosign(note: str, name: str, key: SigningKey, timestamp: int) -> str:
    """``note`` (a signed checkpoint) with a cosignature line by ``key`` under ``name``."""
    if isinstance(timestamp, bool) or not 0 <= timestamp <= LAST_TIMESTAMP:
        raise UsageError(f"cosignature: the time must be from 0 to {LAST_TIMESTAMP}")
    text = _split(note)[0]
    Checkpoint.from_text(text)  # only checkpoints are cosigned
    cosigner = Cosigner.for_key(name, key.public)
    signature = key.sign(cosigned_message(text, timestamp))
    blob = cosigner.key_id + timestamp.to_bytes(_TIMESTAMP_SIZE, "big") + signature
    return f"{note}\u2014 {name} {base64.b64encode(blob).decode('ascii')}\n"


@dataclass(frozen=True)
class Cosignature:
    """A verified cosignature: who, when, and the checkpoint it vouches for."""

    name: str
    key_id: bytes
    timestamp: int
    checkpoint: Checkpoint
    text: str


def _split(note: str | bytes) -> tuple[str, list[str]]:
    """A note's text and its signature lines, by the signed-note rules."""
    msg = _decode_note(note)
    try:
        # open_note with no known keys checks every rule of the format, then finds no signer.
        open_note(msg, [])
    except VerificationError as e:
        if "no signature from a known key" not in str(e):
            raise
    split = msg.rfind("\n\n")
    return msg[: split + 1], msg[split + 2 : -1].split("\n")


def note_text(note: str | bytes) -> str:
    """The text of a signed note: what its signatures sign (no signature lines)."""
    return _split(note)[0]


def open_cosignature(note: str | bytes, cosigner: Cosigner) -> Cosignature:
    """Find and verify ``cosigner``'s cosignature on the checkpoint ``note``.

    Other signature lines are left alone (the log's own signature is the caller's to check,
    with :func:`vault.custody.note.open_checkpoint`). Raise :class:`VerificationError` if the
    note is malformed, is not a checkpoint, carries no cosignature by ``cosigner``, or one of
    its cosignatures does not verify.
    """
    text, lines = _split(note)
    checkpoint = Checkpoint.from_text(text)
    found: Cosignature | None = None
    for line in lines:
        name, kid, rest = _parse_signature_line(line)
        if (name, kid) != (cosigner.name, cosigner.key_id):
            continue
        where = f"cosignature by {name} (key id {kid.hex()})"
        if len(rest) != _TIMESTAMP_SIZE + _SIGNATURE_SIZE:
            raise VerificationError(f"{where}: is {len(rest)} bytes after the key id, not "
                                    f"{_TIMESTAMP_SIZE + _SIGNATURE_SIZE} (time and signature)")
        timestamp = int.from_bytes(rest[:_TIMESTAMP_SIZE], "big")
        if timestamp > LAST_TIMESTAMP:
            raise VerificationError(f"{where}: its time {timestamp} is after the year 9999")
        try:
            cosigner.public.verify(rest[_TIMESTAMP_SIZE:], cosigned_message(text, timestamp))
        except VerificationError:
            raise VerificationError(
                f"{where}: does not verify; the checkpoint or its time was altered, or another "
                "key signed under that id"
            ) from None
        found = found or Cosignature(name, kid, timestamp, checkpoint, text)
    if found is None:
        raise VerificationError(
            f"checkpoint of {checkpoint.origin} at size {checkpoint.size}: no cosignature by "
            f"{cosigner.name} (key id {cosigner.key_id.hex()})"
        )
    return found
