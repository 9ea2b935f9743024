"""A catch-up reply's blocks hold what an honest block holds, checked before it costs anything.

Found in a QA pass, each time with a peer serving the *real* sealed blocks (so nothing was
refused and the peer never skipped):

- block 1 with its 3 seals repeated 80,000 times (83.5 MiB): every seal parsed and its signature
  verified before the duplicates were dropped, 22 s of the node's loop and 1.2 GB;
- block 1 with its unused ``tx_hashes`` padded with 33 million ``[]``: 3 GB in the parse, and the
  block was taken;
- ``txs: [null]`` without a valid seal: the once-only WARNING that the community erased payloads;
- an HTTP status line with CR LF: written into the log as it came.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler

import pytest

import chain.engine
from chain.canonical import dumps_checked
from peerwatt.node import catchup
from peerwatt.node.ledger_api import blocks_json
from tests.support.http_peer import HttpPeer, query, send_body
from tests.support.memory_net import Net


def _answer(handler: BaseHTTPRequestHandler, reply, raw: bytes | None) -> None:
    """``reply(H)`` (bytes) to ``/v1/blocks?from=H``, or the raw bytes ``raw`` in place of a whole
    HTTP response."""
    if raw is None:
        send_body(handler, reply(int(query(handler)["from"])))
        return
    try:
        handler.wfile.write(raw)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the node refused the reply from its first bytes and hung up


@pytest.fixture
def peers():
    """Makes an HTTP peer that answers with ``_answer(reply, raw)``."""
    with ExitStack() as made:
        yield lambda reply=None, raw=None: made.enter_context(HttpPeer(lambda h: _answer(h, reply, raw)))


def _chain(tmp_path) -> tuple[Net, list]:
    """A community whose node 3 was down while block 1 (with transactions) became final."""
    net = Net(tmp_path)
    net.crash(3)
    net.send(1)
    net.settle()
    blocks = blocks_json(net.nodes[0].ledger.store, 1, 100)
    assert len(blocks) == 1 and blocks[0]["txs"] and len(blocks[0]["seals"]) == 3
    return net, blocks


def _serving(first: dict, write=json.dumps):
    """A peer's reply function: ``first`` for height 1, no blocks after it."""
    return lambda start: (write({"blocks": [first]}) if start == 1 else '{"blocks": []}').encode()


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


@pytest.mark.parametrize(
    "seals, reason",
    [
        ([0, 1, 2] * 2000, "too_many_seals"),  # 6,000 real seals: more bytes than 4 seals take
        ([0, 1, 2, 0, 1], "too_many_seals"),  # 5 seals: more than 4 validators have
        ([0, 1, 2, 0], "duplicate_seal"),
    ],
)
def test_a_block_with_more_seals_than_an_honest_one_is_refused_before_any_signature_check(
    tmp_path, peers, signatures, seals, reason
):
    net, blocks = _chain(tmp_path)
    real = blocks[0]["seals"]
    padded = dict(blocks[0], seals=[real[i] for i in seals])
    hostile = peers(_serving(padded))
    back = net.start(3, peers=(hostile.address,))
    signatures[0] = 0
    started = time.perf_counter()
    back._catch_up()
    assert time.perf_counter() - started < 2.0
    assert back.ledger.height == 0
    assert back.status()["blocks_refused"] == {f"catchup_{reason}": 1}
    assert signatures[0] == 0
    assert back._peer_catchup[hostile.address].skip_until > net.now  # skipped like any refusal
    honest = peers(_serving(blocks[0]))  # the real block, from another peer: taken
    back.peers = (hostile.address, honest.address)
    signatures[0] = 0
    back._catch_up()
    assert back.ledger.height == 1
    assert signatures[0] == 3
    assert len(back.ledger.store.seal_rows(1)) == 3


def test_a_padded_field_is_refused_before_it_is_parsed(tmp_path, peers, monkeypatch):
    """tx_hashes padded with 300,000 empty lists (1.2 MB; the QA pass's 33 million took 3 GB):
    refused from its size, as one hash per transaction takes, without parsing it."""
    net, blocks = _chain(tmp_path)
    padded = dict(blocks[0], tx_hashes=blocks[0]["tx_hashes"] + [[]] * 300_000)
    hostile = peers(_serving(padded))
    parsed: list[int] = []
    parse = catchup.loads_strict

    def recorded(data, **kwargs):
        parsed.append(len(data))
        return parse(data, **kwargs)

    monkeypatch.setattr(catchup, "loads_strict", recorded)
    back = net.start(3, peers=(hostile.address,))
    back._catch_up()
    assert back.ledger.height == 0
    assert back.status()["blocks_refused"] == {"catchup_bad_tx_hashes": 1}
    assert parsed and max(parsed) < 100_000, parsed


