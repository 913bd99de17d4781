"""Messages that misled a first-time user (issue 13): each refusal names the real object.

Every test runs the real CLI and asserts the exact line on stderr and the exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import TEST_PASSPHRASE, Cli
from test_audit import World, auditor, world  # noqa: F401  (the module's fixture)

# ----------------------------------------------------------------------------- -o, missing folder


def test_identity_export_into_a_missing_folder_names_the_folder(
    sqlite_cli: Cli, tmp_path: Path
) -> None:
    sqlite_cli.ok("identity", "create", "registry-office")
    target = tmp_path / "missing" / "dir" / "x"
    result = sqlite_cli("identity", "export", "-o", str(target))
    assert (result.exit_code, result.stderr) == (
        1, f"evault: {tmp_path}/missing/dir: no such folder for x; create it first\n")
    relative = sqlite_cli("identity", "export", "-o", "missing/dir/x")
    assert (relative.exit_code, relative.stderr) == (
        1, "evault: missing/dir: no such folder for x; create it first\n")


def test_every_command_writing_a_file_names_the_missing_folder(world: World) -> None:  # noqa: F811
    missing = world.tmp / "no-such-folder"
    target = str(missing / "out.txt")
    line = f"evault: {missing}: no such folder for out.txt; create it first\n"
    commands = [
        (world.office, ("custody", "checkpoint", "-o", target)),
        (world.office, ("receipt", "export", world.receipt_id, "-o", target)),
        (world.office, ("package", "sheet", world.package_id, "-o", target)),
        (world.office, ("report", "custody", world.items[0], "--format", "md", "-o", target)),
        (world.office, ("items", "export", world.items[0], "-o", target, "--reason", "review")),
        (world.office, ("package", "create", "--to", "ICC-OTP", "--item", world.items[0],
                        "-o", target)),
        (world.office, ("custody", "consistency", str(world.receipt), str(world.checkpoint),
                        "-o", target)),
        (world.icc, ("ack", world.package_id, "-o", target)),
    ]
    vaults = (world.office, world.icc)
    before = [cli.ok("custody", "verify").stdout for cli in vaults]
    for cli, args in commands:
        result = cli(*args)
        assert (result.exit_code, result.stderr) == (1, line), args
    assert not missing.exists()
    # Nothing was logged by any of the refusals.
    assert [cli.ok("custody", "verify").stdout for cli in vaults] == before


# ----------------------------------------------------------------------------- ingest, --case


def test_ingest_with_a_case_and_no_files_says_what_to_give(sqlite_cli: Cli, tmp_path: Path) -> None:
    result = sqlite_cli("ingest", "--case", "C")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == "Error: give files to ingest, or --manifest FILE"
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,case\n")
    both = sqlite_cli("ingest", str(manifest), "--manifest", str(manifest))
    assert both.exit_code == 2
    assert both.stderr.splitlines()[-1] == (
        "Error: give files to ingest or --manifest FILE, not both")


def test_an_unknown_case_is_named_by_every_command_that_takes_one(
    sqlite_cli: Cli, tmp_path: Path
) -> None:
    sqlite_cli.ok("identity", "create", "registry-office")
    sqlite_cli.ok("case", "create", "UA-2026-0042")
    sqlite_cli.ok("body", "add", "ICC-OTP", "--name", "Fictional court")
    icc = Cli(tmp_path / "icc")
    icc.init()
    icc.ok("identity", "create", "icc-officer")
    card = tmp_path / "icc.card.json"
    icc.ok("identity", "export", "-o", str(card))
    sqlite_cli.ok("body", "key", "add", "ICC-OTP", "--card", str(card))
    line = "evault: case TYPO: not found; see `evault case list`\n"
    for args in (("items", "list", "--case", "TYPO"),
                 ("items", "list", "--case", "TYPO", "--json"),
                 ("case", "show", "TYPO"),
                 ("package", "create", "--to", "ICC-OTP", "--case", "TYPO",
                  "-o", str(tmp_path / "p.evpkg"))):
        result = sqlite_cli(*args)
        assert (result.exit_code, result.stdout, result.stderr) == (1, "", line), args
    # A case that exists but is empty is still an empty list, not an error.
    assert sqlite_cli.ok("items", "list", "--case", "UA-2026-0042", "--json").stdout == "[]\n"


# ----------------------------------------------------------------------------- not UTF-8


def _not_utf8(name: str, byte: str) -> str:
    return (f"evault: {name}: not valid UTF-8 (byte {byte}); pass it as UTF-8 (check the "
            "encoding of the terminal or script)\n")


def test_a_text_option_or_argument_that_is_not_utf8_is_one_usage_line(
    sqlite_cli: Cli, tmp_path: Path
) -> None:
    """A byte that is not UTF-8 on the command line (``--org $'\\xff'`` in bash) reaches
    Python as a lone surrogate; the command traced back where the text met the database
    (UnicodeEncodeError). Every text option and argument is now refused before any command
    runs; a path may still be any bytes."""
    for args, line in [
        (("identity", "create", "officer", "--org", "Minist\udce8re"), _not_utf8("--org", "0xe8")),
        (("case", "create", "UA-\udcff"), _not_utf8("argument CASE", "0xff")),
        (("body", "add", "ICC-OTP", "--name", "\udcc3"), _not_utf8("--name", "0xc3")),
        (("items", "list", "--label", "ok", "--case", "\udcfe"), _not_utf8("--case", "0xfe")),
    ]:
        result = sqlite_cli(*args)
        assert (result.exit_code, result.stdout, result.stderr) == (2, "", line), args
    assert sqlite_cli.ok("identity", "list", "--json").stdout == "[]\n"
    assert sqlite_cli.ok("case", "list", "--json").stdout == "[]\n"
    # From the bytes themselves, as bash passes them to a real process.
    quoted = f"'{sqlite_cli.vault}'"
    org = _evault(shell=f"$EVAULT identity create officer --org $'\\xff' --vault {quoted}",
                  cwd=tmp_path)
    case = _evault(shell=f"$EVAULT case create $'UA-\\xff' --vault {quoted}", cwd=tmp_path)
    assert [(r.returncode, r.stdout, r.stderr.decode()) for r in (org, case)] == [
        (2, b"", _not_utf8("--org", "0xff")), (2, b"", _not_utf8("argument CASE", "0xff"))]
    # A path evault records (the body's SFTP key, in the database and a signed event) is
    # text: it traced back in the database's driver.
    sqlite_cli.ok("identity", "create", "registry-office")
    sqlite_cli.ok("body", "add", "ICC-OTP", "--name", "Fictional Court")
    recorded = sqlite_cli("body", "set", "ICC-OTP", "--outbox", "sftp://drop@127.0.0.1/in",
                          "--identity-file", "/tmp/key-\udcff")
    assert (recorded.exit_code, recorded.stdout, recorded.stderr) == (
        2, "", _not_utf8("--identity-file", "0xff"))
    # A path that is not UTF-8 is still a path (only text is refused).
    elsewhere = _evault(shell="$EVAULT identity list --vault $'no-\\xff'", cwd=tmp_path)
    missing = f"{tmp_path}/no-\\xff".encode()
    assert (elsewhere.returncode, elsewhere.stderr) == (
        1, b"evault: no vault at %s: run `evault init --vault %s` or pass --vault\n"
        % (missing, missing))


# ----------------------------------------------------------------------------- --trusted-keys


def _evault(*args: str, stdin: bytes | None = None, shell: str | None = None,
            cwd: Path) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "EVAULT_HOME": str(cwd / "no-vault"), "EVAULT_KEY_STORAGE": "file",
           "EVAULT_PASSPHRASE": TEST_PASSPHRASE}
    # The installed command, not `python -m vault`: that puts the working folder first on
    # the import path, where a folder named "vault" (a test's vault) would shadow the code.
    argv = [str(Path(sys.executable).with_name("evault")), *args]
    if shell is not None:
        return subprocess.run(["bash", "-c", shell], env={**env, "EVAULT": argv[0]},
                              input=stdin, capture_output=True, cwd=cwd, timeout=60)
    return subprocess.run(argv, env=env, input=stdin, capture_output=True, cwd=cwd, timeout=60)


def test_trusted_keys_reads_stdin_a_fifo_and_process_substitution(
    world: World, tmp_path: Path  # noqa: F811
) -> None:
    receipt = str(world.receipt)
    want = f"OK: {receipt} (sharing receipt"

    from_stdin = _evault("verify", receipt, "--trusted-keys", "/dev/stdin",
                         stdin=world.allowed.read_bytes(), cwd=tmp_path)
    assert (from_stdin.returncode, from_stdin.stderr) == (0, b"")
    assert from_stdin.stdout.decode().startswith(want)

    substituted = _evault(shell=f'$EVAULT verify "{receipt}" --trusted-keys <(cat '
                                f'"{world.allowed}")', cwd=tmp_path)
    assert (substituted.returncode, substituted.stderr) == (0, b"")
    assert substituted.stdout.decode().startswith(want)

    fifo = tmp_path / "allowed.fifo"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["cp", str(world.allowed), str(fifo)])
    try:
        through_fifo = _evault("verify", receipt, "--trusted-keys", str(fifo), cwd=tmp_path)
    finally:
        writer.wait(timeout=60)
    assert (through_fifo.returncode, through_fifo.stderr) == (0, b"")
    assert through_fifo.stdout.decode().startswith(want)

    # The other option that reads a trust file reads a pipe as well.
    proof = tmp_path / "proof.json"
    world.office.ok("custody", "consistency", str(world.receipt), str(world.checkpoint),
                    "-o", str(proof))
    consistency = _evault(shell=f'$EVAULT custody consistency "{world.receipt}" '
                                f'"{world.checkpoint}" --proof "{proof}" --trusted-keys '
                                f'<(cat "{world.allowed}")', cwd=tmp_path)
    assert (consistency.returncode, consistency.stderr) == (0, b"")
    assert consistency.stdout.decode().startswith("OK: the log grew from ")


def test_trusted_keys_that_never_end_are_refused(world: World) -> None:  # noqa: F811
    code, _, stderr = auditor("verify", str(world.receipt), "--trusted-keys", "/dev/zero")
    assert (code, stderr) == (
        2, "evault: /dev/zero: more than 1 MiB; not an allowed_signers text file\n")


# ----------------------------------------------------------------------------- --as hint


def _second_vault(tmp: Path, sender: World, *identities: str) -> Cli:
    """A vault that trusts the office but holds none of ICC-OTP's keys."""
    other = Cli(tmp / "other")
    other.init()
    for name in identities:
        other.ok("identity", "create", name)
    other.ok("contact", "add", str(sender.office_card), "--fingerprint", sender.office_fp)
    return other


