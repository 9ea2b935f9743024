"""A ledger node on the bus: a validator (any of which proposes in turn) or an observer.

Threads: bus handlers only persist (mempool) and enqueue; one loop (``step``) owns the ledger: it
checks transactions, runs the consensus (chain/consensus.py, Tendermint) for the next height,
and commits final blocks.

- Validator (role ``validator``, or ``sequencer``, the name the round-0 proposer's role had
  before failover existed; both behave the same): takes order/reading/gov messages (durably into
  its mempool first) and checks each (signature, enrolment, replay, app rules). When work is due
  (transactions waiting ``block_s``, a gate closure or a governance deadline), the proposer of
  the round builds a block and proposes it; every validator re-executes it and votes (prevote,
  then precommit: the "seal"). A quorum of seals of one round makes the block final. When a
  round's proposer is silent, the validators time out and move to the next proposer in turn
  (docs/ledger.md, "Consensus"); the validator that created a final block proposes round 0
  from then on. What a validator is about to send is persisted first (round, lock, votes), so
  a restart never makes it vote twice differently.
- Observer: follows proposals and seals, and verifies and stores final blocks.
Every node catches up from its peers' HTTP APIs when it sees it is behind. Every validator keeps
and publishes its configuration history (announce.ConfigHistory: a step per final block that
changed the validators, quorum or parameters, by consensus or catch-up alike).

Hostile input: every byte from the bus or a peer goes through the strict, size- and
depth-bounded parser; every proposal and vote is checked against the validator set before the
consensus sees it. Handling one message never ends the process: a message whose handling fails
unexpectedly (a bug, not a refusal) is quarantined (moved out of the mempool with its error,
counted, logged once) and the node goes on; a transaction that breaks block execution is found by
bisection and quarantined, and the block is built without it. A validator that sends two
different votes in one round is recorded as evidence (local_alarms, once per validator and
height) and counted; its further different ones of that round are refused unverified (each costs
a look-up, not memory) unless f + 1 others voted the same (chain/consensus.py ``refusal``); up to
f = n - quorum such validators are tolerated. Senders hear only signed notices, and only about
messages whose signature verified (chain/notice.py).
"""

from __future__ import annotations

import collections
import hashlib
import logging
import queue
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chain import consensus, messages
from chain.block import Block, header_hash
from chain.canonical import dumps_checked, loads_strict
from chain.consensus import Proposal, Timeouts, Vote
from chain.engine import (
    MAX_BLOCK_TX_BYTES,
    MAX_BLOCK_TXS,
    MAX_PAST_BLOCK_S,
    NIL,
    Ledger,
    VerifiedHashes,
    check_seal_for,
)
from chain.envelope import (
    CONTEXT_REASONS,
    Envelope,
    Rejected,
    parse_envelope,
    sign_envelope,
    verify_envelope,
)
from chain.execute import (
    InvalidBlock,
    check_replay,
    public_key_from_hex,
    seq_behind,
    signer_key,
    verify_signer,
)
from chain.keys import PrivateKey, key_id
from chain.notice import authenticated, signed_by_its_signer, tellers
from chain.signature import SignatureError, verify
from chain.store import StoreError
from meter_agent.clock import Clock, WallClock
from peerwatt.bus import Bus, Topics
from peerwatt.node.announce import Announcer, ConfigHistory
from peerwatt.node.catchup import CATCHUP_BATCH, CATCHUP_MIN_RATE, Reply, fetch_reply
from peerwatt.node.inbox import ConsensusInbox, FairInbox, is_shared_topic
from peerwatt.node.ledger_api import ErasedPayloads, block_from_json
from peerwatt.node.mempool import Mempool, MempoolError
from peerwatt.settings import one_line

log = logging.getLogger("peerwatt.node")

ROLES = ("sequencer", "validator", "observer")
# (a block holds at most MAX_BLOCK_TXS transactions of MAX_BLOCK_TX_BYTES together: chain/engine.py,
# whose validators refuse a live proposal holding more)
# At most this many messages of one signer wait for a block; more are turned away for now (its
# outbox sends them again). One enrolled meter flooding valid orders grew a sequencer from 58 to
# 503 MB (80,000 pending) in a QA pass. A household sends a few per interval; a grid operator's
# data is one message per meter and day.
MAX_PENDING_PER_SIGNER = 4096
MAX_INBOX_PER_STEP = 500
# ... and at most this long (s) on each inbox (proposals and votes, then transactions) per step, so
# consensus and its timers get a turn between them: a QA pass's 4,000 valid-JSON payloads just
# under 64 KiB (11 ms each) held every node's loop 5 s a step, blocks stopped for 67 s and honest
# orders missed their gate; another's flood of 8 MB proposals froze every node's loop
MAX_INBOX_STEP_S = 0.25
REPUBLISH_S = 5.0
STALL_AFTER_S = 30.0  # work due and no block final this long: the chain is stalled
STALL_LOG_EVERY_S = 60.0
# The loop not stepping for more than this (s) is recorded as this node standing still (paused,
# e.g. SIGSTOP, or overloaded): a proposal refused as stale_time within STOOD_STILL_RECENT_S after
# that, whose age the stillness explains, is logged as waiting out this node's stillness instead
# of "check clocks" (a QA pass's validator paused 90 s blamed the clocks, which were fine)
STOOD_STILL_S = 1.0
STOOD_STILL_RECENT_S = 5.0
CONSENSUS_KEY = "consensus"  # local_kv: the consensus record of the height in progress
BLOCKS_KEY = "consensus_blocks"  # local_kv: the blocks that record may need (proposed, locked)
MAX_ROUNDS_AHEAD = 64  # messages for rounds further ahead of ours are refused
FUTURE_HEIGHTS = 2  # messages for up to this many heights ahead are kept until we get there
# ... if a current validator signed them, and at most this many, and bytes, per validator and in
# all: a QA pass parked 40 MB of blocks with broken signatures (up to 20,000 messages of up to
# 8 MiB were taken unchecked). An honest validator sends a proposal and two votes a round.
MAX_FUTURE_PER_SIGNER = 2_000
MAX_FUTURE_BYTES_PER_SIGNER = 2 * messages.MAX_BLOCK_BYTES
MAX_FUTURE_BYTES = 64 * 1024 * 1024
# A peer whose catch-up reply failed (too slow, refused, malformed, a block refused) is skipped
# this long, doubling with each failure in a row up to CATCHUP_BACKOFF_MAX_S: a QA pass's hostile
# validator answering one byte every 3 s held every honest node's loop, and the chain, for as
# long as it liked. A refused block is logged at most once per peer this often (with the count
# of those not logged).
CATCHUP_BACKOFF_S = 30.0
CATCHUP_BACKOFF_MAX_S = 300.0
CATCHUP_LOG_EVERY_S = 60.0
# One catch-up call (real time) starts no new request, and stores no more blocks of a reply (but
# its first), after CATCHUP_STEP_S; the node's loop then has its turn and the catch-up goes on at
# the next step, from the rest of the reply. A peer whose reply took longer than CATCHUP_SLOW_S
# plus the time its size needs at catchup.CATCHUP_MIN_RATE is slow: it is asked after the other
# peers until it answers in time again, never skipped for it (its reply came within its deadline:
# it may be the one honest peer, on a household's uplink). A QA pass's peer that served real
# blocks one per reply, each after 4.5 s, held the loop 4.5 s per block and the faster second peer
# was never asked; the first fix skipped a slow peer with a growing backoff, and a second QA pass
# saw a node with one honest peer 3.5 s away reach height 176 of 3,000 in 240 s (before: all in
# 133 s). An honest peer's reply is built fast: one of 100 blocks of 1,000 transactions each (65
# MB, 34 s allowed) in 2.3 s, of 100 ordinary blocks (1 MB) in 0.04 s.
CATCHUP_STEP_S = 2.0
CATCHUP_SLOW_S = 2.0
# Text a peer chose (an HTTP status line, an error's detail) is logged on one line, escaped
# (settings.one_line), and at most this long: a QA pass's peer put CR LF into a node's log
PEER_TEXT_CHARS = 300
# Consensus messages larger than these are dropped on arrival, unparsed (a QA pass: 8 MB of junk on
# a validator's seals topic was parsed in full before it was refused). A vote is an ordinary
# message; a proposal is at most what the builder makes: MAX_BLOCK_TX_BYTES of transactions (at
# most MAX_BLOCK_TXS of them, each within MAX_MESSAGE_BYTES), the other half of MAX_BLOCK_BYTES
# for its header and results.
MAX_VOTE_BYTES = messages.max_bytes("seal")
MAX_PROPOSAL_BYTES = messages.max_bytes("block")
# The consensus inbox's share of the blocks messages whose signer is not read and verified on
# arrival (not in the canonical wire form every node sends, or not signed by the validator they
# name), and of votes on the seals topic of a key that is no validator (peerwatt/node/inbox.py).
UNATTRIBUTED = "?"
# Message digests this node handled at the height in progress (kept by the consensus, or a late
# seal stored or refused): an exact copy of one costs a look-up. Per height: a copy of an old
# height's proposal or prevote says its sender is behind (_help_behind), which a copy must still do.
MAX_SEEN = 4096  # per generation (chain.engine.VerifiedHashes)
# The end and the start of a block message in its canonical wire form (docs/protocol.md: keys in
# order, so ``sig``, ``signer``, ``type`` and ``v`` end it; the body's ``height``, ``prev`` and
# ``proposal_round`` begin it): its signer, signature and round are read without parsing it.
_PROPOSAL_TAIL = re.compile(
    rb',("sig":"([A-Za-z0-9_-]{1,128})",)"signer":"([0-9a-f]{32})","type":"block","v":%d}\Z'
    % messages.VERSION
)
_PROPOSAL_HEAD = re.compile(
    rb'\{"body":\{"height":(0|[1-9][0-9]{0,15}),"prev":"[0-9a-f]{64}","proposal_round":(0|[1-9][0-9]{0,9}),'
)


def block_signer(payload: bytes) -> str | None:
    """The signer a block message names at its end in the canonical wire form (a look-up), or
    None. Not checked: see ``signed_as_sent``."""
    found = _PROPOSAL_TAIL.search(payload, max(0, len(payload) - 300))
    return None if found is None else found.group(3).decode("ascii")


