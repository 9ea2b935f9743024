"""The dashboard marks where each settled figure came from in a community that settles on its meters
first and re-settles on the grid operator's data (issue 20 item 3); a community settling on its
meters alone shows its trades as before (no mark)."""

from __future__ import annotations

from dashboard.app import create_app
from tests.dashboard.conftest import TEST_PASSWORD_METHOD, login
from tests.market.test_gridops_app import I1, I2, IMPORTED, USE, community, gridops, trade_two_intervals

PASSWORD = "admin-pass-1234"


def test_trades_say_which_source_settled_them(tmp_path):
    c = community(tmp_path / "ledger", "meter_then_gridops")
    trade_two_intervals(c)
    c.run_block([gridops(c, 0, {I1: (0, 700)}), gridops(c, 2, {I1: USE[2]})], IMPORTED)
    app = create_app(
        tmp_path / "ledger" / "validator-0",
        instance_dir=tmp_path / "instance",
        config={"TESTING": True, "PASSWORD_METHOD": TEST_PASSWORD_METHOD},
    )
    services = app.extensions["peerwatt"]
    services.indexer.sync()
    services.accounts.add_user("admin", PASSWORD, role="admin")
    client = app.test_client()
    assert login(client, "admin", PASSWORD).status_code == 302
    trades = client.get("/api/v1/trades").get_json()["trades"]
    by_buyer = {(t["interval"], t["buyer"]): t for t in trades}
    # I1 re-settled: the seller's and meter 2's figures from the grid operator, meter 3's readings
    assert by_buyer[(I1, c.meters[2].id)]["source"] == "gridops"
    assert by_buyer[(I1, c.meters[3].id)]["source"] == "mixed"
    assert by_buyer[(I1, c.meters[2].id)]["adjustments"] == 1
    # I2: settled on the readings, the grid operator's data not in
    assert {by_buyer[(I2, c.meters[m].id)]["source"] for m in (2, 3)} == {"meter"}
    page = client.get("/trades").get_data(as_text=True)
    assert "grid operator&#39;s data</span>" in page
    assert "meter readings and grid operator&#39;s data</span>" in page
    assert "meter readings</span>" in page
