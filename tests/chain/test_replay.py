"""Anti-replay window: fresh, duplicate, out-of-order, too old, persisted and bounded."""

from __future__ import annotations

import random
import sys

from hypothesis import given
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
    assert "older than the replay window" in guard.accept("a", 84)
    assert guard.accept("a", 85) is None


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
