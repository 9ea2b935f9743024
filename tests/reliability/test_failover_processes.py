"""The proposer dies for good and trading goes on (issue 19's real-process test).

Four validators as `peerwatt node run` processes (market app, 10-second intervals, short
``block_s`` and ``failover_s``) on a real Mosquitto. Two honest meters trade through durable
outboxes (a seller and a buyer: an order before each gate, a reading after each interval); a
third meter streams orders without an outbox, recording each one the broker acknowledged. The
validator that proposes is SIGKILLed and stays dead.

Asserted: the next final block (made by another validator) comes within block_s + failover_s +
the prevote and precommit timeouts (plus a little for the processes); every message the broker
acknowledged is in a final block or was refused with a reason its meter was told; gate closures
and settlements happen in blocks after the failover; the old validator, started again, catches
up and seals later blocks; every store verifies and all have the same head.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from chain.consensus import Timeouts
from chain.envelope import Rejected, parse_envelope
from chain.notice import open_notice
from chain.store import Store
from chain.verify import verify_store
from market.app import MarketApp
from peerwatt.bus import BrokerConfig, MqttBus, Topics
from tests.reliability.test_hostile_members import CAPACITY_W, INTERVAL_S, PARAMS, HonestMeter
from tests.support.localnet import make_community
from tests.support.procnet import NodeProcess, kill_proposer, launch_community, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.paced]

BLOCK_S = 0.5
FAILOVER_S = 1.5
# what a dead proposer costs by the protocol: work due after block_s, its round-0 propose timeout,
# then the nil prevotes and nil precommits (each at most its timeout) before round 1's proposer
# proposes; SLACK_S is for four processes and a broker on a loaded 2-core machine
TIMEOUTS = Timeouts(propose_s=FAILOVER_S)
SLACK_S = 1.5
BOUND_S = BLOCK_S + TIMEOUTS.of("propose", 0) + TIMEOUTS.prevote_s + TIMEOUTS.precommit_s + SLACK_S
WAIT_S = 30


class StreamMeter:
    """A meter that publishes an order every ``every_s`` with no outbox: what the broker
    acknowledged is known by tx hash, and refusals come back as signed notices."""

    def __init__(self, c, index: int, url: str, every_s: float = 0.1) -> None:
        self.c = c
        self.party = c.meters[index]
        self.every_s = every_s
        self.validators = {v.id: v.sec1_hex for v in c.validators}
        self.acked: dict[bytes, int] = {}  # tx hash -> seq, once the broker acknowledged it
        self.acked_at: dict[int, float] = {}  # seq -> when (monotonic) the broker acknowledged it
        self.refused: dict[int, str] = {}  # seq -> reason (signed notices)
        self._stop = threading.Event()
        self.bus = MqttBus(BrokerConfig.from_url(url), f"stream-{index}")
        self.bus.subscribe(Topics.receipts(c.community, self.party.id), self._on_receipt)
        self.bus.start()
        assert self.bus.wait_connected(WAIT_S), self.bus.last_error
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _on_receipt(self, _topic: str, payload: bytes) -> None:
        try:
            notice = open_notice(
                payload, community=self.c.community, meter=self.party.id, trusted=self.validators
            )
        except Rejected:
            return  # a receipt or an inclusion proof, not a notice
        self.refused.update(dict.fromkeys(notice.seqs, notice.refused))

    def _run(self) -> None:
        topic = Topics.orders(self.c.community, self.party.id)
        while not self._stop.is_set():
            now = int(time.time())
            # a low bid well ahead of the gate: booked (each replaces the one before), never cleared
            body = {
                "side": "buy",
                "interval": now - now % INTERVAL_S + 6 * INTERVAL_S,
                "energy_wh": 1 + self.party.seq % 20,
                "limit_price": PARAMS["feed_in_price"],
            }
            env = self.party.sign(self.c.community, "order", body, created=now)
            self.bus.publish(topic, env.to_bytes(), on_ack=lambda e=env: self._acked(e))
            self._stop.wait(self.every_s)

    def _acked(self, env) -> None:
        self.acked_at[env.seq] = time.monotonic()
        self.acked[env.tx_hash] = env.seq

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self.bus.stop()


def _store(node: NodeProcess) -> Store:
    return Store.open(node.dir / "data", readonly=True)


def _head(node: NodeProcess) -> tuple[int, bytes] | None:
    store = _store(node)
    try:
        row = store.conn.execute("SELECT height, hash FROM blocks ORDER BY height DESC LIMIT 1").fetchone()
    finally:
        store.close()
    return None if row is None else (row[0], bytes(row[1]))


def _booked(node: NodeProcess) -> dict[bytes, int]:
    """tx hash -> height of every transaction in the node's final blocks."""
    store = _store(node)
    try:
        return {bytes(h): height for h, height in store.conn.execute("SELECT hash, height FROM txs")}
    finally:
        store.close()


def _results(node: NodeProcess, kinds: list[str], low: int) -> list[tuple[int, bytes]]:
    store = _store(node)
    try:
        return [(height, data) for height, _, data in store.results_of_kinds(kinds, low=low)]
    finally:
        store.close()


def _sealers(node: NodeProcess, low: int) -> set[str]:
    """Validators with a stored seal on a block at or above ``low``."""
    store = _store(node)
    try:
        return {v for h in range(low, store.height() + 1) for v, _ in store.seal_rows(h)}
    finally:
        store.close()


