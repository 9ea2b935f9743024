"""Profiles ABB B23/B24, Carlo Gavazzi EM24, Chint DTSU666-H, Fronius Smart Meter and KOSTAL
KSEM (issue 18, "more meters"): each decodes a register image written down here from its
independent published map (not from our profile), the simulator answers plain pymodbus reads
that follow that map, and `meter probe` names the right profile for each simulator."""

from __future__ import annotations

import struct
from dataclasses import replace
from decimal import Decimal

import pytest
from pymodbus.client import ModbusTcpClient

from meter_agent.modbus_reader import TcpTarget
from meter_agent.probe import best, probe_meter
from meter_agent.profile import builtin_profiles, find_profile


def words(fmt: str, value) -> list[int]:
    """Registers (high word first) of one big-endian struct value."""
    data = struct.pack(">" + fmt, value)
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def lwf(fmt: str, value) -> list[int]:
    return list(reversed(words(fmt, value)))


# name -> {value name: (registers as the published map documents them, expected value)}
IMAGES = {
    # mbmd abb.go / Victron abb.py: int32 x0.01 W, uint64 x0.01 kWh, uint32 x0.1 V, uint16 x0.01 Hz
    "abb-b23": {
        "power_w": (words("i", -123456), Decimal("-1234.56")),
        "import_wh": (words("Q", 1234567), Decimal("12345670")),  # 12345.67 kWh
        "export_wh": (words("Q", 89), Decimal("890")),
        "voltage_l1_v": (words("I", 2301), Decimal("230.1")),
        "frequency_hz": (words("H", 4998), Decimal("49.98")),
        "serial": (words("I", 21734567), Decimal("21734567")),
    },
    # mbmd carlogavazzi-em24.go: INT32 low word first, W x10, kWh x10, Hz INT16 x10
    "em24": {
        "power_w": (lwf("i", -15234), Decimal("-1523.4")),
        "import_wh": (lwf("i", 123456), Decimal("12345600")),  # 12345.6 kWh
        "export_wh": (lwf("i", 70000), Decimal("7000000")),
        "voltage_l2_v": (lwf("i", 2312), Decimal("231.2")),
        "frequency_hz": (words("h", 500), Decimal("50.0")),
    },
    # Tasmota xnrg_26_dtsu666h: float32 high word first, W, kWh, V
    "dtsu666-h": {
        "power_w": (words("f", -750.5), Decimal("-750.5")),
        "import_wh": (words("f", 4781.5), Decimal("4781500")),
        "export_wh": (words("f", 6.25), Decimal("6250")),
        "voltage_l1_v": (words("f", 230.25), Decimal("230.25")),
    },
}
# mbmd abb.go: an all-ones value means "not available"
ABB_NOT_AVAILABLE = {"power_w": words("i", 0x7FFFFFFF), "import_wh": [0xFFFF] * 4}


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_profile_decodes_the_published_register_image(name):
    profile = find_profile(name)
    for value, (registers, expected) in IMAGES[name].items():
        spec = profile.values[value]
        assert spec.count == len(registers), value
        assert spec.decode(registers) == expected, value


def test_abb_all_ones_is_not_available():
    profile = find_profile("abb-b23")
    for value, registers in ABB_NOT_AVAILABLE.items():
        assert profile.values[value].decode(registers) is None


# (function, address, count, decode) per published map, read with plain pymodbus
MAP_READS = {
    "abb-b23": [
        (3, 0x5B14, 2, lambda r: struct.unpack(">i", struct.pack(">HH", *r))[0] / 100, "power_w"),
        (3, 0x5000, 4, lambda r: struct.unpack(">Q", struct.pack(">4H", *r))[0] * 10, "import_wh"),
        (3, 0x5004, 4, lambda r: struct.unpack(">Q", struct.pack(">4H", *r))[0] * 10, "export_wh"),
    ],
    "em24": [
        (4, 0x28, 2, lambda r: struct.unpack(">i", struct.pack(">HH", r[1], r[0]))[0] / 10, "power_w"),
        (4, 0x42, 2, lambda r: struct.unpack(">i", struct.pack(">HH", r[1], r[0]))[0] * 100, "import_wh"),
        (4, 0x5C, 2, lambda r: struct.unpack(">i", struct.pack(">HH", r[1], r[0]))[0] * 100, "export_wh"),
    ],
    "dtsu666-h": [
        (4, 0x2012, 2, lambda r: struct.unpack(">f", struct.pack(">HH", *r))[0], "power_w"),
        (4, 0x401E, 2, lambda r: struct.unpack(">f", struct.pack(">HH", *r))[0] * 1000, "import_wh"),
        (4, 0x4028, 2, lambda r: struct.unpack(">f", struct.pack(">HH", *r))[0] * 1000, "export_wh"),
        (3, 0x2012, 2, lambda r: struct.unpack(">f", struct.pack(">HH", *r))[0], "power_w"),
    ],
}


