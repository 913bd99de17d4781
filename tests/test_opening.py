"""The recipient's side: open, acknowledge; the sender imports the acknowledgement."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from conftest import Cli, build_template, copy_template, reuse_world

CASE = "UA-2026-0042"


@dataclass
class World:
    office: Cli
    icc: Cli
    opg: Cli
    tmp: Path
    office_fp: str
    icc_fp: str
    package: Path
    package_id: str


def _vault(tmp: Path, name: str, identity: str) -> tuple[Cli, str, Path]:
    cli = Cli(tmp / name)
    cli.init()
    fp = json.loads(cli.ok("identity", "create", identity, "--json").stdout)["fingerprint"]
    card = tmp / f"{identity}.card.json"
    cli.ok("identity", "export", identity, "-o", str(card))
    return cli, fp, card


@pytest.fixture(scope="module")
def sqlite_vaults(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The vaults of ``world`` before its package, built once for the module."""
    def build(tmp: Path) -> None:
        office_fp, icc_fp = _make_vaults(tmp, None)
        (tmp / "fingerprints.json").write_text(json.dumps([office_fp, icc_fp]))
    return build_template(tmp_path_factory, "opening", build)


@pytest.fixture
def world(sqlite_vaults: Path, tmp_path: Path) -> World:
    """Office, ICC-OTP and UA-OPG vaults on SQLite, and one package for ICC-OTP: the vaults
    are each test's own copy of the module's, the package is built for the test (the office
    records where its file is)."""
    copy_template(sqlite_vaults, tmp_path)
    office_fp, icc_fp = json.loads((tmp_path / "fingerprints.json").read_text())
    return _package_world(tmp_path, office_fp, icc_fp)


@pytest.fixture
def world_any(tmp_path: Path, database: str | None) -> World:
    """The same on each database backend."""
    return _make_world(tmp_path, database)


def _make_world(tmp_path: Path, database: str | None) -> World:
    """The vaults of :func:`_make_vaults` and a package for ICC-OTP: the vaults each test's
    own copy of those the test process builds once per backend (conftest's
    ``reuse_world``), the package built for the test."""
    fingerprints = reuse_world("opening-vaults", tmp_path, [database],
                               lambda tmp, dbs: _make_vaults(tmp, dbs[0]))
    return _package_world(tmp_path, *fingerprints)


def _make_vaults(tmp_path: Path, database: str | None) -> tuple[str, str]:
    """The office, ICC-OTP and UA-OPG vaults with the evidence ingested: (the office's
    fingerprint, ICC-OTP's)."""
    office = Cli(tmp_path / "office")
    office.init(database)
    office_fp = json.loads(office.ok("identity", "create", "registry-office",
                                     "--json").stdout)["fingerprint"]
    office_card = tmp_path / "office.card.json"
    office.ok("identity", "export", "-o", str(office_card))
    icc, icc_fp, icc_card = _vault(tmp_path, "icc", "icc-officer")
    opg, _opg_fp, opg_card = _vault(tmp_path, "opg", "opg-officer")
    for body, card in (("ICC-OTP", icc_card), ("UA-OPG", opg_card)):
        office.ok("body", "add", body, "--name", f"Fictional {body}")
        office.ok("body", "key", "add", body, "--card", str(card))
    for recipient in (icc, opg):
        recipient.ok("contact", "add", str(office_card), "--fingerprint", office_fp)
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    (evidence / "statement W-1.txt").write_bytes(b"fictional statement\n")
    (evidence / "photo.jpg").write_bytes(bytes(range(256)) * 300)
    office.ok("ingest", str(evidence), "-r", "--case", CASE, "--create-case", "--title", "T",
              "--also-digest", "md5")
    return office_fp, icc_fp


def _package_world(tmp_path: Path, office_fp: str, icc_fp: str) -> World:
    """The vaults at ``tmp_path`` and a package of CASE for ICC-OTP."""
    office, icc, opg = (Cli(tmp_path / name) for name in ("office", "icc", "opg"))
    package = tmp_path / "icc.evpkg"
    pid = json.loads(office.ok("package", "create", "--to", "ICC-OTP", "--case", CASE, "-o",
                               str(package), "--json").stdout)["id"]
    return World(office, icc, opg, tmp_path, office_fp, icc_fp, package, pid)


def _out_is_empty(out: Path) -> None:
    assert not out.exists() or list(out.iterdir()) == []


