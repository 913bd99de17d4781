"""The auditor's checks: verify any evault file with the keys at hand, and prove across
organisations that a custody log only grew.

    >>> trust = Trust.build(Path("allowed_signers"), None)            # doctest: +SKIP
    >>> finding = verify_file(Path("PKG-0123456789AB.evpkg"), trust)  # doctest: +SKIP
    >>> finding.ok, finding.what                                      # doctest: +SKIP
    (True, 'package PKG-0123456789AB from registry-office for ICC-OTP, envelope and payload
    digest verified')

:func:`verify_files` recognises each file by its content (a package, a sharing receipt, an
acknowledgement, a contact card, a checkpoint note, or a bare envelope or statement with its
``.sig``) and checks what the keys at hand allow; every file gets its own :class:`Finding`,
so one bad file never hides the others. Signers are trusted through :class:`Trust`: the
entries of an OpenSSH allowed_signers file, each admitted only for the namespaces its
``namespaces=`` option names, and, when a vault is at hand, the senders it knows. Checkpoint
notes are not SSH signatures; an allowed_signers entry admits a checkpoint signer under the
namespace :data:`CHECKPOINT_NAMESPACE`, and only for the logs its principals name: a checkpoint
of ``evault/<vault-id>`` needs a key bound to that origin (see :meth:`Trust.origin_keys`).

:func:`verify_with_proof` checks a consistency proof written by the sender
(:func:`proof_document`) between two signed checkpoints without the sender's log, so an
auditor who holds an old receipt and a newer checkpoint sees that nothing was rewritten.
Nothing here writes to a vault: verifying is read-only, with or without ``--as``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from glob import escape as glob_escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from vault.clock import as_utc, isoformat, parse_iso
from vault.crypto import sshsig
from vault.crypto.keys import VerifyKey
from vault.crypto.tsp import TrustRoots
from vault.custody.merkle import EMPTY_ROOT, verify_consistency
from vault.custody.note import Checkpoint, NoteVerifier, open_checkpoint
from vault.errors import NotFoundError, OptionsError, UsageError, VaultError, VerificationError
from vault.formats.approval import (
    APPROVAL_NAMESPACE,
    APPROVAL_REQUEST_NAMESPACE,
    APPROVE,
    verify_approval,
    verify_request,
)
from vault.formats.canonical import parse_json_object
from vault.formats.card import load_card
from vault.formats.kinds import detect_file
from vault.formats.package import (
    ENVELOPE_NAMESPACE,
    STATEMENT_NAMESPACE,
    Envelope,
    Statement,
    read_package,
    verify_statement,
)
from vault.formats.receipt import (
    ACK_NAMESPACE,
    RECEIPT_NAMESPACE,
    Acknowledgement,
    SharingReceipt,
    verify_ack,
    verify_receipt,
)
from vault.formats.safetar import printable
from vault.service import timestamping
from vault.service.progress import Progress
from vault.service.results import Result, Sparse
from vault.service.vaults import Vault, open_vault

if TYPE_CHECKING:
    from vault.keystore import PassphrasePrompt
    from vault.service.inspection import OwnKeys

CHECKPOINT_NAMESPACE = "evault-checkpoint"
PROOF_TYPE = "evault-consistency-proof"
PROOF_VERSION = 1
MAX_PROOF = 64 * 1024
MAX_PROOF_HASHES = 128  # two per level of a tree of 2**64 leaves is ample
_HASH_SIZE = 32

KIND_WORDS = {
    "package": "package",
    "envelope": "envelope",
    "statement": "statement",
    "sharing-receipt": "sharing receipt",
    "acknowledgement": "acknowledgement",
    "contact-card": "contact card",
    "checkpoint": "checkpoint",
}


def find_vault(vault_dir: Path | None) -> Path | None:
    """The vault to consult: ``--vault`` if given, else the default one only if it exists.

    Never creates one: an auditor's machine may have no vault at all.
    """
    from vault.store.vaultdir import CONFIG_NAME, resolve

    if vault_dir is not None:
        return resolve(vault_dir)
    default = resolve(None)
    return default if (default / CONFIG_NAME).is_file() else None


# ----------------------------------------------------------------------------- trust


@dataclass(frozen=True)
class Trust:
    """The signer keys an auditor trusts, and where they came from (for the messages).

    ``signers`` come from an allowed_signers file (``source``) and are admitted per
    namespace; ``vault_keys`` are a vault's known senders and own keys, admitted for every
    kind of signed document. A checkpoint is admitted only from a key bound to its log
    (:meth:`origin_keys`, or the sender a document at hand names: :meth:`package_sender`).
    """

    signers: tuple[sshsig.AllowedSigner, ...] = ()
    vault_keys: tuple[VerifyKey, ...] = ()
    source: str | None = None
    has_vault: bool = False
    revoked: tuple[tuple[VerifyKey, datetime], ...] = ()
    """Keys the vault knew and revoked (and trusts nowhere else), with the time: what they
    signed before it still verifies, with a note; what is dated after it is refused."""
    own_origin: str | None = None
    """The vault's own log, ``evault/<vault-id>``: only :attr:`own_keys` sign its checkpoints."""
    own_keys: tuple[VerifyKey, ...] = ()
    """The vault's own identity keys (current, retired and revoked)."""
    received: tuple[tuple[str, str, VerifyKey], ...] = ()
    """(package id, origin, sender key) of each package the vault opened from a sender it
    still trusts: the log that package's verified envelope named as its sender's."""
    tsa_roots: TrustRoots = field(default_factory=TrustRoots)
    """The TSA certificates an RFC 3161 token may chain to: the vault's configured TSAs'
    CAs and the ``--tsa-ca`` files."""

    @classmethod
    def build(cls, allowed_signers: Path | None, vault: Vault | None,
              tsa_ca: Sequence[Path] = ()) -> Trust:
        """Trust from an allowed_signers file and/or a vault's known senders; TSAs from the
        vault's configuration and ``tsa_ca`` (PEM files)."""
        signers: list[sshsig.AllowedSigner] = []
        if allowed_signers is not None:
            try:
                text = _read_trust_file(allowed_signers).decode("utf-8")
            except UnicodeDecodeError:
                raise UsageError(f"{allowed_signers}: not an allowed_signers text file") from None
            try:
                signers = sshsig.parse_allowed_signers(text)
            except UsageError as e:
                raise UsageError(f"{allowed_signers}: {e}") from None
        keys: list[VerifyKey] = []
        revoked: dict[VerifyKey, datetime] = {}
        own_origin: str | None = None
        own: list[VerifyKey] = []
        received: list[tuple[str, str, VerifyKey]] = []
        if vault is not None:
            from vault.service import keyhistory
            from vault.service.contacts import known_senders
            from vault.service.custody import origin

            # The vault's senders as its signed key history has them, not as the tables say.
            keyhistory.ensure_anchor(vault)
            with vault.transaction() as session:
                keyhistory.check_senders(vault, session)
                known = known_senders(session)
                keys = list(known.values())
                revoked = _revoked_keys(session, set(keys))
                own = _own_keys(session)
                received = _received_origins(session, known)
            own_origin = origin(vault)
        return cls(
            signers=tuple(signers),
            vault_keys=tuple(keys),
            source=str(allowed_signers) if allowed_signers is not None else None,
            has_vault=vault is not None,
            revoked=tuple(revoked.items()),
            own_origin=own_origin,
            own_keys=tuple(own),
            received=tuple(received),
            tsa_roots=timestamping.trusted_roots(
                vault.root if vault is not None else None,
                vault.config.tsa if vault is not None else (), tsa_ca),
        )

    def origin_keys(self, origin: str) -> list[VerifyKey]:
        """The keys bound to the log ``origin``: this vault's own identities for its own log,
        and each allowed_signers entry admitted for checkpoints whose principals match it
        (OpenSSH patterns, ``*`` and ``?``). Empty if nothing binds it."""
        keys = list(self.own_keys) if origin == self.own_origin else []
        for key in self._lined(origin):
            if key not in keys:
                keys.append(key)
        return keys

    def binds(self, origin: str) -> bool:
        """True if the keys at hand bind ``origin`` to some keys (this vault's own log, or an
        allowed_signers principal naming it); a document's signer then does not."""
        return origin == self.own_origin or bool(self._lined(origin))

    def _lined(self, origin: str) -> list[VerifyKey]:
        return sshsig.trusted_keys(self.signers, namespace=CHECKPOINT_NAMESPACE,
                                   principal=origin)

    def sender_origin(self, package_id: str) -> tuple[str, VerifyKey] | None:
        """The log and key of the sender of a package this vault opened, if it did."""
        return next(((o, k) for p, o, k in self.received if p == package_id), None)

    def package_sender(self, package_id: str | None, note: str | bytes) -> tuple[VerifyKey, ...]:
        """The sender of a package this vault opened, if its envelope named the log of
        ``note`` (then bound to it: the sender a document at hand names), else nothing."""
        opened = self.sender_origin(package_id) if package_id is not None else None
        if opened is None or opened[0] != _origin_line(note):
            return ()
        # A log that packages from two senders named is bound to neither: one of them lies.
        if any(o == opened[0] and k != opened[1] for _, o, k in self.received):
            return ()
        return (opened[1],)

    def unbound(self, origin: str, signer: VerifyKey, label: str) -> VerificationError:
        """The refusal of a checkpoint of ``origin`` signed by a key not bound to that log."""
        fp = signer.fingerprint
        head = f"{label}: origin {origin} signed by {fp}, "
        if self.own_origin is not None and signer in self.own_keys:
            return VerificationError(
                head + f"a key of this vault, whose own log is {self.own_origin}; a vault's key "
                "vouches only for its own log, do not rely on this checkpoint")
        lines = [e for e in self.signers if e.key == signer]
        for entry in lines:
            try:
                entry.check(namespace=CHECKPOINT_NAMESPACE)
            except VerificationError:
                continue
            return VerificationError(
                head + f"but its line in {self.source} does not name that log among its "
                f"principals ({','.join(entry.principals)}); a checkpoint signer must be bound "
                f"to its log: if this key keeps {origin}, add {origin} as a principal of that "
                "line")
        return VerificationError(
            head + "which this vault knows as a sender but not as the keeper of that log (a "
            "contact card names no log); if this key keeps it, pass --trusted-keys FILE with "
            f"the line '{origin} namespaces=\"{CHECKPOINT_NAMESPACE}\" ssh-ed25519 ...' for it")

    def check_own_log(self, origin: str, signer: VerifyKey, label: str) -> None:
        """A document's signer signed the checkpoint it carries (of ``origin``): refuse it if
        that log is bound to other keys (it claims a log that is not its own)."""
        if self.binds(origin) and signer not in self.origin_keys(origin):
            where = " and ".join(
                (["this vault's own identities"] if origin == self.own_origin else [])
                + ([f"principals in {self.source}"] if self._lined(origin) else []))
            raise VerificationError(
                f"{label}: checkpoint: origin {origin} signed by {signer.fingerprint}, but that "
                f"log is bound to other keys ({where}); a signer vouches only for its own log, "
                "do not rely on this document")

    def revocation(self, key: VerifyKey) -> datetime | None:
        """When the vault revoked ``key``, if it did (and trusts it nowhere else)."""
        return next((when for k, when in self.revoked if k == key), None)

    def dated(self, signer: VerifyKey, signed_at: str, label: str) -> str:
        """A note for a document signed by a revoked key before its revocation ("" if the
        key is not revoked); VerificationError if the document is dated after it."""
        revoked = self.revocation(signer)
        if revoked is None:
            return ""
        if parse_iso(signed_at) > revoked:  # same second: as custody verify and import
            raise VerificationError(
                f"{label}: dated {signed_at}, after its signer's key {signer.fingerprint} was "
                f"revoked at {isoformat(revoked)}; do not rely on it"
            )
        return f"; note: signed before its key was revoked at {isoformat(revoked)}"

    def timed(self, signer: VerifyKey, signed_at: str | None, label: str, checkpoint: str,
              timestamps: Sequence[str]) -> str:
        """What a document's RFC 3161 tokens (over its ``checkpoint``) attest, for its
        finding; then :meth:`dated`, except that for a revoked key the earliest attested time
        decides, not the document's own date (``signed_at``: None for a checkpoint alone).
        VerificationError if a token fails.

        A token dates the checkpoint's signature (it existed then), not the document's:
        evault asks for it while signing both, in one transaction, so the two are seconds
        apart; a document whose checkpoint was timestamped after its key's revocation is
        refused. What ties a document to the log, whatever checkpoint it carries, is the
        inclusion proof of its package's events (``evault custody prove``)."""
        dated = self.dated(signer, signed_at, label) if signed_at is not None else ""
        if not timestamps:
            return dated
        if not self.tsa_roots:
            return (f"; {len(timestamps)} timestamp(s) not checked: no TSA certificate to "
                    f"trust, pass --tsa-ca FILE{dated}")
        attested = timestamping.check_tokens(timestamps, checkpoint, self.tsa_roots, label)
        first = min(attested, key=lambda a: a.attested_at)
        stamped = ", ".join(f"at {a.attested_at} by {a.tsa}" for a in attested)
        revoked = self.revocation(signer)
        if revoked is None:
            return f"; checkpoint timestamped {stamped}"
        if parse_iso(first.attested_at) > revoked:
            raise VerificationError(
                f"{label}: checkpoint timestamped at {first.attested_at} by {first.tsa}, after "
                f"its signer's key {signer.fingerprint} was revoked at {isoformat(revoked)}; "
                "do not rely on it")
        return (f"; checkpoint timestamped {stamped}; note: timestamped before its key was "
                f"revoked at {isoformat(revoked)}")

    def keys(self, namespace: str) -> list[VerifyKey]:
        """Every key trusted to sign documents of ``namespace``."""
        keys = sshsig.trusted_keys(self.signers, namespace=namespace)
        return keys + [k for k in self.vault_keys if k not in keys]

    def knows(self, key: VerifyKey) -> bool:
        """True if ``key`` is trusted for anything at all."""
        return key in self.vault_keys or any(s.key == key for s in self.signers)

    def untrusted(self, signer: VerifyKey, namespace: str, label: str) -> VerificationError:
        """The failure for a ``signer`` not trusted for ``namespace``, with the next step."""
        fp = signer.fingerprint
        if not self.signers and not self.has_vault:
            return VerificationError(
                f"{label}: signed by {fp}, but there are no trusted keys to check it against; "
                "pass --trusted-keys FILE (OpenSSH allowed_signers) or --vault DIR"
            )
        for entry in self.signers:
            if entry.key == signer:
                try:
                    entry.check(namespace=namespace)
                except VerificationError as e:
                    return VerificationError(
                        f"{label}: signer is in {self.source} but not admitted there ({e}); "
                        "edit its line if it should sign these"
                    )
        where = " or ".join(
            ([f"to {self.source}"] if self.source else ["to --trusted-keys FILE"])
            + (["as a contact of this vault"] if self.has_vault else [])
        )
        return VerificationError(
            f"{label}: signer {fp} is not a trusted key; confirm its fingerprint with its "
            f"holder, then add it {where}"
        )

    def require(self, signature: str, namespace: str, label: str) -> list[VerifyKey]:
        """The keys for ``namespace``; raise with the next step if the signer is not among
        them (a malformed signature is left for the verifier to name)."""
        keys = self.keys(namespace)
        try:
            signer = sshsig.parse(signature).public_key
        except VerificationError:
            return keys
        if signer not in keys:
            if self.revocation(signer) is not None:
                return [*keys, signer]  # then trusted only for what it signed before (dated)
            raise self.untrusted(signer, namespace, label)
        return keys


