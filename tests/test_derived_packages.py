"""Derived copies in packages (issue 19): the link (original's id and SHA-256, relation, tool)
travels in the signed statement (version 2) and items.json, never more of the original;
`open` records it; `items verify-link` checks an original received later against it; a
package whose link contradicts what travels with it is refused."""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import TESTS, Cli, build_template, copy_template
from test_package_format import EV1, EV2, SENDER, make_statement

from vault.errors import VerificationError
from vault.formats.package import ItemLink, Statement, StatementItem, verify_statement

CASE = "UA-2026-0042"
TOOL = "redactor 2.1"
NOTE = "Fictional witness name removed by the registry"
TITLE = "Fictional witness statement W-7"


@dataclass
class Office:
    """Vault A (the sender, identity registry-office) and vault B (ICC-OTP's officer), and
    in A an original, a redacted copy of it and an excerpt of the copy."""

    a: Cli
    b: Cli
    tmp: Path
    a_fp: str
    files: dict[str, Path]
    ids: dict[str, str]  # "O", "R", "E": the items' ids in A
    sha: dict[str, str]

    def send(self, *keys: str, name: str) -> tuple[Path, str]:
        """A package from A to ICC-OTP of the items ``keys``."""
        path = self.tmp / f"{name}.evpkg"
        args = [arg for key in keys for arg in ("--item", self.ids[key])]
        pid = json.loads(self.a.ok("package", "create", "--to", "ICC-OTP", *args, "-o",
                                   str(path), "--json").stdout)["id"]
        return path, pid

    def open(self, path: Path) -> dict[str, str]:
        """B opens ``path``: A's item id -> B's."""
        result = self.b.ok("open", str(path), "--out", str(self.tmp / "received"), "--json")
        return {i["source_item"]: i["id"] for i in json.loads(result.stdout)["items"]}


def _ingest(cli: Cli, path: Path, *args: str) -> dict[str, str]:
    [row] = json.loads(cli.ok("ingest", str(path), "--case", CASE, "--json", *args).stdout)
    return dict(row)


def _office(tmp: Path, database: str | None, derive: bool = True) -> Office:
    a = Cli(tmp / "a")
    a.init(database)
    a_fp = json.loads(a.ok("identity", "create", "registry-office", "--json").stdout)[
        "fingerprint"]
    a_card = tmp / "a.card.json"
    a.ok("identity", "export", "-o", str(a_card))
    b = Cli(tmp / "b")
    b.init()
    b.ok("identity", "create", "icc-officer")
    b_card = tmp / "b.card.json"
    b.ok("identity", "export", "-o", str(b_card))
    a.ok("body", "add", "ICC-OTP", "--name", "Fictional ICC-OTP")
    a.ok("body", "key", "add", "ICC-OTP", "--card", str(b_card))
    b.ok("contact", "add", str(a_card), "--fingerprint", a_fp)
    files = {}
    for key, name, text in (("O", "statement.txt", b"fictional statement naming a witness\n"),
                            ("R", "statement-Red.txt", b"fictional statement naming [X]\n"),
                            ("E", "excerpt.txt", b"fictional excerpt [X]\n")):
        files[key] = tmp / name
        files[key].write_bytes(text)
    rows = {"O": _ingest(a, files["O"], "--create-case", "--title", TITLE)}
    if derive:
        rows["R"] = _ingest(a, files["R"], "--derived-from", rows["O"]["id"], "--relation",
                            "redacted", "--tool", TOOL, "--note", NOTE)
        rows["E"] = _ingest(a, files["E"], "--derived-from", rows["R"]["id"], "--relation",
                            "excerpt")
    return Office(a, b, tmp, a_fp, files, {k: r["id"] for k, r in rows.items()},
                  {k: r["sha256"] for k, r in rows.items()})


