"""Package envelopes, statements, receipts and the .evpkg container: bytes on disk."""

from __future__ import annotations

import ast
import base64
import contextlib
import dataclasses
import doctest
import errno
import hashlib
import json
import os
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import json_paths, require_tool
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vault.formats.kinds as kinds_module
import vault.formats.package as package_module
import vault.formats.receipt as receipt_module
from vault.crypto import sshsig
from vault.crypto.age import AgeIdentity
from vault.crypto.keys import SigningKey
from vault.errors import NotFoundError, UsageError, VaultError, VerificationError
from vault.formats.canonical import canonical_json
from vault.formats.card import make_card
from vault.formats.kinds import detect, detect_file
from vault.formats.package import (
    ENVELOPE_NAMESPACE,
    LAYOUTS,
    MEMBERS,
    STATEMENT_NAMESPACE,
    Envelope,
    PackageWriter,
    Party,
    RecipientKey,
    ScannedPackage,
    Statement,
    StatementItem,
    WrittenContainer,
    payload_offset,
    read_package,
    sign_envelope,
    sign_statement,
    verify_envelope,
    verify_statement,
    write_package,
)
from vault.formats.receipt import (
    ACK_NAMESPACE,
    RECEIPT_NAMESPACE,
    Acknowledgement,
    ReceiptItem,
    SharingReceipt,
    reference_digest,
    sign_document,
    verify_ack,
    verify_receipt,
)

MiB = 1024 * 1024
SENDER = SigningKey.from_seed(bytes([1]) * 32)
OFFICER_A = SigningKey.from_seed(bytes([2]) * 32)
OFFICER_B = SigningKey.from_seed(bytes([3]) * 32)
STRANGER = SigningKey.from_seed(bytes([4]) * 32)
AGE_A, AGE_B, AGE_ESCROW = (str(AgeIdentity.generate().recipient) for _ in range(3))
CHECKPOINT = (
    "vault.example/custody\n3\n"
    + base64.b64encode(bytes(32)).decode()
    + "\n\n\u2014 vault.example/custody "
    + base64.b64encode(bytes(68)).decode()
    + "\n"
)
PKG_ID = "PKG-0123456789AB"
EV1, EV2 = "EV-0000000000A1", "EV-0000000000B2"
CREATED = "2026-11-28T09:30:00Z"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sender_party() -> Party:
    return Party("registry-office", SENDER.public.fingerprint)


def body_keys() -> tuple[RecipientKey, ...]:
    return (
        RecipientKey(OFFICER_A.public.fingerprint, AGE_A),
        RecipientKey(OFFICER_B.public.fingerprint, AGE_B),
    )


def escrow_key() -> RecipientKey:
    return RecipientKey(SENDER.public.fingerprint, AGE_ESCROW)


def make_envelope(payload: bytes = b"payload", **changes: Any) -> Envelope:
    fields: dict[str, Any] = {
        "package_id": PKG_ID,
        "sender": sender_party(),
        "body": "ICC-OTP",
        "recipients": body_keys(),
        "escrow": escrow_key(),
        "created_at": CREATED,
        "payload_size": len(payload),
        "payload_sha256": sha(payload),
        "checkpoint": CHECKPOINT,
    }
    return Envelope(**{**fields, **changes})


def make_statement(**changes: Any) -> Statement:
    fields: dict[str, Any] = {
        "package_id": PKG_ID,
        "body": "ICC-OTP",
        "recipients": body_keys(),
        "escrow": escrow_key(),
        "sender": sender_party(),
        "created_at": CREATED,
        "items": (
            StatementItem(EV1, f"data/{EV1}/witness statement (1).pdf", 1234, "a" * 64),
            StatementItem(EV2, f"data/{EV2}/фото.jpg", 0, sha(b"")),
        ),
        "tagmanifest_sha256": "b" * 64,
    }
    return Statement(**{**fields, **changes})


def receipt_items() -> tuple[ReceiptItem, ...]:
    return (ReceiptItem(EV1, 1234, "a" * 64), ReceiptItem(EV2, 0, sha(b"")))


def make_receipt(**changes: Any) -> SharingReceipt:
    fields: dict[str, Any] = {
        "receipt_id": "RCP-0123456789AB",
        "package_id": PKG_ID,
        "body": "ICC-OTP",
        "sender": sender_party(),
        "recipients": (OFFICER_A.public.fingerprint, OFFICER_B.public.fingerprint),
        "items": receipt_items(),
        "envelope_sha256": "c" * 64,
        "payload_sha256": "d" * 64,
        "reference": "OTP-CR-2026/114",
        "reference_sha256": None,
        "sent_at": CREATED,
        "checkpoint": CHECKPOINT,
    }
    return SharingReceipt(**{**fields, **changes})


def make_ack(**changes: Any) -> Acknowledgement:
    fields: dict[str, Any] = {
        "package_id": PKG_ID,
        "body": "ICC-OTP",
        "recipient": Party("icc-officer-a", OFFICER_A.public.fingerprint),
        "envelope_sha256": "c" * 64,
        "statement_sha256": "e" * 64,
        "items": receipt_items(),
        "received_at": "2026-11-29T10:00:00Z",
        "checkpoint": CHECKPOINT,
        "cosigned_checkpoint": CHECKPOINT,
    }
    return Acknowledgement(**{**fields, **changes})


DOCS: dict[str, tuple[Callable[[], Any], Callable[[bytes], Any]]] = {
    "envelope": (make_envelope, Envelope.from_bytes),
    "statement": (make_statement, Statement.from_bytes),
    "receipt": (make_receipt, SharingReceipt.from_bytes),
    "ack": (make_ack, Acknowledgement.from_bytes),
}


def test_module_examples_run() -> None:
    assert doctest.testmod(package_module).failed == 0
    assert doctest.testmod(receipt_module).failed == 0
    assert doctest.testmod(kinds_module).failed == 0


PACKAGE_LAYERS = ["rules", "parties", "strict", "documents", "container"]


