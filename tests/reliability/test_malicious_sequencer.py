"""A malicious proposer, built from the real engine: it proposes blocks with a dropped
transaction, a wrong clearing, a wrong balance, a re-ordered history, and two different blocks in
one round. Validators (``Ledger.seal``, which re-executes through ``Ledger.validate``) refuse to
seal each; the double proposal is an ``Equivocation`` the consensus reports while it votes only
for the first; a block without its quorum cannot be committed, and no balance on any validator
moves.
"""

from __future__ import annotations

import pytest

from chain import consensus
from chain.block import Block, header_hash, result_root, tx_root
from chain.envelope import sign_envelope
from chain.execute import InvalidBlock
from chain.state import copy_state, state_root
from market.app import MarketApp
from tests.support.localnet import LocalCommunity, make_community
from tests.support.market_ledger import I1, PARAMS, T0, opening_orders, order, reading, reading_values

pytestmark = pytest.mark.reliability


def community(tmp_path, stage: str) -> LocalCommunity:
    """Three validators (quorum 3); validator-0 is the (soon malicious) sequencer.

    stage "open": nothing traded yet; "ordered": the orders for I1 are final, gate closure is
    next; "cleared": trades are final, the readings that settle them are next."""
    c = make_community(validators=3, members=4, app="market", app_params=PARAMS, time=T0)
    c.open_ledgers(tmp_path, MarketApp)
    if stage in ("ordered", "cleared"):
        t = T0 + 10
        c.run_block(opening_orders(c, t), t)
    if stage == "cleared":
        c.run_block([], I1 - 300)
    return c


def settlement_readings(c: LocalCommunity, t: int) -> list:
    txs = []
    for m in range(4):
        start_imp, start_exp, end_imp, end_exp = reading_values(m)
        txs.append(reading(c, m, I1 - 900, start_imp, start_exp, t))
        txs.append(reading(c, m, I1, end_imp, end_exp, t))
    return txs


def snapshot(c: LocalCommunity) -> list[tuple]:
    """What must not move on any validator: height, head, state root and every balance."""
    return [
        (ledger.height, ledger.head_hash, state_root(ledger.state), dict(ledger.state["app"]["balances"]))
        for ledger in c.ledgers
    ]


def refused_by_every_validator(c: LocalCommunity, block: Block, reason: str, now: int) -> None:
    for index in (1, 2):
        with pytest.raises(InvalidBlock) as info:
            c.ledgers[index].seal(block, c.validators[index].key, now=now)
        assert info.value.reason == reason


def cannot_commit(c: LocalCommunity, block: Block, now: int) -> None:
    """Even with the sequencer's own seal (all it can get), no validator commits the block."""
    own = sign_envelope(
        c.validators[0].key,
        type="seal",
        community=c.community,
        seq=block.height,
        body={"height": block.height, "round": 0, "header": block.hash.hex()},
        created=now,
    )
    for ledger in c.ledgers[1:]:
        with pytest.raises(InvalidBlock):
            ledger.commit(block, [own])


def with_header(block: Block, **changes) -> Block:
    return Block(dict(block.header, **changes), list(block.txs), list(block.results))


def test_dropped_transaction(tmp_path):
    c = community(tmp_path, "open")
    t = T0 + 20
    honest = c.ledgers[0].propose(
        [order(c, 0, "sell", 700, 90_000, t), order(c, 2, "buy", 700, 200_000, t)], t
    )
    before = snapshot(c)
    dropped = Block(dict(honest.header), honest.txs[:1], honest.results)  # header still commits to 2
    refused_by_every_validator(c, dropped, "bad_tx_root", t)
    # the sequencer also fixes tx_root: the results still name the dropped order
    rerooted = with_header(dropped, tx_root=tx_root([honest.txs[0].tx_hash]).hex())
    refused_by_every_validator(c, rerooted, "bad_results", t)
    # and if it fixes the results too, the state root (the book) gives it away
    partial = [r for r in honest.results if r.get("index", 0) == 0]
    hidden = Block(dict(rerooted.header, result_root=result_root(partial).hex()), honest.txs[:1], partial)
    refused_by_every_validator(c, hidden, "bad_state_root", t)
    for bad in (dropped, rerooted, hidden):
        cannot_commit(c, bad, t)
    assert snapshot(c) == before