@pytest.fixture(scope="module")
def office_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``_office`` on SQLite, built once for the module; its ids and digests in office.json."""
    def build(tmp: Path) -> None:
        o = _office(tmp, None)
        (tmp / "office.json").write_text(json.dumps({"a_fp": o.a_fp, "ids": o.ids,
                                                     "sha": o.sha}))
    return build_template(tmp_path_factory, "derived-packages", build)


@pytest.fixture
def office(office_template: Path, tmp_path: Path) -> Office:
    """``_office(tmp_path, None)``: each test's own copy of the module's template."""
    copy_template(office_template, tmp_path)
    made = json.loads((tmp_path / "office.json").read_text())
    files = {key: tmp_path / name for key, name in (
        ("O", "statement.txt"), ("R", "statement-Red.txt"), ("E", "excerpt.txt"))}
    return Office(Cli(tmp_path / "a"), Cli(tmp_path / "b"), tmp_path, made["a_fp"], files,
                  made["ids"], made["sha"])


def _shown(cli: Cli, item: str) -> dict[str, Any]:
    return dict(json.loads(cli.ok("items", "show", item, "--json").stdout))


def _bag_file(office: Office, pid: str, name: str) -> bytes:
    return (office.tmp / "received" / pid / "evault" / name).read_bytes()


# -- (a) the chain through two vaults ------------------------------------------------------


def test_the_link_travels_through_two_vaults_and_checks_out(tmp_path: Path,
                                                            database: str | None) -> None:
    o = _office(tmp_path, database)
    first, pid1 = o.send("R", "E", name="copies")
    b_ids = o.open(first)
    r_b, e_b = b_ids[o.ids["R"]], b_ids[o.ids["E"]]

    # The signed statement (version 2) and items.json carry the links, nothing more of O.
    statement = json.loads(_bag_file(o, pid1, "statement.json"))
    assert statement["version"] == 2
    links = {i["id"]: i.get("derived_from") for i in statement["items"]}
    assert links == {
        o.ids["R"]: {"id": o.ids["O"], "sha256": o.sha["O"], "relation": "redacted",
                     "tool": TOOL},
        o.ids["E"]: {"id": o.ids["R"], "sha256": o.sha["R"], "relation": "excerpt"},
    }
    items_json = json.loads(_bag_file(o, pid1, "items.json"))
    assert {i["id"]: i["derived_from"] for i in items_json} == links
    for name in ("statement.json", "items.json", "custody.jsonl"):
        data = _bag_file(o, pid1, name)
        assert TITLE.encode() not in data and NOTE.encode() not in data
        assert b'"statement.txt"' not in data

    # B records the link as signed: A's ids and digests, in the row and the signed event.
    [received] = json.loads(o.b.ok("custody", "show", r_b, "--json").stdout)["events"]
    assert received["action"] == "item.received"
    assert received["details"]["derived_from"] == links[o.ids["R"]]
    assert _shown(o.b, r_b)["derived_from"] == [
        {"id": o.ids["O"], "sha256": o.sha["O"], "relation": "redacted", "tool": TOOL,
         "of": None, "sender": o.a_fp}]
    shown = o.b.ok("items", "show", e_b).stdout.splitlines()
    assert shown[-3:] == [
        f"derived_from: {r_b} (excerpt) <- {o.ids['O']} (redacted, {TOOL}, not held here)",
        "derivatives:  -",
        "note:         -",
    ]
    # The original is not here yet: nothing to check against, and what to do.
    result = o.b("items", "verify-link", r_b)
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", (
        f"evault: item {r_b}: its original {o.ids['O']} (SHA-256 {o.sha['O']}) is not in this "
        "vault; open the package that carries it, or give --original FILE\n"))
    # The excerpt's original came in the same package.
    assert o.b.ok("items", "verify-link", e_b).stdout == (
        f"item {e_b}: excerpt copy of {r_b}: the original's SHA-256 matches ({o.sha['R']})\n")

    # A sends the original later (a statement without links stays version 1).
    second, pid2 = o.send("O", name="original")
    o_b = o.open(second)[o.ids["O"]]
    assert json.loads(_bag_file(o, pid2, "statement.json"))["version"] == 1
    assert o.b.ok("items", "verify-link", r_b).stdout == (
        f"item {r_b}: redacted copy of {o_b}: the original's SHA-256 matches ({o.sha['O']})\n")
    assert json.loads(o.b.ok("items", "verify-link", r_b, "--json").stdout) == {
        "item": r_b, "relation": "redacted", "tool": TOOL, "link_id": o.ids["O"],
        "sender": o.a_fp, "original": o_b, "original_kind": "item", "sha256": o.sha["O"]}
    # Lineage in B: R <- O, both ways, with B's ids now.
    shown = o.b.ok("items", "show", e_b).stdout.splitlines()
    assert shown[-3] == f"derived_from: {r_b} (excerpt) <- {o_b} (redacted, {TOOL})"
    assert _shown(o.b, o_b)["derivatives"] == [
        {"id": r_b, "sha256": o.sha["R"], "relation": "redacted", "tool": TOOL, "of": o_b},
        {"id": e_b, "sha256": o.sha["E"], "relation": "excerpt", "tool": None, "of": r_b}]
    assert o.b.ok("custody", "show", o_b).stdout.splitlines()[-1] == (
        f"derivatives: {r_b} (redacted), {e_b} (excerpt of {r_b})")
    o.b.ok("custody", "verify")
    # In A the same command checks the link this vault signed.
    assert o.a.ok("items", "verify-link", o.ids["R"]).stdout == (
        f"item {o.ids['R']}: redacted copy of {o.ids['O']}: the original's SHA-256 matches "
        f"({o.sha['O']})\n")


def test_a_received_copy_is_forwarded_with_the_local_id_only_once_the_original_matches(
        office: Office) -> None:
    """B's own packages carry R's link as A signed it, until B holds O with the SHA-256
    the link names: then O is named by its id in B, where B's recipients can find it."""
    from vault.service.items import get_item
    from vault.service.packaging.plan import item_link
    from vault.service.vaults import open_vault

    o = office
    r_b = o.open(o.send("R", name="copy")[0])[o.ids["R"]]

    def link_in_b() -> ItemLink | None:
        v = open_vault(o.b.vault)
        try:
            with v.transaction() as session:
                return item_link(session, get_item(session, r_b))
        finally:
            v.close()

    assert link_in_b() == ItemLink(o.ids["O"], o.sha["O"], "redacted", TOOL)
    o_b = o.open(o.send("O", name="original")[0])[o.ids["O"]]
    assert link_in_b() == ItemLink(o_b, o.sha["O"], "redacted", TOOL)


