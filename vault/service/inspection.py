"""Everything that can be checked about a package, before a single file is kept.

    >>> keys = OwnKeys((my_age_identity,), "icc-officer")              # doctest: +SKIP
    >>> report = inspect_package(Path("PKG-0123456789AB.evpkg"), trusted=[sender_key],
    ...                          identities=keys)                        # doctest: +SKIP
    >>> report.statement.body                                            # doctest: +SKIP
    'ICC-OTP'

The package file is opened once and held open (:func:`~vault.formats.package.hold_package`):
every read below is of that one file, and the envelope bytes kept in the report are the ones
verified. Without identities (an auditor with no decryption key) this checks the envelope
signature and the payload's SHA-256. With them it first does the same, a read of the whole
payload that decrypts nothing, so a payload that is not the one the sender signed is refused
before a byte of it is decrypted or parsed; then it decrypts the payload in a second streaming
pass, hashing it again (the file may have been rewritten in place between the two), and checks
the whole bag, the signed statement (that it names this package, this body and the key used),
items.json against the statement, each derived copy's link against its original when both
travel together, and every custody event of the excerpt: its signature, its actor, its
inclusion proof against the envelope's signed checkpoint, and for a copy's ``item.ingested``
event, that it names the link the statement signs. Nothing here touches a database; with
``extract_to`` the files land in that (staging) folder, made only after the digest pass, and
removed again if anything fails.

The package must be a regular file (:func:`~vault.formats.package.read_package` refuses a
pipe or a device, and no caller passes a stream): it is read twice, which a stream cannot be.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from vault.crypto.age import AgeError, AgeIdentity, AgeReader
from vault.crypto.keys import VerifyKey
from vault.custody.events import Event
from vault.custody.merkle import leaf_hash, verify_inclusion
from vault.custody.note import Checkpoint, NoteVerifier, open_checkpoint
from vault.errors import DecryptionError, VaultError, VerificationError
from vault.formats.bagit import BagContents, PayloadCopy, encode_manifest_path, read_bag
from vault.formats.canonical import parse_json_object
from vault.formats.package import (
    Envelope,
    ItemLink,
    RecipientKey,
    ScannedPackage,
    Statement,
    StatementItem,
    hold_package,
    read_package,
    verify_envelope,
    verify_statement,
)
from vault.formats.safetar import printable
from vault.names import CASE_ID, LABEL, TAG_KEY
from vault.service import approvals
from vault.service.progress import Progress

READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class OwnKeys:
    """The age keys of one identity of this vault, to open packages with.

    ``only`` says it is the vault's only identity: a package none of its keys opens is then
    not for this vault at all, and ``--as`` cannot help.
    """

    keys: tuple[AgeIdentity, ...]
    identity: str
    only: bool = False

    def no_match(self, envelope: Envelope) -> DecryptionError:
        """The refusal of a package encrypted to none of these keys."""
        if not self.only:
            return DecryptionError(
                f"package {envelope.package_id}: no identity of this vault matched; is this "
                f"package for {envelope.body}? try --as NAME"
            )
        keys = ", ".join(k.fingerprint for k in envelope.recipients)
        return DecryptionError(
            f"package {envelope.package_id}: not for this vault; it is encrypted to "
            f"{envelope.body} ({keys}), not to {self.identity}, the only identity here; ask "
            "its sender for a package to your key"
        )


@dataclass
class PackageReport:
    """What was verified about one package."""

    path: Path
    envelope: Envelope
    envelope_bytes: bytes
    """The envelope exactly as verified: record these, never the file read again."""
    envelope_sha256: str
    sender_key: VerifyKey
    checkpoint: Checkpoint
    decrypted: bool = False
    statement: Statement | None = None
    statement_sha256: str | None = None
    statement_bytes: bytes | None = None
    statement_signature: str | None = None
    items: list[dict[str, Any]] = field(default_factory=list)
    custody_excerpt: bytes = b""
    custody_events: int = 0
    matched_key: RecipientKey | None = None
    bag: BagContents | None = None
    approved_by: tuple[str, ...] | None = None
    """The approvers the bag's approvals show (vault.service.approvals.check_packaged);
    None if it carries none."""
    staging_lock: int | None = None
    """A descriptor of ``extract_to``, flocked: the caller closes it once the staging folder
    is renamed or removed (``evault doctor`` leaves a locked staging folder alone)."""

    @property
    def package_id(self) -> str:
        """The package id."""
        return self.envelope.package_id


class _HashingReader:
    """Reads through to ``src`` while hashing everything read (the ciphertext's SHA-256).

    With a ``pool``, what ``readinto`` brought in is hashed on the helper thread while the
    caller decrypts it (hashlib releases the GIL); :meth:`finish` waits for the hashing.
    """

    def __init__(
        self,
        src: BinaryIO,
        pool: ThreadPoolExecutor | None = None,
        progress: Progress | None = None,
        total: int = 0,
        done: int = 0,
    ) -> None:
        self.src = src
        self.digest = hashlib.sha256()
        self.size = 0
        self._pool = pool
        self._pending: Future[None] | None = None
        self._progress = progress
        self._total = total
        self._done = done  # reported before this reader's bytes (an earlier pass)

    def finish(self) -> None:
        """Wait until everything read so far is in :attr:`digest`."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n)
        self.finish()
        self.digest.update(data)
        self.size += len(data)
        if self._progress is not None and data:
            self._progress(self._done + self.size, self._total)
        return data

    def readinto(self, buffer: Any) -> int:
        n = self.src.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            # The caller reuses its buffer at once: a copy is hashed meanwhile.
            data = bytes(memoryview(buffer)[:n])
            self.finish()
            if self._pool is not None:
                self._pending = self._pool.submit(self.digest.update, data)
            else:
                self.digest.update(data)
            self.size += n
            if self._progress is not None:
                self._progress(self._done + self.size, self._total)
        return int(n or 0)

    def readable(self) -> bool:
        return True


def _fail(report_id: str, message: str) -> VerificationError:
    return VerificationError(f"package {report_id}: {message}")


def _not_signed(report_id: str) -> VerificationError:
    return _fail(report_id, "payload.age does not match the SHA-256 in the signed envelope; "
                 "the payload was altered or swapped; nothing was decrypted: ask the sender "
                 "for the package again")


def _changed(report_id: str) -> VerificationError:
    return _fail(report_id, "payload.age changed while it was being opened; nothing was "
                 "received: open it again from a copy no one else writes to")


def verify_outside(path: Path, trusted: Sequence[VerifyKey]) -> PackageReport:
    """The checks anyone can make: envelope signature by a trusted sender, checkpoint note."""
    return _verify_outside(read_package(path), trusted)


def _verify_outside(pkg: ScannedPackage, trusted: Sequence[VerifyKey]) -> PackageReport:
    envelope = verify_envelope(pkg, trusted)
    sender_key = next(k for k in trusted if k.fingerprint == envelope.sender.fingerprint)
    cp_origin = envelope.checkpoint.split("\n", 1)[0]
    try:
        checkpoint, _ = open_checkpoint(
            envelope.checkpoint, [NoteVerifier.for_key(cp_origin, sender_key)]
        )
    except VaultError as e:
        raise _fail(envelope.package_id, f"envelope checkpoint: {e}") from None
    return PackageReport(
        path=pkg.path,
        envelope=envelope,
        envelope_bytes=pkg.envelope_bytes,
        envelope_sha256=hashlib.sha256(pkg.envelope_bytes).hexdigest(),
        sender_key=sender_key,
        checkpoint=checkpoint,
    )


def check_payload_digest(report: PackageReport) -> None:
    """Hash ``payload.age`` and compare with the signed envelope (no key needed); the file
    must still hold the envelope ``report`` verified."""
    with hold_package(report.path) as pkg:
        if pkg.envelope_bytes != report.envelope_bytes:
            raise _changed(report.package_id)
        _check_digest(pkg, report, None, pkg.payload_size)


def _check_digest(pkg: ScannedPackage, report: PackageReport, progress: Progress | None,
                  total: int) -> None:
    """The first pass: hash the whole payload, decrypting nothing (bytes go nowhere else)."""
    digest = hashlib.sha256()
    done = 0
    buffer = bytearray(READ_CHUNK)
    view = memoryview(buffer)
    with pkg.open_payload() as src:
        while n := src.readinto(view):
            digest.update(view[:n])
            done += n
            if progress is not None:
                progress(done, total)
    if done != report.envelope.payload_size or (
            digest.hexdigest() != report.envelope.payload_sha256):
        raise _not_signed(report.package_id)


def inspect_package(
    path: Path,
    *,
    trusted: Sequence[VerifyKey],
    identities: OwnKeys | None = None,
    extract_to: Path | None = None,
    progress: Progress | None = None,
    copy_payload: PayloadCopy | None = None,
) -> PackageReport:
    """Verify a package as far as the keys at hand allow (see the module docstring).

    ``progress`` gets (payload bytes read, payload size), and with ``identities`` (bytes read
    in both passes, twice the payload size): the digest pass, then the decrypting one.
    ``extract_to`` is a folder that does not exist yet: it is made (mode 0700) only once the
    payload is known to be the one the sender signed, and removed again if anything fails.
    ``copy_payload`` gets a second copy of each payload file as it is decrypted (``open``
    stores them at rest in the same pass); its copies are the caller's to discard if this
    raises.
    """
    with hold_package(path) as pkg:
        report = _verify_outside(pkg, trusted)
        if identities is None:
            _check_digest(pkg, report, progress, pkg.payload_size)
            return report
        envelope = report.envelope
        ours = {str(i.recipient): i for i in identities.keys}
        matched = [k for k in envelope.all_recipients if k.age_recipient in ours]
        if not matched:
            raise identities.no_match(envelope)
        report.matched_key = matched[0]
        before = pkg.file_state()
        _check_digest(pkg, report, progress, 2 * pkg.payload_size)
        if extract_to is not None:
            extract_to.mkdir(mode=0o700)
            report.staging_lock = os.open(extract_to, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(report.staging_lock, fcntl.LOCK_EX)
        try:
            bag = _decrypt(pkg, report, ours[matched[0].age_recipient], extract_to, progress,
                           copy_payload)
            if pkg.file_state() != before:
                raise _changed(envelope.package_id)
            report.bag = bag
            report.decrypted = True
            _check_statement(report, bag)
            _check_unlisted(report, bag)
            _check_items(report, bag)
            _check_custody(report, bag)
            assert report.statement is not None
            report.approved_by = approvals.check_packaged(
                envelope.package_id, bag.tag_files, report.statement.body,
                report.statement.items, report.checkpoint.origin)
        except BaseException:
            if extract_to is not None:
                shutil.rmtree(extract_to, ignore_errors=True)
            if report.staging_lock is not None:
                os.close(report.staging_lock)
            raise
    return report


def _decrypt(pkg: ScannedPackage, report: PackageReport, identity: AgeIdentity,
             extract_to: Path | None, progress: Progress | None,
             copy_payload: PayloadCopy | None) -> BagContents:
    """The second pass: decrypt and read the bag (into ``extract_to``), hashing the
    ciphertext again, so that what was decrypted is what the first pass found signed."""
    envelope = report.envelope
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        with pkg.open_payload() as raw:
            hashing = _HashingReader(raw, pool, progress, 2 * pkg.payload_size,
                                     done=pkg.payload_size)
            try:
                reader = AgeReader(cast(BinaryIO, hashing), [identity])
                # The tar reader asks for a few KiB at a time; a buffer in front of the
                # decryptor turns that into 1 MiB reads.
                plain = io.BufferedReader(cast(io.RawIOBase, reader), buffer_size=READ_CHUNK)
                bag = read_bag(cast(BinaryIO, plain), root=envelope.package_id,
                               extract_to=extract_to, copy_payload=copy_payload)
                # The tar may end before the age stream does; the final chunk must still
                # authenticate, and nothing may follow it.
                if plain.read(1):
                    raise _fail(envelope.package_id, "data after the end of the bag")
            except VaultError as error:
                # The payload was the signed one a moment ago; if it is not any more, that
                # is the root cause to report, so finish hashing.
                while hashing.read(READ_CHUNK):
                    pass
                hashing.finish()
                if hashing.digest.hexdigest() != envelope.payload_sha256:
                    raise _changed(envelope.package_id) from None
                if isinstance(error, AgeError):
                    raise _fail(envelope.package_id, "payload does not decrypt or "
                                "authenticate; it was altered") from None
                raise
            # Whatever the decryptor did not need still belongs to the member's digest.
            while hashing.read(READ_CHUNK):
                pass
        hashing.finish()
        if hashing.digest.hexdigest() != envelope.payload_sha256:
            raise _changed(envelope.package_id)
        return bag
    finally:
        pool.shutdown(wait=True)


def _check_statement(report: PackageReport, bag: BagContents) -> None:
    envelope = report.envelope
    pid = envelope.package_id
    data = bag.tag_files.get("evault/statement.json")
    sig = bag.tag_files.get("evault/statement.json.sig")
    if data is None or sig is None:
        raise _fail(pid, "the bag has no signed statement (evault/statement.json and .sig)")
    statement = verify_statement(data, sig.decode("utf-8", "replace"), [report.sender_key])
    if statement.package_id != pid:
        raise _fail(pid, f"the statement is for package {statement.package_id}; the payload "
                    "was taken from another package")
    if statement.body != envelope.body:
        raise _fail(pid, f"the statement is for body {statement.body}, the envelope for "
                    f"{envelope.body}; the payload was re-addressed")
    if set(statement.all_recipients) != set(envelope.all_recipients):
        raise _fail(pid, "the statement names other keys than the envelope; the payload was "
                    "re-encrypted for someone else")
    if report.matched_key not in statement.all_recipients:
        raise _fail(pid, "the statement does not name the key this package was opened with")
    if statement.tagmanifest_sha256 != bag.tagmanifest_sha256:
        raise _fail(pid, "the statement does not cover this bag's tag manifest")
    for needed in ("evault/items.json", "evault/custody.jsonl"):
        if needed not in bag.tagmanifest:
            raise _fail(pid, f"{needed} is not covered by the tag manifest")
    listed = {i.path: i.sha256 for i in statement.items}
    if listed != bag.manifest:
        raise _fail(pid, "the statement's items differ from the bag's manifest")
    report.statement = statement
    report.statement_bytes = data
    report.statement_signature = sig.decode("utf-8")
    report.statement_sha256 = hashlib.sha256(data).hexdigest()


#: The only files of a package's bag outside data/ that its tag manifest does not list:
#: the manifest itself and the statement that names the manifest's digest.
_UNLISTED_ALLOWED = frozenset(
    {"tagmanifest-sha256.txt", "evault/statement.json", "evault/statement.json.sig"})


def _check_unlisted(report: PackageReport, bag: BagContents) -> None:
    """Refuse a file outside data/ that no signature covers: the sender's statement signs
    the tag manifest, so an unlisted file could be anyone's, and would be extracted."""
    for name in sorted(bag.tag_files):
        if name not in bag.tagmanifest and name not in _UNLISTED_ALLOWED:
            raise _fail(report.envelope.package_id, f"{printable(encode_manifest_path(name))} "
                        "is not listed in the tag manifest, so no signature covers it; files "
                        "outside data/ must be listed; ask the sender for a new package")


def _check_items(report: PackageReport, bag: BagContents) -> None:
    pid = report.envelope.package_id
    assert report.statement is not None
    try:
        items = json.loads(bag.tag_files["evault/items.json"])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise _fail(pid, "evault/items.json is not valid JSON") from None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise _fail(pid, "evault/items.json must be a list of objects")
    by_id = {i.id: i for i in report.statement.items}
    if sorted(str(i.get("id")) for i in items) != sorted(by_id):
        raise _fail(pid, "evault/items.json lists other items than the statement")
    for item in items:
        signed = by_id[str(item["id"])]
        link = signed.derived_from.to_json() if signed.derived_from is not None else None
        if (item.get("sha256"), item.get("size"), item.get("path"), item.get("derived_from")
                ) != (signed.sha256, signed.size, signed.path, link):
            raise _fail(pid, f"item {signed.id}: items.json differs from the signed statement")
        problem = _metadata_problem(item)
        if problem:
            raise _fail(pid, f"item {signed.id}: evault/items.json: {problem}")
        claimed = (item.get("digests") or {}).get("sha256")
        if claimed is not None:
            check_claimed_digest(pid, signed.id, "sha256", claimed, signed.sha256)
    _check_links(pid, report.statement.items)
    report.items = items


def _check_links(pid: str, items: Sequence[StatementItem]) -> None:
    """A derived copy whose original travels in the same package: the original's SHA-256
    must be the one the copy's signed link names (a sender cannot link a copy to an item it
    does not hold, and a link in one package is checked at once)."""
    by_id = {i.id: i for i in items}
    for item in items:
        link = item.derived_from
        original = by_id.get(link.id) if link is not None else None
        if link is not None and original is not None and original.sha256 != link.sha256:
            raise _fail(pid, f"item {item.id}: its signed link names {link.id} with SHA-256 "
                        f"{link.sha256}, but {link.id} in this package has SHA-256 "
                        f"{original.sha256}; the sender's link is false; ask the sender for a "
                        "corrected package")


def _check_event_link(pid: str, where: str, event: Event, link: ItemLink | None) -> bool:
    """The sender's own signed intake event of an item names its link, or none; the
    statement's link must say the same (both are the sender's: they must agree). An
    ``item.ingested`` event must name the very link; an ``item.received`` event (an item the
    sender received and passes on) the same digest, relation and tool, as the sender may name
    an original it also holds by its own id. True for an intake event, checked."""
    if event.action not in ("item.ingested", "item.received"):
        return False
    said = event.details.get("derived_from")
    signed = link.to_json() if link is not None else None
    if event.action == "item.received" and isinstance(said, dict) and signed is not None:
        keys = ("sha256", "relation", "tool")
        agree = all(said.get(k) == signed.get(k) for k in keys)
    else:
        agree = said == signed
    if not agree:
        raise _fail(pid, f"{where}: item {event.subject}: the signed statement's link "
                    f"({_link_text(signed)}) is not the one the sender's {event.action} event "
                    f"{event.seq} names ({_link_text(said)}); the sender's records disagree; "
                    "ask the sender")
    return True


def _link_text(link: object) -> str:
    if not isinstance(link, dict):
        return "none"
    return printable(" ".join(str(link.get(k)) for k in ("id", "sha256", "relation")))[:160]


CLAIMABLE_DIGESTS = ("sha256", "md5", "sha1")
"""The digests a sender may list in items.json: those this vault recomputes on receipt."""


def check_claimed_digest(pid: str, item_id: str, algorithm: str, claimed: str,
                         computed: str) -> None:
    """Refuse a digest the sender claims for an item that is not the one of its content:
    the recipient records only digests it computed, and a false claim is a false record."""
    if claimed.lower() != computed:
        raise _fail(pid, f"item {item_id}: the sender's {algorithm} in evault/items.json "
                    f"({claimed}) is not the content's ({computed}); nothing was received, "
                    "ask the sender for a corrected package")


_DIGEST = re.compile(r"[a-z0-9]{1,16}")


def _is_digest_name(key: object) -> bool:
    return isinstance(key, str) and _DIGEST.fullmatch(key) is not None


def _metadata_problem(item: dict[str, Any]) -> str | None:
    """Why an item's metadata cannot be received as it is (it becomes rows of this vault),
    or None. The sender signed it, but a signature is no promise of well-formed data."""
    for name in ("title", "description", "source", "location", "collected_at", "name"):
        if item.get(name) is not None and not isinstance(item[name], str):
            return f"{name} must be a string"
    case = item.get("case")
    if case is not None and not CASE_ID.matches(case):
        return f"case {printable(str(case)[:80])} must be a case id ({CASE_ID.text})"
    labels = item.get("labels") or []
    if not isinstance(labels, list) or not all(
            LABEL.matches(lb) for lb in labels) or len(
            set(labels)) != len(labels):
        return "labels must be a list of distinct lowercase labels"
    for name, key_matches in (("tags", TAG_KEY.matches), ("digests", _is_digest_name)):
        table = item.get(name) or {}
        if not isinstance(table, dict) or not all(
                key_matches(k) and isinstance(v, str) and len(v) <= 4096
                for k, v in table.items()):
            return f"{name} must be a table of simple keys to strings"
    unknown = sorted(set(item.get("digests") or {}) - set(CLAIMABLE_DIGESTS))
    if unknown:
        return (f"digest {unknown[0]} cannot be recomputed here; digests may be "
                f"{', '.join(CLAIMABLE_DIGESTS)}")
    return None


def _check_custody(report: PackageReport, bag: BagContents) -> None:
    pid = report.envelope.package_id
    checkpoint = report.checkpoint
    item_ids = {i.id for i in report.statement.items} if report.statement else set()
    links = {i.id: i.derived_from for i in report.statement.items} if report.statement else {}
    data = bag.tag_files["evault/custody.jsonl"]
    count = 0
    intake: set[str] = set()
    for number, line in enumerate(data.splitlines(), start=1):
        where = f"evault/custody.jsonl line {number}"
        try:
            entry = parse_json_object(line, where)
            body = str(entry["event"]).encode("utf-8")
            event = Event.decode(body)
            signature = base64.b64decode(entry["signature"], validate=True)
            key = VerifyKey.from_openssh(str(entry["actor_key"]))
            proof = [base64.b64decode(h, validate=True) for h in entry["proof"]]
        except (KeyError, TypeError, ValueError, VaultError) as e:
            raise _fail(pid, f"{where}: malformed ({e})") from None
        if key.fingerprint != event.actor:
            raise _fail(pid, f"{where}: the key given is not the event's actor")
        try:
            key.verify(signature, body)
        except VerificationError:
            raise _fail(pid, f"{where}: event {event.seq} signature does not verify") from None
        if event.log != checkpoint.origin:
            # Another office's genuine event, put in a tree the sender made: not the sender's.
            raise _fail(pid, f"{where}: event {event.seq} is of log {printable(event.log)}, "
                        f"not of {checkpoint.origin}, the sender's log its envelope's "
                        "checkpoint names; ask the sender for a new package")
        if event.subject not in item_ids:
            raise _fail(pid, f"{where}: event {event.seq} is about {event.subject}, not an item "
                        "of this package")
        if entry.get("tree_size") != checkpoint.size or event.seq != entry.get("seq"):
            raise _fail(pid, f"{where}: proof is not against the envelope's checkpoint")
        try:
            verify_inclusion(leaf_hash(body), event.seq, checkpoint.size, proof,
                             checkpoint.root_hash)
        except VerificationError:
            raise _fail(pid, f"{where}: event {event.seq} is not in the sender's log at the "
                        "envelope's checkpoint") from None
        if _check_event_link(pid, where, event, links.get(event.subject)):
            intake.add(event.subject)
        count += 1
    for item_id in sorted({i for i, link in links.items() if link is not None} - intake):
        raise _fail(pid, f"evault/custody.jsonl lacks item {item_id}'s intake event, which its "
                    "link must agree with; ask the sender for a new package")
    report.custody_excerpt = data
    report.custody_events = count
