"""Regenerate the bad-input corpus: ``.venv/bin/python tests/corpus/make_corpus.py``.

Every file is derived from a few valid documents made with the fixed test keys below (so
signatures are real and the mutations reach the checks behind them), then damaged in one
named way. The expected outcome of each file is in README.md, which the tests read. The
keys are test keys made from fixed bytes; never use them for anything else.

The output is the same bytes on every run: the keys are fixed, Ed25519 signatures are
deterministic, every time is a constant, and age encryption draws its file key, ephemeral
keys and nonce from a test DRBG seeded with the plaintext (:func:`seal`), never from the
system. tests/test_robustness_corpus.py regenerates the corpus into a temporary folder
and requires it to equal the committed one, file for file and byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from vault.crypto import sshsig
from vault.crypto.age import AgeIdentity, AgeWriter
from vault.crypto.keys import SigningKey
from vault.custody.note import Checkpoint, NoteSigner
from vault.formats import package as fmt
from vault.formats import receipt as rfmt
from vault.formats.bagit import BagWriter
from vault.formats.card import make_card

HERE = Path(__file__).resolve().parent

# Test keys from fixed bytes: the corpus sender, the receiving officer (ICC-OTP) and a
# stranger whose signatures nobody trusts.
SENDER = SigningKey.from_seed(bytes(range(0x10, 0x30)))
SENDER_AGE = AgeIdentity.from_raw(bytes(range(0x30, 0x50)))  # the sender's escrow key
OFFICER = SigningKey.from_seed(bytes(range(0x50, 0x70)))
OFFICER_AGE = AgeIdentity.from_raw(bytes(range(0x70, 0x90)))
STRANGER = SigningKey.from_seed(bytes(range(0x90, 0xB0)))
SENDER_NAME = "corpus-office"
OFFICER_NAME = "corpus-officer"
ORIGIN = "evault/00000000000000000000000000c0ffee"
CREATED = "2026-11-28T09:30:00Z"
ITEM_A, ITEM_B = "EV-00000000000A", "EV-00000000000B"

PARTY = fmt.Party(SENDER_NAME, SENDER.public.fingerprint)
RECIPIENT = fmt.RecipientKey(OFFICER.public.fingerprint, str(OFFICER_AGE.recipient))
ESCROW = fmt.RecipientKey(SENDER.public.fingerprint, str(SENDER_AGE.recipient))
CHECKPOINT = NoteSigner(ORIGIN, SENDER).sign(Checkpoint(ORIGIN, 0, hashlib.sha256().digest())
                                             .to_text())


def corpus_drbg(seed: bytes) -> Callable[[int], bytes]:
    """Deterministic "randomness" for the corpus only: SHA-256 of a label, the seed and a
    counter. Never for anything real; it makes the committed corpus reproducible."""
    counter = 0

    def draw(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            out += hashlib.sha256(b"evault test corpus drbg\0" + seed
                                  + counter.to_bytes(8, "big")).digest()
            counter += 1
        return out[:n]

    return draw


def seal(plaintext: bytes) -> bytes:
    """age-encrypt ``plaintext`` to the officer and the escrow key, with :func:`corpus_drbg`
    seeded by the plaintext: the same bag gives the same payload bytes."""
    out = io.BytesIO()
    recipients = [OFFICER_AGE.recipient, SENDER_AGE.recipient]
    with AgeWriter(out, recipients, rng=corpus_drbg(plaintext)) as writer:
        writer.write(plaintext)
    return out.getvalue()


def package_id(n: int) -> str:
    """A distinct valid package id per corpus package (Crockford base32)."""
    return f"PKG-{n:012d}"


# ----------------------------------------------------------------------------- bags


def signed_bag(pid: str, files: dict[str, bytes] | None = None,
               items_override: list[dict[str, object]] | None = None,
               oxum: str | None = None, unlisted: dict[str, bytes] | None = None,
               custody: bytes = b"") -> bytes:
    """A complete, valid bag (statement signed by SENDER) as a tar, as evault builds one;
    ``custody`` is its custody excerpt (evault/custody.jsonl), empty unless given."""
    files = files if files is not None else {ITEM_A: b"fictional statement\n",
                                             ITEM_B: bytes(range(256)) * 4}
    out = io.BytesIO()
    bag = BagWriter(out, pid, bagging_date=date(2026, 11, 28))
    items = []
    metadata = []
    for item_id, data in files.items():
        path = f"{item_id}/{item_id.lower()}.bin"
        digest = bag.add_payload(path, io.BytesIO(data), len(data))
        items.append(fmt.StatementItem(item_id, f"data/{path}", len(data), digest))
        metadata.append({"id": item_id, "case": "UA-2026-0042", "name": f"{item_id.lower()}.bin",
                         "path": f"data/{path}", "title": None, "description": None,
                         "source": None, "collected_at": None, "location": None,
                         "size": len(data), "sha256": digest, "digests": {}, "labels": [],
                         "tags": {}, "ingested_at": CREATED,
                         "ingested_by": SENDER.public.fingerprint})
    for override in items_override or []:
        metadata[0].update(override)
    text = json.dumps(metadata, indent=None if items_override else 2)
    if items_override and "title" in items_override[0]:
        # Deeper than Python's recursion limit: written by hand, json.dumps cannot.
        text = text.replace('"title": "deep"', '"title": ' + "[" * 3000 + "]" * 3000)
    bag.add_tag_file("evault/items.json", text.encode())
    bag.add_tag_file("evault/custody.jsonl", custody)
    summary = bag.finish([("Source-Organization", "Fictional Ministry"),
                          ("External-Identifier", pid), ("EVault-Body", "ICC-OTP")])
    statement = fmt.Statement(package_id=pid, body="ICC-OTP", recipients=(RECIPIENT,),
                              escrow=ESCROW, sender=PARTY, created_at=CREATED,
                              items=tuple(items), tagmanifest_sha256=summary.tagmanifest_sha256)
    data, sig = fmt.sign_statement(statement, SENDER)
    bag.add_tag_file("evault/statement.json", data, in_tagmanifest=False)
    bag.add_tag_file("evault/statement.json.sig", sig.encode(), in_tagmanifest=False)
    for name, data in (unlisted or {}).items():  # files no signature covers
        bag.add_tag_file(name, data, in_tagmanifest=False)
    bag.close()
    raw = out.getvalue()
    if oxum is not None:
        raw = _replace_member(raw, f"{pid}/bag-info.txt", lambda text: text.replace(
            b"Payload-Oxum: ", b"Payload-Oxum: " + oxum.encode() + b"\nX-Old: "))
    return raw


def _replace_member(tar_bytes: bytes, name: str, change: object) -> bytes:
    members = []
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for m in tar.getmembers():
            data = tar.extractfile(m).read() if m.isfile() else None  # type: ignore[union-attr]
            if m.name == name and data is not None:
                data = change(data)  # type: ignore[operator]
                m.size = len(data)
            members.append((m, data))
    return _tar(members)


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def hostile_bag(pid: str, kind: str) -> bytes:
    """A bag tar with one unsafe entry: what a sender's key alone must not achieve."""
    def file(name: str, data: bytes = b"owned") -> tuple[tarfile.TarInfo, bytes]:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        return info, data

    def special(name: str, type_: bytes, link: str = "") -> tuple[tarfile.TarInfo, None]:
        info = tarfile.TarInfo(name)
        info.type = type_
        info.linkname = link
        return info, None

    entries: list[tuple[tarfile.TarInfo, bytes | None]] = {
        "traversal": [file(f"{pid}/data/../../../escaped.txt")],
        "absolute": [file("/tmp/evault-corpus-escaped.txt")],
        "symlink": [special(f"{pid}/data/link", tarfile.SYMTYPE, "/etc/passwd")],
        "hardlink": [file(f"{pid}/data/a"), special(f"{pid}/data/b", tarfile.LNKTYPE,
                                                     f"{pid}/data/a")],
        "device": [special(f"{pid}/data/null", tarfile.CHRTYPE)],
        "fifo": [special(f"{pid}/data/pipe", tarfile.FIFOTYPE)],
        "outside-root": [file("elsewhere/x.txt")],
        "duplicate": [file(f"{pid}/data/a"), file(f"{pid}/data/a", b"other")],
        "declared-1tib": [],  # handled below
    }[kind]
    raw = _tar(entries)
    if kind == "declared-1tib":
        # A header that declares a 1 TiB member followed by a few bytes: refused at the
        # header, never read or allocated.
        info = tarfile.TarInfo(f"{pid}/data/huge.bin")
        info.size = 1 << 40
        header = info.tobuf(tarfile.PAX_FORMAT)
        raw = header + b"x" * 1024 + b"\0" * 1024
    return raw


