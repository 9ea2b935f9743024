"""Faults real meters produce, injected into the simulator: each one gives the typed error or
counter event, and the reader recovers when the meter answers again."""

from __future__ import annotations

import time

import pytest

from meter_agent.counters import EnergyCounters
from meter_agent.modbus_reader import (
    MeterConnectionError,
    MeterExceptionResponse,
    MeterTimeout,
    MeterValueUnavailable,
)


def test_timeout_then_recovery(start_sim, reader_for):
    sim = start_sim("sdm630")
    reader = reader_for(sim, timeout_s=0.2, retries=1)
    sim.inject("timeout")
    started = time.monotonic()
    with pytest.raises(MeterTimeout, match=r"no answer within 0.2 s .*after 2 attempts") as info:
        reader.read()
    assert time.monotonic() - started < 1.5  # bounded: 2 attempts x 0.2 s (+ connect)
    assert "\n" not in str(info.value) and "unit 1" in str(info.value)
    sim.clear_faults()
    assert reader.read().import_wh > 0


def test_timed_fault_ends_by_itself(start_sim, reader_for):
    sim = start_sim("sdm630")
    reader = reader_for(sim, timeout_s=0.2)
    sim.inject("timeout", duration_s=0.3)
    with pytest.raises(MeterTimeout):
        reader.read()
    time.sleep(0.35)
    assert sim.active_faults() == []
    reader.read()


def test_wrong_unit_id_gets_no_answer(start_sim, reader_for):
    sim = start_sim("sdm630")
    with pytest.raises(MeterTimeout, match="unit 2"):
        reader_for(sim, unit_id=2, timeout_s=0.2).read()


@pytest.mark.parametrize(("code", "retried"), [(4, False), (6, True)])
def test_exception_response(start_sim, reader_for, code, retried):
    sim = start_sim("sdm630")
    reader = reader_for(sim, retries=2)
    sim.inject("exception", code=code)
    with pytest.raises(MeterExceptionResponse) as info:
        reader.read()
    assert info.value.code == code and f"Modbus exception {code}" in str(info.value)
    assert reader.requests_sent == (3 if retried else 1)  # busy is retried, device failure is not
    sim.clear_faults()
    assert reader.read().power_w == pytest.approx(sim.truth().power_w, abs=1)


def test_gateway_closes_the_connection(start_sim, reader_for):
    sim = start_sim("sdm630")
    reader = reader_for(sim)
    reader.read()  # connected
    sim.inject("disconnect")
    with pytest.raises(MeterConnectionError, match="closed by the meter or gateway") as info:
        reader.read()
    assert info.value.closed_by_peer
    sim.clear_faults()
    assert reader.read().export_wh > 0  # reconnects by itself


def test_a_dropped_idle_connection_is_retried_transparently(start_sim, reader_for):
    sim = start_sim("sdm630")
    reader = reader_for(sim, retries=1)
    reader.read()
    sim.drop_connections()  # the gateway closes the idle socket between two polls
    before = reader.requests_sent
    assert reader.read().import_wh > 0
    assert reader.requests_sent - before == 1 + 4  # one request hit the closed socket, then a full poll


def test_close_between_polls(start_sim, reader_for):
    sim = start_sim("sunspec", sunspec_model=213)
    reader = reader_for(sim, close_between_polls=True)
    reader.read()
    assert reader._client is None  # socket closed after the poll
    reader.read()  # reconnects; the discovered SunSpec layout is kept


# SunSpec 203's counters are acc32, which have no 'not available' value (0 is 0 Wh): its
# int16 power (0x8000) stands in for them
@pytest.mark.parametrize(
    ("name", "model", "value"),
    [("sdm630", None, "import_wh"), ("sunspec", 203, "power_w"), ("sunspec", 213, "import_wh")],
)
def test_nan_and_sentinels_read_as_unavailable(start_sim, reader_for, name, model, value):
    sim = start_sim(name, **({"sunspec_model": model} if model else {}))
    reader = reader_for(sim)
    sim.inject("nan", values=[value])
    with pytest.raises(MeterValueUnavailable, match=f"{value} not available") as info:
        reader.read()
    assert info.value.names == (value,)
    sim.clear_faults()
    sim.inject("nan", values=["voltage_l2_v", "frequency_hz"])
    sample = reader.read()  # a missing measurement is None, not an error
    assert sample.voltage_v[1] is None and sample.voltage_v[0] is not None
    assert sample.frequency_hz is None
    sim.clear_faults()
    assert reader.read().voltage_v[1] is not None


def test_nan_needs_an_encoding_for_it(start_sim):
    sim = start_sim("em340")
    with pytest.raises(ValueError, match="no 'not available' encoding"):
        sim.inject("nan")
    sim = start_sim("sunspec", sunspec_model=203)  # acc32 counters: 0 is 0 Wh
    with pytest.raises(ValueError, match=r"import_wh \(acc32\) has no 'not available' encoding"):
        sim.inject("nan", values=["import_wh"])


def test_counter_glitch_reset_backwards_and_meter_swap(start_sim, reader_for):
    """Counter faults go through the reader into EnergyCounters as events, never as energy."""
    sim = start_sim("sdm630", start_time=1736971200)  # winter evening: the home imports
    reader = reader_for(sim)
    counters = EnergyCounters()

    def poll(advance_s: float = 60.0):
        sim.clock.advance(advance_s)
        sample = reader.read()
        return sample, counters.update(
            int(sim.clock.now()), sample.import_wh, sample.export_wh, sample.serial
        )

    first, update = poll()
    assert update.import_wh.status == "first"
    second, update = poll(900)
    assert update.import_wh.status == "ok"
    assert update.import_wh.energy_wh == second.import_wh - first.import_wh > 0

    sim.inject("zero")  # counters glitch to 0
    _, update = poll()
    assert update.import_wh.status == "unavailable" and update.events == ()
    sim.clear_faults()
    _, update = poll()
    assert update.import_wh.status == "ok"

    sim.inject("counter_backwards", amount_wh=500)  # one reading lower, then back: a glitch
    _, update = poll()
    assert [e.kind for e in update.events] == ["counter_backwards", "counter_backwards"]
    sim.clear_faults()
    _, update = poll()
    assert update.import_wh.status == "ok" and update.events == ()

    sim.inject("counter_backwards", amount_wh=500)  # stays lower: adopted after confirmation
    _, update = poll()
    assert update.import_wh.status == "suspect"
    _, update = poll()
    assert update.import_wh.status == "rebased"
    assert [e.kind for e in update.events] == ["counter_rebased", "counter_rebased"]
    _, update = poll()
    assert update.import_wh.status == "ok"
    sim.clear_faults()
    _, update = poll()  # back up by 500 Wh: a plausible rise, the meter's word is taken
    assert update.import_wh.status == "ok"

    sim.inject("counter_reset")  # the meter's counters restart from zero, same serial
    _, update = poll()
    assert {(e.kind, e.counter) for e in update.events} >= {("counter_reset", "import_wh")}
    assert update.import_wh.energy_wh is None
    _, update = poll()
    assert any(e.kind == "counter_rebased" for e in update.events)
    _, update = poll()
    assert update.import_wh.status == "ok"

    old_serial = sim.meter_serial
    new_serial = sim.swap_meter()
    sample, update = poll()
    assert sample.serial == new_serial != old_serial
    assert [e.kind for e in update.events] == ["serial_changed"]
    assert update.import_wh.status == "meter_changed" and update.import_wh.energy_wh is None
    _, update = poll()
    assert update.import_wh.status == "ok" and update.import_wh.energy_wh > 0
