"""Release rules that name a derived copy (issue 19): `rule add LABEL BODY --relation redacted`
sends that body the redacted copy instead of the original, refuses when there is none, and
is signed and checked like every other rule."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, build_template, copy_template, reuse_world
from test_key_history import sql
from test_robustness import assert_refusal

CASE = "UA-2026-0091"
BODIES = ("ICC-OTP", "UN-HRMMU", "UA-OPG")


@dataclass
class Office:
    cli: Cli
    original: str  # labelled witness-identity
    tmp: Path

    def ingest(self, name: str, text: bytes, *args: str) -> str:
        path = self.tmp / name
        path.write_bytes(text)
        [row] = json.loads(self.cli.ok("ingest", str(path), "--case", CASE, "--json",
                                       *args).stdout)
        return str(row["id"])

    def redact(self) -> str:
        return self.ingest("statement-Red.txt", b"fictional statement naming [REDACTED]\n",
                           "--derived-from", self.original, "--relation", "redacted")

    def package(self, body: str, *select: str) -> Any:
        return self.cli("package", "create", "--to", body, *select, "-o",
                        str(self.tmp / f"{body}.evpkg"), "--force", "--json")

    def packaged(self, body: str, *select: str) -> list[str]:
        result = self.package(body, *select)
        assert result.exit_code == 0, result.stderr
        return list(json.loads(result.stdout)["item_ids"])

    def rule_events(self) -> list[dict[str, Any]]:
        events = json.loads(self.cli.ok("custody", "show", "release-rules", "--json")
                            .stdout)["events"]
        return [e["details"] for e in events if e["action"] == "rule.changed"]


@pytest.fixture(scope="module")
def sqlite_office(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SQLite office and its bodies' vaults, built once for the module (see ``office``)."""
    return build_template(tmp_path_factory, "derived-release",
                          lambda tmp: _build(Cli(tmp / "vault").init(), tmp))


@pytest.fixture
def office(database: str | None, tmp_path: Path, request: pytest.FixtureRequest) -> Office:
    """The office (three bodies, a rule releasing witness-identity to ICC-OTP, the original
    labelled witness-identity): each test's own copy of the module's template on SQLite, of
    the test process's (conftest's ``reuse_world``: its database is not in the vault's
    folder) on PostgreSQL."""
    if database is not None:
        reuse_world("derived-release", tmp_path, [database],
                    lambda tmp, dbs: _build(Cli(tmp / "vault").init(dbs[0]), tmp).original)
    else:
        copy_template(request.getfixturevalue("sqlite_office"), tmp_path)
    return Office(Cli(tmp_path / "vault"), (tmp_path / "original-id").read_text(), tmp_path)


def _build(cli: Cli, tmp_path: Path) -> Office:
    cli.ok("identity", "create", "registry-office")
    for body in BODIES:
        other = Cli(tmp_path / f"vault-{body}")
        other.init()
        other.ok("identity", "create", f"officer-{body.lower()}")
        card = tmp_path / f"{body}.card.json"
        other.ok("identity", "export", "-o", str(card))
        cli.ok("body", "add", body, "--name", f"Fictional {body}")
        cli.ok("body", "key", "add", body, "--card", str(card))
    office = Office(cli, "", tmp_path)
    office.original = office.ingest("statement.txt", b"fictional statement naming a witness\n",
                                    "--create-case", "--label", "witness-identity")
    (tmp_path / "original-id").write_text(office.original)
    cli.ok("rule", "add", "witness-identity", "ICC-OTP")
    return office


