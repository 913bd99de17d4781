"""The bad-input corpus (tests/corpus): every file gets its declared exit code and a one-line
reason, with no traceback, nothing written outside ``--out``, and bounded memory and time.

The expectations are data: the tables of tests/corpus/README.md. The commands run in
subprocesses with ``RLIMIT_AS`` and a timeout (tests/test_robustness.py's ``run_evault``):
``evault verify`` for many files at once, and a small driver that runs the in-vault commands
(``open``, ``contact add``, ``ingest --manifest``, ``export --plan``, ...) one after the other
in one limited process, each through click's runner, so that a file's traceback is caught
and reported as such. The age test vectors are wrapped into validly signed packages at test
time and go through ``evault verify --as``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_PASSPHRASE, Cli
from test_robustness import evault_env, limit_resources, run_evault

from vault.crypto.age import AgeIdentity
from vault.crypto.keys import SigningKey

CORPUS = Path(__file__).resolve().parent / "corpus"
sys.path.insert(0, str(CORPUS))
import make_corpus as mc  # noqa: E402

TRUSTED = CORPUS / "keys" / "allowed_signers"
FOLDERS = {"Packages": "packages", "Documents": "documents", "Input files": "inputs"}


# ----------------------------------------------------------------------------- the tables


def read_tables() -> dict[str, list[dict[str, str]]]:
    """README.md's tables, per section: one dict per row, keyed by column name."""
    tables: dict[str, list[dict[str, str]]] = {}
    section = None
    header: list[str] = []
    for line in (CORPUS / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = next(v for k, v in FOLDERS.items() if line[3:].startswith(k))
            header = []
            continue
        if not line.startswith("|") or section is None:
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "file":
            header = cells
        elif header and not set(cells[0]) <= set("- "):
            row = dict(zip(header, cells, strict=True))
            row["file"] = row["file"].strip("`")
            tables.setdefault(section, []).append(row)
    return tables


TABLES = read_tables()


def test_every_corpus_file_has_a_row_and_the_corpus_is_small() -> None:
    listed = {f"{folder}/{row['file']}" for folder, rows in TABLES.items() for row in rows}
    present = {
        str(p.relative_to(CORPUS)) for folder in FOLDERS.values()
        for p in (CORPUS / folder).iterdir()
        if not p.name.endswith(".sig") and p.name != "a.txt"
    }
    assert listed == present
    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    assert total < 2 * 1024 * 1024


# ----------------------------------------------------------------------------- running


DRIVER = r"""
import json, sys, traceback
from click.testing import CliRunner
from vault.cli import cli
results = []
for argv in json.load(sys.stdin):
    r = CliRunner().invoke(cli, argv, catch_exceptions=True)
    crash = None
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        crash = "".join(traceback.format_exception(r.exception))
    results.append({"exit": r.exit_code, "stdout": r.stdout, "stderr": r.stderr, "crash": crash})
json.dump(results, sys.stdout)
"""


def drive(commands: list[list[str]], timeout: float = 180) -> list[dict[str, Any]]:
    """Run many evault command lines in one subprocess under the resource limits."""
    proc = subprocess.run([sys.executable, "-c", DRIVER], input=json.dumps(commands),
                          env=evault_env(), capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit_resources)
    assert proc.returncode == 0, proc.stderr
    results: list[dict[str, Any]] = json.loads(proc.stdout)
    return results


def one_line(err: str) -> bool:
    return err.startswith("evault: ") and err.endswith("\n") and err.count("\n") == 1


@dataclass
class Recipient:
    """A vault whose identity holds the corpus officer's keys and knows the corpus sender."""

    cli: Cli
    root: Path


@pytest.fixture(scope="module")
def recipient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recipient]:
    root = tmp_path_factory.mktemp("corpus")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("EVAULT_KEY_STORAGE", "file")
        env.setenv("EVAULT_PASSPHRASE", TEST_PASSPHRASE)
        env.setenv("EVAULT_HOME", str(root / "no-default-vault"))
        env.setattr("vault.crypto.secretbox.DEFAULT_WORK_FACTOR", 10)
        cli = Cli(root / "vault")
        cli.init()
        with pytest.MonkeyPatch.context() as keys:
            keys.setattr(SigningKey, "generate", staticmethod(lambda: mc.OFFICER))
            keys.setattr(AgeIdentity, "generate", staticmethod(lambda **_: mc.OFFICER_AGE))
            cli.ok("identity", "create", mc.OFFICER_NAME)
        cli.ok("contact", "add", str(CORPUS / "documents" / "sender.card.json"),
               "--fingerprint", mc.SENDER.public.fingerprint)
        yield Recipient(cli, root)