def test_wrong_clearing(tmp_path):
    c = community(tmp_path, "ordered")
    now = I1 - 300
    honest = c.ledgers[0].propose([], now)
    clearing = next(r for r in honest.results if r["kind"] == "clearing")
    assert clearing["price"] == 95_000
    before = snapshot(c)
    forged = []
    for result in honest.results:
        if result["kind"] in ("clearing", "trade"):
            result = dict(result, price=result["price"] + 20_000)  # a better price for the sellers
        forged.append(result)
    bad = Block(dict(honest.header, result_root=result_root(forged).hex()), [], forged)
    refused_by_every_validator(c, bad, "bad_results", now)
    # or the clearing left out entirely: trades nobody cleared
    skipped = [r for r in honest.results if r["kind"] != "clearing"]
    bad_too = Block(dict(honest.header, result_root=result_root(skipped).hex()), [], skipped)
    refused_by_every_validator(c, bad_too, "bad_results", now)
    cannot_commit(c, bad, now)
    assert snapshot(c) == before
    # the honest block still goes through afterwards
    seals = [c.ledgers[i].seal(honest, c.validators[i].key, now=now) for i in range(3)]
    for ledger in c.ledgers:
        ledger.commit(honest, seals)
    assert all(ledger.height == honest.height for ledger in c.ledgers)


def test_wrong_balance(tmp_path):
    c = community(tmp_path, "cleared")
    t = I1 + 900 + 5
    sequencer = c.ledgers[0]
    honest = sequencer.propose(settlement_readings(c, t), t)
    balances = [r for r in honest.results if r["kind"] == "balance"]
    assert balances and any(r["delta"] for r in balances)
    before = snapshot(c)
    # 1. an edited balance result (result_root recomputed to match)
    forged = [dict(r, delta=r["delta"] + 50_000) if r is balances[0] else r for r in honest.results]
    edited = Block(dict(honest.header, result_root=result_root(forged).hex()), honest.txs, forged)
    refused_by_every_validator(c, edited, "bad_results", t)
    # 2. honest results, but a state root over a state in which a household holds more money
    execution = sequencer.validate(honest)
    state = copy_state(execution.state)
    account = balances[0]["account"]
    state["app"]["balances"][account] += 50_000
    rich = with_header(honest, state_root=state_root(state).hex())
    refused_by_every_validator(c, rich, "bad_state_root", t)
    for bad in (edited, rich):
        cannot_commit(c, bad, t)
    assert snapshot(c) == before
    assert all(sum(ledger.state["app"]["balances"].values()) == 0 for ledger in c.ledgers)


def test_reordered_history(tmp_path):
    c = community(tmp_path, "cleared")
    t = I1 + 900 + 5
    sequencer = c.ledgers[0]
    honest = sequencer.propose(settlement_readings(c, t), t)
    before = snapshot(c)
    older = sequencer.store.header(sequencer.height - 1)
    # a block that links to an older head (forking off history), one that skips a height, one
    # that rewrites the last final height, and one dated before its predecessor
    cases = {
        "wrong_prev": with_header(honest, prev=header_hash(older).hex()),
        "wrong_height": with_header(honest, height=honest.height + 1),
        "time_backwards": with_header(honest, time=sequencer.head["time"] - 1),
    }
    for reason, bad in cases.items():
        refused_by_every_validator(c, bad, reason, t)
    # rewriting the last final height: a final block is never voted on again
    rewrite = with_header(honest, height=sequencer.height, prev=header_hash(older).hex())
    refused_by_every_validator(c, rewrite, "wrong_height", t)
    # transactions in another order than the sequencer's proposal: same tx set, other root
    swapped = list(reversed(honest.txs))
    reordered = Block(dict(honest.header), swapped, honest.results)
    refused_by_every_validator(c, reordered, "bad_tx_root", t)
    assert snapshot(c) == before


