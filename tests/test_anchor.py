"""Rollback and truncation: the key store's anchor catches a log cut short or rewritten.

Each attack is made as someone holding only the database would make it: SQL on ``vault.db``
or the PostgreSQL schema (the ``cli`` fixture runs both), no key store access, the tree head
recomputed so that the database agrees with itself. Then ``custody verify`` and a command
that writes must both refuse, exit 3, with the reason naming the sizes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import Cli

from vault.custody.merkle import Frontier, leaf_hash
from vault.errors import KeyStoreError
from vault.service import anchor
from vault.service.vaults import open_vault
from vault.store.vaultdir import load_config

REPO = Path(__file__).resolve().parent.parent
CASE = "UA-2026-0042"
IDENTITY = "registry-office"
NEXT = (
    "restore the newer database; if an older backup was restored on purpose, "
    "run `evault custody reanchor --as NAME`"
)


@pytest.fixture(autouse=True)
def _no_blob_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the log, not blob durability."""
    monkeypatch.setattr("vault.store.blobs.syncfs", lambda path: True)


def ingest(cli: Cli, tmp_path: Path, *names: str, create_case: bool = False) -> None:
    """Ingest fictional files, one custody event each (and case.created with create_case)."""
    paths = []
    for name in names:
        path = tmp_path / name
        path.write_bytes(f"Fictional evidence file {name}\n".encode())
        paths.append(str(path))
    cli.ok("ingest", *paths, "--case", CASE, *(["--create-case"] if create_case else []))


def populate(cli: Cli, tmp_path: Path) -> int:
    """An identity, a case and three items: five events; returns the count."""
    cli.ok("identity", "create", IDENTITY)
    ingest(cli, tmp_path, "statement-01.txt", "photo-02.jpg", "report-03.txt", create_case=True)
    return 5


def engine_of(cli: Cli) -> sa.Engine:
    """The vault's database as the attacker reaches it: the URL, nothing else."""
    return sa.create_engine(load_config(cli.vault).database_url(cli.vault))


def rebuild_head(conn: sa.Connection) -> None:
    """Make custody_head agree with the stored leaf hashes, as a careful attacker would."""
    frontier = Frontier()
    for (leaf,) in conn.execute(sa.text("SELECT leaf_hash FROM custody_events ORDER BY seq")):
        frontier.append(bytes(leaf))
    conn.execute(
        sa.text("UPDATE custody_head SET size = :size, root = :root, frontier = :frontier"),
        {"size": frontier.size, "root": frontier.root(), "frontier": frontier.to_bytes()},
    )


def truncate(cli: Cli, keep: int) -> None:
    """Delete every event from seq ``keep`` on and recompute the head, SQL only."""
    engine = engine_of(cli)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM custody_events WHERE seq >= :keep"), {"keep": keep})
        rebuild_head(conn)
    engine.dispose()


def rewrite_event(cli: Cli, seq: int) -> None:
    """Change one byte of event ``seq``'s signed body, fix its leaf hash and the head."""
    engine = engine_of(cli)
    with engine.begin() as conn:
        body = bytes(
            conn.execute(
                sa.text("SELECT body FROM custody_events WHERE seq = :seq"), {"seq": seq}
            ).scalar_one()
        )
        changed = body.replace(b'"size":', b'"size":1', 1)
        assert changed != body
        conn.execute(
            sa.text("UPDATE custody_events SET body = :body, leaf_hash = :leaf WHERE seq = :seq"),
            {"body": changed, "leaf": leaf_hash(changed), "seq": seq},
        )
        rebuild_head(conn)
    engine.dispose()


def head_size(cli: Cli) -> int:
    engine = engine_of(cli)
    with engine.connect() as conn:
        size = int(conn.execute(sa.text("SELECT size FROM custody_head")).scalar_one())
    engine.dispose()
    return size


def pinned(cli: Cli) -> anchor.Anchor | None:
    """The anchor in the vault's key store (the test reads it; the attacker cannot)."""
    v = open_vault(cli.vault)
    try:
        return anchor.load(v)
    finally:
        v.close()


def populate_with_old_code(cli: Cli, tmp_path: Path) -> int:
    """``populate`` as the code before the anchor did it: nothing checked, nothing recorded."""
    with pytest.MonkeyPatch.context() as old:
        old.setattr(anchor, "guard", lambda *args: None)
        old.setattr(anchor, "after_verify", lambda *args, **kwargs: None)
        events = populate(cli, tmp_path)
        assert cli.ok("custody", "verify").stdout.startswith("OK: ")
    assert pinned(cli) is None
    return events


def shorter(size: int, signed: int) -> str:
    return (
        "the log is shorter than the last checkpoint this vault signed "
        f"({size} events, the checkpoint has {signed})"
    )