def test_a_package_for_another_body_names_that_body_when_one_identity(
    world: World, tmp_path: Path  # noqa: F811
) -> None:
    other = _second_vault(tmp_path, world, "opg-officer")
    line = (f"package {world.package_id}: not for this vault; it is encrypted to ICC-OTP "
            f"({world.icc_fp}), not to opg-officer, the only identity here; ask its sender "
            "for a package to your key")
    out = tmp_path / "out"
    opened = other("open", str(world.package), "--out", str(out))
    assert (opened.exit_code, opened.stderr) == (3, f"evault: {line}\n")
    assert not out.exists() or list(out.iterdir()) == []
    checked = other("verify", str(world.package), "--as", "opg-officer")
    assert checked.exit_code == 3
    assert checked.stdout == f"FAIL: {world.package}: {line}\n"


def test_with_several_identities_the_hint_is_as(world: World, tmp_path: Path) -> None:  # noqa: F811
    other = _second_vault(tmp_path, world, "opg-officer", "opg-deputy")
    opened = other("open", str(world.package), "--out", str(tmp_path / "out"))
    assert (opened.exit_code, opened.stderr) == (
        3, f"evault: package {world.package_id}: no identity of this vault matched; is this "
        "package for ICC-OTP? try --as NAME\n")


# ----------------------------------------------------------------------------- acks


def test_the_same_ack_imported_twice_is_already_acknowledged(
    world: World, tmp_path: Path  # noqa: F811
) -> None:
    # The world's office imported world.ack once already.
    before = world.office.ok("custody", "verify").stdout
    again = world.office("receipt", "import", str(world.ack))
    assert (again.exit_code, again.stderr) == (
        0, f"evault: package {world.package_id} already acknowledged by icc-officer of "
        "ICC-OTP; this acknowledgement was imported before, nothing changed\n")
    data = json.loads(world.office.ok("receipt", "import", str(world.ack), "--json").stdout)
    assert data["already_acknowledged"] is True and data["state"] == "acknowledged"
    assert world.office.ok("custody", "verify").stdout == before  # nothing logged

    # A different acknowledgement of the same package is still refused as a replay.
    second = tmp_path / "second-ack.json"
    world.icc.ok("ack", world.package_id, "-o", str(second))
    replay = world.office("receipt", "import", str(second))
    assert replay.exit_code == 3
    assert replay.stderr.startswith(f"evault: ack for package {world.package_id}: an "
                                    "acknowledgement was imported already at ")
    assert replay.stderr.endswith("; this one is a replay\n")