def test_proposer_killed_for_good_trading_goes_on(tmp_path: Path, mosquitto) -> None:
    began = time.monotonic()
    now = int(time.time())
    c = make_community(
        validators=4,
        members=4,
        meters_per_member=1,
        app="market",
        app_params=PARAMS,
        time=now - now % INTERVAL_S - INTERVAL_S,
        capacity_w=CAPACITY_W,
    )
    nodes = launch_community(c, tmp_path, mosquitto.url, MarketApp, block_s=BLOCK_S, failover_s=FAILOVER_S)
    honest: list[HonestMeter] = []
    stream = None
    stop = threading.Event()
    trader = None
    try:
        wait_for(
            lambda: all((n.status() or {}).get("broker_connected") for n in nodes), 60, "nodes connected"
        )
        now = int(time.time())
        start = now - now % INTERVAL_S + INTERVAL_S
        honest = [
            HonestMeter(c, 0, "sell", mosquitto.url, tmp_path, start),
            HonestMeter(c, 1, "buy", mosquitto.url, tmp_path, start),
        ]

        def trade() -> None:
            while not stop.is_set():
                for meter in honest:
                    meter.step()
                stop.wait(0.2)

        trader = threading.Thread(target=trade, daemon=True)
        trader.start()
        stream = StreamMeter(c, 2, mosquitto.url)
        stream.start()
        wait_for(lambda: all((n.status() or {}).get("height", 0) >= 2 for n in nodes), WAIT_S, "first blocks")

        # the validator that proposes now dies, for good
        failover = kill_proposer(nodes, [v.id for v in c.validators])
        dead, live, sequencer = failover.dead, failover.live, failover.sequencer
        failover_height, kill_to_final = failover.failover_height, failover.kill_to_final_s
        print(f"\nkill-to-final: {kill_to_final:.2f} s (bound {BOUND_S:.1f} s; failover_s {FAILOVER_S})")
        assert kill_to_final <= BOUND_S, f"the next final block came {kill_to_final:.2f} s after the kill"
        # every live validator entered round 1 (a quorum of 3 had to prevote in it) and follows
        # the new sequencer once it has the block too
        statuses = wait_for(
            lambda: (
                all((n.status() or {}).get("sequencer") not in (None, sequencer) for n in live)
                and [n.status() for n in live]
            ),
            WAIT_S,
            "the new sequencer on every live validator",
        )
        assert all(s["failovers"] >= 1 for s in statuses), [(s["key_id"], s["failovers"]) for s in statuses]

        # the market does not notice: gate closures and settlements after the failover
        wait_for(
            lambda: _results(live[0], ["clearing"], failover_height),
            WAIT_S,
            "a gate closure after the failover",
        )
        wait_for(
            lambda: any(
                b'"status":"settled"' in d for _, d in _results(live[0], ["settlement"], failover_height)
            ),
            WAIT_S + INTERVAL_S,
            "a settlement after the failover",
        )

        # the old validator comes back: it catches up and seals again
        height_at_restart = max(n.status()["height"] for n in live)
        dead.start()
        wait_for(
            lambda: (dead.status() or {}).get("height", 0) >= height_at_restart,
            WAIT_S,
            "the restarted validator catching up",
        )
        wait_for(
            lambda: any(sequencer in _sealers(n, height_at_restart + 1) for n in live),
            WAIT_S,
            "a seal of the restarted validator on a later block",
        )

        # stop sending; what was acknowledged ends in a final block or is refused with a reason
        stream.stop()
        stop.set()
        trader.join(10)

        def drained() -> bool:
            for meter in honest:
                for seq, topic, payload in meter.outbox.due_for_resend(5.0):
                    meter.bus.publish(topic, payload, on_ack=lambda s=seq, m=meter: m.outbox.ack(s))
            return all(m.done() for m in honest)

        wait_for(drained, WAIT_S, "the honest meters' outboxes confirmed")

        def unresolved() -> list[int]:
            booked = _booked(live[0])
            return sorted(s for h, s in stream.acked.items() if h not in booked and s not in stream.refused)

        wait_for(lambda: not unresolved(), WAIT_S, "every acknowledged order booked or refused")
        booked = _booked(live[0])
        assert any(height > failover_height for h, height in booked.items() if h in stream.acked)
        # orders acknowledged while no proposer was alive are among them
        window = (failover.killed_at, failover.killed_at + kill_to_final)
        assert any(window[0] <= t <= window[1] for t in stream.acked_at.values()), "none sent meanwhile"
        for meter in honest:
            for _, payload in meter.payloads:
                env = parse_envelope(payload, community=c.community, now=None, interval_s=None)
                assert env.tx_hash in booked or env.seq in meter.refused, f"message {env.seq} lost"
        wait_for(lambda: len({_head(n) for n in nodes}) == 1, WAIT_S, "every store at the same head")
    finally:
        stop.set()
        if trader is not None:
            trader.join(10)
        if stream is not None:
            stream.stop()
        for meter in honest:
            meter.stop()
        codes = [node.stop() for node in nodes]
    assert codes == [0, 0, 0, 0], [n.log_path.read_text()[-2000:] for n in nodes]
    heads = []
    for node in nodes:
        store = _store(node)
        try:
            verify_store(store, MarketApp())
            heads.append(store.conn.execute("SELECT height, hash FROM blocks ORDER BY height").fetchall())
        finally:
            store.close()
    shortest = min(len(chain) for chain in heads)
    assert all(chain[:shortest] == heads[0][:shortest] for chain in heads), "the stores disagree"
    print(f"test time {time.monotonic() - began:.1f} s, heights {sorted(len(h) - 1 for h in heads)}")
