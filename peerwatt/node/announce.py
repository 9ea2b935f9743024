"""What a validator tells households after a block: signed notices, the header and receipts.

Households never read ``blocks`` (every household's readings and orders). Instead, the proposer
of the round that decided a block publishes, on each meter's ``receipts`` topic, a signed notice
of which of its messages the block holds (or which one was refused for good, and why), its
trades, settlements and order outcomes with inclusion proofs, and on ``headers`` (retained) the
final header with its seals, which is all a light client needs to check a receipt.
"""

from __future__ import annotations

from chain.block import Block
from chain.canonical import dumps_checked, loads_strict
from chain.keys import PrivateKey
from chain.notice import chunks, sign_notice
from chain.store import Store
from peerwatt.bus import Bus, Topics
from peerwatt.node.ledger_api import block_receipts


class Announcer:
    """Publishes one validator's notices, headers and receipts on the bus."""

    def __init__(self, bus: Bus, key: PrivateKey, community: str) -> None:
        self.bus = bus
        self.key = key
        self.community = community

    def notify(
        self,
        meter: str,
        seqs: list[int],
        *,
        now: int,
        chain_height: int,
        height: int | None = None,
        refused: str | None = None,
    ) -> None:
        """Signed notices (chain/notice.py) on the meter's receipts topic: ``seqs`` are in block
        ``height``, or were refused for good for ``refused``."""
        for part in chunks(seqs):
            payload = sign_notice(
                self.key,
                community=self.community,
                meter=meter,
                seqs=part,
                created=now,
                seq=chain_height,
                height=height,
                refused=refused,
            )
            self.bus.publish(Topics.receipts(self.community, meter), payload)

    def block_final(self, store: Store, block: Block, meters: dict, *, now: int) -> None:
        """Everything households hear about a final block: the header with its seals, each
        meter's notice of its messages in it, and each meter's receipts."""
        height = block.height
        seals = [loads_strict(bytes(env)) for _, env in store.seal_rows(height)]
        header = {"header": store.header(height), "seals": seals}
        self.bus.publish(Topics.headers(self.community), dumps_checked(header), retain=True)
        by_signer: dict[str, list[int]] = {}
        for env in block.txs:
            if env.signer in meters:
                by_signer.setdefault(env.signer, []).append(env.seq)
        for signer, seqs in by_signer.items():
            self.notify(signer, seqs, now=now, chain_height=height, height=height)
        for meter, receipt in block_receipts(store, height):
            self.bus.publish(Topics.receipts(self.community, meter), dumps_checked(receipt))
