"""operator.toml (the validator's broker account for governance) is read strictly: an unknown key
is refused in one line naming it and the file, before the broker is contacted (found in a QA pass:
`colour = 1` was accepted)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from chain.keys import generate_private_key
from peerwatt.commands.member import NodeSide, publish_gov
from peerwatt.errors import UserError
from tests.support.cli import peerwatt

OPERATOR = 'client_id = "operator-x"\n{extra}[broker]\nurl = "mqtt://127.0.0.1:9"\n'


def test_an_unknown_key_in_operator_toml_is_named(tmp_path):
    path = tmp_path / "operator.toml"
    path.write_text(OPERATOR.format(extra="colour = 1\n"))
    side = NodeSide(tmp_path, generate_private_key(), path)
    with pytest.raises(UserError) as info:
        publish_gov(side, "oak-street", [], timeout_s=0.5)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "colour" in message, message
    assert "unknown key" in message, message


def test_the_known_keys_pass_the_check(tmp_path):
    """client_id and [broker] are read: the command goes on to the broker (here: nobody listens)."""
    path = tmp_path / "operator.toml"
    path.write_text(OPERATOR.format(extra=""))
    side = NodeSide(tmp_path, generate_private_key(), path)
    with pytest.raises(UserError) as info:
        publish_gov(side, "oak-street", [], timeout_s=0.5)
    assert "unknown key" not in str(info.value) and "127.0.0.1" in str(info.value), info.value


@pytest.mark.parametrize(
    "text",
    [
        "",  # empty
        'client_id = "operator-x"\n',  # no [broker]
        'client_id = "operator-x"\n[broker]\n',  # [broker] without its url
        '[broker]\nca_file = "community-ca.crt"\n',
    ],
)
def test_operator_toml_without_the_broker_url_is_refused_before_connecting(tmp_path, text):
    """Found in a QA pass: an empty operator.toml fell back to the default plaintext broker
    127.0.0.1:1883, which nobody named, and failed after 20 s. Refused at once, in one line."""
    path = tmp_path / "operator.toml"
    path.write_text(text)
    side = NodeSide(tmp_path, generate_private_key(), path)
    started = time.monotonic()
    with pytest.raises(UserError) as info:
        publish_gov(side, "oak-street", [], timeout_s=5)
    message = str(info.value)
    assert time.monotonic() - started < 2, "it tried the broker"
    assert "\n" not in message and str(path) in message and "[broker]" in message and "url" in message
    assert "127.0.0.1" not in message and "community init" in message, message


@pytest.fixture(scope="module")
def validator(tmp_path_factory) -> Path:
    """A one-validator community's validator folder (`community init`), its store made."""
    from tests.peerwatt.test_cli_bad_files import COMMUNITY

    out = tmp_path_factory.mktemp("community") / "c"
    r = peerwatt(*COMMUNITY, "--out", str(out), stdin="")
    assert r.returncode == 0, r.stderr
    folder = out / "validator-1"
    r = peerwatt(
        "node", "init", "--genesis", str(folder / "genesis.toml"), "--data", str(folder / "node-data")
    )
    assert r.returncode == 0, r.stderr
    return folder


def test_community_init_writes_the_broker_url_into_operator_toml(validator):
    assert 'url = "mqtts://' in (validator / "operator.toml").read_text()


@pytest.mark.parametrize("text", ["", "# nothing yet\n", 'client_id = "operator-x"\n'])
def test_gov_propose_with_an_empty_operator_toml_says_so_at_once(tmp_path, validator, text):
    """The QA pass's `gov publish -c node.toml` with an empty operator.toml tried 127.0.0.1:1883
    for 20 s; `gov propose`, `gov vote`, `member admit|leave` and `gridops import` publish the same
    way (publish_gov). Now one line, at once, nothing published."""
    operator = tmp_path / "operator.toml"
    operator.write_text(text)
    started = time.monotonic()
    r = peerwatt(
        "gov", "propose", "-c", str(validator / "node.toml"), "--operator-config", str(operator),
        "--action", "set_param", "--arg", "name=max_orders_per_interval", "--arg", "value=3",
    )  # fmt: skip
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(operator) in r.stderr and "no [broker] url" in r.stderr, r.stderr
    assert "127.0.0.1:1883" not in r.stderr and time.monotonic() - started < 15, r.stderr
