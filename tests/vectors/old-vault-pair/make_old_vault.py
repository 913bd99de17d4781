"""Make ``office/`` and ``icc/``: two vaults as evault at schema 0004 (before sealed metadata)
left them, and ``expected.json``: what their listings printed then.

Run with THAT code on the path (it is not this checkout's):

    git archive 8740842 vault | tar -x -C /tmp/old && \\
        PYTHONPATH=/tmp/old .venv/bin/python tests/vectors/old-vault-pair/make_old_vault.py

The key files are sealed with the test passphrase of tests/conftest.py at the lowest scrypt
cost the reader accepts. Every name, title, place and reference is fictional.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from click.testing import CliRunner

import vault.crypto.secretbox
from vault.cli import cli

HERE = Path(__file__).resolve().parent
PASSPHRASE = "fictional test passphrase"
CASE = "UA-2026-0042"
#: Every sensitive string the old vaults hold in clear; none may be found after conversion.
SECRETS = ["Quillmarsh", "Brackenridge", "Tumbledown", "Orrowfield", "Wexcombe", "Fennimore",
           "Glimmerton", "OTP-REQ-2026-917", "Larkspur"]
LISTINGS = [
    ("office", ["items", "list"]), ("office", ["items", "list", "--json"]),
    ("office", ["items", "list", "--case", CASE]), ("office", ["case", "list", "--json"]),
    ("office", ["case", "show", CASE]), ("office", ["package", "list", "--json"]),
    ("office", ["receipt", "list", "--json"]), ("office", ["report", "sharing"]),
    ("icc", ["items", "list", "--json"]), ("icc", ["case", "list", "--json"]),
]


def run(where: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--vault", str(where)], catch_exceptions=False)
    if result.exit_code != 0:
        sys.exit(f"evault {' '.join(args)}: {result.stderr}")
    return result.stdout


def main() -> None:
    os.environ.update(EVAULT_KEY_STORAGE="file", EVAULT_PASSPHRASE=PASSPHRASE)
    vault.crypto.secretbox.DEFAULT_WORK_FACTOR = 10
    work = HERE / "work"
    shutil.rmtree(work, ignore_errors=True)
    for name in ("office", "icc"):
        shutil.rmtree(HERE / name, ignore_errors=True)
    work.mkdir()
    office, icc = HERE / "office", HERE / "icc"
    run(office, "init")
    office_fp = json.loads(run(office, "identity", "create", "registry-office", "--json"))
    run(icc, "init")
    run(icc, "identity", "create", "icc-officer")
    run(icc, "identity", "export", "icc-officer", "-o", str(work / "icc.card.json"))
    run(office, "identity", "export", "registry-office", "-o", str(work / "office.card.json"))
    run(office, "body", "add", "ICC-OTP", "--name", "Fictional ICC-OTP")
    run(office, "body", "key", "add", "ICC-OTP", "--card", str(work / "icc.card.json"))
    run(icc, "contact", "add", str(work / "office.card.json"), "--fingerprint",
        office_fp["fingerprint"])
    evidence = work / "evidence"
    evidence.mkdir()
    (evidence / "Quillmarsh-statement.txt").write_text("fictional statement\n")
    (evidence / "photo-1.jpg").write_bytes(bytes(range(256)) * 8)
    run(office, "case", "create", CASE, "--title", "Brackenridge shelling (fictional)")
    run(office, "ingest", str(evidence / "Quillmarsh-statement.txt"), "--case", CASE,
        "--title", "Tumbledown witness", "--source", "Orrowfield prosecutor",
        "--location", "Wexcombe", "--description", "Fennimore account",
        "--tag", "witness=Glimmerton", "--label", "restricted-icc")
    run(office, "ingest", str(evidence / "photo-1.jpg"), "--case", CASE)
    outbox = work / "outbox"
    outbox.mkdir()
    package = json.loads(run(office, "package", "create", "--to", "ICC-OTP", "--case", CASE,
                             "--reference", "OTP-REQ-2026-917", "--purpose",
                             "Larkspur request", "-o", str(work / "p.evpkg"), "--json"))
    run(office, "send", str(work / "p.evpkg"), "--outbox", str(outbox))
    run(icc, "open", str(outbox / f"{package['id']}.evpkg"), "--out", str(work / "received"))
    expected = {" ".join([where, *args]): run(HERE / where, *args) for where, args in LISTINGS}
    office_items = json.loads(expected["office items list --json"])
    icc_items = json.loads(expected["icc items list --json"])
    for where, item in (("office", office_items[0]), ("icc", icc_items[0])):
        expected[f"{where} items show ITEM0"] = run(HERE / where, "items", "show", item["id"])
    expected[f"office package show {package['id']}"] = run(office, "package", "show",
                                                           package["id"])
    receipt = json.loads(expected["office receipt list --json"])[0]["id"]
    expected[f"office receipt show {receipt}"] = run(office, "receipt", "show", receipt)
    (HERE / "expected.json").write_text(json.dumps(
        {"secrets": SECRETS, "package": package["id"], "receipt": receipt,
         "outputs": expected}, indent=1, sort_keys=True) + "\n")
    shutil.rmtree(work)
    for name in ("office", "icc"):
        for extra in ("vault.db-wal", "vault.db-shm", "keys.lock"):
            (HERE / name / extra).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
