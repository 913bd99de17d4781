"""The custody log end to end: verify finds every tampering, checkpoints, proofs, concurrency.

Tests run on SQLite and PostgreSQL (the ``cli`` fixture), except a few tampering cases whose
checks do not depend on the database (``sqlite_cli``). Tampering goes straight to the
database, as an attacker with write access to it would, and ``evault custody verify`` must
exit 3 and name each damaged event.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import SQLITE_ONLY, Cli, reuse_world
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from vault.crypto.keys import SigningKey, VerifyKey
from vault.custody import verify as custody_verify
from vault.custody.events import Event
from vault.custody.merkle import (
    Frontier,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    range_roots,
    root_of,
    subtree_sizes,
    verify_consistency,
    verify_inclusion,
)
from vault.custody.note import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    note_key_id,
    open_checkpoint,
    sign_checkpoint,
)
from vault.errors import UsageError, VerificationError
from vault.service import anchor
from vault.service.identities import load_keypair
from vault.service.vaults import Vault, open_vault
from vault.store.models import CustodyEvent, CustodyHead, IdentityKey, VaultKey
from vault.store.models import SignedCheckpoint as CheckpointRow

REPO = Path(__file__).resolve().parent.parent
CASE = "UA-2026-0042"
IDENTITY = "registry-office"
# Ingested in this order: identity.created is event 0, case.created 1, then 2, 3, 4.
EVIDENCE = {
    "statement-01.txt": b"Fictional witness statement, first page.\n",
    "photo-02.jpg": b"\xff\xd8\xff\xe0 fictional photo bytes\n",
    "report-03.txt": b"Fictional expert report on a fictional crater.\n",
}
EVENTS = 2 + len(EVIDENCE)
NO_CHECKPOINT = "evault: custody log: no checkpoint yet; run `evault custody checkpoint`\n"


@pytest.fixture(autouse=True)
def _fast_key_file_and_blobs(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the log, not blob durability: blobs skip the file-system sync."""
    monkeypatch.setattr("vault.store.blobs.syncfs", lambda path: True)


def populate(cli: Cli, tmp_path: Path) -> list[str]:
    """An identity, a case and the EVIDENCE files ingested; the item ids in order."""
    cli.ok("identity", "create", IDENTITY)
    paths = []
    for name, content in EVIDENCE.items():
        path = tmp_path / name
        path.write_bytes(content)
        paths.append(str(path))
    out = cli.ok("ingest", *paths, "--case", CASE, "--create-case", "--json")
    return [row["id"] for row in json.loads(out.stdout)]


def ingest_more(cli: Cli, tmp_path: Path, *names: str) -> list[str]:
    """Ingest further fictional files into the case; their item ids."""
    paths = []
    for name in names:
        path = tmp_path / name
        path.write_bytes(f"Fictional later evidence: {name}\n".encode())
        paths.append(str(path))
    out = cli.ok("ingest", *paths, "--case", CASE, "--json")
    return [row["id"] for row in json.loads(out.stdout)]


@contextlib.contextmanager
def opened(cli: Cli) -> Iterator[tuple[Vault, Session]]:
    """The vault's database in one transaction, committed at the end (as an attacker would)."""
    vault = open_vault(cli.vault)
    try:
        with vault.transaction() as session:
            yield vault, session
    finally:
        vault.close()


def _event(session: Session, seq: int) -> CustodyEvent:
    """Custody event ``seq`` as stored."""
    row = session.get(CustodyEvent, seq)
    assert row is not None
    return row


def _identity_key(session: Session) -> IdentityKey:
    """The first identity key of the vault (the only one in most tests)."""
    key = session.scalar(select(IdentityKey).order_by(IdentityKey.id).limit(1))
    assert key is not None
    return key


def origin_of(cli: Cli) -> str:
    """The log's name, ``evault/<vault-id>``, as it appears in events and checkpoints."""
    vault = open_vault(cli.vault)
    try:
        return f"evault/{vault.config.vault_id}"
    finally:
        vault.close()


def stored_leaves(cli: Cli) -> list[bytes]:
    """Leaf hashes recomputed from the stored event bytes, in order."""
    with opened(cli) as (_, session):
        bodies = session.scalars(select(CustodyEvent.body).order_by(CustodyEvent.seq)).all()
    return [leaf_hash(b) for b in bodies]


def identity_verifier(cli: Cli) -> NoteVerifier:
    """The note verifier of the identity's key, from its public ``identity show`` output."""
    shown = json.loads(cli.ok("identity", "show", IDENTITY, "--json").stdout)
    return NoteVerifier.for_key(origin_of(cli), VerifyKey.from_openssh(shown["signing_key"]))


def signer_of(vault: Vault, session: Session, fingerprint: str | None = None) -> SigningKey:
    """The private signing key of an identity key of this vault (the first one by default)."""
    if fingerprint is None:
        return load_keypair(vault, _identity_key(session)).signing
    key = session.scalar(select(IdentityKey).where(IdentityKey.fingerprint == fingerprint))
    assert key is not None
    return load_keypair(vault, key).signing


def resign(
    vault: Vault, session: Session, seq: int, *, key: SigningKey | None = None, **changes: object
) -> CustodyEvent:
    """Rewrite event ``seq`` with ``changes``, validly signed, every column consistent.

    Only the log head and the checkpoints still remember the original.
    """
    row = _event(session, seq)
    event = dataclasses.replace(Event.decode(row.body), **changes)  # type: ignore[arg-type]
    signing = key or signer_of(vault, session, event.actor)
    body, signature = event.sign(signing)
    row.recorded_at = event.time
    row.actor = event.actor
    row.action = event.action
    row.subject = event.subject
    row.body = body
    row.signature = signature
    row.leaf_hash = leaf_hash(body)
    return row


def rebuild_head(session: Session) -> None:
    """Make the log head agree with the stored leaf hashes, as a careful attacker would."""
    session.flush()
    frontier = Frontier()
    for leaf in session.scalars(select(CustodyEvent.leaf_hash).order_by(CustodyEvent.seq)):
        frontier.append(leaf)
    head = session.get(CustodyHead, 1)
    assert head is not None
    head.size = frontier.size
    head.root = frontier.root()
    head.frontier = frontier.to_bytes()


def accept_head(vault: Vault, session: Session) -> None:
    """Move the key store's anchor (vault.service.anchor) to the head as it now is, as if the
    vault itself had written this log: for tests of verify's other checks, not of rollback."""
    session.flush()
    head = session.get(CustodyHead, 1)
    assert head is not None
    anchor.save(vault, anchor.Anchor.at(Frontier.from_bytes(head.frontier)))


def body_with_size(body: bytes, size: int, new_size: int) -> bytes:
    old = f'"size":{size}'.encode()
    assert body.count(old) == 1
    return body.replace(old, f'"size":{new_size}'.encode())


def flip_bit(data: bytes) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:]


# ----------------------------------------------------------------------------- verify OK


