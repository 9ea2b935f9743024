"""What a validator tells households after a block: the header, inclusion proofs, receipts,
signed refusal notices and its history of the chain's configuration.

Households never read ``blocks`` (every household's readings and orders). Instead, the proposer
of the round that decided a block publishes, on each meter's ``receipts`` topic, an inclusion
proof of each of its transactions in the block (``type: included``: the sealed header and an
RFC 9162 audit path per transaction against the header's ``tx_root``), its trades, settlements
and order outcomes with inclusion proofs, and on ``headers`` (retained) the final header with its
seals, which is all a light client needs to check either. A message refused for good gets a
signed notice (chain/notice.py) from each of the round's tellers.

Every validator (not only the proposer) also keeps and publishes its **configuration history**
(:class:`ConfigHistory`, docs/ledger.md "Light clients follow the configuration"): one step
(chain/config_proof.py) per final block that changed the validators, the quorum or the app's
parameters, persisted in the store's ``local_kv`` and published whole, retained, on
``config/<its key id>``, so an agent that knows only its genesis can check receipts sealed by
validators voted in later.
"""

from __future__ import annotations

import logging
from typing import Any

from chain.block import Block
from chain.canonical import dumps_checked, loads_strict
from chain.config_proof import (
    MAX_STEPS,
    ConfigProofError,
    TrustedConfig,
    config_entries,
    config_step,
)
from chain.genesis import Genesis, initial_chain_state
from chain.keys import PrivateKey
from chain.messages import MAX_BLOCK_BYTES
from chain.notice import chunks, sign_notice
from chain.state import State
from chain.store import Store
from meter_agent.receipts import follow_config
from peerwatt.bus import Bus, Topics
from peerwatt.node.ledger_api import block_inclusions, block_receipts

log = logging.getLogger("peerwatt.node")

CONFIG_KEY = "config_history"  # local_kv: this validator's configuration history
# a history message stays below what the broker takes (docs/bus.md, max_packet_size): the oldest
# steps go first, as past MAX_STEPS (an agent further behind starts over from a newer genesis)
MAX_HISTORY_BYTES = MAX_BLOCK_BYTES


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
        meter's inclusion proofs of its transactions in it (with their results), and each
        meter's receipts."""
        height = block.height
        seals = [loads_strict(bytes(env)) for _, env in store.seal_rows(height)]
        header = store.header(height)
        self.bus.publish(
            Topics.headers(self.community), dumps_checked({"header": header, "seals": seals}), retain=True
        )
        results = store.results(height)
        for meter, message in block_inclusions(block, meters, header, seals, results):
            self.bus.publish(Topics.receipts(self.community, meter), dumps_checked(message))
        for meter, receipt in block_receipts(store, height, results):
            self.bus.publish(Topics.receipts(self.community, meter), dumps_checked(receipt))


