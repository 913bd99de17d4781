"""The one clock of the vault: UTC, second precision, ISO 8601 when printed.

    >>> from vault.clock import isoformat, utcnow
    >>> isoformat(utcnow()).endswith("Z")
    True

Services take ``now=`` and fall back to :func:`utcnow`; tests pass a fixed time or patch
:func:`utcnow` so that outputs are exact.
"""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    """The current time in UTC, truncated to whole seconds (what custody records carry)."""
    return datetime.now(timezone.utc).replace(microsecond=0)


def isoformat(when: datetime) -> str:
    """``2026-11-28T09:30:00Z``: ISO 8601 in UTC with a ``Z``; the year has four digits
    (which ``strftime("%Y")`` does not give a year before 1000)."""
    w = as_utc(when)
    return (f"{w.year:04d}-{w.month:02d}-{w.day:02d}"
            f"T{w.hour:02d}:{w.minute:02d}:{w.second:02d}Z")


def as_utc(when: datetime) -> datetime:
    """``when`` in UTC; a naive value (as SQLite returns them) is taken to be UTC already."""
    if when.tzinfo is None:
        return when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)


def optional_isoformat(when: datetime | None) -> str | None:
    """ISO text of an optional time (stored naive times are UTC), or None."""
    return isoformat(as_utc(when)) if when else None


def parse_iso(text: str) -> datetime:
    """Parse ISO 8601 with an explicit offset or ``Z``; raise ``ValueError`` otherwise."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("no time zone: add Z or an offset such as +02:00")
    return value.astimezone(timezone.utc)
