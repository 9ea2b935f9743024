"""SunSpec (issue 18 items 3-5): every meter model 201-204 and 211-214, acc32 counters (0 is
0 Wh: found in a QA pass), and SolarEdge-style chains where the meter's own common block (not
the inverter's) holds its serial. Real simulators over loopback TCP."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from meter_agent.modbus_reader import MeterValueUnavailable
from meter_agent.probe import probe_meter
from meter_agent.profile import find_profile, load_profile

from .conftest import EVENING
from .test_reader_simulator import assert_matches

PHASES = {201: 1, 202: 2, 203: 3, 204: 3, 211: 1, 212: 2, 213: 3, 214: 3}


@pytest.mark.parametrize("model", sorted(PHASES))
def test_every_meter_model_is_read(start_sim, reader_for, model):
    sim = start_sim("sunspec", sunspec_model=model)
    reader = reader_for(sim)
    sample = reader.read()
    assert sample.sunspec_model == model
    assert_matches(sample, sim.truth(), "sunspec", phases=True)
    assert len(sample.voltage_v) == len(sample.current_a) == PHASES[model]
    assert sample.serial == sim.meter_serial
    assert reader.sunspec_models_seen == (1, model)


@pytest.mark.parametrize("model", [203, 213])
def test_solaredge_chain_takes_the_meters_own_serial(start_sim, reader_for, model):
    sim = start_sim("sunspec", sunspec_model=model, sunspec_inverter=True)
    reader = reader_for(sim)
    sample = reader.read()
    assert reader.sunspec_models_seen == (1, 103, 1, model)
    assert sample.serial == sim.meter_serial  # not the inverter's serial from the first block
    assert_matches(sample, sim.truth(), "sunspec", phases=True)
    # the inverter's common block (ID at 40002, SN at +50) is really there, with another serial
    client = ModbusTcpClient("127.0.0.1", port=sim.port, timeout=1, retries=0)
    client.connect()
    try:
        words = client.read_holding_registers(40002 + 50, count=16, device_id=1).registers
    finally:
        client.close()
    inverter_sn = b"".join(w.to_bytes(2, "big") for w in words).rstrip(b"\0").decode()
    assert inverter_sn != sim.meter_serial and inverter_sn.endswith(sim.meter_serial)


def test_an_unimplemented_scale_factor_makes_its_points_unavailable(start_sim, reader_for, tmp_path):
    """SunSpec's 'not implemented' scale factor (0x8000) still reads as 'not available': here
    import_wh is pointed at model 203's VA_SF (offset 27), which the simulated meter leaves
    unimplemented."""
    text = Path(find_profile("sunspec").source).read_text()
    text = text.replace('name = "sunspec"', 'name = "unimplemented-sf"')
    text = re.sub(r"\nmodels = \[[^]]*\]", "\nmodels = [203]", text)
    head = text[: text.index("[sunspec.model.213]")]
    head = head.replace(
        'import_wh = { offset = 46, encoding = "acc32", sf_offset = 54 }',
        'import_wh = { offset = 46, encoding = "acc32", sf_offset = 27 }',
    )
    path = tmp_path / "unimplemented-sf.toml"
    path.write_text(head)
    sim = start_sim("sunspec", sunspec_model=203)
    with pytest.raises(MeterValueUnavailable) as info:
        reader_for(sim, load_profile(path)).read()
    assert info.value.names == ("import_wh",)


@pytest.mark.parametrize(("name", "unit"), [("sunspec", 1), ("kostal-ksem", 1), ("fronius-smart-meter", 240)])
def test_an_acc32_counter_that_is_really_0_reads_0_wh(start_sim, reader_for, name, unit):
    """Found in a QA pass: a SunSpec int meter (model 203) whose export counter is 0 Wh (a home
    without PV, a new meter before its first export) was a permanent meter fault: 'import_wh,
    export_wh not available', because acc32 0 was read as SunSpec's 'not implemented'. A meter
    that implements the model implements its energy totals: 0 is 0 Wh."""
    sim = start_sim(
        name, sunspec_model=203, unit_id=unit, start_time=EVENING, export_wh=0.0, import_wh=5000.0
    )
    sample = reader_for(sim).read()
    assert sample.sunspec_model == 203
    assert sample.export_wh == 0
    assert sample.import_wh == 5000
    assert sample.power_w > 0  # a winter evening: the home imports


def test_a_model_203_meter_from_zero_reads_zero(start_sim, reader_for):
    """A new meter: both counters 0 Wh (the simulator's swap_meter())."""
    sim = start_sim("sunspec", sunspec_model=203, start_time=EVENING)
    sim.swap_meter()
    sample = reader_for(sim).read()
    assert (sample.import_wh, sample.export_wh) == (0, 0)
    assert sample.serial == sim.meter_serial


def test_probe_names_the_models_it_saw(start_sim):
    sim = start_sim("sunspec", sunspec_model=211, sunspec_inverter=True)
    from meter_agent.modbus_reader import TcpTarget

    target = TcpTarget("127.0.0.1", sim.port)
    (result,) = probe_meter([(find_profile("sunspec"), target)], [1], 0.5, 10)
    assert result.verdict == "match"
    assert "SunSpec model 211 (chain 1, 103, 1, 211)" in result.detail


def _model_203_registers(sim) -> list[int]:
    """Model 203 as served: the ID register at 40070 (40000 'SunS', 40002 common block of 68)."""
    client = ModbusTcpClient("127.0.0.1", port=sim.port, timeout=1, retries=0)
    client.connect()
    try:
        return client.read_holding_registers(40070, count=60, device_id=sim.unit_id).registers
    finally:
        client.close()


def test_a_zero_counter_leaves_the_other_counter_a_sane_scale_factor(start_sim):
    """Found in a QA pass: with export 0 Wh the simulator served TotWh_SF 6 and TotWhImp [0, 0]
    (the import of 5000 Wh rounded away), because it raised the shared scale factor looking for
    one that moves 0 off acc32's old 'not implemented' value, which none can."""
    sim = start_sim("sunspec", sunspec_model=203, start_time=EVENING, export_wh=0.0, import_wh=5000.0)
    regs = _model_203_registers(sim)
    assert regs[0] == 203
    assert regs[38:40] == [0, 0]  # TotWhExp
    assert regs[46:48] == [0, 5000]  # TotWhImp
    assert regs[54] == 0  # TotWh_SF
