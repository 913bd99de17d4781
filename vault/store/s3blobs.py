"""The S3 blob store: age-encrypted blobs as objects under random names in a bucket.

    >>> store = S3BlobStore(S3Location.parse("s3://evidence/office-a"))  # doctest: +SKIP
    >>> with store.create() as (blob_id, f):                           # doctest: +SKIP
    ...     _ = f.write(b"age-encrypted bytes")
    >>> f.stored.checksum                     # the store's SHA-256, matched  # doctest: +SKIP
    'Lm1k...=-1'
    >>> with store.open(blob_id) as f:                                 # doctest: +SKIP
    ...     f.read()
    b'age-encrypted bytes'

One job: where blobs live when they live on S3-compatible object storage (AWS S3, MinIO,
Ceph, SeaweedFS): ``<prefix>/<32 hex>`` in one bucket, the name random (as in
:mod:`vault.store.blobs`: it says nothing of the content). Writing streams a multipart
upload, one part in memory at a time, each part sent with its SHA-256 checksum header
(``x-amz-checksum-sha256``, which the server checks and refuses with ``BadDigest``); a blob
smaller than one part goes in a single PUT with that header instead (one request, not the
four of a multipart upload: what bulk intake of small files waits on). The
upload is completed only when the body ran to its end, and the object counts as stored
(:attr:`S3Upload.stored`) only after the server's checksum of the whole object equals the
one computed here. Any failure aborts the upload, so nothing is left behind; what a dead
connection leaves is listed by :meth:`S3BlobStore.scan` for ``doctor``. Reading is ranged
GETs, never the whole object in memory.

The endpoint, region and credentials come from the usual AWS environment and files
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL``, ``AWS_REGION`` or ``AWS_DEFAULT_REGION``, ``AWS_PROFILE`` and
``~/.aws/config``), never from the vault's ``config.toml``: nothing secret in the vault.

Imports: :mod:`vault.store.blobs` (the blob ids) and :mod:`vault.errors`; ``boto3`` (the
extra ``s3``) only when a store first talks to its server, so a command that never meets an
S3 store does not load it.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import io
import os
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime, timedelta, timezone
from typing import Any, BinaryIO, cast

from vault.errors import ConfigError, NotFoundError, UsageError, VaultError, VerificationError
from vault.store.blobs import _BLOB_ID, Placement, new_blob_id
from vault.store.vaultdir import ObjectLock

#: Part size of a multipart upload: S3 wants 5 MiB at least (but for the last part) and
#: 10,000 parts at most, so 16 MiB parts reach 156 GiB; one part is held in memory.
PART_SIZE = 16 << 20
MIN_PART_SIZE = 5 << 20
#: Bytes asked for by one ranged GET when reading.
RANGE_SIZE = 16 << 20

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_IPV4 = re.compile(r"\d+\.\d+\.\d+\.\d+")
_URL_HINT = "write s3://BUCKET or s3://BUCKET/PREFIX"


# ------------------------------------------------------------------------------ locations


@dataclasses.dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (``s3://bucket/prefix``); valid once constructed."""

    bucket: str
    prefix: str = ""

    def __post_init__(self) -> None:
        rule = _bucket_rule(self.bucket) or _prefix_rule(self.prefix)
        if rule:
            raise UsageError(f"not an S3 location: {self.url!r}: {rule} ({_URL_HINT})")

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """Parse ``s3://bucket`` or ``s3://bucket/prefix/more``, strictly: no user, port,
        query, fragment, empty or dot segment, or character outside ``A-Za-z0-9._-``."""
        rule: str | None
        if not url.startswith("s3://"):
            rule = "the scheme must be s3://"
        elif any(c in url[len("s3://"):] for c in "?#@:"):
            rule = "no user, port, query or fragment"
        else:
            bucket, _, prefix = url[len("s3://"):].partition("/")
            if "/" in url[len("s3://"):] and not prefix:
                rule = "no empty prefix after the bucket"
            else:
                rule = _bucket_rule(bucket) or _prefix_rule(prefix)
                if not rule:
                    return cls(bucket, prefix)
        raise UsageError(f"not an S3 location: {url!r}: {rule} ({_URL_HINT})")

    @property
    def url(self) -> str:
        """The ``s3://`` URL."""
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def listing(self) -> str:
        """The prefix to list the blobs by: ``prefix/``, or nothing at the bucket's root."""
        return f"{self.prefix}/" if self.prefix else ""

    def key(self, blob_id: str) -> str:
        """The object key of a blob."""
        if not _BLOB_ID.fullmatch(blob_id):
            raise ValueError(f"not a blob id: {blob_id!r}")
        return self.listing + blob_id

    def object_url(self, key: str) -> str:
        """``s3://bucket/key``, to name an object in a message."""
        return f"s3://{self.bucket}/{key}"


