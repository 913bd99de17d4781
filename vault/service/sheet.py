"""A printable one-page verification sheet of a package, as courts and registries ask for.

    >>> text = render_sheet(vault, "PKG-0123456789AB", "html")     # doctest: +SKIP
    >>> text.startswith("<!DOCTYPE html>")                          # doctest: +SKIP
    True

The sheet lists what anyone can check with stock tools: the package id, body, sender and
key fingerprints, times, the SHA-256 and size of the file, the envelope and the payload, the
custody checkpoint, and each item's id, size and SHA-256, followed by the commands that check
them (``docs/verify-by-hand.md``). Like every record that leaves the vault it carries no
titles, descriptions, file names, reference or purpose. :func:`sheet_data` gathers the
values (checking the stored envelope against its digest and its checkpoint's signature);
:func:`render_markdown` and :func:`render_html` lay them out.
"""

from __future__ import annotations

import base64
import hashlib
import html
from datetime import datetime
from typing import Any

from sqlalchemy import select

from vault import __version__
from vault.clock import isoformat, utcnow
from vault.custody.note import open_checkpoint
from vault.errors import UsageError, VerificationError
from vault.formats import package as fmt
from vault.service.vaults import Vault

FORMATS = ("md", "html")
GUIDE = "docs/verify-by-hand.md"


def sheet_data(vault: Vault, package_id: str, *, now: datetime | None = None) -> dict[str, Any]:
    """The values of a package's sheet: ids, fingerprints, times, sizes and digests only."""
    from vault.service.custody import vault_verifiers
    from vault.service.packaging import get_package
    from vault.store.models import Acknowledgement, Item, Receipt

    with vault.transaction() as session:
        row = get_package(session, package_id)
        if hashlib.sha256(row.envelope).hexdigest() != row.envelope_sha256:
            raise VerificationError(f"package {row.id}: the stored envelope does not match its "
                                    "SHA-256; run `evault custody verify`")
        envelope = fmt.Envelope.from_bytes(row.envelope)
        checkpoint, _ = open_checkpoint(envelope.checkpoint, vault_verifiers(vault, session))
        ids = [pi.item_id for pi in row.items]
        by_id = {i.id: i for i in session.scalars(select(Item).where(Item.id.in_(ids)))}
        receipt = session.scalar(
            select(Receipt).where(Receipt.package_id == row.id).order_by(Receipt.created_at)
        )
        ack = session.get(Acknowledgement, row.id)
        return {
            "package": row.id,
            "body": row.body_id,
            "state": row.state,
            "sender": envelope.sender.name,
            "sender_fingerprint": envelope.sender.fingerprint,
            "recipients": [k.fingerprint for k in envelope.recipients],
            "escrow": envelope.escrow.fingerprint,
            "created_at": envelope.created_at,
            "sent_at": isoformat(row.sent_at) if row.sent_at else None,
            "acknowledged_at": isoformat(row.acknowledged_at) if row.acknowledged_at else None,
            "acknowledged_by": ack.signer if ack else None,
            "file_name": f"{row.id}.evpkg",
            "file_sha256": row.file_sha256,
            "file_size": row.file_size,
            "envelope_sha256": row.envelope_sha256,
            "statement_sha256": row.statement_sha256,
            "payload_sha256": envelope.payload_sha256,
            "payload_size": envelope.payload_size,
            "checkpoint_origin": checkpoint.origin,
            "checkpoint_size": checkpoint.size,
            "checkpoint_root": base64.b64encode(checkpoint.root_hash).decode(),
            "items": [
                {"id": i, "size": by_id[i].size, "sha256": by_id[i].sha256} for i in ids
            ],
            "receipt": receipt.id if receipt else None,
            "printed_at": isoformat(now or utcnow()),
            "version": __version__,
        }


