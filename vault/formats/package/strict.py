"""Strict reading and signing of canonical JSON documents, shared by every signed format.

One job: turn bytes into one document's fields or refuse them (exact ``type`` and
``version``, every field present, no unknown field, canonical bytes), write a document's
canonical bytes, and check an SSHSIG and its signer. A document type's own module
(:mod:`.documents`, :mod:`vault.formats.receipt`) names its fields and builds its object
from these helpers; a broken rule is a :class:`~vault.errors.VerificationError`.

Imports: :mod:`.rules`, :mod:`.parties`, :mod:`vault.formats.canonical`,
:mod:`vault.formats.safetar` (``printable``), :mod:`vault.names`, :mod:`vault.crypto`,
:mod:`vault.errors`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from vault.crypto import sshsig
from vault.crypto.keys import SigningKey, VerifyKey
from vault.errors import UsageError, VaultError, VerificationError
from vault.formats.canonical import canonical_json, parse_json_object
from vault.formats.package.parties import Party, RecipientKey
from vault.formats.package.rules import FORMAT_VERSION, MAX_DOCUMENT
from vault.formats.safetar import printable
from vault.names import Rule

D = TypeVar("D")


def finish_bytes(obj: dict[str, Any], where: str) -> bytes:
    data = canonical_json(obj)
    if len(data) > MAX_DOCUMENT:
        raise UsageError(f"{where}: document is larger than {MAX_DOCUMENT} bytes")
    return data


@contextlib.contextmanager
def reading(what: str) -> Iterator[None]:
    """Constructors raise UsageError for bad values; in a document being read they are
    tampered or malformed input, hence VerificationError."""
    try:
        yield
    except UsageError as e:
        text = str(e)
        raise VerificationError(text if text.startswith(what) else f"{what}: {text}") from None


def load_document(
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


def read_object(value: object, fields: tuple[str, ...], what: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise VerificationError(f"{what}: {where} must be an object")
    if set(value) != set(fields):
        raise VerificationError(f"{what}: {where} must have exactly the fields {', '.join(fields)}")
    return value


def read_array(value: object, what: str, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise VerificationError(f"{what}: {where} must be an array")
    return value


def read_party(value: object, what: str, where: str) -> Party:
    obj = read_object(value, ("name", "fingerprint"), what, where)
    return Party(name=obj["name"], fingerprint=obj["fingerprint"])


def read_key(value: object, what: str, where: str) -> RecipientKey:
    obj = read_object(value, ("fingerprint", "age_recipient"), what, where)
    return RecipientKey(fingerprint=obj["fingerprint"], age_recipient=obj["age_recipient"])


def read_keys(value: object, what: str, where: str) -> tuple[RecipientKey, ...]:
    return tuple(
        read_key(v, what, f"{where}[{i}]") for i, v in enumerate(read_array(value, what, where))
    )


def require_canonical(doc_bytes: bytes, data: bytes, what: str) -> None:
    # One document, one byte string: digests of documents (envelope_sha256) stay unique.
    if doc_bytes != bytes(data):
        raise VerificationError(
            f"{what}: bytes are not canonical json (sorted keys, no spaces, utf-8 unescaped)"
        )

# -- signatures ----------------------------------------------------------------------------


def check_signer_key(key: object, party: Party, what: str) -> None:
    if not isinstance(key, SigningKey):
        raise UsageError(f"{what}: the signing key must be a SigningKey")
    # Signing with another key would give a document no one can verify as the sender's.
    if key.public.fingerprint != party.fingerprint:
        raise UsageError(
            f"{what}: signing key {key.public.fingerprint} is not the named party's "
            f"{party.fingerprint}"
        )


def peek_id(data: bytes, field: str, rule: Rule) -> str | None:
    """The document's id for messages, when the unverified bytes show a well-formed one."""
    try:
        obj = parse_json_object(bytes(data), "document", limit=MAX_DOCUMENT)
    except VaultError:
        return None
    value = obj.get(field)
    return value if isinstance(value, str) and rule.matches(value) else None


def verify_signed(
    data: bytes, signature: str | bytes, namespace: str, trusted: Iterable[VerifyKey], label: str
) -> VerifyKey:
    """Verify an SSHSIG over exactly ``data``; any failure names ``label``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise UsageError(f"{label}: document must be bytes")
    try:
        return sshsig.verify(signature, bytes(data), namespace, trusted=tuple(trusted))
    except VerificationError as e:
        raise VerificationError(f"{label}: signature does not verify: {e}") from None


def verify_document(
    data: bytes,
    signature: str | bytes,
    trusted: Iterable[VerifyKey],
    *,
    namespace: str,
    what: str,
    label: str,
    parse: Callable[[bytes], D],
    party: Callable[[D], Party],
    role: str,
) -> D:
    """A signed document checked whole: its SSHSIG over exactly ``data`` by a ``trusted``
    key, its bytes parsed strictly by ``parse`` (a refusal names ``label``, the document's
    ``what`` with its id), and the signer is the ``role`` the document names (``party``)."""
    signer = verify_signed(data, signature, namespace, trusted, label)
    try:
        document = parse(data)
    except VerificationError as e:
        raise VerificationError(str(e).replace(what, label, 1)) from None
    check_signer(signer, party(document), label, role)
    return document


def check_signer(signer: VerifyKey, party: Party, label: str, role: str) -> None:
    if signer.fingerprint != party.fingerprint:
        raise VerificationError(
            f"{label}: signed by {signer.fingerprint}, but the {role} named inside is "
            f"{party.name} {party.fingerprint}"
        )
