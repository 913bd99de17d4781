"""Provenance at intake (issue 22, second part): a C2PA manifest is checked offline against
the vault's configured trust anchors and a ProofMode bundle's proof against its media; the
finding goes into the signed item.ingested event and `items show`, the file is never
altered, and the C2PA library is loaded only by an intake that meets a media file.

The signed samples are made here with the C2PA library's own signing API and a test CA
(scripts/provenance_samples.py)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import Cli
from provenance_samples import (
    c2pa_signer,
    png,
    proofmode_bundle,
    serial_of,
    signed_png,
    tampered,
)

from vault.custody.merkle import leaf_hash
from vault.formats.provenance import Checks, sniff
from vault.formats.provenance.proofmode import examine_bundle
from vault.service.vaults import open_vault

CASE = "UA-2026-0042"
SIGNER = c2pa_signer()
SIGNED = signed_png(SIGNER)


def _checker() -> str:
    import c2pa

    return f"c2pa-rs {c2pa.sdk_version()}"


def _anchors(cli: Cli, pem: bytes = SIGNER.ca_pem, name: str = "c2pa-anchors.pem") -> str:
    """Configure ``pem`` as the vault's C2PA trust anchors; its SHA-256 as recorded."""
    (cli.vault / name).write_bytes(pem)
    with (cli.vault / "config.toml").open("a") as config:  # a table: added at the end
        config.write(f'\n[c2pa]\ntrust_anchors = ["{name}"]\n')
    return hashlib.sha256(pem).hexdigest()


def _ingest(cli: Cli, tmp_path: Path, files: dict[str, bytes]) -> list[str]:
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    rows = json.loads(cli.ok("ingest", *paths, "--case", CASE, "--create-case",
                             "--json").stdout)
    return [row["id"] for row in rows]


def _details(cli: Cli, item: str) -> dict[str, Any]:
    [event] = [e for e in json.loads(cli.ok("custody", "show", item, "--json").stdout)["events"]
               if e["action"] == "item.ingested"]
    return dict(event["details"])


def _shown(cli: Cli, item: str, key: str) -> str:
    lines = [ln for ln in cli.ok("items", "show", item).stdout.splitlines()
             if ln.startswith(f"{key}:")]
    assert len(lines) == 1, lines
    return lines[0].split(":", 1)[1].strip()


@pytest.fixture
def office(cli: Cli) -> Cli:
    cli.ok("identity", "create", "registry-office")
    return cli


def test_a_trusted_manifest_is_recorded_signed_and_shown(office: Cli, tmp_path: Path) -> None:
    anchors = _anchors(office)
    [item] = _ingest(office, tmp_path, {"capture.png": SIGNED})

    found = _details(office, item)["c2pa"]
    manifest = found.pop("manifest")
    assert manifest.startswith("urn:c2pa:")
    assert found == {"state": "trusted", "alg": "Es256", "anchors": anchors,
                     "checker": _checker(), "generator": "evault-test-camera 1.0",
                     "issuer": "Fictional Test Camera Authority", "serial": serial_of(SIGNER)}
    assert _shown(office, item, "c2pa") == (
        "trusted: manifest intact, its signer chains to a configured trust anchor (issuer "
        f"Fictional Test Camera Authority; serial {serial_of(SIGNER)}; made with "
        f"evault-test-camera 1.0; checked by {_checker()})")
    shown = json.loads(office.ok("items", "show", item, "--json").stdout)
    assert shown["c2pa"]["state"] == "trusted"
    # The signer's own name (which may be a person's) stays out of the log.
    assert "Fictional Camera 7" not in json.dumps(_details(office, item))



def test_the_issuer_recorded_is_the_signers_organisation_not_its_ca() -> None:
    """C2PA's "issuer" is the organisation the signing certificate names as its own (its
    subject's O), not its CA's: what the finding, the README and `items show` say it is."""
    from vault.formats.provenance import examine

    signer = c2pa_signer("Fictional Reporter Anna K.", org="Fictional Freelance Desk")
    found = examine(io.BytesIO(signed_png(signer)), "image/png",
                    Checks(signer.ca_pem.decode()))
    assert found is not None and found["c2pa"]["issuer"] == "Fictional Freelance Desk"
    assert "Anna" not in json.dumps(found)

