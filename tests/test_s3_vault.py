"""A vault whose blobs live on S3 (issue 21): init, the record in the database, ingest
(here and in worker processes), package, open, items export, doctor, Object Lock, and the
faults the issue names: the server killed during a multipart upload, a wrong checksum, an
object missing at package time.

Every test talks to a real SeaweedFS (scripts/s3_server.py), one per pytest worker, a
bucket per test; nothing is mocked. A test that needs to break something mid-way wraps one
method of the store (``part_checksum``, ``S3Upload._send``) and lets the real server answer.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from s3_server import S3Server

from vault.store.s3blobs import PART_SIZE, S3Upload

MIB = 1 << 20
CASE = "UA-2026-0042"
PREFIX = "office-a"
_BLOB_KEY = re.compile(rf"{PREFIX}/[0-9a-f]{{32}}")




def _office(tmp: Path, bucket: str, database: str | None = None, *args: str) -> Cli:
    """A vault with its blobs in ``bucket`` and the identity registry-office."""
    a = Cli(tmp / "a")
    a.ok("init", "--blobs", f"s3://{bucket}/{PREFIX}", *args,
         *(["--db", database] if database else []))
    a.ok("identity", "create", "registry-office")
    return a


def _ingest(cli: Cli, path: Path) -> dict[str, Any]:
    [row] = json.loads(cli.ok("ingest", str(path), "--case", CASE, "--create-case",
                              "--json").stdout)
    return dict(row)


def _keys(server: S3Server, bucket: str) -> list[str]:
    page = server.client().list_objects_v2(Bucket=bucket)
    return sorted(entry["Key"] for entry in page.get("Contents", []))


def _pending(server: S3Server, bucket: str) -> list[str]:
    page = server.client().list_multipart_uploads(Bucket=bucket)
    return sorted(entry["Key"] for entry in page.get("Uploads", []))


def _doctor(cli: Cli, *args: str) -> dict[str, Any]:
    return dict(json.loads(cli.ok("doctor", "--json", *args).stdout))


def _body(tmp: Path, a: Cli, bucket: str | None = None) -> Cli:
    """ICC-OTP's vault (its blobs in ``bucket`` under another prefix, if given), its key
    added to A's body ICC-OTP, A's card added to its contacts."""
    b = Cli(tmp / "b")
    b.ok("init", *(["--blobs", f"s3://{bucket}/icc-otp"] if bucket else []))
    b.ok("identity", "create", "icc-officer")
    b.ok("identity", "export", "-o", str(tmp / "b.card.json"))
    a.ok("identity", "export", "-o", str(tmp / "a.card.json"))
    a_fp = json.loads(a.ok("identity", "show", "registry-office", "--json").stdout)[
        "fingerprint"]
    a.ok("body", "add", "ICC-OTP", "--name", "Fictional ICC-OTP")
    a.ok("body", "key", "add", "ICC-OTP", "--card", str(tmp / "b.card.json"))
    b.ok("contact", "add", str(tmp / "a.card.json"), "--fingerprint", a_fp)
    a.ok("rule", "default", "allow")
    return b


# ------------------------------------------------------------------------ the whole path


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgres",
                                                             marks=pytest.mark.postgres)])
def test_a_vault_on_s3_end_to_end(aws_env: None, server: S3Server, tmp_path: Path,
                                  database: str, request: pytest.FixtureRequest) -> None:
    """init records the bucket (config.toml and database, nothing secret); a 17 MiB file
    goes up in two parts under a random name; package, open (into a second vault on S3)
    and items export read it back by ranged GETs; doctor agrees with the bucket."""
    bucket = server.bucket()
    url = request.getfixturevalue("pg_url") if database == "postgres" else None
    a = _office(tmp_path, bucket, url)
    config = (tmp_path / "a" / "config.toml").read_text()
    assert f'blobs = "s3://{bucket}/{PREFIX}"' in config
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    for path in (tmp_path / "a").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert not (tmp_path / "a" / "blobs").exists()

    evidence = tmp_path / "intercept.bin"
    data = os.urandom(17 * MIB)
    evidence.write_bytes(data)
    row = _ingest(a, evidence)
    [key] = _keys(server, bucket)
    assert _BLOB_KEY.fullmatch(key)
    assert hashlib.sha256(data).hexdigest() not in key
    head = server.client().head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] > 17 * MIB  # the age file, not the plaintext
    assert head["ETag"].strip('"').endswith("-2")  # two parts of 16 MiB at most

    b = _body(tmp_path, a, bucket)
    package = tmp_path / "icc.evpkg"
    a.ok("package", "create", "--to", "ICC-OTP", "--item", row["id"], "-o", str(package))
    opened = json.loads(b.ok("open", str(package), "--out", str(tmp_path / "received"),
                             "--json").stdout)
    [bag] = (tmp_path / "received").iterdir()
    assert (bag / "data" / row["id"] / "intercept.bin").read_bytes() == data
    assert len(_keys(server, bucket)) == 2  # B's blob, under its own prefix
    assert [k for k in _keys(server, bucket) if k.startswith("icc-otp/")]
    b.ok("items", "export", opened["items"][0]["id"], "-o", str(tmp_path / "b.out"),
         "--reason", "check the received copy")
    assert (tmp_path / "b.out").read_bytes() == data

    report = _doctor(a)
    assert {k: report[k] for k in ("blob_store", "blobs", "blobs_missing", "orphaned_blobs",
                                   "temporary_files")} == {
        "blob_store": f"s3://{bucket}/{PREFIX}", "blobs": 1, "blobs_missing": 0,
        "orphaned_blobs": 0, "temporary_files": 0}


def test_bulk_intake_uploads_from_worker_processes(aws_env: None, server: S3Server,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Bulk intake hands runs of small files to worker processes, which open the same
    bucket from the store's spec and upload in parallel; every blob is recorded once."""
    monkeypatch.setattr("vault.service.intake.PARALLEL_MIN_FILES", 8)
    monkeypatch.setattr("vault.service.intake.WORKER_CHUNK", 4)
    bucket = server.bucket()
    a = _office(tmp_path, bucket)
    folder = tmp_path / "statements"
    folder.mkdir()
    for i in range(24):
        (folder / f"statement-{i:02}.txt").write_bytes(f"fictional statement {i}\n".encode())
    ingested = json.loads(a.ok("ingest", str(folder), "--recursive", "--case", CASE,
                               "--create-case", "--json").stdout)
    assert len(ingested) == 24
    assert len(_keys(server, bucket)) == 24
    report = _doctor(a)
    assert (report["blobs"], report["blobs_missing"], report["orphaned_blobs"]) == (24, 0, 0)