def test_open_verifies_extracts_and_receives(world_any: World) -> None:
    world = world_any
    out = world.tmp / "received"
    result = world.icc.ok("open", str(world.package), "--out", str(out))
    assert result.stderr == (
        f"evault: opened package {world.package_id} from registry-office ({world.office_fp}) "
        f"for ICC-OTP: 2 item(s) verified and received, 2 custody event(s) proven; files in "
        f"{out / world.package_id}\n")
    bag = out / world.package_id
    names = sorted(p.name for p in (bag / "data").rglob("*") if p.is_file())
    assert names == ["photo.jpg", "statement W-1.txt"]
    assert sorted(p.name for p in out.iterdir()) == [world.package_id]
    items = json.loads(world.icc.ok("items", "list", "--json").stdout)
    assert sorted(i["name"] for i in items) == names
    shown = json.loads(world.icc.ok("items", "show", items[0]["id"], "--json").stdout)
    assert shown["title"] == "T" and "md5" in shown["digests"]
    events = json.loads(world.icc.ok("custody", "show", items[0]["id"], "--json").stdout)
    (event,) = events["events"]
    assert event["action"] == "item.received"
    assert event["details"]["package"] == world.package_id
    assert event["details"]["sender"] == world.office_fp
    opened = json.loads(world.icc.ok("custody", "show", world.package_id, "--json").stdout)
    assert [e["action"] for e in opened["events"]] == ["package.opened"]
    assert world.icc.ok("custody", "verify").exit_code == 0
    again = world.icc("open", str(world.package), "--out", str(world.tmp / "again"))
    assert (again.exit_code, again.stderr) == (
        1, f"evault: package {world.package_id}: opened already in this vault\n")


def test_unknown_sender_is_refused_unless_trusted_by_fingerprint(world: World) -> None:
    stranger = Cli(world.tmp / "stranger")
    stranger.init()
    stranger.ok("identity", "create", "someone")
    out = world.tmp / "out"
    # A vault that knows no sender at all.
    refused = stranger("open", str(world.package), "--out", str(out))
    assert refused.exit_code == 3
    assert refused.stderr == (
        f"evault: package {world.package_id}: sender registry-office ({world.office_fp}) is not "
        "a known contact; add their card with `evault contact add` or pass --trust-sender "
        "FINGERPRINT\n")
    _out_is_empty(out)
    world.icc.ok("contact", "revoke", "registry-office")  # ICC's vault: the sender not trusted
    wrong = world.icc("open", str(world.package), "--out", str(out), "--trust-sender",
                      world.icc_fp)
    assert wrong.exit_code == 3 and "not by --trust-sender" in wrong.stderr
    world.icc.ok("open", str(world.package), "--out", str(out), "--trust-sender",
                 world.office_fp, "--allow-revoked")


def test_a_package_for_another_body_does_not_open(world: World) -> None:
    out = world.tmp / "out"
    result = world.opg("open", str(world.package), "--out", str(out))
    assert result.exit_code == 3
    assert result.stderr == (
        f"evault: package {world.package_id}: not for this vault; it is encrypted to ICC-OTP "
        f"({world.icc_fp}), not to opg-officer, the only identity here; ask its sender for a "
        "package to your key\n")
    _out_is_empty(out)


def _member_offsets(path: Path) -> dict[str, tuple[int, int]]:
    with tarfile.open(path) as tar:
        return {m.name: (m.offset_data, m.size) for m in tar.getmembers()}


