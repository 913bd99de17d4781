"""Court-ready printed forms: `package sheet` and `report custody` as HTML, printed to PDF.

The HTML goes through headless Chromium (Debian `chromium`) to PDF on A4 and on Letter, and
the PDF is read back with poppler (`pdfinfo`, `pdftotext`): the page size and count, every
id, fingerprint and digest whole on one line as often as the page shows it, no heading
left at the bottom of a page, a long custody form breaking between events, never inside
one. The world is built once per module and each form printed once (a Chromium start is
about a second).
"""

from __future__ import annotations

import base64
import html
import importlib.util
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType

import pytest
from conftest import Cli, isolate, require_tool

ROOT = Path(__file__).resolve().parent.parent
CASE = "XX-2026-0007"
PRINTED = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
PRINTED_TEXT = "2026-12-01T08:00:00Z"
TITLE, SOURCE, PLACE = "Photograph of a wall (fictional)", "Field team 3 (fictional)", \
    "Fictional village, grid 12-34"
EXPORTS = 40  # events of one item, enough for a custody form of three A4 pages
SIZES = {"a4": (595, 842), "letter": (612, 792)}
HEADINGS = ("Verification sheet:", "Items (", "How to check", "Chain of custody:",
            "Events in this vault", "Sender's chain of custody")


def _examples() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_examples",
                                                  ROOT / "scripts" / "make_examples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Printed:
    """One form: its HTML, its PDF's pages (text of each, laid out, without the footer
    line), the footer line of each page, and the page size."""

    html: str
    pages: list[str]
    footers: list[str]
    size: tuple[int, int]

    @property
    def text(self) -> str:
        return "\n".join(self.pages)

    def visible(self) -> str:
        """The HTML's text as a reader sees it (tags dropped, entities decoded)."""
        body = self.html.split("<body>", 1)[1]
        return html.unescape(re.sub(r"<[^>]+>", " ", body))


@dataclass
class World:
    tmp: Path
    office: Cli
    icc: Cli
    package: dict[str, object]
    items: list[dict[str, object]]
    busy_item: str
    received_item: str
    fingerprints: dict[str, str]
    forms: dict[str, Printed] = field(default_factory=dict)


def _print(page: Path, paper: str) -> Printed:
    require_tool("chromium")
    require_tool("pdftotext")
    require_tool("pdfinfo")
    pdf = _examples().print_to_pdf(page, page.with_suffix(".pdf"))
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True,
                          check=True).stdout
    pages = int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))  # type: ignore[union-attr]
    w, h = re.search(r"^Page size:\s+([\d.]+) x ([\d.]+) pts", info,  # type: ignore[union-attr]
                     re.M).groups()
    texts = [subprocess.run(["pdftotext", "-layout", "-f", str(n), "-l", str(n), str(pdf), "-"],
                            capture_output=True, text=True, check=True).stdout
             for n in range(1, pages + 1)]
    assert paper in SIZES
    bodies, footers = [], []
    for text in texts:
        lines = [x for x in text.splitlines() if x.strip()]
        assert re.search(r"page \d+ of \d+$", lines[-1]), lines[-1]
        footers.append(" ".join(lines[-1].split()))
        bodies.append("\n".join(lines[:-1]) + "\n")
    return Printed(page.read_text(), bodies, footers, (round(float(w)), round(float(h))))


