"""Ledger engine: determinism, quorum, equivocation, governance, tamper detection, crash safety."""

from __future__ import annotations

import sqlite3

import pytest

from chain.block import header_hash
from chain.canonical import loads_strict
from chain.engine import Ledger, check_seal_for
from chain.execute import InvalidBlock, execute_block
from chain.independent import verify_store_independent
from chain.keys import generate_private_key
from chain.kvapp import KeyValueApp
from chain.state import copy_state, state_root
from chain.store import LEDGER_TABLES, Store
from chain.verify import VerifyError, verify_store
from tests.support.localnet import Party, make_community

T0 = 1_764_000_000


def reading(meter: Party, community: str, interval: int, import_wh: int, created: int = T0):
    body = {"interval": interval, "import_wh": import_wh, "export_wh": 0, "serial": "SN", "profile": "sim"}
    return meter.sign(community, "reading", body, created=created)


def fill(c, blocks: int = 4, start: int = T0):
    for b in range(blocks):
        t = start + 10 * b
        txs = [c.ledgers[0].intake(reading(m, c.community, T0 - T0 % 900, b).to_bytes(), t) for m in c.meters]
        c.run_block(txs, t)


@pytest.fixture
def community(tmp_path):
    c = make_community(validators=4, members=2, meters_per_member=2)
    c.open_ledgers(tmp_path, KeyValueApp)
    return c


def ledger_dump(ledger: Ledger) -> list:
    conn = ledger.store.conn
    return [conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in LEDGER_TABLES]


def test_blocks_and_stores_identical_and_verify(community):
    fill(community)
    dumps = [ledger_dump(ledger) for ledger in community.ledgers]
    assert all(d == dumps[0] for d in dumps)
    for ledger in community.ledgers:
        report = verify_store(ledger.store, KeyValueApp())
        assert (report.blocks, report.txs) == (4, 16)


def test_execution_never_changes_the_state_it_starts_from(community):
    """Copy-on-write: a proposal, a validation or verify's walk (in_place, once a deep copy saved)
    leaves the state it starts from as it was, with or without in_place."""
    ledger = community.ledgers[0]
    txs = [reading(m, community.community, T0 - T0 % 900, 5) for m in community.meters]
    before = copy_state(ledger.state)
    copied = execute_block(ledger.state, ledger.app, height=1, time=T0 + 5, txs=txs)
    assert ledger.state == before  # a proposal or a validation never touches the head state
    work = copy_state(ledger.state)
    in_place = execute_block(work, ledger.app, height=1, time=T0 + 5, txs=txs, in_place=True)
    assert work == before and in_place.state != before
    assert in_place.results == copied.results and state_root(in_place.state) == state_root(copied.state)


def test_independent_sequencers_produce_identical_blocks(tmp_path):
    c = make_community(validators=1, members=2)
    a = Ledger.create(tmp_path / "a", c.genesis, KeyValueApp())
    b = Ledger.create(tmp_path / "b", c.genesis, KeyValueApp())
    txs = [reading(m, c.community, T0 - T0 % 900, 5) for m in c.meters]
    block_a, block_b = a.propose(txs, T0 + 5), b.propose(txs, T0 + 5)
    assert block_a.hash == block_b.hash and block_a.results == block_b.results


def test_one_seal_short_is_not_final(community):
    ledgers, validators = community.ledgers, community.validators
    block = ledgers[0].propose([], T0 + 1)
    seals = [ledgers[i].seal(block, validators[i].key, now=T0 + 1) for i in range(2)]
    assert ledgers[0].quorum() == 3 and not ledgers[0].is_final(seals)
    with pytest.raises(InvalidBlock, match="no_quorum"):
        ledgers[0].commit(block, seals)
    seals.append(ledgers[2].seal(block, validators[2].key, now=T0 + 1))
    ledgers[0].commit(block, seals)
    assert ledgers[0].height == 1


