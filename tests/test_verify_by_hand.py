"""docs/verify-by-hand.md and its two scripts, run as written with stock tools on real packages.

The doc's shell blocks run in order in one shell, as a reader pastes them; the script
``docs/verify-by-hand.sh`` and ``docs/verify-checkpoint.py`` run on packages, checkpoints and
proofs made by evault, on tampered copies and (the checkpoint script) on published vectors.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType

import pytest
from conftest import VECTORS, Cli, require_tool

DOCS = Path(__file__).resolve().parent.parent / "docs"
DOC = DOCS / "verify-by-hand.md"
SCRIPT = DOCS / "verify-by-hand.sh"
CHECKER = DOCS / "verify-checkpoint.py"
VENV_BIN = str(Path(sys.executable).parent)
STOCK_PATH = "/usr/bin:/bin"

pytestmark = pytest.mark.interop


def _blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


@dataclass
class World:
    """Two organisations' vaults, packages between them, and the files an auditor holds."""

    tmp: Path
    office: Cli
    icc: Cli
    work: Path  # the auditor's folder: cards, keys, packages
    packages: dict[str, Path]
    ids: dict[str, str]
    office_fp: str
    icc_fp: str


def _world(tmp: Path) -> World:
    for tool in ("age", "ssh-keygen", "tar", "sha256sum", "bash"):
        require_tool(tool)
    office = Cli(tmp / "office")
    office.init()
    office.ok("identity", "create", "registry-office")
    icc = Cli(tmp / "icc")
    icc.init()
    icc.ok("identity", "create", "icc-officer")
    icc.ok("identity", "create", "jit-officer")
    work = tmp / "auditor"
    work.mkdir()
    for name in ("icc-officer", "jit-officer"):
        icc.ok("identity", "export", name, "-o", str(work / f"{name}.card.json"))
    office.ok("body", "add", "ICC-OTP", "--name", "Fictional court")
    office.ok("body", "key", "add", "ICC-OTP", "--card", str(work / "icc-officer.card.json"))
    office.ok("body", "add", "JIT-UA", "--name", "Fictional joint team")
    office.ok("body", "key", "add", "JIT-UA", "--card", str(work / "jit-officer.card.json"))
    for case, files in (("UA-2026-0042", {"statement W-1.txt": b"fictional statement\n",
                                          "photo.jpg": bytes(range(256)) * 100}),
                        ("UA-2026-0043", {"map.txt": b"fictional map notes\n"})):
        folder = tmp / case
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        office.ok("ingest", str(folder), "-r", "--case", case, "--create-case")
    packages, ids = {}, {}
    for label, body, case in (("p1", "ICC-OTP", "UA-2026-0042"), ("p2", "ICC-OTP", "UA-2026-0043"),
                              ("p3", "JIT-UA", "UA-2026-0043")):
        path = work / f"{label}.evpkg"
        built = json.loads(office.ok("package", "create", "--to", body, "--case", case,
                                     "-o", str(path), "--json").stdout)
        packages[label], ids[label] = path, built["id"]
    office.ok("identity", "export", "-o", str(work / "sender.card.json"))
    icc.ok("identity", "export", "icc-officer", "--secret-age-key", "-o", str(work / "icc.key"))
    office.ok("identity", "export", "--secret-age-key", "-o", str(work / "office.key"))
    office_fp = json.loads(office.ok("identity", "show", "--json").stdout)["fingerprint"]
    icc_fp = json.loads(icc.ok("identity", "show", "icc-officer", "--json").stdout)["fingerprint"]
    return World(tmp, office, icc, work, packages, ids, office_fp, icc_fp)


def _signing_key(cli: Cli) -> str:
    return str(json.loads(cli.ok("identity", "show", "--json").stdout)["signing_key"])


def _allowed(path: Path, openssh: str, principal: str = "sender") -> Path:
    key = " ".join(openssh.split()[:2])
    path.write_text(f'{principal} namespaces="evault-envelope,evault-statement,evault-receipt,'
                    f'evault-ack,evault-checkpoint" {key}\n')
    return path