def test_the_file_is_kept_exactly_as_it_came(office: Cli, tmp_path: Path) -> None:
    _anchors(office)
    [item] = _ingest(office, tmp_path, {"capture.png": SIGNED})
    office.ok("items", "export", item, "-o", str(tmp_path / "copy.png"), "--reason", "check")
    assert (tmp_path / "copy.png").read_bytes() == SIGNED


def test_a_tampered_copy_is_invalid_with_the_failing_check(sqlite_cli: Cli,
                                                           tmp_path: Path) -> None:
    sqlite_cli.ok("identity", "create", "registry-office")
    _anchors(sqlite_cli)
    [item] = _ingest(sqlite_cli, tmp_path, {"capture.png": tampered(SIGNED)})
    found = _details(sqlite_cli, item)["c2pa"]
    assert (found["state"], found["codes"]) == ("invalid", ["assertion.dataHash.mismatch"])
    assert _shown(sqlite_cli, item, "c2pa").startswith(
        "invalid: manifest fails its checks (assertion.dataHash.mismatch) (issuer ")


def test_a_file_without_a_manifest_has_unknown_provenance(sqlite_cli: Cli,
                                                          tmp_path: Path) -> None:
    sqlite_cli.ok("identity", "create", "registry-office")
    anchors = _anchors(sqlite_cli)
    pdf = b"%PDF-1.4\n% fictional\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    image, document = _ingest(sqlite_cli, tmp_path, {"plain.png": png(), "note.pdf": pdf})
    for item in (image, document):
        assert _details(sqlite_cli, item)["c2pa"] == {"state": "none", "anchors": anchors,
                                                      "checker": _checker()}
    assert _shown(sqlite_cli, image, "c2pa") == (
        f"none: no C2PA manifest, unknown provenance (checked by {_checker()})")


def test_without_anchors_a_sound_manifest_is_valid_but_not_trusted(sqlite_cli: Cli,
                                                                   tmp_path: Path) -> None:
    sqlite_cli.ok("identity", "create", "registry-office")
    [item] = _ingest(sqlite_cli, tmp_path, {"capture.png": SIGNED})
    found = _details(sqlite_cli, item)["c2pa"]
    assert (found["state"], found["codes"], "anchors" in found) == (
        "valid", ["signingCredential.untrusted"], False)
    assert _shown(sqlite_cli, item, "c2pa").startswith(
        "valid: manifest intact, but its signer is not among the trust anchors (none "
        "configured) (issuer Fictional Test Camera Authority; ")


def test_a_signer_under_another_ca_is_not_trusted(sqlite_cli: Cli, tmp_path: Path) -> None:
    sqlite_cli.ok("identity", "create", "registry-office")
    anchors = _anchors(sqlite_cli, c2pa_signer().ca_pem)
    [item] = _ingest(sqlite_cli, tmp_path, {"capture.png": SIGNED})
    found = _details(sqlite_cli, item)["c2pa"]
    assert (found["state"], found["codes"], found["anchors"]) == (
        "valid", ["signingCredential.untrusted"], anchors)



def test_each_anchors_file_counts_even_without_a_final_newline(sqlite_cli: Cli,
                                                               tmp_path: Path) -> None:
    """Two anchors files, the first not ending in a newline (as an editor may save it): the
    two were joined as they were, "-----END CERTIFICATE----------BEGIN...", and the second
    file's anchor was silently lost (the signer under it only `valid`)."""
    sqlite_cli.ok("identity", "create", "registry-office")
    other = c2pa_signer().ca_pem.rstrip(b"\n")
    (sqlite_cli.vault / "other.pem").write_bytes(other)
    (sqlite_cli.vault / "ours.pem").write_bytes(SIGNER.ca_pem)
    with (sqlite_cli.vault / "config.toml").open("a") as config:
        config.write('\n[c2pa]\ntrust_anchors = ["other.pem", "ours.pem"]\n')
    [item] = _ingest(sqlite_cli, tmp_path, {"capture.png": SIGNED})
    found = _details(sqlite_cli, item)["c2pa"]
    assert (found["state"], found["anchors"]) == (
        "trusted", hashlib.sha256(other + b"\n" + SIGNER.ca_pem).hexdigest())