def _fields(d: dict[str, Any]) -> list[tuple[str, str]]:
    """The label and value of each line of the main table, in print order."""

    def opt(value: Any) -> str:
        return "—" if value is None else str(value)

    return [
        ("Package id", d["package"]),
        ("Receiving body", d["body"]),
        ("State", d["state"]),
        ("Sender", d["sender"]),
        ("Sender key fingerprint", d["sender_fingerprint"]),
        *[(f"Recipient key {n}", fp) for n, fp in enumerate(d["recipients"], start=1)],
        ("Sender escrow key", d["escrow"]),
        ("Created", d["created_at"]),
        ("Sent", opt(d["sent_at"])),
        ("Acknowledged", opt(d["acknowledged_at"])),
        ("Acknowledged by key", opt(d["acknowledged_by"])),
        ("Sharing receipt", opt(d["receipt"])),
        ("Package file", d["file_name"]),
        ("File size (bytes)", str(d["file_size"])),
        ("File SHA-256", d["file_sha256"]),
        ("Envelope SHA-256 (envelope.json)", d["envelope_sha256"]),
        ("Statement SHA-256 (inside the payload)", opt(d["statement_sha256"])),
        ("Payload size (bytes)", str(d["payload_size"])),
        ("Payload SHA-256 (payload.age)", d["payload_sha256"]),
        ("Custody log", d["checkpoint_origin"]),
        ("Checkpoint size (events)", str(d["checkpoint_size"])),
        ("Checkpoint root (base64)", d["checkpoint_root"]),
    ]


def _commands(d: dict[str, Any]) -> list[tuple[str, str]]:
    """Each check: what it shows, and the stock-tool commands, with this package's names."""
    pkg, pid = d["file_name"], d["package"]
    steps = [
        (
            f"The file is the one described here: the digest printed must be {d['file_sha256']}.",
            f"sha256sum {pkg}",
        ),
        (
            "The envelope is signed by the sender (allowed_signers made from the sender's "
            f"contact card, step 1 of {GUIDE}), and the digests of envelope.json and "
            f"payload.age are {d['envelope_sha256']} and {d['payload_sha256']}.",
            f"mkdir -p package && tar -xf {pkg} -C package\n"
            "ssh-keygen -Y verify -f allowed_signers -I sender -n evault-envelope \\\n"
            "  -s package/envelope.json.sig < package/envelope.json\n"
            "sha256sum package/envelope.json package/payload.age",
        ),
    ]
    if d["receipt"]:
        steps.append((
            f"The sharing receipt {d['receipt']} is signed by the sender and names this "
            "envelope's SHA-256.",
            "ssh-keygen -Y verify -f allowed_signers -I sender -n evault-receipt \\\n"
            "  -s receipt.json.sig < receipt.json\n"
            "grep -o '\"envelope_sha256\":\"[0-9a-f]*\"' receipt.json",
        ))
    steps.append((
        "Recipients only: the payload decrypts and the bag inside is whole; each item's "
        "SHA-256 is listed above.",
        "age -d -i \"$AGE_KEY\" -o payload.tar package/payload.age\n"
        "mkdir -p bag && tar -xf payload.tar -C bag\n"
        f"bagit.py --validate bag/{pid}\n"
        f"(cd bag/{pid} && sha256sum -c manifest-sha256.txt && sha256sum -c "
        "tagmanifest-sha256.txt)",
    ))
    steps.append((
        "The signature and digest checks above in one command, for anyone with evault "
        "(exit status 0: verified; --trusted-keys takes the same allowed_signers file).",
        f"evault verify {pkg}" + (" receipt.json" if d["receipt"] else "")
        + " --trusted-keys allowed_signers",
    ))
    return steps


_INTRO = (
    "This sheet lists identifiers, sizes, digests and key fingerprints only: no titles, "
    "descriptions or file names. Each value can be checked with stock tools as shown below; "
    f"{GUIDE} explains every step."
)


def _md_cell(value: str) -> str:
    return "`" + value.replace("`", "'").replace("|", "\\|").replace("\n", " ") + "`"


