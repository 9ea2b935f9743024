"""The dashboard in a real Chromium (plain Playwright; no pytest-playwright): charts drawn, login,
household page, date filter, CSV download checked against the ledger, receipt verification,
logout; screenshots of every page at desktop and phone width, light and dark."""

from __future__ import annotations

import csv
import io
import threading
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from werkzeug.serving import make_server

from tests.conftest import require_tool
from tests.dashboard.conftest import PASSWORDS
from tests.dashboard.ledger_fixture import TZ
from tests.dashboard.reference import final_trades

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

NON_BLANK_JS = """(id) => {
  const c = document.getElementById(id);
  if (!c || !c.width || !c.height) return 0;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) n++;
  return n;
}"""


@pytest.fixture(scope="module")
def server(app):
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    executable = require_tool("chromium", "/usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_page(browser, base: str, viewport: dict, dark: bool = False, state: dict | None = None):
    context = browser.new_context(
        viewport=viewport,
        color_scheme="dark" if dark else "light",
        base_url=base,
        accept_downloads=True,
        is_mobile=viewport is PHONE,
        storage_state=state,
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return context, page, errors


def shoot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_chart(page, canvas: str) -> int:
    page.wait_for_function(f"() => window.Chart && Chart.getChart(document.getElementById('{canvas}'))")
    return page.evaluate(NON_BLANK_JS, canvas)


def test_dashboard_in_chromium(browser, server, built):
    # -- overview, logged out: chart drawn, no household data, screenshots in four variants
    for viewport, vname in ((DESKTOP, "desktop"), (PHONE, "phone")):
        for dark in (False, True):
            context, page, errors = open_page(browser, server, viewport, dark)
            page.goto("/")
            assert wait_chart(page, "price-chart") > 1000
            assert page.locator("#overview-cards .card").count() == 8
            shoot(page, f"overview-{vname}-{'dark' if dark else 'light'}")
            page.goto("/explorer")
            shoot(page, f"explorer-{vname}-{'dark' if dark else 'light'}")
            page.goto("/explorer/blocks/300")
            shoot(page, f"block-{vname}-{'dark' if dark else 'light'}")
            assert errors == [], errors
            context.close()

    # -- log in through the form
    context, page, errors = open_page(browser, server, DESKTOP)
    page.goto("/household")
    assert "/login" in page.url
    shoot(page, "login-desktop-light")
    page.fill("#username", "villa")
    page.fill("#password", PASSWORDS["villa"])
    page.click("#login-submit")
    page.wait_for_url("**/household/*")
    assert page.locator("h1").inner_text() == "Sunny Villa"
    assert wait_chart(page, "history-chart") > 500
    assert page.locator("#household-trades tbody tr[data-trade]").count() == 20
    assert "Savings" in page.locator("#statement").inner_text()
    shoot(page, "household-desktop-light")
    state = context.storage_state()

    # -- trade history filtered by date, and the CSV of exactly those rows
    page.goto("/trades")
    page.fill("#f-from", "2025-06-03")
    page.fill("#f-to", "2025-06-03")
    page.click("#apply-filters")
    page.wait_for_url("**/trades?*from=2025-06-03*")
    rows = page.locator("#trades-table tbody tr[data-trade]")
    assert rows.count() > 0
    tz = ZoneInfo(TZ)
    for trade_id in rows.evaluate_all("rs => rs.map(r => r.dataset.trade)"):
        assert datetime.fromtimestamp(int(trade_id.split(":")[0]), tz).date().isoformat() == "2025-06-03"
    shoot(page, "trades-desktop-light")
    with page.expect_download() as download_info:
        page.click("#csv-link")
    text = Path(download_info.value.path()).read_text()
    got = {r["trade_id"] for r in csv.DictReader(io.StringIO(text))}
    villa = built.meters[0]
    expected = {
        k
        for k, t in final_trades(built.data_dir).items()
        if villa in (t["seller"], t["buyer"])
        and datetime.fromtimestamp(t["interval"], tz).date().isoformat() == "2025-06-03"
    }
    assert got == expected and expected

    # -- a receipt, verified
    page.locator("#trades-table tbody tr[data-trade] a").first.click()
    page.wait_for_url("**/trade/*")
    page.click("#verify-receipt")
    verdict = page.locator("#verify-verdict")
    verdict.wait_for()
    assert verdict.inner_text().startswith("\u2714 Verified")
    assert page.locator("#verify-result li.ok").count() == 8
    shoot(page, "receipt-desktop-light")
    assert errors == [], errors

    # -- logged-in pages at phone width and in dark mode
    for viewport, vname in ((DESKTOP, "desktop"), (PHONE, "phone")):
        for dark in (False, True):
            if viewport is DESKTOP and not dark:
                continue
            ctx2, p2, errs2 = open_page(browser, server, viewport, dark, state)
            suffix = f"{vname}-{'dark' if dark else 'light'}"
            p2.goto(f"/household/{villa}")
            assert wait_chart(p2, "history-chart") > 200
            shoot(p2, f"household-{suffix}")
            p2.goto("/trades")
            shoot(p2, f"trades-{suffix}")
            assert errs2 == [], errs2
            ctx2.close()

    # -- log out: household data is gone
    page.click("#logout")
    page.wait_for_url(server + "/")
    assert page.locator("#login-link").is_visible()
    page.goto(f"/household/{villa}")
    assert "/login" in page.url
    context.close()


OVERFLOW_JS = """() => {
  const doc = document.scrollingElement;
  const wide = [...document.querySelectorAll('.table-wrap')]
    .filter((w) => w.offsetParent !== null && w.scrollWidth > w.clientWidth + 1)
    .map((w) => (w.querySelector('table') || w).id || w.className);
  return {scroll: doc.scrollWidth, inner: window.innerWidth, wide};
}"""


def test_phone_layout_has_no_sideways_scrolling(browser, server, built):
    """Issue 17 item 6: at 390x844 no page scrolls sideways, nor any table in it: trades and
    orders are one card per row (when, with whom, how much, price, state)."""
    villa = built.meters[0]
    context, page, errors = open_page(browser, server, PHONE)
    page.goto("/household")
    page.fill("#username", "villa")
    page.fill("#password", PASSWORDS["villa"])
    page.click("#login-submit")
    page.wait_for_url("**/household/*")
    for path, name in (
        (f"/household/{villa}", "household"),
        (f"/household/{villa}?view=day&date=2025-06-04", "household-cloudy"),
        ("/trades", "trades"),
        ("/", "overview"),
    ):
        page.goto(path)
        for opened in page.locator("details").all():
            opened.evaluate("d => d.open = true")
        got = page.evaluate(OVERFLOW_JS)
        assert got["scroll"] <= got["inner"], (path, got)
        assert got["wide"] == [], (path, got)
        shoot(page, f"{name}-phone-cards")
    page.goto("/trades")
    card = page.locator("#trades-table tbody tr[data-trade]").first
    assert card.evaluate("r => getComputedStyle(r).display") == "block"
    shown = card.evaluate(
        "r => [...r.cells].map(c => getComputedStyle(c, '::before').content + ' ' + c.innerText)"
    )
    for label in ("When", "With", "Energy", "Price", "State"):
        assert any(cell.startswith(f'"{label}: "') for cell in shown), shown
    assert page.locator("#trades-table thead").evaluate("h => h.getBoundingClientRect().width") <= 1
    page.goto(f"/household/{villa}?view=day&date=2025-06-04")
    orders = page.locator("#orders tbody tr").first
    assert orders.evaluate("r => getComputedStyle(r).display") == "block"
    assert errors == [], errors
    context.close()
    # the desktop keeps its tables
    context, page, errors = open_page(browser, server, DESKTOP)
    page.goto("/")
    assert page.locator("#book tbody tr").first.evaluate("r => getComputedStyle(r).display") == "table-row"
    context.close()
