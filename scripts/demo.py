"""`make demo`: the main job end to end, in throwaway vaults, printed step by step.

Every vault lives in a temporary directory and keeps its keys in the passphrase key file
(EVAULT_KEY_STORAGE=file) with a demo passphrase, so the demo never touches your keyring.
All names and data are fictional.

Every line starting with "$ " is a shell command that can be pasted as it is, after the
`export` lines printed first. `--keep` (or EVAULT_DEMO_KEEP=1) keeps the vaults at the end
and prints where they are.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

BODIES = [
    ("ICC-OTP", "International Criminal Court, Office of the Prosecutor", "icc-officer"),
    ("UA-OPG", "Office of the Prosecutor General of Ukraine", "opg-officer"),
    ("EUROJUST-JIT", "Joint Investigation Team through Eurojust", "jit-officer"),
    ("UN-HRMMU", "UN Human Rights Monitoring Mission in Ukraine", "hrmmu-officer"),
    ("OSCE-MM", "Experts under the OSCE Moscow Mechanism", "osce-expert"),
]


CASE = "UA-2026-0042"
PASSPHRASE = "fictional demo passphrase"
# A --json step shows this many entries of a list at most, so the demo stays readable.
JSON_LIST_SHOWN = 1


def make_samples(folder: Path) -> Path:
    """A few small, clearly fictional sample files."""
    (folder / "site-photos").mkdir(parents=True)
    (folder / "witness-statement-W1.txt").write_text(
        "FICTIONAL SAMPLE - NOT REAL EVIDENCE\n"
        "Statement of witness W-1 about events in a fictional town, 2026-03-14.\n",
        encoding="utf-8",
    )
    (folder / "witness-statement-W1-Red.txt").write_text(
        "FICTIONAL SAMPLE - NOT REAL EVIDENCE\n"
        "Statement of witness [REDACTED] about events in a fictional town, 2026-03-14.\n",
        encoding="utf-8",
    )
    for i in range(1, 4):
        # Deterministic bytes standing in for photographs.
        data = bytes((i * 37 + n * 11) % 256 for n in range(4096 * i))
        (folder / "site-photos" / f"site-{i:02d}.jpg").write_bytes(data)
    return folder


class Demo:
    """Runs evault commands, echoing each one as a shell command, and stops at the first
    failure. Paths under the work folder are printed as "$DEMO"/..., which the `export DEMO=`
    line printed by `preamble` sets."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.env = {
            **os.environ,
            "EVAULT_KEY_STORAGE": "file",
            "EVAULT_PASSPHRASE": PASSPHRASE,
        }
        self.env.pop("EVAULT_HOME", None)

    def step(self, title: str) -> None:
        print(f"\n== {title}", flush=True)

    def word(self, arg: str) -> str:
        """One argument as a shell word; the work folder becomes "$DEMO"."""
        work = str(self.work)
        if arg == work:
            return '"$DEMO"'
        if arg.startswith(work + os.sep):
            return '"$DEMO"' + shlex.quote(arg[len(work) :])
        return shlex.quote(arg)

    def command(self, words: Sequence[str], redirect: Path | None = None,
                append: Path | None = None) -> None:
        """Print a command a user can paste into a shell."""
        line = " ".join(self.word(w) for w in words)
        if redirect is not None:
            line += " > " + self.word(str(redirect))
        if append is not None:
            line += " >> " + self.word(str(append))
        print(f"$ {line}", flush=True)

    def preamble(self) -> None:
        """The `export` lines that make the printed commands work when pasted."""
        print("Lines starting with '$ ' are shell commands; paste them without the '$ '.")
        print("First paste these, which set what every command below relies on:")
        print(f"$ export DEMO={shlex.quote(str(self.work))}")
        print("$ export EVAULT_KEY_STORAGE=file")
        print(f"$ export EVAULT_PASSPHRASE={shlex.quote(PASSPHRASE)}")
        evault = Path(sys.executable).parent / "evault"
        found = shutil.which("evault")
        if evault.exists() and (found is None or Path(found) != evault):
            print(f'$ export PATH={shlex.quote(str(evault.parent))}:"$PATH"', flush=True)

    def mkdir(self, folder: Path) -> None:
        self.command(["mkdir", str(folder)])
        folder.mkdir()

    def cat(self, file: Path) -> None:
        self.command(["cat", str(file)])
        print(file.read_text(), end="", flush=True)

    def write_lines(self, file: Path, lines: Sequence[str]) -> None:
        self.command(["printf", "%s\\n", *lines], redirect=file)
        file.write_text("".join(f"{line}\n" for line in lines))

    def run(self, *args: str, show: bool = True, env: dict[str, str] | None = None) -> str:
        assignments = [f"{name}={self.word(value)}" for name, value in (env or {}).items()]
        line = " ".join(self.word(w) for w in ["evault", *args])
        print("$ " + " ".join([*assignments, line]), flush=True)
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
        if "--json" in args:  # always shown: the output is what such a step is for
            print(self.trimmed_json(proc.stdout), flush=True)
        elif show and proc.stdout:
            print(proc.stdout.replace(str(self.work), "$DEMO"), end="", flush=True)
        return proc.stdout

    def trimmed_json(self, text: str) -> str:
        """A --json step's output, pretty; a longer list shows its first entry only."""
        value = json.loads(text)
        more = ""
        if isinstance(value, list) and len(value) > JSON_LIST_SHOWN:
            more = f"\n   ... and {len(value) - JSON_LIST_SHOWN} more, not shown"
            value = value[:JSON_LIST_SHOWN]
        pretty = json.dumps(value, indent=2, ensure_ascii=False)
        return pretty.replace(str(self.work), "$DEMO") + more


