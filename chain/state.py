"""Ledger state: a JSON tree with two namespaces, the engine's ("chain") and the app's ("app").

The state root is an RFC 6962 Merkle root over one leaf per (namespace, top-level key), each leaf
the canonical JSON of ``[namespace, key, value]``, in sorted order, so any peer computes the same
root from the same state and a single entry can be proven against a sealed header.

Every entry is checked to lie in the canonical domain (chain.canonical.check_value: no float,
-0.0, NaN, integer beyond 2^53 - 1, non-ASCII key) before it is hashed, where orjson's bytes
and JCS's would differ. The walk runs once per distinct leaf: a leaf hash already checked is
skipped, so an entry that did not change between blocks costs nothing more.

Copy-on-write execution (:func:`cow_state`, :func:`commit_state`): a block runs on overlays of
the state it starts from, which stays untouched; the state after it shares every value the block
did not touch with the state before. Its root is computed incrementally with the same definition:
a top-level value (``app.settled``, ``chain.meters``, ...) that is a JSON object has canonical
bytes ``{`` + the comma-joined ``"key":value`` bytes of its entries in key order + ``}``, and the
bytes of each entry the block did not touch are reused from the state before; only touched
entries are serialized and checked. States are values: a state returned by an execution must not
be changed in place (execute a block on it instead).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator, MutableMapping
from typing import Any

import orjson

from chain.canonical import MAX_DEPTH, CanonicalError, check_written, dumps_checked, loads_strict
from chain.merkle import leaf_hash, merkle_root

State = dict[str, dict[str, Any]]

# Leaf hashes whose entries passed check_value (cleared when it grows past the bound).
_CHECKED_LEAVES: set[bytes] = set()
_MAX_CHECKED_LEAVES = 1 << 16


def state_leaves(state: State) -> list[bytes]:
    """The state's Merkle leaves (leaf hashes), in canonical order; CanonicalError for an entry
    outside the canonical domain."""
    return [_leaf(ns, key, state[ns][key]) for ns in sorted(state) for key in sorted(state[ns])]


def state_root(state: State) -> bytes:
    """The Merkle root committing to every entry of the state (incremental for a state made by
    :func:`commit_state`: its touched values were hashed there, the rest are reused)."""
    leaves = []
    for namespace in sorted(state):
        entries = state[namespace]
        for key in sorted(entries):
            value = entries[key]
            record = _RECORDS.get(id(value))
            if record is not None and record.value is value and record.leaf_of(namespace, key):
                leaves.append(record.leaf)
            else:
                leaves.append(_leaf(namespace, key, value))
    return merkle_root(leaves)


def full_state_root(state: State) -> bytes:
    """The state root computed from scratch from every entry (the definition; for tests)."""
    return merkle_root(state_leaves(state))


def _leaf(namespace: str, key: str, value: Any) -> bytes:
    entry = [namespace, key, value]
    written = dumps_checked(entry)
    leaf = leaf_hash(written)
    if leaf not in _CHECKED_LEAVES:
        check_written(entry, written)
        if len(_CHECKED_LEAVES) >= _MAX_CHECKED_LEAVES:
            _CHECKED_LEAVES.clear()
        _CHECKED_LEAVES.add(leaf)
    return leaf


# -- copy-on-write execution ------------------------------------------------------------------

_ENTRY_DEPTH = 2  # depth of an entry of a top-level value inside its leaf [namespace, key, value]
_SMALL = 16  # a top-level object with at most this many entries is copied whole when read (params)


class CowMap(MutableMapping):
    """A mapping that reads through to ``base`` and keeps every change in an overlay.

    An object value read from it is a CowMap over the base's object in turn (nothing is copied
    until it changes), a list a deep copy; in a namespace (``chain``, ``app``:
    ``namespace=True``) an object of at most ``_SMALL`` entries (the parameters) is a plain deep
    copy, faster to read. At commit an entry that was read but is still equal keeps its old
    object. ``base`` is never changed. A CowMap is a Mapping, not a dict: an app that puts what it
    read into a result must copy it (``dict(...)``) or take its fields.
    """

    __slots__ = ("_added", "_base", "_data", "_deleted", "_namespace", "_result")

    def __init__(self, base: dict[str, Any], *, namespace: bool = False) -> None:
        self._base = base
        self._data: dict[str, Any] = {}
        self._deleted: set[str] = set()
        self._added: set[str] = set()  # keys not in base
        self._namespace = namespace
        self._result: tuple[dict[str, Any], set[str]] | None = None

    def __getitem__(self, key: str) -> Any:
        data = self._data
        if key in data:
            return data[key]
        if key in self._deleted:
            raise KeyError(key)
        value = self._base[key]
        kind = type(value)
        if kind is dict:
            if self._namespace and len(value) <= _SMALL:
                value = orjson.loads(orjson.dumps(value))  # small (params): a plain copy is faster
            else:
                value = CowMap(value)
        elif kind is list:
            value = orjson.loads(orjson.dumps(value))
        data[key] = value  # (an immutable value is kept too: the next read is one lookup)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        if key in self._data:
            return self._data[key]
        if key in self._deleted or key not in self._base:
            return default
        return self[key]

    def peek(self, key: str, default: Any = None) -> Any:
        """The current value without copying it (the caller must not change it)."""
        if key in self._data:
            return self._data[key]
        if key in self._deleted:
            return default
        return self._base.get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value
        if key in self._base:
            self._deleted.discard(key)
        else:
            self._added.add(key)

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._data.pop(key, None)
        if key in self._base:
            self._deleted.add(key)
        else:
            self._added.discard(key)

    def __contains__(self, key: object) -> bool:
        return key in self._data or (key not in self._deleted and key in self._base)

    def __iter__(self) -> Iterator[str]:
        if not self._deleted and not self._added:
            return iter(self._base)  # the same keys: iterate at C speed
        return self._iter_changed()

    def _iter_changed(self) -> Iterator[str]:
        deleted = self._deleted
        for key in self._base:
            if key not in deleted:
                yield key
        yield from [key for key in self._data if key in self._added]

    def __len__(self) -> int:
        return len(self._base) - len(self._deleted) + len(self._added)

    def __repr__(self) -> str:
        return f"CowMap({dict(self)!r})"

    def commit(self) -> tuple[dict[str, Any], set[str]]:
        """The plain dict after the changes (``base`` itself when nothing changed; values not
        touched are shared with ``base``), and the keys whose values are new objects. Computed
        once: the overlay must not change after it."""
        if self._result is None:
            self._result = self._commit()
        return self._result

    def _commit(self) -> tuple[dict[str, Any], set[str]]:
        base = self._base
        changed: set[str] = set()
        if not self._data and not self._deleted:
            return base, changed
        out = dict(base)
        for key in self._deleted:
            out.pop(key, None)
            changed.add(key)
        for key, value in self._data.items():
            if type(value) is CowMap:
                value, inner = value.commit()
                if not inner and key in base and base[key] is value:
                    continue
            elif key in base and type(value) is type(base[key]) and value == base[key]:
                continue  # read but not changed: keep the old object (and its cached bytes)
            out[key] = value
            changed.add(key)
        if not changed:
            return base, changed
        return out, changed


class _Record:
    """The canonical bytes of a top-level object's entries, and the leaf it makes."""

    __slots__ = ("entries", "leaf", "namespace", "key", "value")

    def __init__(self, namespace: str, key: str, value: dict[str, Any], entries: dict[str, bytes]):
        self.namespace, self.key, self.value, self.entries = namespace, key, value, entries
        body = b",".join([entries[k] for k in sorted(entries)])
        prefix = dumps_checked([namespace, key])[:-1]  # '["ns","key"' without the closing ]
        self.leaf = leaf_hash(prefix + b",{" + body + b"}]")

    def leaf_of(self, namespace: str, key: str) -> bool:
        return self.namespace == namespace and self.key == key