def test_files_of_other_kinds_get_no_finding(sqlite_cli: Cli, tmp_path: Path) -> None:
    sqlite_cli.ok("identity", "create", "registry-office")
    _anchors(sqlite_cli)
    plain_zip = io.BytesIO()
    with zipfile.ZipFile(plain_zip, "w") as z:
        z.writestr("notes.txt", "fictional")
    text, archive = _ingest(sqlite_cli, tmp_path, {"statement.txt": b"fictional statement\n",
                                                   "notes.zip": plain_zip.getvalue()})
    for item in (text, archive):
        details = _details(sqlite_cli, item)
        assert "c2pa" not in details and "proofmode" not in details
        assert "c2pa" not in json.loads(sqlite_cli.ok("items", "show", item, "--json").stdout)


@pytest.mark.parametrize("content, rule", [
    (None, "no such file; put the trust anchors' PEM file there or remove it from the list"),
    (b"fictional, not a certificate\n",
     "not a PEM certificate file; give the C2PA trust anchors' certificates in PEM form"),
])
def test_unusable_anchors_stop_intake_before_any_file_is_read(
        sqlite_cli: Cli, tmp_path: Path, content: bytes | None, rule: str) -> None:
    sqlite_cli.ok("identity", "create", "registry-office")
    _anchors(sqlite_cli, content or b"")
    if content is None:
        (sqlite_cli.vault / "c2pa-anchors.pem").unlink()
    (tmp_path / "capture.png").write_bytes(SIGNED)

    result = sqlite_cli("ingest", str(tmp_path / "capture.png"), "--case", CASE,
                        "--create-case")

    where = f"{sqlite_cli.vault / 'config.toml'}: [c2pa] trust_anchors: "
    assert (result.exit_code, result.stdout, result.stderr) == (
        1, "", f"evault: {where}{sqlite_cli.vault / 'c2pa-anchors.pem'}: {rule}\n")
    assert json.loads(sqlite_cli.ok("items", "list", "--json").stdout) == []
    assert [p for p in (sqlite_cli.vault / "blobs").rglob("*") if p.is_file()] == []


def test_the_anchors_survive_a_rewrite_of_config_toml(sqlite_cli: Cli) -> None:
    sqlite_cli.ok("identity", "create", "registry-office")
    _anchors(sqlite_cli)
    sqlite_cli.ok("body", "add", "ICC-OTP", "--name", "Fictional ICC-OTP")
    sqlite_cli.ok("rule", "add", "restricted", "ICC-OTP")  # rewrites config.toml
    from vault.store.vaultdir import load_config

    assert load_config(sqlite_cli.vault).c2pa_trust_anchors == ("c2pa-anchors.pem",)


def test_a_finding_changed_in_the_database_is_refused(sqlite_cli: Cli, tmp_path: Path) -> None:
    """The holder of the database turns an invalid finding into a trusted one: `items show`
    reads the signed event and refuses, exit 3, rather than print the forgery."""
    sqlite_cli.ok("identity", "create", "registry-office")
    _anchors(sqlite_cli)
    [item] = _ingest(sqlite_cli, tmp_path, {"capture.png": tampered(SIGNED)})
    vault = open_vault(sqlite_cli.vault)
    with vault.engine.begin() as conn:
        seq, body = conn.execute(sa.text("SELECT seq, body FROM custody_events WHERE subject = "
                                         ":item"), {"item": item}).one()
        forged = bytes(body).replace(b'"codes":["assertion.dataHash.mismatch"],', b"").replace(
            b'"state":"invalid"', b'"state":"trusted"')
        assert forged != bytes(body)
        conn.execute(sa.text("UPDATE custody_events SET body = :b, leaf_hash = :h "
                             "WHERE seq = :s"), {"b": forged, "h": leaf_hash(forged), "s": seq})
    vault.close()

    result = sqlite_cli("items", "show", item)

    assert result.exit_code == 3, result.stderr
    assert result.stderr.startswith(f"evault: item {item}: its item.ingested event cannot be "
                                    "trusted (")
    assert "trusted:" not in result.stdout


def test_a_hostile_manifest_cannot_reach_the_terminal(sqlite_cli: Cli, tmp_path: Path) -> None:
    """A generator name with an escape sequence and a bidi override (a hostile sender's
    manifest) is recorded escaped: one printable line."""
    sqlite_cli.ok("identity", "create", "registry-office")
    hostile = signed_png(SIGNER, generator="cam\x1b[2J\u202egpj.exe")
    [item] = _ingest(sqlite_cli, tmp_path, {"capture.png": hostile})
    assert _details(sqlite_cli, item)["c2pa"]["generator"] == "cam\\u001b[2J\\u202egpj.exe 1.0"
    assert "\x1b" not in sqlite_cli.ok("items", "show", item).stdout



