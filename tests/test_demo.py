"""`make demo` (scripts/demo.py): run once with --keep, then check what it printed.

Every line it prints starting with "$ " must be a shell command a user can paste as it is:
it passes `bash -n`, and a few of them, pasted into bash after the printed `export` lines,
give in a copy of the kept vaults what the demo showed. `--json` steps show their JSON, and
the kept vaults exist where the demo says.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parent.parent / "scripts" / "demo.py"
VAULTS = ["defense-ministry-vault", "eurojust-jit-vault", "icc-otp-vault", "office-vault",
          "osce-mm-vault", "team-vault", "ua-opg-vault", "un-hrmmu-vault"]


@dataclass
class DemoRun:
    tmp: Path
    work: Path
    stdout: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()

    @property
    def commands(self) -> list[str]:
        return [line[2:] for line in self.lines if line.startswith("$ ")]

    def output_of(self, command: str, last: bool = False) -> list[str]:
        """The lines the demo printed after `command`, up to the next command."""
        starts = [i for i, line in enumerate(self.lines) if line == f"$ {command}"]
        assert starts, f"the demo printed no command {command!r}"
        start = starts[-1] if last else starts[0]
        out: list[str] = []
        for line in self.lines[start + 1 :]:
            if line.startswith("$ "):
                break
            out.append(line)
        return out


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any EVAULT_ variable: what a fresh shell has."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVAULT_")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    tmp = tmp_path_factory.mktemp("demo")
    # tests/demo_site: the demo's key files at the lowest scrypt cost, and its evault steps
    # forked from the demo's process, which imported evault once (see its docstring).
    site = Path(__file__).resolve().parent / "demo_site"
    proc = subprocess.run(
        [sys.executable, str(DEMO), "--keep"],
        env=clean_env(TMPDIR=str(tmp), PYTHONPATH=str(site), EVAULT_TEST_FORK_EVAULT="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    (work,) = tmp.glob("evault-demo-*")
    return DemoRun(tmp=tmp, work=work, stdout=proc.stdout)


def test_keep_keeps_the_vaults_and_prints_where(demo: DemoRun) -> None:
    assert demo.lines[0] == f"Demo vaults live in {demo.work} and are kept at the end."
    for name in VAULTS:
        assert (demo.work / name / "vault.db").is_file()
    kept = demo.lines.index(f"Kept the demo vaults in {demo.work}:")
    assert demo.lines[kept + 1 :] == [
        *(f"   {demo.work / name}" for name in VAULTS),
        "To continue, paste the export lines printed at the start and pass --vault, e.g.:",
        '$ evault items list --vault "$DEMO"/office-vault',
        f"Remove them with: rm -rf {demo.work}",
    ]


def test_keep_from_the_environment_keeps_the_vaults(tmp_path: Path) -> None:
    """EVAULT_DEMO_KEEP=1 does what --keep does; checked on a demo cut short at its first
    step (the crash hook kills the first `evault init`), so it also shows that the kept
    folder is named when a step fails."""
    proc = subprocess.run(
        [sys.executable, str(DEMO)],
        env=clean_env(
            TMPDIR=str(tmp_path), EVAULT_DEMO_KEEP="1", EVAULT_CRASH_AT="init.config_written"
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    (work,) = tmp_path.glob("evault-demo-*")
    assert f"Kept the demo vaults in {work}:" in proc.stdout.splitlines()
    assert proc.returncode == 1, proc.stdout
    assert proc.stderr.splitlines()[-1] == "demo: step failed with exit -9"


def test_every_printed_command_passes_bash_syntax_check(demo: DemoRun) -> None:
    assert len(demo.commands) > 60
    for command in demo.commands:
        check = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
        assert check.returncode == 0, f"{command}: {check.stderr}"
        # A quoted "$DEMO" that the shell would not expand, or a Python repr.
        assert "'$DEMO" not in command and "PosixPath(" not in command, command
    assert demo.commands[:3] == [
        f"export DEMO={demo.work}",
        "export EVAULT_KEY_STORAGE=file",
        "export EVAULT_PASSPHRASE='fictional demo passphrase'",
    ]


def test_json_steps_show_their_json(demo: DemoRun) -> None:
    json_steps = [c for c in demo.commands if "--json" in c.split()]
    assert len(json_steps) == 12  # six identities, items, the signed samples' intake, package,
    # receipts, office identity, and the package ICC-OTP opens
    decoder = json.JSONDecoder()
    for command in json_steps:
        shown = "\n".join(demo.output_of(command))
        value, end = decoder.raw_decode(shown)
        assert value, command
    items = demo.output_of('evault items list --json --vault "$DEMO"/office-vault')
    value, end = decoder.raw_decode("\n".join(items))
    assert [item["name"] for item in value] == ["witness-statement-W1.txt"]
    assert "\n".join(items)[end:].splitlines()[:2] == ["", "   ... and 3 more, not shown"]


def test_intake_checks_what_the_samples_say_of_their_origin(demo: DemoRun) -> None:
    """Step 4b: the signed photograph's manifest is trusted under the anchors the demo
    configured, the copy changed after signing is invalid, the ProofMode bundle consistent."""
    found = [line.split(":", 1)[1].split(":", 1)[0].strip() for line in demo.lines
             if line.startswith(("c2pa:", "proofmode:"))]
    assert found == ["trusted", "invalid", "consistent"]


def test_printed_commands_pasted_into_bash_give_the_same_result(demo: DemoRun) -> None:
    """The export lines and a few commands exactly as printed, in a fresh bash, on a copy
    of the kept vaults: the only edit is the copy's path in `export DEMO=`."""
    copy = demo.tmp / "copy"
    shutil.copytree(demo.work, copy)
    exports = [c for c in demo.commands if c.startswith("export ")]
    exports[0] = f"export DEMO={copy}"
    office = '--vault "$DEMO"/office-vault'
    pasted = [
        f"evault body list {office}",
        f"evault report sharing {office}",
        f"evault doctor {office}",
        next(c for c in demo.commands if c.startswith('EVAULT_HOME="$DEMO"/auditor')),
    ]
    for command in pasted:
        script = "\n".join([*exports, command])
        proc = subprocess.run(
            ["bash", "-e", "-c", script], env=clean_env(), capture_output=True, text=True
        )
        assert proc.returncode == 0, f"{command}: {proc.stderr}"
        got = proc.stdout.replace(str(copy), "$DEMO").splitlines()
        shown = demo.output_of(command, last=True)
        assert got and got == shown[: len(got)], command


