"""Benchmark the trust primitives on one core: signatures, envelope intake, Merkle roots and proofs.

Prints one table. The baselines are the raw library calls, measured in the same run and
interleaved round by round with what they are compared to (best of N rounds, benchmarks/fair.py):
`EllipticCurvePublicKey.verify` / `EllipticCurvePrivateKey.sign` of `cryptography` with a DER
signature made beforehand (the ceiling for order intake: every order costs one verify), and the
pure-Python `ecdsa` package. Target: envelope parse + verify >= 0.7x the raw verify rate.

Run: .venv/bin/python benchmarks/bench_crypto.py [--n N] [--leaves N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import ecdsa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from ecdsa.util import sigdecode_string, sigencode_string

from chain.envelope import parse_envelope, sign_envelope, verify_envelope
from chain.keys import generate_private_key, public_key_sec1
from chain.merkle import MerkleTree, leaf_hash, merkle_root, verify_inclusion
from chain.signature import b64url_decode, sign, verify

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fair import goal_row, interleaved_rates  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (best is kept)")
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

    der = encode_dss_signature(int.from_bytes(raw_sig[:32], "big"), int.from_bytes(raw_sig[32:], "big"))
    algorithm = ec.ECDSA(hashes.SHA256())
    signer = env.signer

    def intake() -> None:  # as a node does it: the key is looked up by the signer's key id
        verify_envelope(
            parse_envelope(wire, community="oak-street", now=1_764_000_000), public, key_id_hex=signer
        )

    fast = interleaved_rates(
        {
            "raw cryptography verify (baseline)": lambda: public.verify(der, data, algorithm),
            "chain.signature.verify (low-S, b64url)": lambda: verify(public, data, sig),
            "envelope parse+verify": intake,
            "envelope parse only": lambda: parse_envelope(wire, community="oak-street", now=1_764_000_000),
            "raw cryptography sign": lambda: key.sign(data, algorithm),
            "chain.signature.sign (RFC 6979, low-S)": lambda: sign(key, data),
        },
        args.n,
        args.rounds,
    )
    slow = interleaved_rates(
        {
            "ecdsa (pure Python) sign": lambda: sk.sign(
                data, hashfunc=hashlib.sha256, sigencode=sigencode_string
            ),
            "ecdsa (pure Python) verify": lambda: vk.verify(
                raw_sig, data, hashfunc=hashlib.sha256, sigdecode=sigdecode_string
            ),
        },
        slow_n,
        max(3, args.rounds // 2),
        warmup=5,
    )
    rows: list[tuple[str, float, str]] = [(name, value, "/s") for name, value in {**fast, **slow}.items()]
    raw_verify = fast["raw cryptography verify (baseline)"]
    envelope_rate = fast["envelope parse+verify"]

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
    rows.append(("inclusion-proof verify", interleaved_rates({"p": check_proof}, args.n, 3)["p"], "/s"))

    print(
        f"{'measurement (one core, best of ' + str(args.rounds) + ' interleaved rounds)':<48} {'value':>14}"
    )
    print("-" * 64)
    for name, value, unit in rows:
        text = f"{value:,.3f} s" if unit == "s" else f"{value:,.0f}/s"
        print(f"{name:<48} {text:>14}")
    ratio = envelope_rate / raw_verify
    print("-" * 64)
    print(
        f"envelope parse+verify / raw verify = {ratio:.2f}x (target >= 0.70x): "
        f"{'met' if ratio >= 0.7 else 'NOT met'}"
    )
    goal_row(
        "envelope parse+verify ÷ raw `cryptography` verify, one core",
        f"{envelope_rate:,.0f} / {raw_verify:,.0f} per s = {ratio:.2f}×",
        "≥ 0.7×",
        ratio >= 0.7,
    )


if __name__ == "__main__":
    main()
