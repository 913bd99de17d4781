"""Package envelopes, statements and the ``.evpkg`` container that carries them.

    >>> import hashlib, tempfile
    >>> from pathlib import Path
    >>> from vault.crypto.age import AgeIdentity
    >>> from vault.crypto.keys import SigningKey
    >>> key, officer = SigningKey.generate(), SigningKey.generate()
    >>> body_key = RecipientKey(officer.public.fingerprint, str(AgeIdentity.generate().recipient))
    >>> escrow = RecipientKey(key.public.fingerprint, str(AgeIdentity.generate().recipient))
    >>> folder = Path(tempfile.mkdtemp())
    >>> (folder / "payload.age").write_bytes(b"age-encrypted bytes")
    19
    >>> envelope = Envelope(
    ...     package_id="PKG-0123456789AB", sender=Party("registry", key.public.fingerprint),
    ...     body="ICC-OTP", recipients=(body_key,), escrow=escrow,
    ...     created_at="2026-11-28T09:00:00Z", payload_size=19,
    ...     payload_sha256=hashlib.sha256(b"age-encrypted bytes").hexdigest(),
    ...     checkpoint="vault.example/custody\\n1\\nAAAA\\n\\n— vault.example/custody AAAA\\n")
    >>> data, signature = sign_envelope(envelope, key)
    >>> write_package(folder / "p.evpkg", data, signature, folder / "payload.age")
    >>> pkg = read_package(folder / "p.evpkg")
    >>> verify_envelope(pkg, [key.public]) == envelope
    True
    >>> with pkg.open_payload() as f:
    ...     f.read()
    b'age-encrypted bytes'
    >>> import shutil; shutil.rmtree(folder)

Three documents live here. The **envelope** is the outside of a package: who sent it, to
which body, encrypted to which keys, and the size and SHA-256 of the encrypted payload. It
travels in clear, so by construction it has no room for titles, descriptions or file names:
every field is an id, a digest, a fingerprint, a time or a signed checkpoint. The
**statement** travels inside the encrypted payload (a BagIt tag file) and lists each item's
bag path, size and SHA-256. Both are canonical JSON (:func:`~vault.formats.canonical.
canonical_json`); those exact bytes are signed (SSHSIG, namespaces :data:`ENVELOPE_NAMESPACE`
and :data:`STATEMENT_NAMESPACE`) and written, so ``ssh-keygen -Y verify ... < envelope.json``
checks the file as it lies on disk. Parsing is strict: exact ``type`` and ``version``, every
field present with its JSON type, no unknown field, every value matching its rule, and the
bytes in canonical form, so one document has exactly one byte representation.

The **container** (``.evpkg``) is a POSIX pax tar holding exactly three regular files, in
this order: ``envelope.json``, ``envelope.json.sig`` and ``payload.age``. Stock ``tar -xf``
unpacks it. The payload's data starts at an offset fixed by the envelope's fields before
the payload exists (:func:`payload_offset`); a pax ``comment`` record before payload.age
fills what the final envelope leaves of that room. So :class:`PackageWriter` writes the
payload once, straight into the file, and the envelope that names its digest afterwards in
front of it; :func:`write_package` makes the same bytes from a payload file (copied in the
kernel). :func:`read_package` only reads headers, the envelope and the signature, so a
package of many GiB costs a few seeks. Every field a constructor receives is checked: a bad
argument is a :class:`~vault.errors.UsageError`, bad bytes being read a
:class:`~vault.errors.VerificationError`.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import contextlib
import dataclasses
import errno
import hashlib
import io
import os
import re
import stat
import sys
import tarfile
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from vault.crypto import sshsig
from vault.crypto.age import AgeRecipient
from vault.crypto.keys import SigningKey, VerifyKey
from vault.errors import NotFoundError, UsageError, VaultError, VerificationError
from vault.formats.canonical import canonical_json, parse_json_object
from vault.formats.safetar import printable

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "ENVELOPE_MEMBER",
    "ENVELOPE_NAMESPACE",
    "ENVELOPE_TYPE",
    "MAX_DOCUMENT",
    "MAX_ENVELOPE",
    "MAX_SIGNATURE",
    "MEMBERS",
    "PAYLOAD_MEMBER",
    "SIGNATURE_MEMBER",
    "STATEMENT_NAMESPACE",
    "STATEMENT_TYPE",
    "Envelope",
    "PackageFile",
    "PackageWriter",
    "Party",
    "RecipientKey",
    "Statement",
    "StatementItem",
    "hold_package",
    "payload_offset",
    "read_package",
    "sign_envelope",
    "sign_statement",
    "verify_envelope",
    "verify_statement",
    "write_package",
]

ENVELOPE_NAMESPACE = "evault-envelope"
STATEMENT_NAMESPACE = "evault-statement"
ENVELOPE_TYPE = "evault-package"
STATEMENT_TYPE = "evault-statement"
FORMAT_VERSION = 1

ENVELOPE_MEMBER = "envelope.json"
SIGNATURE_MEMBER = "envelope.json.sig"
PAYLOAD_MEMBER = "payload.age"
MEMBERS = (ENVELOPE_MEMBER, SIGNATURE_MEMBER, PAYLOAD_MEMBER)

MAX_DOCUMENT = 16 * 1024 * 1024
MAX_ENVELOPE = 1024 * 1024
MAX_SIGNATURE = 1024 * 1024
MAX_PAX_HEADER = 64 * 1024
MAX_CHECKPOINT = 1024 * 1024  # what vault.custody.note accepts as a signed note
MAX_REFERENCE = 256
MAX_INTEGER = 2**53  # the largest integer canonical JSON carries exactly

_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
_COPY_CHUNK = 1024 * 1024
_POSIX_MAGIC = b"ustar\x0000"
_USTAR_MAX_SIZE = 8**11 - 1  # the largest size a ustar header holds
_PAX_HEADER_NAME = "././@PaxHeader"  # as Python's tarfile names pax extended headers
_PADDING_COMMENT = "evault: room for the envelope, written after the payload"
_HEADER_ENCODING = "utf-8"

# -- field rules ---------------------------------------------------------------------------
#
# Every value in these documents is an id, a digest, a fingerprint, a time or a short
# identifier: the rules below are what keeps free text (titles, descriptions, file names)
# out of what travels in clear.

_CROCKFORD12 = "[0-9A-HJKMNP-TV-Z]{12}"
PACKAGE_ID_RULE = re.compile("PKG-" + _CROCKFORD12)
ITEM_ID_RULE = re.compile("EV-" + _CROCKFORD12)
RECEIPT_ID_RULE = re.compile("RCP-" + _CROCKFORD12)
BODY_ID_RULE = re.compile("[A-Z0-9][A-Z0-9._-]{0,63}")  # as vault.service.bodies
PARTY_NAME_RULE = re.compile("[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # as vault.service.identities
_SHA256_RULE = re.compile("[0-9a-f]{64}")
_FINGERPRINT_RULE = re.compile("SHA256:[A-Za-z0-9+/]{43}")
_TIME_RULE = re.compile("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_NOTE_SIGNATURE_PREFIX = "\u2014 "  # EM DASH, space: a signed note's signature lines


def _fail(where: str, rule: str) -> UsageError:
    return UsageError(f"{where} must be {rule}")


def _check_rule(value: object, rule: re.Pattern[str], where: str, says: str) -> None:
    if not isinstance(value, str) or rule.fullmatch(value) is None:
        raise _fail(where, says)


def _check_package_id(value: object, where: str) -> None:
    _check_rule(value, PACKAGE_ID_RULE, where, "'PKG-' and 12 crockford base32 characters")


def _check_item_id(value: object, where: str) -> None:
    _check_rule(value, ITEM_ID_RULE, where, "'EV-' and 12 crockford base32 characters")


def _check_body(value: object, where: str) -> None:
    _check_rule(value, BODY_ID_RULE, where, "a body id such as ICC-OTP (A-Z, 0-9, '._-')")


def _check_sha256(value: object, where: str) -> None:
    _check_rule(value, _SHA256_RULE, where, "a sha-256 digest in 64 lowercase hex digits")


def _check_fingerprint(value: object, where: str) -> None:
    says = "a 'SHA256:' fingerprint with 43 base64 characters"
    _check_rule(value, _FINGERPRINT_RULE, where, says)
    assert isinstance(value, str)
    # 43 characters hold 258 bits; only the encoding of a 32-byte digest can ever match a key.
    try:
        digest = base64.b64decode(value[7:] + "=", validate=True)
    except binascii.Error:
        raise _fail(where, says) from None
    if base64.b64encode(digest).decode("ascii").rstrip("=") != value[7:]:
        raise _fail(where, says)


def _check_time(value: object, where: str) -> None:
    says = "a utc time written YYYY-MM-DDTHH:MM:SSZ"
    _check_rule(value, _TIME_RULE, where, says)
    assert isinstance(value, str)
    try:
        time.strptime(value, _TIME_FORMAT)
    except ValueError:
        raise _fail(where, says) from None


def _check_size(value: object, where: str) -> None:
    if type(value) is not int or not 0 <= value <= MAX_INTEGER:
        raise _fail(where, f"an integer from 0 to {MAX_INTEGER}")


def _check_text(value: object, where: str, *, limit: int) -> str:
    if not isinstance(value, str):
        raise _fail(where, "a string")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(where, "valid unicode text (no lone surrogates)") from None
    if len(encoded) > limit:
        raise UsageError(f"{where} is longer than {limit} bytes")
    return value


def _looks_like_note(text: str) -> bool:
    """A signed note's shape: text, a blank line, then only ``— `` signature lines."""
    if not text.endswith("\n"):
        return False
    body, blank, signatures = text[:-1].rpartition("\n\n")
    if not blank or not body:
        return False
    return all(
        line.startswith(_NOTE_SIGNATURE_PREFIX) and len(line) > len(_NOTE_SIGNATURE_PREFIX)
        for line in signatures.split("\n")
    )


