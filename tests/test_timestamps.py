"""Trusted time (RFC 3161): checkpoints, packages, receipts and acks carry tokens from real
TSAs (``openssl ts -reply`` behind HTTP on 127.0.0.1, scripts/local_tsa.py), checked when
they come in and again by ``verify`` and ``open``, and by ``openssl ts -verify`` by hand."""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from conftest import Cli, require_tool
from local_tsa import LocalTsa, free_port
from test_robustness import assert_refusal

from vault.errors import UsageError
from vault.formats import receipt as rfmt
from vault.formats.package import Envelope, read_package

CASE = "UA-2026-0042"


@pytest.fixture(scope="module")
def tsa_one() -> Iterator[LocalTsa]:
    require_tool("openssl")
    with LocalTsa("tsa-one") as tsa:
        yield tsa


@pytest.fixture(scope="module")
def tsa_two() -> Iterator[LocalTsa]:
    require_tool("openssl")
    with LocalTsa("tsa-two", policy="1.3.6.1.4.1.55555.2.1") as tsa:
        yield tsa


@pytest.fixture(scope="module")
def rogue_tsa() -> Iterator[LocalTsa]:
    """A working TSA that no vault here trusts."""
    require_tool("openssl")
    with LocalTsa("rogue-tsa") as tsa:
        yield tsa


def configure(cli: Cli, *tsas: LocalTsa, url: dict[str, str] | None = None,
              extra: str = "") -> None:
    """Add TSAs to a vault's config.toml, each with its CA copied into the vault folder."""
    lines = [extra] if extra else []
    for tsa in tsas:
        ca = cli.vault / f"{tsa.name}-ca.pem"
        ca.write_bytes(tsa.ca_file.read_bytes())
        lines += ["", "[[tsa]]", f'name = "{tsa.name}"',
                  f'url = "{(url or {}).get(tsa.name, tsa.url)}"', f'ca = ["{ca.name}"]',
                  f'policy = "{tsa.policy}"', "timeout = 5"]
    config = cli.vault / "config.toml"
    text = config.read_text()
    if extra:  # a top-level key goes before the first table
        head, sep, tail = text.partition("\n[")
        text = head + "\n" + extra + "\n" + sep + tail
        lines = lines[1:]
    config.write_text(text + "\n".join(lines) + "\n")


def openssl_verify(data: Path, token: Path, ca: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", "ts", "-verify", "-data", str(data), "-in", str(token),
                           "-CAfile", str(ca)], capture_output=True, text=True, check=False)


