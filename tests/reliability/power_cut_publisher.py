"""A meter-like publisher process for the power-cut test: signs readings through the agent's
durable outbox and publishes them; killed with SIGKILL at random moments.

Usage: python -m tests.reliability.power_cut_publisher KEYFILE STATEFILE COMMUNITY INTERVAL URL
       TRUST_JSON [--drain | --count N]
TRUST_JSON is {"validators": {key id: SEC1 hex}, "quorum": q}: the validators whose seals (on the
headers of inclusion proofs) and notices it believes.
Seqs start at 1. With --count it publishes N readings as fast as it can, then drains.
With --drain it only resends what the outbox holds and exits when the ledger confirmed everything
(inclusion proofs against sealed headers), resending what stays unconfirmed, as the agent does.
"""

from __future__ import annotations

import json
import sys
import time

from chain.envelope import Rejected, sign_envelope
from chain.keys import key_id, load_private_key
from chain.notice import open_notice
from meter_agent.outbox import Outbox
from meter_agent.receipts import verify_included
from peerwatt.bus import BrokerConfig, MqttBus, Topics


def main() -> None:
    key_file, state_file, community, interval, url, trust_json = sys.argv[1:7]
    trust = json.loads(trust_json)
    validators, quorum = trust["validators"], trust["quorum"]
    drain = "--drain" in sys.argv
    count = int(sys.argv[sys.argv.index("--count") + 1]) if "--count" in sys.argv else None
    key = load_private_key(key_file)
    meter = key_id(key.public_key())
    outbox = Outbox(state_file, first_seq=1)
    bus = MqttBus(BrokerConfig.from_url(url), f"publisher-{meter}")

    def on_receipt(topic: str, payload: bytes) -> None:
        message = json.loads(payload)
        if message.get("type") == "included":  # checked as the agent checks it
            seqs = [tx["seq"] for tx in message["txs"]]
            _height, proven, _rejected = verify_included(
                message,
                meter=meter,
                payloads={seq: p for seq, _t, p in outbox.messages(seqs)},
                community=community,
                validators=validators,
                quorum=quorum,
            )
            outbox.confirm(proven)
            return
        try:
            notice = open_notice(payload, community=community, meter=meter, trusted=validators)
        except Rejected:
            return  # a receipt, or a forged notice
        outbox.confirm(list(notice.seqs))

    bus.subscribe(Topics.receipts(community, meter), on_receipt)
    bus.start()
    bus.wait_connected(10)
    for seq, topic, payload in outbox.pending():
        bus.publish(topic, payload, on_ack=lambda s=seq: outbox.ack(s))
    print("ready", flush=True)
    topic = Topics.readings(community, meter)
    n = 0
    while not drain and (count is None or n < count):
        n += 1

        def build(seq: int, n: int = n) -> tuple[str, bytes]:
            body = {"interval": int(interval), "import_wh": n, "export_wh": 0, "serial": "S", "profile": "p"}
            env = sign_envelope(
                key, type="reading", community=community, seq=seq, body=body, created=int(time.time())
            )
            return topic, env.to_bytes()

        seq, _, payload = outbox.add(build)
        bus.publish(topic, payload, on_ack=lambda s=seq: outbox.ack(s))
        if count is None:
            time.sleep(0.02)
    # like the agent: wait until the ledger confirmed everything, resending what it has not
    deadline = time.monotonic() + 150
    while (outbox.depth() or outbox.awaiting_confirmation()) and time.monotonic() < deadline:
        for seq, topic_, payload in outbox.due_for_resend(20.0):
            bus.publish(topic_, payload, on_ack=lambda s=seq: outbox.ack(s))
        time.sleep(0.1)
    bus.stop()
    sys.exit(0 if outbox.depth() == 0 and outbox.awaiting_confirmation() == 0 else 1)


if __name__ == "__main__":
    main()


def ledger_seqs(ledger_db: str, msg_type: str = "reading") -> dict[str, list[int]]:
    """Per signer, the seqs of its messages of one type in a node's ledger (read-only)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{ledger_db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT signer, seq FROM txs WHERE type = ?", (msg_type,)).fetchall()
    finally:
        conn.close()
    out: dict[str, list[int]] = {}
    for signer, seq in rows:
        out.setdefault(signer, []).append(seq)
    return out


def publisher_command(key_file, state_file, c, url: str, *options: str) -> list[str]:
    """The command line that runs this publisher for a LocalCommunity ``c`` (options: "--drain"
    or "--count", "N")."""
    trust = {
        "validators": {v.id: v.sec1_hex for v in c.validators},
        "quorum": c.genesis.doc["chain"]["quorum"],
    }
    return [
        sys.executable,
        "-m",
        "tests.reliability.power_cut_publisher",
        str(key_file),
        str(state_file),
        c.community,
        str(c.genesis.time),
        url,
        json.dumps(trust),
        *options,
    ]
