"""Release only with the agreement of the offices that must agree: the signed approval
policy, requests and answers across vaults, the quorum at package time, and the approvals a
package carries, checked by the recipient."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Cli, reuse_world
from test_robustness import assert_refusal

CASE = "UA-2026-0042"
APPROVERS = "state-legal,defense-legal,nsc-legal"


def _fingerprint(cli: Cli, name: str) -> str:
    return str(json.loads(cli.ok("identity", "show", name, "--json").stdout)["fingerprint"])


@dataclass
class World:
    """An office with its own approver (state-legal), a second office's vault with another
    (defense-legal), a third (nsc-legal), and ICC-OTP's vault; a case of two items."""

    tmp: Path
    office: Cli
    defense: Cli
    nsc: Cli
    icc: Cli

    def request(self, name: str = "req.json", *args: str) -> Path:
        path = self.tmp / name
        self.office.ok("approval", "request", "--to", "ICC-OTP", "--case", CASE, "--purpose",
                       "Fictional request for assistance 17", "-o", str(path), *args)
        return path

    def answer(self, who: Cli, request: Path, name: str, *args: str) -> Path:
        path = self.tmp / name
        who.ok("approval", "sign", str(request), "-o", str(path), *args)
        return path

    def package(self, name: str = "p.evpkg") -> tuple[int, str, Path]:
        path = self.tmp / name
        result = self.office("package", "create", "--to", "ICC-OTP", "--case", CASE, "-o",
                             str(path))
        return result.exit_code, result.stderr, path


@pytest.fixture
def world(tmp_path: Path) -> World:
    """The office (a policy of two approvals of three for ICC-OTP, a case of two items), the
    approvers' vaults and ICC-OTP's: each test's own copy of a world the test process builds
    once (conftest's ``reuse_world``)."""
    reuse_world("approvals", tmp_path, [None], lambda tmp, _: _build_world(tmp))
    office, defense, nsc, icc = (Cli(tmp_path / n) for n in ("office", "defense", "nsc", "icc"))
    return World(tmp_path, office, defense, nsc, icc)


def _build_world(tmp_path: Path) -> None:
    office, defense, nsc, icc = (Cli(tmp_path / n) for n in ("office", "defense", "nsc", "icc"))
    for cli in (office, defense, nsc, icc):
        cli.init()
    office.ok("identity", "create", "registry-office")
    office.ok("identity", "create", "state-legal")
    defense.ok("identity", "create", "defense-legal")
    nsc.ok("identity", "create", "nsc-legal")
    icc.ok("identity", "create", "icc-officer")
    cards = {}
    for cli, name in ((office, "registry-office"), (defense, "defense-legal"),
                      (nsc, "nsc-legal"), (icc, "icc-officer")):
        cards[name] = tmp_path / f"{name}.card.json"
        cli.ok("identity", "export", name, "-o", str(cards[name]))
    for cli, name in ((defense, "defense-legal"), (nsc, "nsc-legal")):
        office.ok("contact", "add", str(cards[name]), "--fingerprint", _fingerprint(cli, name))
    for cli in (defense, nsc, icc):
        cli.ok("contact", "add", str(cards["registry-office"]), "--fingerprint",
               _fingerprint(office, "registry-office"))
    office.ok("body", "add", "ICC-OTP", "--name", "Fictional court prosecutor")
    office.ok("body", "key", "add", "ICC-OTP", "--card", str(cards["icc-officer"]))
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    (evidence / "statement W-1.txt").write_bytes(b"fictional statement\n")
    (evidence / "photo.jpg").write_bytes(bytes(range(256)) * 16)
    office.ok("ingest", str(evidence), "-r", "--case", CASE, "--create-case")
    office.ok("approval", "policy", "set", "--body", "ICC-OTP", "--need", "2", "--of",
              APPROVERS)


