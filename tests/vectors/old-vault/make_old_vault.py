"""Make tests/vectors/old-vault/vault: a small vault as evault made it before keys came only
through signed history (issue 14), so that tests can open it with today's code.

Run it with the code of that time first on the path, e.g. from a checkout of the commit
before the key history (8740842):

    PYTHONPATH=/path/to/that/checkout .venv/bin/python tests/vectors/old-vault/make_old_vault.py

Everything in it is fictional. The key file is sealed with the test passphrase of
tests/conftest.py at the lowest scrypt cost the reader accepts; never use its keys elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from click.testing import CliRunner

HERE = Path(__file__).resolve().parent
PASSPHRASE = "fictional test passphrase"


def main() -> None:
    import vault.crypto.secretbox
    from vault.cli import cli

    vault.crypto.secretbox.DEFAULT_WORK_FACTOR = 10  # type: ignore[misc]
    work = Path(tempfile.mkdtemp())
    os.environ.update(EVAULT_HOME=str(work / "home"), EVAULT_KEY_STORAGE="file",
                      EVAULT_PASSPHRASE=PASSPHRASE)

    def run(where: Path, *args: str) -> str:
        result = CliRunner().invoke(cli, [*args, "--vault", str(where)], catch_exceptions=False)
        assert result.exit_code == 0, result.stderr
        return result.stdout

    office, partner = work / "vault", work / "partner"
    for v in (office, partner):
        run(v, "init")
    for name in ("officer-one", "officer-two", "partner-sender"):
        run(partner, "identity", "create", name, "--org", "Fictional Tribunal of Examples")
        run(partner, "identity", "export", name, "-o", str(work / f"{name}.card.json"))
    run(office, "identity", "create", "registry-office", "--org", "Fictional Ministry")
    run(office, "identity", "create", "field-team")
    run(office, "identity", "rotate", "registry-office")
    (work / "note-01.txt").write_text("Fictional field note, first page.\n")
    run(office, "ingest", str(work / "note-01.txt"), "--case", "FICT-2026-0001",
        "--create-case")
    run(office, "body", "add", "FICT-TRIBUNAL", "--name", "Fictional Tribunal of Examples")
    for name in ("officer-one", "officer-two"):
        run(office, "body", "key", "add", "FICT-TRIBUNAL", "--card",
            str(work / f"{name}.card.json"))
    two = json.loads((work / "officer-two.card.json").read_text())["fingerprint"]
    run(office, "body", "key", "revoke", "FICT-TRIBUNAL", two)
    run(office, "contact", "add", str(work / "partner-sender.card.json"))
    run(office, "identity", "revoke", "field-team")
    run(office, "custody", "checkpoint", "-o", str(work / "checkpoint.txt"))
    target = HERE / "vault"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(office, target)
    shutil.rmtree(work)
    print(f"wrote {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
