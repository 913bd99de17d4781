"""Release rules: fail closed, changed only by signed `evault rule` commands, hand edits caught."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, reuse_world

from vault.formats.canonical import canonical_json
from vault.service.rules import add_rule, release_verdict, set_default
from vault.service.vaults import open_vault

CASE = "UA-2026-0077"
MISMATCH = ("evault: config.toml's release rules differ from the signed history ({}); see "
            "`evault rule list`, then adopt the edit with `evault rule sign --as NAME` or "
            "restore the file\n")


@dataclass
class Office:
    cli: Cli
    item: str  # labelled restricted-icc
    tmp: Path

    @property
    def config(self) -> Path:
        return self.cli.vault / "config.toml"

    def package(self, body: str) -> Any:
        return self.cli("package", "create", "--to", body, "--item", self.item, "-o",
                        str(self.tmp / f"{body}.evpkg"), "--force")

    def rule_events(self) -> list[dict[str, Any]]:
        result = self.cli("custody", "show", "release-rules", "--json")
        if result.exit_code != 0:
            return []
        events = json.loads(result.stdout)["events"]
        return [e for e in events if e["action"] == "rule.changed"]


@pytest.fixture
def office(tmp_path: Path) -> Office:
    """The office (two bodies, an item labelled restricted-icc): each test's own copy of a
    world the test process builds once (conftest's ``reuse_world``)."""
    item = reuse_world("rules-office", tmp_path, [None], lambda tmp, _: _build_office(tmp))
    return Office(Cli(tmp_path / "vault"), item, tmp_path)


def _build_office(tmp_path: Path) -> str:
    sqlite_cli = Cli(tmp_path / "vault").init()
    sqlite_cli.ok("identity", "create", "registry-office")
    for body in ("ICC-OTP", "UA-OPG"):
        other = Cli(tmp_path / f"vault-{body}")
        other.init()
        other.ok("identity", "create", f"officer-{body.lower()}")
        card = tmp_path / f"{body}.card.json"
        other.ok("identity", "export", "-o", str(card))
        sqlite_cli.ok("body", "add", body, "--name", f"Fictional {body}")
        sqlite_cli.ok("body", "key", "add", body, "--card", str(card))
    evidence = tmp_path / "statement.txt"
    evidence.write_bytes(b"fictional statement for the ICC only")
    sqlite_cli.ok("ingest", str(evidence), "--case", CASE, "--create-case", "--label",
                  "restricted-icc")
    return str(json.loads(sqlite_cli.ok("items", "list", "--json").stdout)[0]["id"])


def test_release_verdict() -> None:
    rules = {"restricted-icc": ("ICC-OTP",), "sealed": ()}
    assert release_verdict([], "UA-OPG", rules, "deny") is None
    assert release_verdict(["restricted-icc"], "ICC-OTP", rules, "deny") is None
    assert release_verdict(["restricted-icc"], "UA-OPG", rules, "deny") == (
        "label restricted-icc may go only to ICC-OTP (release rule)")
    assert release_verdict(["sealed"], "ICC-OTP", rules, "allow") == (
        "label sealed may go to no body (release rule)")
    assert release_verdict(["other"], "ICC-OTP", rules, "allow") is None
    assert release_verdict(["other"], "ICC-OTP", rules, "deny") == (
        "label other has no release rule, so it goes to no body; add one with "
        "`evault rule add other BODY`")


def test_a_label_without_a_rule_goes_to_no_body(office: Office) -> None:
    for body in ("ICC-OTP", "UA-OPG"):
        result = office.package(body)
        assert (result.exit_code, result.stderr) == (
            1, f"evault: item {office.item}: label restricted-icc has no release rule, so it "
            "goes to no body; add one with `evault rule add restricted-icc BODY`; leave it out "
            "of this package\n")
    outbox = office.tmp / "outbox"
    outbox.mkdir()
    rows = [json.loads(line) for line in office.cli.ok(
        "export", "--to", "ICC-OTP,UA-OPG", "--case", CASE, "--outbox", str(outbox),
        "--dry-run", "--jsonl").stdout.splitlines()]
    assert [(r["body"], r["items"], r["withheld"]) for r in rows] == [
        ("ICC-OTP", 0, [office.item]), ("UA-OPG", 0, [office.item])]


def test_default_allow_releases_a_label_without_a_rule(office: Office) -> None:
    result = office.cli.ok("rule", "default", "allow")
    assert result.stderr == ("evault: default: allow (a label without a rule goes to every "
                             "body); logged rule.changed\n")
    assert 'release_rules_default = "allow"' in office.config.read_text()
    office.cli.ok("package", "create", "--to", "UA-OPG", "--item", office.item, "-o",
                  str(office.tmp / "x.evpkg"))
    again = office.cli.ok("rule", "default", "allow")
    assert again.stderr == ("evault: default: allow (a label without a rule goes to every "
                            "body) (unchanged)\n")
    assert [e["details"]["default"] for e in office.rule_events()] == ["allow"]


def test_rule_add_signs_the_whole_rule_set(office: Office) -> None:
    result = office.cli.ok("rule", "add", "restricted-icc", "ICC-OTP")
    assert result.stderr == ("evault: rule for restricted-icc: releases to ICC-OTP; "
                             "logged rule.changed\n")
    assert '"restricted-icc" = ["ICC-OTP"]' in office.config.read_text()
    office.package("ICC-OTP")
    refused = office.package("UA-OPG")
    assert (refused.exit_code, refused.stderr) == (
        1, f"evault: item {office.item}: label restricted-icc may go only to ICC-OTP (release "
        "rule); leave it out of this package\n")
    office.cli.ok("rule", "add", "sealed", "--none", "--as", "registry-office")
    [first, second] = office.rule_events()
    assert first["details"] == {"change": "add", "label": "restricted-icc",
                                "bodies": ["ICC-OTP"], "default": "deny",
                                "rules": {"restricted-icc": ["ICC-OTP"]}}
    assert second["details"] == {"change": "add", "label": "sealed", "bodies": [],
                                 "default": "deny",
                                 "rules": {"restricted-icc": ["ICC-OTP"], "sealed": []}}
    office.cli.ok("custody", "verify")


def test_adding_a_rule_that_is_there_is_unchanged(office: Office) -> None:
    office.cli.ok("rule", "add", "restricted-icc", "ICC-OTP")
    again = office.cli.ok("rule", "add", "restricted-icc", "ICC-OTP", "--json")
    assert json.loads(again.stdout) == {"changed": False, "default": "deny",
                                        "rules": {"restricted-icc": ["ICC-OTP"]}}
    plain = office.cli.ok("rule", "add", "restricted-icc", "ICC-OTP")
    assert plain.stderr == "evault: rule for restricted-icc: releases to ICC-OTP (unchanged)\n"
    assert len(office.rule_events()) == 1


def test_unknown_body_and_bad_usage(office: Office) -> None:
    result = office.cli("rule", "add", "restricted-icc", "ICC-OTP", "NO-SUCH")
    assert (result.exit_code, result.stderr) == (
        1, "evault: body NO-SUCH: not found; see `evault body list`\n")
    neither = office.cli("rule", "add", "restricted-icc")
    assert (neither.exit_code, neither.stderr) == (
        2, "evault: rule for restricted-icc: give one or more BODY ids, or --none for no body\n")
    assert office.rule_events() == []
    assert "restricted-icc" not in office.config.read_text()


def test_rule_remove(office: Office) -> None:
    office.cli.ok("rule", "add", "restricted-icc", "ICC-OTP", "UA-OPG")
    some = office.cli.ok("rule", "remove", "restricted-icc", "UA-OPG")
    assert some.stderr == ("evault: rule for restricted-icc: releases to ICC-OTP; "
                           "logged rule.changed\n")
    whole = office.cli.ok("rule", "remove", "restricted-icc")
    assert whole.stderr == "evault: rule for restricted-icc: removed; logged rule.changed\n"
    missing = office.cli("rule", "remove", "restricted-icc")
    assert (missing.exit_code, missing.stderr) == (
        1, "evault: rule for restricted-icc: there is none; see `evault rule list`\n")
    assert [e["details"]["rules"] for e in office.rule_events()] == [
        {"restricted-icc": ["ICC-OTP", "UA-OPG"]}, {"restricted-icc": ["ICC-OTP"]}, {}]
    assert office.package("ICC-OTP").exit_code == 1  # fail closed again


def test_rule_list(office: Office) -> None:
    office.cli.ok("rule", "add", "sealed", "--none")
    assert office.cli.ok("rule", "list").stdout == (
        "label           bodies\n"
        "sealed          (none)\n"
        "restricted-icc  (no rule: withheld from every body)\n"
        "default: deny (a label without a rule goes to no body)\n")
    assert json.loads(office.cli.ok("rule", "list", "--json").stdout) == {
        "default": "deny",
        "rules": [{"label": "sealed", "bodies": [], "rule": True},
                  {"label": "restricted-icc", "bodies": [], "rule": False,
                   "note": "withheld from every body"}],
        "signed": True,
        "difference": None,
    }


HAND_EDITS = [
    # (text, its replacement, what the refusal says, package exit code once signed)
    ('"restricted-icc" = ["ICC-OTP"]\n', "", "rule for restricted-icc removed by hand", 1),
    ('"restricted-icc" = ["ICC-OTP"]', '"restricted-icc" = ["ICC-OTP", "UA-OPG"]',
     "body UA-OPG added to rule for restricted-icc by hand", 0),
    ('release_rules_default = "deny"', 'release_rules_default = "allow"',
     "default changed from deny to allow by hand", 0),
]


@pytest.mark.parametrize(("old", "new", "what", "after"), HAND_EDITS)
def test_a_hand_edit_is_refused_until_signed(office: Office, old: str, new: str,
                                             what: str, after: int) -> None:
    office.cli.ok("rule", "add", "restricted-icc", "ICC-OTP")
    text = office.config.read_text()
    assert old in text
    office.config.write_text(text.replace(old, new))
    message = MISMATCH.format(what)
    refused = office.package("ICC-OTP")
    assert (refused.exit_code, refused.stderr) == (3, message)
    outbox = office.tmp / "outbox"
    outbox.mkdir()
    for extra in ((), ("--dry-run",)):
        export = office.cli("export", "--to", "ICC-OTP", "--case", CASE, "--outbox",
                            str(outbox), *extra)
        assert (export.exit_code, export.stderr) == (3, message)
    change = office.cli("rule", "add", "other", "ICC-OTP")
    assert (change.exit_code, change.stderr) == (3, message)
    assert office.cli.ok("rule", "list").stdout.endswith(message.removeprefix("evault: "))
    doctor = office.cli("doctor", "--json")  # a failed check: exit 3
    assert (doctor.exit_code, doctor.stdout.count(message.removeprefix(
        "evault: ").rstrip("\n").replace('"', '\\"'))) == (3, 1)
    verify = office.cli("custody", "verify")
    assert (verify.exit_code, verify.stdout.splitlines()[0]) == (
        3, "FAIL: " + message.removeprefix("evault: ").rstrip("\n"))
    signed = office.cli.ok("rule", "sign", "--as", "registry-office")
    assert signed.stderr.endswith("; logged rule.changed\n")
    assert office.rule_events()[-1]["details"]["change"] == "sign"
    assert office.cli.ok("rule", "list", "--json").stdout.count('"signed": true') == 1
    assert office.package("ICC-OTP").exit_code == after  # 1: fail closed, no rule now
    office.cli.ok("custody", "verify")


OLD_CONFIG = """# Evidence Vault configuration. Private keys are never stored here.
vault_id = {vault_id}
key_storage = "auto"

# Release rules: a label on an item may go only to the bodies listed for it.
# An empty list means the item may go to no body at all.
[release_rules]
"restricted-icc" = ["ICC-OTP"]
"""


def test_a_config_from_an_earlier_version_loads_and_is_signed_once(office: Office) -> None:
    vault_id = json.dumps(json.loads(office.cli.ok("doctor", "--json").stdout)["vault_id"])
    office.config.write_text(OLD_CONFIG.format(vault_id=vault_id))
    assert office.cli.ok("items", "list", "--json").stdout.count(office.item) == 1
    refused = office.package("ICC-OTP")
    assert (refused.exit_code, refused.stderr) == (3, MISMATCH.format(
        "they were never signed; a vault from an earlier version, or edited by hand"))
    signed = office.cli.ok("rule", "sign")
    assert signed.stderr == ("evault: release rules signed: 1 rule, default deny; "
                             "logged rule.changed\n")
    assert office.rule_events()[0]["details"] == {
        "change": "sign", "default": "deny", "rules": {"restricted-icc": ["ICC-OTP"]}}
    assert office.package("ICC-OTP").exit_code == 0
    again = office.cli.ok("rule", "sign")
    assert again.stderr == "evault: release rules signed: 1 rule, default deny (unchanged)\n"


def test_a_bad_default_in_config_is_named(office: Office) -> None:
    office.config.write_text(office.config.read_text().replace(
        'release_rules_default = "deny"', 'release_rules_default = "maybe"'))
    result = office.cli("rule", "list")
    assert (result.exit_code, result.stderr) == (
        1, f'evault: {office.config}: release_rules_default must be "deny" or "allow"; set '
        "it with `evault rule default deny|allow`\n")


# ----------------------------------------------------------------------------- hostile edits


@pytest.mark.parametrize("label", ["Restricted-ICC", "restricted-icc ", "restricted-icc\n",
                                   " restricted-icc", "restricted icc"])
def test_a_rule_label_that_no_item_label_can_match_is_refused(office: Office,
                                                               label: str) -> None:
    # Under default allow, a rule for a label no item carries would release the real label
    # everywhere while `rule list` seemed to restrict it.
    result = office.cli("rule", "add", label, "ICC-OTP")
    assert (result.exit_code, result.stderr) == (
        2, f"evault: rule: label {label!r} must be lowercase letters, digits, '.-_'\n")
    assert office.rule_events() == []


def test_rule_sign_refuses_a_hand_written_label_no_item_can_carry(office: Office) -> None:
    office.config.write_text(office.config.read_text() + '"Restricted-ICC" = ["ICC-OTP"]\n')
    result = office.cli("rule", "sign")
    assert (result.exit_code, result.stderr) == (
        2, "evault: config.toml: release rule: label 'Restricted-ICC' must be lowercase "
        "letters, digits, '.-_'\n")
    assert office.rule_events() == []


def test_an_item_label_with_a_trailing_newline_is_refused(office: Office) -> None:
    evidence = office.tmp / "note.txt"
    evidence.write_bytes(b"fictional note")
    result = office.cli("ingest", str(evidence), "--case", CASE, "--label", "restricted-icc\n")
    assert (result.exit_code, result.stderr) == (
        2, "evault: --label: label 'restricted-icc\\n' must be lowercase letters, digits, "
        "'.-_'\n")
    case = office.cli("ingest", str(evidence), "--case", CASE + "\n")
    assert (case.exit_code, case.stderr) == (
        2, f"evault: case id {CASE + chr(10)!r}: use 1-64 letters, digits, '.', '_', '/' or "
        "'-', starting with a letter or digit, with no empty, '.' or '..' part between '/' "
        "(e.g. UA-2026-0042)\n")


def _rewrite_newest_rule_event(office: Office, change: Callable[[dict[str, Any]], None]) -> None:
    """What a holder of vault.db without the keys can do: rewrite the event's signed bytes."""
    with contextlib.closing(sqlite3.connect(office.cli.vault / "vault.db")) as db:
        seq, body = db.execute("SELECT seq, body FROM custody_events WHERE action = "
                               "'rule.changed' ORDER BY seq DESC LIMIT 1").fetchone()
        event = json.loads(body)
        change(event)
        raw = canonical_json(event)
        db.execute("UPDATE custody_events SET body = ?, leaf_hash = ? WHERE seq = ?",
                   (raw, hashlib.sha256(b"\x00" + raw).digest(), seq))
        db.commit()


def test_a_rule_event_rewritten_in_the_database_does_not_adopt_a_hand_edit(
        office: Office) -> None:
    office.cli.ok("rule", "add", "restricted-icc", "ICC-OTP")
    office.config.write_text(office.config.read_text().replace(
        '"restricted-icc" = ["ICC-OTP"]', '"restricted-icc" = ["ICC-OTP", "UA-OPG"]'))
    _rewrite_newest_rule_event(
        office, lambda e: e["details"]["rules"].update({"restricted-icc": ["ICC-OTP", "UA-OPG"]}))
    seq = office.rule_events()[-1]["seq"]
    message = (f"evault: custody event {seq}: the newest rule.changed event cannot be trusted "
               "(ed25519 signature does not verify), so the release rules cannot be checked; "
               "run `evault custody verify`\n")
    refused = office.package("UA-OPG")
    assert (refused.exit_code, refused.stderr) == (3, message)
    sign = office.cli("rule", "sign")
    assert (sign.exit_code, sign.stderr) == (3, message)
    verify = office.cli("custody", "verify")
    assert verify.exit_code == 3
    assert message.removeprefix("evault: ").rstrip("\n") in verify.stdout
    doctor = office.cli("doctor", "--json")
    assert (doctor.exit_code, doctor.stdout.count("cannot be trusted (ed25519")) == (3, 1)


def test_a_rule_event_of_another_vault_is_not_this_vaults_rules(office: Office) -> None:
    office.cli.ok("rule", "add", "restricted-icc", "ICC-OTP")
    _rewrite_newest_rule_event(office, lambda e: e.update(log="evault/another-vault"))
    refused = office.package("ICC-OTP")
    assert refused.exit_code == 3
    assert refused.stderr.endswith("cannot be trusted (it is not a rule event of this vault's "
                                   "log), so the release rules cannot be checked; run `evault "
                                   "custody verify`\n")


def test_two_rule_commands_one_after_the_other_keep_both_changes(office: Office) -> None:
    # Each command reads config.toml when it opens the vault; the second one to change the
    # rules must start from the first one's result, not from the file it read earlier.
    first, second = open_vault(office.cli.vault), open_vault(office.cli.vault)
    add_rule(first, "restricted-icc", ["ICC-OTP"])
    set_default(second, "allow")
    assert json.loads(office.cli.ok("rule", "list", "--json").stdout)["signed"] is True
    assert office.rule_events()[-1]["details"]["rules"] == {"restricted-icc": ["ICC-OTP"]}
    assert '"restricted-icc" = ["ICC-OTP"]' in office.config.read_text()


def test_a_package_built_before_a_rule_withheld_its_item_is_not_sent(office: Office) -> None:
    office.cli.ok("rule", "add", "restricted-icc", "ICC-OTP", "UA-OPG")
    built = json.loads(office.cli.ok("package", "create", "--to", "UA-OPG", "--item",
                                     office.item, "-o", str(office.tmp / "p.evpkg"),
                                     "--json").stdout)
    office.cli.ok("rule", "remove", "restricted-icc", "UA-OPG")
    outbox = office.tmp / "outbox"
    outbox.mkdir()
    result = office.cli("send", built["id"], "--outbox", str(outbox))
    assert (result.exit_code, result.stderr) == (
        1, f"evault: package {built['id']}: item {office.item}: label restricted-icc may go "
        "only to ICC-OTP (release rule), since it was built; build a new package without it\n")
    assert list(outbox.iterdir()) == []

