"""Packages for one body: build, refusals, send, receipts, and checks with stock tools."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, build_template, copy_template, require_tool, reuse_world

CASE = "UA-2026-0042"
NAMES = {
    "statement.txt": b"fictional witness statement\n",
    "photo 01.jpg": os.urandom(70_000),
    "Zeugenaussage – Übersicht.pdf": b"%PDF fictional\n",
    "line\nbreak\rname.txt": b"a name with CR and LF\n",
    "résumé 100%.txt": b"percent sign in the name\n",
}


@dataclass
class Body:
    id: str
    cli: Cli
    officer: str
    fingerprint: str
    card: Path

    def identity_file(self, tmp_path: Path) -> Path:
        from vault.service.identities import current_key, get_identity, load_keypair
        from vault.service.vaults import open_vault

        v = open_vault(self.cli.vault)
        with v.transaction() as session:
            pair = load_keypair(v, current_key(get_identity(session, self.officer)))
        v.close()
        path = tmp_path / f"{self.officer}.key"
        path.write_text(pair.age.encode() + "\n")  # the user asked: a test identity file
        path.chmod(0o600)
        return path


def _body(tmp_path: Path, body_id: str, officer: str) -> Body:
    cli = Cli(tmp_path / f"vault-{body_id}")
    cli.init()
    fp = json.loads(cli.ok("identity", "create", officer, "--json").stdout)["fingerprint"]
    card = tmp_path / f"{officer}.card.json"
    cli.ok("identity", "export", officer, "-o", str(card))
    return Body(body_id, cli, officer, fp, card)


@dataclass
class World:
    office: Cli
    icc: Body
    opg: Body
    items: dict[str, str]
    tmp: Path


@pytest.fixture(scope="module")
def sqlite_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SQLite office and its bodies' vaults, built once for the module (see ``world``)."""
    return build_template(tmp_path_factory, "packaging",
                          lambda tmp: _build(Cli(tmp / "vault").init(), tmp))


@pytest.fixture
def world(database: str | None, tmp_path: Path, request: pytest.FixtureRequest) -> World:
    """The office (ICC-OTP and UA-OPG with their keys, the NAMES items in CASE): each test's
    own copy of the module's template on SQLite, of the test process's (conftest's
    ``reuse_world``: its database is not in the vault's folder) on PostgreSQL."""
    if database is not None:
        reuse_world("packaging", tmp_path, [database], _build_on)
    else:
        copy_template(request.getfixturevalue("sqlite_world"), tmp_path)
    made = json.loads((tmp_path / "world.json").read_text())
    bodies = [Body(b["id"], Cli(tmp_path / f"vault-{b['id']}"), b["officer"], b["fingerprint"],
                   tmp_path / f"{b['officer']}.card.json") for b in made["bodies"]]
    return World(Cli(tmp_path / "vault"), *bodies, made["items"], tmp_path)


def _build_on(tmp_path: Path, databases: list[str | None]) -> None:
    """:func:`_build` in a new vault at ``tmp_path`` on ``databases[0]``, for reuse_world."""
    _build(Cli(tmp_path / "vault").init(databases[0]), tmp_path)


def _build(cli: Cli, tmp_path: Path) -> World:
    cli.ok("identity", "create", "registry-office", "--org", "Fictional Ministry of Justice")
    icc = _body(tmp_path, "ICC-OTP", "icc-officer")
    opg = _body(tmp_path, "UA-OPG", "opg-officer")
    for body in (icc, opg):
        cli.ok("body", "add", body.id, "--name", f"Fictional {body.id}")
        cli.ok("body", "key", "add", body.id, "--card", str(body.card), "--fingerprint",
               body.fingerprint)
    folder = tmp_path / "evidence"
    folder.mkdir()
    for name, data in NAMES.items():
        (folder / name).write_bytes(data)
    cli.ok("ingest", str(folder), "--recursive", "--case", CASE, "--create-case")
    items = {i["name"]: i["id"] for i in json.loads(cli.ok("items", "list", "--json").stdout)}
    (tmp_path / "world.json").write_text(json.dumps({"items": items, "bodies": [
        {"id": b.id, "officer": b.officer, "fingerprint": b.fingerprint} for b in (icc, opg)]}))
    return World(cli, icc, opg, items, tmp_path)


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def _decrypt(world: World, body: Body, payload: bytes) -> bytes:
    from vault.crypto.age import AgeIdentity, decrypt
    from vault.service.identities import current_key, get_identity, load_keypair
    from vault.service.vaults import open_vault

    v = open_vault(body.cli.vault)
    with v.transaction() as session:
        pair = load_keypair(v, current_key(get_identity(session, body.officer)))
    v.close()
    out = io.BytesIO()
    decrypt(io.BytesIO(payload), out, [AgeIdentity.from_raw(pair.age.raw())])
    return out.getvalue()