MAX_TRUST_FILE = 1 << 20
"""An allowed_signers file is a few lines a key; reading stops here (a device never ends)."""


def _read_trust_file(path: Path) -> bytes:
    """The bytes of a trust file the user named: a regular file, ``/dev/stdin``, a FIFO or a
    process substitution ``<(...)``, read to its end like any Unix tool reads its input."""
    with open(path, "rb") as handle:
        data = handle.read(MAX_TRUST_FILE + 1)
    if len(data) > MAX_TRUST_FILE:
        raise UsageError(f"{path}: more than {MAX_TRUST_FILE >> 20} MiB; not an allowed_signers "
                         "text file")
    return data


def _revoked_keys(session: Any, active: set[VerifyKey]) -> dict[VerifyKey, datetime]:
    """Every revoked contact, body key and identity key of a vault (not active elsewhere)."""
    from sqlalchemy import select

    from vault.store.models import BodyKey, Contact, IdentityKey

    out: dict[VerifyKey, datetime] = {}
    for model in (Contact, BodyKey, IdentityKey):
        for row in session.scalars(select(model).where(model.revoked_at.is_not(None))):
            key = VerifyKey(row.signing_key)
            if key not in active:
                when = as_utc(row.revoked_at)
                out[key] = min(when, out.get(key, when))
    return out