# -- (b) a sender whose signed link is false -----------------------------------------------


def test_a_signed_link_that_the_original_received_later_contradicts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A's software lies when R is ingested: its signed item.ingested event, its statement
    and items.json agree on a false SHA-256 of O, so the package opens; the lie shows only
    when O arrives."""
    o = _office(tmp_path, None, derive=False)
    false = "ab" * 32
    with monkeypatch.context() as lying:
        from vault.service.intake import _Original

        lying.setattr("vault.service.intake._originals",
                      lambda session, rows: {o.ids["O"]: _Original(false, ())})
        o.ids["R"] = _ingest(o.a, o.files["R"], "--derived-from", o.ids["O"], "--relation",
                             "redacted", "--tool", TOOL)["id"]
    r_b = o.open(o.send("R", name="copy")[0])[o.ids["R"]]
    o_b = o.open(o.send("O", name="original")[0])[o.ids["O"]]
    result = o.b("items", "verify-link", r_b)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "", (
        f"evault: item {r_b}: redacted copy of {o.ids['O']}: the link does not match: it names "
        f"SHA-256 {false}, but item {o_b} has {o.sha['O']}; the sender's signed link is "
        "false; ask the sender\n"))
    # An item given explicitly is the user's choice: the message says so.
    result = o.b("items", "verify-link", r_b, "--original", o_b)
    assert (result.exit_code, result.stderr) == (3, (
        f"evault: item {r_b}: redacted copy of {o.ids['O']}: the link does not match: it names "
        f"SHA-256 {false}, but item {o_b} has {o.sha['O']}; {o_b} is not the original the "
        "link names\n"))


# -- (c) original and copy in one package, the link false ----------------------------------


def _set_link_digest(cli: Cli, item: str, sha256: str) -> None:
    """The sender's database altered: the copy's recorded link names another digest."""
    from sqlalchemy import update

    from vault.service.vaults import open_vault
    from vault.store.models import Item

    v = open_vault(cli.vault)
    try:
        with v.transaction() as session:
            session.execute(update(Item).where(Item.id == item).values(
                derived_from_sha256=sha256))
    finally:
        v.close()


def _hostile_send(o: Office, monkeypatch: pytest.MonkeyPatch, *keys: str,
                  name: str) -> tuple[Path, str]:
    """A sender whose database was altered refuses to package (exit 3, its own check of the
    rows against the signed intake events); a hostile sender runs an evault without that
    check, and signs what its database says."""
    args = [arg for key in keys for arg in ("--item", o.ids[key])]
    refused = o.a("package", "create", "--to", "ICC-OTP", *args, "-o",
                  str(o.tmp / "refused.evpkg"))
    assert refused.exit_code == 3 and "its signed intake event does not" in refused.stderr
    with monkeypatch.context() as hostile:
        hostile.setattr("vault.service.packaging.plan._SignedIntake.check",
                        lambda self, item: None)
        return o.send(*keys, name=name)


def test_a_false_link_to_an_original_in_the_same_package_is_refused(
        office: Office, monkeypatch: pytest.MonkeyPatch) -> None:
    o = office
    false = "cd" * 32
    _set_link_digest(o.a, o.ids["R"], false)
    path, pid = _hostile_send(o, monkeypatch, "O", "R", name="both")
    result = o.b("open", str(path), "--out", str(o.tmp / "received"))
    assert (result.exit_code, result.stderr) == (3, (
        f"evault: package {pid}: item {o.ids['R']}: its signed link names {o.ids['O']} with "
        f"SHA-256 {false}, but {o.ids['O']} in this package has SHA-256 {o.sha['O']}; the "
        "sender's link is false; ask the sender for a corrected package\n"))
    assert json.loads(o.b.ok("items", "list", "--json").stdout) == []
    assert not (o.tmp / "received").exists() or list((o.tmp / "received").iterdir()) == []
    # The sender's own check does not trust the altered row either: its signed event says
    # otherwise.
    seq = next(e["seq"] for e in json.loads(o.a.ok("custody", "show", o.ids["R"], "--json")
                                            .stdout)["events"] if e["action"] == "item.ingested")
    result = o.a("items", "verify-link", o.ids["R"])
    assert (result.exit_code, result.stderr) == (3, (
        f"evault: item {o.ids['R']}: its link in this vault's database is not the one its "
        f"signed intake event {seq} names; the database was altered: run `evault custody "
        "verify` and restore the database from a backup\n"))


def test_a_link_the_senders_own_signed_event_contradicts_is_refused(
        office: Office, monkeypatch: pytest.MonkeyPatch) -> None:
    o = office
    false = "cd" * 32
    _set_link_digest(o.a, o.ids["R"], false)
    path, pid = _hostile_send(o, monkeypatch, "R", name="copy")
    [ingested] = [e for e in json.loads(o.a.ok("custody", "show", o.ids["R"], "--json").stdout)[
        "events"] if e["action"] == "item.ingested"]
    result = o.b("open", str(path), "--out", str(o.tmp / "received"))
    assert (result.exit_code, result.stderr) == (3, (
        f"evault: package {pid}: evault/custody.jsonl line 1: item {o.ids['R']}: the signed "
        f"statement's link ({o.ids['O']} {false} redacted) is not the one the sender's "
        f"item.ingested event {ingested['seq']} names ({o.ids['O']} {o.sha['O']} redacted); "
        "the sender's records disagree; ask the sender\n"))
    assert json.loads(o.b.ok("items", "list", "--json").stdout) == []


# -- (d) items.json and the statement disagree ---------------------------------------------


def test_items_json_whose_link_differs_from_the_statement_is_refused(
        office: Office, monkeypatch: pytest.MonkeyPatch) -> None:
    """items.json is covered by the signed tag manifest, so this package is validly signed;
    its link still must be the statement's."""
    from vault.service.packaging import plan

    o = office
    real = plan._item_metadata

    def other_tool(item: Any, bag_path: str, link: ItemLink | None) -> dict[str, Any]:
        entry = real(item, bag_path, link)
        if link is not None:
            entry["derived_from"] = {**entry["derived_from"], "tool": "redactor 9.9"}
        return entry

    with monkeypatch.context() as patched:
        patched.setattr(plan, "_item_metadata", other_tool)
        path, pid = o.send("R", name="copy")
    result = o.b("open", str(path), "--out", str(o.tmp / "received"))
    assert (result.exit_code, result.stderr) == (3, (
        f"evault: package {pid}: item {o.ids['R']}: items.json differs from the signed "
        "statement\n"))


