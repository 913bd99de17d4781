"""Bodies witness the sender's log: the ack cosigns the envelope's checkpoint (C2SP
tlog-cosignature), `receipt import` keeps it, `custody verify` holds the log to it, and the
ack's holder can prove a truncation that the database no longer shows."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import Cli, reuse_world
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_ssh_public_key
from sqlalchemy import Engine

from vault.crypto.keys import SigningKey

CASE = "UA-2026-0042"


@dataclass
class World:
    office: Cli
    icc: Cli
    tmp: Path
    office_card: Path
    icc_card: Path
    package: Path
    package_id: str
    ack: Path


def _make_world(tmp: Path, database: str | None) -> World:
    """An office vault that sent a package to ICC-OTP, opened and acknowledged there: each
    test's own copy of a world the test process builds once per backend (conftest's
    ``reuse_world``)."""
    pid = reuse_world("witness", tmp, [database], lambda t, dbs: _build_world(t, dbs[0]))
    return World(Cli(tmp / "office"), Cli(tmp / "icc"), tmp, tmp / "office.card.json",
                 tmp / "icc.card.json", tmp / "icc.evpkg", pid, tmp / "ack.json")


def _build_world(tmp: Path, database: str | None) -> str:
    """The world of :func:`_make_world` at ``tmp``; the package's id."""
    office, icc = Cli(tmp / "office"), Cli(tmp / "icc")
    office.init(database)
    icc.init()
    office_fp = json.loads(office.ok("identity", "create", "registry-office", "--json")
                           .stdout)["fingerprint"]
    icc.ok("identity", "create", "icc-officer")
    office_card, icc_card = tmp / "office.card.json", tmp / "icc.card.json"
    office.ok("identity", "export", "-o", str(office_card))
    icc.ok("identity", "export", "-o", str(icc_card))
    office.ok("body", "add", "ICC-OTP", "--name", "Fictional court prosecutor")
    office.ok("body", "key", "add", "ICC-OTP", "--card", str(icc_card))
    icc.ok("contact", "add", str(office_card), "--fingerprint", office_fp)
    evidence = tmp / "evidence"
    evidence.mkdir()
    (evidence / "statement W-1.txt").write_bytes(b"fictional statement\n")
    (evidence / "photo.jpg").write_bytes(bytes(range(256)) * 40)
    office.ok("ingest", str(evidence), "-r", "--case", CASE, "--create-case")
    package = tmp / "icc.evpkg"
    pid = json.loads(office.ok("package", "create", "--to", "ICC-OTP", "--case", CASE, "-o",
                               str(package), "--json").stdout)["id"]
    icc.ok("open", str(package), "--out", str(tmp / "received"))
    ack = tmp / "ack.json"
    icc.ok("ack", pid, "-o", str(ack))
    return str(pid)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return _make_world(tmp_path, None)


@pytest.fixture
def world_any(tmp_path: Path, database: str | None) -> World:
    return _make_world(tmp_path, database)


@pytest.fixture(params=["in-process", "workers"])
def scan_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """custody verify in this process, or through worker processes with runs of two events
    (a witnessed size then falls inside a run, where its root is computed apart)."""
    from vault.custody import verify

    if request.param == "workers":
        monkeypatch.setattr(verify, "PARALLEL_MIN", 1)
        monkeypatch.setattr(verify, "SCAN_CHUNK", 2)
    return str(request.param)


def _card_key(card: Path) -> str:
    return str(json.loads(card.read_text())["signing_key"])


def _raw_key(card: Path) -> bytes:
    key = load_ssh_public_key(_card_key(card).encode())
    assert isinstance(key, Ed25519PublicKey)
    return key.public_bytes_raw()


def _envelope_note(package: Path) -> str:
    from vault.formats.package import Envelope, read_package

    return Envelope.from_bytes(read_package(package).envelope_bytes).checkpoint


def _witnessed_size(world: World) -> int:
    return int(json.loads(world.ack.read_text())["cosigned_checkpoint"].split("\n")[1])