# ------------------------------------------------------------------------------ refusals


def test_init_refusals_leave_nothing(aws_env: None, server: S3Server, tmp_path: Path) -> None:
    """Each refusal is one line, exit 1 or 2, and no vault folder is made."""
    target = tmp_path / "v"
    cases = [
        (["--blobs", "s3://no-such-bucket-here/x"], 1,
         "evault: s3://no-such-bucket-here/x: no such bucket: create it or fix the URL\n"),
        (["--blobs", "s3://Bad_Bucket/x"], 2,
         "evault: not an S3 location: 's3://Bad_Bucket/x': the bucket name must be 3-63 "
         "lowercase letters, digits, '.' or '-', starting and ending with a letter or digit "
         "(write s3://BUCKET or s3://BUCKET/PREFIX)\n"),
        (["--object-lock", "compliance", "--retain-days", "30"], 2,
         "evault: init: --object-lock needs --blobs s3://BUCKET/PREFIX (a folder has no "
         "Object Lock)\n"),
        (["--blobs", "s3://b-b-b/x", "--object-lock", "compliance"], 2,
         "evault: init: --object-lock and --retain-days go together; give both, or neither "
         "for no retention\n"),
    ]
    for args, code, message in cases:
        result = Cli(target)("init", *args)
        assert (result.exit_code, result.stderr) == (code, message), args
        assert not target.exists()
    plain = server.bucket()
    result = Cli(target)("init", "--blobs", f"s3://{plain}/x", "--object-lock", "compliance",
                         "--retain-days", "30")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"evault: s3://{plain}/x: the bucket has no Object Lock (")
    assert result.stderr.endswith("); create it with Object Lock enabled, or leave out "
                                  "--object-lock\n")
    assert not target.exists()


def test_every_machine_must_name_the_store_the_database_records(
        aws_env: None, server: S3Server, tmp_path: Path, pg_url: str) -> None:
    """A team vault on PostgreSQL: a machine whose config.toml names no bucket, or another
    prefix, is refused before it writes a blob where the others do not look; so is a new
    vault folder made on the team's database without --blobs."""
    bucket = server.bucket()
    a = _office(tmp_path, bucket, pg_url)
    evidence = tmp_path / "statement.txt"
    evidence.write_bytes(b"fictional statement\n")
    config = tmp_path / "a" / "config.toml"
    text = config.read_text()
    source = f"s3://{bucket}/{PREFIX}"
    config.write_text(text.replace(f'blobs = "{source}"\n', ""))
    refused = a("ingest", str(evidence), "--case", CASE, "--create-case")
    assert (refused.exit_code, refused.stderr) == (1, (
        f"evault: {config}: says blobs in its blobs/ folder, but the vault's database "
        f"records blobs on {source}; make config.toml say what the database does (copy it "
        "from a machine of the vault)\n"))
    config.write_text(text.replace(f'"{source}"', f'"{source}-other"'))
    refused = a("ingest", str(evidence), "--case", CASE, "--create-case")
    assert refused.exit_code == 1
    assert f"says blobs on {source}-other, but the vault's database records blobs on " \
           f"{source};" in refused.stderr
    assert _keys(server, bucket) == []
    joined = Cli(tmp_path / "second")("init", "--db", pg_url)
    assert joined.exit_code == 1
    assert joined.stderr == (
        f"evault: {tmp_path / 'second' / 'config.toml'}: says blobs in its blobs/ folder, "
        f"but the vault's database records blobs on {source}; make config.toml say what "
        "the database does (copy it from a machine of the vault)\n")
    assert not (tmp_path / "second").exists()