def test_the_team_vault_keeps_its_blobs_in_a_bucket(demo: DemoRun) -> None:
    """Step 10 ran (the test extras install boto3 and SeaweedFS's weed): the team vault's
    three files went to the bucket under Object Lock, and doctor finds every blob there."""
    assert "   (not run here" not in demo.stdout
    [init] = [c for c in demo.commands if c.startswith('evault init --vault "$DEMO"/team-vault')]
    bucket = init.split("--blobs ", 1)[1].split()[0]
    assert init.endswith("--object-lock compliance --retain-days 1")
    shown = demo.output_of('evault doctor --vault "$DEMO"/team-vault')
    for line in (f"blob_store:       {bucket}", "object_lock:      compliance:1",
                 "blobs:            3", "blobs_missing:    0", "orphaned_blobs:   0"):
        assert line in shown
    assert not (demo.work / "team-vault" / "blobs").exists()


# What the demo types as titles, sources, places, references and purposes (scripts/demo.py).
DEMO_SECRETS = [
    "Fictional shelling of a school",
    "Witness statement W-1 (fictional)",
    "Fictional regional prosecutor's office",
    "Fictional town",
    "Fictional field team",
    "OTP-REQ-2026-017",
    "Fictional request for assistance",
    "witness-statement-W1.txt",
]


def test_no_vault_database_of_the_demo_holds_its_metadata_in_clear(demo: DemoRun) -> None:
    """Issue 14: a thief of a database (or a backup of it) reads none of the demo's titles,
    sources, places, file names, references or purposes; the sender's and the recipients'."""
    printed = demo.stdout
    assert all(secret in printed for secret in DEMO_SECRETS[:4])  # the demo does use them
    files = [f for name in VAULTS for f in (demo.work / name).glob("vault.db*")]
    assert len(files) >= len(VAULTS)
    for db_file in files:
        data = db_file.read_bytes()
        found = [s for s in DEMO_SECRETS
                 if s.encode() in data or s.encode("utf-16-le") in data]
        assert found == [], f"{db_file.relative_to(demo.work)} holds {found}"
