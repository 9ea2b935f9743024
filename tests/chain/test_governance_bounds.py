"""What one proposal may carry, and how many one key may have open (chain.max_open_proposals):
found in a QA pass, a member opened 60 erase_member proposals per block, each with a 60 KB
args.member, 660 open proposals holding 39.8 MB of every node's state after 11 blocks."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from chain.envelope import Rejected
from chain.genesis import GenesisError, genesis_from_dict, initial_chain_state
from chain.keys import generate_private_key
from chain.kvapp import KeyValueApp
from chain.verify import verify_store
from tests.support.localnet import LocalCommunity, Party, make_community

T0 = 1_764_000_000


def _community(tmp_path, **chain) -> LocalCommunity:
    """make_community's keys (3 validators, 3 members, one meter each) under a genesis whose
    [chain] also says ``chain``."""
    base = make_community(validators=3, members=3)
    doc = base.genesis.doc
    genesis = genesis_from_dict(
        {
            "community": {"id": doc["community"]["id"], "time": doc["community"]["time"], "app": "kv"},
            "chain": {"sequencer": doc["chain"]["sequencer"], **chain},
            "validators": [dict(v) for v in doc["validators"].values()],
            "members": [dict(m) for m in doc["members"].values()],
            "meters": [{k: v for k, v in m.items() if k != "active"} for m in doc["meters"].values()],
        }
    )
    c = LocalCommunity(genesis, base.validators, base.members, base.meters)
    c.open_ledgers(tmp_path, KeyValueApp)
    return c


def _propose(c, party, action, args, t):
    return party.sign(
        c.community, "propose", {"action": action, "args": args, "deadline": t + 3600}, created=t
    )


def _outcomes(block):
    return [r.get("reason", r["status"]) for r in block.results if r["kind"] == "tx"]


def _hostile_proposals(c, t):
    """What the QA pass sent, and what each argument could otherwise carry."""
    m = c.members[0]
    huge = "a" * 60_000
    return [
        _propose(c, m, "erase_member", {"member": huge}, t),
        _propose(c, m, "erase_member", {"member": "not a key id"}, t),
        _propose(c, m, "add_member", {"key": Party(generate_private_key()).sec1_hex, "name": huge}, t),
        _propose(c, m, "add_member", {"key": " " * 60_000 + Party(generate_private_key()).sec1_hex}, t),
        _propose(c, m, "set_param", {"name": "x" * 60_000, "value": 1}, t),
        _propose(c, m, "set_param", {"name": "max_writes_per_meter", "value": [huge]}, t),
    ]


def test_a_proposal_carries_arguments_of_their_real_shape_and_size(tmp_path):
    c = _community(tmp_path, max_open_proposals=8)
    block = c.run_block(_hostile_proposals(c, T0 + 1), T0 + 1)
    assert _outcomes(block) == ["bad_value"] * 6
    assert c.ledgers[0].chain_state["proposals"] == {}
    # what honest proposals carry still opens: a departed member's id, a 64-character name, a PEM
    gone = Party(generate_private_key())
    public = generate_private_key().public_key()
    pem = public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    m = c.members[0]
    block = c.run_block(
        [
            _propose(c, m, "erase_member", {"member": gone.id}, T0 + 2),
            _propose(
                c, m, "add_member", {"key": Party(generate_private_key()).sec1_hex, "name": "n" * 64}, T0 + 2
            ),
            _propose(c, m, "add_member", {"key": pem}, T0 + 2),
            _propose(c, m, "set_param", {"name": "max_writes_per_meter", "value": 3}, T0 + 2),
        ],
        T0 + 2,
    )
    assert _outcomes(block) == ["ok"] * 4
    for ledger in c.ledgers:
        assert verify_store(ledger.store, KeyValueApp()).blocks == ledger.height


def test_one_key_has_at_most_max_open_proposals_open(tmp_path):
    c = _community(tmp_path, max_open_proposals=3)
    m, other = c.members[0], c.members[1]
    ids = [Party(generate_private_key()).id for _ in range(5)]
    block = c.run_block([_propose(c, m, "erase_member", {"member": i}, T0 + 1) for i in ids[:4]], T0 + 1)
    assert _outcomes(block) == ["ok", "ok", "ok", "too_many_proposals"]
    with pytest.raises(Rejected) as refused:  # refused at intake: it never reaches a block
        c.ledgers[0].intake(_propose(c, m, "erase_member", {"member": ids[4]}, T0 + 2).to_bytes(), T0 + 2)
    assert refused.value.reason == "too_many_proposals"
    block = c.run_block([_propose(c, other, "erase_member", {"member": ids[4]}, T0 + 2)], T0 + 2)
    assert _outcomes(block) == ["ok"]  # each key its own count
    # once one of its proposals closes (passed: 2 of 3 members), the key may open another
    first = next(pid for pid, p in c.ledgers[0].chain_state["proposals"].items() if p["proposer"] == m.id)
    vote = other.sign(c.community, "vote", {"proposal": first, "vote": "yes"}, created=T0 + 3)
    block = c.run_block([vote, _propose(c, m, "erase_member", {"member": ids[4]}, T0 + 3)], T0 + 3)
    assert _outcomes(block) == ["ok", "ok"]


def test_without_the_parameter_proposals_are_taken_as_they_were(tmp_path):
    """Ledgers from before chain.max_open_proposals re-execute as they did: none of this is
    refused there (so the bounds come with the parameter, not without it)."""
    c = _community(tmp_path)
    assert "max_open_proposals" not in c.ledgers[0].chain_state
    block = c.run_block(_hostile_proposals(c, T0 + 1)[:4], T0 + 1)
    assert _outcomes(block) == ["ok"] * 4
    ids = [Party(generate_private_key()).id for _ in range(10)]
    block = c.run_block(
        [_propose(c, c.members[0], "erase_member", {"member": i}, T0 + 2) for i in ids], T0 + 2
    )
    assert _outcomes(block) == ["ok"] * 10


def test_the_genesis_parameter(tmp_path):
    c = _community(tmp_path, max_open_proposals=5)
    assert c.genesis.doc["chain"]["max_open_proposals"] == 5
    assert initial_chain_state(c.genesis)["max_open_proposals"] == 5
    doc = make_community().genesis.doc  # a genesis without it: the document (and hash) of before
    assert set(doc["chain"]) == {"quorum", "sequencer", "block_s"}
    for bad in (0, -1, "8", 2.5, True):
        with pytest.raises(GenesisError, match="max_open_proposals"):
            _community(tmp_path / str(bad), max_open_proposals=bad)


def test_with_the_bounds_interval_s_cannot_be_voted(tmp_path):
    """Found in a QA pass: a set_param of interval_s passed, and the intervals cleared before it
    then settled as missing_reading with 0 Wh (their readings no longer aligned). With the bounds
    (every genesis peerwatt writes) it is refused when proposed; older ledgers re-execute as
    they did."""
    bounded = _community(tmp_path / "bounded", max_open_proposals=32)
    proposal = _propose(
        bounded, bounded.members[0], "set_param", {"name": "interval_s", "value": 1800}, T0 + 1
    )
    block = bounded.run_block([proposal], T0 + 1)
    assert _outcomes(block) == ["bad_value"]
    legacy = _community(tmp_path / "legacy")
    proposal = _propose(legacy, legacy.members[0], "set_param", {"name": "interval_s", "value": 1800}, T0 + 1)
    assert _outcomes(legacy.run_block([proposal], T0 + 1)) == ["ok"]


def test_with_the_bounds_a_proposal_needs_the_votes_it_needed_when_it_opened(tmp_path):
    """Found in a QA pass of the quickstart: three households admitted at once, the founders'
    votes in one block: the first two passed, the members grew from 4 to 6, and the third then
    needed 4 yes votes where it had 3; its household stayed out until another founder voted. With
    the bounds a proposal records its threshold when it opens; older ledgers count as they did."""

    def admit_three(c) -> list[str]:
        proposer, voter = c.members[0], c.members[1]
        newcomers = [{"key": Party(generate_private_key()).sec1_hex, "name": f"h{i}"} for i in range(3)]
        proposals = [_propose(c, proposer, "add_member", args, T0) for args in newcomers]
        c.run_block(proposals, T0 + 1)
        votes = [
            voter.sign(c.community, "vote", {"proposal": p.tx_hash.hex(), "vote": "yes"}, created=T0 + 2)
            for p in proposals
        ]
        block = c.run_block(votes, T0 + 2)
        return [r["outcome"] for r in block.results if r.get("kind") == "gov"]

    bounded = _community(tmp_path / "bounded", max_open_proposals=32)  # 3 members: 2 yes votes needed
    assert admit_three(bounded) == ["passed", "passed", "passed"]
    assert len(bounded.ledgers[0].chain_state["members"]) == 6
    legacy = _community(tmp_path / "legacy")
    assert admit_three(legacy) == ["passed"]  # the others now need 3 of 4, then of 5
