"""Approval requests and approvals: round trips, strict parsing, signatures, selection digest."""

from __future__ import annotations

import dataclasses
import doctest
import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import require_tool

import vault.formats.approval as approval_module
from vault.crypto import sshsig
from vault.crypto.keys import SigningKey
from vault.errors import UsageError, VerificationError
from vault.formats.approval import (
    APPROVAL_NAMESPACE,
    APPROVAL_REQUEST_NAMESPACE,
    APPROVE,
    REFUSE,
    Approval,
    ApprovalRequest,
    Party,
    ReceiptItem,
    selection_digest,
    sign_document,
    verify_approval,
    verify_request,
)
from vault.formats.kinds import detect
from vault.formats.receipt import RECEIPT_NAMESPACE

# Fixed keys: every document here is the same bytes on every run.
REGISTRY = SigningKey.from_seed(bytes(range(32)))
COUNSEL = SigningKey.from_seed(bytes(range(32, 64)))
STRANGER = SigningKey.from_seed(bytes(range(64, 96)))

ITEMS = (
    ReceiptItem("EV-0000000000B2", 2048, "b" * 64),
    ReceiptItem("EV-0000000000A1", 1234, "a" * 64),
)
BODY = "ICC-OTP"


def make_request(**changes: Any) -> ApprovalRequest:
    fields: dict[str, Any] = {
        "request_id": "APR-0123456789AB",
        "body": BODY,
        "items": ITEMS,
        "selection_sha256": selection_digest(BODY, ITEMS),
        "purpose": "Disclosure under OTP-CR-2026/114",
        "requester": Party("registry-office", REGISTRY.public.fingerprint),
        "origin": "evault/0123456789abcdef0123456789abcdef",
        "created_at": "2026-11-27T09:00:00Z",
    }
    fields.update(changes)
    return ApprovalRequest(**fields)


REQUEST_BYTES = make_request().to_bytes()


def make_approval(**changes: Any) -> Approval:
    fields: dict[str, Any] = {
        "request_id": "APR-0123456789AB",
        "request_sha256": hashlib.sha256(REQUEST_BYTES).hexdigest(),
        "body": BODY,
        "selection_sha256": selection_digest(BODY, ITEMS),
        "decision": APPROVE,
        "reason": None,
        "approver": Party("state-legal", COUNSEL.public.fingerprint),
        "signed_at": "2026-11-27T11:00:00Z",
    }
    fields.update(changes)
    return Approval(**fields)


def make_refusal() -> Approval:
    return make_approval(decision=REFUSE, reason="Item EV-0000000000B2 names a protected witness")


DOCS: dict[str, tuple[Callable[[], Any], Callable[[bytes], Any]]] = {
    "request": (make_request, ApprovalRequest.from_bytes),
    "approval": (make_approval, Approval.from_bytes),
    "refusal": (make_refusal, Approval.from_bytes),
}


def test_module_example_runs() -> None:
    assert doctest.testmod(approval_module).failed == 0


@pytest.mark.parametrize("kind", DOCS)
def test_round_trip(kind: str) -> None:
    make, parse = DOCS[kind]
    doc = make()
    data = doc.to_bytes()
    assert parse(data) == doc
    assert parse(data).to_bytes() == data
    # Canonical JSON: sorted keys, no spaces.
    obj = json.loads(data)
    assert data == json.dumps(obj, sort_keys=True, separators=(",", ":"),
                              ensure_ascii=False).encode()


def test_documents_as_written() -> None:
    request = json.loads(REQUEST_BYTES)
    assert request["type"] == "evault-approval-request" and request["version"] == 1
    assert request["items"][0] == {"id": "EV-0000000000B2", "size": 2048, "sha256": "b" * 64}
    approval = json.loads(make_approval().to_bytes())
    assert approval["type"] == "evault-approval" and approval["reason"] is None
    assert approval["approver"] == {"name": "state-legal",
                                    "fingerprint": COUNSEL.public.fingerprint}
    assert detect(REQUEST_BYTES) == "approval-request"
    assert detect(make_approval().to_bytes()) == "approval"
    assert detect(make_refusal().to_bytes()) == "approval"


def test_documents_have_no_room_for_content() -> None:
    allowed_text = {"purpose", "reason"}
    for cls in (ApprovalRequest, Approval):
        names = {f.name for f in dataclasses.fields(cls)}
        assert not names & {"title", "description", "filename", "path", "tags", "labels"}
        assert not (names - allowed_text) & {"note", "comment", "text"}


# -- the selection digest ------------------------------------------------------------------