def _members(package: Path) -> dict[str, bytes]:
    with tarfile.open(package) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def _bag_file(package: Path, key: Path, name: str) -> bytes:
    """A file of the package's bag, decrypted in memory with the real age."""
    plain = subprocess.run(["age", "-d", "-i", str(key)], input=_members(package)["payload.age"],
                           capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        for member in tar.getmembers():
            if member.name.endswith("/" + name) and member.name.count("/") == name.count("/") + 1:
                return tar.extractfile(member).read()  # type: ignore[union-attr]
    raise AssertionError(f"{name} not in the bag")


def _ok_lines(
    w: World, label: str, key: Path | None, *, bag: str, body: str = "ICC-OTP"
) -> list[str]:
    """The OK lines verify-by-hand.sh prints for an untouched package."""
    m = _members(w.packages[label])
    payload = m["payload.age"]
    name = w.packages[label].name
    lines = [
        f"OK: {name}: tar members payload.age, envelope.json, envelope.json.sig",
        f"OK: {name}: envelope signed by sender (evault-envelope)",
        f"OK: {name}: payload size {len(payload)} bytes as the envelope says",
        f"OK: {name}: payload SHA-256 {hashlib.sha256(payload).hexdigest()} as the envelope says",
    ]
    if key is not None:
        tagmanifest = hashlib.sha256(_bag_file(w.packages[label], key,
                                               "tagmanifest-sha256.txt")).hexdigest()
        lines += [
            f"OK: {name}: payload decrypts with {key.name}",
            f"OK: {name}: bag valid ({bag})",
            f"OK: {name}: statement signed by sender (evault-statement)",
            f"OK: {name}: statement covers tagmanifest-sha256.txt ({tagmanifest})",
            f"OK: {name}: statement is for package {w.ids[label]} and body {body}",
        ]
    return lines


def _script(w: World, *args: str, path: str = STOCK_PATH) -> subprocess.CompletedProcess[str]:
    tmpdir = w.tmp / "script-tmp"
    tmpdir.mkdir(exist_ok=True)
    run = subprocess.run(["bash", str(SCRIPT), *args], cwd=w.work, capture_output=True, text=True,
                         env={"PATH": path, "TMPDIR": str(tmpdir)})
    # Nothing is left behind, decrypted or not.
    assert list(tmpdir.iterdir()) == []
    return run


def _resigned(w: World, src: Path, dst: Path, **changes: object) -> Path:
    """A copy of ``src`` whose envelope is changed and validly re-signed by the sender."""
    from vault.crypto.sshsig import sign
    from vault.formats.canonical import canonical_json
    from vault.service.identities import current_key, get_identity, load_keypair
    from vault.service.vaults import open_vault

    members = _members(src)
    envelope = json.loads(members["envelope.json"])
    envelope.update(changes)
    members["envelope.json"] = canonical_json(envelope)
    v = open_vault(w.office.vault)
    with v.transaction() as session:
        key = load_keypair(v, current_key(get_identity(session, None))).signing
    v.close()
    members["envelope.json.sig"] = sign(key, members["envelope.json"], "evault-envelope").encode()
    with tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("envelope.json", "envelope.json.sig", "payload.age"):
            info = tarfile.TarInfo(name)
            info.size = len(members[name])
            tar.addfile(info, io.BytesIO(members[name]))
    return dst


def _flipped(src: Path, dst: Path) -> Path:
    with tarfile.open(src) as tar:
        offset = tar.getmember("payload.age").offset_data
    data = bytearray(src.read_bytes())
    data[offset + 500] ^= 1
    dst.write_bytes(bytes(data))
    return dst


# ----------------------------------------------------------------------------- the script


def test_script_verifies_several_packages_in_one_folder(tmp_path: Path) -> None:
    w = _world(tmp_path)
    _allowed(w.work / "allowed_signers", _signing_key(w.office))
    assert subprocess.run(["sh", "-c", "command -v bagit.py"], env={"PATH": STOCK_PATH},
                          capture_output=True).returncode != 0, "bagit.py in /usr/bin"

    outside = _script(w, "-s", "allowed_signers", "p1.evpkg", "p2.evpkg")
    assert (outside.returncode, outside.stderr) == (0, "")
    assert outside.stdout.splitlines() == [
        *_ok_lines(w, "p1", None, bag=""), *_ok_lines(w, "p2", None, bag=""),
        "SUMMARY: all 2 package(s) verified (envelope and payload digest)",
    ]

    key = w.work / "icc.key"
    inside = _script(w, "-s", "allowed_signers", "-i", "icc.key", "p1.evpkg", "p2.evpkg")
    assert inside.returncode == 0, inside.stdout + inside.stderr
    sums = "sha256sum -c on manifest-sha256.txt and tagmanifest-sha256.txt"
    assert inside.stdout.splitlines() == [
        *_ok_lines(w, "p1", key, bag=sums), *_ok_lines(w, "p2", key, bag=sums),
        "SUMMARY: all 2 package(s) verified (envelope, payload digest, bag and statement)",
    ]
    notes = inside.stderr.splitlines()
    assert notes[0] == ("verify-by-hand: bagit.py not found (pip install bagit); checking the "
                        "bag with sha256sum -c")
    assert re.fullmatch(r"verify-by-hand: decrypting into .*/script-tmp/evault-verify\.\w+ "
                        r"\(mode 0700\), removed on exit", notes[1])

    with_bagit = _script(w, "-s", "allowed_signers", "-i", "icc.key", "p1.evpkg",
                         path=f"{VENV_BIN}:{STOCK_PATH}")
    assert with_bagit.returncode == 0, with_bagit.stdout + with_bagit.stderr
    assert with_bagit.stdout.splitlines() == [
        *_ok_lines(w, "p1", key, bag="bagit.py --validate"),
        "SUMMARY: all 1 package(s) verified (envelope, payload digest, bag and statement)",
    ]


def test_script_names_each_tampered_package_and_check(tmp_path: Path) -> None:
    w = _world(tmp_path)
    _allowed(w.work / "allowed_signers", _signing_key(w.office))
    _flipped(w.packages["p1"], w.work / "flipped.evpkg")
    # The JIT package's envelope, validly re-signed, now says ICC-OTP: the statement inside
    # (also validly signed) still names JIT-UA.
    _resigned(w, w.packages["p3"], w.work / "other-body.evpkg", body="ICC-OTP")
    (w.work / "not-a-package.evpkg").write_bytes(b"fictional junk\n" * 40)

    run = _script(w, "-s", "allowed_signers", "-i", "office.key", "flipped.evpkg", "p2.evpkg",
                  "other-body.evpkg", "not-a-package.evpkg")
    assert run.returncode == 3, run.stdout + run.stderr
    p1, p3 = _members(w.packages["p1"]), _members(w.packages["p3"])
    flipped = _members(w.work / "flipped.evpkg")["payload.age"]
    key = w.work / "office.key"
    sums = "sha256sum -c on manifest-sha256.txt and tagmanifest-sha256.txt"
    tagmanifest = hashlib.sha256(_bag_file(w.packages["p3"], key, "tagmanifest-sha256.txt"))
    assert run.stdout.splitlines() == [
        "OK: flipped.evpkg: tar members payload.age, envelope.json, envelope.json.sig",
        "OK: flipped.evpkg: envelope signed by sender (evault-envelope)",
        f"OK: flipped.evpkg: payload size {len(flipped)} bytes as the envelope says",
        f"MISMATCH: flipped.evpkg: payload SHA-256 is {hashlib.sha256(flipped).hexdigest()}, "
        f"the envelope says {hashlib.sha256(p1['payload.age']).hexdigest()}",
        "MISMATCH: flipped.evpkg: payload not decrypted: the envelope or the payload did not "
        "verify",
        *_ok_lines(w, "p2", key, bag=sums),
        "OK: other-body.evpkg: tar members envelope.json, envelope.json.sig, payload.age",
        "OK: other-body.evpkg: envelope signed by sender (evault-envelope)",
        f"OK: other-body.evpkg: payload size {len(p3['payload.age'])} bytes as the envelope says",
        f"OK: other-body.evpkg: payload SHA-256 {hashlib.sha256(p3['payload.age']).hexdigest()} "
        "as the envelope says",
        "OK: other-body.evpkg: payload decrypts with office.key",
        f"OK: other-body.evpkg: bag valid ({sums})",
        "OK: other-body.evpkg: statement signed by sender (evault-statement)",
        f"OK: other-body.evpkg: statement covers tagmanifest-sha256.txt "
        f"({tagmanifest.hexdigest()})",
        f"MISMATCH: other-body.evpkg: statement is for package/body '{w.ids['p3']} JIT-UA', "
        f"the envelope for '{w.ids['p3']} ICC-OTP'",
        "MISMATCH: not-a-package.evpkg: not an evault package: tar members are '', expected "
        "payload.age, envelope.json, envelope.json.sig (or envelope.json, envelope.json.sig, "
        "payload.age)",
        "MISMATCH: not-a-package.evpkg: payload not decrypted: the envelope or the payload did "
        "not verify",
        "SUMMARY: 3 of 4 package(s) with mismatches (5 MISMATCH line(s))",
    ]

    # A key the package is not encrypted to.
    wrong_key = _script(w, "-s", "allowed_signers", "-i", "icc.key", "p3.evpkg")
    assert wrong_key.returncode == 3
    assert wrong_key.stdout.splitlines()[4:] == [
        "MISMATCH: p3.evpkg: payload does not decrypt with icc.key",
        "SUMMARY: 1 of 1 package(s) with mismatches (1 MISMATCH line(s))",
    ]

    # The wrong signer: the allowed_signers file names another key as the sender.
    _allowed(w.work / "wrong_signers", _signing_key(w.icc))
    wrong = _script(w, "-s", "wrong_signers", "-i", "icc.key", "p1.evpkg")
    assert wrong.returncode == 3
    assert wrong.stdout.splitlines() == [
        _ok_lines(w, "p1", None, bag="")[0],
        "MISMATCH: p1.evpkg: envelope signature does not verify for sender in wrong_signers "
        "(evault-envelope)",
        *_ok_lines(w, "p1", None, bag="")[2:],
        "MISMATCH: p1.evpkg: payload not decrypted: the envelope or the payload did not verify",
        "SUMMARY: 1 of 1 package(s) with mismatches (2 MISMATCH line(s))",
    ]


def test_script_usage_and_missing_tools(tmp_path: Path) -> None:
    require_tool("bash")
    usage = ("usage: verify-by-hand.sh -s ALLOWED_SIGNERS [-I PRINCIPAL] [-i AGE_IDENTITY_FILE] "
             "PACKAGE...\n")
    (tmp_path / "allowed_signers").write_text("")
    (tmp_path / "p.evpkg").write_bytes(b"")
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("tar", "sha256sum", "ssh-keygen"):
        (tools / tool).symlink_to(require_tool(tool))
    cases = [
        ([], {}, 2, usage),
        (["p.evpkg"], {}, 2, usage),
        (["-s", "allowed_signers"], {}, 2, usage),
        (["-x", "-s", "allowed_signers", "p.evpkg"], {}, 2, None),
        (["-s", "nowhere", "p.evpkg"], {}, 2,
         "verify-by-hand: nowhere: no such allowed_signers file\n"),
        (["-s", "allowed_signers", "-i", "no.key", "p.evpkg"], {}, 2,
         "verify-by-hand: no.key: cannot read the age identity file\n"),
        (["-s", "allowed_signers", "p.evpkg", "gone.evpkg"], {}, 2,
         "verify-by-hand: gone.evpkg: no such package file\n"),
        (["-s", "allowed_signers", "-i", "allowed_signers", "p.evpkg"], {"PATH": str(tools)}, 1,
         "verify-by-hand: age is not installed; install it with: apt-get install age "
         "openssh-client\n"),
    ]
    for args, env, code, stderr in cases:
        run = subprocess.run([require_tool("bash"), str(SCRIPT), *args], cwd=tmp_path,
                             capture_output=True, text=True, env={"PATH": STOCK_PATH, **env})
        assert (run.returncode, run.stdout) == (code, ""), (args, run.stderr)
        assert stderr is None or run.stderr == stderr, (args, run.stderr)
        assert stderr is not None or run.stderr.endswith(usage)


# ----------------------------------------------------------------------------- the doc


def _receipt_and_checkpoints(w: World) -> dict[str, str]:
    """Send p1, make the auditor's receipt, ack, a newer checkpoint and the proof to it."""
    outbox = w.tmp / "outbox"
    outbox.mkdir()
    receipt = json.loads(w.office.ok("send", str(w.packages["p1"]), "--outbox", str(outbox),
                                     "--json").stdout)["receipt"]
    w.office.ok("receipt", "export", receipt, "-o", str(w.work / "receipt.json"))
    w.icc.ok("contact", "add", str(w.work / "sender.card.json"))
    w.icc.ok("open", str(w.packages["p1"]), "--out", str(w.tmp / "received"), "--as",
             "icc-officer")
    w.icc.ok("ack", str(w.packages["p1"]), "-o", str(w.work / "ack.json"), "--as", "icc-officer")
    w.office.ok("ingest", str(w.tmp / "UA-2026-0042"), "-r", "--case", "UA-2026-0042")
    w.office.ok("custody", "checkpoint", "-o", str(w.work / "checkpoint.txt"))
    w.office.ok("custody", "consistency", str(w.work / "receipt.json"),
                str(w.work / "checkpoint.txt"), "-o", str(w.work / "proof.json"))
    shown = json.loads(w.office.ok("identity", "show", "--json").stdout)
    return {
        "SENDER_CARD": str(w.work / "sender.card.json"),
        "SENDER_FINGERPRINT": w.office_fp,
        "AGE_KEY": str(w.work / "icc.key"),
        "RECEIPT": str(w.work / "receipt.json"),
        "RECIPIENT_CARD": str(w.work / "icc-officer.card.json"),
        "ACK": str(w.work / "ack.json"),
        "CHECKPOINT_KEY": shown["checkpoint_key"],
        "CHECKPOINT": str(w.work / "checkpoint.txt"),
        "PROOF": str(w.work / "proof.json"),
        "DOCS": str(DOCS),
    }


def _paste(shell: str, w: World, env: dict[str, str]) -> list[str]:
    """Every block, in order, in one shell reading stdin (as pasted); its output lines.

    A marker after each block proves no block ended the shell."""
    blocks = _blocks()
    script = "".join(f"{b}echo __after_block_{i}__\n" for i, b in enumerate(blocks))
    tmpdir = w.tmp / "doc-tmp"
    tmpdir.mkdir(exist_ok=True)
    run = subprocess.run([require_tool(shell)], input=script, cwd=w.work, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         env={**env, "PATH": f"{VENV_BIN}:{STOCK_PATH}", "TMPDIR": str(tmpdir)})
    lines = run.stdout.splitlines()
    assert [x for x in lines if x.startswith("__after")] == [
        f"__after_block_{i}__" for i in range(len(blocks))
    ], run.stdout
    assert run.returncode == 0
    assert list(tmpdir.iterdir()) == [], "a block left its temporary folder"
    return lines


def _cosigned_at(ack: Path) -> str:
    """When the officer cosigned the ack's checkpoint (the time inside its cosignature)."""
    line = json.loads(ack.read_text())["cosigned_checkpoint"].rstrip("\n").rsplit("\n", 1)[1]
    seconds = int.from_bytes(base64.b64decode(line.split(" ")[2])[4:12], "big")
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_documented_commands_verify_a_real_package(tmp_path: Path) -> None:
    w = _world(tmp_path)
    env = {**_receipt_and_checkpoints(w), "PACKAGE": str(w.packages["p1"])}
    assert len(_blocks()) == 9
    before = sorted(p.name for p in w.work.iterdir())
    checkpoint = (w.work / "checkpoint.txt").read_text().split("\n")
    receipt = json.loads((w.work / "receipt.json").read_text())
    envelope = _members(w.packages["p1"])["envelope.json"]
    origin, payload = checkpoint[0], _members(w.packages["p1"])["payload.age"]
    vkey = env["CHECKPOINT_KEY"].split("+")
    signer = f"signed by {vkey[0]}+{vkey[1]} (key {w.office_fp})"
    tagmanifest = hashlib.sha256(_bag_file(w.packages["p1"], w.work / "icc.key",
                                           "tagmanifest-sha256.txt")).hexdigest()
    envelope_size = json.loads(envelope)["checkpoint"].split("\n")[1]
    receipt_size = receipt["checkpoint"].split("\n")[1]
    proof = json.loads((w.work / "proof.json").read_text())["proof"]
    expected = [
        f"OK: the sender's card holds the key {w.office_fp} you were told",
        "OK: the envelope is signed by the sender",
        f"OK: payload size {len(payload)} bytes",
        f"OK: payload SHA-256 {hashlib.sha256(payload).hexdigest()}",
        f"OK: the payload decrypts to the bag {w.ids['p1']}",
        "OK: every file matches manifest-sha256.txt and tagmanifest-sha256.txt",
        "OK: the statement is signed by the sender",
        f"OK: the statement covers the tag manifest {tagmanifest}",
        'OK: the statement is for "body":"ICC-OTP", as the envelope',
        "OK: the receipt is signed by the sender",
        f"OK: the receipt is for this package's envelope {hashlib.sha256(envelope).hexdigest()}",
        "OK: the acknowledgement is signed by the recipient",
        f"OK: the acknowledgement is for this package's envelope "
        f"{hashlib.sha256(envelope).hexdigest()}",
        # (the envelope's own checkpoint comes here; its path is a temporary folder's)
        f"OK: {env['RECEIPT']}: checkpoint of {origin} at size {receipt_size}, {signer}",
        f"OK: {env['CHECKPOINT']}: checkpoint of {origin} at size {checkpoint[1]}, {signer}",
        f"OK: {env['PROOF']}: the log grew from {receipt_size} to {checkpoint[1]} events without "
        f"rewriting ({len(proof)} proof hashes)",
        f"OK: {env['ACK']}: checkpoint of {origin} at size {envelope_size}, {signer}, cosigned "
        f"by evault-witness/ICC-OTP (key {w.icc_fp}) at {_cosigned_at(Path(env['ACK']))}",
    ]
    for shell in ("sh", "bash"):
        for name in ("sender.pub", "allowed_signers", "recipient.pub", "allowed_recipients"):
            (w.work / name).unlink(missing_ok=True)
        lines = _paste(shell, w, env)
        checks = [x for x in lines if x.startswith(("OK:", "MISMATCH:"))]
        envelope_line = [x for x in checks if x.endswith(f"at size {envelope_size}, {signer}")
                         and "/envelope.json: checkpoint of" in x]
        assert len(envelope_line) == 1, checks
        checks.remove(envelope_line[0])
        assert checks == expected, shell
        good = f'Good "evault-envelope" signature for sender with ED25519 key {w.office_fp}'
        assert good in lines
        # Only public files were added to the folder; no plaintext anywhere.
        after = sorted(p.name for p in w.work.iterdir())
        assert sorted(set(after) - set(before)) == [
            "allowed_recipients", "allowed_signers", "recipient.pub", "sender.pub"
        ]

    # A flipped byte in the payload: every block still runs (the shell stays open) and the
    # checks that depend on the payload say MISMATCH.
    flipped = _flipped(w.packages["p1"], w.work / "flipped.evpkg")
    lines = _paste("sh", w, {**env, "PACKAGE": str(flipped)})
    mismatches = [x for x in lines if x.startswith("MISMATCH:")]
    have = hashlib.sha256(_members(flipped)["payload.age"]).hexdigest()
    assert mismatches == [
        f"MISMATCH: payload SHA-256 is {have}, the envelope says "
        f"{hashlib.sha256(payload).hexdigest()}",
        "MISMATCH: the payload did not decrypt to a bag named after the package",
        "MISMATCH: the bag's files do not match its manifests",
        "MISMATCH: the statement's signature does not verify",
        "MISMATCH: the tag manifest's SHA-256 is (no file), the statement says nothing",
        "MISMATCH: the statement is for nothing, the envelope for \"body\":\"ICC-OTP\"",
    ], lines


# ----------------------------------------------------------------------------- checkpoints


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("verify_checkpoint", CHECKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CONSISTENCY = sorted((VECTORS / "rfc9162" / "consistency").rglob("*.json"))


def test_checkpoint_script_against_published_vectors() -> None:
    checker = _checker()
    assert len(CONSISTENCY) == 98
    for path in CONSISTENCY:
        v = json.loads(path.read_text())
        proof = [base64.b64decode(h) for h in v["proof"] or []]
        got = checker.consistent(v["size1"], v["size2"], proof, base64.b64decode(v["root1"]),
                                 base64.b64decode(v["root2"]))
        assert got is not v["wantErr"], path
    note = VECTORS / "signed-note"
    vkey = checker.parse_vkey((note / "example.vkey").read_text())
    assert checker.open_note((note / "example.note").read_text(), vkey) == (
        "This is an example message.\n"
    )
    with pytest.raises(ValueError, match="does not verify"):
        checker.open_note((note / "example.note.tampered").read_text(), vkey)
    with pytest.raises(ValueError, match="key id"):
        checker.parse_vkey((note / "example.vkey").read_text().replace("530d903a", "530d903b"))


def _checker_run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECKER), *args], cwd=cwd, capture_output=True,
                          text=True, env={"PATH": STOCK_PATH})


