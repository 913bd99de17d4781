"""Keys only through signed history (issue 14): the key tables are a cache of signed events.

Each attack is made as a database holder would: SQL on the vault's database, no key store.
The real CLI must then detect it with the specific reason and exit 3, and encrypt nothing to
the attacker's key.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from sqlalchemy import select, text

from vault.clock import isoformat
from vault.crypto.age import AgeIdentity
from vault.crypto.keys import SigningKey
from vault.custody.events import Event
from vault.custody.merkle import Frontier, leaf_hash
from vault.custody.note import Checkpoint as NoteCheckpoint
from vault.custody.note import NoteSigner, sign_checkpoint
from vault.service.custody import CustodyLog
from vault.service.identities import KeyPair
from vault.service.keyhistory import ANCHOR_NAME, Anchor, key_details
from vault.service.vaults import open_vault
from vault.store.models import (
    CustodyEvent,
    CustodyHead,
    IdentityKey,
    SignedCheckpoint,
    VaultKey,
)

CASE = "FICT-2026-0042"
OFFICE = "registry-office"
BODY = "FICT-TRIBUNAL"
OLD_VAULT = Path(__file__).resolve().parent / "vectors" / "old-vault" / "vault"
DOCTOR = "run `evault doctor`"


@pytest.fixture(autouse=True)
def _fast_blobs(monkeypatch: pytest.MonkeyPatch) -> None:
    """About keys, not blob durability: blobs skip the file-system sync."""
    monkeypatch.setattr("vault.store.blobs.syncfs", lambda path: True)


def sql(cli: Cli, statement: str, **params: Any) -> None:
    """One statement on the vault's database, as its holder would run it (no key store)."""
    vault = open_vault(cli.vault)
    try:
        with vault.engine.begin() as conn:
            conn.execute(text(statement), params)
    finally:
        vault.close()


