"""A ProofMode bundle: a zip of media, the proof made on the device as it was captured, and
the device's OpenPGP signatures.

    >>> with open("proofmode-bundle.zip", "rb") as f:                        # doctest: +SKIP
    ...     examine_bundle(f)
    {'state': 'consistent', 'proofs': 1, 'parts': [{'role': 'media', ...}, ...]}

ProofMode (an app for documenting events with a phone) shares each capture as a zip holding
the media file, ``<sha256>.proof.json`` and ``<sha256>.proof.csv`` (the device's record of
the capture: time, place, network, hardware, and the media's SHA-256 as ``File Hash
SHA256``), ``.asc`` OpenPGP signatures of the media and of each proof, the device's public key
``pubkey.asc``, and sometimes an OpenTimestamps proof (``.ots``) or a platform attestation
(``.gst``). A zip with at least one ``.proof.json`` is taken for a bundle; the vault keeps
the zip whole as one item (its signatures cover its parts' exact bytes) and records:

- ``parts``: each member's role (``media``, ``proof``, ``signature``, ``public-key``,
  ``timestamp``, ``attestation`` or ``other``), size and SHA-256, in the zip's order, but not
  its name (file names never go into a custody event);
- ``proofs``: how many proofs the bundle holds; ``state``: ``consistent`` when each proof's
  ``File Hash SHA256`` (the JSON's, and the CSV's where there is one) is the SHA-256 of a
  media file in the bundle, else ``mismatch`` or ``unreadable`` with a ``reason`` (which
  never names a member);
- ``signatures``: ``not verified``: the device key travels in the bundle itself, so a check
  against it would prove only that the bundle is self-consistent; which device keys to
  trust is a decision this vault does not yet take (the parts' digests let anyone check
  the signatures later, offline, with ``gpg --verify``).

Each member is read once, streamed, never whole (a proof is at most 1 MiB); a zip whose
declared sizes are out of proportion to its own (a zip bomb), or with a member compressed by
another method than deflate (ProofMode's), is not read at all.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import zipfile
import zlib
from typing import Any, BinaryIO

from vault.formats.provenance.c2pa_check import text

__all__ = ["examine_bundle"]

PROOF_JSON = ".proof.json"
PROOF_CSV = ".proof.csv"
HASH_FIELD = "File Hash SHA256"
MAX_MEMBERS = 1000
MAX_PROOF = 1 << 20
#: The largest central directory read: ample for MAX_MEMBERS entries (and more than a
#: member's chunk), never millions of them.
MAX_DIRECTORY = 2 << 20
# A bundle's members are mostly media, which barely compress: declared sizes above this
# multiple of the zip's own size (plus a margin for small bundles) are a bomb, not a capture.
MAX_RATIO = 100
MARGIN = 64 << 20
#: The compression methods read: zipfile inflates a bzip2 or LZMA member a whole read's worth
#: at once, whatever size it declares (a bomb in memory), a deflated one in bounded chunks.
READABLE = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_SHA256 = re.compile(r"[0-9a-f]{64}")


class _Bounded:
    """``src`` as zipfile reads it, refusing one read of more than :data:`MAX_DIRECTORY`
    bytes. zipfile reads a zip's central directory whole, in one read, and makes an object
    of each entry (hundreds of bytes each: millions of them, gigabytes, before the members
    could be counted); it reads a member a chunk at a time, here at most ``MAX_PROOF + 1``."""

    def __init__(self, src: BinaryIO) -> None:
        self._src = src

    def read(self, n: int = -1, /) -> bytes:
        if n > MAX_DIRECTORY:
            raise zipfile.BadZipFile(f"a central directory of more than {MAX_DIRECTORY} bytes")
        return self._src.read(n)

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        return self._src.seek(offset, whence)

    def tell(self) -> int:
        return self._src.tell()

    def seekable(self) -> bool:
        return True


def _role(name: str) -> str:
    base = name.rsplit("/", 1)[-1].lower()
    if base.endswith((PROOF_JSON, PROOF_CSV)):
        return "proof"
    if base == "pubkey.asc":
        return "public-key"
    if base.endswith((".asc", ".sig")):
        return "signature"
    if base.endswith(".ots"):
        return "timestamp"
    if base.endswith(".gst"):
        return "attestation"
    return "other"


def _digest(bundle: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    h = hashlib.sha256()
    with bundle.open(info) as member:
        while chunk := member.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's (or a CSV header's) names and values; ValueError if it names the hash
    more than once: readers differ on which one counts (Python's, the last)."""
    if [name for name, _ in pairs].count(HASH_FIELD) > 1:
        raise ValueError(f"names {HASH_FIELD!r} more than once")
    return dict(pairs)


