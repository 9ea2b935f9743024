"""The upon-rules of chain/consensus.py one at a time, each against Algorithm 1 of Buchman, Kwon,
Milosevic, "The latest gossip on BFT consensus" (arXiv:1807.04938); line numbers are the paper's.

The validator under test is v0 of v0..v3 (n = 4, quorum 3, f = 1) unless a test says otherwise.
"""

from __future__ import annotations

import json

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


def test_a_polka_counts_an_equivocators_third_prevote_once_f_plus_1_others_back_its_value():
    """The Byzantine v3 sent us two other prevotes of round 0 first; its prevote for blk, relayed
    by a validator locked on blk, still completes the polka that line 28 needs."""
    h = height()
    feed(h, prevote("v3", NIL), prevote("v3", "junk"), prevote("v1", "blk"), prevote("v2", "blk"))
    h.receive(prevote("v3", "blk"))
    h.timeout(PROPOSE, 1, 0)
    h.timeout(PRECOMMIT, 1, 0)
    out = h.receive(Proposal(1, 1, 0, "blk", "v2"))
    assert sent(out) == [prevote("v0", "blk", 1)]


def test_a_polka_counts_an_equivocators_other_prevote_for_a_reproposal():
    """Line 28: the 2f+1 prevotes of vr for v may include a Byzantine validator's second prevote."""
    h = height()
    feed(h, prevote("v3", NIL), prevote("v1", "blk"), prevote("v2", "blk"), prevote("v3", "blk"))
    h.timeout(PROPOSE, 1, 0)
    h.timeout(PRECOMMIT, 1, 0)  # the precommit timeout of round 0 (line 65): round 1, v2 proposes
    assert (h.round, h.step) == (1, PROPOSE)
    out = h.receive(Proposal(1, 1, 0, "blk", "v2"))
    assert sent(out) == [prevote("v0", "blk", 1)]


# -- facts ---------------------------------------------------------------------------------------