def _own_keys(session: Any) -> list[VerifyKey]:
    """Every identity key of the vault, retired and revoked too: each signed checkpoints of
    its log in its time (whether a revoked key's document predates its revocation is
    :meth:`Trust.dated`'s to say; a bare checkpoint needs a key trusted now)."""
    from sqlalchemy import select

    from vault.store.models import IdentityKey

    return [VerifyKey(row.signing_key) for row in session.scalars(select(IdentityKey))]


def _received_origins(
    session: Any, known: dict[str, VerifyKey]
) -> list[tuple[str, str, VerifyKey]]:
    """(package id, origin, sender key) of every package opened from a still-trusted sender."""
    from sqlalchemy import select

    from vault.store.models import ReceivedPackage

    out: list[tuple[str, str, VerifyKey]] = []
    for pid, sender, envelope in session.execute(select(
            ReceivedPackage.package_id, ReceivedPackage.sender, ReceivedPackage.envelope)):
        key = known.get(sender)
        if key is None:
            continue
        try:
            note = Envelope.from_bytes(bytes(envelope)).checkpoint
        except VaultError:
            continue
        out.append((pid, _origin_line(note), key))
    return out


def recipient_keys(vault: Vault, as_name: str | None) -> OwnKeys:
    """Every age key (current, retired and revoked) of an identity, to check past packages.

    Only decryption for checking: nothing is extracted and nothing logged.
    """
    from vault.service import inspection
    from vault.service.identities import get_identity, identity_count, load_keypair

    with vault.transaction() as session:
        identity = get_identity(session, as_name)
        keys = tuple(load_keypair(vault, k).age for k in identity.keys)
        return inspection.OwnKeys(keys, identity.name, only=identity_count(session) == 1)