def test_package_for_one_body(world: World) -> None:
    out = world.tmp / "icc.evpkg"
    result = world.office.ok("package", "create", "--to", "ICC-OTP", "--case", CASE,
                             "--reference", "OTP-REQ-17", "--purpose", "Request of 2026-11-01",
                             "-o", str(out), "--json")
    data = json.loads(result.stdout)
    assert data["state"] == "built" and data["items"] == len(NAMES)
    assert data["recipients"] == [world.icc.fingerprint]
    members = _members(out)
    assert list(members) == ["payload.age", "envelope.json", "envelope.json.sig"]  # layout 2
    # The file's digest, taken as it was written, is the file's.
    assert data["file_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert data["bytes"] == out.stat().st_size
    envelope = json.loads(members["envelope.json"])
    assert envelope["package_id"] == data["id"] and envelope["body"] == "ICC-OTP"
    assert envelope["payload_sha256"] == hashlib.sha256(members["payload.age"]).hexdigest()
    text = members["envelope.json"].decode()
    for name in NAMES:
        assert name.split()[0] not in text  # no file names in the public header
    assert "OTP-REQ-17" not in text
    # The payload is the bag; every name comes back unchanged, every digest matches.
    from vault.formats.bagit import read_bag

    bag = read_bag(io.BytesIO(_decrypt(world, world.icc, members["payload.age"])),
                   root=data["id"])
    got = {path.split("/", 2)[2]: digest for path, digest in bag.manifest.items()}
    assert got == {name: hashlib.sha256(d).hexdigest() for name, d in NAMES.items()}
    items = json.loads(bag.tag_files["evault/items.json"])
    assert {i["name"] for i in items} == set(NAMES)
    custody = [json.loads(line) for line in bag.tag_files["evault/custody.jsonl"].splitlines()]
    assert {json.loads(c["event"])["action"] for c in custody} == {"item.ingested"}
    statement = json.loads(bag.tag_files["evault/statement.json"])
    assert statement["body"] == "ICC-OTP"
    assert statement["tagmanifest_sha256"] == bag.tagmanifest_sha256
    info = dict(bag.info)
    assert info["External-Identifier"] == data["id"]
    assert info["EVault-Reference"] == "OTP-REQ-17"

    # A package for ICC-OTP cannot be opened with UA-OPG's key.
    from vault.errors import DecryptionError

    with pytest.raises(DecryptionError):
        _decrypt(world, world.opg, members["payload.age"])
    events = json.loads(world.office.ok("custody", "show", data["id"], "--json").stdout)
    assert [e["action"] for e in events["events"]] == ["package.built"]
    assert world.office.ok("custody", "verify").exit_code == 0


@pytest.mark.interop
def test_stock_tools_decrypt_validate_and_verify(world: World) -> None:
    age = require_tool("age")
    ssh_keygen = require_tool("ssh-keygen")
    out = world.tmp / "pkg.evpkg"
    pid = json.loads(world.office.ok("package", "create", "--to", "ICC-OTP", "--case", CASE,
                                     "-o", str(out), "--json").stdout)["id"]
    members = _members(out)
    (world.tmp / "payload.age").write_bytes(members["payload.age"])
    key = world.icc.identity_file(world.tmp)
    payload_tar = world.tmp / "payload.tar"
    subprocess.run([age, "-d", "-i", str(key), "-o", str(payload_tar),
                    str(world.tmp / "payload.age")], check=True)
    extract = world.tmp / "bag"
    extract.mkdir()
    with tarfile.open(payload_tar) as tar:
        tar.extractall(extract, filter="data")
    bag_dir = extract / pid
    # bagit-python 1.9 mis-decodes %25 in manifests (upstream bug #157): validate a bag
    # without such names with it; evault's own reader round-trips them (test above).
    plain = world.tmp / "plain.evpkg"
    ids = [world.items[n] for n in NAMES if "%" not in n]
    plain_id = json.loads(world.office.ok("package", "create", "--to", "ICC-OTP",
                                          *[a for i in ids for a in ("--item", i)],
                                          "-o", str(plain), "--json").stdout)["id"]
    (world.tmp / "plain.age").write_bytes(_members(plain)["payload.age"])
    plain_tar = world.tmp / "plain.tar"
    subprocess.run([age, "-d", "-i", str(key), "-o", str(plain_tar),
                    str(world.tmp / "plain.age")], check=True)
    plain_dir = world.tmp / "plainbag"
    plain_dir.mkdir()
    with tarfile.open(plain_tar) as tar:
        tar.extractall(plain_dir, filter="data")
    import sys

    bagit = Path(sys.executable).with_name("bagit.py")
    check = subprocess.run([sys.executable, str(bagit), "--validate", str(plain_dir / plain_id)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr

    office_key = json.loads(world.office.ok("identity", "show", "--json").stdout)["signing_key"]
    allowed = world.tmp / "allowed_signers"
    allowed.write_text(f'registry-office {" ".join(office_key.split()[:2])}\n')
    for namespace, sig, msg in [
        ("evault-envelope", members["envelope.json.sig"], members["envelope.json"]),
        ("evault-statement", (bag_dir / "evault/statement.json.sig").read_bytes(),
         (bag_dir / "evault/statement.json").read_bytes()),
    ]:
        sig_path = world.tmp / f"{namespace}.sig"
        sig_path.write_bytes(sig)
        verified = subprocess.run([ssh_keygen, "-Y", "verify", "-f", str(allowed), "-I",
                                   "registry-office", "-n", namespace, "-s", str(sig_path)],
                                  input=msg, capture_output=True)
        assert verified.returncode == 0, verified.stderr
        assert verified.stdout.decode().startswith(f'Good "{namespace}" signature for '
                                                   "registry-office with ED25519 key SHA256:")

    outbox = world.tmp / "outbox"
    outbox.mkdir()
    receipt_id = json.loads(world.office.ok("send", str(out), "--outbox", str(outbox),
                                            "--json").stdout)["receipt"]
    receipt = world.tmp / "receipt.json"
    world.office.ok("receipt", "export", receipt_id, "-o", str(receipt))
    verified = subprocess.run([ssh_keygen, "-Y", "verify", "-f", str(allowed), "-I",
                               "registry-office", "-n", "evault-receipt", "-s",
                               str(receipt) + ".sig"], input=receipt.read_bytes(),
                              capture_output=True)
    assert verified.returncode == 0, verified.stderr


def test_send_and_receipts(world: World) -> None:
    out = world.tmp / "opg.evpkg"
    built = json.loads(world.office.ok(
        "package", "create", "--to", "UA-OPG", "--item", world.items["statement.txt"],
        "--reference", "OPG/2026/117", "--confidential-reference", "-o", str(out),
        "--json").stdout)
    outbox = world.tmp / "outbox"
    outbox.mkdir()
    sent = world.office.ok("send", built["id"], "--outbox", str(outbox))
    delivered = outbox / f"{built['id']}.evpkg"
    assert delivered.read_bytes() == out.read_bytes()
    assert [p.name for p in outbox.iterdir()] == [delivered.name]
    receipt_id = sent.stderr.split("receipt ")[-1].strip()
    assert sent.stderr == (f"evault: sent package {built['id']} to {delivered}; "
                           f"receipt {receipt_id}\n")
    again = world.office("send", built["id"], "--outbox", str(outbox))
    assert again.exit_code == 1 and "sent already" in again.stderr
    shown = json.loads(world.office.ok("package", "show", built["id"], "--json").stdout)
    assert shown["state"] == "sent" and shown["outbox"] == str(outbox)
    receipt = json.loads(world.office.ok("receipt", "show", receipt_id, "--json").stdout)
    doc = receipt["document"]
    assert doc["package_id"] == built["id"] and doc["body"] == "UA-OPG"
    assert doc["reference"] is None
    assert doc["reference_sha256"] == hashlib.sha256(b"OPG/2026/117").hexdigest()
    assert doc["items"] == [{"id": world.items["statement.txt"], "size": 28,
                             "sha256": hashlib.sha256(NAMES["statement.txt"]).hexdigest()}]
    assert doc["recipients"] == [world.opg.fingerprint]
    text = json.dumps(doc)
    assert "statement.txt" not in text
    listed = json.loads(world.office.ok("receipt", "list", "--body", "UA-OPG", "--json").stdout)
    assert [r["id"] for r in listed] == [receipt_id]
    assert json.loads(world.office.ok("receipt", "list", "--body", "ICC-OTP",
                                      "--json").stdout) == []
    item_events = json.loads(world.office.ok("custody", "show", world.items["statement.txt"],
                                             "--json").stdout)["events"]
    assert [e["action"] for e in item_events] == ["item.ingested", "package.sent"]
    table = world.office.ok("package", "list").stdout.splitlines()
    assert table[0].split() == ["id", "body", "items", "bytes", "state", "created_at", "sent_at"]
    assert table[1].split()[:5] == [built["id"], "UA-OPG", "1", str(out.stat().st_size), "sent"]
    assert world.office.ok("custody", "verify").exit_code == 0


def test_create_and_send_in_one_step(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    outbox = world.tmp / "usb"
    outbox.mkdir()
    monkeypatch.chdir(world.tmp)
    result = world.office.ok("package", "create", "--to", "ICC-OTP", "--case", CASE, "--send",
                             "--outbox", str(outbox), "--json")
    data = json.loads(result.stdout)
    assert data["state"] == "sent"
    assert (outbox / f"{data['id']}.evpkg").is_file()
    assert (world.tmp / f"{data['id']}.evpkg").is_file()


def _no_trace(world: World, before_events: int, out: Path) -> None:
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".tmp")] == []
    assert json.loads(world.office.ok("package", "list", "--json").stdout) == []
    report = json.loads(world.office.ok("custody", "verify", "--json").stdout)
    assert report["events"] == before_events


def _refused(world: World, *args: str) -> tuple[int, str]:
    """``package create ARGS`` into a new file; after checking it left no trace, its exit code
    and stderr."""
    out = world.tmp / "refused.evpkg"
    before = json.loads(world.office.ok("custody", "verify", "--json").stdout)["events"]
    result = world.office("package", "create", *args, "-o", str(out))
    _no_trace(world, before, out)
    return result.exit_code, result.stderr


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["--to", "NOPE", "--case", CASE], 1, "body NOPE: not found; see `evault body list`"),
        (["--to", "ICC-OTP", "--item", "EV-000000000000"], 1,
         "item EV-000000000000: not found; see `evault items list`"),
        (["--to", "ICC-OTP", "--case", CASE, "--label", "nothing-has-this"], 1,
         f"case {CASE}: no items with label nothing-has-this; nothing to package"),
        (["--to", "ICC-OTP"], 2, "package create: choose items with --item ID... or --case CASE"),
    ],
)
def test_refusals_leave_nothing(world: World, args: list[str], code: int, message: str) -> None:
    assert _refused(world, *args) == (code, f"evault: {message}\n")