def test_seal_by_non_validator_or_for_wrong_header_is_refused(community):
    ledgers, validators = community.ledgers, community.validators
    block = ledgers[0].propose([], T0 + 1)
    with pytest.raises(InvalidBlock, match="not_a_validator"):
        ledgers[1].seal(block, generate_private_key(), now=T0 + 1)
    other = ledgers[0].propose([], T0 + 2)
    wrong = ledgers[1].seal(other, validators[1].key, now=T0 + 2)
    with pytest.raises(InvalidBlock, match="wrong_header"):
        check_seal_for(ledgers[0].validators(), ledgers[0].community, block.height, block.hash, wrong)


def test_seals_of_different_rounds_never_add_up_to_a_quorum(community):
    ledgers, validators = community.ledgers, community.validators
    block = ledgers[0].propose([], T0 + 1)
    seals = [ledgers[i].seal(block, validators[i].key, now=T0 + 1, round_=0) for i in range(2)]
    seals.append(ledgers[2].seal(block, validators[2].key, now=T0 + 1, round_=1))
    assert not ledgers[0].is_final(seals)
    with pytest.raises(InvalidBlock, match="no_quorum"):
        ledgers[0].commit(block, seals)
    seals.append(ledgers[2].seal(block, validators[2].key, now=T0 + 1, round_=0))
    ledgers[0].commit(block, seals)
    assert ledgers[0].height == 1
    stored = [loads_strict(bytes(env))["body"]["round"] for _, env in ledgers[0].store.seal_rows(1)]
    assert stored == [0, 0, 0]  # the record of finality is one round's seals


def test_equivocation_evidence_needs_two_votes_of_one_round(community):
    ledgers, validators = community.ledgers, community.validators
    first = ledgers[0].propose([], T0 + 1)
    second = ledgers[0].propose([], T0 + 2)
    key = validators[1].key
    a = ledgers[1].sign_vote(key, "seal", 1, 0, first.hash.hex(), now=T0)
    b = ledgers[1].sign_vote(key, "seal", 1, 0, second.hash.hex(), now=T0)
    later = ledgers[1].sign_vote(key, "seal", 1, 1, second.hash.hex(), now=T0)
    prevote = ledgers[1].sign_vote(key, "prevote", 1, 0, second.hash.hex(), now=T0)
    evidence = ledgers[2].detect_equivocation(a, b)
    assert evidence is not None and evidence["height"] == 1
    assert ledgers[2].detect_equivocation(a, later) is None  # another round: allowed (a new lock)
    assert ledgers[2].detect_equivocation(a, prevote) is None  # another kind of vote


def test_tampered_block_is_refused_by_validators(community):
    ledgers = community.ledgers
    txs = [reading(m, community.community, T0 - T0 % 900, 1) for m in community.meters]
    block = ledgers[0].propose(txs, T0 + 1)
    dropped = type(block)(dict(block.header), block.txs[1:], block.results)
    with pytest.raises(InvalidBlock, match="bad_tx_root"):
        ledgers[1].validate(dropped)
    results = [dict(r) for r in block.results]
    results[-1]["interval"] += 900
    forged = type(block)(dict(block.header), block.txs, results)
    with pytest.raises(InvalidBlock, match="bad_results"):
        ledgers[1].validate(forged)