def differs(signed: int, size: int) -> str:
    return (
        "the log differs from the last checkpoint this vault signed "
        f"(its first {signed} of {size} events are not the ones signed)"
    )


def refused(cli: Cli, tmp_path: Path, reason: str) -> None:
    """A writing command (ingest) and a checkpoint are refused, exit 3, nothing written."""
    before = head_size(cli)
    evidence = tmp_path / "later-04.txt"
    evidence.write_bytes(b"Fictional later evidence\n")
    for args in (("ingest", str(evidence), "--case", CASE), ("custody", "checkpoint")):
        result = cli(*args)
        assert (result.exit_code, result.stdout, result.stderr) == (
            3,
            "",
            f"evault: custody log: {reason}; {NEXT}\n",
        ), args
    assert head_size(cli) == before


def verify_fails(cli: Cli, size: int, defects: list[str]) -> None:
    result = cli("custody", "verify")
    assert result.exit_code == 3, result.stderr
    assert result.stdout == "".join(f"FAIL: {d}\n" for d in defects)
    assert result.stderr == f"evault: custody log: {len(defects)} defect(s) in {size} events\n"


# ----------------------------------------------------------------------------- attacks


def test_truncation_is_caught(cli: Cli, tmp_path: Path) -> None:
    events = populate(cli, tmp_path)
    truncate(cli, keep=3)
    verify_fails(cli, 3, [shorter(3, events)])
    refused(cli, tmp_path, shorter(3, events))


def test_truncation_after_a_checkpoint_and_more_events_is_caught(
    cli: Cli, tmp_path: Path
) -> None:
    """The anchor follows every write, not only checkpoints: events after the newest
    checkpoint cannot be dropped either (the checkpoint rows go too, as an attacker would)."""
    events = populate(cli, tmp_path)
    cli.ok("custody", "checkpoint")
    ingest(cli, tmp_path, "later-05.txt")
    engine = engine_of(cli)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM checkpoints"))
    engine.dispose()
    truncate(cli, keep=events)
    verify_fails(cli, events, [shorter(events, events + 1)])
    refused(cli, tmp_path, shorter(events, events + 1))


def test_rollback_to_an_older_copy_of_the_database_is_caught(
    sqlite_cli: Cli, tmp_path: Path
) -> None:
    cli = sqlite_cli
    events = populate(cli, tmp_path)
    backup = tmp_path / "vault.db.old"
    shutil.copy2(cli.vault / "vault.db", backup)
    ingest(cli, tmp_path, "later-05.txt", "later-06.txt")
    cli.ok("custody", "checkpoint")
    shutil.copy2(backup, cli.vault / "vault.db")
    verify_fails(cli, events, [shorter(events, events + 2)])
    refused(cli, tmp_path, shorter(events, events + 2))


def test_a_rewritten_older_event_is_caught_as_differing(cli: Cli, tmp_path: Path) -> None:
    events = populate(cli, tmp_path)
    rewrite_event(cli, 2)
    # The signature catches it too; the anchor says the history is not the one signed.
    verify_fails(cli, events, [differs(events, events), "event 2: signature does not verify"])
    refused(cli, tmp_path, differs(events, events))


def test_a_truncated_and_regrown_log_is_caught_as_differing(cli: Cli, tmp_path: Path) -> None:
    """Cut to three events, then grown past the anchor with other rows (copies of an early
    event that introduces no key, so that only the anchor can tell): longer is not enough,
    the first events must be the ones signed."""
    events = populate(cli, tmp_path)
    truncate(cli, keep=3)
    engine = engine_of(cli)
    with engine.begin() as conn:
        for seq in range(3, events + 1):
            conn.execute(
                sa.text(
                    "INSERT INTO custody_events (seq, recorded_at, actor, action, subject, body, "
                    "signature, leaf_hash) SELECT :seq, recorded_at, actor, action, subject, "
                    "body, signature, leaf_hash FROM custody_events WHERE seq = (SELECT min(seq) "
                    "FROM custody_events WHERE action IN ('case.created', 'item.ingested'))"
                ),
                {"seq": seq},
            )
        rebuild_head(conn)
    engine.dispose()
    refused(cli, tmp_path, differs(events, events + 1))


def test_a_head_that_does_not_extend_the_anchor_is_refused(cli: Cli, tmp_path: Path) -> None:
    """A head claiming more events than are stored (the check does not trust the head)."""
    events = populate(cli, tmp_path)
    engine = engine_of(cli)
    with engine.begin() as conn:
        frontier = Frontier()
        for (leaf,) in conn.execute(sa.text("SELECT leaf_hash FROM custody_events ORDER BY seq")):
            frontier.append(bytes(leaf))
        frontier.append(leaf_hash(b"a forged event"))
        conn.execute(
            sa.text("UPDATE custody_head SET size = :size, root = :root, frontier = :frontier"),
            {"size": frontier.size, "root": frontier.root(), "frontier": frontier.to_bytes()},
        )
    engine.dispose()
    refused(cli, tmp_path, differs(events, events + 1))


