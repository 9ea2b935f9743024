"""The [broker] table of node.toml and agent.toml: a password only from a file that only its
owner can read (password_file, mode 0600, like keys), never in the config file itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from meter_agent.config import load_agent_config
from peerwatt.config import load_node_config
from peerwatt.errors import UserError

NODE = 'data = "data"\nrole = "observer"\n'
AGENT = (
    'community = "oak-street"\nkey = "meter.key"\ngenesis = "genesis.toml"\n'
    '[meter]\nprofile = "sim"\nhost = "127.0.0.1"\n'
)


def write(tmp_path: Path, text: str, name: str = "node.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def secret(tmp_path: Path, mode: int = 0o600, text: str = "s3cret pass\n") -> Path:
    path = tmp_path / "broker.password"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_node_reads_its_password_from_a_private_file(tmp_path: Path) -> None:
    secret(tmp_path)
    config = write(
        tmp_path,
        NODE + '[broker]\nurl = "mqtts://b.example"\nusername = "seq"\npassword_file = "broker.password"\n',
    )
    broker = load_node_config(config).broker
    assert (broker.username, broker.password) == ("seq", "s3cret pass")


def test_agent_reads_its_password_from_a_private_file(tmp_path: Path) -> None:
    secret(tmp_path, text="pw-agent\r\n")
    config = write(
        tmp_path, AGENT + '[broker]\nusername = "m1"\npassword_file = "broker.password"\n', "agent.toml"
    )
    assert load_agent_config(config).broker.password == "pw-agent"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_password_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = secret(tmp_path, mode)
    config = write(tmp_path, NODE + '[broker]\nusername = "seq"\npassword_file = "broker.password"\n')
    with pytest.raises(UserError) as caught:
        load_node_config(config)
    message = str(caught.value)
    assert f"chmod 600 {path}" in message and "\n" not in message


@pytest.mark.parametrize(
    ("broker", "expected"),
    [
        ('username = "seq"\npassword = "in clear"\n', "password_file"),
        ('url = "mqtt://seq:in-clear@127.0.0.1"\n', "password_file"),
        ('password_file = "broker.password"\n', "username"),
        ('username = "seq"\npassword_file = "missing.password"\n', "not found"),
    ],
)
def test_passwords_in_the_config_or_broken_password_files_are_one_line_errors(
    tmp_path: Path, broker: str, expected: str
) -> None:
    secret(tmp_path)
    config = write(tmp_path, NODE + "[broker]\n" + broker)
    with pytest.raises(UserError) as caught:
        load_node_config(config)
    message = str(caught.value)
    assert expected in message and "\n" not in message
    assert "in clear" not in message and "in-clear" not in message  # never echo a password


def test_an_empty_password_file_is_refused(tmp_path: Path) -> None:
    secret(tmp_path, text="\n")
    config = write(tmp_path, NODE + '[broker]\nusername = "seq"\npassword_file = "broker.password"\n')
    with pytest.raises(UserError, match="empty"):
        load_node_config(config)


def test_a_client_certificate_key_others_can_read_is_refused(tmp_path: Path) -> None:
    (tmp_path / "seq.crt").write_text("cert")
    key = tmp_path / "seq.key"
    key.write_text("key")
    key.chmod(0o644)
    broker = '[broker]\nurl = "mqtts://b.example"\ncert_file = "seq.crt"\nkey_file = "seq.key"\n'
    with pytest.raises(UserError, match=f"chmod 600 {key}"):
        load_node_config(write(tmp_path, NODE + broker))
    key.chmod(0o600)
    assert load_node_config(write(tmp_path, NODE + broker)).broker.key_file == str(key)


def test_a_missing_password_file_names_the_config_file(tmp_path: Path) -> None:
    """Found by a helper after a15063d: the TLS files' lines name the config file, the password
    file's said only `broker password file <path> not found`."""
    config = write(tmp_path, NODE + '[broker]\nusername = "seq"\npassword_file = "missing.password"\n')
    with pytest.raises(UserError) as caught:
        load_node_config(config)
    missing = tmp_path / "missing.password"
    assert str(caught.value) == f"{config} [broker]: broker password file {missing} not found"
