"""Hostile review of issue 21 (blobs on S3 for a team vault): attacks that worked, each
fixed, against the real SeaweedFS of scripts/s3_server.py and the real PostgreSQL of the
other tests. Nothing is mocked; where a test needs the server to tell a lie (or to be one
that ignores a parameter) it wraps one method of the store and lets the real server answer
what it is sent.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from s3_server import S3Server
from test_s3_vault import CASE, PREFIX, _doctor, _ingest, _keys, _office, _pending
from test_s3_workers import _waiting_for_advisory_lock

from vault.store.s3blobs import S3BlobStore

# ------------------------------------------------------------------------- locks


def test_doctor_repair_waits_for_a_machine_that_joined_with_init(
        aws_env: None, server: S3Server, tmp_path: Path, pg_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A second machine joins the team vault with `init --db URL --blobs URL` (accepted:
    the database agrees), which gives its config.toml a vault_id of its own. Its intake
    lock was named by that id, so machine A's `doctor --repair` did not wait for it and
    deleted B's uploaded, not yet committed blob as an orphan: the item B then recorded
    had no object. The lock must be the one every machine of the database takes: A's
    doctor is seen waiting for an advisory lock while B holds its intake lock."""
    from vault.service.doctor import diagnose
    from vault.service.vaults import open_vault

    bucket = server.bucket()
    _office(tmp_path, bucket, pg_url)
    Cli(tmp_path / "b").ok("init", "--db", pg_url, "--blobs", f"s3://{bucket}/{PREFIX}")
    b = open_vault(tmp_path / "b")
    try:
        store = b.blob_store()
        done = threading.Event()
        with store.intake_lock():
            with store.create() as (blob_id, f):
                f.write(b"age ciphertext of an intake in flight")
            # The sessions doctor opens carry this name (B's were opened before).
            app = f"evault-test-{os.getpid()}-{tmp_path.name}"[:60]
            monkeypatch.setenv("PGAPPNAME", app)
            thread = threading.Thread(
                target=lambda: (diagnose(tmp_path / "a", repair=True), done.set()),
                daemon=True)
            thread.start()
            deadline = time.monotonic() + 60
            while not _waiting_for_advisory_lock(pg_url, app):
                assert not done.is_set(), (
                    "doctor --repair did not wait for the other machine's intake")
                assert time.monotonic() < deadline, "doctor --repair never waited for a lock"
                time.sleep(0.05)
            still_there = f"{PREFIX}/{blob_id}" in _keys(server, bucket)
        thread.join(60)
        assert done.is_set()
    finally:
        b.close()
    assert still_there


# --------------------------------------------------------------------------- init


def test_a_new_vault_may_not_take_a_prefix_another_vault_uses(
        aws_env: None, server: S3Server, tmp_path: Path) -> None:
    """Two vaults made on one s3://BUCKET/PREFIX (a copy-pasted URL, or on purpose by
    someone who may run `init` but not touch the other vault): each takes the other's
    objects for orphans, and the new vault's `doctor --repair` deleted every blob of the
    first one. `init` of a new vault now refuses a prefix that holds anything."""
    bucket = server.bucket()
    a = _office(tmp_path, bucket)
    evidence = tmp_path / "statement.txt"
    evidence.write_bytes(b"fictional statement\n")
    _ingest(a, evidence)
    [key] = _keys(server, bucket)
    url = f"s3://{bucket}/{PREFIX}"
    other = Cli(tmp_path / "other")
    result = other("init", "--blobs", url)
    if result.exit_code == 0:  # what it did: the first vault's evidence is gone
        other("doctor", "--repair")
        assert key in _keys(server, bucket), "the other vault's repair deleted the blob"
    assert (result.exit_code, result.stderr) == (1, (
        f"evault: {url}: the prefix holds objects already ({key}): another vault's? Give "
        "each vault a prefix of its own (or, for a machine joining a team vault, the "
        "team's --db)\n"))
    assert not (tmp_path / "other").exists()
    # A pending upload counts too; another vault's office-a2 does not (it is not office-a).
    client = server.client()
    fresh = server.bucket()
    client.create_multipart_upload(Bucket=fresh, Key=f"{PREFIX}/{'cd' * 16}")
    client.put_object(Bucket=fresh, Key=f"{PREFIX}2/{'ef' * 16}", Body=b"x")
    result = other("init", "--blobs", f"s3://{fresh}/{PREFIX}")
    assert result.exit_code == 1
    assert "the prefix holds objects already" in result.stderr
    client.abort_multipart_upload(Bucket=fresh, Key=f"{PREFIX}/{'cd' * 16}",
                                  UploadId=_upload_id(client, fresh))
    other.ok("init", "--blobs", f"s3://{fresh}/{PREFIX}")


