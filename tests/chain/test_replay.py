"""Anti-replay window: fresh, duplicate, out-of-order, too old, persisted and bounded."""

from __future__ import annotations

import random
import sys
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from chain.replay import ReplayGuard


def test_in_order_and_duplicates():
    guard = ReplayGuard(window=64)
    assert guard.accept("a", 1) is None
    assert guard.accept("a", 2) is None
    assert "already seen" in guard.accept("a", 2)
    assert "already seen" in guard.accept("a", 1)
    assert guard.accept("b", 1) is None  # per signer


def test_out_of_order_within_window_accepted_once():
    guard = ReplayGuard(window=64)
    for seq in (10, 5, 7, 6, 9, 8):
        assert guard.accept("a", seq) is None
    for seq in (5, 6, 7, 8, 9, 10):
        assert guard.accept("a", seq) is not None


def test_older_than_window_is_replay():
    guard = ReplayGuard(window=16)
    guard.accept("a", 100)
    assert guard.behind("a", 84) and not guard.behind("a", 85) and not guard.behind("b", 1)
    assert "older than the replay window" in guard.accept("a", 84)
    assert guard.accept("a", 85) is None
    assert not guard.behind("a", 85)  # seen: a replay, but not behind


def test_big_jump_forgets_only_what_fell_out():
    guard = ReplayGuard(window=8)
    guard.accept("a", 1)
    guard.accept("a", 1000)
    assert guard.accept("a", 999) is None
    assert guard.accept("a", 1) is not None


@given(st.lists(st.integers(0, 300), max_size=300), st.integers(1, 128))
def test_matches_reference_model(seqs, window):
    guard = ReplayGuard(window=window)
    seen: set[int] = set()
    highest = None
    for seq in seqs:
        fresh = seq not in seen and (highest is None or seq > highest - window)
        assert (guard.accept("s", seq) is None) == fresh
        if fresh:
            seen.add(seq)
            highest = seq if highest is None else max(highest, seq)


def test_persist_and_restore():
    guard = ReplayGuard(window=32)
    for seq in (3, 1, 9):
        guard.accept("a", seq)
    restored = ReplayGuard.from_json(guard.to_json())
    assert restored.accept("a", 9) is not None and restored.accept("a", 1) is not None
    assert restored.accept("a", 2) is None
    assert restored.highest("a") == 9


def test_memory_bounded_per_signer():
    guard = ReplayGuard(window=1024)
    rng = random.Random(1)
    for seq in range(200_000):
        guard.accept("a", seq + rng.randint(0, 3))
    highest, bitmap = guard._state["a"]
    assert bitmap.bit_length() <= 1024 and sys.getsizeof(bitmap) < 300


# Seqs up to 2^53 - 1 (the protocol's bound): an agent that lost its state restarts its seq at the
# clock in milliseconds, so gaps of 2^40 and more between two valid messages are real.
HUGE_GAP = st.integers(0, 2**53 - 1)


@settings(max_examples=300)
@given(st.lists(st.tuples(HUGE_GAP, st.booleans()), min_size=1, max_size=40), st.integers(1, 4096))
def test_huge_gaps_match_reference_model_in_constant_memory(steps, window):
    """Any gap up to 2^53: the same answers as the set model, and the bitmap never exceeds the
    window (the old record() shifted by the whole gap first: 2^34 allocated gigabytes)."""
    guard = ReplayGuard(window=window)
    seen: set[int] = set()
    highest = None
    for seq, near in steps:
        if near and highest is not None:
            seq = max(0, highest - seq % (2 * window))  # also probe just below the highest seq
        fresh = seq not in seen and (highest is None or seq > highest - window)
        assert (guard.accept("s", seq) is None) == fresh
        if fresh:
            seen.add(seq)
            highest = seq if highest is None else max(highest, seq)
        assert guard._state["s"][1].bit_length() <= window


def test_gap_of_2_to_the_34_is_constant_time_and_memory():
    guard = ReplayGuard()
    guard.accept("a", 5)
    started = time.perf_counter()
    for step in range(1, 1001):
        assert guard.accept("a", 5 + step * 2**34) is None
    assert time.perf_counter() - started < 1.0
    assert guard._state["a"][1] == 1  # every earlier seq fell out of the window
    assert guard.accept("a", 5 + 1000 * 2**34) is not None


def test_record_of_a_seq_below_the_window_changes_nothing():
    guard = ReplayGuard(window=8)
    guard.accept("a", 2**52)
    guard.record("a", 3)  # record() without why_replay(): must not shift by 2^52
    assert guard._state["a"] == (2**52, 1)
