"""Sending to a body's SFTP drop, against a real OpenSSH server (tests/sftp_server.py).

No mock of the server: each test talks to ``/usr/sbin/sshd`` on 127.0.0.1 with a throwaway
host key, logging in as the chrooted ``nobody`` with a throwaway client key. A dropped
connection is a killed sshd session process; a file changed on the server is changed in
the server's folder while evault waits at a named step (``EVAULT_PAUSE_AT``, SIGUSR1 to go
on); a full disk is a small tmpfs as the drop.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Cli
from sftp_server import SftpServer, sftp_unavailable

CASE = "UA-2026-0042"
ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20


@pytest.fixture(scope="module")
def server() -> Iterator[SftpServer]:
    reason = sftp_unavailable()
    if reason:
        pytest.skip(f"no SFTP test server: {reason}")
    with SftpServer() as s:
        yield s


def _office(tmp_path: Path, bodies: tuple[str, ...] = ("ICC-OTP",), size: int = 3 * MIB) -> Cli:
    cli = Cli(tmp_path / "office")
    cli.init()
    cli.ok("identity", "create", "registry-office")
    for body in bodies:
        other = Cli(tmp_path / f"vault-{body}")
        other.init()
        other.ok("identity", "create", f"officer-{body.lower()}")
        card = tmp_path / f"{body}.card.json"
        other.ok("identity", "export", "-o", str(card))
        cli.ok("body", "add", body, "--name", f"Fictional {body}")
        cli.ok("body", "key", "add", body, "--card", str(card))
    evidence = tmp_path / "fictional-evidence.bin"
    evidence.write_bytes(os.urandom(size))
    cli.ok("ingest", str(evidence), "--case", CASE, "--create-case")
    return cli


def _build(cli: Cli, tmp_path: Path, body: str = "ICC-OTP") -> tuple[str, Path]:
    out = tmp_path / f"{body}.evpkg"
    built = json.loads(cli.ok("package", "create", "--to", body, "--case", CASE, "-o", str(out),
                              "--json").stdout)
    return built["id"], out


def _sftp_args(server: SftpServer, drop: str) -> list[str]:
    return ["--outbox", server.url(drop), "--known-hosts", str(server.known_hosts),
            "--identity-file", str(server.client_key)]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _events(cli: Cli, subject: str, action: str) -> list[dict[str, object]]:
    shown = json.loads(cli.ok("custody", "show", subject, "--json").stdout)["events"]
    return [e for e in shown if e["action"] == action]


def _state(cli: Cli, package_id: str) -> str:
    return str(json.loads(cli.ok("package", "show", package_id, "--json").stdout)["state"])


def _evault(cli: Cli, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """``evault ARGS --vault ...`` in a subprocess (for the pause and crash points)."""
    return subprocess.Popen(
        [sys.executable, "-m", "vault", *args, "--vault", str(cli.vault)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, **env})


def _wait_paused(proc: subprocess.Popen[str], step: str) -> None:
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert line == f"evault: paused at {step}\n", line + proc.stderr.read()


# ----------------------------------------------------------------------------- success


def test_send_to_an_sftp_drop(server: SftpServer, tmp_path: Path) -> None:
    # 20 MiB: hundreds of pipelined 32 KiB writes, awaited every 8 MiB.
    cli = _office(tmp_path, size=20 * MIB)
    drop = server.drop("icc-send")
    package_id, built = _build(cli, tmp_path)
    result = cli("send", package_id, *_sftp_args(server, drop))
    assert result.exit_code == 0, result.stderr
    url = server.url(drop)
    receipt_id = json.loads(cli.ok("receipt", "list", "--json").stdout)[0]["id"]
    assert result.stderr == (f"evault: sent package {package_id} to {url}/{package_id}.evpkg; "
                             f"receipt {receipt_id}\n")
    remote = server.path(drop) / f"{package_id}.evpkg"
    assert remote.read_bytes() == built.read_bytes()
    assert sorted(p.name for p in server.path(drop).iterdir()) == [f"{package_id}.evpkg"]
    [sent] = _events(cli, package_id, "package.sent")
    assert sent["details"] == {"body": "ICC-OTP", "outbox_file": f"{package_id}.evpkg",
                               "outbox_url": url, "host_key": server.fingerprint}
    receipt = json.loads(cli.ok("receipt", "show", receipt_id, "--json").stdout)["document"]
    assert receipt["version"] == 3
    assert receipt["destination"] == {"url": url, "host_key": server.fingerprint}
    assert receipt["timestamps"] == []
    shown = json.loads(cli.ok("package", "show", package_id, "--json").stdout)
    assert shown["state"] == "sent"
    # The exported receipt verifies as any receipt does.
    out = tmp_path / "receipt.json"
    cli.ok("receipt", "export", receipt_id, "-o", str(out))
    assert cli("verify", str(out)).exit_code == 0
    cli.ok("custody", "verify")


def test_a_folder_send_keeps_writing_the_old_receipt(tmp_path: Path) -> None:
    cli = _office(tmp_path, size=1000)
    package_id, _built = _build(cli, tmp_path)
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    cli.ok("send", package_id, "--outbox", str(outbox))
    receipt_id = json.loads(cli.ok("receipt", "list", "--json").stdout)[0]["id"]
    receipt = json.loads(cli.ok("receipt", "show", receipt_id, "--json").stdout)["document"]
    assert receipt["version"] == 1 and "destination" not in receipt
    [sent] = _events(cli, package_id, "package.sent")
    assert sent["details"] == {"body": "ICC-OTP", "outbox_file": f"{package_id}.evpkg"}


def test_the_bodys_own_outbox_with_a_pinned_host_key(server: SftpServer, tmp_path: Path) -> None:
    cli = _office(tmp_path, size=1000)
    drop = server.drop("icc-own")
    url = server.url(drop)
    set_ = cli("body", "set", "ICC-OTP", "--outbox", url, "--host-key", server.fingerprint,
               "--identity-file", str(server.client_key))
    assert set_.exit_code == 0, set_.stderr
    assert set_.stderr == f"evault: body ICC-OTP: outbox {url}, host key {server.fingerprint}\n"
    again = cli.ok("body", "set", "ICC-OTP", "--outbox", url)
    assert again.stderr.endswith(" (unchanged)\n")
    [event] = _events(cli, "ICC-OTP", "body.outbox_set")
    assert event["details"] == {"outbox": url, "host_key": server.fingerprint,
                                "identity_file": str(server.client_key)}
    shown = json.loads(cli.ok("body", "show", "ICC-OTP", "--json").stdout)
    assert (shown["outbox"], shown["host_key"]) == (url, server.fingerprint)
    # No known_hosts names the server here: the pin alone lets the send go.
    package_id, built = _build(cli, tmp_path)
    cli.ok("send", package_id)
    assert (server.path(drop) / f"{package_id}.evpkg").read_bytes() == built.read_bytes()


def test_package_create_send_uses_the_bodys_outbox(server: SftpServer, tmp_path: Path) -> None:
    cli = _office(tmp_path, size=1000)
    drop = server.drop("icc-create")
    cli.ok("body", "set", "ICC-OTP", "--outbox", server.url(drop), "--host-key",
           server.fingerprint, "--identity-file", str(server.client_key))
    made = json.loads(cli.ok("package", "create", "--to", "ICC-OTP", "--case", CASE, "-o",
                             str(tmp_path / "p.evpkg"), "--send", "--json").stdout)
    assert made["state"] == "sent"
    assert (server.path(drop) / f"{made['id']}.evpkg").exists()


# ----------------------------------------------------------------------------- refusals


def test_a_wrong_pinned_host_key_is_refused(server: SftpServer, tmp_path: Path) -> None:
    cli = _office(tmp_path, size=1000)
    drop = server.drop("icc-wrong-pin")
    package_id, _ = _build(cli, tmp_path)
    other = "SHA256:" + "A" * 43
    url = server.url(drop)
    result = cli("send", package_id, "--outbox", url, "--host-key", other, "--identity-file",
                 str(server.client_key))
    assert result.exit_code == 3
    assert result.stderr == (
        f"evault: outbox {url}: host key of [127.0.0.1]:{server.port} is {server.fingerprint}, "
        f"not the pinned {other}; refused (a changed key may be an attack): confirm the new "
        "key with the body by another channel, then pin it with --host-key\n")
    assert list(server.path(drop).iterdir()) == []
    assert _state(cli, package_id) == "built"


def test_a_changed_host_key_in_known_hosts_is_refused(server: SftpServer, tmp_path: Path) -> None:
    cli = _office(tmp_path, size=1000)
    drop = server.drop("icc-changed")
    package_id, _ = _build(cli, tmp_path)
    stale = tmp_path / "stale-key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stale)], check=True)
    public = " ".join(Path(f"{stale}.pub").read_text().split()[:2])
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{server.port} {public}\n")
    stale_fp = subprocess.run(["ssh-keygen", "-l", "-f", f"{stale}.pub"], check=True,
                              capture_output=True, text=True).stdout.split()[1]
    url = server.url(drop)
    result = cli("send", package_id, "--outbox", url, "--known-hosts", str(known),
                 "--identity-file", str(server.client_key))
    assert result.exit_code == 3
    assert result.stderr == (
        f"evault: outbox {url}: host key of [127.0.0.1]:{server.port} changed: it is "
        f"{server.fingerprint}, {known} has {stale_fp}; refused (a changed key may be an "
        "attack): confirm the new key with the body by another channel before you change "
        "known_hosts\n")
    assert list(server.path(drop).iterdir()) == []


def test_an_unknown_host_is_refused_and_not_added(server: SftpServer, tmp_path: Path) -> None:
    cli = _office(tmp_path, size=1000)
    drop = server.drop("icc-unknown")
    package_id, _ = _build(cli, tmp_path)
    known = tmp_path / "known_hosts"
    known.write_text("")
    url = server.url(drop)
    result = cli("send", package_id, "--outbox", url, "--known-hosts", str(known),
                 "--identity-file", str(server.client_key))
    assert result.exit_code == 3
    assert result.stderr == (
        f"evault: outbox {url}: host [127.0.0.1]:{server.port} is unknown (not in {known}); "
        f"its key is {server.fingerprint}: confirm it with the body by another channel, then "
        f"pin it with --host-key {server.fingerprint} or add it to known_hosts\n")
    assert known.read_text() == ""
    assert list(server.path(drop).iterdir()) == []


@pytest.mark.parametrize(("url", "message"), [
    ("sftp://nobody:s3cret@127.0.0.1/in",
     "outbox sftp://nobody:***@127.0.0.1/in: a password in the URL is refused; load the key "
     "into ssh-agent or give --identity-file"),
    ("sftp://127.0.0.1/in", "outbox sftp://127.0.0.1/in: name the user, as in "
     "sftp://user@host/path"),
    ("sftp://nobody@127.0.0.1", "outbox sftp://nobody@127.0.0.1: give the drop's absolute "
     "path, as in sftp://user@host/incoming"),
    ("sftp://nobody@127.0.0.1/in/../etc", "outbox sftp://nobody@127.0.0.1/in/../etc: path "
     "segment '..' is not allowed (letters, digits and ._~+=,@- only; no empty, . or .. "
     "segments)"),
])
def test_malformed_urls_are_refused(tmp_path: Path, url: str, message: str) -> None:
    cli = _office(tmp_path, size=100)
    package_id, _ = _build(cli, tmp_path)
    result = cli("send", package_id, "--outbox", url)
    assert (result.exit_code, result.stderr) == (2, f"evault: {message}\n")
    assert "s3cret" not in result.output


def test_host_key_goes_with_sftp_only(tmp_path: Path) -> None:
    cli = _office(tmp_path, size=100)
    package_id, _ = _build(cli, tmp_path)
    result = cli("send", package_id, "--outbox", str(tmp_path), "--host-key",
                 "SHA256:" + "A" * 43)
    assert (result.exit_code, result.stderr) == (
        2, "evault: --host-key goes with an sftp:// outbox, not a folder\n")
    result = cli("send", package_id)
    assert (result.exit_code, result.stderr) == (
        2, "evault: body ICC-OTP: has no outbox; give --outbox DIR or sftp://user@host/path, or "
           "set one with `evault body set ICC-OTP --outbox ...`\n")


# ----------------------------------------------------------------------------- failures midway


def test_a_dropped_connection_is_resumed(server: SftpServer, tmp_path: Path) -> None:
    cli = _office(tmp_path)
    drop = server.drop("icc-resume")
    package_id, built = _build(cli, tmp_path)
    proc = _evault(cli, "send", package_id, *_sftp_args(server, drop),
                   env={"EVAULT_PAUSE_AT": "send.sftp_partial"})
    _wait_paused(proc, "send.sftp_partial")
    partial = server.path(drop) / f".evault-partial-{package_id}.evpkg"
    assert partial.stat().st_size == MIB  # the first write, answered before the pause
    assert server.kill_sessions() >= 1  # the server's side of the connection dies
    proc.send_signal(signal.SIGUSR1)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    url = server.url(drop)
    assert err.startswith(f"evault: {url}/{package_id}.evpkg: the connection was lost during "
                          "the upload (")
    assert err.endswith("); nothing was named there; run the same command again: it resumes "
                        "the upload\n")
    assert partial.stat().st_size == MIB
    assert not (server.path(drop) / f"{package_id}.evpkg").exists()
    assert _state(cli, package_id) == "built"

    size = built.stat().st_size
    again = cli("send", package_id, *_sftp_args(server, drop))
    assert again.exit_code == 0, again.stderr
    assert again.stderr.splitlines()[0] == (
        f"evault: {url}/{package_id}.evpkg: resumed an interrupted upload at byte {MIB} of "
        f"{size}")
    assert (server.path(drop) / f"{package_id}.evpkg").read_bytes() == built.read_bytes()
    assert not partial.exists()
    assert _state(cli, package_id) == "sent"


def test_a_partial_upload_that_differs_is_started_over(server: SftpServer, tmp_path: Path) -> None:
    cli = _office(tmp_path)
    drop = server.drop("icc-restart")
    package_id, built = _build(cli, tmp_path)
    partial = server.path(drop) / f".evault-partial-{package_id}.evpkg"
    partial.write_bytes(b"not the package's first bytes" * 1000)
    result = cli("send", package_id, *_sftp_args(server, drop))
    assert result.exit_code == 0, result.stderr
    assert "resumed" not in result.stderr
    assert (server.path(drop) / f"{package_id}.evpkg").read_bytes() == built.read_bytes()


def test_a_file_changed_on_the_server_before_its_name_is_refused(
        server: SftpServer, tmp_path: Path) -> None:
    cli = _office(tmp_path)
    drop = server.drop("icc-altered")
    package_id, built = _build(cli, tmp_path)
    proc = _evault(cli, "send", package_id, *_sftp_args(server, drop),
                   env={"EVAULT_PAUSE_AT": "send.sftp_uploaded"})
    _wait_paused(proc, "send.sftp_uploaded")
    partial = server.path(drop) / f".evault-partial-{package_id}.evpkg"
    with open(partial, "r+b") as f:  # one byte changed, the size kept
        f.seek(MIB + 7)
        byte = f.read(1)
        f.seek(MIB + 7)
        f.write(bytes([byte[0] ^ 1]))
    proc.send_signal(signal.SIGUSR1)
    _out, err = proc.communicate(timeout=60)
    url = server.url(drop)
    assert (proc.returncode, err) == (3, (
        f"evault: {url}/{package_id}.evpkg: the uploaded file does not match the package as "
        "built (changed on the server, or the package file changed here); nothing was named "
        "there; check the package with `evault verify` and send it again\n"))
    assert list(server.path(drop).iterdir()) == []
    assert _state(cli, package_id) == "built"
    cli.ok("send", package_id, *_sftp_args(server, drop))
    assert (server.path(drop) / f"{package_id}.evpkg").read_bytes() == built.read_bytes()


def test_killed_after_the_rename_the_rerun_records_it(server: SftpServer, tmp_path: Path) -> None:
    cli = _office(tmp_path, size=1000)
    drop = server.drop("icc-renamed")
    package_id, built = _build(cli, tmp_path)
    proc = _evault(cli, "send", package_id, *_sftp_args(server, drop),
                   env={"EVAULT_CRASH_AT": "send.sftp_renamed"})
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    final = server.path(drop) / f"{package_id}.evpkg"
    named_at = final.stat().st_mtime_ns
    assert _state(cli, package_id) == "built"
    cli.ok("send", package_id, *_sftp_args(server, drop))
    assert final.stat().st_mtime_ns == named_at  # not uploaded again
    assert final.read_bytes() == built.read_bytes()
    assert _state(cli, package_id) == "sent"
    cli.ok("custody", "verify")


def test_a_full_disk_on_the_server(server: SftpServer, tmp_path: Path) -> None:
    cli = _office(tmp_path)
    try:
        drop = server.mount("icc-full", 1024)  # the package is about 3 MiB
    except RuntimeError as e:
        pytest.skip(str(e))
    package_id, _ = _build(cli, tmp_path)
    result = cli("send", package_id, *_sftp_args(server, drop))
    url = server.url(drop)
    assert (result.exit_code, result.stderr) == (1, (
        f"evault: {url}/{package_id}.evpkg: the server refused the upload (Failure); nothing "
        "was named there; the drop may be full: ask the body, then send again\n"))
    assert list(server.path(drop).iterdir()) == []
    assert _state(cli, package_id) == "built"


# ----------------------------------------------------------------------------- export


def test_export_to_five_bodies_each_with_its_own_drop(server: SftpServer, tmp_path: Path) -> None:
    bodies = ("ICC-OTP", "UA-OPG", "EUROJUST-JIT", "UN-HRMMU", "OSCE-MM")
    cli = _office(tmp_path, bodies, size=200_000)
    drops = {}
    for body in bodies:
        drops[body] = server.drop(f"exp-{body.lower()}")
        cli.ok("body", "set", body, "--outbox", server.url(drops[body]), "--host-key",
               server.fingerprint, "--identity-file", str(server.client_key))
    done = [json.loads(line) for line in cli.ok(
        "export", "--to", ",".join(bodies), "--case", CASE, "--jsonl").stdout.splitlines()]
    assert [(r["body"], r["status"]) for r in done] == [(b, "shared") for b in bodies]
    for row in done:
        body = str(row["body"])
        files = list(server.path(drops[body]).iterdir())
        assert [p.name for p in files] == [f"{row['package']}.evpkg"]
        package = json.loads(cli.ok("package", "show", str(row["package"]), "--json").stdout)
        assert _sha256(files[0]) == package["file_sha256"]
        receipt = json.loads(cli.ok("receipt", "show", str(row["receipt"]), "--json").stdout)
        assert receipt["document"]["destination"] == {"url": server.url(drops[body]),
                                                      "host_key": server.fingerprint}
    again = [json.loads(line) for line in cli.ok(
        "export", "--to", ",".join(bodies), "--case", CASE, "--jsonl").stdout.splitlines()]
    assert [r["status"] for r in again] == ["already shared"] * 5


def test_export_refuses_a_body_without_an_outbox(tmp_path: Path) -> None:
    cli = _office(tmp_path, ("ICC-OTP", "UA-OPG"), size=100)
    cli.ok("body", "set", "ICC-OTP", "--outbox", str(tmp_path))
    result = cli("export", "--to", "ICC-OTP,UA-OPG", "--case", CASE)
    assert (result.exit_code, result.stderr) == (
        2, "evault: body UA-OPG: has no outbox; give --outbox DIR or sftp://user@host/path, or "
           "set one with `evault body set UA-OPG --outbox ...`\n")
    assert json.loads(cli.ok("package", "list", "--json").stdout) == []


# ----------------------------------------------------------------------------- import cost


def test_only_an_sftp_delivery_imports_the_sftp_library(
        server: SftpServer, tmp_path: Path) -> None:
    cli = _office(tmp_path, ("ICC-OTP", "UA-OPG"), size=100)
    icc, _ = _build(cli, tmp_path, "ICC-OTP")
    opg, _ = _build(cli, tmp_path, "UA-OPG")
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    drop = server.drop("icc-import")

    def loaded(*args: str) -> bool:
        code = ("import sys\nfrom vault.__main__ import main\n"
                "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
                "print('PARAMIKO', 'paramiko' in sys.modules)\n")
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                              text=True, cwd=ROOT, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()[-1] == "PARAMIKO True"

    vault = ["--vault", str(cli.vault)]
    assert not loaded("--help")
    assert not loaded("send", "--help")
    assert not loaded("items", "list", *vault)
    assert not loaded("send", opg, "--outbox", str(outbox), *vault)
    assert loaded("send", icc, *_sftp_args(server, drop), *vault)


# ----------------------------------------------------------------------------- receipts


def test_old_receipt_versions_are_still_read() -> None:
    """Version 1 (the corpus's receipt, bytes written by an earlier release) and version 2
    (with timestamps) parse and verify next to version 3."""
    from vault.crypto.keys import SigningKey
    from vault.formats.receipt import (
        RECEIPT_NAMESPACE,
        Destination,
        SharingReceipt,
        sign_document,
        verify_receipt,
    )

    corpus = ROOT / "tests" / "corpus" / "documents"
    v1 = SharingReceipt.from_bytes((corpus / "receipt.json").read_bytes())
    assert v1.version == 1 and v1.destination is None and v1.timestamps == ()
    assert v1.to_bytes() == (corpus / "receipt.json").read_bytes()

    key = SigningKey.generate()
    v2 = SharingReceipt(**{**v1.__dict__, "version": 2, "timestamps": ("AAAA",),
                           "sender": v1.sender.__class__(v1.sender.name, key.public.fingerprint)})
    data = v2.to_bytes()
    assert verify_receipt(data, sign_document(data, key, RECEIPT_NAMESPACE), [key.public]) == v2
    assert b"destination" not in data

    v3 = SharingReceipt(**{**v2.__dict__, "version": 3, "timestamps": (),
                           "destination": Destination("sftp://nobody@127.0.0.1:2222/in",
                                                      "SHA256:" + "A" * 43)})
    data = v3.to_bytes()
    assert verify_receipt(data, sign_document(data, key, RECEIPT_NAMESPACE), [key.public]) == v3
    assert json.loads(data)["destination"]["url"] == "sftp://nobody@127.0.0.1:2222/in"


@pytest.mark.parametrize(("change", "reason"), [
    ({"version": 2, "destination": {"url": "sftp://a@h/x", "host_key": "SHA256:" + "A" * 43}},
     "unknown field 'destination'"),
    ({"destination": None}, "missing field 'destination'"),
    ({"destination": {"url": "sftp://a:pw@h/x", "host_key": "SHA256:" + "A" * 43}},
     "password in the URL"),
    ({"destination": {"url": "sftp://a@h/x", "host_key": "MD5:aa"}}, "destination: host_key"),
    ({"destination": {"url": "sftp://a@h:22/x", "host_key": "SHA256:" + "A" * 43}},
     "destination: url"),
])
def test_receipt_destinations_are_read_strictly(change: dict[str, object], reason: str) -> None:
    from vault.errors import VaultError
    from vault.formats.canonical import canonical_json
    from vault.formats.receipt import SharingReceipt

    corpus = ROOT / "tests" / "corpus" / "documents"
    doc = json.loads((corpus / "receipt.json").read_bytes())
    doc |= {"version": 3, "timestamps": [],
            "destination": {"url": "sftp://a@h/x", "host_key": "SHA256:" + "A" * 43}}
    SharingReceipt.from_bytes(canonical_json(doc))  # the unchanged v3 document reads
    for key, value in change.items():
        if value is None:
            del doc[key]
        else:
            doc[key] = value
    if doc["version"] == 2:
        doc["timestamps"] = ["AAAA"]
    with pytest.raises(VaultError, match=reason.replace("(", r"\(")):
        SharingReceipt.from_bytes(canonical_json(doc))



def test_the_client_key_from_ssh_agent(server: SftpServer, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """No --identity-file: the keys of the user's running ssh-agent (SSH_AUTH_SOCK), a real
    OpenSSH ssh-agent holding the test client key."""
    sock = tmp_path / "agent.sock"
    agent = subprocess.run(["ssh-agent", "-a", str(sock)], capture_output=True, text=True,
                           check=True)
    pid = int(agent.stdout.split("SSH_AGENT_PID=")[1].split(";")[0])
    try:
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", str(server.client_key)], env=env, capture_output=True,
                       check=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        cli = _office(tmp_path, size=1000)
        drop = server.drop("icc-agent")
        package_id, built = _build(cli, tmp_path)
        result = cli("send", package_id, "--outbox", server.url(drop), "--host-key",
                     server.fingerprint)
        assert result.exit_code == 0, result.stderr
        remote = server.path(drop) / f"{package_id}.evpkg"
        assert remote.read_bytes() == built.read_bytes()
        # Without the agent and without a key file, nothing to log in with: one line.
        monkeypatch.delenv("SSH_AUTH_SOCK")
        (tmp_path / "second").mkdir()
        package_id, _ = _build(cli, tmp_path / "second")
        result = cli("send", package_id, "--outbox", server.url(drop), "--host-key",
                     server.fingerprint)
        assert (result.exit_code, result.stderr) == (1, (
            f"evault: outbox {server.url(drop)}: no client key: start ssh-agent and add the "
            "key (ssh-add), or give --identity-file\n"))
        assert not (server.path(drop) / f"{package_id}.evpkg").exists()
    finally:
        os.kill(pid, signal.SIGTERM)