def render_markdown(d: dict[str, Any]) -> str:
    """The sheet as Markdown: a table of the package, a table of its items, the checks."""
    lines = [
        f"# Verification sheet: package {d['package']}",
        "",
        _INTRO,
        "",
        "| Field | Value |",
        "| --- | --- |",
        *[f"| {label} | {_md_cell(value)} |" for label, value in _fields(d)],
        "",
        f"## Items ({len(d['items'])})",
        "",
        "| # | Item id | Size (bytes) | SHA-256 |",
        "| ---: | --- | ---: | --- |",
        *[
            f"| {n} | {_md_cell(i['id'])} | {i['size']} | {_md_cell(i['sha256'])} |"
            for n, i in enumerate(d["items"], start=1)
        ],
        "",
        "## How to check",
        "",
    ]
    for n, (says, command) in enumerate(_commands(d), start=1):
        lines += [f"{n}. {says}", "", "   ```sh", *[f"   {c}" for c in command.split("\n")],
                  "   ```", ""]
    lines.append(f"Printed {d['printed_at']} by evault {d['version']}.")
    return "\n".join(lines) + "\n"


_CSS = """
body { font-family: "DejaVu Sans", Arial, sans-serif; font-size: 10pt; color: #000;
       background: #fff; margin: 1.5cm; max-width: 60em; }
h1 { font-size: 15pt; margin: 0 0 .4em; }
h2 { font-size: 12pt; margin: 1.2em 0 .4em; border-bottom: 1px solid #000; }
table { border-collapse: collapse; width: 100%; margin: .4em 0; }
th, td { border: 1px solid #555; padding: .2em .4em; text-align: left; vertical-align: top; }
th { background: #eee; }
td.num { text-align: right; }
code, pre { font-family: "DejaVu Sans Mono", "Courier New", monospace; font-size: 8.5pt;
            word-break: break-all; }
pre { white-space: pre-wrap; border: 1px solid #aaa; padding: .3em .5em; margin: .2em 0 .6em; }
ol li { margin-bottom: .3em; }
p.small { font-size: 8.5pt; color: #333; }
@media print {
  body { margin: 0; }
  h2, table, pre { page-break-inside: avoid; }
  th { background: #eee !important; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
@page { size: A4; margin: 1.5cm; }
""".strip()


def render_html(d: dict[str, Any]) -> str:
    """The sheet as one self-contained HTML page (inline CSS, print-friendly, escaped)."""
    e = html.escape
    rows = "\n".join(
        f"<tr><th scope=\"row\">{e(label)}</th><td><code>{e(value)}</code></td></tr>"
        for label, value in _fields(d)
    )
    items = "\n".join(
        f"<tr><td class=\"num\">{n}</td><td><code>{e(i['id'])}</code></td>"
        f"<td class=\"num\">{e(str(i['size']))}</td><td><code>{e(i['sha256'])}</code></td></tr>"
        for n, i in enumerate(d["items"], start=1)
    )
    steps = "\n".join(
        f"<li>{e(says)}<pre>{e(command)}</pre></li>" for says, command in _commands(d)
    )
    title = f"Verification sheet: package {d['package']}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
<style>
{_CSS}
</style>
</head>
<body>
<h1>{e(title)}</h1>
<p>{e(_INTRO)}</p>
<table>
<tbody>
{rows}
</tbody>
</table>
<h2>Items ({len(d['items'])})</h2>
<table>
<thead><tr><th>#</th><th>Item id</th><th>Size (bytes)</th><th>SHA-256</th></tr></thead>
<tbody>
{items}
</tbody>
</table>
<h2>How to check</h2>
<ol>
{steps}
</ol>
<p class="small">Printed {e(d['printed_at'])} by evault {e(d['version'])}.</p>
</body>
</html>
"""


def render_sheet(
    vault: Vault, package_id: str, fmt_name: str, *, now: datetime | None = None
) -> str:
    """The sheet of a package in ``fmt_name`` (``md`` or ``html``)."""
    if fmt_name not in FORMATS:
        raise UsageError(f"package sheet: format must be one of {', '.join(FORMATS)}")
    data = sheet_data(vault, package_id, now=now)
    return render_markdown(data) if fmt_name == "md" else render_html(data)