def verify_lines(files: list[Path], *extra: str, vault: Path | None = None) -> dict[str, str]:
    """``evault verify FILE...`` in one limited subprocess: file -> its one output line."""
    env = evault_env(EVAULT_HOME=str(files[0].parent / "no-such-vault"))
    proc = subprocess.run(
        [sys.executable, "-m", "vault", "verify", *map(str, files), *extra,
         *(["--vault", str(vault)] if vault else [])],
        env=env, capture_output=True, text=True, timeout=180, preexec_fn=limit_resources)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stdout.splitlines()
    assert len(lines) == len(files), proc.stdout  # one line per file, whatever it holds
    failed = sum(not line.startswith("OK: ") for line in lines)
    assert proc.returncode == (3 if failed else 0)
    if failed:
        assert proc.stderr == f"evault: {failed} of {len(files)} file(s) did not verify\n"
    return {str(f): line for f, line in zip(files, lines, strict=True)}


def check_verify_line(line: str, path: Path, code: str, reason: str) -> str | None:
    """A mismatch between one verify line and the table, or None."""
    if code == "0":
        return None if line.startswith(f"OK: {path} (") else f"expected OK, got {line!r}"
    if not line.startswith(f"FAIL: {path}: "):
        return f"expected FAIL, got {line!r}"
    # verify recognises a file by its content: where the damage hides what the file is, it
    # says so instead of naming the damage.
    if reason and reason not in line and "not an evault file" not in line:
        return f"reason {reason!r} not in {line!r}"
    return None