def rows(cli: Cli, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(cli.vault / "vault.db") as db:
        return list(db.execute(sql))


@pytest.fixture
def office(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path / "office")
    cli.init()
    cli.ok("identity", "create", "registry-office")
    return cli


# ---------------------------------------------------------------------- checkpoints


def test_a_checkpoint_is_timestamped_and_openssl_verifies_the_token(
        office: Cli, tsa_one: LocalTsa, tmp_path: Path) -> None:
    configure(office, tsa_one)
    note = tmp_path / "checkpoint.txt"
    result = office.ok("custody", "checkpoint", "-o", str(note))
    size = note.read_text().split("\n")[1]
    assert result.stderr == (f"evault: wrote {note}\n"
                             f"evault: checkpoint {size}: timestamped by 1 TSA(s)\n")
    token = tmp_path / "checkpoint.txt.1.tsr"
    assert token.read_bytes()[:1] == b"\x30"  # a DER SEQUENCE: the TimeStampResp
    done = openssl_verify(note, token, tsa_one.ca_file)
    assert done.returncode == 0 and "Verification: OK" in done.stdout, done.stderr
    # The token is over the note exactly: one byte more and openssl refuses it.
    other = tmp_path / "other.txt"
    other.write_bytes(note.read_bytes() + b"\n")
    assert openssl_verify(other, token, tsa_one.ca_file).returncode != 0
    # A token left from an earlier checkpoint under this name is never taken for a new one's.
    note.unlink()
    result = office("custody", "checkpoint", "-o", str(note))
    assert (result.exit_code, result.stderr.splitlines()[-1]) == (2, (
        f"Error: {note}.N.tsr files exist from an earlier checkpoint; choose another file"))
    # ...and over its signature: it is kept with the checkpoint, by TSA name.
    [(tsa, kept)] = rows(office, "SELECT tsa, token FROM checkpoint_timestamps")
    assert tsa == "tsa-one" and kept == token.read_bytes()
    assert rows(office, "SELECT timestamp_pending FROM checkpoints") == [(0,)]


def test_without_tsas_nothing_changes(office: Cli, tmp_path: Path) -> None:
    note = tmp_path / "checkpoint.txt"
    result = office.ok("custody", "checkpoint", "-o", str(note))
    assert result.stderr == f"evault: wrote {note}\n"
    assert not list(tmp_path.glob("*.tsr"))
    assert rows(office, "SELECT count(*) FROM checkpoint_timestamps") == [(0,)]


def test_two_tsas_give_two_tokens_and_one_down_is_named(
        office: Cli, tsa_one: LocalTsa, tsa_two: LocalTsa, tmp_path: Path) -> None:
    configure(office, tsa_one, tsa_two)
    office.ok("custody", "checkpoint", "-o", str(tmp_path / "a.txt"))
    assert openssl_verify(tmp_path / "a.txt", tmp_path / "a.txt.2.tsr",
                          tsa_two.ca_file).returncode == 0
    # tsa-two is down: named, and tsa-one's token is enough.
    down = free_port()
    config = office.vault / "config.toml"
    config.write_text(config.read_text().replace(tsa_two.url, f"http://127.0.0.1:{down}/"))
    result = office.ok("custody", "checkpoint", "-o", str(tmp_path / "b.txt"))
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"evault: warning: TSA tsa-two (http://127.0.0.1:{down}/): "
                               "unreachable (")
    assert lines[-1].endswith("timestamped by 1 TSA(s)")
    assert (tmp_path / "b.txt.1.tsr").exists() and not (tmp_path / "b.txt.2.tsr").exists()
    assert rows(office, "SELECT tsa FROM checkpoint_timestamps ORDER BY id") == [
        ("tsa-one",), ("tsa-two",), ("tsa-one",)]


def test_no_tsa_answering_refuses_unless_told_then_pending_is_logged(
        office: Cli, tsa_one: LocalTsa, tmp_path: Path) -> None:
    down = free_port()
    configure(office, tsa_one, url={"tsa-one": f"http://127.0.0.1:{down}/"})
    before = rows(office, "SELECT count(*) FROM checkpoints")
    result = office("custody", "checkpoint", "-o", str(tmp_path / "a.txt"))
    assert_refusal(result, 1)
    assert result.stderr == (
        f"evault: checkpoint 1: no TSA gave a timestamp (TSA tsa-one (http://127.0.0.1:{down}/):"
        " unreachable ([Errno 111] Connection refused)); try again, or pass --no-timestamp (or "
        "set timestamps = \"when-available\") and run `evault timestamp --pending` later\n")
    assert rows(office, "SELECT count(*) FROM checkpoints") == before  # nothing kept
    assert not (tmp_path / "a.txt").exists()
    # --no-timestamp: signed, kept pending, no TSA asked.
    asked = tsa_one.requests
    office.ok("custody", "checkpoint", "--no-timestamp", "-o", str(tmp_path / "b.txt"))
    assert rows(office, "SELECT size, timestamp_pending FROM checkpoints "
                        "ORDER BY id DESC LIMIT 1") == [(1, 1)]
    # Still down: it stays pending, and says so.
    assert_refusal(office("timestamp", "--pending"), 1,
                   "checkpoint 1: still no TSA gave a timestamp (TSA tsa-one (", "Connection "
                   "refused)); it stays pending, try again later")
    # Up again (the configured URL): the pending checkpoint gets its token, logged.
    config = office.vault / "config.toml"
    config.write_text(config.read_text().replace(f"http://127.0.0.1:{down}/", tsa_one.url))
    result = office.ok("timestamp", "--pending", "--json")
    [done] = json.loads(result.stdout)
    assert done["checkpoint"] == 1 and done["tsas"] == ["tsa-one"]
    assert tsa_one.requests == asked + 1
    assert rows(office, "SELECT timestamp_pending FROM checkpoints ORDER BY id") == [(0,)]
    events = json.loads(office.ok("custody", "show", "checkpoint/1", "--json").stdout)["events"]
    assert [e["action"] for e in events] == ["checkpoint.timestamped"]
    assert events[0]["details"]["attested_at"] == done["attested_at"]
    office.ok("custody", "verify")
    assert office.ok("timestamp", "--pending").stderr == (
        "evault: no checkpoint is pending a timestamp\n")


