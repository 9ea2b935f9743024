"""Found in a QA pass: ``/trades?interval=<a time inside a delivery interval>`` showed no trades
while its date-time field was filled with the interval's start, and submitting the form showed
that interval's trades. ``interval`` now means what ``at`` means: the delivery interval
containing it; the page says so when it was not the start."""

from __future__ import annotations

from tests.dashboard.reference import final_trades


def _an_interval_with_trades(built) -> int:
    counts: dict[int, int] = {}
    for t in final_trades(built.data_dir).values():
        counts[t["interval"]] = counts.get(t["interval"], 0) + 1
    return max(counts, key=lambda i: (counts[i], i))


def test_a_time_inside_an_interval_shows_that_interval(as_admin, built):
    start = _an_interval_with_trades(built)
    exact = as_admin.get(f"/api/v1/trades?interval={start}&limit=500").get_json()["trades"]
    inside = as_admin.get(f"/api/v1/trades?interval={start + 1}&limit=500").get_json()["trades"]
    assert exact and [r["id"] for r in inside] == [r["id"] for r in exact]
    csv = as_admin.get(f"/api/v1/trades.csv?interval={start + 61}").get_data(as_text=True)
    assert len(csv.splitlines()) == len(exact) + 1

    page = as_admin.get(f"/trades?interval={start + 1}").get_data(as_text=True)
    assert page.count("data-trade=") == min(len(exact), 50)
    note = page.split('id="interval-snapped"', 1)[1].split("</p>", 1)[0]
    assert f"{start + 1} is not the start of a" in note and f"starts at {start}" in note
    assert 'id="interval-snapped"' not in as_admin.get(f"/trades?interval={start}").get_data(as_text=True)


def test_interval_and_at_agree_inside_an_interval(as_admin, built):
    """Given both, they must name the same delivery interval (else the one-line 400 as before)."""
    start = _an_interval_with_trades(built)
    page = as_admin.get(f"/trades?interval={start + 1}").get_data(as_text=True)
    at = page.split('name="at" step="60" value="', 1)[1].split('"', 1)[0]
    assert at
    both = as_admin.get(f"/api/v1/trades?interval={start + 1}&at={at}")
    assert both.status_code == 200 and both.get_json()["trades"]