@pytest.mark.parametrize("member", ["envelope.json", "envelope.json.sig", "payload.age"])
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_one_flipped_byte_in_any_member_is_refused(world: World, member: str,
                                                   where: str) -> None:
    offset, size = _member_offsets(world.package)[member]
    position = {"start": 10, "middle": size // 2, "end": size - 5}[where]
    data = bytearray(world.package.read_bytes())
    data[offset + position] ^= 0x20
    bad = world.tmp / "bad.evpkg"
    bad.write_bytes(bytes(data))
    out = world.tmp / "out"
    result = world.icc("open", str(bad), "--out", str(out))
    assert result.exit_code == 3, result.stderr
    assert result.stderr.startswith("evault: ") and result.stderr.count("\n") == 1
    _out_is_empty(out)
    assert json.loads(world.icc.ok("items", "list", "--json").stdout) == []


def _rebuild(world: World, envelope: bytes, signature: str, payload: bytes, name: str) -> Path:
    from vault.formats.package import write_package

    payload_path = world.tmp / f"{name}.payload"
    payload_path.write_bytes(payload)
    target = world.tmp / f"{name}.evpkg"
    write_package(target, envelope, signature, payload_path)
    return target


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def _office_keys(world: World) -> tuple[object, object]:
    from vault.service.identities import current_key, get_identity, load_keypair
    from vault.service.vaults import open_vault

    v = open_vault(world.office.vault)
    with v.transaction() as session:
        pair = load_keypair(v, current_key(get_identity(session, None)))
    v.close()
    return pair.signing, pair.age


def test_payloads_swapped_between_packages_are_refused(world: World) -> None:
    other = world.tmp / "other.evpkg"
    world.office.ok("package", "create", "--to", "ICC-OTP", "--case", CASE, "-o", str(other))
    a, b = _members(world.package), _members(other)
    # A's envelope and signature (which the office really signed) with B's payload: the sizes
    # happen to match, so only the digest catches it.
    from vault.formats.package import Envelope, sign_envelope

    signing, _ = _office_keys(world)
    envelope = Envelope.from_bytes(a["envelope.json"])
    envelope = replace(envelope, payload_size=len(b["payload.age"]))
    data, sig = sign_envelope(envelope, signing)  # type: ignore[arg-type]
    swapped = _rebuild(world, data, sig, b["payload.age"], "swapped")
    out = world.tmp / "out"
    result = world.icc("open", str(swapped), "--out", str(out))
    assert result.exit_code == 3
    assert "payload.age does not match the SHA-256 in the signed envelope" in result.stderr
    _out_is_empty(out)


def test_a_payload_re_encrypted_for_another_body_is_caught(world: World) -> None:
    """The office's key signs a new envelope for UA-OPG around ICC's bag: the statement,
    signed inside the bag, still names ICC-OTP and its key."""
    from vault.crypto.age import AgeIdentity, AgeRecipient, decrypt, encrypt
    from vault.formats.package import Envelope, RecipientKey, sign_envelope
    from vault.service.identities import current_key, get_identity, load_keypair
    from vault.service.vaults import open_vault

    members = _members(world.package)
    v = open_vault(world.icc.vault)
    with v.transaction() as session:
        icc_pair = load_keypair(v, current_key(get_identity(session, None)))
    v.close()
    plain = io.BytesIO()
    decrypt(io.BytesIO(members["payload.age"]), plain, [AgeIdentity.from_raw(icc_pair.age.raw())])
    opg = json.loads(world.office.ok("body", "show", "UA-OPG", "--json").stdout)["keys"][0]
    sealed = io.BytesIO()
    encrypt(io.BytesIO(plain.getvalue()), sealed, [AgeRecipient.parse(opg["age_recipient"])])
    signing, _ = _office_keys(world)
    envelope = Envelope.from_bytes(members["envelope.json"])
    import hashlib

    envelope = replace(envelope, body="UA-OPG",
                       recipients=(RecipientKey(opg["fingerprint"], opg["age_recipient"]),),
                       payload_size=len(sealed.getvalue()),
                       payload_sha256=hashlib.sha256(sealed.getvalue()).hexdigest())
    data, sig = sign_envelope(envelope, signing)  # type: ignore[arg-type]
    forged = _rebuild(world, data, sig, sealed.getvalue(), "readdressed")
    out = world.tmp / "out"
    result = world.opg("open", str(forged), "--out", str(out))
    assert result.exit_code == 3
    assert result.stderr == (
        f"evault: package {world.package_id}: the statement is for body ICC-OTP, the envelope "
        "for UA-OPG; the payload was re-addressed\n")
    _out_is_empty(out)


@pytest.mark.parametrize("kind", ["traversal", "absolute", "symlink", "outside"])
def test_hostile_bags_are_refused_even_when_signed(world: World, kind: str) -> None:
    """A sender's key cannot make evault write outside --out: the tar is checked first."""
    import hashlib

    from vault.crypto.age import AgeRecipient, encrypt
    from vault.formats.package import Envelope, sign_envelope

    members = _members(world.package)
    envelope = Envelope.from_bytes(members["envelope.json"])
    root = envelope.package_id
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        name = {"traversal": f"{root}/data/../../../escaped.txt", "absolute": "/tmp/escaped.txt",
                "symlink": f"{root}/data/link", "outside": "elsewhere/x.txt"}[kind]
        info = tarfile.TarInfo(name)
        if kind == "symlink":
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 5
            tar.addfile(info, io.BytesIO(b"owned"))
    sealed = io.BytesIO()
    encrypt(io.BytesIO(raw.getvalue()), sealed,
            [AgeRecipient.parse(k.age_recipient) for k in envelope.all_recipients])
    envelope = replace(envelope, payload_size=len(sealed.getvalue()),
                       payload_sha256=hashlib.sha256(sealed.getvalue()).hexdigest())
    signing, _ = _office_keys(world)
    data, sig = sign_envelope(envelope, signing)  # type: ignore[arg-type]
    hostile = _rebuild(world, data, sig, sealed.getvalue(), f"hostile-{kind}")
    out = world.tmp / "deep" / "out"
    result = world.icc("open", str(hostile), "--out", str(out))
    assert result.exit_code == 3, result.stderr
    assert result.stderr.count("\n") == 1
    _out_is_empty(out)
    assert not (world.tmp / "escaped.txt").exists()
    assert not Path("/tmp/escaped.txt").exists()


def _with_extra_file(world: World, extra: str) -> Path:
    """The package re-made with its sender's real key, its bag holding one more file
    ``extra`` outside data/ that its tag manifest does not list (nor the statement cover)."""
    import hashlib

    from vault.crypto.age import AgeIdentity, AgeRecipient, decrypt, encrypt
    from vault.formats.package import Envelope, sign_envelope
    from vault.service.identities import current_key, get_identity, load_keypair
    from vault.service.vaults import open_vault

    members = _members(world.package)
    envelope = Envelope.from_bytes(members["envelope.json"])
    v = open_vault(world.icc.vault)
    with v.transaction() as session:
        icc_pair = load_keypair(v, current_key(get_identity(session, None)))
    v.close()
    plain = io.BytesIO()
    decrypt(io.BytesIO(members["payload.age"]), plain, [AgeIdentity.from_raw(icc_pair.age.raw())])
    raw = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(plain.getvalue())) as old, \
            tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in old.getmembers():
            tar.addfile(member, old.extractfile(member) if member.isfile() else None)
        info = tarfile.TarInfo(f"{envelope.package_id}/{extra}")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"extra\n"))
    sealed = io.BytesIO()
    encrypt(io.BytesIO(raw.getvalue()), sealed,
            [AgeRecipient.parse(k.age_recipient) for k in envelope.all_recipients])
    envelope = replace(envelope, payload_size=len(sealed.getvalue()),
                       payload_sha256=hashlib.sha256(sealed.getvalue()).hexdigest())
    signing, _ = _office_keys(world)
    data, sig = sign_envelope(envelope, signing)  # type: ignore[arg-type]
    return _rebuild(world, data, sig, sealed.getvalue(), "extra")


