"""Copy-on-write block execution and the incremental state root: the state a block starts from is
never changed (also when the block is refused), the state after it equals what a deep copy
changed in place gives, and its root equals the root computed from scratch (randomized states and
changes, over several blocks in a row so cached entry bytes are reused)."""

from __future__ import annotations

import copy
from collections.abc import MutableMapping
from unittest.mock import patch

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from chain import state as state_module
from chain.canonical import CanonicalError
from chain.execute import InvalidBlock, execute_block
from chain.kvapp import KeyValueApp
from chain.state import commit_state, cow_state, full_state_root, state_root
from tests.support.localnet import make_community

T0 = 1_764_000_000
INTERVAL = T0 - T0 % 900

keys = st.sampled_from(["a", "b", "c", "d"])
scalars = st.one_of(
    st.integers(-(2**53) + 1, 2**53 - 1), st.text("xyz", max_size=3), st.none(), st.booleans()
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)),
    max_leaves=6,
)
top_values = st.one_of(
    scalars, st.dictionaries(keys, json_values, max_size=5), st.lists(json_values, max_size=3)
)
states = st.fixed_dictionaries(
    {
        "app": st.dictionaries(keys, top_values, max_size=5),
        "chain": st.dictionaries(keys, top_values, max_size=5),
    }
)
operations = st.lists(
    st.tuples(
        st.sampled_from(
            ["set", "set", "set", "delete", "mutate", "mutate", "replace", "drop", "read", "pop"]
        ),
        st.sampled_from(["app", "chain"]),
        keys,
        keys,
        json_values,
    ),
    max_size=12,
)


def apply(state, ops) -> None:
    """Apply ``ops`` to a (copy-on-write or plain) state as an app would."""
    for op, namespace, key, sub, value in ops:
        entries = state[namespace]
        if op == "replace":
            entries[key] = copy.deepcopy(value)
        elif op == "drop":
            entries.pop(key, None)
        elif key not in entries or not isinstance(entries[key], MutableMapping):
            continue
        elif op == "set":
            entries[key][sub] = copy.deepcopy(value)
        elif op == "delete":
            entries[key].pop(sub, None)
        elif op == "mutate":
            item = entries[key].get(sub)
            if isinstance(item, MutableMapping):
                item[sub] = copy.deepcopy(value)
            elif isinstance(item, list):
                item.append(copy.deepcopy(value))
        elif op == "read":
            _ = entries[key].get(sub), list(entries[key]), len(entries[key]), sub in entries[key]
        elif op == "pop":
            entries[key].pop(sub, None)


@settings(max_examples=150, deadline=None)
@given(states, st.lists(operations, min_size=1, max_size=4), st.sampled_from([0, 2, 16]))
@example(
    {"app": {"a": {"x": 1, "y": 2}}, "chain": {}},
    [[("set", "app", "a", "x", 5)], [("set", "app", "a", "x", 7)]],
    0,
)
def test_cow_blocks_equal_deep_copies_and_roots_equal_full_recomputation(start, blocks, small):
    """``small``: objects up to this many entries are copied whole, larger ones are overlays with
    recorded entry bytes (16 in production; 0 and 2 put the small random states on that path)."""
    with patch.object(state_module, "_SMALL", small):
        run_blocks(start, blocks)


def run_blocks(start, blocks) -> None:
    state = orjson.loads(orjson.dumps(start))
    plain = orjson.loads(orjson.dumps(start))
    for ops in blocks:
        before = orjson.dumps(state, option=orjson.OPT_SORT_KEYS)
        work = cow_state(state)
        apply(work, ops)
        after = commit_state(work)
        apply(plain, ops)
        assert orjson.dumps(state, option=orjson.OPT_SORT_KEYS) == before  # untouched
        assert orjson.dumps(after, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
            plain, option=orjson.OPT_SORT_KEYS
        )
        assert state_root(after) == full_state_root(orjson.loads(orjson.dumps(plain)))
        state = after


def test_a_value_outside_the_canonical_domain_still_fails_the_root():
    state = {"app": {"book": {"a": 1}}, "chain": {}}
    state_root(state)
    work = cow_state(state)
    work["app"]["book"]["b"] = 1.5  # a float: not canonical
    with pytest.raises(CanonicalError):
        state_root(commit_state(work))


def test_untouched_values_are_shared_with_the_state_before():
    state = {"app": {"big": {str(i): {"n": i} for i in range(100)}, "small": {"x": 1}}, "chain": {"k": "v"}}
    work = cow_state(state)
    work["app"]["small"]["x"] = 2
    _ = work["app"]["big"]["5"]  # read (copied on read) but not changed
    after = commit_state(work)
    assert after["app"]["big"] is state["app"]["big"] and after["chain"] is state["chain"]
    assert after["app"]["small"] == {"x": 2} and state["app"]["small"] == {"x": 1}


def reading(meter, community: str, import_wh: int, t: int):
    body = {"interval": INTERVAL, "import_wh": import_wh, "export_wh": 0, "serial": "SN", "profile": "p"}
    return meter.sign(community, "reading", body, created=t)


def test_a_refused_block_leaves_the_state_untouched(tmp_path):
    """Valid transactions change the overlay, then one from a key the chain never knew makes the
    block invalid: the state it started from is exactly as before (with in_place it used to be
    left half-changed)."""
    c = make_community(validators=3, members=2, meters_per_member=2)
    c.open_ledgers(tmp_path, KeyValueApp)
    c.run_block([reading(m, c.community, 1, T0 + 1) for m in c.meters], T0 + 1)
    state = c.ledgers[0].state
    before = orjson.dumps(state, option=orjson.OPT_SORT_KEYS)
    root = state_root(state)
    good = [reading(m, c.community, 2, T0 + 2) for m in c.meters]
    stranger = reading(make_community(validators=1, members=1).meters[0], c.community, 3, T0 + 2)
    for in_place in (False, True):
        with pytest.raises(InvalidBlock):
            execute_block(
                state, KeyValueApp(), height=2, time=T0 + 2, txs=[*good, stranger], in_place=in_place
            )
        assert orjson.dumps(state, option=orjson.OPT_SORT_KEYS) == before
        assert state_root(state) == root == full_state_root(orjson.loads(before))
