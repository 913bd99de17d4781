"""Hostile review of issue 18 (signed multi-party approval of releases): a hostile sender,
a hostile approver, and someone holding the database but not the keys nor config.toml."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Cli, isolate

from vault.errors import VerificationError

CASE = "UA-2026-0042"
OTHER = "UA-2026-0043"


@dataclass
class World:
    office: Cli
    defense: Cli
    icc: Cli
    tmp: Path

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.office.vault / "vault.db")

    def request(self, case: str = CASE, name: str = "req") -> tuple[Path, str]:
        path = self.tmp / f"{name}.json"
        rid = json.loads(self.office.ok(
            "approval", "request", "--to", "ICC-OTP", "--case", case, "--purpose",
            "Fictional RFA 17", "-o", str(path), "--json").stdout)["request"]
        return path, rid

    def answers(self, request: Path, tag: str = "") -> tuple[Path, Path]:
        state, defense = self.tmp / f"a-state{tag}.json", self.tmp / f"a-defense{tag}.json"
        self.office.ok("approval", "sign", str(request), "--as", "state-legal", "-o",
                       str(state))
        self.defense.ok("approval", "sign", str(request), "-o", str(defense))
        return state, defense


def _fp(cli: Cli, name: str) -> str:
    return str(json.loads(cli.ok("identity", "show", name, "--json").stdout)["fingerprint"])


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The three vaults, built once for the module; each test gets its own copy."""
    tmp = tmp_path_factory.mktemp("hostile18")
    with pytest.MonkeyPatch.context() as env:
        isolate(env, tmp / "no-default-vault")
        _build(tmp)
    yield tmp


@pytest.fixture
def world(template: Path, tmp_path: Path) -> World:
    """A copy of the module's vaults, for one test to change as it likes."""
    for entry in template.iterdir():
        if entry.is_dir():
            shutil.copytree(entry, tmp_path / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, tmp_path / entry.name)
    return World(*(Cli(tmp_path / n) for n in ("office", "defense", "icc")), tmp_path)


def _build(tmp_path: Path) -> World:
    office, defense, icc = (Cli(tmp_path / n) for n in ("office", "defense", "icc"))
    for c in (office, defense, icc):
        c.init()
    office.ok("identity", "create", "registry-office")
    office.ok("identity", "create", "state-legal")
    defense.ok("identity", "create", "defense-legal")
    icc.ok("identity", "create", "icc-officer")
    cards = {}
    for c, n in ((office, "registry-office"), (defense, "defense-legal"), (icc, "icc-officer")):
        cards[n] = tmp_path / f"{n}.card.json"
        c.ok("identity", "export", n, "-o", str(cards[n]))
    office.ok("contact", "add", str(cards["defense-legal"]), "--fingerprint",
              _fp(defense, "defense-legal"))
    for c in (defense, icc):
        c.ok("contact", "add", str(cards["registry-office"]), "--fingerprint",
             _fp(office, "registry-office"))
    office.ok("body", "add", "ICC-OTP", "--name", "Fictional court")
    office.ok("body", "key", "add", "ICC-OTP", "--card", str(cards["icc-officer"]))
    for case, text in ((CASE, b"fictional statement\n"), (OTHER, b"another statement\n")):
        f = tmp_path / f"{case}.txt"
        f.write_bytes(text)
        office.ok("ingest", str(f), "--case", case, "--create-case")
    office.ok("approval", "policy", "set", "--body", "ICC-OTP", "--need", "2", "--of",
              "state-legal,defense-legal,nsc-legal", "--as", "registry-office")
    return World(office, defense, icc, tmp_path)


def test_happy_path(world: World) -> None:
    req, _ = world.request()
    state, defense = world.answers(req)
    world.office.ok("approval", "import", str(state), str(defense))
    out = world.tmp / "p.evpkg"
    world.office.ok("package", "create", "--to", "ICC-OTP", "--case", CASE, "-o", str(out),
                    "--as", "registry-office")
    r = world.icc.ok("verify", str(out), "--as", "icc-officer")
    assert "state-legal" in r.stdout + r.stderr


# -- (3) the database without the keys nor config.toml ------------------------------------


def _package(world: World, case: str = CASE) -> tuple[int, str]:
    out = world.tmp / f"p-{case}.evpkg"
    r = world.office("package", "create", "--to", "ICC-OTP", "--case", case, "-o", str(out),
                     "--as", "registry-office")
    return r.exit_code, r.stdout + r.stderr