# -- (e) the statement: version 1 still read, version 2 round trip, malformed links -------


def test_a_version_1_statement_written_before_links_is_still_read() -> None:
    """The corpus's valid package was written before version 2 existed: its statement
    (decrypted with the corpus officer's test key) still verifies and reads as version 1."""
    from vault.crypto.age import decrypt
    from vault.formats.package import read_package

    sys.path.insert(0, str(TESTS / "corpus"))
    import make_corpus as mc

    pkg = read_package(TESTS / "corpus" / "packages" / "valid.evpkg")
    plain = io.BytesIO()
    with pkg.open_payload() as src:
        decrypt(src, plain, [mc.OFFICER_AGE])
    with tarfile.open(fileobj=io.BytesIO(plain.getvalue())) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("evault/statement.json"))
        data = tar.extractfile(member).read()  # type: ignore[union-attr]
        sig = tar.extractfile(member.name + ".sig").read()  # type: ignore[union-attr]
    statement = verify_statement(data, sig.decode(), [mc.SENDER.public])
    assert statement.version == 1
    assert all(i.derived_from is None for i in statement.items)
    assert statement.to_bytes() == data


LINK = ItemLink(EV1, "c" * 64, "redacted", TOOL)


def _linked(**changes: Any) -> Statement:
    items = (StatementItem(EV1, f"data/{EV1}/original.pdf", 1234, "c" * 64),
             StatementItem(EV2, f"data/{EV2}/redacted.pdf", 99, "d" * 64, LINK))
    return make_statement(items=items, version=2, **changes)


