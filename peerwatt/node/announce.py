"""What a validator tells households after a block: the header, inclusion proofs, receipts and
signed refusal notices.

Households never read ``blocks`` (every household's readings and orders). Instead, the proposer
of the round that decided a block publishes, on each meter's ``receipts`` topic, an inclusion
proof of each of its transactions in the block (``type: included``: the sealed header and an
RFC 9162 audit path per transaction against the header's ``tx_root``), its trades, settlements
and order outcomes with inclusion proofs, and on ``headers`` (retained) the final header with its
seals, which is all a light client needs to check either. A message refused for good gets a
signed notice (chain/notice.py) from each of the round's tellers.
"""

from __future__ import annotations

from chain.block import Block
from chain.canonical import dumps_checked, loads_strict
from chain.keys import PrivateKey
from chain.notice import chunks, sign_notice
from chain.store import Store
from peerwatt.bus import Bus, Topics
from peerwatt.node.ledger_api import block_inclusions, block_receipts


class Announcer:
    """Publishes one validator's notices, headers and receipts on the bus."""

    def __init__(self, bus: Bus, key: PrivateKey, community: str) -> None:
        self.bus = bus
        self.key = key
        self.community = community

    def notify(self, meter: str, seqs: list[int], *, now: int, chain_height: int, refused: str) -> None:
        """Signed notices (chain/notice.py) on the meter's receipts topic: ``seqs`` were refused for
        good, for ``refused``."""
        for part in chunks(seqs):
            payload = sign_notice(
                self.key,
                community=self.community,
                meter=meter,
                seqs=part,
                created=now,
                seq=chain_height,
                refused=refused,
            )
            self.bus.publish(Topics.receipts(self.community, meter), payload)

    def block_final(self, store: Store, block: Block, meters: dict, *, now: int) -> None:
        """Everything households hear about a final block: the header with its seals, each
        meter's inclusion proofs of its transactions in it, and each meter's receipts."""
        height = block.height
        seals = [loads_strict(bytes(env)) for _, env in store.seal_rows(height)]
        header = store.header(height)
        self.bus.publish(
            Topics.headers(self.community), dumps_checked({"header": header, "seals": seals}), retain=True
        )
        for meter, message in block_inclusions(block, meters, header, seals):
            self.bus.publish(Topics.receipts(self.community, meter), dumps_checked(message))
        for meter, receipt in block_receipts(store, height):
            self.bus.publish(Topics.receipts(self.community, meter), dumps_checked(receipt))