def test_a_file_that_only_starts_like_a_media_file_is_unchecked_not_invalid(
        sqlite_cli: Cli, tmp_path: Path) -> None:
    """A note that begins "%PDF-", a JPEG cut short: no manifest in either, and none could
    be looked for, as the library cannot parse them; they were recorded `invalid: manifest
    fails its checks (manifest.unreadable)`, a finding against evidence that has no manifest."""
    sqlite_cli.ok("identity", "create", "registry-office")
    note = b"%PDF- is where this fictional note on the format begins\n"
    cut = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(24)
    for item in _ingest(sqlite_cli, tmp_path, {"note.txt": note, "cut.jpg": cut}):
        found = _details(sqlite_cli, item)["c2pa"]
        assert (found["state"], "codes" in found) == ("unchecked", False), found
        assert "asset could not be parsed" in found["reason"]
        assert _shown(sqlite_cli, item, "c2pa").startswith(
            "unchecked: the check could not be completed (")



def test_a_file_changed_between_the_two_reads_is_refused(
        sqlite_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tampered capture is stored; before the second read the file is put back as signed,
    same size, its modification time restored: the blob was the tampered bytes and the
    finding `trusted`, about bytes the vault does not hold. The change time gives it away."""
    from vault.service import storing

    sqlite_cli.ok("identity", "create", "registry-office")
    _anchors(sqlite_cli)
    path = tmp_path / "capture.png"
    path.write_bytes(tampered(SIGNED))
    original = storing._pump

    def pump_then_swap(src, writer, hashers, pool, size_hint):  # type: ignore[no-untyped-def]
        total = original(src, writer, hashers, pool, size_hint)
        before = path.stat()
        with open(path, "r+b") as f:
            f.write(SIGNED)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        return total

    monkeypatch.setattr(storing, "_pump", pump_then_swap)
    result = sqlite_cli("ingest", str(path), "--case", CASE, "--create-case")
    assert (result.exit_code, result.stderr) == (
        1, f"evault: {path}: changed while being read; nothing of it was stored, "
        "ingest it again when it is stable\n")
    assert json.loads(sqlite_cli.ok("items", "list", "--json").stdout) == []



def test_a_video_the_library_would_take_hours_over_is_stopped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An "MP4" of nothing but empty boxes: the C2PA library's time grows faster than the
    square of their count (256 KiB took 25 s, 512 KiB 135 s; a few MiB, days), and intake
    waited. The check now has a time limit (here one second), past which it is unchecked."""
    import time

    from vault.formats.provenance import c2pa_check, examine

    monkeypatch.setattr(c2pa_check, "TIME_LIMIT", 1.0)
    boxes = (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
             + b"\x00\x00\x00\x08free" * (256 << 7))
    began = time.monotonic()
    found = examine(io.BytesIO(boxes), "video/mp4", Checks(None))
    assert time.monotonic() - began < 8
    assert found == {"c2pa": {"state": "unchecked", "checker": _checker(), "reason":
                              "the check took longer than its time limit and was stopped"}}


# ----------------------------------------------------------------------------- ProofMode


def test_a_proofmode_bundle_is_one_item_with_its_parts(office: Cli, tmp_path: Path) -> None:
    media = png(shade=7)
    bundle = proofmode_bundle(media)
    [item] = _ingest(office, tmp_path, {"proofmode-share.zip": bundle})

    found = _details(office, item)["proofmode"]
    digest = hashlib.sha256
    with zipfile.ZipFile(io.BytesIO(bundle)) as z:
        expected = [{"role": role, "size": z.getinfo(name).file_size,
                     "sha256": digest(z.read(name)).hexdigest()}
                    for name, role in zip(z.namelist(), ["media", "signature", "proof",
                                                         "signature", "proof", "signature",
                                                         "public-key"], strict=True)]
    assert found == {"state": "consistent", "proofs": 1, "parts": expected,
                     "signatures": "not verified"}
    assert expected[0]["sha256"] == digest(media).hexdigest()
    assert _shown(office, item, "proofmode") == (
        "consistent: each of the bundle's 1 proof(s) names the SHA-256 of a media file in it "
        "(7 parts; OpenPGP signatures not verified)")
    # The bundle is the item, byte for byte; its media's name stays out of the log.
    office.ok("items", "export", item, "-o", str(tmp_path / "copy.zip"), "--reason", "check")
    assert (tmp_path / "copy.zip").read_bytes() == bundle
    assert "IMG_20260301" not in json.dumps(_details(office, item))


@pytest.mark.parametrize("bundle_args, reason", [
    ({"named_hash": "ab" * 32},
     "proof 1: no file in the bundle has the SHA-256 it names"),
    ({"csv_hash": "cd" * 32},
     "proof 1: its JSON and CSV name different media hashes"),
])
def test_a_proof_that_does_not_match_its_media_is_a_mismatch(
        sqlite_cli: Cli, tmp_path: Path, bundle_args: dict[str, str], reason: str) -> None:
    sqlite_cli.ok("identity", "create", "registry-office")
    [item] = _ingest(sqlite_cli, tmp_path,
                     {"share.zip": proofmode_bundle(png(), **bundle_args)})  # type: ignore[arg-type]
    found = _details(sqlite_cli, item)["proofmode"]
    assert (found["state"], found["reason"]) == ("mismatch", reason)
    assert _shown(sqlite_cli, item, "proofmode") == (
        f"mismatch: {reason} (7 parts; OpenPGP signatures not verified)")


def test_a_damaged_bundle_is_unreadable_not_an_error() -> None:
    bundle = bytearray(proofmode_bundle(png()))
    # The first member is the media: its data starts after the 30-byte local header and name.
    data_at = 30 + len(b"IMG_20260301_101010.png")
    bundle[data_at + 5] ^= 0xFF  # the media member's bytes no longer match its CRC
    found = examine_bundle(io.BytesIO(bytes(bundle)))
    assert found is not None and found["state"] == "unreadable", found


def test_a_zip_bomb_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vault.formats.provenance.proofmode.MARGIN", 0)
    bundle = proofmode_bundle(png(), extra={"filler.bin": bytes(4 << 20)})  # 4 MiB of zeros
    assert examine_bundle(io.BytesIO(bundle)) == {
        "state": "unreadable", "proofs": 1, "signatures": "not verified",
        "reason": "its members' declared sizes are out of proportion to the zip's (a zip "
                  "bomb?)"}


def test_a_zip_holding_two_members_of_one_name_is_judged_by_position() -> None:
    """A hostile bundle names two members alike, one of them the real media: the proof must
    match a media member's own bytes, not a name."""
    with pytest.warns(UserWarning, match="Duplicate name"):
        bundle = proofmode_bundle(png(), extra={"IMG_20260301_101010.png": b"decoy"})
    found = examine_bundle(io.BytesIO(bundle))
    assert found is not None and found["state"] == "consistent"
    roles = [p["role"] for p in found["parts"]]
    assert roles.count("media") == 1 and roles[-1] == "other"



def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


def _needing_version(bundle: bytes, version: int) -> bytes:
    """``bundle`` with its first central directory entry asking for zip ``version`` to be
    extracted (one byte: a sender's tool, or a hostile one)."""
    at = bundle.index(b"PK\x01\x02")
    return bundle[: at + 6] + bytes([version]) + bundle[at + 7:]


def test_a_hostile_zip_never_stops_intake(sqlite_cli: Cli, tmp_path: Path) -> None:
    """A proof whose hash is a list, a zip that asks for a newer zip version than Python's:
    each raised out of intake (a traceback, nothing ingested); now each file comes in."""
    sqlite_cli.ok("identity", "create", "registry-office")
    media = png()
    listed = _zip({"capture.png": media, "p.proof.json": json.dumps(
        {"File Hash SHA256": [hashlib.sha256(media).hexdigest()]}).encode()})
    newer = _needing_version(proofmode_bundle(media), 64)
    items = _ingest(sqlite_cli, tmp_path, {"listed.zip": listed, "newer.zip": newer})
    assert _details(sqlite_cli, items[0])["proofmode"] == {
        "state": "unreadable", "reason": "'File Hash SHA256' is not a hex SHA-256",
        "proofs": 1, "signatures": "not verified"}
    assert "proofmode" not in _details(sqlite_cli, items[1])  # not a zip Python can read



WITNESS = "statement-of-fictional-witness-anna-k.png"


def _encrypted(bundle: bytes) -> bytes:
    """``bundle`` with its first member marked encrypted in the central directory."""
    at = bundle.index(b"PK\x01\x02") + 8
    return bundle[:at] + bytes([bundle[at] | 1]) + bundle[at + 1:]


@pytest.mark.parametrize("spoil", ["encrypted", "bad CRC", "local name differs"])
def test_an_unreadable_member_is_not_named_in_the_finding(spoil: str) -> None:
    """zipfile's errors name the member (`Bad CRC-32 for file '...'`); the reason goes into
    the signed event and every package's custody excerpt, where no file name may go."""
    bundle = proofmode_bundle(png(), media_name=WITNESS)
    if spoil == "encrypted":
        bundle = _encrypted(bundle)
    elif spoil == "bad CRC":
        stored = _zip({WITNESS: png(), "p.proof.json": b"{}"}, zipfile.ZIP_STORED)
        at = 30 + len(WITNESS) + 20
        bundle = stored[:at] + bytes([stored[at] ^ 0xFF]) + stored[at + 1:]
    else:
        bundle = bundle.replace(WITNESS.encode(), WITNESS.upper().encode(), 1)
    found = examine_bundle(io.BytesIO(bundle))
    assert found is not None and found["state"] == "unreadable", found
    assert "anna" not in json.dumps(found).lower(), found



def _declaring(bundle: bytes, name: str, size: int) -> bytes:
    """``bundle`` with member ``name`` declaring ``size`` bytes, in its local header and in
    the central directory, whatever it holds."""
    data = bytearray(bundle)
    with zipfile.ZipFile(io.BytesIO(bundle)) as z:
        local = z.getinfo(name).header_offset
    data[local + 22: local + 26] = size.to_bytes(4, "little")
    central = data.index(b"PK\x01\x02", local + 30)
    while data[central + 46: central + 46 + len(name)] != name.encode():
        central = data.index(b"PK\x01\x02", central + 4)
    data[central + 24: central + 28] = size.to_bytes(4, "little")
    return bytes(data)


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_a_member_that_inflates_past_its_declared_size_is_not_read(method: int) -> None:
    """zipfile inflates a bzip2 or LZMA member a whole read's worth at once, whatever size
    it declares: a few hundred bytes that declare 1 KiB and hold 48 MiB of zeros (gigabytes,
    from a hostile sender) were all in memory at once."""
    import tracemalloc

    out = io.BytesIO(proofmode_bundle(png()))
    with zipfile.ZipFile(out, "a") as z:
        z.writestr("filler.bin", bytes(48 << 20), compress_type=method)
        assert z.getinfo("filler.bin").compress_size < 64 << 10
    hostile = _declaring(out.getvalue(), "filler.bin", 1024)

    tracemalloc.start()
    try:
        found = examine_bundle(io.BytesIO(hostile))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak
    assert found is not None and found["state"] == "unreadable", found



def _many_members(count: int, name: bytes = b"p.proof.json") -> bytes:
    """A zip of one empty local file and ``count`` central directory entries naming it:
    47 bytes an entry, and an object of hundreds of bytes each in zipfile's memory."""
    import struct

    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0)
    entry = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0,
                        len(name), 0, 0, 0, 0, 0, 0) + name
    directory = entry * count
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, len(directory),
                      len(local) + len(name), 0)
    return local + name + directory + end


