"""Issue 15's hostile review: what a sender's, a recipient's or a database holder's means
still reached after the issue's fixes, each with the package or document that does it."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta
from pathlib import Path

from test_opening import CASE, World
from test_opening import sqlite_vaults as sqlite_vaults  # the fixture world uses
from test_opening import world as world  # the fixture
from test_robustness_corpus import Recipient, mc, one_line
from test_robustness_corpus import recipient as recipient  # the fixture

from vault.clock import parse_iso
from vault.custody.events import Event
from vault.custody.merkle import leaf_hash
from vault.custody.note import Checkpoint, NoteSigner
from vault.formats.canonical import canonical_json

OTHER_LOG = "evault/000000000000000000000000000a0b0c"
"""The log of another office, which the corpus sender holds an event of (from a package)."""


def _excerpt_line(event: Event, key: object, tree_size: int) -> bytes:
    body, signature = event.sign(key)  # type: ignore[arg-type]
    return canonical_json({
        "seq": event.seq, "event": body.decode(), "signature": base64.b64encode(signature).decode(),
        "actor_key": key.public.openssh(), "tree_size": tree_size, "proof": [],  # type: ignore[attr-defined]
    }) + b"\n"


def test_an_excerpt_event_of_another_log_is_refused(recipient: Recipient,
                                                    tmp_path: Path) -> None:
    """A sender presents another office's genuine, signed event (an item.ingested of that
    office's log, as a package from it carried) as an event of its own log, in a tree it made
    and a checkpoint it signed: the recipient would show it as the sender's chain, that
    office's key as the item's intake. An excerpt holds only events of the envelope's log."""
    content = b"fictional statement\n"
    foreign = Event(log=OTHER_LOG, seq=0, time=parse_iso(mc.CREATED),
                    actor=mc.STRANGER.public.fingerprint, action="item.ingested",
                    subject=mc.ITEM_A, details={"case": "UA-2026-0042", "size": 99},
                    digests={"sha256": "ab" * 32})
    line = _excerpt_line(foreign, mc.STRANGER, 1)
    checkpoint = NoteSigner(mc.ORIGIN, mc.SENDER).sign(
        Checkpoint(mc.ORIGIN, 1, leaf_hash(foreign.encode())).to_text())
    pid = mc.package_id(1501)
    bag = mc.signed_bag(pid, files={mc.ITEM_A: content}, custody=line)
    package = tmp_path / "replayed.evpkg"
    package.write_bytes(mc.package(pid, bag, envelope_changes={"checkpoint": checkpoint}))
    out = tmp_path / "out"
    result = recipient.cli("open", str(package), "--out", str(out))
    assert (result.exit_code, result.stderr) == (3, (
        f"evault: package {pid}: evault/custody.jsonl line 1: event 0 is of log {OTHER_LOG}, "
        f"not of {mc.ORIGIN}, the sender's log its envelope's checkpoint names; ask the sender "
        "for a new package\n"))
    assert one_line(result.stderr)
    assert not out.exists() or list(out.iterdir()) == []
    assert hashlib.sha256(content).hexdigest() not in recipient.cli.ok(
        "items", "list", "--json").stdout


def test_a_revoked_identity_key_of_this_vault_is_not_brought_back_by_trust_sender(
        world: World) -> None:
    """The office's own signing key is revoked (stolen, say); a package it signed, addressed
    to a live key of the same vault (the thief knows the public age key), is not opened on
    --trust-sender alone: the revocation of an identity's key counts as a contact's does."""
    deputy_card = world.tmp / "deputy.card.json"
    world.office.ok("identity", "create", "deputy")
    world.office.ok("identity", "export", "deputy", "-o", str(deputy_card))
    world.office.ok("body", "add", "SELF", "--name", "Fictional self")
    world.office.ok("body", "key", "add", "SELF", "--card", str(deputy_card))
    package = world.tmp / "self.evpkg"
    pid = json.loads(world.office.ok("package", "create", "--to", "SELF", "--case", CASE,
                                     "--as", "registry-office", "-o", str(package),
                                     "--json").stdout)["id"]
    revoked = json.loads(world.office.ok("identity", "revoke", "registry-office", "--as",
                                         "deputy", "--json").stdout)
    when = next(k["revoked_at"] for k in revoked["keys"] if k["fingerprint"] == world.office_fp)
    out = world.tmp / "out"
    refused = world.office("open", str(package), "--out", str(out), "--as", "deputy",
                           "--trust-sender", world.office_fp)
    assert (refused.exit_code, refused.stderr) == (3, (
        f"evault: {package.name}: signed by {world.office_fp}, the key of identity "
        f"registry-office of this vault, revoked at {when}; --trust-sender does not override "
        "a revocation: add --allow-revoked to open it anyway\n"))
    assert not out.exists() or list(out.iterdir()) == []
    opened = world.office.ok("open", str(package), "--out", str(out), "--as", "deputy",
                             "--trust-sender", world.office_fp, "--allow-revoked")
    assert f"opened package {pid}" in opened.stderr


