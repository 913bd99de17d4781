"""The CASE/UCO export: items and their custody events as a CASE 1.5.0 JSON-LD document.

    >>> doc = CaseUcoExport(
    ...     vault_id="0f1e2d3c", tool_version="0.1.0", case="UA-2026-0042",
    ...     items=(ExportItem("EV-0123456789AB", "statement.pdf", 5, (("sha256", "ab" * 32),)),),
    ...     events=(ExportEvent(0, "2026-11-28T09:30:00Z", "item.ingested", "EV-0123456789AB",
    ...                         "SHA256:abc", "registry-office", "00" * 32),),
    ... )
    >>> text = render_case_uco(doc)
    >>> '"@type": "case-investigation:InvestigativeAction"' in text
    True

CASE (the Cyber-investigation Analysis Standard Expression) and UCO, its parent ontology,
are how forensic tools hand each other evidence and what was done to it. The document is
plain JSON-LD written with :mod:`json` alone (no RDF library is imported by evault), in the
shapes the CASE examples use, and the test suite validates it with ``case_validate`` from
``case-utils`` at :data:`CASE_VERSION`:

- each item is a ``uco-observable:File`` with a ``FileFacet`` (file name and size) and a
  ``ContentDataFacet`` (size and its ``uco-types:Hash``es: SHA-256 always, MD5 and SHA-1
  where they were computed at intake, as ``xsd:hexBinary``);
- each custody event of an item is a ``case-investigation:InvestigativeAction`` named by its
  action (``item.ingested``, ``item.exported``...), with its time as ``uco-action:startTime``
  and ``endTime``, the identity that signed it as ``performer``, evault as ``instrument``
  (a ``uco-tool:Tool`` with the version that wrote the document: the log does not record the
  version that signed each event), the item as ``object``, and as ``result`` a
  ``case-investigation:ProvenanceRecord`` whose exhibit number is the item's id; the event
  before it about the same item is its ``case-investigation:wasInformedBy``, so the actions
  form the chain the custody log holds. Its description names the log, the event's sequence
  number and its leaf hash, which tie it to the signed log (``evault custody proof``);
- the case is a ``case-investigation:Investigation`` named by its id, grouping all of these.

Nothing sealed goes in but the file name: no title, description, source, place, tag or note.

Every node has an IRI (UCO refuses blank nodes) under the vault's own prefix
``kb:`` = ``urn:evault:<vault id>:``, made from what it is (``kb:evault-item-EV-...``) and
ending with a UUID derived from that name (UUIDv5), as UCO advises: the same vault and items
give the same identifiers, and the same bytes, every time. The graph is sorted by
identifier and the keys of each node by name.

May import: the standard library only.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: The CASE release the document is written for (UCO 1.4.0 under it); the tests validate
#: with ``case_validate --built-version case-1.5.0``.
CASE_VERSION = "1.5.0"

_CONTEXT = {
    "case-investigation": "https://ontology.caseontology.org/case/investigation/",
    "uco-action": "https://ontology.unifiedcyberontology.org/uco/action/",
    "uco-core": "https://ontology.unifiedcyberontology.org/uco/core/",
    "uco-identity": "https://ontology.unifiedcyberontology.org/uco/identity/",
    "uco-observable": "https://ontology.unifiedcyberontology.org/uco/observable/",
    "uco-tool": "https://ontology.unifiedcyberontology.org/uco/tool/",
    "uco-types": "https://ontology.unifiedcyberontology.org/uco/types/",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
}

#: evault's digest names and the names of UCO's HashNameVocab.
HASH_METHODS = {"md5": "MD5", "sha1": "SHA1", "sha256": "SHA256", "sha512": "SHA512"}


@dataclass(frozen=True, slots=True)
class ExportItem:
    """An item as it is exported: id, original file name, size in bytes, and its digests as
    ``(algorithm, hex)`` pairs (``sha256`` first; others as recorded at intake)."""

    id: str
    file_name: str
    size: int
    digests: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class ExportEvent:
    """A custody event about an item: its seq in the log, time (ISO 8601 UTC), action, the
    item, the signing key's fingerprint and its identity's name (None if not known here),
    and its leaf hash (hex)."""

    seq: int
    time: str
    action: str
    item: str
    actor: str
    actor_name: str | None
    leaf_hash: str


@dataclass(frozen=True, slots=True)
class CaseUcoExport:
    """What a CASE/UCO document holds: the vault (its id names the ``kb:`` prefix and the
    log), the evault version writing it, the case (None to leave the investigation out),
    the items, and their events in log order."""

    vault_id: str
    tool_version: str
    case: str | None
    items: tuple[ExportItem, ...]
    events: tuple[ExportEvent, ...]

    def render(self) -> str:
        """The document as JSON-LD text (:func:`render_case_uco`)."""
        return render_case_uco(self)


class _Ids:
    """Node identifiers: ``kb:evault-<kind>-<name>-<UUIDv5 of the full name>``."""

    def __init__(self, vault_id: str) -> None:
        self.prefix = f"urn:evault:{vault_id}:"
        self.namespace = uuid.uuid5(uuid.NAMESPACE_URL, self.prefix)

    def __call__(self, kind: str, name: str) -> str:
        local = f"evault-{kind}-{name}"
        return f"kb:{local}-{uuid.uuid5(self.namespace, local)}"


def _ref(node_id: str) -> dict[str, str]:
    return {"@id": node_id}


def _time(value: str) -> dict[str, str]:
    return {"@type": "xsd:dateTime", "@value": value}


def _file(ids: _Ids, item: ExportItem) -> dict[str, Any]:
    hashes = [
        {
            "@id": ids("hash", f"{item.id}-{algorithm}"),
            "@type": "uco-types:Hash",
            "uco-types:hashMethod": HASH_METHODS[algorithm],
            "uco-types:hashValue": {"@type": "xsd:hexBinary", "@value": hexdigest},
        }
        for algorithm, hexdigest in sorted(item.digests)
        if algorithm in HASH_METHODS
    ]
    return {
        "@id": ids("item", item.id),
        "@type": "uco-observable:File",
        "uco-core:name": item.id,
        "uco-core:hasFacet": [
            {
                "@id": ids("content-data-facet", item.id),
                "@type": "uco-observable:ContentDataFacet",
                "uco-observable:sizeInBytes": item.size,
                "uco-observable:hash": hashes,
            },
            {
                "@id": ids("file-facet", item.id),
                "@type": "uco-observable:FileFacet",
                "uco-observable:fileName": item.file_name,
                "uco-observable:sizeInBytes": item.size,
            },
        ],
    }


def _identity_id(ids: _Ids, fingerprint: str) -> str:
    """An identity's node: named by its key's UUID alone (a fingerprint's base64 has ``/``
    and ``+``, which an IRI had better not carry); the fingerprint is in its description."""
    return f"kb:evault-identity-{uuid.uuid5(ids.namespace, fingerprint)}"


def _identity(ids: _Ids, fingerprint: str, name: str | None) -> dict[str, Any]:
    node: dict[str, Any] = {
        "@id": _identity_id(ids, fingerprint),
        "@type": "uco-identity:Identity",
        "uco-core:description": f"evault identity signing with the Ed25519 key {fingerprint}",
    }
    if name is not None:
        node["uco-core:name"] = name
    return node


def _graph(doc: CaseUcoExport) -> list[dict[str, Any]]:
    ids = _Ids(doc.vault_id)
    log = f"evault/{doc.vault_id}"
    tool = {
        "@id": ids("tool", doc.tool_version),
        "@type": "uco-tool:Tool",
        "uco-core:name": "evault",
        "uco-tool:toolType": "chain-of-custody vault",
        "uco-tool:version": doc.tool_version,
    }
    nodes: list[dict[str, Any]] = [tool]
    nodes.extend(_file(ids, item) for item in doc.items)
    actors: dict[str, str | None] = {}
    previous: dict[str, str] = {}
    for event in sorted(doc.events, key=lambda e: e.seq):
        actors.setdefault(event.actor, event.actor_name)
        action_id = ids("action", f"{event.item}-{event.seq}")
        record_id = ids("provenance-record", f"{event.item}-{event.seq}")
        action: dict[str, Any] = {
            "@id": action_id,
            "@type": "case-investigation:InvestigativeAction",
            "uco-core:name": event.action,
            "uco-core:description": (
                f"custody event {event.seq} of log {log}, leaf hash {event.leaf_hash}"),
            "uco-action:startTime": _time(event.time),
            "uco-action:endTime": _time(event.time),
            "uco-action:performer": _ref(_identity_id(ids, event.actor)),
            "uco-action:instrument": [_ref(tool["@id"])],
            "uco-action:object": [_ref(ids("item", event.item))],
            "uco-action:result": [_ref(record_id)],
        }
        if event.item in previous:
            action["case-investigation:wasInformedBy"] = [_ref(previous[event.item])]
        previous[event.item] = action_id
        nodes.append(action)
        nodes.append({
            "@id": record_id,
            "@type": "case-investigation:ProvenanceRecord",
            "uco-core:description": f"{event.item} after {event.action}",
            "case-investigation:exhibitNumber": event.item,
            "uco-core:object": [_ref(ids("item", event.item))],
        })
    nodes.extend(_identity(ids, fp, name) for fp, name in actors.items())
    if doc.case is not None:
        members = sorted(n["@id"] for n in nodes if n["@type"] in _GROUPED)
        nodes.append({
            "@id": ids("case", doc.case),
            "@type": "case-investigation:Investigation",
            "uco-core:name": doc.case,
            "uco-core:object": [_ref(m) for m in members],
        })
    return sorted(nodes, key=lambda n: str(n["@id"]))


_GROUPED = {
    "uco-observable:File",
    "case-investigation:InvestigativeAction",
    "case-investigation:ProvenanceRecord",
}


def render_case_uco(doc: CaseUcoExport) -> str:
    """The document as JSON-LD text: the same export gives the same bytes."""
    context = {**_CONTEXT, "kb": _Ids(doc.vault_id).prefix}
    return json.dumps({"@context": context, "@graph": _graph(doc)},
                      indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def digests_of(sha256: str, others: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """An item's digests for :class:`ExportItem`: SHA-256, then the others by name."""
    return (("sha256", sha256), *sorted(others))
