"""RFC 9162 Merkle tree: published vectors, a brute-force reference, and the frontier."""

from __future__ import annotations

import base64
import doctest
import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.custody import merkle
from vault.custody.merkle import (
    EMPTY_ROOT,
    Frontier,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from vault.errors import UsageError, VerificationError

RFC9162 = Path(__file__).resolve().parent / "vectors" / "rfc9162"

def _vector_files(kind: str) -> list[Path]:
    return sorted((RFC9162 / kind).rglob("*.json"))


def _name(path: Path) -> str:
    return path.relative_to(RFC9162).as_posix()


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


def _proof(vector: dict[str, Any]) -> list[bytes]:
    # Upstream writes an empty proof as null in some files.
    return [_b64(p) for p in vector["proof"] or []]


def _want_error(path: Path, vector: dict[str, Any]) -> bool:
    return bool(vector["wantErr"])


INCLUSION = _vector_files("inclusion")
CONSISTENCY = _vector_files("consistency")


def test_vector_counts() -> None:
    # Guards against a partial copy of the vector folder passing as "all green".
    assert len(INCLUSION) == 98
    assert len(CONSISTENCY) == 98


@pytest.mark.parametrize("path", INCLUSION, ids=_name)
def test_inclusion_vector(path: Path) -> None:
    v = _load(path)
    args = (_b64(v["leafHash"]), v["leafIdx"], v["treeSize"], _proof(v), _b64(v["root"]))
    if _want_error(path, v):
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", CONSISTENCY, ids=_name)
def test_consistency_vector(path: Path) -> None:
    v = _load(path)
    args = (v["size1"], v["size2"], _proof(v), _b64(v["root1"]), _b64(v["root2"]))
    if _want_error(path, v):
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_reference_roots() -> None:
    ref = _load(RFC9162 / "reference_roots.json")
    leaves = [leaf_hash(bytes.fromhex(x)) for x in ref["leaf_inputs_hex"]]
    roots = [bytes.fromhex(x) for x in ref["roots_hex"]]
    assert len(roots) == len(leaves) + 1
    frontier = Frontier()
    for n, want in enumerate(roots):
        assert root_of(leaves[:n]) == want
        assert frontier.root() == want
        if n < len(leaves):
            frontier.append(leaves[n])


def test_hash_definitions() -> None:
    assert EMPTY_ROOT.hex() == ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert node_hash(b"l", b"r") == hashlib.sha256(b"\x01lr").digest()


def test_module_example_runs() -> None:
    assert doctest.testmod(merkle).failed == 0


# The brute-force reference: RFC 9162 2.1.1, 2.1.3.1 and 2.1.4.1 written out literally.


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _mth(leaves: tuple[bytes, ...]) -> bytes:
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(_mth(leaves[:k]), _mth(leaves[k:]))


def _ref_path(m: int, leaves: tuple[bytes, ...]) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if m < k:
        return [*_ref_path(m, leaves[:k]), _mth(leaves[k:])]
    return [*_ref_path(m - k, leaves[k:]), _mth(leaves[:k])]


def _ref_subproof(m: int, leaves: tuple[bytes, ...], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [_mth(leaves)]
    k = _split(n)
    if m <= k:
        return [*_ref_subproof(m, leaves[:k], whole), _mth(leaves[k:])]
    return [*_ref_subproof(m - k, leaves[k:], False), _mth(leaves[:k])]


@cache
def _leaves(n: int) -> tuple[bytes, ...]:
    return tuple(leaf_hash(i.to_bytes(4, "big")) for i in range(n))


LEAVES_64 = list(_leaves(64))


@pytest.mark.parametrize("size", range(1, 65))
def test_inclusion_proofs_match_reference(size: int) -> None:
    leaves = _leaves(size)
    root = _mth(leaves)
    assert root_of(leaves) == root
    for index in range(size):
        proof = inclusion_proof(LEAVES_64, index, size)
        assert proof == _ref_path(index, leaves)
        verify_inclusion(leaves[index], index, size, proof, root)


@pytest.mark.parametrize("size2", range(1, 65))
def test_consistency_proofs_match_reference(size2: int) -> None:
    root2 = _mth(_leaves(size2))
    for size1 in range(1, size2 + 1):
        proof = consistency_proof(LEAVES_64, size1, size2)
        want = [] if size1 == size2 else _ref_subproof(size1, _leaves(size2), True)
        assert proof == want
        verify_consistency(size1, size2, proof, _mth(_leaves(size1)), root2)


@pytest.mark.parametrize(
    ("call", "args"),
    [
        (inclusion_proof, (LEAVES_64, 0, 0)),
        (inclusion_proof, (LEAVES_64, 5, 5)),
        (inclusion_proof, (LEAVES_64, -1, 5)),
        (inclusion_proof, (LEAVES_64, 0, 65)),
        (consistency_proof, (LEAVES_64, 0, 5)),
        (consistency_proof, (LEAVES_64, 6, 5)),
        (consistency_proof, (LEAVES_64, 1, 65)),
    ],
    ids=lambda x: getattr(x, "__name__", None) or repr(x[1:]),
)
def test_generators_refuse_impossible_requests(call: Any, args: tuple[Any, ...]) -> None:
    with pytest.raises(UsageError):
        call(*args)


def test_tree_refuses_leaves_that_are_not_hashes() -> None:
    with pytest.raises(ValueError):
        root_of([b"event one", b"event two"])
    with pytest.raises(ValueError):
        Frontier().append(b"event")


def test_proof_error_is_a_verification_error() -> None:
    assert issubclass(ProofError, VerificationError)


def test_frontier_matches_root_of_and_round_trips() -> None:
    leaves = _leaves(301)
    frontier = Frontier()
    for n in range(301):
        assert frontier.size == n
        assert frontier.root() == root_of(leaves[:n])
        data = frontier.to_bytes()
        assert len(data) == 8 + 32 * n.bit_count()
        assert Frontier.from_bytes(data) == frontier
        if n < 300:
            frontier.append(leaves[n])


def test_frontier_copy_is_independent() -> None:
    frontier = Frontier()
    frontier.append(_leaves(1)[0])
    copy = frontier.copy()
    copy.append(_leaves(2)[1])
    assert frontier.size == 1
    assert copy.size == 2
    assert frontier.root() == root_of(_leaves(1))
    assert copy.root() == root_of(_leaves(2))


H = b"\xab" * 32


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00" * 7, id="short-size"),
        pytest.param((1).to_bytes(8, "big"), id="size-1-no-hash"),
        pytest.param((0).to_bytes(8, "big") + H, id="size-0-one-hash"),
        pytest.param((3).to_bytes(8, "big") + H, id="size-3-one-hash"),
        pytest.param((2).to_bytes(8, "big") + H + H, id="size-2-two-hashes"),
        pytest.param((1).to_bytes(8, "big") + H[:31], id="truncated-hash"),
        pytest.param((1).to_bytes(8, "big") + H + b"\x00", id="trailing-byte"),
        pytest.param(b"\xff" * 8 + H * 63, id="max-size-one-hash-short"),
    ],
)
def test_frontier_from_bytes_refuses_malformed(data: bytes) -> None:
    with pytest.raises(ProofError):
        Frontier.from_bytes(data)