@pytest.mark.parametrize("part", ["txs", "results"])
def test_a_known_header_with_another_body_is_refused(community, part):
    """Found by a QA pass: a node that had validated (sealed) a proposal took any body under that
    header from a catch-up peer (the execution was cached by header hash, and seals sign only the
    header): it stored a block without its transactions and with forged results."""
    ledgers = community.ledgers
    txs = [reading(m, community.community, T0 - T0 % 900, 1) for m in community.meters]
    block = ledgers[0].propose(txs, T0 + 1)
    seals = [ledgers[i].seal(block, community.validators[i].key, now=T0 + 1) for i in range(4)]
    if part == "txs":
        forged = type(block)(dict(block.header), block.txs[1:], block.results)
    else:
        forged = type(block)(dict(block.header), block.txs, [{"kind": "forged", "amount": 10**9}])
    for ledger in (ledgers[0], ledgers[3]):  # the proposer's own cache, and a validator's
        with pytest.raises(InvalidBlock, match="bad_tx_root" if part == "txs" else "bad_results"):
            ledger.commit(forged, seals)
        assert ledger.height == 0
        ledger.commit(block, seals)  # the real block is still taken
        assert ledger.store.results(1) == block.results
    assert verify_store(ledgers[3].store, KeyValueApp()).height == 1


def test_a_block_final_in_a_round_before_the_one_its_header_names_is_refused(community):
    """A block is created in its header's round and can be final only in that round or a later
    one (a re-proposal keeps its header). A QA pass made a proposer name another validator and
    round 1001 in round 0: the nodes now refuse such a proposal (753655e); a catch-up peer's final
    block with such seals is refused here too."""
    ledgers = community.ledgers
    txs = [reading(m, community.community, T0 - T0 % 900, 1) for m in community.meters]
    block = ledgers[0].propose(txs, T0 + 1, round_=5)
    seals = [ledgers[i].seal(block, community.validators[i].key, now=T0 + 1, round_=0) for i in range(4)]
    with pytest.raises(InvalidBlock, match="bad_round"):
        ledgers[3].commit(block, seals)
    assert ledgers[3].height == 0
    written = ledgers[2]  # such a block written to a store anyway: both verifiers refuse it
    written.store.append_block(block, seals, None)
    with pytest.raises(VerifyError, match="names round 5, but a quorum sealed it in round 0"):
        verify_store(written.store, KeyValueApp())
    with pytest.raises(VerifyError, match="bad_round"):
        verify_store_independent(written.store, KeyValueApp())
    later = [ledgers[i].seal(block, community.validators[i].key, now=T0 + 1, round_=5) for i in range(4)]
    ledgers[3].commit(block, later)
    assert ledgers[3].height == 1


def test_unknown_signer_and_bad_signature_make_block_invalid(community):
    stranger = Party(generate_private_key())
    block = community.ledgers[0]
    env = reading(stranger, community.community, T0 - T0 % 900, 1)
    with pytest.raises(InvalidBlock, match="unknown_signer"):
        block.propose([env], T0 + 1)


def test_replayed_and_expired_transactions_are_recorded_as_rejected(community):
    meter = community.meters[0]
    env = reading(meter, community.community, T0 - T0 % 900, 1)
    community.run_block([env], T0 + 1)
    # a live proposal holding a booked transaction is refused (Ledger._check_proposed_txs); a
    # final block holding one (a ledger made before that check) records it as a replay
    block = community.ledgers[0].propose([env], T0 + 2)
    with pytest.raises(InvalidBlock) as refused:
        community.ledgers[1].seal(block, community.validators[1].key, now=T0 + 2)
    assert refused.value.reason == "tx_already_booked"
    community.commit_as_final(block, T0 + 2)
    assert block.results[0]["status"] == "rejected" and block.results[0]["reason"] == "replay"
    old = meter.sign(
        community.community,
        "reading",
        {"interval": T0 - T0 % 900, "import_wh": 1, "export_wh": 0, "serial": "S", "profile": "p"},
        created=T0 - 100,
        ttl_s=50,
    )
    block = community.run_block([old], T0 + 3)
    assert block.results[0]["reason"] == "expired"


def _gov(c, party, action, args, t, deadline_s=3600):
    return party.sign(
        c.community, "propose", {"action": action, "args": args, "deadline": t + deadline_s}, created=t
    )


def _vote(c, party, pid, t, yes=True):
    return party.sign(c.community, "vote", {"proposal": pid, "vote": "yes" if yes else "no"}, created=t)


