"""The simulator serves each profile's real register map; the reader decodes its true values.

One test reads the simulator with plain pymodbus calls at the raw addresses of the project's
meter facts (meters.md, hard-coded here), so simulator and profile cannot both be wrong in the
same way.
"""

from __future__ import annotations

import re
import struct
import threading
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from meter_agent.modbus_reader import MeterDiscoveryError, MeterReader, TcpTarget, plan_requests
from meter_agent.profile import ValueSpec, find_profile, load_profile

from .conftest import EVENING

# Counter resolution of each encoding (Wh): float32 kWh ~0.1 Wh at 1 MWh, EM340 counts 100 Wh.
RESOLUTION_WH = {"sdm630": 1, "sdm120": 1, "em340": 50, "shelly-pro-3em": 1, "sunspec": 1}
CASES = [
    ("sdm630", None),
    ("sdm120", None),
    ("em340", None),
    ("shelly-pro-3em", None),
    ("sunspec", 203),
    ("sunspec", 213),
]


def assert_matches(sample, truth, profile_name, phases):
    assert sample.power_w == pytest.approx(truth.power_w, abs=1.0)
    assert sample.import_wh == pytest.approx(truth.import_wh, abs=RESOLUTION_WH[profile_name])
    assert sample.export_wh == pytest.approx(truth.export_wh, abs=RESOLUTION_WH[profile_name])
    if phases:
        assert sample.voltage_v == pytest.approx(truth.voltage_v, abs=0.1)
        assert sample.current_a == pytest.approx(truth.current_a, abs=0.01)
        assert sample.frequency_hz == pytest.approx(truth.frequency_hz, abs=0.01)
    assert sample.serial in (None, truth.serial)


@pytest.mark.parametrize(("name", "model"), CASES)
@pytest.mark.parametrize("when", ["midday", "evening"])
def test_reader_decodes_the_true_values(start_sim, reader_for, name, model, when):
    options = {"sunspec_model": model} if model else {}
    if when == "evening":
        options["start_time"] = EVENING
    sim = start_sim(name, **options)
    reader = reader_for(sim)
    try:
        sample = reader.read()
        truth = sim.truth()
        phases = name not in ("shelly-pro-3em",)
        assert_matches(sample, truth, name, phases)
        assert (sample.power_w < 0) == (when == "midday")  # PV exports at midday in June
        assert sample.sunspec_model == model
        if name in ("sdm630", "sunspec"):
            assert sample.serial == truth.serial
            assert len(sample.voltage_v) == 3 and len(sample.phase_power_w) == 3
        if name == "sdm120":
            assert len(sample.voltage_v) == 1 and sample.phase_power_w == ()
        # the counters integrate the household's power over simulated time and only grow
        sim.clock.advance(3600)
        later = reader.read()
        grown = (later.import_wh - sample.import_wh) + (later.export_wh - sample.export_wh)
        assert later.import_wh >= sample.import_wh and later.export_wh >= sample.export_wh
        assert grown > 50  # about an hour of a home's net power
    finally:
        reader.close()


def test_batching_uses_as_few_requests_as_the_map_allows(start_sim, reader_for):
    sim = start_sim("sdm630")
    reader = reader_for(sim)
    reader.read()
    # 0x00-0x11 (V, A, W per phase), 0x34 (W), 0x46-0x4B (Hz, kWh+, kWh-), 0xFC00 (serial)
    assert reader.requests_sent == 4
    reader.close()


def test_plan_requests_splits_at_the_meter_limit():
    def spec(address, count=2, function=4):
        return ValueSpec(f"v{address}", address, "float32", count=count, function=function)

    specs = [spec(a) for a in range(0, 20, 2)] + [spec(40), spec(100, function=3)]
    assert plan_requests(specs, 60) == [(4, 0, 20), (4, 40, 2), (3, 100, 2)]
    assert plan_requests(specs, 6) == [(4, 0, 6), (4, 6, 6), (4, 12, 6), (4, 18, 2), (4, 40, 2), (3, 100, 2)]
    with pytest.raises(ValueError):
        plan_requests([spec(0, count=4)], 2)


def test_small_request_limit_still_decodes(start_sim, reader_for, tmp_path):
    text = Path(find_profile("sdm630").source).read_text().replace("max_registers = 60", "max_registers = 4")
    path = tmp_path / "sdm630-small.toml"
    path.write_text(text.replace('name = "sdm630"', 'name = "sdm630-small"'))
    profile = load_profile(path)
    sim = start_sim(profile)
    reader = reader_for(sim, profile)
    sample = reader.read()
    assert reader.requests_sent == 5 + 1 + 2 + 1  # 18 regs in 4s, 2, 6 in 4s, serial
    assert_matches(sample, sim.truth(), "sdm630", phases=True)
    reader.close()


