"""No link leads to a page that refuses it (found in a QA pass): the head block's page linked
"block N+1 →" (a 404), and the household page's "← earlier" at 2000-01-01 and "later →" at
2100-12-31 led to dates the page refuses (400)."""

from __future__ import annotations

import html as html_lib
import re

import pytest

HREF_RE = re.compile(r'href="([^"#][^"]*)"')


def links(page: str) -> set[str]:
    """The site's own links of a page (no fragments, no other sites)."""
    found = {html_lib.unescape(h) for h in HREF_RE.findall(page)}
    return {h for h in found if h.startswith("/") and not h.startswith("//")}


def follow_all(client, path: str, seen: dict[str, int]) -> str:
    """Open ``path`` (it must answer 200) and every link on it; returns the page."""
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    page = response.get_data(as_text=True)
    for href in sorted(links(page)):
        if href not in seen:
            answer = client.get(href)
            seen[href] = answer.status_code
            answer.close()  # (a static file's stays open otherwise)
    refused = {h: code for h, code in seen.items() if code >= 400 and h in links(page)}
    assert refused == {}, (path, refused)
    return page


def test_the_head_block_links_to_no_block_after_it(as_admin, client):
    head = as_admin.get("/api/v1/chain").get_json()["height"]
    for viewer in (as_admin, client):
        seen: dict[str, int] = {}
        page = follow_all(viewer, f"/explorer/blocks/{head}", seen)
        assert f"/explorer/blocks/{head + 1}" not in page
        assert f"/explorer/blocks/{head - 1}" in page  # the way back stays
        assert 'id="head-block"' in page
        below = follow_all(viewer, f"/explorer/blocks/{head - 1}", seen)
        assert f'href="/explorer/blocks/{head}"' in below  # the block before the head links to it
    assert "/explorer/blocks/-1" not in follow_all(as_admin, "/explorer/blocks/0", {})


@pytest.mark.parametrize(
    ("view", "date", "gone"),
    [
        ("day", "2000-01-01", "period-prev"),
        ("day", "2100-12-31", "period-next"),
        ("month", "2000-01-15", "period-prev"),
        ("month", "2100-12-31", "period-next"),
        ("year", "2000-06-01", "period-prev"),
        ("year", "2100-01-01", "period-next"),
    ],
)
def test_period_navigation_stops_at_the_dates_the_page_takes(as_admin, built, view, date, gone):
    meter = built.meters[0]
    page = follow_all(as_admin, f"/household/{meter}?view={view}&date={date}", {})
    assert f'id="{gone}"' not in page
    kept = {"period-prev": "period-next", "period-next": "period-prev"}[gone]
    assert f'id="{kept}"' in page  # the other way is still there
    period = as_admin.get(f"/api/v1/households/{meter}?view={view}&date={date}").get_json()["period"]
    assert period[gone.removeprefix("period-")] is None


def test_period_navigation_inside_the_dates_is_unchanged(as_admin, built):
    meter = built.meters[0]
    page = as_admin.get(f"/household/{meter}?view=day&date=2025-06-03").get_data(as_text=True)
    assert "date=2025-06-02" in page and "date=2025-06-04" in page
    period = as_admin.get(f"/api/v1/households/{meter}?view=month&date=2025-06-03").get_json()["period"]
    assert (period["prev"], period["next"]) == ("2025-05-01", "2025-07-01")
