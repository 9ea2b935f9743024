"""A mempool damaged on disk is refused at open with what to do, and a failed read is a
MempoolError (found in a QA pass: ``peerwatt node run`` died with a traceback from ``all`` when a
data page of mempool.sqlite was damaged, as the open only ran ``SELECT count(*)``)."""

from __future__ import annotations

import logging
import sqlite3

import pytest

from peerwatt.node.mempool import Mempool, MempoolError

PAGE = 4096


def _damage_an_overflow_page(path) -> None:
    """Garble the next-page pointer of a page holding a message's overflowing bytes."""
    data = bytearray(path.read_bytes())
    for start in range(0, len(data), PAGE):
        page = data[start : start + PAGE]
        if page[4:100] == b"Z" * 96 and page[0:4] != b"\0\0\0\0":
            data[start : start + 4] = b"\xff\xff\xff\x00"
            path.write_bytes(bytes(data))
            return
    raise AssertionError("no overflow page found")


def test_a_damaged_data_page_is_refused_at_open_with_what_to_do(tmp_path):
    path = tmp_path / "mempool.sqlite"
    pool = Mempool(path)
    for i in range(5):
        pool.add(b'{"n":%d,"pad":"' % i + b"Z" * 20000 + b'"}', topic="peerwatt/oak-street/readings/x")
    pool.close()
    _damage_an_overflow_page(path)
    with pytest.raises(MempoolError) as exc:
        Mempool(path)
    assert str(exc.value).startswith(f"cannot open the mempool {path}: it is damaged (")
    assert "move it away and start the node again" in str(exc.value)


class _Broken:
    """A connection whose every statement fails as a damaged file does."""

    def execute(self, *args: object) -> None:
        raise sqlite3.DatabaseError("database disk image is malformed")


def test_a_failed_read_is_a_mempool_error_and_len_says_the_last_count(tmp_path, caplog):
    pool = Mempool(tmp_path / "mempool.sqlite")
    pool.add(b'{"n":1}')
    pool.add(b'{"n":2}')
    assert len(pool) == 2
    good, pool._conn = pool._conn, _Broken()
    try:
        for read in (pool.all, pool.quarantined):
            with pytest.raises(MempoolError, match="cannot read the mempool .*malformed.*move it away"):
                read()
        caplog.set_level(logging.ERROR, logger="peerwatt")
        assert len(pool) == 2
        assert len(pool) == 2
        errors = [r.getMessage() for r in caplog.records if "cannot read the mempool" in r.getMessage()]
        assert len(errors) == 1 and "the last count read, 2" in errors[0]
    finally:
        pool._conn = good
        pool.close()