def _flip(proof: list[bytes], i: int, bit: int) -> list[bytes]:
    h = bytearray(proof[i])
    h[bit // 8] ^= 1 << (bit % 8)
    return [*proof[:i], bytes(h), *proof[i + 1 :]]


@settings(max_examples=50, deadline=None)
@given(data=st.data(), size=st.integers(min_value=1, max_value=300))
def test_proofs_property(data: st.DataObject, size: int) -> None:
    leaves = list(_leaves(size))
    root = root_of(leaves)
    index = data.draw(st.integers(min_value=0, max_value=size - 1), label="index")
    proof = inclusion_proof(leaves, index, size)
    verify_inclusion(leaves[index], index, size, proof, root)
    if proof:
        i = data.draw(st.integers(min_value=0, max_value=len(proof) - 1), label="hash")
        bit = data.draw(st.integers(min_value=0, max_value=255), label="bit")
        with pytest.raises(ProofError):
            verify_inclusion(leaves[index], index, size, _flip(proof, i, bit), root)
        with pytest.raises(ProofError):
            verify_inclusion(leaves[index], index, size, proof[:-1], root)

    size1 = data.draw(st.integers(min_value=1, max_value=size), label="size1")
    root1 = root_of(leaves[:size1])
    proof = consistency_proof(leaves, size1, size)
    verify_consistency(size1, size, proof, root1, root)
    if proof:
        i = data.draw(st.integers(min_value=0, max_value=len(proof) - 1), label="hash")
        bit = data.draw(st.integers(min_value=0, max_value=255), label="bit")
        with pytest.raises(ProofError):
            verify_consistency(size1, size, _flip(proof, i, bit), root1, root)
        with pytest.raises(ProofError):
            verify_consistency(size1, size, proof, root1, root_of(leaves[: size - 1]))

    frontier = Frontier()
    for h in leaves[:size1]:
        frontier.append(h)
    assert frontier.root() == root1
    assert Frontier.from_bytes(frontier.to_bytes()) == frontier
