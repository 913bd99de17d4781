"""The wheel as a user installs it: built, installed in a fresh venv outside the checkout, run.

`make test-install` runs this (`.ci/run` calls it); `make unit` leaves it out because building
and installing takes a while. It fails, never skips, when it cannot run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from vault.store.db import SCHEMA_HEAD

pytestmark = pytest.mark.install

CHECKOUT = Path(__file__).resolve().parent.parent


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_wheel_installed_outside_the_checkout_runs_the_whole_flow(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("install")
    assert CHECKOUT not in root.parents
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("EVAULT_")}
    base_env.pop("PYTHONPATH", None)

    wheels = root / "wheels"
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(CHECKOUT)],
        root,
        base_env,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("evault-*.whl")

    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    installed = _run([str(env_dir / "bin" / "pip"), "install", "-q", str(wheel)], root, base_env)
    assert installed.returncode == 0, installed.stderr
    evault = str(env_dir / "bin" / "evault")

    work = root / "work"
    work.mkdir()
    env = {
        **base_env,
        "EVAULT_HOME": str(work / "no-default-vault"),
        "EVAULT_KEY_STORAGE": "file",
        "EVAULT_PASSPHRASE": "fictional install-test passphrase",
    }

    def ok(*args: str) -> str:
        proc = _run([evault, *args], work, env)
        assert proc.returncode == 0, f"evault {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    # The package comes from the venv, not from the checkout.
    where = _run(
        [str(env_dir / "bin" / "python"), "-c", "import vault; print(vault.__file__)"], work, env
    )
    assert Path(where.stdout.strip()).is_relative_to(env_dir)

    office, icc = str(work / "office"), str(work / "icc")
    assert "created:  yes\n" in ok("init", "--vault", office)
    ok("init", "--vault", icc)
    assert "up_to_date: yes\n" in ok("db", "current", "--vault", office)
    upgraded = _run([evault, "db", "upgrade", "--vault", office], work, env)
    assert (upgraded.returncode, upgraded.stderr) == (
        0,
        f"evault: database is at {SCHEMA_HEAD} already\n",
    )

    office_id = json.loads(
        ok("identity", "create", "registry-office", "--org", "Fictional Ministry", "--json",
           "--vault", office)
    )
    icc_id = json.loads(
        ok("identity", "create", "icc-officer", "--org", "ICC-OTP", "--json", "--vault", icc)
    )
    icc_card, office_card = work / "icc-officer.card.json", work / "registry-office.card.json"
    ok("identity", "export", "icc-officer", "-o", str(icc_card), "--vault", icc)
    ok("identity", "export", "registry-office", "-o", str(office_card), "--vault", office)

    ok("body", "add", "ICC-OTP", "--name", "Fictional court office", "--vault", office)
    ok("body", "key", "add", "ICC-OTP", "--card", str(icc_card), "--fingerprint",
       icc_id["fingerprint"], "--vault", office)
    ok("case", "create", "CASE-1", "--title", "Fictional case", "--vault", office)
    sample = work / "statement.txt"
    sample.write_text("FICTIONAL SAMPLE - NOT REAL EVIDENCE\n", encoding="utf-8")
    ok("ingest", str(sample), "--case", "CASE-1", "--source", "Fictional field team",
       "--vault", office)
    package = work / "icc.evpkg"
    ok("package", "create", "--to", "ICC-OTP", "--case", "CASE-1", "--reference", "REQ-1",
       "--purpose", "Fictional request", "-o", str(package), "--vault", office)

    ok("contact", "add", str(office_card), "--fingerprint", office_id["fingerprint"],
       "--vault", icc)
    received = work / "received"
    ok("open", str(package), "--out", str(received), "--vault", icc)
    assert [p.read_bytes() for p in received.rglob("statement.txt")] == [sample.read_bytes()]
    verified = ok("verify", str(package), "--as", "icc-officer", "--vault", icc)
    assert verified.startswith(f"OK: {package}")