# ----------------------------------------------------------------------------- findings


@dataclass(frozen=True, slots=True)
class Finding(Sparse):
    """What was found about one file: ``what`` was verified (``ok``), or the ``reason`` it was
    not; ``kind`` as :func:`vault.formats.kinds.detect_file` names it; the document's ``id``
    and its ``signer`` (a key fingerprint or a name) when known. ``to_json()``, for
    ``--json``, has ``what`` or ``reason``, and ``id`` and ``signer`` only when known."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"what", "reason", "id", "signer"})
    file: str
    kind: str
    ok: bool
    what: str | None = None
    reason: str | None = None
    id: str | None = None
    signer: str | None = None

    def line(self) -> str:
        """``OK: FILE (what)`` or ``FAIL: FILE: reason``."""
        if self.ok:
            return f"OK: {self.file} ({self.what})"
        return f"FAIL: {self.file}: {self.reason}"


@dataclass
class _Checked:
    what: str
    id: str | None = None
    signer: str | None = None


def verify_files(
    paths: Sequence[Path],
    trust: Trust,
    *,
    identities: OwnKeys | None = None,
    progress: Callable[[int], Progress | None] | None = None,
) -> list[Finding]:
    """Verify each file as far as ``trust`` and ``identities`` allow; one finding each.
    ``progress(i)`` gives the callback for the i-th file's bytes (see :func:`verify_file`)."""
    return [verify_file(p, trust, identities=identities,
                        progress=progress(i) if progress else None)
            for i, p in enumerate(paths)]


def verify_at_hand(
    paths: Sequence[Path],
    *,
    vault_dir: Path | None = None,
    trusted_keys: Path | None = None,
    tsa_ca: Sequence[Path] = (),
    as_name: str | None = None,
    prompt: PassphrasePrompt | None = None,
    progress: Callable[[int], Progress | None] | None = None,
) -> list[Finding]:
    """``evault verify``: each file verified with the keys at hand, one finding each.

    Signers are trusted from ``trusted_keys`` (an allowed_signers file) and, when a vault is
    at hand (``vault_dir``, or the default one if it exists: :func:`find_vault`), from its
    known senders and its own keys; with ``as_name``, that identity's age keys (it needs the
    vault) decrypt packages to check them whole. RFC 3161 tokens are checked against the
    vault's configured TSAs and ``tsa_ca``. The vault is only read, and closed again.
    """
    root = find_vault(vault_dir)
    if as_name is not None and root is None:
        raise OptionsError("--as NAME needs the vault holding that identity; pass --vault")
    vault = open_vault(root, prompt=prompt) if root is not None else None
    try:
        trust = Trust.build(trusted_keys, vault, tsa_ca)
        identities = recipient_keys(vault, as_name) if vault is not None and as_name else None
        return verify_files(paths, trust, identities=identities, progress=progress)
    finally:
        if vault is not None:
            vault.close()


def verify_file(
    path: Path,
    trust: Trust,
    *,
    identities: OwnKeys | None = None,
    progress: Progress | None = None,
) -> Finding:
    """Recognise ``path`` by its content and verify it; any failure becomes the finding.
    ``progress`` gets (payload bytes read, payload size) while a package is decrypted."""
    # Names and texts from the files are shown on one line each: a crafted name must not
    # print a line of its own (an "OK:" that was never verified).
    shown = printable(str(path))
    kind = "unknown"
    try:
        kind = detect_file(path)
        if kind == "package":
            checked = _check_package(path, trust, identities, progress)
        else:
            checked = _CHECKS[kind](path, trust, identities)
    except VaultError as e:
        return Finding(shown, kind, False, reason=printable(str(e)))
    except OSError as e:
        return Finding(shown, kind, False, reason=f"cannot be read ({e.strerror or e})")
    return Finding(shown, kind, True, what=printable(checked.what), id=checked.id,
                   signer=checked.signer)


def _signature_of(path: Path, what: str) -> str:
    sig = path.with_name(path.name + ".sig")
    try:
        return sig.read_bytes().decode("ascii")
    except FileNotFoundError:
        raise NotFoundError(
            f"{what}: its signature {sig.name} is missing; keep FILE and FILE.sig together"
        ) from None
    except UnicodeDecodeError:
        raise VerificationError(f"{what}: {sig.name} is not an ssh signature") from None


def _peek(data: bytes, key: str) -> str | None:
    try:
        value = parse_json_object(data, "document").get(key)
    except VaultError:
        return None
    return value if isinstance(value, str) and value.isprintable() and len(value) < 80 else None


def _origin_line(note: str | bytes) -> str:
    text = note if isinstance(note, str) else note.decode("utf-8", "replace")
    return text.split("\n", 1)[0]