def signed_as_sent(payload: bytes, key: str) -> bool:
    """Whether ``key`` (SEC1 hex) signed a block message as it is on the wire: its signature over
    the bytes themselves, the ``sig`` member cut out (about 15 ms for 8 MB, where parsing them
    takes 600). Only that key's holder can make the bytes pass, so a message that does waits in
    its signer's share of the consensus inbox; a non-canonical or forged one waits with the rest
    (UNATTRIBUTED) and is checked in full when its turn comes."""
    found = _PROPOSAL_TAIL.search(payload, max(0, len(payload) - 300))
    if found is None:
        return False
    signed = messages.SIGNING_PREFIX + payload[: found.start(1)] + payload[found.end(1) :]
    try:
        verify(public_key_from_hex(key), signed, found.group(2).decode("ascii"))
    except (SignatureError, ValueError):
        return False
    return True


def proposal_round(payload: bytes) -> tuple[int, int] | None:
    """(height, proposal_round) from the start of a block message in its canonical form, or None.
    Believed only of a message ``proposal_signer`` attributed: its signer's own bytes."""
    found = _PROPOSAL_HEAD.match(payload)
    return None if found is None else (int(found.group(1)), int(found.group(2)))


def stall_line(
    height: int, round_: int, since_s: float, voting: int, quorum: int, validators: int, missing: list[str]
) -> str:
    """The operator's warning for a chain that does not finalise, caused elsewhere."""
    head = f"chain STALLED at height {height} (round {round_}) for {since_s:.0f} s: "
    if not missing:  # everyone votes: no quorum for one block in this round (slowness, not absence)
        return head + (
            f"all {validators} validators are voting, but no block got a quorum of {quorum} in this "
            "round (slow machines or a slow broker? the round times out and the next proposer tries)"
        )
    return head + (
        f"{voting} validator(s) voting, the quorum is {quorum} of {validators}; silent validator(s): "
        f"{', '.join(missing)} (start them, or check their broker connection: no block is final "
        "without a quorum)"
    )


# What travels on the topics a node takes transactions from (DESIGN.md, "MQTT topics"): a meter's
# own orders and readings on its own topics, everything else (votes, proposals, grid operators'
# data) on gov, which only the validators' operator accounts may write. Found in a QA pass: a
# household's member key put a proposal on the ledger through its meter's orders topic, which
# docs/governance.md says it cannot.
METER_TOPIC_TYPES = {"orders": "order", "readings": "reading"}


def topic_mismatch(topic: str, msg_type: str, signer: str) -> str | None:
    """Why a transaction may not arrive on ``topic``, or None ("": a message the mempool kept
    from before it kept topics, or one a test hands the node directly)."""
    if not topic:
        return None
    try:
        parts = Topics.parse(topic)
    except ValueError:
        return f"{topic!r} is no transaction topic"
    wanted = METER_TOPIC_TYPES.get(parts.kind)
    if wanted is None:
        if msg_type in METER_TOPIC_TYPES.values():
            return f"a meter's {msg_type} belongs on its own {msg_type}s topic, not on {parts.kind}"
        return None
    if msg_type != wanted:
        return f"a {msg_type} on a {parts.kind} topic (which carries only {wanted}s)"
    if signer != parts.id:
        return f"signed by {signer}, on the {parts.kind} topic of {parts.id}"
    return None


@dataclass
class PeerCatchup:
    """What catch-up remembers of one peer: failures in a row, until when it is skipped, the
    batch to ask of it, and its refused blocks not logged yet."""

    failures: int = 0
    skip_until: float = float("-inf")
    limit: int = CATCHUP_BATCH
    refused_logged: float = float("-inf")
    refused_unlogged: int = 0
    rest: Reply | None = None  # a reply not yet all stored when the call's time was up
    rest_after: int = -1  # the height it goes on after
    slow: bool = False  # its last reply came slowly: asked after the other peers


@dataclass
class Parked:
    """Verified messages for heights we have not reached: (kind, raw) by height, each once,
    bounded per signer (MAX_FUTURE_PER_SIGNER, MAX_FUTURE_BYTES_PER_SIGNER) and in all
    (MAX_FUTURE_BYTES)."""

    by_height: dict[int, list[tuple[str, str, bytes]]] = field(default_factory=dict)  # (kind, signer, raw)
    held: set[bytes] = field(default_factory=set)
    count: Counter = field(default_factory=Counter)  # signer -> messages
    size: Counter = field(default_factory=Counter)  # signer -> bytes
    total_bytes: int = 0

    def add(self, height: int, kind: str, signer: str, raw: bytes) -> bool:
        """Keep it (not kept already: see ``held``); False if that is over a bound."""
        if (
            self.count[signer] >= MAX_FUTURE_PER_SIGNER
            or self.size[signer] + len(raw) > MAX_FUTURE_BYTES_PER_SIGNER
            or self.total_bytes + len(raw) > MAX_FUTURE_BYTES
        ):
            return False
        self.by_height.setdefault(height, []).append((kind, signer, raw))
        self.held.add(raw)
        self.count[signer] += 1
        self.size[signer] += len(raw)
        self.total_bytes += len(raw)
        return True

    def take(self, height: int) -> list[tuple[str, bytes]]:
        """The messages kept for ``height``, which leave with those of every lower height."""
        taken: list[tuple[str, bytes]] = []
        for parked in [h for h in self.by_height if h <= height]:
            for kind, signer, raw in self.by_height.pop(parked):
                self.held.discard(raw)
                _count_down(self.count, signer)
                self.size[signer] -= len(raw)
                if self.size[signer] <= 0:
                    del self.size[signer]
                self.total_bytes -= len(raw)
                if parked == height:
                    taken.append((kind, raw))
        return taken


def _count_down(counts: collections.Counter, key: Any) -> None:
    """One fewer of ``key``; a count that reaches 0 leaves the counter (it stays bounded)."""
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]


@dataclass
class NodeMetrics:
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    blocks_committed: int = 0
    blocks_refused: Counter = field(default_factory=Counter)
    quarantined: int = 0
    equivocations: int = 0
    failovers: int = 0  # rounds above 0 this node entered: a proposer did not get its block final
    last_commit_real: float | None = None