# ----------------------------------------------------------------------------- packages


def package(pid: str, bag_tar: bytes, *, envelope_changes: dict[str, object] | None = None,
            payload: bytes | None = None, layout: int = 1) -> bytes:
    """A package signed by SENDER around ``bag_tar`` (encrypted to the officer and escrow).

    Layout 1 (the envelope first), as every package was written before December 2026: the
    corpus keeps proving that those are still read, and refused where they must be; the
    layout written now has its own control and shapes (``valid-layout2.evpkg``, ...).
    """
    if payload is None:
        payload = seal(bag_tar)
    fields: dict[str, object] = dict(
        package_id=pid, sender=PARTY, body="ICC-OTP", recipients=(RECIPIENT,), escrow=ESCROW,
        created_at=CREATED, payload_size=len(payload),
        payload_sha256=hashlib.sha256(payload).hexdigest(), checkpoint=CHECKPOINT)
    fields.update(envelope_changes or {})
    envelope = fmt.Envelope(**fields)  # type: ignore[arg-type]
    data, sig = fmt.sign_envelope(envelope, SENDER)
    with tempfile.TemporaryDirectory() as folder:
        payload_path = Path(folder) / "payload.age"
        payload_path.write_bytes(payload)
        target = Path(folder) / "p.evpkg"
        fmt.write_package(target, data, sig, payload_path, layout=layout)
        return target.read_bytes()