def _check_checkpoint(value: object, where: str) -> None:
    # The checkpoint is opaque here (formats does not import custody); only its shape and
    # size are checked, so that nothing else can ride in this one long string.
    text = _check_text(value, where, limit=MAX_CHECKPOINT)
    if not _looks_like_note(text):
        raise _fail(where, "a signed note (text, a blank line, then '— ' signature lines)")


def _check_header(
    doc: object, where: str, expected_type: str, versions: Collection[int] = (FORMAT_VERSION,)
) -> None:
    fmt = getattr(doc, "format", None)
    version = getattr(doc, "version", None)
    if fmt != expected_type:
        raise _fail(f"{where}: format", repr(expected_type))
    if type(version) is not int or version not in versions:
        raise _fail(f"{where}: version", " or ".join(str(v) for v in sorted(versions)))


def _check_tuple(value: object, cls: type, where: str, *, nonempty: bool = True) -> None:
    if not isinstance(value, tuple) or not all(isinstance(v, cls) for v in value):
        raise _fail(where, f"a tuple of {cls.__name__}")
    if nonempty and not value:
        raise UsageError(f"{where} must not be empty")


# -- shared value objects ------------------------------------------------------------------


@dataclass(frozen=True)
class Party:
    """Who signs a document: an identity name (not free text) and its signing key fingerprint."""

    name: str
    fingerprint: str

    def __post_init__(self) -> None:
        _check_rule(
            self.name, PARTY_NAME_RULE, "party: name", "an identity name (A-Z, a-z, 0-9, '._-')"
        )
        _check_fingerprint(self.fingerprint, "party: fingerprint")

    def to_json(self) -> dict[str, Any]:
        """The JSON object form."""
        return {"name": self.name, "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class RecipientKey:
    """One key a payload is encrypted to: the holder's signing fingerprint and age recipient."""

    fingerprint: str
    age_recipient: str

    def __post_init__(self) -> None:
        _check_fingerprint(self.fingerprint, "recipient key: fingerprint")
        if not isinstance(self.age_recipient, str):
            raise _fail("recipient key: age_recipient", "an 'age1...' string")
        try:
            parsed = AgeRecipient.parse(self.age_recipient)
        except UsageError as e:
            raise UsageError(f"recipient key: age_recipient is not usable ({e})") from None
        # parse() forgives surrounding blanks; a document carries only the exact form.
        if parsed.encode() != self.age_recipient:
            raise _fail("recipient key: age_recipient", "exactly the 'age1...' form")

    def to_json(self) -> dict[str, Any]:
        """The JSON object form."""
        return {"fingerprint": self.fingerprint, "age_recipient": self.age_recipient}


def _check_recipients(recipients: object, escrow: object, where: str) -> None:
    _check_tuple(recipients, RecipientKey, f"{where}: recipients")
    if not isinstance(escrow, RecipientKey):
        raise _fail(f"{where}: escrow", "a RecipientKey")
    assert isinstance(recipients, tuple)
    # A body key listed twice is a broken key list, not a choice. The escrow key may
    # coincide with a body key (a package addressed to the sender's own office).
    if len({k.fingerprint for k in recipients}) != len(recipients):
        raise UsageError(f"{where}: a recipient fingerprint appears twice")
    if len({k.age_recipient for k in recipients}) != len(recipients):
        raise UsageError(f"{where}: an age recipient appears twice")


def _check_unique_ids(items: tuple[Any, ...], where: str) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise UsageError(f"{where}: item {item.id} is listed twice")
        seen.add(item.id)


def _finish_bytes(obj: dict[str, Any], where: str) -> bytes:
    data = canonical_json(obj)
    if len(data) > MAX_DOCUMENT:
        raise UsageError(f"{where}: document is larger than {MAX_DOCUMENT} bytes")
    return data


# -- strict reading ------------------------------------------------------------------------


@contextlib.contextmanager
def _reading(what: str) -> Iterator[None]:
    """Constructors raise UsageError for bad values; in a document being read they are
    tampered or malformed input, hence VerificationError."""
    try:
        yield
    except UsageError as e:
        text = str(e)
        raise VerificationError(text if text.startswith(what) else f"{what}: {text}") from None


def _load(
    data: bytes, what: str, doc_type: str, fields: Iterable[str],
    versions: Mapping[int, Iterable[str]] | None = None,
) -> dict[str, Any]:
    """Parse ``data`` as one object of ``doc_type`` with exactly ``fields`` (plus type, version).

    A format with more than one version passes ``versions``: each version's fields, which
    then replace ``fields``.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise UsageError(f"{what}: expected bytes, not {type(data).__name__}")
    obj = parse_json_object(bytes(data), what, limit=MAX_DOCUMENT)
    if obj.get("type") != doc_type:
        raise VerificationError(f"{what}: type must be {doc_type!r}")
    known = versions if versions is not None else {FORMAT_VERSION: fields}
    version = obj.get("version")
    if type(version) is not int or version not in known:
        allowed = " or ".join(str(v) for v in sorted(known))
        raise VerificationError(f"{what}: version must be {allowed}")
    expected = {"type", "version", *known[version]}
    missing = sorted(expected - set(obj))
    if missing:
        raise VerificationError(f"{what}: missing field {missing[0]!r}")
    unknown = sorted(set(obj) - expected)
    if unknown:
        raise VerificationError(f"{what}: unknown field {printable(unknown[0])[:64]!r}")
    return obj


def _object(value: object, fields: tuple[str, ...], what: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise VerificationError(f"{what}: {where} must be an object")
    if set(value) != set(fields):
        raise VerificationError(f"{what}: {where} must have exactly the fields {', '.join(fields)}")
    return value


def _array(value: object, what: str, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise VerificationError(f"{what}: {where} must be an array")
    return value


def _read_party(value: object, what: str, where: str) -> Party:
    obj = _object(value, ("name", "fingerprint"), what, where)
    return Party(name=obj["name"], fingerprint=obj["fingerprint"])


def _read_key(value: object, what: str, where: str) -> RecipientKey:
    obj = _object(value, ("fingerprint", "age_recipient"), what, where)
    return RecipientKey(fingerprint=obj["fingerprint"], age_recipient=obj["age_recipient"])


def _read_keys(value: object, what: str, where: str) -> tuple[RecipientKey, ...]:
    return tuple(
        _read_key(v, what, f"{where}[{i}]") for i, v in enumerate(_array(value, what, where))
    )


def _require_canonical(doc_bytes: bytes, data: bytes, what: str) -> None:
    # One document, one byte string: digests of documents (envelope_sha256) stay unique.
    if doc_bytes != bytes(data):
        raise VerificationError(
            f"{what}: bytes are not canonical json (sorted keys, no spaces, utf-8 unescaped)"
        )


# -- envelope ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """The signed outside of a package; carries ids, keys and digests, never content.

    ``recipients`` are the body's keys, ``escrow`` the sender's own key so the office can
    reopen what it sent, ``checkpoint`` the sender's custody checkpoint (signed note text)
    after the package was recorded.
    """

    package_id: str
    sender: Party
    body: str
    recipients: tuple[RecipientKey, ...]
    escrow: RecipientKey
    created_at: str
    payload_size: int
    payload_sha256: str
    checkpoint: str
    format: str = ENVELOPE_TYPE
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        _check_header(self, "envelope", ENVELOPE_TYPE)
        _check_package_id(self.package_id, "envelope: package_id")
        if not isinstance(self.sender, Party):
            raise _fail("envelope: sender", "a Party")
        _check_body(self.body, "envelope: body")
        _check_recipients(self.recipients, self.escrow, "envelope")
        _check_time(self.created_at, "envelope: created_at")
        _check_size(self.payload_size, "envelope: payload_size")
        _check_sha256(self.payload_sha256, "envelope: payload_sha256")
        _check_checkpoint(self.checkpoint, "envelope: checkpoint")

    @property
    def all_recipients(self) -> tuple[RecipientKey, ...]:
        """Every key the payload is encrypted to: the body's keys, then the escrow key."""
        return (*self.recipients, self.escrow)

    def to_bytes(self) -> bytes:
        """The canonical JSON bytes: what is signed and what is written to disk."""
        return _finish_bytes(
            {
                "type": self.format,
                "version": self.version,
                "package_id": self.package_id,
                "sender": self.sender.to_json(),
                "body": self.body,
                "recipients": [k.to_json() for k in self.recipients],
                "escrow": self.escrow.to_json(),
                "created_at": self.created_at,
                "payload_size": self.payload_size,
                "payload_sha256": self.payload_sha256,
                "checkpoint": self.checkpoint,
            },
            "envelope",
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        """Parse envelope bytes strictly; raise VerificationError naming the broken rule."""
        what = "envelope"
        obj = _load(data, what, ENVELOPE_TYPE, _ENVELOPE_FIELDS)
        with _reading(what):
            envelope = cls(
                package_id=obj["package_id"],
                sender=_read_party(obj["sender"], what, "sender"),
                body=obj["body"],
                recipients=_read_keys(obj["recipients"], what, "recipients"),
                escrow=_read_key(obj["escrow"], what, "escrow"),
                created_at=obj["created_at"],
                payload_size=obj["payload_size"],
                payload_sha256=obj["payload_sha256"],
                checkpoint=obj["checkpoint"],
            )
        _require_canonical(envelope.to_bytes(), data, what)
        return envelope


_ENVELOPE_FIELDS = (
    "package_id",
    "sender",
    "body",
    "recipients",
    "escrow",
    "created_at",
    "payload_size",
    "payload_sha256",
    "checkpoint",
)


# -- statement -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StatementItem:
    """One item in the bag: its id, bag path ``data/<id>/<original name>``, size and SHA-256."""

    id: str
    path: str
    size: int
    sha256: str

    def __post_init__(self) -> None:
        _check_item_id(self.id, "statement item: id")
        path = _check_text(self.path, f"statement item {self.id}: path", limit=4096)
        prefix = f"data/{self.id}/"
        name = path[len(prefix) :]
        if not path.startswith(prefix):
            raise _fail(f"statement item {self.id}: path", f"under {prefix}")
        # One plain file name under the item's folder, as the bag writer lays it out.
        if name in ("", ".", "..") or "/" in name or "\0" in name:
            raise _fail(f"statement item {self.id}: path", f"{prefix} and one file name")
        if len(name.encode("utf-8")) > 255:
            raise UsageError(f"statement item {self.id}: file name is longer than 255 bytes")
        _check_size(self.size, f"statement item {self.id}: size")
        _check_sha256(self.sha256, f"statement item {self.id}: sha256")

    def to_json(self) -> dict[str, Any]:
        """The JSON object form."""
        return {"id": self.id, "path": self.path, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class Statement:
    """The signed list of a package's items; it travels inside the encrypted payload.

    It repeats the envelope's ids and keys so that what was encrypted can be bound to what
    the outside claims, and names the bag's tag manifest by its SHA-256.
    """

    package_id: str
    body: str
    recipients: tuple[RecipientKey, ...]
    escrow: RecipientKey
    sender: Party
    created_at: str
    items: tuple[StatementItem, ...]
    tagmanifest_sha256: str
    format: str = STATEMENT_TYPE
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        _check_header(self, "statement", STATEMENT_TYPE)
        _check_package_id(self.package_id, "statement: package_id")
        _check_body(self.body, "statement: body")
        _check_recipients(self.recipients, self.escrow, "statement")
        if not isinstance(self.sender, Party):
            raise _fail("statement: sender", "a Party")
        _check_time(self.created_at, "statement: created_at")
        _check_tuple(self.items, StatementItem, "statement: items")
        _check_unique_ids(self.items, "statement")
        _check_sha256(self.tagmanifest_sha256, "statement: tagmanifest_sha256")

    @property
    def all_recipients(self) -> tuple[RecipientKey, ...]:
        """Every key the payload is encrypted to: the body's keys, then the escrow key."""
        return (*self.recipients, self.escrow)

    def to_bytes(self) -> bytes:
        """The canonical JSON bytes: what is signed and what is written into the bag."""
        return _finish_bytes(
            {
                "type": self.format,
                "version": self.version,
                "package_id": self.package_id,
                "body": self.body,
                "recipients": [k.to_json() for k in self.recipients],
                "escrow": self.escrow.to_json(),
                "sender": self.sender.to_json(),
                "created_at": self.created_at,
                "items": [i.to_json() for i in self.items],
                "tagmanifest_sha256": self.tagmanifest_sha256,
            },
            "statement",
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Statement:
        """Parse statement bytes strictly; raise VerificationError naming the broken rule."""
        what = "statement"
        obj = _load(data, what, STATEMENT_TYPE, _STATEMENT_FIELDS)
        with _reading(what):
            items = tuple(
                _read_statement_item(v, what, f"items[{i}]")
                for i, v in enumerate(_array(obj["items"], what, "items"))
            )
            statement = cls(
                package_id=obj["package_id"],
                body=obj["body"],
                recipients=_read_keys(obj["recipients"], what, "recipients"),
                escrow=_read_key(obj["escrow"], what, "escrow"),
                sender=_read_party(obj["sender"], what, "sender"),
                created_at=obj["created_at"],
                items=items,
                tagmanifest_sha256=obj["tagmanifest_sha256"],
            )
        _require_canonical(statement.to_bytes(), data, what)
        return statement


_STATEMENT_FIELDS = (
    "package_id",
    "body",
    "recipients",
    "escrow",
    "sender",
    "created_at",
    "items",
    "tagmanifest_sha256",
)


def _read_statement_item(value: object, what: str, where: str) -> StatementItem:
    obj = _object(value, ("id", "path", "size", "sha256"), what, where)
    return StatementItem(id=obj["id"], path=obj["path"], size=obj["size"], sha256=obj["sha256"])


# -- signing -------------------------------------------------------------------------------


def _check_signer_key(key: object, party: Party, what: str) -> None:
    if not isinstance(key, SigningKey):
        raise UsageError(f"{what}: the signing key must be a SigningKey")
    # Signing with another key would give a document no one can verify as the sender's.
    if key.public.fingerprint != party.fingerprint:
        raise UsageError(
            f"{what}: signing key {key.public.fingerprint} is not the named party's "
            f"{party.fingerprint}"
        )


def sign_envelope(envelope: Envelope, key: SigningKey) -> tuple[bytes, str]:
    """The envelope's canonical bytes and their armored SSHSIG (namespace evault-envelope).

    ``key`` must be the sender's: its fingerprint must equal ``envelope.sender.fingerprint``.
    """
    _check_signer_key(key, envelope.sender, f"envelope {envelope.package_id}")
    data = envelope.to_bytes()
    return data, sshsig.sign(key, data, ENVELOPE_NAMESPACE)


def sign_statement(statement: Statement, key: SigningKey) -> tuple[bytes, str]:
    """The statement's canonical bytes and their armored SSHSIG (namespace evault-statement)."""
    _check_signer_key(key, statement.sender, f"statement {statement.package_id}")
    data = statement.to_bytes()
    return data, sshsig.sign(key, data, STATEMENT_NAMESPACE)


def _peek_id(data: bytes, field: str, rule: re.Pattern[str]) -> str | None:
    """The document's id for messages, when the unverified bytes show a well-formed one."""
    try:
        obj = parse_json_object(bytes(data), "document", limit=MAX_DOCUMENT)
    except VaultError:
        return None
    value = obj.get(field)
    return value if isinstance(value, str) and rule.fullmatch(value) else None


def _verify_signed(
    data: bytes, signature: str | bytes, namespace: str, trusted: Iterable[VerifyKey], label: str
) -> VerifyKey:
    """Verify an SSHSIG over exactly ``data``; any failure names ``label``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise UsageError(f"{label}: document must be bytes")
    try:
        return sshsig.verify(signature, bytes(data), namespace, trusted=tuple(trusted))
    except VerificationError as e:
        raise VerificationError(f"{label}: signature does not verify: {e}") from None


def _check_signer(signer: VerifyKey, party: Party, label: str, role: str) -> None:
    if signer.fingerprint != party.fingerprint:
        raise VerificationError(
            f"{label}: signed by {signer.fingerprint}, but the {role} named inside is "
            f"{party.name} {party.fingerprint}"
        )


def verify_envelope(pkg: PackageFile, trusted: Iterable[VerifyKey]) -> Envelope:
    """Verify the envelope of a package read by :func:`read_package`; return it parsed.

    Checks, in order: the SSHSIG over the exact bytes in the file (namespace
    evault-envelope) by a key in ``trusted``; the envelope parses strictly; the signer is the
    sender named inside; ``payload.age`` has the size the envelope states. Its SHA-256 is the
    caller's to check while streaming :meth:`PackageFile.open_payload`.
    """
    package_id = _peek_id(pkg.envelope_bytes, "package_id", PACKAGE_ID_RULE)
    label = f"package {package_id}" if package_id else f"package file {printable(pkg.path.name)}"
    signer = _verify_signed(
        pkg.envelope_bytes, pkg.signature, ENVELOPE_NAMESPACE, trusted, f"{label}: envelope"
    )
    try:
        envelope = Envelope.from_bytes(pkg.envelope_bytes)
    except VerificationError as e:
        raise VerificationError(f"{label}: {e}") from None
    _check_signer(signer, envelope.sender, label, "sender")
    if pkg.payload_size != envelope.payload_size:
        raise VerificationError(
            f"{label}: {PAYLOAD_MEMBER} holds {pkg.payload_size} bytes, "
            f"the envelope says {envelope.payload_size}"
        )
    return envelope


def verify_statement(
    data: bytes, signature: str | bytes, trusted: Iterable[VerifyKey]
) -> Statement:
    """Verify a statement's SSHSIG (namespace evault-statement) by a key in ``trusted`` over
    exactly ``data``, parse it strictly and check the signer is its sender; return it."""
    package_id = _peek_id(data, "package_id", PACKAGE_ID_RULE)
    label = f"package {package_id}: statement" if package_id else "statement"
    signer = _verify_signed(data, signature, STATEMENT_NAMESPACE, trusted, label)
    try:
        statement = Statement.from_bytes(data)
    except VerificationError as e:
        raise VerificationError(str(e).replace("statement", label, 1)) from None
    _check_signer(signer, statement.sender, label, "sender")
    return statement


# -- the container -------------------------------------------------------------------------


@dataclass(frozen=True)
class PackageFile:
    """A ``.evpkg`` file whose structure has been checked; nothing in it is verified yet.

    ``envelope_bytes`` and ``signature`` are the first two members as they lie in the file;
    ``payload_offset`` and ``payload_size`` locate ``payload.age`` inside it. ``fd`` is the
    file held open by :func:`hold_package` (None from :func:`read_package`).
    """

    envelope_bytes: bytes
    signature: str
    payload_offset: int
    payload_size: int
    path: Path
    fd: int | None = dataclasses.field(default=None, compare=False, repr=False)

    def open_payload(self) -> io.BufferedReader:
        """A binary file object reading exactly ``payload.age`` from the package file.

        From :func:`read_package` the file is opened anew: if it was changed or replaced
        since, the bytes differ from what the envelope's SHA-256 promises, so always hash
        what you read. From :func:`hold_package` it reads the file held open, the one the
        envelope was read from (one reader at a time: they share the file position); a
        file rewritten in place still reads other bytes, so hash those too. A file cut short
        raises :class:`~vault.errors.VerificationError` on the read that reaches the cut.
        """
        raw = _PayloadReader(self.path, self.payload_offset, self.payload_size, fd=self.fd)
        return io.BufferedReader(raw, buffer_size=_COPY_CHUNK)

    def file_state(self) -> tuple[int, ...]:
        """Device, inode, size and modification time of the file held open: the same before
        and after a read of it unless it was written meanwhile."""
        if self.fd is None:
            raise ValueError("file_state: the package file is not held open (hold_package)")
        st = os.fstat(self.fd)
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class _PayloadReader(io.RawIOBase):
    """Reads ``size`` bytes from ``offset`` of a file, and never past them; with ``fd``, of
    that open file (a duplicate of it, so closing this reader leaves ``fd`` open)."""

    def __init__(self, path: Path, offset: int, size: int, *, fd: int | None = None) -> None:
        self._label = _file_label(path)
        fd = _open_regular(path, self._label) if fd is None else os.dup(fd)
        try:
            self._file = io.FileIO(fd, "rb", closefd=True)
        except BaseException:
            os.close(fd)
            raise
        self._offset = offset
        self._size = size
        self._pos = 0
        self._file.seek(offset)

    def readable(self) -> bool:
        """Always true."""
        return True

    def seekable(self) -> bool:
        """Always true: the region lies in a regular file."""
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        """Read into ``buffer``, at most up to the end of the payload; 0 at its end."""
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._size - self._pos)
        if want <= 0:
            return 0
        n = self._file.readinto(view[:want])
        if not n:
            raise VerificationError(
                f"{self._label}: {PAYLOAD_MEMBER} ends early; the file was truncated"
            )
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move within the payload (positions are relative to its first byte)."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence {whence}")
        target = base + offset
        if target < 0:
            raise ValueError("negative seek position")
        self._pos = target
        self._file.seek(self._offset + min(target, self._size))
        return target

    def tell(self) -> int:
        """The position within the payload."""
        return self._pos

    def close(self) -> None:
        """Close the underlying file."""
        if not self.closed:
            self._file.close()
        super().close()


def _file_label(path: Path) -> str:
    return f"package file {printable(path.name)[:100]}"


def _open_regular(path: Path, label: str) -> int:
    """Open for reading without blocking on a fifo or device, and insist on a regular file."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise NotFoundError(f"{label}: does not exist") from None
    except OSError as e:
        raise UsageError(f"{label}: cannot be opened ({(e.strerror or str(e)).lower()})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise VerificationError(f"{label}: is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _padded(size: int) -> int:
    return -(-size // _BLOCK) * _BLOCK


def _header(name: str, size: int, mtime: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    """One ustar header block with the container's fixed metadata."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = kind
    return info.tobuf(format=tarfile.USTAR_FORMAT, encoding=_HEADER_ENCODING, errors="strict")


def _small_member(name: str, data: bytes, mtime: int) -> bytes:
    """Header, data and zero padding of the envelope or its signature."""
    return _header(name, len(data), mtime) + data + bytes(_padded(len(data)) - len(data))


def _pax_record(keyword: str, value: str) -> bytes:
    """``"<length> <keyword>=<value>\\n"``, the length counting its own digits."""
    body = f" {keyword}={value}\n".encode(_HEADER_ENCODING)
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length = len(str(length)) + len(body)
    return str(length).encode("ascii") + body


def _pax_padding(length: int) -> bytes:
    """One pax ``comment`` record of exactly ``length`` bytes (stock tar ignores comments)."""
    fixed = len(str(length)) + len(" comment=\n")
    text = _PADDING_COMMENT.ljust(length - fixed)
    record = f"{length} comment={text}\n".encode("ascii")
    assert len(record) == length
    return record


def _widest(envelope: Envelope) -> Envelope:
    """The same envelope with the longest payload size and digest it can carry."""
    return dataclasses.replace(envelope, payload_size=MAX_INTEGER, payload_sha256="f" * 64)


def payload_offset(envelope: Envelope, signature_size: int) -> int:
    """Where the payload's data starts in the package of ``envelope``, whatever its payload.

    The front of the container is sized before the payload is known: envelope.json at the
    longest payload size it can state, envelope.json.sig (``signature_size`` bytes; an
    Ed25519 SSHSIG always has the same length), and payload.age's headers, a pax extended
    header of at least one block and the ustar header. The pax header's ``comment`` record
    takes up whatever the actual envelope leaves, so every package of this envelope has its
    payload here and :class:`PackageWriter` can write the payload first, once.
    """
    envelope_size = len(_widest(envelope).to_bytes())
    return 5 * _BLOCK + _padded(envelope_size) + _padded(signature_size)


def _front(envelope: bytes, signature: bytes, payload_size: int, mtime: int, room: int) -> bytes:
    """The container's bytes before the payload's data: exactly ``room`` of them."""
    head = _small_member(ENVELOPE_MEMBER, envelope, mtime)
    head += _small_member(SIGNATURE_MEMBER, signature, mtime)
    pax_size = room - len(head) - 2 * _BLOCK
    if pax_size < _BLOCK or pax_size % _BLOCK:
        raise UsageError("write package: the envelope and its signature do not fit the room "
                         "left for them; a package's front is sized from its own envelope")
    records = b""
    ustar_size = payload_size
    if payload_size > _USTAR_MAX_SIZE:  # 8 GiB and more: the size goes in the pax header
        records = _pax_record("size", str(payload_size))
        ustar_size = 0
    records += _pax_padding(pax_size - len(records))
    pax = _header(_PAX_HEADER_NAME, pax_size, mtime, tarfile.XHDTYPE)
    return head + pax + records + _header(PAYLOAD_MEMBER, ustar_size, mtime)


def _tail(room: int, payload_size: int) -> bytes:
    """Zero padding to the block, two zero blocks, then to a whole record, as tar does."""
    tail = _padded(payload_size) - payload_size + 2 * _BLOCK
    tail += -(room + payload_size + tail) % _RECORD
    return bytes(tail)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# Errors that mean "this way of copying is not available here", not "the copy failed".
_NO_KERNEL_COPY = frozenset(
    code
    for code in (
        getattr(errno, name, None)
        for name in ("EXDEV", "ENOSYS", "EINVAL", "EOPNOTSUPP", "ENOTSUP", "ENOTSOCK", "EBADF")
    )
    if code is not None
)


def _copy_payload(src: int, dst: int, size: int) -> int:
    """Copy ``size`` bytes from ``src``'s position to ``dst``'s; return how many were copied.

    In-kernel first, so a payload of many GiB never passes through Python: copy_file_range,
    then sendfile, then a 1 MiB read/write loop. Each step continues where the previous
    stopped, because both use and advance the file positions.
    """
    remaining = size
    if sys.platform == "linux":
        try:
            while remaining:
                n = os.copy_file_range(src, dst, min(remaining, 1 << 30))
                if n == 0:
                    return size - remaining
                remaining -= n
        except OSError as e:
            if e.errno not in _NO_KERNEL_COPY:
                raise
    if remaining and hasattr(os, "sendfile"):
        try:
            while remaining:
                n = os.sendfile(dst, src, None, min(remaining, 1 << 30))
                if n == 0:
                    return size - remaining
                remaining -= n
        except OSError as e:
            if e.errno not in _NO_KERNEL_COPY:
                raise
    while remaining:
        chunk = os.read(src, min(remaining, _COPY_CHUNK))
        if not chunk:
            break
        _write_all(dst, chunk)
        remaining -= len(chunk)
    return size - remaining


def _epoch(created_at: str) -> int:
    return calendar.timegm(time.strptime(created_at, _TIME_FORMAT))


def write_package(target: Path, envelope: bytes, signature: str, payload: Path) -> None:
    """Write the ``.evpkg`` tar to ``target``: envelope, its signature, then the payload file.

    ``envelope`` and ``signature`` are what :func:`sign_envelope` returned; ``payload`` is
    the age-encrypted file whose size and SHA-256 the envelope states. The signature must
    verify over the envelope by the sender it names, and the payload file must have the
    envelope's ``payload_size``, else :class:`~vault.errors.UsageError` (nothing in a package
    written here can fail these checks later). Metadata is fixed (mode 0644, owner 0:0, no
    names, mtime = ``created_at``), so the same inputs give the same bytes.

    ``target`` is created or truncated and fsynced before returning; write it under a
    temporary name and rename it. On an error it is left incomplete for the caller to
    remove. OS errors (disk full, permissions) propagate as :class:`OSError`.
    """
    if not isinstance(envelope, bytes):
        raise UsageError("write package: envelope must be bytes")
    if len(envelope) > MAX_ENVELOPE:
        raise UsageError(f"write package: envelope is larger than {MAX_ENVELOPE} bytes")
    try:
        parsed = Envelope.from_bytes(envelope)
    except VerificationError as e:
        raise UsageError(f"write package: {e}") from None
    label = f"write package {parsed.package_id}"
    if not isinstance(signature, str) or not signature.isascii():
        raise UsageError(f"{label}: signature must be ascii armored text")
    sig_bytes = signature.encode("ascii")
    if len(sig_bytes) > MAX_SIGNATURE:
        raise UsageError(f"{label}: signature is larger than {MAX_SIGNATURE} bytes")
    try:
        signer = sshsig.verify(signature, envelope, ENVELOPE_NAMESPACE)
    except VerificationError as e:
        raise UsageError(f"{label}: signature does not verify over the envelope ({e})") from None
    if signer.fingerprint != parsed.sender.fingerprint:
        raise UsageError(f"{label}: signature is not by the sender {parsed.sender.fingerprint}")

    mtime = _epoch(parsed.created_at)
    room = payload_offset(parsed, len(sig_bytes))
    src = _open_regular(Path(payload), f"{label}: payload")
    try:
        size = os.fstat(src).st_size
        if size != parsed.payload_size:
            raise UsageError(
                f"{label}: payload file holds {size} bytes, the envelope says {parsed.payload_size}"
            )
        with open(target, "wb", buffering=0) as out:
            dst = out.fileno()
            _write_all(dst, _front(envelope, sig_bytes, size, mtime, room))
            copied = _copy_payload(src, dst, size)
            if copied != size:
                raise UsageError(f"{label}: payload file shrank to {copied} bytes while copied")
            _write_all(dst, _tail(room, size))
            os.fsync(dst)
    finally:
        os.close(src)


class PackageWriter:
    """Writes a ``.evpkg`` container in one pass over its payload.

        with PackageWriter(out, draft, key) as writer:  # out: a new file, open for writing
            writer.write(ciphertext)                    # the age payload, in order
            envelope, data, signature = writer.finish()

    The payload goes straight to its place in the file (:func:`payload_offset`), counted
    and hashed on the way; :meth:`finish` puts the payload's size and SHA-256 into the
    ``draft`` envelope (whose own values for them are ignored), signs it with ``key`` (the
    sender's) and writes the envelope, its signature and the headers into the room left in
    front, then the end of the archive. The file is byte for byte what :func:`write_package`
    writes for the same envelope and payload, without a temporary payload file or a copy.

    Each write is hashed and written on a helper thread while the caller prepares the next
    (hashlib and file writes release the GIL), from the caller's own buffer. ``out`` is
    flushed, not synced: fsync it, then give it its name. If anything raises, the file is
    incomplete: remove it.
    """

    def __init__(self, out: BinaryIO, draft: Envelope, key: SigningKey) -> None:
        _, widest_signature = sign_envelope(_widest(draft), key)
        self._out = out
        self._draft = draft
        self._key = key
        self._room = payload_offset(draft, len(widest_signature.encode("ascii")))
        self._digest = hashlib.sha256()
        self._size = 0
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: Future[None] | None = None
        self._finished = False
        out.seek(self._room)

    def __enter__(self) -> PackageWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Wait for the helper thread and stop it (after an error too)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.exception()
        self._pool.shutdown(wait=True)

    def write(self, data: bytes | memoryview) -> int:
        """Append payload bytes.

        ``data`` is hashed and written on the helper thread, without a copy: leave it
        unchanged until the next call of write(), flush() or finish() returns, as
        :class:`~vault.crypto.age.AgeWriter` does (it fills its other batch meanwhile).
        """
        if self._finished:
            raise RuntimeError("package writer: write after finish")
        self._wait()
        self._pending = self._pool.submit(self._consume, data)
        self._size += len(data)
        return len(data)

    def flush(self) -> None:
        """Wait until everything written so far is hashed and in the file."""
        self._wait()

    def _consume(self, chunk: bytes | memoryview) -> None:
        self._digest.update(chunk)
        self._out.write(chunk)

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def finish(self) -> tuple[Envelope, bytes, str]:
        """Complete the file; return the envelope, its canonical bytes and its signature."""
        self._wait()
        self._finished = True
        envelope = dataclasses.replace(
            self._draft, payload_size=self._size, payload_sha256=self._digest.hexdigest()
        )
        data, signature = sign_envelope(envelope, self._key)
        front = _front(data, signature.encode("ascii"), self._size,
                       _epoch(envelope.created_at), self._room)
        self._out.write(_tail(self._room, self._size))
        self._out.seek(0)
        self._out.write(front)
        self._out.flush()
        return envelope, data, signature


@dataclass(frozen=True)
class _Member:
    name: str
    type: bytes
    size: int
    offset: int  # of the data


_TYPE_NAMES = {
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.DIRTYPE: "directory",
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "fifo",
    tarfile.CONTTYPE: "contiguous file",
    tarfile.GNUTYPE_SPARSE: "gnu sparse file",
}
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE)
_EXTENSIONS = frozenset(
    {
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    }
)


class _TarScan:
    """Walks the headers of a package file with positional reads, never its payload.

    Every length is checked against the file size before anything is read, extension
    headers are capped at 64 KiB and may not chain, so hostile input costs a bounded amount
    of memory and a number of reads that does not depend on declared sizes.
    """

    def __init__(self, fd: int, size: int, label: str) -> None:
        self.fd = fd
        self.size = size
        self.label = label

    def error(self, rule: str) -> VerificationError:
        return VerificationError(f"{self.label}: {rule}")

    def read(self, offset: int, length: int, what: str) -> bytes:
        if offset + length > self.size:
            raise self.error(f"is truncated ({what} runs past the end of the file)")
        data = os.pread(self.fd, length, offset)
        if len(data) != length:
            raise self.error(f"is truncated ({what} runs past the end of the file)")
        return data

    def header(self, offset: int) -> tarfile.TarInfo | None:
        """The header block at ``offset``; None for a zero (end-of-archive) block."""
        if offset == 0 and self.size < _BLOCK:
            raise self.error("is not a tar archive (shorter than one 512-byte header)")
        block = self.read(offset, _BLOCK, f"the header at byte {offset}")
        if block.count(0) == _BLOCK:
            return None
        if block[257:265] != _POSIX_MAGIC:
            if offset == 0:
                raise self.error("is not a posix tar archive (no 'ustar' header)")
            raise self.error(f"has a header that is not posix tar at byte {offset}")
        try:
            return tarfile.TarInfo.frombuf(block, _HEADER_ENCODING, "strict")
        except (tarfile.TarError, ValueError, OverflowError, UnicodeDecodeError):
            raise self.error(f"has a corrupt tar header at byte {offset}") from None

    def member(self, offset: int) -> tuple[_Member, int] | None:
        """The member whose headers start at ``offset`` and where the next one starts."""
        info = self.header(offset)
        if info is None:
            return None
        records: dict[str, str] = {}
        if info.type == tarfile.XHDTYPE:
            if info.size > MAX_PAX_HEADER:
                raise self.error(f"has a pax header over {MAX_PAX_HEADER} bytes")
            data = self.read(offset + _BLOCK, info.size, "a pax header")
            records = self.pax_records(data)
            offset += _BLOCK + _padded(info.size)
            info = self.header(offset)
            if info is None:
                raise self.error("has a pax header that is followed by no member")
        if info.type in _EXTENSIONS:
            raise self.error(f"has an extension header of type {info.type!r}, not accepted here")
        name = records.get("path", info.name)
        size = info.size
        if "size" in records:
            if not re.fullmatch("[0-9]{1,20}", records["size"]):
                raise self.error("has a pax size record that is not a decimal number")
            size = int(records["size"])
        if size < 0:
            raise self.error(f"member {printable(name)[:100]!r} has a negative size")
        data_at = offset + _BLOCK
        return _Member(name, info.type, size, data_at), data_at + _padded(size)

    def pax_records(self, data: bytes) -> dict[str, str]:
        """Parse ``"<length> <keyword>=<value>\\n"`` records, strictly."""
        records: dict[str, str] = {}
        pos = 0
        while pos < len(data):
            space = data.find(b" ", pos, pos + 8)
            digits = data[pos:space]
            if space < 0 or not digits.isdigit():
                raise self.error("has a malformed pax record")
            end = pos + int(digits)
            if end <= space + 1 or end > len(data) or data[end - 1] != 0x0A:
                raise self.error("has a malformed pax record")
            keyword, equals, value = data[space + 1 : end - 1].partition(b"=")
            if not equals or not keyword:
                raise self.error("has a malformed pax record")
            try:
                key, text = keyword.decode("utf-8"), value.decode("utf-8")
            except UnicodeDecodeError:
                raise self.error("has a pax record that is not utf-8") from None
            if key in records:
                raise self.error(f"has a pax header that repeats {printable(key)[:40]!r}")
            # GNU sparse maps and link targets would make stock tar see other data.
            if key.startswith("GNU.sparse") or key == "linkpath":
                raise self.error(f"has a pax {printable(key)[:40]!r} record, not accepted here")
            records[key] = text
            pos = end
        return records

    def check_padding(self, member: _Member) -> None:
        pad = _padded(member.size) - member.size
        if pad and self.read(member.offset + member.size, pad, "padding").count(0) != pad:
            raise self.error(f"has data hidden in the padding after {member.name}")

    def check_end(self, offset: int) -> None:
        """After the last member: two zero blocks, then nothing but zeros, in whole blocks."""
        rest = self.size - offset
        if rest < 2 * _BLOCK:
            raise self.error("is truncated (the end-of-archive marker is missing)")
        if rest % _BLOCK:
            raise self.error("does not end on a 512-byte block")
        while offset < self.size:
            chunk = os.pread(self.fd, min(_COPY_CHUNK, self.size - offset), offset)
            if not chunk:
                raise self.error("is truncated (it shrank while being read)")
            if chunk.count(0) != len(chunk):
                raise self.error("has data after its end-of-archive marker")
            offset += len(chunk)


_LAYOUT = "a package holds exactly envelope.json, envelope.json.sig and payload.age, in order"


def _check_member(scan: _TarScan, member: _Member, index: int, seen: list[str]) -> None:
    shown = printable(member.name)[:100]
    if member.type not in _REGULAR:
        kind = _TYPE_NAMES.get(member.type, f"type {member.type!r}")
        raise scan.error(f"member {shown!r} is a {kind}; only regular files are accepted")
    if member.name in seen:
        raise scan.error(f"has a duplicate member {shown!r}")
    if index >= len(MEMBERS):
        raise scan.error(f"has a fourth member {shown!r}; {_LAYOUT}")
    if member.name != MEMBERS[index]:
        if member.name in MEMBERS:
            raise scan.error(
                f"members are out of order: {shown!r} where {MEMBERS[index]!r} belongs; {_LAYOUT}"
            )
        raise scan.error(f"has an unexpected member {shown!r}; {_LAYOUT}")
    limits = {ENVELOPE_MEMBER: MAX_ENVELOPE, SIGNATURE_MEMBER: MAX_SIGNATURE}
    if member.name in limits and member.size > limits[member.name]:
        raise scan.error(f"{shown} is larger than {limits[member.name]} bytes")
    if member.offset + _padded(member.size) > scan.size:
        raise scan.error(f"is truncated ({shown} runs past the end of the file)")


def read_package(path: Path) -> PackageFile:
    """Check a ``.evpkg`` file's structure and read its envelope and signature.

    Refused with :class:`~vault.errors.VerificationError`: anything but a POSIX tar; members
    other than exactly envelope.json, envelope.json.sig and payload.age in that order;
    links, devices, folders and other non-regular members; duplicates; pax headers over
    64 KiB, chained extension headers, GNU sparse records; an envelope or signature over
    1 MiB; a truncated file; non-zero padding or data after the end-of-archive marker; a
    path that is not a regular file (never opened in a way that blocks). The payload is not
    read: see :meth:`PackageFile.open_payload`. Nothing is verified cryptographically:
    call :func:`verify_envelope` next.
    """
    path = Path(path)
    label = _file_label(path)
    fd = _open_regular(path, label)
    try:
        return _scan_package(fd, path, label, hold=False)
    finally:
        os.close(fd)


@contextlib.contextmanager
def hold_package(path: Path) -> Iterator[PackageFile]:
    """:func:`read_package` on a file that stays open until the block ends.

    Every later read through the :class:`PackageFile` (its :meth:`~PackageFile.open_payload`)
    is of the file whose envelope and signature it holds, even if another file is renamed
    over ``path`` or it is removed meanwhile: what is verified and what is used are one file.
    """
    path = Path(path)
    label = _file_label(path)
    fd = _open_regular(path, label)
    try:
        yield _scan_package(fd, path, label, hold=True)
    finally:
        os.close(fd)


def _scan_package(fd: int, path: Path, label: str, *, hold: bool) -> PackageFile:
    """The checks of :func:`read_package` on the open file ``fd``."""
    scan = _TarScan(fd, os.fstat(fd).st_size, label)
    members: list[_Member] = []
    offset = 0
    for index in range(len(MEMBERS) + 1):
        found = scan.member(offset)
        if found is None:
            if index < len(MEMBERS):
                raise scan.error(f"has {index} members; {_LAYOUT}")
            break
        member, offset = found
        _check_member(scan, member, index, [m.name for m in members])
        scan.check_padding(member)
        members.append(member)
    scan.check_end(offset)
    envelope, signature, payload = members
    envelope_bytes = scan.read(envelope.offset, envelope.size, ENVELOPE_MEMBER)
    sig_bytes = scan.read(signature.offset, signature.size, SIGNATURE_MEMBER)
    try:
        sig_text = sig_bytes.decode("ascii")
    except UnicodeDecodeError:
        raise VerificationError(f"{label}: {SIGNATURE_MEMBER} is not ascii text") from None
    return PackageFile(
        envelope_bytes=envelope_bytes,
        signature=sig_text,
        payload_offset=payload.offset,
        payload_size=payload.size,
        path=path,
        fd=fd if hold else None,
    )
