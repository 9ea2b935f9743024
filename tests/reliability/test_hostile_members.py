"""Hostile members on a running community (issue 13's test that keeps it fixed).

Four `peerwatt node run` processes (market app, 10-second intervals) on a real Mosquitto; two
honest meters trade through durable outboxes (a seller and a buyer, orders before each gate and
a reading after each interval, resending what the ledger has not confirmed, believing only
inclusion proofs against sealed headers and validator-signed refusal notices). Meanwhile two
enrolled meters send what hypothesis makes of validly signed messages: sequence gaps up to 2^53,
every field at and beyond its bounds, huge and deeply nested bodies, other signers claimed,
floats, replays of their own and of the honest meters' messages, readings with implausible
counters or another serial, on their own and others' topics.

Asserted: no node exits; blocks keep becoming final during and after the attack; every honest
message is booked exactly once (or refused with a reason the honest meter was told); honest
trades settle; nothing is settled beyond what a meter's enrolled capacity can move in an
interval; every store verifies and all agree.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain import messages
from chain.envelope import Rejected
from chain.notice import open_notice
from chain.signature import sign
from chain.store import Store
from chain.verify import verify_store
from market.app import MarketApp
from meter_agent.outbox import Outbox
from meter_agent.receipts import verify_included
from peerwatt.bus import BrokerConfig, MqttBus, Topics
from tests.support.localnet import make_community
from tests.support.procnet import launch_community, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.paced]

INTERVAL_S = 10
GATE_S = 3
CAPACITY_W = 11_000  # at most 30 Wh in a 10-s interval
PARAMS = {
    "interval_s": INTERVAL_S,
    "gate_s": GATE_S,
    "settle_after_intervals": 1,
    "feed_in_price": 80_000,
    "retail_price": 300_000,
}
HONEST_WH_PER_INTERVAL = 25  # 9 kW: plausible for an 11 kW meter
TRADED_WH = 20
HONEST_INTERVALS = 6
WAIT_S = 30
HOSTILE_EXAMPLES = 150


class HonestMeter:
    """A meter that behaves: signs through a durable outbox, resends until an inclusion proof
    (or a refusal notice) confirms."""

    def __init__(self, c, index: int, side: str, url: str, workdir: Path, start: int) -> None:
        self.c = c
        self.party = c.meters[index]
        self.serial = c.genesis.doc["meters"][self.party.id]["serial"]
        self.side = side
        self.start_interval = start
        self.validators = {v.id: v.sec1_hex for v in c.validators}
        self.outbox = Outbox(workdir / f"honest-{index}.sqlite", first_seq=1)
        self.refused: dict[int, str] = {}
        self.ordered: set[int] = set()
        self.read: set[int] = set()
        self.payloads: list[tuple[str, bytes]] = []  # what it sent: hostile meters replay these
        self.bus = MqttBus(BrokerConfig.from_url(url), f"honest-{index}")
        self.bus.subscribe(Topics.receipts(c.community, self.party.id), self._on_receipt)
        self.bus.start()
        assert self.bus.wait_connected(WAIT_S), self.bus.last_error

    def _on_receipt(self, _topic: str, payload: bytes) -> None:
        message = json.loads(payload)
        if message.get("type") == "included":  # checked as the agent checks it
            seqs = [tx["seq"] for tx in message["txs"]]
            _height, proven, _rejected = verify_included(
                message,
                meter=self.party.id,
                payloads={seq: p for seq, _t, p in self.outbox.messages(seqs)},
                community=self.c.community,
                validators=self.validators,
                quorum=self.c.genesis.doc["chain"]["quorum"],
            )
            self.outbox.confirm(proven)
            return
        try:
            notice = open_notice(
                payload, community=self.c.community, meter=self.party.id, trusted=self.validators
            )
        except Rejected:
            return  # a receipt, or a forged notice
        self.refused.update(dict.fromkeys(notice.seqs, notice.refused))
        self.outbox.confirm(list(notice.seqs))

    def _send(self, kind: str, body: dict) -> None:
        topic = (Topics.orders if kind == "order" else Topics.readings)(self.c.community, self.party.id)

        def build(seq: int) -> tuple[str, bytes]:
            from chain.envelope import sign_envelope

            env = sign_envelope(
                self.party.key,
                type=kind,
                community=self.c.community,
                seq=seq,
                body=body,
                created=int(time.time()),
            )
            return topic, env.to_bytes()

        seq, topic, payload = self.outbox.add(build)
        self.payloads.append((topic, payload))
        self.bus.publish(topic, payload, on_ack=lambda: self.outbox.ack(seq))

    def step(self) -> None:
        now = int(time.time())
        last = self.start_interval + (HONEST_INTERVALS - 1) * INTERVAL_S
        upcoming = now - now % INTERVAL_S + INTERVAL_S
        while upcoming - GATE_S <= now + 1:
            upcoming += INTERVAL_S
        if upcoming <= last and upcoming not in self.ordered:
            self.ordered.add(upcoming)
            price = 100_000 if self.side == "sell" else 250_000
            self._send(
                "order",
                {"side": self.side, "interval": upcoming, "energy_wh": TRADED_WH, "limit_price": price},
            )
        interval = self.start_interval - INTERVAL_S
        while interval + INTERVAL_S <= now and interval <= last:
            if interval not in self.read:
                self.read.add(interval)
                counter = 1_000 + HONEST_WH_PER_INTERVAL * (
                    (interval - self.start_interval) // INTERVAL_S + 2
                )
                flows = (0, counter) if self.side == "sell" else (counter, 0)
                self._send(
                    "reading",
                    {
                        "interval": interval,
                        "import_wh": flows[0],
                        "export_wh": flows[1],
                        "serial": self.serial,
                        "profile": "sdm630",
                    },
                )
            interval += INTERVAL_S
        for seq, topic, payload in self.outbox.due_for_resend(5.0):
            self.bus.publish(topic, payload, on_ack=lambda s=seq: self.outbox.ack(s))

    def done(self) -> bool:
        return self.outbox.depth() == 0 and self.outbox.awaiting_confirmation() == 0

    def stop(self) -> None:
        self.bus.stop()
        self.outbox.close()


# -- what hypothesis makes of a hostile member's messages --------------------------------------

BOUNDARY_INTS = [-(2**64), -1, 0, 1, 2**31, 2**40, 2**40 + 1, 2**53 - 1, 2**53, 2**63, 2**70]
ints = st.one_of(st.sampled_from(BOUNDARY_INTS), st.integers(min_value=-(2**80), max_value=2**80))
nested = st.recursive(
    st.one_of(st.integers(), st.text(max_size=8), st.none()),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12,
)
values = st.one_of(ints, st.floats(), st.text(max_size=40), st.booleans(), st.none(), nested)


@st.composite
def attacks(draw) -> dict:
    """One hostile message as a recipe (keys and times are filled in when it is sent)."""
    kind = draw(
        st.sampled_from(["order", "reading", "propose", "vote", "seal", "block", "deep", "huge", "replay"])
    )
    recipe: dict = {
        "kind": kind,
        "attacker": draw(st.integers(0, 1)),
        "topic": draw(st.sampled_from(["own", "honest", "gov"])),
        "seq_gap": draw(
            st.one_of(st.integers(0, 5), st.sampled_from([2**20, 2**34, 2**53 - 2]), st.integers(0, 2**53))
        ),
        "created_offset": draw(st.one_of(st.integers(-60, 60), st.sampled_from([-(10**6), 10**6, -(2**41)]))),
        "claim_other": draw(st.booleans()) and draw(st.booleans()),  # ~1 in 4 claims the honest signer
        "replay_index": draw(st.integers(0, 10_000)),
    }
    if kind == "order":
        recipe["body"] = {
            "side": draw(st.sampled_from(["sell", "buy", "hold", ""])),
            "interval_offset": draw(st.one_of(st.integers(-3, 6), st.sampled_from([10**9, -(10**9)]))),
            "energy_wh": draw(st.one_of(st.integers(0, 100), ints)),
            "limit_price": draw(st.one_of(st.integers(80_000, 300_000), ints)),
        }
    elif kind == "reading":
        recipe["body"] = {
            "interval_offset": draw(st.integers(-40, 2)),
            "import_wh": draw(st.one_of(st.integers(0, 10_000), ints, st.just(99_999_999))),
            "export_wh": draw(st.one_of(st.integers(0, 10_000), ints, st.just(99_999_999))),
            "serial": draw(st.sampled_from(["own", "other", "", "x" * 100, "s p a c e"])),
        }
    else:
        recipe["body"] = draw(st.dictionaries(st.text(max_size=10), values, max_size=4))
    recipe["extra"] = draw(st.none() | st.tuples(st.text(min_size=1, max_size=6), values))
    recipe["depth"] = draw(st.sampled_from([17, 100, 40_000]))
    return recipe


def _json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Attackers:
    """Turns recipes into validly signed (but hostile) messages from two enrolled meters."""

    def __init__(self, c, parties, honest: list[HonestMeter], url: str) -> None:
        self.c = c
        self.parties = parties
        self.honest = honest
        self.seqs = [0, 0]
        self.sent: list[tuple[str, bytes]] = []
        self.bus = MqttBus(BrokerConfig.from_url(url), "hostile-members")
        self.bus.start()
        assert self.bus.wait_connected(WAIT_S), self.bus.last_error

    def build(self, r: dict) -> tuple[str, bytes]:
        c, party = self.c, self.parties[r["attacker"]]
        victim = self.honest[r["attacker"]].party
        now = int(time.time())
        kind = r["kind"]
        own_topic = (Topics.readings if kind == "reading" else Topics.orders)(c.community, party.id)
        topic = {
            "own": own_topic,
            "honest": Topics.orders(c.community, victim.id),
            "gov": Topics.gov(c.community),
        }[r["topic"]]
        if kind == "replay":
            pool = self.sent + [p for h in self.honest for p in h.payloads]
            return pool[r["replay_index"] % len(pool)] if pool else (topic, b"{}")
        if kind == "deep":
            return topic, b"[" * r["depth"] + b"]" * r["depth"]
        if kind == "huge":
            return topic, _json(
                {"v": 1, "type": "order", "body": {"pad": "x" * (messages.MAX_MESSAGE_BYTES + 10)}}
            )
        body = dict(r["body"])
        interval = now - now % INTERVAL_S
        if "interval_offset" in body:
            body["interval"] = interval + body.pop("interval_offset") * INTERVAL_S
        if kind == "reading":
            serial = body["serial"]
            own_serial = c.genesis.doc["meters"][party.id]["serial"]
            body["serial"] = {"own": own_serial, "other": "SN-NOT-ENROLLED"}.get(serial, serial)
            body["profile"] = "sdm630"
        if r["extra"] is not None:
            body[r["extra"][0]] = r["extra"][1]
        self.seqs[r["attacker"]] += 1 + r["seq_gap"]
        envelope = {
            "v": 1,
            "type": kind,
            "community": c.community,
            "signer": victim.id if r["claim_other"] else party.id,
            "seq": self.seqs[r["attacker"]],
            "created": now + r["created_offset"],
            "expires": now + r["created_offset"] + 3600,
            "body": body,
        }
        try:
            unsigned = _json(envelope)
        except (TypeError, ValueError):  # e.g. a float NaN hypothesis made: still send something
            unsigned = repr(envelope).encode()
        envelope["sig"] = sign(party.key, messages.SIGNING_PREFIX + unsigned)
        try:
            return topic, _json(envelope)
        except (TypeError, ValueError):
            return topic, unsigned

    def send(self, recipe: dict) -> None:
        topic, payload = self.build(recipe)
        self.sent.append((topic, payload))
        acked = threading.Event()
        self.bus.publish(topic, payload, on_ack=acked.set)
        assert acked.wait(WAIT_S), "the broker did not acknowledge a hostile message"

    def stop(self) -> None:
        self.bus.stop()


# -- reading the stores -----------------------------------------------------------------------


def _rows(db: Path, sql: str, *args) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _results(db: Path) -> list[dict]:
    return [json.loads(r) for (r,) in _rows(db, "SELECT data FROM results")]


def test_hostile_members_cannot_stop_trading_or_get_paid_for_fiction(tmp_path, mosquitto):
    now = int(time.time())
    t0 = now - now % INTERVAL_S - INTERVAL_S
    c = make_community(
        validators=4,
        members=4,
        meters_per_member=1,
        app="market",
        app_params=PARAMS,
        time=t0,
        capacity_w=CAPACITY_W,
    )
    nodes = launch_community(c, tmp_path, mosquitto.url, MarketApp, block_s=0.3)
    honest: list[HonestMeter] = []
    attackers = None
    stop = threading.Event()
    try:
        wait_for(
            lambda: all((n.status() or {}).get("broker_connected") for n in nodes), 60, "nodes connected"
        )
        start = int(time.time()) // INTERVAL_S * INTERVAL_S + 2 * INTERVAL_S
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
        attackers = Attackers(c, c.meters[2:], honest, mosquitto.url)
        height_before = nodes[0].status()["height"]

        @settings(
            max_examples=HOSTILE_EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(attacks())
        def attack(recipe: dict) -> None:
            attackers.send(recipe)

        attack()
        # blocks keep becoming final after the attack, on every node
        wait_for(
            lambda: all((n.status() or {}).get("height", -1) > height_before + 3 for n in nodes),
            60,
            "blocks final on every node after the attack",
        )
        last = start + HONEST_INTERVALS * INTERVAL_S
        settle_by = last + (PARAMS["settle_after_intervals"] + 1) * INTERVAL_S + 10
        wait_for(
            lambda: time.time() > settle_by and all(m.done() for m in honest),
            120,
            "honest messages confirmed",
        )
        stop.set()
        trader.join(10)
        for node in nodes:
            assert node.proc.poll() is None, f"node {node.index} exited: {node.log_path.read_text()[-2000:]}"
        statuses = [n.status() for n in nodes]
        assert all(s["equivocations"] == 0 and s["store_error"] is None for s in statuses)
        wait_for(
            lambda: len({(n.status() or {}).get("height") for n in nodes}) == 1,
            30,
            "nodes at the same height",
        )
    finally:
        stop.set()
        for meter in honest:
            meter.stop()
        if attackers is not None:
            attackers.stop()
        codes = [node.stop() for node in nodes]
    assert codes == [0, 0, 0, 0]

    dbs = [n.dir / "data" / "ledger.sqlite" for n in nodes]
    # every store verifies and all agree
    for node in nodes:
        store = Store.open(node.dir / "data", readonly=True)
        try:
            verify_store(store, MarketApp())
        finally:
            store.close()
    chains = [_rows(db, "SELECT height, hash FROM blocks ORDER BY height") for db in dbs]
    assert all(chain == chains[0] for chain in chains), "the stores disagree"

    # every honest message is booked exactly once, or was refused and its sender told why
    for meter in honest:
        booked = [s for (s,) in _rows(dbs[0], "SELECT seq FROM txs WHERE signer = ?", meter.party.id)]
        assert len(booked) == len(set(booked)), f"an honest message was booked twice: {sorted(booked)}"
        everything = set(range(1, len(meter.payloads) + 1))  # its seqs: 1, 2, ... one per message
        assert set(booked) | set(meter.refused) == everything
        # a hostile member may replay an honest message after it was booked: the sequencer then
        # tells the honest meter "replay" (already in the ledger), which is true and harmless
        both = set(booked) & set(meter.refused)
        assert all(meter.refused[seq] == "replay" for seq in both), meter.refused
        assert set(meter.refused.values()) <= {"interval_closed", "replay"}, meter.refused

    results = _results(dbs[0])
    settlements = [r for r in results if r["kind"] == "settlement"]
    honest_ids = {m.party.id for m in honest}
    honest_settled = [
        s for s in settlements if {s["seller"], s["buyer"]} == honest_ids and s["status"] == "settled"
    ]
    assert honest_settled, "the honest meters' trades never settled"
    # nothing is settled beyond what a meter can physically move in one interval
    max_wh = CAPACITY_W * INTERVAL_S // 3600
    for s in settlements:
        assert s["settled_wh"] <= max_wh, s
