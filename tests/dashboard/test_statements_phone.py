"""The operator's statements page on a phone (found in a QA pass): at 390x844 as admin the page
scrolled sideways (document.scrollingElement.scrollWidth 517 > 390): its tables were plain tables
that a phone's layout does not contain, where docs/dashboard.md promises that no page scrolls
sideways at 390x844. They are one card per row now, each value labelled, as the other tables."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.dashboard.conftest import PASSWORDS, make_app
from tests.dashboard.test_browser import (  # noqa: F401  (browser: the module's Chromium)
    DESKTOP,
    OVERFLOW_JS,
    PHONE,
    TABLES_JS,
    _serve,
    browser,
    open_page,
    shoot,
)

pytestmark = pytest.mark.browser


def register(billing, built) -> list[str]:
    """An issued.sqlite with a month of statements (one paid, one final) and a correction note,
    in the layout `peerwatt statements` writes (docs/billing.md); returns the numbers."""
    billing.mkdir()
    conn = sqlite3.connect(billing / "issued.sqlite")
    conn.execute(
        "CREATE TABLE documents (number TEXT, period TEXT, kind TEXT, member TEXT, issued_at TEXT,"
        " height INTEGER, refers_to TEXT, doc BLOB, community TEXT, seq INTEGER)"
    )
    conn.execute("CREATE TABLE payments (number TEXT, paid_on TEXT)")
    community = built.community.community
    members = sorted(built.community.genesis.doc["members"].items())
    numbers = []
    for seq, (member, entry) in enumerate(members, 1):
        number = f"{community}-2025-05-{seq:04d}"
        total = (-1) ** seq * 12_345_678 * seq
        doc = {"total": total, "shown": {"total": total // 10_000 * 10_000}, "member_name": entry["name"]}
        doc["final"] = seq == 2
        conn.execute(
            "INSERT INTO documents VALUES (?, '2025-05', 'statement', ?, '2025-06-01', 123, NULL, ?, ?, ?)",
            (number, member, json.dumps(doc).encode(), community, seq),
        )
        numbers.append(number)
    conn.execute("INSERT INTO payments VALUES (?, '2025-06-03')", (numbers[0],))
    member, entry = members[0]
    note = {"total": 40_000, "shown_total": 40_000, "corrected": {"member_name": entry["name"]}}
    conn.execute(
        "INSERT INTO documents VALUES (?, '2025-05', 'credit_note', ?, '2025-06-04', 340, ?, ?, ?, ?)",
        (f"{community}-2025-05-0099", member, numbers[0], json.dumps(note).encode(), community, 99),
    )
    numbers.append(f"{community}-2025-05-0099")
    conn.commit()
    conn.close()
    return numbers


def test_the_statements_page_does_not_scroll_sideways_on_a_phone(browser, built, tmp_path):  # noqa: F811
    numbers = register(tmp_path / "billing", built)
    app = make_app(built, tmp_path / "instance", BILLING_DIR=str(tmp_path / "billing"))
    for base in _serve(app):
        for viewport in (PHONE, DESKTOP):
            context, page, errors = open_page(browser, base, viewport)
            page.goto("/login")
            page.fill("#username", "admin")
            page.fill("#password", PASSWORDS["admin"])
            page.click("#login-submit")
            page.wait_for_load_state()
            for path in ("/statements", "/statements?period=2025-05"):
                page.goto(path)
                assert page.locator("#statements tbody tr").count() == len(numbers)
                got = page.evaluate(OVERFLOW_JS)
                assert got["scroll"] <= viewport["width"], (viewport, path, got)
                if viewport is PHONE:
                    assert got["wide"] == [], (path, got)
                    for table in ("#statements", "#periods"):
                        row = page.locator(f"{table} tbody tr").first
                        assert row.evaluate("r => getComputedStyle(r).display") == "block"
                        labels = row.evaluate(
                            "r => [...r.cells].map(c => getComputedStyle(c, '::before').content)"
                        )
                        assert all(label.endswith(': "') for label in labels), (table, labels)
                else:  # the desktop keeps its tables
                    for table in page.evaluate(TABLES_JS):
                        assert table["display"] == "table" and table["stacked"], (path, table)
            page.goto("/statements")
            shoot(page, f"statements-{viewport['width']}")
            text = page.locator("#statements").inner_text()
            assert numbers[0] in text and "paid 2025-06-03" in text and f"corrects {numbers[0]}" in text
            assert errors == [], errors
            context.close()