def _build(tmp: Path) -> World:
    office, icc = Cli(tmp / "office"), Cli(tmp / "icc")
    office.init()
    icc.init()
    office.ok("identity", "create", "registry-office", "--org", "Fictional Ministry")
    officers = {}
    for name in ("icc-officer", "icc-deputy"):
        officers[name] = json.loads(icc.ok("identity", "create", name, "--json").stdout)
        icc.ok("identity", "export", name, "-o", str(tmp / f"{name}.card.json"))
    office.ok("body", "add", "ICC-OTP", "--name", "Fictional Office of the Prosecutor")
    for name, created in officers.items():
        office.ok("body", "key", "add", "ICC-OTP", "--card", str(tmp / f"{name}.card.json"),
                  "--fingerprint", str(created["fingerprint"]))
    samples = tmp / "samples"
    samples.mkdir()
    for n in range(1, 26):
        (samples / f"photo-{n:02d}.jpg").write_bytes(b"FICTIONAL SAMPLE %d\n" % n * (50 * n))
    office.ok("case", "create", CASE)
    office.ok("ingest", str(samples), "--recursive", "--case", CASE, "--title", TITLE,
              "--source", SOURCE, "--location", PLACE, "--collected-at",
              "2026-03-14T09:30:00Z", "--also-digest", "md5,sha1")
    items = json.loads(office.ok("items", "list", "--json").stdout)
    busy = str(items[0]["id"])
    office.ok("custody", "checkpoint")
    built = json.loads(office.ok("package", "create", "--to", "ICC-OTP", "--case", CASE, "-o",
                                 str(tmp / "p.evpkg"), "--json").stdout)
    outbox = tmp / "outbox"
    outbox.mkdir()
    office.ok("send", str(tmp / "p.evpkg"), "--outbox", str(outbox))
    office.ok("identity", "export", "registry-office", "-o", str(tmp / "office.card.json"))
    office_fp = json.loads(office.ok("identity", "show", "--json").stdout)["fingerprint"]
    icc.ok("contact", "add", str(tmp / "office.card.json"), "--fingerprint", office_fp)
    icc.ok("open", str(outbox / f"{built['id']}.evpkg"), "--out", str(tmp / "opened"),
           "--as", "icc-officer")
    icc.ok("ack", str(built["id"]), "-o", str(tmp / "ack.json"), "--as", "icc-officer")
    office.ok("receipt", "import", str(tmp / "ack.json"))
    for n in range(EXPORTS):
        office.ok("items", "export", busy, "-o", str(tmp / f"copy-{n}.jpg"), "--reason",
                  f"expert review {n} (fictional)")
    office.ok("custody", "checkpoint")
    icc.ok("custody", "checkpoint", "-o", str(tmp / "icc-checkpoint.txt"))
    received = json.loads(icc.ok("items", "list", "--json").stdout)
    received_item = next(str(i["id"]) for i in received if i["sha256"] == items[0]["sha256"])
    package = json.loads(office.ok("package", "show", str(built["id"]), "--json").stdout)
    return World(tmp, office, icc, package, items, busy, received_item,
                 {"office": office_fp, **{k: str(v["fingerprint"]) for k, v in officers.items()}})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The vaults, and each form printed once: the sheet on A4 and Letter, the received
    item's custody form on Letter, and the busy item's (many events) on A4."""
    tmp = tmp_path_factory.mktemp("forms")
    with pytest.MonkeyPatch.context() as env:
        isolate(env, tmp / "no-default-vault")
        env.setattr("vault.service.reports.utcnow", lambda: PRINTED)
        env.setattr("vault.service.sheet.utcnow", lambda: PRINTED)
        w = _build(tmp)
        forms = {
            "sheet a4": (w.office, ("package", "sheet", str(w.package["id"]))),
            "sheet letter": (w.office, ("package", "sheet", str(w.package["id"]))),
            "received letter": (w.icc, ("report", "custody", w.received_item, "--as",
                                        "icc-deputy")),
            "busy a4": (w.office, ("report", "custody", w.busy_item)),
            "busy letter": (w.office, ("report", "custody", w.busy_item)),
        }
        for name, (cli, args) in forms.items():
            paper = name.split()[1]
            page = tmp / f"{name.replace(' ', '-')}.html"
            cli.ok(*args, "--format", "html", "--paper", paper, "-o", str(page))
            w.forms[name] = page  # type: ignore[assignment]
        yield w


def _printed(world: World, name: str) -> Printed:
    form = world.forms[name]
    if isinstance(form, Path):
        form = world.forms[name] = _print(form, name.split()[1])
    return form


def _tokens(world: World) -> list[str]:
    """Every id, fingerprint and digest the sheet shows."""
    p = world.package
    return [
        str(p["id"]), *(str(i["id"]) for i in world.items), *(str(i["sha256"]) for i in
                                                              world.items),
        *world.fingerprints.values(), str(p["file_sha256"]), str(p["envelope_sha256"]),
        str(p["payload_sha256"]),
    ]


def _whole(printed: Printed, tokens: list[str]) -> None:
    """Each token is on the page, whole on one line, as often as the HTML shows it: none
    is split or hyphenated anywhere."""
    visible = printed.visible()
    for token in tokens:
        assert printed.text.count(token) == visible.count(token) > 0, token
    # And nothing a break would leave: a line ending in a hyphen after a fragment of a token.
    for line in printed.text.splitlines():
        assert not re.search(r"[0-9a-f]{6,}-$|SHA256:\S*-$", line.rstrip()), line


def _no_orphan_headings(printed: Printed) -> None:
    """No heading is the last thing on a page, nor followed there only by a table header."""
    for number, page in enumerate(printed.pages, start=1):
        lines = [line.strip() for line in page.splitlines() if line.strip()]
        for n, line in enumerate(lines):
            if line.startswith(HEADINGS):
                after = [x for x in lines[n + 1:] if not x.startswith(("# ", "#  "))]
                assert after, f"page {number} ends with the heading {line!r}"


@pytest.mark.chromium
@pytest.mark.parametrize("paper", ["a4", "letter"])
def test_the_sheet_of_25_items_prints_on_one_page(world: World, paper: str) -> None:
    printed = _printed(world, f"sheet {paper}")
    assert (len(printed.pages), printed.size) == (1, SIZES[paper])
    assert f"size: {'A4' if paper == 'a4' else 'letter'};" in printed.html
    assert len(world.items) == 25 and len(world.package["recipients"]) == 2  # type: ignore[arg-type]
    _whole(printed, _tokens(world))
    _no_orphan_headings(printed)
    text = printed.text
    # The acknowledgement's key and every check are on the page, in order.
    assert text.index("Items (25)") < text.index("How to check") < text.index("evault verify")
    assert f"Printed {PRINTED_TEXT} by evault" in text
    assert printed.footers == [f"Verification sheet, package {world.package['id']}, printed "
                               f"{PRINTED_TEXT} page 1 of 1"]
    for secret in (TITLE, SOURCE, PLACE, "photo-01.jpg"):
        assert secret not in printed.html


@pytest.mark.chromium
def test_the_custody_form_of_a_received_item(world: World) -> None:
    printed = _printed(world, "received letter")
    assert printed.size == SIZES["letter"]
    text = printed.text
    lines = [" ".join(x.split()) for x in text.splitlines() if x.strip()]
    assert lines[0] == f"Chain of custody: item {world.received_item}"
    # What the item is comes first, in this order, before any event.
    order = [f"Case {CASE}", f"Item {world.received_item}", f"Title {TITLE}", f"Source {SOURCE}",
             "Collected at (UTC) 2026-03-14T09:30:00Z", f"Collected at (place) {PLACE}"]
    assert lines[1:7] == order
    assert text.index(PLACE) < text.index("Events in this vault")
    # This vault's events (received by the opening officer), then the sender's chain from
    # the excerpt: the office's ingest event, with its actor's name and fingerprint.
    ours = text[text.index("Events in this vault"):text.index("Sender's chain of custody")]
    assert "item.received" in ours and "icc-officer" in ours
    assert world.fingerprints["icc-officer"] in ours
    theirs = text[text.index("Sender's chain of custody"):text.index("Printed at")]
    assert "item.ingested" in theirs and "registry-office" in theirs
    assert world.fingerprints["office"] in theirs and "signature verified" in theirs
    # It ends with who printed it (--as) at the latest checkpoint, and a signature line.
    origin, size, root = (world.tmp / "icc-checkpoint.txt").read_text().splitlines()[:3]
    closing = " ".join(text[text.index("Printed at"):].split())
    assert closing.startswith(f"Printed at {PRINTED_TEXT} by icc-deputy "
                              f"{world.fingerprints['icc-deputy']}, checkpoint {origin} {size} "
                              f"{root}. Certified a true record")
    assert lines[-2:] == ["Name Date", "Signature"]
    assert printed.footers == [f"Chain of custody, item {world.received_item}, printed "
                               f"{PRINTED_TEXT} by icc-deputy page 1 of 1"]
    _whole(printed, [world.received_item, *world.fingerprints.values(),
                     str(world.items[0]["sha256"]), str(world.package["id"])])
    _no_orphan_headings(printed)


@pytest.mark.chromium
@pytest.mark.parametrize("paper", ["a4", "letter"])
def test_a_long_custody_form_breaks_between_events(world: World, paper: str) -> None:
    printed = _printed(world, f"busy {paper}")
    assert printed.size == SIZES[paper] and len(printed.pages) >= 2
    starts = re.compile(r"^\s*(\d+)\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+(item\.\w+)")
    seen = []
    for number, page in enumerate(printed.pages, start=1):
        lines = [x for x in page.splitlines() if x.strip()]
        events = [n for n, x in enumerate(lines) if starts.match(x)]
        if not events:
            continue
        # The table's header repeats on every page that continues it.
        assert any("Time (UTC)" in x for x in lines[:events[0]]), f"page {number}"
        for first, nxt in zip(events, [*events[1:], len(lines)], strict=True):
            block = " ".join(lines[first:nxt])
            seq = starts.match(lines[first]).group(1)  # type: ignore[union-attr]
            # An event's details and proof status are on the page of its first line.
            assert "included (proof verified)" in block, f"event {seq} split at page {number}"
            seen.append(int(seq))
    # item.ingested, then item.export.started and item.exported for each export.
    assert len(seen) == 2 * EXPORTS + 1 == len(set(seen)) and seen == sorted(seen)
    assert "registry-office" in printed.text and world.fingerprints["office"] in printed.text
    _whole(printed, [world.busy_item, world.fingerprints["office"],
                     str(world.items[0]["sha256"])])
    _no_orphan_headings(printed)
    # Every page says what it belongs to, who printed it, and which of how many it is.
    total = len(printed.pages)
    assert printed.footers == [
        f"Chain of custody, item {world.busy_item}, printed {PRINTED_TEXT} by registry-office "
        f"page {n} of {total}" for n in range(1, total + 1)]
    last = [x.strip() for x in printed.pages[-1].splitlines() if x.strip()]
    assert last[-1] == "Signature" and any(x.startswith("Printed at") for x in last)


# ----------------------------------------------------------------------------- without Chromium


def test_paper_sets_the_page_size_and_goes_only_with_html(world: World) -> None:
    pid = str(world.package["id"])
    default = world.office.ok("package", "sheet", pid, "--format", "html").stdout
    letter = world.office.ok("package", "sheet", pid, "--format", "html", "--paper",
                             "letter").stdout
    assert "@page { size: A4;" in default and "@page { size: letter;" in letter
    # Self-contained: inline CSS only, nothing fetched, nothing run.
    for page in (default, letter):
        assert not re.search(r"<script|<link|<img|src=|url\(|://", page)
    for args in (("package", "sheet", pid), ("report", "custody", world.busy_item)):
        result = world.office(*args, "--paper", "letter")
        assert (result.exit_code, result.stdout) == (2, "")
        assert result.stderr.endswith("Error: --paper goes with --format html\n")
    result = world.office("package", "sheet", pid, "--format", "html", "--paper", "a5")
    assert result.exit_code == 2 and "'a5' is not one of 'a4', 'letter'" in result.stderr


def test_the_custody_form_in_markdown(world: World) -> None:
    md = world.icc.ok("report", "custody", world.received_item, "--as", "icc-deputy").stdout
    lines = md.splitlines()
    assert lines[0] == f"# Chain of custody: {world.received_item}"
    assert lines[2:8] == [f"- **Case**: {CASE}", f"- **Item**: {world.received_item}",
                          f"- **Title**: {TITLE}", f"- **Source**: {SOURCE}",
                          "- **Collected at (UTC)**: 2026-03-14T09:30:00Z",
                          f"- **Collected at (place)**: {PLACE}"]
    assert f"- **Received from**: registry-office {world.fingerprints['office']}" in lines
    chain = lines.index(next(x for x in lines if x.startswith("## Sender's chain of custody")))
    assert lines[chain] == (f"## Sender's chain of custody (package {world.package['id']}, "
                            f"sender registry-office {world.fingerprints['office']})")
    ingested = next(x for x in lines[chain:] if "item.ingested" in x)
    assert f"| registry-office | {world.fingerprints['office']} |" in ingested
    assert ingested.endswith("| signature verified |")
    origin, size, root = (world.tmp / "icc-checkpoint.txt").read_text().splitlines()[:3]
    assert lines[-3:] == [
        f"Printed at {PRINTED_TEXT} by icc-deputy {world.fingerprints['icc-deputy']}, "
        f"checkpoint {origin} {size} {root}.",
        "",
        "Name: ______________________  Date: ______________  Signature: ______________________",
    ]
    # Its description and file name stay out, as everywhere.
    assert "photo-01.jpg" not in md and "Description" not in md


def test_the_printer_is_an_identity_of_this_vault(world: World) -> None:
    result = world.icc("report", "custody", world.received_item, "--as", "nobody")
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr.startswith("evault: identity nobody: not found")


def test_a_sender_event_whose_signature_fails_is_marked(world: World, tmp_path: Path) -> None:
    import sqlalchemy as sa

    copy = tmp_path / "icc"
    shutil.copytree(world.icc.vault, copy)
    engine = sa.create_engine(f"sqlite:///{copy / 'vault.db'}")
    with engine.begin() as conn:
        excerpt = conn.execute(sa.text("SELECT custody_excerpt FROM received_packages")).scalar()
        lines = bytes(excerpt).splitlines()
        entries = [json.loads(x) for x in lines]
        forged = next(n for n, e in enumerate(entries) if "item.ingested" in e["event"])
        entries[forged]["signature"] = base64.b64encode(bytes(64)).decode()
        changed = b"".join(json.dumps(e).encode() + b"\n" for e in entries)
        conn.execute(sa.text("UPDATE received_packages SET custody_excerpt = :x"), {"x": changed})
    engine.dispose()
    md = Cli(copy).ok("report", "custody", world.received_item).stdout
    row = next(x for x in md.splitlines() if "item.ingested" in x)
    assert row.endswith(f"| NOT verified (excerpt line {forged + 1}) |")
    assert "signature verified" not in md


def test_a_value_too_long_for_a_line_wraps_only_in_its_own_block() -> None:
    from vault.render.forms import mono

    assert mono("a" * 64) == f'<span class="id">{"a" * 64}</span>'
    assert mono("b" * 128) == f'<span class="block">{"b" * 128}</span>'
    assert mono("<&>") == '<span class="id">&lt;&amp;&gt;</span>'


def test_text_direction_controls_in_a_title_are_shown_not_obeyed(sqlite_cli: Cli,
                                                                 tmp_path: Path) -> None:
    # A sender's title "photo<U+202E>gpj.exe" would print as "photoexe.jpg".
    sqlite_cli.ok("identity", "create", "registry-office")
    evidence = tmp_path / "photo.bin"
    evidence.write_bytes(b"fictional bytes")
    sqlite_cli.ok("ingest", str(evidence), "--case", CASE, "--create-case", "--title",
                  "photo\u202egpj.exe and \u2067more\u2069")
    item = json.loads(sqlite_cli.ok("items", "list", "--json").stdout)[0]["id"]
    page = sqlite_cli.ok("report", "custody", item, "--format", "html").stdout
    assert "photo[U+202E]gpj.exe and [U+2067]more[U+2069]" in page
    assert not re.search("[\u202a-\u202e\u2066-\u2069]", page)


@pytest.mark.chromium
def test_a_very_long_word_in_a_title_wraps_inside_the_page(sqlite_cli: Cli,
                                                          tmp_path: Path) -> None:
    # A hostile sender's title of one 300-letter word: the table must not grow past the page,
    # where the printout would cut it off. Ids and digests keep their own no-wrap rule.
    word = "fictional" + "x" * 291
    sqlite_cli.ok("identity", "create", "registry-office")
    evidence = tmp_path / "photo.bin"
    evidence.write_bytes(b"fictional bytes")
    sqlite_cli.ok("ingest", str(evidence), "--case", CASE, "--create-case", "--title",
                  f"{word} end")
    item = json.loads(sqlite_cli.ok("items", "list", "--json").stdout)[0]["id"]
    page = tmp_path / "custody.html"
    page.write_text(sqlite_cli.ok("report", "custody", item, "--format", "html", "--paper",
                                  "a4").stdout)
    printed = _print(page, "a4")
    flat = re.sub(r"\s+", "", printed.text)
    assert f"{word}end" in flat
    assert item in printed.text  # the id is whole, on one line
