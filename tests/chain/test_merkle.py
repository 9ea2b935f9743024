"""Tests for chain.merkle: RFC 6962's recursive definitions, published vectors, tampering.

The reference below is RFC 6962 §2.1 written out literally (MTH, PATH, PROOF/SUBPROOF, with k
the largest power of two below n), over raw leaf data and its own SHA-256 calls, so it shares
no code with chain.merkle. Two more reference verifiers rebuild roots by mirroring the PATH and
SUBPROOF recursions; the RFC 9162 verifiers under test must agree with them on every input.
"""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    node_hash,
    proof_from_hex,
    proof_to_hex,
    verify_consistency,
    verify_inclusion,
)

HASHES = st.binary(min_size=32, max_size=32)
SETTINGS = settings(max_examples=150, deadline=None)

# ---------------------------------------------------------------------------------------------
# Reference: RFC 6962 §2.1, literally


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    """The largest power of two strictly smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


class RefTree:
    """MTH, PATH and PROOF over raw data D, recursively, with MTH memoised per (lo, hi).

    Every function works on a slice D[lo:hi]. MTH(D[lo:hi]) does not depend on how many
    more entries D holds, so one RefTree over D serves every tree size up to len(D).
    """

    def __init__(self, data: list[bytes]) -> None:
        self.data = data
        self._mth: dict[tuple[int, int], bytes] = {}

    def mth(self, lo: int, hi: int) -> bytes:
        key = (lo, hi)
        if key not in self._mth:
            n = hi - lo
            if n == 0:
                value = _sha(b"")
            elif n == 1:
                value = _sha(b"\x00" + self.data[lo])
            else:
                k = _k(n)
                value = _sha(b"\x01" + self.mth(lo, lo + k) + self.mth(lo + k, hi))
            self._mth[key] = value
        return self._mth[key]

    def path(self, m: int, lo: int, hi: int) -> list[bytes]:
        """PATH(m, D[lo:hi]), m relative to lo."""
        n = hi - lo
        if n == 1:
            return []
        k = _k(n)
        if m < k:
            return self.path(m, lo, lo + k) + [self.mth(lo + k, hi)]
        return self.path(m - k, lo + k, hi) + [self.mth(lo, lo + k)]

    def subproof(self, m: int, lo: int, hi: int, b: bool) -> list[bytes]:
        """SUBPROOF(m, D[lo:hi], b), m relative to lo."""
        n = hi - lo
        if m == n:
            return [] if b else [self.mth(lo, hi)]
        k = _k(n)
        if m <= k:
            return self.subproof(m, lo, lo + k, b) + [self.mth(lo + k, hi)]
        return self.subproof(m - k, lo + k, hi, False) + [self.mth(lo, lo + k)]

    def proof(self, m: int, n: int) -> list[bytes]:
        """PROOF(m, D[0:n]) for 0 < m < n; empty at the edges m == 0 and m == n."""
        return [] if m in (0, n) else self.subproof(m, 0, n, True)


def ref_path_sides(m: int, n: int) -> tuple[str, ...]:
    """Which side each PATH(m, D[n]) element sits on, deepest first ("L" or "R")."""
    if n == 1:
        return ()
    k = _k(n)
    if m < k:
        return ref_path_sides(m, k) + ("R",)
    return ref_path_sides(m - k, n - k) + ("L",)


def ref_proof_length(m: int, n: int) -> int:
    """len(PROOF(m, D[n])) from the SUBPROOF recursion, for any 0 <= m <= n."""

    def sub(m: int, n: int, b: bool) -> int:
        if m == n:
            return 0 if b else 1
        k = _k(n)
        return 1 + (sub(m, k, b) if m <= k else sub(m - k, n - k, False))

    return 0 if m in (0, n) else sub(m, n, True)


def ref_verify_inclusion(leaf: bytes, m: int, n: int, proof: list[bytes], root: bytes) -> bool:
    """Rebuild the root from a PATH by mirroring its recursion (outermost element is last)."""
    if not 0 <= m < n:
        return False
    remaining = list(proof)

    def rebuild(m: int, n: int) -> bytes | None:
        if n == 1:
            return leaf
        if not remaining:
            return None
        sibling = remaining.pop()
        k = _k(n)
        inner = rebuild(m, k) if m < k else rebuild(m - k, n - k)
        if inner is None:
            return None
        pair = inner + sibling if m < k else sibling + inner
        return _sha(b"\x01" + pair)

    rebuilt = rebuild(m, n)
    return rebuilt is not None and not remaining and rebuilt == root


def ref_verify_consistency(m: int, n: int, old_root: bytes, new_root: bytes, proof: list[bytes]) -> bool:
    """Rebuild both roots from a PROOF by mirroring SUBPROOF (outermost element is last)."""
    if m > n or m < 0:
        return False
    if m == n:
        return not proof and old_root == new_root and (m > 0 or old_root == _sha(b""))
    if m == 0:
        return not proof and old_root == _sha(b"")
    remaining = list(proof)

    def rebuild(m: int, n: int, b: bool) -> tuple[bytes, bytes] | None:
        """(MTH of the old part, MTH of the whole) of the current subtree."""
        if m == n:
            if b:  # the subtree is the old tree itself, whose root the verifier holds
                return old_root, old_root
            if not remaining:
                return None
            h = remaining.pop()
            return h, h
        if not remaining:
            return None
        outer = remaining.pop()
        k = _k(n)
        if m <= k:
            inner = rebuild(m, k, b)
            if inner is None:
                return None
            return inner[0], _sha(b"\x01" + inner[1] + outer)
        inner = rebuild(m - k, n - k, False)
        if inner is None:
            return None
        return _sha(b"\x01" + outer + inner[0]), _sha(b"\x01" + outer + inner[1])

    rebuilt = rebuild(m, n, True)
    return rebuilt is not None and not remaining and rebuilt == (old_root, new_root)


# Unique entries: with no two leaves alike, a proof for one position can never fit another.
MAX_N = 300
DATA = [b"peerwatt leaf %d" % i for i in range(MAX_N)]
LEAVES = [leaf_hash(d) for d in DATA]
REF = RefTree(DATA)
TREES = {n: MerkleTree(LEAVES[:n]) for n in range(0, MAX_N + 1)}


# ---------------------------------------------------------------------------------------------
# Hashing and roots


def test_leaf_and_node_hash_use_rfc6962_domain_separation() -> None:
    assert leaf_hash(b"abc") == _sha(b"\x00abc")
    assert node_hash(b"L" * 32, b"R" * 32) == _sha(b"\x01" + b"L" * 32 + b"R" * 32)
    assert EMPTY_ROOT == _sha(b"") == merkle_root([]) == MerkleTree([]).root


def test_root_equals_reference_mth_for_every_size_up_to_300() -> None:
    for n in range(0, MAX_N + 1):
        expected = REF.mth(0, n)
        assert merkle_root(LEAVES[:n]) == expected, n
        assert TREES[n].root == expected, n
        assert TREES[n].size == n


def test_root_at_equals_reference_mth_for_every_prefix() -> None:
    for n in (1, 2, 3, 7, 8, 9, 64, 100, 255, 256, 257, MAX_N):
        for m in range(0, n + 1):
            assert TREES[n].root_at(m) == REF.mth(0, m), (m, n)


@SETTINGS
@given(st.lists(st.binary(max_size=40), max_size=70))
def test_root_of_arbitrary_data_equals_reference(data: list[bytes]) -> None:
    """Empty and repeated entries included: the root depends only on D."""
    assert merkle_root([leaf_hash(d) for d in data]) == RefTree(data).mth(0, len(data))


# ---------------------------------------------------------------------------------------------
# Known answers: RFC 6962 test vectors from Certificate Transparency's suite, as published in
# github.com/transparency-dev/merkle (testonly/constants.go and proof/verify_test.go; that
# file numbers leaves from 1, the indices below are 0-based).

CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
CT_ROOTS = [  # by tree size 0..8
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_LEAF_HASHES = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
]
CT_INCLUSION = [  # (leaf index, tree size, audit path)
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CT_CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
CT_HASHES = [leaf_hash(d) for d in CT_LEAVES]


def test_known_answer_empty_root() -> None:
    assert EMPTY_ROOT.hex() == CT_ROOTS[0]


def test_known_answer_leaf_hashes() -> None:
    assert [h.hex() for h in CT_HASHES] == CT_LEAF_HASHES


@pytest.mark.parametrize("size", range(0, 9))
def test_known_answer_roots(size: int) -> None:
    assert merkle_root(CT_HASHES[:size]).hex() == CT_ROOTS[size]
    assert MerkleTree(CT_HASHES).root_at(size).hex() == CT_ROOTS[size]


def test_known_answer_root_of_all_eight() -> None:
    expected = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    assert merkle_root(CT_HASHES).hex() == expected


@pytest.mark.parametrize(("index", "size", "path"), CT_INCLUSION)
def test_known_answer_inclusion(index: int, size: int, path: list[str]) -> None:
    proof = inclusion_proof(CT_HASHES[:size], index)
    assert proof_to_hex(proof) == path
    root = bytes.fromhex(CT_ROOTS[size])
    assert verify_inclusion(CT_HASHES[index], index, size, proof_from_hex(path), root)


@pytest.mark.parametrize(("old_size", "new_size", "path"), CT_CONSISTENCY)
def test_known_answer_consistency(old_size: int, new_size: int, path: list[str]) -> None:
    proof = consistency_proof(CT_HASHES[:new_size], old_size)
    assert proof_to_hex(proof) == path
    old_root, new_root = bytes.fromhex(CT_ROOTS[old_size]), bytes.fromhex(CT_ROOTS[new_size])
    assert verify_consistency(old_size, new_size, old_root, new_root, proof_from_hex(path))


# ---------------------------------------------------------------------------------------------
# Exhaustive agreement with the reference


def test_every_inclusion_proof_up_to_300_leaves_equals_path_and_verifies() -> None:
    for n in range(1, MAX_N + 1):
        tree, root = TREES[n], REF.mth(0, n)
        for i in range(n):
            proof = tree.inclusion_proof(i)
            assert proof == REF.path(i, 0, n), (i, n)
            assert verify_inclusion(LEAVES[i], i, n, proof, root), (i, n)


def _consistency_pairs() -> list[tuple[int, int]]:
    """Every (m, n) with m <= n <= 64; beyond, the edges, powers of two and a seeded sample."""
    pairs = [(m, n) for n in range(1, 65) for m in range(0, n + 1)]
    rng = random.Random(6962)
    for n in range(65, MAX_N + 1):
        ms = {0, 1, 2, n // 2, n - 2, n - 1, n}
        ms.update(1 << e for e in range(n.bit_length()) if 1 << e < n)
        ms.update(rng.randrange(1, n) for _ in range(4))
        pairs.extend((m, n) for m in sorted(ms))
    return pairs


def test_every_consistency_proof_equals_reference_and_verifies() -> None:
    for m, n in _consistency_pairs():
        proof = TREES[n].consistency_proof(m)
        assert proof == REF.proof(m, n), (m, n)
        assert len(proof) == ref_proof_length(m, n), (m, n)
        assert verify_consistency(m, n, REF.mth(0, m), REF.mth(0, n), proof), (m, n)


def test_free_functions_agree_with_the_tree() -> None:
    for n in (1, 2, 3, 5, 8, 13, 64, 65, 300):
        leaves = LEAVES[:n]
        for i in {0, n // 3, n - 1}:
            assert inclusion_proof(leaves, i) == TREES[n].inclusion_proof(i)
        for m in {0, 1, n // 2, n - 1, n}:
            assert consistency_proof(leaves, m) == TREES[n].consistency_proof(m)


def test_edge_cases_of_consistency() -> None:
    root5 = REF.mth(0, 5)
    assert verify_consistency(5, 5, root5, root5, [])
    assert not verify_consistency(5, 5, root5, REF.mth(0, 6), [])
    assert not verify_consistency(5, 5, root5, root5, [root5])
    assert verify_consistency(0, 5, EMPTY_ROOT, root5, [])
    assert not verify_consistency(0, 5, root5, root5, [])  # the empty tree's root is fixed
    assert not verify_consistency(0, 5, EMPTY_ROOT, root5, [root5])
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert not verify_consistency(0, 0, root5, root5, [])
    assert not verify_consistency(6, 5, REF.mth(0, 6), root5, [])
    assert not verify_consistency(2, 5, REF.mth(0, 2), root5, [])  # RFC 9162 step 1


def test_tree_size_is_bound_only_by_the_root() -> None:
    """Documented RFC 9162 behaviour, shared by the recursive reference: proofs do not pin the
    sizes, so a verifier must take (size, root) together from one sealed header."""
    proof, root = TREES[5].inclusion_proof(0), REF.mth(0, 5)
    assert [s for s in range(1, 12) if verify_inclusion(LEAVES[0], 0, s, proof, root)] == [
        5,
        6,
        7,
        8,
    ]
    old, new, proof = REF.mth(0, 1), REF.mth(0, 150), TREES[150].consistency_proof(1)
    assert verify_consistency(1, 150, old, new, proof)
    assert verify_consistency(2, 301, old, new, proof)
    assert ref_verify_consistency(2, 301, old, new, proof)


# ---------------------------------------------------------------------------------------------
# Tampering (hypothesis)


def _flip_bit(proof: list[bytes], element: int, bit: int) -> list[bytes]:
    changed = bytearray(proof[element])
    changed[bit // 8] ^= 1 << (bit % 8)
    return proof[:element] + [bytes(changed)] + proof[element + 1 :]


@st.composite
def inclusion_cases(draw: st.DrawFn) -> tuple[int, int, list[bytes], bytes]:
    n = draw(st.integers(1, MAX_N))
    i = draw(st.integers(0, n - 1))
    return i, n, TREES[n].inclusion_proof(i), REF.mth(0, n)


@SETTINGS
@given(inclusion_cases(), st.data())
def test_inclusion_with_a_flipped_bit_fails(case, data) -> None:
    i, n, proof, root = case
    assert verify_inclusion(LEAVES[i], i, n, proof, root)
    if proof:
        element = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        assert not verify_inclusion(LEAVES[i], i, n, _flip_bit(proof, element, bit), root)
    bit = data.draw(st.integers(0, 255))
    assert not verify_inclusion(_flip_bit([LEAVES[i]], 0, bit)[0], i, n, proof, root)
    assert not verify_inclusion(LEAVES[i], i, n, proof, _flip_bit([root], 0, bit)[0])


@SETTINGS
@given(inclusion_cases(), st.data())
def test_inclusion_at_a_wrong_index_fails(case, data) -> None:
    i, n, proof, root = case
    j = data.draw(st.integers(0, 2 * n + 2).filter(lambda j: j != i))
    assert not verify_inclusion(LEAVES[i], j, n, proof, root)
    assert not ref_verify_inclusion(LEAVES[i], j, n, proof, root)


@SETTINGS
@given(inclusion_cases(), st.data())
def test_inclusion_at_a_wrong_size_fails_unless_the_path_has_the_same_shape(case, data) -> None:
    i, n, proof, root = case
    size = data.draw(st.integers(0, 2 * n + 2).filter(lambda s: s != n))
    same_shape = i < size and ref_path_sides(i, size) == ref_path_sides(i, n)
    assert verify_inclusion(LEAVES[i], i, size, proof, root) is same_shape
    assert ref_verify_inclusion(LEAVES[i], i, size, proof, root) is same_shape


@SETTINGS
@given(inclusion_cases(), st.data(), HASHES)
def test_inclusion_with_a_truncated_or_extended_proof_fails(case, data, extra) -> None:
    i, n, proof, root = case
    at = data.draw(st.integers(0, len(proof)))
    for longer in (proof[:at] + [extra] + proof[at:], proof + [root], proof + [b""]):
        assert not verify_inclusion(LEAVES[i], i, n, longer, root)
    if proof:
        drop = data.draw(st.integers(0, len(proof) - 1))
        shorter = proof[:drop] + proof[drop + 1 :]
        assert not verify_inclusion(LEAVES[i], i, n, shorter, root)
        assert not verify_inclusion(LEAVES[i], i, n, proof[:-1], root)


@SETTINGS
@given(inclusion_cases(), HASHES)
def test_inclusion_against_a_different_root_fails(case, other) -> None:
    i, n, proof, root = case
    assert verify_inclusion(LEAVES[i], i, n, proof, other) is (other == root)
    assert not verify_inclusion(LEAVES[i], i, n, proof, EMPTY_ROOT)


@st.composite
def consistency_cases(draw: st.DrawFn) -> tuple[int, int, list[bytes], bytes, bytes]:
    n = draw(st.integers(2, MAX_N))
    m = draw(st.integers(1, n - 1))
    return m, n, TREES[n].consistency_proof(m), REF.mth(0, m), REF.mth(0, n)


@SETTINGS
@given(consistency_cases(), st.data())
def test_consistency_with_a_flipped_bit_fails(case, data) -> None:
    m, n, proof, old_root, new_root = case
    assert verify_consistency(m, n, old_root, new_root, proof)
    element = data.draw(st.integers(0, len(proof) - 1))
    bit = data.draw(st.integers(0, 255))
    assert not verify_consistency(m, n, old_root, new_root, _flip_bit(proof, element, bit))


@SETTINGS
@given(consistency_cases(), st.data(), HASHES)
def test_consistency_with_a_truncated_or_extended_proof_fails(case, data, extra) -> None:
    m, n, proof, old_root, new_root = case
    at = data.draw(st.integers(0, len(proof)))
    drop = data.draw(st.integers(0, len(proof) - 1))
    for tampered in (
        proof[:at] + [extra] + proof[at:],
        proof + [new_root],
        [old_root] + proof,
        proof + [b""],
        proof[:drop] + proof[drop + 1 :],
        proof[:-1],
        [],
    ):
        assert not verify_consistency(m, n, old_root, new_root, tampered)


@SETTINGS
@given(consistency_cases(), HASHES)
def test_consistency_against_different_roots_fails(case, other) -> None:
    m, n, proof, old_root, new_root = case
    assert verify_consistency(m, n, other, new_root, proof) is (other == old_root)
    assert verify_consistency(m, n, old_root, other, proof) is (other == new_root)
    assert not verify_consistency(m, n, new_root, old_root, proof)


@SETTINGS
@given(consistency_cases(), st.data())
def test_consistency_at_wrong_sizes_agrees_with_the_reference(case, data) -> None:
    """A wrong size fails whenever PROOF for the claimed sizes has another length; in every
    case the RFC 9162 verifier agrees with the verifier that mirrors SUBPROOF."""
    m, n, proof, old_root, new_root = case
    m2 = data.draw(st.integers(0, n + 3))
    n2 = data.draw(st.integers(0, 2 * n + 2))
    if (m2, n2) == (m, n):
        return
    result = verify_consistency(m2, n2, old_root, new_root, proof)
    assert result is ref_verify_consistency(m2, n2, old_root, new_root, proof)
    if not 0 <= m2 <= n2 or ref_proof_length(m2, n2) != len(proof):
        assert result is False


@SETTINGS
@given(consistency_cases(), st.data(), HASHES)
def test_tampered_consistency_proofs_agree_with_the_reference(case, data, extra) -> None:
    m, n, proof, old_root, new_root = case
    element = data.draw(st.integers(0, len(proof) - 1))
    tampered = [
        proof[:element] + [extra] + proof[element + 1 :],
        proof[:element] + proof[element + 1 :],
        proof[:element] + [extra] + proof[element:],
    ]
    for candidate in tampered:
        assert verify_consistency(m, n, old_root, new_root, candidate) is ref_verify_consistency(
            m, n, old_root, new_root, candidate
        )


# ---------------------------------------------------------------------------------------------
# Malformed input: verifiers say False, never raise

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=70),
    st.binary(max_size=70),
    st.lists(st.one_of(st.binary(max_size=40), st.text(max_size=5), st.integers()), max_size=5),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(JUNK, JUNK, JUNK, JUNK, JUNK)
def test_verifiers_never_raise_on_junk(a, b, c, d, e) -> None:
    assert isinstance(verify_inclusion(a, b, c, d, e), bool)
    assert isinstance(verify_consistency(a, b, c, d, e), bool)


def test_verify_inclusion_rejects_malformed_input() -> None:
    leaf, root, proof = LEAVES[5], REF.mth(0, 8), TREES[8].inclusion_proof(5)
    assert verify_inclusion(leaf, 5, 8, proof, root)
    assert verify_inclusion(leaf, 5, 8, tuple(proof), root)
    assert verify_inclusion(LEAVES[1], 1, 2, [LEAVES[0]], REF.mth(0, 2))
    bad_calls = [
        (leaf, 8, 8, proof, root),  # index == size
        (leaf, 9, 8, proof, root),
        (leaf, -1, 8, proof, root),
        (leaf, 5, 0, proof, root),
        (leaf, 5, -8, proof, root),
        (leaf, 5.0, 8, proof, root),
        (LEAVES[1], True, 2, [LEAVES[0]], REF.mth(0, 2)),  # valid with 1, but bool is no index
        (leaf, 5, 2**64, proof, root),
        (leaf, 5, "8", proof, root),
        (leaf[:31], 5, 8, proof, root),
        (leaf + b"\x00", 5, 8, proof, root),
        (bytearray(leaf), 5, 8, proof, root),
        (leaf.hex(), 5, 8, proof, root),
        (leaf, 5, 8, proof, root[:31]),
        (leaf, 5, 8, proof, None),
        (leaf, 5, 8, None, root),
        (leaf, 5, 8, b"".join(proof), root),
        (leaf, 5, 8, iter(proof), root),
        (leaf, 5, 8, [p.hex() for p in proof], root),
        (leaf, 5, 8, proof[:2] + [proof[2][:31]], root),
        (leaf, 5, 8, proof[:2] + [bytearray(proof[2])], root),
        (leaf, 5, 8, proof + [None], root),
    ]
    for args in bad_calls:
        assert verify_inclusion(*args) is False, args


def test_verify_consistency_rejects_malformed_input() -> None:
    old, new, proof = REF.mth(0, 6), REF.mth(0, 8), TREES[8].consistency_proof(6)
    assert verify_consistency(6, 8, old, new, proof)
    bad_calls = [
        (8, 6, old, new, proof),
        (-6, 8, old, new, proof),
        (6, 2**64, old, new, proof),
        (6.0, 8, old, new, proof),
        (True, 8, REF.mth(0, 1), new, TREES[8].consistency_proof(1)),
        (6, 8, old[:31], new, proof),
        (6, 8, old, bytearray(new), proof),
        (6, 8, old, new, None),
        (6, 8, old, new, "proof"),
        (6, 8, old, new, b"".join(proof)),
        (6, 8, old, new, [proof[0][:31]] + proof[1:]),
        (6, 8, old, new, proof[:2] + [proof[2].hex()]),
        (6, 8, old, new, proof + [None]),
        (4, 8, REF.mth(0, 4), new, [b"short"]),
    ]
    for args in bad_calls:
        assert verify_consistency(*args) is False, args


# ---------------------------------------------------------------------------------------------
# Producers refuse bad arguments


def test_producers_reject_bad_leaves_and_positions() -> None:
    with pytest.raises(ValueError, match=r"leaf_hashes\[1\] is 31 bytes"):
        merkle_root([LEAVES[0], LEAVES[1][:31]])
    with pytest.raises(TypeError, match=r"leaf_hashes\[0\] is str"):
        MerkleTree(["00" * 32])
    with pytest.raises(TypeError, match=r"leaf_hashes\[2\] is bytearray"):
        merkle_root([LEAVES[0], LEAVES[1], bytearray(LEAVES[2])])
    tree = TREES[5]
    for bad in (5, -1, 99):
        with pytest.raises(ValueError, match="outside a tree of 5 leaves"):
            tree.inclusion_proof(bad)
    with pytest.raises(ValueError, match="outside a tree of 0 leaves"):
        TREES[0].inclusion_proof(0)
    for bad in (6, -1):
        with pytest.raises(ValueError, match="outside 0..5"):
            tree.consistency_proof(bad)
        with pytest.raises(ValueError, match="outside 0..5"):
            tree.root_at(bad)
    for bad_type in (1.0, True, "1"):
        with pytest.raises(TypeError, match="must be an int"):
            tree.inclusion_proof(bad_type)
        with pytest.raises(TypeError, match="must be an int"):
            tree.consistency_proof(bad_type)


def test_tree_copies_its_leaves() -> None:
    leaves = LEAVES[:4]
    tree = MerkleTree(leaves)
    leaves[0] = LEAVES[10]
    assert tree.root == REF.mth(0, 4)
    assert tree.inclusion_proof(1)[0] == LEAVES[0]


def test_accepts_any_sequence_of_leaf_hashes() -> None:
    assert merkle_root(tuple(LEAVES[:9])) == merkle_root(iter(LEAVES[:9])) == REF.mth(0, 9)


# ---------------------------------------------------------------------------------------------
# Hex form for receipts


@SETTINGS
@given(st.lists(HASHES, max_size=70))
def test_hex_round_trip(proof: list[bytes]) -> None:
    text = proof_to_hex(proof)
    assert all(isinstance(t, str) and len(t) == 64 and t == t.lower() for t in text)
    assert proof_from_hex(text) == proof
    assert proof_from_hex(tuple(text)) == proof


@pytest.mark.parametrize(
    "bad",
    [
        "00" * 32,  # a string, not a list of strings
        None,
        {"proof": []},
        [b"\x00" * 32],
        [None],
        [32],
        ["00" * 31],
        ["00" * 33],
        ["AB" * 32],  # upper case: one canonical form only
        ["zz" * 32],
        ["00" * 31 + " 0"],  # bytes.fromhex would skip the space
        ["00" * 32 + "\n"],
        ["0x" + "00" * 31],
        ["00" * 32, "0"],
    ],
)
def test_proof_from_hex_rejects_bad_input(bad) -> None:
    with pytest.raises(ValueError, match="proof"):
        proof_from_hex(bad)


@pytest.mark.parametrize("bad", [[b"\x00" * 31], [b"\x00" * 33], ["00" * 32], [None]])
def test_proof_to_hex_rejects_non_hashes(bad) -> None:
    with pytest.raises(ValueError, match=r"proof\[0\] is not a 32-byte hash"):
        proof_to_hex(bad)