def test_fresh_vault_verifies(cli: Cli, tmp_path: Path) -> None:
    populate(cli, tmp_path)
    result = cli("custody", "verify")
    assert (result.exit_code, result.stdout, result.stderr) == (
        0,
        f"OK: {EVENTS} events, 0 checkpoints (structure and signatures)\n",
        "",
    )
    quick = cli("custody", "verify", "--quick")
    assert (quick.exit_code, quick.stdout) == (
        0,
        f"OK: {EVENTS} events, 0 checkpoints (structure)\n",
    )
    report = json.loads(cli.ok("custody", "verify", "--json").stdout)
    assert report == {
        "ok": True,
        "events": EVENTS,
        "checkpoints": 0,
        "witnessed": 0,
        "signatures_checked": EVENTS,
        "defects": [],
    }
    quick_report = json.loads(cli.ok("custody", "verify", "--quick", "--json").stdout)
    assert quick_report["signatures_checked"] == 0

    with opened(cli) as (_, session):
        actions = session.execute(
            select(CustodyEvent.seq, CustodyEvent.action).order_by(CustodyEvent.seq)
        ).all()
    assert [tuple(a) for a in actions] == [
        (0, "identity.created"),
        (1, "case.created"),
        (2, "item.ingested"),
        (3, "item.ingested"),
        (4, "item.ingested"),
    ]


# ----------------------------------------------------------------------------- tampering
#
# Each case changes the database behind evault's back and returns the defects verify must
# list, in its order: defects of the whole log first, then by event.

Tamper = Callable[[Vault, Session], list[str]]


def anchor_shorter(size: int) -> str:
    """The key store's anchor (vault.service.anchor) is at the populated log's EVENTS."""
    return (
        "the log is shorter than the last checkpoint this vault signed "
        f"({size} events, the checkpoint has {EVENTS})"
    )


def anchor_differs(size: int = EVENTS) -> str:
    return (
        "the log differs from the last checkpoint this vault signed "
        f"(its first {EVENTS} of {size} events are not the ones signed)"
    )


def recorded_at(vault: Vault, session: Session) -> list[str]:
    row = _event(session, 2)
    row.recorded_at = row.recorded_at + timedelta(seconds=1)
    return ["event 2: stored time differ from the signed event"]


def recorded_at_microsecond(vault: Vault, session: Session) -> list[str]:
    row = _event(session, 2)
    row.recorded_at = row.recorded_at + timedelta(microseconds=1)
    return ["event 2: stored time differ from the signed event"]


def actor(vault: Vault, session: Session) -> list[str]:
    _event(session, 2).actor = "SHA256:" + "A" * 43
    return ["event 2: stored actor differ from the signed event"]


def action(vault: Vault, session: Session) -> list[str]:
    _event(session, 2).action = "item.exported"
    return ["event 2: stored action differ from the signed event"]


def subject(vault: Vault, session: Session) -> list[str]:
    _event(session, 2).subject = "EV-000000000000"
    return ["event 2: stored subject differ from the signed event"]


def body(vault: Vault, session: Session) -> list[str]:
    row = _event(session, 2)
    size = len(EVIDENCE["statement-01.txt"])
    row.body = body_with_size(row.body, size, size + 1)
    return [
        "log head root differs from the recomputed tree",
        anchor_differs(),
        "event 2: signature does not verify",
        "event 2: stored leaf hash does not match the event's bytes",
    ]


def signature(vault: Vault, session: Session) -> list[str]:
    row = _event(session, 2)
    row.signature = flip_bit(row.signature)
    return ["event 2: signature does not verify"]


def leaf(vault: Vault, session: Session) -> list[str]:
    row = _event(session, 2)
    row.leaf_hash = flip_bit(row.leaf_hash)
    return ["event 2: stored leaf hash does not match the event's bytes"]


def deleted(vault: Vault, session: Session) -> list[str]:
    session.execute(delete(CustodyEvent).where(CustodyEvent.seq == 2))
    return [
        "events 2 missing: the sequence jumps to 3",
        f"log head says {EVENTS} events, the log has {EVENTS - 1}",
        anchor_shorter(EVENTS - 1),
    ]


def _storage_recipient(session: Session) -> str:
    row = session.get(VaultKey, "storage")
    assert row is not None
    return row.age_recipient


def deleted_several(vault: Vault, session: Session) -> list[str]:
    session.execute(delete(CustodyEvent).where(CustodyEvent.seq.in_([0, 2, 3])))
    # Event 0 introduced the vault's first identity and storage key, the root of the key
    # history: without it no key of the vault is known, and nothing after it verifies.
    actor = _identity_key(session).fingerprint
    return [
        "events 0 missing: the sequence jumps to 1",
        "events 2-3 missing: the sequence jumps to 4",
        f"key table: identity {IDENTITY}: not in the signed history",
        f"key table: storage key {_storage_recipient(session)}: not in the signed history",
        f"log head says {EVENTS} events, the log has {EVENTS - 3}",
        anchor_shorter(EVENTS - 3),
        "event 0: key history: a key event the key store lists is missing, rewritten or "
        "hidden by its stored action",
        "event 0: the key history's first event, named by the key store, is missing",
        f"event 1: actor {actor} is not a key of this vault",
        f"event 4: actor {actor} is not a key of this vault",
    ]


def deleted_last(vault: Vault, session: Session) -> list[str]:
    session.execute(delete(CustodyEvent).where(CustodyEvent.seq == EVENTS - 1))
    return [f"log head says {EVENTS} events, the log has {EVENTS - 1}", anchor_shorter(EVENTS - 1)]


def swapped_seq(vault: Vault, session: Session) -> list[str]:
    for old, new in ((2, -1), (3, 2), (-1, 3)):
        session.execute(update(CustodyEvent).where(CustodyEvent.seq == old).values(seq=new))
    return [
        "log head root differs from the recomputed tree",
        anchor_differs(),
        "event 2: stored seq differ from the signed event",
        "event 3: stored seq differ from the signed event",
    ]


def swapped_contents(vault: Vault, session: Session) -> list[str]:
    a, b = _event(session, 2), _event(session, 3)
    for name in ("body", "signature", "leaf_hash"):
        first, second = getattr(a, name), getattr(b, name)
        setattr(a, name, second)
        setattr(b, name, first)
    return [
        "log head root differs from the recomputed tree",
        anchor_differs(),
        "event 2: stored seq, subject differ from the signed event",
        "event 3: stored seq, subject differ from the signed event",
    ]


def resigned(vault: Vault, session: Session) -> list[str]:
    row = _event(session, 2)
    details = dict(Event.decode(row.body).details)
    details["size"] += 1
    resign(vault, session, 2, details=details)
    # Every column agrees and the signature is good: only the tree head and the key store's
    # anchor remember.
    return ["log head root differs from the recomputed tree", anchor_differs()]


def two_events(vault: Vault, session: Session) -> list[str]:
    row1 = _event(session, 1)
    row1.signature = flip_bit(row1.signature)
    _event(session, 3).action = "item.exported"
    return [
        "event 1: signature does not verify",
        "event 3: stored action differ from the signed event",
    ]


def head_frontier(vault: Vault, session: Session) -> list[str]:
    head = session.get(CustodyHead, 1)
    assert head is not None
    head.frontier = head.frontier[:8] + flip_bit(head.frontier[8:])
    return ["log head frontier differs from the recomputed tree"]


