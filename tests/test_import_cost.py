"""Which optional heavy libraries each command loads (issue 23): the SFTP client, the S3
client, the C2PA library, the RFC 3161 client and the RDF tools stay off the import path of
every command that does not use them.

One fresh interpreter runs the everyday commands in turn, from an empty vault to a package
and its CASE/UCO export, and after each lists which of :data:`HEAVY` it has loaded; a library
that appears is named with the command that loaded it. That each command needing one does
load it is the libraries' own tests' to show (test_sftp, test_s3_blobs, test_provenance,
test_timestamps).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import Cli

#: The optional heavy libraries, and what loads each.
HEAVY = {
    "paramiko": "delivery to an SFTP outbox",
    "boto3": "blobs on S3",
    "botocore": "blobs on S3",
    "c2pa": "an intake that meets a media file",
    "rfc3161_client": "a checkpoint time-stamp or a token check",
    "rdflib": "nothing: the CASE/UCO export is written with json",
    "pyshacl": "nothing",
    "case_utils": "nothing",
}

_RUNNER = """\
import json, sys
from vault.cli import cli
heavy = json.loads(sys.argv[2])
seen = []
for argv in json.loads(sys.argv[1]):
    try:
        cli.main(argv, prog_name='evault')
    except SystemExit as e:
        assert not e.code, (argv, e.code)
    seen.append([argv[0] + ' ' + argv[1], sorted(m for m in heavy if m in sys.modules)])
print('LOADED', json.dumps(seen))
"""


def test_each_everyday_command_loads_none_of_the_heavy_libraries(sqlite_cli: Cli,
                                                                   tmp_path: Path) -> None:
    vault = str(sqlite_cli.vault)
    sqlite_cli.ok("identity", "create", "registry-office")
    icc = Cli(tmp_path / "icc").init()
    icc.ok("identity", "create", "icc-officer")
    icc.ok("identity", "export", "icc-officer", "-o", str(tmp_path / "card.json"))
    sqlite_cli.ok("body", "add", "ICC-OTP", "--name", "Fictional ICC-OTP")
    sqlite_cli.ok("body", "key", "add", "ICC-OTP", "--card", str(tmp_path / "card.json"))
    (tmp_path / "statement.txt").write_text("fictional statement\n")
    package = str(tmp_path / "p.evpkg")
    commands = [
        ["items", "list"],
        ["case", "create", "UA-2026-0042"],
        ["ingest", str(tmp_path / "statement.txt"), "--case", "UA-2026-0042"],
        ["items", "show", "--help"],
        ["custody", "verify"],
        ["package", "create", "--to", "ICC-OTP", "--case", "UA-2026-0042", "-o", package],
        ["export-case-uco", "--case", "UA-2026-0042", "-o", str(tmp_path / "case.jsonld")],
        ["doctor", "--help"],
    ]
    argvs = [[*c, "--vault", vault] if c[-1] != "--help" else c for c in commands]
    out = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps(argvs),
                          json.dumps(sorted(HEAVY))], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.splitlines()[-1].removeprefix("LOADED "))
    loaded = {command: modules for command, modules in seen if modules}
    assert loaded == {}, {c: [f"{m} ({HEAVY[m]})" for m in ms] for c, ms in loaded.items()}
