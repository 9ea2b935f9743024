"""Where the agent's state goes: a state file that is a folder, or a state_dir that is a file, is
refused in one clear line and nothing is changed (found in a QA pass: `agent status` made such a
folder mode 0600 before failing; `agent -c` said only "...: File exists")."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys

import pytest

TOML = (
    'community = "oak"\nkey = "meter.key"\ngenesis = "genesis.toml"\nstate_dir = "state"\n'
    '[meter]\nprofile = "sdm630"\nhost = "127.0.0.1"\n[broker]\nurl = "mqtt://127.0.0.1:1883"\n'
)


def write(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text(TOML)
    return path


def test_status_on_a_state_file_that_is_a_folder_changes_nothing(tmp_path):
    """Found in a QA pass: the folder's mode became 0600 before the command failed."""
    path = write(tmp_path)
    folder = tmp_path / "state" / "agent.sqlite"
    folder.mkdir(parents=True)
    os.chmod(folder, 0o755)
    r = subprocess.run(
        [sys.executable, "-m", "peerwatt.cli", "agent", "status", "-c", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "is a folder" in r.stderr and str(folder) in r.stderr, r.stderr
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert os.listdir(tmp_path / "state") == ["agent.sqlite"] and not any(folder.iterdir())


def test_a_state_dir_that_is_a_file_is_named(tmp_path):
    """Found in a QA pass: `agent -c` said only '...: File exists'."""
    from meter_agent.outbox import Outbox, OutboxError

    state_dir = tmp_path / "state"
    state_dir.write_text("not a folder\n")
    with pytest.raises(OutboxError, match=re.escape(f"{state_dir} is a file, not a folder")):
        Outbox(state_dir / "agent.sqlite", exclusive=True)
    with pytest.raises(OutboxError, match=re.escape(f"{state_dir} is a file, not a folder")):
        Outbox(state_dir / "agent.sqlite")
    assert state_dir.read_text() == "not a folder\n" and os.listdir(tmp_path) == ["state"]


def test_status_with_a_state_dir_that_is_a_file_says_so(tmp_path):
    """`agent status` said "no agent state in ...: the agent has not run yet"."""
    path = write(tmp_path)
    (tmp_path / "state").write_text("not a folder\n")
    r = subprocess.run(
        [sys.executable, "-m", "peerwatt.cli", "agent", "status", "-c", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"{tmp_path / 'state'} is a file, not a folder" in r.stderr, r.stderr
    assert (tmp_path / "state").read_text() == "not a folder\n"