def _engine(cli: Cli) -> Engine:
    from vault.service.vaults import open_vault

    return open_vault(cli.vault).engine


# ----------------------------------------------------------------------------- the ack


def test_the_ack_cosigns_the_envelopes_checkpoint_as_c2sp_says(world: World) -> None:
    before = int(datetime.now(timezone.utc).timestamp())
    second = world.tmp / "second.json"
    world.icc.ok("ack", world.package_id, "-o", str(second))
    after = int(datetime.now(timezone.utc).timestamp())
    doc = json.loads(second.read_text())
    assert doc["version"] == 2
    note = _envelope_note(world.package)
    cosigned = doc["cosigned_checkpoint"]
    # The sender's note as the envelope carried it, plus exactly one line.
    assert cosigned.startswith(note)
    line = cosigned[len(note):]
    assert line.endswith("\n") and line.count("\n") == 1
    dash, name, b64 = line[:-1].split(" ")
    assert (dash, name) == ("\u2014", "evault-witness/ICC-OTP")
    blob = base64.b64decode(b64, validate=True)
    assert len(blob) == 4 + 8 + 64
    raw = _raw_key(world.icc_card)
    assert blob[:4] == hashlib.sha256(name.encode() + b"\n\x04" + raw).digest()[:4]
    timestamp = int.from_bytes(blob[4:12], "big")
    assert before <= timestamp <= after
    text = note[: note.rfind("\n\n") + 1]
    message = f"cosignature/v1\ntime {timestamp}\n".encode() + text.encode()
    Ed25519PublicKey.from_public_bytes(raw).verify(blob[12:], message)
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(raw).verify(blob[12:], message.replace(b"time ",
                                                                                 b"time 1"))


def test_receipt_import_keeps_the_cosigned_checkpoint(world_any: World, scan_mode: str) -> None:
    world = world_any
    size = _witnessed_size(world)
    imported = world.office.ok("receipt", "import", str(world.ack), "--json")
    assert json.loads(imported.stdout)["witnessed_size"] == size
    with _engine(world.office).connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT package_id, body_id, size, note FROM witnessed_checkpoints").all()
    cosigned = json.loads(world.ack.read_text())["cosigned_checkpoint"]
    assert [tuple(r) for r in rows] == [(world.package_id, "ICC-OTP", size, cosigned)]
    verified = world.office.ok("custody", "verify")
    assert verified.stdout.startswith("OK: ") and verified.stdout.endswith(
        " checkpoints, 1 witnessed by bodies (structure and signatures)\n")
    report = json.loads(world.office.ok("custody", "verify", "--json").stdout)
    assert (report["ok"], report["witnessed"]) == (True, 1)


# ----------------------------------------------------------------------------- attacks


def _truncate(cli: Cli, keep: int, *, also: tuple[str, ...] = ()) -> None:
    """As an attacker with the database only: keep the first ``keep`` events, make the head
    match them, and delete every row of the tables ``also``."""
    from vault.custody.merkle import Frontier

    with _engine(cli).begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM custody_events WHERE seq >= {keep}")
        leaves = [r[0] for r in conn.exec_driver_sql(
            "SELECT leaf_hash FROM custody_events ORDER BY seq")]
        frontier = Frontier()
        for leaf in leaves:
            frontier.append(bytes(leaf))
        conn.exec_driver_sql(
            "UPDATE custody_head SET size = %s, root = %s, frontier = %s" % (
                ("?", "?", "?") if conn.dialect.name == "sqlite" else ("%s", "%s", "%s")),
            (frontier.size, frontier.root(), frontier.to_bytes()))
        for table in also:
            conn.exec_driver_sql(f"DELETE FROM {table}")


def _folder_rolled_back(cli: Cli) -> None:
    """The whole vault folder put back from an older backup, ``keys.enc`` included: the key
    store's own anchor of the log (vault.service.anchor) is then as old as the database,
    and only the witnesses outside the vault still know better. Here: the entry is gone."""
    from vault.service import anchor
    from vault.service.vaults import open_vault

    v = open_vault(cli.vault)
    try:
        v.keystore.delete(anchor.ENTRY)
    finally:
        v.close()


