"""A package's verification sheet laid out: Markdown, or one printable HTML page.

    >>> from vault.service.sheet import sheet_data          # doctest: +SKIP
    >>> page = render_sheet(sheet_data(vault, "PKG-0123456789AB"), "html")  # doctest: +SKIP
    >>> page.startswith("<!DOCTYPE html>")                  # doctest: +SKIP
    True

The values come from :func:`vault.service.sheet.sheet_data` (ids, fingerprints, times,
sizes and digests only); :func:`render_markdown` and :func:`render_html` lay them out with
the commands that check each value with stock tools (``docs/verify-by-hand.md``).

May import: the standard library, ``vault.errors`` and ``vault.render``; for type checking
only, the result it lays out (:class:`vault.service.sheet.PackageSheet`).
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any

from vault.errors import UsageError
from vault.render.forms import DEFAULT_PAPER, check_paper, form_page, mono
from vault.render.text import terminal_safe

FORMATS = ("md", "html")
# Words of the checks' prose printed whole: digests, ids, fingerprints and file names.
_TOKEN = re.compile(r"([0-9a-f]{40,}|[A-Z]{2,4}-[0-9A-Z]{12}(?:\.evpkg)?|SHA256:[0-9A-Za-z+/]+)")
GUIDE = "docs/verify-by-hand.md"

if TYPE_CHECKING:
    from vault.service.sheet import PackageSheet


def _fields(d: PackageSheet) -> list[tuple[str, str]]:
    """The label and value of each line of the main table, in print order."""

    def opt(value: Any) -> str:
        return "—" if value is None else str(value)

    return [
        ("Package id", d.package),
        ("Receiving body", d.body),
        ("State", d.state),
        ("Sender", d.sender),
        ("Sender key fingerprint", d.sender_fingerprint),
        *[(f"Recipient key {n}", fp) for n, fp in enumerate(d.recipients, start=1)],
        ("Sender escrow key", d.escrow),
        ("Created", d.created_at),
        ("Sent", opt(d.sent_at)),
        ("Acknowledged", opt(d.acknowledged_at)),
        ("Acknowledged by key", opt(d.acknowledged_by)),
        ("Sharing receipt", opt(d.receipt)),
        ("Package file", d.file_name),
        ("File size (bytes)", str(d.file_size)),
        ("File SHA-256", d.file_sha256),
        ("Envelope SHA-256 (envelope.json)", d.envelope_sha256),
        ("Statement SHA-256 (in the payload)", opt(d.statement_sha256)),
        ("Payload size (bytes)", str(d.payload_size)),
        ("Payload SHA-256 (payload.age)", d.payload_sha256),
        ("Custody log", d.checkpoint_origin),
        ("Checkpoint size (events)", str(d.checkpoint_size)),
        ("Checkpoint root (base64)", d.checkpoint_root),
    ]


def _commands(d: PackageSheet) -> list[tuple[str, str]]:
    """Each check: what it shows, and the stock-tool commands, with this package's names."""
    pkg, pid = d.file_name, d.package
    steps = [
        (
            "The file is the one described here: the digest printed is the File SHA-256 "
            "above.",
            f"sha256sum {pkg}",
        ),
        (
            "The envelope is signed by the sender (allowed_signers made from the sender's "
            f"contact card, principals sender,{d.checkpoint_origin}: step 1 of {GUIDE}); the "
            "digests printed are the Envelope and Payload SHA-256 above.",
            f"mkdir -p package && tar -xf {pkg} -C package\n"
            "ssh-keygen -Y verify -f allowed_signers -I sender -n evault-envelope \\\n"
            "  -s package/envelope.json.sig < package/envelope.json\n"
            "sha256sum package/envelope.json package/payload.age",
        ),
    ]
    if d.receipt:
        steps.append((
            f"The sharing receipt {d.receipt} is signed by the sender and names this "
            "envelope's SHA-256.",
            "ssh-keygen -Y verify -f allowed_signers -I sender -n evault-receipt \\\n"
            "  -s receipt.json.sig < receipt.json\n"
            "grep -o '\"envelope_sha256\":\"[0-9a-f]*\"' receipt.json",
        ))
    steps.append((
        "Recipients only: the payload decrypts and the bag inside is whole; each item's "
        "SHA-256 is listed above.",
        "age -d -i \"$AGE_KEY\" -o payload.tar package/payload.age\n"
        "mkdir -p bag && tar -xf payload.tar -C bag\n"
        f"bagit.py --validate bag/{pid}\n"
        f"(cd bag/{pid} && sha256sum -c manifest-sha256.txt && sha256sum -c "
        "tagmanifest-sha256.txt)",
    ))
    steps.append((
        "The checks above in one command, for anyone with evault (exit status 0: "
        "verified; --trusted-keys takes the same allowed_signers file).",
        f"evault verify {pkg}" + (" receipt.json" if d.receipt else "")
        + " --trusted-keys allowed_signers",
    ))
    return steps


_INTRO = (
    "This sheet lists identifiers, sizes, digests and key fingerprints only: no titles, "
    "descriptions or file names. Each value can be checked with stock tools as shown below; "
    f"{GUIDE} explains every step."
)


