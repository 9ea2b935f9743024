"""The ledger engine: genesis, intake checks, proposing, validating, sealing and committing blocks.

Networking is not here: these are library calls that the node runner puts on MQTT. The engine
runs an application object (chain.app.Application) and knows nothing about energy.
"""

from __future__ import annotations

import time as _time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chain import governance, messages
from chain.app import Application
from chain.block import ZERO_HASH, Block, header_hash, result_root, seal_rounds, tx_root
from chain.canonical import CanonicalError, loads_strict
from chain.consensus import proposer_of
from chain.envelope import Envelope, Rejected, parse_envelope, sign_envelope, verify_envelope
from chain.execute import (
    Execution,
    InvalidBlock,
    app_context,
    check_rules,
    execute_block,
    public_key_from_hex,
    signer_key,
)
from chain.genesis import Genesis, GenesisError, NewerGenesis, genesis_from_dict, initial_chain_state
from chain.keys import PrivateKey, key_id
from chain.state import State, state_root
from chain.store import Store, StoreError

SEAL_TTL_S = 7 * 24 * 3600
# The state snapshot (node-local) is written every this many blocks and on close; opening a store
# re-executes the blocks after the snapshot (checking each state root) to rebuild the head state.
SNAPSHOT_EVERY = 16
MAX_FUTURE_BLOCK_S = 300
# A new proposal (no earlier polka) dated further behind a validator's clock is not prevoted
# (Ledger.check_timely): below MAX_SKEW_S, so a block dated this far back still takes a message
# created at the validator's "now" (a backdated block would refuse it as from_future)
MAX_PAST_BLOCK_S = 60
# A live proposal holds at most what an honest proposer builds (peerwatt/node/runtime.py,
# first_that_fit): this many transactions, of at most this many bytes of envelopes together (half
# of a block message, messages.MAX_BLOCK_BYTES: the rest is for its header and results).
MAX_BLOCK_TXS = 2000
MAX_BLOCK_TX_BYTES = messages.MAX_BLOCK_BYTES // 2
MAX_VERIFIED = 1 << 14  # message hashes remembered as verified, per generation (two kept: 3 MB)


class VerifiedHashes:
    """Hashes of messages whose signature this node verified, bounded: two generations of at most
    ``per_generation`` each; when the newer fills up the older is dropped. A message forgotten is
    only verified again (memory stays flat over a long run, and a recent message is never lost
    all at once, as it was when one set was cleared)."""

    def __init__(self, per_generation: int) -> None:
        self.per_generation = per_generation
        self._new: set[bytes] = set()
        self._old: set[bytes] = set()

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._new or digest in self._old

    def __len__(self) -> int:
        return len(self._new) + len(self._old)

    def add(self, digest: bytes) -> None:
        if len(self._new) >= self.per_generation:
            self._old, self._new = self._new, set()
        self._new.add(digest)


VOTE_TYPES = ("prevote", "seal")  # a seal is a precommit (for a header, or "nil")
NIL = "nil"


def genesis_block(genesis: Genesis, state: State) -> Block:
    """Height 0: commits to the genesis document (as its only 'transaction' hash) and the state."""
    header = {
        "height": 0,
        "prev": ZERO_HASH,
        "time": genesis.time,
        "tx_root": tx_root([genesis.hash]).hex(),
        "result_root": result_root([]).hex(),
        "state_root": state_root(state).hex(),
        "sequencer": genesis.doc["chain"]["sequencer"],
        "round": 0,
    }
    return Block(header, [], [])


def begin_block(state: State, creator: str) -> State:
    """The state a block executes on: the validator that created it becomes the sequencer (the
    proposer of round 0 from now on), so after a failover the new proposer keeps the role and no
    later block waits for the dead one. Governance (``set_sequencer``) may still change it in the
    block. The given state is not changed (a shallow copy when needed)."""
    if state["chain"]["sequencer"] == creator:
        return state
    return {**state, "chain": {**state["chain"], "sequencer": creator}}