def _imports(path: Path, prefix: str) -> set[str]:
    """The modules under ``prefix`` that the file at ``path`` imports names from."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.module.removeprefix(prefix)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(prefix)
    }


def test_package_modules_import_only_the_layers_below_them() -> None:
    root = Path(package_module.__file__).parent
    assert sorted(p.stem for p in root.glob("*.py")) == sorted([*PACKAGE_LAYERS, "__init__"])
    for i, name in enumerate(PACKAGE_LAYERS):
        path = root / f"{name}.py"
        assert ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))), name
        used, below = _imports(path, "vault.formats.package."), set(PACKAGE_LAYERS[:i])
        assert used <= below, f"{name}.py imports {sorted(used - below)}"
        # The package sits below the other formats: none of them is imported here.
        assert not _imports(path, "vault.formats.") - {
            "canonical", "safetar", *(f"package.{n}" for n in PACKAGE_LAYERS)
        }, name
    # Receipts share the rules and readers, not the envelope or the container; what kind a
    # file is sits above every format.
    formats = root.parent
    assert _imports(formats / "receipt.py", "vault.formats.package.") <= {
        "rules", "parties", "strict"
    }
    assert "kinds" not in {*_imports(formats / "receipt.py", "vault.formats."),
                           *_imports(formats / "card.py", "vault.formats.")}


def test_no_module_reaches_into_the_package_modules_private_names() -> None:
    # The shared field rules and readers are public; an underscored name of these modules
    # is theirs alone, imported or reached as an attribute from nowhere else.
    repo = Path(__file__).resolve().parents[1]
    own = repo / "vault" / "formats" / "package"
    paths = [p for d in ("vault", "tests", "benchmarks", "scripts") for p in
             repo.joinpath(d).rglob("*.py")]
    assert repo / "vault" / "formats" / "receipt.py" in paths
    for path in paths:
        text = path.read_text(encoding="utf-8")
        # Only an import naming vault.formats (below) can reach these modules' names.
        if path.parent == own or "vault.formats" not in text:
            continue
        tree = ast.parse(text)
        aliases: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "vault.formats.package"
            ):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"
                aliases.update(a.asname or a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module == "vault.formats":
                aliases.update(a.asname or a.name for a in node.names if a.name == "package")
            elif isinstance(node, ast.Import):
                aliases.update(
                    a.asname for a in node.names
                    if a.asname and a.name.startswith("vault.formats.package")
                )
        reached = sorted(
            f"{node.value.id}.{node.attr}"
            for node in (ast.walk(tree) if aliases else ())
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id in aliases and node.attr.startswith("_")
            and not node.attr.startswith("__")
        )
        assert not reached, f"{path.name} reaches {reached}"


# -- documents -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", DOCS)
def test_document_round_trip(kind: str) -> None:
    make, parse = DOCS[kind]
    doc = make()
    data = doc.to_bytes()
    assert parse(data) == doc
    assert parse(data).to_bytes() == data
    assert canonical_json(json.loads(data)) == data


def test_envelope_json_shape() -> None:
    obj = json.loads(make_envelope().to_bytes())
    assert obj["type"] == "evault-package"
    assert obj["version"] == 1
    assert obj["sender"] == {"name": "registry-office", "fingerprint": SENDER.public.fingerprint}
    assert [k["age_recipient"] for k in obj["recipients"]] == [AGE_A, AGE_B]
    assert make_envelope().all_recipients == (*body_keys(), escrow_key())


def test_receipt_reference_can_be_replaced_by_its_digest() -> None:
    receipt = make_receipt()
    hashed = receipt.with_reference_hashed()
    assert hashed.reference is None
    assert hashed.reference_sha256 == sha(b"OTP-CR-2026/114") == reference_digest("OTP-CR-2026/114")
    assert SharingReceipt.from_bytes(hashed.to_bytes()) == hashed
    assert b"OTP-CR" not in hashed.to_bytes()
    plain = make_receipt(reference=None)
    assert plain.with_reference_hashed() is plain


def test_documents_in_clear_have_no_room_for_content() -> None:
    # The confidentiality rule is structural: no field could hold a title or a file name.
    allowed_text = {"reference"}
    for cls in (Envelope, SharingReceipt, Acknowledgement, Party, RecipientKey, ReceiptItem):
        names = {f.name for f in dataclasses.fields(cls)}
        assert not names & {"title", "description", "name_of_file", "filename", "path", "tags"}
        assert not (names - allowed_text) & {"note", "comment", "text"}
    with pytest.raises(UsageError):
        Party("Witness statement of J. Doe", SENDER.public.fingerprint)
    with pytest.raises(UsageError):
        make_envelope(body="icc prosecutor, re: massacre at X")
    with pytest.raises(UsageError):
        make_envelope(checkpoint="the exhibit titles go here")


MutateFn = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> MutateFn:
    def mutate(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = obj
        for p in parents:
            target = target[int(p)] if p.isdigit() else target[p]
        target[int(last) if last.isdigit() else last] = value

    return mutate


def _delete(key: str) -> MutateFn:
    def mutate(obj: dict[str, Any]) -> None:
        del obj[key]

    return mutate


def _dup_item(obj: dict[str, Any]) -> None:
    obj["items"].append(dict(obj["items"][0]))


def _same_id_other_path(obj: dict[str, Any]) -> None:
    obj["items"][1]["id"] = obj["items"][0]["id"]
    obj["items"][1]["path"] = f"data/{obj['items'][0]['id']}/other.txt"


TIME_FIELD = {"envelope": "created_at", "statement": "created_at", "receipt": "sent_at"}


def generic_refusals(kind: str) -> dict[str, MutateFn]:
    time_field = TIME_FIELD.get(kind, "received_at")
    cases = {
        "unknown-field": _set("title", "Exhibit 7"),
        "missing-field": _delete("package_id"),
        "missing-version": _delete("version"),
        "wrong-version": _set("version", 3),
        "version-true": _set("version", True),
        "version-string": _set("version", "1"),
        "wrong-type": _set("type", "evault-other"),
        "body-lowercase": _set("body", "icc-otp"),
        "bad-id": _set("package_id", "PKG-0123456789AI"),
        "short-id": _set("package_id", "PKG-0123"),
        "bad-time": _set(time_field, "2026-11-28 09:30:00Z"),
        "impossible-date": _set(time_field, "2026-02-30T09:30:00Z"),
        "time-with-offset": _set(time_field, "2026-11-28T09:30:00+00:00"),
    }
    if kind != "envelope":
        cases["bad-item-id"] = _set("items.0.id", "EV-lowercase0000")
    if kind != "statement":
        cases["checkpoint-not-note"] = _set("checkpoint", "just text\n")
        cases["checkpoint-number"] = _set("checkpoint", 3)
    return cases


REFUSALS = [
    *(
        pytest.param(kind, mutate, id=f"{kind}-{name}")
        for kind in DOCS
        for name, mutate in generic_refusals(kind).items()
    ),
    # envelope
    pytest.param("envelope", _set("payload_sha256", "A" * 64), id="envelope-hex-uppercase"),
    pytest.param("envelope", _set("payload_sha256", "a" * 63), id="envelope-hex-short"),
    pytest.param("envelope", _set("payload_size", "5"), id="envelope-size-string"),
    pytest.param("envelope", _set("payload_size", -1), id="envelope-size-negative"),
    pytest.param("envelope", _set("payload_size", True), id="envelope-size-bool"),
    pytest.param("envelope", _set("payload_size", 2**60), id="envelope-size-huge"),
    pytest.param("envelope", _set("sender", "registry"), id="envelope-sender-string"),
    pytest.param("envelope", _set("sender.fingerprint", "SHA256:abc"), id="envelope-bad-fp"),
    pytest.param(
        "envelope", _set("sender.fingerprint", "MD5:" + "a" * 43), id="envelope-fp-prefix"
    ),
    pytest.param("envelope", _set("sender.name", "Jane Doe"), id="envelope-sender-free-text"),
    pytest.param("envelope", _set("sender.extra", 1), id="envelope-sender-unknown-field"),
    pytest.param("envelope", _set("recipients", []), id="envelope-no-recipients"),
    pytest.param("envelope", _set("recipients", {}), id="envelope-recipients-object"),
    pytest.param(
        "envelope", _set("recipients.0.age_recipient", "age1notakey"), id="envelope-bad-age"
    ),
    pytest.param(
        "envelope", _set("recipients.0.age_recipient", AGE_A.upper()), id="envelope-age-upper"
    ),
    pytest.param(
        "envelope",
        _set("recipients.1.fingerprint", OFFICER_A.public.fingerprint),
        id="envelope-duplicate-recipient",
    ),
    pytest.param(
        "envelope", _set("recipients.1.age_recipient", AGE_A), id="envelope-duplicate-age-key"
    ),
    # statement
    pytest.param("statement", _dup_item, id="statement-duplicate-item"),
    pytest.param("statement", _same_id_other_path, id="statement-duplicate-id"),
    pytest.param("statement", _set("items", []), id="statement-no-items"),
    pytest.param("statement", _set("items.0.path", "data/x.pdf"), id="statement-path-outside"),
    pytest.param(
        "statement", _set("items.0.path", f"data/{EV2}/x.pdf"), id="statement-path-other-item"
    ),
    pytest.param("statement", _set("items.0.path", f"data/{EV1}/../x"), id="statement-path-dotdot"),
    pytest.param("statement", _set("items.0.path", f"data/{EV1}/"), id="statement-path-empty"),
    pytest.param(
        "statement", _set("items.0.path", f"data/{EV1}/a\u0000b"), id="statement-path-nul"
    ),
    pytest.param("statement", _set("items.0.sha256", "g" * 64), id="statement-bad-hex"),
    pytest.param("statement", _set("items.0.size", 1.5), id="statement-size-float"),
    pytest.param("statement", _set("tagmanifest_sha256", None), id="statement-null-digest"),
    # receipt
    pytest.param("receipt", _set("reference_sha256", "f" * 64), id="receipt-both-references"),
    pytest.param("receipt", _set("reference", "line\nforged line"), id="receipt-reference-nl"),
    pytest.param("receipt", _set("reference", ""), id="receipt-reference-empty"),
    pytest.param("receipt", _set("reference", "x" * 300), id="receipt-reference-long"),
    pytest.param("receipt", _delete("reference_sha256"), id="receipt-missing-null-field"),
    pytest.param("receipt", _set("receipt_id", "RCP-012345678"), id="receipt-bad-id"),
    pytest.param("receipt", _set("recipients", ["SHA256:abc"]), id="receipt-bad-fp"),
    pytest.param("receipt", _set("recipients", [1]), id="receipt-fp-number"),
    pytest.param(
        "receipt",
        _set("recipients", [OFFICER_A.public.fingerprint] * 2),
        id="receipt-duplicate-recipient",
    ),
    pytest.param("receipt", _dup_item, id="receipt-duplicate-item"),
    pytest.param("receipt", _set("items.0.name", "x.pdf"), id="receipt-item-with-name"),
    # acknowledgement
    pytest.param("ack", _dup_item, id="ack-duplicate-item"),
    pytest.param("ack", _set("statement_sha256", "e" * 65), id="ack-hex-long"),
    pytest.param("ack", _set("recipient", None), id="ack-recipient-null"),
]


@pytest.mark.parametrize(("kind", "mutate"), REFUSALS)
def test_strict_parsing_refuses(kind: str, mutate: MutateFn) -> None:
    make, parse = DOCS[kind]
    obj = json.loads(make().to_bytes())
    mutate(obj)
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    with pytest.raises(VerificationError):
        parse(data)


@pytest.mark.parametrize("kind", DOCS)
@pytest.mark.parametrize(
    "transform",
    [
        pytest.param(lambda d: d + b"\n", id="trailing-newline"),
        pytest.param(lambda d: json.dumps(json.loads(d), indent=1).encode(), id="indented"),
        pytest.param(lambda d: json.dumps(json.loads(d)).encode(), id="unsorted-spaces"),
        pytest.param(lambda d: d.replace(b'"body":', b'"body":"X","body":'), id="duplicate-key"),
        pytest.param(lambda d: d[:-1], id="truncated"),
        pytest.param(lambda d: b"[" + d + b"]", id="array"),
        pytest.param(lambda d: b"\xff" + d, id="not-utf8"),
        pytest.param(lambda d: d[:-1] + b',"x":"' + b"a" * (16 * MiB) + b'"}', id="over-16mib"),
    ],
)
def test_parsing_refuses_non_canonical_or_malformed_bytes(
    kind: str, transform: Callable[[bytes], bytes]
) -> None:
    make, parse = DOCS[kind]
    with pytest.raises(VerificationError):
        parse(transform(make().to_bytes()))


def test_escrow_may_be_one_of_the_body_keys() -> None:
    # A package addressed to the sender's own office: its escrow key is also a body key.
    envelope = make_envelope(recipients=(escrow_key(),))
    assert Envelope.from_bytes(envelope.to_bytes()).all_recipients == (escrow_key(),) * 2


def test_constructors_refuse_bad_arguments_with_usage_error() -> None:
    with pytest.raises(UsageError):
        make_envelope(payload_sha256="XYZ")
    with pytest.raises(UsageError):
        make_envelope(recipients=list(body_keys()))
    with pytest.raises(UsageError):
        make_envelope(format="evault-other")
    with pytest.raises(UsageError):
        RecipientKey(OFFICER_A.public.fingerprint, " " + AGE_A)
    with pytest.raises(UsageError):
        StatementItem(EV1, f"data/{EV2}/x", 1, "a" * 64)
    with pytest.raises(UsageError):
        make_receipt(reference_sha256="f" * 64)
    with pytest.raises(UsageError):
        make_ack(items=())
    with pytest.raises(UsageError):
        sign_envelope(make_envelope(), STRANGER)
    with pytest.raises(UsageError):
        sign_statement(make_statement(), OFFICER_A)


# -- signatures ----------------------------------------------------------------------------


def test_statement_signature() -> None:
    data, signature = sign_statement(make_statement(), SENDER)
    assert verify_statement(data, signature, [SENDER.public]) == make_statement()
    with pytest.raises(VerificationError):
        verify_statement(data, signature, [STRANGER.public])
    with pytest.raises(VerificationError):
        verify_statement(data.replace(b"ICC-OTP", b"ICC-OTQ"), signature, [SENDER.public])
    # Right key, wrong namespace: an envelope signature never passes for a statement.
    other = sshsig.sign(SENDER, data, ENVELOPE_NAMESPACE)
    with pytest.raises(VerificationError):
        verify_statement(data, other, [SENDER.public])
    # A trusted key that is not the sender named inside.
    forged = sshsig.sign(STRANGER, data, STATEMENT_NAMESPACE)
    with pytest.raises(VerificationError, match="sender"):
        verify_statement(data, forged, [SENDER.public, STRANGER.public])


def test_receipt_and_ack_signatures() -> None:
    data = make_receipt().to_bytes()
    signature = sign_document(data, SENDER, RECEIPT_NAMESPACE)
    assert verify_receipt(data, signature, [SENDER.public]) == make_receipt()
    with pytest.raises(VerificationError):
        verify_receipt(data, sign_document(data, SENDER, ACK_NAMESPACE), [SENDER.public])
    with pytest.raises(VerificationError):
        verify_receipt(data, sign_document(data, OFFICER_A, RECEIPT_NAMESPACE), [OFFICER_A.public])
    with pytest.raises(VerificationError):
        verify_receipt(data.replace(b"OTP-CR", b"OTP-CQ"), signature, [SENDER.public])

    ack = make_ack().to_bytes()
    ack_sig = sign_document(ack, OFFICER_A, ACK_NAMESPACE)
    assert verify_ack(ack, ack_sig, [OFFICER_A.public]) == make_ack()
    with pytest.raises(VerificationError):
        verify_ack(ack, sign_document(ack, SENDER, ACK_NAMESPACE), [SENDER.public])
    with pytest.raises(VerificationError):
        verify_ack(ack, ack_sig, [OFFICER_B.public])


# -- the container -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Built:
    path: Path
    payload_path: Path
    payload: bytes
    envelope: Envelope
    envelope_bytes: bytes
    signature: str
    layout: int

    @property
    def envelope_at(self) -> int:
        """Where envelope.json's data starts in the file."""
        if self.layout == 1:
            return 512
        return 512 + padded(len(self.payload)) + 512

    @property
    def end_of_members(self) -> int:
        """Where the end-of-archive marker starts."""
        if self.layout == 1:
            return read_package(self.path).payload_offset + padded(len(self.payload))
        return self.envelope_at + padded(len(self.envelope_bytes)) + 512 + padded(
            len(self.signature))

    def in_order(self, env: bytes, sig: bytes, pay: bytes) -> tuple[bytes, bytes, bytes]:
        """The three members in this package's layout."""
        named = {"envelope.json": env, "envelope.json.sig": sig, "payload.age": pay}
        first, second, third = (named[name] for name in LAYOUTS[self.layout])
        return first, second, third