def test_enrolment_needs_validator_quorum_and_revocation_blocks_meter(community):
    c = community
    new_meter = Party(generate_private_key())
    prop = _gov(
        c,
        c.validators[0],
        "enroll_meter",
        {"key": new_meter.sec1_hex, "serial": "NEW1", "owner": c.members[0].id, "capacity_w": 5000},
        T0,
    )
    c.run_block([prop], T0 + 1)
    pid = prop.tx_hash.hex()
    assert new_meter.id not in c.ledgers[0].chain_state["meters"]
    c.run_block([_vote(c, c.validators[1], pid, T0 + 2)], T0 + 2)
    assert new_meter.id not in c.ledgers[0].chain_state["meters"]  # 2 of 4, quorum 3
    dup = _vote(c, c.validators[1], pid, T0 + 3)
    block = c.run_block([dup, _vote(c, c.validators[2], pid, T0 + 3)], T0 + 3)
    assert block.results[0]["reason"] == "double_vote"
    assert any(r.get("outcome") == "passed" for r in block.results)
    assert new_meter.id in c.ledgers[0].chain_state["meters"]
    # the new meter can now transact; after revocation it cannot
    block = c.run_block([reading(new_meter, c.community, T0 - T0 % 900, 1)], T0 + 4)
    assert block.results[0]["status"] == "ok"
    revoke = _gov(c, c.validators[0], "revoke_meter", {"meter": new_meter.id}, T0 + 5)
    c.run_block(
        [
            revoke,
            _vote(c, c.validators[1], revoke.tx_hash.hex(), T0 + 5),
            _vote(c, c.validators[2], revoke.tx_hash.hex(), T0 + 5),
        ],
        T0 + 5,
    )
    block = c.run_block([reading(new_meter, c.community, T0 - T0 % 900, 2)], T0 + 6)
    assert block.results[0]["reason"] == "revoked"
    for ledger in c.ledgers:
        verify_store(ledger.store, KeyValueApp())


def test_member_majority_late_votes_and_expiry(community):
    c = community  # 2 members: majority is 2
    prop = _gov(
        c, c.members[0], "set_param", {"name": "max_writes_per_meter", "value": 1}, T0, deadline_s=100
    )
    c.run_block([prop], T0 + 1)
    late = _vote(c, c.members[1], prop.tx_hash.hex(), T0 + 150)
    block = c.run_block([late], T0 + 150)
    assert block.results[0]["reason"] in ("late_vote", "unknown_proposal")
    assert (
        any(r.get("outcome") == "expired" for r in c.ledgers[0].store.results(block.height))
        or prop.tx_hash.hex() not in c.ledgers[0].chain_state["proposals"]
    )
    assert "max_writes_per_meter" not in c.ledgers[0].chain_state["params"]
    # a bad parameter value is refused at proposal time
    bad = _gov(c, c.members[0], "set_param", {"name": "max_writes_per_meter", "value": -1}, T0 + 200)
    block = c.run_block([bad], T0 + 200)
    assert block.results[0]["reason"] == "bad_value"
    # validators are not members: they cannot vote on member matters
    prop = _gov(c, c.members[0], "set_param", {"name": "max_writes_per_meter", "value": 1}, T0 + 300)
    block = c.run_block(
        [
            prop,
            _vote(c, c.validators[1], prop.tx_hash.hex(), T0 + 300),
            _vote(c, c.members[1], prop.tx_hash.hex(), T0 + 300),
        ],
        T0 + 300,
    )
    assert block.results[2]["reason"] == "not_eligible"
    assert c.ledgers[0].chain_state["params"]["max_writes_per_meter"] == 1