def test_a_log_cut_below_a_witnessed_size_fails_custody_verify(
    world_any: World, scan_mode: str
) -> None:
    world = world_any
    world.office.ok("receipt", "import", str(world.ack))
    size = _witnessed_size(world)
    _truncate(world.office, size - 1, also=("checkpoints",))
    _folder_rolled_back(world.office)
    result = world.office("custody", "verify")
    assert (result.exit_code, result.stdout, result.stderr) == (
        3,
        f"FAIL: the log is shorter than the checkpoint witnessed by ICC-OTP at size {size} "
        f"(ack of {world.package_id})\n",
        f"evault: custody log: 1 defect(s) in {size - 1} events\n",
    )


def test_a_log_rewritten_under_a_witnessed_size_fails_custody_verify(
    world: World, scan_mode: str
) -> None:
    world.office.ok("receipt", "import", str(world.ack))
    size = _witnessed_size(world)
    _truncate(world.office, size - 1, also=("checkpoints",))
    _folder_rolled_back(world.office)
    for case in ("UA-2026-0051", "UA-2026-0052"):  # the log grows past `size` anew
        world.office.ok("case", "create", case)
    result = world.office("custody", "verify")
    assert result.exit_code == 3
    assert result.stdout == (
        f"FAIL: the log differs from the checkpoint witnessed by ICC-OTP at size {size} "
        f"(ack of {world.package_id}); history was rewritten\n")
    # Nor can the office prove to the ack's holder that its log extends what was witnessed.
    (world.tmp / "witnessed.txt").write_text(
        json.loads(world.ack.read_text())["cosigned_checkpoint"])
    world.office.ok("custody", "checkpoint", "-o", str(world.tmp / "now.txt"))
    proof = world.office("custody", "consistency", str(world.tmp / "witnessed.txt"),
                         str(world.tmp / "now.txt"))
    assert (proof.exit_code, proof.stderr) == (
        3, f"evault: merkle consistency proof: does not lead to the first root (size {size})\n")


def test_a_stored_cosignature_altered_in_the_database_is_reported(world: World) -> None:
    world.office.ok("receipt", "import", str(world.ack))
    with sqlite3.connect(world.office.vault / "vault.db") as conn:
        conn.execute("UPDATE witnessed_checkpoints SET size = size - 1")
    result = world.office("custody", "verify")
    size = _witnessed_size(world) - 1
    assert result.exit_code == 3
    assert result.stdout == (
        f"FAIL: the checkpoint witnessed by ICC-OTP at size {size} (ack of "
        f"{world.package_id}) does not verify: stored fields differ from the cosigned note\n")