def test_a_row_whose_digest_differs_from_its_signed_event_is_refused(world: World) -> None:
    # An item whose recorded digest SQL changed: nothing may leave the vault, and the
    # refusal names the row, not the blob (it blamed the blob).
    from vault.service.vaults import open_vault
    from vault.store.models import Item

    first = sorted(world.items.values())[0]
    v = open_vault(world.office.vault)
    with v.transaction() as session:
        item = session.get(Item, first)
        assert item is not None
        item.sha256 = hashlib.sha256(b"not what was ingested").hexdigest()
    v.close()
    assert _refused(world, "--to", "ICC-OTP", "--case", CASE) == (
        3, f"evault: item {first}: its row's size or SHA-256 is not what the event that "
        "created it signed (changed by SQL outside evault); nothing was packaged; run `evault "
        "doctor`, which names the difference, and restore the database from a backup\n")


def test_a_blob_replaced_by_another_that_decrypts_is_refused(world: World) -> None:
    # The blob of another item put in its place (it decrypts with the storage key; anyone
    # can make such a file with the storage key's public half): the content is not the
    # item's, whichever way it differs.
    from vault.service.vaults import open_vault
    from vault.store.models import Item

    first, other = sorted(world.items.values())[:2]
    v = open_vault(world.office.vault)
    with v.transaction() as session:
        a, b = session.get(Item, first), session.get(Item, other)
        assert a is not None and b is not None
        blobs = world.office.vault / "blobs"
        (blobs / a.blob_id[:2] / a.blob_id).write_bytes(
            (blobs / b.blob_id[:2] / b.blob_id).read_bytes())
        what = "SHA-256" if a.size == b.size else "size"
    v.close()
    assert _refused(world, "--to", "ICC-OTP", "--case", CASE) == (
        3, f"evault: item {first}: stored content does not match the {what} its row records "
        "(the blob damaged, or the row changed by SQL outside evault); run `evault doctor`, "
        "which names a changed row, else report the blob as damaged\n")


