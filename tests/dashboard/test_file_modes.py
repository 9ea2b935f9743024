"""The dashboard's own files are readable by their owner only (found in a QA pass: under umask
022 dashboard.sqlite, with password and session hashes, and index.sqlite, with every household's
trades, were 0644 in a 0755 folder; only secret_key was 0600)."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from dashboard.app import create_app
from tests.dashboard.conftest import TEST_PASSWORD_METHOD, make_app

FILES = ("dashboard.sqlite", "index.sqlite", "secret_key")
COMPANIONS = ("dashboard.sqlite-wal", "dashboard.sqlite-shm", "index.sqlite-wal", "index.sqlite-shm")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_instance_folder_and_files_are_owner_only(built, tmp_path, umask_022):
    instance = tmp_path / "deeper" / "instance"
    app = make_app(built, instance)
    client = app.test_client()
    assert client.get("/api/v1/overview").status_code == 200
    assert mode(instance) == 0o700
    for name in FILES:
        assert mode(instance / name) == 0o600, name
    present = [name for name in COMPANIONS if (instance / name).exists()]
    assert {"dashboard.sqlite-wal", "index.sqlite-wal"} <= set(present)  # WAL mode, while open
    for name in present:
        assert mode(instance / name) == 0o600, name


def start(built, instance: Path):
    return create_app(built.data_dir, instance_dir=instance, config={"PASSWORD_METHOD": TEST_PASSWORD_METHOD})


def test_wider_files_are_narrowed_at_start_with_one_line_each(built, tmp_path, umask_022, caplog):
    instance = tmp_path / "instance"
    make_app(built, instance)  # the files of an older version, or copied in: 0644 in a 0755 folder
    os.chmod(instance, 0o755)
    widened = [instance / name for name in (*FILES, *COMPANIONS) if (instance / name).exists()]
    for path in widened:
        os.chmod(path, 0o644)
    with caplog.at_level(logging.INFO, logger="peerwatt.files"):
        start(built, instance)
    assert mode(instance) == 0o700
    for path in widened:
        assert mode(path) == 0o600, path.name
    lines = [r.getMessage() for r in caplog.records if r.name == "peerwatt.files"]
    assert len(lines) == len(widened) + 1  # the folder and each file, once
    for path, was in ((instance, "0755"), *((p, "0644") for p in widened)):
        assert [line for line in lines if line.startswith(f"{path} was mode {was}")], path.name
    # a second start finds nothing to narrow
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="peerwatt.files"):
        start(built, instance)
    assert [r for r in caplog.records if r.name == "peerwatt.files"] == []


def test_a_folder_user_add_made_under_the_umask_is_narrowed_without_a_word(
    built, tmp_path, umask_022, caplog
):
    """`peerwatt dashboard user add` makes the instance folder (0755 under umask 022) before the
    accounts: an empty folder exposed nothing, so it is narrowed without a log line, and the
    dashboard started on it later finds nothing to say either (tests/peerwatt/test_cli_bad_files.py
    wants one error line from a start over a damaged file)."""
    from dashboard.accounts import Accounts

    instance = tmp_path / "instance"
    instance.mkdir()
    assert mode(instance) == 0o755
    with caplog.at_level(logging.INFO, logger="peerwatt.files"):
        Accounts(instance / "dashboard.sqlite", password_method=TEST_PASSWORD_METHOD).close()
        start(built, instance)
    assert mode(instance) == 0o700 and mode(instance / "dashboard.sqlite") == 0o600
    assert [r.getMessage() for r in caplog.records if r.name == "peerwatt.files"] == []