def test_a_rule_names_the_copy_a_body_gets_signed_and_in_config(office: Office) -> None:
    cli = office.cli
    result = cli.ok("rule", "add", "witness-identity", "UN-HRMMU", "--relation", "redacted")
    assert result.stderr == ("evault: rule for witness-identity: releases to ICC-OTP, UN-HRMMU "
                             "(redacted copy only); logged rule.changed\n")
    assert ('"witness-identity" = { "ICC-OTP" = "original", "UN-HRMMU" = "redacted" }'
            in (cli.vault / "config.toml").read_text())
    latest = office.rule_events()[-1]
    assert (latest["relation"], latest["rules"], latest["relations"]) == (
        "redacted", {"witness-identity": ["ICC-OTP", "UN-HRMMU"]},
        {"witness-identity": {"UN-HRMMU": "redacted"}})
    again = cli.ok("rule", "add", "witness-identity", "UN-HRMMU", "--relation", "redacted")
    assert again.stderr.endswith("(redacted copy only) (unchanged)\n")
    listed = json.loads(cli.ok("rule", "list", "--json").stdout)
    assert listed["signed"] is True
    assert listed["rules"] == [{"label": "witness-identity", "bodies": ["ICC-OTP", "UN-HRMMU"],
                                "rule": True, "relations": {"UN-HRMMU": "redacted"}}]
    table = cli.ok("rule", "list").stdout
    assert "witness-identity  ICC-OTP, UN-HRMMU (redacted copy only)" in table
    # The original again: the rule is a plain list once more, and a later event says so.
    back = cli.ok("rule", "add", "witness-identity", "UN-HRMMU", "--relation", "original")
    assert back.stderr == ("evault: rule for witness-identity: releases to ICC-OTP, UN-HRMMU; "
                           "logged rule.changed\n")
    assert '"witness-identity" = ["ICC-OTP", "UN-HRMMU"]' in (cli.vault / "config.toml"
                                                               ).read_text()
    assert "relations" not in office.rule_events()[-1]
    assert len(office.rule_events()) == 3


def test_a_rule_forces_the_redacted_copy_and_refuses_without_one(office: Office) -> None:
    cli = office.cli
    cli.ok("rule", "add", "witness-identity", "UN-HRMMU", "--relation", "redacted")
    assert_refusal(office.package("UN-HRMMU", "--item", office.original), 1,
                   f"item {office.original}: label witness-identity may go to UN-HRMMU only as "
                   "a redacted copy (release rule), and it has none; make one with `evault "
                   f"ingest FILE --derived-from {office.original} --relation redacted`; leave "
                   "it out of this package")
    redacted = office.redact()
    # The copy carries its original's label: it goes where the rule lets a redacted copy go.
    shown = json.loads(cli.ok("items", "show", redacted, "--json").stdout)
    assert shown["labels"] == ["witness-identity"]
    result = office.package("UN-HRMMU", "--item", office.original)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == (f"evault: item {office.original}: its redacted copy {redacted} "
                             "goes to UN-HRMMU instead, as the release rules ask\n")
    assert json.loads(result.stdout)["item_ids"] == [redacted]
    # The whole case: the copy once, never the original.
    assert office.packaged("UN-HRMMU", "--case", CASE) == [redacted]
    # The body the rule gives the original gets both, as they are.
    assert office.packaged("ICC-OTP", "--case", CASE) == [office.original, redacted]
    # A body the rule does not name gets neither.
    assert_refusal(office.package("UA-OPG", "--item", redacted), 1,
                   f"item {redacted}: label witness-identity may go only to ICC-OTP, UN-HRMMU "
                   "(release rule); leave it out of this package")
    # The newest redacted copy is the one sent.
    newer = office.ingest("statement-Red2.txt", b"fictional statement, redacted again\n",
                          "--derived-from", office.original, "--relation", "redacted")
    assert office.packaged("UN-HRMMU", "--item", office.original) == [newer]


def test_a_copy_of_another_kind_is_not_the_one_the_rule_names(office: Office) -> None:
    cli = office.cli
    cli.ok("rule", "add", "witness-identity", "UN-HRMMU", "--relation", "redacted")
    translation = office.ingest("statement-en.txt", b"fictional translated statement\n",
                                "--derived-from", office.original, "--relation", "translation")
    assert_refusal(office.package("UN-HRMMU", "--item", translation), 1,
                   f"item {translation}: label witness-identity may go to UN-HRMMU only as a "
                   "redacted copy (release rule), and it has none; make one with `evault "
                   f"ingest FILE --derived-from {translation} --relation redacted`; leave it "
                   "out of this package")
    # Two labels asking for different copies for one body: refused, both named.
    cli.ok("rule", "add", "minor", "UN-HRMMU", "--relation", "translation")
    both = office.ingest("minor.txt", b"fictional statement of a minor\n", "--label",
                         "witness-identity", "--label", "minor")
    result = office.package("UN-HRMMU", "--item", both)
    assert result.exit_code == 1
    assert result.stderr == ("evault: labels witness-identity and minor ask for different "
                             "copies for UN-HRMMU (redacted, translation) (release rules); "
                             "make one rule name one copy\n")