@pytest.mark.parametrize("extra", ["run-me.sh", "evault/notes.txt"])
def test_a_file_outside_data_not_in_the_tag_manifest_is_refused(world: World,
                                                                extra: str) -> None:
    """No signature covers a tag file the tag manifest does not list: it is refused, not
    extracted (only the statement and the manifest itself may be unlisted)."""
    package = _with_extra_file(world, extra)
    out = world.tmp / "out"
    result = world.icc("open", str(package), "--out", str(out))
    assert (result.exit_code, result.stderr) == (3, (
        f"evault: package {world.package_id}: {extra} is not listed in the tag manifest, so no "
        "signature covers it; files outside data/ must be listed; ask the sender for a new "
        "package\n"))
    _out_is_empty(out)
    assert json.loads(world.icc.ok("items", "list", "--json").stdout) == []


def test_a_case_id_that_climbs_is_refused(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sender signs items.json with case ``A/../../etc`` (its own vault allowed it, as
    earlier versions of evault did): the recipient refuses it rather than making a case of it."""
    hostile = "A/../../etc"
    note = world.tmp / "note.txt"
    note.write_bytes(b"fictional note\n")
    with monkeypatch.context() as older_sender:
        older_sender.setattr("vault.service.intake.check_case_id", lambda case: None)
        world.office.ok("ingest", str(note), "--case", hostile, "--create-case", "--title", "N")
    items = json.loads(world.office.ok("items", "list", "--json").stdout)
    photo = next(i["id"] for i in items if i["case"] == hostile)
    package = world.tmp / "climb.evpkg"
    pid = json.loads(world.office.ok("package", "create", "--to", "ICC-OTP", "--item", photo,
                                     "-o", str(package), "--json").stdout)["id"]
    out = world.tmp / "out"
    result = world.icc("open", str(package), "--out", str(out))
    assert (result.exit_code, result.stderr) == (3, (
        f"evault: package {pid}: item {photo}: evault/items.json: case A/../../etc must be a "
        "case id (1-64 letters, digits, '.', '_', '/' or '-', starting with a letter or digit, "
        "with no empty, '.' or '..' part between '/')\n"))
    _out_is_empty(out)
    assert json.loads(world.icc.ok("case", "list", "--json").stdout) == []


def _ack(world: World) -> Path:
    world.icc.ok("open", str(world.package), "--out", str(world.tmp / "received"))
    ack = world.tmp / "ack.json"
    world.icc.ok("ack", str(world.package), "-o", str(ack))
    return ack


def test_ack_and_import(world_any: World) -> None:
    world = world_any
    ack = _ack(world)
    doc = json.loads(ack.read_text())
    assert doc["package_id"] == world.package_id and doc["body"] == "ICC-OTP"
    assert doc["recipient"]["fingerprint"] == world.icc_fp
    assert set(doc) == {"type", "version", "package_id", "body", "recipient", "envelope_sha256",
                        "statement_sha256", "items", "received_at", "checkpoint",
                        "cosigned_checkpoint"}
    assert doc["version"] == 2
    witnessed = int(doc["cosigned_checkpoint"].split("\n")[1])
    imported = world.office.ok("receipt", "import", str(ack))
    assert imported.stderr == (f"evault: package {world.package_id} acknowledged by "
                               "icc-officer of ICC-OTP; ICC-OTP witnessed this vault's log at "
                               f"size {witnessed}\n")
    shown = json.loads(world.office.ok("package", "show", world.package_id, "--json").stdout)
    assert shown["state"] == "acknowledged"
    assert shown["acknowledged_at"] == doc["received_at"]
    events = json.loads(world.office.ok("custody", "show", world.package_id, "--json").stdout)
    assert [e["action"] for e in events["events"]] == ["package.built", "package.acknowledged"]
    again = world.office("receipt", "import", str(ack))
    assert (again.exit_code, again.stderr) == (
        0, f"evault: package {world.package_id} already acknowledged by icc-officer of ICC-OTP; "
        "this acknowledgement was imported before, nothing changed\n")
    second = world.tmp / "second-ack.json"
    world.icc.ok("ack", world.package_id, "-o", str(second))
    replay = world.office("receipt", "import", str(second))
    assert replay.exit_code == 3 and "this one is a replay" in replay.stderr
    assert world.office.ok("custody", "verify").exit_code == 0
    assert world.icc.ok("custody", "verify").exit_code == 0


def test_tampered_and_misdirected_acks_are_refused(world: World) -> None:
    ack = _ack(world)
    sig = Path(str(ack) + ".sig")
    doc = json.loads(ack.read_text())

    def attempt(data: bytes, signature: str) -> tuple[int, str]:
        path = world.tmp / "attempt.json"
        path.write_bytes(data)
        Path(str(path) + ".sig").write_text(signature)
        result = world.office("receipt", "import", str(path))
        return result.exit_code, result.stderr

    # A tampered byte: the signature fails.
    tampered = ack.read_bytes().replace(b'"size":20', b'"size":21')
    assert tampered != ack.read_bytes()
    code, err = attempt(tampered, sig.read_text())
    assert code == 3 and "does not verify" in err

    # Replayed for another package: the id is signed, so it cannot be changed.
    other = world.tmp / "other.evpkg"
    other_id = json.loads(world.office.ok("package", "create", "--to", "ICC-OTP", "--case", CASE,
                                          "-o", str(other), "--json").stdout)["id"]
    code, err = attempt(ack.read_bytes().replace(world.package_id.encode(), other_id.encode()),
                        sig.read_text())
    assert code == 3 and err.startswith(f"evault: ack for package {other_id}: ")

    # An ack for a package this office never sent.
    code, err = attempt(ack.read_bytes().replace(world.package_id.encode(), b"PKG-000000000000"),
                        sig.read_text())
    assert (code, err) == (3, "evault: ack for package PKG-000000000000: no such package was "
                              "sent from this vault\n")

    # Signed by a key that is not ICC-OTP's: a second ICC identity never registered.
    world.icc.ok("identity", "create", "icc-intern")
    from vault.crypto.keys import SigningKey
    from vault.formats.package import Party
    from vault.formats.receipt import ACK_NAMESPACE, Acknowledgement, sign_document

    stranger = SigningKey.generate()
    forged = Acknowledgement.from_bytes(ack.read_bytes())
    forged = replace(forged, recipient=Party("icc-intern", stranger.public.fingerprint))
    data = forged.to_bytes()
    code, err = attempt(data, sign_document(data, stranger, ACK_NAMESPACE))
    assert code == 3 and "it is not from a key of ICC-OTP" in err
    assert doc["items"] and json.loads(world.office.ok(
        "package", "show", world.package_id, "--json").stdout)["state"] == "built"


def _lying_package(world: World, name: str,
                   digests: dict[str, str]) -> tuple[Path, str, str]:
    """A package for ICC-OTP of photo.jpg whose items.json lists ``digests`` for it, made and
    signed with the office's real key: the sender altered its own database first."""
    import sqlite3

    items = json.loads(world.office.ok("items", "list", "--json").stdout)
    (photo,) = [i["id"] for i in items if i["name"] == "photo.jpg"]
    db = sqlite3.connect(world.office.vault / "vault.db")
    with db:
        for algorithm, value in digests.items():
            db.execute("INSERT OR REPLACE INTO item_digests (item_id, algorithm, hexdigest) "
                       "VALUES (?, ?, ?)", (photo, algorithm, value))
    db.close()
    package = world.tmp / f"{name}.evpkg"
    pid = json.loads(world.office.ok("package", "create", "--to", "ICC-OTP", "--item", photo,
                                     "-o", str(package), "--json").stdout)["id"]
    return package, pid, photo


@pytest.mark.parametrize(("algorithm", "false"), [("sha256", "ab" * 32), ("md5", "0" * 32)])
def test_a_false_digest_from_the_sender_is_refused(world: World, algorithm: str,
                                                   false: str) -> None:
    """items.json's digests are the sender's claims: the recipient recomputes each while it
    stores the file, and a claim that differs refuses the package (none becomes a record)."""
    package, pid, photo = _lying_package(world, "lying", {algorithm: false})
    content = (world.tmp / "evidence" / "photo.jpg").read_bytes()
    import hashlib

    true = hashlib.new(algorithm, content).hexdigest()
    out = world.tmp / "out"
    result = world.icc("open", str(package), "--out", str(out))
    assert (result.exit_code, result.stderr) == (3, (
        f"evault: package {pid}: item {photo}: the sender's {algorithm} in evault/items.json "
        f"({false}) is not the content's ({true}); nothing was received, ask the sender for a "
        "corrected package\n"))
    _out_is_empty(out)
    assert json.loads(world.icc.ok("items", "list", "--json").stdout) == []
    blobs = [p for p in (world.icc.vault / "blobs").rglob("*") if p.is_file()]
    assert [p.name for p in blobs if p.name != ".intake.lock"] == []  # none left behind


def test_received_digests_are_the_recipients_own(world: World) -> None:
    """An honest sender's MD5 and SHA-1 are recomputed and stored; the item.received event
    carries the digests this vault computed (its own lowercase hex, though the sender wrote
    its SHA-1 in capitals)."""
    import hashlib

    content = (world.tmp / "evidence" / "photo.jpg").read_bytes()
    truth = {a: hashlib.new(a, content).hexdigest() for a in ("sha256", "md5", "sha1")}
    package, _, _ = _lying_package(world, "honest", {"sha1": truth["sha1"].upper()})
    world.icc.ok("open", str(package), "--out", str(world.tmp / "out"))
    (item,) = json.loads(world.icc.ok("items", "list", "--json").stdout)
    shown = json.loads(world.icc.ok("items", "show", item["id"], "--json").stdout)
    assert (shown["sha256"], shown["digests"]) == (
        truth["sha256"], {"md5": truth["md5"], "sha1": truth["sha1"]})
    (event,) = json.loads(world.icc.ok("custody", "show", item["id"], "--json").stdout)["events"]
    assert event["action"] == "item.received" and event["digests"] == truth


def test_a_digest_the_recipient_cannot_recompute_is_refused(world: World) -> None:
    package, pid, photo = _lying_package(world, "odd", {"crc32": "0badf00d"})
    out = world.tmp / "out"
    result = world.icc("open", str(package), "--out", str(out))
    assert (result.exit_code, result.stderr) == (3, (
        f"evault: package {pid}: item {photo}: evault/items.json: digest crc32 cannot be "
        "recomputed here; digests may be sha256, md5, sha1\n"))
    _out_is_empty(out)


def test_a_revoked_sender_opens_only_with_allow_revoked(world: World) -> None:
    revoked = json.loads(world.icc.ok("contact", "revoke", "registry-office",
                                      "--json").stdout)["revoked_at"]
    out = world.tmp / "out"
    refused = world.icc("open", str(world.package), "--out", str(out), "--trust-sender",
                        world.office_fp)
    assert (refused.exit_code, refused.stderr) == (3, (
        f"evault: {world.package.name}: signed by {world.office_fp}, the key of contact "
        f"registry-office, revoked at {revoked}; --trust-sender does not override a "
        "revocation: add --allow-revoked to open it anyway\n"))
    _out_is_empty(out)
    # Without --trust-sender the refusal names the revocation too, not "no known contact".
    plain = world.icc("open", str(world.package), "--out", str(out))
    assert (plain.exit_code, plain.stderr) == (3, (
        f"evault: package {world.package_id}: sender registry-office ({world.office_fp}) is "
        f"the key of contact registry-office, revoked at {revoked}; to open it anyway, pass "
        f"--trust-sender {world.office_fp} --allow-revoked\n"))
    _out_is_empty(out)
    alone = world.icc("open", str(world.package), "--out", str(out), "--allow-revoked")
    assert (alone.exit_code, alone.stderr) == (2, (
        "evault: --allow-revoked: give it with --trust-sender FINGERPRINT, the revoked key you "
        "mean to accept\n"))
    opened = world.icc.ok("open", str(world.package), "--out", str(out), "--trust-sender",
                          world.office_fp, "--allow-revoked")
    assert opened.stderr.startswith(
        f"evault: warning: the sender's key was revoked at {revoked}; opened because of "
        "--allow-revoked, and logged so in package.opened\n"
        f"evault: opened package {world.package_id} from registry-office")
    (event,) = json.loads(world.icc.ok("custody", "show", world.package_id,
                                       "--json").stdout)["events"]
    assert event["action"] == "package.opened"
    assert event["details"]["sender_revoked_at"] == revoked


# ----------------------------------------------------------------------------- co-recipients


def _plain_payload(cli: Cli, package: Path) -> bytes:
    """The decrypted payload (the bag as a tar) of ``package``, with ``cli``'s vault's key."""
    from vault.crypto.age import AgeIdentity, decrypt
    from vault.service.identities import current_key, get_identity, load_keypair
    from vault.service.vaults import open_vault

    v = open_vault(cli.vault)
    with v.transaction() as session:
        pair = load_keypair(v, current_key(get_identity(session, None)))
    v.close()
    plain = io.BytesIO()
    decrypt(io.BytesIO(_members(package)["payload.age"]), plain,
            [AgeIdentity.from_raw(pair.age.raw())])
    return plain.getvalue()


def test_a_body_finds_no_trace_of_another_body_that_received_the_same_items(
        world: World) -> None:
    """The items went to UA-OPG (built, sent, opened, acknowledged), then to ICC-OTP: nothing
    ICC-OTP receives, stores or signs names UA-OPG, its officer, its keys or its package."""
    # The fixture's package for ICC-OTP predates UA-OPG's; this test makes its own.
    outbox = world.tmp / "outbox"
    outbox.mkdir()
    first = world.tmp / "opg.evpkg"
    other = json.loads(world.office.ok("package", "create", "--to", "UA-OPG", "--case", CASE,
                                       "-o", str(first), "--json").stdout)["id"]
    world.office.ok("send", other, "--outbox", str(outbox))
    world.opg.ok("open", str(first), "--out", str(world.tmp / "opg-received"))
    opg_ack = world.tmp / "opg-ack.json"
    world.opg.ok("ack", other, "-o", str(opg_ack))
    world.office.ok("receipt", "import", str(opg_ack))
    opg_key = json.loads(world.office.ok("body", "show", "UA-OPG", "--json").stdout)["keys"][0]
    traces = {"UA-OPG", "Fictional UA-OPG", "opg-officer", other, opg_key["fingerprint"],
              opg_key["fingerprint"].removeprefix("SHA256:"), opg_key["age_recipient"]}
    # An export inside the office stays in the excerpt: it is the office's own custody.
    items = json.loads(world.office.ok("items", "list", "--json").stdout)
    world.office.ok("items", "export", items[0]["id"], "-o", str(world.tmp / "copy.bin"),
                    "--reason", "forensic examination")

    package = world.tmp / "icc-2.evpkg"
    pid = json.loads(world.office.ok("package", "create", "--to", "ICC-OTP", "--case", CASE,
                                     "-o", str(package), "--json").stdout)["id"]
    world.office.ok("send", pid, "--outbox", str(outbox))
    seen: list[tuple[str, bytes]] = [("package file", package.read_bytes())]
    payload = _plain_payload(world.icc, package)
    seen.append(("decrypted payload", payload))
    with tarfile.open(fileobj=io.BytesIO(payload)) as tar:
        seen += [(f"bag member {m.name}", tar.extractfile(m).read())  # type: ignore[union-attr]
                 for m in tar.getmembers() if m.isfile()]
        excerpt = tar.extractfile(f"{pid}/evault/custody.jsonl").read()  # type: ignore[union-attr]
    actions = [json.loads(json.loads(line)["event"])["action"] for line in excerpt.splitlines()]
    assert sorted(actions) == ["item.exported", "item.ingested", "item.ingested"]

    out = world.tmp / "received"
    opened = world.icc.ok("open", str(package), "--out", str(out))
    assert opened.stderr == (
        f"evault: opened package {pid} from registry-office ({world.office_fp}) for ICC-OTP: "
        f"2 item(s) verified and received, 3 custody event(s) proven; files in {out / pid}\n")
    ack = world.tmp / "icc-ack.json"
    acked = world.icc.ok("ack", pid, "-o", str(ack))
    verified = world.icc.ok("custody", "verify")
    received = json.loads(world.icc.ok("items", "list", "--json").stdout)
    shown = [world.icc.ok(*args) for item in received for args in (
        ("items", "show", item["id"], "--json"), ("custody", "show", item["id"], "--json"),
        ("report", "custody", item["id"]))]
    shown.append(world.icc.ok("custody", "show", pid, "--json"))
    seen += [(f"output of {r}", (r.stdout + r.stderr).encode())
             for r in (opened, acked, verified, *shown)]
    seen += [(f"ack {p.name}", p.read_bytes()) for p in (ack, Path(f"{ack}.sig"))]
    seen += [(f"{p}", p.read_bytes()) for folder in (out, world.icc.vault)
             for p in sorted(folder.rglob("*")) if p.is_file()]
    found = [(where, trace) for where, data in seen for trace in traces
             if trace.encode() in data]
    assert found == []
    # The reduced excerpt still proves the sender's events on the form, and the office takes
    # the acknowledgement back, with ICC-OTP's witness of its log.
    form = world.icc.ok("report", "custody", received[0]["id"]).stdout
    assert "item.ingested" in form and "signature verified" in form
    imported = world.office.ok("receipt", "import", str(ack))
    assert imported.stderr.startswith(f"evault: package {pid} acknowledged by icc-officer of "
                                      "ICC-OTP; ICC-OTP witnessed this vault's log at size ")
    assert world.office.ok("custody", "verify").exit_code == 0


def test_an_excerpt_with_other_packages_events_as_earlier_evaults_made_still_opens(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A package built before excerpts were reduced carries the items' package.sent events
    (the line format is the same): it still opens, its events proven, its excerpt kept."""
    from vault.custody.events import ACTIONS
    from vault.service.packaging import plan

    outbox = world.tmp / "outbox"
    outbox.mkdir()
    world.office.ok("send", world.package_id, "--outbox", str(outbox))
    monkeypatch.setattr(plan, "EXCERPT_ACTIONS", ACTIONS)  # the earlier selection
    package = world.tmp / "old-style.evpkg"
    pid = json.loads(world.office.ok("package", "create", "--to", "ICC-OTP", "--case", CASE,
                                     "-o", str(package), "--json").stdout)["id"]
    out = world.tmp / "received"
    opened = world.icc.ok("open", str(package), "--out", str(out))
    assert opened.stderr == (
        f"evault: opened package {pid} from registry-office ({world.office_fp}) for ICC-OTP: "
        f"2 item(s) verified and received, 4 custody event(s) proven; files in {out / pid}\n")
    items = json.loads(world.icc.ok("items", "list", "--json").stdout)
    form = world.icc.ok("report", "custody", items[0]["id"]).stdout
    assert "package.sent" in form and "NOT verified" not in form
    world.icc.ok("ack", pid, "-o", str(world.tmp / "ack.json"))
    world.office.ok("receipt", "import", str(world.tmp / "ack.json"))
    assert world.icc.ok("custody", "verify").exit_code == 0


def test_a_forwarded_item_keeps_where_it_came_from_not_where_it_went(world: World) -> None:
    """ICC-OTP forwards what it received to UA-OPG after acknowledging it: the excerpt
    carries the item.received event (the office and its package: where the item came from),
    not ICC-OTP's own package events."""
    world.icc.ok("open", str(world.package), "--out", str(world.tmp / "received"))
    world.icc.ok("ack", world.package_id, "-o", str(world.tmp / "ack.json"))
    opg_card = world.tmp / "opg-officer.card.json"
    icc_card = world.tmp / "icc-officer.card.json"
    world.icc.ok("body", "add", "UA-OPG", "--name", "Fictional UA-OPG")
    world.icc.ok("body", "key", "add", "UA-OPG", "--card", str(opg_card))
    world.opg.ok("contact", "add", str(icc_card), "--fingerprint", world.icc_fp)
    forwarded = world.tmp / "forwarded.evpkg"
    pid = json.loads(world.icc.ok("package", "create", "--to", "UA-OPG", "--case", CASE, "-o",
                                  str(forwarded), "--json").stdout)["id"]
    payload = _plain_payload(world.opg, forwarded)
    with tarfile.open(fileobj=io.BytesIO(payload)) as tar:
        excerpt = tar.extractfile(f"{pid}/evault/custody.jsonl").read()  # type: ignore[union-attr]
    events = [json.loads(json.loads(line)["event"]) for line in excerpt.splitlines()]
    assert [e["action"] for e in events] == ["item.received", "item.received"]
    assert {e["details"]["package"] for e in events} == {world.package_id}
    opened = world.opg.ok("open", str(forwarded), "--out", str(world.tmp / "opg-received"))
    assert "2 item(s) verified and received, 2 custody event(s) proven" in opened.stderr


def test_a_relabelled_action_column_does_not_put_another_package_in_the_excerpt(
        world: World) -> None:
    """A database holder at the office relabels the items' package.sent rows as
    item.ingested: the excerpt is chosen by the signed bytes, so they still stay out."""
    from test_key_history import sql

    outbox = world.tmp / "outbox"
    outbox.mkdir()
    world.office.ok("send", world.package_id, "--outbox", str(outbox))
    sql(world.office, "UPDATE custody_events SET action = 'item.ingested' "
                      "WHERE action = 'package.sent'")
    package = world.tmp / "after.evpkg"
    pid = json.loads(world.office.ok("package", "create", "--to", "ICC-OTP", "--case", CASE,
                                     "-o", str(package), "--json").stdout)["id"]
    with tarfile.open(fileobj=io.BytesIO(_plain_payload(world.icc, package))) as tar:
        excerpt = tar.extractfile(f"{pid}/evault/custody.jsonl").read()  # type: ignore[union-attr]
    assert world.package_id.encode() not in excerpt
    actions = [json.loads(json.loads(line)["event"])["action"] for line in excerpt.splitlines()]
    assert actions == ["item.ingested", "item.ingested"]
