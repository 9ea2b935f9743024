"""A meter-like publisher process for the power-cut test: signs readings through the agent's
durable outbox and publishes them; killed with SIGKILL at random moments.

Usage: python -m tests.reliability.power_cut_publisher KEYFILE STATEFILE COMMUNITY INTERVAL URL [--drain]
Seqs start at 1. With --drain it only resends what the outbox holds and exits when everything is acknowledged.
"""

from __future__ import annotations

import sys
import time

from chain.envelope import sign_envelope
from chain.keys import key_id, load_private_key
from meter_agent.outbox import Outbox
from peerwatt.bus import BrokerConfig, MqttBus, Topics


def main() -> None:
    key_file, state_file, community, interval, url = sys.argv[1:6]
    drain = "--drain" in sys.argv
    key = load_private_key(key_file)
    meter = key_id(key.public_key())
    outbox = Outbox(state_file, first_seq=1)
    bus = MqttBus(BrokerConfig.from_url(url), f"publisher-{meter}")
    bus.start()
    bus.wait_connected(10)
    for seq, topic, payload in outbox.pending():
        bus.publish(topic, payload, on_ack=lambda s=seq: outbox.ack(s))
    print("ready", flush=True)
    topic = Topics.readings(community, meter)
    n = 0
    while not drain:
        n += 1

        def build(seq: int, n: int = n) -> tuple[str, bytes]:
            body = {"interval": int(interval), "import_wh": n, "export_wh": 0, "serial": "S", "profile": "p"}
            env = sign_envelope(
                key, type="reading", community=community, seq=seq, body=body, created=int(time.time())
            )
            return topic, env.to_bytes()

        seq, _, payload = outbox.add(build)
        bus.publish(topic, payload, on_ack=lambda s=seq: outbox.ack(s))
        time.sleep(0.02)
    deadline = time.monotonic() + 60
    while outbox.depth() and time.monotonic() < deadline:
        time.sleep(0.05)
    bus.stop()
    sys.exit(0 if outbox.depth() == 0 else 1)


if __name__ == "__main__":
    main()