def test_a_version_2_statement_round_trips() -> None:
    statement = _linked()
    data = statement.to_bytes()
    assert Statement.from_bytes(data) == statement
    obj = json.loads(data)
    assert obj["version"] == 2
    assert "derived_from" not in obj["items"][0]
    assert obj["items"][1]["derived_from"] == {"id": EV1, "sha256": "c" * 64,
                                               "relation": "redacted", "tool": TOOL}
    # Canonical: the link's keys sorted, no tool key without a tool.
    assert b'"derived_from":{"id":"%s","relation":"redacted","sha256":"%s","tool":"%s"}' % (
        EV1.encode(), b"c" * 64, TOOL.encode()) in data
    bare = make_statement(version=2, items=(
        StatementItem(EV2, f"data/{EV2}/x.pdf", 1, "d" * 64,
                      ItemLink(EV1, "c" * 64, "excerpt")),))
    assert b'"derived_from":{"id":"%s","relation":"excerpt","sha256":"%s"},"id"' % (
        EV1.encode(), b"c" * 64) in bare.to_bytes()
    assert Statement.from_bytes(bare.to_bytes()) == bare
    # Signed and verified as any statement.
    from vault.formats.package import sign_statement

    signed, signature = sign_statement(statement, SENDER)
    assert verify_statement(signed, signature, [SENDER.public]) == statement


def _mutate(path: tuple[Any, ...], value: Any = None, delete: bool = False) -> Any:
    def mutate(obj: dict[str, Any]) -> None:
        target: Any = obj
        for p in path[:-1]:
            target = target[p]
        if delete:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return mutate


LINK_AT = ("items", 1, "derived_from")


