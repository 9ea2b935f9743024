"""`peerwatt community add-dashboard`'s folder and lines, as followed on the dashboard's machine;
and the broker restart line the docs show, as the community commands print it.

Found in a QA pass following docs/quickstart.md and docs/dashboard.md: `add-dashboard --out
dashboard-broker` printed dashboard.toml's [broker] lines with bare file names (`ca_file =
"community-ca.crt"`, ...) and said to copy the folder next to dashboard.toml. Done literally, the
dashboard failed with `broker TLS key file broker-client.key not found`: dashboard.toml's relative
paths are taken from its own folder, not from inside the copied one. On a validator's machine
ca_file silently resolved to the validator's own community-ca.crt lying next to the toml. The
docs' hand-restart line for the broker was older than the one printed (no "run this as root"
branch).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from peerwatt.broker.mosquitto import restart_commands
from peerwatt.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
BROKER_ETC = Path("/etc/mosquitto/peerwatt")  # the docs' broker folder; the test writes nothing there
BY_HAND = "on the broker, started by hand: "
FLAGS = [
    "--community", "oak-street", "--validators", "4", "--interval", "300", "--feed-in-price", "0.08",
    "--retail-price", "0.30", "--timezone", "Europe/Vienna", "--broker-host", "127.0.0.1",
    "--broker-etc", str(BROKER_ETC),
]  # fmt: skip


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [sys.executable, "-m", "peerwatt.cli", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return r


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory) -> Path:
    """A folder holding the community `oak-street/`, as on the coordinator's machine."""
    root = tmp_path_factory.mktemp("coordinator")
    r = run(root, "community", "init", *FLAGS, "--out", "oak-street")
    assert r.returncode == 0, r.stderr
    return root


def toml_lines(stdout: str) -> str:
    """The dashboard.toml lines add-dashboard printed (broker_client_id .. key_file)."""
    lines = stdout.splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("broker_client_id = "))
    end = next(i for i, x in enumerate(lines) if x.startswith("key_file = "))
    return "\n".join(lines[start : end + 1]) + "\n"


def load_as_the_dashboard_does(config: Path):
    """`peerwatt dashboard -c`'s checks of the [broker] files, without serving anything."""
    from peerwatt.dashboard_config import load_settings
    from peerwatt.settings import check_broker_identity, check_tls_files

    settings = load_settings(config)
    check_tls_files(settings.broker, str(config))
    check_broker_identity(
        settings.broker, str(config), own=settings.broker_client_id, signer="broker_client_id", strict=False
    )
    return settings


@pytest.mark.parametrize("name", ["dashboard-broker", 'my "dash" board'])
def test_the_printed_lines_work_with_the_folder_copied_next_to_dashboard_toml(coordinator, tmp_path, name):
    """The QA pass, followed literally: `add-dashboard --out dashboard-broker`, the folder copied
    into the dashboard's folder, dashboard.toml there with the printed lines. They named bare file
    names, which resolve next to dashboard.toml: `broker TLS key file broker-client.key not found`
    (rc 2), and on a validator's machine ca_file silently took the validator's own
    community-ca.crt lying next to the toml (here: a stray file of that name). The lines now name
    the files inside the folder, by the name it was given with --out, so neither happens."""
    made = tmp_path / "coordinator-out"
    made.mkdir()
    r = run(coordinator, "community", "add-dashboard", "--dir", "oak-street", "--out", str(made / name))
    assert r.returncode == 0, r.stderr
    assert "copy the folder next to dashboard.toml" in r.stdout
    lines = toml_lines(r.stdout)
    assert tomllib.loads(lines)["broker"]["key_file"] == f"{name}/broker-client.key", lines

    here = tmp_path / "dashboard-machine"  # cp -r <folder> here/
    here.mkdir()
    shutil.copytree(made / name, here / name)
    (here / "community-ca.crt").write_text("a validator's own CA certificate, not this folder's\n")
    config = here / "dashboard.toml"
    config.write_text('data = "node-data"\n' + lines)
    settings = load_as_the_dashboard_does(config)
    folder = here / name
    assert Path(settings.broker.ca_file) == folder / "community-ca.crt"
    assert Path(settings.broker.cert_file) == folder / "broker-client.crt"
    assert Path(settings.broker.key_file) == folder / "broker-client.key"
    assert settings.broker_client_id == "dashboard"

    # the command itself gets past every [broker] check: what stops it is the missing ledger
    r = run(here, "dashboard", "-c", "dashboard.toml")
    assert r.returncode == 2
    assert r.stderr.strip() == "error: no ledger store in node-data (create one with `peerwatt node init`)"