def test_ack_does_not_vouch_for_a_receipt_time_rewritten_in_the_database(world: World) -> None:
    """A holder of the recipient's database (no keys) moves the package's opened_at: the
    officer's `ack` would sign that time as received_at and the office import it. The ack
    takes what it vouches for from the signed package.opened event, and refuses a row that
    differs from it."""
    from test_key_history import sql

    world.icc.ok("open", str(world.package), "--out", str(world.tmp / "received"))
    opened = json.loads(world.icc.ok("custody", "show", world.package_id, "--json").stdout)
    (event,) = opened["events"]
    # Four minutes later than the truth: within the clock skew the office's import allows.
    later = parse_iso(event["time"]) + timedelta(minutes=4)
    sql(world.icc, "UPDATE received_packages SET opened_at = :t",
        t=later.strftime("%Y-%m-%d %H:%M:%S.000000"))
    ack = world.tmp / "ack.json"
    refused = world.icc("ack", world.package_id, "-o", str(ack))
    assert (refused.exit_code, refused.stderr) == (3, (
        f"evault: package {world.package_id}: its record in this vault differs from the signed "
        f"package.opened event {event['seq']} (opened at); nothing was acknowledged: run "
        "`evault custody verify` and `evault doctor`\n"))
    assert not ack.exists()


def test_ack_whose_checkpoint_claims_the_offices_log_is_refused(world: World) -> None:
    """A body officer signs, in its acknowledgement, a "checkpoint" of the office's own log
    (a tree head the office never had): the signer vouches only for its own log, and
    `receipt import` refuses it as `evault verify` does, instead of keeping it."""
    from dataclasses import replace

    from test_ack_forgeries import _import, _key, _state
    from test_opening import _ack

    from vault.custody.note import sign_checkpoint
    from vault.formats.receipt import Acknowledgement

    genuine = Acknowledgement.from_bytes(_ack(world).read_bytes())
    office_log = genuine.cosigned_checkpoint.split("\n", 1)[0]  # type: ignore[union-attr]
    officer = _key(world)
    claimed = sign_checkpoint(Checkpoint(office_log, 99, bytes(32)),
                              NoteSigner(office_log, officer))
    code, err = _import(world, replace(genuine, checkpoint=claimed), officer)
    assert (code, err) == (3, (
        f"evault: ack for package {world.package_id}: its checkpoint names {office_log}, this "
        "vault's own log, which only this vault's identities sign; an acknowledgement carries "
        "a checkpoint of its signer's log\n"))
    assert _state(world) == "built"


def test_a_relabelled_subject_column_does_not_put_another_items_event_in_the_excerpt(
        world: World) -> None:
    """A database holder at the office relabels the subject column of another case's
    item.ingested event as one of the package's items: the excerpt is chosen by the signed
    bytes, so that item (its case, size, digest) stays out, and the package still opens."""
    import io
    import tarfile

    from test_key_history import sql
    from test_opening import _plain_payload

    secret = world.tmp / "secret.txt"
    secret.write_bytes(b"fictional confidential note\n")
    world.office.ok("ingest", str(secret), "--case", "UA-2026-0099", "--create-case",
                    "--title", "Confidential")
    items = json.loads(world.office.ok("items", "list", "--json").stdout)
    hidden = next(i["id"] for i in items if i["case"] == "UA-2026-0099")
    photo = next(i["id"] for i in items if i["name"] == "photo.jpg")
    sql(world.office, "UPDATE custody_events SET subject = :photo WHERE subject = :hidden",
        photo=photo, hidden=hidden)
    package = world.tmp / "relabelled.evpkg"
    pid = json.loads(world.office.ok("package", "create", "--to", "ICC-OTP", "--case", CASE,
                                     "-o", str(package), "--json").stdout)["id"]
    with tarfile.open(fileobj=io.BytesIO(_plain_payload(world.icc, package))) as tar:
        excerpt = tar.extractfile(f"{pid}/evault/custody.jsonl").read()  # type: ignore[union-attr]
    assert hidden.encode() not in excerpt and b"UA-2026-0099" not in excerpt
    opened = world.icc("open", str(package), "--out", str(world.tmp / "received"))
    assert opened.exit_code == 0, opened.stderr