def _md_cell(value: str) -> str:
    """A code span: control characters shown escaped (a newline too), no backtick, no bar."""
    return "`" + terminal_safe(value).replace("`", "'").replace("|", "\\|") + "`"


def render_markdown(d: PackageSheet) -> str:
    """The sheet as Markdown: a table of the package, a table of its items, the checks."""
    lines = [
        f"# Verification sheet: package {d.package}",
        "",
        _INTRO,
        "",
        "| Field | Value |",
        "| --- | --- |",
        *[f"| {label} | {_md_cell(value)} |" for label, value in _fields(d)],
        "",
        f"## Items ({len(d.items)})",
        "",
        "| # | Item id | Size (bytes) | SHA-256 |",
        "| ---: | --- | ---: | --- |",
        *[
            f"| {n} | {_md_cell(i.id)} | {i.size} | {_md_cell(i.sha256)} |"
            for n, i in enumerate(d.items, start=1)
        ],
        "",
        "## How to check",
        "",
    ]
    for n, (says, command) in enumerate(_commands(d), start=1):
        lines += [f"{n}. {says}", "", "   ```sh", *[f"   {c}" for c in command.split("\n")],
                  "   ```", ""]
    lines.append(f"Printed {d.printed_at} by evault {d.version}.")
    return "\n".join(lines) + "\n"


_SHORT = 28  # values up to this many characters share a row with another field


def _html_checks(d: PackageSheet) -> str:
    e = html.escape
    return "\n".join(
        f"<li class=\"keep\">{_with_mono(says)}<pre>{e(command)}</pre></li>"
        for says, command in _commands(d)
    )


def _with_mono(text: str) -> str:
    """Prose with the digests and ids it names in unbreakable monospace spans."""
    parts = _TOKEN.split(text)
    return "".join(mono(p) if n % 2 else html.escape(p) for n, p in enumerate(parts))


_CSS = """
@page { margin: 10mm 12mm 10mm; }
h2 { margin-top: 5pt; }
table.fields { font-size: 8pt; line-height: 1.2; }
table.fields th { font-weight: normal; white-space: nowrap; width: 1%; }
table.items td, table.items th { font-size: 7.5pt; line-height: 1.15; padding: 0 3pt; }
table.items .id { font-size: 7.5pt; }
ol.checks { margin: 0; padding-left: 1.4em; font-size: 7.5pt; line-height: 1.15; }
ol.checks li { margin-bottom: 1.5pt; }
ol.checks pre { font-size: 7.5pt; margin: 0; padding: 0 0 0 4pt; border-left: 1pt solid #999;
                white-space: pre; line-height: 1.15; }
"""


def render_html(d: PackageSheet, *, paper: str = DEFAULT_PAPER) -> str:
    """The sheet as one self-contained HTML page that prints on one ``paper`` page (``a4``
    or ``letter``) for a package of up to 25 items; ids and digests never break."""
    e = html.escape
    short = [(k, v) for k, v in _fields(d) if len(v) <= _SHORT]
    long = [(k, v) for k, v in _fields(d) if len(v) > _SHORT]
    if len(short) % 2:
        short.append(("", ""))
    pairs = "\n".join(
        f"<tr><th scope=\"row\">{e(a)}</th><td>{mono(x) if x else ''}</td>"
        f"<th scope=\"row\">{e(b)}</th><td>{mono(y) if y else ''}</td></tr>"
        for (a, x), (b, y) in zip(short[::2], short[1::2], strict=True)
    )
    rows = "\n".join(
        f"<tr><th scope=\"row\">{e(label)}</th><td>{mono(value)}</td></tr>"
        for label, value in long
    )
    items = "\n".join(
        f"<tr><td class=\"num\">{n}</td><td>{mono(i.id)}</td>"
        f"<td class=\"num\">{e(str(i.size))}</td><td>{mono(i.sha256)}</td></tr>"
        for n, i in enumerate(d.items, start=1)
    )
    title = f"Verification sheet: package {d.package}"
    body = f"""<h1>Verification sheet: package {mono(d.package)}</h1>
<p class="small">{e(_INTRO)} Printed {mono(d.printed_at)} by evault {e(d.version)}.</p>
<table class="fields">
<tbody>
{pairs}
</tbody>
</table>
<table class="fields">
<tbody>
{rows}
</tbody>
</table>
<h2>Items ({len(d.items)})</h2>
<table class="items">
<thead><tr><th class="num">#</th><th>Item id</th><th class="num">Size (bytes)</th>
<th>SHA-256</th></tr></thead>
<tbody>
{items}
</tbody>
</table>
<h2>How to check</h2>
<ol class="checks">
{_html_checks(d)}
</ol>"""
    return form_page(title, paper, body, css=_CSS, footer=f"Verification sheet, package "
                     f"{d.package}, printed {d.printed_at}")


def render_sheet(d: PackageSheet, fmt_name: str, *, paper: str = DEFAULT_PAPER) -> str:
    """The sheet of :func:`vault.service.sheet.sheet_data` in ``fmt_name`` (``md``, or
    ``html`` printed on ``paper``)."""
    if fmt_name not in FORMATS:
        raise UsageError(f"package sheet: format must be one of {', '.join(FORMATS)}")
    check_paper(paper)
    return render_markdown(d) if fmt_name == "md" else render_html(d, paper=paper)