def test_user_profile_with_inverted_sign(start_sim, reader_for, tmp_path):
    """A device that reports export as positive power: the profile's invert flag fixes the sign."""
    text = Path(find_profile("em340").source).read_text()
    text = text.replace('name = "em340"', 'name = "exporter"').replace("invert = false", "invert = true")
    path = tmp_path / "exporter.toml"
    path.write_text(text)
    profile = load_profile(path)
    sim = start_sim(profile)
    raw = ModbusTcpClient("127.0.0.1", port=sim.port, timeout=1, retries=0)
    regs = raw.read_input_registers(0x28, count=2, device_id=1).registers
    raw.close()
    device_w = struct.unpack(">i", struct.pack(">HH", regs[1], regs[0]))[0] / 10
    truth = sim.truth()
    assert device_w == pytest.approx(-truth.power_w, abs=0.1)  # the device's own convention
    reader = reader_for(sim, profile)
    sample = reader.read()
    assert sample.power_w == pytest.approx(truth.power_w, abs=1)  # peerwatt: export < 0
    assert sum(sample.phase_power_w) == pytest.approx(truth.power_w, abs=1)
    reader.close()


@pytest.mark.parametrize("base", [0, 50000])
def test_sunspec_discovery_at_other_base_addresses(start_sim, reader_for, base):
    sim = start_sim("sunspec", sunspec_model=203, sunspec_base=base)
    reader = reader_for(sim)
    sample = reader.read()
    assert sample.sunspec_model == 203
    assert_matches(sample, sim.truth(), "sunspec", phases=True)
    first = reader.requests_sent
    reader.read()
    assert reader.requests_sent - first == 2  # discovery is cached: model block + serial
    reader.close()


def test_sunspec_without_a_wanted_model(start_sim, reader_for, tmp_path):
    text = Path(find_profile("sunspec").source).read_text()
    path = tmp_path / "only213.toml"
    text = text.replace('name = "sunspec"', 'name = "only213"')
    text = re.sub(r"\nmodels = \[[^]]*\]", "\nmodels = [213]", text)
    head = text[: text.index("[sunspec.model.203]")]
    model_213 = text[text.index("[sunspec.model.213]") : text.index("# Same point layouts")]
    path.write_text(head + model_213)
    sim = start_sim("sunspec", sunspec_model=203)
    with pytest.raises(MeterDiscoveryError, match="offers models 1, 203, none of 213"):
        reader_for(sim, load_profile(path)).read()


def test_sunspec_marker_missing(start_sim, reader_for):
    sim = start_sim("sdm630")
    with pytest.raises(MeterDiscoveryError, match="no SunSpec marker"):
        reader_for(sim, find_profile("sunspec")).read()


def _raw_reads(port: int, unit_id: int = 1):
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
    client.connect()

    def regs(function: int, address: int, count: int) -> list[int]:
        call = client.read_input_registers if function == 4 else client.read_holding_registers
        response = call(address, count=count, device_id=unit_id)
        assert not response.isError(), response
        return response.registers

    return client, regs


def f32(words):
    return struct.unpack(">f", struct.pack(">HH", *words))[0]


def i32(words):
    return struct.unpack(">i", struct.pack(">HH", *words))[0]


def u32(words):
    return struct.unpack(">I", struct.pack(">HH", *words))[0]


