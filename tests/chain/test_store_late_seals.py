"""Late seals (Store.add_seals) count in ``store_rows`` only when stored (found in a QA pass).

A stored seal sent again 300 times made ``store_rows`` say 304 seals for 4 rows, one durable write
each, and the dictionary schedule runs on that count. Now a seal already stored is no write and no
count; ``store_rows`` moves by the rows inserted.
"""

from __future__ import annotations

import pytest

from chain.envelope import parse_envelope
from chain.kvapp import KeyValueApp
from chain.store import Store
from tests.support.localnet import make_community

T0 = 1_764_000_000


@pytest.fixture
def store(tmp_path):
    c = make_community(validators=3, members=1, meters_per_member=1)
    c.open_ledgers(tmp_path, KeyValueApp)
    c.run_block([], T0 + 1)
    return c.ledgers[1].store, c.community


def _counted(store: Store) -> int:
    return store.conn.execute("SELECT rows FROM store_rows WHERE tbl = 'seals'").fetchone()[0]


def _stored(store: Store) -> int:
    return store.conn.execute("SELECT count(*) FROM seals").fetchone()[0]


def test_a_stored_seal_sent_again_is_neither_written_nor_counted(store):
    store, community = store
    assert _counted(store) == _stored(store) > 0
    _validator, raw = store.seal_rows(1)[0]
    seal = parse_envelope(raw, community=community, now=None, interval_s=None)
    before = store.conn.total_changes
    for _ in range(10):
        store.add_seals(1, [seal])
    assert store.conn.total_changes == before  # no transaction wrote anything
    assert _counted(store) == _stored(store)


def test_store_rows_counts_the_seals_inserted_not_those_given(store):
    store, community = store
    seals = [
        parse_envelope(raw, community=community, now=None, interval_s=None) for _, raw in store.seal_rows(1)
    ]
    assert len(seals) >= 2
    store.add_seals(7, seals[:1])  # (a store-level test: add_seals checks no header)
    store.add_seals(7, seals + seals)  # one already stored, each other one given twice
    assert _stored(store) == 2 * len(seals)
    assert _counted(store) == _stored(store)
