"""The broker is killed with SIGKILL and restarted during a stream of signed readings from several
meters to a running community (sequencer + validators as processes): nothing is lost — the outbox
keeps each message until the ledger confirms it and resends what the broker lost — and nothing is
booked twice (node dedupe)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from chain.keys import save_private_key
from chain.kvapp import KeyValueApp
from chain.store import Store
from chain.verify import verify_store
from meter_agent.outbox import Outbox
from tests.reliability.power_cut_publisher import ledger_seqs, publisher_command
from tests.support.localnet import make_community
from tests.support.procnet import launch_community, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.integration]
# 3 meters: 3,000 readings in the suite; the 10k soak: PEERWATT_SOAK_PER_METER=3400
PER_METER = int(os.environ.get("PEERWATT_SOAK_PER_METER", "1000"))


def test_broker_sigkill_during_stream(tmp_path, mosquitto):
    now = int(time.time())
    c = make_community(validators=4, members=3, meters_per_member=1, time=now - now % 900 - 900)
    nodes = launch_community(c, tmp_path, mosquitto.url, KeyValueApp, block_s=0.3)
    try:
        wait_for(
            lambda: all((n.status() or {}).get("broker_connected") for n in nodes), 60, "nodes connected"
        )
        meters = []
        for i, meter in enumerate(c.meters):
            save_private_key(meter.key, tmp_path / f"meter-{i}.key")
            meters.append((tmp_path / f"meter-{i}.key", tmp_path / f"outbox-{i}.sqlite", meter.id))
        procs = [
            subprocess.Popen(
                publisher_command(key, state, c, mosquitto.url, "--count", str(PER_METER)),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for key, state, _ in meters
        ]
        time.sleep(1.0)  # mid-stream
        mosquitto.kill()
        time.sleep(1.0)
        mosquitto.start()
        for proc in procs:
            proc.wait(180)
        assert all(p.returncode == 0 for p in procs), "a publisher's outbox did not drain"
        for _, state, _ in meters:
            outbox = Outbox(state)
            assert outbox.depth() == 0 and outbox.awaiting_confirmation() == 0
            assert outbox.last_seq() == PER_METER
            outbox.close()

        def seqs() -> dict[str, list[int]]:
            return ledger_seqs(str(nodes[2].dir / "data" / "ledger.sqlite"))

        wait_for(
            lambda: all(len(set(seqs().get(m, []))) == PER_METER for _, _, m in meters),
            180,
            "every acknowledged reading in the ledger",
        )
        got = seqs()
        for _, _, meter in meters:
            assert sorted(got[meter]) == list(range(1, PER_METER + 1)), "lost or booked twice"
        store = Store.open(nodes[2].dir / "data", readonly=True)
        try:
            assert verify_store(store, KeyValueApp()).txs == PER_METER * len(meters)
        finally:
            store.close()
    finally:
        for node in nodes:
            node.kill()
