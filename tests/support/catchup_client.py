"""Catch-up as a list: a peer's reply of final blocks parsed whole, for tests that look at what a
peer serves. The node itself stores each block before it parses the next (``Node._catch_up_batch``
through :func:`peerwatt.node.catchup.fetch_reply` and ``Reply.next_block``)."""

from __future__ import annotations

import threading

from chain.block import Block
from chain.envelope import Envelope
from peerwatt.node.catchup import CATCHUP_BATCH, fetch_reply
from peerwatt.node.ledger_api import ErasedPayloads, block_from_json


def fetch_blocks(
    peer: str,
    start: int,
    community: str,
    interval_s: int | None,
    *,
    timeout_s: float = 5.0,
    limit: int = CATCHUP_BATCH,
    stop: threading.Event | None = None,
    max_seals: int = 256,
) -> list[tuple[Block, list[Envelope]]]:
    """Up to ``limit`` (at most CATCHUP_BATCH) final blocks from height ``start`` with their
    seals (at most ``max_seals`` each), not yet verified; [] when the peer has none. As
    ``fetch_reply``, and ErasedPayloads when the first block holds erased payloads."""
    reply = fetch_reply(peer, start, timeout_s=timeout_s, limit=limit, stop=stop)
    out = []
    while (data := reply.next_block(max_seals)) is not None:
        try:
            out.append(block_from_json(data, community, interval_s))
        except ErasedPayloads:
            if out:  # the blocks before it can be stored first
                break
            raise
    return out