def test_a_zip_of_absurdly_many_members_is_not_listed() -> None:
    """The member count was checked after zipfile had listed them all: 100,000 entries in a
    5 MB zip took 50 MB and seconds (millions, gigabytes); a central directory too large
    for a bundle is no longer listed at all, and the zip is an ordinary file."""
    import tracemalloc

    hostile = io.BytesIO(_many_members(100_000))
    tracemalloc.start()
    try:
        found = examine_bundle(hostile)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (found, peak < 16 << 20) == (None, True), (found, peak)



@pytest.mark.parametrize("proof", ["json", "csv"])
def test_a_proof_naming_its_hash_twice_is_not_consistent(proof: str) -> None:
    """A proof whose JSON has the hash key twice, or whose CSV has the hash column twice,
    first a decoy, then the media's: parsers differ on which counts (Python's the last), so
    the bundle was `consistent` for the vault and names another file for the next reader."""
    media = png()
    real, decoy = hashlib.sha256(media).hexdigest(), "ab" * 32
    if proof == "json":
        text = f'{{"File Hash SHA256": "{decoy}", "File Hash SHA256": "{real}"}}'
        members = {"capture.png": media, f"{real}.proof.json": text.encode()}
    else:
        text = f"File Hash SHA256,File Hash SHA256\n{decoy},{real}\n"
        members = {"capture.png": media,
                   f"{real}.proof.json": json.dumps({"File Hash SHA256": real}).encode(),
                   f"{real}.proof.csv": text.encode()}
    found = examine_bundle(io.BytesIO(_zip(members)))
    assert found is not None and (found["state"], found["reason"]) == (
        "unreadable", "names 'File Hash SHA256' more than once"), found


