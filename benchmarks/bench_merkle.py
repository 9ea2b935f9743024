"""Benchmark chain.merkle: roots and proofs of a 1,000,000-leaf tree, one core.

Prints one table. No maintained Python library implements RFC 6962/9162 proofs to compare with
(docs/benchmarks.md), and a deliberately slow textbook version would flatter us, so the baseline
is the floor, measured in the same run: the bare hashlib calls that a root, a proof check or a
consistency check must make anyway (n - 1 node hashes for a root; one per proof element).
Proof generation has no floor worth the name and is given as an absolute rate. Correctness of
the trees against RFC 6962's recursive definitions is the job of tests/chain/test_merkle.py.

Run: .venv/bin/python benchmarks/bench_merkle.py [--leaves N] [--proofs N]
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fair import goal_row  # noqa: E402

from chain.merkle import (
    MerkleTree,
    leaf_hash,
    merkle_root,
    verify_consistency,
    verify_inclusion,
)


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
    args = parser.parse_args()
    n, n_proofs = args.leaves, args.proofs
    if n < 2 or n_proofs < 1:
        parser.error("need at least 2 leaves and 1 proof")
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

    rows = [
        (
            f"root of {n:,} leaves (s)",
            f"{root_s:.3f}",
            f"{(n - 1) * hash_s:.3f} (hash floor)",
            f"{(n - 1) * hash_s / root_s:.2f}x of floor",
        ),
        (
            f"inclusion proofs, {n_proofs:,} of {n:,} leaves (proofs/s)",
            f"{n_proofs / proofs_s:,.0f}",
            "",
            "",
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
        "baseline: the bare SHA-256 calls each operation must make (the floor); "
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
    goal_row(
        f"Merkle root of {n:,} leaves (absolute: no maintained Python RFC 6962 library to run)",
        f"{root_s:.3f} s, {(n - 1) * hash_s / root_s:.2f}× the bare-hash floor ({(n - 1) * hash_s:.3f} s)",
        "— (context)",
        None,
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