class Node:
    """One node of a community (see module docstring)."""

    def __init__(
        self,
        ledger: Ledger,
        bus: Bus,
        *,
        role: str,
        key: PrivateKey | None = None,
        clock: Clock | None = None,
        block_s: float | None = None,
        peers: tuple[str, ...] = (),
        mempool: Mempool | None = None,
        timeouts: Timeouts | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if role != "observer" and key is None:
            raise ValueError(f"a {role} needs its validator key")
        self.ledger = ledger
        self.bus = bus
        self._mono = monotonic  # timeouts and waits (a test may drive its own)
        self.role = role
        self.key = key if role != "observer" else None
        self.key_id = key_id(key.public_key()) if key is not None and role != "observer" else None
        self._announcer = Announcer(bus, key, ledger.community) if self.key is not None else None
        # every validator publishes its configuration history (observers do not)
        self.config_history = (
            ConfigHistory(bus, ledger.store, ledger.genesis, self.key_id) if self.key_id is not None else None
        )
        self._config_connected = False  # the bus was connected when we last published it
        self.clock = clock or WallClock()
        self.block_s = float(block_s if block_s is not None else ledger.genesis.doc["chain"]["block_s"])
        self.timeouts = timeouts or Timeouts()
        self.peers = tuple(peers)
        self.mempool = mempool
        self.community = ledger.community
        self.metrics = NodeMetrics()
        # proposals and votes go first: a burst of transactions must not delay agreement; one
        # bounded share per sender (peerwatt/node/inbox.py), so one validator's flood cannot
        # hold up the others' or grow memory
        self._consensus_inbox = ConsensusInbox(clock=self._mono)
        self._seen = VerifiedHashes(MAX_SEEN)  # digests handled at this height (MAX_SEEN)
        self._sealed: dict[int, set[str]] = {}  # recent final height -> validators whose seal is stored
        self._inbox = FairInbox()  # transactions: one queue per topic, served in turn
        self._pending: list[tuple[bytes, Envelope]] = []
        self._pending_keys: set[tuple[str, int]] = set()
        self._pending_per_signer: collections.Counter[str] = collections.Counter()
        # the app's budget keys of pending transactions (chain.app pending_budget), and their counts
        self._pending_budget_key: dict[tuple[str, int], Any] = {}
        self._pending_per_budget: collections.Counter[Any] = collections.Counter()
        self.max_pending_per_signer = MAX_PENDING_PER_SIGNER
        self.inbox_step_s = MAX_INBOX_STEP_S
        self._pending_since: float | None = None
        self._logged: set[tuple[str, str]] = set()
        self._status_lock = threading.Lock()  # status() runs on the HTTP thread
        self._catchup_after = 0.0
        self._catchup_more = False  # the last catch-up call ran out of time: go on at the next step
        self._peer_catchup: dict[str, PeerCatchup] = {}
        self.catchup_timeout_s = 5.0  # a reply's base time (catchup.reply_deadline_s)
        self.catchup_step_s = CATCHUP_STEP_S
        self.catchup_slow_s = CATCHUP_SLOW_S
        self._stop: threading.Event | None = None  # set by run(): catch-up ends when it is set
        self._validators_at: dict[int, dict[str, Any]] = {}
        # set before a clean shutdown: vote on, build no new block
        self.draining = False
        self.store_error: str | None = None
        # the mempool's last write error until a message is stored again (see _mempool_failed),
        # and its count of commits that stored one when writes started failing
        self.mempool_error: str | None = None
        self._mempool_commits = 0
        self._mempool_lock = threading.Lock()  # the bus thread and the node's loop both write
        self.stall_after_s = STALL_AFTER_S
        self.stalled: dict[str, Any] | None = None  # height, round, since_s, seals, quorum, missing
        self._stall_logged = 0.0
        self._last_step_at: float | None = None  # when step() last began
        self._stood_still: tuple[float, float] | None = None  # the last gap > STOOD_STILL_S: (s, ended)
        # consensus for the next height
        self._core: consensus.Height | None = None
        self._blocks: dict[str, Block] = {}  # block hash (hex) -> block, next height
        self._verdicts: dict[str, bool] = {}  # block hash -> re-executes to its header
        self._sent: dict[str, bytes] = {}  # "<kind>:<round>" -> the signed message we sent
        # every valid vote of this height the consensus keeps (a validator's first of each type
        # and round, one different one as evidence, others only for what f + 1 others voted):
        # (type, round, signer, header) -> envelope
        self._votes: dict[tuple[str, int, str, str], Envelope] = {}
        self._alarmed: set[str] = set()  # validators whose equivocation at this height is in local_alarms
        self._relay: list[bytes] = []  # others' prevotes behind our lock and valid value
        self._timers: list[tuple[float, str, int, int]] = []  # (due, step, height, round)
        self._future = Parked()
        self._saved_record: bytes | None = None
        self._height_since = self._mono()
        self._republished = self._mono()
        self._round_seen = 0
        self._saved_blocks: bytes | None = None
        self._undone: consensus.Decide | None = None  # decided, not yet stored (disk full)
        self._helped: dict[int, float] = {}  # height -> when we last relayed its seals
        self._carried: set[tuple[str, int]] = set()  # pending keys still waiting after the last block
        self._batched = False  # the mempool writes in batches the bus commits before its acks
        self._was_validator = False  # this key was a validator after the last block (said when it changes)

    @property
    def is_validator(self) -> bool:
        return self.key_id is not None and self.key_id in self.ledger.validators()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe, connect, and take back the mempool and the consensus record."""
        c = self.community
        if self.role != "observer":
            self._was_validator = self.is_validator
            if not self._was_validator:
                log.warning(
                    "this key (%s) is not one of the community's validators: it will not vote", self.key_id
                )
            for kind in ("orders", "readings"):
                self.bus.subscribe(Topics.pattern(c, kind), self._on_tx)
            self.bus.subscribe(Topics.gov(c), self._on_tx)
        self.bus.subscribe(Topics.blocks(c), self._on_block)
        self.bus.subscribe(Topics.pattern(c, "seals"), self._on_vote)
        if self.mempool is not None:
            for raw, topic in self.mempool.all():  # quarantined ones are not here: no crash loop
                self._inbox.put(("tx", topic, raw))
            defer_acks = getattr(self.bus, "defer_acks", None)  # MqttBus: one commit per batch read
            if defer_acks is not None and self.role != "observer":
                try:
                    defer_acks(self._flush_mempool)
                    self._batched = True
                except RuntimeError:  # the bus was started already: a commit per message
                    self._batched = False
        self._new_height()
        if self.config_history is not None:
            self.config_history.start(self.ledger.state, self.ledger.head)
        self.bus.start()

    def stop(self) -> None:
        self.bus.stop()

    def run(self, stop: threading.Event, tick_s: float = 0.02) -> None:
        """Run ``step`` until ``stop`` is set."""
        self._stop = stop
        while not stop.is_set():
            busy = self.step()
            if not busy:
                stop.wait(tick_s)

    # -- the loop ------------------------------------------------------------------------------

    def step(self) -> bool:
        """Process what arrived, run the consensus, commit final blocks; True if anything happened."""
        began = self._mono()
        if self._last_step_at is not None and began - self._last_step_at > STOOD_STILL_S:
            self._stood_still = (began - self._last_step_at, began)
        self._last_step_at = began
        busy = self._drain(self._consensus_inbox) | self._drain(self._inbox)
        if self._undone is not None:
            if self._undone.height == self.ledger.height + 1:
                self._decide(self._undone)
            else:
                self._undone = None
        busy |= self._fire_timers()
        busy |= self._check_work_due()
        if self._catchup_more and self.peers:
            self._catch_up()  # the rest of what the last call had no time for
            busy = True
        if self._mono() - self._republished > REPUBLISH_S:
            self._republish()
        self._publish_config_on_connect()
        self._check_stall()
        return busy

    def _publish_config_on_connect(self) -> None:
        """Publish the configuration history once connected, and again after each reconnection
        (a broker that lost its retained messages, docs/bus.md): one attribute read per step."""
        connected = self.bus.connected
        if connected == self._config_connected or self.config_history is None:
            return
        self._config_connected = connected
        if connected and self.is_validator:
            self.config_history.publish()

    def _drain(self, inbox: ConsensusInbox | FairInbox) -> bool:
        """Handle what waits in ``inbox``, at most MAX_INBOX_PER_STEP messages and ``inbox_step_s``
        seconds' worth (bounded, so a flood cannot starve the rest of the step: a QA pass's
        block flood held a node's loop, and its timers, for as long as it lasted); True if there
        was any."""
        busy = False
        deadline = time.perf_counter() + self.inbox_step_s
        for _ in range(MAX_INBOX_PER_STEP):
            if busy and time.perf_counter() > deadline:
                break  # the rest next step, after the timers (MAX_INBOX_STEP_S)
            try:
                kind, sender, payload = inbox.get_nowait()  # (a transaction's sender: its topic)
            except queue.Empty:
                break
            busy = True
            try:
                if kind == "tx":
                    self._take_tx(payload, sender)
                elif kind == "block":  # its sender: the signer verified on arrival, if one was
                    self._take_block(payload, signed_by=sender if sender not in ("", UNATTRIBUTED) else None)
                else:
                    self._take_vote(payload)
            except Exception as exc:  # a bug met by one message must not end the node
                self._quarantine(kind, payload, exc)
        return busy

    def _check_stall(self) -> None:
        """Work due and no block final for ``stall_after_s``: WARN which validators are silent
        in the current round (once per stall, then every STALL_LOG_EVERY_S)."""
        core = self._core
        waiting = core is not None and (core.work_is_due or core.round > 0)
        now = self._mono()
        if not waiting or now - self._height_since < self.stall_after_s:
            if self.stalled is not None:
                log.warning("chain moving again at height %d", self.ledger.height)
                self.stalled = None
            return
        assert core is not None
        validators = set(self.ledger.validators())
        heard = {s for (_, r, s, _) in self._votes if r == core.round}
        heard |= set(core.prevotes.get(core.round, {})) | set(core.precommits.get(core.round, {}))
        missing = sorted(validators - heard)
        first = self.stalled is None
        # a cause here, not at the silent others: this node hears no one, cannot store blocks,
        # holds a quorum's seals for a block it does not have (a QA pass: a validator without
        # peers restarted after the others finished the height blamed them, for good), or drops a
        # flooding sender's consensus messages (a QA pass: it blamed the honest validators, whose
        # votes waited behind the flood, as silent)
        missed = self._missed_block(core)
        floods = self._consensus_inbox.flooding()
        cause = (
            "this node is not connected to the MQTT broker: it hears no validator"
            if not self.bus.connected
            else f"this node cannot store blocks ({self.store_error})"
            if self.store_error is not None
            else f"a quorum of validators made block {missed[:12]} final, and this node does not have "
            "that block: "
            + (
                "it fetches it from its peers"
                if self.peers
                else "configure `peers` (other nodes' HTTP APIs) so it can fetch final blocks"
            )
            if missed is not None
            else self._flood_cause(floods, missing)
            if floods
            else None
        )
        self.stalled = {
            "height": core.height,
            "round": core.round,
            "since_s": round(now - self._height_since, 1),
            "votes": len(heard & validators),
            "quorum": self.ledger.quorum(),
            "validators": len(validators),
            "missing": missing,
            "cause": cause,
        }
        if (first or now - self._stall_logged >= STALL_LOG_EVERY_S) and cause is not None:
            self._stall_logged = now
            log.warning(
                "chain STALLED here at height %d (round %d) for %.0f s: %s",
                core.height,
                core.round,
                now - self._height_since,
                cause,
            )
        elif first or now - self._stall_logged >= STALL_LOG_EVERY_S:
            self._stall_logged = now
            log.warning(
                "%s",
                stall_line(
                    core.height,
                    core.round,
                    now - self._height_since,
                    len(heard & validators),
                    self.ledger.quorum(),
                    len(validators),
                    [self._validator_label(kid) for kid in missing],
                ),
            )

    def _flood_cause(self, floods: dict[tuple[str, str], int], missing: list[str]) -> str:
        """The stall's cause while this node drops a flooding sender's messages (a drop less than
        FLOOD_QUIET_S ago, peerwatt/node/inbox.py)."""
        flooders = "; ".join(
            f"{self._flooder(kind, sender)} ({dropped} dropped)"
            for (kind, sender), dropped in sorted(floods.items())
        )
        silent = (
            f"; not heard from in this round yet: {', '.join(self._validator_label(kid) for kid in missing)}"
            if missing
            else ""
        )
        return (
            f"this node's consensus queue is flooded by {flooders}: the flood takes this node's time and "
            f"the other validators' messages may wait behind it{silent}. Find out why that sender sends "
            'so much (a broken or hostile validator: remove it, docs/operations.md "Removing a validator")'
        )

    def _missed_block(self, core: consensus.Height) -> str | None:
        """The hash of a block a quorum precommitted at this height that this node does not hold."""
        quorum = core.quorum
        for (kind, _), by_value in core.votes_for.items():
            for value, signers in by_value.items():
                if kind == consensus.PRECOMMIT and value is not None and len(signers) >= quorum:
                    if value not in self._blocks:
                        return value
        return None

    def _validator_label(self, kid: str) -> str:
        """A validator as its operator knows it: its genesis or vote name with its key id."""
        name = self.ledger.validators().get(kid, {}).get("name")
        return f"{name} ({kid})" if name else kid

    # -- transactions ----------------------------------------------------------------------------

    def _on_tx(self, topic: str, payload: bytes) -> None:
        # Runs on the bus thread: persist before the broker gets its acknowledgement (batched:
        # the bus calls _flush_mempool before it acknowledges the messages of the batch).
        # Turned away here, before any parsing or writing: a payload larger than any transaction
        # (a QA pass: 8 MiB of valid JSON on a meter's own orders topic, parsed twice up to the
        # block limit, held every node for 5 s a message), and a topic whose queue is full (its
        # sender floods; its outbox sends again, see peerwatt/node/inbox.py).
        if len(payload) > messages.MAX_MESSAGE_BYTES:
            self._count("rejected", "too_large")
            self._log_once(
                "too_large", topic, logging.INFO, "rejected too_large on %s: %d bytes", topic, len(payload)
            )
            return
        if is_shared_topic(topic) and not self._signed_by_its_signer(topic, payload):
            return
        if not self._inbox.has_room(topic, len(payload), payload):  # (gov: its signer's share)
            self._count("rejected", "busy")
            self._log_once("busy", topic, logging.INFO, "rejected busy on %s: its queue is full", topic)
            return
        if self.mempool is not None:
            try:
                if not self.mempool.add(payload, topic=topic, batch=self._batched):
                    return  # the same bytes are already pending: confirmed with their block
            except MempoolError as exc:
                # keep going in memory: the sender's outbox resends until the ledger confirms
                self._mempool_failed(exc)
            else:
                self._mempool_ok()
        self._inbox.put(("tx", topic, payload))

    def _signed_by_its_signer(self, topic: str, payload: bytes) -> bool:
        """Whether a message on a shared topic (gov) parses and carries a valid signature of the
        enrolled key it names; if not, it is counted and dropped here. The inbox queues such a
        topic per signer, so the signer must be the real one: found in a QA pass, one operator
        account naming 8 made-up signers filled every share of the gov topic and every member's
        proposal was turned away as busy. Intake checks the message again in full (gov is a few
        messages an hour; its time checks and rules are intake's)."""
        try:
            env = parse_envelope(payload, community=self.community, now=None, interval_s=None)
            verify_signer(self.ledger.chain_state, env)  # the check a block's transactions get
        except (Rejected, InvalidBlock) as exc:
            self._count("rejected", exc.reason)
            self._log_once(exc.reason, topic, logging.INFO, "rejected on %s: %s", topic, exc)
            return False
        return True

    def _flush_mempool(self) -> None:
        """The bus's barrier before it acknowledges a batch: commit the batch's mempool writes."""
        if self.mempool is None:
            return
        try:
            self.mempool.flush()
        except MempoolError as exc:
            # keep going in memory: the sender's outbox resends until the ledger confirms
            self._mempool_failed(exc)
        else:
            self._mempool_ok()

    def _mempool_failed(self, exc: MempoolError) -> None:
        """A mempool write failed: one line (with what to do) when writes start failing, again for
        each later episode (found in a QA pass: the first episode only, once a process)."""
        with self._mempool_lock:
            if self.mempool_error is None and self.mempool is not None:
                log.error("%s", exc)
                self._mempool_commits = self.mempool.stored_commits
            self.mempool_error = str(exc)

    def _mempool_ok(self) -> None:
        """A mempool write went through: one line once a new message was stored after a failure
        (not for a removal, which may go through on a full disk)."""
        if self.mempool_error is None or self.mempool is None:
            return
        with self._mempool_lock:
            if self.mempool_error is not None and self.mempool.stored_commits > self._mempool_commits:
                log.info("writing the mempool %s again", self.mempool.path)
                self.mempool_error = None

    def _count(self, counter: str, reason: str) -> None:
        """Count an event by reason (under the lock: ``status()`` copies the counters)."""
        with self._status_lock:
            getattr(self.metrics, counter)[reason] += 1

    def _log_once(self, what: str, who: str, level: int, message: str, *args: object) -> None:
        if (what, who) not in self._logged:
            self._logged.add((what, who))
            log.log(level, message, *args)

    def _quarantine(self, kind: str, raw: bytes, exc: BaseException) -> None:
        """Set aside a message whose handling failed unexpectedly, so it can never stop the node."""
        error = f"{type(exc).__name__}: {exc}"[:500]
        with self._status_lock:
            self.metrics.quarantined += 1
        self._log_once(
            "quarantine",
            f"{kind}:{type(exc).__name__}",
            logging.ERROR,
            "quarantined a %s message (%s); the node goes on",
            kind,
            error,
        )
        if kind != "tx":
            return
        self._drop_pending(raw)
        if self.mempool is not None:
            try:
                self.mempool.quarantine(raw, error)
            except MempoolError as store_exc:
                self._mempool_failed(store_exc)
            else:
                self._mempool_ok()

    def _drop_pending(self, raw: bytes) -> None:
        kept = []
        for r, env in self._pending:
            if r == raw:
                self._unpend({(env.signer, env.seq)} & self._pending_keys)
            else:
                kept.append((r, env))
        self._pending = kept

    def _unpend(self, keys: set[tuple[str, int]]) -> None:
        """Forget (signer, seq) keys that were pending, and their signers' counts."""
        self._pending_keys -= keys
        for signer, seq in keys:
            _count_down(self._pending_per_signer, signer)
            budget_key = self._pending_budget_key.pop((signer, seq), None)
            if budget_key is not None:
                _count_down(self._pending_per_budget, budget_key)

    def _refuse(self, raw: bytes, exc: Rejected) -> None:
        """A transaction the ledger refuses for good: tell its meter (when authenticated), count,
        log and forget it."""
        sender = self._tell_refused(raw, exc)
        self._reject(raw, exc.reason, sender or "an unauthenticated sender", exc.detail)

    def _reject(self, raw: bytes, reason: str, signer: str = "?", detail: str = "") -> None:
        self._count("rejected", reason)
        self._log_once(reason, signer, logging.INFO, "rejected %s from %s: %s", reason, signer, detail)
        self._forget([raw])

    def _forget(self, raws: list[bytes]) -> None:
        """Remove messages from the durable mempool (a write error is logged: they come back
        after a restart and are then refused as replays, so nothing is booked twice)."""
        if self.mempool is None:
            return
        try:
            self.mempool.remove(raws)
        except MempoolError as exc:
            self._mempool_failed(exc)
        else:
            self._mempool_ok()

    def _take_tx(self, raw: bytes, topic: str = "") -> None:
        refused: Rejected | None = None
        try:
            env: Envelope | None = self.ledger.intake(raw, int(self.clock.now()))
        except Rejected as exc:
            env, refused = exc.envelope, exc  # the envelope when it parsed
        mismatch = None if env is None else topic_mismatch(topic, env.type, env.signer)
        if env is not None and mismatch is not None:
            # on a wrong topic, whatever else is wrong with it, and no notice to the signer:
            # anyone can put a copy of its message on another topic
            self._reject(raw, "wrong_topic", env.signer, mismatch)
            return
        if refused is not None and refused.reason == "unknown_proposal" and refused.signed:
            assert env is not None
            if any(e.type == "propose" and e.tx_hash.hex() == env.body["proposal"] for _, e in self._pending):
                refused = None  # its proposal waits here for a block (`gov publish` of both): taken
        if refused is not None:
            self._refuse(raw, refused)
            return
        assert env is not None  # intake returned it
        if (env.signer, env.seq) in self._pending_keys:
            self._reject(raw, "replay", env.signer, "already pending")
            return
        if self._pending_per_signer[env.signer] >= self.max_pending_per_signer:
            # not refused for good (no notice): the sender's outbox sends it again later
            waiting = f"{self.max_pending_per_signer} of its messages wait already"
            self._reject(raw, "busy", env.signer, waiting)
            return
        budget = self.ledger.pending_budget(env, int(self.clock.now()))
        if budget is not None and self._pending_per_budget[budget[0]] >= budget[1]:
            # the ledger would record it only as rejected: refused now, as at intake
            refused = Rejected(budget[2], "the ones waiting for a block fill what the ledger takes")
            refused.envelope, refused.signed = env, True  # intake verified it
            self._refuse(raw, refused)
            return
        with self._status_lock:
            self._pending_keys.add((env.signer, env.seq))
            self._pending_per_signer[env.signer] += 1
            if budget is not None:
                self._pending_budget_key[(env.signer, env.seq)] = budget[0]
                self._pending_per_budget[budget[0]] += 1
            self._pending.append((raw, env))
            self.metrics.accepted += 1
        if self._pending_since is None:
            self._pending_since = self._mono()

    # -- consensus -------------------------------------------------------------------------------

    def _restore_record(self, core: consensus.Height, height: int, saved: bytes | None) -> None:
        """Take back what this node was about to send at ``height`` before it stopped."""
        data = None if saved is None else loads_strict(saved)
        if isinstance(data, dict) and data.get("record", {}).get("height") == height:
            signers = {m["signer"] for m in data["record"]["sent"].values()}
            if signers - {self.key_id}:  # a copy of another node's data folder (docs/operations.md)
                log.info(
                    "the consensus record in this store is %s's, not this node's (a copied data "
                    "folder): not taken back",
                    ", ".join(sorted(signers - {self.key_id})),
                )
                return
            core.restore(data["record"])
            saved_blocks = self.ledger.store.get_local(BLOCKS_KEY)
            kept = None if saved_blocks is None else loads_strict(saved_blocks)
            if isinstance(kept, dict) and kept.get("height") == height:
                for body in kept["blocks"]:
                    block = Block.from_body(
                        body, community=self.community, interval_s=self.ledger.genesis.interval_s
                    )
                    self._blocks[block.hash.hex()] = block
            self._sent = {k: v.encode("utf-8") for k, v in data["sent"].items()}
            self._relay = [r.encode("utf-8") for r in data.get("relay", [])]
            for raw in [*self._sent.values(), *self._relay]:  # our own seal counts in a quorum
                vote = parse_envelope(raw, community=self.community, now=None, interval_s=None)
                if vote.type in ("prevote", "seal"):
                    self._keep_vote(vote)
            self._saved_record = saved
            self._republished = float("-inf")  # send them again on the first step

    def _new_height(self) -> None:
        """Start the consensus for the next height (taking back our record of it after a restart),
        then feed it what arrived early for it."""
        height = self.ledger.height + 1
        self._blocks, self._verdicts, self._sent, self._votes, self._timers = {}, {}, {}, {}, []
        self._relay = []
        self._alarmed = set()
        self._height_since = self._mono()
        self._round_seen = 0
        core = consensus.Height(
            height,
            tuple(self.ledger.validators()),
            self.ledger.quorum(),
            self.ledger.sequencer(),
            self.key_id,
            self.timeouts,
            self._valid,
            timely=self._timely,
        )
        saved = self.ledger.store.get_local(CONSENSUS_KEY)
        try:
            self._restore_record(core, height, saved)
        except (KeyError, TypeError, AttributeError, ValueError, Rejected, InvalidBlock) as exc:  # ours only
            raise StoreError(
                f"this node's consensus record (local_kv {CONSENSUS_KEY!r}) is damaged ({exc}): restore "
                "this node's store from a backup (without it, the node could vote twice differently)"
            ) from None
        self._core = core
        self._seen = VerifiedHashes(MAX_SEEN)  # a copy of an older height's message says its sender is behind
        self._run(core.start())
        for kind, raw in self._future.take(height):
            self._consensus_inbox.put((kind, "", raw))

    def _run(self, actions: list[consensus.Action]) -> None:
        """Carry out the consensus's actions (which may yield more)."""
        work = list(actions)
        while work:
            action = work.pop(0)
            core = self._core
            assert core is not None
            if isinstance(action, consensus.Broadcast):
                self._broadcast(action.message)
            elif isinstance(action, consensus.BuildBlock):
                work.extend(self._build(action.round))
            elif isinstance(action, consensus.Schedule):
                self._timers.append((self._mono() + action.delay_s, action.step, action.height, action.round))
            elif isinstance(action, consensus.Decide):
                self._decide(action)
                return  # a new height began: the rest belongs to the old one
            elif isinstance(action, consensus.Equivocation):
                self._equivocation(action)
        self._note_round()

    def _note_round(self) -> None:
        """Count and log each round above 0 we enter: a proposer did not get its block final."""
        core = self._core
        if core is None or core.round <= self._round_seen:
            return
        with self._status_lock:
            self.metrics.failovers += core.round - self._round_seen
        self._round_seen = core.round
        log.warning(
            "height %d: round %d, proposer now %s (the previous round's block did not become final in time)",
            core.height,
            core.round,
            core.proposer(core.round),
        )

    def _timely(self, value: str) -> bool:
        """The consensus's timeliness of a new proposal (chain.consensus.Height.timely): its block
        is dated at most MAX_PAST_BLOCK_S behind our clock (Ledger.check_timely). A block we do
        not hold is left to _valid."""
        block = self._blocks.get(value)
        if block is None:
            return True
        # a clock faster than real time (the demo's, x1800) moves that much further while a
        # proposal travels: the bound is real seconds (found by the demo test: at x1800, 50 ms
        # on the way were 90 simulated seconds and every proposal was stale)
        speed = max(1.0, getattr(self.clock, "speed", 1.0))
        max_past_s = MAX_PAST_BLOCK_S * speed
        now = int(self.clock.now())
        try:
            self.ledger.check_timely(block, now, max_past_s)
        except InvalidBlock as exc:
            self._count("blocks_refused", exc.reason)
            still = self._stood_still
            behind = now - block.header["time"]
            if (
                exc.reason == "stale_time"
                and still is not None
                and self._mono() - still[1] <= STOOD_STILL_RECENT_S
                and still[0] * speed >= behind - max_past_s
            ):
                # the proposal most likely reached this node while it stood still: not the clocks
                log.warning(
                    "refused block %s at height %d: stale_time: block time is %d s behind our clock "
                    "(at most %g s for a new proposal), and this node stood still for %.0f s until "
                    "just before it took the proposal (paused or overloaded): the proposal waited "
                    "here meanwhile, so the clocks need not be wrong",
                    value[:12],
                    block.height,
                    behind,
                    max_past_s,
                    still[0],
                )
            else:
                log.warning("refused block %s at height %d: %s", value[:12], block.height, exc)
            return False
        return True

    def _valid(self, value: str) -> bool:
        """The consensus's valid(v): we hold the block and it re-executes to its header."""
        verdict = self._verdicts.get(value)
        if verdict is not None:
            return verdict
        block = self._blocks.get(value)
        if block is None:
            return False
        try:
            self.ledger.validate(block, now=int(self.clock.now()))
            verdict = True
        except InvalidBlock as exc:
            self._count("blocks_refused", exc.reason)
            log.warning("refused block %s at height %d: %s", value[:12], block.height, exc)
            verdict = False
        except Exception as exc:  # the app failed on this block: refuse it, never die of it
            self._count("blocks_refused", "execution_failed")
            log.warning(
                "refused block %s at height %d: %s: %s", value[:12], block.height, type(exc).__name__, exc
            )
            verdict = False
        self._verdicts[value] = verdict
        return verdict

    def _build(self, round_: int) -> list[consensus.Action]:
        """Our turn to propose and nothing to re-propose: a new block from what waits."""
        core = self._core
        assert core is not None
        if self.draining:
            return []
        now = int(self.clock.now())
        taken = first_that_fit(self._pending)
        while True:
            try:
                block = self.ledger.propose([env for _, env in taken], now, round_=round_)
                break
            except Exception as exc:  # an app bug met by some transaction: set it aside
                bad = self._isolate_poison(taken, now, round_, exc)
                if bad is None:
                    return []
                taken = [t for t in taken if t[0] != bad]
        value = block.hash.hex()
        self._blocks[value] = block
        self._verdicts[value] = True
        return core.propose(value)

    def _isolate_poison(
        self, taken: list[tuple[bytes, Envelope]], now: int, round_: int, exc: Exception
    ) -> bytes | None:
        """Find the first transaction whose execution fails (bisection over prefixes, about
        log2(n) trial executions) and quarantine it; None if even an empty block fails."""
        ok, bad = 0, len(taken)
        try:
            self.ledger.propose([], now, round_=round_)
        except Exception as empty_exc:  # the app fails on an empty block: nothing to set aside
            self._log_once(
                "propose",
                type(empty_exc).__name__,
                logging.ERROR,
                "cannot build a block (the app fails even without transactions): %s",
                empty_exc,
            )
            return None
        while bad - ok > 1:
            middle = (ok + bad) // 2
            try:
                self.ledger.propose([env for _, env in taken[:middle]], now, round_=round_)
                ok = middle
            except Exception:
                bad = middle
        raw = taken[bad - 1][0]
        self._quarantine("tx", raw, exc)
        return raw

    def _save_record(self) -> None:
        """Persist the round, lock and sent messages before anything we sent can leave us."""
        core = self._core
        assert core is not None
        keep = {core.locked_value, core.valid_value}
        keep |= {m.value for m in core.sent.values() if isinstance(m, Proposal)}
        kept = sorted(v for v in keep if v in self._blocks)
        blocks = dumps_checked({"height": core.height, "hashes": kept})
        if blocks != self._saved_blocks:  # the (large) blocks only when the set changes
            bodies = [self._blocks[v].to_body() for v in kept]
            self.ledger.store.set_local(BLOCKS_KEY, dumps_checked({"height": core.height, "blocks": bodies}))
            self._saved_blocks = blocks
        record = core.record()
        # the signed prevotes behind our lock and valid value: we may have to show them again
        polka = [("prevote", v["round"], v["signer"], v["value"]) for v in record.get("polka", [])]
        self._relay = [self._votes[k].to_bytes() for k in polka if k in self._votes]
        data = dumps_checked(
            {
                "record": record,
                "sent": {k: v.decode("utf-8") for k, v in self._sent.items()},
                "relay": [r.decode("utf-8") for r in self._relay],
            }
        )
        if data != self._saved_record:
            self.ledger.store.set_local(CONSENSUS_KEY, data)
            self._saved_record = data

    def _broadcast(self, message: Proposal | Vote) -> None:
        assert self.key is not None
        now = int(self.clock.now())
        if isinstance(message, Proposal):
            key = f"proposal:{message.round}"
            block = self._blocks[message.value]
            body = dict(block.to_body(), proposal_round=message.round, valid_round=message.valid_round)
            env = sign_envelope(
                self.key, type="block", community=self.community, seq=message.height, body=body, created=now
            )
        else:
            key = f"{message.kind}:{message.round}"
            kind = "prevote" if message.kind == consensus.PREVOTE else "seal"
            env = self.ledger.sign_vote(
                self.key, kind, message.height, message.round, message.value or NIL, now=now
            )
            self._keep_vote(env)
        self._sent[key] = env.to_bytes()
        try:
            self._save_record()
        except StoreError as exc:  # not persisted, so never sent: we stay silent in this step
            del self._sent[key]
            self._store_failed(message.height, exc)
            return
        self._publish_sent(key)

    def _too_far(self, round_: int) -> bool:
        """A round far beyond ours is refused: honest validators get there only through hours of
        growing timeouts, and a hostile one must not fill our memory with rounds."""
        core = self._core
        if core is not None and round_ > core.round + MAX_ROUNDS_AHEAD:
            self._count("rejected", "round_too_far")
            return True
        return False

    def _keep_vote(self, vote: Envelope) -> None:
        """Remember a verified vote's envelope: seals make a decision's record, prevotes of a
        polka may have to be relayed (an equivocator's two votes are both kept)."""
        key = (vote.type, vote.body["round"], vote.signer, vote.body["header"])
        self._votes.setdefault(key, vote)

    def _publish_sent(self, key: str) -> None:
        raw = self._sent[key]
        if key.startswith("proposal:"):
            self.bus.publish(Topics.blocks(self.community), raw, retain=True)
        else:
            assert self.key_id is not None
            self.bus.publish(Topics.seals(self.community, self.key_id), raw)

    def _republish(self) -> None:
        """Send our messages of this height again (the broker or a peer may have lost them), and
        ask the peers for final blocks if we seem to be behind."""
        self._republished = self._mono()
        core = self._core
        if core is None or not (core.work_is_due or core.round > 0):
            return
        for key in self._sent:
            self._publish_sent(key)
        if self.key_id is not None:
            for raw in self._relay:
                self.bus.publish(Topics.seals(self.community, self.key_id), raw)
        if self.peers and self._mono() - self._height_since > REPUBLISH_S:
            self._catch_up()

    def _fire_timers(self) -> bool:
        now = self._mono()
        due = [t for t in self._timers if t[0] <= now]
        if not due:
            return False
        self._timers = [t for t in self._timers if t[0] > now]
        for _, step, height, round_ in sorted(due):
            core = self._core
            if core is None or core.height != height:
                continue
            self._run(core.timeout(step, height, round_))
        return True

    def _check_work_due(self) -> bool:
        """Round 0 begins when work is due: transactions waited ``block_s``, or a deadline passed."""
        core = self._core
        if core is None or core.work_is_due or core.decided is not None:
            return False
        waited = self._pending_since is not None and self._mono() - self._pending_since >= self.block_s
        due = self.ledger.next_block_due()
        if not (waited or (due is not None and due <= int(self.clock.now()))):
            return False
        self._height_since = self._mono()
        self._run(core.work_due())
        return True

    def _decide(self, decision: consensus.Decide) -> None:
        block = self._blocks[decision.value]
        seals = [
            self._votes[key]
            for vote in self._core.seals(decision.round, decision.value)
            if (key := ("seal", decision.round, vote.signer, decision.value)) in self._votes
        ]
        validators = dict(self.ledger.validators())
        try:
            self.ledger.commit(block, seals)
        except StoreError as exc:
            self._store_failed(block.height, exc)
            self._undone = decision  # tried again every step until the disk takes it
            return
        self._undone = None
        self._store_ok()
        self._validators_at[block.height] = validators
        self._after_commit(block, decision.round)

    def _equivocation(self, evidence: consensus.Equivocation) -> None:
        """Count the evidence; write it to local_alarms once per validator and height (the
        consensus keeps one piece of evidence per validator, kind and round, so one equivocator
        would otherwise write a row for each kind and round it equivocates in)."""
        who = evidence.first.signer
        with self._status_lock:
            self.metrics.equivocations += 1
        if who in self._alarmed:
            return
        self._alarmed.add(who)
        record = {
            "height": evidence.first.height,
            "round": evidence.first.round,
            "validator": who,
            "first": repr(evidence.first),
            "second": repr(evidence.second),
        }
        try:
            self.ledger.store.add_alarm(int(time.time()), "equivocation", record)
        except StoreError as exc:
            self._log_once("alarm", "write", logging.ERROR, "%s", exc)
        self._log_once(
            "equivocation",
            who,
            logging.ERROR,
            "ALARM: validator %s sent two different messages in round %d of height %d (evidence in "
            "local_alarms); up to %d such validators are tolerated",
            who,
            evidence.first.round,
            evidence.first.height,
            self._core.faulty if self._core is not None else 0,
        )

    # -- messages from the bus -------------------------------------------------------------------

    def _on_block(self, topic: str, payload: bytes) -> None:
        """A message on the blocks topic (on the bus thread). Dropped here, unparsed, if it is
        larger than any proposal (``block_too_large``), if its signer's share of the consensus
        inbox is full (``block_busy``), or if the same bytes wait already or were kept at this
        height (a look-up); else queued in its signer's share if that validator's key signed it
        as it is (``signed_as_sent``), or with the unattributed ones (UNATTRIBUTED)."""
        if len(payload) > MAX_PROPOSAL_BYTES:
            self._consensus_too_large("block", topic, len(payload))
            return
        validators = self.ledger.validators()
        signer = block_signer(payload)
        validator = validators.get(signer) if signer is not None else None
        sender = signer if signer is not None and validator is not None else UNATTRIBUTED
        if not self._consensus_inbox.has_room("block", sender, len(payload)):
            self._consensus_busy("block", sender, self._consensus_inbox.drop("block", sender))
            return
        digest = hashlib.sha256(payload).digest()
        if digest in self._seen:
            return
        if validator is not None and not signed_as_sent(payload, validator["key"]):
            sender = UNATTRIBUTED
        self._offer(("block", sender, payload), digest)

    def _on_vote(self, topic: str, payload: bytes) -> None:
        """A message on a seals topic (on the bus thread): dropped here, unparsed, if it is larger
        than any vote (``seal_too_large``), if that topic's share of the consensus inbox is full
        (``seal_busy``: a validator's seals topic is its own, the broker lets no one else write
        it; the topics of keys that are no validator share one), or if the same bytes wait
        already or were handled at this height (a look-up)."""
        if len(payload) > MAX_VOTE_BYTES:
            self._consensus_too_large("vote", topic, len(payload))
            return
        sender = topic.rsplit("/", 1)[-1]
        if sender not in self.ledger.validators():
            sender = UNATTRIBUTED
        if not self._consensus_inbox.has_room("vote", sender, len(payload)):
            self._consensus_busy("vote", sender, self._consensus_inbox.drop("vote", sender))
            return
        digest = hashlib.sha256(payload).digest()
        if digest not in self._seen:
            self._offer(("vote", sender, payload), digest)

    def _offer(self, item: tuple[str, str, bytes], digest: bytes) -> None:
        outcome = self._consensus_inbox.offer(item, digest)
        if outcome in ("full", "flood"):
            self._consensus_busy(item[0], item[1], outcome == "flood")

    def _consensus_too_large(self, kind: str, topic: str, size: int) -> None:
        what = "block" if kind == "block" else "seal"
        self._count("rejected", f"{what}_too_large")
        self._log_once(
            f"{what}_too_large",
            topic,
            logging.INFO,
            "rejected %s_too_large on %s: %d bytes (at most %d)",
            what,
            topic,
            size,
            MAX_PROPOSAL_BYTES if kind == "block" else MAX_VOTE_BYTES,
        )

    def _consensus_busy(self, kind: str, sender: str, new_flood: bool) -> None:
        """A message of ``sender`` dropped, its share of the consensus inbox full: counted, and one
        WARNING a flood (a share that dropped nothing for FLOOD_QUIET_S ends one)."""
        what = "block" if kind == "block" else "seal"
        self._count("rejected", f"{what}_busy")
        who = f"{kind} {sender}"
        if new_flood:
            self._logged.discard(("consensus_busy", who))
        limit = self._consensus_inbox.limits[kind]
        self._log_once(
            "consensus_busy",
            who,
            logging.WARNING,
            "dropping %s: %s share of this node's consensus queue is full (%d messages or %d MiB "
            "waiting); the %svalidators' messages still get through",
            self._flooder(kind, sender),
            "their" if sender == UNATTRIBUTED else "its",
            limit[0],
            limit[1] // (1024 * 1024),
            "" if sender == UNATTRIBUTED else "other ",
        )

    def _flooder(self, kind: str, sender: str) -> str:
        """Whose messages a consensus inbox share holds, for the operator."""
        if sender == UNATTRIBUTED:
            return (
                "block messages that no validator signed as they are (their sender cannot be told)"
                if kind == "block"
                else "votes on the seals topics of keys that are no validator's"
            )
        what = "proposals" if kind == "block" else "votes"
        return f"the {what} of validator {self._validator_label(sender)}"

    def _refused_unparsed(self, raw: bytes, signer: str) -> bool:
        """A block message ``signer`` signed as it is (``signed_as_sent``) that the consensus would
        refuse for its height or round, as its canonical start says: handled without parsing it
        (its signer's own bytes can only mislead about its own message). A QA pass: 40 signed
        proposals of 8 MB from a validator that was not the round's proposer, each parsed in full
        (0.6 s) before it was refused, froze every node."""
        head = proposal_round(raw)
        core = self._core
        if head is None or core is None:
            return False
        height, round_ = head
        if height <= self.ledger.height:
            self._help_behind(height)
            return True
        if height > self.ledger.height + 1 + FUTURE_HEIGHTS:  # as _park would after parsing it
            self._count("rejected", "block_not_parked")
            if self.peers and self._mono() > self._catchup_after:
                self._catch_up()
            return True
        if height != core.height or signer not in core.validators:
            return False  # parked for its height, or refused in full
        if round_ > core.round + 1:
            self._count("rejected", "block_round_ahead")
            return True
        if core.proposer(round_) != signer:
            self._count("rejected", "block_not_proposer")
            return True
        return False

    def _park(self, kind: str, height: int, env: Envelope, raw: bytes) -> None:
        """Keep a message a current validator signed for a height we have not reached (checked
        again when we get there: the validators may change), and look for the blocks we miss."""
        what = "block" if kind == "block" else "seal"
        # a resend of one held (a proposer sends its block every REPUBLISH_S) is not checked or
        # kept again, but still says we are behind: a catch-up that failed is tried again (a
        # review: a lagging node then waited for its republish timer)
        if raw not in self._future.held:
            if not self._signed_by_validator(env, what):
                return
            if height > self.ledger.height + 1 + FUTURE_HEIGHTS or not self._future.add(
                height, kind, env.signer, raw
            ):
                self._count("rejected", f"{what}_not_parked")
        if self.peers and self._mono() > self._catchup_after:
            self._catch_up()

    def _signed_by_validator(self, env: Envelope, what: str) -> bool:
        """``env`` is signed by a current validator; if not, counted as ``<what>_<reason>``."""
        validator = self.ledger.validators().get(env.signer)
        try:
            if validator is None:
                raise Rejected("not_a_validator", f"{env.signer} is not a validator")
            verify_envelope(env, public_key_from_hex(validator["key"]), key_id_hex=env.signer)
        except Rejected as exc:
            self._count("rejected", f"{what}_{exc.reason}")
            return False
        return True

    def _take_block(self, raw: bytes, signed_by: str | None = None) -> None:
        """A proposal (``signed_by``: the validator that signed these very bytes, checked on
        arrival; its height and round are then read without parsing, ``_refused_unparsed``)."""
        if signed_by is not None and self._refused_unparsed(raw, signed_by):
            return
        try:
            env = parse_envelope(raw, community=self.community, now=None, interval_s=None)
            if env.type != "block":
                raise Rejected("unknown_type", "not a block")
            if "proposal_round" not in env.body or "valid_round" not in env.body:
                raise Rejected("bad_body", "a block on the blocks topic must be a proposal")
            block = Block.from_body(
                env.body, community=self.community, interval_s=self.ledger.genesis.interval_s
            )
        except Rejected as exc:
            self._count("rejected", f"block_{exc.reason}")
            return
        height = block.height
        if height <= self.ledger.height:
            self._help_behind(height)
            return
        if height > self.ledger.height + 1:
            self._park("block", height, env, raw)
            return
        core = self._core
        assert core is not None
        round_, valid_round = env.body["proposal_round"], env.body["valid_round"]
        if round_ > core.round + 1:
            # held, a block of a round we are not in is up to 8 MiB of memory that one validator
            # could multiply by the rounds ahead it proposes in; its proposer sends it again every
            # REPUBLISH_S while it is in that round, and we get there on f + 1 of its votes or our
            # timeouts (CometBFT takes a proposal of its current round only)
            self._count("rejected", "block_round_ahead")
            return
        created = block.header["round"]
        if created != round_ if valid_round == -1 else created > valid_round:
            # a new block is created in the round it is proposed in, by its proposer; one proposed
            # again (line 15) was created in its valid round or before. Else its proposer names
            # another validator and round as its creator, and the chain's sequencer moves there
            # (a QA pass: validator 0 in round 0 made validator 2 the sequencer, "round 1001").
            self._count("rejected", "block_wrong_round")
            return
        value = block.hash.hex()
        proposal = Proposal(height, round_, valid_round, value, env.signer)
        # not from the round's proposer, a copy, a third block of the round, or a bad signature
        if self._refused(core, proposal, "block", raw) or not self._signed_by_validator(env, "block"):
            return
        self._seen.add(hashlib.sha256(raw).digest())  # kept: a copy of it costs a look-up
        self._blocks.setdefault(value, block)  # at most two a round: the first and the evidence
        self._run(core.receive(proposal))

    def _take_vote(self, raw: bytes) -> None:
        try:
            vote = parse_envelope(raw, community=self.community, now=None, interval_s=None)
            if vote.type not in ("prevote", "seal"):
                raise Rejected("unknown_type", "not a vote")
        except Rejected as exc:
            self._count("rejected", f"seal_{exc.reason}")
            return
        height = vote.body["height"]
        if height <= self.ledger.height:
            if vote.type == "seal":
                self._store_late_seal(vote, raw)  # a late seal: its sender may be done too
            else:
                self._help_behind(height)  # a prevote: its sender still works on that height
            return
        if height > self.ledger.height + 1:
            self._park("vote", height, vote, raw)
            return
        header = vote.body["header"]
        value = None if header == NIL else header
        kind = consensus.PREVOTE if vote.type == "prevote" else consensus.PRECOMMIT
        core = self._core
        assert core is not None
        message = Vote(kind, height, vote.body["round"], value, vote.signer)
        if self._refused(core, message, "seal", raw) or self._too_far(vote.body["round"]):
            return
        if not self._signed_by_validator(vote, "seal"):
            return
        self._seen.add(hashlib.sha256(raw).digest())  # kept: a copy of it costs a look-up
        self._keep_vote(vote)
        self._run(core.receive(message))

    def _refused(self, core: consensus.Height, message: Proposal | Vote, what: str, raw: bytes) -> bool:
        """The consensus would not keep ``message``: a copy of one it holds (its resends: dropped
        quietly, and ``raw`` again on arrival, a look-up), or one it refuses (counted as
        ``<what>_<reason>``; an equivocator's third different vote of a round is
        ``<what>_equivocation``). Asked before the signature is checked, so a flood of them costs
        a dictionary look-up each."""
        refusal = core.refusal(message)
        if refusal == "copy":
            self._seen.add(hashlib.sha256(raw).digest())
        elif refusal is not None:
            self._count("rejected", f"{what}_{refusal}")
        return refusal is not None

    def _help_behind(self, height: int) -> None:
        """A peer still works on the height we just finished (it restarted, or lost messages):
        relay the seals that made that block final, so it can finish it from the bus (at most
        once per REPUBLISH_S; older heights it fetches from a peer's HTTP API)."""
        if height != self.ledger.height or self.key_id is None:
            return
        if self._mono() - self._helped.get(height, float("-inf")) < REPUBLISH_S:
            return
        self._helped = {height: self._mono()}
        for _, envelope in self.ledger.store.seal_rows(height):
            self.bus.publish(Topics.seals(self.community, self.key_id), bytes(envelope))

    def _store_late_seal(self, seal: Envelope, raw: bytes) -> None:
        """Keep a valid seal that arrived after its block became final, so stores converge. The
        store keeps one seal per validator and height: a validator's whose seal it holds is
        dropped before its signature is checked (a look-up; a QA pass: one honest validator's seal
        replayed 10,000 times a second cost an ECDSA check each and held the chain 100 s)."""
        height = seal.body["height"]
        validators = self._validators_at.get(height)
        header = self.ledger.store.header(height) if validators is not None else None
        if header is None:
            return
        stored = self._sealed.get(height)
        if stored is None:
            for old in [h for h in self._sealed if h not in self._validators_at]:
                del self._sealed[old]  # (recent heights only, as _validators_at)
            stored = self._sealed[height] = {signer for signer, _ in self.ledger.store.seal_rows(height)}
        if seal.signer not in stored:
            try:
                check_seal_for(validators, self.community, height, header_hash(header), seal)
            except InvalidBlock:
                pass  # a seal of another round's block or nil: not part of this block's record
            else:
                self.ledger.store.add_seals(height, [seal])
                stored.add(seal.signer)
        self._seen.add(hashlib.sha256(raw).digest())  # its copies: a look-up on arrival

    def _store_failed(self, height: int, exc: StoreError) -> None:
        """Disk full or read-only: nothing was written (one SQLite transaction). Keep what we
        have and try again later, so the node recovers by itself when the disk accepts writes."""
        if self.store_error is None:
            log.error("cannot store block %d: %s; retrying until the disk accepts it", height, exc)
        self.store_error = str(exc)

    def _store_ok(self) -> None:
        """A block was stored (found in a QA pass: 'storing blocks again' was logged after a
        catch-up that fetched nothing, the disk still full)."""
        if self.store_error is not None:
            log.info("storing blocks again")
            self.store_error = None

    def _after_commit(self, block: Block, round_: int | None) -> None:
        """A block is final (``round_``: the round whose seals made it so; None: from a peer)."""
        with self._status_lock:
            self.metrics.blocks_committed += 1
            self.metrics.last_commit_real = time.time()
        for height in [h for h in self._validators_at if h < block.height - 16]:
            del self._validators_at[height]
        done = {(env.signer, env.seq) for env in block.txs}
        if done & self._pending_keys:
            booked = [r for r, e in self._pending if (e.signer, e.seq) in done]
            self._forget(booked)
            with self._status_lock:
                self._pending = [(r, e) for r, e in self._pending if (e.signer, e.seq) not in done]
                self._unpend(done & self._pending_keys)
        if round_ is not None:  # by consensus (a catch-up batch would recheck once per block)
            self._recheck_carried(block)
        self._pending_since = self._mono() if self._pending else None
        announcer = (
            self._core is not None and round_ is not None and self._core.proposer(round_) == self.key_id
        )
        self._new_height()
        if announcer and self._announcer is not None:  # the proposer of the deciding round tells
            self._announcer.block_final(
                self.ledger.store, block, self.ledger.chain_state["meters"], now=int(self.clock.now())
            )
        if self.role != "observer" and self.is_validator != self._was_validator:
            self._was_validator = not self._was_validator
            if self._was_validator:
                log.info("this key (%s) is a validator from block %d on: it votes", self.key_id, block.height)
            else:
                log.warning(
                    "this key (%s) is no longer one of the community's validators (block %d): it will not "
                    'vote; stop this node (docs/operations.md, "Removing a validator")',
                    self.key_id,
                    block.height,
                )
        if self.config_history is not None:  # every validator: a step if the block changed the config
            try:
                self.config_history.after_block(self.ledger.state, block.height, publish=self.is_validator)
            except Exception as exc:  # never end the node: the next change or start publishes again
                log.error("configuration history after block %d: %s", block.height, exc)
        log.debug("committed block %d (%d txs)", block.height, len(block.txs))

    def _recheck_carried(self, block: Block) -> None:
        """Check again the transactions still waiting that already waited through the block
        before (like CometBFT's mempool recheck), unless ``block`` was full. Only this validator
        may hold one (it took it before its gate closed or it expired; the proposer refused it):
        kept, it would make work due here alone, so nil prevotes and a false stall. Refused now,
        it goes with its reason."""
        now = int(self.clock.now())
        carried = [r for r, e in self._pending if (e.signer, e.seq) in self._carried]
        for raw in carried if len(block.txs) < MAX_BLOCK_TXS else []:
            try:
                self.ledger.intake(raw, now)
            except Rejected as exc:
                self._drop_pending(raw)
                self._refuse(raw, exc)
            except Exception as exc:  # a bug met by one message must not end the node
                self._quarantine("tx", raw, exc)
        self._carried = set(self._pending_keys)

    def _tell_refused(self, raw: bytes, refused: Rejected) -> str | None:
        """Tell a meter its message was refused for good, so its outbox stops resending it.

        Only when the message's signature verifies under that meter's enrolled key: anyone can
        write another's key id into junk, and a forged refusal would make that meter forget
        messages never booked. The meter believes a refusal from as many validators as two quorums
        share, so the round's tellers tell (chain/notice.py). Returns the authenticated
        signer (on every validator, for the log), or None.
        """
        chain = self.ledger.chain_state

        def key_for(signer: str) -> str | None:
            return signer_key(chain, signer)

        if refused.envelope is not None:  # parsed at intake: not parsed again (a QA pass: 64 KiB
            # of junk cost every node two full parses, 11 ms a message), nor verified again
            signed = refused.signed or signed_by_its_signer(refused.envelope, key_for)
            env = refused.envelope if signed else None
        elif refused.reason in CONTEXT_REASONS:  # parses without the time and interval checks
            env = authenticated(raw, community=self.community, key_for=key_for)
        else:
            env = None  # not an envelope at all: no signer to tell
        if env is None:
            return None
        reason = refused.reason
        if reason != "replay" and not seq_behind(chain, env.signer, env.seq):
            try:
                check_replay(chain, env)
            except Rejected:
                # the ledger holds this signer's seq already: a resend of a booked message (its
                # receipt came late), not a refusal; it said `expired` for a booked order
                reason = "replay"
        core = self._core
        told = (
            self._announcer is not None
            and core is not None
            and self.key_id in tellers(core.validators, core.sequencer, core.round, core.quorum)
        )
        if told and env.signer in chain["meters"]:  # members and validators get no notices
            if reason == "replay" and seq_behind(chain, env.signer, env.seq):
                reason = "seq_behind"  # not booked: the sender's counter is behind (chain/notice.py)
            self._announcer.notify(
                env.signer,
                [env.seq],
                now=int(self.clock.now()),
                chain_height=self.ledger.height,
                refused=reason,
            )
        return env.signer

    # -- catch-up over HTTP ------------------------------------------------------------------

    def catch_up_at_start(self, stop: threading.Event | None = None) -> None:
        """Before joining live traffic: fetch what the peers finalised while we were down (ends
        within a fraction of a second once ``stop`` is set)."""
        if stop is not None:
            self._stop = stop
        if self.peers:
            self._catch_up()

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def _catch_up(self) -> None:
        """Fetch missing final blocks from peers, verify each, and store it.

        A peer may be hostile: its reply is size-, depth- and time-bounded and parsed a block at a
        time, each field within what an honest block holds there (catchup.py), every block is
        verified (seals, roots, re-execution) before it is stored, and nothing it sends ends the
        node. A peer whose reply failed, or came slowly, is skipped for a while (``PeerCatchup``),
        so it cannot hold the node's loop again and again. One call spends about
        ``catchup_step_s`` (plus one reply's time at most); the rest is fetched at the next step.
        """
        self._catchup_after = self._mono() + 2.0
        self._catchup_more = False
        started = time.monotonic()
        asked = False
        states = {peer: self._peer_catchup.setdefault(peer, PeerCatchup()) for peer in self.peers}
        for peer in sorted(self.peers, key=lambda p: states[p].slow):  # the slow ones last
            state = states[peer]
            if self._stopping():
                return
            if asked and time.monotonic() - started >= self.catchup_step_s:
                self._catchup_more = True  # the next peers at the next step
                return
            if self._mono() < state.skip_until:
                continue
            asked = True
            try:
                while self._catch_up_batch(peer, state, started):
                    if self._stopping():
                        return
                    if time.monotonic() - started >= self.catchup_step_s:
                        self._catchup_more = True
                        return
            except StoreError as exc:
                self._store_failed(self.ledger.height + 1, exc)
                return
            except InvalidBlock as exc:  # a block the peer calls final that is not
                self._count("blocks_refused", f"catchup_{exc.reason}")
                self._log_refused(peer, state, exc)
                self._peer_failed(peer, state, None)
            except ErasedPayloads as exc:  # of a header a quorum sealed (_caught_block)
                self._log_erased(exc.height)
                self._peer_failed(peer, state, None)
            except Exception as exc:  # unreachable, slow, lying or broken peer: try the next one
                if self._stopping():
                    return
                self._peer_failed(peer, state, f"{type(exc).__name__}: {exc}")

    def _peer_failed(self, peer: str, state: PeerCatchup, what: str | None) -> None:
        """Skip ``peer`` for a while (longer with each failure in a row) and ask it for fewer
        blocks next time (a large honest reply on a slow link may not fit its deadline); one
        WARNING with ``what`` it did (its text escaped)."""
        state.failures += 1
        state.limit = max(1, state.limit // 2)
        state.rest = None
        skip = min(CATCHUP_BACKOFF_S * 2 ** (state.failures - 1), CATCHUP_BACKOFF_MAX_S)
        state.skip_until = self._mono() + skip
        if what is not None:
            log.warning(
                "catch-up from %s failed at height %d: %s; skipping this peer for %.0f s",
                peer,
                self.ledger.height + 1,
                _peer_text(what),
                skip,
            )

    def _log_refused(self, peer: str, state: PeerCatchup, exc: InvalidBlock) -> None:
        """A block from ``peer`` refused: a WARNING with its height and reason, at most once per
        peer every CATCHUP_LOG_EVERY_S (saying how many were not logged in between)."""
        now = self._mono()
        if now - state.refused_logged < CATCHUP_LOG_EVERY_S:
            state.refused_unlogged += 1
            return
        more = state.refused_unlogged
        state.refused_logged, state.refused_unlogged = now, 0
        log.warning(
            "catch-up from %s: refused block %d (%s): the peer serves a block that is not final "
            "here (a hostile peer or a damaged store); skipping this peer for a while%s",
            peer,
            self.ledger.height + 1,
            _peer_text(str(exc)),
            f" ({more} more refused block(s) from this peer not logged since the last line)" if more else "",
        )

    def _log_erased(self, height: object) -> None:
        """Our peers' blocks from ``height`` on hold erased payloads (a header a quorum sealed, so
        no forger's claim): once, what to do."""
        self._log_once(
            "catch-up",
            "erased",
            logging.WARNING,
            "catch-up stopped at height %d: this community erased payloads (peerwatt node erase) at "
            "block %s, and a node cannot rebuild its state from genesis past an erased block (it can "
            "only be checked by hash, not re-executed). Do: stop this node; stop one caught-up peer "
            "node, copy its whole data folder (ledger.sqlite with its -wal/-shm; not its "
            "mempool.sqlite), start that peer again, put the copy in place of this node's data "
            'folder and start this node (docs/operations.md, "Tampered or damaged store")',
            self.ledger.height + 1,
            height,
        )

    def _catch_up_batch(self, peer: str, state: PeerCatchup, started: float) -> bool:
        """Fetch the next batch of final blocks (or take up the rest of the last reply), and
        verify and store them one at a time until the call's time is up (the first block of a
        reply is stored whatever the time). True if the peer may have more to give now; False
        when it had none, or was slow (the other peers are asked for the rest)."""
        reply, slow = self._reply_from(peer, state)
        stored = 0
        while True:
            if stored and time.monotonic() - started >= self.catchup_step_s:
                state.rest, state.rest_after = reply, self.ledger.height  # the rest at the next step
                return True
            validators = dict(self.ledger.validators())
            data = reply.next_block(len(validators))
            if data is None:
                break
            block, seals = self._caught_block(data, validators)
            self.ledger.commit(block, seals)
            self._store_ok()  # only once a block was stored: a peer with none to give proves nothing
            self._validators_at[block.height] = validators
            self._after_commit(block, None)
            stored += 1
        return bool(stored) and not slow

    def _reply_from(self, peer: str, state: PeerCatchup) -> tuple[Reply, bool]:
        """The rest of ``peer``'s last reply if the ledger is where it stopped, else a new reply;
        and whether it came slowly (then the peer is asked after the others until it answers in
        time again, with one WARNING when it turns slow)."""
        rest, state.rest = state.rest, None
        if rest is not None and state.rest_after == self.ledger.height:
            return rest, False
        asked = time.monotonic()
        reply = fetch_reply(
            peer,
            self.ledger.height + 1,
            timeout_s=self.catchup_timeout_s,
            limit=state.limit,
            stop=self._stop,
        )
        took = time.monotonic() - asked
        bound = self.catchup_slow_s + reply.size / CATCHUP_MIN_RATE
        state.failures = 0  # the peer answered within its deadline
        slow = took > bound
        if not slow:
            state.limit = min(CATCHUP_BATCH, state.limit * 2)
        elif not state.slow:
            log.warning(
                "catch-up from %s at height %d: a reply of %d bytes took %.1f s, more than %.1f s: a "
                "slow peer; its blocks are stored, and it is asked after the other peers until it "
                "answers in time again",
                peer,
                self.ledger.height + 1,
                reply.size,
                took,
                bound,
            )
        state.slow = slow
        return reply, slow

    def _caught_block(self, data: dict[str, Any], validators: dict[str, Any]) -> tuple[Block, list[Envelope]]:
        """A block of a catch-up reply and its seals, checked as JSON (``block_from_json``: its
        seals before any is parsed) and not yet verified. A block with erased payloads is
        believed only of a header that links to our head and a quorum sealed: ErasedPayloads
        then, else InvalidBlock. A QA pass's peer sent ``txs: [null]`` with no valid seal and
        made the node warn, once only, that the community had erased payloads at block 1."""
        try:
            return block_from_json(data, self.community, self.ledger.genesis.interval_s, validators)
        except ErasedPayloads as exc:
            self.ledger.check_final_header(exc.header, exc.seals)
            raise

    # -- status --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """A snapshot for the HTTP API and metrics (another thread): copies under the lock."""
        with self._status_lock:
            return self._status_locked()

    def _status_locked(self) -> dict[str, Any]:
        head = self.ledger.head
        last = self.metrics.last_commit_real
        return {
            "community": self.community,
            "role": self.role,
            "key_id": self.key_id,
            "height": head["height"],
            "head_time": head["time"],
            "last_final_block_age_s": None if last is None else round(time.time() - last, 3),
            "broker_connected": self.bus.connected,
            "peers": list(self.peers),
            "pending": len(self._pending),
            "mempool": len(self.mempool) if self.mempool is not None else None,
            "accepted": self.metrics.accepted,
            "rejected": dict(self.metrics.rejected),
            "blocks_committed": self.metrics.blocks_committed,
            "blocks_refused": dict(self.metrics.blocks_refused),
            "quarantined": self.metrics.quarantined,
            "store_error": self.store_error,
            "stalled": None if self.stalled is None else dict(self.stalled),
            # a block for the next height proposed and not final yet
            "in_progress": self._core is not None and bool(self._core.proposals),
            "round": None if self._core is None else self._core.round,
            "step": None if self._core is None else self._core.step,
            "sequencer": self.ledger.sequencer(),
            "proposer": None if self._core is None else self._core.proposer(self._core.round),
            "failovers": self.metrics.failovers,
            "equivocations": self.metrics.equivocations,
        }


def first_that_fit(pending: list[tuple[bytes, Envelope]]) -> list[tuple[bytes, Envelope]]:
    """The oldest pending transactions that fit one block: at most MAX_BLOCK_TXS of them and
    MAX_BLOCK_TX_BYTES of raw envelopes together (the rest waits for the next block)."""
    taken, size = [], 0
    for raw, env in pending[:MAX_BLOCK_TXS]:
        size += len(raw)
        if size > MAX_BLOCK_TX_BYTES and taken:
            break
        taken.append((raw, env))
    return taken


def _peer_text(text: str) -> str:
    """Text a peer chose, for a log line: one line, escaped, at most PEER_TEXT_CHARS long."""
    shown = one_line(text)
    return shown if len(shown) <= PEER_TEXT_CHARS else shown[:PEER_TEXT_CHARS] + "..."