def test_db_moved_approvals_do_not_count_for_another_request(world: World) -> None:
    """Approvals of one selection, moved by SQL to a request for another, are not a quorum."""
    req, rid = world.request(CASE, "req1")
    world.office.ok("approval", "import", *map(str, world.answers(req)))
    _, rid2 = world.request(OTHER, "req2")
    with world.db() as conn:
        conn.execute("UPDATE approvals SET request_id = ? WHERE request_id = ?", (rid2, rid))
    code, out = _package(world, OTHER)
    # The sealed document names its row: moved, it no longer opens (and were it opened, its
    # signed request id would not be the row's: check_quorum refuses that too).
    assert code == 3 and "does not decrypt under this vault's metadata key" in out, out
    assert "Traceback" not in out


def test_db_request_row_with_another_document_does_not_count(world: World) -> None:
    """A request row claiming another selection (digest column edited) is not a quorum."""
    req, rid = world.request(CASE, "req1")
    world.office.ok("approval", "import", *map(str, world.answers(req)))
    world.request(OTHER, "req2")
    with world.db() as conn:
        (other,) = conn.execute("SELECT selection_sha256 FROM approval_requests WHERE id != ?",
                                (rid,)).fetchone()
        conn.execute("DELETE FROM approval_requests WHERE id != ?", (rid,))
        conn.execute("UPDATE approval_requests SET selection_sha256 = ? WHERE id = ?",
                     (other, rid))
    code, out = _package(world, OTHER)
    assert code in (1, 3), out
    assert "Traceback" not in out


def test_db_flipped_refusal_still_blocks(world: World) -> None:
    req, _ = world.request()
    state = world.tmp / "a-state.json"
    world.office.ok("approval", "sign", str(req), "--as", "state-legal", "-o", str(state))
    refusal = world.tmp / "a-def.json"
    world.defense.ok("approval", "sign", str(req), "--refuse", "--reason", "not yet", "-o",
                     str(refusal))
    world.office.ok("approval", "import", str(state), str(refusal))
    with world.db() as conn:
        conn.execute("UPDATE approvals SET decision = 'approve'")
    code, out = _package(world)
    assert code == 1 and "refused" in out, out


def test_db_renamed_approver_does_not_fill_another_name(world: World) -> None:
    """defense-legal's approval, renamed nsc-legal (approvals and contacts by SQL), does not
    stand in for nsc-legal."""
    req, _ = world.request()
    world.office.ok("approval", "import", *map(str, world.answers(req)))
    world.office.ok("approval", "policy", "set", "--body", "ICC-OTP", "--need", "2", "--of",
                    "state-legal,nsc-legal", "--as", "registry-office")
    with world.db() as conn:
        conn.execute("UPDATE approvals SET approver = 'nsc-legal' WHERE approver = "
                      "'defense-legal'")
        conn.execute("UPDATE contacts SET name = 'nsc-legal' WHERE name = 'defense-legal'")
    code, out = _package(world)
    assert code in (1, 3), out
    assert "Traceback" not in out


def test_db_rewritten_policy_event_is_refused(world: World) -> None:
    with world.db() as conn:
        rows = conn.execute("SELECT seq, body FROM custody_events WHERE action = "
                            "'approval.policy_changed'").fetchall()
        seq, body = rows[-1]
        assert b'"need":2' in body
        conn.execute("UPDATE custody_events SET body = ? WHERE seq = ?",
                     (body.replace(b'"need":2', b'"need":1'), seq))
    code, out = _package(world)
    assert code == 3, out


# -- (1) a hostile sender: the approvals a package carries ---------------------------------


def _bag(world: World, listed: list[tuple[str, Path]], **declared: object) -> dict[str, bytes]:
    """The approval tag files of a package: the request and ``listed`` (declared name,
    approval file), with a declaration the hostile sender may lie in."""
    from vault.formats.canonical import canonical_json

    req = world.tmp / "req.json"
    files = {"evault/approvals/request.json": req.read_bytes(),
             "evault/approvals/request.json.sig": Path(f"{req}.sig").read_bytes()}
    entries = []
    for name, path in listed:
        doc = json.loads(path.read_bytes())
        files[f"evault/approvals/{name}.json"] = path.read_bytes()
        files[f"evault/approvals/{name}.json.sig"] = Path(f"{path}.sig").read_bytes()
        entries.append({"approver": name, "fingerprint": doc["approver"]["fingerprint"],
                        "file": f"evault/approvals/{name}.json"})
    declaration = {"type": "evault-approvals", "version": 1, "need": 2,
                   "of": ["defense-legal", "nsc-legal", "state-legal"], "required": [],
                   "request": "evault/approvals/request.json", "approvals": entries}
    declaration.update(declared)
    files["evault/approvals.json"] = canonical_json(declaration)
    return files