class ConfigHistory:
    """One validator's configuration history: kept, persisted and published.

    ``height``/``entries``: the configuration this node recorded last (after its last step, or
    the one it started following from). ``after_block`` costs one comparison of three entries
    when a block changed nothing; a change builds the step (the state is hashed once), persists
    the history (``local_kv`` key ``config_history``) and publishes it retained on
    ``config/<validator>``. Nothing here raises: a failure is one log line, and the next change
    or start publishes again.
    """

    def __init__(self, bus: Bus, store: Store, genesis: Genesis, validator: str) -> None:
        self.bus = bus
        self.store = store
        self.community = genesis.community
        self.validator = validator
        self.topic = Topics.config(self.community, validator)
        self.steps: list[dict[str, Any]] = []
        self.height = 0
        self.entries: dict[str, Any] = config_entries({"chain": initial_chain_state(genesis)})

    # -- what a client gets ------------------------------------------------------------------------

    def message(self) -> dict[str, Any]:
        return {"type": "config_history", "steps": list(self.steps)}

    def payload(self) -> bytes:
        return dumps_checked(self.message())

    def publish(self) -> None:
        """Publish the whole history, retained (nothing while it has no step)."""
        if not self.steps:
            return
        try:
            self.bus.publish(self.topic, self.payload(), retain=True)
        except Exception as exc:  # never end the node: the next change or start publishes again
            log.error("cannot publish the configuration history on %s: %s", self.topic, exc)

    # -- keeping it ------------------------------------------------------------------------------

    def start(self, state: State, head: dict[str, Any]) -> None:
        """Take back the persisted history, and record a change it missed (the node stopped
        between a block and its history, or runs this code for the first time after a change):
        a step at the head block when that verifies after the last recorded configuration, else
        (one log line) the history goes on from the head's configuration."""
        try:
            saved = self.store.get_local(CONFIG_KEY)
            if saved is not None:
                data = loads_strict(saved, max_depth=32)
                self.steps, self.height, self.entries = list(data["steps"]), data["height"], data["entries"]
        except Exception as exc:
            log.error("the saved configuration history is unreadable (%s); starting a new one", exc)
            self.steps = []
        try:
            current = config_entries(state)
            if current == self.entries:
                self.entries = current
                return
            if head["height"] <= self.height:  # a store older than its history: a later block tells
                return
            try:
                step = self._step(state, head["height"])
                trusted = TrustedConfig.from_entries(self.height, self.entries)
                history = {"type": "config_history", "steps": [step]}
                _, stopped = follow_config(history, trusted, community=self.community)  # as a client will
                if stopped is not None:
                    raise ConfigProofError(stopped)
            except (ConfigProofError, ValueError, KeyError, TypeError) as exc:
                log.warning(
                    "the configuration changed between block %d and block %d before this node recorded "
                    "it (%s): its configuration history goes on from block %d",
                    self.height,
                    head["height"],
                    exc,
                    head["height"],
                )
                self.height, self.entries = head["height"], current
                self._save()
                return
            self._add(step, head["height"], current)
        except Exception as exc:  # never end the node
            log.error("cannot check the configuration history at start: %s", exc)

    def after_block(self, state: State, height: int, *, publish: bool = True) -> None:
        """Block ``height`` is final and ``state`` is the state after it: a step if it changed
        the configuration (cheap when it did not), published unless ``publish`` is False (a key
        that is not a validator after the block)."""
        current = config_entries(state)
        if current == self.entries:
            self.entries = current  # the state's own objects: the next comparison is by identity
            return
        try:
            step = self._step(state, height)
        except Exception as exc:  # never end the node: this change has no step here
            log.error("cannot build the configuration step of block %d: %s", height, exc)
            self.height, self.entries = height, current
            return
        self._add(step, height, current)
        if publish:
            self.publish()

    def _step(self, state: State, height: int) -> dict[str, Any]:
        header = self.store.header(height)
        if header is None:
            raise ValueError(f"block {height} is not in the store")
        seals = [loads_strict(bytes(env)) for _, env in self.store.seal_rows(height)]
        return config_step(state, header, seals)

    def _add(self, step: dict[str, Any], height: int, entries: dict[str, Any]) -> None:
        self.steps.append(step)
        self.height, self.entries = height, entries
        self._cut()
        self._save()

    def _cut(self) -> None:
        """At most MAX_STEPS steps and MAX_HISTORY_BYTES bytes: the oldest steps go first (the
        last one always stays)."""
        del self.steps[:-MAX_STEPS]
        size = len(self.payload())
        while len(self.steps) > 1 and size > MAX_HISTORY_BYTES:
            size -= len(dumps_checked(self.steps.pop(0))) + 1
        if size > MAX_HISTORY_BYTES:
            log.error("the configuration step of block %d alone is too large to publish", self.height)

    def _save(self) -> None:
        data = {"height": self.height, "entries": self.entries, "steps": self.steps}
        try:
            self.store.set_local(CONFIG_KEY, dumps_checked(data))
        except Exception as exc:  # the history stays in memory; the next change saves it all
            log.error("cannot save the configuration history: %s", exc)