def test_when_available_goes_on_without_a_tsa(office: Cli, tsa_one: LocalTsa,
                                              tmp_path: Path) -> None:
    configure(office, tsa_one, url={"tsa-one": f"http://127.0.0.1:{free_port()}/"},
              extra='timestamps = "when-available"')
    result = office.ok("custody", "checkpoint", "-o", str(tmp_path / "a.txt"))
    warning, wrote = result.stderr.splitlines()
    assert wrote == f"evault: wrote {tmp_path / 'a.txt'}"
    assert warning.startswith(
        "evault: warning: checkpoint 1: not timestamped (TSA tsa-one (http://127.0.0.1:")
    assert warning.endswith(
        "unreachable ([Errno 111] Connection refused)); run `evault timestamp --pending` "
        "when a TSA answers")
    assert rows(office, "SELECT timestamp_pending FROM checkpoints") == [(1,)]


def test_a_bad_tsa_configuration_is_named(office: Cli, tsa_one: LocalTsa) -> None:
    config = office.vault / "config.toml"
    good = config.read_text()
    config.write_text(good + '\n[[tsa]]\nname = "x"\nurl = "ftp://example.invalid/"\n'
                      'ca = ["x.pem"]\n')
    assert_refusal(office("custody", "checkpoint"), 1,
                   "[[tsa]] number 1 (x): url must be an http:// or https:// URL")
    config.write_text(good + '\n[[tsa]]\nname = "x"\nurl = "http://127.0.0.1:1/"\n'
                      'ca = ["missing.pem"]\n')
    assert_refusal(office("custody", "checkpoint"), 1,
                   "TSA x: ca ", "missing.pem: No such file or directory; fix [[tsa]] ca")


def test_a_tsa_whose_certificate_is_not_the_configured_one_is_refused(
        office: Cli, tsa_one: LocalTsa, rogue_tsa: LocalTsa) -> None:
    # The rogue TSA answers at the URL, but tsa-one's CA is the one configured for it.
    configure(office, tsa_one, url={"tsa-one": rogue_tsa.url})
    assert_refusal(office("custody", "checkpoint"), 1,
                   f"no TSA gave a timestamp (TSA tsa-one ({rogue_tsa.url}): its token was "
                   "refused: its signature does not chain to a trusted TSA certificate at its "
                   "time); try again")


# ---------------------------------------------------------------------- documents


@dataclass
class Sharing:
    office: Cli
    icc: Cli
    tmp: Path
    package: Path
    package_id: str
    office_fp: str


def _sharing(tmp: Path, office_tsas: tuple[LocalTsa, ...],
             icc_tsas: tuple[LocalTsa, ...] = ()) -> Sharing:
    office, icc = Cli(tmp / "office"), Cli(tmp / "icc")
    office.init()
    icc.init()
    fp = json.loads(office.ok("identity", "create", "registry-office", "--json").stdout)[
        "fingerprint"]
    icc.ok("identity", "create", "icc-officer")
    office_card, icc_card = tmp / "office.card.json", tmp / "icc.card.json"
    office.ok("identity", "export", "-o", str(office_card))
    icc.ok("identity", "export", "-o", str(icc_card))
    office.ok("body", "add", "ICC-OTP", "--name", "Fictional court prosecutor")
    office.ok("body", "key", "add", "ICC-OTP", "--card", str(icc_card))
    icc.ok("contact", "add", str(office_card), "--fingerprint", fp)
    if office_tsas:
        configure(office, *office_tsas)
    if icc_tsas:
        configure(icc, *icc_tsas)
    evidence = tmp / "statement W-1.txt"
    evidence.write_bytes(b"fictional statement\n")
    office.ok("ingest", str(evidence), "--case", CASE, "--create-case")
    package = tmp / "icc.evpkg"
    pid = json.loads(office.ok("package", "create", "--to", "ICC-OTP", "--case", CASE, "-o",
                               str(package), "--json").stdout)["id"]
    return Sharing(office, icc, tmp, package, pid, fp)


