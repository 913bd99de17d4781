"""Text shapes of command results: table, record, JSON, JSON lines, CSV; safe names.

    >>> print(render_table([{"id": "ICC-OTP", "keys": 1}], ["id", "keys"]), end="")
    id       keys
    ICC-OTP  1

Field names in JSON are the stable interface for scripts; tables are for people.

Names, titles and card fields come from senders and bodies, so every shape for people shows
their control characters as visible escapes (:func:`terminal_safe`): an ESC sequence, an OSC 8
link, a carriage return or a bidi override in a title cannot clear the screen, hide a line or
reorder what a reader sees. JSON keeps the exact value, with every such character written
as a ``\\uXXXX`` escape (:func:`to_json`), which a JSON reader decodes back.

May import: the standard library only.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

#: What a terminal would act on rather than print: C0 controls (tab and newline included), DEL,
#: C1 controls (0x9b is a one-byte CSI), line and paragraph separators, lone surrogates, and
#: the Unicode controls that reorder the text around them ("photo\u202egpj.exe").
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff"
                     "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    ch = match.group()
    code = ord(ch)
    if _BIDI.fullmatch(ch):
        return f"[U+{code:04X}]"  # as the printed forms show them
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape's stand-in for an undecodable byte
        return f"\\x{code - 0xDC00:02x}"
    if code > 0xFF:
        return f"\\u{code:04x}"
    return f"\\x{code:02x}"


def terminal_safe(text: str) -> str:
    r"""``text`` on one line with nothing a terminal would act on: control characters become
    ``\x1b``-style escapes (as ``verify`` prints names), bidi controls ``[U+202E]``.

    >>> print(terminal_safe("a\x1b[2Jb\rc\u202ed"))
    a\x1b[2Jb\x0dc[U+202E]d
    """
    if text.isprintable():  # nothing _UNSAFE matches is printable: the common case, in C
        return text
    return _UNSAFE.sub(_visible, text)


def markdown_safe(text: str) -> str:
    r"""``text`` as literal Markdown inline text, safe in a table cell: control characters as in
    :func:`terminal_safe` (so no newline ends the row), then backslash, ``|`` and the HTML
    characters ``& < >`` escaped so nothing becomes a column, a tag or a link.

    >>> print(markdown_safe("a|b<i>"))
    a\|b&lt;i&gt;
    """
    text = terminal_safe(text).replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


#: A CSV cell a spreadsheet would read as a formula (OWASP "CSV injection"): it gets a leading
#: apostrophe. Tab and carriage return are already escaped by :func:`terminal_safe`.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


#: What ``json.dumps(ensure_ascii=False)`` writes as it is and a terminal would act on: the
#: :data:`_UNSAFE` characters past the C0 controls (which JSON escapes itself).
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff"
                          "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def json_safe(text: str) -> str:
    r"""JSON text with DEL, the C1 controls, line and paragraph separators, lone surrogates
    and the bidi controls as ``\uXXXX`` escapes: the same values to a JSON reader, nothing
    for a terminal to act on. Outside a string JSON has only ASCII, so each is in one.

    >>> print(json_safe(json.dumps({"name": "photo\u202egpj.exe\x9b2J"}, ensure_ascii=False)))
    {"name": "photo\u202egpj.exe\u009b2J"}
    """
    if text.isascii() and "\x7f" not in text:  # the common case, in C
        return text
    return _JSON_UNSAFE.sub(_json_escape, text)


def to_json(data: Any) -> str:
    """Pretty JSON with a trailing newline, stable key order as given (:func:`json_safe`)."""
    return json_safe(json.dumps(data, indent=2, ensure_ascii=False)) + "\n"


def to_jsonl(rows: Sequence[dict[str, Any]]) -> str:
    """One compact JSON object per line (:func:`json_safe`)."""
    return json_safe("".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n"
                             for r in rows))


def _cell(value: Any) -> str:
    if type(value) is str:  # the common case first: a listing has hundreds of thousands
        return terminal_safe(value)
    if type(value) is int:
        return str(value)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(_cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return ",".join(f"{_cell(k)}={_cell(v)}" for k, v in value.items()) or "-"
    return terminal_safe(str(value))


def _csv_cell(value: Any) -> str:
    """A CSV cell: numbers as they are (so -5 stays a number), any text that a spreadsheet
    would run as a formula prefixed with an apostrophe."""
    if value is None:
        return ""
    text = _cell(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return text
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv_column(values: list[Any]) -> list[str]:
    """The CSV cells of one column: :func:`_csv_cell` of each value, the common cases (all
    text, all integers) in one loop."""
    kinds = set(map(type, values))
    if kinds == {str}:
        return ["'" + t if t.startswith(_FORMULA_START) else t for t in _column(values)]
    if kinds == {int}:
        return list(map(str, values))
    return list(map(_csv_cell, values))


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """CSV with a header row; lists are joined with commas inside the cell. Text cells
    starting with ``= + - @`` (or tab, CR) get a leading ``'`` (OWASP CSV injection);
    numeric values are never changed."""
    if not columns:
        return "\n" * (len(rows) + 1)
    return columns_to_csv({c: [r.get(c) for r in rows] for c in columns}, columns)


def columns_to_csv(table: Mapping[str, Sequence[Any]], columns: Sequence[str]) -> str:
    """:func:`to_csv` of rows given column by column: ``table`` maps each of ``columns`` to
    its values, one a row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(zip(*(_csv_column(list(table[c])) for c in columns), strict=True))
    return out.getvalue()


def _column(values: list[Any]) -> list[str]:
    """The cells of one column: :func:`_cell` of each value, with the common cases (all
    text, all integers) done in one loop rather than a call per cell."""
    kinds = set(map(type, values))
    if kinds == {str}:
        if "".join(values).isprintable():  # every cell is, in one C call
            return values
        return [v if v.isprintable() else _UNSAFE.sub(_visible, v) for v in values]
    if kinds == {int}:
        return list(map(str, values))
    if kinds <= {list, tuple}:  # labels: mostly none
        return [_cell(v) if v else "-" for v in values]
    return list(map(_cell, values))


def render_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Left-aligned columns separated by two spaces; an empty list prints the header only."""
    if not columns:
        return "\n" * (len(rows) + 1)
    return render_columns({c: [r.get(c) for r in rows] for c in columns}, columns)


def render_columns(table: Mapping[str, Sequence[Any]], columns: Sequence[str]) -> str:
    """:func:`render_table` of rows given column by column (a listing of 100,000 rows makes
    no row objects): ``table`` maps each of ``columns`` to its values, one a row."""
    cells = [_column(list(table[c])) for c in columns]
    header = []
    # Each column but the last padded to its width (most often all its cells have it
    # already), the last one not: a line then ends as its last cell does, and needs the
    # rstrip of a padded line only where that cell is empty or ends in white space.
    for n, (name, column) in enumerate(zip(columns, cells, strict=True)):
        lengths = list(map(len, column))
        width = max(len(name), max(lengths, default=0))
        header.append(name.ljust(width))
        if n < len(columns) - 1 and min(lengths, default=width) < width:
            cells[n] = [c.ljust(width) for c in column]
    lines = ["  ".join(header).rstrip()]
    rows = zip(*cells, strict=True)
    ends = "".join([c[-1:] for c in cells[-1]])  # each cell's last character, if any
    if len(ends) < len(cells[-1]) or len("".join(ends.split())) < len(ends):  # white space
        lines += ["  ".join(row).rstrip() for row in rows]
    else:
        lines += map("  ".join, rows)
    return "\n".join(lines) + "\n"


def _table_lines(cells: Sequence[Sequence[str]], widths: Sequence[int]) -> str:
    return "".join(
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n"
        for row in cells
    )


def cell_width(value: Any) -> int:
    """How wide ``value`` is in a table's cell (for :class:`RowsText`'s ``widths``)."""
    return len(_cell(value))


class RowsText:
    """A list of rows as text, made a part at a time, in any of the shapes above
    (``fmt``: ``json``, ``jsonl``, ``csv`` or None for a table): :meth:`part` for each
    batch of rows, :meth:`end` after the last. Joined, the parts are exactly what
    :func:`to_json`, :func:`to_jsonl`, :func:`to_csv` or :func:`render_table` give for all
    the rows at once, for a table when ``widths`` holds each column's widest cell up front
    (columns it leaves out, such as fixed-width ids and digests, are sized by the first
    part); a later cell wider than that is printed whole, out of line.

        >>> text = RowsText(None, ["id", "name"], {"name": 5})
        >>> print(text.part([{"id": "A-1", "name": "ab"}]) + text.part([{"id": "A-2",
        ...       "name": "abcde"}]) + text.end(), end="")
        id   name
        A-1  ab
        A-2  abcde
    """

    def __init__(self, fmt: str | None, columns: Sequence[str],
                 widths: dict[str, int] | None = None) -> None:
        self.fmt = fmt
        self.columns = list(columns)
        self.widths = [max(len(c), (widths or {}).get(c, 0)) for c in self.columns]
        self.started = False

    def part(self, rows: Sequence[dict[str, Any]]) -> str:
        """The text of the next rows (the header or the JSON array's start with the first)."""
        if not rows:
            return ""
        first, self.started = not self.started, True
        if self.fmt == "json":
            items = ",\n".join(
                "  " + json.dumps(r, indent=2, ensure_ascii=False).replace("\n", "\n  ")
                for r in rows)
            return ("[\n" if first else ",\n") + json_safe(items)
        if self.fmt == "jsonl":
            return to_jsonl(rows)
        if self.fmt == "csv":
            text = to_csv(rows, self.columns)
            return text if first else text.split("\n", 1)[1]
        cells = [[_cell(r.get(c)) for c in self.columns] for r in rows]
        if first:
            self.widths = [max([w] + [len(row[i]) for row in cells])
                           for i, w in enumerate(self.widths)]
            cells.insert(0, self.columns)
        return _table_lines(cells, self.widths)

    def end(self) -> str:
        """What follows the last part: the JSON array's end; with no rows at all, the
        whole text of none (``[]``, or a table's or CSV's header)."""
        if not self.started:
            if self.fmt == "json":
                return to_json([])
            if self.fmt == "jsonl":
                return ""
            if self.fmt == "csv":
                return to_csv([], self.columns)
            return render_table([], self.columns)
        return "\n]\n" if self.fmt == "json" else ""

    def cut_short(self) -> str:
        """What ends the text when no more parts come after a failure: the JSON array's
        end, so that what was printed is still one JSON array; nothing if nothing was."""
        return "\n]\n" if self.started and self.fmt == "json" else ""


def render_record(record: dict[str, Any], skip: Sequence[str] = ()) -> str:
    """``key: value`` lines for one object; nested lists of objects are indented below."""
    lines: list[str] = []
    width = max((len(k) for k in record if k not in skip), default=0)
    for key, value in record.items():
        if key in skip:
            continue
        if isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(f"{terminal_safe(key)}:")
            for item in value:
                lines.append("  - " + "  ".join(f"{_cell(k)}={_cell(v)}" for k, v in item.items()))
        else:
            lines.append(f"{terminal_safe(key) + ':':<{width + 1}} {_cell(value)}")
    return "\n".join(lines) + "\n"