def test_a_blob_that_does_not_decrypt_is_named_by_its_item(world: World) -> None:
    """A damaged blob failed the package with "age payload: chunk 0 does not authenticate"
    alone: no item, no next step."""
    from vault.service.vaults import open_vault
    from vault.store.models import Item

    first = sorted(world.items.values())[0]
    v = open_vault(world.office.vault)
    with v.transaction() as session:
        item = session.get(Item, first)
        assert item is not None
        blob = world.office.vault / "blobs" / item.blob_id[:2] / item.blob_id
        last = max(0, item.size - 1) // (64 << 10)  # the age chunk the damage is in
    v.close()
    data = bytearray(blob.read_bytes())
    data[-20] ^= 1
    blob.write_bytes(bytes(data))
    assert _refused(world, "--to", "ICC-OTP", "--case", CASE) == (
        3, f"evault: item {first}: its blob does not decrypt (age payload: chunk {last} does "
        "not authenticate); report the blob as damaged or replaced and restore it from a "
        "backup\n")


def test_body_without_active_key_is_refused(world: World) -> None:
    world.office.ok("body", "key", "revoke", "ICC-OTP", world.icc.fingerprint)
    assert _refused(world, "--to", "ICC-OTP", "--case", CASE) == (
        1, "evault: body ICC-OTP: has no active key; add one with `evault body key add ICC-OTP`\n")


