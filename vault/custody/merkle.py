"""The custody log's Merkle tree: RFC 9162 section 2.1 hashes, proofs and compact frontier.

    >>> leaves = [leaf_hash(event) for event in (b"sealed", b"released", b"returned")]
    >>> root = root_of(leaves)
    >>> verify_inclusion(leaves[1], 1, 3, inclusion_proof(leaves, 1, 3), root)
    >>> old_root = root_of(leaves[:2])
    >>> verify_consistency(2, 3, consistency_proof(leaves, 2, 3), old_root, root)
    >>> frontier = Frontier()
    >>> for h in leaves:
    ...     frontier.append(h)
    >>> frontier.root() == root
    True

A leaf hash is SHA-256(0x00 || data), an interior node SHA-256(0x01 || left || right), and
the empty tree's root SHA-256(""). Verifiers raise :class:`ProofError`; they never return a
boolean. Proof generators take the leaf hashes of the whole log and hash O(n) nodes, which
is what a log of this size can afford; a log that must answer proofs in O(log n) would keep
the interior nodes instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from vault.errors import UsageError, VerificationError

HASH_SIZE = 32
EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()

# The frontier serialises its size in 8 bytes, so no tree grows past this.
MAX_TREE_SIZE = (1 << 64) - 1

_sha256 = hashlib.sha256


class ProofError(VerificationError):
    """A Merkle inclusion or consistency proof, or a stored frontier, does not check."""


def leaf_hash(data: bytes) -> bytes:
    """The RFC 9162 hash of a leaf: SHA-256(0x00 || data)."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 9162 hash of an interior node: SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + left + right).digest()


def _parent_level(level: list[bytes]) -> list[bytes]:
    sha256 = _sha256
    parents = [
        sha256(b"\x01" + left + right).digest()
        for left, right in zip(level[0::2], level[1::2], strict=False)
    ]
    if len(level) & 1:
        # RFC 9162 splits a range at its largest power of two; bottom-up, that is the same
        # as carrying an odd last node up a level unchanged.
        parents.append(level[-1])
    return parents


def _leaf_level(leaf_hashes: Sequence[bytes], size: int) -> list[bytes]:
    level = list(leaf_hashes[:size])
    # A caller that passes event bytes instead of leaf hashes would get a wrong root in
    # silence; the check costs a few per cent of the hashing.
    if level and set(map(len, level)) != {HASH_SIZE}:
        raise ValueError("merkle tree: every leaf hash must be 32 bytes (pass leaf_hash(data))")
    return level


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """The root of the tree over ``leaf_hashes`` (:data:`EMPTY_ROOT` for none)."""
    level = _leaf_level(leaf_hashes, len(leaf_hashes))
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        level = _parent_level(level)
    return level[0]


def _path(level: list[bytes], index: int) -> list[bytes]:
    """The siblings of node ``index`` of ``level`` on its way to the root, lowest first."""
    proof: list[bytes] = []
    while len(level) > 1:
        sibling = index ^ 1
        # An even last node has no sibling: it is carried up, so it adds nothing to the path.
        if sibling < len(level):
            proof.append(level[sibling])
        level = _parent_level(level)
        index >>= 1
    return proof


def _check_tree_size(leaf_hashes: Sequence[bytes], size: int) -> None:
    if not 0 <= size <= len(leaf_hashes):
        raise UsageError(
            f"merkle tree: size {size} is not between 0 and the {len(leaf_hashes)} leaves given"
        )


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """The RFC 9162 inclusion proof (2.1.3.1) of leaf ``index`` in the tree of the first
    ``size`` leaves, lowest sibling first.
    """
    _check_tree_size(leaf_hashes, size)
    if not 0 <= index < size:
        raise UsageError(f"merkle inclusion proof: leaf {index} is not in a tree of size {size}")
    return _path(_leaf_level(leaf_hashes, size), index)


def consistency_proof(leaf_hashes: Sequence[bytes], size1: int, size2: int) -> list[bytes]:
    """The RFC 9162 consistency proof (2.1.4.1) that the tree of the first ``size1`` leaves
    is a prefix of the tree of the first ``size2`` leaves (empty when the sizes are equal).
    """
    _check_tree_size(leaf_hashes, size2)
    if not 0 < size1 <= size2:
        raise UsageError(
            f"merkle consistency proof: needs 0 < size1 <= size2, got {size1} and {size2}"
        )
    if size1 == size2:
        return []
    # Start from the largest perfect subtree that ends at size1: its root, then its path to
    # the root of the larger tree.
    shift = _trailing_zeros(size1)
    level = _leaf_level(leaf_hashes, size2)
    for _ in range(shift):
        level = _parent_level(level)
    index = (size1 - 1) >> shift
    # When size1 is a power of two that subtree is the whole old tree, whose root the
    # verifier already holds.
    head = [] if index == 0 else [level[index]]
    return head + _path(level, index)


def _trailing_zeros(n: int) -> int:
    return (n & -n).bit_length() - 1