# ----------------------------------------------------------------------------- kinds, cost


@pytest.mark.parametrize("head, kind", [
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"),
    (b"GIF89a", "image/gif"),
    (b"II*\x00\x08\x00", "image/tiff"),
    (b"MM\x00*\x00\x00", "image/tiff"),
    (b"%PDF-2.0", "application/pdf"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
    (b"RIFF\x00\x00\x00\x00WAVEfmt ", "audio/wav"),
    (b"RIFF\x00\x00\x00\x00AVI LIST", "video/avi"),
    (b"\x00\x00\x00\x18ftypisom\x00\x00", "video/mp4"),
    (b"\x00\x00\x00\x18ftypqt  \x00\x00", "video/quicktime"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00", "image/heic"),
    (b"\x00\x00\x00\x18ftypavif\x00\x00", "image/avif"),
    (b"fLaC\x00\x00", "audio/flac"),
    (b"ID3\x04\x00", "audio/mpeg"),
    (b"PK\x03\x04\x14\x00", "application/zip"),
    (b"\xff\xd8fictional", None),
    (b"fictional statement", None),
    (b"", None),
])
def test_the_kind_comes_from_the_first_bytes(head: bytes, kind: str | None) -> None:
    assert sniff(head) == kind


def test_checks_name_their_anchors_by_digest() -> None:
    assert Checks(None).anchors_sha256 is None
    assert Checks("pem").anchors_sha256 == hashlib.sha256(b"pem").hexdigest()


def _loaded(tmp_path: Path, vault: Path, *argvs: list[str]) -> list[str]:
    code = ("import json, sys\n"
            "from vault.cli import cli\n"
            "for argv in json.loads(sys.argv[1]):\n"
            "    try:\n"
            "        cli.main(argv, prog_name='evault')\n"
            "    except SystemExit as e:\n"
            "        assert not e.code, (argv, e.code)\n"
            "print('LOADED', json.dumps(sorted(m for m in ('c2pa', "
            "'vault.formats.provenance.c2pa_check', 'vault.formats.provenance.proofmode') "
            "if m in sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code, json.dumps([[*a, "--vault", str(vault)]
                                                                  for a in argvs])],
                         capture_output=True, text=True, env={**os.environ}, check=False)
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout.splitlines()[-1].removeprefix("LOADED ")))