def _envelope(package: Path) -> Envelope:
    return Envelope.from_bytes(read_package(package).envelope_bytes)


def test_the_envelope_carries_the_tokens_and_openssl_checks_them_by_hand(
        tmp_path: Path, tsa_one: LocalTsa, tsa_two: LocalTsa) -> None:
    world = _sharing(tmp_path, (tsa_one, tsa_two))
    envelope = _envelope(world.package)
    assert envelope.version == 2 and len(envelope.timestamps) == 2
    note = tmp_path / "checkpoint.txt"
    note.write_bytes(envelope.checkpoint.encode())
    for token, tsa in zip(envelope.timestamps, (tsa_one, tsa_two), strict=True):
        der = tmp_path / f"{tsa.name}.tsr"
        der.write_bytes(base64.b64decode(token))
        assert openssl_verify(note, der, tsa.ca_file).returncode == 0
        assert openssl_verify(note, der, (tsa_two if tsa is tsa_one else tsa_one)
                              .ca_file).returncode != 0


def test_a_package_without_tsas_stays_version_1(tmp_path: Path) -> None:
    world = _sharing(tmp_path, ())
    envelope = _envelope(world.package)
    assert envelope.version == 1 and envelope.timestamps == ()
    assert b'"timestamps"' not in read_package(world.package).envelope_bytes


def test_receipts_and_acks_carry_tokens_over_their_own_checkpoints(
        tmp_path: Path, tsa_one: LocalTsa, tsa_two: LocalTsa) -> None:
    world = _sharing(tmp_path, (tsa_one,), (tsa_two,))
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    world.office.ok("send", world.package_id, "--outbox", str(outbox))
    receipt_id = json.loads(world.office.ok("receipt", "list", "--json").stdout)[0]["id"]
    receipt = tmp_path / "receipt.json"
    world.office.ok("receipt", "export", receipt_id, "-o", str(receipt))
    doc = rfmt.SharingReceipt.from_bytes(receipt.read_bytes())
    assert doc.version == 2 and len(doc.timestamps) == 1
    # ICC-OTP's vault trusts its own TSA; the office's it names on the command line.
    world.icc.ok("open", str(world.package), "--out", str(tmp_path / "received"), "--tsa-ca",
                 str(tsa_one.ca_file))
    ack = tmp_path / "ack.json"
    world.icc.ok("ack", world.package_id, "-o", str(ack))
    acked = rfmt.Acknowledgement.from_bytes(ack.read_bytes())
    assert acked.version == 3 and len(acked.timestamps) == 1
    for text, checkpoint, tsa in ((doc.timestamps[0], doc.checkpoint, tsa_one),
                                  (acked.timestamps[0], acked.checkpoint, tsa_two)):
        data, der = tmp_path / "data.txt", tmp_path / "token.tsr"
        data.write_bytes(checkpoint.encode())
        der.write_bytes(base64.b64decode(text))
        assert openssl_verify(data, der, tsa.ca_file).returncode == 0
    # The office imports the version 3 ack like any other.
    world.office.ok("receipt", "import", str(ack))


def test_documents_of_each_version_read_back(tmp_path: Path, tsa_one: LocalTsa) -> None:
    world = _sharing(tmp_path, (tsa_one,))
    envelope = _envelope(world.package)
    v1 = replace(envelope, timestamps=(), version=1)
    assert Envelope.from_bytes(v1.to_bytes()) == v1
    assert Envelope.from_bytes(envelope.to_bytes()) == envelope
    with pytest.raises(UsageError, match="version 1 has no timestamps"):
        replace(envelope, version=1)
    with pytest.raises(UsageError, match="a list of 1 to 8 base64 RFC 3161 tokens"):
        replace(envelope, timestamps=())
    with pytest.raises(UsageError, match=r"timestamps\[0\] must be canonical base64"):
        replace(envelope, timestamps=("AAB=",))


def _doc_block() -> str:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "verify-by-hand.md").read_text()
    [block] = [b for b in re.findall(r"```sh\n(.*?)```", doc, flags=re.S)
               if "openssl ts -verify" in b]
    return block


