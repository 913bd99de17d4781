"""`make demo`: the main job end to end, in throwaway vaults, printed step by step.

Every vault lives in a temporary directory and keeps its keys in the passphrase key file
(EVAULT_KEY_STORAGE=file) with a demo passphrase, so the demo never touches your keyring.
All names and data are fictional.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

BODIES = [
    ("ICC-OTP", "International Criminal Court, Office of the Prosecutor", "icc-officer"),
    ("UA-OPG", "Office of the Prosecutor General of Ukraine", "opg-officer"),
    ("EUROJUST-JIT", "Joint Investigation Team through Eurojust", "jit-officer"),
    ("UN-HRMMU", "UN Human Rights Monitoring Mission in Ukraine", "hrmmu-officer"),
    ("OSCE-MM", "Experts under the OSCE Moscow Mechanism", "osce-expert"),
]


CASE = "UA-2026-0042"


def make_samples(folder: Path) -> Path:
    """A few small, clearly fictional sample files."""
    (folder / "site-photos").mkdir(parents=True)
    (folder / "witness-statement-W1.txt").write_text(
        "FICTIONAL SAMPLE - NOT REAL EVIDENCE\n"
        "Statement of witness W-1 about events in a fictional town, 2026-03-14.\n",
        encoding="utf-8",
    )
    for i in range(1, 4):
        # Deterministic bytes standing in for photographs.
        data = bytes((i * 37 + n * 11) % 256 for n in range(4096 * i))
        (folder / "site-photos" / f"site-{i:02d}.jpg").write_bytes(data)
    return folder


class Demo:
    """Runs evault commands, echoing each one, and stops at the first failure."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.env = {
            **os.environ,
            "EVAULT_KEY_STORAGE": "file",
            "EVAULT_PASSPHRASE": "fictional demo passphrase",
        }
        self.env.pop("EVAULT_HOME", None)

    def step(self, title: str) -> None:
        print(f"\n== {title}", flush=True)

    def run(self, *args: str, show: bool = True, env: dict[str, str] | None = None) -> str:
        shown = " ".join(shlex.quote(a.replace(str(self.work), "$DEMO")) for a in args)
        print(f"$ evault {shown}", flush=True)
        proc = subprocess.run(
            [sys.executable, "-m", "vault", *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            cwd=self.work,
        )
        if proc.stderr:
            sys.stderr.write(proc.stderr.replace(str(self.work), "$DEMO"))
            sys.stderr.flush()
        if proc.returncode != 0:
            raise SystemExit(f"demo: step failed with exit {proc.returncode}")
        if show and proc.stdout:
            print(proc.stdout.replace(str(self.work), "$DEMO"), end="", flush=True)
        return proc.stdout


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="evault-demo-") as tmp:
        work = Path(tmp)
        demo = Demo(work)
        office = str(work / "office-vault")
        print(f"Demo vaults live in a temporary directory ($DEMO = {work}); removed at the end.")

        demo.step("1. The sending office creates its vault and two identities")
        demo.run("init", "--vault", office)
        demo.run(
            "identity",
            "create",
            "registry-office",
            "--org",
            "Fictional Ministry of Justice",
            "--vault",
            office,
        )
        demo.run(
            "identity",
            "create",
            "evidence-unit",
            "--org",
            "Fictional Ministry of Justice",
            "--vault",
            office,
        )
        demo.run("identity", "list", "--vault", office)

        demo.step("2. Each recipient body makes an identity in its own vault and exports a card")
        cards: dict[str, tuple[Path, str]] = {}
        for body_id, _name, officer in BODIES:
            vault = str(work / f"{body_id.lower()}-vault")
            demo.run("init", "--vault", vault, show=False)
            created = json.loads(
                demo.run(
                    "identity",
                    "create",
                    officer,
                    "--org",
                    body_id,
                    "--json",
                    "--vault",
                    vault,
                    show=False,
                )
            )
            card = work / f"{officer}.card.json"
            demo.run("identity", "export", officer, "-o", str(card), "--vault", vault)
            cards[body_id] = (card, created["fingerprint"])
            print(f"   {officer} of {body_id}: fingerprint {created['fingerprint']}")

        demo.step("3. The office registers the five bodies, pinning each key by fingerprint")
        for body_id, name, _officer in BODIES:
            card, fingerprint = cards[body_id]
            demo.run("body", "add", body_id, "--name", name, "--vault", office, show=False)
            demo.run(
                "body",
                "key",
                "add",
                body_id,
                "--card",
                str(card),
                "--fingerprint",
                fingerprint,
                "--vault",
                office,
                show=False,
            )
        demo.run("body", "list", "--vault", office)

        demo.step("4. The office ingests fictional sample evidence into a case")
        samples = make_samples(work / "samples")
        demo.run("case", "create", CASE, "--title", "Fictional shelling of a school",
                 "--vault", office)
        demo.run("ingest", str(samples / "witness-statement-W1.txt"), "--case", CASE,
                 "--title", "Witness statement W-1 (fictional)", "--source",
                 "Fictional regional prosecutor's office", "--collected-at",
                 "2026-03-14T09:30:00Z", "--location", "Fictional town", "--label",
                 "restricted-icc", "--also-digest", "md5,sha1", "--vault", office)
        demo.run("ingest", str(samples / "site-photos"), "--recursive", "--case", CASE,
                 "--source", "Fictional field team", "--vault", office)
        demo.run("items", "list", "--case", CASE, "--vault", office)
        # Labels fail closed: the restricted statement goes nowhere until a rule names a body.
        demo.run("rule", "add", "restricted-icc", "ICC-OTP", "--vault", office)
        demo.run("rule", "list", "--vault", office)
        first = json.loads(demo.run("items", "list", "--json", "--vault", office, show=False))[0]

        demo.step("5. Custody: the item's events, a signed checkpoint, a proof, a full check")
        demo.run("custody", "show", first["id"], "--vault", office)
        demo.run("custody", "checkpoint", "-o", str(work / "checkpoint-1.txt"), "--vault", office)
        print((work / "checkpoint-1.txt").read_text(), end="")
        demo.run("custody", "prove", first["id"], "--vault", office)
        demo.run("custody", "verify", "--vault", office)

        demo.step("6. The office packages the case for ICC-OTP, sends it and keeps the receipt")
        outbox = work / "outbox"
        outbox.mkdir()
        built = json.loads(demo.run(
            "package", "create", "--to", "ICC-OTP", "--case", CASE, "--reference",
            "OTP-REQ-2026-017", "--purpose", "Fictional request for assistance", "-o",
            str(work / "icc-package.evpkg"), "--json", "--vault", office, show=False))
        print(f"   package {built['id']}: {built['items']} items, {built['bytes']} bytes, "
              f"encrypted to {len(built['recipients'])} ICC-OTP key(s) and the escrow key")
        demo.run("send", str(work / "icc-package.evpkg"), "--outbox", str(outbox),
                 "--vault", office)
        demo.run("package", "list", "--vault", office)
        receipts = json.loads(demo.run("receipt", "list", "--json", "--vault", office,
                                       show=False))
        demo.run("receipt", "show", receipts[0]["id"], "--vault", office)
        demo.run("receipt", "export", receipts[0]["id"], "-o", str(work / "receipt.json"),
                 "--vault", office)
        demo.run("custody", "verify", "--vault", office)

        demo.step("7. ICC-OTP opens the package in its own vault and acknowledges it")
        icc = str(work / "icc-otp-vault")
        office_card = work / "registry-office.card.json"
        office_id = json.loads(demo.run("identity", "show", "registry-office", "--json",
                                        "--vault", office, show=False))
        demo.run("identity", "export", "registry-office", "-o", str(office_card),
                 "--vault", office)
        demo.run("contact", "add", str(office_card), "--fingerprint",
                 office_id["fingerprint"], "--vault", icc)
        package_file = outbox / f"{built['id']}.evpkg"
        demo.run("open", str(package_file), "--out", str(work / "icc-received"), "--vault", icc)
        ack = work / f"{built['id']}.ack.json"
        demo.run("ack", str(package_file), "-o", str(ack), "--vault", icc)
        demo.run("receipt", "import", str(ack), "--vault", office)
        demo.run("package", "list", "--vault", office)

        demo.step("8. An auditor with no vault at all verifies every file")
        icc_card = cards["ICC-OTP"][0]
        allowed = work / "allowed_signers"
        office_key = " ".join(office_id["signing_key"].split()[:2])
        icc_key = json.loads(icc_card.read_text())["signing_key"]
        allowed.write_text(
            'registry-office namespaces="evault-envelope,evault-statement,evault-receipt,'
            f'evault-checkpoint" {office_key}\n'
            f'icc-officer namespaces="evault-ack,evault-checkpoint" {icc_key}\n'
        )
        print(allowed.read_text(), end="")
        auditor_env = {"EVAULT_HOME": str(work / "auditor-has-no-vault")}
        demo.run("verify", str(package_file), str(work / "receipt.json"), str(ack),
                 str(office_card), str(work / "checkpoint-1.txt"), "--trusted-keys",
                 str(allowed), env=auditor_env)

        demo.step("9. Bulk export of the case to all five bodies, then a sharing report")
        bulk = work / "bulk-outbox"
        bulk.mkdir()
        everyone = ",".join(b[0] for b in BODIES)
        demo.run("export", "--to", everyone, "--case", CASE, "--outbox", str(bulk),
                 "--vault", office)
        print("   ...and once more: nothing new is made")
        demo.run("export", "--to", everyone, "--case", CASE, "--outbox", str(bulk),
                 "--vault", office)
        demo.run("report", "sharing", "--vault", office)
        demo.run("custody", "verify", "--vault", office)
        demo.run("doctor", "--vault", office)
        print("\nDemo finished: every step above succeeded.")


if __name__ == "__main__":
    main()