def test_the_ack_holder_proves_a_cut_the_database_no_longer_shows(world: World) -> None:
    world.office.ok("receipt", "import", str(world.ack))
    size = _witnessed_size(world)
    # The attacker removes the evidence of the witness too: the database alone now looks fine.
    _truncate(world.office, size - 1, also=("checkpoints", "witnessed_checkpoints",
                                            "acknowledgements"))
    # The key store's anchor catches the cut (exit 3); put back with the folder, it cannot.
    assert world.office("custody", "verify").exit_code == 3
    _folder_rolled_back(world.office)
    assert world.office("custody", "verify").exit_code == 0

    # The body still holds its ack: the cosigned note is signed by the office's own key.
    allowed = world.tmp / "allowed_signers"
    log = json.loads(world.ack.read_text())["cosigned_checkpoint"].split("\n", 1)[0]
    allowed.write_text(f'office,{log} namespaces="evault-checkpoint" '
                       f'{_card_key(world.office_card)}\n'
                       f'icc namespaces="evault-ack" {_card_key(world.icc_card)}\n')
    checked = Cli(Path("unused"))("verify", str(world.ack), "--trusted-keys", str(allowed),
                                  vault=False)
    assert checked.exit_code == 0, checked.stdout
    assert "; ICC-OTP witnessed evault/" in checked.stdout
    assert f" at size {size}, root " in checked.stdout
    # Without the sender's checkpoint key the witness proves nothing, and verify says so.
    only_icc = world.tmp / "only_icc"
    only_icc.write_text(f'icc namespaces="evault-ack" {_card_key(world.icc_card)}\n')
    unsure = Cli(Path("unused"))("verify", str(world.ack), "--trusted-keys", str(only_icc),
                                 vault=False)
    assert unsure.exit_code == 3
    assert unsure.stdout.startswith(
        f"FAIL: {world.ack}: acknowledgement of {world.package_id}: cosigned checkpoint: not "
        "signed by a trusted key (signer name evault/")
    witnessed = world.tmp / "witnessed.txt"
    witnessed.write_text(json.loads(world.ack.read_text())["cosigned_checkpoint"])

    # Asked to show its log still extends what the body witnessed, the office cannot.
    now = world.tmp / "now.txt"
    world.office.ok("custody", "checkpoint", "-o", str(now))
    proof = world.office("custody", "consistency", str(now), str(witnessed))
    assert (proof.exit_code, proof.stderr) == (
        3, f"evault: new checkpoint: size {size} is beyond this log's {size - 1} events; the "
           "checkpoint is not from this log's history\n")


# ----------------------------------------------------------------------------- forgeries


def _officer_key(world: World) -> SigningKey:
    from vault.service.identities import current_key, get_identity, load_keypair
    from vault.service.vaults import open_vault

    v = open_vault(world.icc.vault)
    with v.transaction() as session:
        pair = load_keypair(v, current_key(get_identity(session, None)))
    v.close()
    return pair.signing


def _resigned(world: World, name: str, cosigned: str | None, version: int = 2) -> Path:
    """The ack with another cosigned checkpoint, signed again by the officer's own key."""
    from vault.formats.receipt import ACK_NAMESPACE, Acknowledgement, sign_document

    key = _officer_key(world)
    ack = replace(Acknowledgement.from_bytes(world.ack.read_bytes()),
                  cosigned_checkpoint=cosigned, version=version)
    path = world.tmp / name
    path.write_bytes(ack.to_bytes())
    Path(f"{path}.sig").write_text(sign_document(ack.to_bytes(), key, ACK_NAMESPACE))
    return path


def _forgeries(world: World) -> dict[str, tuple[str, str]]:
    from vault.custody.cosignature import cosign

    note = _envelope_note(world.package)
    cosigned = json.loads(world.ack.read_text())["cosigned_checkpoint"]
    line = cosigned[len(note):]
    blob = bytearray(base64.b64decode(line.split(" ")[2]))
    blob[-1] ^= 1
    flipped = note + f"{line.rsplit(' ', 1)[0]} {base64.b64encode(bytes(blob)).decode()}\n"
    stranger = cosign(note, "evault-witness/ICC-OTP", SigningKey.generate(), 1796547600)
    officer = _officer_key(world)
    other = cosign(note, "evault-witness/UA-OPG", officer, 1796547600)
    # A bigger tree than the one sent, cosigned by the officer but never signed by the office.
    lines = note.split("\n")
    claimed = "\n".join([lines[0], str(int(lines[1]) + 5), *lines[2:]])
    bigger = cosign(claimed, "evault-witness/ICC-OTP", officer, 1796547600)
    return {
        "flipped": (flipped, "does not verify; the checkpoint or its time was altered"),
        "stranger": (stranger, "no cosignature by evault-witness/ICC-OTP"),
        "other-body": (other, "no cosignature by evault-witness/ICC-OTP"),
        "bigger": (bigger, "is not the checkpoint the package's envelope carried"),
    }


