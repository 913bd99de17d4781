"""A real RFC 3161 time-stamp authority on 127.0.0.1, made of OpenSSL's ``openssl ts``.

The demo and the tests start one (or several) to timestamp checkpoints, as a vault would
against a public TSA. Nothing here is a mock: each request is answered by ``openssl ts
-reply`` with a certificate made by ``openssl req``/``openssl x509`` in a temporary folder,
carrying the critical extended key usage timeStamping that RFC 3161 section 2.3 requires.

    with LocalTsa("demo-tsa") as tsa:
        print(tsa.url, tsa.ca_file)       # configure a vault with these

Each TSA has its own root CA (``ca_file``) unless ``ca=`` shares one; ``down()`` stops
answering (the port refuses connections) and ``up()`` starts again on the same port.
``policy`` is the TSA's policy OID; ``folder`` (new) holds its keys and certificates instead
of a temporary folder. The server is a thread of the calling process.
"""

from __future__ import annotations

import http.server
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from types import TracebackType

_OPENSSL_CONF = """\
[ tsa ]
default_tsa = tsa_config

[ tsa_config ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = {policy}
other_policies = 1.3.6.1.4.1.55555.1.2
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""

_TSA_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, nonRepudiation
extendedKeyUsage = critical, timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""

_CA_EXT = """\
[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""


def _openssl(*args: str, cwd: Path, stdin: bytes | None = None) -> bytes:
    done = subprocess.run(["openssl", *args], cwd=cwd, input=stdin, capture_output=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed root CA (P-256) in ``folder``: (certificate, key)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ca.cnf").write_text(_CA_EXT)
    _openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "3650",
             "-subj", f"/O=Fictional test CA/CN={name} root", "-config", "ca.cnf",
             "-extensions", "v3_ca", cwd=folder)
    return folder / "ca.pem", folder / "ca.key"


class LocalTsa:
    """One RFC 3161 TSA answering on ``http://127.0.0.1:<port>/``."""

    def __init__(self, name: str, *, policy: str = "1.3.6.1.4.1.55555.1.1",
                 ca: tuple[Path, Path] | None = None, folder: Path | None = None) -> None:
        self.name = name
        self.policy = policy
        if folder is not None:
            folder.mkdir(mode=0o700)
        self._dir = folder or Path(tempfile.mkdtemp(prefix="evault-tsa-"))
        if ca is None:
            ca = make_ca(self._dir / "ca", name)
        self.ca_file, ca_key = ca
        shutil.copyfile(self.ca_file, self._dir / "ca.pem")
        (self._dir / "tsa.ext").write_text(_TSA_EXT)
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", "tsa.key", "-out", "tsa.csr",
                 "-subj", f"/O=Fictional test TSA/CN={name}", cwd=self._dir)
        _openssl("x509", "-req", "-in", "tsa.csr", "-CA", str(self.ca_file),
                 "-CAkey", str(ca_key), "-CAcreateserial", "-out", "tsa.pem", "-days", "3650",
                 "-extfile", "tsa.ext", cwd=self._dir)
        (self._dir / "serial").write_text("01\n")
        (self._dir / "ts.cnf").write_text(_OPENSSL_CONF.format(dir=self._dir, policy=policy))
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.requests = 0

    @property
    def url(self) -> str:
        """Where the TSA answers."""
        return f"http://127.0.0.1:{self.port}/"

    @property
    def certificate(self) -> Path:
        """The TSA's own signing certificate (PEM)."""
        return self._dir / "tsa.pem"

    def reply(self, query: bytes) -> bytes:
        """``openssl ts -reply`` to one DER TimeStampReq: the DER TimeStampResp."""
        with self._lock:  # openssl ts keeps its serial number in a file
            self.requests += 1
            return _openssl("ts", "-reply", "-config", "ts.cnf", "-queryfile", "/dev/stdin",
                            "-out", "/dev/stdout", cwd=self._dir,
                            stdin=query)

    def up(self) -> None:
        """Start answering (on the same port as before, if it ran before)."""
        tsa = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                query = self.rfile.read(length)
                if self.headers.get("Content-Type") != "application/timestamp-query":
                    self.send_error(415, "expected application/timestamp-query")
                    return
                try:
                    answer = tsa.reply(query)
                except RuntimeError:
                    self.send_error(400, "bad time-stamp request")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Stop answering: connections to the port are refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def close(self) -> None:
        """Stop and remove the TSA's folder (keys included)."""
        self.down()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> LocalTsa:
        self.up()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now (for a TSA that is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
