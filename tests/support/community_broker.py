"""A community's Mosquitto exactly as `peerwatt broker certs` / `peerwatt broker config` make it,
started with the commands `broker config` prints (as root: Mosquitto drops to its own user, as
on Debian), for the broker access tests (docs/privacy.md); restarted, when a test asks, with the
restart the community commands print for a broker started by hand (it comes back daemonized).

The files live in a folder the ``mosquitto`` user can reach (pytest's tmp_path is mode 0700), made
with ``tempfile.mkdtemp`` and removed by the fixture.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chain.engine import _doc_to_toml_shape

READY_S = 10.0


def peerwatt(*args: str) -> subprocess.CompletedProcess:
    """Run the peerwatt CLI (bounded)."""
    return subprocess.run(
        [sys.executable, "-m", "peerwatt.cli", *args], capture_output=True, text=True, timeout=60
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"no TOML for {value!r}")


def genesis_toml(doc: dict[str, Any]) -> str:
    """A genesis document as the TOML file `peerwatt genesis new` would write (flat tables)."""
    shape = _doc_to_toml_shape(doc)
    lines: list[str] = []
    for name, value in shape.items():
        if isinstance(value, dict):
            lines.append(f"[{name}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in value.items()]
        else:
            for entry in value:
                lines.append(f"[[{name}]]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in entry.items()]
    return "\n".join(lines) + "\n"


@dataclass
class GeneratedBroker:
    """Mosquitto started from a generated folder with the printed start commands."""

    out: Path
    port: int
    start_commands: list[list[str]]
    log_path: Path
    process: subprocess.Popen | None = field(default=None, repr=False)
    daemon_pid: int | None = field(default=None, repr=False)  # once restarted by hand (-d)

    @classmethod
    def from_output(cls, out: Path, port: int, config_stdout: str) -> GeneratedBroker:
        """Take the 'start as root: A && B' line `peerwatt broker config` printed."""
        line = next(x for x in config_stdout.splitlines() if x.startswith("start as root: "))
        commands = [shlex.split(part) for part in line.removeprefix("start as root: ").split(" && ")]
        return cls(out, port, commands, out / "mosquitto.log")

    def start(self) -> None:
        running = re.compile(r"mosquitto version \S+ running")
        before = len(running.findall(self.log()))  # the log is appended to across restarts
        for command in self.start_commands[:-1]:
            subprocess.run(command, check=True, timeout=30)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.start_commands[-1], stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        # Ready when Mosquitto logs that it runs (it does so once every listener is open). Not by
        # connecting: a probe that closes before the TLS handshake makes Mosquitto log an OpenSSL
        # error, or not, depending on timing, and the tests check the log has no errors.
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log_path.read_text()}")
            if len(running.findall(self.log())) > before:
                return
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start within {READY_S} s: {self.log_path.read_text()}")

    def reload(self) -> None:
        """SIGHUP, as `systemctl reload mosquitto` sends; return once the broker logged the reload."""
        assert self.process is not None
        before = self.log().count("Reloading config.")
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + READY_S
        while self.log().count("Reloading config.") == before:
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not reload within {READY_S} s: {self.log()[-2000:]}")
            time.sleep(0.05)

    def pid(self) -> int:
        """The broker process running now: the one start() began, or the one a restart by hand did."""
        if self.daemon_pid is not None:
            return self.daemon_pid
        assert self.process is not None
        return self.process.pid

    def running(self) -> dict[int, list[str]]:
        """Every live process running this config (its argv: the start command, with ``-d`` when
        restarted by hand), by pid; a zombie has no argv left and is not listed."""
        found = {}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")[:-1]
            except OSError:
                continue
            decoded = [a.decode(errors="replace") for a in argv]
            if decoded[:3] == self.start_commands[-1][:3] and decoded[3:] in ([], ["-d"]):
                found[int(proc.name)] = decoded
        return found

    def restart_by_hand(self, line: str) -> int:
        """Run ``line`` (a printed shell line for a broker started by hand: its cp commands and the
        restart) with sh; check it stopped this broker cleanly (exit status 0 for the process
        start() began: no crash), and that one new process runs the same config; return its pid."""
        old = self.pid()
        result = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=90)
        assert result.returncode == 0, (line, result.stdout, result.stderr)
        if self.daemon_pid is None:
            assert self.process is not None
            assert self.process.wait(READY_S) == 0, self.log()[-2000:]  # stopped, not crashed
        [(pid, argv)] = self.running().items()
        assert pid != old and argv == [*self.start_commands[-1], "-d"], (old, pid, argv)
        self.daemon_pid = pid
        return pid

    def uid(self) -> int:
        """The real uid the broker process runs as now."""
        status = Path(f"/proc/{self.pid()}/status").read_text()
        return int(next(x for x in status.splitlines() if x.startswith("Uid:")).split()[1])

    def save(self) -> None:
        """Ask the broker to write its persistence file now (SIGUSR1)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGUSR1)

    def stop(self) -> None:
        if self.daemon_pid is not None and self.daemon_pid in self.running():
            os.kill(self.daemon_pid, signal.SIGTERM)
            deadline = time.monotonic() + READY_S
            while self.daemon_pid in self.running() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.daemon_pid in self.running():
                os.kill(self.daemon_pid, signal.SIGKILL)
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(READY_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(READY_S)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def running_as_root() -> bool:
    return os.geteuid() == 0


def revoke_by_vote(c: Any, action: str, args: dict[str, Any], t: int) -> None:
    """Pass a governance change (e.g. ``revoke_meter``, ``remove_member``) on every ledger of a
    LocalCommunity whose ledgers are open (``c.open_ledgers``): proposed and voted yes by all of
    its electorate (validators or members) in one block at time ``t``."""
    from chain.governance import VALIDATOR_ACTIONS

    parties = c.validators if action in VALIDATOR_ACTIONS else c.members
    proposal = parties[0].sign(
        c.community, "propose", {"action": action, "args": args, "deadline": t + 3600}, created=t
    )
    votes = [
        p.sign(c.community, "vote", {"proposal": proposal.tx_hash.hex(), "vote": "yes"}, created=t)
        for p in parties[1:]
    ]
    block = c.run_block([proposal, *votes], t)
    outcomes = [r.get("outcome") for r in block.results if r.get("kind") == "gov"]
    assert outcomes[-1] == "passed", block.results