# ----------------------------------------------------------------------------- old vaults


def test_an_old_vault_records_the_anchor_on_first_verify(cli: Cli, tmp_path: Path) -> None:
    events = populate_with_old_code(cli, tmp_path)
    result = cli.ok("custody", "verify")
    assert result.stdout == f"OK: {events} events, 0 checkpoints (structure and signatures)\n"
    recorded = pinned(cli)
    assert recorded is not None and recorded.size == events
    truncate(cli, keep=2)
    verify_fails(cli, 2, [shorter(2, events)])


def test_an_old_vault_records_the_anchor_on_first_write(cli: Cli, tmp_path: Path) -> None:
    events = populate_with_old_code(cli, tmp_path)
    ingest(cli, tmp_path, "later-05.txt")
    recorded = pinned(cli)
    assert recorded is not None and recorded.size == events + 1
    truncate(cli, keep=events)
    refused(cli, tmp_path, shorter(events, events + 1))


def test_an_old_vault_already_truncated_is_trusted_on_first_use(
    sqlite_cli: Cli, tmp_path: Path
) -> None:
    """What stays out of reach: a log cut before the first run of this version is what the
    first run records (there was nothing to compare it with)."""
    cli = sqlite_cli
    populate_with_old_code(cli, tmp_path)
    truncate(cli, keep=3)
    assert cli.ok("custody", "verify").stdout == (
        "OK: 3 events, 0 checkpoints (structure and signatures)\n"
    )
    recorded = pinned(cli)
    assert recorded is not None and recorded.size == 3


def test_verify_of_an_empty_vault_records_nothing(sqlite_cli: Cli) -> None:
    """No events, nothing to anchor: verify of a new vault makes no key file."""
    assert sqlite_cli.ok("custody", "verify").stdout == (
        "OK: 0 events, 0 checkpoints (structure and signatures)\n"
    )
    assert not (sqlite_cli.vault / "keys.enc").exists()


# ----------------------------------------------------------------------------- normal use


def test_normal_use_never_trips_the_anchor(cli: Cli, tmp_path: Path) -> None:
    """Many commands in a row, packages (which embed a checkpoint), a receipt, an ack, a key
    rotation: every one succeeds and the anchor follows the head on both sides."""
    office = cli
    icc = Cli(tmp_path / "icc")
    icc.init()
    office_fp = json.loads(office.ok("identity", "create", IDENTITY, "--json").stdout)[
        "fingerprint"
    ]
    office_card = tmp_path / "office.card.json"
    office.ok("identity", "export", "-o", str(office_card))
    icc_fp = json.loads(icc.ok("identity", "create", "icc-officer", "--json").stdout)[
        "fingerprint"
    ]
    icc_card = tmp_path / "icc.card.json"
    icc.ok("identity", "export", "-o", str(icc_card))
    icc.ok("contact", "add", str(office_card), "--fingerprint", office_fp)
    office.ok("body", "add", "ICC-OTP", "--name", "Fictional ICC-OTP")
    office.ok("body", "key", "add", "ICC-OTP", "--card", str(icc_card), "--fingerprint", icc_fp)
    ingest(office, tmp_path, "statement-01.txt", create_case=True)
    for n in range(2, 6):
        ingest(office, tmp_path, f"photo-{n:02}.jpg")
    office.ok("custody", "checkpoint")
    office.ok("case", "create", "UA-2026-0043")
    package = tmp_path / "icc.evpkg"
    built = json.loads(
        office.ok(
            "package", "create", "--to", "ICC-OTP", "--case", CASE, "-o", str(package), "--json"
        ).stdout
    )
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    office.ok("send", built["id"], "--outbox", str(outbox))
    icc.ok("open", str(package), "--out", str(tmp_path / "opened"))
    ack = tmp_path / "icc.ack"
    icc.ok("ack", built["id"], "-o", str(ack))
    office.ok("receipt", "import", str(ack))
    office.ok("identity", "rotate", IDENTITY)
    ingest(office, tmp_path, "after-rotation-07.txt")
    office.ok("custody", "checkpoint")
    for side in (office, icc):
        assert side.ok("custody", "verify").stdout.startswith("OK: ")
        recorded = pinned(side)
        assert recorded is not None and recorded.size == head_size(side)


