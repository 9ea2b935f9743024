"""Footprint of the meter agent: RSS and CPU of a real `peerwatt agent` process at 5 s polling.

Runs a simulated SDM630 (`peerwatt sim-meter`), a Mosquitto broker and the agent as separate
processes on loopback, samples the agent's /proc counters over a window, and prints a table with
baselines measured in the same run: a bare Python interpreter, and one that imports pandas and
Flask (what the agent must not load). Goal: RSS <= 40 MB and < 1 % of a core.

Run: .venv/bin/python benchmarks/bench_agent.py [--seconds 60] [--poll 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chain.keys import generate_private_key, key_id, public_key_sec1, save_private_key
from peerwatt.ports import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fair import goal_row  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def measure(proc: subprocess.Popen, seconds: float, warmup: float) -> tuple[float, float]:
    time.sleep(warmup)
    start_cpu, start = cpu_s(proc.pid), time.monotonic()
    time.sleep(seconds)
    used = cpu_s(proc.pid) - start_cpu
    return rss_mb(proc.pid), 100 * used / (time.monotonic() - start)


def baseline(code: str, seconds: float) -> tuple[float, float]:
    proc = subprocess.Popen([sys.executable, "-c", code + "\nimport time\nwhile True: time.sleep(5)"])
    try:
        return measure(proc, min(seconds, 5), 2)
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--poll", type=float, default=5)
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter of the environment the agent runs from (e.g. a `pip install peerwatt` venv)",
    )
    args = parser.parse_args()
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    work = Path(tempfile.mkdtemp(prefix="bench-agent-"))
    procs: list[subprocess.Popen] = []
    try:
        mqtt_port, modbus_port = free_port(), free_port()
        (work / "mosquitto.conf").write_text(
            f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\n"
            + ("user root\n" if os.geteuid() == 0 else "")
        )
        procs.append(
            subprocess.Popen(
                [mosquitto, "-c", str(work / "mosquitto.conf")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "peerwatt.cli",
                    "sim-meter",
                    "--profile",
                    "sdm630",
                    "--port",
                    str(modbus_port),
                ],
                stdout=subprocess.DEVNULL,
            )
        )
        meter, owner, validator = generate_private_key(), generate_private_key(), generate_private_key()
        save_private_key(meter, work / "meter.key")
        now = int(time.time())
        (work / "genesis.toml").write_text(
            f'[community]\nid = "bench"\ntime = {now}\n'
            f'[[validators]]\nkey = "{public_key_sec1(validator.public_key()).hex()}"\n'
            f'[[members]]\nkey = "{public_key_sec1(owner.public_key()).hex()}"\n'
            f'[[meters]]\nkey = "{public_key_sec1(meter.public_key()).hex()}"\nserial = "SIM"\n'
            f'owner = "{key_id(owner.public_key())}"\ncapacity_w = 10000\n'
        )
        (work / "agent.toml").write_text(
            f'community = "bench"\nkey = "meter.key"\ngenesis = "genesis.toml"\nstate_dir = "state"\n'
            f'[meter]\nprofile = "sdm630"\nhost = "127.0.0.1"\nport = {modbus_port}\npoll_s = {args.poll}\n'
            f'[broker]\nurl = "mqtt://127.0.0.1:{mqtt_port}"\n'
        )
        time.sleep(1.5)
        agent = subprocess.Popen(
            [args.python, "-m", "peerwatt.cli", "agent", "-c", str(work / "agent.toml")],
            stdout=subprocess.DEVNULL,
            stderr=open(work / "agent.log", "wb"),
        )
        procs.append(agent)
        agent_rss, agent_cpu = measure(agent, args.seconds, 5)
        loaded = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; sys.path.insert(0, '.');"
                "import peerwatt.commands.agent as a, meter_agent.agent, meter_agent.config;"
                "print(sorted(m for m in sys.modules if m.split('.')[0] in "
                "('pandas','flask','numpy','market','dashboard') or m == 'chain.store'))",
            ],
            capture_output=True,
            text=True,
        ).stdout.strip()
        bare = baseline("pass", args.seconds)
        heavy = baseline("import pandas, flask", args.seconds)
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(f"{'process':<44} {'RSS (MB)':>9} {'CPU (% of a core)':>18}")
    print("-" * 73)
    label = f"peerwatt agent, poll every {args.poll:.0f} s ({Path(args.python).parent.parent.name})"
    print(f"{label:<44} {agent_rss:>9.1f} {agent_cpu:>18.2f}")
    print(f"{'baseline: bare python3':<44} {bare[0]:>9.1f} {bare[1]:>18.2f}")
    print(f"{'baseline: python3 + pandas + flask':<44} {heavy[0]:>9.1f} {heavy[1]:>18.2f}")
    print("-" * 73)
    print(f"heavy modules imported by the agent: {loaded or '[]'}")
    print(
        f"goal RSS <= 40 MB: {'met' if agent_rss <= 40 else 'NOT met'}; "
        f"goal CPU < 1 %: {'met' if agent_cpu < 1 else 'NOT met'}"
    )
    goal_row(
        f"agent RSS at {args.poll:.0f} s polling ({Path(args.python).parent.parent.name}) vs bare python3",
        f"{agent_rss:.1f} MB vs {bare[0]:.1f} MB",
        "≤ 40 MB",
        agent_rss <= 40,
    )
    goal_row("agent CPU at that polling", f"{agent_cpu:.2f} % of a core", "< 1 %", agent_cpu < 1)


if __name__ == "__main__":
    main()
