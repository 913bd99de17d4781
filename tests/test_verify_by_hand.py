"""docs/verify-by-hand.md, run as written: every shell block, in order, with stock tools."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import Cli, require_tool

DOC = Path(__file__).resolve().parent.parent / "docs" / "verify-by-hand.md"


def _blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


@pytest.mark.interop
def test_the_documented_commands_verify_a_real_package(tmp_path: Path) -> None:
    for tool in ("age", "ssh-keygen", "tar", "sha256sum"):
        require_tool(tool)
    office = Cli(tmp_path / "office")
    office.ok("init")
    office.ok("identity", "create", "registry-office")
    icc = Cli(tmp_path / "icc")
    icc.ok("init")
    icc.ok("identity", "create", "icc-officer")
    card = tmp_path / "icc.card.json"
    icc.ok("identity", "export", "-o", str(card))
    office.ok("body", "add", "ICC-OTP", "--name", "Fictional court")
    office.ok("body", "key", "add", "ICC-OTP", "--card", str(card))
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    (evidence / "statement W-1.txt").write_text("fictional statement\n")
    (evidence / "photo.jpg").write_bytes(bytes(range(256)) * 100)
    office.ok("ingest", str(evidence), "-r", "--case", "UA-2026-0042", "--create-case")
    package = tmp_path / "pkg.evpkg"
    office.ok("package", "create", "--to", "ICC-OTP", "--case", "UA-2026-0042", "-o",
              str(package))
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    receipt_id = json.loads(office.ok("send", str(package), "--outbox", str(outbox),
                                      "--json").stdout)["receipt"]
    work = tmp_path / "auditor"
    work.mkdir()
    office.ok("identity", "export", "-o", str(work / "sender.card.json"))
    office.ok("receipt", "export", receipt_id, "-o", str(work / "receipt.json"))

    from vault.service.identities import current_key, get_identity, load_keypair
    from vault.service.vaults import open_vault

    v = open_vault(icc.vault)
    with v.transaction() as session:
        pair = load_keypair(v, current_key(get_identity(session, None)))
    v.close()
    (work / "icc.key").write_text(pair.age.encode() + "\n")
    icc.ok("contact", "add", str(work / "sender.card.json"))
    icc.ok("open", str(package), "--out", str(tmp_path / "received"))
    icc.ok("ack", str(package), "-o", str(work / "ack.json"))
    icc.ok("identity", "export", "-o", str(work / "recipient.card.json"))
    env = {
        "PATH": "/usr/bin:/bin:/usr/local/bin",
        "PACKAGE": str(package),
        "SENDER_CARD": str(work / "sender.card.json"),
        "AGE_KEY": str(work / "icc.key"),
        "RECEIPT": str(work / "receipt.json"),
        "RECIPIENT_CARD": str(work / "recipient.card.json"),
        "ACK": str(work / "ack.json"),
    }
    blocks = _blocks()
    assert len(blocks) == 6
    outputs = []
    for block in blocks:
        run = subprocess.run(["sh", "-c", block], cwd=work, env=env, capture_output=True,
                             text=True)
        assert run.returncode == 0, f"block failed:\n{block}\n{run.stdout}\n{run.stderr}"
        outputs.append(run.stdout + run.stderr)
    assert "payload digest OK" in outputs[1]
    assert 'Good "evault-envelope" signature for sender' in outputs[1]
    assert "OK" in outputs[2] and "BagIt-Version: 1.0" in outputs[2]
    assert "statement covers the tag manifest" in outputs[3]
    assert '"body":"ICC-OTP"' in outputs[3]
    assert "receipt matches the package envelope" in outputs[4]
    assert 'Good "evault-ack" signature for recipient' in outputs[5]
    assert "acknowledgement is for this package" in outputs[5]

    # The same commands catch a flipped byte in the payload.
    import tarfile

    with tarfile.open(package) as tar:
        offset = tar.getmember("payload.age").offset_data
    data = bytearray(package.read_bytes())
    data[offset + 500] ^= 1
    package.write_bytes(bytes(data))
    run = subprocess.run(["sh", "-c", blocks[1]], cwd=work, env=env, capture_output=True,
                         text=True)
    assert run.returncode != 0
