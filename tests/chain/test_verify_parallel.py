"""`verify` with its signature checks spread over helper processes gives the same verdict, the
same report and the same first bad height as the sequential walk."""

from __future__ import annotations

import random
import shutil
import sqlite3

import pytest

import chain.verify as verify_module
from chain.keys import generate_private_key
from chain.kvapp import KeyValueApp
from chain.store import Store
from chain.verify import VerifyError, verify_store
from tests.chain.test_engine import T0, _gov, _vote, reading
from tests.support.localnet import Party, make_community


@pytest.fixture(autouse=True)
def _workers_even_for_small_stores(monkeypatch):
    monkeypatch.setattr(verify_module, "MIN_TXS_FOR_WORKERS", 0)


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    """A kv ledger of 60 blocks in which a meter is enrolled half-way (its key is not known to
    the checks sent ahead before the vote passes)."""
    base = tmp_path_factory.mktemp("parallel")
    c = make_community(validators=4, members=2, meters_per_member=3, time=T0)
    c.open_ledgers(base, KeyValueApp)
    interval = T0 - T0 % 900
    late = Party(generate_private_key())
    t = T0
    for block in range(60):
        t += 1
        txs = [reading(m, c.community, interval, block * 10 + i, created=t) for i, m in enumerate(c.meters)]
        if block == 20:
            prop = _gov(
                c,
                c.validators[0],
                "enroll_meter",
                {"key": late.sec1_hex, "serial": "LATE1", "owner": c.members[0].id, "capacity_w": 5000},
                t,
            )
            txs.append(prop)
            pid = prop.tx_hash.hex()
        if block == 21:
            txs += [_vote(c, c.validators[1], pid, t), _vote(c, c.validators[2], pid, t)]
        if block > 21:
            txs.append(reading(late, c.community, interval, block, created=t))
        c.run_block(txs, t)
    for ledger in c.ledgers:
        ledger.close()
    return base / "validator-1"


def _verdict(path, workers, ahead=None):
    store = Store.open(path, readonly=True)
    try:
        report = verify_store(store, KeyValueApp(), workers=workers)
        if ahead is not None:
            ahead.append(report.signatures_ahead)
        return ("ok", report.blocks, report.txs, report.seals)
    except VerifyError as exc:
        return ("failed", exc.height, exc.problem)
    finally:
        store.close()


def test_parallel_verify_reports_what_the_sequential_walk_reports(store_dir):
    sequential = _verdict(store_dir, 1)
    assert sequential[0] == "ok" and sequential[1] == 60
    ahead: list[int] = []
    assert _verdict(store_dir, 2, ahead) == sequential
    # the checks really ran ahead on the workers: all but the late meter's first readings (its
    # key was not enrolled yet when they were sent ahead) and the checks of the first block
    assert sequential[2] + sequential[3] - 60 <= ahead[0] <= sequential[2] + sequential[3]


def test_a_forged_seal_is_found_at_the_same_height_with_workers(store_dir, tmp_path):
    rng = random.Random(3)
    for trial in range(3):
        work = tmp_path / f"t{trial}"
        shutil.copytree(store_dir, work)
        conn = sqlite3.connect(work / "ledger.sqlite")
        height = rng.randrange(1, 61)
        validator, envelope = conn.execute(
            "SELECT validator, envelope FROM seals WHERE height = ? LIMIT 1", (height,)
        ).fetchone()
        text = bytes(envelope).decode()
        cut = text.index('"sig":"') + len('"sig":"') + 5
        forged = text[:cut] + ("A" if text[cut] != "A" else "B") + text[cut + 1 :]
        conn.execute(
            "UPDATE seals SET envelope = ? WHERE height = ? AND validator = ?",
            (forged.encode(), height, validator),
        )
        conn.commit()
        conn.close()
        sequential = _verdict(work, 1)
        assert sequential[0] == "failed" and sequential[1] == height
        assert _verdict(work, 2) == sequential
