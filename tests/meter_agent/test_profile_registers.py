"""Profile checks on where values sit (QA pass on meter profiles), refused when the profile is
loaded as one line naming the file and the keys: two values that share a register (a copied line
whose address was left as it was made export read as import, and the agent signed readings with
export = import), and a max_registers below what one value needs in one request (`meter read`
and `meter probe` crashed with a traceback, the agent logged one every interval)."""

from __future__ import annotations

from pathlib import Path

import pytest

from meter_agent.profile import ProfileError, find_profile, load_profile
from tests.support.cli import peerwatt


def shipped_copy(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """A user's copy of a shipped profile with one line changed."""
    text = Path(find_profile(name).source).read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    path = tmp_path / "my-meter.toml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


def refusal(path: Path) -> str:
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"profile {path}: "), message
    return message


@pytest.mark.parametrize(
    ("old", "new", "other"),
    [
        # export_wh copied from import_wh's line, its address not changed: the same two registers
        ("export_wh = { address = 0x004A", "export_wh = { address = 0x0048", "import_wh"),
        # import_wh one register off: its first register is power_w's second one
        ("import_wh = { address = 0x0048", "import_wh = { address = 0x0035", "power_w"),
    ],
)
def test_values_sharing_a_register_are_refused(tmp_path, old, new, other):
    message = refusal(shipped_copy(tmp_path, "sdm630", old, new))
    name = new.split(" ")[0]
    assert f"values.{name}: input registers" in message and f"values.{other}'s" in message, message


def test_same_address_on_another_function_code_is_another_register(tmp_path):
    # the serial is a holding register (function 3); input register 0x0048 is import_wh
    path = shipped_copy(tmp_path, "sdm630", "serial = { address = 0xFC00,", "serial = { address = 0x0048,")
    assert load_profile(path).values["serial"].address == 0x0048


def test_sunspec_points_sharing_a_register_are_refused(tmp_path):
    path = shipped_copy(
        tmp_path,
        "kostal-ksem",
        'import_wh = { offset = 46, encoding = "acc32", sf_offset = 54 }',
        'import_wh = { offset = 38, encoding = "acc32", sf_offset = 54 }',
    )
    message = refusal(path)
    assert "sunspec.model.203.import_wh: offsets 38..39 overlap sunspec.model.203.export_wh's" in message


def test_a_point_on_a_scale_factor_register_is_refused(tmp_path):
    path = shipped_copy(
        tmp_path,
        "sunspec",
        'export_wh = { offset = 38, encoding = "acc32", sf_offset = 54 }',
        'export_wh = { offset = 53, encoding = "acc32", sf_offset = 54 }',
    )
    message = refusal(path)
    assert "sunspec.model.203.export_wh: offsets 53..54 cover" in message and "scale factor" in message


@pytest.mark.parametrize(
    ("name", "limit", "key", "count"),
    [
        ("sdm630", 1, "values.power_w", 2),  # every float32 needs 2
        ("shelly-pro-3em", 4, "values.serial", 6),  # the MAC string
        ("shelly-pro-3em", 8, "identify[0]", 10),  # the model string, read in one request too
    ],
)
def test_max_registers_below_a_value_is_refused(tmp_path, name, limit, key, count):
    path = shipped_copy(tmp_path, name, "\nmax_registers = ", f"\nmax_registers = {limit} #")
    message = refusal(path)
    assert message.endswith(f"max_registers: is {limit}, but {key} needs {count} registers in one request")


def test_meter_read_of_such_a_profile_is_one_line(tmp_path):
    path = shipped_copy(tmp_path, "sdm630", "\nmax_registers = ", "\nmax_registers = 1 #")
    out = peerwatt("meter", "read", "--profile-file", str(path), "--host", "127.0.0.1", "--port", "1")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    want = f"error: profile {path}: max_registers: is 1, but values.power_w needs 2 registers in one request"
    assert out.stderr.strip() == want


def test_a_limit_that_fits_every_value_loads(tmp_path):
    path = shipped_copy(tmp_path, "shelly-pro-3em", "\nmax_registers = ", "\nmax_registers = 10 #")
    assert load_profile(path).max_registers == 10
