"""Signed notes (C2SP signed-note) and the checkpoints they carry (C2SP tlog-checkpoint).

    >>> from vault.crypto.keys import SigningKey
    >>> signer = NoteSigner("vault.example/custody", SigningKey.from_seed(bytes(32)))
    >>> checkpoint = Checkpoint("vault.example/custody", 3, bytes(32))
    >>> note = sign_checkpoint(checkpoint, signer)
    >>> opened, signed = open_checkpoint(note, [NoteVerifier.parse(signer.vkey())])
    >>> opened == checkpoint, signed.signers
    (True, ('vault.example/custody',))

A note is UTF-8 text ending in a newline, a blank line, then one or more lines
``— <name> base64(key ID || Ed25519 signature)``. Signatures from keys the reader does not
know are ignored, as the spec requires; a note opens only if a known key's signature
verifies, and not at all if any known key's signature fails.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from vault.crypto.keys import SigningKey, VerifyKey
from vault.errors import UsageError, VerificationError

ED25519_TYPE = b"\x01"
KEY_ID_SIZE = 4
HASH_SIZE = 32

# The spec asks verifiers to bound the work a hostile note can cause and to accept at least
# 16 signatures; post-quantum signature lines can reach ~7 kB, so these leave ample room.
MAX_SIGNATURES = 100
MAX_NOTE_BYTES = 1 << 20

MAX_TREE_SIZE = (1 << 64) - 1

_SIGNATURE_PREFIX = "\u2014 "  # EM DASH, space
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
_KEY_ID_HEX = re.compile(r"[0-9a-fA-F]{8}")
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _name_problem(name: str) -> str | None:
    if not name:
        return "a key name must not be empty"
    if any(c.isspace() for c in name):
        return f"key name {name!r} must not contain spaces"
    if "+" in name:
        return f"key name {name!r} must not contain '+'"
    if _CONTROL.search(name):
        return f"key name {name!r} must not contain control characters"
    return None


def _text_problem(text: str) -> str | None:
    """The signed-note rule ``text`` breaks, if any (the same rules bind signer and reader)."""
    if not text.endswith("\n"):
        return "the text must end with a newline"
    if _CONTROL.search(text):
        return "the text must not contain control characters other than newline"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "the text must be valid utf-8"
    return None


def note_key_id(name: str, public: VerifyKey) -> bytes:
    """The 4-byte note key ID of an Ed25519 key: SHA-256(name || 0x0A || 0x01 || key)[:4]."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + ED25519_TYPE + public.raw).digest()
    return digest[:KEY_ID_SIZE]


@dataclass(frozen=True)
class NoteVerifier:
    """A trusted note key: its name, its key ID and its Ed25519 public key."""

    name: str
    key_id: bytes
    public: VerifyKey

    def __post_init__(self) -> None:
        problem = _name_problem(self.name)
        if problem:
            raise UsageError(f"note verifier key: {problem}")
        if self.key_id != note_key_id(self.name, self.public):
            raise UsageError(
                f"note verifier key {self.name}: key id does not match the name and key; "
                "check the verifier key was copied whole"
            )

    @classmethod
    def for_key(cls, name: str, public: VerifyKey) -> NoteVerifier:
        """The verifier for ``public`` under ``name``."""
        problem = _name_problem(name)
        if problem:
            raise UsageError(f"note verifier key: {problem}")
        return cls(name, note_key_id(name, public), public)

    @classmethod
    def parse(cls, vkey: str) -> NoteVerifier:
        """Parse a verifier key ``name+hex(key ID)+base64(0x01 || public key)``."""
        name, _, rest = vkey.partition("+")
        hex_id, _, key_b64 = rest.partition("+")
        problem = _name_problem(name)
        if problem:
            raise UsageError(f"note verifier key: {problem}")
        if not _KEY_ID_HEX.fullmatch(hex_id):
            raise UsageError(f"note verifier key {name}: expected name+<8 hex digits>+<base64 key>")
        try:
            typed_key = base64.b64decode(key_b64, validate=True)
        except (binascii.Error, ValueError):  # ValueError: not ASCII
            raise UsageError(f"note verifier key {name}: the key is not valid base64") from None
        if typed_key[:1] != ED25519_TYPE or len(typed_key) != 1 + 32:
            raise UsageError(
                f"note verifier key {name}: only ed25519 keys (type 0x01, 32 bytes) are supported"
            )
        return cls(name, bytes.fromhex(hex_id), VerifyKey(typed_key[1:]))

    def vkey(self) -> str:
        """The verifier key string that :meth:`parse` reads."""
        return f"{self.name}+{self.key_id.hex()}+{_b64(ED25519_TYPE + self.public.raw)}"


