"""EnergyCounters (pure): forward deltas only; glitches, resets and swaps never book energy."""

from __future__ import annotations

import json
import math
from decimal import Decimal

import pytest

from meter_agent.counters import EnergyCounters

T0 = 1_750_000_000


def feed(counters, readings, serial=None):
    """readings: [(seconds after T0, import_wh, export_wh)] -> list of updates."""
    return [counters.update(T0 + dt, imp, exp, serial) for dt, imp, exp in readings]


def test_forward_deltas_and_first_reading():
    c = EnergyCounters()
    first, second, third = feed(c, [(0, 1000, 500), (900, 1250, 500), (1800, 1300, 620)])
    assert first.import_wh.status == "first" and first.import_wh.energy_wh is None
    assert (second.import_wh.energy_wh, second.import_wh.since) == (250, T0)
    assert (second.export_wh.energy_wh, second.export_wh.status) == (0, "ok")
    assert (third.export_wh.energy_wh, third.export_wh.since) == (120, T0 + 900)
    assert c.baseline("import_wh") == (1300, T0 + 1800)


@pytest.mark.parametrize("bad", [None, math.nan, math.inf, -5, 0xFFFFFFFF, Decimal("NaN"), True])
def test_unusable_values_are_unavailable_and_change_nothing(bad):
    c = EnergyCounters()
    feed(c, [(0, 1000, 500)])
    (update,) = feed(c, [(60, bad, 500)])
    assert update.import_wh.status == "unavailable" and update.import_wh.energy_wh is None
    assert update.import_wh.since == T0 and update.events == ()
    (update,) = feed(c, [(120, 1010, 500)])
    assert (update.import_wh.energy_wh, update.import_wh.since) == (10, T0)  # spans the gap


def test_glitch_to_zero_books_nothing():
    c = EnergyCounters()
    updates = feed(c, [(0, 5_000_000, 10), (60, 0, 0), (120, 5_000_010, 10)])
    assert updates[1].import_wh.status == "unavailable" and updates[1].events == ()
    assert updates[1].export_wh.status == "unavailable"
    assert updates[2].import_wh.energy_wh == 10  # not 5,000,010


def test_zero_is_fine_when_the_counter_really_is_zero():
    c = EnergyCounters()
    updates = feed(c, [(0, 1000, 0), (60, 1001, 0)])
    assert updates[1].export_wh.energy_wh == 0 and updates[1].export_wh.status == "ok"


def test_one_off_backwards_glitch_is_ignored():
    c = EnergyCounters()
    updates = feed(c, [(0, 10_000, 0), (60, 9_990, 0), (120, 10_005, 0)])
    assert [e.kind for e in updates[1].events] == ["counter_backwards"]
    assert updates[1].import_wh.status == "suspect" and updates[1].import_wh.energy_wh is None
    assert updates[2].import_wh.energy_wh == 5 and updates[2].events == ()


def test_reset_is_reported_then_adopted_after_confirmation():
    c = EnergyCounters(confirm_readings=2)
    updates = feed(c, [(0, 800_000, 0), (60, 3, 0), (120, 9, 0), (180, 20, 0)])
    assert [(e.kind, e.previous, e.current) for e in updates[1].events] == [("counter_reset", 800_000, 3)]
    assert [e.kind for e in updates[2].events] == ["counter_rebased"]
    assert updates[2].import_wh.status == "rebased" and updates[2].import_wh.energy_wh is None
    assert updates[3].import_wh.energy_wh == 11  # energy resumes from the adopted level


def test_implausible_jump_is_suspect():
    c = EnergyCounters(max_power_w=50_000)
    updates = feed(c, [(0, 1000, 0), (60, 99_000_000, 0), (120, 1020, 0)])
    assert [e.kind for e in updates[1].events] == ["counter_jump"]
    assert updates[1].import_wh.energy_wh is None
    assert updates[2].import_wh.energy_wh == 20
    # a long gap makes a large rise plausible: 10 kWh over a day is fine
    (update,) = feed(c, [(86_400, 11_020, 0)])
    assert update.import_wh.energy_wh == 10_000


def test_a_counter_rising_one_step_every_poll_is_not_energy():
    """Found in a QA pass: the slack for coarse counters (one 100 Wh step) was granted again on
    every poll, so an export counter rising 100 Wh every 5 s (72 kW) on a 10 kW connection was
    all "ok": 17.9 kWh counted in one interval, learnt by the forecast and offered. The slack
    holds once, against the earliest reading that bounds the new one: the second step is a jump
    (the agent marks the interval faulty, so the forecast never learns it)."""
    c = EnergyCounters(max_power_w=10_000, resolution_wh=100)
    updates = [c.update(T0 + 5 * i, 1000, 20_000 + 100 * i) for i in range(180)]
    assert [e.kind for e in updates[2].events] == ["counter_jump"]
    assert updates[2].export_wh.status == "suspect"
    assert sum(u.export_wh.status == "ok" for u in updates) < 90


