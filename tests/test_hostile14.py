"""Hostile review of issue 14: attacks by a database holder, a hostile recipient and a
hostile sender on the signed key history, the log's anchor, witnesses and sealed metadata."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import Cli
from test_key_history import BODY, CASE, OFFICE, office, officer, sql, verify_lines, with_body
from test_witness import World, _envelope_note, _make_world, _truncate

from vault.clock import isoformat, utcnow
from vault.crypto.age import AgeIdentity
from vault.crypto.keys import SigningKey
from vault.custody.cosignature import cosign
from vault.custody.events import Event
from vault.custody.merkle import Frontier, leaf_hash
from vault.formats.package import Party
from vault.formats.receipt import ACK_NAMESPACE, Acknowledgement, sign_document
from vault.service.keyhistory import Anchor, key_details, read_anchor
from vault.service.vaults import open_vault


def test_hiding_a_body_key_revocation_by_its_stored_action_refuses_packages(
    cli: Cli, tmp_path: Path
) -> None:
    """A revocation hidden from the quick checks (its stored action changed) must not let
    a package be encrypted to the revoked key before anyone runs `custody verify`."""
    office(cli, tmp_path)
    signing, _ = with_body(cli)
    cli.ok("body", "key", "revoke", BODY, signing.public.fingerprint)
    sql(cli, "UPDATE custody_events SET action = 'body.added' "
             "WHERE action = 'body.key_revoked'")
    sql(cli, "UPDATE body_keys SET revoked_at = NULL")
    out = tmp_path / "p.evpkg"

    result = cli("package", "create", "--to", BODY, "--case", CASE, "-o", str(out))

    assert (result.exit_code, result.stderr) == (
        3, "evault: custody log: event 5: key history: a key event the key store lists is missing, "
           "rewritten or hidden by its stored action; run `evault custody verify`\n")
    assert not out.exists()


def test_reanchor_forgets_key_events_of_the_log_given_up(
    sqlite_cli: Cli, tmp_path: Path
) -> None:
    """A key event the key store lists, in the part of the log an older backup rolled back,
    does not block the log once it is reanchored."""
    cli = sqlite_cli
    office(cli, tmp_path)
    backup = tmp_path / "vault.db.bak"
    shutil.copy2(cli.vault / "vault.db", backup)
    with_body(cli)
    shutil.copy2(backup, cli.vault / "vault.db")
    cli.ok("custody", "reanchor", "--as", OFFICE)

    with_body(cli)
    result = cli("package", "create", "--to", BODY, "--case", CASE, "-o",
                 str(tmp_path / "p.evpkg"))

    assert result.exit_code == 0, result.stderr
    assert verify_lines(cli)[0] == 0


def test_emptied_identity_table_does_not_restart_the_key_history(
    cli: Cli, tmp_path: Path
) -> None:
    """A database holder who deletes every identity row does not get the next `identity
    create` to replace the key store's trust anchor (and with it the whole key history)."""
    office(cli, tmp_path)
    first = json.loads(cli.ok("identity", "show", "--json").stdout)["fingerprint"]
    sql(cli, "DELETE FROM identity_keys")
    sql(cli, "DELETE FROM identities")
    sql(cli, "DELETE FROM vault_keys")

    result = cli("identity", "create", "field-team")

    assert (result.exit_code, result.stderr) == (
        3, "evault: identities: the table is empty, but the key store's key history starts at "
           f"event 0 by {first}; restore the database from a backup and run "
           "`evault custody verify`\n")
    vault = open_vault(cli.vault)
    try:
        assert read_anchor(vault) == Anchor(0, first)
    finally:
        vault.close()


