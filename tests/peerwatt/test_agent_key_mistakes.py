"""`peerwatt agent -c agent.toml` with the wrong file in `key = ...` says what the file is and
that `key` must name the meter key, whatever else agent.toml holds (found in a QA pass that
followed docs/quickstart.md: in a folder from `peerwatt agent setup`, which always writes
cert_file, `key = "member.key"` was refused with "cert_file ... is the certificate of meter
<the household's meter>, but key = member.key is meter <the member's id>'s key: give the
certificate and key of account <the member's id>", a certificate no one can issue; the broker
check ran before the agent looked at which key it was given. `key = "broker-client.key"` named a
made-up meter the same way, and a `key` naming no file said "create one with `peerwatt keys
new`": a new key is not the one the community enrolled)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chain.keys import generate_private_key, key_id, save_private_key
from peerwatt.broker.access import Account
from peerwatt.broker.certs import make_certs
from peerwatt.onboarding import make_join_request
from peerwatt.ports import free_port
from tests.meter_agent.test_agent_cli_identity import _run
from tests.support.localnet import make_community


@pytest.fixture
def household(tmp_path):
    """The folder of a household admitted after genesis, as `agent setup` leaves it once the
    coordinator sent its broker certificate: member.key, meter.key, join-request.txt, the
    community's genesis and CA, broker-client.crt/.key of the meter, agent.toml."""
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
    meter_id = key_id(meter.public_key())
    accounts = [Account(meter_id, "meter")]
    make_certs(tmp_path / "certs", community=c.community, hosts=("127.0.0.1",), accounts=accounts)
    clients = tmp_path / "certs" / "clients"
    (tmp_path / "community-ca.crt").write_bytes((tmp_path / "certs" / "community-ca.crt").read_bytes())
    (tmp_path / "broker-client.crt").write_bytes((clients / f"{meter_id}.crt").read_bytes())
    key_file = tmp_path / "broker-client.key"
    key_file.write_bytes((clients / f"{meter_id}.key").read_bytes())
    key_file.chmod(0o600)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'community = "{c.community}"\nkey = "meter.key"\ngenesis = "genesis.toml"\nstate_dir = "state"\n'
        f'[meter]\nprofile = "sdm630"\nhost = "127.0.0.1"\nport = {free_port()}\nserial = "SN9"\n'
        f'[broker]\nurl = "mqtts://127.0.0.1:{free_port()}"\nca_file = "community-ca.crt"\n'
        'cert_file = "broker-client.crt"\nkey_file = "broker-client.key"\n'
    )
    return c, tmp_path, config, key_id(member.public_key()), meter_id


def _with_key(config: Path, key: str) -> Path:
    config.write_text(config.read_text().replace('key = "meter.key"', f'key = "{key}"', 1))
    return config


def _refusal(config: Path) -> str:
    r = _run(config)
    assert r.returncode == 2, (r.returncode, r.stderr)
    [line] = r.stderr.splitlines()
    assert not (config.parent / "state").exists()  # refused before the agent's state was opened
    return line


def test_the_member_key_is_named_as_such_although_cert_file_is_set(household):
    _c, folder, config, member_id, meter_id = household
    line = _refusal(_with_key(config, "member.key"))
    assert f"key = {folder / 'member.key'} (key id {member_id}) is not the meter key of" in line
    assert "it is the member key of that request" in line and "meter.key" in line
    assert "is the certificate of" not in line and "give the certificate" not in line


def test_the_broker_client_key_is_named_as_such(household):
    _c, folder, config, _member_id, meter_id = household
    line = _refusal(_with_key(config, "broker-client.key"))
    assert f"key = {folder / 'broker-client.key'} is the broker client key" in line
    assert "key_file" in line and 'key = "meter.key"' in line
    assert "give the certificate" not in line and "is it the member key" not in line


def test_a_key_file_that_is_not_there_points_at_the_meter_key(household):
    _c, folder, config, _member_id, _meter_id = household
    line = _refusal(_with_key(config, "nokey.key"))
    assert f"{folder / 'nokey.key'} not found" in line
    assert f"{folder / 'meter.key'}" in line and "join-request.txt" in line
    assert "peerwatt keys new" not in line  # a new key is not the enrolled one


def test_a_key_file_that_is_not_there_in_a_folder_without_a_meter_key_keeps_the_old_advice(tmp_path):
    """Set up by hand, no key made yet: `peerwatt keys new` is the next step then."""
    c = make_community(validators=1, members=1, meters_per_member=1, app="market")
    (tmp_path / "genesis.toml").write_text(
        f'[community]\nid = "{c.community}"\ntime = {c.genesis.time}\napp = "market"\n'
        f'[[validators]]\nkey = "{c.validators[0].sec1_hex}"\n'
    )
    config = tmp_path / "agent.toml"
    config.write_text(
        f'community = "{c.community}"\nkey = "meter.key"\ngenesis = "genesis.toml"\nstate_dir = "state"\n'
        f'[meter]\nprofile = "sdm630"\nhost = "127.0.0.1"\n[broker]\nurl = "mqtt://127.0.0.1:1883"\n'
    )
    line = _refusal(config)
    assert "not found" in line and "peerwatt keys new" in line


def test_a_key_neither_enrolled_nor_requested_is_refused_before_the_certificate_check(household):
    """Without join-request.txt the agent cannot know the meter, whatever the certificate says:
    that is the line (not advice to fetch the certificate of a key no one enrolled)."""
    _c, folder, config, _member_id, _meter_id = household
    save_private_key(generate_private_key(), folder / "stray.key")
    (folder / "join-request.txt").unlink()
    line = _refusal(_with_key(config, "stray.key"))
    assert "is not enrolled in" in line and "needs its join-request.txt" in line
    assert "give the certificate" not in line


def test_the_right_key_with_another_meters_certificate_is_still_refused_for_the_certificate(household):
    c, folder, config, _member_id, meter_id = household
    other = generate_private_key()
    other_id = key_id(other.public_key())
    make_certs(folder / "certs", community=c.community, accounts=[Account(other_id, "meter")])
    clients = folder / "certs" / "clients"
    (folder / "broker-client.crt").write_bytes((clients / f"{other_id}.crt").read_bytes())
    (folder / "broker-client.key").write_bytes((clients / f"{other_id}.key").read_bytes())
    line = _refusal(config)
    assert f"is the certificate of meter {other_id}" in line and f"meter {meter_id}'s key" in line