# ---------------------------------------------------------------------------------- faults


def test_missing_object_at_package_time(aws_env: None, server: S3Server,
                                        tmp_path: Path) -> None:
    """An object deleted behind the vault's back: package create names the item and the
    object, exit 1, and leaves no package; doctor counts and names it."""
    bucket = server.bucket()
    a = _office(tmp_path, bucket)
    evidence = tmp_path / "statement.txt"
    evidence.write_bytes(b"fictional statement\n")
    row = _ingest(a, evidence)
    [key] = _keys(server, bucket)
    server.client().delete_object(Bucket=bucket, Key=key)
    _body(tmp_path, a)
    out = tmp_path / "icc.evpkg"
    refused = a("package", "create", "--to", "ICC-OTP", "--item", row["id"], "-o", str(out))
    assert (refused.exit_code, refused.stderr) == (1, (
        f"evault: item {row['id']}: s3://{bucket}/{key}: no such object in the S3 store: "
        "the blob is missing; run evault doctor\n"))
    assert list(tmp_path.glob("*.evpkg")) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    shown = a("doctor")
    blob = key.rsplit("/", 1)[1]
    assert (shown.exit_code, "blobs_missing:    1\n" in shown.stdout) == (3, True)
    assert (f"evault: blob {blob} (items {row['id']}): missing from s3://{bucket}/{PREFIX}; "
            "restore it from a backup, then run `evault custody verify`\n") in shown.stderr


def test_doctor_finds_and_repairs_orphans_and_pending_uploads(
        aws_env: None, server: S3Server, tmp_path: Path) -> None:
    """An object no row names (a writer killed before its commit) and a multipart upload
    never completed: doctor counts them; --repair aborts the upload and leaves the orphan
    in place (it may be evidence whose rows were deleted), saying so."""
    bucket = server.bucket()
    a = _office(tmp_path, bucket)
    evidence = tmp_path / "statement.txt"
    evidence.write_bytes(b"fictional statement\n")
    _ingest(a, evidence)
    [kept] = _keys(server, bucket)
    client = server.client()
    orphan = f"{PREFIX}/{'ab' * 16}"
    client.put_object(Bucket=bucket, Key=orphan, Body=b"age ciphertext of a killed intake")
    client.create_multipart_upload(Bucket=bucket, Key=f"{PREFIX}/{'cd' * 16}")
    client.put_object(Bucket=bucket, Key=f"{PREFIX}/not-a-blob.txt", Body=b"someone else's")
    report = _doctor(a)
    assert (report["blobs"], report["orphaned_blobs"], report["temporary_files"],
            report["blobs_missing"]) == (1, 1, 1, 0)
    repaired = _doctor(a, "--repair")
    assert (repaired["blobs_removed"], repaired["orphans_left"]) == (1, 1)
    assert _keys(server, bucket) == sorted([kept, orphan, f"{PREFIX}/not-a-blob.txt"])
    assert _pending(server, bucket) == []
    said = a("doctor", "--repair")
    assert (said.exit_code, said.stderr) == (
        0, f"evault: 1 orphaned object(s) left in {repaired['blob_store']}: no row names them, "
           "but they may be evidence whose rows were deleted; remove them by hand only once "
           "`evault custody verify` passes and you have checked them\n")
    again = _doctor(a)
    assert (again["orphaned_blobs"], again["temporary_files"]) == (1, 0)


