"""Pure, deterministic block execution: (state, block time, ordered transactions) -> results, state.

The sequencer runs it to propose, every validator to check before sealing, and `peerwatt verify`
to re-check history. A block is *invalid* (no peer may seal it) when a transaction is malformed,
from a key the chain never knew, or badly signed; a well-signed transaction that the rules refuse
(expired, replayed, revoked key, gate closed, ...) is recorded as rejected with its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from chain import governance
from chain.app import AppContext, Application
from chain.envelope import Envelope, Rejected, check_time, verify_envelope
from chain.keys import PublicKey, load_public_key
from chain.replay import ReplayGuard
from chain.state import CowMap, State, commit_state, cow_state

POSITION_STRIDE = 1 << 20  # ledger position = height * stride + index in block
REPLAY_WINDOW = 4096


class InvalidBlock(Exception):
    """A block no validator may seal; ``reason`` is a code, the message says where."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass
class Execution:
    """What executing a block produced."""

    results: list[dict[str, Any]]
    state: State


@lru_cache(maxsize=4096)
def public_key_from_hex(sec1_hex: str) -> PublicKey:
    """A cached public key object for an enrolled key (keys are loaded once per process)."""
    return load_public_key(bytes.fromhex(sec1_hex))


def signer_key(chain: dict[str, Any], signer: str) -> str | None:
    """The enrolled SEC1 key (hex) of a signer, from any registry, or None if never known."""
    for registry in ("meters", "members", "validators"):
        entries = chain[registry]
        entry = entries.peek(signer) if type(entries) is CowMap else entries.get(signer)
        if entry is not None:
            return entry["key"]
    return None


def app_context(state: State, height: int, time: int) -> AppContext:
    """The app's view of a state at a block (with the ledger's rules: absent = 1)."""
    chain = state["chain"]
    return AppContext(state["app"], chain["params"], chain["meters"], height, time, chain.get("rules", 1))


def _replay_guard(chain: dict[str, Any], signer: str) -> ReplayGuard:
    seqs = chain["seqs"]
    saved = seqs.peek(signer) if type(seqs) is CowMap else seqs.get(signer)
    guard = ReplayGuard(REPLAY_WINDOW)
    if saved is not None:
        guard = ReplayGuard.from_json({"window": REPLAY_WINDOW, "signers": {signer: saved}})
    return guard


def check_replay(chain: dict[str, Any], env: Envelope) -> None:
    """Raise Rejected('replay') if the ledger already holds (signer, seq) or it left the window."""
    why = _replay_guard(chain, env.signer).why_replay(env.signer, env.seq)
    if why is not None:
        raise Rejected("replay", why)


def seq_behind(chain: dict[str, Any], signer: str, seq: int) -> bool:
    """True if ``seq`` is older than the signer's replay window: not a resend of something held,
    but a sender whose counter fell behind (another copy of its key sent newer seqs, or its state
    was restored from an older copy). Nodes tell such a sender ``seq_behind`` (docs/protocol.md)."""
    return _replay_guard(chain, signer).behind(signer, seq)


def record_seq(chain: dict[str, Any], env: Envelope) -> None:
    guard = _replay_guard(chain, env.signer)
    guard.record(env.signer, env.seq)
    chain["seqs"][env.signer] = guard.to_json()["signers"][env.signer]


def check_rules(app: Application, chain: dict[str, Any], ctx: AppContext, env: Envelope) -> None:
    """The rules every transaction must pass at the block's time (besides the app's own)."""
    check_time(env, ctx.time)
    if env.type in getattr(app, "operator_tx_types", frozenset()):
        # signed by a member's or validator's key; which of them may is the app's rule
        if env.signer not in chain["members"] and env.signer not in chain["validators"]:
            raise Rejected("not_operator", "the signer is not a member or validator of the community")
    elif env.type in app.tx_types:
        meter = chain["meters"].get(env.signer)
        if meter is None:
            raise Rejected("not_enrolled", "the signer is not an enrolled meter")
        if not meter["active"]:
            raise Rejected("revoked", "the meter's key was revoked")
    elif env.type not in ("propose", "vote"):
        raise Rejected("unknown_type", f"{env.type} messages are not transactions")
    check_replay(chain, env)


def verify_signer(chain: dict[str, Any], env: Envelope) -> None:
    """Verify a transaction's signature against the key enrolled for its signer."""
    sec1 = signer_key(chain, env.signer)
    if sec1 is None:
        raise InvalidBlock("unknown_signer", f"transaction from unknown key {env.signer}")
    try:
        verify_envelope(env, public_key_from_hex(sec1), key_id_hex=env.signer)
    except Rejected as exc:
        raise InvalidBlock(exc.reason, f"transaction {env.tx_hash.hex()}: {exc.detail}") from None


def execute_block(
    state: State,
    app: Application,
    *,
    height: int,
    time: int,
    txs: list[Envelope],
    verify_signatures: bool = True,
    in_place: bool = False,
    preverified: Callable[[Envelope, str], bool] | None = None,
) -> Execution:
    """Execute a block on ``state`` copy-on-write; raise InvalidBlock if no peer may seal it.

    ``state`` is never changed, also when the block is invalid: the block runs on overlays
    (chain.state.cow_state), and the state it returns shares every value the block did not touch
    with ``state`` (so its root hashes only what changed). ``in_place`` is accepted for callers
    written when execution deep-copied the state; it changes nothing now (the copy it skipped is
    gone for every caller).
    ``preverified(env, sec1)``: True when ``env``'s signature was already checked against the key
    ``sec1`` (e.g. on another core); it is skipped only if that is the key enrolled now.
    """
    work = cow_state(state)
    chain = work["chain"]
    ctx = app_context(work, height, time)
    results: list[dict[str, Any]] = []
    for index, env in enumerate(txs):
        if verify_signatures:
            sec1 = signer_key(chain, env.signer)
            if preverified is None or sec1 is None or not preverified(env, sec1):
                verify_signer(chain, env)
        elif signer_key(chain, env.signer) is None:
            raise InvalidBlock("unknown_signer", f"transaction from unknown key {env.signer}")
        tx_id = env.tx_hash.hex()
        try:
            check_rules(app, chain, ctx, env)
            record_seq(chain, env)
            if env.type == "propose":
                produced = governance.propose(chain, env, height, time, app.check_params)
            elif env.type == "vote":
                produced = governance.vote(chain, env, height, time, app.check_params)
            else:
                produced = app.deliver_tx(ctx, env, height * POSITION_STRIDE + index)
        except Rejected as exc:
            if (
                exc.reason != "replay"
                and _replay_guard(chain, env.signer).why_replay(env.signer, env.seq) is None
            ):
                record_seq(chain, env)
            results.append(
                {"kind": "tx", "index": index, "tx": tx_id, "status": "rejected", "reason": exc.reason}
            )
            continue
        results.append({"kind": "tx", "index": index, "tx": tx_id, "status": "ok"})
        results.extend(produced)
    results.extend(governance.expire(chain, time))
    results.extend(app.end_block(ctx))
    return Execution(results, commit_state(work))