def snapshot(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


# ----------------------------------------------------------------------------- packages


def test_packages(recipient: Recipient) -> None:
    rows = TABLES["packages"]
    files = [CORPUS / "packages" / r["file"] for r in rows]
    problems: list[str] = []

    for column, lines in (
        ("verify", verify_lines(files, "--trusted-keys", str(TRUSTED))),
        ("verify --as", verify_lines(files, "--as", mc.OFFICER_NAME, vault=recipient.cli.vault)),
    ):
        for row, path in zip(rows, files, strict=True):
            # Without a decryption key the checks behind it are not reached: no reason then.
            reason = row["reason"] if row[column] == "3" and (
                column == "verify --as" or row["open"] == row["verify"]) else ""
            bad = check_verify_line(lines[str(path)], path, row[column], reason)
            if bad:
                problems.append(f"{row['file']} ({column}): {bad}")

    # open: every file into its own --out, the control last; nothing may appear elsewhere.
    outs = recipient.root / "opened"
    before = snapshot(recipient.root)
    order = sorted(range(len(rows)), key=lambda i: rows[i]["open"] == "0")
    commands = [["open", str(files[i]), "--out", str(outs / rows[i]["file"]), "--vault",
                 str(recipient.cli.vault)] for i in order]
    for i, result in zip(order, drive(commands), strict=True):
        row = rows[i]
        if result["crash"]:
            problems.append(f"{row['file']} (open): traceback\n{result['crash']}")
            continue
        if str(result["exit"]) != row["open"]:
            problems.append(f"{row['file']} (open): exit {result['exit']}, expected "
                            f"{row['open']}: {result['stderr']!r}")
        out = outs / row["file"]
        if row["open"] != "0":
            if not one_line(result["stderr"]) or row["reason"] not in result["stderr"]:
                problems.append(f"{row['file']} (open): {result['stderr']!r}")
            if out.exists() and any(out.iterdir()):
                problems.append(f"{row['file']} (open): files left in --out")
    assert not problems, "\n".join(problems)
    # Nothing outside the --out folders (the vault's own files aside), nothing escaped.
    vault_dir = recipient.cli.vault
    new = {p for p in snapshot(recipient.root) - before
           if outs not in p.parents and p != outs and vault_dir not in p.parents}
    assert new == set()
    assert not Path("/tmp/evault-corpus-escaped.txt").exists()
    assert not (recipient.root / "escaped.txt").exists()
    items = json.loads(recipient.cli.ok("items", "list", "--json").stdout)
    assert len(items) == 4  # only the two control packages' items were received
    assert recipient.cli.ok("custody", "verify").exit_code == 0


# ----------------------------------------------------------------------------- documents


def test_documents(recipient: Recipient) -> None:
    rows = TABLES["documents"]
    files = [CORPUS / "documents" / r["file"] for r in rows]
    problems = []
    lines = verify_lines(files, "--trusted-keys", str(TRUSTED))
    for row, path in zip(rows, files, strict=True):
        bad = check_verify_line(lines[str(path)], path, row["verify"], row["reason"])
        if bad:
            problems.append(f"{row['file']} (verify): {bad}")
    cards = [(row, path) for row, path in zip(rows, files, strict=True) if row["contact add"]]
    results = drive([["contact", "add", str(path), "--vault", str(recipient.cli.vault)]
                     for _, path in cards])
    for (row, _), result in zip(cards, results, strict=True):
        if result["crash"] or str(result["exit"]) != row["contact add"] or not one_line(
                result["stderr"]) or row["reason"] not in result["stderr"]:
            problems.append(f"{row['file']} (contact add): {result}")
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------- input files


def test_input_files(recipient: Recipient, tmp_path: Path) -> None:
    rows = TABLES["inputs"]
    inputs = CORPUS / "inputs"
    vault = str(recipient.cli.vault)
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    recipient.cli("body", "add", "ICC-OTP", "--name", "Fictional ICC-OTP")
    commands = []
    for row in rows:
        path = inputs / row["file"]
        if row["command"] == "ingest":
            commands.append(["ingest", "--manifest", str(path), "--case", "X-1",
                             "--create-case", "--vault", vault])
        elif row["command"] == "export":
            commands.append(["export", "--plan", str(path), "--outbox", str(outbox),
                             "--vault", vault])
        elif row["command"] == "config":
            folder = tmp_path / f"config-{row['file']}"
            folder.mkdir()
            shutil.copy(path, folder / "config.toml")
            commands.append(["doctor", "--vault", str(folder)])
        else:
            checkpoint = str(CORPUS / "documents" / "checkpoint.txt")
            commands.append(["custody", "consistency", checkpoint, checkpoint, "--proof",
                             str(path), "--trusted-keys", str(TRUSTED)])
    items_before = recipient.cli.ok("items", "list", "--json").stdout
    problems = []
    for row, result in zip(rows, drive(commands), strict=True):
        if result["crash"] or str(result["exit"]) != row["exit"] or not one_line(
                result["stderr"]) or row["reason"] not in result["stderr"]:
            problems.append(f"{row['file']} ({row['command']}): {result}")
    assert not problems, "\n".join(problems)
    assert recipient.cli.ok("items", "list", "--json").stdout == items_before
    assert list(outbox.iterdir()) == []


# ----------------------------------------------------------------------------- large inputs


def test_bombs_stay_bounded_in_a_real_process(recipient: Recipient, tmp_path: Path) -> None:
    """Declared sizes far beyond the limits, and files too large to be documents: each is
    refused at its header, in a real process under RLIMIT_AS, in seconds."""
    big = tmp_path / "huge-ack.json"
    with open(big, "wb") as f:  # 17 MiB, sparse: costs no disk
        f.write(b'{"type":"evault-acknowledgement","x":"')
        f.truncate(17 * 1024 * 1024)
    Path(f"{big}.sig").write_bytes(b"\0" * 10)
    huge_sig = tmp_path / "receipt.json"
    shutil.copy(CORPUS / "documents" / "receipt.json", huge_sig)
    with open(f"{huge_sig}.sig", "wb") as f:
        f.truncate(64 * 1024 * 1024)
    lines = verify_lines([big, huge_sig], "--trusted-keys", str(TRUSTED))
    assert "larger than" in lines[str(big)]
    assert lines[str(huge_sig)].startswith(f"FAIL: {huge_sig}: ")
    for name in ("tar-bomb-payload-size.evpkg", "signed-declared-1tib.evpkg"):
        out = tmp_path / f"out-{name}"
        proc = run_evault("open", str(CORPUS / "packages" / name), "--out", str(out),
                          vault=recipient.cli.vault, timeout=60)
        assert proc.returncode == 3 and one_line(proc.stderr), proc.stderr
        assert not out.exists() or list(out.iterdir()) == []


# ----------------------------------------------------------------------------- age vectors


def test_age_vectors_through_verify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every X25519 age test vector as the payload of a validly signed package, checked by
    ``evault verify --as``: each gives one FAIL line (the vectors' plaintexts are no bags),
    header, HMAC, armor and no-match failures as a payload that does not decrypt, and none
    a traceback."""
    from test_age_vectors import TESTDATA, load

    from vault.formats import package as fmt

    vectors = [load(p) for p in sorted(TESTDATA.iterdir())]
    main_identity = "AGE-SECRET-KEY-1EGTZVFFV20835NWYV6270LXYVK2VKNX2MMDKWYKLMGR48UAWX40Q2P2LM0"
    vectors = [v for v in vectors if v.identities == [main_identity] and not v.passphrase]
    assert len(vectors) > 80
    identity = AgeIdentity.parse(main_identity)
    cli = Cli(tmp_path / "vault")
    cli.init()
    with monkeypatch.context() as keys:
        keys.setattr(AgeIdentity, "generate", staticmethod(lambda **_: identity))
        fp = json.loads(cli.ok("identity", "create", "vector-holder", "--json").stdout)[
            "fingerprint"]
    recipient = fmt.RecipientKey(fp, str(identity.recipient))
    files = []
    folder = tmp_path / "vectors"
    folder.mkdir()
    for n, vector in enumerate(vectors):
        payload = folder / f"{vector.name}.payload"
        payload.write_bytes(vector.body)
        pid = f"PKG-{n:012d}"
        envelope = fmt.Envelope(
            package_id=pid, sender=mc.PARTY, body="ICC-OTP", recipients=(recipient,),
            escrow=mc.ESCROW, created_at=mc.CREATED, payload_size=len(vector.body),
            payload_sha256=hashlib.sha256(vector.body).hexdigest(), checkpoint=mc.CHECKPOINT)
        data, sig = fmt.sign_envelope(envelope, mc.SENDER)
        target = folder / f"{vector.name}.evpkg"
        fmt.write_package(target, data, sig, payload)
        files.append(target)
    lines = verify_lines(files, "--as", "vector-holder", "--trusted-keys", str(TRUSTED),
                         vault=cli.vault)
    problems = []
    for vector, path in zip(vectors, files, strict=True):
        line = lines[str(path)]
        undecryptable = "does not decrypt or authenticate" in line
        # A payload failure may come after a first chunk that decrypted: the bag reader can
        # meet its non-tar plaintext first, and either reason is right.
        wrong = {"success": undecryptable, "payload failure": False}.get(
            vector.expect, not undecryptable)
        if not line.startswith(f"FAIL: {path}: ") or wrong:
            problems.append(f"{vector.name} (expect {vector.expect}): {line}")
    assert not problems, "\n".join(problems)


def test_corpus_generator_matches_the_committed_keys() -> None:
    """The committed allowed_signers and card are those of the generator's fixed keys."""
    text = TRUSTED.read_text()
    assert mc.SENDER.public.openssh() in text and mc.OFFICER.public.openssh() in text
    card = json.loads((CORPUS / "documents" / "sender.card.json").read_text())
    assert card["fingerprint"] == mc.SENDER.public.fingerprint
    assert re.fullmatch(r"PKG-[0-9]{12}", mc.package_id(7))


def generated_files(root: Path) -> dict[str, bytes]:
    """Every file of the generated folders under ``root``, by path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for folder in mc.FOLDERS
            for p in (root / folder).rglob("*") if p.is_file()}


def test_the_corpus_is_what_its_generator_makes(tmp_path: Path) -> None:
    """Regenerated into a temporary folder, the corpus is the committed one: the same file
    names and the same bytes (the generator is deterministic; README.md says how to
    regenerate after a change to it)."""
    mc.generate(tmp_path)
    made, committed = generated_files(tmp_path), generated_files(CORPUS)
    assert sorted(made) == sorted(committed)
    assert [name for name in sorted(made) if made[name] != committed[name]] == []


@pytest.mark.postgres
def test_values_too_long_for_postgresql_are_refused_in_one_line(pg_url: str,
                                                                 tmp_path: Path) -> None:
    """PostgreSQL enforces column lengths; an over-long name is the user's input, refused
    with one line (exit 2), not a DataError traceback; nothing is written."""
    from test_robustness import assert_refusal

    cli = Cli(tmp_path / "vault")
    cli.ok("init", "--db", pg_url)
    assert_refusal(cli("identity", "create", "a", "--org", "o" * 300), 2,
                   "a value of identities does not fit its field", "shorten it")
    cli.ok("identity", "create", "registry-office")
    assert_refusal(cli("body", "add", "ICC-OTP", "--name", "n" * 300), 2, "bodies")
    assert_refusal(cli("case", "create", CASE_ID, "--title", "t" * 600), 2, "cases")
    assert json.loads(cli.ok("body", "list", "--json").stdout) == []
    assert json.loads(cli.ok("case", "list", "--json").stdout) == []
    assert cli.ok("custody", "verify").stdout.startswith("OK: 1 events")


CASE_ID = "UA-2026-0042"


def test_pipes_planted_in_a_drop_folder_do_not_block(recipient: Recipient, tmp_path: Path) -> None:
    """A named pipe where an ack, its signature, a card or a package is expected is refused
    at once (reading it would wait forever for a writer). ``--trusted-keys`` is not in this
    list: it names a file the user chose, and reads a pipe (tests/test_messages.py)."""
    import os

    pipe = tmp_path / "ack.json"
    os.mkfifo(pipe)
    ack = tmp_path / "real-ack.json"
    shutil.copy(CORPUS / "documents" / "ack.json", ack)
    os.mkfifo(f"{ack}.sig")
    vault = str(recipient.cli.vault)
    commands = [["receipt", "import", str(pipe), "--vault", vault],
                ["receipt", "import", str(ack), "--vault", vault],
                ["contact", "add", str(pipe), "--vault", vault],
                ["body", "key", "add", "ICC-OTP", "--card", str(pipe), "--vault", vault],
                ["open", str(pipe), "--out", str(tmp_path / "out"), "--vault", vault],
                ["verify", str(pipe), "--trusted-keys", str(TRUSTED)]]
    for argv, result in zip(commands, drive(commands, timeout=60), strict=True):
        assert not result["crash"], result["crash"]
        assert result["exit"] in (1, 2, 3), (argv, result)
        assert one_line(result["stderr"]), (argv, result)