def _proof_hash(raw: bytes, is_json: bool) -> str:
    """The ``File Hash SHA256`` a proof names; ValueError if it names none or several."""
    content = raw.decode("utf-8-sig")
    if is_json:
        record = json.loads(content, object_pairs_hook=_once)
        if not isinstance(record, dict):
            raise ValueError("the JSON proof is not an object")
        value = record.get(HASH_FIELD)
        if not isinstance(value, (str, type(None))):  # a list or an object is no hash
            raise ValueError(f"{HASH_FIELD!r} is not a hex SHA-256")
        values = {value}
    else:
        rows = csv.DictReader(io.StringIO(content))
        _once([(name, None) for name in rows.fieldnames or []])
        values = {row.get(HASH_FIELD) for row in rows}
    values.discard(None)
    if len(values) != 1:
        raise ValueError(f"names {len(values)} values of {HASH_FIELD!r}, not one")
    value = str(values.pop()).strip().lower()
    if not _SHA256.fullmatch(value):
        raise ValueError(f"{HASH_FIELD!r} is not a hex SHA-256")
    return value


def examine_bundle(src: BinaryIO) -> dict[str, Any] | None:
    """The finding for the zip ``src`` (seekable), or None if it is not a ProofMode bundle."""
    src.seek(0, io.SEEK_END)
    size = src.tell()
    src.seek(0)
    try:
        bundle = zipfile.ZipFile(_Bounded(src))
    except (zipfile.BadZipFile, NotImplementedError, ValueError, OSError, EOFError):
        return None  # not a zip after all (or of a zip version Python cannot read)
    with bundle:
        members = [i for i in bundle.infolist() if not i.is_dir()]
        proofs = [i for i in members if i.filename.lower().endswith(PROOF_JSON)]
        if not proofs:
            return None
        if len(members) > MAX_MEMBERS:
            return _unreadable(len(proofs), f"more than {MAX_MEMBERS} members")
        if any(i.compress_type not in READABLE for i in members):
            return _unreadable(len(proofs), "a member is compressed by a method other than "
                               "deflate (which alone is inflated a bounded chunk at a time)")
        if sum(i.file_size for i in members) > MAX_RATIO * size + MARGIN:
            return _unreadable(len(proofs), "its members' declared sizes are out of "
                               "proportion to the zip's (a zip bomb?)")
        try:
            return _examine(bundle, members, proofs)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError,
                EOFError, OSError, zlib.error) as e:
            # A damaged member, an encrypted one, an unknown compression: said, not raised,
            # by the kind of fault only, as zipfile's messages name the member.
            return _unreadable(len(proofs), "a member is damaged, encrypted or compressed "
                               f"by a method not supported ({type(e).__name__})")
        except ValueError as e:  # this module's own, about a proof (no name in them)
            return _unreadable(len(proofs), text(e))


def _unreadable(proofs: int, reason: str) -> dict[str, Any]:
    return {"state": "unreadable", "reason": reason, "proofs": proofs,
            "signatures": "not verified"}


def _examine(bundle: zipfile.ZipFile, members: list[zipfile.ZipInfo],
             proofs: list[zipfile.ZipInfo]) -> dict[str, Any]:
    # By position, not name: a hostile zip may hold two members of one name.
    digests = [_digest(bundle, i) for i in members]
    claimed: dict[int, str] = {}  # the position of a proof -> the media SHA-256 it names
    problems: list[str] = []
    for number, info in enumerate(proofs, start=1):
        named = _read_proof(bundle, info, True)
        partner = info.filename[: -len(PROOF_JSON)] + PROOF_CSV
        for at, other in enumerate(members):
            if other.filename == partner:
                claimed[at] = _read_proof(bundle, other, False)
                if claimed[at] != named:
                    problems.append(f"proof {number}: its JSON and CSV name different media "
                                    "hashes")
        claimed[members.index(info)] = named
    media_hashes = {d for at, d in enumerate(digests)
                    if at not in claimed and _role(members[at].filename) == "other"}
    for number, info in enumerate(proofs, start=1):
        if claimed[members.index(info)] not in media_hashes:
            problems.append(f"proof {number}: no file in the bundle has the SHA-256 it names")
    wanted = set(claimed.values())
    parts = [{"role": "media" if _role(i.filename) == "other" and digests[at] in wanted
              else _role(i.filename),
              "size": i.file_size, "sha256": digests[at]} for at, i in enumerate(members)]
    out: dict[str, Any] = {"state": "mismatch" if problems else "consistent",
                           "proofs": len(proofs), "parts": parts, "signatures": "not verified"}
    if problems:
        out["reason"] = text("; ".join(problems), 400)
    return out


def _read_proof(bundle: zipfile.ZipFile, info: zipfile.ZipInfo, is_json: bool) -> str:
    if info.file_size > MAX_PROOF:
        raise ValueError(f"a proof of {info.file_size} bytes, more than {MAX_PROOF}")
    with bundle.open(info) as member:
        raw = member.read(MAX_PROOF + 1)
    if len(raw) > MAX_PROOF:
        raise ValueError(f"a proof of more than {MAX_PROOF} bytes")
    try:
        return _proof_hash(raw, is_json)
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error, RecursionError) as e:
        raise ValueError(f"a proof that cannot be read ({type(e).__name__})") from None
