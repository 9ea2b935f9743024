"""The household model: deterministic for a seed, PV zero at night and peaking near solar noon,
annual consumption scaled right."""

from __future__ import annotations

import calendar

import pytest

from meter_agent.household import H0_SHAPE, Household, SolarSite, Weather

JUNE_21 = calendar.timegm((2025, 6, 21, 0, 0, 0))


def test_deterministic_for_a_seed():
    times = [JUNE_21 + 37 * k for k in range(0, 86400 // 37, 97)]
    a, b, c = Household(seed=5), Household(seed=5), Household(seed=6)
    assert [a.net_power_w(t) for t in times] == [b.net_power_w(t) for t in times]
    assert [a.net_power_w(t) for t in times] != [c.net_power_w(t) for t in times]
    # order of calls does not matter
    assert [b.net_power_w(t) for t in reversed(times)] == [a.net_power_w(t) for t in reversed(times)]


def test_pv_zero_at_night_and_peaking_near_solar_noon():
    site = SolarSite(52.52, 13.40)
    home = Household(lat=52.52, lon=13.40, seed=1)
    for day in range(0, 365, 30):
        midnight = JUNE_21 + day * 86400 - 13.40 / 15 * 3600  # local solar midnight, roughly
        assert home.pv_power_w(midnight) == 0.0
    minutes = [JUNE_21 + 60 * m for m in range(1440)]
    solar_noon = max(minutes, key=site.elevation_deg)
    assert abs(solar_noon - (JUNE_21 + 12 * 3600 - 13.40 / 15 * 3600)) < 20 * 60  # EoT is small in June
    assert site.elevation_deg(solar_noon) == pytest.approx(90 - 52.52 + 23.44, abs=0.3)
    peak = max(minutes, key=site.clear_sky_poa_w_m2)
    assert abs(peak - solar_noon) < 15 * 60  # south-facing plane
    assert 900 < site.clear_sky_poa_w_m2(peak) < 1150
    night = [t for t in minutes if site.elevation_deg(t) < 0]
    assert night and all(home.pv_power_w(t) == 0.0 for t in night)
    # on a clear day the PV output itself peaks within an hour of solar noon
    weather = Weather(seed=3)
    clear_day = next(
        JUNE_21 + d * 86400 for d in range(60) if weather.day_kind(JUNE_21 + d * 86400) == "clear"
    )
    sunny = Household(pv_kwp=5.0, seed=1, weather=weather)
    day_minutes = [clear_day + 60 * m for m in range(1440)]
    best = max(day_minutes, key=sunny.pv_power_w)
    assert abs((best - clear_day) - (solar_noon - JUNE_21)) < 3600
    assert 3000 < sunny.pv_power_w(best) <= 5000


def test_annual_load_scaling_over_a_year_of_quarter_hours():
    start = calendar.timegm((2025, 1, 1, 0, 0, 0))
    for seed, annual in ((1, 3500.0), (2, 1800.0)):
        home = Household(annual_kwh=annual, pv_kwp=0.0, seed=seed)
        energy_kwh = sum(home.load_power_w(start + q * 900 + 450) for q in range(365 * 96)) * 0.25 / 1000
        assert energy_kwh == pytest.approx(annual, rel=0.05)


def test_load_shape_has_an_evening_peak_and_a_night_low():
    shape = H0_SHAPE[("winter", "workday")]
    assert len(shape) == 96 and max(shape) == max(shape[68:84]) and min(shape) == min(shape[8:24])
    home = Household(seed=4, lon=15.0)  # local standard time UTC+1
    nights = [home.load_power_w(JUNE_21 + d * 86400 + 2 * 3600) for d in range(30)]  # 03:00 local
    evenings = [home.load_power_w(JUNE_21 + d * 86400 + 19 * 3600) for d in range(30)]  # 20:00 local
    assert sum(evenings) > 1.5 * sum(nights)


def test_net_power_is_load_minus_pv():
    home = Household(seed=9)
    t = JUNE_21 + 11 * 3600
    assert home.net_power_w(t) == pytest.approx(home.load_power_w(t) - home.pv_power_w(t))


@pytest.mark.parametrize(
    "kwargs",
    [{"pv_kwp": -1}, {"annual_kwh": float("nan")}, {"lat": 91}, {"lon": 200}, {"tilt_deg": 95}],
)
def test_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        Household(**kwargs)
