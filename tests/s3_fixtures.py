"""The S3 test modules' fixtures: a real SeaweedFS per module (scripts/s3_server.py), and
the AWS environment that points a test at it.

    pytest_plugins = ["s3_fixtures"]        # in tests/conftest.py: every module has them

One server per module and xdist worker, a bucket per test: one server for the whole
session fails once about 40 buckets were made on it (InternalError on PutObject).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from s3_server import S3Server, s3_unavailable


@pytest.fixture(scope="module")
def server() -> Iterator[S3Server]:
    reason = s3_unavailable()
    if reason:
        pytest.skip(f"no S3 test server: {reason}")
    with S3Server() as s:
        yield s
        # Its data is thrown away: SIGKILL now rather than S3Server.stop's SIGTERM, which
        # weed answers with a graceful stop of 10 s that stop() cuts short after waiting 2 s
        # (the module's last test blocked that long, for nothing).
        if s.proc is not None and s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


@pytest.fixture
def aws_env(server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The usual AWS variables pointing at the test server; no ~/.aws of the machine's."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
