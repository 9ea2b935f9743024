"""`peerwatt gov vote` on what the community has already decided (a QA pass that followed the
quickstart): the fourth validator's `gov vote --request join-1.txt --yes`, run after the proposal
had passed with the other three votes, exited 2 ("no open proposal matches"), while `member admit`
and `member leave` say "nothing to do" and exit 0 in the same situation. Now: a vote whose decision
is already taken the same way says so and exits 0; a vote against a decision already taken, or one
that needs a proposal nobody made yet, is one line and exit 2 (nothing sent)."""

from __future__ import annotations

import pytest

from chain.keys import generate_private_key, save_private_key
from peerwatt.onboarding import make_join_request
from tests.support.cli import peerwatt
from tests.support.community_broker import revoke_by_vote
from tests.support.localnet import Party
from tests.support.market_ledger import build_market


@pytest.fixture(scope="module")
def decided(tmp_path_factory):
    """One validator, 4 founding members. Household A admitted (member and meter), household B a
    member whose meter nobody proposed yet, household C never proposed; founding member 3 left
    (removed, its meter revoked); a set_param proposal passed, one is open."""
    base = tmp_path_factory.mktemp("gov")
    c = build_market(base / "ledgers", validators=1)
    t = c.ledgers[0].head["time"] + 60
    requests = {}
    for name in ("A", "B", "C"):
        member, meter = Party(generate_private_key()), Party(generate_private_key())
        request = make_join_request(member.key, meter.key, community=c.community, name=f"Household {name}",
                                    serial=f"SN-{name}", profile="sdm630", capacity_w=10_000)  # fmt: skip
        path = base / f"join-{name}.txt"
        path.write_text(request.text())
        requests[name] = (path, request)
    for name in ("A", "B"):
        _, r = requests[name]
        revoke_by_vote(c, "add_member", {"key": r.member, "name": r.name}, t)
        t += 60
    _, a = requests["A"]
    enrol = {"key": a.meter, "serial": a.serial, "owner": a.member_id, "capacity_w": a.capacity_w}
    revoke_by_vote(c, "enroll_meter", enrol, t)
    leaving = c.members[3]
    revoke_by_vote(c, "revoke_meter", {"meter": c.meters[3].id}, t + 60)
    revoke_by_vote(c, "remove_member", {"member": leaving.id}, t + 120)
    t += 180
    m = c.members

    def propose(who, value: int):
        body = {
            "action": "set_param",
            "args": {"name": "grid_fee_per_kwh", "value": value},
            "deadline": t + 3600,
        }
        return who.sign(c.community, "propose", body, created=t)

    open_one, passed = propose(m[0], 1_000), propose(m[1], 2_000)
    c.run_block([open_one, passed], t)
    votes = [p.sign(c.community, "vote", {"proposal": passed.tx_hash.hex(), "vote": "yes"}, created=t)
             for p in (m[2], m[0])]  # fmt: skip
    block = c.run_block(votes, t + 5)
    for ledger in c.ledgers:
        ledger.close()
    key = base / "member.key"
    save_private_key(m[2].key, key)  # a founder who has voted on neither proposal
    return {
        "data": base / "ledgers" / "validator-0",
        "key": key,
        "requests": requests,
        "left": leaving.id,
        "open": open_one.tx_hash.hex(),
        "passed": passed.tx_hash.hex(),
        "passed_in": block.height,
        "base": base,
    }


def vote(d, *args: str, out: str = "v.json"):
    target = d["base"] / out
    target.unlink(missing_ok=True)
    r = peerwatt("gov", "vote", "--data", str(d["data"]), "--key", str(d["key"]), *args, "--out", str(target))
    return r, target


def test_a_vote_for_what_is_already_decided_is_nothing_to_do(decided) -> None:
    d = decided
    r, out = vote(d, "--proposal", d["passed"], "--yes")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (
        f"proposal {d['passed']} is already decided: passed in block {d['passed_in']}; nothing to vote on\n"
    )
    assert not out.exists()
    path, a = d["requests"]["A"]
    r, out = vote(d, "--request", str(path), "--yes")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (
        f"{path}: already decided: Household A is a member and its meter {a.meter_id} is enrolled; "
        "nothing to vote on\n"
    )
    assert not out.exists()
    # the members voted household B in; the validators' enroll_meter is not proposed yet: a late
    # yes of the members' round is nothing to do, and the next step is named
    path_b, b = d["requests"]["B"]
    r, out = vote(d, "--request", str(path_b), "--yes")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (
        f"{path_b}: already decided: Household B is a member (add_member passed); nothing to vote on now: "
        f"the enroll_meter of its meter {b.meter_id} is not proposed yet (`peerwatt member admit {path_b} "
        "-c node.toml` on one validator proposes it)\n"
    )
    assert not out.exists()
    r, out = vote(d, "--member", d["left"], "--yes")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"member {d['left']}: already decided: it has left (not a member")
    assert r.stdout.endswith("nothing to vote on\n")
    # what is decided is said, and what is open is voted on
    r, out = vote(d, "--request", str(path), "--proposal", d["open"], "--yes")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{path}: already decided: ")
    assert out.exists() and d["open"] in out.read_text()


def test_a_vote_against_a_decision_or_before_a_proposal_is_one_line(decided) -> None:
    d = decided

    def refused(*args: str) -> str:
        r, out = vote(d, *args)
        assert r.returncode == 2, (r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
        assert not out.exists()
        return lines[0]

    assert refused("--proposal", d["passed"], "--no") == (
        f"error: proposal {d['passed']} is closed: passed in block {d['passed_in']}; a vote can no "
        "longer change it (nothing was sent)"
    )
    path_a, _ = d["requests"]["A"]
    line = refused("--request", str(path_a), "--no")
    assert "Household A was admitted already" in line and "a vote can no longer change it" in line
    path_b, _ = d["requests"]["B"]
    line = refused("--request", str(path_b), "--no")
    assert "Household B was admitted already" in line and "a vote can no longer change it" in line
    path_c, _ = d["requests"]["C"]
    line = refused("--request", str(path_c), "--yes")
    assert line.startswith(
        f"error: nothing is open about {path_c}: Household C is not a member and no add_member"
    )
    assert f"`peerwatt member admit {path_c} -c node.toml` on one validator proposes it" in line
    # the open proposal is not voted on either when another part of the command is refused
    line = refused("--proposal", d["open"], "--proposal", d["passed"], "--no")
    assert "passed in block" in line
    # a no where nothing is open and nothing was decided: nothing to vote against
    r, out = vote(d, "--request", str(path_c), "--no")
    assert r.returncode == 0 and "nothing to vote on" in r.stdout, r.stderr
    assert not out.exists()
    # a yes on a member still in with nothing open: a leave proposed on another validator whose
    # block this node does not have yet (a QA pass: exit 0, "nothing to vote on", and no vote sent)
    _, a = d["requests"]["A"]
    line = refused("--member", a.member_id, "--yes")
    assert line.startswith(f"error: nothing is open about member {a.member_id} on this node (it is a member")
    assert "has not got its block yet" in line and "`peerwatt gov list`" in line
    r, out = vote(d, "--member", a.member_id, "--no")  # it stays, as a no asks: nothing to do
    assert r.returncode == 0 and "nothing to vote on" in r.stdout, r.stderr
    line = refused("--proposal", "ab" * 32, "--yes")
    assert (
        line == f"error: no proposal {'ab' * 32} in {d['data']}: see `peerwatt gov list` (nothing was sent)"
    )
