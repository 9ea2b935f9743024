"""SML files that are valid (CRC and all) but whose counters or power are not usable: the fault
says which value and why. Found in a QA pass: a counter in the wrong unit or a negative counter
read 'import_wh not in the SML file ... PIN is entered', pointing at the wrong cause."""

from __future__ import annotations

import pytest

from meter_agent import sml_simulator as S
from meter_agent.modbus_reader import MeterValueUnavailable
from tests.meter_agent.test_sml import read_once

SERVER = bytes([0x0A, 0x01]) + b"DZG\x00" + (12345).to_bytes(4, "big")
GOOD = {"imp": (S.UNIT_WH, -1, 10_000_000), "exp": (S.UNIT_WH, -1, 4_000_000), "pwr": (S.UNIT_W, 0, 500)}


def sml_file(**changes: object) -> bytes:
    """A PublicOpen, GetList (1.8.0, 2.8.0, 16.7.0 as given: (unit, scaler, value) or None to
    leave it out) and Close, written with the simulator's SML encoder."""
    specs = {**GOOD, **changes}
    entries = [S.list_entry(S.obis(1, 0, 0, 0, 9), None, None, SERVER)]
    for code, spec in (
        ((1, 0, 1, 8, 0), specs["imp"]),
        ((1, 0, 2, 8, 0), specs["exp"]),
        ((1, 0, 16, 7, 0), specs["pwr"]),
    ):
        if spec is not None:
            entries.append(S.list_entry(S.obis(*code), *spec))
    open_res = S.sml_list(S.NONE, S.NONE, S.octets(b"\0\0\0\1"), S.octets(SERVER), S.NONE, S.NONE)
    get_list = S.sml_list(
        S.NONE,
        S.octets(SERVER),
        S.octets(S.obis(1, 0, 98, 10, 0xFF)),
        S.sml_list(S.unsigned(1), S.unsigned(1, 4)),
        S.sml_list(*entries),
        S.NONE,
        S.NONE,
    )
    payload = (
        S.message(b"\0\0\0\1", 0x0101, open_res)
        + S.message(b"\0\0\0\2", 0x0701, get_list)
        + S.message(b"\0\0\0\3", 0x0201, S.sml_list(S.NONE))
    )
    return S.transport(payload)


def test_the_file_written_here_reads():
    sample = read_once(sml_file())
    assert (sample.import_wh, sample.export_wh, sample.power_w) == (1_000_000, 400_000, 500)


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"imp": (S.UNIT_W, -1, 10_000_000)}, "import_wh: 1-0:1.8.0 is in W, not Wh"),
        ({"exp": (31, -1, 10)}, "export_wh: 1-0:2.8.0 is in unit code 31, not Wh"),
        ({"pwr": (S.UNIT_WH, 0, 500)}, "power_w: 1-0:16.7.0 is in Wh, not W"),
        ({"imp": (S.UNIT_WH, -1, -10)}, "import_wh: 1-0:1.8.0 is -1.0 Wh: a counter cannot be negative"),
        ({"imp": (S.UNIT_WH, -1, b"12345")}, "import_wh: 1-0:1.8.0 is '12345', not a number"),
    ],
)
def test_a_value_present_but_not_usable_says_which_and_why(changes, says):
    with pytest.raises(MeterValueUnavailable) as caught:
        read_once(sml_file(**changes))
    assert says in str(caught.value)
    assert "PIN" not in str(caught.value) and "not in the SML file" not in str(caught.value)


def test_a_missing_power_still_points_at_the_pin():
    with pytest.raises(MeterValueUnavailable) as caught:
        read_once(sml_file(pwr=None))
    assert "power_w: 1-0:16.7.0 is not in the SML file" in str(caught.value)
    assert "PIN" in str(caught.value) and caught.value.names == ("power_w",)
