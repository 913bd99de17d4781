"""Bodies witness the sender's log: cosign on ``ack``, keep on ``receipt import``, check in
``custody verify``.

    >>> cosigned = cosign_envelope(received_row, pair, now)                 # doctest: +SKIP
    >>> found = check_cosignature(vault, session, ack, package, signer)     # doctest: +SKIP
    >>> keep(session, found, ack, package, now)                             # doctest: +SKIP

An acknowledgement (version 2) carries the checkpoint the package's envelope carried, signed
by the sender, with the recipient officer's cosignature appended (C2SP tlog-cosignature,
:mod:`vault.custody.cosignature`). The sender checks it on import and keeps it in
``witnessed_checkpoints``; ``custody verify`` then checks the log against every one of them:
a log cut below, or rewritten under, a size a body witnessed fails, naming that body.

A database holder can delete those rows too; what survives is the acknowledgement in the
body's hands, a note signed by this vault's key and cosigned by the body. See
docs/security.md for what it proves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.crypto.keys import VerifyKey
from vault.custody.cosignature import (
    Cosignature,
    Cosigner,
    cosign,
    note_text,
    open_cosignature,
    witness_name,
)
from vault.custody.note import NoteVerifier, open_checkpoint
from vault.errors import VaultError, VerificationError
from vault.formats.package import Envelope
from vault.formats.receipt import Acknowledgement
from vault.service.identities import KeyPair
from vault.store.models import BodyKey, Package, ReceivedPackage, WitnessedCheckpoint


def cosign_envelope(row: ReceivedPackage, pair: KeyPair, now: datetime) -> str:
    """The recipient's side: the envelope's checkpoint, cosigned by ``pair`` at ``now``.

    The envelope's signature and its checkpoint were verified when the package was opened;
    the cosignature says this body held that checkpoint at ``now``.
    """
    envelope = Envelope.from_bytes(row.envelope)
    return cosign(envelope.checkpoint, witness_name(row.body_id), pair.signing,
                  int(now.timestamp()))


def check_cosignature(
    ack: Acknowledgement, package: Package, signer: VerifyKey,
    log_verifiers: Sequence[NoteVerifier],
) -> Cosignature | None:
    """The sender's side: the verified cosignature of a version 2 ``ack`` (None for 1).

    The cosigned note must be the checkpoint this vault put in the package's envelope, still
    bearing this vault's signature, cosigned by ``signer`` (the key that signed the ack, one
    of the body's) under the body's witness name.
    """
    if ack.cosigned_checkpoint is None:
        return None
    label = f"ack for package {package.id}: cosigned checkpoint"
    envelope = Envelope.from_bytes(package.envelope)
    try:
        found = open_cosignature(ack.cosigned_checkpoint,
                                 Cosigner.for_key(witness_name(package.body_id), signer))
        if found.text != note_text(envelope.checkpoint):
            raise VerificationError("is not the checkpoint the package's envelope carried")
        open_checkpoint(ack.cosigned_checkpoint, log_verifiers)
    except VaultError as e:
        raise VerificationError(f"{label}: {e}") from None
    return found


def keep(
    session: Session, found: Cosignature, ack: Acknowledgement, package: Package,
    now: datetime,
) -> None:
    """Store a verified cosignature (in the caller's transaction)."""
    assert ack.cosigned_checkpoint is not None
    session.add(WitnessedCheckpoint(
        package_id=package.id, body_id=package.body_id, cosigner=ack.recipient.fingerprint,
        size=found.checkpoint.size, root=found.checkpoint.root_hash,
        cosigned_at=datetime.fromtimestamp(found.timestamp, timezone.utc),
        note=ack.cosigned_checkpoint, imported_at=now,
    ))


# ----------------------------------------------------------------------------- custody verify


@dataclass(frozen=True)
class Witnessed:
    """A stored cosigned checkpoint, re-verified: its size and root, or why it is unusable."""

    package_id: str
    body: str
    size: int
    root: bytes
    problem: str | None = None

    @property
    def where(self) -> str:
        """How the defects name it."""
        return f"the checkpoint witnessed by {self.body} at size {self.size}"


def witnessed_checkpoints(
    session: Session, log_verifiers: Sequence[NoteVerifier], log_origin: str
) -> list[Witnessed]:
    """Every stored cosigned checkpoint, each cosignature and log signature checked again."""
    keys: dict[tuple[str, str], VerifyKey] = {
        (k.body_id, k.fingerprint): VerifyKey(k.signing_key)
        for k in session.scalars(select(BodyKey))
    }
    rows = session.scalars(select(WitnessedCheckpoint).order_by(WitnessedCheckpoint.size,
                                                                WitnessedCheckpoint.package_id))
    return [_recheck(row, keys, log_verifiers, log_origin) for row in rows]


def _recheck(
    row: WitnessedCheckpoint, keys: Mapping[tuple[str, str], VerifyKey],
    log_verifiers: Sequence[NoteVerifier], log_origin: str,
) -> Witnessed:
    def unusable(problem: str) -> Witnessed:
        return Witnessed(row.package_id, row.body_id, row.size, row.root, problem)

    key = keys.get((row.body_id, row.cosigner))
    if key is None:
        return unusable(f"its cosigner {row.cosigner} is not a key of {row.body_id}")
    try:
        found = open_cosignature(row.note, Cosigner.for_key(witness_name(row.body_id), key))
        checkpoint, _ = open_checkpoint(row.note, log_verifiers)
    except VaultError as e:
        return unusable(str(e))
    if (checkpoint.origin, checkpoint.size, checkpoint.root_hash) != (
            log_origin, row.size, row.root) or found.checkpoint != checkpoint:
        return unusable("stored fields differ from the cosigned note")
    return Witnessed(row.package_id, row.body_id, row.size, row.root)


def witness_defects(witnessed: Sequence[Witnessed], roots_at: Mapping[int, bytes]) -> list[str]:
    """What is wrong between the log (its root at each size) and each witnessed checkpoint."""
    out = []
    for w in witnessed:
        ack = f"(ack of {w.package_id})"
        if w.problem is not None:
            out.append(f"{w.where} {ack} does not verify: {w.problem}")
        elif w.size not in roots_at:
            out.append(f"the log is shorter than {w.where} {ack}")
        elif roots_at[w.size] != w.root:
            out.append(f"the log differs from {w.where} {ack}; history was rewritten")
    return out