def test_two_blocks_in_one_round(tmp_path):
    c = community(tmp_path, "open")
    t = T0 + 20
    sequencer = c.ledgers[0]
    block_a = sequencer.propose([order(c, 0, "sell", 700, 90_000, t)], t)
    block_b = sequencer.propose([order(c, 2, "buy", 700, 200_000, t)], t)
    assert block_a.height == block_b.height and block_a.hash != block_b.hash
    before = snapshot(c)
    # each validator's consensus takes the first proposal of the round, reports the second
    ids = [v.id for v in c.validators]
    me = ids[1]
    blocks = {block_a.hash.hex(): block_a, block_b.hash.hex(): block_b}
    height = consensus.Height(
        block_a.height, tuple(ids), 3, sequencer.sequencer(), me, valid=lambda v: v in blocks
    )
    height.start()
    proposer = height.proposer(0)
    first = height.receive(consensus.Proposal(block_a.height, 0, -1, block_a.hash.hex(), proposer))
    second = height.receive(consensus.Proposal(block_a.height, 0, -1, block_b.hash.hex(), proposer))
    prevotes = [a.message for a in first if isinstance(a, consensus.Broadcast)]
    assert [(m.kind, m.value) for m in prevotes] == [("prevote", block_a.hash.hex())]
    assert [type(a) for a in second] == [consensus.Equivocation]
    # the proposer signs seals of both headers in one round itself: two valid seals are proof
    seals = [
        sign_envelope(
            c.validators[0].key,
            type="seal",
            community=c.community,
            seq=b.height,
            body={"height": b.height, "round": 0, "header": b.hash.hex()},
            created=t,
        )
        for b in (block_a, block_b)
    ]
    proof = c.ledgers[2].detect_equivocation(*seals)
    assert proof is not None and proof["height"] == block_a.height
    assert {s["body"]["header"] for s in proof["seals"]} == {block_a.hash.hex(), block_b.hash.hex()}
    # B cannot become final without a quorum of one round
    seal_2b = c.ledgers[2].seal(block_b, c.validators[2].key, now=t)
    for ledger in c.ledgers[1:]:
        with pytest.raises(InvalidBlock) as refused:
            ledger.commit(block_b, [seals[1], seal_2b])
        assert refused.value.reason == "no_quorum"
    assert snapshot(c) == before


def test_a_transaction_twice_or_already_booked(tmp_path):
    # Found in a QA pass: a sequencer put one booked reading 14,000 times into each block (each
    # copy recorded as a replay), every validator sealed it and every store grew 6.5 MB a block
    c = community(tmp_path, "open")
    t = T0 + 20
    sequencer = c.ledgers[0]
    sell = order(c, 0, "sell", 700, 90_000, t)
    before = snapshot(c)
    twice = sequencer.propose([sell, sell], t)
    refused_by_every_validator(c, twice, "duplicate_tx", t)
    assert snapshot(c) == before
    c.run_block([sell], t)
    again = sequencer.propose([order(c, 2, "buy", 700, 200_000, t + 10), sell], t + 10)
    refused_by_every_validator(c, again, "tx_already_booked", t + 10)
    # a final block from a peer (its quorum's seals) is not asked: an older ledger catches up
    c.commit_as_final(again, t + 10)
    assert all(ledger.height == again.height for ledger in c.ledgers)


def test_more_transactions_than_an_honest_block_holds(tmp_path, monkeypatch):
    from chain import engine

    c = community(tmp_path, "open")
    t = T0 + 20
    block = c.ledgers[0].propose([order(c, m, "sell", 700, 90_000, t) for m in range(3)], t)
    monkeypatch.setattr(engine, "MAX_BLOCK_TXS", 2)
    refused_by_every_validator(c, block, "too_many_txs", t)
    monkeypatch.setattr(engine, "MAX_BLOCK_TXS", 3)
    monkeypatch.setattr(engine, "MAX_BLOCK_TX_BYTES", sum(len(e.to_bytes()) for e in block.txs) - 1)
    refused_by_every_validator(c, block, "txs_too_large", t)
    monkeypatch.setattr(engine, "MAX_BLOCK_TX_BYTES", sum(len(e.to_bytes()) for e in block.txs))
    c.ledgers[1].seal(block, c.validators[1].key, now=t)  # at the bounds: sealed


def test_a_new_proposal_dated_back(tmp_path):
    # Found in a QA pass: a block dated at its predecessor's time, an hour before the validators'
    # clocks, was sealed; the honest reading in it (created "now") was booked from_future
    from chain.engine import MAX_PAST_BLOCK_S

    c = community(tmp_path, "open")
    now = T0 + 3600
    sequencer = c.ledgers[0]
    old = sequencer.propose([order(c, 0, "sell", 700, 90_000, now)], sequencer.head["time"])
    for ledger in c.ledgers[1:]:
        with pytest.raises(InvalidBlock) as info:
            ledger.check_timely(old, now)
        assert info.value.reason == "stale_time"
        ledger.check_timely(old, old.header["time"] + MAX_PAST_BLOCK_S)  # at the bound: timely
