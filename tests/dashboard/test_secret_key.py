"""The session-signing key in the instance folder (QA: an empty ``secret_key`` file made every
page a 500, "The session is unavailable because no secret key was set"). The docs say the file
may be deleted (everybody is logged out); an empty one is treated the same: a new key is made."""

from __future__ import annotations

import logging
import stat

import pytest

from tests.dashboard.conftest import login, make_app


@pytest.mark.parametrize("content", ["", "\n", "  \n"])
def test_an_empty_secret_key_file_is_replaced_by_a_new_key(built, tmp_path, caplog, content):
    instance = tmp_path / "instance"
    make_app(built, instance)
    key = instance / "secret_key"
    key.write_text(content)
    with caplog.at_level(logging.INFO, logger="peerwatt.dashboard"):
        app = _reopen(built, instance)
    client = app.test_client()
    assert client.get("/").status_code == 200  # the old code: RuntimeError (a 500)
    assert login(client, "admin").status_code == 302
    assert len(key.read_text().strip()) == 64
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    said = [r.getMessage() for r in caplog.records if "secret_key" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0], said


def test_a_deleted_secret_key_file_is_made_again(built, tmp_path):
    instance = tmp_path / "instance"
    make_app(built, instance)
    (instance / "secret_key").unlink()
    app = _reopen(built, instance)
    assert app.test_client().get("/").status_code == 200
    assert len((instance / "secret_key").read_text().strip()) == 64


def _reopen(built, instance):
    from dashboard.app import create_app
    from tests.dashboard.conftest import TEST_PASSWORD_METHOD

    app = create_app(
        built.data_dir,
        instance_dir=instance,
        config={"TESTING": True, "PASSWORD_METHOD": TEST_PASSWORD_METHOD},
    )
    app.extensions["peerwatt"].indexer.sync()
    return app


def test_a_secret_key_file_that_is_not_text_is_one_line(built, tmp_path):
    from chain.store import StoreError

    instance = tmp_path / "instance"
    make_app(built, instance)
    (instance / "secret_key").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(StoreError) as info:
        _reopen(built, instance)
    assert "\n" not in str(info.value) and "delete it" in str(info.value)
    assert (instance / "secret_key").read_bytes() == b"\xff\xfe\x00"