def test_a_stored_excerpt_cut_in_the_database_is_not_printed_as_the_senders_chain(
        world: World) -> None:
    """A holder of the recipient's database deletes a line of the stored custody excerpt
    (the sender's intake of the item, say): the court form would print the sender's chain
    without it, each remaining signature "verified". The form checks the stored excerpt
    against what `open` verified and signed (the event count in package.opened, each event's
    inclusion in the envelope's checkpoint) and refuses a cut one."""
    from test_key_history import sql

    world.icc.ok("open", str(world.package), "--out", str(world.tmp / "received"))
    import sqlite3

    db = sqlite3.connect(world.icc.vault / "vault.db")
    (excerpt,) = db.execute("SELECT custody_excerpt FROM received_packages").fetchone()
    (item,) = db.execute("SELECT id FROM items WHERE source_item = :s", {"s": json.loads(
        json.loads(excerpt.splitlines()[0])["event"])["subject"]}).fetchone()
    db.close()
    form = world.icc.ok("report", "custody", item, "--format", "md").stdout
    assert "item.ingested" in form
    kept = b"".join(excerpt.splitlines(keepends=True)[1:])
    sql(world.icc, "UPDATE received_packages SET custody_excerpt = :e", e=kept)
    refused = world.icc("report", "custody", item, "--format", "md")
    assert (refused.exit_code, refused.stderr) == (3, (
        f"evault: package {world.package_id}: its stored custody excerpt holds 1 event(s), the "
        "package.opened event this vault signed counted 2; the excerpt was changed in the "
        "database: run `evault custody verify`\n"))


def test_doctor_repair_leaves_a_running_export_whose_record_was_replaced(tmp_path: Path) -> None:
    """The folder holder renames a byte-for-byte copy over a running export's record in
    pending/ (a new file, not locked by the export): doctor --repair must still leave the
    running export's temporary alone, and log no abandonment of a run that goes on."""
    import os
    import shutil
    import signal
    import subprocess

    from test_robustness_leftovers import (
        EXPORT_TEMP,
        _office_with_item,
        evault_argv,
        evault_env,
        limit_resources,
    )

    office, item, content = _office_with_item(tmp_path)
    out = tmp_path / "copy.pdf"
    proc = subprocess.Popen(
        evault_argv("items", "export", item, "-o", str(out), "--reason", "review",
                    vault=office.vault),
        env=evault_env(EVAULT_PAUSE_AT="item_export.written"), stderr=subprocess.PIPE,
        text=True, preexec_fn=limit_resources)
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline() == "evault: paused at item_export.written\n"
        [temp] = [p for p in tmp_path.iterdir() if EXPORT_TEMP.fullmatch(p.name)]
        [record] = list((office.vault / "pending").glob("export-*.json"))
        shutil.copy(record, record.with_name("copy.tmp"))
        os.rename(record.with_name("copy.tmp"), record)
        repaired = json.loads(office.ok("doctor", "--repair", "--json").stdout)
        [row] = repaired["leftovers"]
        assert row["state"] == "refused: in use by a running command"
        assert temp.read_bytes() == content
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    actions = [e["action"] for e in json.loads(
        office.ok("custody", "show", item, "--json").stdout)["events"]]
    assert "item.export.abandoned" not in actions


def _blocked_on_a_flock(pid: int) -> bool:
    """Whether a thread of process ``pid`` waits for a flock now: /proc/locks lists each
    waiter as ``N: -> FLOCK ADVISORY WRITE PID DEV:INODE ...``."""
    with open("/proc/locks") as locks:
        return any(parts[1:3] == ["->", "FLOCK"] and parts[5] == str(pid)
                   for parts in (line.split() for line in locks) if len(parts) > 5)


