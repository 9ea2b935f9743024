"""Neighbourhood power cut: the sequencer, the validators and the meters' publishers are all
killed with SIGKILL at random moments, again and again. After every restart each store verifies,
the stores agree, and in the end every reading the broker acknowledged is in the ledger exactly
once (or refused with a recorded reason)."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
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

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.paced]
# 30 cuts as the issue asks (about 2 minutes here); a longer soak: PEERWATT_SOAK_CUTS=200 pytest ...
CUTS = int(os.environ.get("PEERWATT_SOAK_CUTS", "30"))


def headers(node) -> list[bytes]:
    conn = sqlite3.connect(f"file:{node.dir / 'data' / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        return [bytes(h) for (h,) in conn.execute("SELECT hash FROM blocks ORDER BY height")]
    finally:
        conn.close()


# 134-137 s alone on 2 cores (this code and 7a950ce alike, 2026-12-07); with the suite's 4 workers
# and other work on the machine it went past the default 300 s twice while nothing had failed
@pytest.mark.timeout(600)
def test_repeated_power_cuts_lose_nothing_acknowledged(tmp_path, mosquitto):
    rng = random.Random(11)
    now = int(time.time())
    c = make_community(validators=4, members=3, meters_per_member=1, time=now - now % 900 - 900)
    nodes = launch_community(c, tmp_path, mosquitto.url, KeyValueApp, block_s=0.3)
    meters = []
    for i, meter in enumerate(c.meters):
        key = tmp_path / f"meter-{i}.key"
        save_private_key(meter.key, key)
        meters.append((key, tmp_path / f"outbox-{i}.sqlite", meter.id))

    def start_publishers(drain: bool = False) -> list[subprocess.Popen]:
        procs = []
        for key, state, _ in meters:
            args = publisher_command(key, state, c, mosquitto.url, *(["--drain"] if drain else []))
            procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
        return procs

    # the community's nodes have their broker sessions before the first meter speaks (a message
    # published before the sequencer ever subscribed has no session to wait in)
    wait_for(lambda: all((n.status() or {}).get("broker_connected") for n in nodes), 60, "nodes connected")
    publishers = start_publishers()
    try:
        for cut in range(CUTS):
            wait_for(lambda: all(n.status() for n in nodes), 60, f"nodes up before cut {cut}")
            time.sleep(rng.uniform(0.3, 1.5))
            for proc in publishers:
                proc.send_signal(signal.SIGKILL)
            for node in nodes:
                node.kill()
            for proc in publishers:
                proc.wait(10)
                proc.stdout.close()
            heights = []
            for node in nodes:
                store = Store.open(node.dir / "data", readonly=True)
                try:
                    heights.append(verify_store(store, KeyValueApp()).blocks)
                finally:
                    store.close()
            chains = [headers(n) for n in nodes]
            shortest = min(len(h) for h in chains)
            assert all(h[:shortest] == chains[0][:shortest] for h in chains), (
                f"stores disagree after cut {cut}"
            )
            for node in nodes:
                node.start()
            publishers = start_publishers()
        # the power stays on: publishers drain their outboxes, the chain takes everything in
        for proc in publishers:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            proc.stdout.close()
        drains = start_publishers(drain=True)
        for proc in drains:
            proc.wait(90)
            proc.stdout.close()
        assert all(proc.returncode == 0 for proc in drains), "an outbox did not drain"
        expected = {}
        for _, state, meter in meters:
            outbox = Outbox(state)
            assert outbox.depth() == 0 and outbox.awaiting_confirmation() == 0
            expected[meter] = outbox.last_seq()  # the publishers' seqs run from 1
            outbox.close()

        def complete() -> bool:
            seqs = ledger_seqs(str(nodes[1].dir / "data" / "ledger.sqlite"))
            return all(m in seqs and max(seqs[m]) == last for m, last in expected.items())

        wait_for(complete, 90, "every acknowledged reading in the ledger")
        seqs = ledger_seqs(str(nodes[1].dir / "data" / "ledger.sqlite"))
        for meter, last in expected.items():
            got = sorted(seqs[meter])
            assert len(got) == len(set(got)), "a reading was booked twice"
            assert got == list(range(1, last + 1)), "an acknowledged reading is missing"
        for node in nodes:
            store = Store.open(node.dir / "data", readonly=True)
            try:
                verify_store(store, KeyValueApp())
            finally:
                store.close()
    finally:
        for proc in publishers:
            if proc.poll() is None:
                proc.kill()
        for node in nodes:
            node.kill()
