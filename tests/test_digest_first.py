"""Issue 15 item 7: a package's payload is checked against the signed envelope's SHA-256
before a byte of it is decrypted, both reads are of the same file, the tag files a bag keeps
in memory are capped in all, and what `open` records is the envelope it verified."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from test_opening import World, _members, _out_is_empty, _rebuild

from vault.crypto.age import AgeIdentity, AgeRecipient, decrypt, encrypt
from vault.errors import VerificationError
from vault.formats import bagit
from vault.formats.package import Envelope

if TYPE_CHECKING:
    from vault.service.opening import OpenedPackage

DIGEST_LINE = ("payload.age does not match the SHA-256 in the signed envelope; the payload "
               "was altered or swapped; nothing was decrypted: ask the sender for the package "
               "again")


@pytest.fixture
def world(tmp_path: Path) -> World:
    from test_opening import _make_world

    return _make_world(tmp_path, None)


def _icc_identity(world: World) -> AgeIdentity:
    from vault.service.identities import current_key, get_identity, load_keypair
    from vault.service.vaults import open_vault

    v = open_vault(world.icc.vault)
    with v.transaction() as session:
        pair = load_keypair(v, current_key(get_identity(session, None)))
    v.close()
    return AgeIdentity.from_raw(pair.age.raw())


def _plaintext(world: World) -> bytes:
    plain = io.BytesIO()
    decrypt(io.BytesIO(_members(world.package)["payload.age"]), plain, [_icc_identity(world)])
    return plain.getvalue()


def _same_size_payload(world: World, kind: str) -> bytes:
    """A payload of the signed size that is not the signed one."""
    members = _members(world.package)
    original = members["payload.age"]
    envelope = Envelope.from_bytes(members["envelope.json"])
    if kind == "garbage":
        return os.urandom(len(original))
    if kind == "re-encrypted to us":  # a valid bag for this vault's own key
        recipients = [AgeRecipient.parse(k.age_recipient) for k in envelope.all_recipients]
    else:  # "to keys this vault does not hold"
        recipients = [AgeIdentity.generate().recipient for _ in envelope.all_recipients]
    sealed = io.BytesIO()
    encrypt(io.BytesIO(_plaintext(world)), sealed, recipients)
    assert len(sealed.getvalue()) == len(original)
    assert sealed.getvalue() != original
    return sealed.getvalue()


class _Spy:
    """Stands in for AgeReader in vault.service.inspection and notes every use."""

    def __init__(self) -> None:
        from vault.crypto.age import AgeReader

        self.calls = 0
        self._real = AgeReader

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self._real(*args, **kwargs)


@pytest.mark.parametrize("kind", ["re-encrypted to us", "to keys this vault does not hold",
                                  "garbage"])
def test_a_same_size_payload_that_is_not_the_signed_one_is_never_decrypted(
        world: World, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The envelope and its signature are the sender's own; only payload.age is another of
    the same size. The digest refuses it before a decryptor is even made."""
    members = _members(world.package)
    package = _rebuild(world, members["envelope.json"], members["envelope.json.sig"].decode(),
                       _same_size_payload(world, kind), "same-size")
    spy = _Spy()
    monkeypatch.setattr("vault.service.inspection.AgeReader", spy)
    out = world.tmp / "out"
    result = world.icc("open", str(package), "--out", str(out))
    assert spy.calls == 0
    assert (result.exit_code, result.stderr) == (
        3, f"evault: package {world.package_id}: {DIGEST_LINE}\n")
    _out_is_empty(out)  # not even a staging folder was made
    assert json.loads(world.icc.ok("items", "list", "--json").stdout) == []
    # `verify --as` (an auditor with the key) decrypts nothing either.
    result = world.icc("verify", str(package), "--as", "icc-officer")
    assert result.exit_code == 3
    assert result.stdout == f"FAIL: {package}: package {world.package_id}: {DIGEST_LINE}\n"
    assert spy.calls == 0


def _open(world: World, out: str = "received", **callbacks: Any) -> OpenedPackage:
    from vault.service.opening import open_package
    from vault.service.vaults import open_vault

    v = open_vault(world.icc.vault)
    try:
        return open_package(v, world.package, out_dir=world.tmp / out, **callbacks)
    finally:
        v.close()


