"""The chain's configuration as a light client follows it: the validator set, the quorum and the
app's parameters, proven entry by entry against sealed headers.

A light client (a meter's agent) starts from the genesis it was given. A vote that changes the
validators, the quorum or a parameter executes in some block H; H is sealed by the validators in
force *before* it, and H's ``state_root`` commits to the state *after* it, one Merkle leaf per
top-level entry (chain/state.py). So a **config step** — H's header, its seals and the audit paths
of the entries ``chain.validators``, ``chain.quorum`` and ``chain.params`` against that root — is
checked with the configuration the client already trusts, and gives it the next one. A node
publishes the steps it recorded (peerwatt/node/announce.py: from the genesis, or from its
upgrade on), cut to the newest that fit one MQTT message; a client walks them in height order
from where it stands. A step it cannot check (sealed by validators it does not know yet:
a step before it is missing) ends the walk, so withholding steps can delay a client but never
make it trust a configuration the chain did not have.

Message shapes (JSON; checked by :func:`verify_config_step`):

- step: ``{"type": "config_step", "header": {...}, "seals": [...], "tree_size": n,
  "entries": [{"key": "validators" | "quorum" | "params", "value": ..., "index": i,
  "proof": [hex, ...]}, ...]}``;
- history: ``{"type": "config_history", "steps": [step, ...]}`` in height order.

Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chain.canonical import CanonicalError, dumps_checked
from chain.merkle import MerkleTree, leaf_hash, proof_from_hex, proof_to_hex, verify_inclusion
from chain.state import State, state_leaves

NAMESPACE = "chain"
CONFIG_KEYS = ("validators", "quorum", "params")
# steps one history may carry: each vote on the validators or a parameter is one; far above any
# community's (a history past it is cut to its last steps: a client older than that starts over
# from a newer genesis)
MAX_STEPS = 1024


class ConfigProofError(ValueError):
    """A config step or history that does not verify, or is malformed."""


@dataclass(frozen=True)
class TrustedConfig:
    """What a light client trusts: the configuration in force after block ``height``."""

    height: int
    validators: dict[str, str]  # key id -> compressed SEC1 public key (hex)
    quorum: int
    params: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "validators": self.validators,
            "quorum": self.quorum,
            "params": self.params,
        }

    @classmethod
    def from_entries(cls, height: int, entries: dict[str, Any]) -> TrustedConfig:
        """The configuration of :func:`config_entries` of the state after block ``height``
        (ConfigProofError if they are not a usable one)."""
        validators = entries["validators"]
        if not isinstance(validators, dict) or not all(isinstance(v, dict) for v in validators.values()):
            raise ConfigProofError("validators is not a registry")
        config = cls(
            height=height,
            validators={kid: v["key"] for kid, v in validators.items()},
            quorum=entries["quorum"],
            params=dict(entries["params"]),
        )
        _check_config(config)
        return config

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrustedConfig:
        """A configuration saved with :meth:`to_json` (ValueError if it is not one)."""
        try:
            config = cls(
                height=data["height"],
                validators=dict(data["validators"]),
                quorum=data["quorum"],
                params=dict(data["params"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a saved configuration: {exc}") from None
        _check_config(config)
        return config


def config_entries(state: State) -> dict[str, Any]:
    """The entries a light client follows, as they are in ``state`` (compare two to see whether
    a block changed the configuration)."""
    return {key: state[NAMESPACE][key] for key in CONFIG_KEYS}


def config_step(state: State, header: dict[str, Any], seals: list[Any]) -> dict[str, Any]:
    """The step proving ``state``'s configuration: ``state`` is the state after the block of
    ``header`` (whose ``state_root`` it must give), ``seals`` that block's seals (JSON)."""
    leaves = state_leaves(state)
    order = [(ns, key) for ns in sorted(state) for key in sorted(state[ns])]
    tree = MerkleTree(leaves)
    if tree.root.hex() != header["state_root"]:
        raise ValueError(f"the state given is not the state after block {header['height']}")
    entries = []
    for key in CONFIG_KEYS:
        index = order.index((NAMESPACE, key))
        entries.append(
            {
                "key": key,
                "value": state[NAMESPACE][key],
                "index": index,
                "proof": proof_to_hex(tree.inclusion_proof(index)),
            }
        )
    return {
        "type": "config_step",
        "header": header,
        "seals": seals,
        "tree_size": len(leaves),
        "entries": entries,
    }


