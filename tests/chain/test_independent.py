"""`chain.independent`: signatures re-checked with `ecdsa`, encodings with `rfc8785`, a store
walked block by block alongside `verify_store` (stores from tests/support/localnet.py, a few blocks)."""

from __future__ import annotations

import json
import sqlite3

import pytest
import rfc8785
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from chain import independent
from chain.keys import public_key_sec1
from chain.kvapp import KeyValueApp
from chain.signature import CURVE_ORDER, SignatureError, b64url_decode, b64url_encode, sign, verify
from chain.store import DB_NAME, Store
from chain.verify import VerifyError, verify_store
from market.app import MarketApp
from peerwatt.node.erasure import erase_departed
from tests.support.localnet import make_community
from tests.support.market_ledger import SETTLED_AT, build_market

T0 = 1_764_000_000


def reading(meter, community, value, created):
    body = {"interval": T0 - T0 % 900, "import_wh": value, "export_wh": 0, "serial": "SN", "profile": "p"}
    return meter.sign(community, "reading", body, created=created)


@pytest.fixture
def kv_store(tmp_path):
    """A closed kv-app store of 3 blocks (4 readings each, 3 seals each), and its community."""
    c = make_community(validators=3, members=2, meters_per_member=2, time=T0)
    c.open_ledgers(tmp_path, KeyValueApp)
    for b in range(3):
        t = T0 + 10 * (b + 1)
        c.run_block([reading(m, c.community, b, t) for m in c.meters], t)
    for ledger in c.ledgers:
        ledger.close()
    return c, tmp_path / "validator-1"


def run(store_dir, app=None):
    store = Store.open(store_dir, readonly=True)
    try:
        return independent.verify_store_independent(store, app or KeyValueApp())
    finally:
        store.close()


def test_a_localnet_store_verifies_independently(kv_store):
    _, store_dir = kv_store
    report, extra = run(store_dir)
    assert (report.blocks, report.txs, report.seals) == (3, 12, 9)
    assert extra.signatures == extra.total == 21 and extra.erased_skipped == 0
    # headers, payloads, results, seals, the genesis document and the snapshot
    assert extra.encodings > extra.signatures + report.blocks


def test_estimate_and_progress_are_reported(kv_store):
    _, store_dir = kv_store
    estimates, ticks = [], []
    store = Store.open(store_dir, readonly=True)
    try:
        independent.verify_store_independent(
            store,
            KeyValueApp(),
            progress=lambda d, n: ticks.append((d, n)),
            estimate=lambda s, n: estimates.append((s, n)),
        )
    finally:
        store.close()
    assert len(estimates) == 1 and estimates[0][1] == 21 and estimates[0][0] > 0
    assert ticks[-1] == (21, 21) and [d for d, _ in ticks] == list(range(1, 22))


