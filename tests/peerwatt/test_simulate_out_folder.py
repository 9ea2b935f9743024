"""`peerwatt simulate --out`: a study is built beside its folder and moved into place only when
complete; a folder that holds anything but an earlier study is refused, an earlier study is
replaced only with --replace and only by a complete study, and a failed or interrupted run leaves
it as it was (found in a QA pass: a rerun deleted `ledger/` and overwrote the CSVs of any folder,
`--out ''` wrote into the current folder, a refused option or Ctrl-C left the old CSVs beside a
new, empty or partial ledger)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.cli import peerwatt

TINY = ["--homes", "2", "--days", "0.05", "--validators", "0", "--workers", "1"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes (SQLite's shared-memory index aside)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith("-shm")
    }


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_folder_that_is_no_study_is_refused_and_left_as_it_was(tmp_path):
    mine = tmp_path / "mydir"
    (mine / "ledger").mkdir(parents=True)
    (mine / "ledger" / "notes.txt").write_text("precious\n")
    (mine / "households.csv").write_text("keep\n")
    for extra in ([], ["--replace"]):
        res = peerwatt("simulate", *TINY, "--out", str(mine), *extra)
        assert res.returncode == 2, (res.stdout, res.stderr)
        assert res.stderr == (
            f"error: --out {mine} holds files that are not a peerwatt study (households.csv, ledger):"
            " choose a new or empty folder\n"
        )
    assert snapshot(mine) == {"ledger/notes.txt": b"precious\n", "households.csv": b"keep\n"}
    assert hidden(tmp_path) == []


def test_an_empty_out_is_refused_not_taken_for_the_current_folder(tmp_path):
    (tmp_path / "ledger").mkdir()
    (tmp_path / "ledger" / "notes.txt").write_text("precious\n")
    for out in ("", " "):
        res = subprocess.run(
            [sys.executable, "-m", "peerwatt.cli", "simulate", *TINY, "--out", out],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
        assert res.returncode == 2, (res.stdout, res.stderr)
        assert res.stderr == "error: --out is empty: name the study's folder, e.g. --out study\n"
    res = peerwatt("simulate", *TINY, "--out", str(tmp_path / "ledger" / ".."))
    assert res.returncode == 2 and "holds files that are not a peerwatt study" in res.stderr, res.stderr
    assert snapshot(tmp_path) == {"ledger/notes.txt": b"precious\n"}


def test_an_earlier_study_is_replaced_only_when_asked_and_only_by_a_complete_one(tmp_path):
    study = tmp_path / "study"
    first = peerwatt("simulate", *TINY, "--seed", "1", "--out", str(study))
    assert first.returncode == 0, first.stderr
    before = snapshot(study)
    refused = peerwatt("simulate", *TINY, "--seed", "2", "--out", str(study))
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    assert refused.stderr == (
        f"error: --out {study} holds an earlier study: add --replace to replace it (once the new one "
        "is complete) or choose another folder\n"
    )
    assert snapshot(study) == before
    # options refused only once the study has started (by the households' model), or before it:
    # the earlier study stays whole, and no half-made folder is left beside it
    for bad in (["--lat", "nan"], ["--lon", "nan"], ["--pv-kwp", "3-2000"], ["--start", "1970-01-01"]):
        res = peerwatt("simulate", *TINY, "--out", str(study), "--replace", *bad)
        assert res.returncode == 2 and res.stderr.count("\n") == 1, (bad, res.stdout, res.stderr)
        assert snapshot(study) == before, bad
        assert hidden(tmp_path) == [], bad
    second = peerwatt("simulate", *TINY, "--seed", "2", "--out", str(study), "--replace")
    assert second.returncode == 0, second.stderr
    assert f"report, plots and ledger in {study}/" in second.stdout
    after = snapshot(study)
    assert set(after) == set(before) and after["households.csv"] != before["households.csv"]
    assert hidden(tmp_path) == []
    # an empty folder is a new one
    (tmp_path / "empty").mkdir()
    res = peerwatt("simulate", *TINY, "--out", str(tmp_path / "empty"))
    assert res.returncode == 0 and (tmp_path / "empty" / "kpis.csv").is_file(), res.stderr


def test_ctrl_c_during_a_rerun_leaves_the_earlier_study_as_it_was(tmp_path):
    study = tmp_path / "study"
    assert peerwatt("simulate", *TINY, "--out", str(study)).returncode == 0
    before = snapshot(study)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            # Ctrl-C live, as in a terminal (a suite run in the background ignores SIGINT)
            "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from peerwatt.cli import main; main()",
            "simulate",
            *TINY[:2],
            "--days",
            "20",
            *TINY[4:],
            "--out",
            str(study),
            "--replace",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".study.partial-*/ledger/sequencer/ledger.sqlite")):
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        time.sleep(0.5)  # into the study
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)
    assert proc.returncode == 130, (out, err)
    assert snapshot(study) == before
    assert hidden(tmp_path) == []


def test_a_complete_study_that_cannot_be_moved_into_place_is_kept_and_named(tmp_path, monkeypatch):
    """Found in a review: when the final rename failed (a mount point as --out: EBUSY), the run
    ended in a traceback and deleted the complete study. Now one line names the hidden folder
    that keeps it; an earlier study stays where it was."""
    import errno

    from peerwatt.errors import UserError
    from peerwatt.simulation import SimOptions, run_simulation

    out = tmp_path / "study"
    rename = Path.rename

    def refuse_into_out(self, target):  # the file system's answer for a mount point
        if Path(target) == out:
            raise OSError(errno.EBUSY, "Device or resource busy")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", refuse_into_out)
    o = SimOptions(homes=2, days=0.05, validators=0, workers=1, out=out)
    with pytest.raises(UserError) as caught:
        run_simulation(o)
    message = str(caught.value)
    (kept,) = tmp_path.glob(".study.partial-*")
    assert message == (
        f"cannot put the study in place at --out {out} (Device or resource busy); the complete study "
        f"is in {kept}: move it yourself"
    )
    assert (kept / "kpis.csv").is_file() and (kept / "ledger" / "sequencer").is_dir()
    assert not out.exists()


def test_a_mount_point_is_refused_before_the_run(tmp_path, monkeypatch):
    from peerwatt import simulation
    from peerwatt.errors import UserError

    out = tmp_path / "volume"
    out.mkdir()
    monkeypatch.setattr(simulation.os.path, "ismount", lambda p: Path(p) == out)
    with pytest.raises(UserError, match=r"is a mount point: .* a folder inside it, e\.g\. .*volume/study"):
        simulation.check_out(out, False)


def test_every_run_builds_in_a_folder_of_its_own(tmp_path):
    """Found in a review: partial folders were named by process id, so in a container (the same
    pid every start) a killed run's leftover made every later run fail with "File exists"."""
    from peerwatt.simulation import _beside

    out = tmp_path / "study"
    (tmp_path / f".study.partial-{os.getpid()}").mkdir()  # what a killed run of the old code left
    first, second = _beside(out, "partial"), _beside(out, "partial")
    assert first != second and first.is_dir() and second.is_dir()
    assert first.name.startswith(".study.partial-") and first.parent == tmp_path


def test_a_failed_run_leaves_no_folder_it_made(tmp_path):
    """Found in a review: the parents a run made for a new --out stayed when it failed; and a study
    refused at the last check (something put into --out meanwhile) is removed, not left hidden."""
    from peerwatt.errors import UserError
    from peerwatt.simulation import SimOptions, run_simulation

    out = tmp_path / "a" / "b" / "study"

    def interrupt(done, total, rss):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_simulation(SimOptions(homes=2, days=0.05, validators=0, workers=1, out=out), progress=interrupt)
    assert list(tmp_path.iterdir()) == []

    out = tmp_path / "study"

    def meddle(done, total, rss):
        if not out.exists():
            out.mkdir()
            (out / "notes.txt").write_text("mine")

    with pytest.raises(UserError, match="holds files that are not a peerwatt study"):
        run_simulation(SimOptions(homes=2, days=0.05, validators=0, workers=1, out=out), progress=meddle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study"]  # no hidden partial folder left
    assert (out / "notes.txt").read_text() == "mine"