def test_raw_addresses_from_meters_md(start_sim):
    """Register addresses, function codes and encodings straight from the project's meter facts
    (meters.md, from the manufacturers' public maps; not docs/meters.md, which shows profiles),
    not from the profiles. The SunSpec offsets are read on the generic profile's simulator and on
    the Fronius and KOSTAL ones."""
    checks = []
    sim = start_sim("sdm630")
    client, regs = _raw_reads(sim.port)
    t = sim.truth()
    checks += [
        (f32(regs(4, 0x0034, 2)), t.power_w, 0.01),
        (f32(regs(4, 0x0048, 2)) * 1000, t.import_wh, 1),
        (f32(regs(4, 0x004A, 2)) * 1000, t.export_wh, 1),
        (f32(regs(4, 0x0000, 2)), t.voltage_v[0], 0.01),
        (f32(regs(4, 0x0008, 2)), t.current_a[1], 0.01),
        (f32(regs(4, 0x0010, 2)), t.phase_power_w[2], 0.01),
        (f32(regs(4, 0x0046, 2)), t.frequency_hz, 0.01),
    ]
    client.close()

    sim = start_sim("sdm120")
    client, regs = _raw_reads(sim.port)
    t = sim.truth()
    checks += [(f32(regs(4, 0x000C, 2)), t.power_w, 0.01), (f32(regs(4, 0x0048, 2)) * 1000, t.import_wh, 1)]
    client.close()

    sim = start_sim("em340")
    client, regs = _raw_reads(sim.port)
    t = sim.truth()
    lwf = lambda words: i32(words[::-1])  # noqa: E731 - low word first
    checks += [
        (lwf(regs(4, 0x0028, 2)) / 10, t.power_w, 0.06),
        (lwf(regs(4, 0x0034, 2)) * 100, t.import_wh, 50),
        (lwf(regs(4, 0x004E, 2)) * 100, t.export_wh, 50),
    ]
    client.close()

    sim = start_sim("shelly-pro-3em")
    client, regs = _raw_reads(sim.port)
    t = sim.truth()
    checks += [
        (f32(regs(4, 1013, 2)[::-1]), t.power_w, 0.01),
        (f32(regs(4, 1162, 2)[::-1]), t.import_wh, 0.2),
        (f32(regs(4, 1164, 2)[::-1]), t.export_wh, 0.2),
    ]
    client.close()

    # the vendor profiles reuse the SunSpec offsets and their simulators encode with the profile's
    # own codec: without these reads, a vendor profile with TotWhImp and TotWhExp swapped passed
    sunspec_sims = [("sunspec", 1, 203), ("sunspec", 1, 213)]
    sunspec_sims += [("fronius-smart-meter", 240, 213), ("fronius-smart-meter", 240, 203)]
    sunspec_sims += [("kostal-ksem", 1, 203), ("kostal-ksem", 1, 213)]
    for name, unit_id, model in sunspec_sims:
        sim = start_sim(name, unit_id=unit_id, sunspec_model=model)
        client, regs = _raw_reads(sim.port, unit_id)
        t = sim.truth()
        assert regs(3, 40000, 2) == [0x5375, 0x6E53]  # "SunS"
        address = 40002
        blocks = {}
        while True:
            model_id, length = regs(3, address, 2)
            if model_id == 0xFFFF:
                break
            blocks[model_id] = address
            address += 2 + length
        assert list(blocks) == [1, model]
        b = blocks[model]
        if model == 203:

            def i16(offset, b=b, regs=regs):
                return struct.unpack(">h", struct.pack(">H", regs(3, b + offset, 1)[0]))[0]

            sf = i16
            w = i16(18)
            checks += [
                (w * 10 ** sf(22), t.power_w, 1),
                (u32(regs(3, b + 46, 2)) * 10 ** sf(54), t.import_wh, 1),
                (u32(regs(3, b + 38, 2)) * 10 ** sf(54), t.export_wh, 1),
            ]
        else:
            checks += [
                (f32(regs(3, b + 28, 2)), t.power_w, 0.01),
                (f32(regs(3, b + 68, 2)), t.import_wh, 0.2),
                (f32(regs(3, b + 60, 2)), t.export_wh, 0.2),
            ]
        client.close()
    for got, want, tolerance in checks:
        assert got == pytest.approx(want, abs=tolerance)


def test_reader_against_unknown_host_port_is_a_connection_error():
    from meter_agent.modbus_reader import MeterConnectionError

    reader = MeterReader(find_profile("sdm630"), TcpTarget("127.0.0.1", 1), timeout_s=0.2, retries=1)
    with pytest.raises(MeterConnectionError, match="cannot connect.*after 2 attempts"):
        reader.read()


def test_sunspec_layout_change_is_rediscovered(household, reader_for):
    """The device is replaced by one with another model at the same address: one read() (with
    retries) notices the wrong model id, discovers again and returns the new model's values."""
    from meter_agent.simulator import MeterSimulator

    threads_before = threading.active_count()
    first = MeterSimulator("sunspec", household, sunspec_model=203).start()
    reader = reader_for(first, retries=2)  # one attempt meets the closed socket
    assert reader.read().sunspec_model == 203
    port = first.port
    first.stop()
    second = MeterSimulator("sunspec", household, port=port, sunspec_model=213).start()
    try:
        sample = reader.read()
        assert sample.sunspec_model == 213
        assert sample.import_wh == pytest.approx(second.truth().import_wh, abs=1)
    finally:
        second.stop()
        reader.close()
    assert threading.active_count() == threads_before  # no server thread left behind
