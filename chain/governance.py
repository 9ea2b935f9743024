"""Community votes recorded on the chain: proposals, votes, thresholds and their effects (pure).

Rules (docs/governance.md): key enrolment and revocation, validator-set and sequencer changes pass
with a quorum of the validators in force; membership, parameter changes and erasure pass with a
majority of the members. A proposal's id is its transaction hash; the proposer's own eligible
vote counts as yes. A member votes once; a vote after the deadline does not count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chain.canonical import CanonicalError, canonical_bytes
from chain.envelope import Envelope, Rejected
from chain.genesis import GenesisError, check_serial, check_timezone, default_quorum
from chain.keys import KeyFileError, key_id, load_public_key, public_key_sec1
from chain.schema import KEY_ID, SchemaError

MAX_VOTING_PERIOD_S = 30 * 24 * 3600

# The bounds on a proposal's arguments, in force with the genesis' chain.max_open_proposals
# (docs/governance.md, "Bounds"): a proposal is kept in every node's state until it closes (up to
# MAX_VOTING_PERIOD_S), so what it may carry is what it really needs.
MAX_KEY_CHARS = 256  # a P-256 public key: 66 or 130 hex digits, or a PEM of about 180 characters
MAX_NAME_CHARS = 64  # as a genesis name and a join request's name
MAX_PARAM_NAME_CHARS = 64
MAX_PARAM_VALUE_BYTES = 1024  # canonical JSON of set_param's value (about 30 gridops_operators)
# the arguments that name a key by its id
KEY_ID_ARGS = frozenset({"owner", "meter", "member", "validator", "sequencer"})

VALIDATOR_ACTIONS = frozenset(
    {"enroll_meter", "revoke_meter", "add_validator", "remove_validator", "set_sequencer"}
)

ARGS: dict[str, dict[str, type]] = {
    "enroll_meter": {"key": str, "serial": str, "owner": str, "capacity_w": int},
    "revoke_meter": {"meter": str},
    "add_member": {"key": str, "name": str},
    "remove_member": {"member": str},
    "add_validator": {"key": str, "name": str},
    "remove_validator": {"validator": str},
    "set_sequencer": {"sequencer": str},
    "set_param": {"name": str, "value": object},
    "erase_member": {"member": str},
}


def electorate(
    chain: dict[str, Any], action: str, proposal: dict[str, Any] | None = None
) -> tuple[set[str], int]:
    """(who may vote, yes votes needed) for a proposal's action under the current state; an open
    ``proposal`` that recorded its threshold when it was opened (a ledger with the bounds) needs
    that many."""
    voters = set(chain["validators"] if action in VALIDATOR_ACTIONS else chain["members"])
    if proposal is not None and "needed" in proposal:
        return voters, proposal["needed"]
    return voters, chain["quorum"] if action in VALIDATOR_ACTIONS else len(voters) // 2 + 1


def _sec1(text: Any, where: str) -> tuple[str, str]:
    try:
        public = load_public_key(text)
    except (KeyFileError, AttributeError):
        raise Rejected("bad_value", f"{where} is not a P-256 public key") from None
    return key_id(public), public_key_sec1(public).hex()


def check_proposal(
    chain: dict[str, Any], env: Envelope, time: int, check_params: Callable[..., None]
) -> None:
    """Raise Rejected unless ``env`` is a well-formed proposal that could pass now."""
    body = env.body
    action, args = body["action"], body["args"]
    if env.signer not in chain["members"] and env.signer not in chain["validators"]:
        raise Rejected("not_a_member", "only members and validators may propose")
    if not time < body["deadline"] <= time + MAX_VOTING_PERIOD_S:
        raise Rejected("bad_deadline", "deadline must be in the future and within 30 days")
    spec = ARGS[action]
    for name, kind in spec.items():
        if name not in args and not (name == "name" and action in ("add_member", "add_validator")):
            raise Rejected("missing_field", f"body.args.{name} is missing")
        if name in args and kind is not object and (type(args[name]) is not kind):
            raise Rejected("bad_type", f"body.args.{name} must be a {kind.__name__}")
    if set(args) - set(spec):
        raise Rejected("unknown_field", f"unknown args for {action}")
    limit = chain.get("max_open_proposals")
    if limit is not None:  # absent in ledgers from before it: their proposals ran unbounded
        _check_bounds(args)
        mine = _open_proposals_of(chain, env.signer)
        if mine >= limit:
            raise Rejected(
                "too_many_proposals",
                f"this key has {mine} open proposals, the most one key may have (chain.max_open_proposals): "
                "wait until one closes",
            )
    _check_action(chain, action, args, check_params)


def _open_proposals_of(chain: dict[str, Any], signer: str) -> int:
    """How many open proposals ``signer`` has (bounded by ``max_open_proposals``)."""
    return sum(1 for p in chain["proposals"].values() if p["proposer"] == signer)


def _check_action(
    chain: dict[str, Any], action: str, args: dict[str, Any], check_params: Callable[..., None]
) -> None:
    """Raise Rejected('bad_value') unless ``action`` with ``args`` applies to the state as it is
    now (checked when a proposal opens, and again when it passes on a ledger with rules 2)."""
    limit = chain.get("max_open_proposals")
    if action == "enroll_meter":
        kid, _ = _sec1(args["key"], "args.key")
        if kid in chain["meters"] or kid in chain["revoked"]:
            raise Rejected("bad_value", "this meter key is already enrolled or was revoked")
        if args["owner"] not in chain["members"]:
            raise Rejected("bad_value", "the meter's owner is not a member")
        if args["capacity_w"] <= 0:
            raise Rejected("bad_value", "capacity_w must be positive")
        try:
            check_serial(args["serial"], "args.serial")  # the reading schema's rule
        except GenesisError as exc:
            raise Rejected("bad_value", str(exc)) from None
    elif action == "revoke_meter":
        if not chain["meters"].get(args["meter"], {}).get("active"):
            raise Rejected("bad_value", "no such active meter")
    elif action in ("add_member", "add_validator"):
        kid, _ = _sec1(args["key"], "args.key")
        registry = chain["members"] if action == "add_member" else chain["validators"]
        if kid in registry:
            raise Rejected("bad_value", "already registered")
    elif action == "remove_member" or action == "erase_member":
        if args["member"] not in chain["members"] and action == "remove_member":
            raise Rejected("bad_value", "no such member")
    elif action == "remove_validator":
        if args["validator"] not in chain["validators"] or len(chain["validators"]) == 1:
            raise Rejected("bad_value", "no such validator, or it is the last one")
        if args["validator"] == chain["sequencer"]:
            raise Rejected("bad_value", "change the sequencer before removing it")
    elif action == "set_sequencer":
        if args["sequencer"] not in chain["validators"]:
            raise Rejected("bad_value", "the sequencer must be a validator")
    elif action == "set_param":
        if args["name"] == "interval_s" and limit is not None:  # with the bounds: new ledgers only
            raise Rejected(
                "bad_value",
                "interval_s is fixed when the chain starts: the readings, orders and settlements of the "
                "intervals before a change would no longer align (another interval needs a new chain)",
            )
        if args["name"] == "timezone":
            try:
                check_timezone(args["value"], "args.value")
            except GenesisError as exc:
                raise Rejected("bad_value", str(exc)) from None
        try:
            check_params(
                dict(chain["params"], **{args["name"]: args["value"]}),
                bounded=limit is not None,
                rules=chain.get("rules", 1),
            )
        except ValueError as exc:
            raise Rejected("bad_value", f"parameter change refused: {exc}") from None


def _check_bounds(args: dict[str, Any]) -> None:
    """Raise Rejected('bad_value') unless every argument has its real shape and size: a key id
    where a key is named, a public key of at most MAX_KEY_CHARS, a name of at most
    MAX_NAME_CHARS, a parameter value of at most MAX_PARAM_VALUE_BYTES. (The types, and each
    action's own rules, are checked by check_proposal.)"""
    for name, value in args.items():
        if name in KEY_ID_ARGS:
            try:
                KEY_ID.check(value, f"args.{name}")
            except SchemaError:
                raise Rejected(
                    "bad_value", f"args.{name} must be a key id (32 lowercase hex digits)"
                ) from None
        elif name == "key" and len(value) > MAX_KEY_CHARS:
            raise Rejected("bad_value", f"args.key is longer than a public key ({MAX_KEY_CHARS} characters)")
    if "name" in args and "value" in args:  # set_param
        if len(args["name"]) > MAX_PARAM_NAME_CHARS:
            raise Rejected("bad_value", f"args.name is longer than {MAX_PARAM_NAME_CHARS} characters")
        try:
            size = len(canonical_bytes(args["value"]))
        except CanonicalError as exc:
            raise Rejected("bad_value", f"args.value: {exc}") from None
        if size > MAX_PARAM_VALUE_BYTES:
            raise Rejected("bad_value", f"args.value is {size} bytes, more than {MAX_PARAM_VALUE_BYTES}")
    elif "name" in args and len(args["name"]) > MAX_NAME_CHARS:
        raise Rejected("bad_value", f"args.name is longer than {MAX_NAME_CHARS} characters")


def _apply(chain: dict[str, Any], action: str, args: dict[str, Any], height: int) -> None:
    if action == "enroll_meter":
        kid, sec1 = _sec1(args["key"], "args.key")
        chain["meters"][kid] = {
            "key": sec1,
            "name": "",
            "serial": args["serial"],
            "owner": args["owner"],
            "capacity_w": args["capacity_w"],
            "active": True,
        }
    elif action == "revoke_meter":
        chain["meters"][args["meter"]]["active"] = False
        chain["revoked"][args["meter"]] = height
    elif action == "add_member":
        kid, sec1 = _sec1(args["key"], "args.key")
        chain["members"][kid] = {"key": sec1, "name": args.get("name", "")}
    elif action == "remove_member":
        chain["members"].pop(args["member"], None)
    elif action == "add_validator":
        kid, sec1 = _sec1(args["key"], "args.key")
        chain["validators"][kid] = {"key": sec1, "name": args.get("name", "")}
        chain["quorum"] = default_quorum(len(chain["validators"]))
    elif action == "remove_validator":
        chain["validators"].pop(args["validator"], None)
        chain["quorum"] = default_quorum(len(chain["validators"]))
    elif action == "set_sequencer":
        chain["sequencer"] = args["sequencer"]
    elif action == "set_param":
        chain["params"][args["name"]] = args["value"]
    elif action == "erase_member":
        chain["erased"][args["member"]] = height


def _tally(
    chain: dict[str, Any], pid: str, height: int, check_params: Callable[..., None]
) -> list[dict[str, Any]]:
    proposal = chain["proposals"][pid]
    voters, needed = electorate(chain, proposal["action"], proposal)
    yes = len(voters.intersection(proposal["yes"]))
    no = len(voters.intersection(proposal["no"]))

    def closed(outcome: str, **reason: str) -> list[dict[str, Any]]:
        del chain["proposals"][pid]
        action = proposal["action"]
        return [{"kind": "gov", "proposal": pid, "action": action, "outcome": outcome, "yes": yes, "no": no}
                | reason]  # fmt: skip

    if yes >= needed:
        if chain.get("rules", 1) >= 2:  # what was true when it opened may no longer be
            try:
                _check_action(chain, proposal["action"], proposal["args"], check_params)
            except Rejected as exc:
                return closed("rejected", reason=f"no longer applies: {exc.detail}")
        result = closed("passed")
        _apply(chain, proposal["action"], proposal["args"], height)
        return result
    if len(voters) - no < needed:
        return closed("rejected")
    return []


def propose(
    chain: dict[str, Any],
    env: Envelope,
    height: int,
    time: int,
    check_params: Callable[..., None],
) -> list[dict[str, Any]]:
    """Open a proposal (its id is the tx hash); the proposer's eligible vote counts as yes."""
    check_proposal(chain, env, time, check_params)
    pid = env.tx_hash.hex()
    if pid in chain["proposals"]:
        raise Rejected("duplicate_proposal", "this proposal is already open")
    chain["proposals"][pid] = {
        "action": env.body["action"],
        "args": env.body["args"],
        "deadline": env.body["deadline"],
        "proposer": env.signer,
        "yes": [env.signer],
        "no": [],
    }
    if "max_open_proposals" in chain:
        # with the bounds: the yes votes needed are fixed when the proposal opens. Counted at each
        # vote, three households admitted at once left the third open: the first two passed in
        # the same block, the members grew from 4 to 6 and it needed 4 yes votes (a QA pass)
        chain["proposals"][pid]["needed"] = electorate(chain, env.body["action"])[1]
    return [{"kind": "gov", "proposal": pid, "action": env.body["action"], "outcome": "opened"}] + _tally(
        chain, pid, height, check_params
    )


def vote(
    chain: dict[str, Any], env: Envelope, height: int, time: int, check_params: Callable[..., None]
) -> list[dict[str, Any]]:
    """Count a vote; the proposal executes as soon as it reaches its threshold (on a ledger with
    rules 2, only if it still applies then: else it closes as rejected, with the reason)."""
    check_vote(chain, env, time)
    pid = env.body["proposal"]
    chain["proposals"][pid]["yes" if env.body["vote"] == "yes" else "no"].append(env.signer)
    return _tally(chain, pid, height, check_params)


def check_vote(chain: dict[str, Any], env: Envelope, time: int) -> None:
    """Raise Rejected unless ``env`` is a vote the ledger would count at ``time``: on an open
    proposal (``unknown_proposal``), before its deadline (``late_vote``), by a key of its
    electorate (``not_eligible``) that has not voted on it (``double_vote``)."""
    proposal = chain["proposals"].get(env.body["proposal"])
    if proposal is None:
        raise Rejected("unknown_proposal", "no open proposal with this id")
    if time > proposal["deadline"]:
        raise Rejected("late_vote", "the proposal's deadline has passed")
    voters, _ = electorate(chain, proposal["action"])
    if env.signer not in voters:
        raise Rejected("not_eligible", "this key may not vote on this proposal")
    if env.signer in proposal["yes"] or env.signer in proposal["no"]:
        raise Rejected("double_vote", "this key already voted on this proposal")


def pending_budget(chain: dict[str, Any], env: Envelope) -> tuple[Any, int, str] | None:
    """How many more governance messages like ``env`` the ledger would take (chain.app's
    ``pending_budget`` contract), checked at intake against those waiting for a block: one vote
    per key and proposal, and a key's proposals up to ``max_open_proposals`` with its open ones.
    (Found in a QA pass: votes were not checked at intake at all, and a burst of them, or of
    proposals beyond the bound, was booked in full as rejected transactions.)"""
    if env.type == "vote":
        return ("vote", env.signer, env.body["proposal"]), 1, "double_vote"
    limit = chain.get("max_open_proposals")
    if env.type == "propose" and limit is not None:
        mine = _open_proposals_of(chain, env.signer)
        return ("propose", env.signer), limit - mine, "too_many_proposals"
    return None


def expire(chain: dict[str, Any], time: int) -> list[dict[str, Any]]:
    """Close proposals whose deadline passed without reaching their threshold."""
    results = []
    for pid in sorted(chain["proposals"]):
        proposal = chain["proposals"][pid]
        if proposal["deadline"] < time:
            del chain["proposals"][pid]
            results.append(
                {"kind": "gov", "proposal": pid, "action": proposal["action"], "outcome": "expired"}
            )
    return results


def next_deadline(chain: dict[str, Any]) -> int | None:
    """The earliest open proposal deadline, or None."""
    return min((p["deadline"] for p in chain["proposals"].values()), default=None)