@pytest.mark.parametrize("seed", range(20))
def test_an_honest_coarse_counter_is_never_suspect(seed):
    """A counter shown in 100 Wh steps of a true energy that rises at any power up to the maximum
    (here often at it) is always plausible, whatever the poll times."""
    import random

    rng = random.Random(seed)
    c = EnergyCounters(max_power_w=10_000, resolution_wh=100)
    true_wh, t = 12_345.0, T0
    shown = []
    for _ in range(2000):
        dt = rng.choice([1, 5, 5, 5, 30, 300])
        t += dt
        power_w = rng.choice([0, 10_000, 10_000, rng.uniform(0, 10_000)])
        true_wh += power_w * dt / 3600
        shown.append(int(true_wh // 100 * 100))
        update = c.update(t, shown[-1], 0)
        assert update.import_wh.status in ("ok", "first"), (update, true_wh)
    assert c.baseline("import_wh")[0] == shown[-1]


def test_serial_change_restarts_both_counters():
    c = EnergyCounters()
    feed(c, [(0, 900_000, 40_000)], serial="A1")
    (swap,) = feed(c, [(60, 2, 0)], serial="B2")
    assert [(e.kind, e.previous, e.current) for e in swap.events] == [("serial_changed", "A1", "B2")]
    assert swap.import_wh.status == swap.export_wh.status == "meter_changed"
    (after,) = feed(c, [(120, 7, 1)], serial="B2")
    assert (after.import_wh.energy_wh, after.export_wh.energy_wh) == (5, 1)


def test_floats_are_rounded_once():
    c = EnergyCounters()
    feed(c, [(0, 1000.4, 0.0)])
    (update,) = feed(c, [(60, 1002.5, 0.0)])  # 1002.5 -> 1002 (half-even), 1000.4 -> 1000
    assert update.import_wh.energy_wh == 2


def test_state_round_trips_through_a_plain_dict():
    c = EnergyCounters()
    feed(c, [(0, 10_000, 0), (60, 9_000, 0)], serial="S1")  # leaves a pending candidate
    state = json.loads(json.dumps(c.to_dict()))
    restored = EnergyCounters.from_dict(state)
    assert restored.to_dict() == c.to_dict()
    (update,) = feed(restored, [(120, 9_010, 0)], serial="S1")
    assert update.import_wh.status == "rebased"  # the candidate survived the restart


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"version": 1, "serial": 5, "import_wh": {}, "export_wh": {}},
        {"version": 1, "serial": None, "import_wh": {"value": -1, "time": 0, "confirmations": 0}},
        {
            "version": 1,
            "import_wh": {"value": 1, "time": None, "confirmations": 0},
            "export_wh": {"confirmations": 0},
        },
    ],
)
def test_bad_state_is_refused(state):
    with pytest.raises(ValueError, match="counter state"):
        EnergyCounters.from_dict(state)


def test_a_zero_that_holds_for_an_interval_is_a_reset_a_shorter_one_a_glitch():
    """A replaced meter starts at 0 and its export may stay there all night (a QA pass: no
    reading for hours); a 0 for less than zero_confirm_s is still a glitch."""
    c = EnergyCounters(zero_confirm_s=900)
    feed(c, [(0, 1000, 500)])
    glitch = feed(c, [(5, 1001, 0), (600, 1100, 0), (605, 1101, 500)])
    assert [u.export_wh.status for u in glitch] == ["unavailable", "unavailable", "ok"]
    assert all(u.events == () for u in glitch) and glitch[2].export_wh.energy_wh == 0
    held = feed(c, [(700, 1102, 0), (1595, 1200, 0), (1600, 1201, 0), (1605, 1202, 3)])
    assert [u.export_wh.status for u in held] == ["unavailable", "unavailable", "rebased", "ok"]
    assert [(e.kind, e.counter, e.previous, e.current) for e in held[2].events] == [
        ("counter_reset", "export_wh", 500, 0),
        ("counter_rebased", "export_wh", 500, 0),
    ]
    assert held[3].export_wh.energy_wh == 3 and c.baseline("export_wh") == (3, T0 + 1605)