def _inclusion_proof_length(index: int, size: int) -> int:
    # Below the level where the paths of leaf `index` and of the last leaf meet, every level
    # has a sibling; above it, only the levels where `index` is a right child do.
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def _check_hashes(what: str, hashes: dict[str, bytes], proof: Sequence[bytes]) -> None:
    for name, value in hashes.items():
        if len(value) != HASH_SIZE:
            raise ProofError(f"{what}: the {name} must be 32 bytes, not {len(value)}")
    for i, value in enumerate(proof):
        if len(value) != HASH_SIZE:
            raise ProofError(f"{what}: proof hash {i} must be 32 bytes, not {len(value)}")


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise :class:`ProofError` unless ``proof`` shows that ``leaf_hash`` is leaf ``index``
    of the tree of ``size`` leaves whose root is ``root`` (RFC 9162 2.1.3.2).
    """
    what = "merkle inclusion proof"
    if not 0 <= index < size:
        raise ProofError(f"{what}: leaf {index} is not in a tree of size {size}")
    want = _inclusion_proof_length(index, size)
    if len(proof) != want:
        raise ProofError(
            f"{what}: has {len(proof)} hashes, leaf {index} of size {size} needs {want}"
        )
    _check_hashes(what, {"leaf hash": leaf_hash, "root": root}, proof)

    # The loop is RFC 9162's algorithm step by step; its own depth checks cannot fire after
    # the exact length check above, and stay so the loop reads as the RFC does.
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError(f"{what}: longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"{what}: shorter than the tree is deep")
    if r != root:
        raise ProofError(f"{what}: leaf {index} does not lead to the root of size {size}")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Raise :class:`ProofError` unless ``proof`` shows that the tree of ``size1`` leaves with
    root ``root1`` is a prefix of the tree of ``size2`` leaves with root ``root2``
    (RFC 9162 2.1.4.2). Needs ``0 < size1 <= size2``; equal sizes need an empty proof and
    equal roots.
    """
    what = "merkle consistency proof"
    # Every tree is a prefix of a larger one, so a proof from the empty tree proves nothing
    # and a verifier that accepted one would be checking nothing.
    if not 0 < size1 <= size2:
        raise ProofError(f"{what}: needs 0 < size1 <= size2, got {size1} and {size2}")
    if size1 == size2:
        # As the reference verifier does: equal trees need no proof, only equal roots; the
        # roots' length does not matter when both are the same bytes (the vectors rely on it).
        if proof:
            raise ProofError(f"{what}: must be empty between trees of equal size")
        if root1 != root2:
            raise ProofError(f"{what}: trees of equal size {size1} have different roots")
        return
    _check_hashes(what, {"first root": root1, "second root": root2}, proof)

    shift = _trailing_zeros(size1)
    inner = ((size1 - 1) ^ (size2 - 1)).bit_length()
    border = ((size1 - 1) >> inner).bit_count()
    seeded = size1 == 1 << shift
    want = (0 if seeded else 1) + inner - shift + border
    if len(proof) != want:
        raise ProofError(f"{what}: has {len(proof)} hashes, sizes {size1} to {size2} need {want}")

    # RFC 9162 step by step, as in verify_inclusion.
    path = [root1, *proof] if seeded else list(proof)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError(f"{what}: longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"{what}: shorter than the tree is deep")
    if fr != root1:
        raise ProofError(f"{what}: does not lead to the first root (size {size1})")
    if sr != root2:
        raise ProofError(f"{what}: does not lead to the second root (size {size2})")


class Frontier:
    """The compact range [0, size) of a tree: the roots of its right-edge perfect subtrees.

    Holds popcount(size) hashes, largest subtree first, so appending a leaf costs O(log n)
    and the root is always at hand without the leaves.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The perfect-subtree roots, largest (leftmost) first."""
        return tuple(self._hashes)

    def append(self, leaf_hash: bytes) -> None:
        """Add the leaf whose hash is ``leaf_hash`` at the right edge of the tree."""
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError("merkle frontier: a leaf hash must be 32 bytes (pass leaf_hash(data))")
        if self._size == MAX_TREE_SIZE:
            raise UsageError(f"merkle frontier: a tree holds at most {MAX_TREE_SIZE} leaves")
        hashes = self._hashes
        sha256 = _sha256
        h = leaf_hash
        n = self._size
        # Each trailing one bit of the old size is a perfect subtree the new leaf completes.
        while n & 1:
            h = sha256(b"\x01" + hashes.pop() + h).digest()
            n >>= 1
        hashes.append(h)
        self._size += 1

    def append_subtree(self, root: bytes, size: int) -> None:
        """Add a perfect subtree of ``size`` leaves (a power of two) whose root is ``root``.

        The same as appending its ``size`` leaves one by one, provided the tree's size is a
        multiple of ``size`` (the subtree starts on its own boundary, as every subtree of an
        RFC 9162 tree does); refused otherwise, since the result would be another tree. It
        lets whoever hashed a run of leaves hand over a few roots instead of the leaves.
        """
        if size <= 0 or size & (size - 1):
            raise ValueError(f"merkle frontier: a subtree has a power of two leaves, not {size}")
        if len(root) != HASH_SIZE:
            raise ValueError("merkle frontier: a subtree root must be 32 bytes")
        if self._size % size:
            raise ValueError(
                f"merkle frontier: a subtree of {size} leaves cannot start at leaf {self._size}"
            )
        if self._size > MAX_TREE_SIZE - size:
            raise UsageError(f"merkle frontier: a tree holds at most {MAX_TREE_SIZE} leaves")
        hashes = self._hashes
        h = root
        n = self._size // size
        # As in append, one level up: each trailing one bit is a subtree of equal size.
        while n & 1:
            h = _sha256(b"\x01" + hashes.pop() + h).digest()
            n >>= 1
        hashes.append(h)
        self._size += size

    def append_range(self, roots: Sequence[bytes], size: int) -> None:
        """Add the next ``size`` leaves given as their compact range: the roots of
        :func:`range_roots`, largest subtree first. Needs the tree's size to be a multiple of
        the largest power of two not above ``size``.
        """
        sizes = subtree_sizes(size)
        if len(roots) != len(sizes):
            raise ValueError(
                f"merkle frontier: {size} leaves make {len(sizes)} subtrees, got {len(roots)} roots"
            )
        for root, leaves in zip(roots, sizes, strict=True):
            self.append_subtree(root, leaves)

    def root(self) -> bytes:
        """The root of the tree of :attr:`size` leaves."""
        if not self._hashes:
            return EMPTY_ROOT
        subtrees = reversed(self._hashes)
        r = next(subtrees)
        for h in subtrees:
            r = node_hash(h, r)
        return r

    def to_bytes(self) -> bytes:
        """The size as 8 bytes big-endian, then the subtree roots, largest first."""
        return self._size.to_bytes(8, "big") + b"".join(self._hashes)

    @classmethod
    def from_bytes(cls, data: bytes) -> Frontier:
        """Read :meth:`to_bytes` output; raise :class:`ProofError` if it is malformed."""
        if len(data) < 8 or (len(data) - 8) % HASH_SIZE:
            raise ProofError(
                f"merkle frontier: {len(data)} bytes is not an 8-byte size plus 32-byte hashes"
            )
        size = int.from_bytes(data[:8], "big")
        count = (len(data) - 8) // HASH_SIZE
        if count != size.bit_count():
            raise ProofError(
                f"merkle frontier: size {size} needs {size.bit_count()} hashes, found {count}"
            )
        frontier = cls()
        frontier._size = size
        frontier._hashes = [bytes(data[i : i + HASH_SIZE]) for i in range(8, len(data), HASH_SIZE)]
        return frontier

    def copy(self) -> Frontier:
        """An independent frontier at the same size."""
        other = Frontier()
        other._size = self._size
        other._hashes = list(self._hashes)
        return other

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frontier):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    __hash__ = None  # type: ignore[assignment]  # mutable, so unhashable

    def __repr__(self) -> str:
        return f"Frontier(size={self._size}, root={self.root().hex()})"


