"""Oversight reports: who got what and when, and one item's chain of custody.

    >>> report = sharing_report(vault, since=None, until=None, body=None)   # doctest: +SKIP
    >>> report["totals"]["packages"]                                         # doctest: +SKIP
    5

Reports carry ids, counts, sizes, digests, fingerprints and times, never titles,
descriptions or file names, so they can go to an oversight committee as they are.
"""

from __future__ import annotations

import base64
import html
import statistics
from datetime import datetime
from typing import Any

from sqlalchemy import select

from vault.clock import as_utc, isoformat
from vault.custody.merkle import inclusion_proof, leaf_hash, verify_inclusion
from vault.custody.note import open_checkpoint
from vault.errors import NotFoundError, VerificationError
from vault.service.custody import event_dict, identity_names, leaf_hashes, vault_verifiers
from vault.service.items import get_item
from vault.service.vaults import Vault
from vault.store.models import Checkpoint as CheckpointRow
from vault.store.models import CustodyEvent, Package

SHARING_COLUMNS = ("body", "packages", "items", "bytes", "references", "sent", "acknowledged",
                   "median_hours_to_ack")


def sharing_report(
    vault: Vault,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    body: str | None = None,
) -> dict[str, Any]:
    """Per body: packages built in the window, their items, bytes, references, how many were
    sent and acknowledged, and the median time from sending to acknowledgement."""
    with vault.transaction() as session:
        stmt = select(Package).order_by(Package.body_id, Package.created_at)
        if body:
            stmt = stmt.where(Package.body_id == body)
        packages = [
            p for p in session.scalars(stmt)
            if (since is None or as_utc(p.created_at) >= since)
            and (until is None or as_utc(p.created_at) < until)
        ]
        rows: dict[str, dict[str, Any]] = {}
        waits: dict[str, list[float]] = {}
        for p in packages:
            row = rows.setdefault(p.body_id, {"body": p.body_id, "packages": 0, "items": 0,
                                              "bytes": 0, "references": set(), "sent": 0,
                                              "acknowledged": 0})
            row["packages"] += 1
            row["items"] += len(p.items)
            row["bytes"] += p.file_size
            if p.reference:
                row["references"].add(p.reference)
            if p.sent_at is not None:
                row["sent"] += 1
            if p.acknowledged_at is not None:
                row["acknowledged"] += 1
                if p.sent_at is not None:
                    hours = (as_utc(p.acknowledged_at) - as_utc(p.sent_at)).total_seconds() / 3600
                    waits.setdefault(p.body_id, []).append(max(hours, 0.0))
    out = []
    for body_id in sorted(rows):
        row = rows[body_id]
        row["references"] = len(row["references"])
        w = waits.get(body_id)
        row["median_hours_to_ack"] = round(statistics.median(w), 1) if w else None
        out.append(row)
    all_waits = [h for w in waits.values() for h in w]
    totals = {
        "body": "TOTAL",
        **{k: sum(r[k] for r in out) for k in ("packages", "items", "bytes", "references",
                                               "sent", "acknowledged")},
        "median_hours_to_ack": round(statistics.median(all_waits), 1) if all_waits else None,
    }
    return {
        "since": isoformat(since) if since else None,
        "until": isoformat(until) if until else None,
        "rows": out,
        "totals": totals,
    }


def render_sharing(report: dict[str, Any], fmt: str) -> str:
    """The report as table, md, csv or json."""
    from vault.render import render_table, to_csv, to_json

    rows = [*report["rows"], report["totals"]]
    if fmt == "json":
        return to_json(report)
    if fmt == "csv":
        return to_csv(rows, SHARING_COLUMNS)
    if fmt == "md":
        window = f"{report['since'] or 'the beginning'} to {report['until'] or 'now'} (UTC)"
        lines = ["# Sharing report", "", f"Packages built from {window}. Ids, counts and sizes "
                 "only: no titles, descriptions or file names.", "",
                 "| " + " | ".join(SHARING_COLUMNS) + " |",
                 "|" + "---|" * len(SHARING_COLUMNS)]
        for r in rows:
            cells = ["-" if r[c] is None else str(r[c]) for c in SHARING_COLUMNS]
            if r["body"] == "TOTAL":
                cells = [f"**{c}**" for c in cells]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"
    return render_table(rows, SHARING_COLUMNS)


# ----------------------------------------------------------------------------- custody form


