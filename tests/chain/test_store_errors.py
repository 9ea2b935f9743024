"""A full disk or a read-only store: every write of chain/store.py fails with StoreError naming the
real cause (SQLite's own message), and leaves nothing half-written."""

from __future__ import annotations

import pytest

from chain.envelope import parse_envelope
from chain.kvapp import KeyValueApp
from chain.store import LEDGER_TABLES, Store, StoreError
from chain.verify import verify_store
from tests.support.localnet import make_community

T0 = 1_764_000_000
INTERVAL = T0 - T0 % 900
BIG = 200_000  # bytes: more than the free room of any page the store already has


def reading(meter, community: str, import_wh: int, t: int):
    body = {"interval": INTERVAL, "import_wh": import_wh, "export_wh": 0, "serial": "SN", "profile": "sim"}
    return meter.sign(community, "reading", body, created=t)


@pytest.fixture
def community(tmp_path):
    c = make_community(validators=3, members=2, meters_per_member=2)
    c.open_ledgers(tmp_path, KeyValueApp)
    c.run_block([reading(m, c.community, 1, T0 + 1) for m in c.meters], T0 + 1)
    return c


def disk_full(store: Store) -> None:
    (pages,) = store.conn.execute("PRAGMA page_count").fetchone()
    store.conn.execute(f"PRAGMA max_page_count = {pages}")


def space_returns(store: Store) -> None:
    store.conn.execute("PRAGMA max_page_count = 1073741823")


def rows(store: Store) -> list[int]:
    tables = (*LEDGER_TABLES, "local_snapshot", "local_own_seals", "local_alarms", "local_kv")
    return [store.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables]


def assert_real_cause(exc: pytest.ExceptionInfo, cause: str) -> None:
    message = str(exc.value)
    assert cause in message and "cannot rollback" not in message, message
    assert not exc.value.__class__.__name__.startswith("sqlite")


def test_full_disk_while_committing_a_block_names_the_cause_and_writes_nothing(community):
    c = community
    ledger = c.ledgers[1]
    store = ledger.store
    block = c.ledgers[0].propose(
        [reading(m, c.community, 2 + i, T0 + 2) for i, m in enumerate(c.meters)], T0 + 2
    )
    seals = [c.ledgers[i].seal(block, c.validators[i].key, now=T0 + 2) for i in range(3)]
    before = rows(store)
    disk_full(store)
    # SQLite rolls the transaction back itself on SQLITE_FULL: a second ROLLBACK used to hide the
    # cause behind "cannot rollback - no transaction is active"
    with pytest.raises(StoreError) as exc:
        store.append_block(block, seals, {"chain": {}, "app": {"pad": "x" * BIG}})
    assert_real_cause(exc, "database or disk is full")
    assert rows(store) == before and store.height() == 1 and ledger.height == 1
    space_returns(store)
    ledger.commit(block, seals)
    assert store.height() == 2
    assert verify_store(store, KeyValueApp()).blocks == 2


@pytest.mark.parametrize(
    "write",
    [
        lambda s: s.write_snapshot(1, {"chain": {}, "app": {"pad": "x" * BIG}}),
        lambda s: s.put_own_seal(9, b"\x01" * 32, b"x" * BIG),
        lambda s: s.add_alarm(T0, "equivocation", {"evidence": "x" * BIG}),
        lambda s: s.set_local("key", b"x" * BIG),
    ],
    ids=["write_snapshot", "put_own_seal", "add_alarm", "set_local"],
)
def test_every_write_on_a_full_disk_raises_store_error_with_the_cause(community, write):
    store = community.ledgers[1].store
    before = rows(store)
    disk_full(store)
    with pytest.raises(StoreError) as exc:
        write(store)
    assert_real_cause(exc, "database or disk is full")
    assert rows(store) == before
    space_returns(store)
    write(store)  # the same write succeeds once there is room


@pytest.mark.parametrize(
    "write",
    [
        lambda s, c: s.write_snapshot(1, c.ledgers[1].state),
        lambda s, c: s.put_own_seal(9, b"\x01" * 32, b"seal"),
        lambda s, c: s.add_alarm(T0, "equivocation", {"height": 1}),
        lambda s, c: s.set_local("key", b"value"),
        lambda s, c: s.add_seals(2, [parse_envelope(s.seal_rows(1)[0][1], community=c.community, now=None)]),
        lambda s, c: s.erase_payloads(list(s.iter_payload_hashes())),
    ],
    ids=["write_snapshot", "put_own_seal", "add_alarm", "set_local", "add_seals", "erase_payloads"],
)
def test_every_write_to_a_read_only_store_raises_store_error_with_the_cause(community, write):
    store = community.ledgers[1].store
    before = rows(store)
    store.conn.execute("PRAGMA query_only = ON")  # as a store on a read-only file system
    with pytest.raises(StoreError) as exc:
        write(store, community)
    assert_real_cause(exc, "readonly database")
    assert rows(store) == before


def test_a_constraint_failure_is_a_store_error_too(community):
    """Storing a block at a height that is already stored: StoreError with SQLite's reason, and
    the transaction is rolled back (nothing of the second block is kept)."""
    c = community
    store = c.ledgers[1].store
    before = rows(store)
    block = c.ledgers[0].propose([], T0 + 2)
    block.header["height"] = 1  # pretend a second block 1
    with pytest.raises(StoreError) as exc:
        store.append_block(block, [], None)
    assert_real_cause(exc, "UNIQUE constraint failed")
    assert rows(store) == before and not store.conn.in_transaction


def test_a_store_the_system_cannot_look_at_is_a_store_error(tmp_path):
    """Found in a QA pass: a data folder this user may not enter made Path.exists() raise
    PermissionError out of Store.open (a traceback from `node run`, `gov publish`); a name the
    system refuses (too long) is the same path as root can take it."""
    with pytest.raises(StoreError, match="cannot open .*File name too long"):
        Store.open(tmp_path / ("x" * 300))
    with pytest.raises(StoreError, match="no ledger store in"):
        Store.open(tmp_path / "missing")
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="no ledger store in"):
        Store.open(tmp_path / "file")  # its ledger.sqlite would be inside a file


def test_a_store_file_this_user_may_not_write_is_refused_when_opened_to_write(tmp_path):
    """Found in a QA pass: with ledger.sqlite read-only (its folder writable) `node run` started
    and would fail at its first block (SQLite opens such a file read-only without a word). An
    immutable file stands for it here: root may write any mode, not an immutable file."""
    import subprocess

    from tests.conftest import require_tool

    Store.create(tmp_path / "n").close()
    path = tmp_path / "n" / "ledger.sqlite"
    chattr = require_tool("chattr")
    subprocess.run([chattr, "+i", str(path)], check=True)
    try:
        with pytest.raises(StoreError, match="is read-only for this user"):
            Store.open(tmp_path / "n")
        Store.open(tmp_path / "n", readonly=True).close()  # reading it is fine
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)
    # a folder it may not write in (a read-only mount gave 'unable to open database file')
    subprocess.run([chattr, "+i", str(path.parent)], check=True)
    try:
        with pytest.raises(StoreError, match="n is read-only for this user .*-wal and -shm"):
            Store.open(tmp_path / "n")
    finally:
        subprocess.run([chattr, "-i", str(path.parent)], check=True)
