"""Fuzzing every parser that reads untrusted bytes: only a VaultError may escape.

The normal suite runs ``EVAULT_FUZZ_EXAMPLES`` examples per target (default 30, a few
seconds in all); ``make fuzz`` sets it to 2000 for the long run. Each target starts from a
valid document made with fixed test keys and mutates it (bytes, lines or JSON values), so
the mutations get past the first checks and reach the deep ones. Where a mutated input is
accepted, the test also checks it means what the original meant (a signature that still
verifies must be over the same content), so a parser that accepts too much fails too.

Already fuzzed elsewhere and not repeated here: the envelope, statement, receipt and
acknowledgement parsers on their own (tests/test_package_format.py), the package container
and ``detect`` on package bytes (ditto), whole-bag byte mutations and manifest path
encoding (tests/test_bagit.py).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import os
import tarfile
import tempfile
import textwrap
from collections.abc import Callable
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_PASSPHRASE, json_paths
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vault.crypto import secretbox, sshsig
from vault.crypto.age import AgeIdentity, AgeReader, AgeRecipient, encrypt
from vault.crypto.keys import SigningKey, VerifyKey
from vault.custody.cosignature import cosign
from vault.custody.events import Event
from vault.custody.merkle import (
    EMPTY_ROOT,
    consistency_proof,
    leaf_hash,
    root_of,
    verify_consistency,
)
from vault.custody.note import Checkpoint, NoteSigner, NoteVerifier, open_checkpoint, open_note
from vault.errors import KeyStoreError, VaultError
from vault.formats import approval as afmt
from vault.formats import kinds
from vault.formats import package as fmt
from vault.formats import receipt as rfmt
from vault.formats.bagit import BagWriter, read_bag
from vault.formats.canonical import canonical_json
from vault.formats.card import load_card, make_card
from vault.keystore import KEY_FILE, FileKeyStore
from vault.service.audit import ConsistencyProof
from vault.service.export import load_plan
from vault.service.intake import IntakeFields, rows_from_manifest
from vault.store.vaultdir import VaultConfig

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

EXAMPLES = int(os.environ.get("EVAULT_FUZZ_EXAMPLES", "30"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)

# Fixed test keys: the corpus and these fuzz targets are reproducible byte for byte.
SIGNER = SigningKey.from_seed(bytes(range(32)))
OFFICER = SigningKey.from_seed(bytes(range(32, 64)))
AGE_ID = AgeIdentity.from_raw(bytes(range(64, 96)))
AGE_OTHER = AgeIdentity.from_raw(bytes(range(96, 128)))
ORIGIN = "evault/0123456789abcdef0123456789abcdef"
NOTE_SIGNER = NoteSigner(ORIGIN, SIGNER)
NOTE = NOTE_SIGNER.sign(Checkpoint(ORIGIN, 5, b"\x07" * 32).to_text())
PLAINTEXT = bytes(range(256)) * 300  # two age chunks


def only_vault_errors(call: Callable[[], Any]) -> Any:
    """Run ``call``; a VaultError is a clean refusal (None), anything else fails the test."""
    try:
        return call()
    except VaultError:
        return None


# ----------------------------------------------------------------------------- mutations

SPECIAL = [b"\x00", b"\n", b"\r\n", b"\xff", b" ", b"=", b"-", b"\\", b'"', b"\xe2\x80\x94 ",
           b"\t", b"9" * 25, b"A" * 300]


@st.composite
def byte_mutations(draw: st.DrawFn, base: bytes, max_ops: int = 4) -> bytes:
    """``base`` with 1..max_ops flips, deletions, insertions, repeats or a truncation."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, max_ops))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "delete", "insert", "special", "truncate", "repeat"]))
        if op == "flip":
            data[i] ^= draw(st.integers(1, 255))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 64))]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "special":
            data[i:i] = draw(st.sampled_from(SPECIAL))
        elif op == "truncate":
            del data[i:]
        else:
            data[i:i] = data[i : i + draw(st.integers(1, 64))]
    return bytes(data)