@pytest.mark.parametrize(("mutate", "says"), [
    pytest.param(_mutate((*LINK_AT, "relation"), "summary"),
                 f"statement item {EV2}: derived_from.relation must be one of redacted, "
                 "translation, transcript, excerpt, transcode", id="relation"),
    pytest.param(_mutate((*LINK_AT, "sha256"), "C" * 64),
                 f"statement item {EV2}: derived_from.sha256 must be a sha-256 digest",
                 id="sha256-uppercase"),
    pytest.param(_mutate((*LINK_AT, "id"), "EV-0123"),
                 f"statement item {EV2}: derived_from.id must be 'EV-'", id="id"),
    pytest.param(_mutate((*LINK_AT, "tool"), "redactor\n2.1"),
                 f"statement item {EV2}: derived_from.tool must be one printable line",
                 id="tool-two-lines"),
    pytest.param(_mutate((*LINK_AT, "tool"), "r" * 129),
                 f"statement item {EV2}: derived_from.tool must be one printable line",
                 id="tool-too-long"),
    pytest.param(_mutate((*LINK_AT, "tool"), None),
                 f"statement item {EV2}: derived_from.tool must be one printable line",
                 id="tool-null"),
    pytest.param(_mutate((*LINK_AT, "title"), "Exhibit 7"),
                 "statement: items[1].derived_from must have exactly the fields id, sha256, "
                 "relation, tool", id="unknown-field"),
    pytest.param(_mutate((*LINK_AT, "relation"), delete=True),
                 "statement: items[1].derived_from must have exactly the fields id, sha256, "
                 "relation, tool", id="missing-relation"),
    pytest.param(_mutate(LINK_AT, None), "statement: items[1].derived_from must be an object",
                 id="null"),
    pytest.param(_mutate((*LINK_AT, "id"), EV2),
                 f"statement item {EV2}: derived_from names the item itself", id="itself"),
    pytest.param(_mutate(("version",), 1),
                 "statement: items[1].derived_from: version 1 has no derived_from",
                 id="link-in-version-1"),
    pytest.param(_mutate(LINK_AT, delete=True),
                 "statement: version 2 carries at least one derived_from; write version 1",
                 id="version-2-without-a-link"),
])
def test_a_malformed_link_is_refused_naming_the_field(mutate: Any, says: str) -> None:
    obj = json.loads(_linked().to_bytes())
    mutate(obj)
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    with pytest.raises(VerificationError) as refused:
        Statement.from_bytes(data)
    message = str(refused.value)
    assert message.startswith(says), message
    assert "\n" not in message


# -- (f) --original FILE -------------------------------------------------------------------


def test_verify_link_against_a_file(office: Office) -> None:
    o = office
    r_b = o.open(o.send("R", name="copy")[0])[o.ids["R"]]
    original = o.files["O"]
    assert o.b.ok("items", "verify-link", r_b, "--original", str(original)).stdout == (
        f"item {r_b}: redacted copy of {o.ids['O']} (file {original}): the original's SHA-256 "
        f"matches ({o.sha['O']})\n")
    other = o.files["E"]
    result = o.b("items", "verify-link", r_b, "--original", str(other))
    assert (result.exit_code, result.stdout, result.stderr) == (3, "", (
        f"evault: item {r_b}: redacted copy of {o.ids['O']}: the link does not match: it names "
        f"SHA-256 {o.sha['O']}, but file {other} has {o.sha['E']}; the file is not the "
        "original the link names\n"))
    missing = o.tmp / "nowhere.txt"
    result = o.b("items", "verify-link", r_b, "--original", str(missing))
    assert (result.exit_code, result.stderr) == (1, (
        f"evault: --original {missing}: no such file or item; give an item id (EV-...) of this "
        "vault or the path of a file\n"))
    # Not a derived copy at all.
    plain = o.open(o.send("O", name="original")[0])[o.ids["O"]]
    result = o.b("items", "verify-link", plain)
    assert (result.exit_code, result.stderr) == (
        1, f"evault: item {plain}: not a derived copy; nothing to verify\n")


