"""chain/private_files.py: owner-only files and folders, and what it must not touch."""

from __future__ import annotations

import os
import stat

import pytest

from chain.private_files import private_file, private_folder


def test_a_file_where_a_folder_belongs_and_the_reverse_keep_their_modes(tmp_path):
    """Found in a QA pass: `node init --data F` with F a file turned F to mode 0600 before saying
    'Not a directory'; `agent status` with state/agent.sqlite a folder turned the folder to 0600."""
    file, folder = tmp_path / "file", tmp_path / "folder"
    file.write_text("x")
    folder.mkdir()
    os.chmod(file, 0o644)
    os.chmod(folder, 0o755)
    with pytest.raises(NotADirectoryError):
        private_folder(file)
    with pytest.raises(IsADirectoryError):
        private_file(folder)
    assert stat.S_IMODE(file.stat().st_mode) == 0o644
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert private_folder(tmp_path / "new") == tmp_path / "new"
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    assert private_file(tmp_path / "new" / "f") is True
    assert stat.S_IMODE((tmp_path / "new" / "f").stat().st_mode) == 0o600


def test_a_link_to_a_device_or_pipe_is_not_narrowed(tmp_path):
    """Found in a QA pass: index.sqlite made a link to /dev/null, and the dashboard's start turned
    /dev/null to mode 0600 for the whole machine. Only regular files and folders are narrowed."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe, 0o666)
    os.chmod(pipe, 0o666)
    (tmp_path / "index.sqlite").symlink_to(pipe)
    assert private_file(tmp_path / "index.sqlite") is False
    assert stat.S_IMODE(pipe.stat().st_mode) == 0o666