def test_no_quorum_no_package_then_two_offices_approve_and_the_recipient_sees_who(
        world: World) -> None:
    code, err, path = world.package()
    assert (code, err.count("\n")) == (1, 1)
    assert err.startswith("evault: release to ICC-OTP: this selection (SHA-256 ")
    assert err.endswith("needs approvals (2 of defense-legal, nsc-legal, state-legal): no "
                        "request was made for it; ask with `evault approval request --to "
                        "ICC-OTP ...`, then `evault approval import` each answer\n")
    assert not path.exists()
    request = world.request()
    state = world.answer(world.office, request, "state.json", "--as", "state-legal")
    world.office.ok("approval", "import", str(state))
    code, err, _ = world.package()
    assert code == 1 and "lacks 1 more of defense-legal, nsc-legal" in err
    # The second office answers from its own vault, where the office is a pinned contact.
    defense = world.answer(world.defense, request, "defense.json")
    result = world.office.ok("approval", "import", str(defense))
    request_id = json.loads(request.read_text())["request_id"]
    assert result.stderr == (f"evault: approval of request {request_id} by defense-legal "
                             "kept; logged approval.imported\n")
    rows = json.loads(world.office.ok("approval", "list", "--json").stdout)
    assert [(r["request"], r["approved_by"], r["refused_by"]) for r in rows] == [
        (request_id, ["defense-legal", "state-legal"], [])]
    code, err, path = world.package()
    assert code == 0, err
    # The built event names the approvers; the recipient checks and prints them.
    [package] = json.loads(world.office.ok("package", "list", "--json").stdout)
    events = json.loads(world.office.ok("custody", "show", package["id"], "--json")
                        .stdout)["events"]
    [built] = [e for e in events if e["action"] == "package.built"]
    assert built["details"]["approvals"] == ["defense-legal", "state-legal"]
    opened = world.icc.ok("open", str(path), "--out", str(world.tmp / "received"))
    assert ("release approved by defense-legal, state-legal (signed approvals, checked "
            "against the policy the package declares)") in opened.stderr
    checked = world.icc.ok("verify", str(path), "--as", "icc-officer").stdout
    assert checked.endswith("custody event(s) verified, release approved by defense-legal, "
                            "state-legal)\n")


def test_an_approval_of_another_selection_does_not_count(world: World) -> None:
    request = world.request()
    for who, name, args in ((world.office, "s.json", ("--as", "state-legal")),
                            (world.defense, "d.json", ())):
        world.office.ok("approval", "import", str(world.answer(who, request, name, *args)))
    # One more item in the case after approval: the selection changed, the quorum is gone.
    extra = world.tmp / "map.txt"
    extra.write_bytes(b"fictional map notes\n")
    world.office.ok("ingest", str(extra), "--case", CASE)
    code, err, path = world.package()
    assert code == 1 and "no request was made for it" in err and not path.exists()


def test_a_refusal_blocks_and_says_why(world: World) -> None:
    request = world.request()
    world.office.ok("approval", "import", str(world.answer(
        world.office, request, "s.json", "--as", "state-legal")))
    refusal = world.answer(world.nsc, request, "n.json", "--refuse", "--reason",
                           "Fictional witness at risk")
    world.office.ok("approval", "import", str(refusal))
    world.office.ok("approval", "import", str(world.answer(world.defense, request, "d.json")))
    code, err, _ = world.package()
    request_id = json.loads(request.read_text())["request_id"]
    shown = world.office.ok("approval", "show", request_id).stdout
    assert ("answers:          defense-legal approved at " in shown
            and "nsc-legal refused at " in shown and "(Fictional witness at risk)" in shown)
    assert_refusal(world.office("approval", "show", "APR-0123456789AB"), 1,
                   "approval request APR-0123456789AB: not found; see `evault approval list`")
    assert (code, err) == (1, (
        f"evault: release to ICC-OTP: nsc-legal refused request {request_id} for this "
        "selection (Fictional witness at risk); it cannot go without a new request\n"))
    assert_refusal(world.nsc("approval", "sign", str(request), "-o",
                             str(world.tmp / "x.json"), "--refuse"), 2,
                   "approval sign --refuse: say why with --reason TEXT")


def test_replays_and_second_answers(world: World) -> None:
    request = world.request()
    answer = world.answer(world.defense, request, "d.json")
    world.office.ok("approval", "import", str(answer))
    again = world.office.ok("approval", "import", str(answer))
    assert again.stderr.endswith("by defense-legal kept already\n")
    # The same approver changing its mind is not taken silently.
    second = world.answer(world.defense, request, "d2.json", "--refuse", "--reason",
                          "Fictional second thoughts")
    assert_refusal(world.office("approval", "import", str(second)), 1,
                   "defense-legal answered this request already (approve); a second answer "
                   "is not taken")
    # An answer to a request this vault never made: the request id is not one of its own.
    request_id = json.loads(request.read_text())["request_id"]
    with sqlite3.connect(world.office.vault / "vault.db") as db:
        db.execute("DELETE FROM approvals")
        db.execute("DELETE FROM approval_requests")
    assert_refusal(world.office("approval", "import", str(answer)), 3,
                   f"approval of {request_id}: this vault made no such request; do not rely "
                   "on it")


def test_a_revoked_approver_no_longer_counts(world: World) -> None:
    request = world.request()
    for who, name, args in ((world.office, "s.json", ("--as", "state-legal")),
                            (world.defense, "d.json", ())):
        world.office.ok("approval", "import", str(world.answer(who, request, name, *args)))
    fingerprint = _fingerprint(world.defense, "defense-legal")
    world.office.ok("contact", "revoke", fingerprint)
    code, err, _ = world.package()
    assert code == 1 and "lacks 1 more of defense-legal, nsc-legal" in err
    # ...and an answer signed by a revoked key is not imported.
    later = world.answer(world.defense, world.request("req2.json"), "d2.json")
    result = world.office("approval", "import", str(later))
    assert result.exit_code == 3
    assert "only the approvers the policy names (with keys not revoked) count" in result.stderr