def test_selection_digest_is_the_spec_digest() -> None:
    # Computed here from the spec's words, not with the function under test.
    expected = hashlib.sha256(
        b'{"body":"ICC-OTP","items":[{"id":"EV-0000000000A1","sha256":"' + b"a" * 64
        + b'"},{"id":"EV-0000000000B2","sha256":"' + b"b" * 64 + b'"}]}'
    ).hexdigest()
    assert selection_digest(BODY, ITEMS) == expected
    assert selection_digest(BODY, reversed(ITEMS)) == expected
    assert selection_digest(BODY, list(ITEMS)) == selection_digest(BODY, iter(ITEMS[::-1]))
    # Sizes are not part of it: the digest of each item fixes its content.
    resized = tuple(dataclasses.replace(i, size=i.size + 1) for i in ITEMS)
    assert selection_digest(BODY, resized) == expected


def test_selection_digest_changes_with_body_and_items() -> None:
    base = selection_digest(BODY, ITEMS)
    assert selection_digest("ICC-REG", ITEMS) != base
    assert selection_digest(BODY, ITEMS[:1]) != base
    other = (ITEMS[0], dataclasses.replace(ITEMS[1], sha256="c" * 64))
    assert selection_digest(BODY, other) != base
    renamed = (ITEMS[0], dataclasses.replace(ITEMS[1], id="EV-0000000000A2"))
    assert selection_digest(BODY, renamed) != base


@pytest.mark.parametrize(
    "body, items",
    [
        pytest.param("icc otp", ITEMS, id="bad-body"),
        pytest.param(BODY, (), id="no-items"),
        pytest.param(BODY, (ITEMS[0], ITEMS[0]), id="item-twice"),
        pytest.param(BODY, (ITEMS[0], dataclasses.replace(ITEMS[0], sha256="c" * 64)),
                     id="same-id-other-digest"),
    ],
)
def test_selection_digest_refuses_bad_selections(body: str, items: tuple[Any, ...]) -> None:
    with pytest.raises(UsageError):
        selection_digest(body, items)


# -- strict parsing ------------------------------------------------------------------------

