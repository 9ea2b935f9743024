"""Ledger state: a JSON tree with two namespaces, the engine's ("chain") and the app's ("app").

The state root is an RFC 6962 Merkle root over one leaf per (namespace, top-level key), each leaf
the canonical JSON of ``[namespace, key, value]``, in sorted order, so any peer computes the same
root from the same state and a single entry can be proven against a sealed header.

Every entry is checked to lie in the canonical domain (chain.canonical.check_value: no float,
-0.0, NaN, integer beyond 2^53 - 1, non-ASCII key) before it is hashed, where orjson's bytes
and JCS's would differ. The walk runs once per distinct leaf: a leaf hash already checked is
skipped, so an entry that did not change between blocks costs nothing more.
"""

from __future__ import annotations

from typing import Any

import orjson

from chain.canonical import check_value, dumps_checked, loads_strict
from chain.merkle import leaf_hash, merkle_root

State = dict[str, dict[str, Any]]

# Leaf hashes whose entries passed check_value (cleared when it grows past the bound).
_CHECKED_LEAVES: set[bytes] = set()
_MAX_CHECKED_LEAVES = 1 << 16


def state_leaves(state: State) -> list[bytes]:
    """The state's Merkle leaves (leaf hashes), in canonical order; CanonicalError for an entry
    outside the canonical domain."""
    leaves = []
    for namespace in sorted(state):
        entries = state[namespace]
        for key in sorted(entries):
            entry = [namespace, key, entries[key]]
            leaf = leaf_hash(dumps_checked(entry))
            if leaf not in _CHECKED_LEAVES:
                check_value(entry)
                if len(_CHECKED_LEAVES) >= _MAX_CHECKED_LEAVES:
                    _CHECKED_LEAVES.clear()
                _CHECKED_LEAVES.add(leaf)
            leaves.append(leaf)
    return leaves


def state_root(state: State) -> bytes:
    """The Merkle root committing to every entry of the state."""
    return merkle_root(state_leaves(state))


def copy_state(state: State) -> State:
    """A deep copy that a block may change freely (JSON values only; an orjson round trip is the
    fastest deep copy of such nested dicts we measured, ahead of pickle and copy.deepcopy)."""
    return orjson.loads(orjson.dumps(state))


def encode_state(state: State) -> bytes:
    """Canonical bytes of a state snapshot (its entries were checked by :func:`state_root`)."""
    return dumps_checked(state)


def decode_state(data: bytes) -> State:
    """Parse a snapshot written by :func:`encode_state`."""
    return loads_strict(data)