@pytest.mark.parametrize("field", ["txs", "results"])
def test_transactions_padded_beyond_what_a_block_holds_are_refused_before_they_are_parsed(
    tmp_path, peers, monkeypatch, field
):
    """The block's transactions (or results) padded with empty lists, beyond what a block holds
    as canonical JSON (here 64 KiB instead of 8 MiB, to keep the test small; 24 MiB of '[],' in
    a QA pass's variant took 9.8 s and 676 MB): the windows looked at never exceed that."""
    monkeypatch.setattr(catchup.messages, "MAX_BLOCK_BYTES", 64 * 1024)
    net, blocks = _chain(tmp_path)
    padded = dict(blocks[0], **{field: blocks[0][field] + [[]] * 100_000})  # 400 KB
    hostile = peers(_serving(padded, lambda v: json.dumps(v, separators=(",", ":"))))
    windows: list[int] = []

    class Recorded:
        def raw_decode(self, text: str):
            windows.append(len(text))
            return json.JSONDecoder().raw_decode(text)

    parse = catchup.loads_strict

    def strict(data, **kwargs):
        windows.append(len(data))
        return parse(data, **kwargs)

    monkeypatch.setattr(catchup, "_PLAIN", Recorded(), raising=False)
    monkeypatch.setattr(catchup, "loads_strict", strict)
    back = net.start(3, peers=(hostile.address,))
    back._catch_up()
    assert back.ledger.height == 0
    assert back._peer_catchup[hostile.address].failures == 1
    assert max(windows) <= 64 * 1024, windows  # (the whole reply: 400 KB)


@pytest.mark.parametrize(
    "change, why",
    [
        (lambda b: b.update(x=[]), "and nothing else"),
        (lambda b: b["header"].update(x=1), "its header does not hold"),
        (lambda b: b.update(tx_hashes=["ab" * 32] * len(b["tx_hashes"])), "bad_tx_hashes"),
        (lambda b: b.update(tx_hashes=b["tx_hashes"][1:]), "bad_tx_hashes"),
        (lambda b: b.update(tx_hashes=[[]] * len(b["tx_hashes"])), "tx_hashes are not a list of hashes"),
        (lambda b: b.update(results=[1] * len(b["results"])), "results are not a list of objects"),
    ],
)
@pytest.mark.parametrize("write", [json.dumps, lambda v: dumps_checked(v).decode()], ids=["api", "canonical"])
def test_a_block_with_a_field_no_honest_block_has_is_refused(tmp_path, peers, caplog, change, why, write):
    """The real block with one field added or changed that catch-up does not use (each ignored
    before, and the block taken). In the API's key order and in canonical JSON's (sorted keys:
    tx_hashes before txs)."""
    caplog.set_level(logging.WARNING, logger="peerwatt")
    net, blocks = _chain(tmp_path)
    change(blocks[0])
    hostile = peers(_serving(blocks[0], write))
    back = net.start(3, peers=(hostile.address,))
    back._catch_up()
    assert back.ledger.height == 0
    assert back._peer_catchup[hostile.address].skip_until > net.now
    lines = [r.getMessage() for r in caplog.records if hostile.address in r.getMessage()]
    assert len(lines) == 1 and why in lines[0], lines


@pytest.mark.parametrize("write", [json.dumps, lambda v: dumps_checked(v).decode()], ids=["api", "canonical"])
def test_an_honest_reply_is_taken_in_either_key_order(tmp_path, peers, write):
    net, blocks = _chain(tmp_path)
    net.nodes[2].bus.crash()  # (node 2 goes on; only node 3 catches up)
    honest = peers(lambda start: write({"blocks": blocks[start - 1 :]}).encode())
    back = net.start(3, peers=(honest.address,))
    back._catch_up()
    assert back.ledger.height == 1
    assert back.status()["blocks_refused"] == {}


def _erased(block: dict) -> dict:
    """``block`` as a peer serves it after ``peerwatt node erase`` erased all its payloads."""
    return dict(block, txs=[None] * len(block["txs"]))


def test_erased_payloads_are_believed_only_of_a_header_a_quorum_sealed(tmp_path, peers, caplog):
    caplog.set_level(logging.INFO, logger="peerwatt")
    net, blocks = _chain(tmp_path)
    real = blocks[0]
    forged_header = dict(real["header"], state_root="00" * 32)
    forgers = [
        (peers(_serving(dict(_erased(real), seals=[]))), "no_quorum"),  # no seal at all
        (peers(_serving(dict(_erased(real), seals=real["seals"][:2]))), "no_quorum"),
        (peers(_serving(dict(_erased(real), header=forged_header))), "wrong_header"),  # another header
    ]
    back = net.start(3, peers=tuple(peer.address for peer, _ in forgers))
    back._catch_up()
    assert back.ledger.height == 0
    assert back.status()["blocks_refused"] == {"catchup_no_quorum": 2, "catchup_wrong_header": 1}
    assert not [r for r in caplog.records if "erased payloads" in r.getMessage()]
    # the real block's header with its quorum of seals and its payloads erased: believed, and
    # the once-only WARNING is still there to give
    erased = peers(_serving(_erased(real)))
    back.peers = (erased.address,)
    back._catch_up()
    lines = [r.getMessage() for r in caplog.records if "erased payloads" in r.getMessage()]
    assert len(lines) == 1 and "at block 1" in lines[0], lines
    assert back.ledger.height == 0


@pytest.mark.parametrize(
    "raw, shown",
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "SSH-2.0-OpenSSH\\u000d\\u000a"),
        (b"HTTP/1.0 500 Oops\x1b[2J\rFAKE LINE\r\n\r\n", "HTTP 500 Oops\\u001b[2J\\u000dFAKE LINE"),
    ],
)
def test_a_peers_text_is_logged_on_one_line_escaped(tmp_path, peers, caplog, raw, shown):
    caplog.set_level(logging.WARNING, logger="peerwatt")
    net, _blocks = _chain(tmp_path)
    hostile = peers(raw=raw)
    back = net.start(3, peers=(hostile.address,))
    back._catch_up()
    lines = [r.getMessage() for r in caplog.records if hostile.address in r.getMessage()]
    assert len(lines) == 1, lines
    assert shown in lines[0]
    assert all(ord(c) >= 32 for c in lines[0]), repr(lines[0])