def test_release_rules(world: World, tmp_path: Path) -> None:
    world.office.ok("rule", "add", "no-foreign-release", "--none")
    world.office.ok("rule", "add", "restricted-icc", "ICC-OTP")
    extra = tmp_path / "restricted.txt"
    extra.write_bytes(b"restricted to the ICC")
    world.office.ok("ingest", str(extra), "--case", CASE, "--label", "restricted-icc")
    restricted = json.loads(world.office.ok("items", "list", "--label", "restricted-icc",
                                            "--json").stdout)[0]["id"]
    assert _refused(world, "--to", "UA-OPG", "--case", CASE) == (
        1, f"evault: item {restricted}: label restricted-icc may go only to ICC-OTP (release "
        "rule); leave it out of this package\n")
    world.office.ok("package", "create", "--to", "ICC-OTP", "--item", restricted, "-o",
                    str(world.tmp / "icc.evpkg"))
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"never to leave")
    world.office.ok("ingest", str(secret), "--case", CASE, "--label", "no-foreign-release")
    never = world.office("package", "create", "--to", "ICC-OTP", "--case", CASE, "-o",
                         str(world.tmp / "x.evpkg"))
    assert never.exit_code == 1
    assert "label no-foreign-release may go to no body" in never.stderr


def test_existing_output_needs_force(world: World) -> None:
    out = world.tmp / "taken.evpkg"
    out.write_bytes(b"someone else's file")
    result = world.office("package", "create", "--to", "ICC-OTP", "--case", CASE, "-o", str(out))
    assert (result.exit_code, result.stderr) == (
        1, f"evault: {out}: exists already; choose another -o or pass --force\n")
    assert out.read_bytes() == b"someone else's file"
    world.office.ok("package", "create", "--to", "ICC-OTP", "--case", CASE, "-o", str(out),
                    "--force")
    assert list(_members(out)) == ["payload.age", "envelope.json", "envelope.json.sig"]


def _other_file_system(tmp_path: Path) -> Path:
    """A folder on another file system than ``tmp_path`` (the tmpfs at /dev/shm)."""
    if sys.platform != "linux":
        pytest.skip("another file system for the outbox: /dev/shm, on Linux (as in CI)")
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.fail("these tests need /dev/shm on a file system of its own (Linux tmpfs)")
    return Path(tempfile.mkdtemp(prefix="evault-test-outbox-", dir=shm))