def test_a_label_adds_a_required_approver(world: World) -> None:
    labelled = world.tmp / "w2.txt"
    labelled.write_bytes(b"fictional witness identity\n")
    world.office.ok("ingest", str(labelled), "--case", CASE, "--label", "witness-identity")
    world.office.ok("rule", "add", "witness-identity", "ICC-OTP")
    world.office.ok("approval", "policy", "set", "--label", "witness-identity", "--require",
                    "nsc-legal")
    request = world.request()
    for who, name, args in ((world.office, "s.json", ("--as", "state-legal")),
                            (world.defense, "d.json", ())):
        world.office.ok("approval", "import", str(world.answer(who, request, name, *args)))
    code, err, _ = world.package()
    assert code == 1 and "lacks nsc-legal" in err
    world.office.ok("approval", "import", str(world.answer(world.nsc, request, "n.json")))
    code, err, _ = world.package()
    assert code == 0, err


def test_a_hand_edited_policy_stops_packaging_until_signed(world: World) -> None:
    config = world.office.vault / "config.toml"
    config.write_text(config.read_text().replace("need = 2", "need = 1"))
    result = world.office("package", "create", "--to", "ICC-OTP", "--case", CASE)
    assert (result.exit_code, result.stderr) == (3, (
        "evault: config.toml's approval policy differs from the signed history; see `evault "
        "approval policy list`, then adopt the edit with `evault approval policy sign --as "
        "NAME` or restore the file\n"))


def test_a_tampered_approval_inside_a_package_is_refused_by_the_recipient(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    request = world.request()
    for who, name, args in ((world.office, "s.json", ("--as", "state-legal")),
                            (world.defense, "d.json", ())):
        world.office.ok("approval", "import", str(world.answer(who, request, name, *args)))
    from vault.service import approvals

    real = approvals.tag_files

    def tampered(quorum: approvals.Quorum) -> tuple[tuple[str, bytes], ...]:
        files = dict(real(quorum))
        path = "evault/approvals/defense-legal.json"
        files[path] = files[path].replace(b'"approve"', b'"refuse"')
        return tuple(files.items())

    # A hostile sender signs a bag whose approval was altered after it was made.
    monkeypatch.setattr(approvals, "tag_files", tampered)
    code, err, path = world.package()
    assert code == 0, err
    out = world.tmp / "received"
    assert_refusal(world.icc("open", str(path), "--out", str(out)), 3,
                   "approvals: ", "do not rely on them, ask the sender")
    assert not out.exists() or list(out.iterdir()) == []


def test_the_policy_is_in_the_custody_log(world: World) -> None:
    events = json.loads(world.office.ok("custody", "show", "approval-policy", "--json")
                        .stdout)["events"]
    assert [e["action"] for e in events] == ["approval.policy_changed"]
    assert events[0]["details"]["bodies"] == {
        "ICC-OTP": {"need": 2, "of": ["defense-legal", "nsc-legal", "state-legal"]}}
    with sqlite3.connect(world.office.vault / "vault.db") as db:
        assert db.execute("SELECT count(*) FROM approvals").fetchone() == (0,)


def test_export_refuses_only_the_body_without_a_quorum(world: World) -> None:
    world.office.ok("body", "add", "UA-OPG", "--name", "Fictional prosecutor general")
    world.office.ok("body", "key", "add", "UA-OPG", "--card",
                    str(world.tmp / "icc-officer.card.json"))
    outbox = world.tmp / "outbox"
    outbox.mkdir()
    result = world.office("export", "--to", "ICC-OTP,UA-OPG", "--case", CASE, "--outbox",
                          str(outbox), "--jsonl")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == 1
    assert [(r["body"], r["status"]) for r in rows] == [("ICC-OTP", "failed"),
                                                          ("UA-OPG", "shared")]
    assert rows[0]["error"].startswith("release to ICC-OTP: this selection (SHA-256 ")
    assert "no request was made for it" in rows[0]["error"]
    # With the quorum, the same export (a re-run) shares with ICC-OTP too, approvals inside.
    request = world.request()
    for who, name, args in ((world.office, "s.json", ("--as", "state-legal")),
                            (world.defense, "d.json", ())):
        world.office.ok("approval", "import", str(world.answer(who, request, name, *args)))
    again = world.office.ok("export", "--to", "ICC-OTP,UA-OPG", "--case", CASE, "--outbox",
                            str(outbox), "--jsonl")
    statuses = {r["body"]: r["status"] for r in map(json.loads, again.stdout.splitlines())}
    assert statuses["ICC-OTP"] == "shared"
    report = json.loads(world.office.ok("report", "sharing", "--format", "json").stdout)
    assert {r["body"]: r["approvals"] for r in report["rows"]} == {"ICC-OTP": 2, "UA-OPG": 0}