def note_altered(vault: Vault, session: Session) -> list[str]:
    row = session.scalar(select(CheckpointRow))
    assert row is not None
    origin, size, rest = row.note.split("\n", 2)
    row.note = f"{origin}\n{int(size) - 1}\n{rest}"
    raw = _identity_key(session).signing_key
    key_id = note_key_id(origin, VerifyKey(raw)).hex()
    return [
        f"checkpoint 1 (size {EVENTS}): signed note: signature by {origin} (key id {key_id}) "
        "does not verify; the note was altered or signed by another key under that id"
    ]


def checkpoint_row_fields(vault: Vault, session: Session) -> list[str]:
    row = session.scalar(select(CheckpointRow))
    assert row is not None
    row.root = flip_bit(row.root)
    return [f"checkpoint 1 (size {EVENTS}): stored fields differ from the signed note"]


def rewritten_after_checkpoint(vault: Vault, session: Session) -> list[str]:
    resigned(vault, session)
    rebuild_head(session)
    return [
        f"checkpoint 1 (size {EVENTS}): root differs from the recomputed tree; "
        "history was rewritten",
        anchor_differs(),
    ]


def truncated_after_checkpoint(vault: Vault, session: Session) -> list[str]:
    session.execute(delete(CustodyEvent).where(CustodyEvent.seq == EVENTS - 1))
    rebuild_head(session)
    return [
        f"checkpoint 1 (size {EVENTS}): the log is shorter than the checkpoint",
        anchor_shorter(EVENTS - 1),
    ]


TAMPERING = [
    pytest.param(recorded_at, False, id="recorded_at"),
    pytest.param(recorded_at_microsecond, False, id="recorded_at-microsecond"),
    pytest.param(actor, False, id="actor"),
    pytest.param(action, False, id="action"),
    pytest.param(subject, False, id="subject"),
    pytest.param(body, False, id="body-one-byte"),
    pytest.param(signature, False, id="signature-bit"),
    pytest.param(leaf, False, id="leaf_hash"),
    pytest.param(deleted, False, id="delete-middle"),
    pytest.param(swapped_seq, False, id="swap-seq"),
    pytest.param(swapped_contents, False, id="swap-contents"),
    pytest.param(resigned, False, id="resigned-body"),
    pytest.param(two_events, False, id="two-independent-events"),
    pytest.param(note_altered, True, id="checkpoint-note-altered"),
    pytest.param(rewritten_after_checkpoint, True, id="rewritten-after-checkpoint"),
]

# Branches of verify that do not depend on the database's column types: SQLite is enough.
MORE_TAMPERING = [
    pytest.param(deleted_several, False, id="delete-several"),
    pytest.param(deleted_last, False, id="delete-last"),
    pytest.param(head_frontier, False, id="head-frontier"),
    pytest.param(checkpoint_row_fields, True, id="checkpoint-row-root"),
    pytest.param(truncated_after_checkpoint, True, id="truncated-after-checkpoint"),
]


@pytest.fixture
def populated(database: str | None, tmp_path: Path) -> Cli:
    """A vault as :func:`populate` leaves it, on each database backend: each test's own copy
    of the one the test process builds once per backend (conftest's ``reuse_world``)."""
    reuse_world("custody-log-populated", tmp_path, [database],
                lambda tmp, dbs: populate(Cli(tmp / "vault").init(dbs[0]), tmp))
    return Cli(tmp_path / "vault")


def check_tampering(cli: Cli, tamper: Tamper, checkpoint_first: bool) -> None:
    """Tamper with a populated vault; verify must exit 3 and list exactly the defects."""
    if checkpoint_first:
        cli.ok("custody", "checkpoint")
    with opened(cli) as (vault, session):
        expected = tamper(vault, session)
        session.flush()
        size = session.scalar(select(func.count()).select_from(CustodyEvent))

    result = cli("custody", "verify")
    assert result.exit_code == 3, result.stderr
    assert result.stdout.splitlines() == [f"FAIL: {line}" for line in expected]
    assert result.stderr == f"evault: custody log: {len(expected)} defect(s) in {size} events\n"


@pytest.mark.parametrize(("tamper", "checkpoint_first"), TAMPERING)
def test_tampering_is_reported(
    populated: Cli, tamper: Tamper, checkpoint_first: bool, scan_mode: str
) -> None:
    """The same reports in this process and through workers (``scan_mode``, below)."""
    check_tampering(populated, tamper, checkpoint_first)


@SQLITE_ONLY
@pytest.mark.parametrize(("tamper", "checkpoint_first"), MORE_TAMPERING)
def test_more_tampering_is_reported(
    populated: Cli, tamper: Tamper, checkpoint_first: bool, scan_mode: str
) -> None:
    check_tampering(populated, tamper, checkpoint_first)


def test_every_defect_is_listed(cli: Cli, tmp_path: Path) -> None:
    """Five events and a checkpoint, each damaged another way: one report lists them all."""
    populate(cli, tmp_path)
    cli.ok("custody", "checkpoint")
    origin = origin_of(cli)
    stranger = SigningKey.generate()
    with opened(cli) as (vault, session):
        first = _event(session, 0)
        first.signature = first.signature[:63]
        second = _event(session, 1)
        second.body = second.body.replace(b'"seq":1', b'"seq": 1')
        when = Event.decode(_event(session, 2).body).time - timedelta(days=1)
        resign(vault, session, 2, time=when)
        resign(vault, session, 3, log="evault/00000000000000000000000000000000")
        resign(vault, session, 4, key=stranger, actor=stranger.public.fingerprint)
        checkpoint = session.scalar(select(CheckpointRow))
        assert checkpoint is not None
        checkpoint.note = sign_checkpoint(
            Checkpoint(origin, checkpoint.size, checkpoint.root), NoteSigner(origin, stranger)
        )
        storage = _storage_recipient(session)
    defects: list[tuple[int | None, str]] = [
        (
            None,
            f"checkpoint 1 (size {EVENTS}): signed note: no signature from a known key ({origin})",
        ),
        # Event 0 starts the key history: its identity's key is still known (the key store
        # holds its fingerprint), but the storage key it introduced is not.
        (None, f"key table: storage key {storage}: not in the signed history"),
        (None, "log head root differs from the recomputed tree"),
        (None, anchor_differs()),
        (0, "key history: signature does not verify"),
        (0, "signature does not verify"),
        (1, "custody event: bytes are not in canonical form"),
        (1, "stored leaf hash does not match the event's bytes"),
        (2, "dated before its actor's key was created"),
        (3, "belongs to another log (evault/00000000000000000000000000000000)"),
        (4, f"actor {stranger.public.fingerprint} is not a key of this vault"),
    ]
    lines = [f"FAIL: {m}" if s is None else f"FAIL: event {s}: {m}" for s, m in defects]

    result = cli("custody", "verify")
    assert (result.exit_code, result.stdout.splitlines(), result.stderr) == (
        3,
        lines,
        f"evault: custody log: {len(lines)} defect(s) in {EVENTS} events\n",
    )
    quick = cli("custody", "verify", "--quick")
    assert (quick.exit_code, quick.stdout.splitlines()) == (
        3,
        [line for line in lines if line != "FAIL: event 0: signature does not verify"],
    )
    report = cli("custody", "verify", "--json")
    assert report.exit_code == 3
    assert json.loads(report.stdout) == {
        "ok": False,
        "events": EVENTS,
        "checkpoints": 1,
        "witnessed": 0,
        # Events 1 (undecodable) and 4 (no key of this vault) have no signature to check.
        "signatures_checked": EVENTS - 2,
        "defects": [{"seq": s, "message": m} for s, m in defects],
    }