def build(folder: Path, payload: bytes, layout: int = 2) -> Built:
    folder.mkdir(parents=True, exist_ok=True)
    payload_path = folder / "payload.age"
    payload_path.write_bytes(payload)
    envelope = make_envelope(payload)
    data, signature = sign_envelope(envelope, SENDER)
    target = folder / "package.evpkg"
    write_package(target, data, signature, payload_path, layout=layout)
    return Built(target, payload_path, payload, envelope, data, signature, layout)


@pytest.fixture(scope="module", params=[2, 1], ids=["layout2", "layout1"])
def built(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Built:
    """A package of 5 MiB, in each layout: today's, and the one written before (read still)."""
    return build(tmp_path_factory.mktemp("package"), os.urandom(5 * MiB), request.param)


@pytest.fixture
def copy(built: Built, tmp_path: Path) -> Path:
    target = tmp_path / "copy.evpkg"
    target.write_bytes(built.path.read_bytes())
    return target


def padded(n: int) -> int:
    return -(-n // 512) * 512


def test_write_and_read_back(built: Built) -> None:
    pkg = read_package(built.path)
    assert pkg.layout == built.layout
    assert pkg.envelope_bytes == built.envelope_bytes
    assert pkg.signature == built.signature
    assert pkg.payload_size == len(built.payload)
    raw = built.path.read_bytes()
    assert raw[pkg.payload_offset : pkg.payload_offset + pkg.payload_size] == built.payload
    assert len(raw) % 10240 == 0
    at = built.envelope_at
    assert raw[at : at + len(built.envelope_bytes)] == built.envelope_bytes
    if built.layout == 1:
        # The payload's place depends on the envelope's fields, not on its payload: room
        # for the envelope at its widest payload size, the signature, and five header
        # blocks (envelope, signature, payload's pax header and at least one block of its
        # records, payload's ustar header).
        widest = make_envelope(payload_size=2**53, payload_sha256="f" * 64).to_bytes()
        assert pkg.payload_offset == 5 * 512 + padded(len(widest)) + padded(len(built.signature))
        assert pkg.payload_offset == payload_offset(built.envelope, len(built.signature))
        assert raw[pkg.payload_offset + pkg.payload_size :].count(0) == len(raw) - (
            pkg.payload_offset + pkg.payload_size
        )
    else:
        # The payload first, behind its one ustar header; then envelope.json and
        # envelope.json.sig, each behind its header; then zeros to the end.
        assert pkg.payload_offset == 512
        assert raw[:11] == b"payload.age"
        assert raw[built.end_of_members :].count(0) == len(raw) - built.end_of_members
    with pkg.open_payload() as f:
        assert f.read() == built.payload
        assert f.read() == b""
    assert verify_envelope(pkg, [SENDER.public]) == built.envelope


def stream_package(path: Path, payload: bytes, step: int) -> WrittenContainer:
    """Write ``payload`` through PackageWriter in ``step``-byte writes from two buffers taken
    in turn, each wiped as soon as the contract allows (the next write has returned)."""
    draft = make_envelope(b"", payload_sha256="0" * 64)
    buffers = [bytearray(step), bytearray(step)]
    with open(path, "xb") as out, PackageWriter(out, draft, SENDER, len(payload)) as writer:
        for turn, start in enumerate(range(0, len(payload), step)):
            n = len(payload[start : start + step])
            buffer = buffers[turn % 2]
            buffer[:n] = payload[start : start + n]
            assert writer.write(memoryview(buffer)[:n]) == n
            buffers[(turn + 1) % 2][:] = bytes(step)  # the previous one is free again
        return writer.finish()


@pytest.mark.parametrize("size", [0, 1, 511, 512, 5 * MiB + 3])
def test_package_writer_writes_what_write_package_writes(tmp_path: Path, size: int) -> None:
    payload = os.urandom(size)
    streamed = tmp_path / "streamed.evpkg"
    written = stream_package(streamed, payload, 256 * 1024 + 7)
    envelope, data, signature = written.envelope, written.envelope_bytes, written.signature
    assert envelope == make_envelope(payload)
    assert data == envelope.to_bytes()
    (tmp_path / "payload.age").write_bytes(payload)
    copied = tmp_path / "copied.evpkg"
    write_package(copied, data, signature, tmp_path / "payload.age")
    raw = streamed.read_bytes()
    assert raw == copied.read_bytes()
    # The file's digest was taken as it was written: no read back.
    assert (written.sha256, written.size) == (hashlib.sha256(raw).hexdigest(), len(raw))
    pkg = read_package(streamed)
    assert verify_envelope(pkg, [SENDER.public]) == envelope
    with pkg.open_payload() as f:
        assert f.read() == payload


def test_package_writer_refuses_a_key_that_is_not_the_senders(tmp_path: Path) -> None:
    with open(tmp_path / "p.evpkg", "xb") as out, pytest.raises(UsageError):
        PackageWriter(out, make_envelope(), OFFICER_A, 10)
    assert (tmp_path / "p.evpkg").read_bytes() == b""  # refused before any byte


@pytest.mark.parametrize("stated, given", [(10, 9), (10, 11), (0, 1)])
def test_package_writer_refuses_a_payload_of_another_size(
    tmp_path: Path, stated: int, given: int
) -> None:
    # The size in payload.age's header is written first: a payload that does not come to
    # it is a bug of the caller's sizing, never a package.
    draft = make_envelope(b"", payload_sha256="0" * 64)
    with (open(tmp_path / "p.evpkg", "xb") as out,
          PackageWriter(out, draft, SENDER, stated) as writer,
          pytest.raises(RuntimeError, match="payload")):
        writer.write(bytes(given))
        writer.finish()


@pytest.mark.parametrize("size", [0, 9, 8 * 1024 * MiB - 1, 8 * 1024 * MiB + 1, 10**13])
def test_layout2_headers_state_every_payload_size(tmp_path: Path, size: int) -> None:
    # A sparse file stands in for the payload; from 8 GiB on the size goes in a pax record.
    path, envelope, head = sparse_layout2(tmp_path, size)
    assert head == (512 if size < 8 * 1024**3 else 1536)
    assert path.stat().st_size % 10240 == 0
    pkg = read_package(path)
    assert (pkg.layout, pkg.payload_offset, pkg.payload_size) == (2, head, size)
    assert verify_envelope(pkg, [SENDER.public]) == envelope


@pytest.mark.parametrize("size", [0, 9, 8 * 1024 * MiB + 1, 10**13])
def test_layout1_front_room_fits_every_payload_size(tmp_path: Path, size: int) -> None:
    # Layout 1 (still read, and written by write_package(layout=1)). The envelope is
    # longest at the largest size (2**53); its room is the same for all sizes, and the pax
    # comment takes up the rest (a sparse file stands in for the
    # payload; 8 GiB + 1 needs a pax size record too).
    from vault.formats.package import container

    envelope = make_envelope(payload_size=size, payload_sha256="0" * 64)
    data, signature = sign_envelope(envelope, SENDER)
    room = payload_offset(envelope, len(signature))
    front = container.front_bytes(data, signature.encode(), size, 1_800_000_000, room)
    assert len(front) == room
    path = tmp_path / "sparse.evpkg"
    with open(path, "wb") as f:
        f.write(front)
        f.seek(room + size)
        f.write(container.tail_bytes(room, size))
    pkg = read_package(path)
    assert (pkg.payload_offset, pkg.payload_size) == (room, size)
    assert verify_envelope(pkg, [SENDER.public]) == envelope


def test_open_payload_is_bounded_and_seekable(built: Built) -> None:
    pkg = read_package(built.path)
    with pkg.open_payload() as f:
        assert f.readable()
        assert f.read(10) == built.payload[:10]
        f.seek(-5, os.SEEK_END)
        assert f.read(100) == built.payload[-5:]
        assert f.read(1) == b""
        f.seek(3)
        buf = bytearray(4)
        assert f.readinto(buf) == 4
        assert bytes(buf) == built.payload[3:7]
        assert f.tell() == 7


def test_output_is_deterministic_and_copies_fall_back(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(*args: Any, **kwargs: Any) -> int:
        raise OSError(errno.EXDEV, "cross-device")

    expected = built.path.read_bytes()
    again = tmp_path / "again.evpkg"
    args = (again, built.envelope_bytes, built.signature, built.payload_path)
    write_package(*args, layout=built.layout)
    assert again.read_bytes() == expected
    # copy_file_range unavailable: sendfile; then neither: the 1 MiB read/write loop.
    monkeypatch.setattr(os, "copy_file_range", unavailable, raising=False)
    write_package(*args, layout=built.layout)
    assert again.read_bytes() == expected
    monkeypatch.setattr(os, "sendfile", unavailable, raising=False)
    write_package(*args, layout=built.layout)
    assert again.read_bytes() == expected


def test_write_package_refuses_inconsistent_arguments(built: Built, tmp_path: Path) -> None:
    target = tmp_path / "out.evpkg"
    short = tmp_path / "short.age"
    short.write_bytes(built.payload[:-1])
    with pytest.raises(UsageError):
        write_package(target, built.envelope_bytes, built.signature, short)
    with pytest.raises(UsageError):
        write_package(target, built.envelope_bytes + b" ", built.signature, built.payload_path)
    stranger_sig = sshsig.sign(STRANGER, built.envelope_bytes, ENVELOPE_NAMESPACE)
    with pytest.raises(UsageError):
        write_package(target, built.envelope_bytes, stranger_sig, built.payload_path)
    wrong_ns = sshsig.sign(SENDER, built.envelope_bytes, STATEMENT_NAMESPACE)
    with pytest.raises(UsageError):
        write_package(target, built.envelope_bytes, wrong_ns, built.payload_path)
    with pytest.raises(NotFoundError):
        write_package(target, built.envelope_bytes, built.signature, tmp_path / "missing")
    with pytest.raises(UsageError, match="layout"):
        write_package(target, built.envelope_bytes, built.signature, built.payload_path,
                      layout=3)


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_tampered_envelope_fails_its_signature(built: Built, copy: Path) -> None:
    flip(copy, built.envelope_at + 40)
    pkg = read_package(copy)
    with pytest.raises(VerificationError, match=PKG_ID):
        verify_envelope(pkg, [SENDER.public])


def test_tampered_signature_fails(built: Built, copy: Path) -> None:
    flip(copy, built.envelope_at + padded(len(built.envelope_bytes)) + 512 + 120)
    with pytest.raises(VerificationError):
        verify_envelope(read_package(copy), [SENDER.public])


def test_untrusted_signer_fails(built: Built) -> None:
    with pytest.raises(VerificationError):
        verify_envelope(read_package(built.path), [STRANGER.public])


def test_tampered_payload_is_caught_by_its_digest(built: Built, copy: Path) -> None:
    pkg = read_package(built.path)
    flip(copy, pkg.payload_offset + len(built.payload) // 2)
    tampered = read_package(copy)
    envelope = verify_envelope(tampered, [SENDER.public])  # the outside is intact
    h = hashlib.sha256()
    with tampered.open_payload() as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    assert h.hexdigest() != envelope.payload_sha256


def member(
    name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, pax: dict[str, str] | None = None
) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
    info.mtime = 1_800_000_000
    if kind == tarfile.SYMTYPE:
        info.linkname = "/etc/passwd"
    info.pax_headers = dict(pax or {})
    return info.tobuf(format=tarfile.PAX_FORMAT) + data + bytes(padded(len(data)) - len(data))


def archive(*members: bytes) -> bytes:
    out = b"".join(members) + bytes(1024)
    return out + bytes(-len(out) % 10240)


def parts(built: Built) -> tuple[bytes, bytes, bytes]:
    return (
        member("envelope.json", built.envelope_bytes),
        member("envelope.json.sig", built.signature.encode()),
        member("payload.age", built.payload),
    )


def expect_refused(tmp_path: Path, data: bytes) -> VerificationError:
    path = tmp_path / "hostile.evpkg"
    path.write_bytes(data)
    with pytest.raises(VerificationError) as caught:
        read_package(path)
    return caught.value


def test_rebuilt_package_with_python_tarfile_is_accepted(built: Built, tmp_path: Path) -> None:
    _, sig, pay = parts(built)
    env = member("envelope.json", built.envelope_bytes, pax={"comment": "x"})
    for layout in (1, 2):  # either layout, whatever the original's
        path = tmp_path / f"rebuilt-{layout}.evpkg"
        path.write_bytes(archive(*Built.in_order(dataclasses.replace(built, layout=layout),
                                                 env, sig, pay)))
        pkg = read_package(path)
        assert (pkg.layout, pkg.envelope_bytes) == (layout, built.envelope_bytes)
        assert verify_envelope(pkg, [SENDER.public]) == built.envelope


@pytest.mark.parametrize(
    "layout",
    [
        pytest.param(lambda e, s, p: (e, s, p, member("notes.txt", b"x")), id="fourth-member"),
        pytest.param(lambda e, s, p: (e, s, p, member("payload.age", b"x")), id="fourth-dup"),
        pytest.param(lambda e, s, p: (s, e, p), id="reordered"),
        pytest.param(lambda e, s, p: (e, p, s), id="reordered-tail"),
        pytest.param(lambda e, s, p: (e, e, p), id="duplicate"),
        pytest.param(lambda e, s, p: (e, s), id="two-members"),
        pytest.param(lambda e, s, p: (), id="empty-archive"),
        pytest.param(
            lambda e, s, p: (member("envelope.json", kind=tarfile.SYMTYPE), s, p), id="symlink"
        ),
        pytest.param(
            lambda e, s, p: (e, s, p, member("x", kind=tarfile.SYMTYPE)), id="symlink-appended"
        ),
        pytest.param(
            lambda e, s, p: (e, s, member("payload.age", kind=tarfile.LNKTYPE)), id="hardlink"
        ),
        pytest.param(lambda e, s, p: (member("data", kind=tarfile.DIRTYPE), e, s, p), id="dir"),
        pytest.param(
            lambda e, s, p: (member("envelope.json", kind=tarfile.FIFOTYPE), s, p), id="fifo"
        ),
        pytest.param(lambda e, s, p: (member("./envelope.json", b"{}"), s, p), id="dot-slash-name"),
        pytest.param(
            lambda e, s, p: (member("x", b"{}", pax={"path": "envelope.json/"}), s, p),
            id="pax-path-dir",
        ),
        pytest.param(
            lambda e, s, p: (member("envelope.json", b"{}", pax={"comment": "x" * 70_000}), s, p),
            id="pax-over-64k",
        ),
        pytest.param(
            lambda e, s, p: (member("envelope.json", b"{}", pax={"GNU.sparse.size": "9"}), s, p),
            id="pax-gnu-sparse",
        ),
        pytest.param(
            lambda e, s, p: (member("envelope.json", b"x" * (MiB + 1)), s, p), id="envelope-1mib"
        ),
        pytest.param(
            lambda e, s, p: (e, member("envelope.json.sig", b"\xff" * 10), p), id="sig-not-ascii"
        ),
        # layout 2: the payload first, then exactly the envelope and its signature
        pytest.param(lambda e, s, p: (p, s, e), id="layout2-reordered-tail"),
        pytest.param(lambda e, s, p: (p, e), id="layout2-two-members"),
        pytest.param(lambda e, s, p: (p,), id="layout2-payload-only"),
        pytest.param(lambda e, s, p: (p, e, s, member("notes.txt", b"x")), id="layout2-fourth"),
        pytest.param(lambda e, s, p: (p, p, e, s), id="layout2-payload-twice"),
        pytest.param(lambda e, s, p: (p, e, e), id="layout2-duplicate"),
        pytest.param(
            lambda e, s, p: (member("payload.age", kind=tarfile.SYMTYPE), e, s),
            id="layout2-payload-symlink",
        ),
        pytest.param(
            lambda e, s, p: (member("payload.age", b"x", pax={"GNU.sparse.size": "9"}), e, s),
            id="layout2-pax-gnu-sparse",
        ),
        pytest.param(
            lambda e, s, p: (member("payload.age", b"x", pax={"linkpath": "/etc/passwd"}), e, s),
            id="layout2-pax-linkpath",
        ),
    ],
)
def test_container_structure_refusals(
    built: Built, tmp_path: Path, layout: Callable[[bytes, bytes, bytes], tuple[bytes, ...]]
) -> None:
    expect_refused(tmp_path, archive(*layout(*parts(built))))


@pytest.mark.parametrize("field", [b"+15", b"1_5", b"\x0015", b"-1", b"0x15", b"\x80" + bytes(10)])
@pytest.mark.parametrize("where", ["payload", "pax"])
def test_number_fields_must_be_plain_octal(
    built: Built, tmp_path: Path, field: bytes, where: str
) -> None:
    # Python's tarfile reads "+15" or "1_5" as octal 13, GNU tar "+15" as base-64 3449: a
    # sender could make one file that evault reads with one signed envelope and stock tar
    # with another. Only plain octal digits (and their NUL or space ends) are accepted.
    env, sig, pay = parts(built)
    target = pay if where == "payload" else member("payload.age", built.payload,
                                                   pax={"comment": "x"})
    block = bytearray(target[:512])
    block[124:136] = field.ljust(12, b"\x00")
    block[148:156] = b"        "
    block[148:156] = b"%06o\x00 " % sum(block)
    target = bytes(block) + target[512:]
    error = expect_refused(tmp_path, archive(*built.in_order(env, sig, target)))
    assert "is not plain octal digits" in str(error)


def test_global_and_gnu_headers_are_refused(built: Built, tmp_path: Path) -> None:
    env, sig, pay = parts(built)
    info = tarfile.TarInfo("envelope.json")
    info.size = len(built.envelope_bytes)
    gnu = info.tobuf(format=tarfile.GNU_FORMAT) + built.envelope_bytes
    gnu += bytes(padded(len(built.envelope_bytes)) - len(built.envelope_bytes))
    expect_refused(tmp_path, archive(gnu, sig, pay))
    glob = tarfile.TarInfo("pax_global_header")
    glob.type = tarfile.XGLTYPE
    records = b"19 comment=hello!!\n"
    glob.size = len(records)
    glob_member = glob.tobuf(format=tarfile.USTAR_FORMAT) + records + bytes(512 - len(records))
    expect_refused(tmp_path, archive(glob_member, env, sig, pay))


def test_truncated_and_trailing_data_are_refused(built: Built, tmp_path: Path) -> None:
    raw = built.path.read_bytes()
    end_of_payload = read_package(built.path).payload_offset + len(built.payload)
    end_of_members = built.end_of_members
    for cut in (0, 100, 511, 512 + 10, end_of_payload - 1, end_of_payload, end_of_payload + 512,
                built.envelope_at + 10, end_of_members - 1, end_of_members,
                end_of_members + 512):
        expect_refused(tmp_path, raw[:cut])
    expect_refused(tmp_path, raw + b"x")
    expect_refused(tmp_path, raw + b"\x00" * 511)
    expect_refused(tmp_path, raw + b"\x00" * 512 + b"hidden" + b"\x00" * 506)
    # A member after the end-of-archive marker: stock tar would never show it.
    late = raw[:end_of_members] + bytes(1024) + member("late.txt", b"x") + bytes(1024)
    assert "has data after its end-of-archive marker" in str(expect_refused(tmp_path, late))
    # Zero padding to a longer record is what some tar writers produce: accepted.
    (tmp_path / "padded.evpkg").write_bytes(raw + bytes(10240))
    assert read_package(tmp_path / "padded.evpkg").envelope_bytes == built.envelope_bytes


def test_hidden_bytes_in_member_padding_are_refused(built: Built, tmp_path: Path) -> None:
    raw = bytearray(built.path.read_bytes())
    raw[built.envelope_at + len(built.envelope_bytes)] = ord("x")
    expect_refused(tmp_path, bytes(raw))
    raw = bytearray(built.path.read_bytes())
    pkg = read_package(built.path)
    raw[pkg.payload_offset + pkg.payload_size + 1] = ord("x")  # 5 MiB + 1: padded
    expect_refused(tmp_path, bytes(raw))


def test_not_a_tar(tmp_path: Path) -> None:
    for data in (b"", b"{}", os.urandom(10240), bytes(10240), make_envelope().to_bytes()):
        expect_refused(tmp_path, data)


def test_read_package_never_blocks_on_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.evpkg"
    os.mkfifo(fifo)
    with pytest.raises(VerificationError):
        read_package(fifo)
    with pytest.raises(NotFoundError):
        read_package(tmp_path / "missing.evpkg")


def test_payload_size_must_match_envelope(built: Built, tmp_path: Path) -> None:
    env, sig, _ = parts(built)
    path = tmp_path / "short.evpkg"
    path.write_bytes(archive(*built.in_order(env, sig, member("payload.age",
                                                             built.payload[:-1]))))
    with pytest.raises(VerificationError, match=r"payload\.age"):
        verify_envelope(read_package(path), [SENDER.public])


def test_signer_must_be_the_sender(built: Built, tmp_path: Path) -> None:
    env, _, pay = parts(built)
    forged = sshsig.sign(STRANGER, built.envelope_bytes, ENVELOPE_NAMESPACE)
    path = tmp_path / "forged.evpkg"
    path.write_bytes(archive(*built.in_order(env, member("envelope.json.sig", forged.encode()),
                                             pay)))
    with pytest.raises(VerificationError, match="sender"):
        verify_envelope(read_package(path), [SENDER.public, STRANGER.public])


def sparse_layout2(tmp_path: Path, size: int) -> tuple[Path, Envelope, int]:
    """A layout-2 package whose payload is a hole of ``size`` bytes: (path, envelope, where
    the payload starts)."""
    from vault.formats.package import container

    envelope = make_envelope(payload_size=size, payload_sha256="0" * 64)
    data, signature = sign_envelope(envelope, SENDER)
    head = container.payload_headers(size, 1_800_000_000)
    path = tmp_path / "sparse.evpkg"
    with open(path, "wb") as f:
        f.write(head)
        f.seek(len(head) + size)
        f.write(container.back_bytes(data, signature.encode(), 1_800_000_000,
                                     len(head) + size, size))
    return path, envelope, len(head)


def sparse_package(tmp_path: Path, size: int) -> tuple[Path, Envelope]:
    """A package whose payload is a hole of ``size`` bytes: headers only, nothing to copy."""
    envelope = make_envelope(payload_size=size, payload_sha256="0" * 64)
    data, signature = sign_envelope(envelope, SENDER)
    info = tarfile.TarInfo("payload.age")
    info.size = size
    info.mtime = 1_800_000_000
    head = member("envelope.json", data) + member("envelope.json.sig", signature.encode())
    head += info.tobuf(format=tarfile.PAX_FORMAT)
    path = tmp_path / "large.evpkg"
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(len(head) + padded(size) + 10240)
    return path, envelope


def test_payload_over_8_gib_uses_a_pax_size_record(tmp_path: Path) -> None:
    size = 8 * 1024 * MiB + 1  # one byte more than the ustar size field holds
    path, envelope = sparse_package(tmp_path, size)
    pkg = read_package(path)
    assert pkg.payload_size == size
    assert verify_envelope(pkg, [SENDER.public]) == envelope
    with open(path, "rb") as f:
        assert b"size=8589934593" in f.read(pkg.payload_offset)


# -- detection -----------------------------------------------------------------------------


def test_detect(built: Built, tmp_path: Path) -> None:
    raw = built.path.read_bytes()
    card = make_card("icc-officer", OFFICER_A, AGE_A, created_at=CREATED).encode()
    cases = {
        "package": raw[: kinds_module.DETECT_HEAD],
        "envelope": built.envelope_bytes,
        "statement": make_statement().to_bytes(),
        "sharing-receipt": make_receipt().to_bytes(),
        "acknowledgement": make_ack().to_bytes(),
        "contact-card": card,
        "checkpoint": CHECKPOINT.encode(),
    }
    for kind, data in cases.items():
        assert detect(data) == kind
        path = tmp_path / f"{kind}.file"
        path.write_bytes(data)
        assert detect_file(path) == kind
    assert detect_file(built.path) == "package"
    other_tar = archive(member("notes.txt", b"x"))
    for data in (b"", b"hello\n", b'{"type":"other"}', b"[1]", b"{", other_tar, os.urandom(600)):
        with pytest.raises(VerificationError, match="not an evault file"):
            detect(data)


# -- stock tools ---------------------------------------------------------------------------


@pytest.mark.interop
def test_interop_gnu_tar_lists_and_extracts(built: Built, tmp_path: Path) -> None:
    tar = require_tool("tar")
    listing = subprocess.run(
        [tar, "-tvf", str(built.path)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert [line.split()[-1] for line in listing] == list(LAYOUTS[built.layout])
    assert all(line.startswith("-rw-r--r-- 0/0") for line in listing)
    assert "2026-11-28 09:30" in listing[0]
    out = tmp_path / "extracted"
    out.mkdir()
    subprocess.run([tar, "-xf", str(built.path), "-C", str(out)], check=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(MEMBERS)
    assert (out / "envelope.json").read_bytes() == built.envelope_bytes
    assert (out / "envelope.json.sig").read_text() == built.signature
    assert (out / "payload.age").read_bytes() == built.payload
    # An outsider can rebuild the package with stock tar, in either layout; it reads and
    # verifies the same.
    for layout, members in LAYOUTS.items():
        rebuilt = tmp_path / f"rebuilt-{layout}.evpkg"
        subprocess.run([tar, "--format=pax", "-cf", str(rebuilt), "-C", str(out), *members],
                       check=True)
        assert read_package(rebuilt).layout == layout
        assert verify_envelope(read_package(rebuilt), [SENDER.public]) == built.envelope
        assert detect_file(rebuilt) == "package"


@pytest.mark.interop
def test_interop_gnu_tar_lists_a_package_over_8_gib(tmp_path: Path) -> None:
    tar = require_tool("tar")
    path, _ = sparse_package(tmp_path, 8 * 1024 * MiB + 1)
    listing = subprocess.run(
        [tar, "-tvf", str(path)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert [line.split()[-1] for line in listing] == list(LAYOUTS[1])
    assert listing[2].split()[2] == str(8 * 1024 * MiB + 1)


@pytest.mark.interop
def test_interop_gnu_tar_lists_a_layout2_package_over_8_gib(tmp_path: Path) -> None:
    tar = require_tool("tar")
    size = 8 * 1024 * MiB + 1
    path, envelope, _ = sparse_layout2(tmp_path, size)
    listing = subprocess.run(
        [tar, "-tvf", str(path)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert [line.split()[-1] for line in listing] == list(MEMBERS)
    assert listing[0].split()[2] == str(size)
    extracted = subprocess.run([tar, "-xOf", str(path), "envelope.json"], capture_output=True,
                               check=True).stdout
    assert extracted == envelope.to_bytes()


@pytest.mark.interop
def test_interop_gnu_tar_reads_the_padded_front_over_8_gib(tmp_path: Path) -> None:
    from vault.formats.package import container

    tar = require_tool("tar")
    size = 8 * 1024 * MiB + 1
    envelope = make_envelope(payload_size=size, payload_sha256="0" * 64)
    data, signature = sign_envelope(envelope, SENDER)
    room = payload_offset(envelope, len(signature))
    path = tmp_path / "large.evpkg"
    with open(path, "wb") as f:
        f.write(container.front_bytes(data, signature.encode(), size, 1_800_000_000, room))
        f.seek(room + size)
        f.write(container.tail_bytes(room, size))
    listing = subprocess.run(
        [tar, "-tvf", str(path)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert [line.split()[-1] for line in listing] == list(LAYOUTS[1])
    assert listing[2].split()[2] == str(size)


def ssh_keygen_verify(
    tmp_path: Path, data: bytes, signature: str, namespace: str, signer: SigningKey
) -> subprocess.CompletedProcess[bytes]:
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f'principal namespaces="{namespace}" {signer.public.openssh()}\n')
    doc, sig = tmp_path / "document.json", tmp_path / "document.json.sig"
    doc.write_bytes(data)
    sig.write_text(signature)
    with open(doc, "rb") as stdin:
        return subprocess.run(
            [
                require_tool("ssh-keygen"),
                "-Y",
                "verify",
                "-f",
                str(allowed),
                "-I",
                "principal",
                "-n",
                namespace,
                "-s",
                str(sig),
            ],
            stdin=stdin,
            capture_output=True,
        )


@pytest.mark.interop
def test_interop_ssh_keygen_verifies_the_extracted_envelope(built: Built, tmp_path: Path) -> None:
    require_tool("ssh-keygen")
    pkg = read_package(built.path)
    result = ssh_keygen_verify(
        tmp_path, pkg.envelope_bytes, pkg.signature, ENVELOPE_NAMESPACE, SENDER
    )
    assert result.returncode == 0, result.stderr
    tampered = pkg.envelope_bytes.replace(b"ICC-OTP", b"ICC-OTQ")
    result = ssh_keygen_verify(tmp_path, tampered, pkg.signature, ENVELOPE_NAMESPACE, SENDER)
    assert result.returncode != 0


@pytest.mark.interop
@pytest.mark.parametrize("kind", ["statement", "receipt", "ack"])
def test_interop_ssh_keygen_verifies_documents(kind: str, tmp_path: Path) -> None:
    require_tool("ssh-keygen")
    if kind == "statement":
        data, signature = sign_statement(make_statement(), SENDER)
        namespace, signer = STATEMENT_NAMESPACE, SENDER
    elif kind == "receipt":
        data = make_receipt().to_bytes()
        namespace, signer = RECEIPT_NAMESPACE, SENDER
        signature = sign_document(data, signer, namespace)
    else:
        data = make_ack().to_bytes()
        namespace, signer = ACK_NAMESPACE, OFFICER_A
        signature = sign_document(data, signer, namespace)
    result = ssh_keygen_verify(tmp_path, data, signature, namespace, signer)
    assert result.returncode == 0, result.stderr


# -- fuzzing: hostile bytes give a VaultError, never anything else -------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)


@st.composite
def byte_mutations(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "repeat"]))
        if op == "flip":
            data[i] ^= draw(st.integers(1, 255))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 64))]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "truncate":
            del data[i:]
        else:
            data[i:i] = data[i : i + draw(st.integers(1, 64))]
    return bytes(data)


@st.composite
def json_mutations(draw: st.DrawFn, base: bytes) -> bytes:
    obj = json.loads(base)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(json_paths(obj)[1:]))
        parent: Any = obj
        for key in path[:-1]:
            parent = parent[key]
        op = draw(st.sampled_from(["replace", "delete", "add"]))
        if op == "replace":
            parent[path[-1]] = draw(JSON_VALUES)
        elif op == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(JSON_VALUES)
        else:
            parent.append(draw(JSON_VALUES))
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


def document_inputs(kind: str) -> st.SearchStrategy[bytes]:
    base = DOCS[kind][0]().to_bytes()
    return st.one_of(byte_mutations(base), json_mutations(base))


FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("kind", DOCS)
def test_fuzz_document_parsers(kind: str) -> None:
    parse = DOCS[kind][1]

    @FUZZ
    @given(document_inputs(kind))
    def run(data: bytes) -> None:
        try:
            doc = parse(data)
        except VaultError:
            return
        assert doc.to_bytes() == data  # accepted only in canonical form

    run()


@pytest.fixture(scope="module")
def small_package(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return build(tmp_path_factory.mktemp("small"), os.urandom(1500)).path.read_bytes()


def _fix_checksum(data: bytearray, at: int) -> None:
    block = data[at : at + 512]
    block[148:156] = b" " * 8
    data[at + 148 : at + 156] = b"%06o\x00 " % sum(block)


@st.composite
def header_mutations(draw: st.DrawFn, base: bytes) -> bytes:
    # Flip bytes inside a header and repair its checksum, so the mutation gets past it.
    data = bytearray(base)
    starts = [0]
    pos = 0
    while len(starts) < 3:
        size = int(data[pos + 124 : pos + 136].rstrip(b"\x00 ") or b"0", 8)
        pos += 512 + padded(size)
        starts.append(pos)
    at = draw(st.sampled_from(starts))
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from([0, 100, 124, 136, 156, 157, 257, 345, 500]))
        i = at + field + draw(st.integers(0, 11))
        data[i] = draw(st.sampled_from([0, 0x20, 0x30, 0x37, 0x38, 0x78, 0xFF, data[i] ^ 1]))
    _fix_checksum(data, at)
    return bytes(data)


def test_fuzz_read_package_and_detect(
    small_package: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "fuzzed.evpkg"

    @FUZZ
    @given(st.one_of(byte_mutations(small_package), header_mutations(small_package)))
    def run(data: bytes) -> None:
        path.write_bytes(data)
        with contextlib.suppress(VaultError):
            detect(data)
        try:
            pkg = read_package(path)
            verify_envelope(pkg, [SENDER.public])
            with pkg.open_payload() as f:
                f.read()
        except VaultError:
            return

    run()


def test_package_file_is_a_plain_value(built: Built) -> None:
    pkg = read_package(built.path)
    assert isinstance(pkg, ScannedPackage)
    with pytest.raises(dataclasses.FrozenInstanceError):
        pkg.payload_size = 0  # type: ignore[misc]