def test_wrong_checksum_is_refused_and_nothing_is_recorded(
        aws_env: None, server: S3Server, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A part whose SHA-256 header does not match its bytes (as a corrupting proxy would
    send): the server refuses it (BadDigest), ingest exits 3 with one line, no item is
    recorded and no object or pending upload is left."""
    bucket = server.bucket()
    a = _office(tmp_path, bucket)
    evidence = tmp_path / "statement.txt"
    evidence.write_bytes(b"fictional statement\n")
    monkeypatch.setattr("vault.store.s3blobs.S3BlobStore.part_checksum",
                        lambda self, data: hashlib.sha256(data + b"!").digest())
    refused = a("ingest", str(evidence), "--case", CASE, "--create-case")
    assert refused.exit_code == 3
    assert re.fullmatch(
        rf"evault: s3://{bucket}/{PREFIX}/[0-9a-f]{{32}}: the S3 store refused a part whose "
        r"SHA-256 checksum does not match the bytes it received \(BadDigest\); nothing was "
        r"stored: try again\n", refused.stderr)
    assert json.loads(a.ok("items", "list", "--json").stdout) == []
    assert (_keys(server, bucket), _pending(server, bucket)) == ([], [])


def test_server_killed_during_a_multipart_upload(
        aws_env: None, server: S3Server, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3 server killed (SIGKILL) after the first part of a file of two parts (one part
    and one MiB): ingest exits 1 with one line naming the object, records nothing; once the
    server is back (the same data, new ports), doctor finds the upload left pending,
    --repair aborts it and the same ingest succeeds. (The worker's server: it is started
    again before the test ends.)"""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # no retries against a dead server
    bucket = server.bucket()
    a = _office(tmp_path, bucket)
    evidence = tmp_path / "intercept.bin"
    evidence.write_bytes(os.urandom(PART_SIZE + MIB))
    send = S3Upload._send

    def killing(self: S3Upload, part: bytes) -> None:
        send(self, part)
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()

    monkeypatch.setattr(S3Upload, "_send", killing)
    try:
        refused = a("ingest", str(evidence), "--case", CASE, "--create-case")
    finally:
        monkeypatch.setattr(S3Upload, "_send", send)
        if server.proc is not None and server.proc.poll() is not None:
            server.start()
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", server.endpoint)
    assert refused.exit_code == 1
    assert re.fullmatch(
        rf"evault: s3://{bucket}/{PREFIX}/[0-9a-f]{{32}}: cannot reach the S3 store "
        r"\(EndpointConnectionError\): check AWS_ENDPOINT_URL_S3 and the network, then "
        r"try again\n", refused.stderr)
    assert json.loads(a.ok("items", "list", "--json").stdout) == []
    report = _doctor(a)
    assert (report["temporary_files"], report["orphaned_blobs"], report["blobs"]) == (1, 0, 0)
    assert _doctor(a, "--repair")["blobs_removed"] == 1
    assert _pending(server, bucket) == []
    _ingest(a, evidence)
    assert len(_keys(server, bucket)) == 1


# ----------------------------------------------------------------------------- Object Lock


def test_object_lock_is_asked_for_recorded_and_read_by_version(
        aws_env: None, server: S3Server, tmp_path: Path) -> None:
    """With --object-lock every blob is written under COMPLIANCE retention; the vault
    records the version and the date the server reports; the server refuses to delete the
    version; a newer version put over the key (by someone holding the bucket's credentials)
    is not what the vault reads: the package carries the evidence, not the impostor."""
    bucket = server.bucket(object_lock=True)
    before = datetime.now(timezone.utc)
    a = _office(tmp_path, bucket, None, "--object-lock", "compliance", "--retain-days", "2")
    assert 'object_lock = { mode = "compliance", days = 2 }' in (
        tmp_path / "a" / "config.toml").read_text()
    evidence = tmp_path / "statement.txt"
    evidence.write_bytes(b"fictional statement of a protected witness\n")
    row = _ingest(a, evidence)
    [key] = _keys(server, bucket)
    client = server.client()
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{tmp_path / 'a' / 'vault.db'}")
    with engine.connect() as conn:
        [(version, until)] = conn.execute(text("SELECT version_id, retain_until FROM blobs"))
    engine.dispose()
    assert version == head["VersionId"]
    until_at = datetime.fromisoformat(str(until)).replace(tzinfo=timezone.utc)
    assert before + timedelta(days=2) - timedelta(seconds=1) <= until_at
    assert until_at <= datetime.now(timezone.utc) + timedelta(days=2)
    with pytest.raises(Exception, match="AccessDenied"):
        client.delete_object(Bucket=bucket, Key=key, VersionId=version)
    # Someone with the bucket's credentials puts a new version over the blob.
    client.put_object(Bucket=bucket, Key=key, Body=b"not the evidence")
    b = _body(tmp_path, a)
    package = tmp_path / "icc.evpkg"
    a.ok("package", "create", "--to", "ICC-OTP", "--item", row["id"], "-o", str(package))
    b.ok("open", str(package), "--out", str(tmp_path / "received"))
    [bag] = (tmp_path / "received").iterdir()
    assert (bag / "data" / row["id"] / "statement.txt").read_bytes() == evidence.read_bytes()
    report = _doctor(a)
    assert (report["object_lock"], report["blobs_missing"]) == ("compliance:2", 0)
