"""Keys and revocation: nothing new goes to a revoked key, and signatures keep their date.

- A package for a body with two keys, one revoked, is encrypted to the other only: the
  envelope does not name the revoked key, and that key cannot decrypt the payload.
- What a key signed before its revocation still verifies (``evault verify`` adds a note);
  a document dated after the revocation is refused, and so is an acknowledgement dated
  after the body key's revocation (``receipt import``) and a custody event signed after
  its actor's key was revoked (``custody verify``).
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import BACKENDS, Cli
from test_robustness import CASE, as_json, assert_refusal, backend_url

from vault.clock import isoformat, parse_iso, utcnow
from vault.errors import ConflictError, DecryptionError
from vault.formats import package as fmt
from vault.formats import receipt as rfmt


def _recipient(tmp: Path, name: str) -> tuple[Cli, str, Path]:
    cli = Cli(tmp / name)
    cli.init()
    fp = as_json(cli, "identity", "create", name, "--json")["fingerprint"]
    card = tmp / f"{name}.card.json"
    cli.ok("identity", "export", "-o", str(card))
    return cli, fp, card


def _keypair(cli: Cli, name: str | None = None) -> object:
    from vault.service.identities import current_key, get_identity, load_keypair
    from vault.service.vaults import open_vault

    v = open_vault(cli.vault)
    try:
        with v.transaction() as session:
            return load_keypair(v, current_key(get_identity(session, name)))
    finally:
        v.close()


class TwoKeys:
    """An office and a body ICC-OTP with two officers' keys, each officer in own vault."""

    def __init__(self, tmp: Path, database: str | None) -> None:
        self.tmp = tmp
        self.office = Cli(tmp / "office")
        self.office.init(database)
        self.office.ok("identity", "create", "registry-office")
        self.office.ok("identity", "create", "evidence-unit")
        self.office_fp = as_json(self.office, "identity", "show", "--json")["fingerprint"]
        self.card = tmp / "office.card.json"
        self.office.ok("identity", "export", "registry-office", "-o", str(self.card))
        self.office.ok("body", "add", "ICC-OTP", "--name", "Fictional ICC-OTP")
        self.a, self.a_fp, card_a = _recipient(tmp, "officer-a")
        self.b, self.b_fp, card_b = _recipient(tmp, "officer-b")
        for officer, card, fp in ((self.a, card_a, self.a_fp), (self.b, card_b, self.b_fp)):
            self.office.ok("body", "key", "add", "ICC-OTP", "--card", str(card),
                           "--fingerprint", fp)
            officer.ok("contact", "add", str(self.card), "--fingerprint", self.office_fp)
        evidence = tmp / "statement.txt"
        evidence.write_bytes(b"fictional statement\n")
        self.office.ok("ingest", str(evidence), "--case", CASE, "--create-case")

    def package(self, name: str) -> tuple[str, Path]:
        path = self.tmp / f"{name}.evpkg"
        pid = as_json(self.office, "package", "create", "--to", "ICC-OTP", "--case", CASE,
                      "-o", str(path), "--json")["id"]
        return str(pid), path


@pytest.fixture
def world(tmp_path: Path) -> TwoKeys:
    return TwoKeys(tmp_path, None)


