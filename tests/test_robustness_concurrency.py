"""Concurrency: four processes ingesting and two exporting at once on one vault.

On SQLite (``BEGIN IMMEDIATE``, a busy timeout) and on PostgreSQL (``SELECT ... FOR UPDATE``
on the log head), every command either succeeds or fails with one clean line that says to
try again; no traceback. Afterwards the custody log verifies and every count adds up: the
items are the files ingested, every package an export reported is sent with exactly one
receipt, the outbox holds exactly the sent packages, and running the failed commands again
finishes the work without sharing an item twice with one body.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import BACKENDS
from test_robustness import (
    BODIES,
    CASE,
    as_json,
    backend_url,
    check_healthy,
    check_outbox,
    evault_argv,
    evault_env,
    evidence_files,
    limit_resources,
    make_office,
    sent_packages,
)

INGESTERS = 4
EXPORTERS = 2
FILES_EACH = 5
# What a refusal may say when another command holds what it needs: each says to retry.
RETRYABLE = ("try again", "meanwhile")


def _start(args: tuple[str, ...], vault: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(evault_argv(*args, vault=vault), env=evault_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=limit_resources)


def _clean(rc: int, out: str, err: str, what: str) -> list[str]:
    """Problems with one finished command: it must succeed or fail cleanly and retryably."""
    problems = []
    if "Traceback" in out + err:
        problems.append(f"{what}: traceback\n{err}")
    if rc not in (0, 1):
        problems.append(f"{what}: exit {rc}: {err!r}")
    for line in err.splitlines():
        if not line.startswith("evault: "):
            problems.append(f"{what}: stray stderr line {line!r}")
    # An export that failed for some bodies says so on one line; its rows (checked by the
    # caller) carry each body's reason. Any other failure must say to try again.
    partial = what.startswith("export") and "export failed for" in err
    if rc == 1 and not partial and not any(r in err for r in RETRYABLE):
        problems.append(f"{what}: failure that does not say to retry: {err!r}")
    return problems


@pytest.mark.parametrize("backend", BACKENDS)
def test_four_ingests_and_two_exports_at_once(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    world = make_office(tmp_path, backend_url(request, backend), second_body=True)
    cli = world.office
    cli.ok("ingest", str(world.evidence), "-r", "--case", CASE, "--create-case")
    folders = [evidence_files(tmp_path / f"batch-{n}", (1000 + n,) * FILES_EACH)
               for n in range(INGESTERS)]
    export = ("export", "--to", ",".join(BODIES), "--case", CASE, "--outbox",
              str(world.outbox), "--jsonl")
    commands = [(f"ingest {n}", ("ingest", str(f), "-r", "--case", CASE))
                for n, f in enumerate(folders)]
    commands += [(f"export {n}", export) for n in range(EXPORTERS)]
    # Interleave the starts so that exports run while ingests commit.
    order = [commands[0], commands[4], commands[1], commands[2], commands[5], commands[3]]
    procs = [(what, args, _start(args, cli.vault)) for what, args in order]
    problems: list[str] = []
    results: dict[str, tuple[int, str, str]] = {}
    for what, _args, proc in procs:
        out, err = proc.communicate(timeout=180)
        results[what] = (proc.returncode, out, err)
        problems += _clean(proc.returncode, out, err, what)
    assert not problems, "\n".join(problems)

    check_healthy(cli)
    # Items: the first three plus five per ingest that succeeded.
    succeeded = [w for w in results if w.startswith("ingest") and results[w][0] == 0]
    items = as_json(cli, "items", "list", "--json")
    assert len(items) == 3 + FILES_EACH * len(succeeded)
    # Every package an export reported exists, is sent, and has the receipt it reported.
    receipts = {r["id"]: r for r in as_json(cli, "receipt", "list", "--json")}
    reported: dict[str, Any] = {}
    for what in results:
        if not what.startswith("export"):
            continue
        for row in map(json.loads, results[what][1].splitlines()):
            if row["status"] in ("shared", "resumed"):
                assert receipts[row["receipt"]]["package"] == row["package"]
                reported[row["package"]] = row
            elif row["status"] == "failed":
                assert "\n" not in row["error"] and any(r in row["error"] for r in RETRYABLE), (
                    row)
    sent = {p["id"]: p for p in sent_packages(cli)}
    assert set(reported) == set(sent)
    assert sorted(r["package"] for r in receipts.values()) == sorted(sent)  # one receipt each
    for pid, row in reported.items():
        assert sent[pid]["items"] == row["items"] and sent[pid]["body"] == row["body"]
    assert sorted(check_outbox(cli, world.outbox, temporaries=False)) == sorted(
        f"{p}.evpkg" for p in sent)

    # Finish: the failed commands again, then one more export; every item reaches every
    # body exactly once.
    for what, args in commands:
        if results.get(what, (0,))[0] != 0:
            cli.ok(*args)
    cli.ok(*export)
    items = as_json(cli, "items", "list", "--json")
    assert len(items) == 3 + FILES_EACH * INGESTERS
    for body in BODIES:
        shared = [i for p in sent_packages(cli) if p["body"] == body for i in p["item_ids"]]
        assert sorted(shared) == sorted(i["id"] for i in items), body
    check_healthy(cli)