def custody_report(vault: Vault, item_id: str) -> dict[str, Any]:
    """One item's chain of custody: digests, every event with actor, and proof status."""
    with vault.transaction() as session:
        item = get_item(session, item_id)
        names = identity_names(session)
        rows = session.scalars(
            select(CustodyEvent).where(CustodyEvent.subject == item_id)
            .order_by(CustodyEvent.seq)
        ).all()
        if not rows:
            raise NotFoundError(f"item {item_id}: no custody events")
        cp_row = session.scalar(select(CheckpointRow).order_by(CheckpointRow.id.desc()).limit(1))
        checkpoint = None
        leaves: list[bytes] = []
        if cp_row is not None:
            checkpoint, _ = open_checkpoint(cp_row.note, vault_verifiers(vault, session))
            leaves = leaf_hashes(session, checkpoint.size)
        events = []
        for row in rows:
            event = event_dict(row)
            status = "after the latest checkpoint"
            if checkpoint is not None and row.seq < checkpoint.size:
                try:
                    verify_inclusion(leaf_hash(row.body), row.seq, checkpoint.size,
                                     inclusion_proof(leaves, row.seq, checkpoint.size),
                                     checkpoint.root_hash)
                    status = "included (proof verified)"
                except VerificationError:
                    status = "NOT included: proof fails"
            events.append({
                "seq": event["seq"], "time": event["time"], "action": event["action"],
                "actor": names.get(event["actor"], "unknown"),
                "fingerprint": event["actor"], "details": event["details"], "proof": status,
            })
        return {
            "item": item.id,
            "case": item.case_id,
            "size": item.size,
            "digests": {"sha256": item.sha256, **{d.algorithm: d.hexdigest for d in item.digests}},
            "received_from": item.received_from,
            "source_package": item.source_package,
            "source_item": item.source_item,
            "checkpoint": None if checkpoint is None else {
                "origin": checkpoint.origin, "size": checkpoint.size,
                "root": base64.b64encode(checkpoint.root_hash).decode(),
                "signed_by": cp_row.signer if cp_row else None,
            },
            "events": events,
        }


def _details(details: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(details.items())) or "-"


def render_custody(report: dict[str, Any], fmt: str) -> str:
    """A printable chain-of-custody form, md or html."""
    cp = report["checkpoint"]
    cp_text = (f"size {cp['size']}, root {cp['root']}, signed by {cp['signed_by']}"
               if cp else "none yet (run `evault custody checkpoint`)")
    header = [
        ("Item", report["item"]), ("Case", report["case"]), ("Size (bytes)", report["size"]),
        *[(f"{k.upper()}", v) for k, v in report["digests"].items()],
        ("Received from", report["received_from"] or "-"),
        ("Source package / item", f"{report['source_package'] or '-'} / "
                                  f"{report['source_item'] or '-'}"),
        ("Checkpoint", cp_text),
    ]
    cols = ("seq", "time", "action", "actor", "fingerprint", "details", "proof")
    if fmt == "md":
        lines = [f"# Chain of custody: {report['item']}", ""]
        lines += [f"- **{k}**: {v}" for k, v in header]
        lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for e in report["events"]:
            lines.append("| " + " | ".join(
                _details(e[c]) if c == "details" else str(e[c]) for c in cols) + " |")
        lines += ["", "Times are UTC. Each event is signed by its actor (Ed25519) and hashed into "
                  "the vault's RFC 9162 Merkle tree; `evault custody verify` re-checks all.", ""]
        return "\n".join(lines)
    esc = html.escape
    head = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in header)
    body = "".join(
        "<tr>" + "".join(
            f"<td>{esc(_details(e[c]) if c == 'details' else str(e[c]))}</td>" for c in cols
        ) + "</tr>" for e in report["events"]
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>Chain of custody {esc(report['item'])}</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;width:100%}"
        "th,td{border:1px solid #999;padding:4px;text-align:left;font-size:10pt;"
        "word-break:break-all}@media print{body{margin:0}}</style></head><body>"
        f"<h1>Chain of custody: {esc(report['item'])}</h1><table>{head}</table><h2>Events</h2>"
        "<table><tr>" + "".join(f"<th>{c}</th>" for c in cols) + f"</tr>{body}</table>"
        "<p>Times are UTC. Each event is signed by its actor (Ed25519) and hashed into the "
        "vault's RFC 9162 Merkle tree.</p></body></html>\n"
    )
