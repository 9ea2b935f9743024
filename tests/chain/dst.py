"""Deterministic simulation of the consensus core (chain/consensus.py), FoundationDB/TigerBeetle style.

One seed fixes everything: the validators, which are Byzantine or crash for good, the network's
delays, drops, duplicates and partitions, crashes and restarts, when work becomes due, and what the
Byzantine validators send. :func:`run` plays the seed over virtual time (a heap of events, no
threads, no clock) and checks after every event:

- **agreement**: no two honest validators decide different values at one height (every decision
  counts, including those of validators that crashed and restarted);
- **validity**: no honest validator decides a value that ``valid()`` refuses ("bad-..." values);
- **no double votes**: an honest validator never broadcasts two different proposals, prevotes or
  precommits in one round of one height (checked on the broadcast log, which survives restarts),
  and no honest validator is ever reported by an :class:`Equivocation`;
- **liveness**: after the global stabilization time GST (no drops, no partitions, no more crashes,
  every validator that is not crashed for good is up, message delay at most ``D``), every honest
  validator decides every height 1..K (and at least two heights beyond the highest any honest
  validator had decided at GST, so that every seed exercises the bound) by a deadline. With
  ``Δ = G + D`` (gossip period plus delay: any message an honest validator holds reaches every
  up peer within Δ after GST), ``B`` the block-building time and ``W`` the spread of work due,
  the deadline of height h is::

      A_h + W + Δ + Σ_{r=L_h}^{R_h + 2n + 1} (propose(r) + prevote(r) + precommit(r) + 4Δ + B)

  where ``A_h`` = max(GST, when the first honest validator entered h) and ``L_h``, ``R_h`` are the
  lowest and highest rounds the honest validators were in at ``A_h`` (0 for one still below h).
  Each round after GST lasts at most its three timeouts plus four message hops; a validator below
  ``R_h`` climbs to it round by round at worst (one validator alone there is no f+1 to skip to);
  from ``R_h`` on, within 2n + 2 rounds every honest validator has proposed at least twice (the
  first turn may go to a value a quorum cannot prevote because of a lock, the second carries the
  highest valid value), so a round with an honest proposer succeeds.

The network model is Tendermint's: gossip. Every validator re-sends, every ``G`` seconds, to each
up peer the messages of its current height that the peer lacks (its own and those it received,
like CometBFT's vote gossip), and to a peer at a lower height the precommits that decided that
height (catch-up). Messages for a later height are buffered and replayed on entering it; messages
in flight to a crashed validator are lost; a validator persists ``record()`` before each broadcast
leaves, and may crash in the middle of a broadcast (some peers got it, the rest did not).

Half the seeds add an observer (a node with ``me=None``, like a household's node): it receives
every broadcast and the gossip, and counts with the honest validators for agreement and liveness.

A failing seed prints one line, e.g. ``seed=17 n=4 faults=mixed heights=5``, and
:func:`run` replays it exactly (the trace hash covers every event).
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chain.consensus import (
    PRECOMMIT,
    PREVOTE,
    BuildBlock,
    Decide,
    Equivocation,
    Height,
    Proposal,
    Schedule,
    Timeouts,
    Vote,
)
from chain.consensus import Broadcast as BroadcastAction

FAULT_MIXES = ("none", "crash", "byzantine", "mixed")
# What a validator's gossip re-sends to a peer at its height. "all": every message of the height
# it holds, its own and those it received (the paper's gossip assumption, CometBFT's vote gossip).
# "record": only what Height.record() holds, i.e. its own messages and the 2f+1 prevotes behind its
# lock and valid value: the least a node must re-send. "own": only its own messages, which is not
# enough (a polka whose other signers are gone can then never be shown again: liveness fails).
RELAYS = ("all", "record", "own")

TIMEOUTS = Timeouts(propose_s=3.0, prevote_s=1.0, precommit_s=1.0, step_s=0.5)
POST_GST_DELAY = 0.2  # D: the largest message delay after GST
GOSSIP_S = 1.0  # G: the longest gap between two gossip rounds of a validator
BUILD_S = 0.3  # B: the longest time a proposer takes to build a block
WORK_SPREAD_S = 2.0  # W: every validator sees work due within this long of entering a height


def quorum_of(n: int) -> int:
    return (2 * n) // 3 + 1


def is_valid(value: str) -> bool:
    return not value.startswith("bad-")


def creator_of(value: str) -> str:
    """The validator that built the block: "h5-r2-v3-7" -> "v3"."""
    return value.split("-")[2]


@dataclass(frozen=True)
class Config:
    seed: int
    n: int
    faults: str = "mixed"
    heights: int = 5
    byzantine: int | None = None  # override the Byzantine count (a broken run: more than f)
    relay: str = "all"  # what gossip re-sends: "all" the height's messages, or "record" (see RELAYS)

    def line(self) -> str:
        extra = f" byzantine={self.byzantine}" if self.byzantine is not None else ""
        extra += f" relay={self.relay}" if self.relay != "all" else ""
        return f"seed={self.seed} n={self.n} faults={self.faults} heights={self.heights}{extra}"

    def command(self) -> str:
        extra = f" --byzantine {self.byzantine}" if self.byzantine is not None else ""
        extra += f" --relay {self.relay}" if self.relay != "all" else ""
        return (
            f"python -m tests.chain.dst --seed {self.seed} --validators {self.n} "
            f"--faults {self.faults} --heights {self.heights}{extra}"
        )


@dataclass
class Outcome:
    config: Config
    violation: str | None
    trace_hash: str
    events: int
    virtual_s: float
    gst: float
    max_round: int
    byzantine: tuple[str, ...]
    crashed_for_good: tuple[str, ...]
    decided: dict[int, str]
    observers: tuple[str, ...] = ()
    # per height decided after GST: (time until every live honest validator decided) / (its bound)
    bound_used: dict[int, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.violation is None

    def line(self) -> str:
        status = "ok" if self.ok else f"FAILED: {self.violation}"
        return f"{self.config.line()} -> {status} (replay: {self.config.command()})"


class Violation(Exception):
    pass


@dataclass
class Node:
    name: str
    byzantine: bool = False
    crashed_for_good: bool = False
    up: bool = True
    incarnation: int = 0
    height: Height | None = None
    # survives a crash: the chain (value, round, certificate) and the last record of each height
    chain: dict[int, tuple[str, int, tuple[Vote, ...]]] = field(default_factory=dict)
    disk: dict[int, dict[str, Any]] = field(default_factory=dict)
    # lost on a crash
    buffer: dict[int, list[Proposal | Vote]] = field(default_factory=dict)
    crash_on_broadcast: bool = False
    seen: list[Proposal | Vote] = field(default_factory=list)  # Byzantine: a pool to replay from


def _from_record(data: dict[str, Any]) -> Proposal | Vote:
    if data["kind"] == "proposal":
        return Proposal(data["height"], data["round"], data["valid_round"], data["value"], data["signer"])
    return Vote(data["kind"], data["height"], data["round"], data["value"], data["signer"])


def _has(height: Height, message: Proposal | Vote) -> bool:
    if isinstance(message, Proposal):
        return height.proposals.get(message.round) == message
    by_value = height.votes_for.get((message.kind, message.round), {})
    return message.signer in by_value.get(message.value, {})


def _messages_of(height: Height) -> list[Proposal | Vote]:
    """Everything this height's log holds, an equivocator's every vote included."""
    out: list[Proposal | Vote] = list(height.proposals.values())
    for by_value in height.votes_for.values():
        for votes in by_value.values():
            out.extend(votes.values())
    return out


class Simulation:
    def __init__(self, config: Config, height_factory: Callable[..., Height] = Height) -> None:
        self.config = config
        self.height_factory = height_factory
        self.rng = random.Random(config.seed)
        rng = self.rng
        n = config.n
        self.names = [f"v{i}" for i in range(n)]
        self.quorum = quorum_of(n)
        f = n - self.quorum
        # an observer (a node that is no validator: me=None) follows in half the seeds
        self.observers = ["obs0"] if random.Random(config.seed * 7919 + 1).random() < 0.5 else []
        self.everyone = self.names + self.observers
        self.nodes = {name: Node(name) for name in self.everyone}
        self.genesis_sequencer = rng.choice(self.names)
        self.now = 0.0
        self._seq = 0
        self._events: list[tuple[float, int, str, tuple[Any, ...]]] = []
        self._hash = hashlib.sha256()
        self.event_count = 0
        self.max_round = 0

        faults = config.faults
        if config.byzantine is not None:
            byz = config.byzantine
            gone = 0
        elif faults == "byzantine":
            byz, gone = f, 0
        elif faults == "crash":
            byz, gone = 0, rng.randint(0, f)
        elif faults == "mixed":
            byz = rng.randint(0, f)
            gone = rng.randint(0, f - byz)
        else:
            byz, gone = 0, 0
        shuffled = self.names[:]
        rng.shuffle(shuffled)
        for name in shuffled[:byz]:
            self.nodes[name].byzantine = True
        for name in shuffled[byz : byz + gone]:
            self.nodes[name].crashed_for_good = True
        self.honest = [name for name in self.names if not self.nodes[name].byzantine]

        # the network before GST
        chaotic = faults != "none" or rng.random() < 0.7
        self.gst = rng.uniform(5.0, 40.0) if chaotic else rng.uniform(0.0, 10.0)
        self.drop_p = rng.choice((0.0, 0.05, 0.2, 0.5)) if chaotic else 0.0
        self.dup_p = rng.choice((0.0, 0.05, 0.2))
        self.pre_gst_delay = rng.choice((0.1, 1.0, 5.0)) if chaotic else POST_GST_DELAY
        self.partitions: list[tuple[float, float, frozenset[str]]] = []
        if chaotic and n > 1:
            for _ in range(rng.randint(0, 3)):
                start = rng.uniform(0.0, self.gst)
                end = min(self.gst, start + rng.uniform(1.0, 15.0))
                cut = frozenset(rng.sample(self.names, rng.randint(1, n - 1)))
                self.partitions.append((start, end, cut))

        # crashes before GST: the crashed-for-good go at a random time; honest ones crash and restart
        for name in self.names:
            node = self.nodes[name]
            if node.crashed_for_good:
                self._push(rng.uniform(0.0, self.gst), "crash", (name, False))
            elif not node.byzantine and faults in ("crash", "mixed"):
                for _ in range(rng.randint(0, 3)):
                    at = rng.uniform(0.0, self.gst)
                    if rng.random() < 0.5:
                        self._push(at, "arm", (name,))  # crash in the middle of the next broadcast
                    else:
                        self._push(at, "crash", (name, True))
        self._push(self.gst, "gst", ())

        # liveness bookkeeping
        self.target = config.heights  # at GST: at least two more heights than any honest node has
        self.entered: dict[int, float] = {}  # height -> when the first honest validator entered it
        self.deadline: dict[int, float] = {}
        self.anchor: dict[int, float] = {}
        self.bound_used: dict[int, float] = {}
        self.decisions: dict[int, str] = {}
        self.sent_log: dict[tuple[str, int, str, int], Proposal | Vote] = {}
        self.nonce = 0
        # Byzantine coordination: per (height, round), which honest peers get the "other" proposal
        self._split: dict[tuple[int, int], frozenset[str]] = {}
        self._favourite: dict[tuple[int, int], str] = {}

    # -- plumbing ------------------------------------------------------------------------------

    def _push(self, at: float, kind: str, payload: tuple[Any, ...]) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, kind, payload))

    def _trace(self, *parts: Any) -> None:
        self._hash.update(repr(parts).encode())

    def _fail(self, what: str) -> None:
        raise Violation(f"t={self.now:.3f}: {what}")

    def _after_gst(self) -> bool:
        return self.now >= self.gst

    def _delay(self) -> float:
        top = POST_GST_DELAY if self._after_gst() else self.pre_gst_delay
        return self.rng.uniform(0.001, top)

    def _cut(self, a: str, b: str) -> bool:
        for start, end, cut in self.partitions:
            if start <= self.now < end and ((a in cut) != (b in cut)):
                return True
        return False

    def _send(self, src: str, dst: str, payload: Any) -> None:
        """One network message (a consensus message or a gossip bundle): maybe dropped, cut off by
        a partition, duplicated; delayed. Lost if the receiver is down or restarts before it lands."""
        target = self.nodes[dst]
        if not target.up:
            return
        if not self._after_gst():
            if self.rng.random() < self.drop_p or self._cut(src, dst):
                return
        copies = 2 if self.rng.random() < self.dup_p else 1
        for _ in range(copies):
            self._push(self.now + self._delay(), "deliver", (dst, target.incarnation, src, payload))

    def _new_height(self, node: Node, number: int) -> Height:
        previous = node.chain.get(number - 1)
        sequencer = creator_of(previous[0]) if previous else self.genesis_sequencer
        return self.height_factory(
            number,
            tuple(self.names),
            self.quorum,
            sequencer,
            None if node.name in self.observers else node.name,
            TIMEOUTS,
            is_valid,
        )

    # -- the validator side --------------------------------------------------------------------

    def _apply(self, node: Node, height: Height, actions: list[Any]) -> None:
        if not actions:
            return
        if not node.byzantine and any(isinstance(a, BroadcastAction) for a in actions):
            # persisted before any message leaves (JSON round trip: what a node writes to disk)
            node.disk[height.height] = json.loads(json.dumps(height.record()))
        for action in actions:
            if not node.up:
                return
            if isinstance(action, BroadcastAction):
                self._broadcast(node, action.message)
            elif isinstance(action, BuildBlock):
                at = self.now + self.rng.uniform(0.0, BUILD_S)
                self._push(at, "build", (node.name, node.incarnation, action.height, action.round))
            elif isinstance(action, Schedule):
                self._push(
                    self.now + action.delay_s,
                    "timer",
                    (node.name, node.incarnation, action.step, action.height, action.round),
                )
            elif isinstance(action, Decide):
                self._decide(node, height, action)
            elif isinstance(action, Equivocation):
                signer = action.first.signer
                if not self.nodes[signer].byzantine:
                    self._fail(
                        f"{node.name} saw honest {signer} equivocate: {action.first} vs {action.second}"
                    )

    def _broadcast(self, node: Node, message: Proposal | Vote) -> None:
        self._trace("broadcast", node.name, message)
        if node.byzantine:
            self._byzantine_send(node, message)
            return
        kind = "proposal" if isinstance(message, Proposal) else message.kind
        key = (node.name, message.height, kind, message.round)
        first = self.sent_log.setdefault(key, message)
        if first != message:
            self._fail(
                f"honest {node.name} sent two {kind}s in h{message.height} r{message.round}: "
                f"{first} vs {message}"
            )
        peers = [p for p in self.everyone if p != node.name]
        if node.crash_on_broadcast:
            # crash part-way: the record is on disk, some peers got the message, the rest did not
            for peer in peers[: self.rng.randint(0, len(peers))]:
                self._send(node.name, peer, message)
            self._crash(node, restart=True)
            return
        for peer in peers:
            self._send(node.name, peer, message)

    def _decide(self, node: Node, height: Height, decide: Decide) -> None:
        number, value = decide.height, decide.value
        self._trace("decide", node.name, number, value)
        if not node.byzantine:
            if not is_valid(value):
                self._fail(f"honest {node.name} decided an invalid value {value} at h{number}")
            first = self.decisions.setdefault(number, value)
            if first != value:
                self._fail(f"disagreement at h{number}: {first} and {value} ({node.name})")
        certificate = tuple(height.seals(decide.round, value))
        node.chain[number] = (value, decide.round, certificate)
        if number in self.anchor and number not in self.bound_used:
            if all(number in n.chain for n in self._live_honest()):
                used = self.now - self.anchor[number]
                self.bound_used[number] = used / (self.deadline[number] - self.anchor[number])
        self._enter(node, number + 1)

    def _enter(self, node: Node, number: int) -> None:
        height = self._new_height(node, number)
        if number in node.disk:
            height.restore(node.disk[number])
        node.height = height
        if not node.byzantine and number not in self.entered:
            self.entered[number] = self.now
            if self._after_gst():
                self._set_deadline(number)
        self._apply(node, height, height.start())
        self._push(
            self.now + self.rng.uniform(0.0, WORK_SPREAD_S), "work", (node.name, node.incarnation, number)
        )
        for message in node.buffer.pop(number, []):
            if node.height is not height or not node.up:
                break
            self._apply(node, height, height.receive(message))

    def _crash(self, node: Node, *, restart: bool) -> None:
        if not node.up:
            return
        self._trace("crash", node.name, restart)
        node.up = False
        node.incarnation += 1
        node.height = None
        node.buffer = {}
        node.crash_on_broadcast = False
        if restart:
            self._push(min(self.gst, self.now + self.rng.uniform(0.2, 6.0)), "restart", (node.name,))

    def _restart(self, node: Node) -> None:
        self._trace("restart", node.name)
        node.up = True
        self._enter(node, max(node.chain, default=0) + 1)
        self._push(self.now + self.rng.uniform(0.5, 1.0) * GOSSIP_S, "gossip", (node.name, node.incarnation))

    def _receive(self, node: Node, message: Proposal | Vote) -> None:
        height = node.height
        assert height is not None
        if node.byzantine and len(node.seen) < 500:
            node.seen.append(message)
        if message.height == height.height:
            self._apply(node, height, height.receive(message))
        elif message.height > height.height:
            node.buffer.setdefault(message.height, []).append(message)

    def _gossip(self, node: Node) -> None:
        """Send each up peer what it lacks of this height, or the certificate of its lower height."""
        height = node.height
        assert height is not None
        if self.config.relay == "record":
            record = height.record()
            mine = [_from_record(m) for m in [*record["sent"].values(), *record["polka"]]]
        elif self.config.relay == "own":
            mine = list(height.sent.values())
        else:
            mine = _messages_of(height)
        for peer_name in self.everyone:
            peer = self.nodes[peer_name]
            if peer_name == node.name or not peer.up or peer.height is None:
                continue
            if node.byzantine and self.rng.random() < 0.5:
                continue
            if peer.height.height == height.height:
                bundle = tuple(m for m in mine if not _has(peer.height, m))
            elif peer.height.height < height.height and peer.height.height in node.chain:
                bundle = node.chain[peer.height.height][2]
            else:
                continue
            if bundle:
                self._send(node.name, peer_name, bundle)

    # -- Byzantine behaviour -------------------------------------------------------------------

    def _value(self, number: int, round_: int, creator: str, *, bad: bool = False) -> str:
        self.nonce += 1
        value = f"h{number}-r{round_}-{creator}-{self.nonce}"
        return "bad-" + value if bad else value

    def _byzantine_send(self, node: Node, message: Proposal | Vote) -> None:
        """Per peer: the truth, an echo of what that peer was proposed, the other half of a split
        proposal, an invalid value, nil, or nothing. The Byzantine validators see every node's
        state (the strongest adversary) and agree on one split per round."""
        rng = self.rng
        key = (message.height, message.round)
        if key not in self._split:
            honest = self.honest[:]
            rng.shuffle(honest)
            self._split[key] = frozenset(honest[: rng.randint(1, max(1, len(honest) - 1))])
        other_half = self._split[key]
        alternative = self._value(message.height, message.round, node.name)
        for peer_name in self.everyone:
            if peer_name == node.name:
                continue
            peer = self.nodes[peer_name]
            choice = rng.random()
            if choice < 0.05:
                continue
            out: Proposal | Vote = message
            if isinstance(message, Proposal):
                if peer_name in other_half and choice < 0.85:
                    out = Proposal(message.height, message.round, -1, alternative, node.name)
                elif choice > 0.95:
                    bad = self._value(message.height, message.round, node.name, bad=True)
                    out = Proposal(
                        message.height, message.round, rng.randint(-1, message.round - 1), bad, node.name
                    )
            else:
                if choice < 0.6 and peer.height is not None and peer.height.height == message.height:
                    proposal = peer.height.proposals.get(message.round)
                    if proposal is not None:
                        out = Vote(message.kind, message.height, message.round, proposal.value, node.name)
                elif choice < 0.7:
                    out = Vote(message.kind, message.height, message.round, None, node.name)
                elif choice < 0.75:
                    bad = self._value(message.height, message.round, node.name, bad=True)
                    out = Vote(message.kind, message.height, message.round, bad, node.name)
            self._send(node.name, peer_name, out)

    def _byzantine_echo(self, target: Node, proposal: Proposal) -> None:
        """The Byzantine validators back whatever proposal an honest validator just received, with
        a prevote and a precommit to it alone (what splits the honest ones when they are too few)."""
        key = (proposal.height, proposal.round)
        if key not in self._favourite:
            self._favourite[key] = self.rng.choice(self.honest)
        for name in self.names:
            node = self.nodes[name]
            if node.byzantine and self.rng.random() < 0.8:
                self._send(
                    name, target.name, Vote(PREVOTE, proposal.height, proposal.round, proposal.value, name)
                )
                # the precommit goes only to one favourite per round most of the time: it may
                # decide while the others, locked, do not (what the lock rule is there for)
                if target.name == self._favourite[key] or self.rng.random() < 0.3:
                    self._send(
                        name,
                        target.name,
                        Vote(PRECOMMIT, proposal.height, proposal.round, proposal.value, name),
                    )

    def _byzantine_noise(self, node: Node) -> None:
        """Messages for future rounds, replays of old messages (anyone's), votes for invalid values."""
        rng = self.rng
        height = node.height
        assert height is not None
        peers = [p for p in self.names if p != node.name]
        roll = rng.random()
        if roll < 0.4 and node.seen:
            old = node.seen[rng.randrange(len(node.seen))]
            for peer in rng.sample(peers, rng.randint(1, len(peers))):
                self._send(node.name, peer, old)
        elif roll < 0.8:
            round_ = height.round + rng.randint(1, 3)
            kind = rng.choice((PREVOTE, PRECOMMIT))
            value = rng.choice((None, self._value(height.height, round_, node.name, bad=rng.random() < 0.5)))
            vote = Vote(kind, height.height, round_, value, node.name)
            for peer in rng.sample(peers, rng.randint(1, len(peers))):
                self._send(node.name, peer, vote)
        else:
            round_ = height.round + rng.randint(0, 3)
            if height.proposer(round_) == node.name:
                value = self._value(height.height, round_, node.name, bad=rng.random() < 0.5)
                proposal = Proposal(height.height, round_, rng.randint(-1, round_ - 1), value, node.name)
                for peer in rng.sample(peers, rng.randint(1, len(peers))):
                    self._send(node.name, peer, proposal)

    # -- liveness ------------------------------------------------------------------------------

    def _bound(self, first: int, last: int) -> float:
        delta = GOSSIP_S + POST_GST_DELAY
        total = WORK_SPREAD_S + delta
        for r in range(first, last + 1):
            total += (
                TIMEOUTS.of("propose", r)
                + TIMEOUTS.of(PREVOTE, r)
                + TIMEOUTS.of(PRECOMMIT, r)
                + 4 * delta
                + BUILD_S
            )
        return total

    def _set_deadline(self, number: int) -> None:
        if number in self.deadline or number > self.target:
            return
        rounds = [
            node.height.round if node.height is not None and node.height.height == number else 0
            for name in self.honest
            if (node := self.nodes[name]).up
        ]
        low, top = min(rounds, default=0), max(rounds, default=0)
        self.deadline[number] = self.now + self._bound(low, top + 2 * self.config.n + 1)
        self.anchor[number] = self.now

    def _live_honest(self) -> list[Node]:
        """The honest validators not crashed for good, and the observers."""
        names = self.honest + self.observers
        return [self.nodes[name] for name in names if not self.nodes[name].crashed_for_good]

    def _done(self) -> bool:
        return all(self.target in node.chain for node in self._live_honest())

    def _check_liveness(self) -> None:
        for number, deadline in self.deadline.items():
            if self.now > deadline:
                late = [n.name for n in self._live_honest() if number not in n.chain]
                if late:
                    self._fail(f"liveness: {late} had not decided h{number} by its deadline t={deadline:.3f}")

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> Outcome:
        violation = None
        try:
            for name in self.everyone:
                node = self.nodes[name]
                self._enter(node, 1)
                if name not in self.observers:  # an observer has nothing of its own to gossip
                    self._push(self.rng.uniform(0.0, GOSSIP_S), "gossip", (name, node.incarnation))
                if node.byzantine:
                    self._push(self.rng.uniform(0.0, 2.0), "noise", (name,))
            while self._events and not self._done():
                self.now, _, kind, payload = heapq.heappop(self._events)
                self.event_count += 1
                self._step(kind, payload)
                self._check_liveness()
            if not self._done():
                self._fail("the simulation ran out of events before every honest validator decided")
        except Violation as failure:
            violation = str(failure)
        return Outcome(
            config=self.config,
            violation=violation,
            trace_hash=self._hash.hexdigest(),
            events=self.event_count,
            virtual_s=self.now,
            gst=self.gst,
            max_round=self.max_round,
            byzantine=tuple(n for n in self.names if self.nodes[n].byzantine),
            crashed_for_good=tuple(n for n in self.names if self.nodes[n].crashed_for_good),
            observers=tuple(self.observers),
            decided=dict(sorted(self.decisions.items())),
            bound_used=self.bound_used,
        )

    def _step(self, kind: str, payload: tuple[Any, ...]) -> None:
        self._trace(self.now, kind, payload)
        if kind == "gst":
            for node in self.nodes.values():
                node.crash_on_broadcast = False
            reached = max((max(n.chain, default=0) for n in self._live_honest()), default=0)
            self.target = max(self.target, reached + 2)
            for number in sorted(self.entered):
                self._set_deadline(number)
            return
        node = self.nodes[payload[0]]
        if kind == "deliver":
            _, incarnation, _src, message = payload
            if not node.up or node.incarnation != incarnation:
                return  # in flight to a crashed validator: lost
            if isinstance(message, tuple):
                for item in message:
                    if node.height is None or not node.up:
                        return
                    if not (item.height == node.height.height and _has(node.height, item)):
                        self._receive(node, item)
            else:
                self._receive(node, message)
                if isinstance(message, Proposal) and not node.byzantine:
                    self._byzantine_echo(node, message)
        elif kind == "timer":
            _, incarnation, step, number, round_ = payload
            if node.up and node.incarnation == incarnation and node.height is not None:
                height = node.height
                self._apply(node, height, height.timeout(step, number, round_))
        elif kind == "work":
            _, incarnation, number = payload
            if node.up and node.incarnation == incarnation and node.height and node.height.height == number:
                height = node.height
                self._apply(node, height, height.work_due())
        elif kind == "build":
            _, incarnation, number, round_ = payload
            if node.up and node.incarnation == incarnation and node.height and node.height.height == number:
                height = node.height
                bad = node.byzantine and self.rng.random() < 0.3
                self._apply(node, height, height.propose(self._value(number, round_, node.name, bad=bad)))
        elif kind == "gossip":
            _, incarnation = payload
            if node.up and node.incarnation == incarnation:
                self._gossip(node)
                self._push(
                    self.now + self.rng.uniform(0.5, 1.0) * GOSSIP_S, "gossip", (node.name, incarnation)
                )
        elif kind == "noise":
            if node.height is not None:
                self._byzantine_noise(node)
            self._push(self.now + self.rng.uniform(0.2, 2.0), "noise", (node.name,))
        elif kind == "crash":
            self._crash(node, restart=payload[1])
        elif kind == "arm":
            if node.up:
                node.crash_on_broadcast = True
        elif kind == "restart":
            if not node.up:
                self._restart(node)
        if node.height is not None and node.height.round > self.max_round:
            self.max_round = node.height.round


def run(config: Config, height_factory: Callable[..., Height] = Height) -> Outcome:
    """Play one seed; never raises for a protocol failure (see :attr:`Outcome.violation`)."""
    return Simulation(config, height_factory).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Replay one seed of the consensus simulation.")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--faults", choices=FAULT_MIXES, default="mixed")
    parser.add_argument("--heights", type=int, default=5)
    parser.add_argument("--byzantine", type=int, default=None)
    parser.add_argument("--relay", choices=RELAYS, default="all")
    args = parser.parse_args(argv)
    outcome = run(Config(args.seed, args.validators, args.faults, args.heights, args.byzantine, args.relay))
    print(outcome.line())
    print(
        f"events={outcome.events} virtual={outcome.virtual_s:.1f}s gst={outcome.gst:.1f}s "
        f"max_round={outcome.max_round} byzantine={list(outcome.byzantine)} "
        f"crashed_for_good={list(outcome.crashed_for_good)} trace={outcome.trace_hash[:16]}"
    )
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
