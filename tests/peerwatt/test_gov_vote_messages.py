"""`peerwatt gov vote` says what happened to the vote asked for (a QA pass): a `--no` after this
key's yes printed only 'this key already voted', exit 0, and the no counted nowhere; a vote on a
proposal that had passed said 'no open proposal', not that it passed. On a ledger with rules 2 a
proposal that no longer applied when it passed says why (docs/ledger.md, "Rules")."""

from __future__ import annotations

from pathlib import Path

from chain.keys import save_private_key
from tests.support.cli import peerwatt
from tests.support.market_ledger import build_market


def test_a_vote_cannot_be_changed_and_a_closed_proposal_says_how_it_closed(tmp_path: Path) -> None:
    c = build_market(tmp_path / "ledgers", validators=1)
    m = c.members
    t = c.ledgers[0].head["time"] + 60

    def propose(who, value: int):
        body = {"action": "set_param", "args": {"name": "grid_fee_per_kwh", "value": value},
                "deadline": t + 3600}  # fmt: skip
        return who.sign(c.community, "propose", body, created=t)

    open_one, passed = propose(m[0], 1_000), propose(m[1], 2_000)
    c.run_block([open_one, passed], t)
    votes = [p.sign(c.community, "vote", {"proposal": passed.tx_hash.hex(), "vote": "yes"}, created=t)
             for p in (m[2], m[3])]  # fmt: skip
    block = c.run_block(votes, t + 5)
    for ledger in c.ledgers:
        ledger.close()
    key = tmp_path / "member.key"
    save_private_key(m[0].key, key)
    data = tmp_path / "ledgers" / "validator-0"

    def vote(pid: str, side: str, out: str):
        return peerwatt("gov", "vote", "--data", str(data), "--key", str(key), "--proposal", pid, side,
                        "--out", str(tmp_path / out))  # fmt: skip

    pid = open_one.tx_hash.hex()
    r = vote(pid, "--no", "no.json")
    assert r.returncode == 2 and r.stdout == f"{pid}: this key already voted yes\n", r.stdout
    assert r.stderr == (
        f"error: this key voted yes on {pid} already; a vote cannot be changed (nothing was sent)\n"
    )
    assert not (tmp_path / "no.json").exists()
    r = vote(pid, "--yes", "yes.json")
    assert r.returncode == 0 and r.stdout == f"{pid}: this key already voted yes\n", r.stderr
    assert not (tmp_path / "yes.json").exists()  # (it wrote an empty file to publish)
    # a vote the decision already agrees with is nothing to do (exit 0), as member admit and leave say
    # (tests/peerwatt/test_gov_vote_decided.py); one against it says how it closed
    closed = f"passed in block {block.height}"
    r = vote(passed.tx_hash.hex(), "--yes", "late.json")
    assert r.returncode == 0 and r.stdout == (
        f"proposal {passed.tx_hash.hex()} is already decided: {closed}; nothing to vote on\n"
    ), r.stderr
    r = vote(passed.tx_hash.hex(), "--no", "late.json")
    assert r.returncode == 2 and not (tmp_path / "late.json").exists()
    assert r.stderr == (
        f"error: proposal {passed.tx_hash.hex()} is closed: {closed}; a vote can no longer change it "
        "(nothing was sent)\n"
    )


def test_a_proposal_that_no_longer_applied_says_why(tmp_path: Path) -> None:
    from market.app import MarketApp
    from peerwatt.commands.member import proposal_outcome
    from tests.support.localnet import make_community

    params = {"interval_s": 900, "gate_s": 300, "feed_in_price": 80_000, "retail_price": 300_000}
    c = make_community(validators=1, members=3, app="market", app_params=params,
                       chain_options={"max_open_proposals": 32, "rules": 2}, time=1_764_000_000)  # fmt: skip
    c.open_ledgers(tmp_path, MarketApp)
    m, t = c.members, 1_764_000_010
    proposals = [
        m[i].sign(
            c.community,
            "propose",
            {"action": "set_param", "args": {"name": name, "value": value}, "deadline": t + 3600},
            created=t,
        )  # fmt: skip
        for i, name, value in ((0, "feed_in_price", 250_000), (1, "retail_price", 200_000))
    ]
    c.run_block(proposals, t)
    votes = [
        m[2].sign(c.community, "vote", {"proposal": p.tx_hash.hex(), "vote": "yes"}, created=t)
        for p in proposals
    ]
    block = c.run_block(votes, t + 5)
    for ledger in c.ledgers:
        ledger.close()
    assert proposal_outcome(tmp_path / "validator-0", proposals[1].tx_hash.hex()) == (
        f"rejected in block {block.height}: no longer applies: parameter change refused: "
        "feed_in_price must be positive and at most retail_price"
    )