def expected_proposer(chain_state: dict[str, Any], round_: int) -> str:
    """The validator whose turn it is to propose in ``round_`` of the next block."""
    return proposer_of(tuple(chain_state["validators"]), chain_state["sequencer"], round_)


def genesis_state(genesis: Genesis, app: Application) -> State:
    """The full state at height 0."""
    try:
        app.check_params(
            genesis.app_params,
            bounded="max_open_proposals" in genesis.doc["chain"],
            rules=genesis.doc["chain"].get("rules", 1),
        )
    except ValueError as exc:
        raise StoreError(f"genesis [app] parameters refused by the {app.name} app: {exc}") from None
    return {"chain": initial_chain_state(genesis), "app": app.init_state(genesis.app_params)}


@dataclass
class Ledger:
    """A node's view of the chain: its store, the app and the state after the last final block."""

    store: Store
    app: Application
    genesis: Genesis
    head: dict[str, Any]
    state: State
    # header hash -> (the transactions' hashes, their execution): a block this node built or
    # validated. A seal signs only the header, so a body is taken from here only if it is the one
    # executed (a catch-up peer may serve a sealed header with other transactions or results)
    _executions: dict[bytes, tuple[list[bytes], Execution]] = field(default_factory=dict)
    _verified: VerifiedHashes = field(default_factory=lambda: VerifiedHashes(MAX_VERIFIED))

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def create(cls, data_dir: str | Path, genesis: Genesis, app: Application) -> Ledger:
        """Create a node's store from a genesis (refuses an existing store)."""
        if genesis.app_name != app.name:
            raise StoreError(f"genesis runs the {genesis.app_name!r} app, not {app.name!r}")
        state = genesis_state(genesis, app)
        block = genesis_block(genesis, state)
        store = Store.create(data_dir)
        store.write_genesis(genesis.to_bytes(), block, state)
        return cls(store, app, genesis, block.header, state)

    @classmethod
    def open(cls, data_dir: str | Path, app: Application, *, readonly: bool = False) -> Ledger:
        """Open a node's store, checking its state snapshot against the last header."""
        store = Store.open(data_dir, readonly=readonly)
        try:
            genesis = stored_genesis(store)
        except StoreError:
            store.close()
            raise
        if genesis.app_name != app.name:
            raise StoreError(f"{data_dir} runs the {genesis.app_name!r} app, not {app.name!r}")
        height = store.height()
        head = store.header(height)
        if head is None:
            raise StoreError(f"{data_dir}: store is incomplete (run `peerwatt verify --data {data_dir}`)")
        return cls(store, app, genesis, head, head_state(store, app, genesis))

    def close(self) -> None:
        """Save the current state (so the next open need not re-execute) and close the store."""
        if not self.store.readonly:
            snapshot = self.store.snapshot()
            if snapshot is None or snapshot[0] < self.height:
                try:
                    self.store.write_snapshot(self.height, self.state)
                except StoreError:
                    pass  # a full disk: the next open re-executes from the last snapshot
        self.store.close()

    # -- facts about the chain ---------------------------------------------------------------

    @property
    def community(self) -> str:
        return self.genesis.community

    @property
    def height(self) -> int:
        return self.head["height"]

    @property
    def head_hash(self) -> bytes:
        return header_hash(self.head)

    @property
    def chain_state(self) -> dict[str, Any]:
        return self.state["chain"]

    def validators(self) -> dict[str, dict[str, Any]]:
        """The validator set in force for the next block."""
        return self.chain_state["validators"]

    def quorum(self) -> int:
        return self.chain_state["quorum"]

    def sequencer(self) -> str:
        """The proposer of round 0 of the next block."""
        return self.chain_state["sequencer"]

    def proposer(self, round_: int) -> str:
        """The proposer of ``round_`` of the next block."""
        return expected_proposer(self.chain_state, round_)

    def next_block_due(self) -> int | None:
        """The earliest time at which the app or governance needs a block (gate closure, ...)."""
        times = [
            self.app.next_block_due(app_context(self.state, self.height, self.head["time"])),
            governance.next_deadline(self.chain_state),
        ]
        due = [t for t in times if t is not None]
        return min(due) if due else None

    # -- intake ------------------------------------------------------------------------------

    def intake(self, data: bytes, now: int) -> Envelope:
        """Full check of a message offered as a transaction; raise Rejected with a reason.

        Parse strictly, check the signer is known and the signature, the ledger's replay window,
        the chain's rules and the app's check at time ``now``. The node's own pending-pool
        dedupe (replay of a message not yet in a block) is the caller's.
        """
        env = parse_envelope(data, community=self.community, now=now, interval_s=self.genesis.interval_s)
        signed = False
        try:
            sec1 = signer_key(self.chain_state, env.signer)
            if sec1 is None:
                raise Rejected("unknown_signer", f"key {env.signer} is not enrolled in {self.community}")
            if env.tx_hash not in self._verified:
                verify_envelope(env, public_key_from_hex(sec1), key_id_hex=env.signer)
            signed = True
            ctx = app_context(self.state, self.height + 1, now)
            check_rules(self.app, self.chain_state, ctx, env)
            if env.type in self.app.tx_types:
                self.app.check_tx(ctx, env)
            elif env.type == "propose":
                governance.check_proposal(self.chain_state, env, now, self.app.check_params)
            elif env.type == "vote":
                governance.check_vote(self.chain_state, env, now)
        except Rejected as exc:
            # parsed (and perhaps verified): the caller tells its signer without doing either again
            exc.envelope, exc.signed = env, signed
            raise
        self.mark_verified(env)
        return env

    def pending_budget(self, env: Envelope, now: int) -> tuple[Any, int, str] | None:
        """The budget for ``env`` at ``now``: governance's for votes and proposals, else the app's
        (chain.app's optional ``pending_budget``): (key, how many more under that key the ledger
        takes, the refusal's reason), or None."""
        if env.type in ("vote", "propose"):
            return governance.pending_budget(self.chain_state, env)
        budget = getattr(self.app, "pending_budget", None)
        if budget is None:
            return None
        return budget(app_context(self.state, self.height + 1, now), env)

    # -- proposing and validating ------------------------------------------------------------

    def propose(self, txs: list[Envelope], time: int, *, round_: int = 0) -> Block:
        """Build the next block, created in ``round_`` by that round's proposer, from checked
        transactions (signatures verified at intake)."""
        time = max(time, self.head["time"])
        height = self.height + 1
        creator = self.proposer(round_)
        execution = execute_block(
            begin_block(self.state, creator),
            self.app,
            height=height,
            time=time,
            txs=txs,
            verify_signatures=False,
        )
        header = {
            "height": height,
            "prev": self.head_hash.hex(),
            "time": time,
            "tx_root": tx_root([t.tx_hash for t in txs]).hex(),
            "result_root": result_root(execution.results).hex(),
            "state_root": state_root(execution.state).hex(),
            "sequencer": creator,
            "round": round_,
        }
        block = Block(header, list(txs), execution.results)
        self._executions[block.hash] = ([t.tx_hash for t in txs], execution)
        return block

    def validate(self, block: Block, *, now: int | None = None) -> Execution:
        """Re-execute a proposed block from the current state; raise InvalidBlock if it differs."""
        cached = self._executions.get(block.hash)
        if cached is not None:
            tx_hashes, execution = cached
            if [t.tx_hash for t in block.txs] == tx_hashes and block.results == execution.results:
                return execution
            # the same header with another body: the checks below refuse it (bad_tx_root, bad_results)
        header = block.header
        if header["height"] != self.height + 1:
            raise InvalidBlock("wrong_height", f"block {header['height']} does not follow {self.height}")
        if header["prev"] != self.head_hash.hex():
            raise InvalidBlock("wrong_prev", f"block {header['height']} does not link to our head")
        if header["sequencer"] != self.proposer(header["round"]):
            raise InvalidBlock(
                "wrong_sequencer", f"{header['sequencer']} is not the proposer of round {header['round']}"
            )
        if header["time"] < self.head["time"]:
            raise InvalidBlock("time_backwards", "block time is before the previous block's")
        if now is not None and header["time"] > now + MAX_FUTURE_BLOCK_S:
            raise InvalidBlock("from_future", "block time is ahead of our clock: check clocks")
        if header["tx_root"] != tx_root([t.tx_hash for t in block.txs]).hex():
            raise InvalidBlock("bad_tx_root", "tx_root does not match the transactions")
        if now is not None:
            self._check_proposed_txs(block)
        for env in block.txs:
            if env.community != self.community:
                raise InvalidBlock("wrong_community", f"transaction for {env.community}")
        execution = execute_block(
            begin_block(self.state, header["sequencer"]),
            self.app,
            height=header["height"],
            time=header["time"],
            txs=block.txs,
            preverified=self._was_verified,
        )
        if (
            execution.results != block.results
            or header["result_root"] != result_root(execution.results).hex()
        ):
            raise InvalidBlock("bad_results", "re-execution gives different results")
        if header["state_root"] != state_root(execution.state).hex():
            raise InvalidBlock("bad_state_root", "re-execution gives a different state root")
        for env in block.txs:  # every signature in a block that executed has been checked
            self.mark_verified(env)
        self._executions[block.hash] = ([t.tx_hash for t in block.txs], execution)
        return execution

    def check_timely(self, block: Block, now: int, max_past_s: float = MAX_PAST_BLOCK_S) -> None:
        """Refuse (InvalidBlock ``stale_time``) a new proposal dated more than ``max_past_s``
        (MAX_PAST_BLOCK_S, scaled by the node for a clock faster than real time, as the demo's)
        behind ``now``, this node's clock; the consensus asks only of a proposal with no earlier
        polka (chain.consensus.Height.timely). Found in a QA pass: a hostile proposer dated its
        block at its predecessor's time, an hour back, and every validator sealed it; the honest
        reading in it, created at the validators' "now", was booked as from_future and its seq
        used up (an order could likewise be booked before a gate that had closed)."""
        if block.header["time"] < now - max_past_s:
            raise InvalidBlock(
                "stale_time",
                f"block time is {now - block.header['time']} s behind our clock (at most "
                f"{max_past_s:g} s for a new proposal): check clocks",
            )

    def _check_proposed_txs(self, block: Block) -> None:
        """A live proposal's transactions are what an honest proposer takes from its pending ones:
        at most MAX_BLOCK_TXS of at most MAX_BLOCK_TX_BYTES together, each (signer, seq) once,
        none already in a stored block (a node refuses a booked one at intake and drops a pending
        one a block booked). Found in a QA pass: a hostile sequencer put one booked reading
        14,000 times into each block (6.5 MB), every validator sealed it, and every store grew by
        that each block, each copy only recorded as a replay. Not checked for a final block from
        a peer (its quorum checked it; a ledger made before this check still catches up)."""
        if len(block.txs) > MAX_BLOCK_TXS:
            raise InvalidBlock("too_many_txs", f"{len(block.txs)} transactions, at most {MAX_BLOCK_TXS}")
        size = sum(len(env.to_bytes()) for env in block.txs)
        if size > MAX_BLOCK_TX_BYTES:
            raise InvalidBlock("txs_too_large", f"{size} bytes of transactions, at most {MAX_BLOCK_TX_BYTES}")
        seen: set[tuple[str, int]] = set()
        for env in block.txs:
            if (env.signer, env.seq) in seen:
                raise InvalidBlock("duplicate_tx", f"{env.signer} seq {env.seq} twice in the block")
            seen.add((env.signer, env.seq))
        booked = self.store.stored_hashes([env.tx_hash for env in block.txs])
        if booked:
            raise InvalidBlock(
                "tx_already_booked",
                f"{len(booked)} transaction(s) already booked, e.g. {booked[0].hex()[:16]}",
            )

    # -- sealing -----------------------------------------------------------------------------

    def _was_verified(self, env: Envelope, sec1: str) -> bool:
        """``env``'s exact bytes verified here before, under its signer's key (a key id is the
        hash of the key, so the signer names the key): re-execution skips that signature."""
        return env.tx_hash in self._verified

    def mark_verified(self, env: Envelope) -> None:
        """This node verified ``env``'s signature (at intake, or re-executing a block): neither
        need repeat it for the same bytes."""
        self._verified.add(env.tx_hash)

    def seal(self, block: Block, key: PrivateKey, *, now: int | None = None, round_: int = 0) -> Envelope:
        """Validate a block and sign a precommit for it in ``round_`` (a seal). Voting at most once
        per round is the consensus's rule (chain.consensus), not checked here."""
        kid = key_id(key.public_key())
        if kid not in self.validators():
            raise InvalidBlock("not_a_validator", f"key {kid} is not a validator at this height")
        self.validate(block, now=now)
        return self.sign_vote(key, "seal", block.height, round_, block.hash.hex(), now=now)

    def sign_vote(
        self, key: PrivateKey, kind: str, height: int, round_: int, header: str, *, now: int | None = None
    ) -> Envelope:
        """A prevote or a precommit ("seal") for ``header`` (a block hash, hex, or "nil")."""
        created = now if now is not None else int(_time.time())
        return sign_envelope(
            key,
            type=kind,
            community=self.community,
            seq=height,
            body={"height": height, "round": round_, "header": header},
            created=created,
            expires=created + SEAL_TTL_S,
        )

    def is_final(self, seals: list[Envelope]) -> bool:
        """True when the distinct valid validators of one round among ``seals`` reach the quorum."""
        return bool(final_round(seals, set(self.validators()), self.quorum()))

    def commit(self, block: Block, seals: list[Envelope]) -> None:
        """Store a final block (a quorum of valid seals of one round) and advance the head."""
        valid = self.final_seals(block.header, seals, block_hash=block.hash)
        execution = self.validate(block)
        snapshot = execution.state if block.height % SNAPSHOT_EVERY == 0 else None
        self.store.append_block(block, valid, snapshot)
        self.head = block.header
        self.state = execution.state
        self._executions.clear()

    def final_seals(
        self, header: dict[str, Any], seals: list[Envelope], *, block_hash: bytes | None = None
    ) -> list[Envelope]:
        """The seals that make the block of ``header`` (the next block) final: a quorum of one
        round of the validators in force, at or after the round its header names; InvalidBlock
        otherwise.

        What costs no signature check comes first, for every seal (a seal of this community, by
        a validator, of this height and header, naming a round; one per validator and round:
        ``duplicate_seal``); then only the signatures of the seals that make it final are
        verified (at most one per validator), and only those are stored. A QA pass's catch-up
        peer served a real block with its 3 seals repeated 80,000 times: every copy's signature
        was verified before the duplicates were dropped (16 s of the node's loop)."""
        validators = self.validators()
        height = header["height"]
        block_hash = header_hash(header) if block_hash is None else block_hash
        slots: set[tuple[str, int]] = set()
        for seal in seals:
            check_seal_for(validators, self.community, height, block_hash, seal, signature=False)
            slot = (seal.signer, seal.body["round"])
            if slot in slots:
                raise InvalidBlock("duplicate_seal", f"two seals by {seal.signer} in round {slot[1]}")
            slots.add(slot)
        valid = final_round(seals, set(validators), self.quorum())
        if not valid:
            raise InvalidBlock("no_quorum", f"{len(seals)} seals, no round with a quorum of {self.quorum()}")
        for seal in valid:
            check_seal_for(validators, self.community, height, block_hash, seal)
        if valid[0].body["round"] < header["round"]:  # created in a round after it was final
            raise InvalidBlock(
                "bad_round",
                f"block {height} names round {header['round']}, final in round {valid[0].body['round']}",
            )
        return valid

    def check_final_header(self, header: dict[str, Any], seals: list[Envelope]) -> None:
        """Raise InvalidBlock unless ``header`` is of the next block, links to our head and is
        final by ``seals`` (:meth:`final_seals`): what can be believed of a block whose body
        cannot be checked (erased payloads)."""
        if header["height"] != self.height + 1:
            raise InvalidBlock("wrong_height", f"block {header['height']} does not follow {self.height}")
        if header["prev"] != self.head_hash.hex():
            raise InvalidBlock("wrong_prev", f"block {header['height']} does not link to our head")
        self.final_seals(header, seals)

    def detect_equivocation(self, seal_a: Envelope, seal_b: Envelope) -> dict[str, Any] | None:
        """Evidence if two valid votes of one kind by one validator name different headers in one
        round of one height, else None."""
        same_slot = (seal_a.type, seal_a.signer, seal_a.body["height"], seal_a.body.get("round")) == (
            seal_b.type,
            seal_b.signer,
            seal_b.body["height"],
            seal_b.body.get("round"),
        )
        if not same_slot or seal_a.body["header"] == seal_b.body["header"]:
            return None
        for seal in (seal_a, seal_b):
            sec1 = signer_key(self.chain_state, seal.signer)
            if sec1 is None:
                return None
            try:
                verify_envelope(seal, public_key_from_hex(sec1))
            except Rejected:
                return None
        return {"height": seal_a.body["height"], "seals": [seal_a.to_dict(), seal_b.to_dict()]}


