"""Oversight reports laid out: the sharing report and the chain-of-custody form.

    >>> from vault.service.reports import sharing_report        # doctest: +SKIP
    >>> print(render_sharing(sharing_report(vault), "md"))       # doctest: +SKIP
    # Sharing report
    ...

:func:`render_sharing` prints the sharing report as a table, Markdown, CSV or JSON;
:func:`render_custody` the chain-of-custody form as Markdown or one printable HTML page
(:mod:`vault.render.forms`). The values come from :mod:`vault.service.reports`.

May import: the standard library, ``vault.errors`` and ``vault.render``; for type checking
only, the results it lays out (:mod:`vault.service.reports`).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vault.render.forms import DEFAULT_PAPER, form_page, mono, signature_block, words
from vault.render.text import markdown_safe, render_table, to_csv, to_json

if TYPE_CHECKING:
    from vault.service.items import Link
    from vault.service.reports import CustodyReport, EventLine, SharingReport

SHARING_COLUMNS = ("body", "packages", "items", "bytes", "references", "sent", "acknowledged",
                   "median_hours_to_ack", "approvals", "originals", "derivatives")


def render_sharing(report: SharingReport, fmt: str) -> str:
    """The report of :func:`vault.service.reports.sharing_report` as table, md, csv or json."""
    rows = [r.to_json() for r in (*report.rows, report.totals)]
    if fmt == "json":
        return to_json(report.to_json())
    if fmt == "csv":
        return to_csv(rows, SHARING_COLUMNS)
    if fmt == "md":
        window = f"{report.since or 'the beginning'} to {report.until or 'now'} (UTC)"
        lines = ["# Sharing report", "", f"Packages built from {window}. Ids, counts and sizes "
                 "only: no titles, descriptions or file names.", "",
                 "| " + " | ".join(SHARING_COLUMNS) + " |",
                 "|" + "---|" * len(SHARING_COLUMNS)]
        for r in rows:
            cells = ["-" if r[c] is None else markdown_safe(str(r[c])) for c in SHARING_COLUMNS]
            if r["body"] == "TOTAL":
                cells = [f"**{c}**" for c in cells]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"
    return render_table(rows, SHARING_COLUMNS)


# ----------------------------------------------------------------------------- custody form


def _details(details: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in sorted(details.items())) or "-"


def _value(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def _custody_lines(report: CustodyReport) -> dict[str, Any]:
    """The texts both layouts print: the item's fields, the checkpoint, the closing line."""
    cp = report.checkpoint
    printer = report.printed_by
    cp_short = (f"{cp.origin} {cp.size} {cp.root}" if cp
                else "none yet (run `evault custody checkpoint`)")
    sender = "-"
    if report.received_from:
        sender = f"{report.received_from_name or 'unknown'} {report.received_from}"
    lineage = report.derivation
    derivation = []
    if lineage is not None:
        if lineage.derived_from:
            derivation.append(("Derived from", " ← ".join(
                _link(link, report.item) for link in lineage.derived_from)))
        if lineage.derivatives:
            derivation.append(("Derived copies", ", ".join(
                _link(link, report.item) for link in lineage.derivatives)))
    return {
        "derivation": derivation,
        "item": [
            ("Case", report.case),
            ("Item", report.item),
            ("Title", report.title or "-"),
            ("Source", report.source or "-"),
            ("Collected at (UTC)", report.collected_at or "-"),
            ("Collected at (place)", report.location or "-"),
            ("Size (bytes)", str(report.size)),
            ("Received from", sender),
            ("Source package / item", f"{report.source_package or '-'} / "
                                      f"{report.source_item or '-'}"),
        ],
        "checkpoint": (f"{cp.origin}, size {cp.size}, root {cp.root}, signed by "
                       f"{cp.signed_by}" if cp else cp_short),
        "printed": (f"Printed at {report.printed_at} by {printer.name} "
                    f"{printer.fingerprint}, checkpoint {cp_short}."),
    }


def _link(link: Link, item: str) -> str:
    """``EV-A (redacted, redactor 2.1, of EV-B) SHA-256 <hex>``: one step of a derivation."""
    how = ", ".join(x for x in (link.relation, link.tool,
                                f"of {link.of}" if link.of and link.of != item else None) if x)
    return f"{link.id} ({how}) SHA-256 {link.sha256}" if how else f"{link.id} SHA-256 {link.sha256}"


_NOTE = ("Times are UTC (ISO 8601). Each event is signed by its actor (Ed25519) and hashed "
         "into the vault's RFC 9162 Merkle tree; `evault custody verify` re-checks them all.")
_SENDER_NOTE = ("The sender's events come from the signed custody excerpt in the package, "
                "verified (each signature and its inclusion proof against the sender's "
                "checkpoint) when the package was opened; each signature is checked again for "
                "this form.")


def render_custody(report: CustodyReport, fmt: str, *, paper: str = DEFAULT_PAPER) -> str:
    """The form of :func:`vault.service.reports.custody_report` as md, or as html printed on
    ``paper``."""
    text = _custody_lines(report)
    if fmt == "md":
        return _custody_markdown(report, text)
    return _custody_html(report, text, paper)


_EVENT_COLUMNS = ("seq", "time", "action", "actor", "fingerprint", "details", "proof")