@pytest.mark.parametrize("name", sorted(MAP_READS))
def test_simulator_answers_the_published_map(start_sim, name):
    sim = start_sim(name)
    truth = sim.truth()
    client = ModbusTcpClient("127.0.0.1", port=sim.port, timeout=1, retries=0)
    client.connect()
    try:
        for function, address, count, decode, value in MAP_READS[name]:
            call = client.read_input_registers if function == 4 else client.read_holding_registers
            response = call(address, count=count, device_id=sim.unit_id)
            assert not response.isError(), (name, hex(address), response)
            got = decode(response.registers)
            assert got == pytest.approx(getattr(truth, value), rel=1e-4, abs=100), (name, value)
        if name == "abb-b23":  # the model register Victron's probe reads
            model = client.read_holding_registers(0x8960, count=2, device_id=sim.unit_id).registers
            assert b"".join(r.to_bytes(2, "big") for r in model) == b"B23 "
    finally:
        client.close()


def probe(sim):
    target = TcpTarget("127.0.0.1", sim.port)
    results = probe_meter([(p, target) for p in builtin_profiles()], [sim.unit_id], 0.5, 30)
    return {r.profile: r for r in results}, best(results)


@pytest.mark.parametrize(
    ("name", "options", "verdict"),
    [
        ("abb-b23", {}, "identified"),
        ("em24", {}, "match"),
        ("dtsu666-h", {"unit_id": 11}, "match"),
        ("kostal-ksem", {"sunspec_model": 203}, "identified"),
        ("fronius-smart-meter", {"unit_id": 240, "sunspec_model": 213}, "identified"),
        ("fronius-smart-meter", {"unit_id": 240, "sunspec_model": 203}, "identified"),
    ],
)
def test_probe_names_the_meter(start_sim, name, options, verdict):
    results, found = probe(start_sim(name, **options))
    assert found is not None and found.profile == name, {k: (r.verdict, r.detail) for k, r in results.items()}
    assert found.verdict == verdict
    others = [r for r in results.values() if r.profile != name and r.verdict == found.verdict]
    assert others == [] or found.verdict == "identified" and all(r.checked < found.checked for r in others)


def test_a_kostal_is_not_taken_for_a_fronius(start_sim):
    results, found = probe(start_sim("kostal-ksem", sunspec_model=203))
    assert found.profile == "kostal-ksem"
    assert results["fronius-smart-meter"].verdict == "other-model"
    assert "KOSTAL" in results["fronius-smart-meter"].detail
    assert results["sunspec"].verdict == "match"  # the generic profile still reads it


@pytest.mark.parametrize(
    ("name", "unit_id", "model"),
    [("fronius-smart-meter", 240, 213), ("fronius-smart-meter", 240, 203), ("kostal-ksem", 1, 203)],
)
def test_sunspec_vendor_profile_reads_like_the_generic_one(start_sim, reader_for, name, unit_id, model):
    """The generic profile's offsets are checked against meters.md (test_reader_simulator.py); a
    vendor profile whose offsets differ from them (TotWhImp and TotWhExp swapped) reads otherwise."""
    sim = start_sim(name, unit_id=unit_id, sunspec_model=model)
    truth = sim.truth()
    sample = reader_for(sim).read()
    generic = reader_for(sim, find_profile("sunspec")).read()
    assert sample.profile == name and generic.profile == "sunspec"
    assert replace(generic, profile=name, time=sample.time) == sample
    assert sample.unit_id == unit_id and sample.serial == truth.serial and sample.sunspec_model == model
    assert sample.import_wh == pytest.approx(truth.import_wh, abs=1)
    assert sample.export_wh == pytest.approx(truth.export_wh, abs=1)