def check_seal_for(
    validators: dict[str, dict[str, Any]],
    community: str,
    height: int,
    block_hash: bytes,
    seal: Envelope,
    *,
    signature_checked_with: str | None = None,
    signature: bool = True,
) -> None:
    """Raise InvalidBlock unless ``seal`` is a valid seal of ``block_hash`` by one of ``validators``.

    ``signature_checked_with``: the key (SEC1 hex) the seal's signature was already verified with
    elsewhere; the check is skipped only if that is the validator's key. ``signature`` False:
    everything but the signature (what costs no ECDSA verification)."""
    if seal.type != "seal" or seal.community != community:
        raise InvalidBlock("bad_seal", "not a seal of this community")
    validator = validators.get(seal.signer)
    if validator is None:
        raise InvalidBlock("not_a_validator", f"seal by {seal.signer}, not a validator at height {height}")
    if seal.body["height"] != height or seal.body["header"] != block_hash.hex():
        raise InvalidBlock("wrong_header", f"seal by {seal.signer} is for another header")
    if type(seal.body.get("round")) is not int:
        raise InvalidBlock("bad_seal", f"seal by {seal.signer} names no round")
    if not signature or (signature_checked_with is not None and signature_checked_with == validator["key"]):
        return
    try:
        verify_envelope(seal, public_key_from_hex(validator["key"]), key_id_hex=seal.signer)
    except Rejected as exc:
        raise InvalidBlock("bad_seal", f"seal by {seal.signer}: {exc.detail}") from None