def test_the_c2pa_library_is_loaded_only_by_an_intake_of_media(sqlite_cli: Cli,
                                                               tmp_path: Path) -> None:
    sqlite_cli.ok("identity", "create", "registry-office")
    (tmp_path / "statement.txt").write_text("fictional statement\n")
    (tmp_path / "capture.png").write_bytes(SIGNED)
    text_only = ["ingest", str(tmp_path / "statement.txt"), "--case", CASE, "--create-case"]
    assert _loaded(tmp_path, sqlite_cli.vault, text_only, ["items", "list"],
                   ["custody", "verify"]) == []
    media = ["ingest", str(tmp_path / "capture.png"), "--case", CASE]
    assert _loaded(tmp_path, sqlite_cli.vault, media) == [
        "c2pa", "vault.formats.provenance.c2pa_check"]


def test_bulk_intake_workers_check_provenance_too(sqlite_cli: Cli, tmp_path: Path) -> None:
    """Enough small files for worker processes (PARALLEL_MIN_FILES): the media among them
    is checked in a worker as it is in the main process."""
    from vault.service.intake import PARALLEL_MIN_FILES

    sqlite_cli.ok("identity", "create", "registry-office")
    anchors = _anchors(sqlite_cli)
    folder = tmp_path / "bulk"
    folder.mkdir()
    for n in range(PARALLEL_MIN_FILES + 8):
        (folder / f"note-{n:04d}.txt").write_text(f"fictional note {n}\n")
    (folder / "zz-capture.png").write_bytes(SIGNED)
    (folder / "zz-share.zip").write_bytes(proofmode_bundle(png()))
    rows = json.loads(sqlite_cli.ok("ingest", str(folder), "--recursive", "--case", CASE,
                                    "--create-case", "--json").stdout)
    by_name = {row["name"]: row["id"] for row in rows}
    found = _details(sqlite_cli, by_name["zz-capture.png"])["c2pa"]
    assert (found["state"], found["anchors"]) == ("trusted", anchors), found
    assert _details(sqlite_cli, by_name["zz-share.zip"])["proofmode"]["state"] == "consistent"
    assert "c2pa" not in _details(sqlite_cli, by_name["note-0000.txt"])