@pytest.fixture
def usb_outbox(tmp_path: Path) -> Iterator[Path]:
    """An outbox on another file system, as a mounted transfer drive would be."""
    folder = _other_file_system(tmp_path)
    yield folder
    shutil.rmtree(folder)


def test_outbox_on_the_vault_file_system_gets_the_built_file(world: World) -> None:
    out = world.tmp / "icc.evpkg"
    built = json.loads(world.office.ok("package", "create", "--to", "ICC-OTP", "--case", CASE,
                                       "-o", str(out), "--json").stdout)
    outbox = world.tmp / "outbox"
    outbox.mkdir()
    world.office.ok("send", built["id"], "--outbox", str(outbox))
    delivered = outbox / f"{built['id']}.evpkg"
    # The same file under a second name: nothing copied; read-only under both names.
    assert os.path.samefile(delivered, out)
    assert out.stat().st_mode & 0o222 == 0
    assert [p.name for p in outbox.iterdir()] == [delivered.name]
    assert hashlib.sha256(delivered.read_bytes()).hexdigest() == built["file_sha256"]


def test_outbox_on_another_file_system_gets_a_checked_copy(world: World,
                                                            usb_outbox: Path) -> None:
    out = world.tmp / "icc.evpkg"
    built = json.loads(world.office.ok("package", "create", "--to", "ICC-OTP", "--case", CASE,
                                       "-o", str(out), "--json").stdout)
    world.office.ok("send", built["id"], "--outbox", str(usb_outbox))
    delivered = usb_outbox / f"{built['id']}.evpkg"
    assert not os.path.samefile(delivered, out)
    assert delivered.read_bytes() == out.read_bytes()
    assert delivered.stat().st_mode & 0o222 == 0
    assert [p.name for p in usb_outbox.iterdir()] == [delivered.name]


@pytest.mark.parametrize("where", ["same file system", "another file system"])
def test_a_package_file_changed_after_build_is_not_delivered(world: World, where: str) -> None:
    out = world.tmp / "icc.evpkg"
    built = json.loads(world.office.ok("package", "create", "--to", "ICC-OTP", "--case", CASE,
                                       "-o", str(out), "--json").stdout)
    out.chmod(0o600)
    data = bytearray(out.read_bytes())
    data[-1] ^= 1  # inside the tar's end padding: the file is still a readable package
    out.write_bytes(bytes(data))
    outbox = world.tmp / "outbox" if where == "same file system" else _other_file_system(world.tmp)
    outbox.mkdir(exist_ok=True)
    try:
        result = world.office("send", built["id"], "--outbox", str(outbox))
        final = outbox / f"{built['id']}.evpkg"
        assert (result.exit_code, result.stderr) == (
            3, f"evault: {final}: the file made in the outbox does not match the package as "
               f"built; nothing was left there; check {out} with `evault verify` or rebuild it\n")
        assert list(outbox.iterdir()) == []
        shown = json.loads(world.office.ok("package", "show", built["id"], "--json").stdout)
        assert shown["state"] == "built"
    finally:
        if where != "same file system":
            shutil.rmtree(outbox)


def _written(world: World, body: str) -> tuple[Any, Any]:
    """A package for ``body`` planned and written, not yet recorded: (vault, written file)."""
    from vault.service.packaging.build import write_package_file
    from vault.service.packaging.plan import plan_package
    from vault.service.vaults import open_vault

    v = open_vault(world.office.vault)
    draft = plan_package(v, body_id=body, case=CASE, directory=world.tmp)
    return v, write_package_file(v, draft)


def test_a_key_revoked_while_the_package_was_written_refuses_it(world: World) -> None:
    from vault.errors import PolicyError
    from vault.service.packaging.build import finish_package

    v, written = _written(world, "ICC-OTP")
    assert written.draft.temp.is_file()
    world.office.ok("body", "key", "revoke", "ICC-OTP", world.icc.fingerprint)
    with pytest.raises(PolicyError) as refused:
        finish_package(v, written)
    v.close()
    assert str(refused.value) == (
        f"body ICC-OTP: key {world.icc.fingerprint} was revoked while package "
        f"{written.draft.package_id} was being built; nothing was kept, build it again")
    assert not written.draft.temp.exists() and not written.draft.target.exists()
    assert json.loads(world.office.ok("package", "list", "--json").stdout) == []
    assert world.office.ok("custody", "verify").exit_code == 0