MutateFn = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> MutateFn:
    def mutate(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = obj
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    return mutate


def _delete(key: str) -> MutateFn:
    def mutate(obj: dict[str, Any]) -> None:
        del obj[key]
    return mutate


GENERIC = {
    "unknown-field": _set("note", "x"),
    "wrong-type": _set("type", "evault-sharing-receipt"),
    "version-2": _set("version", 2),
    "version-0": _set("version", 0),
    "version-string": _set("version", "1"),
    "version-true": _set("version", True),
    "bad-request-id": _set("request_id", "APR-0123456789AI"),
    "receipt-id": _set("request_id", "RCP-0123456789AB"),
    "short-request-id": _set("request_id", "APR-0123"),
    "bad-body": _set("body", "icc-otp"),
    "body-null": _set("body", None),
    "bad-selection-digest": _set("selection_sha256", "A" * 64),
    "short-selection-digest": _set("selection_sha256", "a" * 63),
}

REQUEST_REFUSALS = {
    **{f"missing-{f}": _delete(f) for f in (
        "request_id", "body", "items", "selection_sha256", "purpose", "requester", "origin",
        "created_at", "type", "version")},
    "selection-mismatch": _set("selection_sha256", "f" * 64),
    "other-body-same-digest": _set("body", "ICC-REG"),
    "item-digest-changed": _set("items.0.sha256", "c" * 64),
    "item-dropped": lambda obj: obj["items"].pop(),
    "item-twice": lambda obj: obj["items"].append(dict(obj["items"][0])),
    "no-items": _set("items", []),
    "items-object": _set("items", {}),
    "item-extra-field": _set("items.0.name", "exhibit.pdf"),
    "item-bad-id": _set("items.0.id", "EV-1"),
    "item-negative-size": _set("items.0.size", -1),
    "item-float-size": _set("items.0.size", 1.5),
    "bad-created-at": _set("created_at", "2026-11-27 09:00:00"),
    "impossible-created-at": _set("created_at", "2026-02-30T09:00:00Z"),
    "local-created-at": _set("created_at", "2026-11-27T09:00:00+01:00"),
    "purpose-empty": _set("purpose", ""),
    "purpose-two-lines": _set("purpose", "Disclosure\nOK: verified"),
    "purpose-outer-space": _set("purpose", " Disclosure"),
    "purpose-too-long": _set("purpose", "x" * 257),
    "purpose-null": _set("purpose", None),
    "origin-space": _set("origin", "evault/01 23"),
    "origin-empty": _set("origin", ""),
    "origin-too-long": _set("origin", "evault/" + "a" * 122),
    "origin-newline": _set("origin", "evault/01\n"),
    "requester-extra-field": _set("requester.org", "Fictional Ministry"),
    "requester-bad-fingerprint": _set("requester.fingerprint", "SHA256:abc"),
    "requester-bad-name": _set("requester.name", "registry office"),
}

APPROVAL_REFUSALS = {
    **{f"missing-{f}": _delete(f) for f in (
        "request_id", "request_sha256", "body", "selection_sha256", "decision", "reason",
        "approver", "signed_at")},
    "bad-request-digest": _set("request_sha256", "g" * 64),
    "decision-other": _set("decision", "abstain"),
    "decision-capital": _set("decision", "Approve"),
    "decision-bool": _set("decision", True),
    "approve-with-reason": _set("reason", "Looks fine"),
    "approve-with-empty-reason": _set("reason", ""),
    "bad-signed-at": _set("signed_at", "2026-11-27T11:00Z"),
    "approver-missing-field": lambda obj: obj["approver"].pop("name"),
    "approver-bad-fingerprint": _set("approver.fingerprint", "SHA256:" + "A" * 44),
}

REFUSAL_REFUSALS = {
    "refuse-without-reason": _set("reason", None),
    "refuse-empty-reason": _set("reason", ""),
    "refuse-reason-two-lines": _set("reason", "No\nOK: approved"),
    "refuse-reason-control": _set("reason", "No\x1b[2K"),
    "refuse-reason-number": _set("reason", 3),
}

CASES = [
    *[pytest.param(k, m, id=f"{k}-{n}") for k in DOCS for n, m in GENERIC.items()],
    *[pytest.param("request", m, id=f"request-{n}") for n, m in REQUEST_REFUSALS.items()],
    *[pytest.param("approval", m, id=f"approval-{n}") for n, m in APPROVAL_REFUSALS.items()],
    *[pytest.param("refusal", m, id=f"refusal-{n}") for n, m in REFUSAL_REFUSALS.items()],
]


@pytest.mark.parametrize("kind, mutate", CASES)
def test_strict_parsing_refuses(kind: str, mutate: MutateFn) -> None:
    make, parse = DOCS[kind]
    obj = json.loads(make().to_bytes())
    mutate(obj)
    # Written canonically, so that only the mutation can be the reason for the refusal.
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    with pytest.raises(VerificationError):
        parse(data)


@pytest.mark.parametrize("kind", DOCS)
@pytest.mark.parametrize(
    "transform",
    [
        pytest.param(lambda d: d + b"\n", id="trailing-newline"),
        pytest.param(lambda d: json.dumps(json.loads(d), indent=1).encode(), id="indented"),
        pytest.param(lambda d: json.dumps(json.loads(d)).encode(), id="spaces"),
        pytest.param(lambda d: json.dumps(json.loads(d), sort_keys=True,
                                          separators=(",", ":")).encode().replace(b"/", b"\\/"),
                     id="escaped-slash"),
        pytest.param(lambda d: d.replace(b'"body":', b'"body":"X","body":'), id="duplicate-key"),
        pytest.param(lambda d: d[:-1], id="truncated"),
        pytest.param(lambda d: b"[" + d + b"]", id="array"),
        pytest.param(lambda d: b"\xff" + d, id="not-utf8"),
    ],
)
def test_parsing_refuses_non_canonical_or_malformed_bytes(
    kind: str, transform: Callable[[bytes], bytes]
) -> None:
    make, parse = DOCS[kind]
    data = make().to_bytes()
    changed = transform(data)
    assert changed != data
    with pytest.raises(VerificationError):
        parse(changed)


def test_constructors_refuse_bad_values_with_usage_error() -> None:
    with pytest.raises(UsageError, match="selection_sha256"):
        make_request(selection_sha256=selection_digest("ICC-REG", ITEMS))
    with pytest.raises(UsageError, match="selection_sha256"):
        make_request(items=ITEMS[:1])
    with pytest.raises(UsageError):
        make_request(items=list(ITEMS))
    with pytest.raises(UsageError):
        make_request(request_id="RCP-0123456789AB")
    with pytest.raises(UsageError):
        make_request(requester=("registry-office", REGISTRY.public.fingerprint))
    with pytest.raises(UsageError, match="reason"):
        make_approval(decision=REFUSE, reason=None)
    with pytest.raises(UsageError, match="reason"):
        make_approval(decision=REFUSE, reason="")
    with pytest.raises(UsageError, match="reason"):
        make_approval(decision=APPROVE, reason="Looks fine")
    with pytest.raises(UsageError, match="decision"):
        make_approval(decision="maybe")
    with pytest.raises(UsageError):
        make_approval(version=2)
    with pytest.raises(UsageError):
        make_approval(format="evault-approval-request")


def test_request_item_limit() -> None:
    many = tuple(ReceiptItem(f"EV-{i:012d}", 1, "a" * 64) for i in range(100_001))
    with pytest.raises(UsageError, match="at most 100000"):
        make_request(items=many, selection_sha256="a" * 64)


# -- signatures ----------------------------------------------------------------------------


def test_request_signature() -> None:
    signature = sign_document(REQUEST_BYTES, REGISTRY, APPROVAL_REQUEST_NAMESPACE)
    assert verify_request(REQUEST_BYTES, signature, [REGISTRY.public]) == make_request()
    # Not trusted.
    with pytest.raises(VerificationError, match="APR-0123456789AB"):
        verify_request(REQUEST_BYTES, signature, [STRANGER.public])
    # Right key, wrong namespace: an approval's or a receipt's signature never passes.
    for namespace in (APPROVAL_NAMESPACE, RECEIPT_NAMESPACE):
        other = sign_document(REQUEST_BYTES, REGISTRY, namespace)
        with pytest.raises(VerificationError):
            verify_request(REQUEST_BYTES, other, [REGISTRY.public])
    # Tampered bytes.
    with pytest.raises(VerificationError):
        verify_request(REQUEST_BYTES.replace(b"OTP-CR", b"OTP-CQ"), signature, [REGISTRY.public])
    # A trusted key that is not the requester named inside.
    forged = sign_document(REQUEST_BYTES, STRANGER, APPROVAL_REQUEST_NAMESPACE)
    with pytest.raises(VerificationError, match="requester"):
        verify_request(REQUEST_BYTES, forged, [REGISTRY.public, STRANGER.public])


@pytest.mark.parametrize("kind", ["approval", "refusal"])
def test_approval_signature(kind: str) -> None:
    doc = DOCS[kind][0]()
    data = doc.to_bytes()
    signature = sign_document(data, COUNSEL, APPROVAL_NAMESPACE)
    assert verify_approval(data, signature, [COUNSEL.public]) == doc
    with pytest.raises(VerificationError, match="approval of APR-0123456789AB"):
        verify_approval(data, signature, [REGISTRY.public])
    for namespace in (APPROVAL_REQUEST_NAMESPACE, RECEIPT_NAMESPACE):
        other = sshsig.sign(COUNSEL, data, namespace)
        with pytest.raises(VerificationError):
            verify_approval(data, other, [COUNSEL.public])
    with pytest.raises(VerificationError):
        verify_approval(data.replace(b"ICC-OTP", b"ICC-OTQ"), signature, [COUNSEL.public])
    forged = sign_document(data, STRANGER, APPROVAL_NAMESPACE)
    with pytest.raises(VerificationError, match="approver"):
        verify_approval(data, forged, [COUNSEL.public, STRANGER.public])


def test_a_signed_but_malformed_document_is_refused_by_name() -> None:
    obj = json.loads(make_approval().to_bytes())
    obj["reason"] = "Looks fine"
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    signature = sign_document(data, COUNSEL, APPROVAL_NAMESPACE)
    with pytest.raises(VerificationError, match=r"^approval of APR-0123456789AB: .*reason"):
        verify_approval(data, signature, [COUNSEL.public])


def ssh_keygen_verify(
    tmp_path: Path, data: bytes, signature: str, namespace: str, signer: SigningKey
) -> subprocess.CompletedProcess[bytes]:
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f'approver namespaces="{namespace}" {signer.public.openssh()}\n')
    doc, sig = tmp_path / "APPROVAL", tmp_path / "APPROVAL.sig"
    doc.write_bytes(data)
    sig.write_text(signature)
    with open(doc, "rb") as stdin:
        return subprocess.run(
            [require_tool("ssh-keygen"), "-Y", "verify", "-f", str(allowed), "-I", "approver",
             "-n", namespace, "-s", str(sig)],
            stdin=stdin, capture_output=True,
        )


@pytest.mark.interop
@pytest.mark.parametrize("kind", DOCS)
def test_interop_ssh_keygen_verifies_documents_as_written(kind: str, tmp_path: Path) -> None:
    require_tool("ssh-keygen")
    if kind == "request":
        data, namespace, signer = REQUEST_BYTES, APPROVAL_REQUEST_NAMESPACE, REGISTRY
    else:
        data, namespace, signer = DOCS[kind][0]().to_bytes(), APPROVAL_NAMESPACE, COUNSEL
    signature = sign_document(data, signer, namespace)
    result = ssh_keygen_verify(tmp_path, data, signature, namespace, signer)
    assert result.returncode == 0, result.stderr
    # The namespace is part of what is signed: the other namespace does not verify.
    other = APPROVAL_NAMESPACE if namespace == APPROVAL_REQUEST_NAMESPACE else (
        APPROVAL_REQUEST_NAMESPACE)
    result = ssh_keygen_verify(tmp_path, data, signature, other, signer)
    assert result.returncode != 0
    result = ssh_keygen_verify(tmp_path, data.replace(b"ICC-OTP", b"ICC-OTQ"), signature,
                               namespace, signer)
    assert result.returncode != 0