# ----------------------------------------------------------------------------- checkpoint


def test_checkpoint_is_a_signed_note(cli: Cli, tmp_path: Path) -> None:
    populate(cli, tmp_path)
    origin = origin_of(cli)
    note = cli.ok("custody", "checkpoint").stdout
    assert note.endswith("\n")
    lines = note.split("\n")
    assert lines[:2] == [origin, str(EVENTS)]
    assert base64.b64decode(lines[2], validate=True) == root_of(stored_leaves(cli))
    assert lines[3] == ""
    name, sig = lines[4].split(" ")[1:]
    assert lines[4].startswith("\u2014 ")
    assert name == origin
    assert len(base64.b64decode(sig, validate=True)) == 4 + 64
    assert lines[5:] == [""]

    checkpoint, opened_note = open_checkpoint(note, [identity_verifier(cli)])
    assert checkpoint == Checkpoint(origin, EVENTS, root_of(stored_leaves(cli)))
    assert opened_note.signers == (origin,)
    with opened(cli) as (_, session):
        rows = session.scalars(select(CheckpointRow)).all()
        assert [(r.size, r.root, r.note) for r in rows] == [(EVENTS, checkpoint.root_hash, note)]
        assert rows[0].signer == _identity_key(session).fingerprint

    ingest_more(cli, tmp_path, "later-04.txt")
    out = tmp_path / "checkpoint.txt"
    result = cli("custody", "checkpoint", "-o", str(out))
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", f"evault: wrote {out}\n")
    note = out.read_text(encoding="utf-8")
    checkpoint, _ = open_checkpoint(note, [identity_verifier(cli)])
    assert checkpoint == Checkpoint(origin, EVENTS + 1, root_of(stored_leaves(cli)))

    ingest_more(cli, tmp_path, "later-05.txt")
    again = cli("custody", "checkpoint", "-o", str(out))
    assert again.exit_code == 2
    assert again.stderr.endswith(f"Error: {out} exists; choose another file\n")
    assert out.read_text(encoding="utf-8") == note
    # Refused before signing: no third checkpoint was kept.
    verified = cli.ok("custody", "verify").stdout
    assert verified == f"OK: {EVENTS + 2} events, 2 checkpoints (structure and signatures)\n"


def test_checkpoint_needs_an_identity(cli: Cli) -> None:
    result = cli("custody", "checkpoint")
    assert (result.exit_code, result.stdout, result.stderr) == (
        1,
        "",
        "evault: no identity in this vault: run `evault identity create NAME`\n",
    )


# ----------------------------------------------------------------------------- prove


def test_prove_item(cli: Cli, tmp_path: Path) -> None:
    items = populate(cli, tmp_path)
    note = cli.ok("custody", "checkpoint").stdout
    cli.ok("items", "export", items[0], "-o", str(tmp_path / "copy.txt"), "--reason", "review")
    leaves = stored_leaves(cli)
    root = base64.b64encode(root_of(leaves[:EVENTS])).decode()

    text = cli.ok("custody", "prove", items[0]).stdout
    assert text.splitlines() == [
        f"checkpoint: size {EVENTS}, root {root}",
        f"event 2 (item.ingested): included, {len(inclusion_proof(leaves, 2, EVENTS))} hashes",
        f"event {EVENTS} (item.export.started): after checkpoint",
        f"event {EVENTS + 1} (item.exported): after checkpoint",
    ]

    data = json.loads(cli.ok("custody", "prove", items[0], "--json").stdout)
    assert (data["subject"], data["checkpoint"], data["tree_size"], data["root_hash"]) == (
        items[0],
        note,
        EVENTS,
        root,
    )
    checkpoint, _ = open_checkpoint(data["checkpoint"], [identity_verifier(cli)])
    included, started, after = data["events"]
    assert started == {"seq": EVENTS, "action": "item.export.started",
                       "status": "after checkpoint"}
    assert after == {"seq": EVENTS + 1, "action": "item.exported", "status": "after checkpoint"}
    assert sorted(included) == ["action", "leaf_hash", "proof", "seq", "status"]
    assert (included["seq"], included["action"], included["status"]) == (
        2,
        "item.ingested",
        "included",
    )
    leaf = base64.b64decode(included["leaf_hash"])
    assert leaf == leaves[2]
    proof = [base64.b64decode(h) for h in included["proof"]]
    verify_inclusion(leaf, 2, checkpoint.size, proof, checkpoint.root_hash)


def test_prove_every_event_of_the_log(cli: Cli, tmp_path: Path) -> None:
    items = populate(cli, tmp_path)
    cli.ok("custody", "checkpoint")
    verifier = identity_verifier(cli)
    leaves = stored_leaves(cli)
    for seq, subject in enumerate([f"identity:{IDENTITY}", CASE, *items]):
        data = json.loads(cli.ok("custody", "prove", subject, "--json").stdout)
        checkpoint, _ = open_checkpoint(data["checkpoint"], [verifier])
        [event] = data["events"]
        assert (event["seq"], event["status"]) == (seq, "included")
        proof = [base64.b64decode(h) for h in event["proof"]]
        verify_inclusion(leaves[seq], seq, checkpoint.size, proof, checkpoint.root_hash)


def test_prove_refusals(cli: Cli, tmp_path: Path) -> None:
    items = populate(cli, tmp_path)
    none_yet = cli("custody", "prove", items[0])
    assert (none_yet.exit_code, none_yet.stdout, none_yet.stderr) == (1, "", NO_CHECKPOINT)
    cli.ok("custody", "checkpoint")
    unknown = cli("custody", "prove", "EV-000000000000")
    assert (unknown.exit_code, unknown.stderr) == (
        1,
        "evault: EV-000000000000: no custody events; check the id\n",
    )
    with opened(cli) as (vault, session):
        rewritten_after_checkpoint(vault, session)
    tampered = cli("custody", "prove", items[0])
    assert (tampered.exit_code, tampered.stdout, tampered.stderr) == (
        3,
        "",
        f"evault: merkle inclusion proof: leaf 2 does not lead to the root of size {EVENTS}\n",
    )


# ----------------------------------------------------------------------------- consistency


def _checkpoint_file(cli: Cli, path: Path) -> Path:
    cli.ok("custody", "checkpoint", "-o", str(path))
    return path


def _signed_note(cli: Cli, path: Path, checkpoint: Checkpoint, key: SigningKey | None) -> Path:
    """A checkpoint note signed by the identity's own key (or ``key``)."""
    with opened(cli) as (vault, session):
        signer = NoteSigner(f"evault/{vault.config.vault_id}", key or signer_of(vault, session))
        path.write_text(sign_checkpoint(checkpoint, signer), encoding="utf-8")
    return path


