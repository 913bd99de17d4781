"""Identities, contact cards and recipient bodies, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SQLITE_ONLY, TEST_PASSPHRASE, Cli

from vault.crypto.keys import SigningKey


def _card(cli: Cli, name: str, tmp_path: Path) -> tuple[Path, str]:
    """Create an identity in a throwaway vault of the body and export its card."""
    other = Cli(tmp_path / f"vault-{name}")
    other.init()
    fingerprint = json.loads(other.ok("identity", "create", name, "--json").stdout)["fingerprint"]
    path = tmp_path / f"{name}.card.json"
    other.ok("identity", "export", name, "-o", str(path))
    return path, fingerprint


def test_identity_lifecycle(cli: Cli) -> None:
    first = json.loads(
        cli.ok(
            "identity",
            "create",
            "registry-office",
            "--org",
            "Fictional Ministry of Justice",
            "--json",
        ).stdout
    )
    assert first["default"] is True
    assert first["status"] == "active"
    assert first["fingerprint"].startswith("SHA256:")
    assert first["age_recipient"].startswith("age1")
    assert first["signing_key"].startswith("ssh-ed25519 AAAA")
    assert first["signing_key"].endswith(" registry-office")
    second = json.loads(cli.ok("identity", "create", "evidence-unit", "--json").stdout)
    assert second["default"] is False

    listed = json.loads(cli.ok("identity", "list", "--json").stdout)
    assert [i["name"] for i in listed] == ["registry-office", "evidence-unit"]
    table = cli.ok("identity", "list").stdout.splitlines()
    assert table[0].split() == [
        "name",
        "org",
        "default",
        "status",
        "fingerprint",
        "age_recipient",
        "created_at",
    ]
    assert len(table) == 3

    rotated = json.loads(cli.ok("identity", "rotate", "evidence-unit", "--json").stdout)
    assert rotated["fingerprint"] != second["fingerprint"]
    assert [k["retired_at"] is None for k in rotated["keys"]] == [False, True]

    revoked = cli.ok("identity", "revoke", "evidence-unit", "--json")
    assert json.loads(revoked.stdout)["status"] == "revoked"
    again = cli("identity", "revoke", "evidence-unit")
    assert again.exit_code == 1
    assert again.stderr.startswith("evault: identity evidence-unit: revoked already, since ")
    refused = cli("identity", "rotate", "evidence-unit")
    assert refused.exit_code == 1
    assert "revoked since" in refused.stderr and "--as" in refused.stderr


def test_identity_refusals(cli: Cli) -> None:
    cli.ok("identity", "create", "registry-office")
    dup = cli("identity", "create", "registry-office")
    assert (dup.exit_code, dup.stderr) == (
        1,
        "evault: identity registry-office: exists already; choose another name\n",
    )
    bad = cli("identity", "create", "no spaces please")
    assert bad.exit_code == 2
    assert bad.stderr.startswith("evault: identity name 'no spaces please': use 1-64 letters")
    # A name ending in a newline could never be signed into a package (its party name rule
    # refuses it), so it is refused here, and a body id so too.
    newline = cli("identity", "create", "registry\n")
    assert (newline.exit_code, newline.stderr) == (2, (
        "evault: identity name 'registry\\n': use 1-64 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit\n"))
    body = cli("body", "add", "ICC-OTP\n", "--name", "Fictional court", "--as",
               "registry-office")
    assert (body.exit_code, body.stderr) == (2, (
        "evault: body id 'ICC-OTP\\n': use 1-64 capitals, digits, '.', '_' or '-' (e.g. "
        "ICC-OTP)\n"))
    missing = cli("identity", "show", "nobody")
    assert (missing.exit_code, missing.stderr) == (
        1,
        "evault: identity nobody: not found; see `evault identity list`\n",
    )


def test_no_identity_yet(cli: Cli) -> None:
    result = cli("identity", "export")
    assert (result.exit_code, result.stderr) == (
        1,
        "evault: no identity in this vault: run `evault identity create NAME`\n",
    )


def test_private_keys_never_reach_the_database(tmp_path: Path) -> None:
    from vault.service.identities import load_keypair
    from vault.service.vaults import open_vault
    from vault.store.models import IdentityKey

    cli = Cli(tmp_path / "v")
    cli.init()
    cli.ok("identity", "create", "registry-office")
    v = open_vault(cli.vault)
    with v.transaction() as session:
        key = session.query(IdentityKey).one()
        pair = load_keypair(v, key)
    v.close()
    secrets = [pair.signing.seed(), pair.age.raw(), pair.age.encode().encode()]
    for path in cli.vault.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for s in secrets:
                assert s not in data, f"a private key is in {path.name}"
    assert TEST_PASSPHRASE.encode() not in b"".join(
        p.read_bytes() for p in cli.vault.rglob("*") if p.is_file()
    )
    assert (cli.vault / "keys.enc").stat().st_mode & 0o777 == 0o600


def test_key_file_needs_a_passphrase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli = Cli(tmp_path / "v")
    cli.init()
    monkeypatch.delenv("EVAULT_PASSPHRASE")
    result = cli("identity", "create", "registry-office")
    assert result.exit_code == 1
    assert result.stderr == (
        "evault: key file store needs a passphrase: set EVAULT_PASSPHRASE or "
        "EVAULT_PASSPHRASE_FILE, or run in a terminal to be asked\n"
    )
    assert json.loads(cli.ok("identity", "list", "--json").stdout) == []
    phrase = tmp_path / "phrase"
    phrase.write_text("another fictional passphrase\n")
    monkeypatch.setenv("EVAULT_PASSPHRASE_FILE", str(phrase))
    cli.ok("identity", "create", "registry-office")
    cli.ok("identity", "export")
    monkeypatch.setenv("EVAULT_PASSPHRASE", "wrong passphrase")
    wrong = cli("identity", "export")
    assert wrong.exit_code == 1
    assert wrong.stderr == (
        f"evault: {cli.vault / 'keys.enc'}: wrong passphrase, or the key file is damaged; "
        "give the passphrase it was created with\n"
    )


def test_contact_card_round_trip_and_body_keys(cli: Cli, tmp_path: Path) -> None:
    cli.ok("identity", "create", "registry-office")
    card, fingerprint = _card(cli, "icc-officer", tmp_path)
    body = cli.ok(
        "body",
        "add",
        "ICC-OTP",
        "--name",
        "International Criminal Court, Office of the Prosecutor",
        "--json",
    )
    assert json.loads(body.stdout)["active_keys"] == 0
    added = cli.ok(
        "body", "key", "add", "ICC-OTP", "--card", str(card), "--fingerprint", fingerprint
    )
    assert added.stderr == f"evault: added key {fingerprint} to body ICC-OTP\n"
    shown = json.loads(cli.ok("body", "show", "ICC-OTP", "--json").stdout)
    assert shown["active_keys"] == 1
    assert shown["keys"][0]["label"] == "icc-officer"
    rows = cli.ok("body", "list", "--csv").stdout.splitlines()
    assert rows[0] == "id,name,active_keys,created_at"
    assert rows[1].startswith('ICC-OTP,"International Criminal Court, Office of the Prosecutor",1,')

    dup = cli("body", "key", "add", "ICC-OTP", "--card", str(card))
    assert (dup.exit_code, dup.stderr) == (
        1,
        f"evault: body ICC-OTP: key {fingerprint} is there already\n",
    )
    cli.ok("body", "key", "revoke", "ICC-OTP", fingerprint)
    after = json.loads(cli.ok("body", "show", "ICC-OTP", "--json").stdout)
    assert after["active_keys"] == 0 and after["keys"][0]["status"] == "revoked"


def test_body_key_from_age_and_ssh(cli: Cli, tmp_path: Path) -> None:
    cli.ok("identity", "create", "registry-office")
    card, fingerprint = _card(cli, "opg-officer", tmp_path)
    data = json.loads(card.read_text())
    cli.ok("body", "add", "UA-OPG", "--name", "Office of the Prosecutor General of Ukraine")
    cli.ok(
        "body",
        "key",
        "add",
        "UA-OPG",
        "--age",
        data["age_recipient"],
        "--ssh",
        data["signing_key"] + " opg-officer",
    )
    shown = json.loads(cli.ok("body", "show", "UA-OPG", "--json").stdout)
    assert shown["keys"][0]["fingerprint"] == fingerprint
    assert shown["keys"][0]["label"] == "opg-officer"


def test_body_refusals(cli: Cli, tmp_path: Path) -> None:
    cli.ok("identity", "create", "registry-office")
    card, fingerprint = _card(cli, "jit-officer", tmp_path)
    data = json.loads(card.read_text())
    unknown = cli("body", "key", "add", "NOPE", "--card", str(card))
    assert (unknown.exit_code, unknown.stderr) == (
        1,
        "evault: body NOPE: not found; see `evault body list`\n",
    )
    cli.ok("body", "add", "EUROJUST-JIT", "--name", "Joint Investigation Team through Eurojust")
    dup = cli("body", "add", "EUROJUST-JIT", "--name", "again")
    assert (dup.exit_code, dup.stderr) == (
        1,
        "evault: body EUROJUST-JIT: exists already; see `evault body show EUROJUST-JIT`\n",
    )
    bad_id = cli("body", "add", "icc otp", "--name", "x")
    assert bad_id.exit_code == 2

    other = SigningKey.generate().public.fingerprint
    pinned = cli("body", "key", "add", "EUROJUST-JIT", "--card", str(card), "--fingerprint", other)
    assert pinned.exit_code == 3
    assert pinned.stderr == (
        f"evault: body EUROJUST-JIT: key fingerprint is {fingerprint}, expected {other}; "
        "do not add this key until its holder confirms the fingerprint\n"
    )

    # An age recipient with one character changed fails its bech32 checksum.
    recipient = data["age_recipient"]
    broken = recipient[:-1] + ("q" if recipient[-1] != "q" else "p")
    bad_age = cli(
        "body", "key", "add", "EUROJUST-JIT", "--age", broken, "--ssh", data["signing_key"]
    )
    assert bad_age.exit_code == 2
    assert bad_age.stderr.startswith("evault: age recipient")
    assert "checksum" in bad_age.stderr

    rsa = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 officer"
    not_ed = cli("body", "key", "add", "EUROJUST-JIT", "--age", recipient, "--ssh", rsa)
    assert (not_ed.exit_code, not_ed.stderr) == (
        2,
        "evault: ssh public key: type ssh-rsa is not supported; use an ssh-ed25519 key\n",
    )
    both = cli("body", "key", "add", "EUROJUST-JIT", "--card", str(card), "--age", recipient)
    assert both.exit_code == 2
    assert json.loads(cli.ok("body", "show", "EUROJUST-JIT", "--json").stdout)["keys"] == []


@SQLITE_ONLY  # the card is refused as a file, before the vault records anything
@pytest.mark.parametrize(
    "field,value,reason",
    [
        ("age_recipient", None, "self-signature does not verify"),
        ("name", "someone-else", "self-signature does not verify"),
        ("signing_key", None, "fingerprint field does not match"),
        ("type", "something", "not an evault contact card"),
    ],
)
def test_tampered_cards_are_refused(
    cli: Cli, tmp_path: Path, field: str, value: str | None, reason: str
) -> None:
    cli.ok("identity", "create", "registry-office")
    card, _ = _card(cli, "hrmmu-officer", tmp_path)
    data = json.loads(card.read_text())
    if field == "age_recipient":
        data[field] = (
            _card(cli, "intruder", tmp_path)[0].read_text()
            and json.loads((tmp_path / "intruder.card.json").read_text())["age_recipient"]
        )
    elif field == "signing_key":
        data[field] = SigningKey.generate().public.openssh()
    else:
        data[field] = value
    card.write_text(json.dumps(data))
    cli.ok("body", "add", "UN-HRMMU", "--name", "UN Human Rights Monitoring Mission in Ukraine")
    result = cli("body", "key", "add", "UN-HRMMU", "--card", str(card))
    assert result.exit_code == 3
    assert reason in result.stderr
    assert result.stderr.count("\n") == 1


@SQLITE_ONLY
def test_malformed_card_is_one_line(cli: Cli, tmp_path: Path) -> None:
    cli.ok("identity", "create", "registry-office")
    card = tmp_path / "broken.card.json"
    card.write_text("{not json")
    cli.ok("body", "add", "OSCE-MM", "--name", "Experts under the OSCE Moscow Mechanism")
    result = cli("body", "key", "add", "OSCE-MM", "--card", str(card))
    assert result.exit_code == 3
    assert result.stderr.startswith("evault: contact card: not valid JSON")
    assert result.stderr.count("\n") == 1


def test_changes_need_an_acting_identity(cli: Cli) -> None:
    result = cli("body", "add", "ICC-OTP", "--name", "International Criminal Court")
    assert (result.exit_code, result.stderr) == (
        1, "evault: no identity in this vault: run `evault identity create NAME`\n")
    assert json.loads(cli.ok("body", "list", "--json").stdout) == []


def test_identity_and_body_changes_are_in_the_custody_log(cli: Cli, tmp_path: Path) -> None:
    office = json.loads(cli.ok("identity", "create", "registry-office", "--json").stdout)
    cli.ok("identity", "create", "evidence-unit")
    card, fingerprint = _card(cli, "icc-officer", tmp_path)
    cli.ok("body", "add", "ICC-OTP", "--name", "International Criminal Court")
    cli.ok("body", "key", "add", "ICC-OTP", "--card", str(card), "--as", "evidence-unit")
    cli.ok("body", "key", "revoke", "ICC-OTP", fingerprint)
    rotated = json.loads(cli.ok("identity", "rotate", "evidence-unit", "--json").stdout)
    cli.ok("identity", "revoke", "evidence-unit", "--as", "registry-office")
    body_events = json.loads(cli.ok("custody", "show", "ICC-OTP", "--json").stdout)["events"]
    assert [e["action"] for e in body_events] == [
        "body.added", "body.key_added", "body.key_revoked"]
    assert body_events[0]["actor"] == office["fingerprint"]
    assert body_events[2]["details"] == {"fingerprint": fingerprint}
    unit = json.loads(cli.ok("custody", "show", "identity:evidence-unit", "--json").stdout)
    actions = [e["action"] for e in unit["events"]]
    assert actions == ["identity.created", "identity.rotated", "identity.revoked"]
    assert unit["events"][1]["details"]["fingerprint"] == rotated["fingerprint"]
    assert unit["events"][2]["actor"] == office["fingerprint"]
    verified = cli("custody", "verify")
    assert (verified.exit_code, verified.stdout) == (
        0, "OK: 7 events, 0 checkpoints (structure and signatures)\n")


# ----------------------------------------------------------------------------- secret age key


def _exports(cli: Cli, name: str) -> list[dict[str, object]]:
    events = json.loads(cli.ok("custody", "show", f"identity:{name}", "--json").stdout)["events"]
    return [e["details"] for e in events if e["action"] == "identity.secret_exported"]


def test_export_secret_age_key_writes_an_age_identity_file(cli: Cli, tmp_path: Path) -> None:
    import re
    import stat

    from vault.crypto.age import AgeIdentity

    shown = json.loads(cli.ok("identity", "create", "icc-officer", "--json").stdout)
    out = tmp_path / "icc-officer.agekey"
    result = cli("identity", "export", "--secret-age-key", "-o", str(out))
    assert (result.exit_code, result.stdout) == (0, "")
    assert result.stderr == (
        f"evault: wrote the age secret key of icc-officer (key generation 1, "
        f"{shown['fingerprint']}) to {out} (mode 0600); logged identity.secret_exported; "
        "delete it when you no longer need it\n"
    )
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    text = out.read_text()
    match = re.fullmatch(
        r"# created: (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\n# public key: (age1\w+)\n"
        r"(AGE-SECRET-KEY-1[0-9A-Z]+)\n",
        text,
    )
    assert match is not None, text
    assert match.group(2) == shown["age_recipient"]
    assert str(AgeIdentity.parse(match.group(3)).recipient) == shown["age_recipient"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []

    # Logged, signed, and without the key.
    assert _exports(cli, "icc-officer") == [
        {"age_recipient": shown["age_recipient"], "destination": "file",
         "fingerprint": shown["fingerprint"], "generation": 1}
    ]
    log = cli.ok("custody", "show", "identity:icc-officer", "--json").stdout
    assert match.group(3) not in log and match.group(3).lower() not in log
    cli.ok("custody", "verify")

    # Never over an existing file; nothing logged then.
    again = cli("identity", "export", "icc-officer", "--secret-age-key", "-o", str(out))
    assert (again.exit_code, again.stderr) == (
        2, f"evault: {out} exists; choose another file (a secret key never replaces one)\n"
    )
    assert out.read_text() == text
    assert len(_exports(cli, "icc-officer")) == 1


def test_export_secret_age_key_to_stdout_only_when_asked(cli: Cli) -> None:
    shown = json.loads(cli.ok("identity", "create", "icc-officer", "--json").stdout)
    refused = cli("identity", "export", "--secret-age-key")
    assert (refused.exit_code, refused.stdout, refused.stderr) == (
        2, "",
        "evault: --secret-age-key writes a secret key: give -o FILE, or -o - to print it to "
        "stdout\n",
    )
    assert _exports(cli, "icc-officer") == []

    cli.ok("identity", "rotate", "icc-officer")
    rotated = json.loads(cli.ok("identity", "show", "icc-officer", "--json").stdout)
    printed = cli("identity", "export", "--secret-age-key", "-o", "-")
    assert printed.exit_code == 0
    lines = printed.stdout.splitlines()
    assert lines[1] == f"# public key: {rotated['age_recipient']}"
    assert lines[2].startswith("AGE-SECRET-KEY-1") and len(lines) == 3
    assert printed.stderr == (
        f"evault: wrote the age secret key of icc-officer (key generation 2, "
        f"{rotated['fingerprint']}) to stdout; logged identity.secret_exported\n"
    )
    assert rotated["fingerprint"] != shown["fingerprint"]
    assert _exports(cli, "icc-officer") == [
        {"age_recipient": rotated["age_recipient"], "destination": "stdout",
         "fingerprint": rotated["fingerprint"], "generation": 2}
    ]


def test_export_secret_age_key_refused_for_a_revoked_identity(cli: Cli, tmp_path: Path) -> None:
    cli.ok("identity", "create", "registry-office")
    cli.ok("identity", "create", "former-officer")
    cli.ok("identity", "revoke", "former-officer")
    out = tmp_path / "former.agekey"
    refused = cli("identity", "export", "former-officer", "--secret-age-key", "-o", str(out))
    assert (refused.exit_code, refused.stderr) == (
        1, "evault: identity former-officer: revoked; its secret key may not be exported\n"
    )
    assert not out.exists()
    assert list(tmp_path.glob(".tmp-*")) == []


def test_identity_show_prints_the_checkpoint_verifier_key(cli: Cli, tmp_path: Path) -> None:
    from vault.crypto.keys import VerifyKey
    from vault.custody.note import NoteVerifier, open_checkpoint

    cli.ok("identity", "create", "registry-office")
    shown = json.loads(cli.ok("identity", "show", "--json").stdout)
    cli.ok("custody", "checkpoint", "-o", str(tmp_path / "cp.txt"))
    verifier = NoteVerifier.parse(shown["checkpoint_key"])
    assert verifier.public == VerifyKey.from_openssh(shown["signing_key"])
    checkpoint, _ = open_checkpoint((tmp_path / "cp.txt").read_text(), [verifier])
    assert checkpoint.origin == verifier.name
