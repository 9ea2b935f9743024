"""Profiles are data: the shipped files validate, bad files fail with one line naming file and key,
and the value codec round-trips every encoding, word order and scale."""

from __future__ import annotations

import math
import struct
from decimal import Decimal

import pytest

from meter_agent.profile import (
    ENCODINGS,
    SUNSPEC_NOT_IMPLEMENTED,
    ProfileError,
    ValueSpec,
    builtin_profiles,
    find_profile,
    load_profile,
    profile_names,
)

SDM_LIKE = """
name = "my-meter"
description = "test"
function = 4
max_registers = 60
[defaults]
encoding = "float32"
[values]
power_w = { address = 0x0034 }
import_wh = { address = 0x0048, scale = 1000 }
export_wh = { address = 0x004A, scale = 1000 }
"""


def test_shipped_profiles_load_and_hold_the_required_values():
    names = {p.name: p for p in builtin_profiles()}
    assert set(names) == {
        "sdm630", "sdm120", "sdm230", "sdm72dm", "em340", "em24", "abb-b23", "dtsu666-h",
        "shelly-pro-3em", "sunspec", "kostal-ksem", "fronius-smart-meter",
    }  # fmt: skip
    for profile in names.values():
        assert {"power_w", "import_wh", "export_wh"} <= set(profile.value_names)
    assert names["sdm630"].values["power_w"].address == 0x34
    assert names["sdm630"].values["serial"].function == 3
    assert names["em340"].values["power_w"].word_order == "little"
    assert names["em340"].values["import_wh"].scale == Decimal(100)
    assert names["sdm120"].transport.baudrate == 2400
    assert names["sunspec"].sunspec.base_addresses == (40000, 0, 50000)
    assert [m.model_id for m in names["sunspec"].sunspec.models] == [213, 211, 212, 214, 203, 201, 202, 204]
    assert names["sunspec"].sunspec.model(203).values["power_w"].sf_offset == 22


def test_user_profile_found_by_name_in_an_extra_folder(tmp_path):
    (tmp_path / "my-meter.toml").write_text(SDM_LIKE)
    assert "my-meter" in profile_names([tmp_path])
    profile = find_profile("my-meter", [tmp_path])
    assert profile.name == "my-meter" and profile.values["import_wh"].scale == Decimal(1000)
    assert find_profile(str(tmp_path / "my-meter.toml")).name == "my-meter"


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda t: t + "\ncolour = 'red'\n", "colour: unknown key"),
        (
            lambda t: t.replace("export_wh = { address = 0x004A, scale = 1000 }", ""),
            "values.export_wh: missing",
        ),
        (lambda t: t.replace('encoding = "float32"', 'encoding = "flot32"'), "values.power_w.encoding"),
        (
            lambda t: t.replace("{ address = 0x0034 }", "{ address = 0x0034, word_order = 'middle' }"),
            "values.power_w.word_order",
        ),
        (lambda t: t.replace("{ address = 0x0034 }", "{ adress = 0x0034 }"), "values.power_w.adress"),
        (lambda t: t.replace("function = 4", "function = 5"), "function"),
        (lambda t: t.replace("scale = 1000 }", "scale = -1 }", 1), "values.import_wh.scale"),
        (lambda t: t.replace("max_registers = 60", "max_registers = 200"), "max_registers"),
        (lambda t: t + "[values.voltage_l9_v]\naddress = 1\n", "values.voltage_l9_v"),
        (lambda t: t.replace('name = "my-meter"', "name = 3"), "name"),
        (lambda t: t + "[transport]\nparity = 'X'\n", "transport.parity"),
    ],
)
def test_bad_profile_is_one_line_naming_file_and_key(tmp_path, change, key):
    path = tmp_path / "bad.toml"
    path.write_text(change(SDM_LIKE))
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and key in message


