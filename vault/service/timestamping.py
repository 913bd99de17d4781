"""Trusted time: RFC 3161 tokens over this vault's signed checkpoints, and their checks.

    >>> tokens = stamp(vault, session, checkpoint_row)        # doctest: +SKIP
    >>> stamp_pending(vault)                                   # doctest: +SKIP

One job: ask the TSAs that ``config.toml`` lists (``[[tsa]]``) for a token over a signed
checkpoint note, keep the tokens, and check tokens that documents carry. A token covers the
whole signed note, signature line included, so it proves that the signature existed at the
time the TSA attests: a document whose key is revoked later stays datable by it.

When signing a checkpoint (:func:`stamp`), each TSA is asked in turn; a TSA that fails is
named in a warning and the others are used. If none answers, the command fails (nothing is
kept), unless ``timestamps = "when-available"`` or the command's ``--no-timestamp``: then
the checkpoint is kept as *pending*, and ``evault timestamp --pending`` obtains its tokens
later, logging ``checkpoint.timestamped``. Each answer is checked before it is kept (its
nonce, the message imprint, its chain to the TSA's configured CA at its time, the
timeStamping key usage, the configured policy).

The TSA is asked while the checkpoint's transaction is open, so the checkpoint, its tokens
and the document that carries them are kept together or not at all; each TSA has its
``timeout`` (10 s unless set), which bounds how long the log stays locked.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.clock import isoformat, utcnow
from vault.crypto import tsp
from vault.errors import ConfigError, NotFoundError, UsageError, VerificationError
from vault.service.results import Result
from vault.service.vaults import Vault
from vault.store.models import CheckpointTimestamp, SignedCheckpoint
from vault.store.vaultdir import TsaConfig

log = logging.getLogger("evault")

MAX_ANSWER = tsp.MAX_TOKEN


def _roots(vault_root: Path, tsa: TsaConfig) -> tsp.TrustRoots:
    roots = tsp.TrustRoots()
    for path in tsa.ca_paths(vault_root):
        try:
            pem = path.read_bytes()
        except OSError as e:
            raise ConfigError(f"TSA {tsa.name}: ca {path}: {e.strerror or e}; fix [[tsa]] "
                              "ca in config.toml") from None
        roots += tsp.load_roots(pem, f"TSA {tsa.name}: ca {path}")
    return roots


def _ask(tsa: TsaConfig, query: bytes) -> bytes:
    """POST one query to a TSA (RFC 3161 section 3.4); its answer, or OSError/UsageError.

    The whole exchange gets ``tsa.timeout`` seconds: the socket's timeout is per read, and a
    TSA that drips its answer a byte at a time would hold the checkpoint's transaction
    (and so the log) for as long as it liked. A late exchange is left to its socket's
    timeout in a daemon thread."""
    outcome: list[bytes | BaseException] = []

    def post() -> None:
        try:
            outcome.append(_post(tsa, query))
        except BaseException as e:  # handed to the caller below
            outcome.append(e)

    worker = threading.Thread(target=post, name=f"tsa-{tsa.name}", daemon=True)
    worker.start()
    worker.join(tsa.timeout)
    if not outcome:
        raise TimeoutError(f"no whole answer within its timeout of {tsa.timeout:g} s")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _post(tsa: TsaConfig, query: bytes) -> bytes:
    import urllib.request  # only when a TSA is asked: every checkpoint command imports us

    request = urllib.request.Request(
        tsa.url, data=query, method="POST",
        headers={"Content-Type": "application/timestamp-query",
                 "Accept": "application/timestamp-reply"})
    with urllib.request.urlopen(request, timeout=tsa.timeout) as answer:
        kind = answer.headers.get("Content-Type", "").split(";")[0].strip()
        if kind != "application/timestamp-reply":
            raise UsageError(f"answered {kind or 'no content type'}, not "
                             "application/timestamp-reply")
        data: bytes = answer.read(MAX_ANSWER + 1)
    if len(data) > MAX_ANSWER:
        raise UsageError(f"answered more than {MAX_ANSWER} bytes")
    return data


def obtain(vault: Vault, note: str) -> tuple[list[tuple[str, tsp.Token]], list[str]]:
    """Ask every configured TSA for a token over ``note``: ((TSA name, checked token) for
    each that answered, one line per TSA that failed, naming it and why)."""
    import urllib.error

    message = note.encode("utf-8")
    tokens: list[tuple[str, tsp.Token]] = []
    failures: list[str] = []
    for tsa in vault.config.tsa:
        roots = _roots(vault.root, tsa)
        query = tsp.TimestampQuery.for_message(message)
        try:
            answer = _ask(tsa, query.der)
            tokens.append((tsa.name, tsp.check_answer(answer, message, roots,
                                                      nonce=query.nonce, policy=tsa.policy)))
        except urllib.error.HTTPError as e:
            failures.append(f"TSA {tsa.name} ({tsa.url}): answered HTTP {e.code}")
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", None) or e
            failures.append(f"TSA {tsa.name} ({tsa.url}): unreachable ({reason})")
        except (UsageError, VerificationError) as e:
            failures.append(f"TSA {tsa.name} ({tsa.url}): its token was refused: {e}")
    return tokens, failures


def _keep(session: Session, row: SignedCheckpoint,
          tokens: Sequence[tuple[str, tsp.Token]], now: datetime) -> None:
    session.flush()  # the checkpoint's id
    for name, token in tokens:
        session.add(CheckpointTimestamp(checkpoint_id=row.id, tsa=name,
                                        attested_at=token.attested_at, token=token.der,
                                        obtained_at=now))


def stamp(vault: Vault, session: Session, row: SignedCheckpoint,
          now: datetime | None = None) -> tuple[bytes, ...]:
    """Tokens over a checkpoint just signed in ``session``, kept with it (see the module).

    No TSA configured: none, and nothing pending. ``vault.skip_timestamps`` (the command's
    ``--no-timestamp``): none asked, the checkpoint pending.
    """
    if not vault.config.tsa:
        return ()
    if vault.skip_timestamps:
        row.timestamp_pending = True
        return ()
    tokens, failures = obtain(vault, row.note)
    if not tokens:
        if vault.config.timestamps != "when-available":
            raise ConfigError(
                f"checkpoint {row.size}: no TSA gave a timestamp ({'; '.join(failures)}); "
                "try again, or pass --no-timestamp (or set timestamps = \"when-available\") "
                "and run `evault timestamp --pending` later")
        log.warning(f"warning: checkpoint {row.size}: not timestamped ({'; '.join(failures)});"
                    " run `evault timestamp --pending` when a TSA answers")
        row.timestamp_pending = True
        return ()
    for failure in failures:
        log.warning(f"warning: {failure}")
    _keep(session, row, tokens, now or utcnow())
    return tuple(t.der for _, t in tokens)


@dataclass(frozen=True, slots=True)
class Stamped(Result):
    """One pending checkpoint that ``timestamp --pending`` dealt with: its tree size, the
    TSAs that timestamped it and the time each attests (ISO 8601 UTC)."""

    checkpoint: int
    tsas: tuple[str, ...]
    attested_at: tuple[str, ...]


def stamp_pending(vault: Vault, as_name: str | None = None,
                  now: datetime | None = None) -> list[Stamped]:
    """Obtain tokens for every pending checkpoint, oldest first; log each as
    ``checkpoint.timestamped``. A checkpoint no TSA answers for stays pending (the error
    says so); those before it are kept."""
    from vault.custody.note import open_checkpoint
    from vault.service.custody import CustodyLog, actor_pair, vault_verifiers

    if not vault.config.tsa:
        raise NotFoundError("timestamp: no TSA in config.toml; add a [[tsa]] table (see "
                            "the README, Trusted time)")
    done: list[Stamped] = []
    with vault.transaction() as session:
        pending = list(session.scalars(
            select(SignedCheckpoint).where(SignedCheckpoint.timestamp_pending.is_(True))
            .order_by(SignedCheckpoint.id)))
        pair = actor_pair(vault, session, as_name) if pending else None
    for row_id in [r.id for r in pending]:
        with vault.transaction() as session:
            row = session.get(SignedCheckpoint, row_id)
            if row is None or not row.timestamp_pending:
                continue
            # The row is the database's: a holder of it could have put any text there, for
            # the TSA to timestamp and the event below to vouch for.
            try:
                checkpoint, _ = open_checkpoint(row.note, vault_verifiers(vault, session))
                if checkpoint.size != row.size:
                    raise VerificationError(f"it is of size {checkpoint.size}")
            except VerificationError as e:
                raise VerificationError(
                    f"checkpoint {row.size}: its note in the database does not verify with "
                    f"this vault's keys ({e}); it stays pending, run `evault custody verify`"
                ) from None
            tokens, failures = obtain(vault, row.note)
            if not tokens:
                raise ConfigError(f"checkpoint {row.size}: still no TSA gave a timestamp "
                                  f"({'; '.join(failures)}); it stays pending, try again "
                                  "later")
            for failure in failures:
                log.warning(f"warning: {failure}")
            at = now or utcnow()
            names = [name for name, _ in tokens]
            _keep(session, row, tokens, at)
            row.timestamp_pending = False
            assert pair is not None
            CustodyLog(vault, session).append(
                pair, "checkpoint.timestamped", f"checkpoint/{row.size}",
                details={"tsas": names,
                         "attested_at": [isoformat(t.attested_at) for _, t in tokens]},
                digests={"checkpoint": hashlib.sha256(row.note.encode()).hexdigest()},
                now=at)
            done.append(Stamped(row.size, tuple(names),
                                tuple(isoformat(t.attested_at) for _, t in tokens)))
    return done


def tokens_of(session: Session, note: str) -> tuple[bytes, ...]:
    """The kept tokens over the checkpoint ``note`` (by its text), oldest first."""
    return tuple(session.scalars(
        select(CheckpointTimestamp.token).join(SignedCheckpoint)
        .where(SignedCheckpoint.note == note).order_by(CheckpointTimestamp.id)))


# -- checking the tokens a document carries ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attested(Result):
    """A token a document carries, checked: the TSA (its certificate's subject) and the
    time it attests (ISO 8601 UTC)."""

    tsa: str
    attested_at: str


def encode(tokens: Sequence[bytes]) -> tuple[str, ...]:
    """Tokens as a document carries them: base64 of each DER ``TimeStampResp``."""
    return tuple(base64.b64encode(t).decode("ascii") for t in tokens)


def trusted_roots(vault_root: Path | None, tsas: Sequence[TsaConfig],
                  extra: Sequence[Path] = ()) -> tsp.TrustRoots:
    """The TSA certificates to trust: each configured TSA's CA and the ``--tsa-ca`` files."""
    roots = tsp.TrustRoots()
    if vault_root is not None:
        for tsa in tsas:
            roots += _roots(vault_root, tsa)
    for path in extra:
        try:
            pem = path.read_bytes()
        except OSError as e:
            raise UsageError(f"--tsa-ca {path}: {e.strerror or e}") from None
        roots += tsp.load_roots(pem, f"--tsa-ca {path}")
    return roots


def check_tokens(encoded: Sequence[str], note: str, roots: tsp.TrustRoots,
                 label: str) -> list[Attested]:
    """Check every token ``label``'s document carries over its checkpoint ``note``; the
    attested times, or a VerificationError naming the token and the rule it breaks."""
    checked: list[Attested] = []
    for i, text in enumerate(encoded, 1):
        where = f"{label}: timestamp {i} of {len(encoded)}"
        try:
            der = base64.b64decode(text, validate=True)
        except ValueError:
            raise VerificationError(f"{where}: not base64; do not rely on it") from None
        try:
            token = tsp.check_answer(der, note.encode("utf-8"), roots)
        except VerificationError as e:
            hint = (" (if you trust its TSA, pass the TSA's CA certificate with --tsa-ca)"
                    if str(e) == tsp.UNTRUSTED else "")
            raise VerificationError(f"{where}: {e}; do not rely on its time{hint}") from None
        checked.append(Attested(token.tsa, isoformat(token.attested_at)))
    return checked


def earliest(attested: Sequence[Attested]) -> str | None:
    """The earliest attested time of some checked tokens (ISO 8601), if any."""
    return min((a.attested_at for a in attested), default=None)
