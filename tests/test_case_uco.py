"""The CASE/UCO export (issue 22, first part): `evault export-case-uco ITEM|--case CASE -o
FILE.jsonld` writes items as uco-observable:File and their custody events as
InvestigativeActions with ProvenanceRecords; `case_validate` of case-utils, at a pinned CASE
version, must find the output conformant, and must be able to find a document not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli

CASE = "UA-2026-0042"
#: The CASE release the export is written for: case_validate is told it, not its default.
CASE_VERSION = "case-1.5.0"


def case_validate(path: Path) -> subprocess.CompletedProcess[str]:
    """``case_validate`` of the test extras over one file, at :data:`CASE_VERSION`."""
    tool = Path(sys.executable).with_name("case_validate")
    if not tool.exists():
        pytest.skip("case_validate (case-utils, a test extra) is not installed: "
                    "pip install -e '.[test]'")
    return subprocess.run([str(tool), "--built-version", CASE_VERSION, str(path)],
                          capture_output=True, text=True, check=False, timeout=300)


def assert_conforms(path: Path) -> None:
    proc = case_validate(path)
    assert proc.returncode == 0 and "Conforms: True" in proc.stdout, proc.stdout + proc.stderr


def _ingest(cli: Cli, tmp_path: Path, name: str, content: bytes, *args: str) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    [row] = json.loads(cli.ok("ingest", str(path), "--case", CASE, "--json", *args).stdout)
    return str(row["id"])


@pytest.fixture
def filled(cli: Cli, tmp_path: Path) -> tuple[Cli, str, str]:
    """A vault with one identity and a case of two items: one exported once (three events),
    one with legacy digests and sealed metadata that must stay out of the export."""
    return fill(cli, tmp_path)


def fill(cli: Cli, tmp_path: Path) -> tuple[Cli, str, str]:
    """What :func:`filled` makes, in ``cli``'s vault."""
    cli.ok("identity", "create", "registry-office")
    first = _ingest(cli, tmp_path, "statement.txt", b"fictional witness statement\n",
                    "--create-case")
    second = _ingest(cli, tmp_path, "photo 1.jpg", b"\xff\xd8fictional photo",
                     "--also-digest", "md5,sha1", "--title", "Fictional secret title",
                     "--description", "Fictional secret description",
                     "--source", "Fictional secret source", "--location", "Fictional place")
    cli.ok("items", "export", first, "-o", str(tmp_path / "copy.txt"), "--reason", "review")
    return cli, first, second


def _nodes(path: Path, kind: str) -> list[dict[str, Any]]:
    return [n for n in json.loads(path.read_text())["@graph"] if n["@type"] == kind]


def test_one_item_conforms_to_case_and_holds_its_chain(
    filled: tuple[Cli, str, str], tmp_path: Path
) -> None:
    cli, first, _ = filled
    out = tmp_path / "item.jsonld"
    result = cli.ok("export-case-uco", first, "-o", str(out))
    assert result.stderr == f"evault: wrote 1 item(s) and 3 custody event(s) to {out}\n"
    assert_conforms(out)

    events = json.loads(cli.ok("custody", "show", first, "--json").stdout)["events"]
    actions = sorted(_nodes(out, "case-investigation:InvestigativeAction"),
                     key=lambda n: int(n["uco-core:description"].split()[2]))
    assert [a["uco-core:name"] for a in actions] == [e["action"] for e in events] == [
        "item.ingested", "item.export.started", "item.exported"]
    assert [a["uco-action:startTime"] for a in actions] == [
        {"@type": "xsd:dateTime", "@value": e["time"]} for e in events]
    assert [a["uco-core:description"].rsplit(" ", 1)[1] for a in actions] == [
        e["leaf_hash"] for e in events]
    # Each action after the first was informed by the one before: the chain of the log.
    assert "case-investigation:wasInformedBy" not in actions[0]
    assert [a["case-investigation:wasInformedBy"] for a in actions[1:]] == [
        [{"@id": actions[0]["@id"]}], [{"@id": actions[1]["@id"]}]]

    [file] = _nodes(out, "uco-observable:File")
    [tool] = _nodes(out, "uco-tool:Tool")
    [identity] = _nodes(out, "uco-identity:Identity")
    records = _nodes(out, "case-investigation:ProvenanceRecord")
    assert file["@id"].startswith("kb:evault-item-" + first + "-")
    assert tool["uco-core:name"] == "evault"
    assert identity["uco-core:name"] == "registry-office"
    for action in actions:
        assert action["uco-action:performer"] == {"@id": identity["@id"]}
        assert action["uco-action:instrument"] == [{"@id": tool["@id"]}]
        assert action["uco-action:object"] == [{"@id": file["@id"]}]
    assert sorted(r["@id"] for r in records) == sorted(
        a["uco-action:result"][0]["@id"] for a in actions)
    assert {r["case-investigation:exhibitNumber"] for r in records} == {first}
    [investigation] = _nodes(out, "case-investigation:Investigation")
    assert investigation["uco-core:name"] == CASE


