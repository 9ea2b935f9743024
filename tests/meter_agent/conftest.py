"""Fixtures for the meter tests: a household and simulators that are always stopped."""

from __future__ import annotations

import pytest

from meter_agent.household import Household
from meter_agent.modbus_reader import MeterReader, TcpTarget
from meter_agent.profile import find_profile
from meter_agent.simulator import MeterSimulator
from tests.support.localnet import LocalCommunity, make_community

# 2025-06-21 10:00 UTC: midday in Berlin, the simulated home exports.
MIDDAY = 1750500000
# 2025-01-15 20:00 UTC: a winter evening, the home imports.
EVENING = 1736971200
# the market an agent's tests trade in: 15-minute intervals, gate 5 minutes before
AGENT_MARKET = {"interval_s": 900, "gate_s": 300, "feed_in_price": 80000, "retail_price": 300000}


def community_of(sim: MeterSimulator) -> LocalCommunity:
    """A one-validator market community whose one meter is ``sim``'s (its serial enrolled: the
    agent offers nothing for a meter whose serial is not), begun a day before ``sim``'s clock."""
    return make_community(
        validators=1,
        members=1,
        meters_per_member=1,
        app="market",
        time=int(sim.clock.now()) - 86400,
        app_params=AGENT_MARKET,
        serials=[sim.meter_serial],
    )


@pytest.fixture
def household() -> Household:
    return Household(pv_kwp=5.0, annual_kwh=3500.0, seed=7)


@pytest.fixture
def start_sim(household):
    """start_sim(profile, **options) -> a running MeterSimulator with a paused clock."""
    started: list[MeterSimulator] = []

    def start(profile: str = "sdm630", paused: bool = True, **options) -> MeterSimulator:
        options.setdefault("start_time", MIDDAY)
        sim = MeterSimulator(profile, options.pop("household", household), **options)
        started.append(sim)
        sim.start()
        if paused:
            sim.clock.pause()
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def reader_for():
    """reader_for(sim, profile=None, **options) -> a TCP reader (fast timeouts), closed after the test."""
    readers: list[MeterReader] = []

    def make(sim: MeterSimulator, profile=None, **options) -> MeterReader:
        options.setdefault("timeout_s", 0.3)
        options.setdefault("retries", 0)
        options.setdefault("unit_id", sim.unit_id)
        prof = profile if profile is not None else find_profile(sim.profile.name)
        reader = MeterReader(prof, TcpTarget("127.0.0.1", sim.port), **options)
        readers.append(reader)
        return reader

    yield make
    for reader in readers:
        reader.close()