class NoteSigner:
    """Signs note texts with an Ed25519 key under a key name (the log's origin, by custom)."""

    __slots__ = ("_key", "_key_id", "_name", "_public")

    def __init__(self, name: str, key: SigningKey) -> None:
        problem = _name_problem(name)
        if problem:
            raise UsageError(f"note signer: {problem}")
        self._name = name
        self._key = key
        self._public = key.public
        self._key_id = note_key_id(name, self._public)

    @property
    def name(self) -> str:
        """The key name written on each signature line."""
        return self._name

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID: SHA-256(name || 0x0A || 0x01 || public key)[:4]."""
        return self._key_id

    def vkey(self) -> str:
        """The verifier key readers configure: ``name+hex(key ID)+base64(0x01 || key)``."""
        return self.verifier().vkey()

    def verifier(self) -> NoteVerifier:
        """The matching :class:`NoteVerifier`."""
        return NoteVerifier(self._name, self._key_id, self._public)

    def sign(self, text: str) -> str:
        """The signed note: ``text``, a blank line and this key's signature line."""
        problem = _text_problem(text)
        if problem:
            raise UsageError(f"signed note: {problem}")
        signature = self._key.sign(text.encode("utf-8"))
        note = f"{text}\n{_SIGNATURE_PREFIX}{self._name} {_b64(self._key_id + signature)}\n"
        if len(note.encode("utf-8")) > MAX_NOTE_BYTES:
            raise UsageError(f"signed note: larger than the {MAX_NOTE_BYTES} bytes readers accept")
        return note

    def __repr__(self) -> str:
        return f"NoteSigner({self._name!r}, {self._public.fingerprint})"


@dataclass(frozen=True)
class Note:
    """An opened note: its text and the names of the known keys whose signatures verified."""

    text: str
    signers: tuple[str, ...]


def _decode_note(note: str | bytes) -> str:
    too_large = VerificationError(f"signed note: larger than {MAX_NOTE_BYTES} bytes")
    # Bound the size before any other work, so a hostile note costs little; a character
    # takes at least one byte, so an over-long string is refused before it is encoded.
    if len(note) > MAX_NOTE_BYTES:
        raise too_large
    if isinstance(note, str):
        try:
            raw = note.encode("utf-8")
        except UnicodeEncodeError:
            raise VerificationError("signed note: must be valid utf-8") from None
    else:
        raw = note
    if len(raw) > MAX_NOTE_BYTES:
        raise too_large
    if isinstance(note, str):
        return note
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise VerificationError("signed note: must be valid utf-8") from None


def _parse_signature_line(line: str) -> tuple[str, bytes, bytes]:
    """Split ``— name base64(key ID || signature)`` into its three parts."""
    if not line.startswith(_SIGNATURE_PREFIX):
        raise VerificationError(
            "signed note: each line after the blank line must be '— <name> <base64 signature>'"
        )
    name, _, sig_b64 = line[len(_SIGNATURE_PREFIX) :].partition(" ")
    problem = _name_problem(name)
    if problem:
        raise VerificationError(f"signed note: signature line: {problem}")
    try:
        blob = base64.b64decode(sig_b64, validate=True)
    except (binascii.Error, ValueError):  # ValueError: not ASCII
        raise VerificationError(f"signed note: signature by {name} is not valid base64") from None
    if len(blob) <= KEY_ID_SIZE:
        raise VerificationError(f"signed note: signature by {name} is shorter than a key id")
    return name, blob[:KEY_ID_SIZE], blob[KEY_ID_SIZE:]


