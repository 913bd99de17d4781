"""A file's C2PA manifest, checked offline by the C2PA library against configured anchors.

    >>> with open("photo.jpg", "rb") as f:                                   # doctest: +SKIP
    ...     examine_c2pa(f, "image/jpeg", Checks(anchors_pem=pem))
    {'state': 'trusted', 'manifest': 'urn:c2pa:...', 'issuer': '...', ...}

C2PA (the Coalition for Content Provenance and Authenticity) binds a signed manifest to an
image, video, audio file or PDF: who signed it (an X.509 certificate), with what tool, and a
hash of the file's bytes. The library that implements the specification (``c2pa-python``,
over the reference ``c2pa-rs``) does the checking; this module only asks it, offline (no
remote manifest, no OCSP), and turns its answer into the finding the signed intake event
records:

- ``state``: ``trusted`` (intact, signature valid, signer chains to a trust anchor),
  ``valid`` (intact and signature valid, but the signer is not among the anchors), ``invalid``
  (a hash, signature or structure check failed), ``none`` (no manifest: unknown provenance),
  or ``unchecked`` with a ``reason`` (the library failed, or could not parse the file as
  the kind its first bytes say, so no manifest was looked for, or it took longer than its
  time limit: the evidence is ingested all the same, and the finding says that nothing was
  found either way);
- ``codes``: the C2PA status codes of the failures (``assertion.dataHash.mismatch``,
  ``signingCredential.untrusted``...), sorted;
- ``manifest``: the active manifest's label; ``issuer``: what C2PA calls the claim's
  issuer, the organisation the signing certificate names as its own (its subject's O, not
  its CA's: a camera maker, a newsroom; in a certificate made out to a person, it may be a
  name); ``serial``: the certificate's serial number (its common name, most often a
  person's or a device's, is never recorded); ``alg``; ``signed_at`` if a time-stamp says when;
  ``generator``: the software or device that made the claim;
- ``anchors``: the SHA-256 of the trust anchors' PEM text (absent when none is configured);
  ``checker``: the library's version.

Every string comes from the file and is made printable and short before it is recorded.
"""

from __future__ import annotations

import functools
import io
import json
import os
import time
from typing import Any, BinaryIO

from vault.errors import VaultError
from vault.formats.provenance import Checks

__all__ = ["STATES", "examine_c2pa"]

#: The states a finding can have.
STATES = ("trusted", "valid", "invalid", "none", "unchecked")

MAX_TEXT = 200
#: How long a check may take, in seconds, plus one for each MIN_RATE bytes of the file.
TIME_LIMIT = 60.0
MIN_RATE = 10 << 20
MAX_CODES = 16
#: The library's errors that say something failed other than the file: reading it, or the
#: library's own state (a plain C2paError, "Context is not valid"); never a finding.
_NOT_THE_FILE = frozenset({"Error", "Io", "UntrackedPointer", "WrongPointerType",
                           "FileNotFound"})
#: What the library says (an ``Other`` error) of a file it cannot parse as its kind at all: a
#: note that begins ``%PDF-``, a JPEG cut short; not a manifest that fails its checks.
_UNPARSED = "asset could not be parsed"


def text(value: object, limit: int = MAX_TEXT) -> str:
    """A string from a file, on one line and printable (others escaped), at most ``limit``."""
    raw = str(value)
    out = "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in raw)
    return out if len(out) <= limit else out[: limit - 3] + "..."


@functools.lru_cache(maxsize=2)
def _context(anchors_pem: str | None, pid: int) -> Any:
    """One C2PA context per set of anchors and process (``pid``: a worker forked from a
    process that made one must make its own; the library voids it in the child): offline,
    trust checked."""
    import c2pa

    settings: dict[str, Any] = {"verify": {"verify_trust": True,
                                           "remote_manifest_fetch": False,
                                           "ocsp_fetch": False}}
    if anchors_pem is not None:
        settings["trust"] = {"trust_anchors": anchors_pem}
    return c2pa.Context.from_dict(settings)


