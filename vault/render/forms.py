"""Printed forms: one self-contained HTML page that prints the same on A4 and on Letter.

    >>> page = form_page("Chain of custody", "a4", "<p>...</p>", footer="item EV-0123456789AB")
    >>> "@page { size: A4;" in page and "<script" not in page
    True

The verification sheet (:mod:`vault.render.sheet`) and the chain-of-custody form
(:mod:`vault.render.reports`) share this layout: inline CSS only (no external resource, no
script), an ``@page`` rule for the chosen paper, headings kept with what follows them, table
rows never split across pages, and every id, fingerprint and digest in a monospace span
that does not wrap (:func:`mono`), so that a printed value can be read back and compared
character for character. A value too long for one line (an unusual digest of a received
item) goes into a monospace block of its own (:func:`mono_block`) that wraps only there.

May import: the standard library and ``vault.errors``.
"""

from __future__ import annotations

import html
import re

from vault.errors import UsageError

#: Paper names for ``--paper`` and their CSS ``@page`` size.
PAPERS = {"a4": "A4", "letter": "letter"}
DEFAULT_PAPER = "a4"

#: Longer values than this go into a block of their own (a line of the narrower paper, A4,
#: holds about 110 monospace characters at the size used).
_ONE_LINE = 96

_CSS = """
@page { size: %(size)s; margin: 12mm 13mm 13mm; }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; font-size: 8.5pt;
       line-height: 1.25; color: #000; background: #fff; margin: 0; }
@media screen { body { max-width: 185mm; margin: 1.5em auto; padding: 0 1em; } }
h1 { font-size: 13pt; margin: 0 0 3pt; }
h2 { font-size: 10pt; margin: 7pt 0 3pt; padding-bottom: 1pt; border-bottom: 1pt solid #000;
     break-after: avoid; page-break-after: avoid; }
p { margin: 2pt 0 4pt; }
table { border-collapse: collapse; width: 100%%; margin: 0 0 3pt; }
thead { display: table-header-group; }
tr { break-inside: avoid; page-break-inside: avoid; }
th, td { border: .5pt solid #666; padding: 1pt 3pt; text-align: left; vertical-align: top;
         overflow-wrap: anywhere; }
th { background: #eee; font-weight: bold; }
td.num, th.num { text-align: right; }
.id, .block, pre { font-family: "DejaVu Sans Mono", "Liberation Mono", "Courier New",
                   monospace; font-size: 8pt; }
.id { white-space: nowrap; }
.block { display: block; white-space: pre-wrap; word-break: break-all; }
.small { font-size: 7.5pt; }
.keep { break-inside: avoid; page-break-inside: avoid; }
.signature { margin-top: 10pt; break-inside: avoid; page-break-inside: avoid; }
.signature table td { border: none; border-bottom: .7pt solid #000; height: 22pt;
                      vertical-align: bottom; }
.signature table th { background: none; border: none; width: 1%%; white-space: nowrap;
                      vertical-align: bottom; padding-right: 4pt; }
""".strip()


_FOOTER = 'font: 7.5pt "DejaVu Sans", "Liberation Sans", Arial, sans-serif; color: #333;'


def check_paper(paper: str) -> str:
    """The paper name, checked: ``a4`` or ``letter``."""
    if paper not in PAPERS:
        raise UsageError(f"paper {paper!r}: must be one of {', '.join(PAPERS)}")
    return paper


def mono(value: object) -> str:
    """An id, fingerprint or digest, escaped, in a monospace span that never wraps; a value
    too long for one line goes into a :func:`mono_block` instead."""
    text = str(value)
    if len(text) > _ONE_LINE:
        return mono_block(text)
    return f'<span class="id">{html.escape(text)}</span>'


def mono_block(value: object) -> str:
    """A long value in a monospace block of its own, the only place it may wrap."""
    return f'<span class="block">{html.escape(str(value))}</span>'


def words(value: object) -> str:
    """Free text (a title, a reason), escaped; single words that look like ids stay whole."""
    text = str(value)
    if text and not any(c.isspace() for c in text):
        return mono(text)
    return html.escape(text)


def signature_block(role: str) -> str:
    """The lines for a name, a date and a signature, kept together on one page."""
    return (
        f'<div class="signature"><p>{html.escape(role)}</p><table><tbody>'
        "<tr><th>Name</th><td></td><th>Date</th><td></td></tr>"
        '<tr><th>Signature</th><td colspan="3"></td></tr>'
        "</tbody></table></div>"
    )


def _css_string(text: str) -> str:
    """``text`` as a CSS string literal that cannot end the string or the style element."""
    out = "".join(c if c.isalnum() or c in " .,:;()/+=_-" else f"\\{ord(c):x} " for c in text)
    return f'"{out}"'


#: Unicode controls that reorder the text around them: in a sender's title, "photo\u202egpj.exe"
#: would print as "photoexe.jpg". A form shows each one as its code instead.
_BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _bidi_visible(text: str) -> str:
    return _BIDI_CONTROLS.sub(lambda m: f"[U+{ord(m.group()):04X}]", text)


def form_page(title: str, paper: str, body: str, *, css: str = "", footer: str = "") -> str:
    """A complete HTML document: the shared print CSS for ``paper``, then ``body``. Each
    printed page ends with ``footer`` on the left and "page N of M" on the right, so that a
    page separated from the others still says what it belongs to and how many there are."""
    style = _CSS % {"size": PAPERS[check_paper(paper)]}
    style += (
        "\n@page { @bottom-left { content: " + _css_string(footer) + "; "
        + _FOOTER + " } @bottom-right { content: \"page \" counter(page) \" of \" "
        "counter(pages); " + _FOOTER + " } }"
    )
    if css:
        style += "\n" + css.strip()
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_bidi_visible(html.escape(title))}</title>
<style>
@media print {{ body {{ margin: 0; }} }}
{style}
</style>
</head>
<body>
{_bidi_visible(body)}
</body>
</html>
"""