def final_round(seals: list[Envelope], validators: set[str], quorum: int) -> list[Envelope]:
    """The seals of the first round in which distinct ``validators`` reach ``quorum`` (one per
    signer), or [] if no round does. Seals of different rounds never add up: a block is final on
    a quorum of precommits of one round (chain.consensus, line 49)."""
    by_round = seal_rounds(seals, validators)
    for round_ in sorted(by_round):
        if len(by_round[round_]) >= quorum:
            return [by_round[round_][k] for k in sorted(by_round[round_])]
    return []


def genesis_from_dict_bytes(doc: bytes) -> Genesis:
    """Rebuild a Genesis from its stored canonical document (StoreError when it is damaged)."""
    try:
        data = loads_strict(doc)
        genesis = Genesis(data)
        if genesis_from_dict(_doc_to_toml_shape(data)).to_bytes() != genesis.to_bytes():
            raise StoreError("stored genesis document is not in canonical form")
    except GenesisError:
        raise  # a rule the document breaks (e.g. a time zone this machine does not know)
    except (CanonicalError, ValueError, KeyError, TypeError, AttributeError) as exc:
        what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise StoreError(f"stored genesis document is damaged ({what})") from None
    return genesis


def stored_genesis(store: Store) -> Genesis:
    """The genesis of ``store``; StoreError naming the file when its document is damaged or breaks
    a rule of this version."""
    try:
        return genesis_from_dict_bytes(store.genesis_doc())
    except (StoreError, GenesisError) as exc:
        if str(store.path) in str(exc):
            raise
        if isinstance(exc, NewerGenesis):  # not damaged: a peer's copy is the same
            raise StoreError(f"{store.path}: {exc}") from None
        raise StoreError(f"{store.path}: {exc}; restore the data folder from a peer") from None