def _embedded_checkpoint(note: str, signer: VerifyKey, label: str, trust: Trust) -> Checkpoint:
    """A checkpoint inside a signed document: signed by the document's own signer, of a log
    not bound to other keys (the signer's own, as far as the keys at hand tell)."""
    try:
        verifier = NoteVerifier.for_key(_origin_line(note), signer)
        checkpoint, _ = open_checkpoint(note, [verifier])
    except VaultError as e:
        raise VerificationError(f"{label}: checkpoint: {e}") from None
    trust.check_own_log(checkpoint.origin, signer, label)
    return checkpoint


def _check_package(
    path: Path, trust: Trust, identities: OwnKeys | None, progress: Progress | None = None
) -> _Checked:
    from vault.service.inspection import inspect_package

    pkg = read_package(path)
    pid = _peek(pkg.envelope_bytes, "package_id")
    label = f"package {pid}" if pid else "package"
    keys = trust.require(pkg.signature, ENVELOPE_NAMESPACE, label)
    if identities is None:
        report = inspect_package(path, trusted=keys)
        done = "envelope and payload digest verified"
    else:
        report = inspect_package(path, trusted=keys, identities=identities, progress=progress)
        if report.sender_key not in trust.keys(STATEMENT_NAMESPACE) and trust.revocation(
                report.sender_key) is None:
            raise trust.untrusted(report.sender_key, STATEMENT_NAMESPACE,
                                  f"package {report.package_id}: statement")
        assert report.statement is not None
        done = (f"envelope, payload, bag, statement, {_items_said(report.statement)} and "
                f"{report.custody_events} custody event(s) verified")
        if report.approved_by:
            done += f", release approved by {', '.join(report.approved_by)}"
    envelope = report.envelope
    trust.check_own_log(_origin_line(envelope.checkpoint), report.sender_key, label)
    note = trust.timed(report.sender_key, envelope.created_at, label, envelope.checkpoint,
                       envelope.timestamps)
    return _Checked(
        f"package {envelope.package_id} from {envelope.sender.name} for {envelope.body}, "
        f"{done}{note}",
        envelope.package_id, envelope.sender.fingerprint,
    )


def _check_envelope(path: Path, trust: Trust, identities: OwnKeys | None) -> _Checked:
    data = path.read_bytes()
    pid = _peek(data, "package_id")
    label = f"package {pid}: envelope" if pid else "envelope"
    signature = _signature_of(path, label)
    keys = trust.require(signature, ENVELOPE_NAMESPACE, label)
    try:
        signer = sshsig.verify(signature, data, ENVELOPE_NAMESPACE, trusted=keys)
    except VerificationError as e:
        raise VerificationError(f"{label}: signature does not verify: {e}") from None
    try:
        envelope = Envelope.from_bytes(data)
    except VerificationError as e:
        raise VerificationError(f"{label}: {e}") from None
    if signer.fingerprint != envelope.sender.fingerprint:
        raise VerificationError(f"{label}: signed by {signer.fingerprint}, but the sender named "
                                f"inside is {envelope.sender.name} {envelope.sender.fingerprint}")
    _embedded_checkpoint(envelope.checkpoint, signer, label, trust)
    note = trust.timed(signer, envelope.created_at, label, envelope.checkpoint,
                       envelope.timestamps)
    return _Checked(
        f"envelope of package {envelope.package_id} from {envelope.sender.name} for "
        f"{envelope.body}, signature and checkpoint verified; check payload.age against its "
        f"payload_sha256{note}",
        envelope.package_id, signer.fingerprint,
    )


def _check_statement(path: Path, trust: Trust, identities: OwnKeys | None) -> _Checked:
    data = path.read_bytes()
    pid = _peek(data, "package_id")
    label = f"package {pid}: statement" if pid else "statement"
    signature = _signature_of(path, label)
    keys = trust.require(signature, STATEMENT_NAMESPACE, label)
    statement = verify_statement(data, signature, keys)
    signer = next(k for k in keys if k.fingerprint == statement.sender.fingerprint)
    note = trust.dated(signer, statement.created_at, label)
    return _Checked(
        f"statement of package {statement.package_id} from {statement.sender.name} for "
        f"{statement.body}, {_items_said(statement)}, signature verified{note}",
        statement.package_id, statement.sender.fingerprint,
    )


def _items_said(statement: Statement) -> str:
    """"N item(s)", and how many of them are derived copies with a signed link."""
    linked = sum(i.derived_from is not None for i in statement.items)
    return f"{len(statement.items)} item(s)" + (
        f" ({linked} derived, linked to the original by id and SHA-256)" if linked else "")


def _check_receipt(path: Path, trust: Trust, identities: OwnKeys | None) -> _Checked:
    data = path.read_bytes()
    rid = _peek(data, "receipt_id")
    label = f"sharing receipt {rid}" if rid else "sharing receipt"
    signature = _signature_of(path, label)
    keys = trust.require(signature, RECEIPT_NAMESPACE, label)
    receipt = verify_receipt(data, signature, keys)
    signer = next(k for k in keys if k.fingerprint == receipt.sender.fingerprint)
    checkpoint = _embedded_checkpoint(receipt.checkpoint, signer, label, trust)
    note = trust.timed(signer, receipt.sent_at, label, receipt.checkpoint, receipt.timestamps)
    return _Checked(
        f"sharing receipt {receipt.receipt_id} of package {receipt.package_id} to "
        f"{receipt.body} from {receipt.sender.name}, {len(receipt.items)} item(s), signature "
        f"and checkpoint (size {checkpoint.size}) verified{note}",
        receipt.receipt_id, receipt.sender.fingerprint,
    )