def test_proposers_rotate_from_the_sequencer_in_key_order_and_f_is_n_minus_quorum():
    assert [proposer_of(("v2", "v0", "v1", "v3"), "v2", r) for r in range(5)] == [
        "v2",
        "v3",
        "v0",
        "v1",
        "v2",
    ]
    assert proposer_of(VALIDATORS, "gone", 1) == "v1"  # unknown sequencer: start at the first
    assert [max_faulty(n, n * 2 // 3 + 1) for n in (1, 3, 4, 7, 10)] == [0, 0, 1, 2, 3]
    assert T.of(PROPOSE, 0) == 10.0 and T.of(PREVOTE, 2) == 4.0 and T.of(PRECOMMIT, 3) == 6.0


# -- StartRound (lines 11-21) and the work-due adaptation ---------------------------------------


def test_round_0_waits_for_work_due_then_the_proposer_builds_a_block():
    h = Height(1, VALIDATORS, 3, "v0", "v0", T, valid)
    assert h.start() == []
    assert h.work_due() == [BuildBlock(1, 0)]  # line 17: getValue()
    assert h.work_due() == []


def test_round_0_waits_for_work_due_then_a_non_proposer_starts_its_propose_timeout():
    h = Height(1, VALIDATORS, 3, "v1", "v0", T, valid)
    assert h.start() == []
    assert h.work_due() == [Schedule(PROPOSE, 1, 0, 10.0)]  # line 21


def test_propose_broadcasts_the_proposal_and_the_proposers_own_prevote():
    h = Height(1, VALIDATORS, 3, "v0", "v0", T, valid)
    h.start()
    h.work_due()
    out = h.propose("blk")
    assert sent(out) == [Proposal(1, 0, -1, "blk", "v0"), prevote("v0", "blk")]  # lines 19, 22-24
    assert h.propose("other") == []  # one proposal per round
    assert h.step == PREVOTE


def test_a_later_round_starts_at_once_and_its_proposer_reproposes_its_valid_value():
    """Lines 14-16: validValue_p is proposed again, with validRound_p."""
    h = height(me="v2")  # v2 proposes round 1
    h.receive(Proposal(1, 0, -1, "blk", "v1"))
    feed(h, prevote("v1", "blk"), prevote("v3", "blk"))  # polka with v2's own prevote
    assert (h.valid_value, h.valid_round) == ("blk", 0)
    out = h.timeout(PRECOMMIT, 1, 0)  # line 65
    assert Proposal(1, 1, 0, "blk", "v2") in sent(out)
    assert not any(isinstance(a, BuildBlock) for a in out)


# -- line 22: a fresh proposal -------------------------------------------------------------------


def test_line_22_prevotes_a_valid_proposal_when_unlocked():
    h = height()
    assert sent(h.receive(Proposal(1, 0, -1, "blk", "v1"))) == [prevote("v0", "blk")]
    assert h.step == PREVOTE


def test_line_22_prevotes_nil_for_an_invalid_proposal():
    h = height()
    assert sent(h.receive(Proposal(1, 0, -1, "bad", "v1"))) == [prevote("v0", NIL)]


def test_line_22_prevotes_nil_for_a_new_proposal_that_is_not_timely():
    # a block dated too far behind this node's clock (chain.engine.Ledger.check_timely); its
    # re-execution is not even asked
    asked = []
    h = height(valid=lambda v: asked.append(v) or True, timely=lambda v: v != "old")
    assert sent(h.receive(Proposal(1, 0, -1, "old", "v1"))) == [prevote("v0", NIL)]
    assert asked == []


def test_line_28_prevotes_a_reproposal_with_its_polka_however_late_its_time():
    # a value a quorum may have locked keeps its time: timeliness is asked of new proposals only
    h = _round_1_with_polka(timely=lambda v: False)
    feed(h, prevote("v1", "blk"), prevote("v2", "blk"), prevote("v3", "blk"))
    assert sent(h.receive(Proposal(1, 1, 0, "blk", "v2"))) == [prevote("v0", "blk", 1)]


def test_line_22_prevotes_nil_when_locked_on_another_value_and_v_when_locked_on_it():
    for proposed, expected in (("other", NIL), ("blk", "blk")):
        h = height()
        h.locked_value, h.locked_round = "blk", 0
        h.round, h.step = 1, PROPOSE
        assert sent(h.receive(Proposal(1, 1, -1, proposed, "v2"))) == [prevote("v0", expected, 1)]


def test_line_22_ignores_a_proposal_from_anyone_but_the_rounds_proposer():
    h = height()
    assert h.receive(Proposal(1, 0, -1, "blk", "v2")) == []
    assert h.step == PROPOSE and 0 not in h.proposals


def test_line_22_acts_only_in_the_propose_step():
    h = height()
    h.timeout(PROPOSE, 1, 0)  # prevoted nil already
    assert sent(h.receive(Proposal(1, 0, -1, "blk", "v1"))) == []


# -- line 28: a re-proposal citing a polka of validRound -----------------------------------------


def _round_1_with_polka(locked: tuple[str | None, int] = (None, -1), **kw) -> Height:
    h = height(**kw)
    h.timeout(PROPOSE, 1, 0)
    h.timeout(PRECOMMIT, 1, 0)  # round 1, v2 proposes
    h.locked_value, h.locked_round = locked
    return h


def test_line_28_prevotes_v_when_the_polka_of_vr_is_seen_and_the_lock_is_not_newer():
    h = _round_1_with_polka(locked=("other", 0))  # lockedRound 0 <= vr 0
    assert h.receive(Proposal(1, 1, 0, "blk", "v2")) == []  # waits for 2f+1 prevotes of round 0
    out = feed(h, prevote("v1", "blk"), prevote("v2", "blk"), prevote("v3", "blk"))
    assert sent(out) == [prevote("v0", "blk", 1)]


def test_line_28_prevotes_nil_when_locked_on_another_value_in_a_later_round_than_vr():
    h = _round_1_with_polka()
    h.timeout(PROPOSE, 1, 1)
    h.timeout(PRECOMMIT, 1, 1)  # round 2, v3 proposes
    h.locked_value, h.locked_round = "other", 1
    feed(h, prevote("v1", "blk"), prevote("v2", "blk"), prevote("v3", "blk"))
    assert sent(h.receive(Proposal(1, 2, 0, "blk", "v3"))) == [prevote("v0", NIL, 2)]


def test_line_28_prevotes_nil_for_an_invalid_value_even_with_its_polka():
    h = _round_1_with_polka()
    feed(h, prevote("v1", "bad"), prevote("v2", "bad"), prevote("v3", "bad"))
    assert sent(h.receive(Proposal(1, 1, 0, "bad", "v2"))) == [prevote("v0", NIL, 1)]


def test_a_proposal_whose_valid_round_is_not_below_its_round_is_ignored():
    h = height()
    assert h.receive(Proposal(1, 0, 0, "blk", "v1")) == []
    assert 0 not in h.proposals


# -- line 34: 2f+1 prevotes of any kind ----------------------------------------------------------


def test_line_34_schedules_the_prevote_timeout_once_on_2f_plus_1_prevotes():
    h = height()
    h.receive(Proposal(1, 0, -1, "blk", "v1"))  # prevote blk, step prevote
    out = feed(h, prevote("v1", NIL), prevote("v2", "x"))
    assert Schedule(PREVOTE, 1, 0, 2.0) in out
    assert not any(isinstance(a, Schedule) for a in h.receive(prevote("v3", "y")))


def test_line_34_needs_the_prevote_step():
    h = height()
    out = feed(h, prevote("v1", NIL), prevote("v2", "x"), prevote("v3", "y"))
    assert not any(isinstance(a, Schedule) for a in out)


# -- line 36: a polka for the round's proposal ---------------------------------------------------


def test_line_36_locks_and_precommits_on_a_polka_in_the_prevote_step():
    h = height()
    h.receive(Proposal(1, 0, -1, "blk", "v1"))
    out = feed(h, prevote("v1", "blk"), prevote("v2", "blk"))
    assert precommit("v0", "blk") in sent(out)
    assert (h.locked_value, h.locked_round, h.valid_value, h.valid_round) == ("blk", 0, "blk", 0)
    assert h.step == PRECOMMIT


def test_line_36_locks_even_after_prevoting_nil():
    """Line 36 needs step = prevote, not a prevote for v: a validator locked elsewhere may lock v."""
    h = height()
    h.timeout(PROPOSE, 1, 0)  # prevote nil
    h.receive(Proposal(1, 0, -1, "blk", "v1"))
    out = feed(h, prevote("v1", "blk"), prevote("v2", "blk"), prevote("v3", "blk"))
    assert sent(out) == [precommit("v0", "blk")]
    assert h.locked_value == "blk"


def test_line_36_in_the_precommit_step_only_updates_the_valid_value():
    h = height()
    h.receive(Proposal(1, 0, -1, "blk", "v1"))
    h.timeout(PREVOTE, 1, 0)  # precommit nil
    out = feed(h, prevote("v1", "blk"), prevote("v2", "blk"))
    assert sent(out) == []
    assert (h.locked_value, h.valid_value, h.valid_round) == (None, "blk", 0)


def test_line_36_needs_the_proposal_and_a_valid_value():
    h = height()
    h.timeout(PROPOSE, 1, 0)
    out = feed(h, prevote("v1", "blk"), prevote("v2", "blk"), prevote("v3", "blk"))
    assert precommit("v0", "blk") not in sent(out) and h.locked_value is None
    h2 = height()
    h2.receive(Proposal(1, 0, -1, "bad", "v1"))
    out = feed(h2, prevote("v1", "bad"), prevote("v2", "bad"), prevote("v3", "bad"))
    assert precommit("v0", "bad") not in sent(out) and h2.locked_value is None


# -- line 44: 2f+1 nil prevotes ------------------------------------------------------------------


def test_line_44_precommits_nil_on_2f_plus_1_nil_prevotes():
    h = height()
    h.timeout(PROPOSE, 1, 0)  # own nil prevote
    out = feed(h, prevote("v1", NIL), prevote("v2", NIL))
    assert sent(out) == [precommit("v0", NIL)]
    assert h.step == PRECOMMIT


# -- line 47: 2f+1 precommits of any kind --------------------------------------------------------


def test_line_47_schedules_the_precommit_timeout_once_in_any_step():
    h = height()
    out = feed(h, precommit("v1", NIL), precommit("v2", "x"), precommit("v3", "y"))
    assert [a for a in out if isinstance(a, Schedule)] == [Schedule(PRECOMMIT, 1, 0, 3.0)]
    assert h.step == PROPOSE


# -- line 49: decision ---------------------------------------------------------------------------


def test_line_49_decides_on_2f_plus_1_precommits_of_any_round_without_the_proposal():
    """The adaptation: the block may have come by any path; valid() says we hold it."""
    h = height()
    out = feed(h, precommit("v1", "blk", 4), precommit("v2", "blk", 4))
    assert not any(isinstance(a, Decide) for a in out)
    out = h.receive(precommit("v3", "blk", 4))
    assert out[-1] == Decide(1, 4, "blk") and h.decided == Decide(1, 4, "blk")
    assert h.receive(prevote("v1", "x", 5)) == [] and h.timeout(PRECOMMIT, 1, h.round) == []


def test_line_49_waits_for_a_valid_block_and_recheck_decides_when_it_arrives():
    held: set[str] = set()
    h = height(valid=lambda v: v in held)
    out = feed(h, precommit("v1", "blk"), precommit("v2", "blk"), precommit("v3", "blk"))
    assert not any(isinstance(a, Decide) for a in out)
    held.add("blk")
    assert h.recheck() == [Decide(1, 0, "blk")]


def test_line_49_never_decides_nil():
    h = height()
    out = feed(h, precommit("v1", NIL), precommit("v2", NIL), precommit("v3", NIL))
    assert not any(isinstance(a, Decide) for a in out)


# -- line 55: round skip -------------------------------------------------------------------------


def test_line_55_joins_a_later_round_on_f_plus_1_signers_of_any_message_there():
    h = height()
    h.receive(prevote("v2", "x", 3))  # f = 1 signer: not yet
    assert h.round == 0
    out = h.receive(precommit("v3", NIL, 3))
    assert h.round == 3 and h.step == PROPOSE
    assert Proposal(1, 3, -1, "x", "v0") not in sent(out)
    assert out == [BuildBlock(1, 3)]  # v0 proposes round 3 (sequencer v1 + 3)


def test_line_55_counts_a_proposal_signer_once():
    h = height()
    h.receive(Proposal(1, 2, -1, "x", "v3"))
    h.receive(prevote("v3", "x", 2))
    assert h.round == 0
    h.receive(prevote("v1", "x", 2))
    assert h.round == 2


# -- timeouts (lines 57-66) ----------------------------------------------------------------------


def test_line_57_timeout_propose_prevotes_nil_only_in_its_round_and_step():
    h = height()
    assert h.timeout(PROPOSE, 1, 1) == [] and h.timeout(PROPOSE, 2, 0) == []
    assert sent(h.timeout(PROPOSE, 1, 0)) == [prevote("v0", NIL)]
    assert h.timeout(PROPOSE, 1, 0) == []


def test_line_61_timeout_prevote_precommits_nil_only_in_the_prevote_step():
    h = height()
    assert h.timeout(PREVOTE, 1, 0) == []  # still in propose
    h.timeout(PROPOSE, 1, 0)
    assert sent(h.timeout(PREVOTE, 1, 0)) == [precommit("v0", NIL)]
    assert h.timeout(PREVOTE, 1, 0) == []


def test_line_65_timeout_precommit_starts_the_next_round():
    h = height()
    out = h.timeout(PRECOMMIT, 1, 0)
    assert (h.round, h.step) == (1, PROPOSE)
    assert out == [Schedule(PROPOSE, 1, 1, 11.0)]  # timeouts grow per round
    assert h.timeout(PRECOMMIT, 1, 0) == []  # stale


# -- one vote per kind per round, crash recovery, evidence, observers ----------------------------


def test_record_is_json_and_a_restored_validator_never_votes_twice_in_a_round():
    h = height()
    h.receive(Proposal(1, 0, -1, "blk", "v1"))
    feed(h, prevote("v1", "blk"), prevote("v2", "blk"))  # locked, precommitted blk
    record = json.loads(json.dumps(h.record()))
    again = Height(1, VALIDATORS, 3, "v1", "v0", T, valid)
    again.restore(record)
    again.start()
    assert (again.round, again.step, again.locked_value, again.locked_round) == (0, PRECOMMIT, "blk", 0)
    assert again.timeout(PREVOTE, 1, 0) == []  # would be a nil precommit: already sent blk
    assert again.timeout(PROPOSE, 1, 0) == []
    again.timeout(PRECOMMIT, 1, 0)
    # the lock survived the restart (line 22): nil for another value in round 1
    assert sent(again.receive(Proposal(1, 1, -1, "other", "v2"))) == [prevote("v0", NIL, 1)]


def test_a_restored_validator_resends_nothing_it_already_sent():
    h = height()
    h.receive(Proposal(1, 0, -1, "blk", "v1"))  # prevoted blk
    again = Height(1, VALIDATORS, 3, "v1", "v0", T, valid)
    again.restore(h.record())
    assert again.start() == []  # in the prevote step: waits for 2f+1 prevotes (line 34)
    assert again.receive(Proposal(1, 0, -1, "blk", "v1")) == []
    assert sent(again.timeout(PREVOTE, 1, 0)) == [precommit("v0", NIL)]


def test_the_record_keeps_the_polka_of_the_lock_so_a_reproposal_can_still_be_accepted():
    """v0 locked blk in round 0 on the prevotes of v1, v2 and v3; v3 then dies for good and v0
    restarts. When v2 re-proposes blk with validRound 0 (line 16), line 28 needs 2f+1 prevotes of
    round 0 for blk: v0's record must still hold them (and gossip them), or no correct validator
    can ever show that polka again and the locked validators refuse everything else forever
    (found by the simulation, seed=606 n=4 faults=crash)."""
    h = height()
    h.receive(Proposal(1, 0, -1, "blk", "v1"))
    feed(h, prevote("v1", "blk"), prevote("v3", "blk"))
    assert h.locked_round == 0
    again = Height(1, VALIDATORS, 3, "v1", "v0", T, valid)
    again.restore(json.loads(json.dumps(h.record())))
    again.start()
    assert sorted(v.signer for v in again.votes_for[(PREVOTE, 0)]["blk"].values()) == ["v0", "v1", "v3"]
    again.timeout(PRECOMMIT, 1, 0)  # round 1, v2 proposes
    assert sent(again.receive(Proposal(1, 1, 0, "blk", "v2"))) == [prevote("v0", "blk", 1)]


def test_restore_ignores_the_record_of_another_height():
    h = height()
    h.timeout(PROPOSE, 1, 0)
    other = Height(2, VALIDATORS, 3, "v1", "v0", T, valid)
    other.restore(h.record())
    assert other.sent == {} and other.round == 0


def test_a_second_different_message_of_one_kind_and_round_is_evidence():
    h = height()
    h.receive(prevote("v2", "x"))
    out = h.receive(prevote("v2", "y"))
    assert out[0] == Equivocation(prevote("v2", "x"), prevote("v2", "y"))
    h.receive(Proposal(1, 0, -1, "a", "v1"))
    assert Equivocation(Proposal(1, 0, -1, "a", "v1"), Proposal(1, 0, -1, "b", "v1")) in h.receive(
        Proposal(1, 0, -1, "b", "v1")
    )
    assert h.receive(prevote("v2", "x")) == []  # a duplicate is no evidence


def test_a_third_different_message_of_one_kind_and_round_is_refused_and_not_kept():
    """The first message and the evidence are kept (both count, line 49); a third vote only when
    f + 1 others voted the same (an honest one among them), so one equivocator cannot grow the
    log: a QA pass's 3,000 prevotes of one round grew a node by 64 MB."""
    h = height()
    assert h.refusal(prevote("v2", "x")) is None
    h.receive(prevote("v2", "x"))
    assert h.refusal(prevote("v2", "x")) == "copy"
    h.receive(prevote("v2", "y"))
    assert h.refusal(prevote("v2", "y")) == "copy"
    assert h.receive(prevote("v2", "y")) == []  # a copy of the evidence is no new evidence
    assert h.refusal(prevote("v2", "z")) == "equivocation"
    assert h.receive(prevote("v2", "z")) == []
    assert sorted(v for v, signers in h.votes_for[(PREVOTE, 0)].items() if "v2" in signers) == ["x", "y"]
    h.receive(prevote("v1", "z"))
    assert h.refusal(prevote("v2", "z")) == "equivocation"  # f = 1 other: maybe only Byzantine ones
    h.receive(prevote("v3", "z"))
    assert h.receive(prevote("v2", "z")) == []  # kept, no new evidence
    assert sorted(h.votes_for[(PREVOTE, 0)]["z"]) == ["v1", "v2", "v3"]
    assert h.refusal(precommit("v2", "z")) is None  # another kind
    assert h.refusal(prevote("v2", "z", round_=1)) is None  # another round
    h.receive(Proposal(1, 0, -1, "a", "v1"))
    h.receive(Proposal(1, 0, -1, "b", "v1"))
    assert h.refusal(Proposal(1, 0, -1, "c", "v1")) == "equivocation"
    assert h.refusal(Proposal(1, 0, -1, "c", "v2")) == "not_proposer"
    assert h.refusal(Proposal(1, 1, 1, "c", "v2")) == "bad_valid_round"
    assert h.refusal(prevote("v9", "x")) == "not_a_validator"
    assert h.refusal(Vote(PREVOTE, 2, 0, "x", "v1")) == "other_height"


def test_messages_of_other_heights_and_non_members_are_ignored():
    h = height()
    assert h.receive(Vote(PREVOTE, 2, 0, "x", "v1")) == []
    assert h.receive(prevote("v9", "x")) == []
    assert h.prevotes == {}


def test_an_observer_follows_and_decides_but_never_sends():
    h = height(me=None)
    out = h.receive(Proposal(1, 0, -1, "blk", "v1"))
    out += feed(h, prevote("v1", "blk"), prevote("v2", "blk"), prevote("v3", "blk"))
    out += feed(h, precommit("v1", "blk"), precommit("v2", "blk"), precommit("v3", "blk"))
    assert sent(out) == [] and h.decided == Decide(1, 0, "blk")
