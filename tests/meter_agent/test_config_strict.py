"""agent.toml is read strictly: an unknown key in any table and a duration that is not a finite
number within its bounds are refused at load, in one line, before anything is created (found in
a QA pass: `sell_limit_prize = 190000` ran with the default price, `poll_s = inf` crashed the
agent with an OverflowError after its state file was made)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from meter_agent.config import load_agent_config
from peerwatt.errors import UserError

TOML = (
    'community = "oak"\nkey = "meter.key"\ngenesis = "genesis.toml"\nstate_dir = "state"\n{top}'
    '[meter]\nprofile = "sdm630"\nhost = "127.0.0.1"\n{meter}'
    "[market]\n{market}"
    '[broker]\nurl = "mqtt://127.0.0.1:1883"\n'
    "[homeassistant]\n{ha}"
)


def write(tmp_path, top="", meter="", market="", ha=""):
    path = tmp_path / "agent.toml"
    path.write_text(TOML.format(top=top, meter=meter, market=market, ha=ha))
    return path


def refused(path, *said: str) -> str:
    with pytest.raises(UserError) as info:
        load_agent_config(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    for part in said:
        assert part in message, message
    return message


@pytest.mark.parametrize(
    "table, line, key",
    [
        ("meter", "poll_secs = 10\n", "poll_secs"),
        ("market", "sell_limit_prize = 190000\n", "sell_limit_prize"),
        ("ha", "enable = true\n", "enable"),
    ],
)
def test_an_unknown_key_in_any_table_is_refused(tmp_path, table, line, key):
    path = write(tmp_path, **{table: line})
    name = {"meter": "[meter]", "market": "[market]", "ha": "[homeassistant]"}[table]
    refused(path, name, "unknown key", key)


def test_a_source_s_keys_are_refused_with_another_source(tmp_path):
    """`broker` in [meter] is read only with source = "mqtt": with a Modbus meter it did nothing."""
    path = write(tmp_path, meter="stale_polls = 4\n")
    refused(path, "[meter]", "stale_polls", 'source = "mqtt"')


def test_known_keys_still_load(tmp_path):
    path = write(
        tmp_path,
        top="heartbeat_s = 0.5\n",
        meter="poll_s = 0.5\ntimeout_s = 2\nunit = 1\nclose_between_polls = true\n",
        market="sell_share = 0.5\nsell_limit_price = 190000\nbuy_limit_price = 250000\nmin_order_wh = 20\n",
        ha='enabled = true\nprefix = "ha"\n',
    )
    cfg = load_agent_config(path)
    assert cfg.strategy.sell_limit_price == 190000 and cfg.meter.poll_s == 0.5 and cfg.heartbeat_s == 0.5
    assert cfg.homeassistant and cfg.homeassistant_prefix == "ha"


@pytest.mark.parametrize(
    "where, name, value",
    [
        ("meter", "poll_s", "inf"),
        ("meter", "poll_s", "1e12"),
        ("meter", "poll_s", "nan"),
        ("meter", "poll_s", "0.01"),
        ("meter", "poll_s", "86400"),
        ("meter", "timeout_s", "inf"),
        ("meter", "timeout_s", "nan"),
        ("meter", "timeout_s", "1e9"),
        ("top", "heartbeat_s", "inf"),
        ("top", "heartbeat_s", "nan"),
        ("top", "heartbeat_s", "1e12"),
        ("top", "heartbeat_s", "-5"),
        ("top", "heartbeat_s", "0"),
        ("meter", "timeout_s", "0"),
    ],
)
def test_durations_must_be_finite_and_within_bounds(tmp_path, where, name, value):
    path = write(tmp_path, **{where: f"{name} = {value}\n"})
    refused(path, name, "seconds")


def test_an_infinite_poll_is_refused_before_the_state_is_made(tmp_path):
    """The QA's run: `poll_s = inf` made state/agent.sqlite, then crashed with a traceback."""
    path = write(tmp_path, meter="poll_s = inf\n")
    r = subprocess.run(
        [sys.executable, "-m", "peerwatt.cli", "agent", "-c", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "poll_s" in r.stderr, r.stderr
    assert not (tmp_path / "state").exists()