# id(value) -> record, for the newest top-level values (a record holds its value, so the id is
# not reused while the record lives)
_RECORDS: OrderedDict[int, _Record] = OrderedDict()
_MAX_RECORDS = 256


# digests of entry bytes whose values passed check_value (shared by every node in a process:
# the validators of a simulation check an entry once), cleared when it grows past the bound
_CHECKED_ENTRIES: set[bytes] = set()


def _entry_bytes(key: Any, value: Any) -> bytes:
    if type(key) is not str or not key.isascii():
        raise CanonicalError("bad_key", f"object key {key!r} is not an ASCII string")
    written = dumps_checked(value)
    data = orjson.dumps(key) + b":" + written
    digest = hashlib.sha256(data).digest()
    if digest not in _CHECKED_ENTRIES:
        check_written(value, written, _ENTRY_DEPTH, max_depth=MAX_DEPTH)
        if len(_CHECKED_ENTRIES) >= _MAX_CHECKED_LEAVES:
            _CHECKED_ENTRIES.clear()
        _CHECKED_ENTRIES.add(digest)
    return data


def _record(namespace: str, key: str, value: dict[str, Any], old: Any, changed: set[str] | None) -> None:
    """Record the entry bytes of a top-level object, reusing those of ``old`` (the value it
    replaces) for every entry not in ``changed`` (None: every entry is new)."""
    previous = _RECORDS.get(id(old))
    reuse = (
        previous.entries if previous is not None and previous.value is old and changed is not None else None
    )
    entries = {}
    for k, v in value.items():
        cached = None if reuse is None or k in changed else reuse.get(k)
        entries[k] = cached if cached is not None else _entry_bytes(k, v)
    _RECORDS[id(value)] = _Record(namespace, key, value, entries)
    while len(_RECORDS) > _MAX_RECORDS:
        _RECORDS.popitem(last=False)


