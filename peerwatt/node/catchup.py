"""Fetching final blocks from a peer's HTTP API, for a node that fell behind.

A peer may be hostile or broken: its reply is size- and depth-bounded and parsed strictly; what
comes back is only *parsed* here. The caller verifies every block (seals of one round, roots,
re-execution: ``Ledger.commit``) before storing it.
"""

from __future__ import annotations

import urllib.request

from chain import messages
from chain.block import Block
from chain.canonical import MAX_DEPTH, CanonicalError, loads_strict
from chain.envelope import Envelope
from peerwatt.node.ledger_api import block_from_json

CATCHUP_BATCH = 100  # blocks asked of a peer at once
# A peer's reply is bounded: a batch of blocks at their largest, and its JSON nesting the block's
# plus the few levels the reply wraps it in.
MAX_CATCHUP_REPLY_BYTES = CATCHUP_BATCH * messages.MAX_BLOCK_BYTES // 8
CATCHUP_REPLY_DEPTH = MAX_DEPTH + 4


def fetch_blocks(
    peer: str, start: int, community: str, interval_s: int | None, *, timeout_s: float = 5.0
) -> list[tuple[Block, list[Envelope]]]:
    """Up to CATCHUP_BATCH final blocks from height ``start`` with their seals, not yet
    verified; [] when the peer has none. ValueError/OSError for a bad reply or peer."""
    url = f"{peer.rstrip('/')}/v1/blocks?from={start}&limit={CATCHUP_BATCH}"
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        raw = response.read(MAX_CATCHUP_REPLY_BYTES + 1)
    if len(raw) > MAX_CATCHUP_REPLY_BYTES:
        raise ValueError(f"reply larger than {MAX_CATCHUP_REPLY_BYTES} bytes")
    try:
        blocks = loads_strict(raw, max_depth=CATCHUP_REPLY_DEPTH)["blocks"]
    except CanonicalError as exc:
        raise ValueError(f"malformed reply: {exc}") from None
    if not isinstance(blocks, list):
        raise ValueError("malformed reply: 'blocks' is not a list")
    return [block_from_json(data, community, interval_s) for data in blocks]