def test_doctor_repair_leaves_a_running_opens_staging_folder_whose_record_was_replaced(
        tmp_path: Path) -> None:
    """The same for `open`: its staging folder is locked while it runs. `open` also holds
    the blob store's intake lock from its first stored file to its commit (it stores each
    file in the pass that extracts it), so `doctor --repair` waits for it, touching
    neither the staging folder nor the blobs, and removes both once the run is killed.
    Waits: this process is seen blocked on a flock (Linux's /proc/locks) while `open` runs."""
    import os
    import shutil
    import signal
    import subprocess
    import threading
    import time

    from test_robustness import CASE as ROBUST_CASE
    from test_robustness import as_json, make_office
    from test_robustness_leftovers import OPEN_TEMP, evault_argv, evault_env, limit_resources

    from vault.service.doctor import diagnose

    world = make_office(tmp_path)
    world.office.ok("ingest", str(world.evidence), "-r", "--case", ROBUST_CASE, "--create-case")
    built = as_json(world.office, "package", "create", "--to", "ICC-OTP", "--case", ROBUST_CASE,
                    "--send", "--outbox", str(world.outbox), "-o", str(tmp_path / "p.evpkg"),
                    "--json")
    package = world.outbox / f"{built['id']}.evpkg"
    received = tmp_path / "received"

    def blobs() -> list[Path]:
        return sorted(p for p in (world.icc.vault / "blobs").rglob("*")
                      if p.is_file() and p.name != ".intake.lock")

    proc = subprocess.Popen(
        evault_argv("open", str(package), "--out", str(received), vault=world.icc.vault),
        env=evault_env(EVAULT_PAUSE_AT="open.staged"), stderr=subprocess.PIPE, text=True,
        preexec_fn=limit_resources)
    done = threading.Event()
    repair = threading.Thread(
        target=lambda: (diagnose(world.icc.vault, repair=True), done.set()), daemon=True)
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline() == "evault: paused at open.staged\n"
        [staging] = [p for p in received.iterdir() if OPEN_TEMP.fullmatch(p.name)]
        [record] = list((world.icc.vault / "pending").glob("open-*.json"))
        shutil.copy(record, record.with_name("copy.tmp"))
        os.rename(record.with_name("copy.tmp"), record)
        stored = blobs()
        assert stored  # the files are in blobs already, not yet recorded
        [row] = as_json(world.icc, "doctor", "--json")["leftovers"]
        assert row["state"] == "refused: in use by a running command"
        repair.start()
        deadline = time.monotonic() + 60
        while not _blocked_on_a_flock(os.getpid()):
            assert not done.is_set(), "doctor --repair did not wait for the running open"
            assert time.monotonic() < deadline, "doctor --repair never waited for a lock"
            time.sleep(0.05)
        assert not done.is_set()
        assert staging.is_dir() and any(p.is_file() for p in staging.rglob("*"))
        assert blobs() == stored
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    # Killed now: the locks are gone with the process, and the waiting repair removes the
    # leftover folder and the blobs no row names.
    repair.join(60)
    assert done.is_set()
    assert not staging.exists() and blobs() == []
    assert as_json(world.icc, "doctor", "--json")["leftovers"] == []


def test_the_court_form_names_a_known_sender_as_this_vault_knows_it(world: World) -> None:
    """A sender signs its envelope under another name ("prosecutor-general"): the
    recipient knows that key as the contact registry-office, and its court form names the
    sender and the sender's events so, not as the envelope claims."""
    from test_opening import _members, _office_keys, _rebuild

    from vault.formats.package import Envelope, Party, sign_envelope

    members = _members(world.package)
    envelope = Envelope.from_bytes(members["envelope.json"])
    claimed = "prosecutor-general"
    envelope = replace_party(envelope, Party(claimed, envelope.sender.fingerprint))
    signing, _ = _office_keys(world)
    data, sig = sign_envelope(envelope, signing)  # type: ignore[arg-type]
    package = _rebuild(world, data, sig, members["payload.age"], "renamed")
    opened = world.icc.ok("open", str(package), "--out", str(world.tmp / "received"))
    assert opened.stderr.startswith(f"evault: opened package {world.package_id} from "
                                    f"registry-office ({world.office_fp})")
    (item, *_) = json.loads(world.icc.ok("items", "list", "--json").stdout)
    form = world.icc.ok("report", "custody", item["id"], "--format", "md").stdout
    assert claimed not in form
    assert f"Received from**: registry-office {world.office_fp}" in form
    assert f"sender registry-office {world.office_fp}" in form


def replace_party(envelope: object, party: object) -> object:
    from dataclasses import replace

    return replace(envelope, sender=party)  # type: ignore[type-var]
