"""Canonical JSON: the exact bytes that get signed, hashed and stored.

    >>> canonical_json({"b": 1, "a": "é"})
    b'{"a":"\\xc3\\xa9","b":1}'

Keys sorted, no insignificant whitespace, UTF-8, integers only (no floats, whose text is not
canonical across implementations). For such values this is the RFC 8785 serialisation. We
sign and store these bytes as they are and never re-serialise before verifying.
"""

from __future__ import annotations

import json
from typing import Any

from vault.errors import VerificationError


def _plain(value: Any) -> bool:
    """Whether ``value`` has a canonical form: the fast walk, which names nothing."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(abs(value) <= 2**53)
    if kind is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if kind is list or kind is tuple:
        return all(_plain(v) for v in value)
    return False


def _check(value: Any, where: str) -> None:
    """Refuse a value without a canonical form, naming where in it the fault is. Most values
    pass the fast walk (:func:`_plain`); the slower one, which builds each element's path,
    runs only for those that do not, and for subclasses of the JSON types."""
    if not _plain(value):
        _explain(value, where)


def _explain(value: Any, where: str) -> None:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if abs(value) > 2**53:
            raise ValueError(f"{where}: integer beyond 2**53 has no canonical JSON form")
        return
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _explain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: keys must be strings")
            _explain(v, f"{where}.{k}")
        return
    raise ValueError(f"{where}: {type(value).__name__} has no canonical JSON form")


def canonical_json(value: Any) -> bytes:
    """The canonical UTF-8 bytes of ``value`` (dicts, lists, strings, ints, bools, None)."""
    _check(value, "$")
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def parse_json_object(data: bytes, what: str, *, limit: int = 16 * 1024 * 1024) -> dict[str, Any]:
    """Parse untrusted bytes as one JSON object, refusing oversize input and duplicate keys."""
    if len(data) > limit:
        raise VerificationError(f"{what}: larger than {limit} bytes")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise VerificationError(f"{what}: duplicate key {k!r}")
            out[k] = v
        return out

    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise VerificationError(f"{what}: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise VerificationError(f"{what}: expected a JSON object")
    return value