def open_note(note: str | bytes, verifiers: Sequence[NoteVerifier]) -> Note:
    """Check ``note`` against the trusted ``verifiers`` and return its text and signers.

    Raise :class:`VerificationError` if the note is malformed, if a known key's signature
    fails, or if no known key signed it. Signatures from unknown keys are ignored.
    """
    known: dict[tuple[str, bytes], NoteVerifier] = {}
    for v in verifiers:
        other = known.setdefault((v.name, v.key_id), v)
        if other.public != v.public:
            raise UsageError(
                f"note verifiers: two keys share the name {v.name} and key id {v.key_id.hex()}"
            )

    msg = _decode_note(note)
    if _CONTROL.search(msg):
        raise VerificationError(
            "signed note: must not contain control characters other than newline"
        )
    split = msg.rfind("\n\n")
    if split < 0:
        raise VerificationError("signed note: no blank line before the signature lines")
    text, block = msg[: split + 1], msg[split + 2 :]
    if not block.endswith("\n"):
        raise VerificationError("signed note: has no signature lines ending in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise VerificationError(f"signed note: more than {MAX_SIGNATURES} signatures")

    message = text.encode("utf-8")
    signers: list[str] = []
    for line in lines:
        name, kid, signature = _parse_signature_line(line)
        verifier = known.get((name, kid))
        if verifier is None:
            continue
        try:
            verifier.public.verify(signature, message)
        except VerificationError:
            raise VerificationError(
                f"signed note: signature by {name} (key id {kid.hex()}) does not verify; "
                "the note was altered or signed by another key under that id"
            ) from None
        if name not in signers:
            signers.append(name)
    if not signers:
        names = ", ".join(sorted({v.name for v in verifiers})) or "none configured"
        raise VerificationError(f"signed note: no signature from a known key ({names})")
    return Note(text, tuple(signers))


def _line_problem(what: str, line: str) -> str | None:
    if not line:
        return f"the {what} must not be empty"
    if "\n" in line or _CONTROL.search(line):
        return f"the {what} must be one line without control characters"
    return None


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head in tlog-checkpoint form: origin, tree size, root hash, extensions."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # A list would make the frozen value unhashable and mutable behind our back.
        object.__setattr__(self, "extensions", tuple(self.extensions))
        problem = _line_problem("origin", self.origin)
        if problem is None and (isinstance(self.size, bool) or not 0 <= self.size <= MAX_TREE_SIZE):
            problem = f"the tree size must be an integer from 0 to {MAX_TREE_SIZE}"
        if problem is None and len(self.root_hash) != HASH_SIZE:
            problem = f"the root hash must be 32 bytes, not {len(self.root_hash)}"
        for line in self.extensions:
            problem = problem or _line_problem("extension line", line)
        if problem:
            raise UsageError(f"checkpoint: {problem}")

    def to_text(self) -> str:
        """The note text: origin, decimal size, base64 root hash, extensions; one per line."""
        lines = [self.origin, str(self.size), _b64(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def from_text(cls, text: str) -> Checkpoint:
        """Parse a checkpoint note text strictly; raise :class:`VerificationError` if malformed."""
        if not text.endswith("\n"):
            raise VerificationError("checkpoint: the text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise VerificationError("checkpoint: needs an origin, a tree size and a root hash line")
        origin, size_line, hash_line, *extensions = lines
        if not _DECIMAL.fullmatch(size_line) or int(size_line) > MAX_TREE_SIZE:
            raise VerificationError(
                f"checkpoint: tree size {size_line[:24]!r} is not a decimal from 0 to "
                f"{MAX_TREE_SIZE} without leading zeroes"
            )
        try:
            root_hash = base64.b64decode(hash_line, validate=True)
        except (binascii.Error, ValueError):  # ValueError: not ASCII
            root_hash = b""
        # Only the canonical encoding is accepted, so one tree head has one text.
        if len(root_hash) != HASH_SIZE or _b64(root_hash) != hash_line:
            raise VerificationError("checkpoint: the root hash must be a 32-byte hash in base64")
        try:
            return cls(origin, int(size_line), root_hash, tuple(extensions))
        except UsageError as e:
            raise VerificationError(str(e)) from None


def sign_checkpoint(checkpoint: Checkpoint, signer: NoteSigner) -> str:
    """The signed note carrying ``checkpoint``."""
    return signer.sign(checkpoint.to_text())


def open_checkpoint(
    note: str | bytes, verifiers: Sequence[NoteVerifier]
) -> tuple[Checkpoint, Note]:
    """Open a signed checkpoint note; raise :class:`VerificationError` unless a known key
    signed it and its text is a well-formed checkpoint.
    """
    opened = open_note(note, verifiers)
    return Checkpoint.from_text(opened.text), opened
