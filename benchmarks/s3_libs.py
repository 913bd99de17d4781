"""boto3 against obstore, the measurement behind the S3 library choice (README, Dependencies).

    .venv/bin/python benchmarks/s3_libs.py --size-mib 1024 --rounds 3 --imports 15

Against the tests' SeaweedFS (scripts/s3_server.py) on 127.0.0.1: each round uploads one
file of random bytes as a multipart upload in 16 MiB parts, streamed from the file, then
downloads it by 16 MiB ranged GETs, each library in a child process of its own under
``/usr/bin/time -f %M`` (peak RSS); the rounds alternate the libraries. boto3 runs the
calls the blob store makes (create/upload_part with a SHA-256 checksum header/complete, one
part at a time; get_object with a Range); obstore runs its own ``put`` (multipart, its
default concurrency of 12 parts) and ``get_range``. Import cost: whole-process wall time of
``python -c 'import sqlalchemy, cryptography...; import X'`` less the same without X, median
of ``--imports`` runs, alternating.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

PART = 16 << 20
BASE = "import sqlalchemy.orm, cryptography.hazmat.primitives.asymmetric.ed25519"
IMPORTS = {
    "boto3": "import boto3",
    "boto3 + client": "import boto3; boto3.client('s3', region_name='us-east-1')",
    "obstore": "import obstore; from obstore.store import S3Store",
    "obstore + store": "import obstore; from obstore.store import S3Store; "
                       "S3Store('b', region='us-east-1', skip_signature=True)",
}


def child(lib: str, op: str, endpoint: str, bucket: str, key: str, path: str) -> None:
    """One upload or download, in this process (run under /usr/bin/time)."""
    env = os.environ
    if lib == "boto3":
        import boto3

        s3 = boto3.client("s3", endpoint_url=endpoint, region_name=env["AWS_REGION"])
        if op == "upload":
            up = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256")
            parts = []
            with open(path, "rb") as f:
                n = 0
                while chunk := f.read(PART):
                    n += 1
                    digest = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
                    r = s3.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"],
                                       PartNumber=n, Body=chunk, ChecksumSHA256=digest)
                    parts.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumSHA256": digest})
            s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up["UploadId"],
                                         MultipartUpload={"Parts": parts})
        else:
            size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
            got = 0
            while got < size:
                body = s3.get_object(Bucket=bucket, Key=key,
                                     Range=f"bytes={got}-{min(got + PART, size) - 1}")["Body"]
                while chunk := body.read(1 << 20):
                    got += len(chunk)
    else:
        import obstore
        from obstore.store import S3Store

        store = S3Store(bucket, endpoint=endpoint, region=env["AWS_REGION"],
                        access_key_id=env["AWS_ACCESS_KEY_ID"],
                        secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                        client_options={"allow_http": True})
        if op == "upload":
            with open(path, "rb") as f:
                obstore.put(store, key, f, use_multipart=True, chunk_size=PART)
        else:
            size = obstore.head(store, key)["size"]
            got = 0
            while got < size:
                buf = obstore.get_range(store, key, start=got, end=min(got + PART, size))
                got += len(memoryview(buf))


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """(seconds, peak RSS KiB) of one child."""
    with tempfile.NamedTemporaryFile("r") as out:
        start = time.perf_counter()
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out.name, *argv], env=env,
                       check=True)
        seconds = time.perf_counter() - start
        return seconds, int(out.read().split()[-1])


def main() -> None:
    """Run the measurement and print the medians."""
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(*sys.argv[2:8])
        return
    p = argparse.ArgumentParser()
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--imports", type=int, default=15)
    a = p.parse_args()

    py = sys.executable
    import_times: dict[str, list[float]] = {"base": [], **{k: [] for k in IMPORTS}}
    for _ in range(a.imports):
        for name, code in [("base", BASE), *[(k, f"{BASE}; {v}") for k, v in IMPORTS.items()]]:
            start = time.perf_counter()
            subprocess.run([py, "-c", code], check=True)
            import_times[name].append(time.perf_counter() - start)
    base = statistics.median(import_times["base"])
    print(f"import: base (SQLAlchemy ORM + cryptography) median {base * 1000:.0f} ms")
    for name in IMPORTS:
        med = statistics.median(import_times[name])
        print(f"import: {name}: +{(med - base) * 1000:.0f} ms (median of {a.imports})")
    sys.stdout.flush()

    from s3_server import S3Server

    with S3Server() as server, tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, **server.env()}
        data = Path(tmp) / "data"
        with open(data, "wb") as f:
            for _ in range(a.size_mib):
                f.write(os.urandom(1 << 20))
        bucket = server.bucket()
        # The server makes its volumes at the first write: not part of either library's time.
        server.client().put_object(Bucket=bucket, Key="warm-up", Body=os.urandom(PART))
        results: dict[tuple[str, str], list[tuple[float, int]]] = {}
        for r in range(a.rounds):
            for lib in (("boto3", "obstore") if r % 2 == 0 else ("obstore", "boto3")):
                key = f"{lib}-{r}"
                for op in ("upload", "download"):
                    s, rss = timed([py, __file__, "child", lib, op, server.endpoint, bucket,
                                    key, str(data)], env)
                    results.setdefault((lib, op), []).append((s, rss))
                    print(f"round {r + 1} {lib} {op}: {s:.2f} s, "
                          f"{a.size_mib / s:.0f} MiB/s, peak RSS {rss / 1024:.0f} MiB",
                          flush=True)
                server.client().delete_object(Bucket=bucket, Key=key)
        for (lib, op), got in results.items():
            secs = statistics.median(s for s, _ in got)
            rss = statistics.median(m for _, m in got)
            print(f"{lib} {op}: median {secs:.2f} s ({a.size_mib / secs:.0f} MiB/s), "
                  f"peak RSS median {rss / 1024:.0f} MiB, rounds "
                  + ", ".join(f"{s:.2f}" for s, _ in got))


if __name__ == "__main__":
    main()
