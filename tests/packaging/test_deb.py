"""`make deb`: the agent's Debian package, built, installed with dpkg, run, removed and purged.

The installed agent runs as its system user exactly as the packaged systemd unit says (ExecStart,
User, Group, SupplementaryGroups, WorkingDirectory; setpriv instead of systemctl, which a container
does not have) against `peerwatt sim-meter` and a real Mosquitto, and publishes its retained status.
The test installs into this machine's root file system, so it needs root (it is root here and in
CI) and refuses to touch an existing peerwatt-agent install; its fixture purges the package and
deletes the user it created even when a step fails. Under CI=true a skip is a failure (conftest).
"""

from __future__ import annotations

import configparser
import fcntl
import grp
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chain.keys import save_private_key
from peerwatt.bus import BrokerConfig, MqttBus, Topics
from peerwatt.ports import free_port
from tests.conftest import require_tool
from tests.support.community_broker import genesis_toml
from tests.support.localnet import make_community
from tests.support.procnet import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "peerwatt-agent"
USER = "peerwatt"
UNIT = Path("/lib/systemd/system/peerwatt-agent.service")
ENABLED_LINK = Path("/etc/systemd/system/multi-user.target.wants/peerwatt-agent.service")
DSH_STATE = Path("/var/lib/systemd/deb-systemd-helper-enabled/peerwatt-agent.service.dsh-also")
ETC = Path("/etc/peerwatt")
VAR = Path("/var/lib/peerwatt")
OPT = Path("/opt/peerwatt")
# Never in the agent's package: what only the extras (node, dashboard, reports, demo) bring.
EXTRAS_ONLY = ("pandas", "numpy", "flask", "matplotlib", "amqtt", "rich", "waitress", "fpdf", "sepaxml")


def _run(*argv: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)


def _dpkg(*args: str) -> subprocess.CompletedProcess:
    """dpkg ARGS; while another dpkg or apt holds its lock (another install on this machine),
    wait for it (bounded) instead of failing."""
    deadline = time.monotonic() + 120
    while True:
        res = _run("dpkg", *args, timeout=120)
        locked = res.returncode != 0 and "locked by another process" in res.stderr
        if not locked or time.monotonic() > deadline:
            return res
        time.sleep(1)


def _dpkg_status() -> str:
    """'installed', 'config-files', ... or '' when dpkg does not know the package."""
    res = _run("dpkg-query", "-W", "-f=${db:Status-Status}", PACKAGE)
    return res.stdout.strip() if res.returncode == 0 else ""


def _user_exists() -> bool:
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return False
    return True