def _doc_to_toml_shape(doc: dict[str, Any]) -> dict[str, Any]:
    """The TOML-file shape of a stored genesis document (to re-check it with the same rules)."""
    return {
        "community": {k: doc["community"][k] for k in ("id", "name", "time", "app", "timezone")},
        "chain": dict(doc["chain"]),
        "app": doc["app"],
        "validators": [dict(v) for v in doc["validators"].values()],
        "members": [dict(m) for m in doc["members"].values()],
        "meters": [dict(m) for m in doc["meters"].values()],
    }


def head_state(store: Store, app: Application, genesis: Genesis) -> State:
    """The state after the store's last block: the node-local snapshot, then the blocks after it
    re-executed (checking each state root). Works on a read-only store too."""
    data_dir = store.path.parent
    height = store.height()
    snapshot = store.snapshot()
    if snapshot is None or snapshot[0] > height:
        raise StoreError(f"{data_dir}: store is incomplete (run `peerwatt verify --data {data_dir}`)")
    snap_height, state = snapshot
    snap_header = store.header(snap_height)
    if snap_header is None or state_root(state).hex() != snap_header["state_root"]:
        raise StoreError(f"{data_dir}: state snapshot does not match block {snap_height} (run verify)")
    return replay_blocks(store, app, genesis.community, state, snap_height, height)


def replay_blocks(
    store: Store, app: Application, community: str, state: State, start: int, end: int
) -> State:
    """Re-execute stored (final) blocks start+1..end from ``state`` without re-checking
    signatures, checking every state root against its header; StoreError when impossible."""
    data_dir = store.path.parent
    for height in range(start + 1, end + 1):
        header = store.header(height)
        txs = []
        for _idx, tx_hash, *_ in store.tx_rows(height):
            payload = store.payload(bytes(tx_hash))
            if payload is None:
                raise StoreError(
                    f"{data_dir}: cannot rebuild the state at block {height}: a payload is erased "
                    "and no later snapshot exists (restore from a peer)"
                )
            txs.append(parse_envelope(payload, community=community, now=None, interval_s=None))
        try:
            execution = execute_block(
                begin_block(state, header["sequencer"]),
                app,
                height=height,
                time=header["time"],
                txs=txs,
                verify_signatures=False,
            )
        except InvalidBlock as exc:
            raise StoreError(f"{data_dir}: block {height} does not re-execute: {exc} (run verify)") from None
        if state_root(execution.state).hex() != header["state_root"]:
            raise StoreError(f"{data_dir}: block {height} re-executes to another state root (run verify)")
        state = execution.state
    return state
