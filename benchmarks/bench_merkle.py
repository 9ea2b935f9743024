"""Benchmark chain.merkle: roots and proofs of a 1,000,000-leaf tree, one core.

Prints one table. The baseline, measured in the same run, is RFC 6962's recursive definition
written out directly (MTH and PATH over list slices, k = largest power of two below n) on a
smaller tree; rates are per leaf or per proof so the two columns compare. For verification
there is no slower design to beat, so the baseline column there is the floor: the bare
hashlib calls the verification must make anyway.

Run: .venv/bin/python benchmarks/bench_merkle.py [--leaves N] [--proofs N] [--baseline-leaves N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import random
import sys
import time
from collections.abc import Callable

from chain.merkle import (
    MerkleTree,
    leaf_hash,
    merkle_root,
    verify_consistency,
    verify_inclusion,
)


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def reference_mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1 MTH over leaf hashes, recursively (the textbook implementation)."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = _k(n)
    return hashlib.sha256(b"\x01" + reference_mth(leaves[:k]) + reference_mth(leaves[k:])).digest()


def reference_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(m, D[n]), recursively, recomputing every MTH it needs."""
    n = len(leaves)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return reference_path(m, leaves[:k]) + [reference_mth(leaves[k:])]
    return reference_path(m - k, leaves[k:]) + [reference_mth(leaves[:k])]


def timed(action: Callable[[], object], repeat: int = 1) -> float:
    """Best wall-clock seconds of ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=10_000)
    parser.add_argument("--baseline-leaves", type=int, default=100_000)
    parser.add_argument("--baseline-proofs", type=int, default=10)
    args = parser.parse_args()
    n, n_proofs, n_base = args.leaves, args.proofs, args.baseline_leaves
    if n < 2 or n_proofs < 1 or n_base < 2 or args.baseline_proofs < 1:
        parser.error("need at least 2 leaves and 1 proof on each side")
    rng = random.Random(6962)

    start = time.perf_counter()
    leaves = [leaf_hash(i.to_bytes(8, "big")) for i in range(n)]
    leaf_hashing_s = time.perf_counter() - start

    root_s = timed(lambda: merkle_root(leaves), repeat=3)
    start = time.perf_counter()
    tree = MerkleTree(leaves)
    build_s = time.perf_counter() - start
    root = tree.root
    assert root == merkle_root(leaves)

    indices = [rng.randrange(n) for _ in range(n_proofs)]
    start = time.perf_counter()
    proofs = [tree.inclusion_proof(i) for i in indices]
    proofs_s = time.perf_counter() - start

    def verify_all_inclusions() -> None:
        for i, proof in zip(indices, proofs, strict=True):
            if not verify_inclusion(leaves[i], i, n, proof, root):
                raise AssertionError(f"inclusion proof of leaf {i} did not verify")

    verify_inclusion_s = timed(verify_all_inclusions)

    old_sizes = [rng.randrange(1, n) for _ in range(n_proofs)]
    start = time.perf_counter()
    consistency = [(m, tree.root_at(m), tree.consistency_proof(m)) for m in old_sizes]
    consistency_proofs_s = time.perf_counter() - start

    def verify_all_consistency() -> None:
        for m, old_root, proof in consistency:
            if not verify_consistency(m, n, old_root, root, proof):
                raise AssertionError(f"consistency proof from size {m} did not verify")

    verify_consistency_s = timed(verify_all_consistency)

    # Floor for verification, as bare hashlib calls: an inclusion proof costs one node hash per
    # element; a consistency proof at least one per element (the new root; the old root's
    # hashes come on top, so that floor is a lower bound).
    inclusion_hashes = sum(len(p) for p in proofs)
    consistency_hashes = sum(len(p) for _, _, p in consistency)
    pair = b"\x01" + bytes(64)
    hash_s = timed(lambda: [hashlib.sha256(pair).digest() for _ in range(200_000)]) / 200_000

    base_leaves = leaves[:n_base]
    base_root_s = timed(lambda: reference_mth(base_leaves))
    assert reference_mth(base_leaves) == merkle_root(base_leaves)
    base_indices = [rng.randrange(n_base) for _ in range(args.baseline_proofs)]
    start = time.perf_counter()
    base_proofs = [reference_path(i, base_leaves) for i in base_indices]
    base_proofs_s = time.perf_counter() - start
    base_tree = MerkleTree(base_leaves)
    assert base_proofs == [base_tree.inclusion_proof(i) for i in base_indices]

    rows = [
        (
            f"root of {n:,} leaves (s)",
            f"{root_s:.3f}",
            f"{base_root_s * n / n_base:.3f} (est.)",
            "",
        ),
        (
            "root, leaves/s",
            f"{n / root_s:,.0f}",
            f"{n_base / base_root_s:,.0f}",
            f"{base_root_s / n_base / (root_s / n):.1f}x",
        ),
        (
            f"inclusion proofs, {n_proofs:,} of {n:,} leaves (proofs/s)",
            f"{n_proofs / proofs_s:,.0f}",
            f"{args.baseline_proofs / base_proofs_s:,.1f} ({n_base:,} leaves)",
            f"{(n_proofs / proofs_s) / (args.baseline_proofs / base_proofs_s):,.0f}x",
        ),
        (
            f"  same, incl. building the tree ({build_s:.2f} s) (proofs/s)",
            f"{n_proofs / (build_s + proofs_s):,.0f}",
            "",
            "",
        ),
        (
            "inclusion proof verify/s",
            f"{n_proofs / verify_inclusion_s:,.0f}",
            f"{n_proofs / (inclusion_hashes * hash_s):,.0f} (hash floor)",
            f"{(inclusion_hashes * hash_s) / verify_inclusion_s:.2f}x of floor",
        ),
        (
            "consistency proof build/s (proof + old root)",
            f"{n_proofs / consistency_proofs_s:,.0f}",
            "",
            "",
        ),
        (
            "consistency proof verify/s",
            f"{n_proofs / verify_consistency_s:,.0f}",
            f"{n_proofs / (consistency_hashes * hash_s):,.0f} (hash floor)",
            f"{(consistency_hashes * hash_s) / verify_consistency_s:.2f}x of floor",
        ),
    ]
    header = ("measurement", "chain.merkle", "baseline", "ratio")
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(4)]
    print(
        f"chain.merkle benchmark: Python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs (one core used)"
    )
    print(
        f"baseline: RFC 6962 recursive MTH/PATH over slices on {n_base:,} leaves; "
        f"setup: {n:,} leaf hashes in {leaf_hashing_s:.2f} s; "
        f"bare SHA-256 node hash {hash_s * 1e9:.0f} ns"
    )
    line = "  ".join("-" * w for w in widths)
    print(line)
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    print(line)
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        print("  ".join(cells).rstrip())
    print(line)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
