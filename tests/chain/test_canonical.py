"""Canonical JSON: the fast path is byte-identical to RFC 8785 (rfc8785 package) on our domain."""

from __future__ import annotations

import json

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.block import header_hash, result_root
from chain.canonical import (
    MAX_SAFE_INTEGER,
    CanonicalError,
    canonical_bytes,
    loads_strict,
)
from chain.messages import BODY_SCHEMAS, ENVELOPE_FIELDS
from chain.state import state_root

ascii_keys = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=12)
strings = st.text(
    st.characters(blacklist_categories=("Cs",)), max_size=24
)  # any Unicode except lone surrogates
ints = st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
json_values = st.recursive(
    st.none() | st.booleans() | ints | strings,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(ascii_keys, inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=400)
@given(json_values)
def test_fast_path_equals_rfc8785(value):
    assert canonical_bytes(value) == rfc8785.dumps(value)


@settings(max_examples=200)
@given(json_values)
def test_parse_of_canonical_roundtrips(value):
    assert loads_strict(canonical_bytes(value)) == value


# Envelope-shaped values built from the real schema field names, for every message type.
@settings(max_examples=200)
@given(
    st.sampled_from(sorted(BODY_SCHEMAS)),
    st.dictionaries(st.sampled_from(sorted(ENVELOPE_FIELDS)), ints | strings, min_size=1),
    st.dictionaries(ascii_keys, ints | strings | st.lists(ints | strings, max_size=3)),
)
def test_envelope_shapes_equal_rfc8785(msg_type, top, body):
    value = dict(top, type=msg_type, body=body)
    assert canonical_bytes(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"a":1,"a":2}', "duplicate_key"),
        ('{"a":NaN}', "non_finite_number"),
        ('{"a":Infinity}', "non_finite_number"),
        ('{"a":-Infinity}', "non_finite_number"),
        ('{"a":1.0}', "float_not_allowed"),
        ('{"a":1e3}', "float_not_allowed"),
        ('{"a":9007199254740992}', "integer_out_of_range"),
        ('{"a":' + "9" * 5000 + "}", "integer_out_of_range"),
        ('{"\u00e9":1}', "bad_key"),
        ('{"a":"\\ud800"}', "bad_string"),
        ("{", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        ("[" * 100 + "]" * 100, "bad_json"),
    ],
)
def test_strict_parse_rejections(text, reason):
    with pytest.raises(CanonicalError) as err:
        loads_strict(text)
    assert err.value.reason == reason


def test_max_safe_integer_accepted():
    assert loads_strict(json.dumps({"a": MAX_SAFE_INTEGER, "b": -MAX_SAFE_INTEGER})) == {
        "a": MAX_SAFE_INTEGER,
        "b": -MAX_SAFE_INTEGER,
    }


def test_floats_refused_on_output_too():
    with pytest.raises(CanonicalError):
        canonical_bytes({"a": 0.5})


# Values the engine builds itself (headers, results, state) are serialised with the orjson fast
# path too, where orjson and JCS differ: 1.0 -> "1.0" (JCS "1"), -0.0 -> "-0.0" (JCS "0"),
# 2**53 written (JCS refuses it), NaN -> "null". Each must be refused before it is hashed.
OUT_OF_DOMAIN = [1.0, -0.0, float("nan"), 2**53, -(2**53), 2**64, {"zähler": 1}, ("a", 1), b"x"]


@pytest.mark.parametrize("bad", OUT_OF_DOMAIN, ids=repr)
def test_result_root_refuses_values_outside_the_domain(bad):
    with pytest.raises(CanonicalError):
        result_root([{"kind": "trade", "value": bad}])


@pytest.mark.parametrize("bad", OUT_OF_DOMAIN, ids=repr)
def test_state_root_refuses_values_outside_the_domain(bad):
    with pytest.raises(CanonicalError):
        state_root({"chain": {}, "app": {"balances": {"member": bad}}})
    with pytest.raises(CanonicalError):
        state_root({"chain": {}, "app": {"nested": [{"deep": [bad]}]}})


@pytest.mark.parametrize("bad", OUT_OF_DOMAIN, ids=repr)
def test_header_hash_refuses_values_outside_the_domain(bad):
    with pytest.raises(CanonicalError):
        header_hash({"height": 1, "time": bad})


def test_a_state_leaf_checked_once_is_still_refused_after_a_change():
    state = {"chain": {}, "app": {"balances": {"member": 1}}}
    state_root(state)
    state["app"]["balances"]["member"] = 1.5
    with pytest.raises(CanonicalError):
        state_root(state)


any_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["\ud800", "a\\u0041", "é", "\n", "/"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=40,
)


def _outcome(parse, raw):
    try:
        return repr(parse(raw))  # repr tells True from 1 and keeps the key order
    except CanonicalError:
        return "refused"


@settings(max_examples=1500, deadline=None)
@given(any_values, st.integers(1, 20), st.sampled_from(["canonical", "spaced", "duplicate", "deep"]))
def test_the_canonical_fast_path_accepts_exactly_what_the_strict_decoder_accepts(value, max_depth, form):
    """loads_strict parses canonical bytes with orjson; for any bytes at all, its answer must be
    the strict decoder's (same value, or both refuse)."""
    from chain.canonical import _loads_strict_decoder

    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (UnicodeEncodeError, ValueError):
        return
    if form == "spaced":
        text = json.dumps(value, sort_keys=True)
    elif form == "duplicate" and text.startswith("{") and len(text) > 2:
        text = '{"a":1,' + text[1:] if text != "{}" else text
    elif form == "deep":
        text = "[" * max_depth + text + "]" * max_depth
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogatepass")
    fast = _outcome(lambda r: loads_strict(r, max_depth=max_depth), raw)
    slow = _outcome(lambda r: _loads_strict_decoder(r, max_depth=max_depth), raw)
    assert fast == slow


class _Text(str):
    pass


# what an app might put in its state by mistake: every type orjson writes but JSON has not
odd_values = st.recursive(
    any_values
    | st.tuples(st.integers(-5, 5), st.text(max_size=2))
    | st.builds(_Text, st.text(max_size=3))
    | st.builds(bool)
    | st.sampled_from([float("nan"), -0.0, 2**53 - 1, 2**53, -(2**53)]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=3) | st.builds(_Text, st.text(max_size=2)), inner, max_size=4)
    ),
    max_leaves=40,
)


@settings(max_examples=1500, deadline=None)
@given(odd_values, st.integers(0, 12), st.integers(1, 12))
def test_check_written_refuses_exactly_what_check_value_refuses(value, depth, max_depth):
    """The state root checks an entry from the bytes it just wrote (chain.state): for any value
    those bytes exist for, its verdict must be check_value's."""
    from chain.canonical import check_value, check_written, dumps_checked

    try:
        written = dumps_checked(value)
    except CanonicalError:
        return  # nothing to check: writing it refused it already
    verdicts = []
    for check in (
        lambda: check_value(value, depth, max_depth=max_depth),
        lambda: check_written(value, written, depth, max_depth=max_depth),
    ):
        try:
            check()
            verdicts.append("ok")
        except CanonicalError as exc:
            verdicts.append(exc.reason)
    assert verdicts[0] == verdicts[1]