@pytest.mark.parametrize("backend", BACKENDS)
def test_packages_never_go_to_a_revoked_key(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    from vault.crypto.age import AgeReader

    world = TwoKeys(tmp_path, backend_url(request, backend))
    before_id, before = world.package("before")
    world.office.ok("body", "key", "revoke", "ICC-OTP", world.b_fp)
    after_id, after = world.package("after")
    envelope = fmt.Envelope.from_bytes(fmt.read_package(after).envelope_bytes)
    assert [k.fingerprint for k in envelope.recipients] == [world.a_fp]
    assert envelope.escrow.fingerprint == world.office_fp
    shown = as_json(world.office, "package", "show", after_id, "--json")
    assert shown["recipients"] == [world.a_fp]
    # The revoked key cannot decrypt what was made after its revocation...
    pair_b = _keypair(world.b)
    with fmt.read_package(after).open_payload() as payload, pytest.raises(DecryptionError):
        AgeReader(io.BytesIO(payload.read()), [pair_b.age]).read()  # type: ignore[attr-defined]
    assert_refusal(world.b("open", str(after), "--out", str(tmp_path / "b-after")), 3,
                   "not for this vault; it is encrypted to ICC-OTP")
    # ...and the other officer can; what was made before the revocation is still B's.
    world.a.ok("open", str(after), "--out", str(tmp_path / "a-after"))
    world.b.ok("open", str(before), "--out", str(tmp_path / "b-before"))
    # export follows the same rule.
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    (row,) = [json.loads(line) for line in world.office.ok(
        "export", "--to", "ICC-OTP", "--case", CASE, "--outbox", str(outbox), "--reshare",
        "--jsonl").stdout.splitlines()]
    exported = as_json(world.office, "package", "show", row["package"], "--json")
    assert exported["recipients"] == [world.a_fp]
    assert before_id != after_id


def test_signatures_before_a_revocation_verify_with_a_note(world: TwoKeys) -> None:
    office = world.office
    outbox = world.tmp / "outbox"
    outbox.mkdir()
    pid, package = world.package("p")
    office.ok("send", pid, "--outbox", str(outbox))
    receipt_id = as_json(office, "receipt", "list", "--json")[0]["id"]
    receipt = world.tmp / "receipt.json"
    office.ok("receipt", "export", receipt_id, "-o", str(receipt))
    card = world.card
    before = office.ok("verify", str(receipt), str(package), str(card)).stdout
    assert "note:" not in before
    signing = _keypair(office, "registry-office").signing  # type: ignore[attr-defined]
    office.ok("identity", "revoke", "registry-office", "--as", "evidence-unit")
    revoked_at = as_json(office, "identity", "show", "registry-office", "--json")["revoked_at"]
    note = f"note: signed before its key was revoked at {revoked_at}"
    lines = office.ok("verify", str(receipt), str(package), str(card)).stdout.splitlines()
    assert lines[0].startswith(f"OK: {receipt} (") and lines[0].endswith(f"; {note})")
    assert lines[1].startswith(f"OK: {package} (") and lines[1].endswith(f"; {note})")
    assert lines[2].endswith(f"its key was revoked at {revoked_at}; do not trust it)")
    # The same key signing a receipt dated after its revocation: refused.
    later = isoformat(parse_iso(revoked_at) + timedelta(days=1))
    forged = replace(rfmt.SharingReceipt.from_bytes(receipt.read_bytes()), sent_at=later)
    data = forged.to_bytes()
    path = world.tmp / "late-receipt.json"
    path.write_bytes(data)
    Path(f"{path}.sig").write_text(rfmt.sign_document(data, signing, rfmt.RECEIPT_NAMESPACE))
    result = office("verify", str(path))
    assert result.exit_code == 3
    assert result.stdout == (
        f"FAIL: {path}: sharing receipt {receipt_id}: dated {later}, after its signer's key "
        f"{world.office_fp} was revoked at {revoked_at}; do not rely on it\n")
    # Without the vault's knowledge of the revocation, an auditor with only an
    # allowed_signers file sees a trusted key (documented in docs/security.md).
    allowed = world.tmp / "allowed_signers"
    allowed.write_text(f"registry-office {signing.public.openssh()}\n")
    home = world.tmp / "no-vault"
    auditor = Cli(home)
    assert auditor("verify", str(path), "--trusted-keys", str(allowed), vault=False).exit_code == 0


def test_acks_dated_after_the_body_key_revocation_are_refused(world: TwoKeys) -> None:
    from vault.service.opening import open_package
    from vault.service.vaults import open_vault

    office = world.office
    outbox = world.tmp / "outbox"
    outbox.mkdir()
    pid, _ = world.package("p")
    office.ok("send", pid, "--outbox", str(outbox))
    package = outbox / f"{pid}.evpkg"
    world.a.ok("open", str(package), "--out", str(world.tmp / "in-a"))
    world.a.ok("ack", pid, "-o", str(world.tmp / "ack-a.json"))
    # B's key is revoked; B receives the package a minute later, so B's ack is dated after.
    office.ok("body", "key", "revoke", "ICC-OTP", world.b_fp)
    v = open_vault(world.b.vault)
    try:
        open_package(v, package, out_dir=world.tmp / "in-b", now=utcnow() + timedelta(minutes=1))
    finally:
        v.close()
    world.b.ok("ack", pid, "-o", str(world.tmp / "ack-b.json"))
    assert_refusal(office("receipt", "import", str(world.tmp / "ack-b.json")), 3,
                   f"ack for package {pid}:", "it is not from a key of ICC-OTP")
    assert as_json(office, "package", "show", pid, "--json")["state"] == "sent"
    # A's key revoked now, after A's ack was dated: still accepted.
    office.ok("body", "key", "revoke", "ICC-OTP", world.a_fp)
    office.ok("receipt", "import", str(world.tmp / "ack-a.json"))
    assert as_json(office, "package", "show", pid, "--json")["state"] == "acknowledged"
    office.ok("custody", "verify")


def test_custody_verify_refuses_events_signed_after_revocation(
        world: TwoKeys, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy import select

    from vault.service.custody import CustodyLog
    from vault.service.identities import load_keypair
    from vault.service.vaults import open_vault
    from vault.store.models import IdentityKey

    office = world.office
    office.ok("identity", "revoke", "evidence-unit", "--as", "registry-office")
    verified = office.ok("custody", "verify").stdout  # what it signed before still verifies
    assert verified.startswith("OK: ")
    v = open_vault(office.vault)
    try:
        with v.transaction() as session:
            key = session.scalars(select(IdentityKey).where(
                IdentityKey.revoked_at.is_not(None))).one()
            pair = load_keypair(v, key)  # a stolen key, used after its revocation
            late = key.revoked_at + timedelta(minutes=5)
            log = CustodyLog(v, session)
            with pytest.raises(ConflictError):  # evault's own code refuses to sign it
                log.append(pair, "case.created", "UA-2026-9999", now=late)
            # The thief's code, which does not check its signer.
            monkeypatch.setattr(CustodyLog, "_check_signer", lambda self, actor, when: None)
            event = log.append(pair, "case.created", "UA-2026-9999", now=late)
            seq = event.seq
    finally:
        v.close()
    result = office("custody", "verify")
    assert result.exit_code == 3
    revoked = isoformat(key.revoked_at)
    assert result.stdout == f"FAIL: event {seq}: signed after its key was revoked ({revoked})\n"
    assert_refusal(result, 3, "custody log: 1 defect(s)")
