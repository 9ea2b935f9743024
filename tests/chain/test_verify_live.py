"""`peerwatt verify` (and the dashboard's verification runs) on the store of a node that keeps
writing: the walk checks one consistent snapshot, whatever the node appends meanwhile (new
blocks, late seals of old ones)."""

from __future__ import annotations

from chain.kvapp import KeyValueApp
from chain.store import Store
from chain.verify import verify_store
from tests.chain.test_engine import T0, reading
from tests.support.localnet import make_community


def test_verify_sees_one_snapshot_while_the_node_appends_blocks(tmp_path):
    c = make_community(validators=3, members=2, meters_per_member=2, time=T0)
    c.open_ledgers(tmp_path, KeyValueApp)
    interval = T0 - T0 % 900
    t = T0
    for block in range(5):
        t += 1
        c.run_block(
            [reading(m, c.community, interval, block * 10 + i, created=t) for i, m in enumerate(c.meters)], t
        )
    reader = Store.open(tmp_path / "validator-1", readonly=True)
    appended = []

    def node_writes_meanwhile(height: int, chain_state: dict, state_known: bool) -> None:
        if height == 3:  # the node finalises two more blocks while verify is half-way
            nonlocal t
            for block in range(2):
                t += 1
                txs = [
                    reading(m, c.community, interval, 100 + block * 10 + i, created=t)
                    for i, m in enumerate(c.meters)
                ]
                appended.append(c.run_block(txs, t).height)

    try:
        report = verify_store(reader, KeyValueApp(), before_block=node_writes_meanwhile)
    finally:
        reader.close()
    assert appended == [6, 7]
    assert report.blocks == 5  # the snapshot it started from, checked whole
    again = Store.open(tmp_path / "validator-1", readonly=True)
    try:
        assert verify_store(again, KeyValueApp()).blocks == 7
    finally:
        again.close()