def _stored_envelope(world: World) -> tuple[bytes, str]:
    from vault.service.vaults import open_vault
    from vault.store.models import ReceivedPackage

    v = open_vault(world.icc.vault)
    try:
        with v.transaction() as session:
            row = session.get(ReceivedPackage, world.package_id)
            assert row is not None
            return bytes(row.envelope), row.envelope_sha256
    finally:
        v.close()


@pytest.mark.parametrize("when", ["verifying", "storing"])
def test_a_file_swapped_during_open_is_not_what_gets_recorded(world: World, when: str) -> None:
    """Another genuine package is renamed over the file while `open` runs: the envelope
    recorded is still the one verified (and whose files were received), not the newcomer's."""
    original = _members(world.package)["envelope.json"]
    other = world.tmp / "other.evpkg"
    world.office.ok("package", "create", "--to", "ICC-OTP", "--case", "UA-2026-0042",
                    "-o", str(other))
    assert _members(other)["envelope.json"] != original
    swapped: list[bool] = []

    def swap(done: int, total: int) -> None:
        if not swapped:
            os.replace(other, world.package)
            swapped.append(True)

    result = _open(world, **{when: swap})
    assert swapped and result.package == world.package_id
    envelope, digest = _stored_envelope(world)
    assert envelope == original
    assert digest == hashlib.sha256(original).hexdigest()