def cow_state(state: State) -> State:
    """The state a block changes: copy-on-write overlays of ``state``'s namespaces."""
    return {namespace: CowMap(entries, namespace=True) for namespace, entries in state.items()}


def commit_state(work: State) -> State:
    """The plain state after a block ran on ``cow_state(before)``: values the block did not touch
    are shared with ``before``, and every large top-level object has its entries' bytes recorded
    (reused from ``before`` for entries the block did not change) so :func:`state_root` hashes
    only what changed."""
    out = {}
    for namespace, entries in work.items():
        if type(entries) is not CowMap:
            out[namespace] = entries
            continue
        base = entries._base
        committed, _ = entries.commit()
        out[namespace] = committed
        for key, value in committed.items():
            if type(value) is not dict or len(value) <= _SMALL:
                continue
            record = _RECORDS.get(id(value))
            if record is not None and record.value is value and record.leaf_of(namespace, key):
                _RECORDS.move_to_end(id(value))
                continue
            overlay = entries._data.get(key)
            changed = overlay.commit()[1] if type(overlay) is CowMap else None  # (cached)
            _record(namespace, key, value, base.get(key), changed)
    return out


def copy_state(state: State) -> State:
    """A deep copy that may be changed freely (JSON values only; an orjson round trip is the
    fastest deep copy of such nested dicts we measured, ahead of pickle and copy.deepcopy).
    Block execution does not use it any more (copy-on-write, :func:`cow_state`)."""
    return orjson.loads(orjson.dumps(state))


def encode_state(state: State) -> bytes:
    """Canonical bytes of a state snapshot (its entries were checked by :func:`state_root`)."""
    return dumps_checked(state)


def decode_state(data: bytes) -> State:
    """Parse a snapshot written by :func:`encode_state`."""
    return loads_strict(data)
