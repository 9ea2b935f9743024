"""Agreement on one block per height among the validators: the Tendermint algorithm, as a pure state machine.

The rules are Algorithm 1 of E. Buchman, J. Kwon, Z. Milosevic, "The latest gossip on BFT
consensus" (arXiv:1807.04938v3, 2019); the line numbers in the comments are that figure's. A
validator set of n with quorum q = floor(2n/3) + 1 tolerates f = n - q faulty validators (any
behaviour) for safety and liveness. docs/ledger.md states the protocol and why it is safe.

Two adaptations, neither touching safety (which rests only on the vote rules):

- **Work due.** The chain cuts blocks only when work is due (transactions waiting, a gate closure).
  Round 0 of a height waits for it: its proposer proposes when it sees work due and the others
  start their propose timeout when *they* see work due (``work_due()``). Rounds above 0 exist only
  because a quorum timed out, so they start at once.
- **Decision without the proposal message** (line 49): a block is decided on a quorum of
  precommits of one round for its hash and the block itself, however the block arrived; the
  proposal message only serves to carry the block.

No I/O, no clock, no cryptography: the node feeds in verified messages and expired timeouts and
carries out the returned actions (sign and broadcast after persisting :meth:`Height.record`,
schedule timeouts, build a block, commit). Every peer that runs the same inputs takes the same
steps, which is what the deterministic simulation tests exercise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PROPOSE, PREVOTE, PRECOMMIT = "propose", "prevote", "precommit"
STEPS = (PROPOSE, PREVOTE, PRECOMMIT)
NIL = None


def proposer_of(validators: list[str] | tuple[str, ...], sequencer: str, round_: int) -> str:
    """The validator that proposes in ``round_``: the validators in key-id order, starting at the
    sequencer in force (the proposer of the last block, or the one governance named) and moving
    one place per round."""
    order = sorted(validators)
    base = order.index(sequencer) if sequencer in order else 0
    return order[(base + round_) % len(order)]


def max_faulty(validator_count: int, quorum: int) -> int:
    """f: how many validators may fail (in any way) without harm, for this quorum."""
    return max(validator_count - quorum, 0)


@dataclass(frozen=True)
class Timeouts:
    """Seconds before a round gives up on its proposer, its prevotes and its precommits; each
    grows by ``step_s`` per round so that, once the network is timely again, a round lasts long
    enough for the proposal and the votes to arrive (the paper's partial-synchrony argument)."""

    propose_s: float = 10.0
    prevote_s: float = 2.0
    precommit_s: float = 2.0
    step_s: float = 2.0

    def of(self, step: str, round_: int) -> float:
        base = {PROPOSE: self.propose_s, PREVOTE: self.prevote_s, PRECOMMIT: self.precommit_s}[step]
        return base + round_ * self.step_s


@dataclass(frozen=True)
class Proposal:
    height: int
    round: int
    valid_round: int
    value: str  # the block's hash, hex
    signer: str


@dataclass(frozen=True)
class Vote:
    kind: str  # PREVOTE or PRECOMMIT
    height: int
    round: int
    value: str | None  # the block's hash (hex), or None for nil
    signer: str


@dataclass(frozen=True)
class Broadcast:
    """Sign and send this message (after persisting the record)."""

    message: Proposal | Vote


@dataclass(frozen=True)
class BuildBlock:
    """This node proposes in ``round`` and has no valid block to re-propose: build a new one
    (created in this round) and pass it to :meth:`Height.propose`."""

    height: int
    round: int


@dataclass(frozen=True)
class Schedule:
    """Call :meth:`Height.timeout` with these arguments after ``delay_s`` seconds."""

    step: str
    height: int
    round: int
    delay_s: float


@dataclass(frozen=True)
class Decide:
    """``value`` is final at ``height``: the precommits of ``round`` for it are its seals."""

    height: int
    round: int
    value: str


@dataclass(frozen=True)
class Equivocation:
    """A validator sent two different messages of one kind in one round (evidence)."""

    first: Proposal | Vote
    second: Proposal | Vote


Action = Broadcast | BuildBlock | Schedule | Decide | Equivocation


@dataclass
class Height:
    """One validator's (or observer's: ``me`` None) consensus state for one height."""

    height: int
    validators: tuple[str, ...]
    quorum: int
    sequencer: str
    me: str | None
    timeouts: Timeouts = field(default_factory=Timeouts)
    # valid(value) -> bool: the node holds the block and it re-executes to its header (cached)
    valid: Callable[[str], bool] = lambda value: False
    # timely(value) -> bool: the block's time is close enough to this node's clock. Asked only of
    # a new proposal (valid_round -1, line 22): a value re-proposed with a polka keeps its time,
    # however late (as in Tendermint's proposer-based timestamps), so a lock is never stuck on it
    timely: Callable[[str], bool] = lambda value: True
    round: int = 0
    step: str = PROPOSE
    locked_value: str | None = None
    locked_round: int = -1
    valid_value: str | None = None
    valid_round: int = -1
    decided: Decide | None = None
    work_is_due: bool = False
    # message log: round -> signer -> message (the first one a signer sent)
    proposals: dict[int, Proposal] = field(default_factory=dict)
    prevotes: dict[int, dict[str, Vote]] = field(default_factory=dict)
    precommits: dict[int, dict[str, Vote]] = field(default_factory=dict)
    # (kind, round, signer) -> the one different message of that kind and round a signer sent
    # after its first (kind PROPOSE for a proposal): the evidence. A third different proposal
    # is refused, and so is a third different vote unless an honest validator voted the same
    # (:meth:`refusal`): an equivocator's votes for anything else cost nothing.
    conflicts: dict[tuple[str, int, str], Proposal | Vote] = field(default_factory=dict)
    # every vote by what it is for, an equivocator's second vote included: the paper counts
    # "2f+1 <PRECOMMIT, h, r, id(v)>" from distinct signers, whatever else they also sent
    # (kind, round) -> value -> signer -> vote
    votes_for: dict[tuple[str, int], dict[str | None, dict[str, Vote]]] = field(default_factory=dict)
    sent: dict[str, Proposal | Vote] = field(default_factory=dict)  # "<kind>:<round>" -> message
    _once: set[tuple[str, int]] = field(default_factory=set)
    _started: bool = False

    def __post_init__(self) -> None:
        self.validators = tuple(sorted(self.validators))
        self._members = frozenset(self.validators)

    # -- facts ---------------------------------------------------------------------------------

    @property
    def faulty(self) -> int:
        return max_faulty(len(self.validators), self.quorum)

    def proposer(self, round_: int) -> str:
        return proposer_of(self.validators, self.sequencer, round_)

    def is_validator(self) -> bool:
        return self.me is not None and self.me in self._members

    # -- inputs ----------------------------------------------------------------------------------

    def start(self) -> list[Action]:
        """Enter the height (line 10: StartRound(0)), or resume the recorded round after a restart."""
        self._started = True
        out: list[Action] = []
        self._enter(self.round, out, resumed=True)
        self._progress(out)
        return out

    def work_due(self) -> list[Action]:
        """The node sees work due (transactions waiting, a deadline passed): round 0 may begin."""
        out: list[Action] = []
        if self.work_is_due or self.decided is not None:
            return out
        self.work_is_due = True
        if self._started and self.round == 0 and self.step == PROPOSE:
            self._begin_propose(out)
        self._progress(out)
        return out

    def propose(self, value: str) -> list[Action]:
        """The block this node built for the round it proposes in (answer to BuildBlock)."""
        out: list[Action] = []
        if self.decided is not None or self.proposer(self.round) != self.me or self.step != PROPOSE:
            return out
        key = f"proposal:{self.round}"
        if key in self.sent:
            return out
        message = Proposal(self.height, self.round, -1, value, self.me)
        self.sent[key] = message
        out.append(Broadcast(message))
        self._take_proposal(message, out)
        self._progress(out)
        return out

    def refusal(self, message: Proposal | Vote) -> str | None:
        """Why :meth:`receive` would not keep ``message``, or None if it would: ``copy`` (a
        message kept already), ``equivocation`` (a third different message of one kind and round
        from its signer), ``other_height``, ``not_a_validator``, ``not_proposer``,
        ``bad_valid_round``. Cheap: the node asks before it checks a signature.

        Of a signer's different messages of one kind and round, the first and the second (the
        evidence) are kept, and of its other votes those for a value (or nil) that f + 1 other
        validators voted for in that kind and round, so at least one honest one: at most n - f
        values. That keeps every vote the rules may need to count: a quorum for a value holds
        q - f >= f + 1 honest votes, and the paper counts an equivocator's vote in it too (a
        validator locked on v in round r shows the prevotes of r for v, an equivocator's among
        them, to the others when v is proposed again, line 28; refused for good, they would leave
        it locked alone). One refused before f + 1 others arrived counts when it is sent again
        (a locked validator relays its polka, a peer the seals of a final block)."""
        if message.height != self.height:
            return "other_height"
        if message.signer not in self._members:
            return "not_a_validator"
        if isinstance(message, Proposal):
            if message.signer != self.proposer(message.round):
                return "not_proposer"
            if not -1 <= message.valid_round < message.round:
                return "bad_valid_round"
            other = self.conflicts.get((PROPOSE, message.round, message.signer))
            if message == self.proposals.get(message.round) or message == other:
                return "copy"
            return "equivocation" if other is not None else None
        if message.signer in self.votes_for.get((message.kind, message.round), {}).get(message.value, {}):
            return "copy"
        if (message.kind, message.round, message.signer) not in self.conflicts:
            return None
        backers = self.votes_for.get((message.kind, message.round), {}).get(message.value, {})
        return None if len(backers) > self.faulty else "equivocation"

    def receive(self, message: Proposal | Vote) -> list[Action]:
        """A message already checked for signature and membership by the node."""
        out: list[Action] = []
        if self.refusal(message) is not None:
            return out
        if isinstance(message, Proposal):
            self._take_proposal(message, out)
        else:
            self._take_vote(message, out)
        self._progress(out)
        return out

    def recheck(self) -> list[Action]:
        """Re-evaluate the rules (a block arrived whose hash a message named, so valid() changed)."""
        out: list[Action] = []
        self._progress(out)
        return out

    def timeout(self, step: str, height: int, round_: int) -> list[Action]:
        """A scheduled timeout expired (lines 57-66)."""
        out: list[Action] = []
        if height != self.height or round_ != self.round or self.decided is not None:
            return out
        if step == PROPOSE and self.step == PROPOSE:
            self._vote(PREVOTE, NIL, out)  # line 57
            self.step = PREVOTE
        elif step == PREVOTE and self.step == PREVOTE:
            self._vote(PRECOMMIT, NIL, out)  # line 61
            self.step = PRECOMMIT
        elif step == PRECOMMIT:
            self._enter(self.round + 1, out)  # line 65
        self._progress(out)
        return out

    # -- the message log -------------------------------------------------------------------------

    def _take_proposal(self, message: Proposal, out: list[Action]) -> None:
        if self.refusal(message) is not None:
            return
        first = self.proposals.get(message.round)
        if first is None:
            self.proposals[message.round] = message
        else:
            self.conflicts[(PROPOSE, message.round, message.signer)] = message
            out.append(Equivocation(first, message))

    def _take_vote(self, message: Vote, out: list[Action]) -> None:
        if self.refusal(message) is not None:
            return
        log = self.prevotes if message.kind == PREVOTE else self.precommits
        votes = log.setdefault(message.round, {})
        first = votes.get(message.signer)
        key = (message.kind, message.round, message.signer)
        if first is None:
            votes[message.signer] = message
        elif key not in self.conflicts:
            self.conflicts[key] = message
            out.append(Equivocation(first, message))
        by_value = self.votes_for.setdefault((message.kind, message.round), {})
        by_value.setdefault(message.value, {}).setdefault(message.signer, message)

    def _count(self, log: dict[int, dict[str, Vote]], round_: int, value: Any = ...) -> int:
        """Distinct signers of votes in ``round_`` (any value), or of votes for ``value``."""
        if value is ...:
            return len(log.get(round_, {}))
        kind = PREVOTE if log is self.prevotes else PRECOMMIT
        return len(self.votes_for.get((kind, round_), {}).get(value, {}))

    def seals(self, round_: int, value: str) -> list[Vote]:
        """The precommits of ``round_`` for ``value`` (a decision's seals), equivocators' included."""
        return list(self.votes_for.get((PRECOMMIT, round_), {}).get(value, {}).values())

    def _signers_in(self, round_: int) -> int:
        signers = set(self.prevotes.get(round_, {})) | set(self.precommits.get(round_, {}))
        proposal = self.proposals.get(round_)
        if proposal is not None:
            signers.add(proposal.signer)
        return len(signers)

    # -- actions ---------------------------------------------------------------------------------

    def _vote(self, kind: str, value: str | None, out: list[Action]) -> None:
        if not self.is_validator():
            return
        key = f"{kind}:{self.round}"
        if key in self.sent:  # never two votes of one kind in one round, even after a restart
            return
        assert self.me is not None
        message = Vote(kind, self.height, self.round, value, self.me)
        self.sent[key] = message
        out.append(Broadcast(message))
        self._take_vote(message, out)

    def _enter(self, round_: int, out: list[Action], *, resumed: bool = False) -> None:
        """StartRound (line 11). ``resumed``: the recorded round after a restart, same step."""
        if not resumed:
            self.round = round_
            self.step = PROPOSE
        if self.step != PROPOSE:
            return  # resumed after a prevote or precommit: the rules reschedule its timeouts
        if round_ == 0 and not self.work_is_due:
            return  # round 0 begins when work is due (see the module docstring)
        self._begin_propose(out)

    def _begin_propose(self, out: list[Action]) -> None:
        if self.proposer(self.round) == self.me and self.is_validator():
            key = f"proposal:{self.round}"
            if key in self.sent:
                return
            if self.valid_value is not None:  # line 15: re-propose what a quorum may have locked
                assert self.me is not None
                message = Proposal(self.height, self.round, self.valid_round, self.valid_value, self.me)
                self.sent[key] = message
                out.append(Broadcast(message))
                self._take_proposal(message, out)
            else:
                out.append(BuildBlock(self.height, self.round))
        else:
            out.append(Schedule(PROPOSE, self.height, self.round, self.timeouts.of(PROPOSE, self.round)))

    def _progress(self, out: list[Action]) -> None:
        """Apply the upon-rules until none fires."""
        while self.decided is None and self._step_once(out):
            pass

    def _step_once(self, out: list[Action]) -> bool:
        q, r = self.quorum, self.round
        # line 49: a quorum of precommits in any round for a block we hold and find valid
        for (kind, round_), by_value in self.votes_for.items():
            if kind != PRECOMMIT:
                continue
            for value, signers in by_value.items():
                if value is not None and len(signers) >= q and self.valid(value):
                    self.decided = Decide(self.height, round_, value)
                    out.append(self.decided)
                    return False
        # line 55: f+1 validators are in a later round: join it
        for round_ in sorted(set(self.prevotes) | set(self.precommits) | set(self.proposals)):
            if round_ > r and self._signers_in(round_) >= self.faulty + 1:
                self._enter(round_, out)
                return True
        proposal = self.proposals.get(r)
        if self.step == PROPOSE and proposal is not None:
            v, vr = proposal.value, proposal.valid_round
            if vr == -1:  # line 22
                ok = self.timely(v) and self.valid(v) and (self.locked_round == -1 or self.locked_value == v)
                self._vote(PREVOTE, v if ok else NIL, out)
                self.step = PREVOTE
                return True
            if self._count(self.prevotes, vr, v) >= q:  # line 28
                ok = self.valid(v) and (self.locked_round <= vr or self.locked_value == v)
                self._vote(PREVOTE, v if ok else NIL, out)
                self.step = PREVOTE
                return True
        prevotes_in = self._count(self.prevotes, r)
        if self.step == PREVOTE and prevotes_in >= q and ("timeout_prevote", r) not in self._once:
            self._once.add(("timeout_prevote", r))  # line 34
            out.append(Schedule(PREVOTE, self.height, r, self.timeouts.of(PREVOTE, r)))
            return True
        if (
            self.step != PROPOSE
            and proposal is not None
            and ("polka", r) not in self._once
            and self._count(self.prevotes, r, proposal.value) >= q
            and self.valid(proposal.value)
        ):
            self._once.add(("polka", r))  # line 36
            if self.step == PREVOTE:
                self.locked_value, self.locked_round = proposal.value, r
                self._vote(PRECOMMIT, proposal.value, out)
                self.step = PRECOMMIT
            self.valid_value, self.valid_round = proposal.value, r
            return True
        if self.step == PREVOTE and self._count(self.prevotes, r, NIL) >= q:  # line 44
            self._vote(PRECOMMIT, NIL, out)
            self.step = PRECOMMIT
            return True
        if self._count(self.precommits, r) >= q and ("timeout_precommit", r) not in self._once:
            self._once.add(("timeout_precommit", r))  # line 47
            out.append(Schedule(PRECOMMIT, self.height, r, self.timeouts.of(PRECOMMIT, r)))
            return True
        return False

    # -- crash recovery --------------------------------------------------------------------------

    def record(self) -> dict[str, Any]:
        """What must survive a crash before any message this node sends leaves it: the round,
        step, lock and valid value, the messages it sent, and the 2f+1 prevotes that justify the
        lock and the valid value (JSON-ready). Those prevotes are what peers need (line 28) to
        accept the valid value when this node re-proposes it; if their signers are gone, this
        node's copy may be the only one left (the paper's gossip assumes a correct process keeps
        what it received)."""
        polka: dict[Vote, None] = {}  # ordered, without repeats
        for value, round_ in ((self.locked_value, self.locked_round), (self.valid_value, self.valid_round)):
            if value is not None and round_ >= 0:
                for vote in self.votes_for.get((PREVOTE, round_), {}).get(value, {}).values():
                    polka[vote] = None
        return {
            "height": self.height,
            "round": self.round,
            "step": self.step,
            "locked": [self.locked_value, self.locked_round],
            "valid": [self.valid_value, self.valid_round],
            "work_due": self.work_is_due,
            "sent": {key: _message_dict(m) for key, m in self.sent.items()},
            "polka": [_message_dict(vote) for vote in polka],
        }

    def restore(self, record: dict[str, Any]) -> None:
        """Take back a :meth:`record` of this height (before :meth:`start`)."""
        if record.get("height") != self.height:
            return
        self.round = int(record["round"])
        self.step = record["step"] if record["step"] in STEPS else PROPOSE
        self.locked_value, self.locked_round = record["locked"][0], int(record["locked"][1])
        self.valid_value, self.valid_round = record["valid"][0], int(record["valid"][1])
        self.work_is_due = bool(record.get("work_due"))
        self.sent = {key: _message_from_dict(m) for key, m in record["sent"].items()}
        for message in self.sent.values():
            if isinstance(message, Proposal):
                self.proposals.setdefault(message.round, message)
            else:
                self._take_vote(message, [])
        for data in record.get("polka", []):
            vote = _message_from_dict(data)
            if isinstance(vote, Vote) and vote.height == self.height and vote.signer in self._members:
                self._take_vote(vote, [])


def _message_dict(message: Proposal | Vote) -> dict[str, Any]:
    if isinstance(message, Proposal):
        return {
            "kind": "proposal",
            "height": message.height,
            "round": message.round,
            "valid_round": message.valid_round,
            "value": message.value,
            "signer": message.signer,
        }
    return {
        "kind": message.kind,
        "height": message.height,
        "round": message.round,
        "value": message.value,
        "signer": message.signer,
    }


def _message_from_dict(data: dict[str, Any]) -> Proposal | Vote:
    if data["kind"] == "proposal":
        return Proposal(data["height"], data["round"], data["valid_round"], data["value"], data["signer"])
    return Vote(data["kind"], data["height"], data["round"], data["value"], data["signer"])