class _Timed:
    """``src`` (from its start) as the C2PA library reads it, each read and seek failing
    once the check has taken more than :data:`TIME_LIMIT` seconds and a second for each
    :data:`MIN_RATE` bytes of the file: the library's time is its own, and some files take
    it far longer than their size (a video of nothing but empty boxes: hours for a few
    MiB); it reads as it goes, so a failed read stops it."""

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        size = src.seek(0, io.SEEK_END)
        src.seek(0)
        self._end = time.monotonic() + TIME_LIMIT + size / MIN_RATE
        self.stopped = False

    def _in_time(self) -> None:
        if time.monotonic() > self._end:
            self.stopped = True
            raise OSError("the C2PA check's time limit passed")

    def read(self, n: int = -1) -> bytes:
        self._in_time()
        return self._src.read(n)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._in_time()
        return self._src.seek(offset, whence)

    def tell(self) -> int:
        return self._src.tell()

    def write(self, data: bytes) -> int:
        raise OSError("the file is never written")

    def flush(self) -> None:
        pass


def checker_version() -> str:
    """``c2pa-rs <version>``: the implementation that checked."""
    import c2pa

    return f"c2pa-rs {c2pa.sdk_version()}"


def examine_c2pa(src: BinaryIO, kind: str, checks: Checks) -> dict[str, Any]:
    """The finding for ``src`` (seekable, read from its start) of media type ``kind``."""
    import c2pa

    finding: dict[str, Any] = {}
    anchors = checks.anchors_sha256
    try:
        context = _context(checks.anchors_pem, os.getpid())
    except c2pa.C2paError as e:
        raise VaultError(f"C2PA check: the library could not be set up ({text(e)}); nothing "
                         "was recorded: check [c2pa] trust_anchors in config.toml") from None
    timed = _Timed(src)
    try:
        with c2pa.Reader(kind, timed, context=context) as reader:
            store = json.loads(reader.json())
    except c2pa.C2paError as e:
        name = type(e).__name__.lstrip("_").removeprefix("C2pa")
        if name == "ManifestNotFound":
            finding = {"state": "none"}
        elif name in _NOT_THE_FILE or _UNPARSED in str(e):
            # The reading or the library failed, or the file is not of the kind its first
            # bytes say, so no manifest was looked for: said so, never taken for a finding
            # about a manifest, and never a reason to refuse the evidence.
            finding = {"state": "unchecked", "reason": text(f"{name}: {e}")}
        else:
            finding = {"state": "invalid", "codes": ["manifest.unreadable"],
                       "reason": text(f"{name}: {e}")}
    else:
        finding = _finding(store)
    if timed.stopped:  # whatever the library made of reads that failed, it is no finding
        finding = {"state": "unchecked",
                   "reason": "the check took longer than its time limit and was stopped"}
    if anchors is not None:
        finding["anchors"] = anchors
    finding["checker"] = checker_version()
    return finding


def _finding(store: dict[str, Any]) -> dict[str, Any]:
    """The finding from the library's manifest store report."""
    state = str(store.get("validation_state", "")).lower()
    if state not in ("trusted", "valid", "invalid"):
        # A state this module does not know (a newer library) is never taken for success.
        state = "invalid"
    results = store.get("validation_results") or {}
    active = results.get("activeManifest") if isinstance(results, dict) else None
    failures = active.get("failure", []) if isinstance(active, dict) else []
    codes = sorted({text(f.get("code"), 80) for f in failures if isinstance(f, dict)})
    if state == "invalid" and not codes:
        codes = sorted({text(f.get("code"), 80)
                        for f in store.get("validation_status") or [] if isinstance(f, dict)})
    out: dict[str, Any] = {"state": state}
    if codes:
        out["codes"] = codes[:MAX_CODES]
    label = store.get("active_manifest")
    manifest = (store.get("manifests") or {}).get(label) if isinstance(label, str) else None
    if isinstance(label, str):
        out["manifest"] = text(label)
    if isinstance(manifest, dict):
        signature = manifest.get("signature_info") or {}
        for ours, theirs in (("issuer", "issuer"), ("serial", "cert_serial_number"),
                             ("alg", "alg"), ("signed_at", "time")):
            if signature.get(theirs):
                out[ours] = text(signature[theirs])
        generators = manifest.get("claim_generator_info") or []
        if generators and isinstance(generators[0], dict) and generators[0].get("name"):
            first = generators[0]
            out["generator"] = text(" ".join(str(first[k]) for k in ("name", "version")
                                             if first.get(k)))
    return out