def test_a_package_is_not_sent_once_its_body_may_have_only_a_copy(office: Office) -> None:
    cli = office.cli
    cli.ok("rule", "add", "witness-identity", "UN-HRMMU")
    built = json.loads(office.package("UN-HRMMU", "--item", office.original).stdout)
    cli.ok("rule", "add", "witness-identity", "UN-HRMMU", "--relation", "redacted")
    outbox = office.tmp / "outbox"
    outbox.mkdir()
    assert_refusal(cli("send", built["id"], "--outbox", str(outbox)), 1,
                   f"package {built['id']}: item {office.original}: label witness-identity may "
                   "go to UN-HRMMU only as a redacted copy (release rule), since it was built; "
                   "build a new package without it")
    assert list(outbox.iterdir()) == []


def test_a_hand_edit_of_the_copy_a_body_gets_stops_packaging(office: Office) -> None:
    cli = office.cli
    cli.ok("rule", "add", "witness-identity", "UN-HRMMU", "--relation", "redacted")
    office.redact()
    config = cli.vault / "config.toml"
    config.write_text(config.read_text().replace('"UN-HRMMU" = "redacted"',
                                                 '"UN-HRMMU" = "original"'))
    assert_refusal(office.package("UN-HRMMU", "--item", office.original), 3,
                   "config.toml's release rules differ from the signed history (copy for "
                   "UN-HRMMU under rule for witness-identity changed from redacted to original "
                   "by hand); see `evault rule list`, then adopt the edit with `evault rule "
                   "sign --as NAME` or restore the file")
    config.write_text(config.read_text().replace('"UN-HRMMU" = "original"',
                                                 '"UN-HRMMU" = "unredacted"'))
    result = cli("rule", "list")
    assert result.exit_code == 1
    assert result.stderr.endswith(
        "config.toml: release rule 'witness-identity': body 'UN-HRMMU' gets 'unredacted'; use "
        "\"original\" or one of redacted, translation, transcript, excerpt, transcode\n")


def test_export_sends_each_body_the_copy_its_rule_names(office: Office) -> None:
    cli = office.cli
    cli.ok("rule", "add", "witness-identity", "UN-HRMMU", "--relation", "redacted")
    redacted = office.redact()
    outbox = office.tmp / "outbox"
    outbox.mkdir()
    rows = [json.loads(line) for line in cli.ok(
        "export", "--to", ",".join(BODIES), "--case", CASE, "--outbox", str(outbox),
        "--jsonl").stdout.splitlines()]
    by_body = {r["body"]: r for r in rows}
    assert (by_body["ICC-OTP"]["status"], by_body["ICC-OTP"]["items"]) == ("shared", 2)
    assert (by_body["UN-HRMMU"]["status"], by_body["UN-HRMMU"]["items"]) == ("shared", 1)
    assert by_body["UA-OPG"]["items"] == 0, rows
    # The original UN-HRMMU may not have is replaced, not withheld.
    assert (by_body["UA-OPG"]["withheld"], by_body["UN-HRMMU"]["withheld"]) == (
        [office.original, redacted], [])
    packages = {p["body"]: p["item_ids"] for p in json.loads(
        cli.ok("package", "list", "--json").stdout)}
    assert packages == {"ICC-OTP": [office.original, redacted], "UN-HRMMU": [redacted]}


def test_an_approval_request_names_the_copy_package_create_would_take(office: Office) -> None:
    office.cli.ok("rule", "add", "witness-identity", "UN-HRMMU", "--relation", "redacted")
    redacted = office.redact()
    request = office.tmp / "req.json"
    office.cli.ok("approval", "request", "--to", "UN-HRMMU", "--item", office.original,
                  "--purpose", "Fictional request 19", "-o", str(request))
    assert [i["id"] for i in json.loads(request.read_bytes())["items"]] == [redacted]


def test_the_reports_count_copies_and_show_the_chain(office: Office) -> None:
    cli = office.cli
    cli.ok("rule", "add", "witness-identity", "UN-HRMMU", "--relation", "redacted")
    redacted = office.redact()
    excerpt = office.ingest("excerpt.txt", b"fictional excerpt [REDACTED]\n", "--derived-from",
                            redacted, "--relation", "excerpt", "--tool", "cutter 1.0")
    office.packaged("ICC-OTP", "--case", CASE)
    office.packaged("UN-HRMMU", "--item", office.original)
    rows = {r["body"]: r for r in json.loads(
        cli.ok("report", "sharing", "--format", "json").stdout)["rows"]}
    assert [(rows[b]["items"], rows[b]["originals"], rows[b]["derivatives"])
            for b in ("ICC-OTP", "UN-HRMMU")] == [(3, 1, 2), (1, 0, 1)]
    sha = {i["id"]: i["sha256"] for i in json.loads(cli.ok("items", "list", "--json").stdout)}
    form = cli.ok("report", "custody", excerpt, "--format", "md").stdout
    assert (f"- **Derived from**: {redacted} (excerpt, cutter 1.0) SHA-256 {sha[redacted]} ← "
            f"{office.original} (redacted) SHA-256 {sha[office.original]}\n") in form
    form = cli.ok("report", "custody", office.original, "--format", "md").stdout
    assert (f"- **Derived copies**: {redacted} (redacted) SHA-256 {sha[redacted]}, {excerpt} "
            f"(excerpt, cutter 1.0, of {redacted}) SHA-256 {sha[excerpt]}\n") in form
    html = cli.ok("report", "custody", office.original, "--format", "html").stdout
    assert "<th scope=\"row\">Derived copies</th>" in html
    plain = office.ingest("other.txt", b"fictional unrelated note\n")
    assert "Derived" not in cli.ok("report", "custody", plain, "--format", "md").stdout


