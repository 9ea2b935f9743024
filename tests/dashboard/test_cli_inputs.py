"""`peerwatt dashboard` on bad input (QA): a host that is no address of this machine ended in a
waitress traceback (ValueError: Invalid host/port specified) after the instance folder was made;
an IPv6 host was printed without brackets; `dashboard user list/remove` on a missing instance
folder made it and an empty dashboard.sqlite. Each is one line now, and nothing is created."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "peerwatt.cli", "dashboard"]


def run(args: list[str], stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, input=stdin, capture_output=True, text=True, timeout=60)


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("host", ["999.1.1.1", "nosuch.invalid"])
def test_a_host_that_cannot_be_listened_on_is_one_line_and_creates_nothing(built, tmp_path, host):
    instance = tmp_path / "inst"
    result = run(["--data", str(built.data_dir), "--instance", str(instance), "--host", host, "--port", "0"])
    one_line_error(result, host, "--host")
    assert not instance.exists()


def test_a_listen_address_in_the_config_that_cannot_be_listened_on_is_one_line(built, tmp_path):
    config = tmp_path / "dashboard.toml"
    config.write_text(f'data = "{built.data_dir}"\ninstance = "inst"\nlisten = "999.1.1.1:8080"\n')
    one_line_error(run(["-c", str(config)]), "999.1.1.1", "listen")
    assert not (tmp_path / "inst").exists()


def test_an_ipv6_host_is_shown_in_brackets(built, tmp_path):
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    proc, line = start_line(
        ["--data", str(built.data_dir), "--instance", str(tmp_path / "i"), "--host", "::1", "--port", "0"]
    )
    try:
        assert " on http://[::1]:" in line, line
    finally:
        stop(proc)


@pytest.mark.parametrize("command", [["list"], ["remove", "alice"]])
def test_user_list_and_remove_on_a_missing_instance_folder_create_nothing(built, tmp_path, command):
    instance = tmp_path / "inst"
    result = run(
        ["user", command[0], "--data", str(built.data_dir), "--instance", str(instance), *command[1:]]
    )
    one_line_error(result, str(instance), "no dashboard accounts", "user add")
    assert not instance.exists()


def test_an_address_of_another_machine_or_a_port_in_use_creates_nothing(built, tmp_path):
    instance = tmp_path / "inst"
    result = run(["--data", str(built.data_dir), "--instance", str(instance), "--host", "192.0.2.1"])
    one_line_error(result, "cannot listen on 192.0.2.1:8080", "--host")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(["--data", str(built.data_dir), "--instance", str(instance), "--port", str(port)])
    one_line_error(result, f"cannot listen on 127.0.0.1:{port}", "--port")
    assert not instance.exists()


def start_line(args: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = [proc.stdout.readline() for _ in range(2)]
    return proc, lines[1]


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()
    proc.stderr.close()


def test_every_address_is_served(built, tmp_path):
    """QA: --host '*' (or listen = "*:18744"), which waitress serves with one socket per address
    family (its MultiSocketServer), ended in AttributeError: 'MultiSocketServer' object has no
    attribute 'effective_port' after the instance folder was made. Now the start line names
    every address served."""
    import re
    import urllib.request

    proc, line = start_line(
        ["--data", str(built.data_dir), "--instance", str(tmp_path / "i"), "--host", "*", "--port", "0"]
    )
    try:
        urls = re.findall(r"http://\S+/", line)
        assert urls and line.endswith("(Ctrl-C to stop)\n"), line
        for url in urls:
            host = url.split("//")[1].rsplit(":", 1)[0]
            port = url.rsplit(":", 1)[1].rstrip("/")
            local = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}.get(host, host)
            with urllib.request.urlopen(f"http://{local}:{port}/", timeout=10) as response:
                assert response.status == 200
    finally:
        stop(proc)


@pytest.mark.parametrize(
    "host, words",
    [
        # passed the trial bind, made the instance folder, then failed with 'Invalid argument'
        ("::ffff:127.0.0.1", ["an IPv4 address written as IPv6", "give --host 127.0.0.1"]),
        # printed two "error:" lines
        ("127.0.0.1\nerror: forged", ["127.0.0.1\\u000aerror: forged"]),
    ],
)
def test_hosts_refused_in_one_line_before_anything_is_made(built, tmp_path, host, words):
    instance = tmp_path / "inst"
    result = run(["--data", str(built.data_dir), "--instance", str(instance), "--host", host, "--port", "0"])
    one_line_error(result, "cannot listen on", *words)
    assert not instance.exists()


def test_a_port_only_root_may_use_names_the_port(monkeypatch):
    """QA: port 80 as a user that is not root said 'give --host an address of this machine': the
    port is the problem (EACCES from bind; these tests may run as root, so bind is faked)."""
    import errno

    from peerwatt.commands.dashboard import _check_listen
    from peerwatt.dashboard_config import DashboardSettings
    from peerwatt.errors import UserError

    class NotRoot(socket.socket):
        def bind(self, address) -> None:
            raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(socket, "socket", NotRoot)
    with pytest.raises(UserError) as info:
        _check_listen(DashboardSettings(data=Path("."), host="127.0.0.1", port=80), "--host")
    message = str(info.value)
    assert "port 80" in message and "--port" in message and "address of this machine" not in message
