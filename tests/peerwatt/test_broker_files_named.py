"""A [broker] TLS file (ca_file, cert_file, key_file) that is not there, or cannot be read, is
one line naming the config file and that file, the same for node.toml, agent.toml, operator.toml
and dashboard.toml (settings.broker_config reads the table of all four).

Before, only dashboard.toml said so: `node run` and `agent` with a missing CA or certificate
said `cannot load the MQTT TLS files (<all three paths>): no such file or directory`, not which
one, and with a missing key `broker TLS key file <path> not found`, without the config file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.peerwatt.test_cli_bad_files import COMMUNITY
from tests.support.cli import peerwatt

COPY_THE_FOLDER = "; copy the folder `peerwatt community add-dashboard` wrote"


@pytest.fixture(scope="module")
def validator(tmp_path_factory) -> Path:
    """A one-validator community's validator folder (`community init`), its store made (`gov
    propose` reads the ledger before it reads operator.toml)."""
    out = tmp_path_factory.mktemp("community") / "c"
    r = peerwatt(*COMMUNITY, "--out", str(out), stdin="")
    assert r.returncode == 0, r.stderr
    folder = out / "validator-1"
    r = peerwatt(
        "node", "init", "--genesis", str(folder / "genesis.toml"), "--data", str(folder / "node-data")
    )
    assert r.returncode == 0, r.stderr
    return folder


def _broker_lines(validator: Path, **files: str) -> str:
    """A [broker] table naming the validator's node TLS files, but for ``files``."""
    names = {
        "ca_file": str(validator / "community-ca.crt"),
        "cert_file": str(validator / "node-client.crt"),
        "key_file": str(validator / "node-client.key"),
    } | files
    lines = "".join(f'{name} = "{value}"\n' for name, value in names.items())
    return f'[broker]\nurl = "mqtts://127.0.0.1:9"\n{lines}'


def _run(kind: str, validator: Path, folder: Path, broker: str) -> tuple[Path, list[str]]:
    """The command that reads a config of ``kind`` first, given one whose [broker] is ``broker``
    (in ``folder``); its stderr lines."""
    if kind == "node":
        config = folder / "node.toml"
        config.write_text(f'data = "node-data"\nrole = "observer"\n{broker}')
        args = ["node", "run", "-c", str(config)]
    elif kind == "agent":
        config = folder / "agent.toml"
        config.write_text(
            'community = "t"\nkey = "meter.key"\ngenesis = "genesis.toml"\n'
            f'[meter]\nprofile = "sdm630"\nhost = "127.0.0.1"\nport = 9\n{broker}'
        )
        args = ["agent", "-c", str(config)]
    elif kind == "operator":
        config = folder / "operator.toml"
        config.write_text(f'client_id = "operator-x"\n{broker}')
        args = [
            "gov", "propose", "-c", str(validator / "node.toml"), "--operator-config", str(config),
            "--action", "set_param", "--arg", "name=max_orders_per_interval", "--arg", "value=3",
        ]  # fmt: skip
    else:
        config = folder / "dashboard.toml"
        config.write_text(f'data = "{validator / "node-data"}"\n{broker}')
        args = ["dashboard", "-c", str(config)]
    r = peerwatt(*args, timeout=60)
    assert r.returncode == 2, (r.returncode, r.stderr)
    return config, r.stderr.splitlines()


KINDS = ["node", "agent", "operator", "dashboard"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["ca_file", "cert_file", "key_file"])
def test_a_missing_broker_file_is_named_with_the_config_file(validator, tmp_path, kind, name):
    config, lines = _run(kind, validator, tmp_path, _broker_lines(validator, **{name: "gone.pem"}))
    fix = COPY_THE_FOLDER if kind == "dashboard" else ""
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f'error: {config} [broker]: not found: {name} = "gone.pem" (relative paths are taken from the '
        f"config file's folder, {tmp_path}){fix}"
    ), lines


@pytest.mark.parametrize("kind", KINDS)
def test_every_missing_broker_file_is_named(validator, tmp_path, kind):
    """A stray community-ca.crt next to the config (a validator's own) is taken; the other two
    are named."""
    shutil.copy(validator / "community-ca.crt", tmp_path / "community-ca.crt")
    files = {"ca_file": "community-ca.crt", "cert_file": "client.crt", "key_file": "client.key"}
    config, lines = _run(kind, validator, tmp_path, _broker_lines(validator, **files))
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f'error: {config} [broker]: not found: cert_file = "client.crt", key_file = "client.key" '
        f"(relative paths are taken from the config file's folder, {tmp_path})"
    ), lines


@pytest.mark.parametrize("kind", KINDS)
def test_a_broker_file_that_cannot_be_read_is_named_with_the_config_file(validator, tmp_path, kind):
    """A folder given as ca_file; a link that points at itself as key_file."""
    (tmp_path / "ca-folder").mkdir()
    config, lines = _run(kind, validator, tmp_path, _broker_lines(validator, ca_file="ca-folder"))
    assert lines == [f"error: {config} [broker]: ca_file {tmp_path / 'ca-folder'} is not a file"]

    (tmp_path / "loop.key").symlink_to(tmp_path / "loop.key")
    config, lines = _run(kind, validator, tmp_path, _broker_lines(validator, key_file="loop.key"))
    assert lines == [
        f"error: {config} [broker]: cannot read key_file {tmp_path / 'loop.key'}: Too many levels of "
        "symbolic links"
    ]