@pytest.mark.parametrize("kind", ["flipped", "stranger", "other-body", "bigger"])
def test_a_forged_cosignature_is_refused_at_import(world: World, kind: str) -> None:
    cosigned, reason = _forgeries(world)[kind]
    forged = _resigned(world, f"{kind}.json", cosigned)
    result = world.office("receipt", "import", str(forged))
    assert result.exit_code == 3
    assert result.stderr.startswith(
        f"evault: ack for package {world.package_id}: cosigned checkpoint: ")
    assert reason in result.stderr and result.stderr.count("\n") == 1
    shown = json.loads(world.office.ok("package", "show", world.package_id, "--json").stdout)
    assert shown["state"] != "acknowledged"
    with sqlite3.connect(world.office.vault / "vault.db") as conn:
        assert conn.execute("SELECT count(*) FROM witnessed_checkpoints").fetchone() == (0,)
    checked = world.office("verify", str(forged))
    assert checked.exit_code == 3
    assert checked.stdout.startswith(
        f"FAIL: {forged}: acknowledgement of {world.package_id}: cosigned checkpoint: ")


def test_a_version_1_ack_still_imports_without_a_witness(world: World) -> None:
    old = _resigned(world, "old.json", None, version=1)
    doc = json.loads(old.read_text())
    assert doc["version"] == 1 and "cosigned_checkpoint" not in doc
    result = world.office("receipt", "import", str(old))
    assert (result.exit_code, result.stderr) == (
        0, f"evault: package {world.package_id} acknowledged by icc-officer of ICC-OTP\n")
    with sqlite3.connect(world.office.vault / "vault.db") as conn:
        assert conn.execute("SELECT count(*) FROM witnessed_checkpoints").fetchone() == (0,)
    assert world.office.ok("custody", "verify").stdout.endswith(
        " checkpoints (structure and signatures)\n")
    checked = world.office("verify", str(old))
    assert checked.exit_code == 0 and " witnessed " not in checked.stdout


def test_an_ack_of_an_unknown_version_is_refused(world: World) -> None:
    future = world.tmp / "future.json"
    future.write_bytes(world.ack.read_bytes().replace(b'"version":2', b'"version":4'))
    Path(f"{future}.sig").write_text(Path(f"{world.ack}.sig").read_text())
    result = world.office("receipt", "import", str(future))
    assert (result.exit_code, result.stderr) == (
        3, "evault: future.json: acknowledgement: version must be 1 or 2 or 3\n")


def test_a_vault_from_before_witnessing_upgrades_and_keeps_the_witness(world: World) -> None:
    from vault.store import db

    engine = db.make_engine(f"sqlite:///{world.office.vault / 'vault.db'}")
    db.downgrade(engine, "0004")  # the layout the previous release made
    engine.dispose()
    assert world.office("receipt", "import", str(world.ack)).exit_code == 1
    world.office.ok("db", "upgrade")
    world.office.ok("receipt", "import", str(world.ack))
    assert world.office.ok("custody", "verify").stdout.endswith(
        " checkpoints, 1 witnessed by bodies (structure and signatures)\n")


# ----------------------------------------------------------------------------- by hand

CHECKER = Path(__file__).resolve().parent.parent / "docs" / "verify-checkpoint.py"