def test_consistency_of_a_grown_log(cli: Cli, tmp_path: Path) -> None:
    populate(cli, tmp_path)
    old = _checkpoint_file(cli, tmp_path / "old.txt")
    ingest_more(cli, tmp_path, "later-04.txt", "later-05.txt")
    new = _checkpoint_file(cli, tmp_path / "new.txt")
    leaves = stored_leaves(cli)
    hashes = len(consistency_proof(leaves, EVENTS, EVENTS + 2))

    verified = cli.ok("custody", "verify").stdout
    assert verified == f"OK: {EVENTS + 2} events, 2 checkpoints (structure and signatures)\n"
    result = cli("custody", "consistency", str(old), str(new))
    assert (result.exit_code, result.stdout, result.stderr) == (
        0,
        f"OK: the log grew from {EVENTS} to {EVENTS + 2} events without rewriting "
        f"({hashes} proof hashes)\n",
        "",
    )
    same = cli.ok("custody", "consistency", str(new), str(new))
    assert same.stdout == (
        f"OK: the log grew from {EVENTS + 2} to {EVENTS + 2} events without rewriting "
        "(0 proof hashes)\n"
    )

    data = json.loads(cli.ok("custody", "consistency", str(old), str(new), "--json").stdout)
    assert data["status"] == "consistent"
    assert (data["old_size"], data["new_size"]) == (EVENTS, EVENTS + 2)
    verifier = identity_verifier(cli)
    old_cp, _ = open_checkpoint(old.read_text(encoding="utf-8"), [verifier])
    new_cp, _ = open_checkpoint(new.read_text(encoding="utf-8"), [verifier])
    assert base64.b64decode(data["old_root"]) == old_cp.root_hash == root_of(leaves[:EVENTS])
    assert base64.b64decode(data["new_root"]) == new_cp.root_hash == root_of(leaves)
    proof = [base64.b64decode(h) for h in data["proof"]]
    verify_consistency(old_cp.size, new_cp.size, proof, old_cp.root_hash, new_cp.root_hash)


def test_consistency_catches_a_rewritten_history(cli: Cli, tmp_path: Path) -> None:
    populate(cli, tmp_path)
    old = _checkpoint_file(cli, tmp_path / "old.txt")
    with opened(cli) as (vault, session):
        rewritten_after_checkpoint(vault, session)
        accept_head(vault, session)
    ingest_more(cli, tmp_path, "later-04.txt")
    # Signed by the vault's own identity, over the rewritten tree.
    new = _checkpoint_file(cli, tmp_path / "new.txt")
    result = cli("custody", "consistency", str(old), str(new))
    assert (result.exit_code, result.stdout, result.stderr) == (
        3,
        "",
        f"evault: merkle consistency proof: does not lead to the first root (size {EVENTS})\n",
    )


def test_proofs_refuse_a_stale_leaf_hash(cli: Cli, tmp_path: Path) -> None:
    """Proofs are built from leaf hashes checked against the event bytes, not the copy alone."""
    items = populate(cli, tmp_path)
    old = _checkpoint_file(cli, tmp_path / "old.txt")
    ingest_more(cli, tmp_path, "later-04.txt")
    new = _checkpoint_file(cli, tmp_path / "new.txt")
    commands = (
        ["prove", items[0]],
        ["prove", items[2]],
        ["consistency", str(old), str(new)],
    )

    # A damaged copy used to crash the proof code with a ValueError.
    with opened(cli) as (_, session):
        row = _event(session, 3)
        good = row.leaf_hash
        row.leaf_hash = good[:31]
    for args in commands:
        result = cli("custody", *args)
        assert (result.exit_code, result.stdout, result.stderr) == (
            3,
            "",
            "evault: custody log: event 3: stored leaf hash does not match the event's bytes; "
            "run `evault custody verify`\n",
        ), args

    # Bytes rewritten (and validly re-signed) behind an unchanged copy used to pass as
    # "the log grew ... without rewriting".
    with opened(cli) as (vault, session):
        _event(session, 3).leaf_hash = good
        row = _event(session, 2)
        stale = row.leaf_hash
        details = dict(Event.decode(row.body).details)
        details["size"] += 1
        resign(vault, session, 2, details=details).leaf_hash = stale
    for args in commands:
        result = cli("custody", *args)
        assert (result.exit_code, result.stdout, result.stderr) == (
            3,
            "",
            "evault: custody log: event 2: stored leaf hash does not match the event's bytes; "
            "run `evault custody verify`\n",
        ), args


def test_consistency_refusals(cli: Cli, tmp_path: Path) -> None:
    populate(cli, tmp_path)
    old = _checkpoint_file(cli, tmp_path / "old.txt")
    ingest_more(cli, tmp_path, "later-04.txt")
    new = _checkpoint_file(cli, tmp_path / "new.txt")
    origin = origin_of(cli)

    swapped = cli("custody", "consistency", str(new), str(old))
    assert (swapped.exit_code, swapped.stdout, swapped.stderr) == (
        2,
        "",
        "evault: custody consistency: OLD is larger than NEW; swap them\n",
    )

    new_cp = Checkpoint.from_text(new.read_text(encoding="utf-8").split("\n\n")[0] + "\n")

    # Signed with the identity's own key, but over a history this log does not have.
    forged_root = root_of([leaf_hash(b"a rewritten fictional history")] * (EVENTS + 1))
    forged = _signed_note(
        cli, tmp_path / "forged.txt", Checkpoint(origin, EVENTS + 1, forged_root), None
    )
    refused = cli("custody", "consistency", str(old), str(forged))
    assert (refused.exit_code, refused.stderr) == (
        3,
        f"evault: merkle consistency proof: does not lead to the second root (size {EVENTS + 1})\n",
    )
    forged_same_size = _signed_note(
        cli, tmp_path / "forged-same.txt", Checkpoint(origin, EVENTS, forged_root), None
    )
    refused = cli("custody", "consistency", str(old), str(forged_same_size))
    assert (refused.exit_code, refused.stderr) == (
        3,
        f"evault: merkle consistency proof: trees of equal size {EVENTS} have different roots\n",
    )
    stranger = _signed_note(cli, tmp_path / "stranger.txt", new_cp, SigningKey.generate())
    for args in ((old, stranger), (stranger, new)):
        refused = cli("custody", "consistency", *map(str, args))
        assert (refused.exit_code, refused.stderr) == (
            3,
            f"evault: signed note: no signature from a known key ({origin})\n",
        )

    altered = tmp_path / "altered.txt"
    altered.write_text(
        new.read_text(encoding="utf-8").replace(f"\n{EVENTS + 1}\n", f"\n{EVENTS}\n"),
        encoding="utf-8",
    )
    refused = cli("custody", "consistency", str(old), str(altered))
    assert refused.exit_code == 3
    assert refused.stderr.startswith(f"evault: signed note: signature by {origin} (key id ")

    elsewhere = _signed_note(
        cli,
        tmp_path / "elsewhere.txt",
        Checkpoint("evault/00000000000000000000000000000000", new_cp.size, new_cp.root_hash),
        None,
    )
    refused = cli("custody", "consistency", str(old), str(elsewhere))
    assert (refused.exit_code, refused.stderr) == (
        3,
        "evault: new checkpoint: origin evault/00000000000000000000000000000000 is not this "
        "vault's log\n",
    )

    beyond = _signed_note(
        cli, tmp_path / "beyond.txt", Checkpoint(origin, 99, new_cp.root_hash), None
    )
    refused = cli("custody", "consistency", str(old), str(beyond))
    assert (refused.exit_code, refused.stderr) == (
        3,
        f"evault: new checkpoint: size 99 is beyond this log's {EVENTS + 1} events; "
        "the checkpoint is not from this log's history\n",
    )


