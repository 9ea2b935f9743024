"""A proposal refused as ``stale_time`` after this node stood still says so, not "check clocks".

Found in a QA pass: a validator paused with SIGSTOP for 90 s, then SIGCONT, logged `refused block
... at height 59: stale_time: block time is 80 s behind our clock (at most 60 s for a new
proposal): check clocks`, though the clocks were fine: the proposal had reached it while it was
paused (the block was final on the others, and it caught up normally). What is refused is
unchanged (consensus-relevant): only the words, and only when this node's loop stood still long
enough to explain the age."""

from __future__ import annotations

import logging

from chain.envelope import sign_envelope
from tests.support.memory_net import Net


def _refusals(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused block")]


def _proposal(net: Net, proposer_index: int, block) -> bytes:
    body = dict(block.to_body(), proposal_round=0, valid_round=-1)
    env = sign_envelope(
        net.c.validators[proposer_index].key,
        type="block",
        community=net.c.community,
        seq=1,
        body=body,
        created=int(net.clock.now()),
    )
    return env.to_bytes()


def test_a_proposal_that_waited_out_this_nodes_pause_is_refused_as_before_and_says_why(tmp_path, caplog):
    net = Net(tmp_path)
    net.clock.pause()  # whole seconds, moved by the test only
    net.settle()  # every node steps once: validator 3's last step before its pause
    paused = net.nodes[3]
    net.nodes[3] = None  # paused: not stepped; what the bus brings waits in its inbox
    net.send(1)
    net.settle()
    assert [n.ledger.height for n in net.nodes[:3]] == [1, 1, 1]  # 3 of 4 make block 1 final
    block_time = net.nodes[0].ledger.store.header(1)["time"]
    net.clock.advance(block_time + 80 - net.clock.now())
    net.now += 90
    net.nodes[3] = paused
    with caplog.at_level(logging.WARNING, logger="peerwatt.node"):
        net.settle()
    lines = _refusals(caplog)
    assert len(lines) == 1, lines
    line = lines[0]
    assert "at height 1: stale_time: block time is 80 s behind our clock (at most 60 s" in line
    assert "check clocks" not in line, line
    assert "this node stood still for 90 s" in line and "paused or overloaded" in line, line
    assert paused.metrics.blocks_refused == {"stale_time": 1}  # refused, and counted, as before
    assert paused.ledger.height == 1  # and it takes the final block as before


def _stale_proposal_after(tmp_path, caplog, still_s: float) -> str:
    """Validator 1 steps, stands still ``still_s`` seconds, then takes a new round-0 proposal
    dated 80 s behind its clock; returns its refusal line."""
    net = Net(tmp_path)
    net.clock.pause()
    net.settle()
    net.clock.advance(200)
    node = net.nodes[1]
    core = node._core
    proposer = next(i for i, v in enumerate(net.c.validators) if v.id == core.proposer(0))
    block = net.nodes[proposer].ledger.propose([], int(net.clock.now()) - 80, round_=0)
    net.now += still_s
    with caplog.at_level(logging.WARNING, logger="peerwatt.node"):
        node.step()
        node._take_block(_proposal(net, proposer, block))
    lines = _refusals(caplog)
    assert len(lines) == 1 and "stale_time: block time is 80 s behind our clock" in lines[0], lines
    assert node.metrics.blocks_refused == {"stale_time": 1}
    return lines[0]


def test_a_stale_proposal_without_a_pause_still_says_check_clocks(tmp_path, caplog):
    line = _stale_proposal_after(tmp_path, caplog, 0)
    assert line.endswith("(at most 60 s for a new proposal): check clocks"), line


def test_a_pause_too_short_to_explain_the_age_still_says_check_clocks(tmp_path, caplog):
    # 80 s behind, 60 s allowed: a pause of less than 20 s does not explain it
    line = _stale_proposal_after(tmp_path, caplog, 15)
    assert line.endswith(": check clocks") and "stood still" not in line, line


def test_a_pause_as_long_as_the_excess_explains_it(tmp_path, caplog):
    line = _stale_proposal_after(tmp_path, caplog, 20)
    assert "check clocks" not in line and "this node stood still for 20 s" in line, line
