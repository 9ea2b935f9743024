"""`peerwatt simulate`: an option the study cannot run with is one line naming the option as typed
and what it may be, before anything is written; so is an --out the system refuses (found in a QA
pass: "cannot convert float NaN to integer", internal names such as pv_kwp and feed_in_price,
--start 2026-13-01 blamed on --pv-kwp, --lat's range given as -90..90, and a FileNotFoundError
traceback for --out /proc/qa-sim)."""

from __future__ import annotations

import signal

import pytest

from peerwatt.cli import main

TINY = ["--homes", "2", "--days", "0.05", "--validators", "0", "--workers", "1"]


def simulate(capsys, *args: str) -> tuple[int, str]:
    """Exit code and stderr of `peerwatt simulate TINY ARGS`, run in this process."""
    handler = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as exit_:
            main(["simulate", *TINY, *args])
    finally:
        signal.signal(signal.SIGTERM, handler)
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--days", "nan"], "--days must be from 0.05 to 366 days (not nan)"),
        (["--pv-share", "nan"], "--pv-share must be from 0 to 1 (not nan)"),
        (["--lat", "nan"], "--lat must be from -66 to 66 degrees (not nan)"),
        (["--lon", "nan"], "--lon must be from -180 to 180 degrees (not nan)"),
        (["--start", "2026-13-01"], "--start 2026-13-01 is not a date like 2026-06-21 (1970-01-02 or later)"),
        (["--start", "1970-01-01"], "--start must be 1970-01-02 or later (not 1970-01-01)"),
        (
            ["--pv-kwp", "3-2000"],
            "--pv-kwp 3-2000: two sizes from 0 to 1000 kWp, the smallest size first, e.g. 3-9",
        ),
        (
            ["--pv-kwp", "3-inf"],
            "--pv-kwp 3-inf: two sizes from 0 to 1000 kWp, the smallest size first, e.g. 3-9",
        ),
        (
            ["--pv-kwp", "9-3"],
            "--pv-kwp 9-3: two sizes from 0 to 1000 kWp, the smallest size first, e.g. 3-9",
        ),
        (["--pv-kwp", "x"], "--pv-kwp x is not two sizes like 3-9 (kWp, 0 to 1000, the smallest size first)"),
        (["--feed-in", "400000"], "--feed-in (400000) must be at most --retail (300000) µ/kWh"),
        (
            ["--mechanism", "community", "--community-price", "50000"],
            "--community-price must be from --feed-in to --retail (80000 to 300000 µ/kWh) with --mechanism "
            "community (not 50000)",
        ),
    ],
)
def test_an_option_out_of_range_is_one_line_naming_it_and_nothing_is_written(tmp_path, capsys, args, message):
    code, err = simulate(capsys, *args, "--out", str(tmp_path / "study"))
    assert (code, err) == (2, f"error: {message}\n")
    assert list(tmp_path.iterdir()) == []


def test_an_out_the_system_refuses_is_one_line(tmp_path, capsys):
    assert simulate(capsys, "--out", "/proc/qa-sim") == (
        2,
        "error: cannot use --out /proc/qa-sim: No such file or directory\n",
    )
    file = tmp_path / "file"
    file.write_text("")
    assert simulate(capsys, "--out", str(file / "a" / "b")) == (
        2,
        f"error: cannot use --out {file / 'a' / 'b'}: {file} is a file, not a folder\n",
    )