def verify_config_step(
    step: dict[str, Any],
    trusted: TrustedConfig,
    check_seals: Callable[[dict[str, Any], dict[str, str], int], dict[str, Any]],
) -> TrustedConfig:
    """The configuration after ``step``'s block, if its seals check against ``trusted`` (by
    ``check_seals(step, validators, quorum)``, which returns the sealed header or raises) and
    every entry's proof against its ``state_root``; ConfigProofError otherwise."""
    try:
        if step.get("type") != "config_step":
            raise ConfigProofError("not a config step")
        header = step["header"]
        if type(header["height"]) is not int or header["height"] <= trusted.height:
            raise ConfigProofError(f"step at height {header['height']} is not after {trusted.height}")
        header = check_seals(step, trusted.validators, trusted.quorum)
        root, size = bytes.fromhex(header["state_root"]), step["tree_size"]
        values: dict[str, Any] = {}
        for entry in step["entries"]:
            key = entry["key"]
            if key not in CONFIG_KEYS or key in values:
                raise ConfigProofError(f"entry {key!r} is not one of {', '.join(CONFIG_KEYS)}, or twice")
            leaf = leaf_hash(dumps_checked([NAMESPACE, key, entry["value"]]))
            if not verify_inclusion(leaf, entry["index"], size, proof_from_hex(entry["proof"]), root):
                raise ConfigProofError(f"the proof of {key} in block {header['height']} fails")
            values[key] = entry["value"]
        if set(values) != set(CONFIG_KEYS):
            raise ConfigProofError(
                f"step at height {header['height']} lacks {', '.join(set(CONFIG_KEYS) - set(values))}"
            )
        config = TrustedConfig.from_entries(header["height"], values)
    except ConfigProofError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError, CanonicalError) as exc:
        raise ConfigProofError(f"malformed or forged config step: {exc}") from None
    return config


def follow(
    history: dict[str, Any],
    trusted: TrustedConfig,
    check_seals: Callable[[dict[str, Any], dict[str, str], int], dict[str, Any]],
    on_step: Callable[[TrustedConfig], None] | None = None,
) -> tuple[TrustedConfig, str | None]:
    """Walk ``history``'s steps after ``trusted`` in height order: (the last configuration
    reached, None) or (that configuration, why the walk stopped early). Steps at or below the
    trusted height are skipped: they are what the client has already followed. ``on_step`` is
    given each configuration reached on the way (a client that checks older blocks needs the
    configuration in force before each)."""
    if not isinstance(history, dict) or history.get("type") != "config_history":
        return trusted, "not a config history"
    steps = history.get("steps")
    if not isinstance(steps, list) or len(steps) > MAX_STEPS:
        return trusted, f"a config history holds a list of at most {MAX_STEPS} steps"
    for step in steps:
        header = step.get("header") if isinstance(step, dict) else None
        height = header.get("height") if isinstance(header, dict) else None
        if type(height) is int and height <= trusted.height:
            continue
        try:
            trusted = verify_config_step(step, trusted, check_seals)
        except ConfigProofError as exc:
            return trusted, str(exc)
        if on_step is not None:
            on_step(trusted)
    return trusted, None


def _check_config(config: TrustedConfig) -> None:
    if type(config.height) is not int or config.height < 0:
        raise ConfigProofError("height must be a non-negative integer")
    if not config.validators or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in config.validators.items()
    ):
        raise ConfigProofError("validators must name at least one key")
    if type(config.quorum) is not int or not 1 <= config.quorum <= len(config.validators):
        raise ConfigProofError(f"quorum {config.quorum!r} is not between 1 and the number of validators")
    if not isinstance(config.params, dict):
        raise ConfigProofError("params must be a table")
