"""What kind of evault file a byte string (or a file) is: :func:`detect`, :func:`detect_file`.

    >>> detect(b'{"type":"evault-acknowledgement","version":2}')
    'acknowledgement'

One job: name the kind, one of :data:`KINDS`, so that an auditor's ``verify FILE...`` knows
which strict reader comes next; nothing is parsed strictly or verified here. It knows every
format that leaves the vault: a ``.evpkg`` package (a tar whose first member is
payload.age, or envelope.json in layout 1), the JSON documents by their ``type``
(envelope, statement, sharing receipt, acknowledgement, contact card, approval request,
approval) and a custody checkpoint (a signed note).

Imports: :mod:`vault.formats.package` (its ``rules``, ``documents`` and ``container``),
:mod:`vault.formats.receipt`, :mod:`vault.formats.approval`, :mod:`vault.formats.card`,
:mod:`vault.formats.canonical`, :mod:`vault.formats.safetar` (``printable``),
:mod:`vault.errors`. No format imports it.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from vault.errors import UsageError, VerificationError
from vault.formats.approval import APPROVAL_REQUEST_TYPE, APPROVAL_TYPE
from vault.formats.canonical import parse_json_object
from vault.formats.card import CARD_TYPE
from vault.formats.package.container import (
    ENVELOPE_MEMBER,
    MAX_PAX_HEADER,
    PAYLOAD_MEMBER,
    open_regular,
    padded,
)
from vault.formats.package.documents import ENVELOPE_TYPE, STATEMENT_TYPE
from vault.formats.package.rules import MAX_CHECKPOINT, MAX_DOCUMENT, looks_like_note
from vault.formats.receipt import ACKNOWLEDGEMENT_TYPE, SHARING_RECEIPT_TYPE
from vault.formats.safetar import printable

__all__ = ["DETECT_HEAD", "KINDS", "detect", "detect_file"]

DETECT_HEAD = 64 * 1024

_JSON_KINDS = {
    ENVELOPE_TYPE: "envelope",
    STATEMENT_TYPE: "statement",
    SHARING_RECEIPT_TYPE: "sharing-receipt",
    ACKNOWLEDGEMENT_TYPE: "acknowledgement",
    CARD_TYPE: "contact-card",
    APPROVAL_REQUEST_TYPE: "approval-request",
    APPROVAL_TYPE: "approval",
}
KINDS = ("package", *_JSON_KINDS.values(), "checkpoint")


def _tar_header(block: bytes) -> tarfile.TarInfo | None:
    if len(block) < tarfile.BLOCKSIZE or block[257:262] != b"ustar":
        return None
    try:
        return tarfile.TarInfo.frombuf(block[: tarfile.BLOCKSIZE], "utf-8", "surrogateescape")
    except (tarfile.TarError, ValueError, OverflowError):
        return None


def _tar_first_name(data: bytes) -> str | None:
    """The first member's name if ``data`` opens with a tar header, else None."""
    info = _tar_header(data)
    if info is None or info.type != tarfile.XHDTYPE:
        return None if info is None else str(info.name)
    # A pax header first: its path record, else the name in the one header after it
    # (one level only: read_package refuses chained extension headers anyway).
    end = tarfile.BLOCKSIZE + info.size
    if info.size > MAX_PAX_HEADER or end > len(data):
        return None
    for record in data[tarfile.BLOCKSIZE : end].split(b"\n"):
        _, _, keyvalue = record.partition(b" ")
        if keyvalue.startswith(b"path="):
            return keyvalue[5:].decode("utf-8", "surrogateescape")
    following = _tar_header(data[tarfile.BLOCKSIZE + padded(info.size) :])
    return None if following is None else str(following.name)


def detect(data: bytes) -> str:
    """What kind of evault file ``data`` is: one of :data:`KINDS`, or VerificationError.

    ``data`` is the whole file, except for a package, where the first 64 KiB
    (:data:`DETECT_HEAD`) are enough: a tar whose first member is payload.age (layout 2) or
    envelope.json (layout 1) is a ``"package"``. A JSON object is named by its ``type``
    (``"envelope"``, ``"statement"``, ``"sharing-receipt"``, ``"acknowledgement"``,
    ``"contact-card"``, ``"approval-request"``, ``"approval"``); text ending in a blank
    line and ``— `` signature lines is a ``"checkpoint"`` (a signed note). Only the kind is
    decided here: nothing is parsed strictly or verified, that is the next step's job.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise UsageError(f"detect: expected bytes, not {type(data).__name__}")
    data = bytes(data)
    first = _tar_first_name(data)
    if first is not None:
        if first in (PAYLOAD_MEMBER, ENVELOPE_MEMBER):  # layouts 2 and 1
            return "package"
        raise VerificationError(
            f"not an evault file: a tar archive whose first member is "
            f"{printable(first)[:100]!r}, not {PAYLOAD_MEMBER} or {ENVELOPE_MEMBER}"
        )
    if data.lstrip(b" \t\r\n")[:1] == b"{":
        try:
            obj = parse_json_object(data, "json document", limit=MAX_DOCUMENT)
        except VerificationError as e:
            raise VerificationError(f"not an evault file: {e}") from None
        kind = obj.get("type")
        if isinstance(kind, str) and kind in _JSON_KINDS:
            return _JSON_KINDS[kind]
        shown = printable(kind)[:64] if isinstance(kind, str) else None
        raise VerificationError(f"not an evault file: a json object of type {shown!r}")
    if len(data) <= MAX_CHECKPOINT:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        if looks_like_note(text):
            return "checkpoint"
    raise VerificationError(
        "not an evault file: neither a package, a json document nor a signed note"
    )


def detect_file(path: Path) -> str:
    """:func:`detect` on a file, reading only what it needs.

    The first 64 KiB decide whether it is a package; any other kind is read whole, up to
    16 MiB (no evault document is larger). A fifo or device is refused, never read.
    """
    path = Path(path)
    label = f"file {printable(path.name)[:100]}"
    fd = open_regular(path, label)
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, DETECT_HEAD, 0)
        if _tar_first_name(head) is not None or size <= len(head):
            data = head
        elif size > MAX_DOCUMENT:
            raise VerificationError(
                f"not an evault file: {label} is larger than {MAX_DOCUMENT} bytes and not a tar"
            )
        else:
            data = _read_all(fd, size, label)
    finally:
        os.close(fd)
    try:
        return detect(data)
    except VerificationError as e:
        raise VerificationError(f"{e} ({label})") from None


def _read_all(fd: int, size: int, label: str) -> bytes:
    chunks = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            raise VerificationError(f"{label}: shrank while being read")
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)