@pytest.mark.parametrize("change", ["rewritten", "appended"])
def test_a_package_file_changed_after_it_was_written_is_refused(world: World,
                                                               change: str) -> None:
    # Its SHA-256 is taken as it is written, never read back: the file recorded must be the
    # one stamped right after its last byte.
    from vault.errors import VerificationError
    from vault.service.packaging.build import finish_package

    v, written = _written(world, "ICC-OTP")
    path = written.draft.temp
    os.chmod(path, 0o600)
    data = path.read_bytes()
    time.sleep(0.05)  # past the file system's timestamp tick, so the change shows in mtime
    if change == "rewritten":  # same size, one byte of the envelope flipped
        at = data.index(b'"body":"ICC-OTP"')
        path.write_bytes(data[:at] + b"X" + data[at + 1:])
    else:
        with open(path, "ab") as f:
            f.write(bytes(512))
    with pytest.raises(VerificationError) as refused:
        finish_package(v, written)
    v.close()
    assert str(refused.value) == (
        f"package {written.draft.package_id}: its file changed after it was written; "
        "nothing was recorded, build the package again")
    assert not path.exists() and not written.draft.target.exists()
    assert json.loads(world.office.ok("package", "list", "--json").stdout) == []


def test_a_change_hidden_from_the_stamp_reaches_no_outbox(world: World) -> None:
    # A same-user process changes the file and puts its modification time back: the seal
    # cannot tell, the package is recorded with the digest of the bytes written, and the
    # delivery, which reads back the file it names in the outbox (a second name for this
    # very file here), refuses it.
    from vault.service.packaging.build import finish_package

    v, written = _written(world, "ICC-OTP")
    path = written.draft.temp
    st = path.stat()
    os.chmod(path, 0o600)
    data = path.read_bytes()
    at = data.index(b'"body":"ICC-OTP"')
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(b"X")
    os.chmod(path, 0o400)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    built = finish_package(v, written)
    v.close()
    outbox = world.tmp / "hidden-change-outbox"
    outbox.mkdir()
    result = world.office("send", built.id, "--outbox", str(outbox))
    final = outbox / f"{built.id}.evpkg"
    assert (result.exit_code, result.stderr) == (
        3, f"evault: {final}: the file made in the outbox does not match the package as "
           f"built; nothing was left there; check {built.path} with `evault verify` or "
           "rebuild it\n")
    assert list(outbox.iterdir()) == []


def test_a_label_forbidding_the_body_added_meanwhile_refuses_the_package(world: World) -> None:
    from vault.errors import PolicyError
    from vault.service.packaging.build import finish_package
    from vault.store.models import ItemLabel

    world.office.ok("rule", "add", "restricted-icc", "ICC-OTP")
    v, written = _written(world, "UA-OPG")
    item = world.items["statement.txt"]
    with v.transaction() as session:  # as a labelling command of another process would
        session.add(ItemLabel(item_id=item, label="restricted-icc"))
    with pytest.raises(PolicyError) as refused:
        finish_package(v, written)
    v.close()
    assert str(refused.value).startswith(f"item {item}: label restricted-icc may go only to "
                                         "ICC-OTP")
    assert not written.draft.temp.exists() and not written.draft.target.exists()
    assert json.loads(world.office.ok("package", "list", "--json").stdout) == []


def test_a_body_holding_the_senders_own_key_is_refused(world: World) -> None:
    # Every package is encrypted to the sender's own key already (escrow): as a body key
    # too it would be listed twice, which the package's records cannot hold.
    card = world.tmp / "registry-office.card.json"
    world.office.ok("identity", "export", "registry-office", "-o", str(card))
    fingerprint = json.loads(card.read_text())["fingerprint"]
    world.office.ok("body", "add", "SELF-TEST", "--name", "Fictional self test")
    world.office.ok("body", "key", "add", "SELF-TEST", "--card", str(card))
    assert _refused(world, "--to", "SELF-TEST", "--case", CASE) == (
        1, f"evault: body SELF-TEST: key {fingerprint} is the sender's own key, which every "
        "package is encrypted to anyway (escrow); a body's keys are its officers': revoke it "
        f"with `evault body key revoke SELF-TEST {fingerprint}`\n")
