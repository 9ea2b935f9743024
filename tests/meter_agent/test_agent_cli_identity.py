"""`peerwatt agent -c agent.toml` refuses, in one line, a config whose parts belong to different
identities (found in a QA pass with Mosquitto): another meter's broker certificate (the broker
takes the certificate's CN as account and client id, so the two agents pushed each other off the
broker and every publication was refused), the member key in `key = ...`, and a `genesis = ...`
that names a file which is no genesis."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from chain.keys import generate_private_key, save_private_key
from peerwatt.broker.access import Account
from peerwatt.broker.certs import make_certs
from peerwatt.onboarding import make_join_request
from peerwatt.ports import free_port
from tests.meter_agent.test_agent_cli import write_genesis_and_key
from tests.support.localnet import make_community


def _run(config: Path) -> subprocess.CompletedProcess:
    """`peerwatt agent -c`; an agent that starts (the old behaviour) is stopped after 15 s."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "peerwatt.cli", "agent", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _agent_toml(folder: Path, community: str, broker: str, top: str = "") -> Path:
    config = folder / "agent.toml"
    config.write_text(
        f'community = "{community}"\nkey = "meter.key"\ngenesis = "genesis.toml"\nstate_dir = "state"\n{top}'
        f'[meter]\nprofile = "sdm630"\nhost = "127.0.0.1"\nport = {free_port()}\n'
        f"[broker]\n{broker}"
    )
    return config


@pytest.fixture
def two_meters(tmp_path):
    """A community with two enrolled meters, household 1's folder (genesis, meter.key) and a
    community CA with both meters' client certificates."""
    c = make_community(validators=1, members=1, meters_per_member=2, app="market")
    write_genesis_and_key(tmp_path, c, c.meters[0])
    text = (tmp_path / "genesis.toml").read_text()
    other = c.meters[1]
    text += f'[[meters]]\nkey = "{other.sec1_hex}"\nserial = "SN2"\nowner = "{c.members[0].id}"\n'
    text += "capacity_w = 11000\n"
    (tmp_path / "genesis.toml").write_text(text)
    accounts = [Account(m.id, "meter") for m in c.meters]
    make_certs(tmp_path / "certs", community=c.community, hosts=("127.0.0.1",), accounts=accounts)
    return c, tmp_path


def _tls(folder: Path, account: str) -> str:
    clients = folder / "certs" / "clients"
    return (
        f'url = "mqtts://127.0.0.1:{free_port()}"\nca_file = "certs/community-ca.crt"\n'
        f'cert_file = "{clients / account}.crt"\nkey_file = "{clients / account}.key"\n'
    )


def test_an_agent_with_another_meters_broker_certificate_refuses_to_start(two_meters):
    """Case B of the QA pass: household 1's meter.key with household 2's broker-client.crt/.key."""
    c, folder = two_meters
    mine, theirs = c.meters[0].id, c.meters[1].id
    config = _agent_toml(folder, c.community, _tls(folder, theirs))
    r = _run(config)
    assert r.returncode == 2, (r.returncode, r.stderr)
    [line] = r.stderr.splitlines()
    cert = folder / "certs" / "clients" / f"{theirs}.crt"
    assert line.startswith(f"error: {config} [broker]: cert_file {cert} is the certificate of meter {theirs}")
    assert f"meter {mine}" in line and "meter.key" in line
    assert not (folder / "state").exists()  # refused before the agent's state was opened


def test_an_agent_with_its_own_certificate_and_another_client_id_starts_and_says_it(two_meters):
    c, folder = two_meters
    mine = c.meters[0].id
    config = _agent_toml(folder, c.community, _tls(folder, mine), top='client_id = "kitchen"\n')
    r = _run(config)
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert f"agent of meter {mine}" in r.stderr
    notes = [line for line in r.stderr.splitlines() if "client_id" in line]
    assert notes == [
        f'note: {config}: client_id "kitchen" is not used: the broker takes the account of the '
        f"certificate, {mine}, as the client id"
    ]


def test_the_member_key_in_key_is_named_as_such(tmp_path):
    """A meter admitted after genesis, its join-request.txt beside agent.toml, but `key` names
    the member key: the agent said join-request.txt was missing."""
    c = make_community(validators=1, members=1, meters_per_member=0, app="market")
    (tmp_path / "genesis.toml").write_text(
        f'[community]\nid = "{c.community}"\ntime = {c.genesis.time}\napp = "market"\n'
        f'[[validators]]\nkey = "{c.validators[0].sec1_hex}"\n'
        f'[[members]]\nkey = "{c.members[0].sec1_hex}"\n'
    )
    member, meter = generate_private_key(), generate_private_key()
    save_private_key(member, tmp_path / "member.key")
    save_private_key(meter, tmp_path / "meter.key")
    request = make_join_request(
        member, meter, community=c.community, name="Household 2", serial="SN9", profile="sdm630",
        capacity_w=11000,
    )  # fmt: skip
    (tmp_path / "join-request.txt").write_text(request.text())
    config = _agent_toml(tmp_path, c.community, 'url = "mqtt://127.0.0.1:1883"\n')
    config.write_text(config.read_text().replace('key = "meter.key"', 'key = "member.key"'))
    r = _run(config)
    assert r.returncode == 2, (r.returncode, r.stderr)
    [line] = r.stderr.splitlines()
    assert f"key = {tmp_path / 'member.key'}" in line
    assert f"is not the meter key of {tmp_path / 'join-request.txt'}" in line
    assert "it is the member key of that request" in line and "meter.key" in line
    assert "needs its join-request.txt" not in line
    # a key that is neither the request's meter nor its member key: not the meter key, either way
    save_private_key(generate_private_key(), tmp_path / "stray.key")
    config.write_text(config.read_text().replace('key = "member.key"', 'key = "stray.key"'))
    r = _run(config)
    assert r.returncode == 2, (r.returncode, r.stderr)
    [line] = r.stderr.splitlines()
    assert f"is not the meter key of {tmp_path / 'join-request.txt'} (meter {request.meter_id})" in line
    assert "nor of any meter in" in line and "is it the member key?" in line


def test_a_genesis_setting_naming_a_file_that_is_no_genesis_says_so(two_meters):
    c, folder = two_meters
    config = _agent_toml(folder, c.community, 'url = "mqtt://127.0.0.1:1883"\n')
    (folder / "a5.toml").write_text(config.read_text())  # another agent.toml
    config.write_text(config.read_text().replace('genesis = "genesis.toml"', 'genesis = "a5.toml"'))
    r = _run(config)
    assert r.returncode == 2, (r.returncode, r.stderr)
    [line] = r.stderr.splitlines()
    # (e968a33: a file of a kind peerwatt knows is named as such, not by its unknown keys)
    assert line.startswith(f"error: {config}: genesis = {folder / 'a5.toml'} is an agent.toml ")
    assert "not a genesis file" in line and "the community's genesis.toml" in line