def _by_hand(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """docs/verify-checkpoint.py as an auditor runs it: Python and `cryptography` only."""
    return subprocess.run([sys.executable, str(CHECKER), *args], cwd=cwd, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin"})


def test_the_checkpoint_script_checks_a_cosignature_by_hand(world: World) -> None:
    work = world.tmp
    shown = json.loads(world.office.ok("identity", "show", "--json").stdout)
    key = shown["checkpoint_key"]
    (work / "recipient.pub").write_text(_card_key(world.icc_card) + "\n")
    icc_fp = json.loads(world.icc.ok("identity", "show", "--json").stdout)["fingerprint"]
    name, key_id, _ = key.split("+", 2)
    size = _witnessed_size(world)
    cosigned = json.loads(world.ack.read_text())["cosigned_checkpoint"]
    seconds = int.from_bytes(base64.b64decode(cosigned.rstrip("\n").rsplit(" ", 1)[1])[4:12],
                             "big")
    when = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    ok = (f"OK: ack.json: checkpoint of {name} at size {size}, signed by {name}+{key_id} (key "
          f"{shown['fingerprint']}), cosigned by evault-witness/ICC-OTP (key {icc_fp}) at {when}")
    run = _by_hand(work, "--key", key, "--cosigner-key", "recipient.pub", "ack.json")
    assert (run.returncode, run.stdout, run.stderr) == (0, ok + "\n", "")

    # An honest sender proves its newer log extends what the body witnessed.
    (work / "witnessed.txt").write_text(cosigned)
    world.office.ok("custody", "checkpoint", "-o", str(work / "now.txt"))
    world.office.ok("custody", "consistency", str(work / "witnessed.txt"), str(work / "now.txt"),
                    "-o", str(work / "proof.json"))
    proved = _by_hand(work, "--key", key, "--cosigner-key", "recipient.pub", "ack.json",
                      "now.txt", "--proof", "proof.json")
    assert proved.returncode == 0, proved.stdout
    assert proved.stdout.splitlines()[0] == ok
    assert proved.stdout.splitlines()[2].startswith(f"OK: proof.json: the log grew from {size} ")

    flipped = _resigned(world, "flipped.json", _forgeries(world)["flipped"][0])
    bad = _by_hand(work, "--key", key, "--cosigner-key", "recipient.pub", flipped.name)
    cosigner_id = hashlib.sha256(b"evault-witness/ICC-OTP\n\x04" + _raw_key(world.icc_card)
                                 ).digest()[:4].hex()
    assert (bad.returncode, bad.stdout) == (
        3, f"MISMATCH: flipped.json: cosignature by evault-witness/ICC-OTP+{cosigner_id} does "
           "not verify\n")
    old = _resigned(world, "old.json", None, version=1)
    v1 = _by_hand(work, "--key", key, "--cosigner-key", "recipient.pub", old.name)
    assert (v1.returncode, v1.stdout) == (
        3, "MISMATCH: old.json: not an acknowledgement with a cosigned_checkpoint (version 2)\n")


# ----------------------------------------------------------------------------- the format


def test_cosigner_keys_and_malformed_cosignature_lines() -> None:
    from vault.custody.cosignature import Cosigner, cosign, open_cosignature
    from vault.custody.note import Checkpoint, NoteSigner, sign_checkpoint
    from vault.errors import UsageError, VerificationError

    log, officer = SigningKey.from_seed(bytes(32)), SigningKey.from_seed(bytes([7]) * 32)
    note = sign_checkpoint(Checkpoint("evault/example", 9, bytes(32), ("extension line",)),
                           NoteSigner("evault/example", log))
    cosigner = Cosigner.for_key("evault-witness/ICC-OTP", officer.public)
    assert Cosigner.parse(cosigner.vkey()) == cosigner
    assert base64.b64decode(cosigner.vkey().split("+", 2)[2])[:1] == b"\x04"
    with pytest.raises(UsageError, match="type 0x04"):
        Cosigner.parse(NoteSigner("evault-witness/ICC-OTP", officer).vkey())
    # Extension lines are part of the signed text, as the spec requires.
    cosigned = cosign(note, cosigner.name, officer, 1796547600)
    assert open_cosignature(cosigned, cosigner).checkpoint.extensions == ("extension line",)
    with pytest.raises(VerificationError, match="does not verify"):
        open_cosignature(cosigned.replace("extension line", "extension lime"), cosigner)
    # A line of the cosigner's key id with no time: refused, not read past its end.
    short = note + f"\u2014 {cosigner.name} " + base64.b64encode(
        cosigner.key_id + bytes(64)).decode() + "\n"
    with pytest.raises(VerificationError, match="is 64 bytes after the key id, not 72"):
        open_cosignature(short, cosigner)
    with pytest.raises(UsageError, match="the time must be from 0"):
        cosign(note, cosigner.name, officer, -1)
    with pytest.raises(VerificationError, match="checkpoint"):
        cosign(NoteSigner("n", log).sign("not a checkpoint\n"), cosigner.name, officer, 1)
