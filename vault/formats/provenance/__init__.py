"""What an evidence file says of its own origin, found at intake: C2PA manifests, ProofMode.

    >>> sniff(b"\\x89PNG\\r\\n\\x1a\\n" + bytes(8))
    'image/png'
    >>> sniff(b"%PDF-1.7\\n")
    'application/pdf'
    >>> sniff(b"plain text") is None
    True

Intake reads each file once into its blob; then, for a file whose first bytes (:func:`sniff`)
say it is an image, a video, audio or a PDF, or a zip that may be a ProofMode bundle,
:func:`examine` reads it a second time, from the same open file, and says what its own
provenance claims are worth. The finding goes into the signed ``item.ingested`` event, so
that no one holding the database can change it afterwards:

- ``{"c2pa": {...}}``: the file's C2PA manifest checked by the C2PA library, offline, against
  the trust anchors the vault is configured with (:mod:`.c2pa_check`): ``trusted``, ``valid``
  (intact, but its signer is not among the anchors), ``invalid`` with the failure codes, or
  ``none`` (no manifest: unknown provenance);
- ``{"proofmode": {...}}``: a ProofMode bundle's parts and whether its media hash the SHA-256
  its proof records (:mod:`.proofmode`).

The file is never altered; a file of any other kind gets no finding. The C2PA library (a
23 MB native library) is imported only when a file of its kinds is examined.

May import: :mod:`vault.errors` and the standard library here; :mod:`.c2pa_check` alone
imports ``c2pa``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, BinaryIO

__all__ = ["HEAD_SIZE", "Checks", "examine", "sniff"]

#: How many first bytes :func:`sniff` needs.
HEAD_SIZE = 32

ZIP = "application/zip"

# ISO base media file (MP4, MOV, HEIF, AVIF...): the major brand after "ftyp".
_BMFF_BRANDS = {
    b"heic": "image/heic", b"heix": "image/heic", b"heim": "image/heic", b"heis": "image/heic",
    b"mif1": "image/heif", b"msf1": "image/heif", b"avif": "image/avif", b"avis": "image/avif",
    b"qt  ": "video/quicktime", b"M4A ": "audio/mp4", b"M4V ": "video/x-m4v",
}


def sniff(head: bytes) -> str | None:
    """The media type of a file whose provenance :func:`examine` can check, by its first
    bytes (at least :data:`HEAD_SIZE` of them, or the whole of a shorter file); else None.

    By content, never by file name: a photograph named ``notes.txt`` is still checked."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith((b"II*\x00", b"MM\x00*")):  # TIFF, and the raw formats built on it
        return "image/tiff"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"RIFF") and len(head) >= 12:
        return {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/avi"}.get(
            head[8:12])
    if head[4:8] == b"ftyp" and len(head) >= 12:
        return _BMFF_BRANDS.get(head[8:12], "video/mp4")
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):
        return "image/jxl"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"ID3"):
        return "audio/mpeg"
    if head.startswith(b"PK\x03\x04"):
        return ZIP
    return None


@dataclass(frozen=True)
class Checks:
    """What intake checks provenance against: the PEM text of the C2PA trust anchors the
    vault is configured with (None: none configured, so no signer can be trusted)."""

    anchors_pem: str | None = None

    @property
    def anchors_sha256(self) -> str | None:
        """The SHA-256 of the anchors' PEM text, which each finding records: which anchors
        a ``trusted`` was decided by."""
        if self.anchors_pem is None:
            return None
        return hashlib.sha256(self.anchors_pem.encode("utf-8")).hexdigest()


def examine(src: BinaryIO, kind: str, checks: Checks) -> dict[str, Any] | None:
    """The provenance finding for a file of media type ``kind`` (from :func:`sniff`), read
    from the seekable ``src`` (from its start, to its end, never whole into memory), as
    JSON for the signed intake event; None for a zip that is not a ProofMode bundle.

    Never raises for what the file holds: a damaged manifest or bundle is a finding."""
    if kind == ZIP:
        from vault.formats.provenance.proofmode import examine_bundle

        bundle = examine_bundle(src)
        return None if bundle is None else {"proofmode": bundle}
    from vault.formats.provenance.c2pa_check import examine_c2pa

    return {"c2pa": examine_c2pa(src, kind, checks)}