def test_forged_attestation_in_a_vault_without_identities_is_not_adopted(
    cli: Cli, tmp_path: Path
) -> None:
    """A vault with no identity yet has no trust anchor. A database holder who inserts a
    ``keys.attested`` event signed by a key of their own (attesting their identity and
    storage key) does not get it named in the key store by the next verify or doctor: they
    refuse it, and the first identity then starts the history as in a new vault."""
    attacker, attacker_age = officer()
    vault = open_vault(cli.vault)
    log = f"evault/{vault.config.vault_id}"
    vault.close()
    forged = Event(log, 0, utcnow(), attacker.public.fingerprint, "keys.attested", "keys",
                   details={
                       "identities": [{"name": OFFICE, "revoked_at": None, "keys": [{
                           **key_details(attacker.public, str(attacker_age.recipient)),
                           "created_at": isoformat(utcnow()), "retired_at": None,
                           "revoked_at": None}]}],
                       "bodies": [], "contacts": [],
                       "storage": {"age_recipient": str(attacker_age.recipient),
                                   "created_at": isoformat(utcnow())}})
    body, signature = forged.sign(attacker)
    frontier = Frontier()
    frontier.append(leaf_hash(body))
    sql(cli, "INSERT INTO custody_events (seq, recorded_at, actor, action, subject, body, "
             "signature, leaf_hash) VALUES (0, :t, :a, 'keys.attested', 'keys', :b, :s, :l)",
        t=utcnow(), a=attacker.public.fingerprint, b=body, s=signature, l=leaf_hash(body))
    sql(cli, "UPDATE custody_head SET size = 1, root = :r, frontier = :f",
        r=frontier.root(), f=frontier.to_bytes())

    refused = cli("custody", "verify")
    assert (refused.exit_code, refused.stderr) == (
        3, f"evault: custody log: event 0: keys.attested by {attacker.public.fingerprint}, a "
           "key this vault's key store does not hold; the key history cannot start there; restore "
           "the database from a backup\n")
    created = json.loads(cli.ok("identity", "create", OFFICE, "--json").stdout)

    vault = open_vault(cli.vault)
    try:
        assert read_anchor(vault) == Anchor(1, created["fingerprint"])
    finally:
        vault.close()
    assert verify_lines(cli) == (3, [
        f"FAIL: event 0: actor {attacker.public.fingerprint} is not a key of this vault"])


@pytest.fixture
def world(tmp_path: Path) -> World:
    """An office vault that sent a package to ICC-OTP, opened and acknowledged there."""
    return _make_world(tmp_path, None)


def test_ack_signed_by_a_body_key_added_in_the_table_is_refused(world: World) -> None:
    """A database holder adds a key of their own to the body's rows and forges its ack (with
    a cosignature): the vault must not sign a `package.acknowledged` event naming that key,
    nor keep the cosignature as a witness."""
    attacker = SigningKey.generate()
    sql(world.office, "INSERT INTO body_keys (body_id, label, signing_key, fingerprint, "
                      "age_recipient, card, added_at) VALUES ('ICC-OTP', NULL, :k, :f, :r, "
                      "NULL, :t)",
        k=attacker.public.raw, f=attacker.public.fingerprint,
        r=str(AgeIdentity.generate().recipient), t=utcnow())
    real = Acknowledgement.from_bytes(world.ack.read_bytes())
    forged = replace(real, recipient=Party("icc-officer", attacker.public.fingerprint),
                     cosigned_checkpoint=cosign(_envelope_note(world.package),
                                                "evault-witness/ICC-OTP", attacker,
                                                int(utcnow().timestamp())))
    path = world.tmp / "forged-ack.json"
    path.write_bytes(forged.to_bytes())
    Path(f"{path}.sig").write_text(sign_document(forged.to_bytes(), attacker, ACK_NAMESPACE))

    result = world.office("receipt", "import", str(path))

    assert (result.exit_code, result.stderr) == (
        3, f"evault: body ICC-OTP key {attacker.public.fingerprint}: not in the signed "
           "history; run `evault doctor`\n")
    shown = json.loads(world.office.ok("package", "show", world.package_id, "--json").stdout)
    assert shown["state"] != "acknowledged"


def test_newest_revocation_cut_off_the_log_refuses_packages(cli: Cli, tmp_path: Path) -> None:
    """The revocation was the newest event: deleting it, recomputing the head and clearing
    the row leaves a log shorter than the key store's anchor; the package is refused."""
    office(cli, tmp_path)
    signing, _ = with_body(cli)
    cli.ok("body", "key", "revoke", BODY, signing.public.fingerprint)
    _truncate(cli, 5)
    sql(cli, "UPDATE body_keys SET revoked_at = NULL")
    out = tmp_path / "p.evpkg"

    result = cli("package", "create", "--to", BODY, "--case", CASE, "-o", str(out))

    assert (result.exit_code, result.stderr) == (
        3, "evault: custody log: the log is shorter than the last checkpoint this vault signed "
           "(5 events, the checkpoint has 6); restore the newer database; if an older backup "
           "was restored on purpose, run `evault custody reanchor --as NAME`\n")
    assert not out.exists()
