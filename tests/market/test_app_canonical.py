"""The market app under hypothesis: every result and every state it produces lies in the canonical
domain, and our fast encoding of it equals RFC 8785 (the ``rfc8785`` package) byte for byte.

Random blocks of orders (in and out of range, above capacity, cancellations) and readings (plausible,
jumps up to 2^53 - 1, counters backwards, other serials, late and corrected) over a few intervals,
executed block by block as the engine does (the roots check every value they hash).
"""

from __future__ import annotations

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.block import result_root
from chain.canonical import check_value, dumps_checked
from chain.engine import genesis_state
from chain.execute import execute_block
from chain.messages import MAX_COUNTER_WH
from market.app import MarketApp
from tests.support.localnet import make_community
from tests.support.market_ledger import PARAMS, T0

COMMUNITY = make_community(
    validators=1, members=4, meters_per_member=1, app="market", app_params=PARAMS, time=T0, capacity_w=11_000
)
INTERVAL_S = PARAMS["interval_s"]
PRICES = (0, 79_999, 80_000, 95_000, 95_000, 150_000, 150_000, 300_000, 300_001)

orders = st.tuples(
    st.just("order"),
    st.integers(0, 3),  # meter
    st.sampled_from(("sell", "buy")),
    # energy_wh: 0 cancels; 2,750 Wh is what 11 kW move in 900 s
    st.one_of(st.integers(1, 2750), st.sampled_from((0, 2751, 100_000_000))),
    st.sampled_from(PRICES),
    st.sampled_from((1, 1, 1, 2, 4)),  # intervals ahead
)
counter = st.one_of(st.integers(0, 20_000), st.integers(0, MAX_COUNTER_WH))
readings = st.tuples(
    st.just("reading"),
    st.integers(0, 3),
    st.integers(-4, -1),  # intervals back (the interval that ended, or earlier)
    st.one_of(st.none(), st.tuples(counter, counter)),  # None: plausible counters, else these
    st.sampled_from((True, True, True, False)),  # the enrolled serial, or another one
)
# a round: meters 0 and 1 sell, 2 and 3 buy for the next interval; all four read the last two
order_round = st.lists(
    st.tuples(st.integers(1, 2750), st.integers(80_000, 300_000)), min_size=4, max_size=4
).map(
    lambda offers: [
        ("order", m, "sell" if m < 2 else "buy", energy_wh, price, 1)
        for m, (energy_wh, price) in enumerate(offers)
    ]
)
reading_round = st.just([("reading", m, back, None, True) for m in range(4) for back in (-2, -1)])
blocks = st.lists(
    st.tuples(
        st.sampled_from((1, 300, 600, 900, 1800, 2700)),  # seconds to the next block
        st.one_of(order_round, reading_round, st.just([])),
        st.lists(st.one_of(orders, readings), max_size=8),
    ).map(lambda b: (b[0], b[1] + b[2])),
    min_size=1,
    max_size=16,
)


def sign(op: tuple, now: int):
    c = COMMUNITY
    aligned = now - now % INTERVAL_S
    if op[0] == "order":
        _, meter, side, energy_wh, price, ahead = op
        interval = aligned + ahead * INTERVAL_S
        body = {"side": side, "interval": interval, "energy_wh": energy_wh, "limit_price": price}
    else:
        _, meter, back, counters, enrolled = op
        interval = aligned + back * INTERVAL_S
        k = (interval - T0) // INTERVAL_S  # plausible: 1,000 Wh in and 1,500 Wh out per interval
        import_wh, export_wh = counters or (100_000 + 1000 * k + meter, 200_000 + 1500 * k)
        serial = c.genesis.doc["meters"][c.meters[meter].id]["serial"] if enrolled else "OTHER-1"
        body = {
            "interval": interval,
            "import_wh": import_wh,
            "export_wh": export_wh,
            "serial": serial,
            "profile": "sim",
        }
    return c.meters[meter].sign(c.community, op[0], body, created=now)


def assert_canonical(value) -> None:
    check_value(value)
    assert dumps_checked(value) == rfc8785.dumps(value)


@settings(max_examples=150)
@given(blocks)
def test_every_result_and_state_of_the_market_app_is_canonical(plan):
    app = MarketApp()
    state = genesis_state(COMMUNITY.genesis, app)
    now = T0
    for height, (step_s, ops) in enumerate(plan, start=1):
        now += step_s
        txs = [sign(op, now) for op in ops]
        execution = execute_block(state, app, height=height, time=now, txs=txs, verify_signatures=False)
        result_root(execution.results)  # refuses a value outside the domain
        for result in execution.results:
            assert_canonical(result)
        state = execution.state
        for namespace, entries in state.items():
            for key, value in entries.items():
                assert_canonical([namespace, key, value])
        assert sum(state["app"]["balances"].values()) == 0
