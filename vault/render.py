"""Rendering of command results: one function, four shapes (table, JSON, JSON lines, CSV).

    >>> print(render_table([{"id": "ICC-OTP", "keys": 1}], ["id", "keys"]), end="")
    id       keys
    ICC-OTP  1

Field names in JSON are the stable interface for scripts; tables are for people.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any


def to_json(data: Any) -> str:
    """Pretty JSON with a trailing newline, stable key order as given."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def to_jsonl(rows: Sequence[dict[str, Any]]) -> str:
    """One compact JSON object per line."""
    return "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(_cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={_cell(v)}" for k, v in value.items()) or "-"
    return str(value).replace("\n", "\\n")


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """CSV with a header row; lists are joined with commas inside the cell."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else _cell(row.get(c)) for c in columns])
    return out.getvalue()


def render_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Left-aligned columns separated by two spaces; an empty list prints the header only."""
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines) + "\n"


def render_record(record: dict[str, Any], skip: Sequence[str] = ()) -> str:
    """``key: value`` lines for one object; nested lists of objects are indented below."""
    lines: list[str] = []
    width = max((len(k) for k in record if k not in skip), default=0)
    for key, value in record.items():
        if key in skip:
            continue
        if isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(f"{key}:")
            for item in value:
                lines.append("  - " + "  ".join(f"{k}={_cell(v)}" for k, v in item.items()))
        else:
            lines.append(f"{key + ':':<{width + 1}} {_cell(value)}")
    return "\n".join(lines) + "\n"