def _check(world: World, files: dict[str, bytes]) -> tuple[str, ...] | None:
    from vault.formats.approval import ApprovalRequest
    from vault.service.approvals import check_packaged

    request = ApprovalRequest.from_bytes((world.tmp / "req.json").read_bytes())
    return check_packaged("PKG-0123456789AB", files, request.body, request.items)


def test_packaged_honest_quorum_passes(world: World) -> None:
    req, _ = world.request()
    state, defense = world.answers(req)
    assert _check(world, _bag(world, [("state-legal", state), ("defense-legal", defense)])) \
        == ("defense-legal", "state-legal")


def test_packaged_request_of_another_vault_is_refused(world: World) -> None:
    """Approvals another vault gathered for the same body and selection are not the
    sender's: the request's origin must be the sender's log."""
    from vault.formats.approval import ApprovalRequest
    from vault.service.approvals import check_packaged

    req, _ = world.request()
    state, defense = world.answers(req)
    files = _bag(world, [("state-legal", state), ("defense-legal", defense)])
    request = ApprovalRequest.from_bytes((world.tmp / "req.json").read_bytes())
    assert check_packaged("PKG-0123456789AB", files, request.body, request.items,
                          request.origin) == ("defense-legal", "state-legal")
    with pytest.raises(VerificationError, match=(
            f"request {request.request_id} was made by another vault than the sender's")):
        check_packaged("PKG-0123456789AB", files, request.body, request.items,
                       "evault/0123456789abcdef0123456789abcdef")


def test_packaged_one_approval_under_two_names_is_one(world: World) -> None:
    """The same approval copied under two declared names does not make two approvals."""
    from vault.errors import VerificationError

    req, _ = world.request()
    state, _ = world.answers(req)
    with pytest.raises(VerificationError, match="approvals"):
        _check(world, _bag(world, [("state-legal", state), ("nsc-legal", state)]))


@pytest.mark.parametrize("declared", [
    {"need": 0, "of": []},                                  # a quorum of nobody
    {"need": "2"},                                          # not a number
    {"need": True, "of": ["state-legal"]},                  # a boolean is not a count
    {"of": "state-legal"},                                  # a string is not a list
    {"need": 5},                                            # more than it names
    {"of": ["state-legal\x1b[2J", "defense-legal"], "need": 1},  # not an approver name
])
def test_packaged_declaration_must_be_well_formed(world: World, declared: dict[str, object]
                                                  ) -> None:
    from vault.errors import VerificationError

    req, _ = world.request()
    state, defense = world.answers(req)
    with pytest.raises(VerificationError, match=r"approvals\.json") as e:
        _check(world, _bag(world, [("state-legal", state), ("defense-legal", defense)],
                           **declared))
    assert "\n" not in str(e.value) and "\x1b" not in str(e.value)


def test_packaged_hostile_name_is_not_echoed(world: World) -> None:
    """A declared approver name with control characters gives one clean line."""
    from vault.errors import VerificationError

    req, _ = world.request()
    state, defense = world.answers(req)
    files = _bag(world, [("state-legal", state), ("defense-legal", defense)])
    decl = json.loads(files["evault/approvals.json"])
    decl["approvals"][0]["approver"] = "x\n\x1b[31mAPPROVED"
    from vault.formats.canonical import canonical_json
    files["evault/approvals.json"] = canonical_json(decl)
    with pytest.raises(VerificationError) as e:
        _check(world, files)
    assert "\n" not in str(e.value) and "\x1b" not in str(e.value)


def test_packaged_approval_of_another_selection_is_refused(world: World) -> None:
    from vault.errors import VerificationError

    other, _ = world.request(OTHER, "other")
    o_state, o_defense = world.answers(other, "-other")
    world.request()
    with pytest.raises(VerificationError, match="another selection"):
        _check(world, _bag(world, [("state-legal", o_state), ("defense-legal", o_defense)]))


def test_packaged_refusal_is_refused(world: World) -> None:
    from vault.errors import VerificationError

    req, _ = world.request()
    state, _ = world.answers(req)
    refusal = world.tmp / "refusal.json"
    world.defense.ok("approval", "sign", str(req), "--refuse", "--reason", "no", "-o",
                     str(refusal))
    with pytest.raises(VerificationError, match="refused"):
        _check(world, _bag(world, [("state-legal", state), ("defense-legal", refusal)]))