def _custody_markdown(report: CustodyReport, text: dict[str, Any]) -> str:
    def table(events: Sequence[EventLine], cols: tuple[str, ...]) -> list[str]:
        out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for e in events:
            out.append("| " + " | ".join(markdown_safe(
                _details(e.details) if c == "details" else str(getattr(e, c))) for c in cols)
                + " |")
        return out

    md = markdown_safe
    lines = [f"# Chain of custody: {md(report.item)}", ""]
    lines += [f"- **{k}**: {md(v)}" for k, v in text["item"]]
    lines += [f"- **{k.upper()}**: {md(v)}" for k, v in report.digests.items()]
    lines += [f"- **{k}**: {md(v)}" for k, v in text["derivation"]]
    lines += [f"- **Checkpoint**: {md(text['checkpoint'])}", "", "## Events in this vault", ""]
    lines += table(report.events, _EVENT_COLUMNS)
    chain = report.sender_chain
    if chain:
        lines += ["", f"## Sender's chain of custody (package {md(chain.package)}, sender "
                  f"{md(chain.sender)} {md(chain.sender_fingerprint)})", ""]
        lines += table(chain.events, _EVENT_COLUMNS) if chain.events else [
            "No events of this item in the sender's excerpt."]
        lines += ["", _SENDER_NOTE]
    lines += ["", _NOTE, "", md(text["printed"]), "",
              "Name: ______________________  Date: ______________  "
              "Signature: ______________________", ""]
    return "\n".join(lines)


_CUSTODY_CSS = """
table.fields th { width: 1%; white-space: nowrap; font-weight: normal; }
table.events { font-size: 7.5pt; }
table.events .id { font-size: 7.5pt; }
table.events tbody { break-inside: avoid; page-break-inside: avoid; }
table.events td.details { border-top: none; padding-bottom: 2pt; }
table.events tr.event td { border-bottom: none; }
p.printed { margin-top: 8pt; }
"""


def _events_html(events: Sequence[EventLine]) -> str:
    """Events as a table, each one two rows kept together: who did what when, then its
    details and proof status."""
    esc = html.escape
    groups = []
    for e in events:
        details = ", ".join(f"{esc(k)}={words(_value(v))}"
                            for k, v in sorted(e.details.items())) or "-"
        groups.append(
            f"<tbody><tr class=\"event\"><td class=\"num\">{mono(e.seq)}</td>"
            f"<td>{mono(e.time)}</td><td>{mono(e.action)}</td>"
            f"<td>{mono(e.actor)} {mono(e.fingerprint)}</td></tr>"
            f"<tr><td></td><td class=\"details\" colspan=\"3\">{details}; "
            f"<i>{esc(e.proof)}</i></td></tr></tbody>"
        )
    return (
        "<table class=\"events\"><thead><tr><th class=\"num\">#</th><th>Time (UTC)</th>"
        "<th>Action</th><th>Actor (name, key fingerprint)</th></tr></thead>"
        + "".join(groups) + "</table>"
    )


def _quoted(text: str) -> str:
    """Prose with its `commands` in monospace, escaped."""
    return "".join(mono(part) if n % 2 else html.escape(part)
                   for n, part in enumerate(text.split("`")))


def _custody_html(report: CustodyReport, text: dict[str, Any], paper: str) -> str:
    esc = html.escape
    ids = {"Case", "Item", "Collected at (UTC)", "Size (bytes)", "Received from",
           "Source package / item"}
    fields = "".join(
        f"<tr><th scope=\"row\">{esc(k)}</th><td>"
        + (" ".join(mono(part) for part in v.split(" ")) if k in ids else esc(v))
        + "</td></tr>"
        for k, v in text["item"]
    )
    fields += "".join(f"<tr><th scope=\"row\">{esc(k.upper())}</th><td>{mono(v)}</td></tr>"
                      for k, v in report.digests.items())
    fields += "".join(f"<tr><th scope=\"row\">{esc(k)}</th><td>{words(v)}</td></tr>"
                      for k, v in text["derivation"])
    cp = report.checkpoint
    checkpoint = (
        f"{mono(cp.origin)}, size {mono(cp.size)}, root {mono(cp.root)}, signed by "
        f"{mono(cp.signed_by)}" if cp else esc(text["checkpoint"])
    )
    parts = [
        f"<h1>Chain of custody: item {mono(report.item)}</h1>",
        f"<table class=\"fields\"><tbody>{fields}"
        f"<tr><th scope=\"row\">Latest checkpoint</th><td>{checkpoint}</td></tr>"
        "</tbody></table>",
        f"<h2>Events in this vault ({len(report.events)})</h2>",
        _events_html(report.events),
    ]
    chain = report.sender_chain
    if chain:
        parts += [
            f"<h2>Sender's chain of custody ({len(chain.events)})</h2>",
            f"<p>Package {mono(chain.package)} from {mono(chain.sender)} "
            f"{mono(chain.sender_fingerprint)}, opened {mono(chain.opened_at)}; "
            + (f"the sender's log {mono(chain.log)} at size {mono(chain.tree_size)}. "
               if chain.log else "")
            + f"{_quoted(_SENDER_NOTE)}</p>",
            _events_html(chain.events) if chain.events
            else "<p>No events of this item in the sender's excerpt.</p>",
        ]
    printer = report.printed_by
    closing = (
        f"Printed at {mono(report.printed_at)} by {mono(printer.name)} "
        f"{mono(printer.fingerprint)}, checkpoint "
        + (f"{mono(cp.origin)} {mono(cp.size)} {mono(cp.root)}." if cp
           else "none yet (run <code>evault custody checkpoint</code>).")
    )
    parts += [
        f"<div class=\"keep\"><p class=\"small\">{_quoted(_NOTE)}</p>"
        f"<p class=\"printed\">{closing}</p>"
        f"{signature_block('Certified a true record of the chain of custody:')}</div>",
    ]
    footer = (f"Chain of custody, item {report.item}, printed {report.printed_at} by "
              f"{printer.name}")
    return form_page(f"Chain of custody: item {report.item}", paper, "\n".join(parts),
                     css=_CUSTODY_CSS, footer=footer)
