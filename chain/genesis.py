"""Genesis (height 0): the community, its validators, sequencer, members, meters and app parameters.

Read from a TOML file (tomllib), checked strictly, and turned into a canonical JSON document whose
hash is committed in the genesis header, and into the chain's initial state.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chain.canonical import CanonicalError, canonical_bytes, check_value
from chain.keys import KeyFileError, key_id, load_public_key, public_key_sec1
from chain.schema import COMMUNITY_ID, LABEL, SchemaError

GENESIS_VERSION = 1
# Versions of the ledger's rules (genesis [chain] rules; absent = 1). 2: a proposal is checked
# again when it passes and closes as rejected if it no longer applies (chain/governance.py).
# 3: the market keeps a corrected reading that moves no money, and refuses an order older than a
# cancellation of the same meter and interval (market/app.py). 4: the market clears an interval
# once whatever a later gate_s vote says, and its parameters' checks take tighter bounds (order
# limit prices, the correction window against the settlement delay: market/params.py). 5: the
# market re-settles an interval already settled on the grid operator's data by changing only the
# meters whose row arrived (the others keep what the interval settled on, also after a vote to
# settlement_source "gridops"), and keeps the readings of intervals waiting under "gridops"
# (market/app.py).
RULES = (1, 2, 3, 4, 5)
RULES_NEW = 5  # what every genesis peerwatt writes from now on says
# An IANA zone name such as "Europe/Vienna" or "UTC"; names of the machine's own settings
# ("localtime", "posixrules") would mean another zone on every node and are refused.
_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+-]{0,63}(/[A-Za-z0-9_+-]{1,64}){0,3}")
_MACHINE_ZONES = frozenset({"localtime", "posixrules"})


class GenesisError(ValueError):
    """A genesis file that cannot be used; the message names the file's key and the fix."""


class NewerGenesis(GenesisError):
    """A genesis of ledger rules this version does not know: not damaged, written by a newer
    peerwatt; the fix is a newer peerwatt (found in a QA pass: an older `verify` told to restore
    an intact rules-5 store from a peer, whose copy fails alike)."""


@dataclass(frozen=True)
class Genesis:
    """A checked genesis document (canonical JSON values only)."""

    doc: dict[str, Any]

    @property
    def community(self) -> str:
        return self.doc["community"]["id"]

    @property
    def time(self) -> int:
        return self.doc["community"]["time"]

    @property
    def app_name(self) -> str:
        return self.doc["community"]["app"]

    @property
    def app_params(self) -> dict[str, Any]:
        return self.doc["app"]

    @property
    def interval_s(self) -> int | None:
        value = self.doc["app"].get("interval_s")
        return value if type(value) is int else None

    def to_bytes(self) -> bytes:
        return canonical_bytes(self.doc)

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(self.to_bytes()).digest()


def check_timezone(name: Any, where: str = "community.timezone") -> str:
    """Return ``name`` if it is a known IANA time zone, else raise GenesisError in one line."""
    fix = "use an IANA time zone name such as 'Europe/Vienna' or 'UTC'"
    if not isinstance(name, str) or not _ZONE_NAME.fullmatch(name) or name in _MACHINE_ZONES:
        raise GenesisError(f"{where} {name!r} is not a time zone name: {fix}")
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise GenesisError(f"{where} {name!r} is not a known time zone: {fix}") from None
    return name


def check_serial(serial: Any, where: str) -> str:
    """Return ``serial`` if a reading may carry it (the reading schema's LABEL), else GenesisError.

    Genesis, governance's enroll_meter and the reading body share this one rule, so an enrolled
    meter can always send a reading with its own serial."""
    try:
        LABEL.check(serial, where)
    except SchemaError as exc:
        raise GenesisError(f"{exc} (1-64 printable ASCII characters, no spaces)") from None
    return serial


def default_quorum(validator_count: int) -> int:
    """floor(2n/3) + 1 of n validators."""
    return (2 * validator_count) // 3 + 1