# ----------------------------------------------------------------------------- show


def test_show_item(cli: Cli, tmp_path: Path) -> None:
    items = populate(cli, tmp_path)
    data = json.loads(cli.ok("custody", "show", items[0], "--json").stdout)
    assert data["subject"] == items[0]
    [event] = data["events"]
    assert list(event) == [
        "log",
        "seq",
        "time",
        "actor",
        "action",
        "subject",
        "details",
        "digests",
        "leaf_hash",
        "signature",
    ]
    content = EVIDENCE["statement-01.txt"]
    item = json.loads(cli.ok("items", "show", items[0], "--json").stdout)
    fingerprint = json.loads(cli.ok("identity", "show", "--json").stdout)["fingerprint"]
    assert {k: v for k, v in event.items() if k not in ("time", "leaf_hash", "signature")} == {
        "log": origin_of(cli),
        "seq": 2,
        "actor": fingerprint,
        "action": "item.ingested",
        "subject": items[0],
        "details": {"case": CASE, "labels": [], "size": len(content)},
        "digests": {"sha256": item["sha256"]},
    }
    with opened(cli) as (_, session):
        row = _event(session, 2)
        assert event["leaf_hash"] == leaf_hash(row.body).hex()
        assert base64.b64decode(event["signature"]) == row.signature
        key = VerifyKey(_identity_key(session).signing_key)
        key.verify(row.signature, row.body)
        assert Event.decode(row.body).time.strftime("%Y-%m-%dT%H:%M:%SZ") == event["time"]

    table = cli.ok("custody", "show", items[0]).stdout.splitlines()
    assert [line.split() for line in table] == [
        ["seq", "time", "action", "actor", "details", "digests"],
        [
            "2",
            event["time"],
            "item.ingested",
            fingerprint,
            f"case={CASE},labels=-,size={len(content)}",
            f"sha256={item['sha256']}",
        ],
    ]
    case = cli.ok("custody", "show", CASE).stdout.splitlines()
    assert [line.split()[:3] for line in case[1:]] == [["1", event["time"], "case.created"]]
    assert case[1].split()[4:] == ["-", "-"]

    result = cli("custody", "show", "EV-000000000000")
    assert (result.exit_code, result.stdout, result.stderr) == (
        1,
        "",
        "evault: EV-000000000000: no custody events; check the id\n",
    )


# ----------------------------------------------------------------------------- concurrency

PROCESSES = 4
FILES_EACH = 5


