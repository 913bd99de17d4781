"""Grow a throwaway vault's custody log to a million genuine, signed events, quickly.

    $ .venv/bin/python benchmarks/custody_gen.py --vault /tmp/bench-vault --events 1000000

Appending through the command line costs a process and a transaction per event, far too
slow for a million. This builds the same log the project would: each event is an
:class:`vault.custody.events.Event` signed with the vault's default identity by
``Event.sign`` (so its bytes are canonical and its signature genuine), hashed with
``leaf_hash``, and inserted in large transactions while the head row (size, root,
frontier) advances through the project's own :class:`~vault.custody.merkle.Frontier`, under
``lock_head`` as ``CustodyLog`` does. Signing is spread over worker processes; the inserts
and the tree stay in this one, in order. A signed checkpoint is taken at the end, as
``evault custody checkpoint`` would, so ``custody verify`` has one to re-derive.

The vault must exist and have a default identity (``evault init``, ``evault identity
create``); its key store must open without a prompt (``EVAULT_KEY_STORAGE=file`` and
``EVAULT_PASSPHRASE``).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from sqlalchemy import insert

from vault.clock import isoformat, parse_iso, utcnow
from vault.crypto.keys import SigningKey
from vault.custody.events import Event
from vault.custody.merkle import Frontier, leaf_hash
from vault.service.custody import actor_pair, lock_head, make_checkpoint, origin
from vault.service.vaults import Vault, open_vault
from vault.store.models import CustodyEvent

SIGN_CHUNK = 10_000
COMMIT_EVERY = 100_000
CASE = "BENCH-CUSTODY"

Signed = tuple[int, bytes, bytes, bytes]


def _sign_range(task: tuple[str, bytes, int, int, str]) -> list[Signed]:
    """Sign events ``start .. start+count-1``: (seq, canonical bytes, signature, leaf hash)."""
    log, seed, start, count, when = task
    key = SigningKey.from_seed(seed)
    actor = key.public.fingerprint
    time = parse_iso(when)
    out: list[Signed] = []
    for seq in range(start, start + count):
        # Shaped like an intake event: an item id, its case, size, labels and SHA-256.
        event = Event(
            log=log,
            seq=seq,
            time=time,
            actor=actor,
            action="item.ingested",
            subject=f"EV-{seq:012X}",
            details={"case": CASE, "size": 4096 + seq % 997, "labels": []},
            digests={"sha256": hashlib.sha256(seq.to_bytes(8, "big")).hexdigest()},
        )
        body, signature = event.sign(key)
        out.append((seq, body, signature, leaf_hash(body)))
    return out


def _tasks(log: str, seed: bytes, start: int, events: int, when: str) -> Iterator[
    tuple[str, bytes, int, int, str]
]:
    for first in range(start, start + events, SIGN_CHUNK):
        yield log, seed, first, min(SIGN_CHUNK, start + events - first), when


def generate(vault_dir: Path, events: int, *, workers: int = 2, checkpoint: bool = True) -> int:
    """Append ``events`` signed events to the vault's log; return the log's new size."""
    vault = open_vault(vault_dir)
    try:
        with vault.transaction() as session:
            pair = actor_pair(vault, session, None)
            start = lock_head(session).size
        seed = pair.signing.seed()
        log = origin(vault)
        # Second precision, as every event; after the key was created, as verify demands.
        when = isoformat(utcnow())
        pending: list[Signed] = []
        size = start
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for signed in pool.map(_sign_range, _tasks(log, seed, start, events, when)):
                pending.extend(signed)
                if len(pending) >= COMMIT_EVERY:
                    size = _commit(vault, pending, when, pair.fingerprint)
                    pending = []
        if pending:
            size = _commit(vault, pending, when, pair.fingerprint)
        if checkpoint:
            make_checkpoint(vault, None)
        return size
    finally:
        vault.close()


def _commit(vault: Vault, rows: list[Signed], when: str, actor: str) -> int:
    """Insert one batch of signed events and advance the head, in one transaction."""
    time = parse_iso(when)
    with vault.transaction() as session:
        head = lock_head(session)
        frontier = Frontier.from_bytes(head.frontier)
        if rows[0][0] != frontier.size:
            raise RuntimeError(f"custody log moved: head at {frontier.size}, batch at {rows[0][0]}")
        values = []
        for seq, body, signature, leaf in rows:
            frontier.append(leaf)
            values.append({
                "seq": seq,
                "recorded_at": time,
                "actor": actor,
                "action": "item.ingested",
                "subject": f"EV-{seq:012X}",
                "body": body,
                "signature": signature,
                "leaf_hash": leaf,
            })
        session.execute(insert(CustodyEvent), values)
        head.size = frontier.size
        head.root = frontier.root()
        head.frontier = frontier.to_bytes()
        return frontier.size


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--vault DIR --events N``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--vault", type=Path, required=True, help="an existing throwaway vault")
    parser.add_argument("--events", type=int, required=True, help="how many events to append")
    parser.add_argument("--workers", type=int, default=2, help="signing processes (default 2)")
    args = parser.parse_args(argv)
    size = generate(args.vault, args.events, workers=args.workers)
    print(f"custody log of {args.vault}: {size} events", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
