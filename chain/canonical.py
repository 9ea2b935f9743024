"""Strict JSON in, canonical JSON (RFC 8785, JCS) out.

Our messages hold only ASCII keys, strings, integers within ±(2^53 − 1), booleans, null, lists
and objects. For such values ``json.dumps(sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` produces exactly the JCS bytes (tests prove byte-equality against the
``rfc8785`` package with hypothesis), at a quarter of its cost. Anything outside that domain —
floats, NaN, non-ASCII keys, lone surrogates, out-of-range integers — is refused on input, so the
fast path is only ever used where it is exact.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import orjson

MAX_SAFE_INTEGER = 2**53 - 1
MAX_DEPTH = 16


class CanonicalError(ValueError):
    """JSON outside the strict domain; ``reason`` is a machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _reject_constant(name: str) -> Any:
    raise CanonicalError("non_finite_number", f"{name} is not allowed")


def _reject_float(text: str) -> Any:
    raise CanonicalError("float_not_allowed", f"number {text[:32]} is not an integer")


def _parse_int(text: str) -> int:
    if len(text) > 17:  # 2^53 has 16 digits; also guards int() against huge digit strings
        raise CanonicalError("integer_out_of_range", f"integer {text[:32]} is out of range")
    value = int(text)
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise CanonicalError("integer_out_of_range", f"integer {text} is out of range")
    return value


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise CanonicalError("duplicate_key", f"duplicate key {key!r}")
            seen.add(key)
    return obj


_DECODER = json.JSONDecoder(
    object_pairs_hook=_object_pairs,
    parse_float=_reject_float,
    parse_int=_parse_int,
    parse_constant=_reject_constant,
)