def _check_ack(path: Path, trust: Trust, identities: OwnKeys | None) -> _Checked:
    data = path.read_bytes()
    pid = _peek(data, "package_id")
    label = f"acknowledgement of {pid}" if pid else "acknowledgement"
    signature = _signature_of(path, label)
    keys = trust.require(signature, ACK_NAMESPACE, label)
    ack = verify_ack(data, signature, keys)
    signer = next(k for k in keys if k.fingerprint == ack.recipient.fingerprint)
    checkpoint = _embedded_checkpoint(ack.checkpoint, signer, label, trust)
    note = trust.timed(signer, ack.received_at, label, ack.checkpoint, ack.timestamps)
    witnessed = _witnessed(ack, signer, trust, label)
    return _Checked(
        f"acknowledgement of package {ack.package_id} for {ack.body} by {ack.recipient.name}, "
        f"{len(ack.items)} item(s), signature and checkpoint (size {checkpoint.size}) "
        f"verified{witnessed}{note}",
        ack.package_id, ack.recipient.fingerprint,
    )


def _witnessed(ack: Acknowledgement, signer: VerifyKey, trust: Trust, label: str) -> str:
    """What a version 2 ack's cosigned checkpoint proves ("" for version 1): the sender's
    checkpoint, signed by a key trusted for checkpoints, cosigned by the ack's own signer."""
    if ack.cosigned_checkpoint is None:
        return ""
    from vault.custody.cosignature import Cosigner, open_cosignature, witness_name

    where = f"{label}: cosigned checkpoint"
    try:
        found = open_cosignature(ack.cosigned_checkpoint,
                                 Cosigner.for_key(witness_name(ack.body), signer))
    except VaultError as e:
        raise VerificationError(f"{where}: {e}") from None
    # The sender of a package this vault opened keeps the log its envelope named.
    checkpoint, sender = open_trusted_checkpoint(
        ack.cosigned_checkpoint, trust, where,
        bound=trust.package_sender(ack.package_id, ack.cosigned_checkpoint))
    when = isoformat(datetime.fromtimestamp(found.timestamp, timezone.utc))
    root = base64.b64encode(checkpoint.root_hash).decode()
    return (f"; {ack.body} witnessed {checkpoint.origin} at size {checkpoint.size}, root "
            f"{root}, signed by {sender.fingerprint}, cosigned at {when}")


def _check_card(path: Path, trust: Trust, identities: OwnKeys | None) -> _Checked:
    card = load_card(path.read_bytes())
    revoked = trust.revocation(card.signing_key)
    known = (f"its key was revoked at {isoformat(revoked)}; do not trust it" if revoked
             else "a trusted key" if trust.knows(card.signing_key)
             else "confirm it with its holder before trusting it")
    return _Checked(
        f"contact card of {card.name}, fingerprint {card.fingerprint}, self-signature "
        f"verified; {known}",
        card.name, card.fingerprint,
    )


def _check_checkpoint(path: Path, trust: Trust, identities: OwnKeys | None) -> _Checked:
    data = path.read_bytes()
    checkpoint, signer = open_trusted_checkpoint(data, trust, "checkpoint")
    root = base64.b64encode(checkpoint.root_hash).decode()
    # Its tokens, as `custody checkpoint -o FILE` writes them beside it: FILE.1.tsr, ...
    tokens = sorted(path.parent.glob(f"{glob_escape(path.name)}.*.tsr"),
                    key=lambda p: (len(p.name), p.name))
    note = trust.timed(signer, None, f"checkpoint {path.name}", data.decode("utf-8"),
                       [base64.b64encode(t.read_bytes()).decode() for t in tokens]
                       ) if tokens else ""
    return _Checked(
        f"checkpoint of {checkpoint.origin} at size {checkpoint.size}, root {root}, signature "
        f"verified{note}",
        checkpoint.origin, signer.fingerprint,
    )


def _check_approval_request(path: Path, trust: Trust, identities: OwnKeys | None) -> _Checked:
    data = path.read_bytes()
    rid = _peek(data, "request_id")
    label = f"approval request {rid}" if rid else "approval request"
    signature = _signature_of(path, label)
    keys = trust.require(signature, APPROVAL_REQUEST_NAMESPACE, label)
    request = verify_request(data, signature, keys)
    signer = next(k for k in keys if k.fingerprint == request.requester.fingerprint)
    note = trust.dated(signer, request.created_at, label)
    return _Checked(
        f"approval request {request.request_id} for {request.body} from "
        f"{request.requester.name}, {len(request.items)} item(s), selection "
        f"{request.selection_sha256}, signature verified{note}",
        request.request_id, request.requester.fingerprint,
    )


def _check_approval(path: Path, trust: Trust, identities: OwnKeys | None) -> _Checked:
    data = path.read_bytes()
    rid = _peek(data, "request_id")
    label = f"approval of {rid}" if rid else "approval"
    signature = _signature_of(path, label)
    keys = trust.require(signature, APPROVAL_NAMESPACE, label)
    answer = verify_approval(data, signature, keys)
    signer = next(k for k in keys if k.fingerprint == answer.approver.fingerprint)
    note = trust.dated(signer, answer.signed_at, label)
    said = "approval" if answer.decision == APPROVE else f"refusal ({answer.reason})"
    return _Checked(
        f"{said} of request {answer.request_id} for {answer.body} by {answer.approver.name}, "
        f"selection {answer.selection_sha256}, signature verified{note}",
        answer.request_id, answer.approver.fingerprint,
    )


_CHECKS = {
    "package": _check_package,
    "envelope": _check_envelope,
    "statement": _check_statement,
    "sharing-receipt": _check_receipt,
    "acknowledgement": _check_ack,
    "contact-card": _check_card,
    "checkpoint": _check_checkpoint,
    "approval-request": _check_approval_request,
    "approval": _check_approval,
}


