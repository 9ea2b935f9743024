"""Deterministic simulation of the real nodes (peerwatt/node/runtime.py, stores, mempools) on the
in-memory bus: a seeded scheduler picks which node steps, reorders and drops what waits in a
node's inbox, crashes and restarts validators (the proposer included, at most f = 1 of 4 down at
a time), lets the nodes' clock run, and sends transactions. After every action: no two stores hold
different blocks at one height. At the end, with every node up and time running: all reach the
same height, every transaction sent is in a block, and every store verifies. A failing seed is
named in the assertion and replays exactly (``PEERWATT_NODE_DST_SEEDS=from:to`` runs others; the
pure consensus core has its own, much larger simulation in tests/chain/dst.py).
"""

from __future__ import annotations

import os
import queue
import random

import pytest

from chain.consensus import Timeouts
from chain.kvapp import KeyValueApp
from chain.verify import verify_store
from peerwatt.node.http_api import NodeHttpApi
from tests.support.memory_net import Net


def _seeds() -> range:
    first, _, last = os.environ.get("PEERWATT_NODE_DST_SEEDS", "0:6").partition(":")
    return range(int(first), int(last))


def _shuffle_inbox(node, rng: random.Random, drop: float) -> None:
    """Reorder what waits for the node; lose some of it (a message the broker handed to a
    client that then crashed is lost the same way; the senders' republishing must cope)."""
    for inbox in (node._consensus_inbox, node._inbox):
        waiting = []
        while True:
            try:
                waiting.append(inbox.get_nowait())
            except queue.Empty:
                break
        rng.shuffle(waiting)
        for item in waiting:
            if item[0] != "tx" and rng.random() < drop:
                continue  # transactions stay: the agents' outboxes resend those in real life
            inbox.put(item)


def _check_agreement(net: Net, seed: int) -> None:
    hashes: dict[int, set[bytes]] = {}
    for node in net.nodes:
        if node is None:
            continue
        for height, block_hash in node.ledger.store.conn.execute("SELECT height, hash FROM blocks"):
            hashes.setdefault(height, set()).add(bytes(block_hash))
    forks = {h: len(v) for h, v in hashes.items() if len(v) > 1}
    assert not forks, f"seed={seed}: two final blocks at height(s) {sorted(forks)}"


def run(tmp_path, seed: int, actions: int = 160) -> None:
    rng = random.Random(seed)
    net = Net(tmp_path)
    timeouts = Timeouts(propose_s=3.0, prevote_s=1.0, precommit_s=1.0, step_s=1.0)
    # each node's HTTP API, for a node that fell more than a block behind to catch up from
    apis = [NodeHttpApi(tmp_path / f"n{i}", lambda i=i: {}, "127.0.0.1", 0) for i in range(4)]
    for api in apis:
        api.start()
    try:
        _run(net, rng, seed, actions, timeouts, [api.address for api in apis])
    finally:
        for api in apis:
            api.stop()


def _start(net: Net, i: int, timeouts: Timeouts, addresses: list[str]):
    node = net.start(i, peers=tuple(a for j, a in enumerate(addresses) if j != i))
    node.timeouts = timeouts
    return node


def _run(net: Net, rng: random.Random, seed: int, actions: int, timeouts: Timeouts, addresses) -> None:
    for i, node in enumerate(net.nodes):
        node.timeouts = timeouts
        node.peers = tuple(a for j, a in enumerate(addresses) if j != i)
    sent = []
    down: int | None = None
    for _ in range(actions):
        pick = rng.random()
        live = [i for i, n in enumerate(net.nodes) if n is not None]
        if pick < 0.45:
            node = net.nodes[rng.choice(live)]
            _shuffle_inbox(node, rng, drop=0.1)
            node.step()
        elif pick < 0.65:
            net.now += rng.choice((0.2, 0.5, 1.0, 2.0))
        elif pick < 0.75:
            sent += net.send(1, first=len(sent) * 10)
        elif pick < 0.85 and down is None:
            down = rng.choice(live)
            net.crash(down)
        elif pick < 0.95 and down is not None:
            _start(net, down, timeouts, addresses)
            down = None
        _check_agreement(net, seed)
    if down is not None:
        _start(net, down, timeouts, addresses)
    # stabilisation: everyone up, nothing lost any more, time runs
    for _ in range(60):
        net.advance(1.0)
        heights = {n.ledger.height for n in net.nodes}
        booked = {bytes(h) for (h,) in net.nodes[0].ledger.store.conn.execute("SELECT hash FROM txs")}
        if len(heights) == 1 and booked >= {e.tx_hash for e in sent}:
            break
    _check_agreement(net, seed)
    heights = {n.ledger.height for n in net.nodes}
    assert len(heights) == 1, f"seed={seed}: nodes stopped at heights {heights}"
    missing = {e.tx_hash for e in sent} - booked
    assert not missing, f"seed={seed}: {len(missing)} transaction(s) never booked"
    for node in net.nodes:
        assert verify_store(node.ledger.store, KeyValueApp()).blocks == node.ledger.height


@pytest.mark.parametrize("seed", _seeds())
def test_nodes_agree_and_finish_under_a_seeded_schedule(tmp_path, seed):
    run(tmp_path, seed)
