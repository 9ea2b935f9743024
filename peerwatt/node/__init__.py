"""The ledger node runtime: what ``peerwatt node`` runs (chain + market app + bus).

- ``runtime``: :class:`Node`, a sequencer, validator or observer: takes envelopes from the bus,
  cuts, re-executes and seals blocks, stores them, publishes headers and receipts
- ``mempool``: :class:`Mempool`, the sequencer's durable pool of transactions received but not
  yet in a final block
- ``ledger_api``: reading the store for peers and light clients (blocks with seals, proofs)
- ``http_api``: :class:`NodeHttpApi`, the node's small read-only HTTP API (JSON, metrics)
- ``erasure``: deleting a departed member's payloads after the retention period (GDPR)
"""

from peerwatt.node.http_api import NodeHttpApi
from peerwatt.node.mempool import Mempool, MempoolError
from peerwatt.node.runtime import Node

__all__ = ["Mempool", "MempoolError", "Node", "NodeHttpApi"]