def _key_entry(entry: Any, where: str, extra: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if not isinstance(entry, dict) or "key" not in entry:
        raise GenesisError(f"{where}: needs a 'key' (compressed SEC1 hex or PEM public key)")
    try:
        public = load_public_key(entry["key"])
    except (KeyFileError, AttributeError) as exc:
        raise GenesisError(f"{where}.key: {exc}") from None
    unknown = set(entry) - {"key", "name", *extra}
    if unknown:
        raise GenesisError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    record: dict[str, Any] = {"key": public_key_sec1(public).hex()}
    name = entry.get("name", "")
    if not isinstance(name, str) or len(name) > 64:
        raise GenesisError(f"{where}.name must be a string of at most 64 characters")
    record["name"] = name
    for field, kind in extra.items():
        if field not in entry:
            raise GenesisError(f"{where}: '{field}' is missing")
        if not isinstance(entry[field], kind) or isinstance(entry[field], bool):
            raise GenesisError(f"{where}.{field} must be of type {kind.__name__}")
        record[field] = entry[field]
    return key_id(public), record


def genesis_from_dict(data: dict[str, Any]) -> Genesis:
    """Check a genesis mapping (as read from TOML) and normalise it into a Genesis."""
    unknown = set(data) - {"community", "chain", "app", "validators", "members", "meters"}
    if unknown:
        raise GenesisError(f"unknown section(s): {', '.join(sorted(unknown))}")
    community = data.get("community")
    if not isinstance(community, dict):
        raise GenesisError("[community] section is missing")
    try:
        COMMUNITY_ID.check(community.get("id"), "community.id")
    except SchemaError as exc:
        raise GenesisError(f"{exc} (lowercase letters, digits and '-')") from None
    if type(community.get("time")) is not int or community["time"] < 0:
        raise GenesisError("community.time must be the genesis time in Unix seconds")
    app_name = community.get("app", "market")
    try:
        LABEL.check(app_name, "community.app")
    except SchemaError as exc:
        raise GenesisError(str(exc)) from None
    unknown = set(community) - {"id", "name", "time", "app", "timezone"}
    if unknown:
        raise GenesisError(f"[community]: unknown field(s) {', '.join(sorted(unknown))}")

    validators = dict(_key_entry(v, f"validators[{i}]", {}) for i, v in enumerate(data.get("validators", [])))
    if not validators:
        raise GenesisError("at least one [[validators]] entry is needed")
    members = dict(_key_entry(m, f"members[{i}]", {}) for i, m in enumerate(data.get("members", [])))
    meters = {}
    for i, entry in enumerate(data.get("meters", [])):
        kid, meter = _key_entry(entry, f"meters[{i}]", {"serial": str, "owner": str, "capacity_w": int})
        meters[kid] = meter
        check_serial(meter["serial"], f"meters[{i}].serial")
    for kid, meter in meters.items():
        if meter["owner"] not in members:
            raise GenesisError(f"meter {kid}: owner {meter['owner']} is not a member's key id")
        if meter["capacity_w"] <= 0:
            raise GenesisError(f"meter {kid}: capacity_w must be positive")

    chain = data.get("chain", {})
    unknown = set(chain) - {"quorum", "sequencer", "block_s", "max_open_proposals", "rules"}
    if unknown:
        raise GenesisError(f"[chain]: unknown field(s) {', '.join(sorted(unknown))}")
    quorum = chain.get("quorum", default_quorum(len(validators)))
    n, least = len(validators), default_quorum(len(validators))
    if type(quorum) is not int or not least <= quorum <= n:
        raise GenesisError(
            f"chain.quorum must be within {least}..{n} for {n} validator(s): below floor(2n/3)+1 two "
            "quorums need not share an honest validator, and two different blocks could become final"
        )
    sequencer = chain.get("sequencer", next(iter(validators)))
    if sequencer not in validators:
        raise GenesisError("chain.sequencer must be the key id of one of the validators")
    block_s = chain.get("block_s", 2)
    if type(block_s) is not int or block_s < 1:
        raise GenesisError("chain.block_s must be a positive integer (seconds)")

    chain_doc = {"quorum": quorum, "sequencer": sequencer, "block_s": block_s}
    if "max_open_proposals" in chain:  # absent in every genesis written before it (docs/governance.md)
        limit = chain["max_open_proposals"]
        if type(limit) is not int or limit < 1:
            raise GenesisError(
                "chain.max_open_proposals must be a positive integer (open proposals one key may have)"
            )
        chain_doc["max_open_proposals"] = limit
    if "rules" in chain:  # absent (1) in every genesis written before it (docs/ledger.md, "Rules")
        rules = chain["rules"]
        if type(rules) is int and rules > max(RULES):
            raise NewerGenesis(
                f"chain.rules is {rules}: this version of peerwatt knows the ledger rules "
                f"{', '.join(map(str, RULES))}; a newer peerwatt wrote this genesis: update peerwatt"
            )
        if type(rules) is not int or rules not in RULES:
            raise GenesisError(
                f"chain.rules must be one of {', '.join(map(str, RULES))} (the ledger rules this "
                "version of peerwatt knows; a newer genesis needs a newer peerwatt)"
            )
        chain_doc["rules"] = rules

    app = data.get("app", {})
    try:
        check_value(app)
    except CanonicalError as exc:
        raise GenesisError(f"[app]: {exc} (use integers, not decimals)") from None
    doc = {
        "version": GENESIS_VERSION,
        "community": {
            "id": community["id"],
            "name": community.get("name", community["id"]),
            "time": community["time"],
            "app": app_name,
            "timezone": check_timezone(community.get("timezone", "UTC")),
        },
        "chain": chain_doc,
        "validators": validators,
        "members": members,
        "meters": meters,
        "app": app,
    }
    return Genesis(doc)


def load_genesis(path: str | Path) -> Genesis:
    """Read and check a genesis TOML file; GenesisError names the problem."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GenesisError(f"genesis file {path} not found (write one with `peerwatt genesis new`)") from None
    except UnicodeDecodeError as exc:
        raise GenesisError(
            f"{path} is not a genesis file (not UTF-8: byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}): give the community's genesis.toml"
        ) from None
    except OSError as exc:
        raise GenesisError(f"cannot read genesis file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise GenesisError(f"{path} is not valid TOML: {exc}") from None
    try:
        return genesis_from_dict(data)
    except GenesisError as exc:  # (a NewerGenesis stays one)
        raise type(exc)(f"{path}: {exc}") from None


def initial_chain_state(genesis: Genesis) -> dict[str, Any]:
    """The engine's own state at height 0 (governance registry, replay windows)."""
    doc = genesis.doc
    state = {
        "validators": dict(doc["validators"]),
        "quorum": doc["chain"]["quorum"],
        "sequencer": doc["chain"]["sequencer"],
        "members": dict(doc["members"]),
        "meters": {k: dict(v, active=True) for k, v in doc["meters"].items()},
        "revoked": {},
        "erased": {},
        "proposals": {},
        "params": dict(doc["app"]),
        "seqs": {},
    }
    if "max_open_proposals" in doc["chain"]:  # and with it the bounds on a proposal's arguments
        state["max_open_proposals"] = doc["chain"]["max_open_proposals"]
    if "rules" in doc["chain"]:  # (absent: 1, and the state as it was before the field)
        state["rules"] = doc["chain"]["rules"]
    return state