def _owner(path: Path) -> tuple[str, str, int]:
    st = path.stat()
    return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, stat.S_IMODE(st.st_mode)


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[dict]:
    """Root, dpkg and no peerwatt-agent here yet; at teardown (also after a failure) every process
    the test started is stopped, the package purged and the user removed if the test made it.
    A file lock keeps two runs of this test on one machine from installing at once."""
    if os.geteuid() != 0:
        pytest.skip("installs a Debian package into / : needs root")
    for tool in ("dpkg", "dpkg-deb", "dpkg-query", "setpriv", "make"):
        require_tool(tool)
    with open(Path(tempfile.gettempdir()) / "peerwatt-deb-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _dpkg_status() or any(p.exists() for p in (ETC, VAR, OPT)):
            pytest.skip(f"{PACKAGE} (or /etc/peerwatt, /var/lib/peerwatt, /opt/peerwatt) is already here")
        state: dict = {"processes": [], "user_existed": _user_exists()}
        try:
            yield state
        finally:
            for proc in state["processes"]:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
            if _dpkg_status():
                _dpkg("--purge", PACKAGE)
            if not state["user_existed"] and _user_exists():
                _run("userdel", USER)
                if _run("getent", "group", USER).returncode == 0:
                    _run("groupdel", USER)


def _build(out: Path) -> Path:
    res = _run("make", "-s", "-C", str(ROOT), "deb", f"DEB_OUT={out}", timeout=240)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    debs = sorted(out.glob(f"{PACKAGE}_*.deb"))
    assert len(debs) == 1, debs
    return debs[0]


def _check_contents(deb: Path) -> None:
    fields = _run("dpkg-deb", "-f", str(deb), "Package", "Architecture", "Depends").stdout
    assert f"Package: {PACKAGE}" in fields and "adduser" in fields and "python3." in fields
    listing = _run("dpkg-deb", "-c", str(deb)).stdout
    for path in (
        "./lib/systemd/system/peerwatt-agent.service",
        "./etc/peerwatt/agent.toml.example",
        "./var/lib/peerwatt/",
        "./opt/peerwatt/.venv/bin/peerwatt",
        "./usr/share/doc/peerwatt-agent/copyright",
    ):
        assert f" {path}" in listing, path
    site = re.search(r"\./opt/peerwatt/\.venv/lib/python3\.\d+/site-packages/", listing)[0]
    shipped = {line.split(site, 1)[1].split("/")[0].lower() for line in listing.splitlines() if site in line}
    assert {"meter_agent", "pymodbus", "paho", "cryptography"} <= shipped
    assert not [name for name in shipped for extra in EXTRAS_ONLY if name.startswith(extra)], shipped
    assert "pip" not in shipped and "setuptools" not in shipped
    # exactly the modules of the source the build copied (DEB_OUT/wheel-src; not the live tree, which
    # other work may change meanwhile): none that setuptools' build/lib kept after their deletion
    src = deb.parent / "wheel-src"
    ours = ("chain", "market", "meter_agent", "dashboard", "peerwatt")
    packaged = {
        line.split(site, 1)[1]
        for line in listing.splitlines()
        if site in line and line.endswith(".py") and line.split(site, 1)[1].split("/")[0] in ours
    }
    copied = {str(p.relative_to(src)) for name in ours for p in (src / name).rglob("*.py")}
    assert packaged and packaged == copied, (sorted(packaged - copied), sorted(copied - packaged))
    control = _run("dpkg-deb", "-I", str(deb), "conffiles").stdout
    assert control.split() == ["/etc/peerwatt/agent.toml.example"]


def _check_installed() -> None:
    assert _dpkg_status() == "installed"
    user = pwd.getpwnam(USER)
    assert user.pw_uid < 1000 and user.pw_dir == str(VAR) and user.pw_shell == "/usr/sbin/nologin"
    assert USER in grp.getgrnam("dialout").gr_mem
    assert _owner(VAR) == (USER, USER, 0o750)
    assert (ETC / "agent.toml.example").is_file() and not (ETC / "agent.toml").exists()
    assert UNIT.is_file() and ENABLED_LINK.resolve() == UNIT.resolve()  # deb-systemd-helper enabled it
    if shutil.which("systemd-analyze"):  # systemd's own check of the unit, where systemd is installed
        verify = _run("systemd-analyze", "verify", str(UNIT))
        assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    version = _run("/usr/bin/peerwatt", "--version")
    assert version.returncode == 0 and "peerwatt" in version.stdout
    # the example is a config the installed agent reads: it stops only at the files it names
    example = _run(str(OPT / ".venv/bin/peerwatt"), "agent", "-c", str(ETC / "agent.toml.example"))
    assert example.returncode != 0 and "not found" in example.stderr, example.stderr
    assert "Traceback" not in example.stderr and "unknown key" not in example.stderr


def _configure(mosquitto_url: str, meter_port: int) -> tuple[str, str]:
    """Genesis and agent.toml in /etc/peerwatt, the meter key in /var/lib/peerwatt (the user's
    part of the install, docs/agent.md); returns (community, meter id)."""
    now = int(time.time())
    c = make_community(validators=1, members=1, app="market", time=now - now % 900 - 900)
    (ETC / "genesis.toml").write_text(genesis_toml(c.genesis.doc))
    key = VAR / "meter.key"
    save_private_key(c.meters[0].key, key)
    os.chown(key, pwd.getpwnam(USER).pw_uid, grp.getgrnam(USER).gr_gid)
    (ETC / "agent.toml").write_text(
        f'community = "{c.community}"\nkey = "{key}"\ngenesis = "{ETC / "genesis.toml"}"\n'
        f'state_dir = "{VAR / "state"}"\nheartbeat_s = 0.5\n'
        f'[meter]\nprofile = "sdm630"\nhost = "127.0.0.1"\nport = {meter_port}\npoll_s = 0.5\n'
        f'[broker]\nurl = "{mosquitto_url}"\n'
    )
    return c.community, c.meters[0].id


def _start_sim_meter(state: dict) -> int:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "peerwatt.cli", "sim-meter", "--profile", "sdm630", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state["processes"].append(proc)

    def accepting() -> bool:
        assert proc.poll() is None, "sim-meter exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    wait_for(accepting, 20, "sim-meter to listen")
    return port


def _as_the_unit(argv: list[str] | None = None, **kwargs) -> subprocess.Popen:
    """Run the unit's ExecStart (or ``argv``) as its User/Group/SupplementaryGroups in its
    WorkingDirectory, with the environment systemd gives a service with User=."""
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # systemd's keys are case-sensitive
    unit.read(UNIT)
    service = unit["Service"]
    user = pwd.getpwnam(service["User"])
    groups = ",".join(str(grp.getgrnam(g).gr_gid) for g in service.get("SupplementaryGroups", "").split())
    command = argv if argv is not None else shlex.split(service["ExecStart"])
    return subprocess.Popen(
        [
            "setpriv",
            f"--reuid={user.pw_uid}",
            f"--regid={grp.getgrnam(service['Group']).gr_gid}",
            f"--groups={groups}" if groups else "--clear-groups",
            "--no-new-privs",
            "--",
            *command,
        ],
        cwd=service["WorkingDirectory"],
        env={"PATH": "/usr/bin:/bin", "HOME": user.pw_dir, "USER": user.pw_name, "LANG": "C.UTF-8"},
        text=True,
        **kwargs,
    )


def _run_the_agent(state: dict, community: str, meter_id: str, broker_url: str) -> None:
    statuses: list[dict] = []
    watcher = MqttBus(BrokerConfig.from_url(broker_url), "deb-test-watcher")
    watcher.subscribe(
        Topics.status(community, meter_id),
        lambda t, p: statuses.append({"raw": p} if p == b"offline" else json.loads(p)),
    )
    watcher.start()

    def online() -> bool:
        return any(s.get("state") == "online" and s.get("meter_ok") for s in statuses)

    try:
        agent = _as_the_unit(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        state["processes"].append(agent)
        try:
            wait_for(lambda: online() or agent.poll() is not None, 30, "the installed agent's status")
        finally:
            agent.send_signal(signal.SIGTERM)
            out, err = agent.communicate(timeout=30)
        assert online(), f"no online status with the meter read; the agent said: {err[-3000:]}"
        assert agent.returncode == 0 and "Traceback" not in err, err[-3000:]
        wait_for(lambda: statuses and statuses[-1] == {"raw": b"offline"}, 10, "its offline status")
    finally:
        watcher.stop()
    assert _owner(VAR / "state")[0] == USER
    status = _as_the_unit(
        ["/usr/bin/peerwatt", "agent", "status", "-c", str(ETC / "agent.toml"), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = status.communicate(timeout=60)
    assert status.returncode == 0, err
    info = json.loads(out)
    assert info["meter"] == meter_id and info["meter_ok"] is True


def test_make_deb_installs_runs_the_agent_and_removes_cleanly(tmp_path, machine, mosquitto):
    deb = _build(tmp_path / "deb")
    _check_contents(deb)

    res = _dpkg("-i", str(deb))  # systemd is not PID 1 here: nothing may fail
    assert res.returncode == 0, res.stdout + res.stderr
    _check_installed()

    community, meter_id = _configure(mosquitto.url, _start_sim_meter(machine))
    config = (ETC / "agent.toml").read_bytes()
    res = _dpkg("-i", str(deb))  # reinstall / upgrade: the user's files stay
    assert res.returncode == 0, res.stdout + res.stderr
    assert (ETC / "agent.toml").read_bytes() == config
    assert _owner(VAR) == (USER, USER, 0o750) and _owner(VAR / "meter.key") == (USER, USER, 0o600)

    _run_the_agent(machine, community, meter_id, mosquitto.url)
    packaged = set(_run("dpkg-query", "-L", PACKAGE).stdout.splitlines())
    strays = [str(p) for p in OPT.rglob("*") if str(p) not in packaged]
    assert not strays, f"files under /opt/peerwatt that dpkg does not know (left behind on remove): {strays}"

    res = _dpkg("-r", PACKAGE)
    assert res.returncode == 0, res.stdout + res.stderr
    assert _dpkg_status() == "config-files"
    assert not OPT.exists() and not UNIT.exists() and not Path("/usr/bin/peerwatt").exists()
    assert (ETC / "agent.toml").read_bytes() == config and (ETC / "agent.toml.example").exists()
    assert (VAR / "meter.key").exists() and (VAR / "state").is_dir() and _user_exists()

    res = _dpkg("-P", PACKAGE)
    assert res.returncode == 0, res.stdout + res.stderr
    assert _dpkg_status() == ""
    assert not ETC.exists() and not VAR.exists()
    assert not ENABLED_LINK.is_symlink() and not DSH_STATE.exists()
    assert _user_exists()  # system users stay after a purge (their uid may still own files)
