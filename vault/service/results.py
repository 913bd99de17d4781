"""The base of the typed results the use cases return, and their one JSON form.

One job: :class:`Result`, mixed into the frozen dataclasses a service returns (an identity,
a body, a contact...), gives them ``to_json()``: the plain dict the command line prints as
``--json``, a table row or a CSV line. Its keys are the dataclass's fields, in field order;
a nested result becomes a dict and a tuple a list, so the output stays what it was when the
services returned dicts.

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True, slots=True)
    ... class Key(Result):
    ...     fingerprint: str
    >>> @dataclass(frozen=True, slots=True)
    ... class Holder(Result):
    ...     name: str
    ...     keys: tuple[Key, ...]
    >>> Holder("office", (Key("SHA256:x"),)).to_json()
    {'name': 'office', 'keys': [{'fingerprint': 'SHA256:x'}]}

A result whose JSON has some keys only when they apply subclasses :class:`Sparse` instead
and names them in ``OPTIONAL``: those fields are left out of ``to_json()`` while None.

May import: the standard library only.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar


class Result:
    """A service's result: a frozen dataclass whose fields are its JSON object's keys."""

    __slots__ = ()
    # Set by @dataclass on each subclass; declared so that the type checker knows them.
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def to_json(self) -> dict[str, Any]:
        """The JSON object form: field name -> value, in field order."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


class Sparse(Result):
    """A result whose ``OPTIONAL`` fields are left out of ``to_json()`` while None: its JSON
    object has those keys only when they apply (a proof's hashes only for an event the
    checkpoint includes, a repair count only with ``--repair``...).

        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True, slots=True, kw_only=True)
        ... class Step(Sparse):
        ...     OPTIONAL: ClassVar[frozenset[str]] = frozenset({"proof"})
        ...     seq: int
        ...     proof: tuple[str, ...] | None = None
        ...     status: str
        >>> Step(seq=7, status="after checkpoint").to_json()
        {'seq': 7, 'status': 'after checkpoint'}
        >>> Step(seq=3, proof=("aGFzaA==",), status="included").to_json()
        {'seq': 3, 'proof': ['aGFzaA=='], 'status': 'included'}

    A field not in ``OPTIONAL`` is kept when None (it prints as ``null``).
    """

    __slots__ = ()
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()

    def to_json(self) -> dict[str, Any]:
        """The fields, in field order, without the optional ones that are None."""
        return {k: v for k, v in Result.to_json(self).items()
                if not (v is None and k in self.OPTIONAL)}


def _plain(value: Any) -> Any:
    if isinstance(value, Result):
        return value.to_json()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value