def loads_strict(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON strictly: no duplicate keys, NaN/Infinity, floats or unsafe integers.

    Strings and keys are checked too (see :func:`check_value`), and nesting is limited to
    ``max_depth`` (a message; a peer's reply that wraps messages may allow a few levels more).
    Every byte that comes from the wire or a peer is parsed here. Raises CanonicalError.

    Canonical input (what every peerwatt program sends) takes a fast path that accepts exactly
    what the strict decoder accepts; anything else goes to the strict decoder, which decides.
    """
    raw = data if isinstance(data, bytes) else bytes(data) if isinstance(data, bytearray) else None
    if raw is not None:
        value = _loads_canonical(raw, max_depth)
        if value is not _NOT_CANONICAL:
            return value
    return _loads_strict_decoder(data, max_depth=max_depth)


_NOT_CANONICAL = object()


def _loads_canonical(raw: bytes, max_depth: int) -> Any:
    """The value of ``raw`` if it is canonical JSON (JCS) within the strict domain, else
    _NOT_CANONICAL. orjson parses (5x the strict decoder's speed); writing the value back must
    give the same bytes, which rules out duplicate keys, whitespace, unsorted keys, escapes other
    than JCS's and integers beyond 2^53 - 1 (orjson refuses them with OPT_STRICT_INTEGER); ASCII
    without \\u escapes rules out non-ASCII keys and lone surrogates; the walk rules out floats
    and nesting beyond ``max_depth``. Each refusal only sends the bytes to the strict decoder."""
    if not raw.isascii() or b"\\u" in raw:
        return _NOT_CANONICAL
    try:
        value = orjson.loads(raw)
        if orjson.dumps(value, option=_OPTIONS) != raw:
            return _NOT_CANONICAL
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return _NOT_CANONICAL
    kind = type(value)
    if kind is dict or kind is list:
        if not _plain(value, 0, max_depth):
            return _NOT_CANONICAL
    elif kind is float:
        return _NOT_CANONICAL
    return value


def _plain(container: dict | list, depth: int, max_depth: int) -> bool:
    """No float in ``container`` (at ``depth``) or below it, and no value deeper than
    ``max_depth`` (check_value's rule); the types of a container's values are collected in C."""
    items = container.values() if type(container) is dict else container
    if not items:
        return True
    if depth + 1 > max_depth:
        return False
    kinds = set(map(type, items))
    if float in kinds:
        return False
    if dict in kinds or list in kinds:
        for item in items:
            if (type(item) is dict or type(item) is list) and not _plain(item, depth + 1, max_depth):
                return False
    return True


def _loads_strict_decoder(data: bytes | bytearray | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """The strict decoder: any JSON text, every rule of :func:`loads_strict` checked."""
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    except UnicodeDecodeError:
        raise CanonicalError("bad_json", "message is not UTF-8") from None
    try:
        value = _DECODER.decode(text)
    except CanonicalError:
        raise
    except RecursionError:
        raise CanonicalError("bad_json", "JSON nested too deeply") from None
    except ValueError as exc:
        raise CanonicalError("bad_json", f"not JSON: {exc}") from None
    # The decoder's hooks already refused duplicates, floats, NaN and unsafe integers. Non-ASCII
    # keys and lone surrogates can only come from non-ASCII bytes or \u escapes: check the whole
    # tree only when the text holds either (pure-ASCII messages without escapes skip the walk).
    # Depth: with at most MAX_DEPTH brackets in all, nesting cannot exceed MAX_DEPTH.
    if not text.isascii() or "\\u" in text or text.count("{") + text.count("[") > max_depth:
        check_value(value, max_depth=max_depth)
    return value


def check_value(value: Any, depth: int = 0, *, max_depth: int = MAX_DEPTH) -> None:
    """Raise CanonicalError unless ``value`` lies in the domain where the fast path equals JCS."""
    if depth > max_depth:
        raise CanonicalError("bad_json", "JSON nested too deeply")
    kind = type(value)
    if kind is str:
        _check_string(value)
    elif kind is int:
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalError("integer_out_of_range", f"integer {value} is out of range")
    elif kind is dict:
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                raise CanonicalError("bad_key", f"object key {key!r} is not an ASCII string")
            check_value(item, depth + 1, max_depth=max_depth)
    elif kind is list:
        for item in value:
            check_value(item, depth + 1, max_depth=max_depth)
    elif value is None or kind is bool:
        return
    elif kind is float:
        raise CanonicalError("float_not_allowed", f"number {value!r} is not an integer")
    else:
        raise CanonicalError("bad_json", f"value of type {kind.__name__} is not JSON")


_JSON_TYPES = frozenset({str, int, bool, type(None), dict, list})


def check_written(value: Any, data: bytes, depth: int = 0, *, max_depth: int = MAX_DEPTH) -> None:
    """:func:`check_value` for a value :func:`dumps_checked` already wrote as ``data``.

    Writing it refused integers beyond 2^53 - 1 and lone surrogates; ASCII bytes mean every key
    is ASCII. What is left (JSON types only, so no float, and the nesting) is checked on the type
    sets of each container, collected in C. Anything else goes to :func:`check_value`, which
    decides: this only ever accepts what it accepts (a property test holds the two together)."""
    kind = type(value)
    if (
        (kind is not dict and kind is not list)
        or not data.isascii()
        or not _json_typed(value, depth, max_depth)
    ):
        check_value(value, depth, max_depth=max_depth)


def _json_typed(value: Any, depth: int, max_depth: int) -> bool:
    """``value`` (at ``depth``) and everything in it are of exact JSON types, keys are ``str``,
    and nothing lies deeper than ``max_depth``. One level of the tree at a time: the items of all
    its containers are gathered and their types collected in C."""
    level = [value]
    while level:
        if depth > max_depth:
            return False
        kinds = set(map(type, level))
        if not kinds <= _JSON_TYPES:
            return False
        if dict in kinds:
            dicts = level if len(kinds) == 1 else [v for v in level if type(v) is dict]
            if set(map(type, itertools.chain.from_iterable(dicts))) - {str}:
                return False
            below = list(itertools.chain.from_iterable([d.values() for d in dicts]))
        else:
            below = []
        if list in kinds:
            below += itertools.chain.from_iterable(
                level if len(kinds) == 1 else [v for v in level if type(v) is list]
            )
        level = below
        depth += 1
    return True


def _check_string(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise CanonicalError("bad_string", "string holds a lone surrogate") from None


def canonical_bytes(value: Any) -> bytes:
    """The RFC 8785 (JCS) encoding of a value from the strict domain (checked)."""
    check_value(value)
    return dumps_checked(value)


def dumps_checked(value: Any) -> bytes:
    """JCS bytes of a value already known to be in the strict domain (no tree walk).

    orjson with sorted keys writes exactly the bytes of ``json.dumps(sort_keys=True,
    separators=(",", ":"), ensure_ascii=False)`` for this domain, about ten times faster; the
    property tests check it against the ``rfc8785`` package. Integers beyond 2^53 - 1 and values
    orjson cannot write raise CanonicalError even here (orjson checks them for free); floats do
    not, so values the engine builds itself are checked with :func:`check_value` first
    (:func:`canonical_bytes`; the state root checks each entry once per distinct bytes).
    """
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except orjson.JSONEncodeError as exc:
        raise CanonicalError("bad_json", f"value cannot be written as canonical JSON: {exc}") from None


_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER
