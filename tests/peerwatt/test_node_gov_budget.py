"""A node's intake checks votes as the ledger will, and bounds a burst of governance messages.

Found in a QA pass: intake checked proposals but nothing of votes, so one key that could publish
on `gov` (a validator's operator account misused, or a broker without its ACL: docs/governance.md,
"Bounds") had 300 votes for proposals that do not exist booked as rejected, and of 100 proposals
sent at once 68 beyond `max_open_proposals` were booked too. A vote is now refused at intake when
the ledger would not count it (unknown proposal, deadline passed, not eligible, voted already), one
vote per key and proposal may wait for a block, and a key's waiting proposals count against its
bound. A vote whose proposal waits in the same node for a block (`gov publish` of both) is taken.
"""

from __future__ import annotations

from collections import Counter

from market.app import MarketApp
from peerwatt.bus import Topics
from tests.support.memory_net import T0, Net


def _net(tmp_path) -> Net:
    return Net(tmp_path, app_factory=MarketApp, app="market", app_params={"interval_s": 900, "gate_s": 300},
               chain_options={"max_open_proposals": 32})  # fmt: skip


def _publish(net: Net, env) -> None:
    net.publisher.publish(Topics.gov(net.c.community), env.to_bytes())


def _propose(net: Net, who, value: int):
    body = {
        "action": "set_param",
        "args": {"name": "grid_fee_per_kwh", "value": value},
        "deadline": T0 + 86_400,
    }
    return who.sign(net.c.community, "propose", body, created=int(net.clock.now()))


def _vote(net: Net, who, pid: str):
    return who.sign(net.c.community, "vote", {"proposal": pid, "vote": "yes"}, created=int(net.clock.now()))


def _booked(net: Net, kind: str, node: int = 0) -> Counter:
    store = net.nodes[node].ledger.store
    rows = store.conn.execute("SELECT height, idx FROM txs WHERE type = ?", (kind,)).fetchall()
    out: Counter = Counter()
    for height, idx in rows:
        tx = next(r for r in store.results(height) if r["kind"] == "tx" and r["index"] == idx)
        out[tx.get("reason", tx["status"])] += 1
    return out


def test_votes_the_ledger_would_not_count_are_refused_at_intake(tmp_path) -> None:
    net = _net(tmp_path)
    member = net.c.members[0]
    for k in range(300):
        _publish(net, _vote(net, member, f"{k:064x}"))
    net.settle()
    assert _booked(net, "vote") == Counter()
    assert net.nodes[0].status()["rejected"]["unknown_proposal"] == 300
    # on a real proposal: one vote of a key waits for a block, its other copies are refused
    proposal = _propose(net, net.c.members[1], 1_000)
    _publish(net, proposal)
    net.settle()
    for _ in range(50):
        _publish(net, _vote(net, member, proposal.tx_hash.hex()))
    net.settle()
    assert _booked(net, "vote") == Counter({"ok": 1})
    _publish(net, _vote(net, member, proposal.tx_hash.hex()))  # voted already: refused at intake
    net.settle()
    assert _booked(net, "vote") == Counter({"ok": 1})


def test_a_burst_of_proposals_stops_at_the_bound(tmp_path) -> None:
    net = _net(tmp_path)
    member = net.c.members[0]
    for k in range(100):
        _publish(net, _propose(net, member, 1_000 + k))
    net.settle()
    assert _booked(net, "propose") == Counter({"ok": 32})
    assert len(net.nodes[0].ledger.chain_state["proposals"]) == 32


def test_a_vote_sent_with_its_proposal_is_counted(tmp_path) -> None:
    """`gov publish` of a proposal and the votes on it, in one go: the votes reach the node while
    the proposal waits for its block, and are taken."""
    net = _net(tmp_path)
    m = net.c.members
    proposal = _propose(net, m[0], 2_000)
    _publish(net, proposal)
    for voter in m[1:]:
        _publish(net, _vote(net, voter, proposal.tx_hash.hex()))
    net.settle()
    assert _booked(net, "vote")["ok"] >= 1
    assert net.nodes[0].ledger.chain_state["params"]["grid_fee_per_kwh"] == 2_000