def test_missing_broker_files_are_one_line_naming_each_and_the_folder(tmp_path):
    """The old lines (bare file names) with the folder copied next to dashboard.toml: the error
    named the key file only, and never the folder the relative paths were taken from. It names
    every missing one of the three files and that folder, in one line; a stray community-ca.crt
    next to the toml (a validator's own) is found, so only the other two are named."""
    from peerwatt.dashboard_config import load_settings

    here = tmp_path / "d"
    (here / "dashboard-broker").mkdir(parents=True)
    config = here / "dashboard.toml"
    config.write_text(
        'data = "node-data"\nbroker_client_id = "dashboard"\n[broker]\nurl = "mqtts://127.0.0.1:8883"\n'
        'ca_file = "community-ca.crt"\ncert_file = "broker-client.crt"\nkey_file = "broker-client.key"\n'
    )
    tail = (
        f"(relative paths are taken from the config file's folder, {here}); copy the folder "
        "`peerwatt community add-dashboard` wrote next to dashboard.toml and name the files inside it, "
        "as that command prints"
    )
    with pytest.raises(UserError) as caught:
        load_settings(config)
    assert str(caught.value) == (
        f'{config} [broker]: not found: ca_file = "community-ca.crt", cert_file = "broker-client.crt", '
        f'key_file = "broker-client.key" {tail}'
    )
    r = run(tmp_path, "dashboard", "-c", "d/dashboard.toml")
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        'error: d/dashboard.toml [broker]: not found: ca_file = "community-ca.crt", cert_file = '
        f'"broker-client.crt", key_file = "broker-client.key" {tail}'
    ]

    (here / "community-ca.crt").write_text("a validator's own CA certificate\n")
    with pytest.raises(UserError) as caught:
        load_settings(config)
    assert str(caught.value) == (
        f'{config} [broker]: not found: cert_file = "broker-client.crt", '
        f'key_file = "broker-client.key" {tail}'
    )


def doc_restart_lines(doc: str) -> list[str]:
    lines = (ROOT / "docs" / doc).read_text().splitlines()
    return [x for x in lines if x.startswith("sh -c '") and "restart-mosquitto" in x]


def test_the_docs_restart_line_is_the_one_the_commands_print(coordinator):
    """docs/quickstart.md and docs/bus.md showed an older hand restart than the printed one: it
    said "no mosquitto is running ...: nothing restarted" to a user who may not stop the broker,
    where the printed line says to run it as root. Each doc's line is compared with what is
    printed for the docs' broker folder, /etc/mosquitto/peerwatt."""
    # docs/quickstart.md: add-meter's printed copy and restart, as its two lines
    quickstart = (ROOT / "docs" / "quickstart.md").read_text().splitlines()
    [restart] = doc_restart_lines("quickstart.md")
    copy = quickstart[quickstart.index(restart) - 1]
    assert copy == f"cp oak-street/broker-etc/peerwatt.acl {BROKER_ETC}/"
    r = run(coordinator, "community", "add-dashboard", "--dir", "oak-street")
    assert r.returncode == 0, r.stderr
    [printed] = [x.removeprefix(BY_HAND) for x in r.stdout.splitlines() if x.startswith(BY_HAND)]
    assert f"{copy} && {restart}" == printed
    # docs/bus.md: after `broker config --out /etc/mosquitto/peerwatt`, which prints this one
    assert doc_restart_lines("bus.md") == [restart_commands(BROKER_ETC)[1]]
