"""Ledger.commit checks what costs no signature first, and verifies only the seals that make a
block final (found in a QA pass: a catch-up peer served a real block with its 3 seals repeated
80,000 times, and commit verified every copy's signature before final_round dropped the
duplicates: 16 s of the node's loop)."""

from __future__ import annotations

import pytest

import chain.engine
from chain.execute import InvalidBlock
from chain.kvapp import KeyValueApp
from tests.support.localnet import make_community

T0 = 1_764_000_000


@pytest.fixture
def community(tmp_path):
    c = make_community(validators=4, members=2, meters_per_member=2)
    c.open_ledgers(tmp_path, KeyValueApp)
    return c


@pytest.fixture
def signatures(monkeypatch):
    """How many seal signatures the engine verified."""
    count = [0]
    verify = chain.engine.verify_envelope

    def counted(*args, **kwargs):
        count[0] += 1
        return verify(*args, **kwargs)

    monkeypatch.setattr(chain.engine, "verify_envelope", counted)
    return count


def test_copies_of_a_seal_are_refused_before_any_signature_is_checked(community, signatures):
    ledgers, validators = community.ledgers, community.validators
    block = ledgers[0].propose([], T0 + 1)
    seals = [ledgers[i].seal(block, validators[i].key, now=T0 + 1) for i in range(3)]
    signatures[0] = 0
    with pytest.raises(InvalidBlock, match="duplicate_seal"):
        ledgers[3].commit(block, seals * 1000)
    assert signatures[0] == 0 and ledgers[3].height == 0
    ledgers[3].commit(block, seals)
    assert signatures[0] == 3 and ledgers[3].height == 1


def test_only_the_seals_that_make_a_block_final_are_verified_and_stored(community, signatures):
    """A validator may sign its own seals for the header in any number of rounds (each a valid
    signature): the round that makes the block final is checked, not the others."""
    ledgers, validators = community.ledgers, community.validators
    block = ledgers[0].propose([], T0 + 1)
    quorum = [ledgers[i].seal(block, validators[i].key, now=T0 + 1) for i in range(3)]
    key = validators[3].key
    own = [ledgers[3].sign_vote(key, "seal", 1, r, block.hash.hex(), now=T0 + 1) for r in range(1, 301)]
    signatures[0] = 0
    ledgers[3].commit(block, own + quorum)
    assert signatures[0] == 3
    assert len(ledgers[3].store.seal_rows(1)) == 3


def test_seals_for_another_header_are_refused_before_any_signature_is_checked(community, signatures):
    ledgers, validators = community.ledgers, community.validators
    block = ledgers[0].propose([], T0 + 1)
    other = ledgers[0].propose([], T0 + 2)
    seals = [ledgers[i].seal(block, validators[i].key, now=T0 + 1) for i in range(3)]
    wrong = ledgers[3].sign_vote(validators[3].key, "seal", 1, 0, other.hash.hex(), now=T0 + 2)
    signatures[0] = 0
    with pytest.raises(InvalidBlock, match="wrong_header"):
        ledgers[3].commit(block, seals + [wrong] * 500)
    assert signatures[0] == 0


def test_a_header_alone_is_final_only_with_its_quorum_and_our_head(community):
    """What catch-up believes of a block whose payloads were erased (its body cannot be checked)."""
    ledgers, validators = community.ledgers, community.validators
    block = ledgers[0].propose([], T0 + 1)
    seals = [ledgers[i].seal(block, validators[i].key, now=T0 + 1) for i in range(3)]
    ledgers[3].check_final_header(block.header, seals)
    with pytest.raises(InvalidBlock, match="no_quorum"):
        ledgers[3].check_final_header(block.header, seals[:2])
    with pytest.raises(InvalidBlock, match="wrong_prev"):
        ledgers[3].check_final_header(dict(block.header, prev="11" * 32), seals)
    with pytest.raises(InvalidBlock, match="wrong_header"):  # the seals are of the real header
        ledgers[3].check_final_header(dict(block.header, state_root="00" * 32), seals)
    for ledger in ledgers:
        ledger.commit(block, seals)
    with pytest.raises(InvalidBlock, match="wrong_height"):
        ledgers[3].check_final_header(block.header, seals)
