"""A node checks each message's signature once: at intake or when it re-executes the block that
holds it, whichever comes first (a validator often gets the proposal before the transactions)."""

from __future__ import annotations

import pytest

import chain.envelope
from chain.kvapp import KeyValueApp
from chain.signature import verify as real_verify
from tests.chain.test_engine import T0, reading
from tests.support.localnet import make_community


@pytest.fixture
def community(tmp_path):
    c = make_community(validators=2, members=2, meters_per_member=2)
    c.open_ledgers(tmp_path, KeyValueApp)
    return c


@pytest.fixture
def verifications(monkeypatch):
    """Counts the signature checks (each still done by the real function)."""
    calls = []

    def counting(*args, **kwargs):
        calls.append(args)
        return real_verify(*args, **kwargs)

    monkeypatch.setattr(chain.envelope, "verify", counting)
    return calls


def test_a_validator_checks_each_signature_once_whichever_comes_first(community, verifications):
    proposer, validator = community.ledgers[0], community.ledgers[1]
    txs = [reading(m, community.community, T0 - T0 % 900, 7) for m in community.meters]
    for tx in txs:
        proposer.intake(tx.to_bytes(), T0)
    validator.intake(txs[0].to_bytes(), T0)  # the validator got one transaction before the block
    block = proposer.propose([proposer.intake(t.to_bytes(), T0) for t in txs], T0 + 5)
    verifications.clear()
    validator.validate(block, now=T0 + 5)
    assert len(verifications) == len(txs) - 1  # not the one it took at intake
    verifications.clear()
    for tx in txs[1:]:  # the rest arrive after the block: not checked a second time
        validator.intake(tx.to_bytes(), T0 + 6)
    assert verifications == []


def test_a_bad_signature_is_found_even_when_other_transactions_were_verified(community):
    proposer, validator = community.ledgers[0], community.ledgers[1]
    txs = [reading(m, community.community, T0 - T0 % 900, 7) for m in community.meters]
    for tx in txs:
        validator.intake(tx.to_bytes(), T0)
    forged = reading(community.meters[0], community.community, T0 - T0 % 900, 8)
    forged.sig = txs[1].sig  # a valid signature of another message
    forged._wire = forged._hash = None
    block = proposer.propose([*txs, forged], T0 + 5)  # propose trusts its caller's checks
    with pytest.raises(Exception, match="signature"):
        validator.validate(block, now=T0 + 5)


def test_verified_hashes_stay_bounded_and_keep_the_newest():
    from chain.engine import VerifiedHashes

    seen = VerifiedHashes(per_generation=3)
    for i in range(10):
        seen.add(bytes([i]))
    assert len(seen) <= 6
    assert bytes([9]) in seen and bytes([7]) in seen and bytes([0]) not in seen
