"""A real market ledger for the dashboard's tests: six households, several days of 15-minute
intervals, built in process with tests.support.localnet (real keys, signatures, blocks and seals).

Deterministic: each household has a simple PV and consumption shape (integer arithmetic). Orders
for an interval are placed two intervals ahead from a sunny-day forecast; readings follow the
actual weather (day 3 is cloudy, so sellers deliver less than they sold: pro-rata shortfalls).
Also on the ledger: a reading that arrives late (trades first unsettled, then an adjustment), a
corrected reading (an adjustment), an order refused after gate closure, a governance vote that
raises the grid fee, and two open proposals (a parameter, and a new member by name). The last block
is mid-afternoon of the last day, so "today" has settled and not yet settled trades and the book
has open orders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric import ec

from chain.engine import SEAL_TTL_S, Ledger
from chain.envelope import sign_envelope
from chain.genesis import Genesis
from chain.keys import public_key_sec1
from market.app import MarketApp
from tests.support.localnet import LocalCommunity, Party, make_community

TZ = "Europe/Berlin"
INTERVAL_S = 900
GATE_S = 300
DAYS = 4
LAST_DAY_INTERVALS = 62  # the last block is at 15:30 local time on the last day
START = int(datetime(2025, 6, 2, tzinfo=ZoneInfo(TZ)).timestamp())  # local midnight, day 1
APP_PARAMS = {
    "interval_s": INTERVAL_S,
    "gate_s": GATE_S,
    "feed_in_price": 80_000,
    "retail_price": 300_000,
    "grid_fee_per_kwh": 0,
    "levies_per_kwh": 10_000,
    "mechanism": "uniform",
    "settle_after_intervals": 2,
}


@dataclass(frozen=True)
class Household:
    name: str
    pv_peak_wh: int  # per 15 minutes at solar noon on a sunny day
    base_wh: int
    peak_wh: int  # morning and evening peaks
    day_extra_wh: int = 0  # 09:00-17:00 (home office)
    ev_wh: int = 0  # 18:00-22:00 (car charging)
    ask: int = 120_000  # limit price of its offers (micro-units/kWh)
    bid: int = 200_000  # limit price of its bids


HOUSEHOLDS = (
    Household("Sunny Villa", 2000, 80, 150, ask=100_000, bid=180_000),
    Household("Family Berger", 1000, 150, 400, ask=110_000, bid=220_000),
    Household("Flat 3B", 0, 100, 250, bid=150_000),
    Household("Home Office Nowak", 700, 120, 200, day_extra_wh=200, ask=130_000, bid=200_000),
    Household("EV Garage Jensen", 1200, 90, 150, ev_wh=1800, ask=115_000, bid=240_000),
    Household("Retirees Okafor", 400, 60, 100, ask=210_000, bid=190_000),
)


# an open add_member proposal's member (a fixed P-256 public key, compressed SEC1)
NEW_MEMBER_NAME = "Anna Huber"
NEW_MEMBER_KEY_HEX = public_key_sec1(ec.derive_private_key(0xA11CE, ec.SECP256R1()).public_key()).hex()


def pv_wh(h: Household, minute: int, day: int, actual: bool) -> int:
    if not 360 < minute < 1200:
        return 0
    wh = h.pv_peak_wh * 4 * (minute - 360) * (1200 - minute) // (840 * 840)
    if actual and day == 2:  # the third day is cloudy
        wh = wh * 45 // 100
    return wh


def load_wh(h: Household, minute: int) -> int:
    wh = h.base_wh
    if 390 <= minute < 510 or 1050 <= minute < 1290:
        wh += h.peak_wh
    if 540 <= minute < 1020:
        wh += h.day_extra_wh
    if 1080 <= minute < 1320:
        wh += h.ev_wh
    return wh


def net_wh(h: Household, interval: int, actual: bool) -> tuple[int, int]:
    """(import_wh, export_wh) of the household in the interval starting at ``interval``."""
    offset = interval - START
    day, minute = offset // 86400, (offset % 86400) // 60
    net = pv_wh(h, minute, day, actual) - load_wh(h, minute)
    return (max(0, -net), max(0, net))


@dataclass
class BuiltLedger:
    """What the tests need to know about the ledger they run against."""

    data_dir: Path
    community: LocalCommunity
    households: dict[str, str]  # meter key id -> household name
    meters: list[str]
    last_block_time: int
    late_reading: tuple[str, int]  # (meter, interval) whose reading came late
    corrected_reading: tuple[str, int]
    counters: dict[str, dict[int, tuple[int, int]]] = field(default_factory=dict)


def _run_block(ledger: Ledger, c: LocalCommunity, txs: list, t: int) -> None:
    """Propose on validator-0 and commit it with every validator's seal.

    Only validator-0 keeps a store (that is the dashboard's data dir). The other validators'
    seals are real signatures of their keys over the real header, made here without their own
    re-execution (that is the engine's tests' business; `verify` re-executes every block anyway),
    which keeps the fixture at a few seconds.
    """
    block = ledger.propose(txs, t)
    seals = [ledger.seal(block, c.validators[0].key, now=t)]
    for validator in c.validators[1:]:
        seals.append(
            sign_envelope(
                validator.key,
                type="seal",
                community=c.community,
                seq=block.height,
                body={"height": block.height, "round": block.header["round"], "header": block.hash.hex()},
                created=t,
                expires=t + SEAL_TTL_S,
            )
        )
    ledger.commit(block, seals)


def build(base_dir: Path) -> BuiltLedger:
    """Run the market ledger in process; validator-0's store is the dashboard's data dir."""
    c = make_community(
        community="oak-street",
        time=START - 3600,
        validators=3,
        members=len(HOUSEHOLDS),
        app="market",
        app_params=APP_PARAMS,
        capacity_w=10_000,
    )
    doc = c.genesis.doc
    doc["community"]["name"] = "Oak Street"
    doc["community"]["timezone"] = TZ
    for member, h in zip(c.members, HOUSEHOLDS, strict=True):
        doc["members"][member.id]["name"] = h.name
        member.name = h.name
    c.genesis = Genesis(doc)
    serials = {kid: meter["serial"] for kid, meter in doc["meters"].items()}  # readings carry their own
    ledger = Ledger.create(Path(base_dir) / "validator-0", c.genesis, MarketApp())
    c.ledgers = [ledger]
    community = c.community
    meters: list[Party] = c.meters
    counters = {m.id: [1_000_000, 500_000] for m in meters}
    history: dict[str, dict[int, tuple[int, int]]] = {m.id: {} for m in meters}
    late_meter, late_interval = meters[2].id, START + 86400 + 48 * INTERVAL_S  # day 2, 12:00
    corrected_meter, corrected_interval = meters[2].id, START + 86400 + 40 * INTERVAL_S  # day 2, 10:00
    held_back = None
    total = (DAYS - 1) * 96 + LAST_DAY_INTERVALS
    last_time = 0
    for k in range(-1, total):
        t = START + k * INTERVAL_S + INTERVAL_S - GATE_S  # gate closure of interval k + 1
        txs = []
        # readings for the interval that has just ended (counters at its end)
        ended = START + (k - 1) * INTERVAL_S
        for m, h in zip(meters, HOUSEHOLDS, strict=True):
            if ended >= START - INTERVAL_S:
                imp, exp = net_wh(h, ended, actual=True) if ended >= START else (0, 0)
                counters[m.id][0] += imp
                counters[m.id][1] += exp
                history[m.id][ended] = tuple(counters[m.id])
                body = {
                    "interval": ended,
                    "import_wh": counters[m.id][0],
                    "export_wh": counters[m.id][1],
                    "serial": serials[m.id],
                    "profile": "sim",
                }
                if (m.id, ended) == (late_meter, late_interval):
                    held_back = body
                    continue
                txs.append(m.sign(community, "reading", body, created=t))
        if held_back is not None and ended == late_interval + 5 * INTERVAL_S:
            txs.append(meters[2].sign(community, "reading", held_back, created=t))
        if ended == corrected_interval + 6 * INTERVAL_S:
            imp, exp = history[corrected_meter][corrected_interval]
            history[corrected_meter][corrected_interval] = (imp - 60, exp)
            fixed = {
                "interval": corrected_interval,
                "import_wh": imp - 60,
                "export_wh": exp,
                "serial": serials[corrected_meter],
                "profile": "sim",
            }
            txs.append(meters[2].sign(community, "reading", fixed, created=t))
        # orders for the interval two ahead, from the sunny forecast
        target = START + (k + 2) * INTERVAL_S
        for m, h in zip(meters, HOUSEHOLDS, strict=True):
            imp, exp = net_wh(h, target, actual=False)
            if exp > 0:
                body = {"side": "sell", "interval": target, "energy_wh": exp * 9 // 10, "limit_price": h.ask}
            elif imp > 0:
                body = {"side": "buy", "interval": target, "energy_wh": imp, "limit_price": h.bid}
            else:
                continue
            txs.append(m.sign(community, "order", body, created=t))
        if k == 20:  # too late: the gate of the next interval closed at this block's time
            late = {
                "side": "buy",
                "interval": START + (k + 1) * INTERVAL_S,
                "energy_wh": 100,
                "limit_price": 200_000,
            }
            txs.append(meters[2].sign(community, "order", late, created=t))
        if k == 96 + 30:  # day 2: raise the grid fee on local trades, by member vote
            proposal = c.members[0].sign(
                community,
                "propose",
                {
                    "action": "set_param",
                    "args": {"name": "grid_fee_per_kwh", "value": 20_000},
                    "deadline": t + 7 * 86400,
                    "note": "grid operator's local-sharing fee",
                },
                created=t,
            )
            txs.append(proposal)
            pending_votes = [
                c.members[i].sign(
                    community, "vote", {"proposal": proposal.tx_hash.hex(), "vote": "yes"}, created=t + 900
                )
                for i in (1, 2, 3)
            ]
        if k == 96 + 31:
            txs.extend(pending_votes)
            txs.append(
                c.members[5].sign(
                    community,
                    "vote",
                    {"proposal": pending_votes[0].body["proposal"], "vote": "no"},
                    created=t,
                )
            )
        if k == total - 3:  # still open at the end
            txs.append(
                c.members[4].sign(
                    community,
                    "propose",
                    {
                        "action": "set_param",
                        "args": {"name": "levies_per_kwh", "value": 5_000},
                        "deadline": t + 14 * 86400,
                    },
                    created=t,
                )
            )
            txs.append(  # a new member proposed by name: pseudonyms must not show the name
                c.members[3].sign(
                    community,
                    "propose",
                    {
                        "action": "add_member",
                        "args": {"key": NEW_MEMBER_KEY_HEX, "name": NEW_MEMBER_NAME},
                        "deadline": t + 14 * 86400,
                    },
                    created=t,
                )
            )
        _run_block(ledger, c, txs, t)
        last_time = t
    return BuiltLedger(
        data_dir=Path(base_dir) / "validator-0",
        community=c,
        households={m.id: h.name for m, h in zip(meters, HOUSEHOLDS, strict=True)},
        meters=[m.id for m in meters],
        last_block_time=last_time,
        late_reading=(late_meter, late_interval),
        corrected_reading=(corrected_meter, corrected_interval),
        counters=history,
    )


@dataclass
class BookLedger:
    """A small community whose open book has 1, 2 and 3 households per side in three intervals."""

    data_dir: Path
    meters: list[str]
    intervals: dict[int, int]  # households per side -> interval start
    orders: dict[str, list[tuple[int, str, int, int]]]  # meter -> [(interval, side, energy_wh, limit_price)]


def build_book(base_dir: Path) -> BookLedger:
    """Six households; in interval k (k = 1, 2, 3) households 0..k-1 offer and 3..3+k-1 bid."""
    c = make_community(
        community="small-lane",
        time=START - 3600,
        validators=3,
        members=6,
        app="market",
        app_params=APP_PARAMS,
    )
    doc = c.genesis.doc
    doc["community"]["timezone"] = TZ
    c.genesis = Genesis(doc)
    ledger = Ledger.create(Path(base_dir) / "validator-0", c.genesis, MarketApp())
    t = START
    intervals = {k: START + (k + 1) * INTERVAL_S for k in (1, 2, 3)}
    txs, orders = [], {}
    for k, interval in intervals.items():
        for i in range(k):
            for side, m, wh, price in (
                ("sell", c.meters[i], 28 + 7 * i + k, 100_000 + 10_000 * k + 1_000 * i),
                ("buy", c.meters[3 + i], 50 + 5 * i + k, 200_000 + 10_000 * k + 1_000 * i),
            ):
                body = {"side": side, "interval": interval, "energy_wh": wh, "limit_price": price}
                txs.append(m.sign(c.community, "order", body, created=t))
                orders.setdefault(m.id, []).append((interval, side, wh, price))
    _run_block(ledger, c, txs, t)
    return BookLedger(
        data_dir=Path(base_dir) / "validator-0",
        meters=[m.id for m in c.meters],
        intervals=intervals,
        orders=orders,
    )


@dataclass
class UnsettledLedger:
    """Two households and one trade that stays unsettled: the seller's end reading never comes."""

    data_dir: Path
    seller: str
    buyer: str
    interval: int


def build_unsettled(
    base_dir: Path, names: tuple[str, str] = ("Seller Sun", "Buyer Moon"), name_meters: bool = False
) -> UnsettledLedger:
    """A seller's reading never comes: the trade stays unsettled. ``names``: the two members';
    ``name_meters``: their meters get the same names."""
    c = make_community(
        community="quiet-lane",
        time=START - 3600,
        validators=3,
        members=2,
        app="market",
        app_params=APP_PARAMS,
        capacity_w=10_000,
    )
    doc = c.genesis.doc
    doc["community"]["timezone"] = TZ
    for member, meter, name in zip(c.members, c.meters, names, strict=True):
        doc["members"][member.id]["name"] = name
        if name_meters:
            doc["meters"][meter.id]["name"] = name
    c.genesis = Genesis(doc)
    serials = {kid: meter["serial"] for kid, meter in doc["meters"].items()}
    ledger = Ledger.create(Path(base_dir) / "validator-0", c.genesis, MarketApp())
    seller, buyer = c.meters
    interval = START + 4 * INTERVAL_S

    def reading(m: Party, at: int, imp: int, exp: int):
        body = {"interval": at, "import_wh": imp, "export_wh": exp, "serial": serials[m.id], "profile": "sim"}
        return m.sign(c.community, "reading", body, created=t)

    t = interval - 2 * INTERVAL_S
    orders = [
        seller.sign(
            c.community,
            "order",
            {"side": "sell", "interval": interval, "energy_wh": 300, "limit_price": 100_000},
            created=t,
        ),
        buyer.sign(
            c.community,
            "order",
            {"side": "buy", "interval": interval, "energy_wh": 200, "limit_price": 200_000},
            created=t,
        ),
    ]
    _run_block(ledger, c, orders, t)
    t = interval - GATE_S  # gate closure: the interval clears
    _run_block(
        ledger,
        c,
        [
            reading(seller, interval - INTERVAL_S, 1000, 5000),
            reading(buyer, interval - INTERVAL_S, 7000, 100),
        ],
        t,
    )
    t = interval + INTERVAL_S - GATE_S
    _run_block(ledger, c, [reading(buyer, interval, 7250, 100)], t)  # the seller's never comes
    for k in range(2, 6):  # past the settlement deadline (settle_after_intervals = 2)
        t = interval + k * INTERVAL_S
        _run_block(ledger, c, [], t)
    return UnsettledLedger(Path(base_dir) / "validator-0", seller.id, buyer.id, interval)
