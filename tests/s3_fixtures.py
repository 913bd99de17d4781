"""The S3 test modules' fixtures: a real SeaweedFS per pytest worker (scripts/s3_server.py),
and the AWS environment that points a test at it.

    pytest_plugins = ["s3_fixtures"]        # in tests/conftest.py: every module has them

One server per xdist worker for the whole session, a bucket per test. It makes one volume
per bucket (``volumes_per_bucket=1``): at weed's default of seven, the volumes a disk's free
space allows ran out after a few dozen buckets (InternalError on PutObject), which is why
each module used to start a server of its own (about 3.5 s each).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from s3_server import S3Server, s3_unavailable


@pytest.fixture(scope="session")
def server() -> Iterator[S3Server]:
    reason = s3_unavailable()
    if reason:
        pytest.skip(f"no S3 test server: {reason}")
    with S3Server(volumes_per_bucket=1) as s:
        yield s


@pytest.fixture
def aws_env(server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The usual AWS variables pointing at the test server; no ~/.aws of the machine's."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