def test_a_file_is_hashed_in_chunks_never_read_whole(office: Office,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from vault.service import items

    o = office
    big = o.tmp / "big.bin"
    big.write_bytes(b"\0" * (3 << 20))
    reads: list[int] = []
    real_open = Path.open

    def watched(self: Path, *args: Any, **kwargs: Any) -> Any:
        f = real_open(self, *args, **kwargs)
        if self == big:
            read = f.read
            f.read = lambda n=-1: (reads.append(n), read(n))[1]  # type: ignore[method-assign]
        return f

    monkeypatch.setattr(Path, "open", watched)
    assert items._file_sha256(big) == hashlib.sha256(b"\0" * (3 << 20)).hexdigest()
    assert reads and set(reads) == {1 << 20}


# -- the schema: copies made before 0011 get the digest their link names --------------------


def test_migration_0011_backfills_the_originals_digest(cli: Cli, tmp_path: Path,
                                                       database: str | None) -> None:
    from sqlalchemy import select

    from vault.store import db
    from vault.store.models import Item

    cli.ok("identity", "create", "registry-office")
    original, copy = tmp_path / "o.txt", tmp_path / "c.txt"
    original.write_bytes(b"fictional original\n")
    copy.write_bytes(b"fictional copy\n")
    o = _ingest(cli, original, "--create-case")
    c = _ingest(cli, copy, "--derived-from", o["id"], "--relation", "transcript")
    url = database or f"sqlite:///{cli.vault / 'vault.db'}"
    engine = db.make_engine(url)
    try:
        db.downgrade(engine, "0010")
        db.upgrade(engine)
        with engine.connect() as conn:
            rows = dict(conn.execute(select(Item.id, Item.derived_from_sha256)).all())
    finally:
        engine.dispose()
    assert rows == {o["id"]: None, c["id"]: o["sha256"]}
    assert cli.ok("items", "verify-link", c["id"]).stdout == (
        f"item {c['id']}: transcript copy of {o['id']}: the original's SHA-256 matches "
        f"({o['sha256']})\n")


def test_verify_counts_the_linked_items(office: Office) -> None:
    o = office
    path, pid = o.send("O", "R", "E", name="all")
    out = o.b.ok("verify", str(path), "--as", "icc-officer").stdout
    assert (f"package {pid} from registry-office for ICC-OTP, envelope, payload, bag, "
            "statement, 3 item(s) (2 derived, linked to the original by id and SHA-256) and 3 "
            "custody event(s) verified") in out, out
    plain, pid = o.send("O", name="plain")
    out = o.b.ok("verify", str(plain), "--as", "icc-officer").stdout
    assert "statement, 1 item(s) and 1 custody event(s) verified" in out, out


def test_a_received_redacted_copy_stands_in_for_a_received_original(office: Office) -> None:
    """B received an original and its redacted copy from A; B's rule lets UN-HRMMU have only
    the redacted copy: B's package to UN-HRMMU takes the copy A's signed link names."""
    o = office
    o.a.ok("rule", "add", "witness-identity", "ICC-OTP")
    secret, redacted = o.tmp / "w.txt", o.tmp / "w-Red.txt"
    secret.write_bytes(b"fictional statement naming witness W-9\n")
    redacted.write_bytes(b"fictional statement naming witness [REDACTED]\n")
    o.ids["W"] = _ingest(o.a, secret, "--label", "witness-identity")["id"]
    o.ids["WR"] = _ingest(o.a, redacted, "--derived-from", o.ids["W"], "--relation",
                          "redacted")["id"]
    received = o.open(o.send("W", "WR", name="both")[0])
    w_b, wr_b = received[o.ids["W"]], received[o.ids["WR"]]
    c = Cli(o.tmp / "c")
    c.init()
    c.ok("identity", "create", "hrmmu-officer")
    c.ok("identity", "export", "-o", str(o.tmp / "c.card.json"))
    o.b.ok("body", "add", "UN-HRMMU", "--name", "Fictional UN-HRMMU")
    o.b.ok("body", "key", "add", "UN-HRMMU", "--card", str(o.tmp / "c.card.json"))
    o.b.ok("rule", "add", "witness-identity", "UN-HRMMU", "--relation", "redacted")
    result = o.b("package", "create", "--to", "UN-HRMMU", "--item", w_b, "-o",
                 str(o.tmp / "un.evpkg"), "--json")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == (f"evault: item {w_b}: its redacted copy {wr_b} goes to UN-HRMMU "
                             "instead, as the release rules ask\n")
    assert json.loads(result.stdout)["item_ids"] == [wr_b]
