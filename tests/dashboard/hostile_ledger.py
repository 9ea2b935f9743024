"""A small market ledger whose members chose hostile names and notes (after the QA pass's
/tmp/qa-dash/w/hostile.py): a name ending in an unclosed RIGHT-TO-LEFT OVERRIDE, a 64-character
name without a break (the longest genesis and add_member allow), C0 controls, a Hebrew name, a
community and a validator name with bidi controls, a proposal whose args hold HTML and quotes,
and votes. Three sellers (the first three members) and three buyers every interval, so every
household trades and has receipts; the first blocks clear, later ones settle."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from chain.engine import Ledger
from chain.genesis import Genesis
from chain.keys import generate_private_key
from market.app import MarketApp
from tests.dashboard.ledger_fixture import APP_PARAMS, GATE_S, INTERVAL_S, START, TZ, _run_block
from tests.support.localnet import LocalCommunity, Party, make_community

RLO = "\u202e"
NAMES = (
    f"Mallory{RLO}",  # an unclosed override: flipped the text after it ("sey :Á exe.png")
    "W" * 64,  # no place to break: pushed pages sideways
    "Nul\x00Bel\x07Esc\x1b",  # C0 controls: boxes
    "\u05e9\u05e8\u05d4 \u05db\u05d4\u05df",  # a Hebrew name, as a member may rightly choose
    "Bob",
    "Carol",
)
COMMUNITY_NAME = f"Oak{RLO}Street\x07"
VALIDATOR_NAME = f"Val{RLO}idator"
SERIAL = "'\"><x>"  # in a proposal's args: tojson showed "\u0027\"\u003e\u003cx\u003e"
NOTE = f"please vote {RLO}gnp.exe\x00 soon"
NEW_MEMBER_NAME = f"Dave{RLO}"
INTERVALS = 12


@dataclass
class HostileLedger:
    data_dir: Path
    community: LocalCommunity
    meters: list[str]  # in NAMES order
    last_block_time: int


def build_hostile(base_dir: Path) -> HostileLedger:
    c = make_community(
        community="evil-lane",
        time=START - 3600,
        validators=3,
        members=len(NAMES),
        app="market",
        app_params=APP_PARAMS,
        capacity_w=10_000,
    )
    doc = c.genesis.doc
    doc["community"]["name"] = COMMUNITY_NAME
    doc["community"]["timezone"] = TZ
    for member, meter, name in zip(c.members, c.meters, NAMES, strict=True):
        doc["members"][member.id]["name"] = name
        doc["meters"][meter.id].pop("name", None)  # one meter each: named like its member
    for v in c.validators:
        doc["validators"][v.id]["name"] = VALIDATOR_NAME
    c.genesis = Genesis(doc)
    serials = {kid: m["serial"] for kid, m in doc["meters"].items()}
    ledger = Ledger.create(base_dir / "validator-0", c.genesis, MarketApp())
    comm = c.community
    counters = {m.id: [1000, 1000] for m in c.meters}
    new_meter = Party(generate_private_key())
    new_member = Party(generate_private_key())
    proposals = []
    t = START
    for k in range(INTERVALS):
        t = START + k * INTERVAL_S + INTERVAL_S - GATE_S
        txs = []
        ended = START + (k - 1) * INTERVAL_S
        for i, m in enumerate(c.meters):
            if k >= 1:
                counters[m.id][1 if i < 3 else 0] += 300 + 10 * i
            body = {
                "interval": ended,
                "import_wh": counters[m.id][0],
                "export_wh": counters[m.id][1],
                "serial": serials[m.id],
                "profile": "sim",
            }
            txs.append(m.sign(comm, "reading", body, created=t))
        target = START + (k + 2) * INTERVAL_S
        for i, m in enumerate(c.meters):
            side = "sell" if i < 3 else "buy"
            body = {
                "side": side,
                "interval": target,
                "energy_wh": 200 + i,
                "limit_price": 100_000 if side == "sell" else 200_000,
            }
            txs.append(m.sign(comm, "order", body, created=t))
        if k == 2:
            owner = c.members[2].id
            args = {"key": new_meter.sec1_hex, "serial": SERIAL, "owner": owner, "capacity_w": 5000}
            proposals = [
                c.members[1].sign(
                    comm,
                    "propose",
                    {"action": "enroll_meter", "args": args, "deadline": t + 86400 * 7, "note": NOTE},
                    created=t,
                ),
                c.members[0].sign(
                    comm,
                    "propose",
                    {
                        "action": "add_member",
                        "args": {"key": new_member.sec1_hex, "name": NEW_MEMBER_NAME},
                        "deadline": t + 86400 * 7,
                        "note": "",
                    },
                    created=t,
                ),
            ]
            txs += proposals
        if k == 3:
            for proposal in proposals:
                for i in (0, 2, 3):
                    vote = {"proposal": proposal.tx_hash.hex(), "vote": "yes"}
                    txs.append(c.members[i].sign(comm, "vote", vote, created=t))
        _run_block(ledger, c, txs, t)
    ledger.close()
    return HostileLedger(base_dir / "validator-0", c, [m.id for m in c.meters], t)