def test_concurrent_writers_leave_the_anchor_at_the_head(cli: Cli, tmp_path: Path) -> None:
    """Three ingests at once, each its own process: none trips the check of another, and
    the anchor, moved under a lock and never back, ends at the final head."""
    cli.ok("identity", "create", IDENTITY)
    ingest(cli, tmp_path, "statement-01.txt", create_case=True)
    runs = []
    for p in range(3):
        paths = []
        for i in range(3):
            path = tmp_path / f"photo-{p}-{i}.jpg"
            path.write_bytes(f"fictional photo {i} of batch {p}\n".encode())
            paths.append(str(path))
        command = [sys.executable, "-m", "vault", "ingest", *paths, "--case", CASE,
                   "--vault", str(cli.vault)]
        runs.append(subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE))
    try:
        for run in runs:
            _, stderr = run.communicate(timeout=120)
            assert run.returncode == 0, stderr.decode()
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait()
    total = 3 + 3 * 3
    assert cli.ok("custody", "verify").stdout == (
        f"OK: {total} events, 0 checkpoints (structure and signatures)\n"
    )
    recorded = pinned(cli)
    assert recorded is not None and recorded.size == head_size(cli) == total


# ----------------------------------------------------------------------------- way out


def test_reanchor_after_restoring_a_backup_on_purpose(sqlite_cli: Cli, tmp_path: Path) -> None:
    cli = sqlite_cli
    events = populate(cli, tmp_path)
    backup = tmp_path / "vault.db.old"
    shutil.copy2(cli.vault / "vault.db", backup)
    ingest(cli, tmp_path, "later-05.txt")
    shutil.copy2(backup, cli.vault / "vault.db")
    refused(cli, tmp_path, shorter(events, events + 1))

    result = cli("custody", "reanchor", "--as", IDENTITY)
    assert (result.exit_code, result.stdout, result.stderr) == (
        0,
        "",
        f"evault: custody log: reanchored at {events} events (the last checkpoint this vault "
        f"signed had {events + 1}); logged as event {events} (custody.reanchored)\n",
    )
    shown = json.loads(cli.ok("custody", "show", "custody-log", "--json").stdout)["events"]
    before = pinned_root = shown[0]["details"]
    assert [e["action"] for e in shown] == ["custody.reanchored"]
    assert (before["from_size"], before["to_size"]) == (events + 1, events)
    assert len(pinned_root["from_root"]) == len(pinned_root["to_root"]) == 64
    ingest(cli, tmp_path, "later-06.txt")
    assert cli.ok("custody", "verify").stdout == (
        f"OK: {events + 2} events, 0 checkpoints (structure and signatures)\n"
    )

    again = cli("custody", "reanchor")
    assert (again.exit_code, again.stderr) == (
        1,
        "evault: custody log: the log extends the last checkpoint this vault signed; "
        "nothing to reanchor\n",
    )


def test_reanchor_refuses_a_log_with_other_defects(sqlite_cli: Cli, tmp_path: Path) -> None:
    cli = sqlite_cli
    populate(cli, tmp_path)
    rewrite_event(cli, 2)
    result = cli("custody", "reanchor")
    assert (result.exit_code, result.stderr) == (
        3,
        "evault: custody log: 1 defect(s) besides the rollback; reanchor accepts only a log "
        "that verifies otherwise; run `evault custody verify`\n",
    )
    verify_fails(cli, 5, [differs(5, 5), "event 2: signature does not verify"])


# ----------------------------------------------------------------------------- the entry


def test_the_anchor_is_a_sealed_key_store_entry(sqlite_cli: Cli, tmp_path: Path) -> None:
    """In keys.enc, inside the seal: the vault's files show neither the entry nor the root."""
    cli = sqlite_cli
    events = populate(cli, tmp_path)
    recorded = pinned(cli)
    assert recorded is not None and recorded.size == events
    sealed = (cli.vault / "keys.enc").read_bytes()
    assert anchor.ENTRY.encode() not in sealed and recorded.root not in sealed
    origin = f"evault/{load_config(cli.vault).vault_id}"
    assert anchor.Anchor.decode(recorded.encode(origin), origin).root == recorded.root


@pytest.mark.parametrize(
    "entry",
    [
        b"not json",
        b'{"type": "evault-log-anchor", "v": 2}',
        b'{"frontier": "AAAAAAAAAAE=", "log": "LOG", "root": "", "size": 1, '
        b'"type": "evault-log-anchor", "v": 1}',
        b'{"frontier": "AAAAAAAAAAA=", "log": "evault/another-vault", "root": '
        b'"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", "size": 0, '
        b'"type": "evault-log-anchor", "v": 1}',
    ],
)
def test_a_damaged_entry_is_a_key_store_error(entry: bytes) -> None:
    with pytest.raises(KeyStoreError) as caught:
        anchor.Anchor.decode(entry, "LOG")
    assert str(caught.value) == (
        "key store entry trust:checkpoint: damaged or not this vault's; restore the key store "
        "from a backup"
    )


def test_an_empty_log_anchor_round_trips() -> None:
    empty = anchor.Anchor.at(Frontier())
    again = anchor.Anchor.decode(empty.encode("evault/x"), "evault/x")
    assert (again.size, again.root) == (0, Frontier().root())
