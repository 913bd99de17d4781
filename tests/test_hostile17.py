"""Hostile review of issue 17 (RFC 3161 timestamps): a TSA or network that drips its
answer, a config.toml policy that is no OID, and a database holder who edits a pending
checkpoint's note before `evault timestamp --pending` runs."""

from __future__ import annotations

import http.server
import sqlite3
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import Cli
from local_tsa import LocalTsa
from test_robustness import assert_refusal
from test_timestamps import configure, office, rows, tsa_one  # noqa: F401 (fixtures)


@pytest.fixture
def dripping_tsa() -> Iterator[str]:
    """An HTTP server that answers a TSA query with the right headers, then one byte of its
    body every 0.2 s for 8 s (a hostile TSA, or anyone on the path of a plain http:// one)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", "4000")
            self.end_headers()
            end = time.monotonic() + 8
            try:
                while time.monotonic() < end:
                    self.wfile.write(b"\x30")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_a_dripping_tsa_cannot_hold_the_log_past_its_timeout(
        office: Cli, tsa_one: LocalTsa, dripping_tsa: str) -> None:  # noqa: F811
    # README: "a TSA's `timeout` bounds how long the log stays locked". The per-read socket
    # timeout does not: one byte every 0.2 s never trips a 1 s timeout, so a TSA (or a
    # network attacker on http://) holds the checkpoint's transaction for as long as it
    # likes (here 8 s; 64 KiB at 9 s a byte is a week).
    configure(office, tsa_one, url={"tsa-one": dripping_tsa})
    config = office.vault / "config.toml"
    config.write_text(config.read_text().replace("timeout = 5", "timeout = 1"))
    started = time.monotonic()
    result = office("custody", "checkpoint")
    elapsed = time.monotonic() - started
    assert elapsed < 4, f"the log stayed locked {elapsed:.1f} s with a 1 s timeout"
    assert_refusal(result, 1, f"TSA tsa-one ({dripping_tsa}): ", "within its timeout of 1 s")


@pytest.mark.parametrize("policy", ["1.99", "0.40"])
def test_a_policy_that_is_no_valid_oid_is_a_config_error_not_a_traceback(
        office: Cli, tsa_one: LocalTsa, policy: str) -> None:  # noqa: F811
    # The config check's pattern lets through OIDs whose second arc is 40 or more under the
    # arcs 0 and 1, which `cryptography` refuses with a ValueError nobody catches.
    configure(office, tsa_one)
    config = office.vault / "config.toml"
    config.write_text(config.read_text().replace(f'policy = "{tsa_one.policy}"',
                                                 f'policy = "{policy}"'))
    assert_refusal(office("custody", "checkpoint"), 1,
                   "[[tsa]] number 1 (tsa-one): policy must be an OID such as 1.2.3.4")


def test_timestamp_pending_refuses_a_checkpoint_whose_note_the_database_changed(
        office: Cli, tsa_one: LocalTsa) -> None:  # noqa: F811
    # A database holder (no keys, no config.toml) rewrites a pending checkpoint's note.
    # `timestamp --pending` then has the TSA timestamp the holder's text and logs a
    # `checkpoint.timestamped` event, signed by the vault's identity, vouching its digest.
    configure(office, tsa_one)
    office.ok("custody", "checkpoint", "--no-timestamp")
    [(note,)] = rows(office, "SELECT note FROM checkpoints WHERE timestamp_pending = 1")
    origin, size, _root, rest = note.split("\n", 3)
    forged = "\n".join([origin, size, "A" * 43 + "=", rest])
    assert forged != note
    with sqlite3.connect(office.vault / "vault.db") as db:
        db.execute("UPDATE checkpoints SET note = ? WHERE timestamp_pending = 1", (forged,))
    asked = tsa_one.requests
    assert_refusal(office("timestamp", "--pending"), 3, f"checkpoint {size}: ",
                   "does not verify")
    assert tsa_one.requests == asked  # the TSA was not asked for the holder's text
    assert rows(office, "SELECT count(*) FROM checkpoint_timestamps") == [(0,)]
