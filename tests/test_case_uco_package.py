"""The CASE/UCO document inside a package (issue 22): `package create --with-case-uco` (and
`export --with-case-uco`) put `evault/case-uco.jsonld` in the bag, listed in its tag
manifest and so covered by the sender's signed statement; it describes exactly the
package's items and the custody events of its excerpt, and conforms to CASE 1.5.0. A
package without the flag holds the same files as before, and one with it opens and
verifies with the readers as they were (they accept any tag file the manifest lists)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, build_template, copy_template
from test_case_uco import assert_conforms

CASE = "UA-2026-0042"
OTHER = "UA-2026-0099"
CASE_UCO = "evault/case-uco.jsonld"
#: Every file of a package's bag outside data/ before --with-case-uco existed.
TAG_FILES = ["bag-info.txt", "bagit.txt", "evault/custody.jsonl", "evault/items.json",
             "evault/statement.json", "evault/statement.json.sig", "manifest-sha256.txt",
             "tagmanifest-sha256.txt"]


def _build(tmp: Path) -> None:
    """The office (a case of two items, one of them exported once, and an item of another
    case) and ICC-OTP, which knows the office as a contact."""
    office = Cli(tmp / "office")
    office.init()
    office.ok("identity", "create", "registry-office")
    office.ok("identity", "create", "fictional-clerk-alice")
    office.ok("identity", "export", "registry-office", "-o", str(tmp / "office.card.json"))
    icc = Cli(tmp / "icc")
    icc.init()
    icc.ok("identity", "create", "icc-officer")
    icc.ok("identity", "export", "icc-officer", "-o", str(tmp / "icc.card.json"))
    office.ok("body", "add", "ICC-OTP", "--name", "Fictional ICC-OTP")
    office.ok("body", "key", "add", "ICC-OTP", "--card", str(tmp / "icc.card.json"))
    icc.ok("contact", "add", str(tmp / "office.card.json"))
    ids = {}
    for name, content, case, args in (
        ("statement W-1.txt", b"fictional witness statement\n", CASE, ["--create-case"]),
        ("photo 1.jpg", b"\xff\xd8fictional photo", CASE, ["--also-digest", "md5,sha1"]),
        ("other.txt", b"fictional other case\n", OTHER,
         ["--create-case", "--as", "fictional-clerk-alice"]),
    ):
        path = tmp / name
        path.write_bytes(content)
        [row] = json.loads(office.ok("ingest", str(path), "--case", case, "--json",
                                     "--title", "Fictional secret title", *args).stdout)
        ids[name] = row["id"]
    office.ok("items", "export", ids["statement W-1.txt"], "-o", str(tmp / "copy.txt"),
              "--reason", "review")
    (tmp / "ids.json").write_text(json.dumps(ids))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_template(tmp_path_factory, "case-uco-package", _build)


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.office = Cli(tmp / "office")
        self.icc = Cli(tmp / "icc")
        self.ids: dict[str, str] = json.loads((tmp / "ids.json").read_text())

    def package(self, name: str, *args: str) -> tuple[Path, str]:
        path = self.tmp / f"{name}.evpkg"
        pid = json.loads(self.office.ok("package", "create", "--to", "ICC-OTP", "-o", str(path),
                                        "--json", *args).stdout)["id"]
        return path, pid

    def bag(self, path: Path) -> dict[str, bytes]:
        """The files of the package's bag, decrypted with ICC-OTP's key (bag-relative)."""
        from vault.crypto.age import AgeIdentity, decrypt
        from vault.service.identities import current_key, get_identity, load_keypair
        from vault.service.vaults import open_vault

        with tarfile.open(path) as outer:
            payload = outer.extractfile("payload.age")
            assert payload is not None
            sealed = payload.read()
        v = open_vault(self.icc.vault)
        with v.transaction() as session:
            pair = load_keypair(v, current_key(get_identity(session, None)))
        v.close()
        plain = io.BytesIO()
        decrypt(io.BytesIO(sealed), plain, [AgeIdentity.from_raw(pair.age.raw())])
        files = {}
        with tarfile.open(fileobj=io.BytesIO(plain.getvalue())) as tar:
            for member in tar.getmembers():
                if member.isfile():
                    data = tar.extractfile(member)
                    assert data is not None
                    files[member.name.split("/", 1)[1]] = data.read()
        return files


@pytest.fixture
def world(template: Path, tmp_path: Path) -> World:
    copy_template(template, tmp_path)
    return World(tmp_path)


def _tag_manifest(bag: dict[str, bytes]) -> dict[str, str]:
    lines = bag["tagmanifest-sha256.txt"].decode().splitlines()
    return {path: digest for digest, path in (line.split(maxsplit=1) for line in lines)}


def _nodes(doc: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [n for n in doc["@graph"] if n["@type"] == kind]


def test_without_the_flag_the_bag_holds_the_same_files_as_before(world: World) -> None:
    path, _ = world.package("plain", "--case", CASE)
    bag = world.bag(path)
    assert sorted(name for name in bag if not name.startswith("data/")) == TAG_FILES
    assert CASE_UCO not in _tag_manifest(bag)


def test_with_the_flag_the_bag_carries_a_signed_conformant_case_uco_document(
    world: World,
) -> None:
    path, _ = world.package("uco", "--case", CASE, "--with-case-uco")
    bag = world.bag(path)
    assert sorted(name for name in bag if not name.startswith("data/")) == sorted(
        [*TAG_FILES, CASE_UCO])
    # Listed in the tag manifest, whose digest the sender's signed statement names.
    data = bag[CASE_UCO]
    assert _tag_manifest(bag)[CASE_UCO] == hashlib.sha256(data).hexdigest()
    statement = json.loads(bag["evault/statement.json"])
    assert statement["tagmanifest_sha256"] == hashlib.sha256(
        bag["tagmanifest-sha256.txt"]).hexdigest()
    out = world.tmp / "case-uco.jsonld"
    out.write_bytes(data)
    assert_conforms(out)

    doc = json.loads(data)
    items = json.loads(bag["evault/items.json"])
    package_items = sorted(i["id"] for i in items)
    assert package_items == sorted([world.ids["statement W-1.txt"], world.ids["photo 1.jpg"]])
    files = _nodes(doc, "uco-observable:File")
    assert sorted(f["uco-core:name"] for f in files) == package_items
    by_id = {i["id"]: i for i in items}
    for node in files:
        item = by_id[node["uco-core:name"]]
        facet = next(f for f in node["uco-core:hasFacet"]
                     if f["@type"] == "uco-observable:ContentDataFacet")
        sha256 = next(h["uco-types:hashValue"]["@value"] for h in facet["uco-observable:hash"]
                      if h["uco-types:hashMethod"] == "SHA256")
        assert sha256 == item["sha256"]
    # The events are exactly those of the custody excerpt: the seq and leaf of each.
    excerpt = [json.loads(line) for line in bag["evault/custody.jsonl"].splitlines()]
    actions = _nodes(doc, "case-investigation:InvestigativeAction")
    seqs = sorted(int(a["uco-core:description"].split()[2]) for a in actions)
    assert seqs == sorted(e["seq"] for e in excerpt)
    assert sorted(a["uco-core:name"] for a in actions) == [
        "item.exported", "item.ingested", "item.ingested"]  # no item.export.started
    [case] = _nodes(doc, "case-investigation:Investigation")
    assert case["uco-core:name"] == CASE
    assert b"Fictional secret title" not in data


def test_a_package_with_the_document_opens_and_verifies_and_keeps_it(world: World) -> None:
    path, pid = world.package("uco", "--case", CASE, "--with-case-uco")
    verified = world.icc.ok("verify", str(path), "--as", "icc-officer")
    assert verified.stdout.startswith(f"OK: {path}")
    out = world.tmp / "received"
    world.icc.ok("open", str(path), "--out", str(out))
    kept = out / pid / CASE_UCO
    assert kept.read_bytes() == world.bag(path)[CASE_UCO]
    assert len(json.loads(world.icc.ok("items", "list", "--json").stdout)) == 2


def test_items_of_two_cases_are_named_without_an_investigation(world: World) -> None:
    path, _ = world.package("two", "--item", world.ids["photo 1.jpg"], "--item",
                            world.ids["other.txt"], "--with-case-uco")
    doc = json.loads(world.bag(path)[CASE_UCO])
    assert sorted(f["uco-core:name"] for f in _nodes(doc, "uco-observable:File")) == sorted(
        [world.ids["photo 1.jpg"], world.ids["other.txt"]])
    assert _nodes(doc, "case-investigation:Investigation") == []
    # Only the sender is named; the clerk who ingested other.txt is a key, as in the excerpt.
    identities = _nodes(doc, "uco-identity:Identity")
    assert sorted(i.get("uco-core:name", "") for i in identities) == ["", "registry-office"]
    assert b"alice" not in world.bag(path)[CASE_UCO]
    out = world.tmp / "two.jsonld"
    out.write_bytes(world.bag(path)[CASE_UCO])
    assert_conforms(out)


def _tampering(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """A bag whose case-uco.jsonld is not the one its tag manifest lists: as if changed after
    the sender signed (the manifest keeps the digest of the document as built)."""
    from vault.formats.bagit import BagWriter

    real = BagWriter._add_bytes

    def add_bytes(self: BagWriter, rel: str, data: bytes, *, in_tagmanifest: bool) -> str:
        if rel != CASE_UCO:
            return real(self, rel, data, in_tagmanifest=in_tagmanifest)
        digest = hashlib.sha256(data).hexdigest()
        real(self, rel, data.replace(b"item.ingested", b"item.forged!!"),
             in_tagmanifest=in_tagmanifest)
        self._tag_digests[rel] = digest
        return digest

    def undo() -> None:
        monkeypatch.setattr(BagWriter, "_add_bytes", real)

    monkeypatch.setattr(BagWriter, "_add_bytes", add_bytes)
    return undo


def test_a_changed_document_is_refused(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    undo = _tampering(monkeypatch)
    path, _ = world.package("tampered", "--case", CASE, "--with-case-uco")
    undo()
    result = world.icc("verify", str(path), "--as", "icc-officer")
    assert result.exit_code == 3, result.stdout + result.stderr
    assert f"{CASE_UCO}: sha256 " in result.stdout
    assert "in tagmanifest-sha256.txt" in result.stdout
    out = world.tmp / "out"
    opened = world.icc("open", str(path), "--out", str(out))
    assert opened.exit_code == 3
    assert not out.exists() or list(out.iterdir()) == []


def test_export_with_the_flag_puts_the_document_in_each_new_package(world: World) -> None:
    outbox = world.tmp / "outbox"
    outbox.mkdir()
    world.office.ok("export", "--to", "ICC-OTP", "--case", CASE, "--outbox", str(outbox),
                    "--with-case-uco")
    [path] = list(outbox.glob("*.evpkg"))
    doc = json.loads(world.bag(path)[CASE_UCO])
    assert len(_nodes(doc, "uco-observable:File")) == 2
    world.icc.ok("verify", str(path), "--as", "icc-officer")