def test_the_documented_openssl_commands_check_the_tokens_as_written(
        tmp_path: Path, tsa_one: LocalTsa, tsa_two: LocalTsa) -> None:
    require_tool("sh")
    world = _sharing(tmp_path, (tsa_one, tsa_two))
    envelope = _envelope(world.package)
    attested = [subprocess.run(
        ["openssl", "ts", "-reply", "-in", "/dev/stdin", "-text"], input=base64.b64decode(t),
        capture_output=True, check=True).stdout.decode().split("Time stamp: ")[1].split("\n")[0]
        for t in envelope.timestamps]

    def paste(package: Path, ca: Path) -> list[str]:
        tmpdir = tmp_path / "doc-tmp"
        tmpdir.mkdir(exist_ok=True)
        run = subprocess.run(["sh"], input=_doc_block(), cwd=tmp_path, text=True,
                             capture_output=True, check=False,
                             env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmpdir),
                                  "PACKAGE": str(package), "TSA_CA": str(ca)})
        assert run.returncode == 0 and run.stderr == "", run.stderr
        assert list(tmpdir.iterdir()) == []
        return run.stdout.splitlines()

    # Each token verifies against its own TSA's CA, and not against the other's.
    assert paste(world.package, tsa_one.ca_file) == [
        f"OK: token-1.tsr is a timestamp of the envelope's checkpoint at {attested[0]}",
        f"MISMATCH: token-2.tsr does not verify against {tsa_one.ca_file} for this checkpoint",
    ]
    assert paste(world.package, tsa_two.ca_file)[1] == (
        f"OK: token-2.tsr is a timestamp of the envelope's checkpoint at {attested[1]}")
    plain = _sharing(tmp_path / "plain", ())
    assert paste(plain.package, tsa_one.ca_file) == [
        "NOTE: this envelope carries no timestamps (version 1): its times are the sender's clock"]


# ---------------------------------------------------------------------- verify


def _receipt(world: Sharing) -> Path:
    outbox = world.tmp / "outbox"
    outbox.mkdir(exist_ok=True)
    world.office.ok("send", world.package_id, "--outbox", str(outbox))
    receipt_id = json.loads(world.office.ok("receipt", "list", "--json").stdout)[0]["id"]
    receipt = world.tmp / "receipt.json"
    world.office.ok("receipt", "export", receipt_id, "-o", str(receipt))
    return receipt


def _attested(text: str) -> str:
    from vault.clock import isoformat
    from vault.crypto.tsp import attested_time

    return isoformat(attested_time(base64.b64decode(text)))


def _signing_key(cli: Cli, name: str) -> object:
    from vault.service.identities import current_key, get_identity, load_keypair
    from vault.service.vaults import open_vault

    v = open_vault(cli.vault)
    try:
        with v.transaction() as session:
            return load_keypair(v, current_key(get_identity(session, name))).signing
    finally:
        v.close()


def _resign(path: Path, doc: rfmt.SharingReceipt, key: object) -> Path:
    data = doc.to_bytes()
    path.write_bytes(data)
    Path(f"{path}.sig").write_text(rfmt.sign_document(data, key, rfmt.RECEIPT_NAMESPACE))
    return path


TSA_ONE = "CN=tsa-one,O=Fictional test TSA"


def test_verify_prints_the_attested_time_and_checks_it_against_the_tsa(
        tmp_path: Path, tsa_one: LocalTsa, rogue_tsa: LocalTsa) -> None:
    world = _sharing(tmp_path, (tsa_one,))
    envelope = _envelope(world.package)
    at = _attested(envelope.timestamps[0])
    # In the recipient's vault, which lists no TSA: the token is named, not trusted.
    line = world.icc.ok("verify", str(world.package)).stdout
    assert line.endswith("envelope and payload digest verified; 1 timestamp(s) not checked: "
                         "no TSA certificate to trust, pass --tsa-ca FILE)\n")
    line = world.icc.ok("verify", str(world.package), "--tsa-ca", str(tsa_one.ca_file)).stdout
    assert line.endswith("envelope and payload digest verified; checkpoint timestamped at "
                         f"{at} by {TSA_ONE})\n")
    # The sender's own vault trusts its configured TSA without --tsa-ca.
    assert world.office.ok("verify", str(world.package)).stdout == line
    # Trusting only another TSA: the token does not chain to it.
    result = world.icc("verify", str(world.package), "--tsa-ca", str(rogue_tsa.ca_file))
    assert result.exit_code == 3
    assert result.stdout == (
        f"FAIL: {world.package}: package {world.package_id}: timestamp 1 of 1: its signature "
        "does not chain to a trusted TSA certificate at its time; do not rely on its time (if "
        "you trust its TSA, pass the TSA's CA certificate with --tsa-ca)\n")
    # A checkpoint with its tokens beside it (custody checkpoint -o).
    note = tmp_path / "checkpoint.txt"
    world.office.ok("custody", "checkpoint", "-o", str(note))
    stamped = _attested(base64.b64encode((tmp_path / "checkpoint.txt.1.tsr").read_bytes())
                        .decode())
    assert world.office.ok("verify", str(note)).stdout.endswith(
        f"signature verified; checkpoint timestamped at {stamped} by {TSA_ONE})\n")


