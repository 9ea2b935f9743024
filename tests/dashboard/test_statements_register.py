"""The operator's statements page over a register it cannot read (found in a QA pass: an
issued.sqlite that is not a database made /statements answer 500 with "cannot read
/tmp/.../issued.sqlite: file is not a database")."""

from __future__ import annotations

import sqlite3

import pytest

from tests.dashboard.conftest import login, make_app


@pytest.fixture
def billing(tmp_path):
    folder = tmp_path / "billing"
    folder.mkdir()
    return folder


def clients(built, tmp_path, billing):
    app = make_app(built, tmp_path / "instance", BILLING_DIR=str(billing))
    admin, villa = app.test_client(), app.test_client()
    assert login(admin, "admin").status_code == 302 and login(villa, "villa").status_code == 302
    return admin, villa


def test_an_unreadable_register_is_a_clear_message_to_the_admin_only(built, tmp_path, billing):
    (billing / "issued.sqlite").write_bytes(b"this is not a database, it was overwritten\n" * 100)
    admin, villa = clients(built, tmp_path, billing)
    page = admin.get("/statements")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert 'id="register-problem"' in text and "cannot be read" in text
    assert "file is not a database" in text and str(billing / "issued.sqlite") in text
    assert "No statements issued" not in text  # not "nothing issued": not known
    api = admin.get("/api/v1/statements")
    assert api.status_code == 503 and "file is not a database" in api.get_json()["error"]
    for path in ("/statements", "/api/v1/statements"):
        refused = villa.get(path)
        assert refused.status_code == 403 and str(billing) not in refused.get_data(as_text=True)


def test_a_damaged_document_in_the_register_is_named(built, tmp_path, billing):
    conn = sqlite3.connect(billing / "issued.sqlite")
    conn.execute(
        "CREATE TABLE documents (number TEXT, period TEXT, kind TEXT, member TEXT, issued_at TEXT,"
        " height INTEGER, refers_to TEXT, doc BLOB, community TEXT, seq INTEGER)"
    )
    conn.execute(
        "INSERT INTO documents VALUES ('oak-street-2025-06-0001', '2025-06', 'statement', 'aa', "
        "'2025-07-01', 5, NULL, ?, ?, 1)",
        (b'{"total": 1}', built.community.community),
    )
    conn.commit()
    conn.close()
    admin, _ = clients(built, tmp_path, billing)
    page = admin.get("/statements")
    assert page.status_code == 200
    assert "oak-street-2025-06-0001 is damaged" in page.get_data(as_text=True)
    assert admin.get("/api/v1/statements").status_code == 503
