"""`peerwatt dashboard` on bad input (QA): a host that is no address of this machine ended in a
waitress traceback (ValueError: Invalid host/port specified) after the instance folder was made;
an IPv6 host was printed without brackets; `dashboard user list/remove` on a missing instance
folder made it and an empty dashboard.sqlite. Each is one line now, and nothing is created."""

from __future__ import annotations

import socket
import subprocess
import sys

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
    proc = subprocess.Popen(
        CLI
        + ["--data", str(built.data_dir), "--instance", str(tmp_path / "i"), "--host", "::1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        assert " on http://[::1]:" in lines[1], lines
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


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
