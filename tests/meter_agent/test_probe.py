"""`meter probe` (issue 18 item 7): look-alike maps are told apart by a real register, device
failure is not "not this map", no "CRC" on TCP, and a slow device gets a --timeout hint."""

from __future__ import annotations

import pytest

from meter_agent.modbus_reader import MeterFramingError, MeterReader, TcpTarget
from meter_agent.probe import best, probe_meter
from meter_agent.profile import builtin_profiles, find_profile
from tests.support.cli import peerwatt

from .gateway import FaultyGateway


def probe(sim, names=None):
    profiles = builtin_profiles() if names is None else [find_profile(n) for n in names]
    target = TcpTarget("127.0.0.1", sim.port)
    results = probe_meter([(p, target) for p in profiles], [sim.unit_id], 0.5, 20)
    return {r.profile: r for r in results}, best(results)


def test_an_sdm120_is_not_taken_for_an_sdm630(start_sim):
    results, found = probe(start_sim("sdm120"))
    assert found.profile == "sdm120"
    assert results["sdm630"].verdict == "other-model"  # its system type register reads 0
    assert "system type" in results["sdm630"].detail


def test_an_sdm630_is_identified(start_sim):
    results, found = probe(start_sim("sdm630"))
    assert found.profile == "sdm630" and found.verdict == "identified"
    assert results["sdm120"].verdict == "match"  # the same input registers decode as an SDM120


def test_a_shelly_is_identified_by_its_model_string(start_sim):
    _, found = probe(start_sim("shelly-pro-3em"))
    assert found.profile == "shelly-pro-3em" and found.verdict == "identified"
    assert "SPEM-003CEBEU" in found.detail


def test_look_alikes_without_a_telling_register_are_reported_as_ambiguous(start_sim):
    """No register is known that tells an SDM230 from an SDM120: the probe says so instead of
    choosing one by its name."""
    sim = start_sim("sdm230")
    out = peerwatt("meter", "probe", "--host", "127.0.0.1", "--port", str(sim.port), "--timeout", "0.3")
    assert out.returncode == 0, out.stderr
    found = out.stdout.strip().splitlines()[-1]
    assert "ambiguous" in found and "sdm230" in found and "sdm120" in found


def test_an_sdm72dm_is_identified(start_sim):
    # its map (sdm_modbus SDM72V2) has no serial register at 0xFC00, which the SDM630 and
    # SDM120 maps read: those fail with exception 2; its own system type register confirms it
    results, found = probe(start_sim("sdm72dm"))
    assert found.profile == "sdm72dm" and found.verdict == "identified"
    assert results["sdm630"].verdict == "error"


@pytest.mark.parametrize(("code", "words"), [(4, "device failure"), (6, "device busy"), (2, "not this map")])
def test_exception_labels(start_sim, code, words):
    sim = start_sim("sdm630")
    sim.inject("exception", code=code)
    results, found = probe(sim, ["sdm630"])
    assert found is None
    assert words in results["sdm630"].detail
    if code != 2:
        assert "not this map" not in results["sdm630"].detail


def test_no_crc_wording_on_tcp():
    with FaultyGateway("garbage") as gateway:
        reader = MeterReader(find_profile("sdm630"), TcpTarget("127.0.0.1", gateway.port), timeout_s=0.3)
        try:
            with pytest.raises(MeterFramingError) as info:
                reader.read()
        finally:
            reader.close()
    assert "CRC" not in str(info.value) and "Modbus TCP frame" in str(info.value)
    assert "for another unit id" in str(info.value) and "timeout_s" in str(info.value)  # not only cabling


def test_a_silent_device_gets_a_timeout_hint(start_sim):
    sim = start_sim("sdm630")
    sim.inject("timeout")
    out = peerwatt(
        "meter", "probe", "--host", "127.0.0.1", "--port", str(sim.port), "--timeout", "0.2", timeout=60
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "longer --timeout (now 0.2 s)" in out.stderr


def test_nothing_listening_is_not_blamed_on_a_profile():
    """Found in a QA pass: with nothing at the address, the error named the first profile tried
    ("abb-b23 meter at ...: cannot connect"), as if that meter were there."""
    from peerwatt.errors import UserError
    from peerwatt.ports import free_port

    target = TcpTarget("127.0.0.1", free_port())
    with pytest.raises(UserError) as caught:
        probe_meter([(p, target) for p in builtin_profiles()], [1], 0.5, 5)
    said = str(caught.value)
    assert said.startswith(f"cannot connect to {target.describe()}"), said
    assert not any(f"{p.name} meter" in said for p in builtin_profiles()), said
