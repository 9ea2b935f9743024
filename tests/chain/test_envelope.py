"""Signed envelopes: every rejection reason, each with a hand-built bad message."""

from __future__ import annotations

import json

import pytest

from chain.canonical import canonical_bytes
from chain.envelope import Envelope, Rejected, parse_envelope, sign_envelope, verify_envelope
from chain.keys import generate_private_key
from chain.messages import SIGNING_PREFIX
from chain.signature import CURVE_ORDER, b64url_decode, b64url_encode, sign

COMMUNITY = "oak-street"
NOW = 1_764_000_000
KEY = generate_private_key()
ORDER = {"side": "sell", "interval": 1_764_000_900, "energy_wh": 500, "limit_price": 120_000}


def make(body=None, msg_type="order", **fields):
    env = sign_envelope(
        KEY, type=msg_type, community=COMMUNITY, seq=7, body=body or dict(ORDER), created=NOW - 10
    )
    return env


def resign(obj: dict) -> bytes:
    """Sign a hand-built envelope dict as is (so only the intended defect is wrong)."""
    unsigned = {k: v for k, v in obj.items() if k != "sig"}
    obj = dict(obj, sig=sign(KEY, SIGNING_PREFIX + canonical_bytes(unsigned)))
    return json.dumps(obj).encode()


def valid_dict() -> dict:
    return make().to_dict()


def check(data: bytes, **kw) -> Envelope:
    env = parse_envelope(data, community=kw.get("community", COMMUNITY), now=kw.get("now", NOW))
    verify_envelope(env, KEY.public_key())
    return env


def test_valid_message_roundtrip():
    env = check(make().to_bytes())
    assert (env.type, env.seq, env.body) == ("order", 7, ORDER)
    assert len(env.tx_hash) == 32


def test_each_type_signs_and_parses():
    bodies = {
        "order": ORDER,
        "reading": {
            "interval": NOW - NOW % 900,
            "import_wh": 10,
            "export_wh": 20,
            "serial": "SN1",
            "profile": "sdm630",
        },
        "propose": {
            "action": "set_param",
            "args": {"name": "grid_fee", "value": 10},
            "deadline": NOW,
        },
        "vote": {"proposal": "ab" * 32, "vote": "yes"},
        "seal": {"height": 3, "round": 0, "header": "cd" * 32},
        "prevote": {"height": 3, "round": 2, "header": "nil"},
        "block": {
            "height": 1,
            "prev": "00" * 32,
            "time": NOW,
            "tx_root": "11" * 32,
            "result_root": "22" * 32,
            "state_root": "33" * 32,
            "sequencer": "44" * 16,
            "round": 1,
            "txs": [make().to_dict()],
            "results": [{"k": 1}],
            "proposal_round": 2,
            "valid_round": 1,
        },
    }
    for msg_type, body in bodies.items():
        env = sign_envelope(KEY, type=msg_type, community=COMMUNITY, seq=1, body=body, created=NOW)
        assert check(env.to_bytes()).type == msg_type


def mutate(**changes):
    obj = valid_dict()
    for key, value in changes.items():
        if value is DELETE:
            del obj[key]
        else:
            obj[key] = value
    return resign(obj)


DELETE = object()


def body_with(**changes):
    body = dict(ORDER)
    for key, value in changes.items():
        if value is DELETE:
            del body[key]
        else:
            body[key] = value
    return body


CASES = {
    "too_large": lambda: mutate(body=body_with(side="sell" + " " * 70_000)),
    "bad_json": lambda: b'{"v":1,',
    "duplicate_key": lambda: make().to_bytes().replace(b'{"body"', b'{"seq":1,"body"', 1),
    "non_finite_number": lambda: make().to_bytes().replace(b'"energy_wh":500', b'"energy_wh":NaN'),
    "float_not_allowed": lambda: make().to_bytes().replace(b'"energy_wh":500', b'"energy_wh":500.0'),
    "bool_not_int": lambda: mutate(body=body_with(energy_wh=True)),
    "missing_field": lambda: mutate(expires=DELETE),
    "unknown_field": lambda: mutate(extra=1),
    "unknown_type": lambda: mutate(type="gossip"),
    "bad_version": lambda: mutate(v=2),
    "wrong_community": lambda: mutate(community="elm-road"),
    "expired": lambda: mutate(created=NOW - 2000, expires=NOW - 1000),
    "expires_before_created": lambda: mutate(created=NOW, expires=NOW - 1),
    "ttl_too_long": lambda: mutate(created=NOW, expires=NOW + 8 * 24 * 3600),
    "from_future": lambda: mutate(created=NOW + 3600, expires=NOW + 7200),
    "interval_not_aligned": lambda: mutate(body=body_with(interval=ORDER["interval"] + 60)),
    "integer_out_of_range": lambda: make().to_bytes().replace(b'"seq":7', b'"seq":9007199254740993'),
    "out_of_range": lambda: mutate(body=body_with(energy_wh=-1)),
    "bad_value": lambda: mutate(body=body_with(side="steal")),
    "bad_type": lambda: mutate(body=body_with(limit_price="120000")),
}


@pytest.mark.parametrize("reason", sorted(CASES))
def test_rejection_reasons(reason):
    with pytest.raises(Rejected) as err:
        check(CASES[reason]())
    assert err.value.reason == reason


def test_missing_body_field_and_unknown_body_field():
    with pytest.raises(Rejected, match="missing_field"):
        check(mutate(body=body_with(side=DELETE)))
    with pytest.raises(Rejected, match="unknown_field"):
        check(mutate(body=body_with(note="hi")))


def test_signature_invalid_after_any_change():
    obj = valid_dict()
    obj["body"]["energy_wh"] = 501  # changed after signing
    with pytest.raises(Rejected) as err:
        check(json.dumps(obj).encode())
    assert err.value.reason == "bad_signature"


def test_high_s_signature_rejected():
    obj = valid_dict()
    raw = b64url_decode(obj["sig"])
    s = int.from_bytes(raw[32:], "big")
    obj["sig"] = b64url_encode(raw[:32] + (CURVE_ORDER - s).to_bytes(32, "big"))
    with pytest.raises(Rejected) as err:
        check(json.dumps(obj).encode())
    assert err.value.reason == "high_s"


def test_signer_mismatch():
    env = make()
    with pytest.raises(Rejected) as err:
        verify_envelope(env, generate_private_key().public_key())
    assert err.value.reason == "signer_mismatch"


def test_block_may_exceed_64k_but_order_may_not():
    big = sign_envelope(
        KEY,
        type="propose",
        community=COMMUNITY,
        seq=2,
        created=NOW,
        body={
            "action": "set_param",
            "args": {"name": "x" * 10, "value": "y" * 70_000},
            "deadline": NOW,
        },
    )
    with pytest.raises(Rejected, match="too_large"):
        check(big.to_bytes())


def test_non_canonical_whitespace_is_accepted_and_reencoded_canonically():
    env = make()
    spaced = json.dumps(env.to_dict(), indent=2).encode()
    parsed = check(spaced)
    assert parsed.to_bytes() == env.to_bytes() and parsed.tx_hash == env.tx_hash