def _members(pkg: bytes) -> dict[str, tuple[int, int]]:
    with tarfile.open(fileobj=io.BytesIO(pkg)) as tar:
        return {m.name: (m.offset_data, m.size) for m in tar.getmembers()}


def _flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x20
    return bytes(out)


def make_packages(folder: Path) -> None:
    n = iter(range(1, 1000))
    valid = package(package_id(next(n)), signed_bag(package_id(1)))
    (folder / "valid.evpkg").write_bytes(valid)
    base = package(pid := package_id(next(n)), signed_bag(pid))
    where = _members(base)
    env_at, env_size = where["envelope.json"]
    sig_at, sig_size = where["envelope.json.sig"]
    pay_at, pay_size = where["payload.age"]
    damaged = {
        "empty.evpkg": b"",
        "not-a-tar.evpkg": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
        "truncated-in-header.evpkg": base[:300],
        "truncated-in-envelope.evpkg": base[: env_at + env_size // 2],
        "truncated-in-payload.evpkg": base[: pay_at + pay_size // 2],
        "truncated-end-of-archive.evpkg": base[: pay_at + pay_size],
        "flipped-envelope.evpkg": _flip(base, env_at + env_size // 2),
        "flipped-signature.evpkg": _flip(base, sig_at + sig_size // 2),
        "flipped-payload-header.evpkg": _flip(base, pay_at + 40),
        "flipped-payload-body.evpkg": _flip(base, pay_at + pay_size - 40),
        "flipped-tar-checksum.evpkg": _flip(base, 150),
    }
    for name, data in damaged.items():
        (folder / name).write_bytes(data)

    # Container shapes: members renamed, reordered, added, oversized declarations.
    with tarfile.open(fileobj=io.BytesIO(base)) as tar:
        parts = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]

    def shaped(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
        return _tar(members)

    extra = tarfile.TarInfo("extra.txt")
    extra.size = 3
    (folder / "extra-member.evpkg").write_bytes(shaped([*parts, (extra, b"odd")]))
    (folder / "members-reordered.evpkg").write_bytes(shaped([parts[1], parts[0], parts[2]]))
    (folder / "member-duplicated.evpkg").write_bytes(shaped([parts[0], parts[0], parts[1],
                                                             parts[2]]))
    link = tarfile.TarInfo("payload.age")
    link.type = tarfile.SYMTYPE
    link.linkname = "/dev/zero"
    (folder / "payload-is-a-symlink.evpkg").write_bytes(shaped([parts[0], parts[1],
                                                                (link, None)]))
    # Declared sizes beyond every limit: an envelope of 1 GiB and a payload of 8 EiB - 1.
    for name, member, size in (("oversized-envelope-header.evpkg", 0, 1 << 30),
                               ("tar-bomb-payload-size.evpkg", 2, (1 << 63) - 1)):
        info, data = parts[member]
        info = tarfile.TarInfo(info.name)
        info.size = size
        header = info.tobuf(tarfile.PAX_FORMAT)
        rest = b"".join(p[0].tobuf(tarfile.PAX_FORMAT) + p[1] + b"\0" * (-len(p[1]) % 512)
                        for p in parts[:member])
        (folder / name).write_bytes(rest + header + data[:512] + b"\0" * 1024)
    # A pax header that claims a record far longer than itself.
    pax = tarfile.TarInfo("envelope.json")
    pax.pax_headers = {"comment": "x" * 70_000}
    pax.size = parts[0][0].size
    (folder / "oversized-pax-header.evpkg").write_bytes(shaped([(pax, parts[0][1]), parts[1],
                                                                parts[2]]))

    # Valid signatures around hostile payloads: only the recipient's checks stand between
    # these and the disk.
    for kind in ("traversal", "absolute", "symlink", "hardlink", "device", "fifo",
                 "outside-root", "duplicate", "declared-1tib"):
        pid = package_id(next(n))
        (folder / f"signed-{kind}.evpkg").write_bytes(package(pid, hostile_bag(pid, kind)))
    pid = package_id(next(n))
    (folder / "signed-payload-not-age.evpkg").write_bytes(
        package(pid, b"", payload=b"this is not an age file\n" * 10))
    pid = package_id(next(n))
    (folder / "signed-payload-not-a-tar.evpkg").write_bytes(package(pid, b"plain text " * 50))
    pid = package_id(next(n))
    (folder / "signed-oxum-5000-digits.evpkg").write_bytes(
        package(pid, signed_bag(pid, oxum="9" * 5000 + ".2")))
    pid = package_id(next(n))
    (folder / "signed-items-json-wrong-types.evpkg").write_bytes(package(pid, signed_bag(
        pid, items_override=[{"tags": ["not", "a", "table"], "labels": 7, "digests": "md5",
                              "case": "x" * 300}])))
    pid = package_id(next(n))
    (folder / "signed-items-json-nested.evpkg").write_bytes(package(pid, signed_bag(
        pid, items_override=[{"title": "deep"}])))
    # Issue 15's hostile sender: signed claims the recipient must not record or obey.
    pid = package_id(next(n))
    (folder / "signed-items-json-false-md5.evpkg").write_bytes(package(pid, signed_bag(
        pid, items_override=[{"digests": {"md5": "0" * 32}}])))
    pid = package_id(next(n))
    (folder / "signed-items-json-false-sha256.evpkg").write_bytes(package(pid, signed_bag(
        pid, items_override=[{"digests": {"sha256": "0" * 64}}])))
    pid = package_id(next(n))
    (folder / "signed-items-json-case-climbs.evpkg").write_bytes(package(pid, signed_bag(
        pid, items_override=[{"case": "A/../../etc"}])))
    pid = package_id(next(n))
    (folder / "signed-unlisted-file.evpkg").write_bytes(package(pid, signed_bag(
        pid, unlisted={"run-me.sh": b"#!/bin/sh\necho fictional\n"})))
    # The signed envelope of one bag around the same-size age encryption of another (one
    # byte of an item changed, the statement re-signed): the payload digest must refuse it
    # before anything is decrypted.
    pid = package_id(next(n))
    genuine = package(pid, signed_bag(pid))
    other = signed_bag(pid, files={ITEM_A: b"fictional statemenX\n",
                                   ITEM_B: bytes(range(256)) * 4})
    sealed = seal(other)
    at, size = _members(genuine)["payload.age"]
    assert len(sealed) == size
    (folder / "payload-reencrypted-same-size.evpkg").write_bytes(
        genuine[:at] + sealed + genuine[at + size:])
    pid = package_id(next(n))
    (folder / "signed-for-another-body.evpkg").write_bytes(package(
        pid, signed_bag(pid), envelope_changes={"body": "UA-OPG"}))
    pid = package_id(next(n))
    stranger = fmt.Party("stranger", STRANGER.public.fingerprint)
    bag = signed_bag(pid)
    sealed = seal(bag)
    envelope = fmt.Envelope(package_id=pid, sender=stranger, body="ICC-OTP",
                            recipients=(RECIPIENT,), escrow=ESCROW, created_at=CREATED,
                            payload_size=len(sealed),
                            payload_sha256=hashlib.sha256(sealed).hexdigest(),
                            checkpoint=NoteSigner(ORIGIN, STRANGER).sign(
                                Checkpoint(ORIGIN, 0, hashlib.sha256().digest()).to_text()))
    data, sig = fmt.sign_envelope(envelope, STRANGER)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "p").write_bytes(sealed)
        fmt.write_package(Path(tmp) / "x.evpkg", data, sig, Path(tmp) / "p", layout=1)
        (folder / "signed-by-a-stranger.evpkg").write_bytes((Path(tmp) / "x.evpkg").read_bytes())
    # Layout 2, written since December 2026: the payload first, the envelope behind it.
    pid = package_id(next(n))
    valid2 = package(pid, signed_bag(pid), layout=2)
    (folder / "valid-layout2.evpkg").write_bytes(valid2)
    with tarfile.open(fileobj=io.BytesIO(valid2)) as tar:
        parts2 = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    assert [m.name for m, _ in parts2] == ["payload.age", "envelope.json", "envelope.json.sig"]
    (folder / "layout2-members-reordered.evpkg").write_bytes(
        _tar([parts2[0], parts2[2], parts2[1]]))
    at, size = _members(valid2)["payload.age"]
    (folder / "layout2-truncated-in-payload.evpkg").write_bytes(valid2[: at + size // 2])


# ----------------------------------------------------------------------------- documents


WITNESS = "evault-witness/ICC-OTP"
COSIGNED_AT = 1796547600  # 2026-12-06T09:00:00Z


def _cosignature_line(key: SigningKey, timestamp: int, text: str) -> str:
    """A C2SP cosignature/v1 line by ``key`` as WITNESS, at any time (even an absurd one)."""
    key_id = hashlib.sha256(WITNESS.encode() + b"\n\x04" + key.public.raw).digest()[:4]
    signature = key.sign(f"cosignature/v1\ntime {timestamp}\n{text}".encode())
    blob = key_id + timestamp.to_bytes(8, "big") + signature
    return f"\u2014 {WITNESS} {base64.b64encode(blob).decode()}\n"


def make_witnessed_acks(folder: Path, items: tuple[rfmt.ReceiptItem, ...], officer_cp: str,
                        signed: Any) -> None:
    """Version 2 acknowledgements: the sender's checkpoint cosigned by the officer."""
    text = CHECKPOINT[: CHECKPOINT.rfind("\n\n") + 1]

    def ack(cosigned: str) -> bytes:
        return rfmt.Acknowledgement(
            package_id=package_id(1), body="ICC-OTP",
            recipient=fmt.Party(OFFICER_NAME, OFFICER.public.fingerprint),
            envelope_sha256="c" * 64, statement_sha256="e" * 64, items=items,
            received_at="2026-11-29T10:00:00Z", checkpoint=officer_cp,
            cosigned_checkpoint=cosigned,
        ).to_bytes()

    good = _cosignature_line(OFFICER, COSIGNED_AT, text)
    blob = bytearray(base64.b64decode(good.split(" ")[2]))
    blob[-1] ^= 1
    flipped = f"{good.rsplit(' ', 1)[0]} {base64.b64encode(bytes(blob)).decode()}\n"
    for name, line in (
        ("ack-v2.json", good),
        ("ack-v2-cosignature-flipped.json", flipped),
        ("ack-v2-cosigned-by-a-stranger.json", _cosignature_line(STRANGER, COSIGNED_AT, text)),
        ("ack-v2-cosigned-in-year-3e11.json", _cosignature_line(OFFICER, 1 << 62, text)),
    ):
        signed(name, ack(CHECKPOINT + line), OFFICER, rfmt.ACK_NAMESPACE)


def make_documents(folder: Path) -> None:
    items = (rfmt.ReceiptItem(ITEM_A, 20, "a" * 64),)
    receipt = rfmt.SharingReceipt(
        receipt_id="RCP-000000000001", package_id=package_id(1), body="ICC-OTP", sender=PARTY,
        recipients=(OFFICER.public.fingerprint,), items=items, envelope_sha256="c" * 64,
        payload_sha256="d" * 64, reference=None, reference_sha256=None, sent_at=CREATED,
        checkpoint=CHECKPOINT,
    ).to_bytes()
    officer_cp = NoteSigner(ORIGIN.replace("c0ffee", "0ff1ce"), OFFICER).sign(
        Checkpoint(ORIGIN.replace("c0ffee", "0ff1ce"), 0, hashlib.sha256().digest()).to_text())
    ack = rfmt.Acknowledgement(
        package_id=package_id(1), body="ICC-OTP",
        recipient=fmt.Party(OFFICER_NAME, OFFICER.public.fingerprint), envelope_sha256="c" * 64,
        statement_sha256="e" * 64, items=items, received_at="2026-11-29T10:00:00Z",
        checkpoint=officer_cp,
        version=1,  # kept at version 1: the corpus holds acknowledgements as evault 1 made them
    ).to_bytes()

    def signed(name: str, data: bytes, key: SigningKey, namespace: str,
               sig: str | None = None) -> None:
        (folder / name).write_bytes(data)
        (folder / f"{name}.sig").write_text(sig if sig is not None
                                            else sshsig.sign(key, data, namespace))

    good_receipt_sig = sshsig.sign(SENDER, receipt, rfmt.RECEIPT_NAMESPACE)
    good_ack_sig = sshsig.sign(OFFICER, ack, rfmt.ACK_NAMESPACE)
    signed("receipt.json", receipt, SENDER, rfmt.RECEIPT_NAMESPACE, good_receipt_sig)
    signed("receipt-truncated.json", receipt[: len(receipt) // 2], SENDER,
           rfmt.RECEIPT_NAMESPACE, good_receipt_sig)
    signed("receipt-flipped.json", receipt.replace(b'"size":20', b'"size":21'), SENDER,
           rfmt.RECEIPT_NAMESPACE, good_receipt_sig)
    reformatted = json.dumps(json.loads(receipt), indent=1).encode()
    signed("receipt-not-canonical.json", reformatted, SENDER, rfmt.RECEIPT_NAMESPACE)
    signed("receipt-wrong-namespace.json", receipt, SENDER, rfmt.ACK_NAMESPACE)
    signed("receipt-by-a-stranger.json", receipt, STRANGER, rfmt.RECEIPT_NAMESPACE)
    (folder / "receipt-without-sig.json").write_bytes(receipt)
    signed("receipt-sig-garbage.json", receipt, SENDER, rfmt.RECEIPT_NAMESPACE,
           "-----BEGIN SSH SIGNATURE-----\nnot base64 at all!\n-----END SSH SIGNATURE-----\n")
    blob = bytearray(base64.b64decode("".join(good_receipt_sig.splitlines()[1:-1])))
    blob[-10] ^= 1
    armored = base64.b64encode(bytes(blob)).decode()
    signed("receipt-sig-flipped.json", receipt, SENDER, rfmt.RECEIPT_NAMESPACE,
           "-----BEGIN SSH SIGNATURE-----\n" + "\n".join(armored[i:i + 70] for i in range(
               0, len(armored), 70)) + "\n-----END SSH SIGNATURE-----\n")
    signed("ack.json", ack, OFFICER, rfmt.ACK_NAMESPACE, good_ack_sig)
    signed("ack-truncated.json", ack[:-7], OFFICER, rfmt.ACK_NAMESPACE, good_ack_sig)
    signed("ack-flipped.json", ack.replace(b"2026-11-29", b"2026-11-30"), OFFICER,
           rfmt.ACK_NAMESPACE, good_ack_sig)
    signed("ack-by-the-sender.json", ack, SENDER, rfmt.ACK_NAMESPACE)
    signed("ack-wrong-namespace.json", ack, OFFICER, rfmt.RECEIPT_NAMESPACE)
    doc = json.loads(ack)
    doc["items"] = doc["items"] * 2
    signed("ack-duplicate-items.json", json.dumps(doc, separators=(",", ":"),
                                                   sort_keys=True).encode(), OFFICER,
           rfmt.ACK_NAMESPACE)
    doc = json.loads(ack)
    doc["note"] = "extra field"
    signed("ack-unknown-field.json", json.dumps(doc, separators=(",", ":"),
                                                 sort_keys=True).encode(), OFFICER,
           rfmt.ACK_NAMESPACE)
    make_witnessed_acks(folder, items, officer_cp, signed)
    # Malformed JSON that still starts like a document.
    malformed = {
        "json-duplicate-keys.json": b'{"type":"evault-acknowledgement","type":"evault-package"}',
        "json-nan.json": b'{"type":"evault-sharing-receipt","version":NaN}',
        "json-deep-nesting.json": b'{"type":"evault-acknowledgement","x":' + b"[" * 5_000
        + b"]" * 5_000 + b"}",
        "json-invalid-utf8.json": b'{"type":"evault-acknowledgement","x":"\xff\xfe"}',
        "json-utf16.json": '{"type":"evault-acknowledgement"}'.encode("utf-16"),
        "json-unknown-type.json": b'{"type":"evault-invoice","version":1}',
        "json-array.json": b'[{"type":"evault-acknowledgement"}]',
    }
    for name, data in malformed.items():
        (folder / name).write_bytes(data)
        (folder / f"{name}.sig").write_text(good_ack_sig)

    card = make_card(SENDER_NAME, SENDER, str(SENDER_AGE.recipient), created_at=CREATED,
                     org="Fictional Ministry of Justice")
    (folder / "sender.card.json").write_text(card)
    (folder / "card-truncated.card.json").write_text(card[: len(card) // 2])
    (folder / "card-renamed.card.json").write_text(card.replace(SENDER_NAME, "corpus-offices"))
    (folder / "card-other-age-key.card.json").write_text(
        card.replace(str(SENDER_AGE.recipient), str(OFFICER_AGE.recipient)))
    obj = json.loads(card)
    obj["fingerprint"] = OFFICER.public.fingerprint
    (folder / "card-wrong-fingerprint.card.json").write_text(json.dumps(obj))
    obj = json.loads(card)
    obj["signing_key"] = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ corpus"
    (folder / "card-rsa-key.card.json").write_text(json.dumps(obj))
    obj = json.loads(card)
    obj["signing_key"] = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI\u00e9 corpus"
    (folder / "card-non-ascii-key.card.json").write_text(json.dumps(obj))

    note = CHECKPOINT
    (folder / "checkpoint.txt").write_text(note)
    lines = note.split("\n")
    (folder / "checkpoint-truncated.txt").write_text(note[: len(note) - 20])
    (folder / "checkpoint-flipped-size.txt").write_text(note.replace("\n0\n", "\n1\n", 1))
    (folder / "checkpoint-no-blank-line.txt").write_text(note.replace("\n\n", "\n"))
    (folder / "checkpoint-control-chars.txt").write_text(note.replace(ORIGIN, ORIGIN + "\x1b[2J"))
    (folder / "checkpoint-huge-size.txt").write_text(
        "\n".join([lines[0], "9" * 5000, *lines[2:]]))
    (folder / "checkpoint-sig-not-ascii.txt").write_text(note[:-12] + "\u00e9\u00e9\u00e9\n")
    stranger_note = NoteSigner(ORIGIN, STRANGER).sign(
        Checkpoint(ORIGIN, 3, hashlib.sha256(b"x").digest()).to_text())
    (folder / "checkpoint-by-a-stranger.txt").write_text(stranger_note)
    # A key trusted for checkpoints, but of another log: the officer's, signing an extension
    # of the office's log (issue 15: an origin is bound to the keys that may sign it).
    (folder / "checkpoint-of-anothers-log.txt").write_text(NoteSigner(ORIGIN, OFFICER).sign(
        Checkpoint(ORIGIN, 3, hashlib.sha256(b"x").digest()).to_text()))


# ----------------------------------------------------------------------------- input files

INPUTS = {
    "manifest-unknown-column.csv": "path,case,colour\na.txt,X-1,red\n",
    "manifest-no-path-column.csv": "file,case\na.txt,X-1\n",
    "manifest-nul-in-path.csv": "path,case\na\x00b.txt,X-1\n",
    "manifest-more-cells.csv": "path,case\na.txt,X-1,extra\n",
    "manifest-bad-date.csv": "path,case,collected_at\na.txt,X-1,yesterday\n",
    "manifest-bad-case.csv": "path,case\na.txt,../../etc\n",
    "manifest-not-utf8.csv": "path,case\n",  # bytes appended below
    "manifest-not-json.jsonl": '{"path": "a.txt", "case": "X-1"}\n{"path": \n',
    "manifest-not-object.jsonl": '["a.txt", "X-1"]\n',
    "manifest-deep.jsonl": "[" * 5_000 + "\n",
    "manifest-wrong-types.jsonl": '{"path": "a.txt", "case": 7}\n',
    "manifest-tags-not-strings.jsonl": '{"path": "a.txt", "case": "X-1", "labels": [1, 2]}\n',
    "manifest-empty.csv": "path,case\n",
    "manifest.txt": "path,case\na.txt,X-1\n",
    "plan-not-toml.toml": "[bodies.ICC-OTP\n",
    "plan-deep.toml": "a = " + "[" * 5_000 + "\n",
    "plan-unknown-table.toml": '[colours]\nred = "#f00"\n',
    "plan-no-bodies.toml": '[defaults]\ncase = "X-1"\n',
    "plan-body-not-table.toml": 'bodies = { ICC-OTP = "all" }\n',
    "plan-items-not-list.toml": '[bodies.ICC-OTP]\nitems = "EV-00000000000A"\n',
    "plan-case-not-string.toml": "[bodies.ICC-OTP]\ncase = 2026\n",
    "plan-unknown-key.toml": '[bodies.ICC-OTP]\ncase = "X-1"\ncolour = "red"\n',
    "plan-nothing-selected.toml": '[bodies.ICC-OTP]\nreference = "R"\n',
    "config-not-toml.toml": "vault_id = \n",
    "config-deep.toml": 'vault_id = "x"\nrules = ' + "[" * 5_000 + "\n",
    "config-no-vault-id.toml": 'key_storage = "file"\n',
    "config-bad-key-storage.toml": 'vault_id = "abc"\nkey_storage = "plaintext"\n',
    "config-database-not-string.toml": 'vault_id = "abc"\ndatabase = 5\n',
    "config-rules-not-table.toml": 'vault_id = "abc"\nrelease_rules = ["x"]\n',
    "config-rule-not-list.toml": 'vault_id = "abc"\n[release_rules]\n"restricted" = "ICC-OTP"\n',
    "config-bad-database-url.toml": 'vault_id = "abc"\ndatabase = "mysql://root@localhost/x"\n',
    "proof-wrong-type.json": '{"type": "evault-invoice"}',
    "proof-bad-hash.json": json.dumps({"type": "evault-consistency-proof", "version": 1,
                                       "origin": ORIGIN, "old_size": 0, "new_size": 0,
                                       "old_root": "not base64", "new_root": "", "proof": []}),
    "proof-too-many-hashes.json": json.dumps({
        "type": "evault-consistency-proof", "version": 1, "origin": ORIGIN, "old_size": 0,
        "new_size": 0, "old_root": base64.b64encode(bytes(32)).decode(),
        "new_root": base64.b64encode(bytes(32)).decode(),
        "proof": [base64.b64encode(bytes(32)).decode()] * 200}),
}


def make_inputs(folder: Path) -> None:
    for name, text in INPUTS.items():
        (folder / name).write_text(text)
    with open(folder / "manifest-not-utf8.csv", "ab") as f:
        f.write(b"caf\xe9.txt,X-1\n")
    (folder / "a.txt").write_text("fictional evidence\n")


def make_keys(folder: Path) -> None:
    (folder / "allowed_signers").write_text(
        f'{SENDER_NAME},{ORIGIN} namespaces="evault-envelope,evault-statement,evault-receipt,'
        f'evault-checkpoint" {SENDER.public.openssh()}\n'
        f'{OFFICER_NAME} namespaces="evault-ack,evault-checkpoint" '
        f"{OFFICER.public.openssh()}\n"
    )


#: The folders the generator makes (README.md and this script are not generated).
FOLDERS = ("packages", "documents", "inputs", "keys")


def generate(root: Path) -> None:
    """Write the corpus's folders under ``root``, replacing what is there."""
    makers = (make_packages, make_documents, make_inputs, make_keys)
    for name, make in zip(FOLDERS, makers, strict=True):
        folder = root / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        make(folder)


def main() -> None:
    generate(HERE)
    total = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file())
    print(f"corpus: {total} bytes")


if __name__ == "__main__":
    main()