def test_validator_set_change_takes_effect_at_next_height(community):
    c = community
    newcomer = Party(generate_private_key())
    prop = _gov(c, c.validators[0], "add_validator", {"key": newcomer.sec1_hex, "name": "new"}, T0)
    votes = [_vote(c, c.validators[i], prop.tx_hash.hex(), T0) for i in (1, 2)]
    block = c.run_block([prop, *votes], T0 + 1)
    # the block that passed it was sealed by the old set (quorum 3 of 4)
    assert len(c.ledgers[0].store.seal_rows(block.height)) == 4
    assert c.ledgers[0].quorum() == 4  # floor(2*5/3)+1
    nxt = c.ledgers[0].propose([], T0 + 2)
    seals = [c.ledgers[i].seal(nxt, c.validators[i].key, now=T0 + 2) for i in range(3)]
    assert not c.ledgers[0].is_final(seals)
    newcomer_ledger = c.ledgers[3]
    seals.append(newcomer_ledger.seal(nxt, c.validators[3].key, now=T0 + 2))
    for ledger in c.ledgers:
        ledger.commit(nxt, seals)
    for ledger in c.ledgers:
        assert verify_store(ledger.store, KeyValueApp()).blocks == 2


def test_next_block_due_follows_the_app(tmp_path):
    c = make_community(validators=1, app_params={"due_every_s": 900})
    c.open_ledgers(tmp_path, KeyValueApp)
    due = c.ledgers[0].next_block_due()
    assert due == (T0 // 900 + 1) * 900
    block = c.run_block([], due)
    assert block.results == [{"kind": "tick", "time": due}]
    assert c.ledgers[0].next_block_due() == due + 900


# -- tamper detection: one changed byte in any ledger table row is found, at the right height ------


def _flip(value):
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value[:-1] + ("0" if value[-1] != "0" else "1")
    data = bytearray(value)
    data[len(data) // 2] ^= 0x01
    return bytes(data)


TAMPER_CASES = [
    ("blocks", "header", "height = 2"),
    ("blocks", "hash", "height = 2"),
    ("blocks", "time", "height = 2"),
    ("blocks", "tx_count", "height = 2"),
    ("txs", "hash", "height = 2 AND idx = 1"),
    ("txs", "signer", "height = 2 AND idx = 1"),
    ("txs", "type", "height = 2 AND idx = 1"),
    ("txs", "seq", "height = 2 AND idx = 1"),
    ("payloads", "envelope", "hash = (SELECT hash FROM txs WHERE height = 2 AND idx = 1)"),
    ("payloads", "hash", "hash = (SELECT hash FROM txs WHERE height = 2 AND idx = 1)"),
    ("results", "data", "height = 2 AND idx = 1"),
    ("results", "kind", "height = 2 AND idx = 1"),
    ("seals", "envelope", "height = 2 AND validator = (SELECT min(validator) FROM seals WHERE height = 2)"),
    ("seals", "validator", "height = 2 AND validator = (SELECT min(validator) FROM seals WHERE height = 2)"),
]


@pytest.mark.parametrize(("table", "column", "where"), TAMPER_CASES)
def test_any_changed_byte_is_detected_at_its_height(community, table, column, where):
    fill(community, blocks=4)
    ledger = community.ledgers[1]
    path = ledger.store.path
    ledger.close()
    conn = sqlite3.connect(path)
    (value,) = conn.execute(f"SELECT {column} FROM {table} WHERE {where}").fetchone()
    conn.execute(f"UPDATE {table} SET {column} = ? WHERE {where}", (_flip(value),))
    conn.commit()
    conn.close()
    with pytest.raises(VerifyError) as err:
        verify_store(Store.open(path.parent, readonly=True), KeyValueApp())
    assert err.value.height == 2, str(err.value)


def test_changed_genesis_is_detected(community):
    fill(community, blocks=1)
    path = community.ledgers[2].store.path
    community.ledgers[2].close()
    conn = sqlite3.connect(path)
    (doc,) = conn.execute("SELECT doc FROM genesis").fetchone()
    conn.execute("UPDATE genesis SET doc = ?", (doc.replace(b'"quorum":3', b'"quorum":2'),))
    conn.commit()
    conn.close()
    with pytest.raises(VerifyError) as err:
        verify_store(Store.open(path.parent, readonly=True), KeyValueApp())
    assert err.value.height == 0


def test_deleted_row_is_detected(community):
    fill(community, blocks=3)
    path = community.ledgers[3].store.path
    community.ledgers[3].close()
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM results WHERE height = 3 AND idx = 0")
    conn.commit()
    conn.close()
    with pytest.raises(VerifyError) as err:
        verify_store(Store.open(path.parent, readonly=True), KeyValueApp())
    assert err.value.height == 3


def test_reopen_restores_state(community, tmp_path):
    fill(community, blocks=3)
    ledger = community.ledgers[0]
    head = header_hash(ledger.head)
    path = ledger.store.path.parent
    ledger.close()
    reopened = Ledger.open(path, KeyValueApp())
    assert header_hash(reopened.head) == head and reopened.state == community.ledgers[1].state


def test_a_seq_jump_of_2_to_the_40_executes_in_constant_memory(community):
    """A valid message whose seq jumps far ahead (an agent that lost its state restarts its seq at
    the clock): block execution, intake and verify stay O(window), and the window moves on."""
    c, meter = community, community.meters[0]
    interval = T0 - T0 % 900
    c.run_block([reading(meter, c.community, interval, 1)], T0 + 1)
    meter.seq += 2**40
    jumped = reading(meter, c.community, interval, 2)
    block = c.run_block([c.ledgers[0].intake(jumped.to_bytes(), T0 + 2)], T0 + 2)
    assert [r["status"] for r in block.results if r["kind"] == "tx"] == ["ok"]
    assert c.ledgers[0].chain_state["seqs"][meter.id] == [jumped.seq, "1"]
    meter.seq -= 2**40  # the old seqs are now far below the window: replays
    old = reading(meter, c.community, interval, 3)
    block = c.run_block([old], T0 + 3)
    assert [r.get("reason") for r in block.results if r["kind"] == "tx"] == ["replay"]
    assert verify_store(c.ledgers[1].store, KeyValueApp()).blocks == 3


def _tamper_snapshot(path, change) -> None:
    conn = sqlite3.connect(path)
    (state,) = conn.execute("SELECT state FROM local_snapshot").fetchone()
    conn.execute("UPDATE local_snapshot SET state = ?", (change(bytes(state)),))
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.replace(b'"quorum":3', b'"quorum":1'),  # still valid JSON, another state
        lambda s: s[:-1],  # not JSON any more
        lambda s: s.replace(b'"chain":{', b'"chain":{"x":1.5,'),  # outside the canonical domain
    ],
    ids=["other_state", "truncated", "float"],
)
def test_verify_checks_the_node_local_state_snapshot(community, change):
    """The node refuses a snapshot that does not match its block at open; verify must say so too
    (it used to pass a store whose node would not start)."""
    fill(community, blocks=3)
    ledger = community.ledgers[1]
    path = ledger.store.path
    ledger.close()  # writes the snapshot at height 3
    assert (
        "state snapshot at height 3 matches"
        in verify_store(Store.open(path.parent, readonly=True), KeyValueApp()).summary()
    )
    _tamper_snapshot(path, change)
    with pytest.raises(VerifyError) as err:
        verify_store(Store.open(path.parent, readonly=True), KeyValueApp())
    assert err.value.height == 3 and "snapshot" in err.value.problem, str(err.value)


def test_verify_refuses_a_snapshot_beyond_the_head(community):
    fill(community, blocks=2)
    ledger = community.ledgers[2]
    path = ledger.store.path
    ledger.close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE local_snapshot SET height = 7")
    conn.commit()
    conn.close()
    with pytest.raises(VerifyError, match="snapshot"):
        verify_store(Store.open(path.parent, readonly=True), KeyValueApp())
