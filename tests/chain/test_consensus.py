"""The upon-rules of chain/consensus.py one at a time, each against Algorithm 1 of Buchman, Kwon,
Milosevic, "The latest gossip on BFT consensus" (arXiv:1807.04938); line numbers are the paper's.

The validator under test is v0 of v0..v3 (n = 4, quorum 3, f = 1) unless a test says otherwise.
"""

from __future__ import annotations

from chain.consensus import (
    NIL,
    PRECOMMIT,
    PREVOTE,
    PROPOSE,
    Broadcast,
    BuildBlock,
    Decide,
    Equivocation,
    Height,
    Proposal,
    Schedule,
    Timeouts,
    Vote,
    max_faulty,
    proposer_of,
)

VALIDATORS = ("v0", "v1", "v2", "v3")
T = Timeouts(propose_s=10.0, prevote_s=2.0, precommit_s=3.0, step_s=1.0)


def valid(value: str) -> bool:
    return not value.startswith("bad")


def height(me: str | None = "v0", sequencer: str = "v1", *, work: bool = True, **kw) -> Height:
    """A started Height 1 at round 0 (v1 proposes round 0, v2 round 1, v3 round 2, v0 round 3)."""
    h = Height(1, VALIDATORS, 3, sequencer, me, T, kw.pop("valid", valid), **kw)
    h.start()
    if work:
        h.work_due()
    return h


def prevote(signer: str, value: str | None, round_: int = 0) -> Vote:
    return Vote(PREVOTE, 1, round_, value, signer)


def precommit(signer: str, value: str | None, round_: int = 0) -> Vote:
    return Vote(PRECOMMIT, 1, round_, value, signer)


def sent(actions) -> list:
    return [a.message for a in actions if isinstance(a, Broadcast)]


def feed(h: Height, *messages) -> list:
    out = []
    for m in messages:
        out += h.receive(m)
    return out


def test_decides_on_a_quorum_of_precommits_counting_an_equivocators_other_vote():
    """Line 49 counts 2f+1 <PRECOMMIT, h, r, id(v)> from distinct signers. A Byzantine validator
    that sent us nil first and v later (relayed by a peer that it sent v to) still counts for v:
    seeing its nil first must not keep us from the decision the others made (found by the
    simulation, seed=81 n=4 faults=mixed: the lagging validator never decided)."""
    h = height()
    out = feed(h, precommit("v3", NIL), precommit("v1", "blk"), precommit("v2", "blk"))
    assert not any(isinstance(a, Decide) for a in out)
    out = h.receive(precommit("v3", "blk"))
    assert any(isinstance(a, Equivocation) for a in out)
    assert Decide(1, 0, "blk") in out
    assert sorted(v.signer for v in h.seals(0, "blk")) == ["v1", "v2", "v3"]


def test_a_polka_counts_an_equivocators_other_prevote_for_a_reproposal():
    """Line 28: the 2f+1 prevotes of vr for v may include a Byzantine validator's second prevote."""
    h = height()
    feed(h, prevote("v3", NIL), prevote("v1", "blk"), prevote("v2", "blk"), prevote("v3", "blk"))
    h.timeout(PROPOSE, 1, 0)
    h.timeout(PRECOMMIT, 1, 0)  # the precommit timeout of round 0 (line 65): round 1, v2 proposes
    assert (h.round, h.step) == (1, PROPOSE)
    out = h.receive(Proposal(1, 1, 0, "blk", "v2"))
    assert sent(out) == [prevote("v0", "blk", 1)]