def test_packaged_signature_by_another_key_is_refused(world: World) -> None:
    from vault.errors import VerificationError

    req, _ = world.request()
    state, defense = world.answers(req)
    files = _bag(world, [("state-legal", state), ("defense-legal", defense)])
    files["evault/approvals/state-legal.json.sig"] = Path(f"{defense}.sig").read_bytes()
    with pytest.raises(VerificationError):
        _check(world, files)


# -- (2) a hostile approver or recipient ---------------------------------------------------


def _one_line(out: str) -> None:
    assert "Traceback" not in out
    assert len(out.strip().splitlines()) == 1, out


def test_replayed_approval_to_another_request_is_refused(world: World) -> None:
    req, _ = world.request(CASE, "req1")
    _, defense = world.answers(req)
    world.request(CASE, "req2")  # the same selection, asked again
    world.office.ok("approval", "import", str(defense))
    # an approval is bound to its request's bytes: importing it again is idempotent
    r = world.office("approval", "import", str(defense))
    assert r.exit_code == 0


def test_second_answer_is_refused(world: World) -> None:
    req, _ = world.request()
    _, defense = world.answers(req)
    world.office.ok("approval", "import", str(defense))
    refusal = world.tmp / "again.json"
    world.defense.ok("approval", "sign", str(req), "--refuse", "--reason", "changed mind",
                     "-o", str(refusal))
    r = world.office("approval", "import", str(refusal))
    assert r.exit_code != 0
    _one_line(r.stderr)


def test_approval_by_revoked_contact_does_not_count(world: World) -> None:
    req, _ = world.request()
    state, defense = world.answers(req)
    world.office.ok("approval", "import", str(state), str(defense))
    fp = _fp(world.defense, "defense-legal")
    world.office.ok("contact", "revoke", fp)
    code, out = _package(world)
    assert code == 1 and "lacks 1 more" in out, out
    _one_line(out)


@pytest.mark.parametrize("garbage", [b"", b"{}", b"[1]", b"\xff\xfe",
                                     b'{"type":"evault-approval"}'])
def test_import_garbage_is_one_line(world: World, garbage: bytes) -> None:
    world.request()
    bad = world.tmp / "bad.json"
    bad.write_bytes(garbage)
    Path(f"{bad}.sig").write_bytes(b"-----BEGIN SSH SIGNATURE-----\nxx\n")
    r = world.office("approval", "import", str(bad))
    assert r.exit_code in (1, 2, 3)
    _one_line(r.stderr)


@pytest.mark.parametrize("garbage", [b"", b"{}", b"\xff"])
def test_sign_garbage_is_one_line(world: World, garbage: bytes) -> None:
    bad = world.tmp / "bad.json"
    bad.write_bytes(garbage)
    Path(f"{bad}.sig").write_bytes(b"not a signature")
    r = world.defense("approval", "sign", str(bad), "-o", str(world.tmp / "x.json"))
    assert r.exit_code in (1, 2, 3)
    _one_line(r.stderr)


def test_sign_request_of_unknown_sender_is_refused(world: World) -> None:
    req, _ = world.request()
    stranger = Cli(world.tmp / "stranger")
    stranger.init()
    stranger.ok("identity", "create", "someone")
    r = stranger("approval", "sign", str(req), "-o", str(world.tmp / "x.json"))
    assert r.exit_code == 3
    _one_line(r.stderr)


def test_contact_named_like_an_identity(world: World) -> None:
    """A contact card named state-legal (another office's key) cannot stand in for the
    identity state-legal, nor make package create crash."""
    rogue = Cli(world.tmp / "rogue")
    rogue.init()
    rogue.ok("identity", "create", "state-legal")
    card = world.tmp / "rogue.card.json"
    rogue.ok("identity", "export", "state-legal", "-o", str(card))
    r = world.office("contact", "add", str(card), "--fingerprint", _fp(rogue, "state-legal"))
    req, _ = world.request()
    world.answers(req)
    rs = world.tmp / "rogue-state.json"
    rogue.ok("contact", "add", str(world.tmp / "registry-office.card.json"), "--fingerprint",
             _fp(world.office, "registry-office"))
    rogue.ok("approval", "sign", str(req), "-o", str(rs))
    imp = world.office("approval", "import", str(rs))
    if r.exit_code == 0:
        assert imp.exit_code != 0
        _one_line(imp.stderr)
    code, out = _package(world)
    assert code != 0
    _one_line(out)