def test_a_new_level_is_adopted_only_after_confirm_s_at_it():
    """A re-check of a QA pass: two readings 5 s apart confirmed a 10 s glitch as a new level."""
    c = EnergyCounters(confirm_s=60)
    updates = feed(c, [(0, 10_000, 0), (5, 9_000, 0), (10, 9_001, 0), (15, 10_002, 0)])
    assert [u.import_wh.status for u in updates] == ["first", "suspect", "suspect", "ok"]
    assert updates[3].import_wh.energy_wh == 2  # from the old level: the glitch is over
    held = feed(c, [(20, 9_000, 0), (50, 9_001, 0), (80, 9_002, 0)])
    assert [u.import_wh.status for u in held] == ["suspect", "suspect", "rebased"]  # 60 s at it


def test_unchanged_counter_after_clock_went_back_is_not_backwards():
    """Found in a QA pass: after NTP set back a clock that ran 120 s ahead, an unchanged counter
    was flagged counter_backwards (407142 -> 407142), the other counter_jump, and the reading
    withheld: the bound built from the readings' (future) times refused the present. The QA's
    repro: a counter that did not move is never 'backwards'."""
    c = EnergyCounters()
    t = 1_796_588_000
    for i in range(5):
        c.update(t + 120 + i, 1_000_000 + i, 407_142)  # clock 120 s ahead
    u = c.update(t + 65, 1_000_010, 407_142)  # after the NTP correction
    assert not u.events, u.events
    assert (u.import_wh.status, u.import_wh.energy_wh) == ("ok", 6)
    assert (u.export_wh.status, u.export_wh.energy_wh) == ("ok", 0)
    assert c.baseline("import_wh") == (1_000_010, t + 65)
    # the readings after it, on the corrected clock, are energy as usual
    after = [c.update(t + 65 + 5 * i, 1_000_010 + 3 * i, 407_142 + i) for i in range(1, 30)]
    assert all(a.events == () and a.import_wh.status == a.export_wh.status == "ok" for a in after)
    assert sum(a.import_wh.energy_wh for a in after) == 3 * 29


def test_a_clock_set_back_does_not_hide_a_glitch():
    """After the clock went back, the counters are checked against their last readings as if no
    time had passed (the time that really passed is unknown): a drop is still backwards, a rise
    beyond what the elapsed time allows still a jump, and a one-step-per-poll counter still a
    jump; a glitch pending at the step is confirmed only by readings over confirm_s on the new
    clock."""
    c = EnergyCounters(max_power_w=10_000, resolution_wh=100)
    feed(c, [(300, 10_000, 5_000), (305, 10_001, 5_000)])
    (back,) = feed(c, [(100, 9_990, 5_500)])  # clock set back 205 s
    assert [(e.kind, e.counter) for e in back.events] == [
        ("counter_backwards", "import_wh"),
        ("counter_jump", "export_wh"),
    ]
    assert back.import_wh.status == back.export_wh.status == "suspect"
    (ok,) = feed(c, [(105, 10_002, 5_001)])  # the glitch is over
    assert ok.events == () and (ok.import_wh.energy_wh, ok.export_wh.energy_wh) == (1, 1)
    # a counter rising a step every poll across a clock step is still a jump
    steps = [c.update(T0 + 110 + 5 * i, 10_002, 5_101 + 100 * i) for i in range(3)]
    steps += [c.update(T0 + 50, 10_002, 5_401)]
    assert [e.kind for u in steps for e in u.events] == ["counter_jump"]
    # a pending candidate is not confirmed by the time the clock lost
    c = EnergyCounters(confirm_s=60)
    pending = feed(c, [(0, 10_000, 0), (100, 9_000, 0), (40, 9_001, 0), (70, 9_002, 0), (101, 9_003, 0)])
    assert [u.import_wh.status for u in pending] == ["first", "suspect", "suspect", "suspect", "rebased"]


@pytest.mark.parametrize("seed", range(5))
def test_an_honest_counter_is_never_suspect_when_the_clock_is_set_back(seed):
    """A clock that jumps ahead and is set back again (NTP) never makes an honest counter suspect."""
    import random

    rng = random.Random(seed)
    c = EnergyCounters(max_power_w=10_000, resolution_wh=100)
    true_wh, t, offset = 12_345.0, T0, 0
    for _ in range(2000):
        t += 5
        true_wh += rng.uniform(0, 5_000) * 5 / 3600
        if rng.random() < 0.01:
            offset = rng.choice([0, 0, 60, 120, 600])  # ahead, or corrected
        update = c.update(t + offset, int(true_wh // 100 * 100), 7)
        assert update.events == (), update
        assert update.import_wh.status in ("ok", "first") and update.export_wh.status in ("ok", "first")