def test_a_whole_case_conforms_and_keeps_sealed_metadata_out(
    filled: tuple[Cli, str, str], tmp_path: Path
) -> None:
    cli, first, second = filled
    out = tmp_path / "case.jsonld"
    cli.ok("export-case-uco", "--case", CASE, "-o", str(out))
    assert_conforms(out)

    text = out.read_text()
    assert "Fictional secret" not in text and "Fictional place" not in text
    items = {i["id"]: i for i in json.loads(cli.ok("items", "list", "--json").stdout)}
    files = {f["uco-core:name"]: f for f in _nodes(out, "uco-observable:File")}
    assert sorted(files) == sorted([first, second])
    facets = {f["@type"]: f for f in files[second]["uco-core:hasFacet"]}
    assert facets["uco-observable:FileFacet"]["uco-observable:fileName"] == "photo 1.jpg"
    hashes = {h["uco-types:hashMethod"]: h["uco-types:hashValue"]
              for h in facets["uco-observable:ContentDataFacet"]["uco-observable:hash"]}
    assert sorted(hashes) == ["MD5", "SHA1", "SHA256"]
    assert hashes["SHA256"] == {"@type": "xsd:hexBinary", "@value": items[second]["sha256"]}
    assert len(_nodes(out, "case-investigation:InvestigativeAction")) == 4

    # The same vault gives the same bytes.
    again = tmp_path / "again.jsonld"
    cli.ok("export-case-uco", "--case", CASE, "-o", str(again))
    assert again.read_bytes() == out.read_bytes()


def test_the_validator_finds_a_broken_document(sqlite_cli: Cli, tmp_path: Path) -> None:
    """A hash value typed as a plain string and an action with two performers: case_validate
    must say the document does not conform (so a pass above means something). On SQLite
    only: its subject is the validator, which reads a file, not the database (each run of
    it is about 3 s)."""
    cli, first, _ = fill(sqlite_cli, tmp_path)
    out = tmp_path / "item.jsonld"
    cli.ok("export-case-uco", first, "-o", str(out))
    doc = json.loads(out.read_text())
    for node in doc["@graph"]:
        if node["@type"] == "uco-observable:File":
            for facet in node["uco-core:hasFacet"]:
                for h in facet.get("uco-observable:hash", []):
                    h["uco-types:hashValue"] = h["uco-types:hashValue"]["@value"]
        if node["@type"] == "case-investigation:InvestigativeAction":
            node["uco-action:performer"] = [node["uco-action:performer"],
                                            {"@id": "kb:someone-else"}]
    broken = tmp_path / "broken.jsonld"
    broken.write_text(json.dumps(doc))
    proc = case_validate(broken)
    assert proc.returncode != 0 and "Conforms: False" in proc.stdout, proc.stdout
    assert "hashValue" in proc.stdout and "performer" in proc.stdout


def test_refusals_are_one_line_with_their_exit_code(sqlite_cli: Cli, tmp_path: Path) -> None:
    cli = sqlite_cli
    out = str(tmp_path / "x.jsonld")
    cases = [
        (["EV-000000000000", "-o", out], 1,
         "evault: item EV-000000000000: not found; see `evault items list`\n"),
        (["--case", "NO-SUCH-CASE", "-o", out], 1,
         "evault: case NO-SUCH-CASE: not found; see `evault case list`\n"),
        (["EV-000000000000", "--case", CASE, "-o", out], 2,
         "evault: export-case-uco: give ITEM or --case CASE, not both\n"),
        (["-o", out], 2, "evault: export-case-uco: give an ITEM or --case CASE\n"),
        (["EV-000000000000", "-o", str(tmp_path / "no-such" / "x.jsonld")], 1,
         f"evault: export-case-uco: folder {tmp_path / 'no-such'} does not exist; create it "
         "or choose another -o\n"),
    ]
    for args, code, stderr in cases:
        result = cli("export-case-uco", *args)
        assert (result.exit_code, result.stderr) == (code, stderr), args
        assert result.stdout == ""
    assert not (tmp_path / "x.jsonld").exists()


def test_the_export_imports_no_rdf_library(filled: tuple[Cli, str, str], tmp_path: Path) -> None:
    """rdflib and pyshacl (test extras) cost every command: evault writes JSON-LD with json."""
    cli, first, _ = filled
    code = (
        "import sys\n"
        "from vault.cli import cli\n"
        "try:\n"
        "    cli.main(sys.argv[1:], prog_name='evault')\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "print([m for m in ('rdflib', 'pyshacl', 'case_utils') if m in sys.modules])\n"
    )
    args = ["export-case-uco", first, "-o", str(tmp_path / "i.jsonld"), "--vault", str(cli.vault)]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"