def test_a_token_for_other_data_or_from_an_untrusted_tsa_fails_verify(
        tmp_path: Path, tsa_one: LocalTsa, rogue_tsa: LocalTsa) -> None:
    from vault.crypto.tsp import TimestampQuery

    world = _sharing(tmp_path, (tsa_one,))
    receipt = _receipt(world)
    doc = rfmt.SharingReceipt.from_bytes(receipt.read_bytes())
    key = _signing_key(world.office, "registry-office")
    # A hostile sender signs a receipt carrying the envelope's token: over another checkpoint.
    other = _resign(tmp_path / "other.json", replace(
        doc, timestamps=_envelope(world.package).timestamps), key)
    result = world.office("verify", str(other))
    assert result.exit_code == 3
    assert result.stdout == (
        f"FAIL: {other}: sharing receipt {doc.receipt_id}: timestamp 1 of 1: it was made for "
        "other data (message imprint differs); do not rely on its time\n")
    # A token over the right checkpoint from a TSA the vault does not trust.
    rogue = rogue_tsa.reply(TimestampQuery.for_message(doc.checkpoint.encode()).der)
    untrusted = _resign(tmp_path / "untrusted.json", replace(
        doc, timestamps=(base64.b64encode(rogue).decode(),)), key)
    result = world.office("verify", str(untrusted))
    assert result.exit_code == 3
    assert result.stdout == (
        f"FAIL: {untrusted}: sharing receipt {doc.receipt_id}: timestamp 1 of 1: its signature "
        "does not chain to a trusted TSA certificate at its time; do not rely on its time (if "
        "you trust its TSA, pass the TSA's CA certificate with --tsa-ca)\n")
    # ...which the auditor who chooses to trust that TSA accepts.
    rogue_at = _attested(base64.b64encode(rogue).decode())
    assert world.office.ok("verify", str(untrusted), "--tsa-ca", str(rogue_tsa.ca_file)
                           ).stdout.endswith(
        f"; checkpoint timestamped at {rogue_at} by CN=rogue-tsa,O=Fictional test TSA)\n")
    # Not a token at all.
    junk = _resign(tmp_path / "junk.json", replace(doc, timestamps=("MAA=",)), key)
    assert world.office("verify", str(junk)).stdout == (
        f"FAIL: {junk}: sharing receipt {doc.receipt_id}: timestamp 1 of 1: not a DER RFC 3161 "
        "TimeStampResp; do not rely on its time\n")