def open_trusted_checkpoint(
    note: str | bytes, trust: Trust, label: str, *, bound: Sequence[VerifyKey] = ()
) -> tuple[Checkpoint, VerifyKey]:
    """Open a checkpoint note signed by a key bound to its log; return it and the key.

    The note's signer name is its origin (first line), as evault signs them. The signer must
    be bound to that origin (:meth:`Trust.origin_keys`, or ``bound``: the sender a document
    at hand names for that log); a key trusted for checkpoints of other logs is refused.
    """
    origin = _origin_line(note)
    if trust.binds(origin):
        bound = ()  # the keys at hand bind this log: a document's word does not widen them
    keys = trust.keys(CHECKPOINT_NAMESPACE)
    keys += [k for k in bound if k not in keys]

    def verifiers(keys: Sequence[VerifyKey]) -> list[NoteVerifier]:
        try:
            return [NoteVerifier.for_key(origin, k) for k in keys]
        except UsageError as e:
            raise VerificationError(f"{label}: origin line: {e}") from None

    try:
        checkpoint, _ = open_checkpoint(note, verifiers(keys))
    except VerificationError as e:
        if "no signature from a known key" not in str(e):
            raise VerificationError(f"{label}: {e}") from None
        raise _untrusted_note(note, trust, label, verifiers) from None
    allowed = [*trust.origin_keys(checkpoint.origin), *bound]
    signers = []
    for key in keys:
        try:
            open_checkpoint(note, verifiers([key]))
        except VerificationError:
            continue
        if key in allowed:
            return checkpoint, key
        signers.append(key)
    if not signers:  # pragma: no cover
        raise AssertionError("a note that opened has a signer")
    raise trust.unbound(checkpoint.origin, signers[0], label)


def _untrusted_note(
    note: str | bytes, trust: Trust, label: str, verifiers: Any
) -> VerificationError:
    """Why no trusted key signed a note: no keys at all, a key barred by its namespaces=, or
    a stranger."""
    for entry in trust.signers:
        try:
            open_checkpoint(note, verifiers([entry.key]))
        except VerificationError:
            continue
        return trust.untrusted(entry.key, CHECKPOINT_NAMESPACE, label)
    if not trust.signers and not trust.has_vault:
        return VerificationError(
            f"{label}: there are no trusted keys to check its signature against; pass "
            "--trusted-keys FILE (OpenSSH allowed_signers) or --vault DIR"
        )
    return VerificationError(
        f"{label}: not signed by a trusted key (signer name {_origin_line(note)[:80]}); add "
        f"the signer's key to --trusted-keys with its log as a principal (namespace "
        f"{CHECKPOINT_NAMESPACE})"
    )


# ----------------------------------------------------------------------------- consistency


def read_checkpoint(path: Path) -> str:
    """The checkpoint note in a file: a checkpoint itself, or the ``checkpoint`` of a sharing
    receipt, an acknowledgement, an envelope or a package. Signatures are checked later."""
    return read_checkpoint_of(path)[0]


def read_checkpoint_of(path: Path) -> tuple[str, str | None]:
    """:func:`read_checkpoint`, and the package whose sender keeps the note's log when the
    file is that package's sharing receipt, envelope or package (None otherwise: the note of
    an acknowledgement is of its recipient's log)."""
    try:
        kind = detect_file(path)
    except VerificationError as e:
        # Anything that is not an evault document is read as a note, so that a damaged
        # checkpoint is refused by the note's own rules (and with their words).
        if "a json object" in str(e) or "a tar archive" in str(e) or "larger than" in str(e):
            raise VerificationError(f"{path.name}: not a checkpoint, receipt or "
                                    f"acknowledgement ({e})") from None
        kind = "checkpoint"
    label = f"{path.name}: {KIND_WORDS.get(kind, kind)}"
    try:
        if kind == "package":
            envelope = Envelope.from_bytes(read_package(path).envelope_bytes)
            return envelope.checkpoint, envelope.package_id
        data = path.read_bytes()
        if kind == "sharing-receipt":
            receipt = SharingReceipt.from_bytes(data)
            return receipt.checkpoint, receipt.package_id
        if kind == "acknowledgement":
            return Acknowledgement.from_bytes(data).checkpoint, None
        if kind == "envelope":
            envelope = Envelope.from_bytes(data)
            return envelope.checkpoint, envelope.package_id
    except VerificationError as e:
        raise VerificationError(f"{label}: {e}") from None
    if kind != "checkpoint":
        raise VerificationError(f"{label}: carries no checkpoint; give a checkpoint, a "
                                "sharing receipt or an acknowledgement")
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        raise VerificationError(f"{path.name}: a checkpoint must be utf-8 text") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Consistency(Result):
    """Two checkpoints of the log ``origin`` (``evault/<vault-id>``) found consistent: the
    tree of ``new_size`` leaves extends the one of ``old_size``. Roots and ``proof`` hashes
    are base64 (RFC 9162 consistency proof; empty from the empty tree); ``status`` is
    ``consistent``. :func:`proof_document` writes it for an auditor."""

    origin: str
    old_size: int
    new_size: int
    old_root: str
    new_root: str
    proof: tuple[str, ...]
    status: str


def prove_from_log(vault: Vault, old_note: str, new_note: str) -> Consistency:
    """The vault's own log proves the two checkpoints consistent (see ``prove_consistency``)."""
    from vault.service.custody import prove_consistency

    return prove_consistency(vault, old_note, new_note)


def check_consistency(
    old: Path,
    new: Path,
    *,
    proof: Path | None = None,
    trusted_keys: Path | None = None,
    vault_dir: Path | None = None,
    prompt: PassphrasePrompt | None = None,
) -> Consistency:
    """``evault custody consistency``: the log only grew from the checkpoint in ``old`` to
    the one in ``new`` (notes, or the receipts, acknowledgements, envelopes or packages
    that carry one: :func:`read_checkpoint_of`).

    Without ``proof`` the vault's own log computes the proof (:func:`prove_from_log`). With
    it no vault is needed: the notes' signers are trusted from ``trusted_keys`` and from the
    vault at hand, if any (:func:`verify_with_proof`). A rewrite raises VerificationError.
    """
    if proof is None:
        vault = open_vault(vault_dir, prompt=prompt)
        try:
            return prove_from_log(vault, read_checkpoint(old), read_checkpoint(new))
        finally:
            vault.close()
    root = find_vault(vault_dir)
    at_hand = open_vault(root, prompt=prompt) if root is not None else None
    try:
        trust = Trust.build(trusted_keys, at_hand)
    finally:
        if at_hand is not None:
            at_hand.close()
    (old_note, old_package), (new_note, new_package) = (
        read_checkpoint_of(old), read_checkpoint_of(new))
    return verify_with_proof(old_note, new_note, proof.read_bytes(), trust,
                             old_package=old_package, new_package=new_package)


