"""Derived copies linked to their originals (issue 19, first part): `ingest --derived-from`
records the link in the signed `item.ingested` event; `items show` and `custody show` list
the chain both ways; the note is sealed at rest and never logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Cli
from test_robustness import assert_refusal

CASE = "UA-2026-0042"


def _ingest(cli: Cli, path: Path, *args: str) -> dict[str, str]:
    [row] = json.loads(cli.ok("ingest", str(path), "--case", CASE, "--json", *args).stdout)
    return dict(row)


@pytest.fixture
def chain(sqlite_cli: Cli, tmp_path: Path) -> tuple[Cli, dict[str, str], dict[str, str],
                                                    dict[str, str]]:
    cli = sqlite_cli
    cli.ok("identity", "create", "registry-office")
    files = {}
    for name, text in (("statement.txt", b"fictional statement naming a witness\n"),
                       ("statement-Red.txt", b"fictional statement naming [REDACTED]\n"),
                       ("excerpt.txt", b"fictional excerpt [REDACTED]\n")):
        files[name] = tmp_path / name
        files[name].write_bytes(text)
    original = _ingest(cli, files["statement.txt"], "--create-case")
    redacted = _ingest(cli, files["statement-Red.txt"], "--derived-from", original["id"],
                       "--relation", "redacted", "--tool", "redactor 2.1", "--note",
                       "Fictional witness name removed by the registry")
    excerpt = _ingest(cli, files["excerpt.txt"], "--derived-from", redacted["id"],
                      "--relation", "excerpt")
    return cli, original, redacted, excerpt


def test_the_signed_event_names_the_original_by_id_and_digest(chain: tuple[Cli, dict[str, str],
                                                                   dict[str, str],
                                                                   dict[str, str]]) -> None:
    cli, original, redacted, excerpt = chain
    events = json.loads(cli.ok("custody", "show", redacted["id"], "--json").stdout)
    [ingested] = [e for e in events["events"] if e["action"] == "item.ingested"]
    assert ingested["details"]["derived_from"] == {
        "id": original["id"], "sha256": original["sha256"], "relation": "redacted",
        "tool": "redactor 2.1"}
    # The note is the office's own text: sealed at rest, never in the log.
    assert "Fictional witness name" not in json.dumps(events)
    assert b"Fictional witness name" not in (cli.vault / "vault.db").read_bytes()
    cli.ok("custody", "verify")
    # Both ways, in custody show.
    assert events["derivatives"] == [{"id": excerpt["id"], "sha256": excerpt["sha256"],
                                      "relation": "excerpt", "tool": None,
                                      "of": redacted["id"]}]
    lines = cli.ok("custody", "show", original["id"]).stdout.splitlines()
    assert lines[-1] == (f"derivatives: {redacted['id']} (redacted), {excerpt['id']} "
                         f"(excerpt of {redacted['id']})")


def test_items_show_lists_the_chain_both_ways(chain: tuple[Cli, dict[str, str],
                                                         dict[str, str],
                                                         dict[str, str]]) -> None:
    cli, original, redacted, excerpt = chain
    shown = cli.ok("items", "show", excerpt["id"]).stdout.splitlines()
    assert shown[-3:] == [
        f"derived_from: {redacted['id']} (excerpt) <- {original['id']} (redacted, redactor 2.1)",
        "derivatives:  -",
        "note:         -",
    ]
    middle = json.loads(cli.ok("items", "show", redacted["id"], "--json").stdout)
    assert middle["derived_from"] == [{"id": original["id"], "sha256": original["sha256"],
                                       "relation": "redacted", "tool": "redactor 2.1",
                                       "of": None}]
    assert [d["id"] for d in middle["derivatives"]] == [excerpt["id"]]
    assert middle["note"] == "Fictional witness name removed by the registry"
    # An item neither copied nor a copy shows as it always did.
    plain = Path(cli.vault.parent / "plain.txt")
    plain.write_bytes(b"fictional unrelated note\n")
    item = _ingest(cli, plain)
    assert "derived_from" not in json.loads(cli.ok("items", "show", item["id"], "--json")
                                            .stdout)


def test_bad_derivations_are_refused_before_anything_is_read(sqlite_cli: Cli,
                                                             tmp_path: Path) -> None:
    cli = sqlite_cli
    cli.ok("identity", "create", "registry-office")
    path = tmp_path / "copy.txt"
    path.write_bytes(b"fictional copy\n")
    assert_refusal(cli("ingest", str(path), "--case", CASE, "--create-case", "--derived-from",
                       "EV-0123456789AB", "--relation", "redacted"), 1,
                   "--derived-from EV-0123456789AB: no such item in this vault; see `evault "
                   "items list`")
    result = cli("ingest", str(path), "--case", CASE, "--derived-from", "EV-0123456789AB")
    assert result.exit_code == 2
    assert result.stderr.endswith(
        "Error: --derived-from ITEM and --relation RELATION go together\n")
    result = cli("ingest", str(path), "--case", CASE, "--note", "x")
    assert result.exit_code == 2
    assert result.stderr.endswith(
        "Error: --tool and --note describe a derived copy: give --derived-from\n")
    result = cli("ingest", str(path), "--case", CASE, "--derived-from", "EV-0123456789AB",
                 "--relation", "summary")
    assert result.exit_code == 2 and "'summary' is not one of" in result.stderr
    assert json.loads(cli.ok("items", "list", "--json").stdout) == []