def test_a_package_opened_already_swapped_in_before_verification_is_a_conflict(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first look at the file (for "opened already") saw a new package; the file then
    became one this vault opened before: the package verified is checked again, a conflict
    (exit 1), not a database error."""
    import shutil

    from vault.errors import ConflictError
    from vault.service import opening

    first = world.tmp / "first.evpkg"
    shutil.copyfile(world.package, first)
    _open(world)  # world.package is opened; now it becomes another, new package
    world.office.ok("package", "create", "--to", "ICC-OTP", "--case", "UA-2026-0042",
                    "-o", str(world.tmp / "second.evpkg"))
    os.replace(world.tmp / "second.evpkg", world.package)
    real = opening._identities

    def swap_then_load(*args: Any) -> Any:
        os.replace(first, world.package)  # after the first look, before verification
        return real(*args)

    monkeypatch.setattr(opening, "_identities", swap_then_load)
    with pytest.raises(ConflictError) as caught:
        _open(world, out="again")
    assert str(caught.value) == f"package {world.package_id}: opened already in this vault"


def test_trust_sender_holds_for_the_package_verified_not_only_the_first_look(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--trust-sender OFFICE` was checked against the file's signature at the first look;
    a package by another known sender renamed over it before verification is refused."""
    from vault.service import opening

    # UA-OPG's officer also sends to ICC-OTP, and ICC knows them.
    world.icc.ok("contact", "add", str(world.tmp / "opg-officer.card.json"))
    world.opg.ok("body", "add", "ICC-OTP", "--name", "Fictional ICC-OTP")
    world.opg.ok("body", "key", "add", "ICC-OTP", "--card",
                 str(world.tmp / "icc-officer.card.json"))
    (world.tmp / "opg-evidence.txt").write_bytes(b"another fictional statement\n")
    world.opg.ok("ingest", str(world.tmp / "opg-evidence.txt"), "--case", "OPG-1",
                 "--create-case")
    by_opg = world.tmp / "by-opg.evpkg"
    world.opg.ok("package", "create", "--to", "ICC-OTP", "--case", "OPG-1", "-o", str(by_opg))
    opg_fp = json.loads(world.opg.ok("identity", "show", "--json").stdout)["fingerprint"]
    real = opening._identities

    def swap_then_load(*args: Any) -> Any:
        os.replace(by_opg, world.package)  # after the first look, before verification
        return real(*args)

    monkeypatch.setattr(opening, "_identities", swap_then_load)
    with pytest.raises(VerificationError) as caught:
        _open(world, trust_sender=world.office_fp)
    assert str(caught.value) == (f"{world.package.name}: signed by {opg_fp}, not by "
                                 f"--trust-sender {world.office_fp}; do not open it")
    _out_is_empty(world.tmp / "received")


def test_a_payload_rewritten_in_place_between_the_two_reads_is_refused(world: World) -> None:
    """The same file (same inode) gets a same-size payload, decryptable by this vault, once
    the digest pass has read it whole: the decrypting pass hashes what it reads too."""
    members = _members(world.package)
    offset = bytes(world.package.read_bytes()).index(members["payload.age"])
    size = len(members["payload.age"])
    replacement = _same_size_payload(world, "re-encrypted to us")
    rewritten: list[int] = []

    def rewrite(done: int, total: int) -> None:
        if done >= size and not rewritten:
            with world.package.open("r+b") as f:
                f.seek(offset)
                f.write(replacement)
            rewritten.append(done)

    with pytest.raises(VerificationError) as caught:
        _open(world, verifying=rewrite)
    assert rewritten == [size]  # the end of the first of two passes (total: twice the size)
    assert str(caught.value) == (
        f"package {world.package_id}: payload.age changed while it was being opened; nothing "
        "was received: open it again from a copy no one else writes to")
    _out_is_empty(world.tmp / "received")
    assert json.loads(world.icc.ok("items", "list", "--json").stdout) == []


# ---------------------------------------------------------------------------- tag files


class _LazyTar(io.RawIOBase):
    """A tar stream of headers and runs of zeros, made as it is read (nothing held)."""

    def __init__(self, parts: list[bytes | int]) -> None:
        self._parts = parts
        self._left = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while self._parts:
            part = self._parts[0]
            if isinstance(part, bytes):
                n = min(len(view), len(part))
                view[:n] = part[:n]
                if n == len(part):
                    self._parts.pop(0)
                else:
                    self._parts[0] = part[n:]
                return n
            if part == 0:
                self._parts.pop(0)
                continue
            n = min(len(view), part)
            view[:n] = bytes(n)
            self._parts[0] = part - n
            return n
        return 0


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(format=tarfile.PAX_FORMAT)


def test_tag_files_over_the_total_cap_are_refused_at_their_header() -> None:
    """Each tag file is under the per-file cap, together they are over the total one: the
    bag is refused when the header that crosses the line is read, before its data."""
    each = bagit.MAX_TAG_FILE_SIZE
    count = bagit.MAX_TAG_FILES_TOTAL // each  # with bagit.txt, just over the line
    parts: list[bytes | int] = [_header("bag/bagit.txt", len(bagit.BAGIT_TXT)),
                                bagit.BAGIT_TXT + bytes(512 - len(bagit.BAGIT_TXT))]
    for i in range(count):
        parts += [_header(f"bag/notes-{i}.txt", each), each]
    parts.append(bytes(1024))
    with pytest.raises(bagit.BagError) as caught:
        bagit.read_bag(io.BufferedReader(_LazyTar(parts)), root="bag")
    assert str(caught.value) == (
        f"bag bag: tag file notes-{count - 1}.txt would bring the files outside data/ to "
        f"{len(bagit.BAGIT_TXT) + count * each} bytes, over the limit of "
        f"{bagit.MAX_TAG_FILES_TOTAL} in all; ask the sender to put large files in data/")


def test_open_refuses_a_signed_bag_whose_tag_files_are_over_the_total_cap(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same through `evault open`, with a sender-signed package (the cap made small so
    that the package is)."""
    from dataclasses import replace

    from test_opening import _office_keys

    from vault.formats.package import sign_envelope

    members = _members(world.package)
    envelope = Envelope.from_bytes(members["envelope.json"])
    raw = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(_plaintext(world))) as old, \
            tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in old.getmembers():
            tar.addfile(member, old.extractfile(member) if member.isfile() else None)
        for i in range(3):
            info = tarfile.TarInfo(f"{envelope.package_id}/evault/notes-{i}.txt")
            info.size = 40_000
            tar.addfile(info, io.BytesIO(bytes(40_000)))
    sealed = io.BytesIO()
    encrypt(io.BytesIO(raw.getvalue()), sealed,
            [AgeRecipient.parse(k.age_recipient) for k in envelope.all_recipients])
    envelope = replace(envelope, payload_size=len(sealed.getvalue()),
                       payload_sha256=hashlib.sha256(sealed.getvalue()).hexdigest())
    signing, _ = _office_keys(world)
    data, sig = sign_envelope(envelope, signing)  # type: ignore[arg-type]
    package = _rebuild(world, data, sig, sealed.getvalue(), "big-tags")
    monkeypatch.setattr(bagit, "MAX_TAG_FILES_TOTAL", 100_000)
    out = world.tmp / "out"
    result = world.icc("open", str(package), "--out", str(out))
    assert result.exit_code == 3, result.stderr
    assert result.stderr.startswith(
        f"evault: bag {world.package_id}: tag file evault/notes-2.txt would bring the files "
        "outside data/ to ")
    assert result.stderr.endswith(
        " bytes, over the limit of 100000 in all; ask the sender to put large files in data/\n")
    _out_is_empty(out)
