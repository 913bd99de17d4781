"""The auditor's tools: `evault verify`, cross-organisation consistency, verification sheets."""

from __future__ import annotations

import base64
import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_PASSPHRASE, Cli

CASE = "UA-2026-0042"
FILES = {
    "statement-of-witness-K.txt": b"fictional witness statement\n",
    "school roof photo.jpg": b"\xff\xd8 fictional photo bytes " * 40,
}
TITLE = "Fictional shelling of a school"
MEMBERS = ("envelope.json", "envelope.json.sig", "payload.age")


@dataclass
class World:
    """An office vault that sent a package to ICC-OTP, whose vault opened and acknowledged it."""

    tmp: Path
    office: Cli
    icc: Cli
    office_fp: str
    icc_fp: str
    package: Path  # sent, opened, acknowledged
    package_id: str
    other: Path  # a second package, built only
    receipt: Path
    receipt_id: str
    ack: Path
    office_card: Path
    icc_card: Path
    checkpoint: Path  # the office's log after everything
    allowed: Path  # allowed_signers of an auditor who trusts both sides
    items: list[str]
    origin: str  # the office's log, evault/<vault-id>
    old_allowed: Path  # allowed_signers as the README wrote them before origins were bound


def _card_key(card: Path) -> str:
    return str(json.loads(card.read_text())["signing_key"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("audit")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EVAULT_HOME", str(tmp / "no-default-vault"))
        mp.setenv("EVAULT_KEY_STORAGE", "file")
        mp.setenv("EVAULT_PASSPHRASE", TEST_PASSPHRASE)
        mp.delenv("EVAULT_PASSPHRASE_FILE", raising=False)
        office, icc = Cli(tmp / "office"), Cli(tmp / "icc")
        office.init()
        icc.init()
        office_fp = json.loads(office.ok("identity", "create", "registry-office", "--json")
                               .stdout)["fingerprint"]
        icc_fp = json.loads(icc.ok("identity", "create", "icc-officer", "--json")
                            .stdout)["fingerprint"]
        office_card, icc_card = tmp / "office.card.json", tmp / "icc.card.json"
        office.ok("identity", "export", "-o", str(office_card))
        icc.ok("identity", "export", "-o", str(icc_card))
        office.ok("body", "add", "ICC-OTP", "--name", "Fictional court prosecutor")
        office.ok("body", "key", "add", "ICC-OTP", "--card", str(icc_card),
                  "--fingerprint", icc_fp)
        icc.ok("contact", "add", str(office_card), "--fingerprint", office_fp)
        evidence = tmp / "evidence"
        evidence.mkdir()
        for name, data in FILES.items():
            (evidence / name).write_bytes(data)
        office.ok("ingest", str(evidence), "--recursive", "--case", CASE, "--create-case",
                  "--title", TITLE)
        items = [i["id"] for i in json.loads(office.ok("items", "list", "--json").stdout)]
        outbox = tmp / "outbox"
        outbox.mkdir()
        sent = json.loads(office.ok("package", "create", "--to", "ICC-OTP", "--case", CASE,
                                    "-o", str(tmp / "built.evpkg"), "--send", "--outbox",
                                    str(outbox), "--json").stdout)
        package = outbox / f"{sent['id']}.evpkg"
        receipt = tmp / "receipt.json"
        office.ok("receipt", "export", sent["receipt"], "-o", str(receipt))
        icc.ok("open", str(package), "--out", str(tmp / "received"))
        ack = tmp / "ack.json"
        icc.ok("ack", sent["id"], "-o", str(ack))
        office.ok("receipt", "import", str(ack))
        other = tmp / "other.evpkg"
        office.ok("package", "create", "--to", "ICC-OTP", "--item", items[0], "-o", str(other))
        checkpoint = tmp / "checkpoint.txt"
        office.ok("custody", "checkpoint", "-o", str(checkpoint))
    origin = checkpoint.read_text().split("\n", 1)[0]
    allowed, old_allowed = tmp / "allowed_signers", tmp / "old_allowed_signers"
    # A checkpoint signer is bound to its log by naming the log as a principal.
    allowed.write_text(
        f'registry,{origin} namespaces="evault-envelope,evault-statement,evault-receipt,'
        f'evault-checkpoint" {_card_key(office_card)}\n'
        f'icc namespaces="evault-ack,evault-checkpoint" {_card_key(icc_card)}\n'
    )
    old_allowed.write_text(allowed.read_text().replace(f"registry,{origin} ", "registry "))
    yield World(tmp, office, icc, office_fp, icc_fp, package, sent["id"], other, receipt,
                sent["receipt"], ack, office_card, icc_card, checkpoint, allowed, items, origin,
                old_allowed)


def auditor(*args: str) -> tuple[int, list[str], str]:
    """Run as an auditor with no vault at all (EVAULT_HOME is an empty folder)."""
    result = Cli(Path("unused"))(*args, vault=False)
    return result.exit_code, result.stdout.splitlines(), result.stderr


def copy(world: World, source: Path, name: str, *, sig: bool = False) -> Path:
    target = world.tmp / "copies" / name
    target.parent.mkdir(exist_ok=True)
    shutil.copyfile(source, target)
    if sig:
        shutil.copyfile(f"{source}.sig", f"{target}.sig")
    return target


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def member_offsets(path: Path) -> dict[str, tuple[int, int]]:
    with tarfile.open(path) as tar:
        return {m.name: (m.offset_data, m.size) for m in tar.getmembers()}


def rebuild(target: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(target, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name in MEMBERS:
            info = tarfile.TarInfo(name)
            info.size = len(members[name])
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(members[name]))
    return target


def read_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


# ----------------------------------------------------------------------------- verify: OK


def ok_lines(world: World) -> dict[str, str]:
    return {
        "package": f"OK: {world.package} (package {world.package_id} from registry-office for "
                   "ICC-OTP, envelope and payload digest verified)",
        "receipt": f"OK: {world.receipt} (sharing receipt {world.receipt_id} of package "
                   f"{world.package_id} to ICC-OTP from registry-office, 2 item(s), signature "
                   "and checkpoint (size ",
        "ack": f"OK: {world.ack} (acknowledgement of package {world.package_id} for ICC-OTP by "
               "icc-officer, 2 item(s), signature and checkpoint (size ",
        "office_card": f"OK: {world.office_card} (contact card of registry-office, fingerprint "
                       f"{world.office_fp}, self-signature verified; ",
        "icc_card": f"OK: {world.icc_card} (contact card of icc-officer, fingerprint "
                    f"{world.icc_fp}, self-signature verified; ",
        "checkpoint": f"OK: {world.checkpoint} (checkpoint of evault/",
    }


def every_file(world: World) -> list[str]:
    return [str(p) for p in (world.package, world.receipt, world.ack, world.office_card,
                             world.icc_card, world.checkpoint)]


def assert_all_ok(world: World, lines: list[str]) -> None:
    expected = ok_lines(world)
    assert len(lines) == len(expected)
    for line, want in zip(lines, expected.values(), strict=True):
        assert line.startswith(want), (line, want)


def test_verify_every_kind_with_the_senders_vault(world: World) -> None:
    result = world.office("verify", *every_file(world))
    assert (result.exit_code, result.stderr) == (0, ""), result.stderr
    lines = result.stdout.splitlines()
    assert_all_ok(world, lines)
    assert lines[3].endswith("; a trusted key)")
    assert "checkpoint of evault/" in lines[5] and "signature verified)" in lines[5]


def test_verify_every_kind_with_the_recipients_vault(world: World) -> None:
    # A contact card names no log: the office's bare checkpoint needs a line binding its log.
    result = world.icc("verify", *every_file(world), "--trusted-keys", str(world.allowed))
    assert result.exit_code == 0, result.stdout + result.stderr
    assert_all_ok(world, result.stdout.splitlines())
    result = world.icc("verify", *every_file(world))
    assert result.exit_code == 3
    assert result.stdout.splitlines()[5].startswith(
        f"FAIL: {world.checkpoint}: checkpoint: origin {world.origin} signed by "
        f"{world.office_fp}, which this vault knows as a sender but not as the keeper of ")


def test_verify_with_trusted_keys_and_no_vault(world: World, tmp_path: Path) -> None:
    code, lines, stderr = auditor("verify", *every_file(world), "--trusted-keys",
                                  str(world.allowed))
    assert (code, stderr) == (0, "")
    assert_all_ok(world, lines)
    assert not (tmp_path / "default-home").exists()  # no vault was created

    code, out, _ = auditor("verify", *every_file(world), "--trusted-keys", str(world.allowed),
                           "--json")
    report = json.loads("\n".join(out))
    assert code == 0
    assert [r["kind"] for r in report] == ["package", "sharing-receipt", "acknowledgement",
                                           "contact-card", "contact-card", "checkpoint"]
    assert all(r["ok"] and r["what"] and "reason" not in r for r in report)
    assert report[0]["id"] == world.package_id and report[0]["signer"] == world.office_fp
    assert report[2]["signer"] == world.icc_fp


def test_without_keys_the_reason_names_trusted_keys(world: World) -> None:
    code, lines, stderr = auditor("verify", *every_file(world))
    assert code == 3
    assert stderr == "evault: 4 of 6 file(s) did not verify\n"
    failed = [line for line in lines if line.startswith("FAIL: ")]
    assert len(failed) == 4
    assert all("pass --trusted-keys FILE" in line for line in failed)
    assert lines[3].endswith("; confirm it with its holder before trusting it)")


def test_verify_as_the_recipient_checks_the_package_whole(world: World) -> None:
    result = world.icc("verify", str(world.package), "--as", "icc-officer")
    assert (result.exit_code, result.stdout) == (
        0,
        f"OK: {world.package} (package {world.package_id} from registry-office for ICC-OTP, "
        "envelope, payload, bag, statement, 2 item(s) and 2 custody event(s) verified)\n",
    )
    # The sender's escrow key opens it too.
    assert world.office("verify", str(world.package), "--as", "registry-office").exit_code == 0
    code, _, stderr = auditor("verify", str(world.package), "--as", "icc-officer")
    assert code == 2 and "--as NAME needs the vault" in stderr


# ----------------------------------------------------------------------------- verify: FAIL


@pytest.mark.parametrize("member", MEMBERS)
def test_one_flipped_byte_in_any_member_fails(world: World, member: str) -> None:
    bad = copy(world, world.package, f"flipped-{member}.evpkg")
    offset, size = member_offsets(bad)[member]
    flip(bad, offset + size // 2)
    code, lines, _ = auditor("verify", str(bad), "--trusted-keys", str(world.allowed))
    assert code == 3
    assert len(lines) == 1 and lines[0].startswith(f"FAIL: {bad}: package ")
    if member == "payload.age":
        assert "payload.age does not match the SHA-256 in the signed envelope" in lines[0]
    else:
        assert "signature" in lines[0]
    # The recipient's whole check refuses it too.
    assert world.icc("verify", str(bad), "--as", "icc-officer").exit_code == 3


def test_a_payload_swapped_between_packages_fails(world: World) -> None:
    a, b = read_members(world.package), read_members(world.other)
    swapped = rebuild(world.tmp / "swapped.evpkg", {**a, "payload.age": b["payload.age"]})
    code, lines, _ = auditor("verify", str(swapped), "--trusted-keys", str(world.allowed))
    assert code == 3
    assert lines[0].startswith(f"FAIL: {swapped}: package {world.package_id}: ")
    assert "payload.age" in lines[0]
    # Rebuilt with its own payload, the same tar layout verifies: the failure is the swap.
    same = rebuild(world.tmp / "rebuilt.evpkg", a)
    assert auditor("verify", str(same), "--trusted-keys", str(world.allowed))[0] == 0


def _tampered_json(world: World, source: Path, name: str, old: str, new: str) -> Path:
    bad = copy(world, source, name, sig=True)
    text = bad.read_text()
    assert old in text
    bad.write_text(text.replace(old, new, 1))
    return bad


def test_tampered_receipt_ack_card_and_checkpoint_fail(world: World) -> None:
    receipt = json.loads(world.receipt.read_text())
    size = receipt["items"][0]["size"]
    bad_receipt = _tampered_json(world, world.receipt, "receipt.json",
                                 f'"size":{size}', f'"size":{size + 1}')
    ack = json.loads(world.ack.read_text())
    sha = ack["items"][-1]["sha256"]
    bad_ack = _tampered_json(world, world.ack, "ack.json", sha, sha[::-1])
    from vault.crypto.keys import SigningKey

    stranger = SigningKey.generate().public
    card = json.loads(world.icc_card.read_text())
    bad_card = world.tmp / "copies" / "altered.card.json"
    bad_card.write_text(json.dumps({**card, "signing_key": stranger.openssh(),
                                    "fingerprint": stranger.fingerprint}))
    lines = world.checkpoint.read_text().split("\n")
    root = base64.b64decode(lines[2])
    lines[2] = base64.b64encode(bytes([root[0] ^ 1]) + root[1:]).decode()
    bad_checkpoint = world.tmp / "copies" / "checkpoint.txt"
    bad_checkpoint.write_text("\n".join(lines))

    files = [bad_receipt, bad_ack, bad_card, bad_checkpoint]
    code, out, stderr = auditor("verify", *map(str, files), "--trusted-keys", str(world.allowed))
    assert code == 3 and stderr == "evault: 4 of 4 file(s) did not verify\n"
    assert out[0].startswith(f"FAIL: {bad_receipt}: sharing receipt {world.receipt_id}: "
                             "signature does not verify")
    assert out[1].startswith(f"FAIL: {bad_ack}: acknowledgement of {world.package_id}: ")
    assert out[2] == (f"FAIL: {bad_card}: contact card icc-officer: self-signature does not "
                      "verify; the card was altered")
    assert out[3].startswith(f"FAIL: {bad_checkpoint}: checkpoint: signed note: signature by ")
    assert "does not verify" in out[3]


def test_untrusted_signers_fail(world: World) -> None:
    from vault.crypto.keys import SigningKey

    strangers = world.tmp / "strangers"
    strangers.write_text(f"someone {SigningKey.generate().public.openssh()}\n")
    code, lines, _ = auditor("verify", str(world.package), str(world.receipt),
                             str(world.checkpoint), "--trusted-keys", str(strangers))
    assert code == 3
    assert lines[0] == (
        f"FAIL: {world.package}: package {world.package_id}: signer {world.office_fp} is not "
        f"a trusted key; confirm its fingerprint with its holder, then add it to {strangers}"
    )
    assert lines[1].startswith(f"FAIL: {world.receipt}: sharing receipt {world.receipt_id}: "
                               f"signer {world.office_fp} is not a trusted key")
    assert lines[2].startswith(f"FAIL: {world.checkpoint}: checkpoint: not signed by a trusted")

    # The right key, admitted for other namespaces only: namespaces= is respected.
    narrow = world.tmp / "narrow"
    narrow.write_text(f'registry namespaces="evault-ack" {_card_key(world.office_card)}\n')
    code, lines, _ = auditor("verify", str(world.package), str(world.receipt),
                             str(world.checkpoint), "--trusted-keys", str(narrow))
    assert code == 3
    for line, namespace in zip(lines, ("evault-envelope", "evault-receipt", "evault-checkpoint"),
                               strict=True):
        assert f"signer is in {narrow} but not admitted there" in line
        assert f"namespace '{namespace}' is not among 'evault-ack'" in line

    # The ICC's vault knows the office as a contact; the office's key signed no ack.
    forged = copy(world, world.ack, "forged-ack.json")
    shutil.copyfile(f"{world.receipt}.sig", f"{forged}.sig")
    result = world.icc("verify", str(forged))
    assert result.exit_code == 3 and "FAIL: " in result.stdout


def test_mixed_files_check_every_one(world: World) -> None:
    bad = copy(world, world.package, "mixed-bad.evpkg")
    offset, size = member_offsets(bad)["payload.age"]
    flip(bad, offset + size - 1)
    junk = world.tmp / "copies" / "notes.txt"
    junk.write_text("not an evault file\n")
    missing_sig = copy(world, world.receipt, "no-sig.json")
    files = [world.package, bad, world.receipt, junk, missing_sig, world.checkpoint]
    code, lines, stderr = auditor("verify", *map(str, files), "--trusted-keys",
                                  str(world.allowed))
    assert code == 3 and stderr == "evault: 3 of 6 file(s) did not verify\n"
    assert [line.split(":", 1)[0] for line in lines] == ["OK", "FAIL", "OK", "FAIL", "FAIL", "OK"]
    assert lines[3] == (f"FAIL: {junk}: not an evault file: neither a package, a json document "
                        "nor a signed note (file notes.txt)")
    assert "no-sig.json.sig is missing" in lines[4]

    code, out, _ = auditor("verify", *map(str, files), "--trusted-keys", str(world.allowed),
                           "--json")
    report = json.loads("\n".join(out))
    assert code == 3
    assert [(r["file"], r["ok"]) for r in report] == [(str(f), line.startswith("OK"))
                                                     for f, line in zip(files, lines, strict=True)]
    assert report[3] == {"file": str(junk), "kind": "unknown", "ok": False,
                         "reason": lines[3].split(": ", 2)[2]}


# ----------------------------------------------------------------------------- consistency


def test_consistency_across_organisations(world: World) -> None:
    proof = world.tmp / "proof.json"
    sender = world.office("custody", "consistency", str(world.receipt), str(world.checkpoint),
                          "-o", str(proof))
    assert sender.exit_code == 0, sender.stderr
    assert sender.stdout.startswith("OK: the log grew from ")
    assert sender.stderr == f"evault: wrote {proof}\n"
    doc = json.loads(proof.read_text())
    assert set(doc) == {"type", "version", "origin", "old_size", "new_size", "old_root",
                        "new_root", "proof"}
    assert doc["origin"].startswith("evault/") and doc["old_size"] < doc["new_size"]

    args = ("custody", "consistency", str(world.receipt), str(world.checkpoint),
            "--proof", str(proof), "--trusted-keys", str(world.allowed))
    code, lines, stderr = auditor(*args)
    assert (code, lines, stderr) == (0, sender.stdout.splitlines(), "")
    code, out, _ = auditor(*args, "--json")
    data = json.loads("\n".join(out))
    assert data["status"] == "consistent"
    assert {k: data[k] for k in doc if k in data} == {k: v for k, v in doc.items()
                                                      if k not in ("type", "version")}
    # The recipient's vault knows the sender: no allowed_signers needed there.
    known = world.icc("custody", "consistency", str(world.receipt), str(world.checkpoint),
                      "--proof", str(proof))
    assert known.exit_code == 0, known.stderr

    # Without keys, or with the proof altered, nothing is vouched for.
    code, _, stderr = auditor(*args[:-2])
    assert code == 3 and "pass --trusted-keys FILE" in stderr
    altered = world.tmp / "altered-proof.json"
    hashes = doc["proof"]
    hashes[0] = base64.b64encode(bytes(32)).decode()
    altered.write_text(json.dumps({**doc, "proof": hashes}))
    code, _, stderr = auditor(*args[:4], "--proof", str(altered), *args[6:])
    assert code == 3 and stderr.startswith("evault: merkle consistency proof: ")


def test_a_rewritten_history_fails_the_proof(world: World) -> None:
    from vault.custody.merkle import leaf_hash, root_of
    from vault.custody.note import Checkpoint, NoteSigner, sign_checkpoint
    from vault.service.identities import current_key, get_identity, load_keypair
    from vault.service.vaults import open_vault

    proof = world.tmp / "proof-for-rewrite.json"
    world.office.ok("custody", "consistency", str(world.receipt), str(world.checkpoint),
                    "-o", str(proof))
    v = open_vault(world.office.vault)
    with v.transaction() as session:
        pair = load_keypair(v, current_key(get_identity(session, "registry-office")))
    v.close()
    text = world.checkpoint.read_text()
    origin, size = text.split("\n")[0], int(text.split("\n")[1])
    # The sender's own key signs a tree of the same size over another history.
    forged_root = root_of([leaf_hash(f"rewritten event {n}".encode()) for n in range(size)])
    forged = world.tmp / "rewritten-checkpoint.txt"
    forged.write_text(sign_checkpoint(Checkpoint(origin, size, forged_root),
                                      NoteSigner(origin, pair.signing)))
    # Its signature is good: `verify` accepts it as a checkpoint...
    code, lines, _ = auditor("verify", str(forged), "--trusted-keys", str(world.allowed))
    assert code == 0, lines
    # ...but no proof leads from the receipt's checkpoint to it.
    code, lines, stderr = auditor("custody", "consistency", str(world.receipt), str(forged),
                                  "--proof", str(proof), "--trusted-keys", str(world.allowed))
    assert (code, lines) == (3, [])
    assert stderr == ("evault: consistency proof: new_root differs from the new checkpoint's "
                      "signed root\n")
    # A proof re-stating the forged root still does not lead there.
    doc = json.loads(proof.read_text())
    doc["new_root"] = base64.b64encode(forged_root).decode()
    restated = world.tmp / "restated-proof.json"
    restated.write_text(json.dumps(doc))
    code, lines, stderr = auditor("custody", "consistency", str(world.receipt), str(forged),
                                  "--proof", str(restated), "--trusted-keys", str(world.allowed))
    assert (code, lines) == (3, [])
    assert stderr.startswith("evault: merkle consistency proof: does not lead to the ")
    # The sender's own log refuses it as well.
    result = world.office("custody", "consistency", str(world.receipt), str(forged))
    assert result.exit_code == 3


def test_consistency_option_refusals(world: World, tmp_path: Path) -> None:
    proof = tmp_path / "p.json"
    proof.write_text("{}")
    base = ("custody", "consistency", str(world.receipt), str(world.checkpoint))
    assert auditor(*base, "--trusted-keys", str(world.allowed))[0] == 2
    assert auditor(*base, "--proof", str(proof), "-o", str(tmp_path / "x.json"))[0] == 2
    code, _, stderr = auditor(*base, "--proof", str(proof), "--trusted-keys", str(world.allowed))
    assert code == 3
    assert stderr == "evault: consistency proof: type must be 'evault-consistency-proof'\n"
    assert world.office(*base, "-o", str(proof)).exit_code == 2  # never replaces a file


# ----------------------------------------------------------------------------- origins


def _keypair(cli: Cli, name: str) -> Any:
    """The signing pair of identity ``name`` in ``cli``'s vault (as a forger holding it)."""
    from vault.service.identities import current_key, get_identity, load_keypair
    from vault.service.vaults import open_vault

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EVAULT_KEY_STORAGE", "file")
        mp.setenv("EVAULT_PASSPHRASE", TEST_PASSPHRASE)
        v = open_vault(cli.vault)
        try:
            with v.transaction() as session:
                return load_keypair(v, current_key(get_identity(session, name)))
        finally:
            v.close()


@pytest.fixture(scope="module")
def forged(world: World) -> tuple[Path, Path]:
    """The ICC officer's key, trusted for checkpoints, signs a checkpoint of the office's log
    extended by three events the office never logged, with the proof that leads there."""
    from vault.custody.merkle import consistency_proof, leaf_hash, root_of
    from vault.custody.note import Checkpoint, NoteSigner, sign_checkpoint
    from vault.service.audit import Consistency, proof_document, read_checkpoint
    from vault.service.custody import leaf_hashes
    from vault.service.vaults import open_vault

    size = int(world.checkpoint.read_text().split("\n")[1])
    old_size = int(read_checkpoint(world.receipt).split("\n")[1])
    v = open_vault(world.office.vault)
    try:
        with v.transaction() as session:
            leaves = leaf_hashes(session, size)
    finally:
        v.close()
    leaves += [leaf_hash(f"forged event {n}".encode()) for n in range(3)]
    new = Checkpoint(world.origin, len(leaves), root_of(leaves))
    note = world.tmp / "forged-extension.txt"
    note.write_text(sign_checkpoint(new, NoteSigner(world.origin,
                                                    _keypair(world.icc, "icc-officer").signing)))
    proof = world.tmp / "forged-extension-proof.json"
    proof.write_text(proof_document(Consistency(
        origin=world.origin, old_size=old_size, new_size=new.size,
        old_root=read_checkpoint(world.receipt).split("\n")[2],
        new_root=base64.b64encode(new.root_hash).decode(),
        proof=tuple(base64.b64encode(h).decode()
                    for h in consistency_proof(leaves, old_size, new.size)),
        status="consistent",
    )))
    return note, proof


def _not_a_principal(world: World, allowed: Path, principals: str) -> str:
    return (f"origin {world.origin} signed by {world.icc_fp}, but its line in {allowed} does "
            f"not name that log among its principals ({principals}); a checkpoint signer must "
            f"be bound to its log: if this key keeps {world.origin}, add {world.origin} as a "
            "principal of that line")


def test_a_checkpoint_of_the_office_log_signed_by_another_key_is_refused(
    world: World, forged: tuple[Path, Path]
) -> None:
    note, proof = forged
    # The officer's key is trusted for checkpoints (of its own log), not for the office's.
    code, lines, _ = auditor("verify", str(note), "--trusted-keys", str(world.allowed))
    assert (code, lines) == (3, [f"FAIL: {note}: checkpoint: "
                                 + _not_a_principal(world, world.allowed, "icc")])
    # The forged extension "proves" nothing either: the new checkpoint is refused first.
    args = ("custody", "consistency", str(world.receipt), str(note), "--proof", str(proof))
    code, lines, stderr = auditor(*args, "--trusted-keys", str(world.allowed))
    assert (code, lines, stderr) == (
        3, [], "evault: new checkpoint: " + _not_a_principal(world, world.allowed, "icc") + "\n")
    # A vault binds its own log to its own keys only, and a body's key to no log of its own.
    result = world.icc(*args)
    assert (result.exit_code, result.stdout) == (3, "")
    icc_origin = json.loads(world.ack.read_text())["checkpoint"].split("\n")[0]
    assert result.stderr == (
        f"evault: new checkpoint: origin {world.origin} signed by {world.icc_fp}, a key of this "
        f"vault, whose own log is {icc_origin}; a vault's key vouches only for its own log, do "
        "not rely on this checkpoint\n")
    result = world.office("verify", str(note))
    assert (result.exit_code, result.stdout) == (3, (
        f"FAIL: {note}: checkpoint: origin {world.origin} signed by {world.icc_fp}, which this "
        "vault knows as a sender but not as the keeper of that log (a contact card names no "
        "log); if this key keeps it, pass --trusted-keys FILE with the line "
        f"'{world.origin} namespaces=\"evault-checkpoint\" ssh-ed25519 ...' for it\n"))


def test_the_office_checkpoint_verifies_through_each_binding(world: World) -> None:
    proof = world.tmp / "origin-proof.json"
    world.office.ok("custody", "consistency", str(world.receipt), str(world.checkpoint),
                    "-o", str(proof))
    args = ("custody", "consistency", str(world.receipt), str(world.checkpoint),
            "--proof", str(proof))
    # (a) the office's own vault: its own log, its own keys.
    assert world.office.ok(*args).stdout.startswith("OK: the log grew from ")
    assert world.office.ok("verify", str(world.checkpoint)).stdout.startswith("OK: ")
    # (b) the sender named by a document at hand: the receipt's checkpoint is the sender's,
    # and the recipient's vault binds the ack's cosigned checkpoint to the sender of the
    # package it opened; both with the old allowed_signers or none.
    code, lines, _ = auditor("verify", str(world.receipt), "--trusted-keys",
                             str(world.old_allowed))
    assert code == 0 and lines[0].startswith(f"OK: {world.receipt} (sharing receipt ")
    result = world.icc("verify", str(world.ack))
    assert result.exit_code == 0 and f"; ICC-OTP witnessed {world.origin} at size " in (
        result.stdout)
    # (c) an allowed_signers line naming the log as a principal, or a pattern matching it.
    key = _card_key(world.office_card)
    for principals in (world.origin, "registry,evault/*", world.origin[:-3] + "???"):
        allowed = world.tmp / "origin-allowed"
        allowed.write_text(f'{principals} namespaces="evault-checkpoint" {key}\n')
        code, lines, stderr = auditor(*args, "--trusted-keys", str(allowed))
        assert (code, stderr) == (0, ""), (principals, stderr)
        code, lines, _ = auditor("verify", str(world.checkpoint), "--trusted-keys", str(allowed))
        assert code == 0 and lines[0].startswith(f"OK: {world.checkpoint} (checkpoint of "
                                                 f"{world.origin} at size "), principals
    # A negated pattern vetoes the log, as in OpenSSH.
    allowed.write_text(f'"evault/*,!{world.origin}" namespaces="evault-checkpoint" {key}\n')
    code, lines, _ = auditor("verify", str(world.checkpoint), "--trusted-keys", str(allowed))
    assert code == 3 and "does not name that log among its principals (evault/*,!" in lines[0]


def test_an_old_style_line_is_refused_for_checkpoints_with_the_next_step(world: World) -> None:
    code, lines, _ = auditor("verify", str(world.checkpoint), "--trusted-keys",
                             str(world.old_allowed))
    expected = (f"origin {world.origin} signed by {world.office_fp}, but its line in "
                f"{world.old_allowed} does not name that log among its principals (registry); "
                "a checkpoint signer must be bound to its log: if this key keeps "
                f"{world.origin}, add {world.origin} as a principal of that line")
    assert (code, lines) == (3, [f"FAIL: {world.checkpoint}: checkpoint: {expected}"])
    proof = world.tmp / "old-style-proof.json"
    world.office.ok("custody", "consistency", str(world.receipt), str(world.checkpoint),
                    "-o", str(proof))
    code, lines, stderr = auditor("custody", "consistency", str(world.receipt),
                                  str(world.checkpoint), "--proof", str(proof),
                                  "--trusted-keys", str(world.old_allowed))
    assert (code, lines, stderr) == (3, [], f"evault: old checkpoint: {expected}\n")


def test_a_document_carrying_a_checkpoint_of_anothers_log_is_refused(world: World) -> None:
    """A body re-signs its ack with a checkpoint of the office's log in it, signed by itself."""
    import dataclasses

    from vault.crypto import sshsig
    from vault.custody.note import Checkpoint, NoteSigner, sign_checkpoint
    from vault.formats import receipt as rfmt

    pair = _keypair(world.icc, "icc-officer")
    lines = world.checkpoint.read_text().split("\n")
    note = sign_checkpoint(Checkpoint(world.origin, int(lines[1]), base64.b64decode(lines[2])),
                           NoteSigner(world.origin, pair.signing))
    ack = rfmt.Acknowledgement.from_bytes(world.ack.read_bytes())
    data = dataclasses.replace(ack, checkpoint=note).to_bytes()
    claimed = world.tmp / "copies" / "claimed-ack.json"
    claimed.parent.mkdir(exist_ok=True)
    claimed.write_bytes(data)
    Path(f"{claimed}.sig").write_text(sshsig.sign(pair.signing, data, rfmt.ACK_NAMESPACE))
    code, out, _ = auditor("verify", str(claimed), "--trusted-keys", str(world.allowed))
    assert (code, out) == (3, [
        f"FAIL: {claimed}: acknowledgement of {world.package_id}: checkpoint: origin "
        f"{world.origin} signed by {world.icc_fp}, but that log is bound to other keys "
        f"(principals in {world.allowed}); a signer vouches only for its own log, do not rely "
        "on this document"])
    result = world.office("verify", str(claimed))
    assert (result.exit_code, result.stdout) == (3, (
        f"FAIL: {claimed}: acknowledgement of {world.package_id}: checkpoint: origin "
        f"{world.origin} signed by {world.icc_fp}, but that log is bound to other keys (this "
        "vault's own identities); a signer vouches only for its own log, do not rely on this "
        "document\n"))


def test_a_log_two_senders_named_in_their_packages_binds_neither() -> None:
    """A hostile sender's package naming the office's log cannot bind it to its own key."""
    from vault.crypto.keys import SigningKey
    from vault.service.audit import Trust

    office, hostile = SigningKey.generate().public, SigningKey.generate().public
    note = "evault/0ff1ce\n1\nAAAA\n"
    alone = Trust(has_vault=True, received=(("PKG-000000000001", "evault/0ff1ce", office),))
    assert alone.package_sender("PKG-000000000001", note) == (office,)
    assert alone.package_sender("PKG-000000000001", "evault/other\n1\nAAAA\n") == ()
    both = Trust(has_vault=True, received=(*alone.received,
                                           ("PKG-000000000002", "evault/0ff1ce", hostile)))
    assert both.package_sender("PKG-000000000001", note) == ()
    assert both.package_sender("PKG-000000000002", note) == ()


# ----------------------------------------------------------------------------- sheet


def test_sheet_markdown_and_html(world: World, tmp_path: Path) -> None:
    package = json.loads(world.office.ok("package", "show", world.package_id, "--json").stdout)
    md = world.office.ok("package", "sheet", world.package_id).stdout
    out = tmp_path / "sheet.html"
    world.office.ok("package", "sheet", world.package_id, "--format", "html", "-o", str(out))
    page = out.read_text()
    assert md.startswith(f"# Verification sheet: package {world.package_id}\n")
    assert "| Field | Value |\n| --- | --- |\n" in md
    assert page.startswith("<!DOCTYPE html>\n<html lang=\"en\">")
    assert page.rstrip().endswith("</html>") and "<style>" in page and "<script" not in page
    assert "@media print" in page
    for text in (md, page):
        for value in (world.package_id, "ICC-OTP", world.office_fp, world.icc_fp,
                      world.receipt_id, package["file_sha256"], package["envelope_sha256"],
                      package["payload_sha256"], str(package["bytes"]), *world.items,
                      "ssh-keygen -Y verify", "sha256sum", "age -d", "bagit.py --validate",
                      "docs/verify-by-hand.md"):
            assert value in text, value
        for secret in (*FILES, "statement-of-witness", "school roof", TITLE, CASE):
            assert secret not in text, secret
    for item in json.loads(world.office.ok("items", "list", "--json").stdout):
        assert f"| `{item['id']}` | {item['size']} | `{item['sha256']}` |" in md
    # Never replaces a file; an unknown package is named.
    assert world.office("package", "sheet", world.package_id, "-o", str(out)).exit_code == 2
    missing = world.office("package", "sheet", "PKG-0000000000ZZ")
    assert missing.exit_code == 1 and "package PKG-0000000000ZZ: not found" in missing.stderr


def test_sheet_html_escapes_values(world: World) -> None:
    from vault.render.sheet import render_html, render_markdown
    from vault.service.sheet import sheet_data
    from vault.service.vaults import open_vault

    v = open_vault(world.office.vault)
    data = replace(sheet_data(v, world.package_id), sender='<script>alert("x")</script>&')
    v.close()
    page = render_html(data)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page
    assert "| Sender | `<script>alert(\"x\")</script>&` |" in render_markdown(data)


def test_crafted_names_stay_on_one_line(world: World) -> None:
    from vault.crypto.age import AgeIdentity
    from vault.crypto.keys import SigningKey
    from vault.formats.card import make_card

    key = SigningKey.generate()
    card = world.tmp / "copies" / "forged\nOK: x.card.json"
    card.parent.mkdir(exist_ok=True)
    card.write_text(make_card(f"mallory\nOK: {world.package} (all fine)", key,
                              str(AgeIdentity.generate().recipient),
                              created_at="2026-11-28T09:00:00Z"))
    code, lines, _ = auditor("verify", str(card))
    assert code == 0 and len(lines) == 1
    assert lines[0].startswith(f"OK: {world.tmp}/copies/forged\\x0aOK: x.card.json (contact card "
                               f"of mallory\\x0aOK: {world.package} (all fine), fingerprint ")