def subtree_sizes(size: int) -> list[int]:
    """The sizes of the perfect subtrees that make up a tree of ``size`` leaves, largest
    first: the one bits of ``size`` (what a :class:`Frontier` of that size holds).
    """
    return [1 << k for k in range(size.bit_length() - 1, -1, -1) if size >> k & 1]


def range_roots(leaf_hashes: Sequence[bytes], sizes: Iterable[int]) -> dict[int, list[bytes]]:
    """For each ``m`` of ``sizes``, the roots of the perfect subtrees over the first ``m`` of
    ``leaf_hashes``, largest first: what a :class:`Frontier` holds after ``m`` appends.

    The levels of the tree are hashed once (``len(leaf_hashes)`` node hashes in all, as
    many appends would cost) and every requested prefix is read off them, so a worker can
    summarise a run of leaves for any number of sizes inside it.
    """
    wanted = sorted(set(sizes))
    if wanted and not 0 < wanted[0] <= wanted[-1] <= len(leaf_hashes):
        raise UsageError(
            f"merkle range: sizes must be between 1 and the {len(leaf_hashes)} leaves given"
        )
    levels = [_leaf_level(leaf_hashes, len(leaf_hashes))]
    while len(levels[-1]) > 1:
        levels.append(_parent_level(levels[-1]))
    out: dict[int, list[bytes]] = {}
    for m in wanted:
        roots = []
        start = 0
        for k in range(m.bit_length() - 1, -1, -1):
            if m >> k & 1:
                # Node start >> k of level k spans leaves [start, start + 2**k), all below m:
                # a perfect subtree, never a node carried up from an odd level.
                roots.append(levels[k][start >> k])
                start += 1 << k
        out[m] = roots
    return out