def test_checkpoint_script_on_evault_checkpoints_and_proofs(
    sqlite_cli: Cli, tmp_path: Path
) -> None:
    cli = sqlite_cli
    cli.ok("identity", "create", "registry-office")
    cli.ok("case", "create", "UA-2026-0042")
    cli.ok("custody", "checkpoint", "-o", str(tmp_path / "old.txt"))
    for n in range(3):
        cli.ok("case", "create", f"UA-2026-01{n:02d}")
    cli.ok("custody", "checkpoint", "-o", str(tmp_path / "new.txt"))
    cli.ok("custody", "consistency", str(tmp_path / "old.txt"), str(tmp_path / "new.txt"),
           "-o", str(tmp_path / "proof.json"))
    shown = json.loads(cli.ok("identity", "show", "--json").stdout)
    key = shown["checkpoint_key"]
    (tmp_path / "vkey.txt").write_text(key + "\n")
    name, key_id, _ = key.split("+", 2)
    signer = f"signed by {name}+{key_id} (key {shown['fingerprint']})"
    old_size = (tmp_path / "old.txt").read_text().split("\n")[1]
    new_size = (tmp_path / "new.txt").read_text().split("\n")[1]
    proof = json.loads((tmp_path / "proof.json").read_text())

    run = _checker_run(tmp_path, "--key", "vkey.txt", "old.txt", "new.txt", "--proof",
                       "proof.json")
    assert (run.returncode, run.stderr) == (0, "")
    assert run.stdout.splitlines() == [
        f"OK: old.txt: checkpoint of {name} at size {old_size}, {signer}",
        f"OK: new.txt: checkpoint of {name} at size {new_size}, {signer}",
        f"OK: proof.json: the log grew from {old_size} to {new_size} events without rewriting "
        f"({len(proof['proof'])} proof hashes)",
    ]
    one = _checker_run(tmp_path, "--key", key, "new.txt")
    assert (one.returncode, one.stdout) == (
        0, f"OK: new.txt: checkpoint of {name} at size {new_size}, {signer}\n")

    # Tampered: a checkpoint's size, a proof hash, the order, another key.
    text = (tmp_path / "new.txt").read_text()
    bumped_text = text.replace(f"\n{new_size}\n", f"\n{int(new_size) + 1}\n", 1)
    assert bumped_text != text
    (tmp_path / "bumped.txt").write_text(bumped_text)
    bumped = _checker_run(tmp_path, "--key", key, "bumped.txt")
    assert (bumped.returncode, bumped.stdout) == (
        3, f"MISMATCH: bumped.txt: signature by {name}+{key_id} does not verify\n")

    bad = dict(proof, proof=[base64.b64encode(bytes(32)).decode(), *proof["proof"][1:]])
    (tmp_path / "bad-proof.json").write_text(json.dumps(bad))
    forged = _checker_run(tmp_path, "--key", key, "old.txt", "new.txt", "--proof",
                          "bad-proof.json")
    assert forged.returncode == 3
    assert forged.stdout.splitlines()[2] == (
        f"MISMATCH: bad-proof.json: does not prove that the log of size {new_size} extends "
        f"size {old_size}"
    )
    swapped = _checker_run(tmp_path, "--key", key, "new.txt", "old.txt", "--proof", "proof.json")
    assert swapped.returncode == 3
    assert swapped.stdout.splitlines()[2] == (
        f"MISMATCH: proof.json: is from size {old_size} to {new_size} of {name}; the "
        f"checkpoints are at {new_size} and {old_size} of {name}"
    )

    other = Cli(tmp_path / "other")
    other.init()
    other.ok("identity", "create", "someone-else")
    other_key = json.loads(other.ok("identity", "show", "--json").stdout)["checkpoint_key"]
    other_name, other_id, _ = other_key.split("+", 2)
    stranger = _checker_run(tmp_path, "--key", other_key, "old.txt")
    assert (stranger.returncode, stranger.stdout) == (
        3, f"MISMATCH: old.txt: no signature by {other_name}+{other_id}\n")

    for args in (["old.txt"], ["--key", key, "old.txt", "new.txt"],
                 ["--key", key, "old.txt", "--proof", "proof.json"],
                 ["--key", "evault/x+0000+AAAA", "old.txt"]):
        usage = _checker_run(tmp_path, *args)
        assert (usage.returncode, usage.stdout) == (2, ""), args
        assert usage.stderr.splitlines()[-1].startswith("verify-checkpoint.py: error: "), args