def proof_document(result: Consistency) -> str:
    """The consistency proof as the JSON an auditor passes to ``--proof``."""
    doc = {
        "type": PROOF_TYPE,
        "version": PROOF_VERSION,
        "origin": result.origin,
        "old_size": result.old_size,
        "new_size": result.new_size,
        "old_root": result.old_root,
        "new_root": result.new_root,
        "proof": list(result.proof),
    }
    return json.dumps(doc, indent=2) + "\n"


@dataclass(frozen=True)
class ConsistencyProof:
    """A parsed consistency proof file; construction from bytes checks every field."""

    origin: str
    old_size: int
    new_size: int
    old_root: bytes
    new_root: bytes
    hashes: tuple[bytes, ...]

    @classmethod
    def from_bytes(cls, data: bytes) -> ConsistencyProof:
        """Parse strictly; raise VerificationError naming the field."""
        what = "consistency proof"
        obj = parse_json_object(data, what, limit=MAX_PROOF)
        fields = {"type", "version", "origin", "old_size", "new_size", "old_root", "new_root",
                  "proof"}
        if obj.get("type") != PROOF_TYPE:
            raise VerificationError(f"{what}: type must be {PROOF_TYPE!r}")
        if type(obj.get("version")) is not int or obj["version"] != PROOF_VERSION:
            raise VerificationError(f"{what}: version must be {PROOF_VERSION}")
        if set(obj) != fields:
            odd = sorted(set(obj) ^ fields)[0]
            raise VerificationError(f"{what}: field {odd[:40]!r} is missing or unknown")
        if not isinstance(obj["origin"], str) or not obj["origin"]:
            raise VerificationError(f"{what}: origin must be a non-empty string")
        for key in ("old_size", "new_size"):
            if type(obj[key]) is not int or obj[key] < 0:
                raise VerificationError(f"{what}: {key} must be a non-negative integer")
        if not isinstance(obj["proof"], list) or len(obj["proof"]) > MAX_PROOF_HASHES:
            raise VerificationError(f"{what}: proof must be a list of at most "
                                    f"{MAX_PROOF_HASHES} hashes")
        return cls(
            origin=obj["origin"],
            old_size=obj["old_size"],
            new_size=obj["new_size"],
            old_root=_hash(obj["old_root"], f"{what}: old_root"),
            new_root=_hash(obj["new_root"], f"{what}: new_root"),
            hashes=tuple(_hash(h, f"{what}: proof[{i}]") for i, h in enumerate(obj["proof"])),
        )


def _hash(value: object, where: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != _HASH_SIZE:
        raise VerificationError(f"{where}: must be a 32-byte hash in base64")
    return raw


def verify_with_proof(
    old_note: str, new_note: str, proof: bytes, trust: Trust, *,
    old_package: str | None = None, new_package: str | None = None,
) -> Consistency:
    """Check two checkpoints and a consistency proof without the log: both notes signed by
    keys bound to their log, of the same origin, and the proof leading from the old root to
    the new. ``old_package``/``new_package``: the package whose receipt, envelope or package
    carried the note; if the vault opened it, its sender is bound to the log it named.

    A rewritten history raises VerificationError: no proof leads from the old root to the
    root of a tree that does not extend it.
    """
    bound = (*trust.package_sender(old_package, old_note),
             *trust.package_sender(new_package, new_note))
    if _origin_line(old_note) != _origin_line(new_note):
        bound = ()  # refused below: of different logs
    old, _ = open_trusted_checkpoint(old_note, trust, "old checkpoint", bound=bound)
    new, _ = open_trusted_checkpoint(new_note, trust, "new checkpoint", bound=bound)
    parsed = ConsistencyProof.from_bytes(proof)
    if old.origin != new.origin:
        raise VerificationError(f"new checkpoint: origin {new.origin} is not the old "
                                f"checkpoint's {old.origin}; they are of different logs")
    if parsed.origin != old.origin:
        raise VerificationError(f"consistency proof: is for log {parsed.origin}, the "
                                f"checkpoints are of {old.origin}")
    if old.size > new.size:
        raise UsageError("custody consistency: OLD is larger than NEW; swap them")
    if (parsed.old_size, parsed.new_size) != (old.size, new.size):
        raise VerificationError(
            f"consistency proof: is from size {parsed.old_size} to {parsed.new_size}, the "
            f"checkpoints are at {old.size} and {new.size}; ask for the proof between them"
        )
    for which, stated, signed in (("old", parsed.old_root, old.root_hash),
                                  ("new", parsed.new_root, new.root_hash)):
        if stated != signed:
            raise VerificationError(f"consistency proof: {which}_root differs from the "
                                    f"{which} checkpoint's signed root")
    if old.size == 0:
        if old.root_hash != EMPTY_ROOT:
            raise VerificationError("old checkpoint: size 0 with a root other than empty")
        if parsed.hashes:
            raise VerificationError("consistency proof: must be empty from the empty tree")
    else:
        verify_consistency(old.size, new.size, parsed.hashes, old.root_hash, new.root_hash)
    return Consistency(
        origin=old.origin,
        old_size=old.size,
        new_size=new.size,
        old_root=base64.b64encode(old.root_hash).decode(),
        new_root=base64.b64encode(new.root_hash).decode(),
        proof=tuple(base64.b64encode(h).decode() for h in parsed.hashes),
        status="consistent",
    )