def test_a_revoked_key_is_judged_by_the_attested_time_not_its_own_clock(
        tmp_path: Path, tsa_one: LocalTsa) -> None:
    from vault.crypto.tsp import TimestampQuery

    world = _sharing(tmp_path, (tsa_one,))
    receipt = _receipt(world)
    doc = rfmt.SharingReceipt.from_bytes(receipt.read_bytes())
    stamped = _attested(doc.timestamps[0])
    key = _signing_key(world.office, "registry-office")
    world.office.ok("identity", "create", "evidence-unit")
    world.office.ok("identity", "revoke", "registry-office", "--as", "evidence-unit")
    revoked = json.loads(world.office.ok("identity", "show", "registry-office", "--json")
                         .stdout)["revoked_at"]
    # Timestamped before the revocation: still accepted, and the output says why.
    assert world.office.ok("verify", str(receipt)).stdout.endswith(
        f"; checkpoint timestamped at {stamped} by {TSA_ONE}; note: timestamped before its key "
        f"was revoked at {revoked})\n")
    # Whoever holds the revoked key signs a receipt dated (by its own clock) as the real one,
    # before the revocation, with a fresh token: the TSA's time is after the revocation.
    time.sleep(1.1)
    fresh = tsa_one.reply(TimestampQuery.for_message(doc.checkpoint.encode()).der)
    late = _attested(base64.b64encode(fresh).decode())
    forged = _resign(tmp_path / "forged.json", replace(
        doc, timestamps=(base64.b64encode(fresh).decode(),)), key)
    result = world.office("verify", str(forged))
    assert result.exit_code == 3
    assert result.stdout == (
        f"FAIL: {forged}: sharing receipt {doc.receipt_id}: checkpoint timestamped at {late} by "
        f"{TSA_ONE}, after its signer's key {world.office_fp} was revoked at {revoked}; do not "
        "rely on it\n")
    # Without the token, the same forgery passes on its own clock: what tokens are for.
    bare = _resign(tmp_path / "bare.json", replace(doc, timestamps=(), version=1), key)
    assert world.office.ok("verify", str(bare)).stdout.endswith(
        f"; note: signed before its key was revoked at {revoked})\n")


# ---------------------------------------------------------------------- open


def test_open_checks_the_tokens_before_receiving_and_records_the_times(
        tmp_path: Path, tsa_one: LocalTsa, rogue_tsa: LocalTsa) -> None:
    world = _sharing(tmp_path, (tsa_one,))
    at = _attested(_envelope(world.package).timestamps[0])
    # Trusting only another TSA: refused before anything is received.
    out = tmp_path / "received"
    assert_refusal(world.icc("open", str(world.package), "--out", str(out), "--tsa-ca",
                             str(rogue_tsa.ca_file)), 3,
                   f"package {world.package_id}: timestamp 1 of 1: its signature does not "
                   "chain to a trusted TSA certificate at its time; do not rely on its time")
    assert list(out.iterdir()) == []
    assert world.icc.ok("items", "list", "--json").stdout == "[]\n"
    # With the TSA's CA: opened, the time printed and recorded in package.opened.
    result = world.icc.ok("open", str(world.package), "--out", str(out), "--tsa-ca",
                          str(tsa_one.ca_file))
    assert (f"evault: package {world.package_id}: checkpoint timestamped at {at} by {TSA_ONE} "
            "(RFC 3161, checked)\n") in result.stderr
    events = json.loads(world.icc.ok("custody", "show", world.package_id, "--json").stdout)[
        "events"]
    [opened] = [e for e in events if e["action"] == "package.opened"]
    assert opened["details"]["timestamps"] == [{"tsa": TSA_ONE, "attested_at": at}]
    world.icc.ok("custody", "verify")


def test_open_without_a_tsa_to_trust_names_the_unchecked_tokens(
        tmp_path: Path, tsa_one: LocalTsa) -> None:
    world = _sharing(tmp_path, (tsa_one,))
    out = tmp_path / "received"
    result = world.icc.ok("open", str(world.package), "--out", str(out), "--json")
    opened = json.loads(result.stdout)
    assert opened["timestamps_unchecked"] == 1 and "timestamps" not in opened
    events = json.loads(world.icc.ok("custody", "show", world.package_id, "--json").stdout)[
        "events"]
    assert all("timestamps" not in e["details"] for e in events)


def test_only_commands_that_meet_a_token_load_the_rfc3161_library(
        office: Cli, tsa_one: LocalTsa, tmp_path: Path) -> None:
    def modules(*args: str) -> str:
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "vault", *args,
                               "--vault", str(office.vault)], capture_output=True, text=True,
                              check=False, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        assert done.returncode == 0, done.stderr
        return done.stderr

    assert "rfc3161_client" not in modules("items", "list")
    assert "rfc3161_client" not in modules("custody", "checkpoint")  # no TSA configured
    configure(office, tsa_one)
    assert "rfc3161_client" in modules("custody", "checkpoint", "-o", str(tmp_path / "c.txt"))
