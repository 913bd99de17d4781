"""Names, titles and card fields come from senders and bodies: what people read of them on a
terminal, in a spreadsheet or in a Markdown form cannot act as anything but text.

Each hostile value carries a screen clear (ESC[2J), an OSC 8 hyperlink, a carriage return
(which would let the rest of a line overwrite its start) and U+202E (which would show
"gpj.exe" as "exe.jpg"). ``--json`` keeps the exact value.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from conftest import Cli

HOSTILE = "a\x1b[2J\x1b]8;;mailto:x@evil.example\x07link\x1b]8;;\x07\rb\u202egpj.exe"
SHOWN = "a\\x1b[2J\\x1b]8;;mailto:x@evil.example\\x07link\\x1b]8;;\\x07\\x0db[U+202E]gpj.exe"
CASE = "UA-2026-0042"


def _no_controls(text: str) -> None:
    assert not any(ch in text for ch in "\x1b\x07\r\u202e"), repr(text)


def _vault(tmp: Path, name: str) -> tuple[Cli, str, Path]:
    """A vault named after its one identity (test_opening's helper)."""
    from test_opening import _vault as vault_with_identity

    return vault_with_identity(tmp, name, name)


def _ingest(cli: Cli, tmp: Path, name: str, **fields: str) -> str:
    folder = tmp / "evidence"
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(b"fictional evidence\n")
    args = [f"--{k}={v}" for k, v in fields.items()]
    out = cli.ok("ingest", str(folder / name), "--case", CASE, "--create-case", *args, "--json")
    return str(json.loads(out.stdout)[0]["id"])


def test_items_list_and_show_escape_names_titles_and_sources(tmp_path: Path) -> None:
    office, _fp, _card = _vault(tmp_path, "registry-office")
    item = _ingest(office, tmp_path, HOSTILE, title=HOSTILE, source=HOSTILE)
    listed = office.ok("items", "list").stdout
    _no_controls(listed)
    assert f"  {SHOWN}  19  " in listed.splitlines()[1]
    shown = office.ok("items", "show", item).stdout
    _no_controls(shown)
    for field in ("name", "title", "source"):
        assert f"\n{field + ':':<13} {SHOWN}\n" in shown
    assert json.loads(office.ok("items", "show", item, "--json").stdout)["title"] == HOSTILE


def test_body_list_escapes_the_body_name(tmp_path: Path) -> None:
    office, _fp, _card = _vault(tmp_path, "registry-office")
    office.ok("body", "add", "ICC-OTP", "--name", HOSTILE)
    listed = office.ok("body", "list").stdout
    _no_controls(listed)
    assert listed.splitlines()[1].startswith(f"ICC-OTP  {SHOWN}  0  ")
    added = office.ok("body", "add", "UA-OPG", "--name", HOSTILE)
    _no_controls(added.stdout + added.stderr)
    assert json.loads(office.ok("body", "list", "--json").stdout)[0]["name"] == HOSTILE


def test_contact_list_escapes_card_fields(tmp_path: Path) -> None:
    from vault.crypto.age import AgeIdentity
    from vault.crypto.keys import SigningKey
    from vault.formats.card import make_card

    icc, _fp, _card = _vault(tmp_path, "icc-officer")
    key = SigningKey.generate()
    card = tmp_path / "hostile.card.json"
    card.write_text(make_card(HOSTILE, key, str(AgeIdentity.generate().recipient),
                              created_at="2026-11-28T09:00:00Z", org=HOSTILE))
    added = icc.ok("contact", "add", str(card), "--fingerprint", key.public.fingerprint)
    _no_controls(added.stdout + added.stderr)
    listed = icc.ok("contact", "list").stdout
    _no_controls(listed)
    assert listed.splitlines()[1].startswith(f"{SHOWN}  {SHOWN}  {key.public.fingerprint}  ")
    shown = icc.ok("contact", "show", key.public.fingerprint).stdout
    _no_controls(shown)
    assert [line.split(":", 1)[1].strip() for line in shown.splitlines()
            if line.startswith(("name:", "org:"))] == [SHOWN, SHOWN]
    assert json.loads(icc.ok("contact", "list", "--json").stdout)[0]["org"] == HOSTILE
    again = icc("contact", "add", str(card), "--fingerprint", key.public.fingerprint)
    assert (again.exit_code, again.stderr) == (
        1, f"evault: contact {SHOWN}: key {key.public.fingerprint} is known already\n")


def test_open_table_escapes_the_senders_file_names(tmp_path: Path) -> None:
    office, office_fp, office_card = _vault(tmp_path, "registry-office")
    icc, _icc_fp, icc_card = _vault(tmp_path, "icc-officer")
    office.ok("body", "add", "ICC-OTP", "--name", "Fictional ICC-OTP")
    office.ok("body", "key", "add", "ICC-OTP", "--card", str(icc_card))
    icc.ok("contact", "add", str(office_card), "--fingerprint", office_fp)
    _ingest(office, tmp_path, HOSTILE, title=HOSTILE)
    package = tmp_path / "icc.evpkg"
    office.ok("package", "create", "--to", "ICC-OTP", "--case", CASE, "-o", str(package))
    opened = icc.ok("open", str(package), "--out", str(tmp_path / "received"))
    _no_controls(opened.stdout)
    assert f"  {SHOWN}  19  " in opened.stdout.splitlines()[1]


def test_csv_neutralises_formulas_but_not_numbers(tmp_path: Path) -> None:
    office, _fp, _card = _vault(tmp_path, "registry-office")
    formula = '=HYPERLINK("evil.example";"open me")'
    for name in (formula, "+1 caller.txt", "-list.txt", "@sum.txt"):
        _ingest(office, tmp_path, name)
    rows = list(csv.DictReader(io.StringIO(office.ok("items", "list", "--csv").stdout)))
    assert sorted(r["name"] for r in rows) == [
        "'+1 caller.txt", "'-list.txt", "'=HYPERLINK(\"evil.example\";\"open me\")",
        "'@sum.txt"]
    assert {r["size"] for r in rows} == {"19"}
    assert '=HYPERLINK' in office.ok("items", "list", "--json").stdout


def test_csv_keeps_negative_numbers_as_numbers() -> None:
    from vault.render import to_csv

    assert to_csv([{"n": -5, "x": 1.5, "t": "-5", "z": None}], ["n", "x", "t", "z"]) == (
        "n,x,t,z\n-5,1.5,'-5,\n")


def test_markdown_custody_form_escapes_pipes_newlines_and_html(tmp_path: Path) -> None:
    office, _fp, _card = _vault(tmp_path, "registry-office")
    title = "a | b\n| forged | row |<img src=x onerror=alert(1)>&"
    item = _ingest(office, tmp_path, "note.txt", title=title, source="x\x1b[2J")
    form = office.ok("report", "custody", item).stdout
    _no_controls(form)
    assert ("- **Title**: a \\| b\\\\x0a\\| forged \\| row \\|"
            "&lt;img src=x onerror=alert(1)&gt;&amp;\n") in form
    assert "- **Source**: x\\\\x1b[2J\n" in form
    assert "<img" not in form and "\n| forged" not in form



def test_package_sheet_markdown_cells_escape_controls() -> None:
    # The sheet's values are ids, digests and fingerprints today; a cell still shows any
    # control character escaped, as every other human output does.
    from vault.render.sheet import _md_cell

    assert _md_cell("a\x1b[2J\nb|c`d") == "`a\\x1b[2J\\x0ab\\|c'd`"


def test_the_printable_fast_path_lets_through_nothing_the_escaping_would_change() -> None:
    """terminal_safe returns a printable text as it is, without its pattern: sound only if no
    character the pattern matches is printable. Checked over every code point."""
    from vault.render.text import _UNSAFE

    matched = [chr(c) for c in range(0x110000) if _UNSAFE.match(chr(c))]
    assert len(matched) > 2000  # the surrogates alone are 2048: the pattern is the real one
    assert [ch for ch in matched if ch.isprintable()] == []


#: What JSON's own encoding (``ensure_ascii=False``) wrote as it is: a one-byte CSI (U+009B),
#: DEL, a line separator and bidi controls (an override and an isolate).
HOSTILE_JSON = "a\x9b2Jb\x7fc\u2028d\u202egpj.exe\u2066e"
RAW = "\x9b\x7f\u2028\u202e\u2066"


def _no_raw(text: str) -> None:
    assert not any(ch in text for ch in RAW), repr(text)


def test_json_writes_what_a_terminal_acts_on_as_escapes_and_keeps_the_value(
        tmp_path: Path) -> None:
    """``--json`` and ``--jsonl`` passed C1 controls and bidi controls through raw: printed to
    a terminal, a name could still move the cursor or reorder what was read."""
    office, _fp, _card = _vault(tmp_path, "registry-office")
    item = _ingest(office, tmp_path, HOSTILE_JSON, title=HOSTILE_JSON)
    office.ok("body", "add", "ICC-OTP", "--name", HOSTILE_JSON)
    for args, read in [
        (("items", "show", item, "--json"), lambda out: json.loads(out)["title"]),
        (("items", "list", "--json"), lambda out: json.loads(out)[0]["name"]),
        (("items", "list", "--jsonl"), lambda out: json.loads(out.splitlines()[0])["name"]),
        (("body", "list", "--json"), lambda out: json.loads(out)[0]["name"]),
    ]:
        out = office.ok(*args).stdout
        _no_raw(out)
        assert "\\u009b2Jb\\u007fc\\u2028d\\u202egpj.exe\\u2066e" in out, args
        assert read(out) == HOSTILE_JSON, args


def test_json_escaping_is_the_same_in_parts_and_whole() -> None:
    from vault.render import to_json, to_jsonl
    from vault.render.text import RowsText

    rows = [{"name": HOSTILE_JSON, "n": 1}, {"name": "plain", "n": 2},
            {"name": "\udc9b lone surrogate", "n": 3}]
    for fmt, whole in (("json", to_json), ("jsonl", to_jsonl)):
        text = RowsText(fmt, ["name", "n"])
        parts = text.part(rows[:1]) + text.part(rows[1:]) + text.end()
        assert parts == whole(rows), fmt
        _no_raw(parts)
        assert "\udc9b" not in parts and "\\udc9b lone" in parts
        decoded = json.loads(parts) if fmt == "json" else [json.loads(line) for line in
                                                           parts.splitlines()]
        assert decoded == rows, fmt


def test_a_contact_card_printed_or_written_escapes_them_and_still_verifies(
        tmp_path: Path) -> None:
    """The reviewer's F4: `identity export` with no -o printed the card's JSON raw."""
    office, _fp, _card = _vault(tmp_path, "registry-office")
    office.ok("identity", "create", "clerk", "--org", HOSTILE_JSON, "--email", "a\u2028b@x.example")
    printed = office.ok("identity", "export", "clerk").stdout
    _no_raw(printed)
    assert json.loads(printed)["org"] == HOSTILE_JSON
    card = tmp_path / "clerk.card.json"
    card.write_text(printed)
    fingerprint = json.loads(printed)["fingerprint"]
    icc, _icc_fp, _icc_card = _vault(tmp_path, "icc-officer")
    icc.ok("contact", "add", str(card), "--fingerprint", fingerprint)
    assert json.loads(icc.ok("contact", "list", "--json").stdout)[0]["org"] == HOSTILE_JSON