def _upload_id(client: Any, bucket: str) -> str:
    [upload] = client.list_multipart_uploads(Bucket=bucket)["Uploads"]
    return str(upload["UploadId"])


# ------------------------------------------------------------------------- doctor


def test_repair_touches_nothing_outside_the_prefix_whatever_the_listing_says(
        aws_env: None, server: S3Server, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A server (or a proxy in front of it) that ignores the Prefix of a listing: doctor
    took another vault's pending upload `office-b/<id>` (a prefix as long as office-a) for
    its own, as it cut the prefix's length off the key unchecked, and --repair aborted it.
    Keys not under the prefix are now skipped."""
    bucket = server.bucket()
    a = _office(tmp_path, bucket)
    client = server.client()
    theirs = f"office-b/{'cd' * 16}"
    client.create_multipart_upload(Bucket=bucket, Key=theirs)
    client.put_object(Bucket=bucket, Key=f"office-b/{'ef' * 16}", Body=b"their blob")
    call = S3BlobStore.call

    def no_prefix(self: S3BlobStore, operation: str, key: str | None, **kwargs: Any) -> Any:
        if operation in ("list_objects_v2", "list_multipart_uploads"):
            kwargs.pop("Prefix", None)
        return call(self, operation, key, **kwargs)

    monkeypatch.setattr(S3BlobStore, "call", no_prefix)
    report = _doctor(a, "--repair")
    assert (report["temporary_files"], report["orphaned_blobs"]) == (0, 0)
    assert _pending(server, bucket) == [theirs]


def test_doctor_sees_the_recorded_version_gone_under_a_newer_one(
        aws_env: None, server: S3Server, tmp_path: Path) -> None:
    """A versioned bucket without retention: someone with the bucket's credentials puts a
    new version over a blob and deletes the version the vault recorded. The key is still
    listed, so doctor said `blobs_missing: 0` while every read of the item fails. It now
    checks the recorded version of every blob."""
    bucket = server.bucket(object_lock=True)  # versioning on; the vault asks no retention
    a = _office(tmp_path, bucket)
    evidence = tmp_path / "statement.txt"
    evidence.write_bytes(b"fictional statement\n")
    row = _ingest(a, evidence)
    [key] = _keys(server, bucket)
    client = server.client()
    [recorded] = client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    client.put_object(Bucket=bucket, Key=key, Body=b"not the evidence")
    client.delete_object(Bucket=bucket, Key=key, VersionId=recorded["VersionId"])
    result = a("doctor", "--json")  # evidence gone: a failed check, exit 3
    report = json.loads(result.stdout)
    blob = key.rsplit("/", 1)[1]
    assert (result.exit_code, report["blobs_missing"], report["missing"]) == (
        3, 1, [f"{blob} (items {row['id']})"])


def test_a_listing_that_never_ends_is_one_line_not_a_hang(
        aws_env: None, server: S3Server, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An endpoint that ignores the continuation token and calls every ListObjectsV2 page
    truncated, with the same next token: doctor looped forever. One that calls a page
    truncated and gives no token: a KeyError traceback. A page that does not move the
    listing on is now an error of one line."""
    bucket = server.bucket()
    a = _office(tmp_path, bucket)
    call = S3BlobStore.call
    token: dict[str, str] = {"NextContinuationToken": "same"}

    def stuck(self: S3BlobStore, operation: str, key: str | None, **kwargs: Any) -> Any:
        if operation != "list_objects_v2" or kwargs.get("MaxKeys") is not None:
            return call(self, operation, key, **kwargs)
        kwargs.pop("ContinuationToken", None)
        return {**call(self, operation, key, **kwargs), "IsTruncated": True, **token}

    monkeypatch.setattr(S3BlobStore, "call", stuck)
    expected = (1, (
        f"evault: s3://{bucket}/{PREFIX}: the S3 store's list_objects_v2 said there was "
        "more but gave no new place to go on from; check the S3 endpoint, then try again\n"))
    for lie in ({"NextContinuationToken": "same"}, {}):
        token.clear()
        token.update(lie)
        done: list[Any] = []
        thread = threading.Thread(target=lambda out=done: out.append(a("doctor")),
                                  daemon=True)
        thread.start()
        thread.join(20)
        assert done, f"doctor hung (or raised) on a listing that never ends: {lie}"
        assert (done[0].exit_code, done[0].stderr) == expected


# ----------------------------------------------------------------------- config.toml


def test_object_lock_days_must_be_a_whole_number_in_config_toml(
        aws_env: None, server: S3Server, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`days = 2.0` passed the range check and equalled the database's `compliance:2`, so
    the vault took it; the spec handed to bulk-intake workers then said `compliance:2.0`,
    which they refused to parse (a traceback-less but baffling failure of every worker).
    A float is now refused when config.toml is read, with one line."""
    monkeypatch.setattr("vault.service.intake.PARALLEL_MIN_FILES", 2)
    monkeypatch.setattr("vault.service.intake.WORKER_CHUNK", 1)
    bucket = server.bucket(object_lock=True)
    a = _office(tmp_path, bucket, None, "--object-lock", "compliance", "--retain-days", "2")
    config = tmp_path / "a" / "config.toml"
    config.write_text(config.read_text().replace("days = 2 }", "days = 2.0 }"))
    folder = tmp_path / "statements"
    folder.mkdir()
    for i in range(4):
        (folder / f"s{i}.txt").write_bytes(f"fictional statement {i}\n".encode())
    result = a("ingest", str(folder), "--recursive", "--case", "UA-2026-0042",
               "--create-case")
    assert (result.exit_code, result.stderr) == (1, (
        f"evault: {config}: object lock: retention of 2.0 days: give 1 to 36500 days\n"))


# ------------------------------------------------------- found in review, fixed afterwards


def test_an_intake_whose_lock_went_with_its_connection_records_nothing(
        aws_env: None, server: S3Server, tmp_path: Path, pg_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The session holding a machine's shared intake lock ends mid-upload (a network cut,
    idle_session_timeout): the lock is gone, so another machine's `doctor --repair` may
    already have removed the blob as an orphan. The intake must not record it: it checks
    the lock just before its commit, exit 1, one line."""
    import hashlib

    import sqlalchemy as sa

    from vault.store.s3blobs import S3Upload

    bucket = server.bucket()
    a = _office(tmp_path, bucket, pg_url)
    evidence = tmp_path / "statement.txt"
    evidence.write_bytes(b"fictional statement\n")
    schema = pg_url.rsplit("%3D", 1)[1]
    key = int.from_bytes(hashlib.sha256(f"{schema}\0evault:intake".encode()).digest()[:8],
                         "big", signed=True)
    engine = sa.create_engine(pg_url)
    finish = S3Upload.finish

    def cut(self: S3Upload) -> Any:
        stored = finish(self)
        with engine.begin() as conn:  # end the session that holds this schema's lock
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = "
                f"'advisory' AND classid = {(key >> 32) & 0xFFFFFFFF} AND objid = "
                f"{key & 0xFFFFFFFF} AND objsubid = 1")
        return stored

    monkeypatch.setattr(S3Upload, "finish", cut)
    try:
        refused = a("ingest", str(evidence), "--case", CASE, "--create-case")
    finally:
        engine.dispose()
    monkeypatch.setattr(S3Upload, "finish", finish)
    assert (refused.exit_code, refused.stderr) == (1, (
        "evault: vault database: the lock 'evault:intake' was lost (the connection that held "
        "it dropped); nothing of this step was recorded: run it again\n"))
    report = _doctor(a)
    # The refused batch removed its own blob, as any failed intake does.
    assert (report["items"], report["orphaned_blobs"], _keys(server, bucket)) == (0, 0, [])


def test_an_answer_without_the_fields_s3_always_gives_is_one_line(
        aws_env: None, server: S3Server, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An endpoint (or a proxy) whose answers lack UploadId, ETag or ContentLength: one
    line naming the object and the field, exit 1, never a KeyError traceback."""
    bucket = server.bucket()
    a = _office(tmp_path, bucket)
    small = tmp_path / "statement.txt"
    small.write_bytes(b"fictional statement\n")
    large = tmp_path / "intercept.bin"  # over one 16 MiB part: a multipart upload
    large.write_bytes(os.urandom(17 << 20))
    call = S3BlobStore.call
    for operation, field, evidence in (("put_object", "ETag", small),
                                       ("create_multipart_upload", "UploadId", large),
                                       ("upload_part", "ETag", large),
                                       ("head_object", "ContentLength", large)):

        def lying(self: S3BlobStore, op: str, key: str | None, **kwargs: Any) -> Any:
            answer = call(self, op, key, **kwargs)
            if op == operation:  # noqa: B023 (used within this iteration only)
                answer = {k: v for k, v in answer.items() if k != field}  # noqa: B023
            return answer

        monkeypatch.setattr(S3BlobStore, "call", lying)
        refused = a("ingest", str(evidence), "--case", CASE, "--create-case")
        monkeypatch.setattr(S3BlobStore, "call", call)
        assert refused.exit_code == 1, refused.stderr
        assert refused.stderr.startswith(f"evault: s3://{bucket}/{PREFIX}/"), refused.stderr
        assert refused.stderr.endswith(
            f": the S3 store's answer lacks {field}; check the S3 endpoint, then try "
            "again\n"), refused.stderr
    assert _doctor(a)["items"] == 0
