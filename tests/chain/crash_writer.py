"""Test helper process: keeps committing blocks to a store until it is killed (crash-safety test)."""

from __future__ import annotations

import sys
from pathlib import Path

from chain.engine import Ledger
from chain.envelope import sign_envelope
from chain.genesis import genesis_from_dict
from chain.keys import generate_private_key, load_private_key, public_key_sec1, save_private_key
from chain.kvapp import KeyValueApp

T0 = 1_764_000_000


def main(data: Path) -> None:
    key_file = data / "validator.key"
    meter_file = data / "meter.key"
    if not key_file.exists():
        data.mkdir(parents=True, exist_ok=True)
        save_private_key(generate_private_key(), key_file)
        save_private_key(generate_private_key(), meter_file)
    key, meter = load_private_key(key_file), load_private_key(meter_file)
    store_dir = data / "node"
    if (store_dir / "ledger.sqlite").exists():
        ledger = Ledger.open(store_dir, KeyValueApp())
    else:
        owner = generate_private_key()
        from chain.keys import key_id

        genesis = genesis_from_dict(
            {
                "community": {"id": "crash", "time": T0, "app": "kv"},
                "validators": [{"key": public_key_sec1(key.public_key()).hex()}],
                "members": [{"key": public_key_sec1(owner.public_key()).hex()}],
                "meters": [
                    {
                        "key": public_key_sec1(meter.public_key()).hex(),
                        "serial": "S",
                        "capacity_w": 1,
                        "owner": key_id(owner.public_key()),
                    }
                ],
            }
        )
        ledger = Ledger.create(store_dir, genesis, KeyValueApp())
    print("ready", flush=True)
    while True:
        height = ledger.height + 1
        t = T0 + height
        txs = [
            sign_envelope(
                meter,
                type="reading",
                community="crash",
                seq=height * 10 + i,
                created=T0,
                body={"interval": T0, "import_wh": height, "export_wh": i, "serial": "S", "profile": "p"},
            )
            for i in range(5)
        ]
        block = ledger.propose(txs, t)
        ledger.commit(block, [ledger.seal(block, key, now=t)])


if __name__ == "__main__":
    main(Path(sys.argv[1]))