def test_concurrent_ingests_make_one_log(cli: Cli, tmp_path: Path) -> None:
    cli.ok("identity", "create", IDENTITY)
    env = dict(os.environ)  # EVAULT_KEY_STORAGE=file and the passphrase, from conftest
    runs = []
    for p in range(PROCESSES):
        folder = tmp_path / f"batch-{p}"
        folder.mkdir()
        paths = []
        for i in range(FILES_EACH):
            path = folder / f"photo-{p}-{i}.jpg"
            path.write_bytes(f"fictional photo {i} of batch {p}\n".encode())
            paths.append(str(path))
        command = [
            sys.executable,
            "-m",
            "vault",
            "ingest",
            *paths,
            "--case",
            CASE,
            "--create-case",
            "--json",
            "--vault",
            str(cli.vault),
        ]
        runs.append(
            subprocess.Popen(
                command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        )
    try:
        for run in runs:
            stdout, stderr = run.communicate(timeout=120)
            assert run.returncode == 0, stderr.decode()
            assert len(json.loads(stdout)) == FILES_EACH
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait()

    total = 2 + PROCESSES * FILES_EACH
    result = cli.ok("custody", "verify")
    assert result.stdout == f"OK: {total} events, 0 checkpoints (structure and signatures)\n"
    with opened(cli) as (_, session):
        rows = session.execute(
            select(CustodyEvent.seq, CustodyEvent.action, CustodyEvent.subject).order_by(
                CustodyEvent.seq
            )
        ).all()
        head = session.get(CustodyHead, 1)
        assert head is not None and head.size == total
    assert [seq for seq, _, _ in rows] == list(range(total))
    actions = [a for _, a, _ in rows]
    assert actions[:2] == ["identity.created", "case.created"]
    assert actions[2:] == ["item.ingested"] * (PROCESSES * FILES_EACH)
    assert len({subject for _, _, subject in rows[2:]}) == PROCESSES * FILES_EACH


# ----------------------------------------------------------------------------- verify's paths
#
# verify reads a long log in worker processes, a run of SCAN_CHUNK seqs each, and takes a
# plainly canonical event without a JSON parser. The tests below run both ways, in this
# process and through workers with runs of two events, so that a few events cross several
# runs; every defect must read the same either way.


@pytest.fixture(params=["in-process", "workers"])
def scan_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Verify in this process, or through worker processes with runs of two seqs."""
    if request.param == "workers":
        monkeypatch.setattr(custody_verify, "PARALLEL_MIN", 1)
        monkeypatch.setattr(custody_verify, "SCAN_CHUNK", 2)
    return str(request.param)


def rewrite_body(vault: Vault, session: Session, seq: int, body: bytes) -> None:
    """Store ``body`` as event ``seq``, validly signed and hashed, every column unchanged."""
    row = _event(session, seq)
    row.body = body
    row.signature = signer_of(vault, session).sign(body)
    row.leaf_hash = leaf_hash(body)


def plain_json(obj: dict[str, object], **options: object) -> bytes:
    """``obj`` as JSON with the canonical settings, bar what ``options`` changes."""
    settings: dict[str, object] = {
        "sort_keys": True,
        "separators": (",", ":"),
        "ensure_ascii": False,
        **options,
    }
    return json.dumps(obj, **settings).encode()  # type: ignore[arg-type]


# Valid JSON, validly signed, every column consistent, and still not an event: each must be
# reported as Event.decode words it. Keyed by seq (events 2-8 are item.ingested).
NOT_CANONICAL: dict[int, tuple[Callable[[dict[str, object]], bytes], str]] = {
    2: (lambda e: plain_json(dict(reversed(e.items())), sort_keys=False),
        "custody event: bytes are not in canonical form"),
    3: (lambda e: plain_json(e, separators=(", ", ": ")),
        "custody event: bytes are not in canonical form"),
    4: (lambda e: plain_json({**e, "details": {"case": "café"}}).replace(
            "é".encode(), b"\\u00e9"),
        "custody event: bytes are not in canonical form"),
    5: (lambda e: plain_json({**e, "details": {"size": 1.5}}),
        "custody event: $.details.size: float has no canonical JSON form"),
    6: (lambda e: plain_json({**e, "details": {"size": 2**53 + 1}}),
        "custody event: $.details.size: integer beyond 2**53 has no canonical JSON form"),
    7: (lambda e: plain_json({**e, "details": {"case": "x"}}).replace(
            b'{"case":"x"}', b'{"case":"x","case":"x"}'),
        "custody event: duplicate key 'case'"),
    8: (lambda e: plain_json({**e, "details": {"a": "x"}}).replace(b'"x"', b'"\\/"'),
        "custody event: bytes are not in canonical form"),
}


def test_non_canonical_events_are_reported(cli: Cli, tmp_path: Path, scan_mode: str) -> None:
    populate(cli, tmp_path)
    ingest_more(cli, tmp_path, *(f"later-{n}.txt" for n in range(4)))
    with opened(cli) as (vault, session):
        for seq, (spell, _) in NOT_CANONICAL.items():
            event = json.loads(_event(session, seq).body)
            rewrite_body(vault, session, seq, spell(event))
        rebuild_head(session)
        accept_head(vault, session)

    result = cli("custody", "verify", "--quick")
    assert (result.exit_code, result.stdout.splitlines(), result.stderr) == (
        3,
        [f"FAIL: event {seq}: {message}" for seq, (_, message) in NOT_CANONICAL.items()],
        f"evault: custody log: {len(NOT_CANONICAL)} defect(s) in {EVENTS + 4} events\n",
    )


def test_unescaped_strings_are_reported(cli: Cli, tmp_path: Path, scan_mode: str) -> None:
    """A row and its event agreeing on a subject whose quote or control character the
    event's bytes carry raw: not JSON, whatever the row says.
    """
    populate(cli, tmp_path)
    expected = []
    with opened(cli) as (vault, session):
        for seq, subject in ((2, 'EV"1'), (3, "EV\x011"), (4, "EV\\1")):
            row = _event(session, seq)
            body = row.body.replace(f'"{row.subject}"'.encode(), f'"{subject}"'.encode())
            rewrite_body(vault, session, seq, body)
            row.subject = subject
            with pytest.raises(VerificationError) as refused:
                Event.decode(body)
            expected.append(f"FAIL: event {seq}: {refused.value}")
        rebuild_head(session)
        accept_head(vault, session)

    result = cli("custody", "verify", "--quick")
    assert (result.exit_code, result.stdout.splitlines()) == (3, expected)


# Canonical, if unusual: escapes, non-ASCII, nesting, the largest integers, odd keys.
UNUSUAL_DETAILS: list[dict[str, object]] = [
    {"reason": 'a "quoted"\nline\tand \\ and \x01 and \x7f'},
    {"case": "café ☕ 𝄞 \u2028", "é": 1, "z": -1},
    {"nested": {"b": [1, {"z": None}], "a": True}, "list": [[], [0, -0, 1]]},
    {"big": 2**53, "small": -(2**53), "wide": 1234567890123456},
    {"": "empty key", "labels": ["a", 1, True, False, None]},
    {f"k{n:02d}": n for n in range(20)},
]


def test_unusual_canonical_events_verify(cli: Cli, tmp_path: Path, scan_mode: str) -> None:
    populate(cli, tmp_path)
    ingest_more(cli, tmp_path, *(f"later-{n}.txt" for n in range(3)))
    with opened(cli) as (vault, session):
        for seq, details in enumerate(UNUSUAL_DETAILS, start=2):
            resign(vault, session, seq, details=details)
        resign(vault, session, 1, subject='UA "2026" \\ é', digests={"b": "2", "a": "1"})
        rebuild_head(session)
        accept_head(vault, session)

    result = cli("custody", "verify")
    assert (result.exit_code, result.stdout, result.stderr) == (
        0, f"OK: {EVENTS + 3} events, 0 checkpoints (structure and signatures)\n", "",
    )


def add_checkpoint(vault: Vault, session: Session, size: int, root: bytes) -> None:
    """A checkpoint of ``size`` events with ``root``, signed by the vault's identity."""
    signer = signer_of(vault, session)
    note = sign_checkpoint(
        Checkpoint(f"evault/{vault.config.vault_id}", size, root),
        NoteSigner(f"evault/{vault.config.vault_id}", signer),
    )
    session.add(
        CheckpointRow(size=size, root=root, signer=signer.public.fingerprint, note=note,
                      created_at=Event.decode(_event(session, 0).body).time)
    )


def test_checkpoints_at_any_size(cli: Cli, tmp_path: Path, scan_mode: str) -> None:
    """Checkpoints at size 0, 1, inside runs and on run boundaries (runs of two with
    workers) verify; one over another history, or after a rewrite, does not.
    """
    populate(cli, tmp_path)
    ingest_more(cli, tmp_path, *(f"later-{n}.txt" for n in range(4)))
    total = EVENTS + 4
    leaves = stored_leaves(cli)
    sizes = list(range(total + 1))
    with opened(cli) as (vault, session):
        for size in sizes:
            add_checkpoint(vault, session, size, root_of(leaves[:size]))
    result = cli("custody", "verify", "--quick")
    assert (result.exit_code, result.stdout) == (
        0, f"OK: {total} events, {len(sizes)} checkpoints (structure)\n",
    )

    forged = [*leaves[:5], leaf_hash(b"another history"), *leaves[6:]]
    with opened(cli) as (vault, session):
        for size in (6, 7):
            add_checkpoint(vault, session, size, root_of(forged[:size]))
        details = dict(Event.decode(_event(session, 8).body).details)
        details["size"] += 1
        resign(vault, session, 8, details=details)
        rebuild_head(session)
        accept_head(vault, session)
    rewritten = "root differs from the recomputed tree; history was rewritten"
    expected = [
        f"FAIL: checkpoint {size + 1} (size {size}): {rewritten}" for size in range(9, total + 1)
    ] + [f"FAIL: checkpoint {total + 2 + n} (size {size}): {rewritten}"
         for n, size in enumerate((6, 7))]
    result = cli("custody", "verify", "--quick")
    assert (result.exit_code, result.stdout.splitlines()) == (3, expected)


def test_a_far_seq_is_reported_not_waited_for(
    sqlite_cli: Cli, tmp_path: Path, scan_mode: str
) -> None:
    """A row moved to seq 10**12 once made verify queue half a trillion empty runs."""
    populate(sqlite_cli, tmp_path)
    far = 10**12
    with opened(sqlite_cli) as (_, session):
        _event(session, EVENTS - 1).seq = far
    result = sqlite_cli("custody", "verify", "--quick")
    assert (result.exit_code, result.stdout.splitlines()) == (3, [
        f"FAIL: events {EVENTS - 1}-{far - 1} missing: the sequence jumps to {far}",
        f"FAIL: event {far}: stored seq differ from the signed event",
    ])


# The fast path's rule, checked directly: whatever it accepts, Event.decode accepts with the
# row's own fields. Bodies: the canonical event and many near misses of it.

ROW = Event(log="evault/0f1e", seq=7, time=datetime(2026, 11, 28, 9, 30, tzinfo=timezone.utc),
            actor="SHA256:abc", action="item.ingested", subject="EV-0001",
            details={"case": "UA-1", "labels": ["x"], "size": 12}, digests={"sha256": "ab"})
WHEN = "2026-11-28T09:30:00Z"


def _accepted_exactly(body: bytes) -> bool:
    """Is ``body`` the canonical form of ROW's event (with whatever details and digests)?"""
    try:
        event = Event.decode(body)
    except VerificationError:
        return False
    fields = (event.log, event.seq, event.time, event.actor, event.action, event.subject)
    return fields == (ROW.log, ROW.seq, ROW.time, ROW.actor, ROW.action, ROW.subject)


def _matches(body: bytes, **row: object) -> bool:
    plain = custody_verify._PlainEvents(ROW.log, [ROW.actor])
    values: dict[str, object] = {"seq": ROW.seq, "actor": ROW.actor, "action": ROW.action,
                                 "subject": ROW.subject, "when": WHEN, **row}
    return plain.match(body, **values)  # type: ignore[arg-type]


def test_fast_path_takes_plain_events() -> None:
    body = ROW.encode()
    assert _matches(body)
    assert _matches(body)  # the second time through the shape learned the first time
    for row in ({"seq": 8}, {"actor": "SHA256:abd"}, {"action": "item.exported"},
                {"subject": "EV-0002"}, {"when": "2026-11-28T09:30:01Z"}, {"when": None}):
        assert not _matches(body, **row), row


@pytest.mark.parametrize("subject", ['EV"1', "EV\\1", "EV\x011", "EV\n1", "EV\x1f"])
def test_fast_path_refuses_unescaped_strings(subject: str) -> None:
    """The row's subject spelled raw into the bytes is not JSON when it needs an escape."""
    body = ROW.encode().replace(b'"EV-0001"', f'"{subject}"'.encode())
    assert not _accepted_exactly(body)
    assert not _matches(body, subject=subject)
    # Raw non-ASCII needs no escape: that is the canonical form, and plain.
    subject = "EV é ☕"
    body = ROW.encode().replace(b'"EV-0001"', f'"{subject}"'.encode())
    assert _matches(body, subject=subject)
    assert Event.decode(body).subject == subject


NEAR_MISSES: list[bytes] = [
    plain_json(dict(reversed(json.loads(ROW.encode()).items())), sort_keys=False),
    ROW.encode().replace(b'"seq":7', b'"seq": 7'),
    ROW.encode().replace(b'"size":12', b'"size":12.0'),
    ROW.encode().replace(b'"size":12', b'"size":1.2e1'),
    ROW.encode().replace(b'"size":12', b'"size":012'),
    ROW.encode().replace(b'"size":12', b'"size":-0'),
    ROW.encode().replace(b'"size":12', b'"size":9007199254740993'),
    ROW.encode().replace(b'"size":12', b'"size":NaN'),
    ROW.encode().replace(b'"UA-1"', b'"UA\\u002d1"'),
    ROW.encode().replace(b'"UA-1"', b'"UA\\/1"'),
    ROW.encode().replace(b'"UA-1"', b'"UA\x011"'),
    ROW.encode().replace(b'"UA-1"', b'"UA\\ud8001"'),
    ROW.encode().replace(b'"UA-1"', b'"UA\xff1"'),
    ROW.encode().replace(b'"case":"UA-1",', b'"case":"UA-1","case":"UA-1",'),
    ROW.encode().replace(b'{"case":"UA-1","labels":["x"],', b'{"labels":["x"],"case":"UA-1",'),
    ROW.encode().replace(b'{"sha256":"ab"}', b'{"sha256":"ab","sha1":"cd"}'),
    ROW.encode().replace(b'{"sha256":"ab"}', b'{"sha256":1}'),
    ROW.encode().replace(b'"labels":["x"]', b'"labels":["x",]'),
    ROW.encode().replace(b'"v":1}', b'"v":1,"v":1}'),
    ROW.encode().replace(b'"v":1}', b'"v":true}'),
    ROW.encode() + b" ",
    b"\xef\xbb\xbf" + ROW.encode(),
]


@pytest.mark.parametrize("body", NEAR_MISSES)
def test_fast_path_refuses_near_misses(body: bytes) -> None:
    assert not _accepted_exactly(body)
    assert not _matches(body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(
    details=st.dictionaries(st.text(max_size=4), json_values, max_size=5),
    digests=st.dictionaries(st.text(max_size=4), st.text(max_size=4) | st.integers(),
                            max_size=3),
    sort_keys=st.booleans(),
    ensure_ascii=st.booleans(),
    spaced=st.booleans(),
)
def test_fast_path_accepts_only_what_decode_accepts(
    details: dict[str, object], digests: dict[str, object], sort_keys: bool,
    ensure_ascii: bool, spaced: bool,
) -> None:
    obj = {**json.loads(ROW.encode()), "details": details, "digests": digests}
    body = plain_json(obj, sort_keys=sort_keys, ensure_ascii=ensure_ascii,
                      separators=(", ", ": ") if spaced else (",", ":"))
    if _matches(body):
        assert _accepted_exactly(body), body


def test_frontier_takes_whole_subtrees() -> None:
    """A run's compact range appended at an aligned size is the same tree as its leaves."""
    leaves = [leaf_hash(n.to_bytes(4, "big")) for n in range(70)]
    for start in (0, 16, 32, 64):
        for count in range(1, 71 - start):
            run = leaves[start : start + count]
            roots = range_roots(run, range(1, count + 1))
            for size in range(1, count + 1):
                frontier = Frontier()
                for h in leaves[:start]:
                    frontier.append(h)
                if start % (1 << (size.bit_length() - 1)):
                    with pytest.raises(ValueError, match="cannot start at leaf"):
                        frontier.append_range(roots[size], size)
                    continue
                frontier.append_range(roots[size], size)
                expected = Frontier()
                for h in leaves[: start + size]:
                    expected.append(h)
                assert frontier == expected, (start, size)
                assert frontier.root() == root_of(leaves[: start + size])
    assert subtree_sizes(13) == [8, 4, 1]
    with pytest.raises(ValueError, match="power of two"):
        Frontier().append_subtree(leaves[0], 3)
    with pytest.raises(UsageError):
        range_roots(leaves[:4], [5])


# --- the verifier's layer ------------------------------------------------------------------


def test_verifier_lives_in_custody_and_imports_no_service_store_or_database() -> None:
    """vault.custody.verify is given rows, keys and records; it reads nothing itself (the
    layering of issue 16: service -> custody -> crypto -> errors)."""
    import ast

    from vault.custody import verify

    tree = ast.parse(Path(verify.__file__).read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), "verify.py says its one job in its docstring"
    used = {
        name
        for node in ast.walk(tree)
        for name in (
            [a.name for a in node.names] if isinstance(node, ast.Import)
            else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        )
    }
    allowed = ("vault.custody.", "vault.crypto.", "vault.clock", "vault.errors")
    ours = {m for m in used if m.startswith("vault")}
    assert all(m.startswith(allowed) for m in ours), sorted(ours)
    assert not {m for m in used if m.split(".")[0] in ("sqlalchemy", "vault.service")}
    # The service keeps the reading and the orchestration, not the checks.
    from vault.service import custody

    assert not hasattr(custody, "_PlainEvents") and not hasattr(custody, "_fast_fields")
