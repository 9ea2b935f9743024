"""Benchmark the trust primitives on one core: signatures, envelope intake, Merkle roots and proofs.

Prints one table. Baselines measured in the same run: raw `cryptography` verify (the ceiling for
order intake: every order costs one verify) and the pure-Python `ecdsa` package.
Target: envelope parse + verify >= 0.7x the raw `cryptography` verify rate.

Run: .venv/bin/python benchmarks/bench_crypto.py [--n N] [--leaves N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from collections.abc import Callable

import ecdsa
from ecdsa.util import sigdecode_string, sigencode_string

from chain.envelope import parse_envelope, sign_envelope, verify_envelope
from chain.keys import generate_private_key, public_key_sec1
from chain.merkle import MerkleTree, leaf_hash, merkle_root, verify_inclusion
from chain.signature import b64url_decode, sign, verify


def rate(fn: Callable[[], None], n: int) -> float:
    """Calls per second of ``fn`` over ``n`` calls (after a short warm-up)."""
    for _ in range(min(50, n)):
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="operations per measurement")
    parser.add_argument("--leaves", type=int, default=1_000_000, help="Merkle tree size")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core

    key = generate_private_key()
    public = key.public_key()
    data = b"peerwatt/v1\n" + b"x" * 150
    sig = sign(key, data)
    env = sign_envelope(
        key,
        type="order",
        community="oak-street",
        seq=1,
        created=1_764_000_000,
        body={"side": "sell", "interval": 1_764_000_900, "energy_wh": 500, "limit_price": 120_000},
    )
    wire = env.to_bytes()
    sk = ecdsa.SigningKey.generate(curve=ecdsa.NIST256p)
    vk = ecdsa.VerifyingKey.from_string(public_key_sec1(public), curve=ecdsa.NIST256p)
    raw_sig = b64url_decode(sig)
    slow_n = max(200, args.n // 10)

    rows: list[tuple[str, float, str]] = []
    raw_verify = rate(lambda: verify(public, data, sig), args.n)
    rows.append(("cryptography sign", rate(lambda: sign(key, data), args.n), "/s"))
    rows.append(("cryptography verify (baseline)", raw_verify, "/s"))
    rows.append(
        (
            "ecdsa sign",
            rate(lambda: sk.sign(data, hashfunc=hashlib.sha256, sigencode=sigencode_string), slow_n),
            "/s",
        )
    )
    rows.append(
        (
            "ecdsa verify",
            rate(
                lambda: vk.verify(raw_sig, data, hashfunc=hashlib.sha256, sigdecode=sigdecode_string), slow_n
            ),
            "/s",
        )
    )

    signer = env.signer

    def intake() -> None:  # as a node does it: the key is looked up by the signer's key id
        verify_envelope(
            parse_envelope(wire, community="oak-street", now=1_764_000_000), public, key_id_hex=signer
        )

    envelope_rate = rate(intake, args.n)
    rows.append(("envelope parse+verify", envelope_rate, "/s"))
    rows.append(
        (
            "envelope parse only",
            rate(lambda: parse_envelope(wire, community="oak-street", now=1_764_000_000), args.n),
            "/s",
        )
    )

    leaves = [leaf_hash(i.to_bytes(8, "big")) for i in range(args.leaves)]
    start = time.perf_counter()
    root = merkle_root(leaves)
    root_s = time.perf_counter() - start
    tree = MerkleTree(leaves)
    proofs = [(i, tree.inclusion_proof(i)) for i in range(0, args.leaves, max(1, args.leaves // 1000))]
    it = iter(range(10**9))

    def check_proof() -> None:
        index, proof = proofs[next(it) % len(proofs)]
        assert verify_inclusion(leaves[index], index, args.leaves, proof, root)

    rows.append((f"Merkle root of {args.leaves:,} leaves", root_s, "s"))
    rows.append(("inclusion-proof verify", rate(check_proof, args.n), "/s"))

    print(f"{'measurement (one core)':<40} {'value':>14}")
    print("-" * 56)
    for name, value, unit in rows:
        text = f"{value:,.3f} s" if unit == "s" else f"{value:,.0f}/s"
        print(f"{name:<40} {text:>14}")
    ratio = envelope_rate / raw_verify
    print("-" * 56)
    print(
        f"envelope parse+verify / raw verify = {ratio:.2f}x (target >= 0.70x): "
        f"{'met' if ratio >= 0.7 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