def test_unreadable_and_unknown_profiles(tmp_path):
    (tmp_path / "x.toml").write_text("name = [")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(tmp_path / "x.toml")
    with pytest.raises(ProfileError, match="file not found"):
        load_profile(tmp_path / "missing.toml")
    with pytest.raises(ProfileError, match="unknown meter profile 'nope'.*sdm630"):
        find_profile("nope")
    (tmp_path / "other.toml").write_text(SDM_LIKE)  # declares name my-meter
    with pytest.raises(ProfileError, match="name"):
        find_profile("other", [tmp_path])


def test_sunspec_profile_needs_offsets_for_every_model(tmp_path):
    from pathlib import Path

    text = Path(find_profile("sunspec").source).read_text()
    path = tmp_path / "s.toml"
    path.write_text(text.replace("models = [213, 211,", "models = [213, 215, 211,"))
    with pytest.raises(ProfileError, match="sunspec.model.215: missing"):
        load_profile(path)


@pytest.mark.parametrize("encoding", [e for e in ENCODINGS if e != "string"])
@pytest.mark.parametrize("word_order", ["big", "little"])
def test_codec_round_trip(encoding, word_order):
    count = ENCODINGS[encoding][0]
    spec = ValueSpec("power_w", 0, encoding, word_order, Decimal("0.1"), 4, count)
    regs = spec.encode(1234.5)
    assert len(regs) == count and all(0 <= r <= 0xFFFF for r in regs)
    if encoding in ("int16", "uint16"):
        assert spec.decode(regs) == Decimal("1234.5")
    else:
        assert float(spec.decode(regs)) == pytest.approx(1234.5, rel=1e-6)


def test_codec_against_struct_word_orders():
    big = ValueSpec("power_w", 0, "float32", "big", Decimal(1), 4, 2)
    little = ValueSpec("power_w", 0, "float32", "little", Decimal(1), 4, 2)
    hi, lo = struct.unpack(">HH", struct.pack(">f", -321.25))
    assert big.decode([hi, lo]) == Decimal("-321.25")
    assert little.decode([lo, hi]) == Decimal("-321.25")
    em = ValueSpec("import_wh", 0, "int32", "little", Decimal(100), 4, 2)
    hi, lo = struct.unpack(">HH", struct.pack(">i", 123456))  # 12345.6 kWh
    assert em.decode([lo, hi]) == Decimal(12345600)


def test_not_available_sentinels_and_nan():
    nan_regs = list(struct.unpack(">HH", struct.pack(">f", math.nan)))
    f32 = ValueSpec("power_w", 0, "float32", "big", Decimal(1), 4, 2)
    assert f32.decode(nan_regs) is None
    assert f32.decode(list(struct.unpack(">HH", struct.pack(">f", math.inf)))) is None
    sunspec = find_profile("sunspec").sunspec
    w = sunspec.model(203).values["power_w"]
    assert w.decode([0x8000]) is None and w.decode([0x7FFF]) == Decimal(32767)
    # acc32 energy: 0 is 0 Wh (found in a QA pass: read as 'not implemented', a home without PV
    # could never be read), all bits set is a value too
    acc = sunspec.model(203).values["import_wh"]
    assert acc.decode([0, 0]) == Decimal(0) and acc.decode([0, 5], 3) == Decimal(5000)
    assert acc.decode([0xFFFF, 0xFFFF]) == Decimal(0xFFFFFFFF)
    # the other 'not implemented' values stay: int16 0x8000 (above), uint16 0xFFFF, float NaN
    uint16 = ValueSpec("frequency_hz", 0, "uint16", not_available=SUNSPEC_NOT_IMPLEMENTED["uint16"])
    assert uint16.decode([0xFFFF]) is None and uint16.decode([0]) == Decimal(0)
    assert sunspec.model(213).values["export_wh"].decode(nan_regs) is None
    declared = ValueSpec("power_w", 0, "int32", "little", Decimal(1), 4, 2, frozenset({0x7FFFFFFF}))
    assert declared.decode([0xFFFF, 0x7FFF]) is None


def test_string_serial_ignores_word_order():
    spec = find_profile("shelly-pro-3em").values["serial"]
    regs = spec.encode("A8032ABE54DC")
    assert spec.decode(regs) == "A8032ABE54DC"