def _bucket_rule(bucket: str) -> str | None:
    """The S3 bucket naming rule ``bucket`` breaks (None if none)."""
    if not _BUCKET.fullmatch(bucket):
        return ("the bucket name must be 3-63 lowercase letters, digits, '.' or '-', "
                "starting and ending with a letter or digit")
    if ".." in bucket or _IPV4.fullmatch(bucket):
        return "the bucket name may not hold '..' or be an IP address"
    return None


def _prefix_rule(prefix: str) -> str | None:
    """The rule a key prefix breaks (None if none)."""
    if not prefix:
        return None
    for segment in prefix.split("/"):
        if not segment:
            return "no empty segment in the prefix (no '//' and no final '/')"
        if segment in (".", ".."):
            return "no '.' or '..' segment in the prefix"
        if not _SEGMENT.fullmatch(segment):
            return "the prefix may hold only letters, digits, '.', '_', '-' and '/'"
    if len(prefix) > 512:
        return "the prefix is longer than 512 characters"
    return None


# ---------------------------------------------------------------------------------- client


def s3_client(*, connect_timeout: float = 10, read_timeout: float = 60) -> Any:
    """A boto3 S3 client configured from the AWS environment and files (not the vault).

    ``AWS_REGION`` is honoured as the AWS CLI v2 and the other SDKs honour it (botocore
    itself reads only ``AWS_DEFAULT_REGION`` and the profile), and ``AWS_MAX_ATTEMPTS``
    (default 4 attempts, the standard retry mode).
    """
    try:
        import boto3
        from botocore.config import Config
    except ImportError as e:
        raise ConfigError(
            "S3 blob store: boto3 is not installed: install evault with the extra s3 "
            "(pip install 'evault[s3]')") from e
    session = boto3.session.Session()
    region = os.environ.get("AWS_REGION") or session.region_name or "us-east-1"
    attempts = os.environ.get("AWS_MAX_ATTEMPTS", "4")
    config = Config(
        connect_timeout=connect_timeout, read_timeout=read_timeout,
        # The AWS variable, as the SDKs read it; an explicit Config would otherwise win.
        retries={"mode": "standard",
                 "max_attempts": int(attempts) if attempts.isdigit() and attempts != "0"
                 else 4},
        # The store sends its own SHA-256 per part; no second checksum (CRC32) on top.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return session.client("s3", region_name=region, config=config)


# ----------------------------------------------------------------------------- the store


@dataclasses.dataclass(frozen=True)
class StoredObject:
    """What the server holds once an upload completed and its checksum matched."""

    blob_id: str
    key: str
    size: int
    parts: int
    #: SHA-256 of the whole object, hex, computed here while writing.
    sha256: str
    #: The server's checksum of the object, as S3 gives it: for a multipart upload the
    #: SHA-256 of the parts' SHA-256s, base64, with ``-<parts>``; for a blob smaller than
    #: a part (one PUT) its SHA-256, base64; ``None`` where the server keeps no SHA-256 (then
    #: the ETag, the MD5s' MD5, was matched instead).
    checksum: str | None
    etag: str
    #: The object's version (a versioned bucket, as Object Lock needs), else None.
    version: str | None = None
    #: When its retention ends, as the server reports it (None: no retention).
    retain_until: datetime | None = None


@dataclasses.dataclass(frozen=True)
class PendingUpload:
    """A multipart upload begun and never completed nor aborted (a dead writer's)."""

    key: str
    upload_id: str
    initiated: datetime | None


class S3BlobStore:
    """Blobs as objects ``<prefix>/<blob id>`` in one bucket (module docstring)."""

    def __init__(
        self, location: S3Location, *, client: Any = None, part_size: int = PART_SIZE,
        range_size: int = RANGE_SIZE, object_lock: ObjectLock | None = None,
        intake_lock: Callable[[bool], AbstractContextManager[Callable[[], None] | None]]
        | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part size {part_size} is under S3's minimum of {MIN_PART_SIZE}")
        self.location = location
        self.part_size = part_size
        self.range_size = range_size
        self.object_lock = object_lock
        self._client = client
        self._intake_lock = intake_lock
        self._held: Callable[[], None] | None = None  # checks the intake lock is still held
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._placed: dict[str, StoredObject] = {}

    @property
    def spec(self) -> str:
        """What a worker process needs to open this store again: the URL and, with Object
        Lock, ``#mode:days`` (credentials come from the environment it inherits)."""
        lock = f"#{self.object_lock.text}" if self.object_lock else ""
        return self.location.url + lock

    @classmethod
    def from_spec(cls, spec: str) -> S3BlobStore:
        """The store :attr:`spec` names (in a worker process: no intake lock here, the
        process that started the workers holds it)."""
        url, _, lock = spec.partition("#")
        return cls(S3Location.parse(url), object_lock=ObjectLock.parse(lock) if lock else None)

    @property
    def where(self) -> str:
        """The store's name in messages and in ``doctor``."""
        return self.location.url

    @contextlib.contextmanager
    def intake_lock(self, *, exclusive: bool = False) -> Iterator[None]:
        """Shared while blobs are written and not yet committed, exclusive for ``doctor
        --repair``: the lock the vault provides across its machines (a PostgreSQL advisory
        lock for a team vault), or none."""
        if self._intake_lock is None:
            yield
            return
        with self._intake_lock(exclusive) as check:
            self._held = check
            try:
                yield
            finally:
                self._held = None

    def sync(self, blob_ids: list[str]) -> None:
        """An object is durable once its upload completed; what is checked here, just before
        the rows that name new blobs are committed, is that the intake lock is still held:
        a writer whose lock went with its database connection may have had its blobs removed
        by another machine's ``doctor --repair``, and must not record them."""
        if blob_ids and self._held is not None:
            self._held()

    def placement(self, blob_id: str) -> Placement | None:
        """The version and retention of a blob this store object wrote (once)."""
        stored = self._placed.pop(blob_id, None)
        if stored is None:
            return None
        return Placement(stored.version, stored.retain_until)

    def check(self) -> None:
        """Fail with one line unless the bucket answers to these credentials and, with
        Object Lock asked for, has Object Lock enabled (``init`` calls this first)."""
        prefix = self.location.listing
        self.call("list_objects_v2", None, Prefix=prefix, MaxKeys=1)
        if self.object_lock is None:
            return
        try:
            answer = self.call("get_object_lock_configuration", None)
        except VaultError as e:
            raise ConfigError(
                f"{self.location.url}: the bucket has no Object Lock ({e}); create it with "
                "Object Lock enabled, or leave out --object-lock") from None
        enabled = answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
        if enabled != "Enabled":
            raise ConfigError(
                f"{self.location.url}: Object Lock is not enabled on the bucket; create it "
                "with Object Lock enabled, or leave out --object-lock")

    def first_key(self) -> str | None:
        """The key of an object, or of a pending upload, under the prefix (None: the
        prefix is unused, as a new vault's must be)."""
        prefix = self.location.listing
        listed = self.call("list_objects_v2", None, Prefix=prefix, MaxKeys=1)
        for entry in listed.get("Contents", []):
            return str(entry.get("Key"))
        pending = self.call("list_multipart_uploads", None, Prefix=prefix, MaxUploads=1)
        for entry in pending.get("Uploads", []):
            return str(entry.get("Key"))
        return None

    @property
    def client(self) -> Any:
        """The S3 client, made (and boto3 imported) at first use."""
        if self._client is None:
            self._client = s3_client()
        return self._client

    def key(self, blob_id: str) -> str:
        """The object key of a blob."""
        return self.location.key(blob_id)

    def call(self, operation: str, key: str | None, **kwargs: Any) -> Any:
        """One S3 call; a failure becomes a :mod:`vault.errors` class with one line."""
        try:
            return getattr(self.client, operation)(Bucket=self.location.bucket, **kwargs)
        except Exception as e:
            raise self._error(e, operation, key) from e

    def field(self, answer: Any, name: str, key: str | None) -> Any:
        """A field the S3 API always gives, from an answer of this store's server; one line,
        not a traceback, when a server (or what stands in for one) leaves it out."""
        value = answer.get(name) if isinstance(answer, dict) else None
        if value is None or (isinstance(value, str) and not value):
            where = self.location.object_url(key) if key else self.location.url
            raise VaultError(f"{where}: the S3 store's answer lacks {name}; check the S3 "
                             "endpoint, then try again")
        return value

    def length(self, head: Any, key: str) -> int:
        """``ContentLength`` of a HEAD answer, a whole number of bytes (else one line)."""
        value = self.field(head, "ContentLength", key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise VaultError(f"{self.location.object_url(key)}: the S3 store's answer gives "
                             "no valid ContentLength; check the S3 endpoint, then try again")
        return value

    def _error(self, e: Exception, operation: str, key: str | None) -> VaultError:
        """One line naming the object, the rule and the next step."""
        where = self.location.object_url(key) if key else self.location.url
        code, status, message = _error_fields(e)
        if code in ("NoSuchKey", "NotFound") or (status == 404 and code != "NoSuchBucket"):
            return NotFoundError(
                f"{where}: no such object in the S3 store: the blob is missing; "
                "run evault doctor")
        if code == "NoSuchBucket":
            return ConfigError(f"{self.location.url}: no such bucket: create it or fix the URL")
        if code == "BadDigest":
            return VerificationError(
                f"{where}: the S3 store refused a part whose SHA-256 checksum does not match "
                "the bytes it received (BadDigest); nothing was stored: try again")
        if status == 403 or code in ("AccessDenied", "InvalidAccessKeyId",
                                     "SignatureDoesNotMatch", "NoCredentialsError",
                                     "PartialCredentialsError"):
            # A HEAD's 403 has no body, so no code: the status alone says it.
            code = code if code and code != "403" else "403 Forbidden"
            return ConfigError(
                f"{where}: the S3 store refused the credentials ({code}): set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or a profile in ~/.aws/config")
        if code in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                    "ConnectionClosedError"):
            return VaultError(
                f"{where}: cannot reach the S3 store ({code}): check AWS_ENDPOINT_URL_S3 "
                "and the network, then try again")
        detail = f"{code}: {message}" if message else code
        return VaultError(f"{where}: S3 {operation} failed ({detail}); try again")

    # -- writing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def create(self) -> Iterator[tuple[str, BinaryIO]]:
        """Yield (blob id, writable file) streaming a multipart upload.

        On a normal exit the last part is sent, the upload completed and the server's
        checksum matched against the one computed here; only then is
        :attr:`S3Upload.stored` set. On any error the upload is aborted (or the completed
        object deleted, if its checksum did not match) and the error raised again.
        """
        blob_id = new_blob_id()
        key = self.key(blob_id)
        retain: dict[str, Any] = {}
        until: datetime | None = None
        if self.object_lock is not None:
            # Whole seconds: S3 keeps the date to the second, and the check below compares.
            until = (self._clock() + timedelta(days=self.object_lock.days)).replace(
                microsecond=0)
            retain = {"ObjectLockMode": self.object_lock.mode.upper(),
                      "ObjectLockRetainUntilDate": until}
        upload = S3Upload(self, blob_id, key, retain, until)
        try:
            yield blob_id, cast(BinaryIO, upload)
            stored = upload.finish()
        except BaseException:
            upload.abort()
            raise
        self._placed[blob_id] = stored

    def part_checksum(self, data: bytes) -> bytes:
        """SHA-256 of one part, as sent in its checksum header (a method, so a test can
        send a wrong one to a real server)."""
        return hashlib.sha256(data).digest()

    # -- reading ---------------------------------------------------------------------------

    def open(self, blob_id: str, version: str | None = None) -> BinaryIO:
        """A readable, seekable stream of a blob (of that ``version``, if the vault recorded
        one), fetched by ranged GETs of :attr:`range_size` bytes; :class:`NotFoundError` if
        the object is missing."""
        key = self.key(blob_id)
        pinned = _pinned(version)
        head = self.call("head_object", key, Key=key, **pinned)
        raw = _RangedReader(self, key, self.length(head, key), self.field(head, "ETag", key),
                           pinned)
        return cast(BinaryIO, io.BufferedReader(raw, buffer_size=1 << 20))

    def exists(self, blob_id: str, version: str | None = None) -> bool:
        """Whether the blob's object (that version of it, if given) exists."""
        key = self.key(blob_id)
        pinned = _pinned(version)
        try:
            self.call("head_object", key, Key=key, **pinned)
        except NotFoundError:
            return False
        return True

    def size(self, blob_id: str) -> int:
        """The blob's size in bytes."""
        key = self.key(blob_id)
        return self.length(self.call("head_object", key, Key=key), key)

    # -- removing and scanning -------------------------------------------------------------

    def remove(self, blob_id: str) -> None:
        """Delete a blob (one no row refers to); a missing one is fine."""
        key = self.key(blob_id)
        self.call("delete_object", key, Key=key)

    def scan(self) -> tuple[list[PendingUpload], list[str]]:
        """(multipart uploads left pending, ids of complete blob objects) under the prefix,
        for ``doctor``: ids no row refers to are orphans, rows with no id here are missing
        blobs. Keys under the prefix that are not blob ids are not listed."""
        prefix = self.location.listing
        ids: list[str] = []
        token: dict[str, str] = {}
        while True:
            page = self.call("list_objects_v2", None, Prefix=prefix, **token)
            for entry in page.get("Contents", []):
                name = _blob_name(entry.get("Key"), prefix)
                if name is not None:
                    ids.append(name)
            if not page.get("IsTruncated"):
                break
            token = self._next_page(page, token, "list_objects_v2",
                                    ContinuationToken="NextContinuationToken")
        pending: list[PendingUpload] = []
        marker: dict[str, str] = {}
        while True:
            page = self.call("list_multipart_uploads", None, Prefix=prefix, **marker)
            for entry in page.get("Uploads", []):
                name = _blob_name(entry.get("Key"), prefix)
                if name is not None:
                    upload_id = self.field(entry, "UploadId", None)
                    pending.append(PendingUpload(self.key(name), upload_id,
                                                 entry.get("Initiated")))
            if not page.get("IsTruncated"):
                break
            marker = self._next_page(page, marker, "list_multipart_uploads",
                                     KeyMarker="NextKeyMarker",
                                     UploadIdMarker="NextUploadIdMarker")
        return pending, sorted(ids)

    def versions(self) -> set[tuple[str, str]]:
        """(blob id, version id) of every version kept under the prefix (a versioned
        bucket), for ``doctor``: a blob whose recorded version is not among them is missing,
        whatever newer version of its key is listed."""
        prefix = self.location.listing
        found: set[tuple[str, str]] = set()
        marker: dict[str, str] = {}
        while True:
            page = self.call("list_object_versions", None, Prefix=prefix, **marker)
            for entry in page.get("Versions", []):
                name = _blob_name(entry.get("Key"), prefix)
                if name is not None and entry.get("VersionId"):
                    found.add((name, str(entry["VersionId"])))
            if not page.get("IsTruncated"):
                break
            marker = self._next_page(page, marker, "list_object_versions",
                                     KeyMarker="NextKeyMarker",
                                     VersionIdMarker="NextVersionIdMarker")
        return found

    def _next_page(self, page: dict[str, Any], current: dict[str, str], operation: str,
                   **fields: str) -> dict[str, str]:
        """The markers of the page after a truncated ``page`` (``fields``: request parameter
        -> answer field); an error if the answer gives none, or the ones just sent (a server
        that would have the listing go round forever)."""
        marker = {param: page.get(answer) for param, answer in fields.items()}
        if not marker.get(next(iter(fields))) or marker == current:
            raise VaultError(
                f"{self.location.url}: the S3 store's {operation} said there was more but "
                "gave no new place to go on from; check the S3 endpoint, then try again")
        return {param: str(value) for param, value in marker.items() if value is not None}

    def abort_pending(self, upload: PendingUpload) -> None:
        """Abort an upload :meth:`scan` found pending (``doctor --repair``)."""
        self.call("abort_multipart_upload", upload.key, Key=upload.key,
                  UploadId=upload.upload_id)


class S3Upload(io.RawIOBase):
    """The writable side of :meth:`S3BlobStore.create`: buffers one part, sends it when
    full. Not for use outside that context manager (it completes or aborts the upload)."""

    def __init__(self, store: S3BlobStore, blob_id: str, key: str,
                 retain: dict[str, Any] | None = None,
                 retain_until: datetime | None = None) -> None:
        super().__init__()
        self.store = store
        self.blob_id = blob_id
        self.key = key
        #: The multipart upload's id, once a first whole part made one necessary: a blob
        #: smaller than a part goes in one PUT (one request, not four).
        self.upload_id: str | None = None
        self.retain = retain or {}
        self.retain_until = retain_until
        self.size = 0
        #: Set once the upload completed and its checksum matched; None before.
        self.stored: StoredObject | None = None
        self._buffer = bytearray()
        self._parts: list[dict[str, Any]] = []
        self._digests: list[bytes] = []
        self._md5s: list[bytes] = []
        self._whole = hashlib.sha256()
        self._done = False

    def writable(self) -> bool:
        """Yes."""
        return True

    def write(self, data: Any) -> int:
        """Buffer ``data``; send a part each time the buffer holds one."""
        if self._done:
            raise ValueError("write to a finished S3 upload")
        view = memoryview(data).cast("B")
        self._whole.update(view)
        self.size += len(view)
        written = len(view)
        # The buffer never holds more than one part: one part and its copy in flight.
        while view:
            room = self.store.part_size - len(self._buffer)
            self._buffer += view[:room]
            view = view[room:]
            if len(self._buffer) == self.store.part_size:
                part = bytes(self._buffer)
                self._buffer.clear()
                if self.upload_id is None:
                    started = self.store.call("create_multipart_upload", self.key, Key=self.key,
                                              ChecksumAlgorithm="SHA256", **self.retain)
                    self.upload_id = self.store.field(started, "UploadId", self.key)
                self._send(part)
        return written

    def _send(self, part: bytes) -> None:
        """Upload one part with its SHA-256 header and check what the server says."""
        number = len(self._parts) + 1
        digest = self.store.part_checksum(part)
        sent = base64.b64encode(digest).decode()
        answer = self.store.call("upload_part", self.key, Key=self.key, UploadId=self.upload_id,
                                 PartNumber=number, Body=part, ChecksumSHA256=sent)
        etag = self.store.field(answer, "ETag", self.key)
        got = answer.get("ChecksumSHA256")
        if got is None:
            # A server that keeps no SHA-256 checksum: its ETag of a part is the part's MD5.
            md5 = hashlib.md5(part, usedforsecurity=False).digest()
            if etag.strip('"') != md5.hex():
                raise VerificationError(
                    f"{self.store.location.object_url(self.key)}: part {number}: the S3 "
                    "store's ETag is not the MD5 of the bytes sent; nothing was stored: "
                    "try again")
            self._md5s.append(md5)
        elif got != sent:
            raise VerificationError(
                f"{self.store.location.object_url(self.key)}: part {number}: the S3 store's "
                "SHA-256 checksum is not the one sent; nothing was stored: try again")
        self._digests.append(digest)
        entry: dict[str, Any] = {"PartNumber": number, "ETag": etag}
        if got is not None:
            entry["ChecksumSHA256"] = got
        self._parts.append(entry)

    def finish(self) -> StoredObject:
        """Send the last part, complete the upload and match its checksum (or, for a blob
        smaller than a part, PUT it whole with its SHA-256 header)."""
        if self.upload_id is None:
            return self._put_whole()
        if self._buffer or not self._parts:
            # The last part may be short; an empty blob is one empty part.
            self._send(bytes(self._buffer))
            self._buffer.clear()
        where = self.store.location.object_url(self.key)
        answer = self.store.call("complete_multipart_upload", self.key, Key=self.key,
                                 UploadId=self.upload_id,
                                 MultipartUpload={"Parts": self._parts})
        self._done = True
        n = len(self._parts)
        expected: str | None
        if len(self._md5s) == n:
            expected = None
            want = f"{hashlib.md5(b''.join(self._md5s), usedforsecurity=False).hexdigest()}-{n}"
            matched = self.store.field(answer, "ETag", self.key).strip('"') == want
        else:
            composite = hashlib.sha256(b"".join(self._digests)).digest()
            expected = f"{base64.b64encode(composite).decode()}-{n}"
            matched = answer.get("ChecksumSHA256") == expected
        version = answer.get("VersionId")
        pinned = _pinned(version)
        head: dict[str, Any] = {}
        if matched:
            head = self.store.call("head_object", self.key, Key=self.key, **pinned)
            matched = self.store.length(head, self.key) == self.size
        if not matched:
            with contextlib.suppress(VaultError):
                self.store.call("delete_object", self.key, Key=self.key)
            raise VerificationError(
                f"{where}: the completed object's checksum or size is not the one of the "
                f"{n} parts sent; the object was deleted: try again")
        return self._kept(version, head, n, expected, self.store.field(answer, "ETag", self.key))

    def _put_whole(self) -> StoredObject:
        """One PUT of the whole (small) blob with its SHA-256 header, which the server checks
        (``BadDigest``) and answers with its own, matched here; a HEAD only where the
        retention it kept must be read."""
        data = bytes(self._buffer)
        self._buffer.clear()
        sent = base64.b64encode(self.store.part_checksum(data)).decode()
        self._done = True
        answer = self.store.call("put_object", self.key, Key=self.key, Body=data,
                                 ChecksumSHA256=sent, **self.retain)
        etag = self.store.field(answer, "ETag", self.key)
        got = answer.get("ChecksumSHA256")
        if got is None:  # a server that keeps no SHA-256: its ETag is the MD5
            matched = etag.strip('"') == hashlib.md5(data, usedforsecurity=False).hexdigest()
        else:
            matched = got == sent
        if not matched:
            with contextlib.suppress(VaultError):
                self.store.call("delete_object", self.key, Key=self.key)
            raise VerificationError(
                f"{self.store.location.object_url(self.key)}: the stored object's checksum is "
                "not the one of the bytes sent; the object was deleted: try again")
        version = answer.get("VersionId")
        head: dict[str, Any] = {}
        if self.store.object_lock is not None:
            head = self.store.call("head_object", self.key, Key=self.key,
                                   **_pinned(version))
        return self._kept(version, head, 1, got, etag)

    def _kept(self, version: str | None, head: dict[str, Any], parts: int,
              checksum: str | None, etag: str) -> StoredObject:
        """Check that the retention asked for was kept; then the object counts as stored."""
        where = self.store.location.object_url(self.key)
        pinned = _pinned(version)
        kept = head.get("ObjectLockRetainUntilDate")
        lock = self.store.object_lock
        if lock is not None and (head.get("ObjectLockMode", "").lower() != lock.mode
                                 or kept is None or self.retain_until is None
                                 or kept < self.retain_until):
            # The store took the upload but not the retention (a server that ignores the
            # headers): the blob would not be protected as the vault says.
            with contextlib.suppress(VaultError):
                self.store.call("delete_object", self.key, Key=self.key, **pinned)
            raise ConfigError(
                f"{where}: the S3 store did not keep the Object Lock retention asked for "
                f"({lock.text}); check that the bucket has Object Lock enabled and the "
                "credentials may set retention")
        self.stored = StoredObject(self.blob_id, self.key, self.size, parts,
                                   self._whole.hexdigest(), checksum, etag, version, kept)
        return self.stored

    def abort(self) -> None:
        """Abort the upload (or delete the object if it completed); errors are swallowed:
        what cannot be aborted now stays pending, for ``doctor`` to find."""
        self._buffer = bytearray()
        with contextlib.suppress(VaultError):
            if self._done:
                if self.stored is None:
                    self.store.call("delete_object", self.key, Key=self.key)
            elif self.upload_id is not None:  # else nothing was sent
                self._done = True
                self.store.call("abort_multipart_upload", self.key, Key=self.key,
                                UploadId=self.upload_id)


class _RangedReader(io.RawIOBase):
    """Reads one object by ranged GETs (``If-Match`` its ETag: a replaced object fails)."""

    def __init__(self, store: S3BlobStore, key: str, size: int, etag: str,
                 pinned: dict[str, str]) -> None:
        super().__init__()
        self.store = store
        self.key = key
        self.length = size
        self.etag = etag
        self.pinned = pinned
        self._pos = 0
        self._body: Any = None
        self._body_end = 0  # the offset where the current GET's body ends

    def readable(self) -> bool:
        """Yes."""
        return True

    def seekable(self) -> bool:
        """Yes: a seek only moves where the next GET starts."""
        return True

    def tell(self) -> int:
        """The position."""
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move to ``offset`` (as :meth:`io.IOBase.seek`)."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.length}[whence]
        target = base + offset
        if target < 0:
            raise ValueError("negative seek position")
        if target != self._pos:
            self._drop()
            self._pos = target
        return self._pos

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` from the current GET, starting the next range when it ends."""
        view = memoryview(buffer).cast("B")
        if self._pos >= self.length or not len(view):
            return 0
        if self._body is None:
            end = min(self._pos + self.store.range_size, self.length)
            answer = self.store.call("get_object", self.key, Key=self.key, IfMatch=self.etag,
                                     Range=f"bytes={self._pos}-{end - 1}", **self.pinned)
            self._body = self.store.field(answer, "Body", self.key)
            self._body_end = end
        want = min(len(view), self._body_end - self._pos)
        try:
            chunk = self._body.read(want)
        except Exception as e:
            self._drop()
            raise self.store._error(e, "get_object", self.key) from e
        if not chunk:
            self._drop()
            raise VaultError(
                f"{self.store.location.object_url(self.key)}: the S3 store ended a ranged "
                f"read at byte {self._pos} of {self.length}; try again")
        view[: len(chunk)] = chunk
        self._pos += len(chunk)
        if self._pos >= self._body_end:
            self._drop()
        return len(chunk)

    def _drop(self) -> None:
        if self._body is not None:
            with contextlib.suppress(Exception):
                self._body.close()
            self._body = None

    def close(self) -> None:
        """Close the current GET's connection."""
        self._drop()
        super().close()


def _pinned(version: str | None) -> dict[str, str]:
    """The ``VersionId`` parameter of a request for that version (none for the newest)."""
    return {"VersionId": version} if version else {}


def _blob_name(key: Any, prefix: str) -> str | None:
    """The blob id of a listed key under ``prefix`` (None for any other key: the server's
    listing is not trusted to have kept to the prefix asked for)."""
    if not isinstance(key, str) or not key.startswith(prefix):
        return None
    name = key[len(prefix):]
    return name if _BLOB_ID.fullmatch(name) else None


def _error_fields(e: Exception) -> tuple[str, int | None, str]:
    """(code, HTTP status, message) of a botocore error, without importing botocore."""
    response: Any = getattr(e, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return str(error.get("Code", "")), status, str(error.get("Message", ""))
    return type(e).__name__, None, ""


__all__ = [
    "MIN_PART_SIZE", "PART_SIZE", "RANGE_SIZE", "PendingUpload", "S3BlobStore", "S3Location",
    "S3Upload", "StoredObject", "s3_client",
]
