"""A tiny declarative validator for message bodies: field specs with types and bounds.

Specs are plain objects; ``validate(spec, value, path)`` raises SchemaError naming the field.
It checks exact types (a boolean is never an integer), bounds, lengths and allowed values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from chain.canonical import MAX_SAFE_INTEGER


class SchemaError(ValueError):
    """A value that does not match its schema; ``reason`` is a machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Int:
    """An integer (not a boolean) within [minimum, maximum], optionally a multiple of ``step``."""

    minimum: int = -MAX_SAFE_INTEGER
    maximum: int = MAX_SAFE_INTEGER

    def check(self, value: Any, path: str) -> None:
        if type(value) is bool:
            raise SchemaError("bool_not_int", f"{path} must be an integer, not a boolean")
        if type(value) is not int:
            raise SchemaError("bad_type", f"{path} must be an integer")
        if not self.minimum <= value <= self.maximum:
            raise SchemaError("out_of_range", f"{path}={value} is outside [{self.minimum}, {self.maximum}]")


@dataclass(frozen=True)
class Str:
    """A string of bounded length, optionally matching a regular expression or one of ``choices``."""

    min_len: int = 1
    max_len: int = 256
    pattern: str | None = None
    choices: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # compiled once: this check runs for several fields of every message
        object.__setattr__(self, "_regex", None if self.pattern is None else re.compile(self.pattern))

    def check(self, value: Any, path: str) -> None:
        if type(value) is not str:
            raise SchemaError("bad_type", f"{path} must be a string")
        if self.choices is not None:
            if value not in self.choices:
                raise SchemaError("bad_value", f"{path} must be one of {', '.join(self.choices)}")
            return
        if not self.min_len <= len(value) <= self.max_len:
            raise SchemaError("bad_value", f"{path} length must be within [{self.min_len}, {self.max_len}]")
        if self._regex is not None and not self._regex.fullmatch(value):
            raise SchemaError("bad_value", f"{path} has an invalid format")


@dataclass(frozen=True)
class Any_:
    """Any strict-JSON value (already checked by the parser), with a bound on list lengths."""

    def check(self, value: Any, path: str) -> None:
        return None


@dataclass(frozen=True)
class List:
    """A list of items of one spec, with at most ``max_items`` entries."""

    item: Any
    max_items: int = 100_000

    def check(self, value: Any, path: str) -> None:
        if type(value) is not list:
            raise SchemaError("bad_type", f"{path} must be a list")
        if len(value) > self.max_items:
            raise SchemaError("out_of_range", f"{path} has more than {self.max_items} items")
        for index, item in enumerate(value):
            self.item.check(item, f"{path}[{index}]")


@dataclass(frozen=True)
class Obj:
    """An object with required and optional fields; unknown fields are refused."""

    required: dict[str, Any]
    optional: dict[str, Any] = field(default_factory=dict)

    def check(self, value: Any, path: str) -> None:
        if type(value) is not dict:
            raise SchemaError("bad_type", f"{path} must be an object")
        for name in self.required:
            if name not in value:
                raise SchemaError("missing_field", f"{path}.{name} is missing")
        for name, item in value.items():
            spec = self.required.get(name) or self.optional.get(name)
            if spec is None:
                raise SchemaError("unknown_field", f"{path}.{name} is not a known field")
            spec.check(item, f"{path}.{name}")


@dataclass(frozen=True)
class FreeObj:
    """An object with ASCII identifier keys and any strict-JSON values (e.g. governance args)."""

    max_keys: int = 64

    def check(self, value: Any, path: str) -> None:
        if type(value) is not dict:
            raise SchemaError("bad_type", f"{path} must be an object")
        if len(value) > self.max_keys:
            raise SchemaError("out_of_range", f"{path} has more than {self.max_keys} keys")
        for key in value:
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", key):
                raise SchemaError("bad_value", f"{path} key {key!r} is not an identifier")


HEX64 = Str(64, 64, r"[0-9a-f]{64}")
KEY_ID = Str(32, 32, r"[0-9a-f]{32}")
COMMUNITY_ID = Str(1, 64, r"[a-z0-9][a-z0-9-]{0,63}")
LABEL = Str(1, 64, r"[\x21-\x7e]{1,64}")