class DemoTsa:
    """The demo's own RFC 3161 time-stamp authority: ``openssl ts -reply`` on 127.0.0.1
    (scripts/local_tsa.py), started before the first step and stopped after the last."""

    def __init__(self, work: Path) -> None:
        self.work = work

    def __enter__(self) -> DemoTsa:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from local_tsa import LocalTsa

        if shutil.which("openssl") is None:
            raise SystemExit("demo: the demo's time-stamp authority needs openssl "
                             "(apt-get install openssl)")
        self.server = LocalTsa("demo-tsa", folder=self.work / "demo-tsa")
        self.server.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()

    def configure(self, demo: Demo, vault: Path) -> None:
        """List the TSA in the office vault's config.toml, with its CA certificate."""
        print(f"   (the demo started a local RFC 3161 time-stamp authority at {self.server.url}:"
              "\n    openssl ts -reply behind HTTP; an office lists its real TSAs the same way)")
        demo.command(["cp", str(self.server.ca_file), str(vault / "tsa-ca.pem")])
        shutil.copyfile(self.server.ca_file, vault / "tsa-ca.pem")
        lines = ["", "[[tsa]]", 'name = "demo-tsa"', f'url = "{self.server.url}"',
                 'ca = ["tsa-ca.pem"]']
        demo.command(["printf", "%s\\n", *lines], append=vault / "config.toml")
        with open(vault / "config.toml", "a", encoding="utf-8") as config:
            config.write("".join(f"{line}\n" for line in lines))

    def verify_by_hand(self, demo: Demo, note: Path, token: Path, ca: Path) -> None:
        """Check a checkpoint's token with stock openssl, as docs/verify-by-hand.md does."""
        words = ["openssl", "ts", "-verify", "-data", str(note), "-in", str(token),
                 "-CAfile", str(ca)]
        demo.command(words)
        done = subprocess.run(words, capture_output=True, text=True, check=False)
        print(done.stdout, end="", flush=True)
        if done.returncode != 0:
            raise SystemExit(f"demo: openssl ts -verify failed: {done.stderr.strip()}")


def parse_keep(argv: Sequence[str]) -> bool:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the demo vaults at the end and print where (also EVAULT_DEMO_KEEP=1)",
    )
    keep: bool = parser.parse_args(argv).keep
    return keep or os.environ.get("EVAULT_DEMO_KEEP", "") not in ("", "0")


@contextmanager
def demo_folder(keep: bool) -> Iterator[Path]:
    """A temporary folder for the demo's vaults, removed at the end unless `keep`."""
    if not keep:
        with tempfile.TemporaryDirectory(prefix="evault-demo-") as tmp:
            print(
                f"Demo vaults live in {tmp}, removed at the end "
                "(keep them with --keep or EVAULT_DEMO_KEEP=1)."
            )
            yield Path(tmp)
        return
    work = Path(tempfile.mkdtemp(prefix="evault-demo-"))
    print(f"Demo vaults live in {work} and are kept at the end.")
    try:
        yield work
    finally:
        print_kept(work)


def print_kept(work: Path) -> None:
    """Where the kept vaults are and how to go on with them."""
    vaults = sorted(p.name for p in work.glob("*-vault") if p.is_dir())
    print(f"\nKept the demo vaults in {work}:")
    for name in vaults:
        print(f"   {work / name}")
    print("To continue, paste the export lines printed at the start and pass --vault, e.g.:")
    print('$ evault items list --vault "$DEMO"/office-vault')
    print(f"Remove them with: rm -rf {shlex.quote(str(work))}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    keep = parse_keep(sys.argv[1:] if argv is None else argv)
    with demo_folder(keep) as work, DemoTsa(work) as tsa:
        demo = Demo(work)
        office = str(work / "office-vault")
        demo.preamble()

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
        tsa.configure(demo, Path(office))

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
        print("   (the demo wrote fictional sample files into $DEMO/samples)")
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
        first = json.loads(demo.run("items", "list", "--json", "--vault", office))[0]
        # A redacted copy, linked to the statement it was made from; the UN mission may have
        # only that copy, sent in place of the original.
        demo.run("ingest", str(samples / "witness-statement-W1-Red.txt"), "--case", CASE,
                 "--derived-from", first["id"], "--relation", "redacted", "--tool",
                 "fictional-redactor 1.0", "--vault", office)
        demo.run("rule", "add", "restricted-icc", "UN-HRMMU", "--relation", "redacted",
                 "--vault", office)
        demo.run("rule", "list", "--vault", office)
        provenance_at_intake(demo, work, Path(office))

        demo.step("5. Custody: the item's events, a signed checkpoint, a proof, a full check")
        demo.run("custody", "show", first["id"], "--vault", office)
        demo.run("custody", "checkpoint", "-o", str(work / "checkpoint-1.txt"), "--vault", office)
        demo.cat(work / "checkpoint-1.txt")
        tsa.verify_by_hand(demo, work / "checkpoint-1.txt", work / "checkpoint-1.txt.1.tsr",
                           Path(office) / "tsa-ca.pem")
        demo.run("custody", "prove", first["id"], "--vault", office)
        demo.run("custody", "verify", "--vault", office)

        demo.step("5b. Releases to ICC-OTP need the signed approval of two of three offices")
        # state-legal is an identity of the office's vault; defense-legal works in the
        # fictional defence ministry's own vault and is a pinned contact of the office.
        defense = str(work / "defense-ministry-vault")
        demo.run("init", "--vault", defense, show=False)
        demo.run("identity", "create", "state-legal", "--org",
                 "Fictional Ministry of Justice", "--vault", office, show=False)
        defense_id = json.loads(demo.run(
            "identity", "create", "defense-legal", "--org", "Fictional Ministry of Defence",
            "--json", "--vault", defense))
        defense_card = work / "defense-legal.card.json"
        demo.run("identity", "export", "defense-legal", "-o", str(defense_card),
                 "--vault", defense)
        demo.run("contact", "add", str(defense_card), "--fingerprint",
                 defense_id["fingerprint"], "--vault", office)
        office_card = work / "registry-office.card.json"
        office_id = json.loads(demo.run("identity", "show", "registry-office", "--json",
                                        "--vault", office))
        demo.run("identity", "export", "registry-office", "-o", str(office_card),
                 "--vault", office)
        demo.run("contact", "add", str(office_card), "--fingerprint",
                 office_id["fingerprint"], "--vault", defense)
        demo.run("approval", "policy", "set", "--body", "ICC-OTP", "--need", "2", "--of",
                 "state-legal,defense-legal,nsc-legal", "--vault", office)
        request = work / "icc-release-request.json"
        demo.run("approval", "request", "--to", "ICC-OTP", "--case", CASE, "--purpose",
                 "Fictional request for assistance OTP-REQ-2026-017", "-o", str(request),
                 "--vault", office)
        demo.run("approval", "sign", str(request), "--as", "state-legal", "-o",
                 str(work / "approval-state-legal.json"), "--vault", office)
        demo.run("approval", "sign", str(request), "-o",
                 str(work / "approval-defense-legal.json"), "--vault", defense)
        demo.run("approval", "import", str(work / "approval-state-legal.json"),
                 str(work / "approval-defense-legal.json"), "--vault", office)
        demo.run("approval", "list", "--vault", office)

        demo.step("6. The office packages the case for ICC-OTP, sends it and keeps the receipt")
        outbox = work / "outbox"
        demo.mkdir(outbox)
        built = json.loads(demo.run(
            "package", "create", "--to", "ICC-OTP", "--case", CASE, "--reference",
            "OTP-REQ-2026-017", "--purpose", "Fictional request for assistance", "-o",
            str(work / "icc-package.evpkg"), "--json", "--vault", office))
        print(f"   package {built['id']}: {built['items']} items, {built['bytes']} bytes, "
              f"encrypted to {len(built['recipients'])} ICC-OTP key(s) and the escrow key")
        # ICC-OTP's own outbox, set once (a signed body.outbox_set event): a folder here; a
        # body's SFTP drop takes sftp://user@host/path with its server's pinned host key.
        demo.run("body", "set", "ICC-OTP", "--outbox", str(outbox), "--vault", office)
        demo.run("send", str(work / "icc-package.evpkg"), "--vault", office)
        demo.run("package", "list", "--vault", office)
        receipts = json.loads(demo.run("receipt", "list", "--json", "--vault", office))
        demo.run("receipt", "show", receipts[0]["id"], "--vault", office)
        demo.run("receipt", "export", receipts[0]["id"], "-o", str(work / "receipt.json"),
                 "--vault", office)
        demo.run("custody", "verify", "--vault", office)

        demo.step("7. ICC-OTP opens the package in its own vault and acknowledges it")
        icc = str(work / "icc-otp-vault")
        demo.run("contact", "add", str(office_card), "--fingerprint",
                 office_id["fingerprint"], "--vault", icc)
        package_file = outbox / f"{built['id']}.evpkg"
        # The TSA's CA certificate comes from the TSA's operator; the demo's is in the office's
        # vault folder.
        opened = json.loads(demo.run(
            "open", str(package_file), "--out", str(work / "icc-received"), "--tsa-ca",
            str(Path(office) / "tsa-ca.pem"), "--json", "--vault", icc))
        # The redacted copy came with its link: its original, in the same package, matches.
        [copy] = [i["id"] for i in opened["items"] if i["name"].endswith("-Red.txt")]
        demo.run("items", "verify-link", copy, "--vault", icc)
        ack = work / f"{built['id']}.ack.json"
        demo.run("ack", str(package_file), "-o", str(ack), "--vault", icc)
        demo.run("receipt", "import", str(ack), "--vault", office)
        demo.run("package", "list", "--vault", office)

        demo.step("8. An auditor with no vault at all verifies every file")
        icc_card = cards["ICC-OTP"][0]
        allowed = work / "allowed_signers"
        office_key = " ".join(office_id["signing_key"].split()[:2])
        icc_key = json.loads(icc_card.read_text())["signing_key"]
        # A checkpoint signer is bound to its log: the office's line names it as a principal.
        office_log = (work / "checkpoint-1.txt").read_text().split("\n", 1)[0]
        demo.write_lines(allowed, [
            f'registry-office,{office_log} namespaces="evault-envelope,evault-statement,'
            f'evault-receipt,evault-checkpoint" {office_key}',
            f'icc-officer namespaces="evault-ack,evault-checkpoint" {icc_key}',
        ])
        auditor_env = {"EVAULT_HOME": str(work / "auditor-has-no-vault")}
        demo.run("verify", str(package_file), str(work / "receipt.json"), str(ack),
                 str(office_card), str(work / "checkpoint-1.txt"), "--trusted-keys",
                 str(allowed), "--tsa-ca", str(Path(office) / "tsa-ca.pem"), env=auditor_env)

        demo.step("9. Bulk export of the case to all five bodies, then a sharing report")
        bulk = work / "bulk-outbox"
        demo.mkdir(bulk)
        everyone = ",".join(b[0] for b in BODIES)
        demo.run("export", "--to", everyone, "--case", CASE, "--outbox", str(bulk),
                 "--vault", office)
        print("   ...and once more: nothing new is made")
        demo.run("export", "--to", everyone, "--case", CASE, "--outbox", str(bulk),
                 "--vault", office)
        demo.run("report", "sharing", "--vault", office)
        demo.run("custody", "verify", "--vault", office)
        demo.run("doctor", "--vault", office)

        team_vault_on_s3(demo, work, samples)
        print("\nDemo finished: every step above succeeded.")


def provenance_at_intake(demo: Demo, work: Path, office: Path) -> None:
    """Step 4b: a photograph signed with a C2PA manifest, a copy changed after signing, and
    a ProofMode bundle, each checked at intake against the office's trust anchors."""
    demo.step("4b. Intake checks what files say of their own origin: C2PA and ProofMode")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from provenance_samples import c2pa_signer, png, proofmode_bundle, signed_png, tampered

    folder = work / "samples" / "provenance"
    folder.mkdir()
    signer = c2pa_signer()
    photo = signed_png(signer)
    (folder / "camera-authority-ca.pem").write_bytes(signer.ca_pem)
    (folder / "signed-photo.png").write_bytes(photo)
    (folder / "changed-after-signing.png").write_bytes(tampered(photo))
    (folder / "proofmode-share.zip").write_bytes(proofmode_bundle(png(shade=7)))
    print("   (the demo made a fictional camera authority, a photograph its camera signed "
          "with a C2PA manifest, a copy changed after signing, and a ProofMode bundle, in "
          "$DEMO/samples/provenance)")
    demo.command(["cp", str(folder / "camera-authority-ca.pem"),
                  str(office / "c2pa-anchors.pem")])
    shutil.copy(folder / "camera-authority-ca.pem", office / "c2pa-anchors.pem")
    table = ["", "[c2pa]", 'trust_anchors = ["c2pa-anchors.pem"]']
    demo.command(["printf", "%s\\n", *table], append=office / "config.toml")
    with (office / "config.toml").open("a", encoding="utf-8") as config:
        config.write("".join(f"{line}\n" for line in table))
    rows = json.loads(demo.run("ingest", str(folder / "signed-photo.png"),
                               str(folder / "changed-after-signing.png"),
                               str(folder / "proofmode-share.zip"), "--case", CASE, "--json",
                               "--vault", str(office)))
    for row in rows:
        demo.run("items", "show", row["id"], "--vault", str(office))


def team_vault_on_s3(demo: Demo, work: Path, samples: Path) -> None:
    """Step 10: a vault whose blobs live in an S3 bucket, with Object Lock, on a real
    SeaweedFS started here on 127.0.0.1; where the `s3` extra or `weed` is missing (`make
    demo` installs neither, `make test` both), the step says so and what installs them."""
    demo.step("10. A team vault keeps its blobs in an S3 bucket, under Object Lock")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from s3_server import S3Server, s3_unavailable

    reason = s3_unavailable()
    if reason:
        print(f"   (not run here: {reason}; `make test` installs it, then run the demo again)")
        return
    with S3Server() as server:
        bucket = server.bucket(object_lock=True)
        print("   (a throwaway SeaweedFS S3 server on 127.0.0.1, made for this step; the AWS "
              "variables reach it)")
        env = server.env()
        print("$ export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items())),
              flush=True)
        demo.env.update(env)
        try:
            team = str(work / "team-vault")
            demo.run("init", "--vault", team, "--blobs", f"s3://{bucket}/office-a",
                     "--object-lock", "compliance", "--retain-days", "1")
            demo.run("identity", "create", "evidence-unit", "--org",
                     "Fictional Ministry of Justice", "--vault", team, show=False)
            demo.run("ingest", str(samples / "site-photos"), "--recursive", "--case", CASE,
                     "--create-case", "--vault", team)
            keys = server.client().list_objects_v2(Bucket=bucket).get("Contents", [])
            print(f"   the bucket holds {len(keys)} objects, each under a random name, e.g. "
                  f"{keys[0]['Key']}")
            demo.run("doctor", "--vault", team)
        finally:
            for name in env:
                demo.env.pop(name, None)


if __name__ == "__main__":
    main()
