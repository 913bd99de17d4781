"""Presentation: command results and reports as text for people and scripts.

    >>> from vault.render import render_table
    >>> print(render_table([{"id": "ICC-OTP", "keys": 1}], ["id", "keys"]), end="")
    id       keys
    ICC-OTP  1

The service layer returns data; this package lays it out, and only the command line calls
it. ``text`` holds the shapes every command shares (table, record, JSON, JSON lines, CSV)
and the escaping of names for a terminal or a Markdown cell, re-exported here; ``forms``
the printed HTML page; ``sheet`` a package's verification sheet; ``reports`` the sharing
report and the chain-of-custody form.

May import: the layers below it (today only ``vault.errors`` and the standard library; a
service's result types if it needs them), never the command line or ``click``; no service
imports it. The import-linter contracts in ``pyproject.toml`` check both.
"""

from __future__ import annotations

from vault.render.text import (
    RowsText,
    cell_width,
    columns_to_csv,
    json_safe,
    markdown_safe,
    render_columns,
    render_record,
    render_table,
    terminal_safe,
    to_csv,
    to_json,
    to_jsonl,
)

__all__ = [
    "RowsText",
    "cell_width",
    "columns_to_csv",
    "json_safe",
    "markdown_safe",
    "render_columns",
    "render_record",
    "render_table",
    "terminal_safe",
    "to_csv",
    "to_json",
    "to_jsonl",
]