def test_signatures_agree_with_openssl_and_high_s_is_refused_by_both():
    key = ec.generate_private_key(ec.SECP256R1())
    sec1 = public_key_sec1(key.public_key()).hex()
    data = b"peerwatt/v1\n{}"
    sig = sign(key, data)
    verify(key.public_key(), data, sig)
    independent.verify_signature(sec1, data, sig)
    raw = b64url_decode(sig)
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    high = b64url_encode(r.to_bytes(32, "big") + (CURVE_ORDER - s).to_bytes(32, "big"))
    # OpenSSL itself accepts the re-shaped (high-S) signature; our rules refuse it on both paths
    key.public_key().verify(encode_dss_signature(r, CURVE_ORDER - s), data, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(SignatureError) as normal:
        verify(key.public_key(), data, high)
    with pytest.raises(independent.IndependentError) as other:
        independent.verify_signature(sec1, data, high)
    assert normal.value.reason == other.value.reason == "high_s"
    # an altered byte, and a signature by another key: refused by both
    altered = b64url_encode(raw[:10] + bytes([raw[10] ^ 1]) + raw[11:])
    forged = sign(ec.generate_private_key(ec.SECP256R1()), data)
    for bad in (altered, forged):
        with pytest.raises(SignatureError):
            verify(key.public_key(), data, bad)
        with pytest.raises(independent.IndependentError, match="bad_signature"):
            independent.verify_signature(sec1, data, bad)
    # padding, a short signature, and a character outside base64url ('+' is standard base64);
    # each always changes the text (a random signature need not contain any given character)
    for bad in (sig + "=", sig[:-2], "+" + sig[1:]):
        with pytest.raises(independent.IndependentError, match="bad_signature_(encoding|length)"):
            independent.verify_signature(sec1, data, bad)


def test_rfc8785_check_refuses_non_canonical_bytes():
    assert independent.parse_canonical(b'{"a":1,"b":[true,null,"x"]}') == {"a": 1, "b": [True, None, "x"]}
    for bad in (
        b'{"b":1,"a":2}',
        b'{"a": 1}',
        b'{"a":1.0}',
        b'{"a":1,"a":1}',
        b'{"a":NaN}',
        b"\xff",
        b'{"a":9007199254740992}',
    ):
        with pytest.raises(independent.IndependentError, match="not_canonical"):
            independent.parse_canonical(bad)


def tamper_payload(store_dir, index: int = 1) -> None:
    """Flip one byte of a payload's JSON (in a reading's digits), keeping the row's hash."""
    conn = sqlite3.connect(store_dir / DB_NAME)
    tx_hash = conn.execute("SELECT hash FROM txs WHERE height = 2 AND idx = ?", (index,)).fetchone()[0]
    payload = bytes(conn.execute("SELECT envelope FROM payloads WHERE hash = ?", (tx_hash,)).fetchone()[0])
    at = payload.index(b'"import_wh":') + len(b'"import_wh":')
    changed = payload[:at] + bytes([payload[at] ^ 0x01]) + payload[at + 1 :]
    conn.execute("UPDATE payloads SET envelope = ? WHERE hash = ?", (changed, tx_hash))
    conn.commit()
    conn.close()


def test_a_flipped_payload_byte_is_found_by_the_independent_path(kv_store):
    _, store_dir = kv_store
    tamper_payload(store_dir)
    with pytest.raises(VerifyError) as exc:
        run(store_dir)
    assert exc.value.height == 2 and exc.value.problem.startswith(
        "independent check: bad_hash: transaction 1"
    )
    with pytest.raises(VerifyError) as normal:  # and by the normal path on its own
        store = Store.open(store_dir, readonly=True)
        try:
            verify_store(store, KeyValueApp())
        finally:
            store.close()
    assert normal.value.height == 2


def test_a_re_signed_header_claim_is_checked_by_ecdsa(kv_store):
    """A seal whose signature bytes were swapped for another validator's is refused."""
    _, store_dir = kv_store
    conn = sqlite3.connect(store_dir / DB_NAME)
    rows = conn.execute(
        "SELECT validator, envelope FROM seals WHERE height = 3 ORDER BY validator"
    ).fetchall()
    first, second = json.loads(rows[0][1]), json.loads(rows[1][1])
    first["sig"] = second["sig"]
    conn.execute(
        "UPDATE seals SET envelope = ? WHERE height = 3 AND validator = ?", (rfc8785.dumps(first), rows[0][0])
    )
    conn.commit()
    conn.close()
    with pytest.raises(VerifyError) as exc:
        run(store_dir)
    assert exc.value.height == 3 and "independent check: bad_signature: seal of" in exc.value.problem


def test_erased_payloads_are_skipped_not_failures(tmp_path):
    c = build_market(tmp_path, validators=3, members=4)
    target = c.members[0].id
    t = SETTLED_AT + 10
    proposal = c.members[1].sign(
        c.community,
        "propose",
        {"action": "erase_member", "args": {"member": target}, "deadline": t + 86_400},
        created=t,
    )
    votes = [
        c.members[i].sign(c.community, "vote", {"proposal": proposal.tx_hash.hex(), "vote": "yes"}, created=t)
        for i in (2, 3)
    ]
    c.run_block([proposal, *votes], t)
    later = SETTLED_AT + 40 * 900
    c.run_block([], later)
    for ledger in c.ledgers:
        ledger.close()
    store_dir = tmp_path / "validator-0"
    assert erase_departed(store_dir, now=later).erased_payloads == 3
    report, extra = run(store_dir, MarketApp())
    assert extra.erased_skipped == 3 and len(report.erased_txs) == 3
    assert extra.signatures + extra.erased_skipped == extra.total
    assert "3 erased payload(s) skipped" in extra.summary()