def test_a_database_holder_cannot_make_an_item_the_copy_a_rule_asks_for(office: Office) -> None:
    """Whether an item is the redacted copy of another is read from its signed intake event,
    not from the columns: set with SQL, they stop the package (exit 3)."""
    cli = office.cli
    cli.ok("rule", "add", "witness-identity", "UN-HRMMU", "--relation", "redacted")
    unrelated = office.ingest("unredacted.txt", b"fictional statement naming a witness again\n",
                              "--label", "witness-identity")
    # The original itself marked as its own redacted copy.
    sql(cli, "UPDATE items SET derivation = 'redacted' WHERE id = :id", id=office.original)
    assert_refusal(office.package("UN-HRMMU", "--item", office.original), 3,
                   f"item {office.original}: the database says it is a redacted copy, its signed "
                   "intake event does not; nothing was packaged; run `evault custody verify`")
    # An unredacted item passed off as the original's redacted copy.
    sql(cli, "UPDATE items SET derivation = NULL WHERE id = :id", id=office.original)
    sql(cli, "UPDATE items SET derivation = 'redacted', derived_from = :o WHERE id = :id",
        o=office.original, id=unrelated)
    assert_refusal(office.package("UN-HRMMU", "--item", office.original), 3,
                   f"item {unrelated}: the database says it is a redacted copy of "
                   f"{office.original}, its signed intake event does not; nothing was packaged; "
                   "run `evault custody verify`")
    assert not (office.tmp / "UN-HRMMU.evpkg").exists()


def test_a_deleted_label_row_does_not_free_an_item(office: Office) -> None:
    """Labels are read as the item's signed intake event has them: a label row deleted with
    SQL stops the package (exit 3) instead of letting the item escape its rule."""
    sql(office.cli, "DELETE FROM item_labels WHERE item_id = :id", id=office.original)
    assert_refusal(office.package("UA-OPG", "--item", office.original), 3,
                   f"item {office.original}: the label witness-identity its signed item.ingested "
                   "event names is missing from the database; nothing was packaged; run `evault "
                   "custody verify`")


def test_a_newer_copy_cannot_be_hidden_by_marking_it_another_kind(office: Office) -> None:
    office.cli.ok("rule", "add", "witness-identity", "UN-HRMMU", "--relation", "redacted")
    office.redact()
    newer = office.ingest("statement-Red2.txt", b"fictional statement, redacted better\n",
                          "--derived-from", office.original, "--relation", "redacted")
    sql(office.cli, "UPDATE items SET derivation = 'excerpt' WHERE id = :id", id=newer)
    assert_refusal(office.package("UN-HRMMU", "--item", office.original), 3,
                   f"item {newer}: the database says it is an excerpt copy of {office.original}, "
                   "its signed intake event does not; nothing was packaged; run `evault custody "
                   "verify`")


def test_a_copy_made_before_copies_took_labels_is_bound_by_its_originals(
        office: Office, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy ingested by the first release of derived copies carries no label of its own:
    its original's labels still bind it."""
    with monkeypatch.context() as earlier:
        earlier.setattr("vault.service.intake._labels", lambda row, originals: row.fields.labels)
        translation = office.ingest("statement-en.txt", b"fictional translated statement\n",
                                    "--derived-from", office.original, "--relation",
                                    "translation")
    assert json.loads(office.cli.ok("items", "show", translation, "--json").stdout)[
        "labels"] == []
    assert_refusal(office.package("UA-OPG", "--item", translation), 1,
                   f"item {translation}: label witness-identity may go only to ICC-OTP (release "
                   "rule); leave it out of this package")
    assert office.packaged("ICC-OTP", "--item", translation) == [translation]
