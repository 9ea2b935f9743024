"""The node API writes its JSON compact and in UTF-8, so a catch-up reply is about the size of the
blocks' canonical bytes, whatever text their transactions hold.

Found in a review of the catch-up bounds (dcc0939): they take a block as written by the API to be
at most 3x its canonical size, but the API wrote ``json.dumps`` defaults: ``\\u007f`` for each DEL
(6x the canonical byte), ``\\u00e9`` for each 2-byte character (3x), and a space after every
separator. A proposal's ``args`` is a free object, so a validator's governance messages (kept in
blocks even when refused) could fill a block with such text and make it one no node could catch
up."""

from __future__ import annotations

import json
import urllib.request

from chain.canonical import dumps_checked
from chain.kvapp import KeyValueApp
from peerwatt.node.http_api import NodeHttpApi
from tests.support.localnet import make_community


def test_a_block_of_escaped_text_is_served_at_about_its_canonical_size(tmp_path):
    c = make_community(validators=1, members=1, meters_per_member=1)
    c.open_ledgers(tmp_path, KeyValueApp)
    t = c.genesis.time
    text = "\x7f" * 140 + "é" * 140  # what json.dumps escapes 6x and 3x
    proposals = [
        party.sign(c.community, "propose", {"action": "set_param", "args": {"name": "x", "value": text},
                   "deadline": t + 3600, "note": text}, created=t)
        for party in (*c.validators, *c.members)
    ]  # fmt: skip
    block = c.run_block(proposals, t + 1)
    assert len(block.txs) == len(proposals), block.results
    for ledger in c.ledgers:
        ledger.close()
    api = NodeHttpApi(tmp_path / "validator-0", dict, "127.0.0.1", 0)
    api.start()
    try:
        with urllib.request.urlopen(f"{api.address}/v1/blocks?from=1&limit=1", timeout=10) as reply:
            written = reply.read()
    finally:
        api.stop()
    canonical = dumps_checked(json.loads(written))
    assert len(written) < 1.2 * len(canonical), (len(written), len(canonical))