def test_script_refuses_file_names_that_would_forge_lines_or_options(tmp_path: Path) -> None:
    # A folder someone else fills: a name with a newline would print lines of its own, and
    # a name starting with "-s" that a glob expands to would replace the allowed_signers file.
    bash = require_tool("bash")
    (tmp_path / "allowed_signers").write_text("")
    forged = "p.evpkg\nOK: q.evpkg: envelope signed by sender (evault-envelope)"
    for name in ("p.evpkg", forged, "-sq.evpkg", "q.evpkg"):
        (tmp_path / name).write_bytes(b"")
    cases = [
        (["-s", "allowed_signers", "p.evpkg", forged],
         "verify-by-hand: $'p.evpkg\\nOK: q.evpkg: envelope signed by sender "
         "(evault-envelope)': a control character in a package file name could forge output "
         "lines; rename the file\n"),
        (["-s", "allowed_signers", "-sq.evpkg", "p.evpkg"],
         "verify-by-hand: -s given twice; put -- before package files whose names start with "
         "'-'\n"),
        (["-s", "allowed_signers", "-I", "a", "-I", "b", "p.evpkg"],
         "verify-by-hand: -I given twice; put -- before package files whose names start with "
         "'-'\n"),
    ]
    for args, stderr in cases:
        run = subprocess.run([bash, str(SCRIPT), *args], cwd=tmp_path, capture_output=True,
                             text=True, env={"PATH": STOCK_PATH})
        assert (run.returncode, run.stdout, run.stderr) == (2, "", stderr), args
