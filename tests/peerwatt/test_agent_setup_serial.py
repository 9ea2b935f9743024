"""`peerwatt agent setup --meter-serial` enrols the serial the agent will sign (found by QA reading
the code: a typed --meter-serial won over the serial the meter reports, with no comparison, so the
join request could enrol a serial the agent never sends, and no trade of that meter would settle).
A --meter-serial that differs from the reported one is one line, exit 2, nothing written; for a
meter that reports no serial (em340) the typed one is used as before."""

from __future__ import annotations

from peerwatt.onboarding import parse_join_request
from tests.support.cli import peerwatt
from tests.support.sim_meter import sim_meter_process

from .test_agent_setup_files import household

OUTPUTS = ("member.key", "meter.key", "agent.toml", "join-request.txt")


def setup(folder, port: int, *more: str):
    return peerwatt(
        "agent", "setup", "--dir", str(folder), "--host", "127.0.0.1", "--port", str(port),
        "--broker", "mqtts://127.0.0.1:8883", "--name", "H", "--yes", "--no-qr", *more, stdin="",
    )  # fmt: skip


def test_a_meter_serial_that_is_not_the_reported_one_is_refused(tmp_path):
    with sim_meter_process("--profile", "sdm630") as (_proc, _line, port):
        wrong = household(tmp_path / "wrong")
        r = setup(wrong, port, "--meter-serial", "12345678")
        assert r.returncode == 2 and "Traceback" not in r.stderr, (r.returncode, r.stderr)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: --meter-serial 12345678 "), r.stderr
        assert "(20240000)" in r.stderr and "leave --meter-serial out" in r.stderr
        assert not [name for name in OUTPUTS if (wrong / name).exists()]
        same = household(tmp_path / "same")  # the serial it reports, typed: taken
        r = setup(same, port, "--meter-serial", "20240000")
        assert r.returncode == 0, r.stderr
        assert parse_join_request((same / "join-request.txt").read_text()).serial == "20240000"


def test_a_meter_that_reports_no_serial_takes_the_typed_one(tmp_path):
    with sim_meter_process("--profile", "em340") as (_proc, _line, port):
        folder = household(tmp_path / "h")
        r = setup(folder, port, "--meter-serial", "EM340-1")
        assert r.returncode == 0, r.stderr
        assert parse_join_request((folder / "join-request.txt").read_text()).serial == "EM340-1"
