"""A proposal that had its votes but no longer applied when it passed (ledger rules 2, chain/
governance.py) is shown as rejected with the ledger's reason. Before, the governance page read
"rejected, 2 yes, 0 no" with no reason: the reason was only in the block's result and in `gov
vote`'s output."""

from __future__ import annotations

import html as html_lib
import re
from pathlib import Path
from types import SimpleNamespace

from market.app import MarketApp
from tests.dashboard.conftest import make_app
from tests.support.localnet import make_community

T0 = 1_764_000_000
APP = {"interval_s": 900, "gate_s": 300, "feed_in_price": 80_000, "retail_price": 300_000}
WHY = "no longer applies: parameter change refused: feed_in_price must be positive and at most retail_price"


def test_a_proposal_that_no_longer_applied_shows_why(tmp_path: Path) -> None:
    c = make_community(validators=3, members=3, app="market", app_params=APP,
                       chain_options={"rules": 2}, time=T0)  # fmt: skip
    c.open_ledgers(tmp_path / "ledgers", MarketApp)
    m, t = c.members, T0 + 10

    def propose(who, name: str, value: int):
        body = {"action": "set_param", "args": {"name": name, "value": value}, "deadline": t + 86_400}
        return who.sign(c.community, "propose", body, created=t)

    def yes(who, proposal):
        return who.sign(c.community, "vote", {"proposal": proposal.tx_hash.hex(), "vote": "yes"}, created=t)

    feed_in, retail = propose(m[0], "feed_in_price", 250_000), propose(m[1], "retail_price", 200_000)
    c.run_block([feed_in, retail], t)
    c.run_block([yes(m[1], feed_in), yes(m[0], retail)], t + 5)  # 2 of 3: each passes
    for ledger in c.ledgers:
        ledger.close()
    # make_app reads the data folder and names two meters for its household users
    built = SimpleNamespace(data_dir=tmp_path / "ledgers" / "validator-0", meters=[p.id for p in c.meters])
    app = make_app(built, tmp_path / "instance")

    proposals = {p["id"]: p for p in app.test_client().get("/api/v1/governance").get_json()["proposals"]}
    passed, rejected = proposals[feed_in.tx_hash.hex()], proposals[retail.tx_hash.hex()]
    assert (passed["outcome"], passed["outcome_reason"]) == ("passed", None)
    assert (rejected["outcome"], rejected["yes"], rejected["no"]) == ("rejected", 2, 0)
    assert rejected["outcome_reason"] == WHY

    page = app.test_client().get("/explorer/governance").get_data(as_text=True)
    outcomes = [
        re.sub(r"\s+", " ", html_lib.unescape(re.sub(r"<[^>]+>", " ", cell))).strip()
        for cell in re.findall(r'<td data-label="Outcome">(.*?)</td>', page, re.S)
    ]
    assert sorted(outcomes) == sorted(["passed 2 yes, 0 no", f"rejected 2 yes, 0 no {WHY}"])
