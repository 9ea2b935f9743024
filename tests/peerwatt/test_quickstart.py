"""docs/quickstart.md, run: the commands of its code blocks, each as its own process, on loopback.

Every ```sh block starts with ``# machine: <address>``; each machine is a folder of its own (its
working directory persists between blocks, so ``cd`` works). What the test changes, and only that:

- addresses 10.0.0.x become 127.0.0.1; ports (8883, 8101, 5020, 5021) become free ones;
- ``/etc/mosquitto/peerwatt`` and ``/var/lib/mosquitto`` become folders of this test;
- ``--interval 900`` becomes ``--interval 30`` (the doc says so for trying it out);
- ``scp`` copies between the machines' folders (same semantics: a folder to a new name, files
  into a folder); ``systemctl restart mosquitto`` stops and starts the test's Mosquitto, as
  systemd would; the restart the community commands print for a broker started by hand runs as
  it is (``sh -c ... restart-mosquitto ...``), and the daemon it starts is stopped at the end;
- ``peerwatt`` is this interpreter's ``-m peerwatt.cli``.

A command ending in ``&`` runs in the background (killed at the end); any other must exit 0.
Then the test waits, bounded, for a first trade and a first settlement in validator 1's store.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import pytest

from peerwatt.ports import free_port

MOSQUITTO = "/usr/sbin/mosquitto"
DOC = Path(__file__).resolve().parents[2] / "docs" / "quickstart.md"
READY_S = 30.0
COMMAND_S = 120.0
TRADE_S = 240.0

pytestmark = [
    pytest.mark.integration,
    pytest.mark.paced,
    pytest.mark.skipif(
        shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
        reason="needs Debian's mosquitto",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="the quickstart's broker commands run as root"),
]


def blocks(text: str) -> list[tuple[str, list[str]]]:
    """(machine, command lines) of each ```sh block."""
    out = []
    for body in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        lines = [x.strip() for x in body.splitlines() if x.strip()]
        assert lines[0].startswith("# machine: "), f"block without '# machine:': {lines[0]}"
        out.append((lines[0].removeprefix("# machine: "), [x for x in lines[1:] if not x.startswith("#")]))
    return out


def test_doc_blocks_parse():
    found = blocks(DOC.read_text())
    assert len(found) >= 10
    assert any("community init" in c for _, cmds in found for c in cmds)


class Run:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.cwd: dict[str, Path] = {}
        self.background: list[tuple[str, subprocess.Popen]] = []
        self.mosquitto: subprocess.Popen | None = None
        self.daemons: list[int] = []  # brokers the printed restart started (-d)
        self.mqtt_port = free_port()
        self.http_base = self._free_base(4)
        self.meter_ports = {"5020": str(free_port()), "5021": str(free_port())}
        (root / "logs").mkdir()

    @staticmethod
    def _free_base(n: int) -> int:
        for _ in range(50):
            base = free_port()
            ok = True
            for p in range(base, base + n):
                with socket.socket() as s:
                    try:
                        s.bind(("127.0.0.1", p))
                    except OSError:
                        ok = False
            if ok:
                return base
        raise OSError("no free port range")

    def machine(self, name: str) -> Path:
        if name not in self.cwd:
            folder = self.root / "machines" / name
            folder.mkdir(parents=True)
            self.cwd[name] = folder
        return self.cwd[name]

    def home(self, name: str) -> Path:
        self.machine(name)
        return self.root / "machines" / name

    def substitute(self, line: str) -> str:
        line = re.sub(r"\b10\.0\.0\.\d+\b", "127.0.0.1", line)
        line = line.replace("8883", str(self.mqtt_port)).replace(
            "--http-port 8101", f"--http-port {self.http_base}"
        )
        for doc_port, port in self.meter_ports.items():
            line = line.replace(f"--port {doc_port}", f"--port {port}")
        line = line.replace("/etc/mosquitto/peerwatt", str(self.root / "etc-peerwatt"))
        line = line.replace("/var/lib/mosquitto", str(self.root / "persistence"))
        return line.replace("--interval 900", "--interval 30")

    def scp(self, machine: str, argv: list[str]) -> None:
        args = [a for a in argv[1:] if a != "-r"]
        *sources, target = args
        host, _, dest = target.partition(":")
        dest_path = self.home(host) / dest if dest else self.home(host)
        for source in sources:
            src = self.cwd[machine] / source
            if src.is_dir():
                shutil.copytree(src, dest_path / src.name if dest_path.is_dir() else dest_path)
            elif dest.endswith("/") or dest_path.is_dir():
                shutil.copy2(src, dest_path / src.name)
            else:
                shutil.copy2(src, dest_path)

    def run(self, machine: str, raw: str) -> None:
        cwd = self.machine(machine)
        if raw.startswith("scp "):
            self.scp(machine, shlex.split(raw))
            return
        if raw == "systemctl restart mosquitto":
            # the broker started by the guide's own command, stopped and started again (not
            # SIGHUP: Mosquitto 2.0.11 segfaulted after a second reload in a QA pass)
            assert self.mosquitto is not None
            started = next(r for r, p in self.background if p is self.mosquitto)
            self.mosquitto.terminate()
            self.mosquitto.wait(timeout=30)
            self.run(machine, started)
            return
        line = self.substitute(raw)
        background = line.endswith("&")
        argv = shlex.split(line.rstrip("&").strip())
        if argv[0] == "cd":
            self.cwd[machine] = cwd / argv[1]
            return
        if argv[0] == "peerwatt":
            argv = [sys.executable, "-m", "peerwatt.cli", *argv[1:]]
        if background:
            log = open(self.root / "logs" / f"{len(self.background):02d}-{machine}.log", "wb")  # noqa: SIM115
            proc = subprocess.Popen(
                argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
            log.close()
            self.background.append((raw, proc))
            if "mosquitto" in argv[0]:
                self.mosquitto = proc
                self._wait_port(self.mqtt_port, proc, raw)
            elif "sim-meter" in argv:
                self._wait_port(int(argv[argv.index("--port") + 1]), proc, raw)
            elif argv[3:5] == ["node", "run"]:
                http = tomllib.loads((cwd / "node.toml").read_text())["http"]
                self._wait_port(int(http.rpartition(":")[2]), proc, raw)
            return
        result = subprocess.run(
            argv, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=COMMAND_S
        )
        assert result.returncode == 0, f"{raw}\n{result.stdout}\n{result.stderr}\n{self.logs()}"
        if argv[:2] == ["sh", "-c"] and "restart-mosquitto" in argv:
            # it stopped the broker running this config (SIGTERM: exit 0, no crash) and started
            # it again daemonized, with the same command and -d
            if self.mosquitto is not None:
                assert self.mosquitto.wait(timeout=30) == 0, self.logs()
                self.mosquitto = None
            conf = argv[-1]
            self.daemons = [pid for pid, cmd in mosquittos().items() if cmd == [MOSQUITTO, "-c", conf, "-d"]]
            assert len(self.daemons) == 1, mosquittos()

    def _wait_port(self, port: int, proc: subprocess.Popen, raw: str) -> None:
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"{raw} exited\n{self.logs()}"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"{raw}: port {port} not open after {READY_S} s\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(
            f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted((self.root / "logs").glob("*.log"))
        )

    def stop(self) -> None:
        for pid in self.daemons:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while any(pid in mosquittos() for pid in self.daemons) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in self.daemons:
            if pid in mosquittos():
                os.kill(pid, signal.SIGKILL)
        for _, proc in reversed(self.background):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in self.background:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def mosquittos() -> dict[int, list[str]]:
    """The live Mosquitto processes by pid, with their argv (a zombie has none: not listed)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0")[:-1]]
            except OSError:
                continue
            if argv[:1] == [MOSQUITTO]:
                found[int(proc.name)] = argv
    return found


def results(store: Path, kind: str) -> list[dict]:
    if not store.exists():
        return []
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
    try:
        return [json.loads(d) for (d,) in conn.execute("SELECT data FROM results WHERE kind = ?", (kind,))]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def test_quickstart_commands_reach_a_trade_and_a_settlement():
    root = Path(tempfile.mkdtemp(prefix="peerwatt-quickstart-"))
    root.chmod(0o755)  # Mosquitto, dropped to its own user, reads its files below this folder
    run = Run(root)
    started = time.monotonic()
    try:
        for machine, commands in blocks(DOC.read_text()):
            for command in commands:
                run.run(machine, command)
        setup_s = time.monotonic() - started
        store = run.home("10.0.0.11") / "validator-1" / "node-data" / "ledger.sqlite"
        deadline = time.monotonic() + TRADE_S
        while not results(store, "trade") and time.monotonic() < deadline:
            time.sleep(1)
        trade_s = time.monotonic() - started
        assert results(store, "trade"), f"no trade within {TRADE_S} s\n{run.logs()}"
        while not results(store, "settlement") and time.monotonic() < deadline:
            time.sleep(1)
        assert results(store, "settlement"), f"no settlement within {TRADE_S} s\n{run.logs()}"
        print(
            f"set-up {setup_s:.0f} s, first trade {trade_s:.0f} s, settled {time.monotonic() - started:.0f} s"
        )
        status = subprocess.run(
            [sys.executable, "-m", "peerwatt.cli", "agent", "status", "-c", "peerwatt/agent.toml"],
            cwd=run.home("10.0.0.21"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
    finally:
        run.stop()
        shutil.rmtree(root, ignore_errors=True)