def evidence(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    path.write_text(f"Fictional evidence: {name}\n")
    return str(path)


def blob_files(root: Path) -> set[Path]:
    return {p for p in (root / "blobs").rglob("*") if p.is_file() and not p.name.startswith(".")}


def office(cli: Cli, tmp_path: Path) -> None:
    """An identity and one item ingested."""
    cli.ok("identity", "create", OFFICE)
    cli.ok("ingest", evidence(tmp_path, "note-01.txt"), "--case", CASE, "--create-case")


def officer() -> tuple[SigningKey, AgeIdentity]:
    return SigningKey.generate(), AgeIdentity.generate()


def with_body(cli: Cli) -> tuple[SigningKey, AgeIdentity]:
    """A body with one officer's key; the officer's private keys."""
    signing, age = officer()
    cli.ok("body", "add", BODY, "--name", "Fictional Tribunal of Examples")
    cli.ok("body", "key", "add", BODY, "--age", str(age.recipient), "--ssh",
           signing.public.openssh())
    return signing, age


def verify_lines(cli: Cli) -> tuple[int, list[str]]:
    result = cli("custody", "verify")
    return result.exit_code, result.stdout.splitlines()


# ----------------------------------------------------------------------------- storage key


def test_storage_recipient_swapped_in_table_is_refused(
    cli: Cli, tmp_path: Path
) -> None:
    office(cli, tmp_path)
    attacker = str(AgeIdentity.generate().recipient)
    sql(cli, "UPDATE vault_keys SET age_recipient = :r", r=attacker)
    before = blob_files(cli.vault)

    result = cli("ingest", evidence(tmp_path, "note-02.txt"), "--case", CASE)

    assert (result.exit_code, result.stderr) == (
        3, f"evault: storage key {attacker}: age recipient differs from the signed history; "
        f"{DOCTOR}\n")
    assert blob_files(cli.vault) == before  # nothing encrypted to the attacker
    assert verify_lines(cli) == (3, [
        f"FAIL: key table: storage key {attacker}: age recipient differs from the signed history"
    ])


def test_received_package_is_not_reencrypted_to_a_swapped_storage_key(tmp_path: Path) -> None:
    """`open` re-encrypts what it receives to the storage key: the same check comes first."""
    from test_opening import _make_world

    world = _make_world(tmp_path, None)
    attacker = str(AgeIdentity.generate().recipient)
    sql(world.icc, "UPDATE vault_keys SET age_recipient = :r", r=attacker)
    before = blob_files(world.icc.vault)

    result = world.icc("open", str(world.package), "--out", str(tmp_path / "received"))

    assert (result.exit_code, result.stderr) == (
        3, f"evault: storage key {attacker}: age recipient differs from the signed history; "
        f"{DOCTOR}\n")
    assert blob_files(world.icc.vault) == before


def test_contact_revocation_cleared_in_table_is_not_trusted(tmp_path: Path) -> None:
    """`open` and `verify` trust a sender only as the signed history has it."""
    from test_opening import _make_world

    world = _make_world(tmp_path, None)
    revoked = json.loads(world.icc.ok("contact", "revoke", "registry-office", "--json").stdout)
    sql(world.icc, "UPDATE contacts SET revoked_at = NULL")
    out = tmp_path / "received"

    result = world.icc("open", str(world.package), "--out", str(out))

    assert (result.exit_code, result.stderr) == (
        3, f"evault: contact registry-office key {world.office_fp}: revoked in the signed "
        f"history since {revoked['revoked_at']}, not in the table; {DOCTOR}\n")
    assert not out.exists()
    checked = world.icc("verify", str(world.package))
    assert (checked.exit_code, checked.stderr) == (3, result.stderr)


# ----------------------------------------------------------------------------- body keys


@pytest.mark.parametrize("half", ["age", "ssh"])
def test_body_key_swapped_in_table_is_refused(
    cli: Cli, tmp_path: Path, half: str
) -> None:
    office(cli, tmp_path)
    signing, _ = with_body(cli)
    attacker_signing, attacker_age = officer()
    if half == "age":
        sql(cli, "UPDATE body_keys SET age_recipient = :r", r=str(attacker_age.recipient))
        reason = "age recipient differs from the signed history"
    else:
        sql(cli, "UPDATE body_keys SET signing_key = :k", k=attacker_signing.public.raw)
        reason = "signing key differs from the signed history"
    out = tmp_path / "p.evpkg"
    message = f"body {BODY} key {signing.public.fingerprint}: {reason}"

    result = cli("package", "create", "--to", BODY, "--case", CASE, "-o", str(out))

    assert (result.exit_code, result.stderr) == (3, f"evault: {message}; {DOCTOR}\n")
    assert not out.exists()
    (tmp_path / "outbox").mkdir()
    exported = cli("export", "--to", BODY, "--case", CASE, "--outbox", str(tmp_path / "outbox"),
                   "--jsonl")
    assert (exported.exit_code, exported.stderr) == (
        3, f"evault: export failed for {BODY}; none succeeded\n")
    assert json.loads(exported.stdout)["error"] == f"{message}; {DOCTOR}"
    assert not list((tmp_path / "outbox").glob("*.evpkg"))
    assert verify_lines(cli) == (3, [f"FAIL: key table: {message}"])


def test_body_key_introduced_by_a_forged_event_is_refused(
        cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key event signed by a key the history does not trust adds nothing to it."""
    # The intruder's own code, not evault's: it does not check its signer.
    monkeypatch.setattr(CustodyLog, "_check_signer", lambda self, actor, when: None)
    office(cli, tmp_path)
    with_body(cli)
    signing = SigningKey.generate()
    intruder = KeyPair(signing.public.fingerprint, signing, AgeIdentity.generate())
    officer_signing, officer_age = officer()
    vault = open_vault(cli.vault)
    try:
        with vault.transaction() as session:
            # What the project's own code would append, signed by the intruder's key (it
            # refuses: test_evault_signs_no_event_its_key_history_refuses).
            row = CustodyLog(vault, session).append(
                intruder, "body.key_added", BODY,
                details=key_details(officer_signing.public, str(officer_age.recipient)))
            seq, when = row.seq, isoformat(row.recorded_at)
            session.execute(text(
                "INSERT INTO body_keys (body_id, label, signing_key, fingerprint, age_recipient,"
                " card, added_at) VALUES (:b, NULL, :k, :f, :r, NULL, :t)"),
                {"b": BODY, "k": officer_signing.public.raw, "r": str(officer_age.recipient),
                 "f": officer_signing.public.fingerprint, "t": row.recorded_at})
    finally:
        vault.close()
    refusal = (f"event {seq}: key history: signer {intruder.fingerprint} was not a trusted, "
               f"unrevoked identity key at {when}")

    result = cli("package", "create", "--to", BODY, "--case", CASE, "-o",
                 str(tmp_path / "p.evpkg"))

    assert (result.exit_code, result.stderr) == (
        3, f"evault: custody log: {refusal}; run `evault custody verify`\n")
    assert not (tmp_path / "p.evpkg").exists()
    assert verify_lines(cli) == (3, [
        f"FAIL: key table: body {BODY} key {officer_signing.public.fingerprint}: not in the "
        "signed history",
        f"FAIL: event {seq}: actor {intruder.fingerprint} is not a key of this vault",
        f"FAIL: {refusal}",
    ])


def test_body_key_revocation_cleared_in_table_is_refused(cli: Cli, tmp_path: Path) -> None:
    office(cli, tmp_path)
    signing, _ = with_body(cli)
    fingerprint = signing.public.fingerprint
    revoked = json.loads(cli.ok("body", "key", "revoke", BODY, fingerprint, "--json").stdout)
    sql(cli, "UPDATE body_keys SET revoked_at = NULL")
    message = (f"body {BODY} key {fingerprint}: revoked in the signed history since "
               f"{revoked['revoked_at']}, not in the table")

    result = cli("package", "create", "--to", BODY, "--case", CASE, "-o",
                 str(tmp_path / "p.evpkg"))

    assert (result.exit_code, result.stderr) == (3, f"evault: {message}; {DOCTOR}\n")
    assert verify_lines(cli) == (3, [f"FAIL: key table: {message}"])


# ----------------------------------------------------------------------------- identities


def test_identity_revocation_cleared_in_table_may_not_act(cli: Cli, tmp_path: Path) -> None:
    office(cli, tmp_path)
    created = json.loads(cli.ok("identity", "create", "field-team", "--json").stdout)
    revoked = json.loads(cli.ok("identity", "revoke", "field-team", "--json").stdout)
    sql(cli, "UPDATE identities SET revoked_at = NULL WHERE name = 'field-team'")
    sql(cli, "UPDATE identity_keys SET revoked_at = NULL WHERE fingerprint = :f",
        f=created["fingerprint"])
    since = f"revoked in the signed history since {revoked['revoked_at']}, not in the table"

    result = cli("ingest", evidence(tmp_path, "note-02.txt"), "--case", CASE,
                 "--as", "field-team")

    assert (result.exit_code, result.stderr) == (
        3, f"evault: identity field-team: {since}; {DOCTOR}\n")
    assert verify_lines(cli) == (3, [
        f"FAIL: key table: identity field-team key {created['fingerprint']}: {since}",
        f"FAIL: key table: identity field-team: {since}",
    ])


def test_hiding_a_revocation_by_its_stored_action_is_caught_by_verify(
    sqlite_cli: Cli, tmp_path: Path
) -> None:
    """The quick checks read key events by their stored action; verify checks that column."""
    cli = sqlite_cli
    office(cli, tmp_path)
    created = json.loads(cli.ok("identity", "create", "field-team", "--json").stdout)
    cli.ok("identity", "revoke", "field-team")
    sql(cli, "UPDATE custody_events SET action = 'body.added' WHERE action = 'identity.revoked'")
    sql(cli, "UPDATE identities SET revoked_at = NULL WHERE name = 'field-team'")
    sql(cli, "UPDATE identity_keys SET revoked_at = NULL WHERE fingerprint = :f",
        f=created["fingerprint"])

    code, lines = verify_lines(cli)

    assert code == 3
    assert lines == [
        "FAIL: event 4: key history: a key event the key store lists is missing, rewritten "
        "or hidden by its stored action",
        "FAIL: event 4: stored action differ from the signed event",
    ]


def resign_everything(cli: Cli, attacker: SigningKey) -> None:
    """Replace the first identity's key in the table by the attacker's, rewrite event 2 and
    sign every event and checkpoint anew with the attacker's key: a complete forgery of
    everything the database holds."""
    fingerprint = attacker.public.fingerprint
    vault = open_vault(cli.vault)
    try:
        with vault.transaction() as session:
            session.execute(text("UPDATE identity_keys SET signing_key = :k, fingerprint = :f"),
                            {"k": attacker.public.raw, "f": fingerprint})
            frontier = Frontier()
            for row in session.scalars(select(CustodyEvent).order_by(CustodyEvent.seq)):
                event = Event.decode(row.body)
                details = dict(event.details)
                if "signing_key" in details:
                    details.update(fingerprint=fingerprint,
                                   signing_key=attacker.public.openssh())
                if row.seq == 2:
                    details["original_name"] = "rewritten.txt"
                forged = Event(event.log, event.seq, event.time, fingerprint, event.action,
                               event.subject, details, event.digests)
                row.body, row.signature = forged.sign(attacker)
                row.actor, row.leaf_hash = fingerprint, leaf_hash(row.body)
                frontier.append(row.leaf_hash)
            head = session.get(CustodyHead, 1)
            assert head is not None
            head.size, head.root, head.frontier = (frontier.size, frontier.root(),
                                                   frontier.to_bytes())
            origin = f"evault/{vault.config.vault_id}"
            for cp in session.scalars(select(SignedCheckpoint)):
                cp.note = sign_checkpoint(NoteCheckpoint(origin, cp.size, cp.root),
                                          NoteSigner(origin, attacker))
                cp.signer = fingerprint
    finally:
        vault.close()


def test_identity_key_replaced_and_everything_resigned_fails_verify(
    cli: Cli, tmp_path: Path
) -> None:
    office(cli, tmp_path)
    real = json.loads(cli.ok("identity", "show", "--json").stdout)["fingerprint"]
    cli.ok("custody", "checkpoint")
    item = json.loads(cli.ok("items", "list", "--json").stdout)[0]["id"]
    attacker = SigningKey.generate()
    resign_everything(cli, attacker)
    fake = attacker.public.fingerprint

    vault = open_vault(cli.vault)
    try:
        with vault.transaction() as session:
            recipient = session.scalars(select(VaultKey.age_recipient)).one()
    finally:
        vault.close()

    code, lines = verify_lines(cli)

    # The key store names the real first identity: the forged history has no root, so no
    # key of the vault is known and nothing verifies.
    assert code == 3
    assert lines == [
        "FAIL: checkpoint 1 (size 3): signed note: no signature from a known key "
        "(none configured)",
        f"FAIL: key table: identity {OFFICE}: not in the signed history",
        f"FAIL: key table: storage key {recipient}: not in the signed history",
        # The key store's anchor of the log (vault.service.anchor) catches the rewrite too.
        "FAIL: the log differs from the last checkpoint this vault signed (its first 3 of 3 "
        "events are not the ones signed)",
        f"FAIL: event 0: actor {fake} is not a key of this vault",
        "FAIL: event 0: key history: a key event the key store lists is missing, rewritten "
        "or hidden by its stored action",
        f"FAIL: event 0: key history: not signed by {real}, the identity the key store names",
        f"FAIL: event 1: actor {fake} is not a key of this vault",
        f"FAIL: event 2: actor {fake} is not a key of this vault",
    ]
    # Proofs take the checkpoint's keys from the history too.
    proof = cli("custody", "prove", item)
    assert (proof.exit_code, proof.stderr) == (
        3, "evault: signed note: no signature from a known key (none configured)\n")


# ----------------------------------------------------------------------------- history


def test_a_transaction_derives_the_history_once_until_a_key_event_or_the_head_lock(
        tmp_path: Path) -> None:
    """A command checks its actor, recipients and rules against one history per transaction;
    appending a key event makes the next check derive it again, and so does locking the
    log head if a key event was added since (the head lock is where other writers' key
    events start to count; one query tells)."""
    from vault.service import keyhistory
    from vault.service.identities import load_keypair

    cli = Cli(tmp_path / "vault").init()
    office(cli, tmp_path)
    signing, age = officer()
    vault = open_vault(cli.vault)
    try:
        with vault.transaction() as session:
            first = keyhistory.load(vault, session)
            assert keyhistory.load(vault, session) is first
            CustodyLog(vault, session)  # locks the head: no key event was added since
            assert keyhistory.load(vault, session) is first
            actor = load_keypair(vault, session.scalars(select(IdentityKey)).one())
            log = CustodyLog(vault, session)
            log.append(actor, "body.key_added", BODY,
                       details=key_details(signing.public, str(age.recipient)))
            second = keyhistory.load(vault, session)
            assert second is not first
            assert list(second.body_keys) == [(BODY, signing.public.fingerprint)]
            assert first.body_keys == {}
            # What another writer's commit looks like from here: one more key event row
            # (this one an intake event relabelled, so the history derived again has a
            # defect), seen at the next head lock.
            session.execute(text(
                "UPDATE custody_events SET action = 'contact.added' WHERE action = "
                "'item.ingested'"))
            assert keyhistory.load(vault, session) is second
            CustodyLog(vault, session)
            third = keyhistory.load(vault, session)
            assert third is not second and third.defects
    finally:
        vault.close()


@pytest.mark.postgres
def test_a_key_revoked_by_another_writer_counts_once_the_head_is_locked_on_postgresql(
        tmp_path: Path, pg_url: str) -> None:
    """On PostgreSQL another machine's revocation, committed while a command is under way,
    is seen by every check made after the command locks the log head."""
    from vault.service import keyhistory
    from vault.service.custody import lock_head

    cli = Cli(tmp_path / "vault").init(pg_url)
    office(cli, tmp_path)
    signing, _ = with_body(cli)
    key = (BODY, signing.public.fingerprint)
    vault = open_vault(cli.vault)
    try:
        with vault.transaction() as session:
            before = keyhistory.load(vault, session)
            assert before.body_keys[key].revoked_at is None
            cli.ok("body", "key", "revoke", BODY, signing.public.fingerprint)
            lock_head(session)
            assert keyhistory.load(vault, session).body_keys[key].revoked_at is not None
    finally:
        vault.close()


@pytest.mark.postgres
def test_evault_signs_no_event_its_key_history_refuses_on_postgresql(
        tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command checked its actor, then another machine revoked that identity and
    committed, then the command appended its event: signed after the revocation, it made
    `custody verify` fail for good; or, dated at the command's start, before the
    revocation, it passed verify though logged after it. With the head locked, the append
    now checks its signer against the history, at the event's time and now: refused
    (ConflictError), nothing recorded, the log still verifies."""
    from datetime import timedelta

    from vault.clock import utcnow
    from vault.errors import ConflictError
    from vault.service.custody import actor_pair

    cli = Cli(tmp_path / "vault").init(pg_url)
    office(cli, tmp_path)
    vault = open_vault(cli.vault)
    # Times have whole seconds: an event in the revocation's second is still its key's.
    # One command started before the revocation, in its second (its event carries that
    # time, which verify accepts), and appends a second after it; the other's event is
    # dated a second after it.
    for name, started_before in (("field-team", True), ("survey-team", False)):
        cli.ok("identity", "create", name)
        try:
            with pytest.raises(ConflictError) as refused, vault.transaction() as session:
                pair = actor_pair(vault, session, name)  # checked: not revoked
                started = utcnow()
                cli.ok("identity", "revoke", name, "--as", OFFICE)
                [when] = [i["revoked_at"] for i in json.loads(cli.ok(
                    "identity", "list", "--json").stdout) if i["name"] == name]
                later = utcnow() + timedelta(seconds=1)
                with monkeypatch.context() as clock:
                    if started_before:
                        clock.setattr("vault.service.custody.utcnow", lambda t=later: t)
                    CustodyLog(vault, session).append(
                        pair, "case.created", "FICT-2026-0043",
                        now=started if started_before else later)
        finally:
            vault.close()
        assert str(refused.value) == (
            f"identity key {pair.fingerprint}: the signed key history says it was revoked or "
            f"retired at {when} (by another command meanwhile, or its rows were changed "
            "outside evault); nothing was recorded: check `evault identity list` and run the "
            "command again as a current identity")
        assert cli.ok("custody", "verify").stdout.startswith("OK: ")
        assert [c["id"] for c in json.loads(cli.ok("case", "list", "--json").stdout)] == [CASE]


@pytest.mark.postgres
def test_a_revocation_relabelled_while_a_command_runs_is_caught_on_postgresql(
        tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A third review's case: another machine (whose key store lists nothing here)
    revokes the identity a command is using, while it runs; a database holder changes that
    event's stored action, so that the query of the key events misses it (and would put it
    back afterwards). Checked by count, the history the command derived before looked
    current. After the head lock, the events appended since are read by their signed
    action: refused, nothing recorded."""
    from vault.errors import VerificationError
    from vault.service.custody import actor_pair

    cli = Cli(tmp_path / "vault").init(pg_url)
    office(cli, tmp_path)
    cli.ok("identity", "create", "field-team")
    vault = open_vault(cli.vault)
    try:
        with pytest.raises(VerificationError) as refused, vault.transaction() as session:
            pair = actor_pair(vault, session, "field-team")
            with monkeypatch.context() as other_machine:
                other_machine.setattr("vault.service.keyhistory._list_noted",
                                      lambda *args: None)
                cli.ok("identity", "revoke", "field-team", "--as", OFFICE)
            sql(cli, "UPDATE custody_events SET action = 'case.created' "
                     "WHERE action = 'identity.revoked'")
            CustodyLog(vault, session).append(pair, "case.created", "FICT-2026-0043")
    finally:
        vault.close()
    assert str(refused.value).startswith("custody log: event ")
    assert str(refused.value).endswith(": key history: a key event appended while this "
                                       "command ran is hidden by its stored action; run "
                                       "`evault custody verify`")
    sql(cli, "UPDATE custody_events SET action = 'identity.revoked' "
             "WHERE body LIKE '%identity.revoked%'")
    assert cli.ok("custody", "verify").stdout.startswith("OK: ")
    assert [c["id"] for c in json.loads(cli.ok("case", "list", "--json").stdout)] == [CASE]


def test_a_revocation_dated_before_what_its_key_signed_is_refused(tmp_path: Path) -> None:
    """Another machine's clock ahead of this one's: its identity signed an event dated a
    few seconds ahead, then this machine revoked (or rotated) the identity at its own,
    earlier time; custody verify failed that event for good. Refused, nothing recorded."""
    from datetime import timedelta

    from vault.clock import isoformat, utcnow
    from vault.errors import ConflictError
    from vault.service.identities import revoke_identity, rotate_identity

    cli = Cli(tmp_path / "vault").init()
    office(cli, tmp_path)
    cli.ok("identity", "create", "field-team")
    ahead = utcnow() + timedelta(seconds=5)
    vault = open_vault(cli.vault)
    try:
        from vault.service.intake import create_case

        create_case(vault, "FICT-2026-0043", title=None, as_name="field-team", now=ahead)
        [event] = json.loads(cli.ok("custody", "show", "FICT-2026-0043", "--json").stdout)[
            "events"]
        seq = event["seq"]
        for step in (lambda: rotate_identity(vault, "field-team"),
                     lambda: revoke_identity(vault, "field-team", as_name=OFFICE)):
            with pytest.raises(ConflictError) as refused:
                step()
            assert str(refused.value).startswith(
                f"identity field-team: its key signed event {seq} at {isoformat(ahead)}, "
                "later than this machine's time ")
            assert str(refused.value).endswith(
                " (a clock behind another machine's?); nothing was recorded: check this "
                "machine's clock, or wait until then, and run the command again")
    finally:
        vault.close()
    assert [i["revoked_at"] for i in json.loads(cli.ok("identity", "list", "--json").stdout)
            if i["name"] == "field-team"] == [None]
    assert cli.ok("custody", "verify").stdout.startswith("OK: ")


def test_a_damaged_key_history_stops_every_signature_not_only_the_checked_ones(
        cli: Cli, tmp_path: Path) -> None:
    """A database holder clears a revocation in the tables and relabels the revocation's
    event, so that the history has a defect: the append's own check skipped such a
    history, and `identity export --secret-age-key` (which did not check its identity
    against the history) then signed with the revoked key. Refused, exit 3; and every
    append refuses to sign while the history has a defect."""
    office(cli, tmp_path)
    cli.ok("identity", "create", "field-team")
    cli.ok("identity", "revoke", "field-team", "--as", OFFICE)
    sql(cli, "UPDATE identities SET revoked_at = NULL")
    sql(cli, "UPDATE identity_keys SET revoked_at = NULL")
    sql(cli, "UPDATE custody_events SET action = 'case.created' "
             "WHERE action = 'identity.revoked'")
    result = cli("identity", "export", "field-team", "--secret-age-key", "-o",
                 str(tmp_path / "field.agekey"))
    assert result.exit_code == 3 and result.stderr.startswith("evault: custody log: event ")
    assert "run `evault custody verify`" in result.stderr and result.stdout == ""
    assert not (tmp_path / "field.agekey").exists()
    # Any other path to an append (one that checks no identity first) meets the same check.
    from vault.errors import VerificationError
    from vault.service.identities import load_keypair

    vault = open_vault(cli.vault)
    try:
        with pytest.raises(VerificationError, match=r"^custody log: event \d+: "), \
                vault.transaction() as session:
            key = session.scalars(select(IdentityKey)).first()
            assert key is not None
            CustodyLog(vault, session).append(load_keypair(vault, key), "case.created",
                                              "FICT-2026-0043")
    finally:
        vault.close()


def test_rotated_and_revoked_keys_still_verify_old_events(cli: Cli, tmp_path: Path) -> None:
    office(cli, tmp_path)
    cli.ok("custody", "checkpoint")
    first = json.loads(cli.ok("identity", "show", "--json").stdout)["fingerprint"]
    cli.ok("identity", "rotate", OFFICE)
    cli.ok("identity", "create", "field-team", "--as", OFFICE)
    cli.ok("ingest", evidence(tmp_path, "note-02.txt"), "--case", CASE, "--as", "field-team")
    cli.ok("custody", "checkpoint", "--as", "field-team")
    cli.ok("identity", "revoke", OFFICE, "--as", "field-team")
    cli.ok("ingest", evidence(tmp_path, "note-03.txt"), "--case", CASE, "--as", "field-team")

    result = cli.ok("custody", "verify")

    assert result.stdout == "OK: 8 events, 2 checkpoints (structure and signatures)\n"
    events = json.loads(
        cli.ok("custody", "show", "identity:field-team", "--json").stdout)["events"]
    # A new identity is introduced by one the history already trusts (the rotated key).
    assert events[0]["action"] == "identity.created"
    assert events[0]["actor"] != first
    assert events[0]["actor"] == json.loads(
        cli.ok("identity", "show", OFFICE, "--json").stdout)["fingerprint"]


def test_first_identity_anchors_the_history_in_the_key_store(
    sqlite_cli: Cli, tmp_path: Path
) -> None:
    created = json.loads(sqlite_cli.ok("identity", "create", OFFICE, "--json").stdout)
    vault = open_vault(sqlite_cli.vault)
    try:
        anchor = Anchor.from_bytes(vault.keystore.get(ANCHOR_NAME))
    finally:
        vault.close()
    assert anchor == Anchor(0, created["fingerprint"])
    [event] = json.loads(
        sqlite_cli.ok("custody", "show", f"identity:{OFFICE}", "--json").stdout)["events"]
    assert event["actor"] == created["fingerprint"]
    assert event["details"]["signing_key"] == created["signing_key"].rsplit(" ", 1)[0]
    assert event["details"]["storage_recipient"].startswith("age1")


# ----------------------------------------------------------------------------- doctor


def test_doctor_reports_and_repairs_from_the_history(cli: Cli, tmp_path: Path) -> None:
    office(cli, tmp_path)
    signing, age = with_body(cli)
    sql(cli, "UPDATE body_keys SET age_recipient = :r",
        r=str(AgeIdentity.generate().recipient))
    message = (f"body {BODY} key {signing.public.fingerprint}: age recipient differs from "
               "the signed history")

    found = cli("doctor", "--json")

    assert found.exit_code == 3
    report = json.loads(found.stdout)
    assert report["key_history"] == ("1 difference(s) from the signed history; run "
                                     "`evault doctor --repair`")
    assert report["key_history_differences"] == [message]

    repaired = json.loads(cli.ok("doctor", "--repair", "--json").stdout)

    assert (repaired["keys_repaired"], repaired["key_history"]) == (1, "ok")
    shown = json.loads(cli.ok("body", "show", BODY, "--json").stdout)
    assert shown["keys"][0]["age_recipient"] == str(age.recipient)
    cli.ok("package", "create", "--to", BODY, "--case", CASE, "-o", str(tmp_path / "p.evpkg"))
    assert cli.ok("custody", "verify").stdout.startswith("OK: ")


# ----------------------------------------------------------------------------- old vaults


def old_vault(tmp_path: Path) -> Cli:
    """A copy of the vault made by the code before the key history (see make_old_vault.py),
    upgraded as its user would."""
    shutil.copytree(OLD_VAULT, tmp_path / "vault")
    cli = Cli(tmp_path / "vault")
    cli.ok("db", "upgrade")
    return cli


def test_old_vault_is_attested_on_first_use_and_then_guarded(tmp_path: Path) -> None:
    cli = old_vault(tmp_path)

    assert cli.ok("custody", "verify").stdout == (
        "OK: 12 events, 1 checkpoints (structure and signatures)\n")

    [attested] = json.loads(cli.ok("custody", "show", "keys", "--json").stdout)["events"]
    assert (attested["seq"], attested["action"]) == (11, "keys.attested")
    office_key = json.loads(cli.ok("identity", "show", OFFICE, "--json").stdout)
    assert attested["actor"] == office_key["fingerprint"]
    assert [i["name"] for i in attested["details"]["identities"]] == [OFFICE, "field-team"]
    assert len(attested["details"]["bodies"]) == 2
    # Once only: the key store names the attestation now.
    assert cli.ok("custody", "verify").stdout.startswith("OK: 12 events")
    # Old events of rotated and revoked keys verified above; new ones go on as usual.
    cli.ok("ingest", evidence(tmp_path, "note-02.txt"), "--case", "FICT-2026-0001")
    cli.ok("package", "create", "--to", BODY, "--case", "FICT-2026-0001", "-o",
           str(tmp_path / "p.evpkg"))
    [officer_key] = [k for k in json.loads(cli.ok("body", "show", BODY, "--json").stdout)["keys"]
                     if k["status"] == "active"]
    sql(cli, "UPDATE body_keys SET age_recipient = :r WHERE fingerprint = :f",
        r=str(AgeIdentity.generate().recipient), f=officer_key["fingerprint"])

    result = cli("package", "create", "--to", BODY, "--case", "FICT-2026-0001", "-o",
                 str(tmp_path / "q.evpkg"))

    assert (result.exit_code, result.stderr) == (
        3, f"evault: body {BODY} key {officer_key['fingerprint']}: age recipient differs from "
        f"the signed history; {DOCTOR}\n")


def test_old_vault_storage_key_changed_before_upgrade_is_still_refused(tmp_path: Path) -> None:
    """What was changed before the upgrade is attested as it is (trust on first upgrade),
    but the storage recipient must also be the public half of the key store's key."""
    cli = old_vault(tmp_path)
    attacker = str(AgeIdentity.generate().recipient)
    sql(cli, "UPDATE vault_keys SET age_recipient = :r", r=attacker)
    before = blob_files(cli.vault)

    result = cli("ingest", evidence(tmp_path, "note-02.txt"), "--case", "FICT-2026-0001")

    # The first command after the upgrade also seals the old vault's metadata (issue 14's
    # metadata at rest); that is no use of the storage key, which is refused.
    assert (result.exit_code, result.stderr) == (
        3, "evault: sealed 1 metadata value of this vault under its metadata key (first use "
        f"after upgrade)\nevault: storage key {attacker}: is not the public half of the "
        f"storage key in the key store; {DOCTOR}\n")
    assert blob_files(cli.vault) == before


def test_verify_needs_the_anchor_event_signed_by_the_anchor(
    sqlite_cli: Cli, tmp_path: Path
) -> None:
    """The key store names the first identity: a history started by another key fails."""
    cli = sqlite_cli
    office(cli, tmp_path)
    stranger = SigningKey.generate().public.fingerprint
    vault = open_vault(cli.vault)
    try:
        real = Anchor.from_bytes(vault.keystore.get(ANCHOR_NAME))
        vault.keystore.put(ANCHOR_NAME, Anchor(0, stranger).to_bytes())
    finally:
        vault.close()

    code, lines = verify_lines(cli)

    assert code == 3
    assert f"FAIL: event 0: key history: not signed by {stranger}, the identity the key store " \
           "names" in lines
    assert real.fingerprint != stranger