@st.composite
def line_mutations(draw: st.DrawFn, base: str) -> str:
    """``base`` with whole lines deleted, repeated, swapped or replaced by odd text."""
    lines = base.split("\n")
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "repeat", "swap", "replace", "long", "append"]))
        if op == "delete" and len(lines) > 1:
            del lines[i]
        elif op == "repeat":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "replace":
            lines[i] = draw(st.text(max_size=40))
        elif op == "long":
            lines[i] = lines[i] + draw(st.sampled_from(["A", "=", "0", "[", "{", ","])) * 5000
        else:
            lines[i] = lines[i] + draw(st.text(max_size=8))
    return "\n".join(lines)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
    | st.text(max_size=20) | st.sampled_from(["", "EV-0000000000A1", "PKG-0123456789AB",
                                              "SHA256:" + "A" * 43, "0" * 64, "data/../x",
                                              "2026-11-28T09:30:00Z", "\u2028", "\x00"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=6,
)


@st.composite
def json_mutations(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` (a JSON object) with values replaced, removed or added, re-serialised."""
    obj = json.loads(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = json_paths(obj)[1:]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = obj
        for key in path[:-1]:
            parent = parent[key]
        op = draw(st.sampled_from(["replace", "delete", "add", "nest"]))
        if op == "replace":
            parent[path[-1]] = draw(JSON_VALUES)
        elif op == "delete":
            del parent[path[-1]]
        elif op == "nest":
            parent[path[-1]] = json.loads("[" * 50 + "]" * 50)
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(JSON_VALUES)
        else:
            parent.append(draw(JSON_VALUES))
    canonical = draw(st.booleans())
    text = json.dumps(obj, sort_keys=canonical, ensure_ascii=not canonical,
                      separators=(",", ":") if canonical else (", ", ": "))
    return text.encode("utf-8", "surrogatepass")


def bytes_inputs(base: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(byte_mutations(base), st.binary(max_size=300))


def text_inputs(base: str) -> st.SearchStrategy[str]:
    return st.one_of(
        line_mutations(base),
        byte_mutations(base.encode()).map(lambda b: b.decode("utf-8", "replace")),
        st.text(max_size=200),
    )


def json_inputs(base: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(byte_mutations(base), json_mutations(base), st.binary(max_size=100))


# ----------------------------------------------------------------------------- age


def _age_file(armor: bool = False) -> bytes:
    out = io.BytesIO()
    encrypt(io.BytesIO(PLAINTEXT), out, [AGE_OTHER.recipient, AGE_ID.recipient], armor=armor)
    return out.getvalue()


AGE_BINARY = _age_file()
AGE_ARMORED = _age_file(armor=True)
AGE_HEADER_END = AGE_BINARY.index(b"\n---") + 1


@st.composite
def age_header_mutations(draw: st.DrawFn) -> bytes:
    """Mutate only the text header (stanza lines), keeping the payload: the header grammar,
    the stanza rules and the HMAC are what gets exercised."""
    header = AGE_BINARY[:AGE_HEADER_END].decode("ascii")
    mutated = draw(line_mutations(header)).encode("utf-8", "replace")
    stanza = draw(st.sampled_from([
        b"", b"-> X25519 AAAA\nAAAA\n", b"-> grease " + b"x" * 300 + b"\n\n",
        b"-> scrypt c2FsdA 10\nAAAA\n", b"-> \n", b"->  X25519\n",
        b"-> X25519 " + b"A" * 43 + b"\n",
    ]))
    at = mutated.find(b"\n") + 1
    return mutated[:at] + stanza + mutated[at:] + AGE_BINARY[AGE_HEADER_END:]


def _decrypt(data: bytes) -> bytes:
    reader = AgeReader(io.BytesIO(data), [AGE_ID])
    out = bytearray()
    while chunk := reader.read(40_000):
        out += chunk
    return bytes(out)


@FUZZ
@given(st.one_of(bytes_inputs(AGE_BINARY), bytes_inputs(AGE_ARMORED), age_header_mutations()))
def test_age_reader(data: bytes) -> None:
    plain = only_vault_errors(lambda: _decrypt(data))
    if plain is not None:
        assert plain == PLAINTEXT  # whatever is accepted decrypts to the sealed content


@FUZZ
@given(st.one_of(text_inputs(AGE_ID.encode()), text_inputs(str(AGE_ID.recipient))))
def test_age_key_strings(text: str) -> None:
    identity = only_vault_errors(lambda: AgeIdentity.parse(text))
    if identity is not None:
        assert identity.raw() == AGE_ID.raw()
    recipient = only_vault_errors(lambda: AgeRecipient.parse(text))
    if recipient is not None:
        assert str(recipient) == str(AGE_ID.recipient)


# ----------------------------------------------------------------------------- sshsig

MESSAGE = b"fictional receipt bytes\n"
SIGNATURE = sshsig.sign(SIGNER, MESSAGE, rfmt.RECEIPT_NAMESPACE)
SIG_BLOB = base64.b64decode("".join(SIGNATURE.strip().splitlines()[1:-1]))


def _armor(blob: bytes) -> str:
    body = "\n".join(textwrap.wrap(base64.b64encode(blob).decode(), 70))
    return f"-----BEGIN SSH SIGNATURE-----\n{body}\n-----END SSH SIGNATURE-----\n"


@FUZZ
@given(st.one_of(text_inputs(SIGNATURE), byte_mutations(SIG_BLOB, 3).map(_armor)))
def test_sshsig_parse_and_verify(armored: str) -> None:
    only_vault_errors(lambda: sshsig.parse(armored))
    signer = only_vault_errors(
        lambda: sshsig.verify(armored, MESSAGE, rfmt.RECEIPT_NAMESPACE, trusted=[SIGNER.public])
    )
    assert signer in (None, SIGNER.public)


ALLOWED = (
    f'registry-office namespaces="evault-envelope,evault-receipt" {SIGNER.public.openssh()}\n'
    f'icc-officer,*@icc valid-after="20260101",valid-before="20270101Z" '
    f"{OFFICER.public.openssh()} comment\n"
    "# a comment line\n"
)


@FUZZ
@given(text_inputs(ALLOWED))
def test_allowed_signers(text: str) -> None:
    entries = only_vault_errors(lambda: sshsig.parse_allowed_signers(text))
    if entries is None:
        return
    # What is accepted is what the file says: written back out it reads as the same
    # entries (principals, key, namespaces, times), and each one's check is a clean answer.
    assert sshsig.parse_allowed_signers(sshsig.format_allowed_signers(entries)) == entries
    assert len(entries) <= text.count("\n") + 1
    for entry in entries:
        only_vault_errors(lambda e=entry: e.check(namespace="evault-receipt"))  # type: ignore[misc]


@FUZZ
@given(text_inputs(SIGNER.public.openssh("registry-office")))
def test_openssh_public_key_line(line: str) -> None:
    key = only_vault_errors(lambda: VerifyKey.from_openssh(line))
    assert key is None or len(key.raw) == 32


# ----------------------------------------------------------------------------- signed notes


@FUZZ
@given(st.one_of(text_inputs(NOTE), bytes_inputs(NOTE.encode())))
def test_signed_checkpoint_note(note: str | bytes) -> None:
    verifier = NOTE_SIGNER.verifier()
    opened = only_vault_errors(lambda: open_note(note, [verifier]))
    if opened is not None:
        assert opened.text == Checkpoint(ORIGIN, 5, b"\x07" * 32).to_text()
    result = only_vault_errors(lambda: open_checkpoint(note, [verifier]))
    if result is not None:
        assert result[0] == Checkpoint(ORIGIN, 5, b"\x07" * 32)


@FUZZ
@given(st.one_of(text_inputs(Checkpoint(ORIGIN, 12345, EMPTY_ROOT, ("ext",)).to_text()),
                 text_inputs(NOTE_SIGNER.vkey())))
def test_checkpoint_text_and_verifier_key(text: str) -> None:
    checkpoint = only_vault_errors(lambda: Checkpoint.from_text(text))
    if checkpoint is not None:
        assert checkpoint.to_text() == text  # one tree head, one text
    only_vault_errors(lambda: NoteVerifier.parse(text))


# ----------------------------------------------------------------------------- contact cards

CARD = make_card("fuzz-office", SIGNER, str(AGE_ID.recipient), created_at="2026-11-28T09:30:00Z",
                 org="Fictional Ministry", email="registry@example.org").encode()


@FUZZ
@given(json_inputs(CARD))
def test_contact_card(data: bytes) -> None:
    card = only_vault_errors(lambda: load_card(data))
    if card is not None:  # the self-signature covers every field
        assert (card.name, card.fingerprint, card.age_recipient, card.org) == (
            "fuzz-office", SIGNER.public.fingerprint, str(AGE_ID.recipient), "Fictional Ministry")


# ----------------------------------------------------------------------------- signed documents

PARTY = fmt.Party("registry-office", SIGNER.public.fingerprint)
ITEMS = (rfmt.ReceiptItem("EV-0000000000A1", 1234, "a" * 64),)
RECEIPT = rfmt.SharingReceipt(
    receipt_id="RCP-0123456789AB", package_id="PKG-0123456789AB", body="ICC-OTP", sender=PARTY,
    recipients=(OFFICER.public.fingerprint,), items=ITEMS, envelope_sha256="c" * 64,
    payload_sha256="d" * 64, reference="OTP-CR-2026/114", reference_sha256=None,
    sent_at="2026-11-28T09:30:00Z", checkpoint=NOTE,
)
ACK = rfmt.Acknowledgement(
    package_id="PKG-0123456789AB", body="ICC-OTP",
    recipient=fmt.Party("icc-officer", OFFICER.public.fingerprint), envelope_sha256="c" * 64,
    statement_sha256="e" * 64, items=ITEMS, received_at="2026-11-29T10:00:00Z", checkpoint=NOTE,
    cosigned_checkpoint=cosign(NOTE, "evault-witness/ICC-OTP", OFFICER, 1796547600),
)
RECEIPT_BYTES = RECEIPT.to_bytes()
RECEIPT_SIG = rfmt.sign_document(RECEIPT_BYTES, SIGNER, rfmt.RECEIPT_NAMESPACE)
ACK_BYTES = ACK.to_bytes()
ACK_SIG = rfmt.sign_document(ACK_BYTES, OFFICER, rfmt.ACK_NAMESPACE)
STATEMENT = fmt.Statement(
    package_id="PKG-0123456789AB", body="ICC-OTP",
    recipients=(fmt.RecipientKey(OFFICER.public.fingerprint, str(AGE_OTHER.recipient)),),
    escrow=fmt.RecipientKey(SIGNER.public.fingerprint, str(AGE_ID.recipient)), sender=PARTY,
    created_at="2026-11-28T09:30:00Z",
    items=(fmt.StatementItem("EV-0000000000A1", "data/EV-0000000000A1/a.txt", 5, "a" * 64),),
    tagmanifest_sha256="b" * 64,
)
STATEMENT_BYTES, STATEMENT_SIG = fmt.sign_statement(STATEMENT, SIGNER)


@FUZZ
@given(st.one_of(
    st.tuples(json_inputs(RECEIPT_BYTES), st.just(RECEIPT_SIG)),
    st.tuples(st.just(RECEIPT_BYTES), text_inputs(RECEIPT_SIG)),
))
def test_verify_receipt(doc: tuple[bytes, str]) -> None:
    data, sig = doc
    parsed = only_vault_errors(lambda: rfmt.verify_receipt(data, sig, [SIGNER.public]))
    assert parsed in (None, RECEIPT)
    only_vault_errors(lambda: kinds.detect(data))


@FUZZ
@given(st.one_of(
    st.tuples(json_inputs(ACK_BYTES), st.just(ACK_SIG)),
    st.tuples(st.just(ACK_BYTES), text_inputs(ACK_SIG)),
))
def test_verify_ack(doc: tuple[bytes, str]) -> None:
    data, sig = doc
    parsed = only_vault_errors(lambda: rfmt.verify_ack(data, sig, [OFFICER.public]))
    assert parsed in (None, ACK)
    only_vault_errors(lambda: kinds.detect(data))


@FUZZ
@given(st.one_of(
    st.tuples(json_inputs(STATEMENT_BYTES), st.just(STATEMENT_SIG)),
    st.tuples(st.just(STATEMENT_BYTES), text_inputs(STATEMENT_SIG)),
))
def test_verify_statement(doc: tuple[bytes, str]) -> None:
    data, sig = doc
    parsed = only_vault_errors(lambda: fmt.verify_statement(data, sig, [SIGNER.public]))
    assert parsed in (None, STATEMENT)


APPROVAL_ITEMS = (*ITEMS, rfmt.ReceiptItem("EV-0000000000B2", 99, "b" * 64))
REQUEST = afmt.ApprovalRequest(
    request_id="APR-0123456789AB", body="ICC-OTP", items=APPROVAL_ITEMS,
    selection_sha256=afmt.selection_digest("ICC-OTP", APPROVAL_ITEMS),
    purpose="Disclosure under OTP-CR-2026/114", requester=PARTY, origin=ORIGIN,
    created_at="2026-11-27T09:00:00Z",
)
REQUEST_BYTES = REQUEST.to_bytes()
REQUEST_SIG = afmt.sign_document(REQUEST_BYTES, SIGNER, afmt.APPROVAL_REQUEST_NAMESPACE)
APPROVAL = afmt.Approval(
    request_id="APR-0123456789AB", request_sha256=hashlib.sha256(REQUEST_BYTES).hexdigest(),
    body="ICC-OTP", selection_sha256=REQUEST.selection_sha256, decision=afmt.REFUSE,
    reason="Item EV-0000000000B2 names a protected witness",
    approver=fmt.Party("defense-legal", OFFICER.public.fingerprint),
    signed_at="2026-11-27T11:00:00Z",
)
APPROVAL_BYTES = APPROVAL.to_bytes()
APPROVAL_SIG = afmt.sign_document(APPROVAL_BYTES, OFFICER, afmt.APPROVAL_NAMESPACE)


@FUZZ
@given(st.one_of(
    st.tuples(json_inputs(REQUEST_BYTES), st.just(REQUEST_SIG)),
    st.tuples(st.just(REQUEST_BYTES), text_inputs(REQUEST_SIG)),
))
def test_verify_approval_request(doc: tuple[bytes, str]) -> None:
    data, sig = doc
    parsed = only_vault_errors(lambda: afmt.verify_request(data, sig, [SIGNER.public]))
    assert parsed in (None, REQUEST)
    # Unsigned, a mutation may be accepted, but only as a request that holds its own rules:
    # the one byte string of a document, whose digest is that of its body and items.
    request = only_vault_errors(lambda: afmt.ApprovalRequest.from_bytes(data))
    if request is not None:
        assert request.to_bytes() == data
        assert request.selection_sha256 == afmt.selection_digest(request.body, request.items)
        assert request.items and len({i.id for i in request.items}) == len(request.items)
        assert "\n" not in request.purpose and " " not in request.origin
        assert (request.selection_sha256 == REQUEST.selection_sha256) == (
            request.body == REQUEST.body
            and {(i.id, i.sha256) for i in request.items}
            == {(i.id, i.sha256) for i in REQUEST.items})
    detected = only_vault_errors(lambda: kinds.detect(data))
    assert request is None or detected == "approval-request"


@FUZZ
@given(st.one_of(
    st.tuples(json_inputs(APPROVAL_BYTES), st.just(APPROVAL_SIG)),
    st.tuples(st.just(APPROVAL_BYTES), text_inputs(APPROVAL_SIG)),
))
def test_verify_approval(doc: tuple[bytes, str]) -> None:
    data, sig = doc
    parsed = only_vault_errors(lambda: afmt.verify_approval(data, sig, [OFFICER.public]))
    assert parsed in (None, APPROVAL)
    approval = only_vault_errors(lambda: afmt.Approval.from_bytes(data))
    if approval is not None:  # a decision always means one thing
        assert approval.to_bytes() == data
        assert approval.decision in afmt.DECISIONS
        if approval.decision == afmt.APPROVE:
            assert approval.reason is None
        else:
            assert approval.reason and "\n" not in approval.reason
    detected = only_vault_errors(lambda: kinds.detect(data))
    assert approval is None or detected == "approval"


# ----------------------------------------------------------------------------- bag tag files


def _bag_members() -> dict[str, bytes]:
    raw = io.BytesIO()
    bag = BagWriter(raw, "bag", bagging_date=date(2026, 11, 28))
    bag.add_payload("a.txt", io.BytesIO(b"alpha"), 5)
    bag.add_payload("b dir/%b\n.txt", io.BytesIO(b"beta"), 4)
    bag.add_tag_file("evault/items.json", b"[]")
    bag.finish([("Source-Organization", "Fictional Ministry"), ("EVault-Body", "ICC-OTP")])
    bag.close()
    with tarfile.open(fileobj=io.BytesIO(raw.getvalue())) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()  # type: ignore[union-attr]
                if m.isfile()}


BAG = _bag_members()
TAG_FILES = sorted(n for n in BAG if not n.startswith("bag/data/"))


def _tar(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@st.composite
def tag_file_mutations(draw: st.DrawFn) -> bytes:
    """A well-formed tar whose one tag file (bagit.txt, bag-info.txt, a manifest) is mutated:
    the tar layer passes and the BagIt parsers get the odd text."""
    name = draw(st.sampled_from(TAG_FILES))
    members = dict(BAG)
    text = members[name].decode("utf-8")
    mutated = draw(st.one_of(line_mutations(text).map(str.encode), byte_mutations(members[name])))
    members[name] = mutated
    return _tar(members)


@FUZZ
@given(tag_file_mutations())
def test_bag_tag_files(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        dest = Path(folder)
        contents = only_vault_errors(lambda: read_bag(io.BytesIO(data), root="bag",
                                                      extract_to=dest))
        if contents is None:
            assert list(dest.iterdir()) == []  # a refusal leaves nothing behind


# ----------------------------------------------------------------------------- custody events

EVENT = Event(
    log=ORIGIN, seq=7, time=datetime(2026, 11, 28, 9, 30, tzinfo=timezone.utc),
    actor=SIGNER.public.fingerprint, action="item.ingested", subject="EV-0000000000A1",
    details={"case": "UA-2026-0042", "size": 5, "labels": []}, digests={"sha256": "a" * 64},
).encode()


@FUZZ
@given(json_inputs(EVENT))
def test_custody_event_decode(data: bytes) -> None:
    event = only_vault_errors(lambda: Event.decode(data))
    if event is not None:
        assert event.encode() == data  # exactly canonical bytes only


# A real proof from the tree of 3 leaves to the tree of 7, so mutations reach the check.
PROOF_LEAVES = [leaf_hash(bytes([n])) for n in range(7)]
PROOF_TREES = (3, 7, root_of(PROOF_LEAVES[:3]), root_of(PROOF_LEAVES),
               tuple(consistency_proof(PROOF_LEAVES, 3, 7)))
PROOF = json.dumps({"type": "evault-consistency-proof", "version": 1, "origin": ORIGIN,
                    "old_size": 3, "new_size": 7,
                    "old_root": base64.b64encode(PROOF_TREES[2]).decode(),
                    "new_root": base64.b64encode(PROOF_TREES[3]).decode(),
                    "proof": [base64.b64encode(h).decode() for h in PROOF_TREES[4]]}).encode()


@FUZZ
@given(json_inputs(PROOF))
def test_consistency_proof_file(data: bytes) -> None:
    proof = only_vault_errors(lambda: ConsistencyProof.from_bytes(data))
    if proof is None:
        return
    # Accepted: the fields are the file's own, decoded, nothing defaulted or coerced.
    obj = json.loads(data)
    assert (proof.origin, proof.old_size, proof.new_size) == (
        obj["origin"], obj["old_size"], obj["new_size"])
    assert (proof.old_root, proof.new_root, proof.hashes) == (
        base64.b64decode(obj["old_root"]), base64.b64decode(obj["new_root"]),
        tuple(base64.b64decode(h) for h in obj["proof"]))
    # And a proof that still checks proves the original pair of trees (or two equal ones,
    # which needs no hashes).
    checked = only_vault_errors(lambda: verify_consistency(
        proof.old_size, proof.new_size, proof.hashes, proof.old_root, proof.new_root) or True)
    if checked:
        trees = (proof.old_size, proof.new_size, proof.old_root, proof.new_root, proof.hashes)
        assert trees == PROOF_TREES or (
            proof.old_size == proof.new_size and proof.old_root == proof.new_root
            and proof.hashes == ())


# ----------------------------------------------------------------------------- key file

# The key file as the vault reads it: FileKeyStore (vault/keystore.py) over secretbox's
# box_params and open_with_key, then the JSON inside. A fixed salt and the lowest cost.
KEY_SALT = bytes(range(16))
KEY_DERIVED = secretbox.derive_key(TEST_PASSPHRASE, KEY_SALT, 10)
KEY_NAME = "identity:" + SIGNER.public.fingerprint
KEY_SECRET = b"\x01" * 32
KEY_JSON = json.dumps({KEY_NAME: base64.b64encode(KEY_SECRET).decode(),
                       "storage:vault": base64.b64encode(b"\x02" * 32).decode()},
                      sort_keys=True).encode()
KEY_BOX = secretbox.seal_with_key(KEY_JSON, KEY_DERIVED, KEY_SALT, 10)


def _derive_for_fuzzing(passphrase: str, salt: bytes, work_factor: int) -> bytes:
    """scrypt for the original header; a cheap stand-in for a mutated one, whose cost byte
    may ask for 2**22 (4 GiB): the header is authenticated, so any key fails it alike."""
    if (passphrase, salt, work_factor) == (TEST_PASSPHRASE, KEY_SALT, 10):
        return KEY_DERIVED
    return hashlib.sha256(b"%d" % work_factor + salt + passphrase.encode()).digest()


def _read_key_file(folder: Path, box: bytes, name: str) -> bytes:
    (folder / KEY_FILE).write_bytes(box)
    return FileKeyStore(folder, None, "fuzz").get(name)


@settings(FUZZ, max_examples=max(10, EXAMPLES // 2))
@given(st.one_of(
    bytes_inputs(KEY_BOX).map(lambda box: (box, None)),
    json_inputs(KEY_JSON).map(lambda text: (None, text)),
))
def test_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  case: tuple[bytes | None, bytes | None]) -> None:
    """The file mutated (the passphrase's holder made none of it), or the JSON inside mutated
    and sealed properly (as a damaged write would leave it): a KeyStoreError, or the key."""
    monkeypatch.setattr("vault.crypto.secretbox.derive_key", _derive_for_fuzzing)
    box, text = case
    if box is None:
        assert text is not None
        box = secretbox.seal_with_key(text, KEY_DERIVED, KEY_SALT, 10)
    try:
        secret = _read_key_file(tmp_path, box, KEY_NAME)
    except KeyStoreError:
        return
    if text is None:
        assert secret == KEY_SECRET  # the file is authenticated: nothing else opens
    else:
        assert secret == base64.b64decode(json.loads(text)[KEY_NAME], validate=True)


def test_key_file_base_opens(tmp_path: Path) -> None:
    # The base every mutation starts from opens, or the target above only tests refusals.
    assert _read_key_file(tmp_path, KEY_BOX, KEY_NAME) == KEY_SECRET


# ----------------------------------------------------------------------------- input files

CSV_MANIFEST = (
    "path,case,title,description,source,collected_at,location,tags,labels\n"
    'a.txt,UA-2026-0042,Alpha,"with, comma",field office,2026-01-02T03:04:05Z,town,k=v;w=x,'
    "restricted-icc\n"
    "b.txt,UA-2026-0043,,,,,,,\n"
)
JSONL_MANIFEST = (
    json.dumps({"path": "a.txt", "case": "UA-2026-0042", "tags": {"k": "v"},
                "labels": ["a", "b"], "collected_at": "2026-01-02T03:04:05Z"}) + "\n"
    + json.dumps({"path": "b.txt", "title": "Bravo"}) + "\n"
)


@pytest.fixture(scope="module")
def manifest_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("manifests")
    (folder / "a.txt").write_bytes(b"alpha")
    (folder / "b.txt").write_bytes(b"bravo")
    return folder


@pytest.mark.parametrize("suffix,base", [(".csv", CSV_MANIFEST), (".jsonl", JSONL_MANIFEST)])
def test_ingest_manifest_readers(manifest_dir: Path, suffix: str, base: str) -> None:
    @FUZZ
    @given(st.one_of(text_inputs(base),
                     byte_mutations(base.encode()).map(lambda b: b.decode("latin-1"))))
    def run(text: str) -> None:
        path = manifest_dir / f"manifest{suffix}"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        defaults = IntakeFields(case="UA-2026-0042")
        rows = only_vault_errors(lambda: rows_from_manifest(path, defaults))
        for row in rows or []:
            assert row.path.parent == manifest_dir or row.path.is_absolute()

    run()


PLAN = """\
[defaults]
case = "UA-2026-0042"
purpose = "Mutual legal assistance (fictional)"

[bodies.ICC-OTP]
label = "restricted-icc"
reference = "OTP-REQ-2026-017"

[bodies.UA-OPG]
items = ["EV-0123456789AB", "EV-0123456789AC"]
tags = { witness = "W-1" }
"""

CONFIG = VaultConfig("0123456789abcdef", None, "file", "Fictional Ministry",
                     {"restricted-icc": ("ICC-OTP",), "no-foreign-release": ()}).to_toml()


def test_plan_and_config_files(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"

    @FUZZ
    @given(st.one_of(text_inputs(PLAN), text_inputs(CONFIG)),
           st.lists(st.sampled_from(["ICC-OTP", "UA-OPG", "X"]), max_size=2))
    def run(text: str, only: list[str]) -> None:
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        plans = only_vault_errors(lambda: load_plan(path, only))
        if plans is not None:
            check_plans_mean_the_file(plans, path, only)
        config = only_vault_errors(lambda: VaultConfig.from_toml(text, path))
        if config is not None:
            check_config_round_trips(config, text, path)

    run()


def check_plans_mean_the_file(plans: list[Any], path: Path, only: list[str]) -> None:
    """An accepted plan is the file's: one plan per ``[bodies.ID]`` (those of ``only``), in
    order, each the body's table over ``[defaults]``, with items or a case."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    defaults, bodies = data.get("defaults", {}), data["bodies"]
    assert [p.body for p in plans] == [b for b in bodies if not only or b in only]
    for plan in plans:
        merged = {**defaults, **bodies[plan.body]}
        assert plan.items == tuple(str(i) for i in merged.get("items", []))
        assert plan.case == (None if plan.items else merged["case"])
        assert plan.items or plan.case
        assert plan.tags == tuple(sorted((str(k), str(v))
                                         for k, v in merged.get("tags", {}).items()))
        for name in ("label", "reference", "purpose"):
            assert getattr(plan, name) == merged.get(name)


def check_config_round_trips(config: VaultConfig, text: str, path: Path) -> None:
    """An accepted config.toml is the file's settings, and the vault writes it back so that
    it reads the same (an empty database or organisation is no setting either way)."""
    data = tomllib.loads(text)
    assert config.vault_id == data["vault_id"]
    assert config.key_storage == data.get("key_storage", "auto")
    assert config.release_rules == {k: tuple(v) for k, v in
                                    data.get("release_rules", {}).items()}
    again = VaultConfig.from_toml(config.to_toml(), path)
    assert again == dataclasses.replace(config, database=config.database or None,
                                        organisation=config.organisation or None)
    assert again.database_url(path.parent) == config.database_url(path.parent)


@pytest.mark.parametrize(
    "call",
    [
        lambda p: load_plan(p),
        lambda p: VaultConfig.from_toml(p.read_text(), p),
        lambda p: rows_from_manifest(p.with_suffix(".jsonl"), IntakeFields(case="X")),
    ],
    ids=["plan", "config", "jsonl-manifest"],
)
def test_deeply_nested_input_is_refused_cleanly(tmp_path: Path, call: Any) -> None:
    """Found by fuzzing: nesting beyond Python's recursion limit raised RecursionError."""
    path = tmp_path / "deep.toml"
    path.write_text("a = " + "[" * 50_000 + "\n")
    path.with_suffix(".jsonl").write_text("[" * 50_000 + "\n")
    with pytest.raises(VaultError):
        call(path)


@pytest.mark.parametrize(
    "name,text",
    [
        ("huge-cell.csv", "path,case\n" + "a" * 200_000 + ",X-1\n"),
        ("nul.csv", "path,case\na\x00b.txt,X-1\n"),
        ("nul.jsonl", '{"path": "a\\u0000b.txt", "case": "X-1"}\n'),
    ],
)
def test_manifest_edge_cases_are_refused_cleanly(tmp_path: Path, name: str, text: str) -> None:
    """Found by fuzzing: csv.Error for a cell over the csv module's limit, ValueError for a
    path with a NUL character."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(VaultError):
        rows_from_manifest(path, None)


def test_canonical_json_helper_is_what_events_use() -> None:
    # The event base above must itself be canonical, or every mutation fails trivially.
    assert canonical_json(json.loads(EVENT)) == EVENT


@pytest.mark.parametrize(("value", "error"), [
    ({"a": [1, {"b": 1.5}]}, "$.a[1].b: float has no canonical JSON form"),
    ({"a": [2**53 + 1]}, "$.a[0]: integer beyond 2**53 has no canonical JSON form"),
    ({"a": {1: "x"}}, "$.a: keys must be strings"),
    ([b"bytes"], "$[0]: bytes has no canonical JSON form"),
])
def test_canonical_json_names_where_a_value_has_no_canonical_form(value: object,
                                                                  error: str) -> None:
    """The fast walk finds the fault, the slow one names it: the same message as before."""
    with pytest.raises(ValueError) as raised:
        canonical_json(value)
    assert str(raised.value) == error


def test_canonical_json_takes_subclasses_of_the_json_types_as_before() -> None:
    import enum

    class Kind(enum.IntEnum):
        ONE = 1

    class Text(str):
        pass

    assert canonical_json({Text("k"): [Kind.ONE, -(2**53), True, None]}) == \
        b'{"k":[1,-9007199254740992,true,null]}'