def test_the_finding_travels_in_a_package_and_verifies(tmp_path: Path) -> None:
    """The signed intake event, finding and all, is in the package's custody excerpt: the
    body reads what the office found, and its evault (which knows no such key) verifies it."""
    office, icc = Cli(tmp_path / "office").init(), Cli(tmp_path / "icc").init()
    office.ok("identity", "create", "registry-office")
    office.ok("identity", "export", "registry-office", "-o", str(tmp_path / "office.card"))
    icc.ok("identity", "create", "icc-officer")
    icc.ok("identity", "export", "icc-officer", "-o", str(tmp_path / "icc.card"))
    office.ok("body", "add", "ICC-OTP", "--name", "Fictional ICC-OTP")
    office.ok("body", "key", "add", "ICC-OTP", "--card", str(tmp_path / "icc.card"))
    icc.ok("contact", "add", str(tmp_path / "office.card"))
    _anchors(office)
    [item] = _ingest(office, tmp_path, {"capture.png": SIGNED})
    package = tmp_path / "p.evpkg"
    pid = json.loads(office.ok("package", "create", "--to", "ICC-OTP", "--case", CASE, "-o",
                               str(package), "--json").stdout)["id"]

    assert icc.ok("verify", str(package), "--as", "icc-officer").stdout.startswith(
        f"OK: {package}")
    icc.ok("open", str(package), "--out", str(tmp_path / "in"))
    excerpt = [json.loads(json.loads(line)["event"]) for line in
               (tmp_path / "in" / pid / "evault" / "custody.jsonl").read_text().splitlines()]
    [ingested] = [e for e in excerpt if e["action"] == "item.ingested"]
    assert (ingested["subject"], ingested["details"]["c2pa"]["state"]) == (item, "trusted")


def test_a_library_failure_is_unchecked_not_a_finding_and_the_file_comes_in(
        sqlite_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The library fails for a reason of its own (here a context it has voided, as it does
    in a forked child): the item is ingested, and its event says the check was not made,
    never that the manifest is invalid."""
    import c2pa

    sqlite_cli.ok("identity", "create", "registry-office")
    voided = c2pa.Context()
    voided.close()
    monkeypatch.setattr("vault.formats.provenance.c2pa_check._context", lambda *a: voided)
    [item] = _ingest(sqlite_cli, tmp_path, {"capture.png": SIGNED})
    found = _details(sqlite_cli, item)["c2pa"]
    assert (found["state"], found["reason"]) == ("unchecked", "Error: Context is not valid")
    assert _shown(sqlite_cli, item, "c2pa") == (
        "unchecked: the check could not be completed (Error: Context is not valid) (checked "
        f"by {_checker()})")


def test_a_mistake_in_the_c2pa_table_names_the_file_and_the_key(sqlite_cli: Cli) -> None:
    with (sqlite_cli.vault / "config.toml").open("a") as config:
        config.write('\n[c2pa]\ntrust_anchor = "c2pa-anchors.pem"\n')
    result = sqlite_cli("items", "list")
    assert (result.exit_code, result.stderr) == (
        1, f"evault: {sqlite_cli.vault / 'config.toml'}: [c2pa]: unknown key 'trust_anchor'; "
           "the key is trust_anchors\n")
