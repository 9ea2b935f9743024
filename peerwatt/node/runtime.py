"""A ledger node on the bus: sequencer, validator or observer (the engine's calls on MQTT).

Threads: bus handlers only persist (sequencer mempool) and enqueue; one loop (``step``) owns the
ledger: it checks transactions, cuts blocks, seals, collects seals and commits final blocks.

- Sequencer: takes order/reading/gov messages (durably into its mempool first), checks each
  (signature, enrolment, replay, app rules), cuts a block every ``block_s`` while transactions
  wait and whenever the app needs one (gate closure, settlement), publishes it (retained), seals
  it and commits it at quorum. It never builds on a block that is not final. An unfinished block
  is persisted and re-proposed identically after a restart.
- Validator: re-executes each proposed block and seals it if the roots match (at most one seal
  per height); commits at quorum. Asked to seal two headers at one height: alarm, stop.
- Observer: verifies and stores final blocks.
Every node catches up from its peers' HTTP APIs when it sees it is behind.

Hostile input: every byte from the bus or a peer goes through the strict, size- and
depth-bounded parser. Handling one message never ends the process: a message whose handling
fails unexpectedly (a bug, not a refusal) is quarantined (moved out of the mempool with its error,
counted, logged once) and the node goes on; a transaction that breaks block execution is found by
bisection and quarantined, and the block is cut without it. Senders hear only signed notices, and
only about messages whose signature verified (chain/notice.py).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from chain import messages
from chain.block import Block, header_hash
from chain.canonical import MAX_DEPTH, CanonicalError, dumps_checked, loads_strict
from chain.engine import Equivocation, Ledger, check_seal_for
from chain.envelope import Envelope, Rejected, parse_envelope, sign_envelope, verify_envelope
from chain.execute import InvalidBlock, public_key_from_hex
from chain.keys import PrivateKey, key_id
from chain.notice import authenticated, chunks, sign_notice
from chain.store import StoreError
from meter_agent.clock import Clock, WallClock
from peerwatt.bus import Bus, Topics
from peerwatt.node.ledger_api import block_from_json, block_receipts
from peerwatt.node.mempool import Mempool, MempoolError

log = logging.getLogger("peerwatt.node")

ROLES = ("sequencer", "validator", "observer")
MAX_BLOCK_TXS = 2000
MAX_INBOX_PER_STEP = 500
REPUBLISH_S = 5.0
STALL_AFTER_S = 30.0  # a known next block not final this long: the chain is stalled
STALL_LOG_EVERY_S = 60.0
INFLIGHT_KEY = "inflight_block"
CATCHUP_BATCH = 100  # blocks asked of a peer at once
# A peer's reply is bounded: a batch of blocks at their largest, and its JSON nesting the block's
# plus the few levels the reply wraps it in.
MAX_CATCHUP_REPLY_BYTES = CATCHUP_BATCH * messages.MAX_BLOCK_BYTES // 8
CATCHUP_REPLY_DEPTH = MAX_DEPTH + 4


@dataclass
class Inflight:
    """The sequencer's proposed block waiting for its quorum of seals."""

    block: Block
    raws: list[bytes]
    published_at: float = 0.0


@dataclass
class NodeMetrics:
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    blocks_committed: int = 0
    blocks_refused: Counter = field(default_factory=Counter)
    quarantined: int = 0
    last_commit_real: float | None = None


class Node:
    """One node of a community (see module docstring)."""

    def __init__(
        self,
        ledger: Ledger,
        bus: Bus,
        *,
        role: str,
        key: PrivateKey | None = None,
        clock: Clock | None = None,
        block_s: float | None = None,
        peers: tuple[str, ...] = (),
        mempool: Mempool | None = None,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if role != "observer" and key is None:
            raise ValueError(f"a {role} needs its validator key")
        self.ledger = ledger
        self.bus = bus
        self.role = role
        self.key = key
        self.key_id = key_id(key.public_key()) if key is not None else None
        self.clock = clock or WallClock()
        self.block_s = float(block_s if block_s is not None else ledger.genesis.doc["chain"]["block_s"])
        self.peers = tuple(peers)
        self.mempool = mempool
        self.community = ledger.community
        self.metrics = NodeMetrics()
        self.halted: str | None = None
        self._inbox: queue.Queue[tuple[str, str, bytes]] = queue.Queue()
        self._pending: list[tuple[bytes, Envelope]] = []
        self._pending_keys: set[tuple[str, int]] = set()
        self._inflight: Inflight | None = None
        self._candidates: dict[int, dict[bytes, Block]] = {}
        self._seals: dict[int, dict[str, Envelope]] = {}
        self._logged: set[tuple[str, str]] = set()
        self._status_lock = threading.Lock()  # status() runs on the HTTP thread
        self._last_cut = time.monotonic()
        self._catchup_after = 0.0
        self._validators_at: dict[int, dict[str, Any]] = {}
        # set before a clean shutdown: finish the block in flight, propose no new one
        self.draining = False
        self.store_error: str | None = None
        self.stall_after_s = STALL_AFTER_S
        self.stalled: dict[str, Any] | None = None  # height, since, seals, quorum, missing
        self._waiting: tuple[int, float] | None = None  # (next height, since when a block for it is known)
        self._stall_logged = 0.0

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe, connect, and (sequencer) reload the mempool and any unfinished block."""
        c = self.community
        if self.role == "sequencer":
            if self.key_id != self.ledger.sequencer():
                log.warning(
                    "this key is not the community's sequencer (%s): proposals will be refused",
                    self.ledger.sequencer(),
                )
            for kind in ("orders", "readings"):
                self.bus.subscribe(Topics.pattern(c, kind), self._on_tx)
            self.bus.subscribe(Topics.gov(c), self._on_tx)
        else:
            self.bus.subscribe(Topics.blocks(c), lambda t, p: self._inbox.put(("block", t, p)))
        self.bus.subscribe(Topics.pattern(c, "seals"), lambda t, p: self._inbox.put(("seal", t, p)))
        if self.role == "sequencer":
            self._restore()
        self.bus.start()

    def stop(self) -> None:
        self.bus.stop()

    def run(self, stop: threading.Event, tick_s: float = 0.02) -> None:
        """Run ``step`` until ``stop`` is set."""
        while not stop.is_set():
            busy = self.step()
            if not busy:
                stop.wait(tick_s)

    # -- the loop ------------------------------------------------------------------------------

    def step(self) -> bool:
        """Process what arrived, cut/publish blocks, commit final ones; True if anything happened."""
        busy = False
        for _ in range(MAX_INBOX_PER_STEP):  # bounded, so a flood cannot starve block-making
            try:
                kind, topic, payload = self._inbox.get_nowait()
            except queue.Empty:
                break
            busy = True
            if self.halted:
                continue
            take = {"tx": self._take_tx, "block": self._take_block, "seal": self._take_seal}[kind]
            try:
                take(payload)
            except Exception as exc:  # a bug met by one message must not end the node
                self._quarantine(kind, payload, exc)
        if self.halted:
            return busy
        if self.role == "sequencer" and not self.draining:
            busy |= self._maybe_cut()
        elif self._inflight is not None and time.monotonic() - self._inflight.published_at > REPUBLISH_S:
            self._publish_inflight()
        busy |= self._try_finalize()
        self._check_stall()
        return busy

    def _check_stall(self) -> None:
        """A block for the next height known, not final for ``stall_after_s``: WARN which
        validators' seals are missing (once per stall, then every STALL_LOG_EVERY_S)."""
        height = self.ledger.height + 1
        candidates = self._candidates.get(height)
        if not candidates:
            self._waiting = None
            if self.stalled is not None:
                log.warning("chain moving again at height %d", self.ledger.height)
                self.stalled = None
            return
        now = time.monotonic()
        if self._waiting is None or self._waiting[0] != height:
            if self.stalled is not None:
                log.warning("chain moving again at height %d", self.ledger.height)
                self.stalled = None
            self._waiting = (height, now)
        if now - self._waiting[1] < self.stall_after_s:
            return
        validators = set(self.ledger.validators())
        seals = self._seals.get(height, {})
        best = max(
            ({s for s, e in seals.items() if e.body["header"] == h.hex()} & validators for h in candidates),
            key=len,
        )
        missing = sorted(validators - best)
        first = self.stalled is None
        self.stalled = {
            "height": height,
            "since_s": round(now - self._waiting[1], 1),
            "seals": len(best),
            "quorum": self.ledger.quorum(),
            "missing": missing,
        }
        if first or now - self._stall_logged >= STALL_LOG_EVERY_S:
            self._stall_logged = now
            log.warning(
                "chain STALLED at height %d for %.0f s: %d of %d seals; missing validator(s): %s "
                "(start them, or check their broker connection: no block is final until they seal)",
                height,
                now - self._waiting[1],
                len(best),
                self.ledger.quorum(),
                ", ".join(missing),
            )

    # -- sequencer -----------------------------------------------------------------------------

    def _on_tx(self, topic: str, payload: bytes) -> None:
        # Runs on the bus thread: persist before the broker gets its acknowledgement.
        if self.mempool is not None:
            try:
                if not self.mempool.add(payload):
                    return  # the same bytes are already pending: confirmed with their block
            except MempoolError as exc:
                # keep going in memory: the sender's outbox resends until the ledger confirms
                self._log_once("mempool", "write", logging.ERROR, "%s", exc)
        self._inbox.put(("tx", topic, payload))

    def _count(self, counter: str, reason: str) -> None:
        """Count an event by reason (under the lock: ``status()`` copies the counters)."""
        with self._status_lock:
            getattr(self.metrics, counter)[reason] += 1

    def _log_once(self, what: str, who: str, level: int, message: str, *args: object) -> None:
        if (what, who) not in self._logged:
            self._logged.add((what, who))
            log.log(level, message, *args)

    def _quarantine(self, kind: str, raw: bytes, exc: BaseException) -> None:
        """Set aside a message whose handling failed unexpectedly, so it can never stop the node."""
        error = f"{type(exc).__name__}: {exc}"[:500]
        with self._status_lock:
            self.metrics.quarantined += 1
        self._log_once(
            "quarantine",
            f"{kind}:{type(exc).__name__}",
            logging.ERROR,
            "quarantined a %s message (%s); the node goes on",
            kind,
            error,
        )
        if kind != "tx":
            return
        self._drop_pending(raw)
        if self.mempool is not None:
            try:
                self.mempool.quarantine(raw, error)
            except MempoolError as store_exc:
                self._log_once("mempool", "write", logging.ERROR, "%s", store_exc)

    def _drop_pending(self, raw: bytes) -> None:
        kept = []
        for r, env in self._pending:
            if r == raw:
                self._pending_keys.discard((env.signer, env.seq))
            else:
                kept.append((r, env))
        self._pending = kept

    def _reject(self, raw: bytes, reason: str, signer: str = "?", detail: str = "") -> None:
        self._count("rejected", reason)
        self._log_once(reason, signer, logging.INFO, "rejected %s from %s: %s", reason, signer, detail)
        self._forget([raw])

    def _forget(self, raws: list[bytes]) -> None:
        """Remove messages from the durable mempool (a write error is logged: they come back
        after a restart and are then refused as replays, so nothing is booked twice)."""
        if self.mempool is None:
            return
        try:
            self.mempool.remove(raws)
        except MempoolError as exc:
            self._log_once("mempool", "write", logging.ERROR, "%s", exc)

    def _take_tx(self, raw: bytes) -> None:
        try:
            env = self.ledger.intake(raw, int(self.clock.now()))
        except Rejected as exc:
            sender = self._tell_refused(raw, exc.reason)
            self._reject(raw, exc.reason, sender or "an unauthenticated sender", exc.detail)
            return
        if (env.signer, env.seq) in self._pending_keys:
            self._reject(raw, "replay", env.signer, "already pending")
            return
        with self._status_lock:
            self._pending_keys.add((env.signer, env.seq))
            self._pending.append((raw, env))
            self.metrics.accepted += 1

    def _maybe_cut(self) -> bool:
        if self._inflight is not None:
            if time.monotonic() - self._inflight.published_at > REPUBLISH_S:
                self._catch_up()  # the peers may have finalised it (and more) while we were away
                if self._inflight is not None:
                    self._publish_inflight()
            return False
        now = int(self.clock.now())
        due = self.ledger.next_block_due()
        waited = time.monotonic() - self._last_cut
        if not ((self._pending and waited >= self.block_s) or (due is not None and due <= now)):
            return False
        taken = self._pending[:MAX_BLOCK_TXS]
        try:
            block = self.ledger.propose([env for _, env in taken], now)
        except Exception as exc:  # an app bug met by some transaction: set it aside, cut later
            self._isolate_poison(taken, now, exc)
            return True
        self.ledger.store.set_local(
            INFLIGHT_KEY,
            dumps_checked({"body": block.to_body(), "raws": [r.decode("utf-8") for r, _ in taken]}),
        )
        self._inflight = Inflight(block, [r for r, _ in taken])
        self._last_cut = time.monotonic()
        self._publish_inflight()
        return True

    def _isolate_poison(self, taken: list[tuple[bytes, Envelope]], now: int, exc: Exception) -> None:
        """Find the first transaction whose execution fails (bisection over prefixes, about
        log2(n) trial executions) and quarantine it; the next step cuts the block without it."""
        ok, bad = 0, len(taken)
        try:
            self.ledger.propose([], now)
        except Exception as empty_exc:  # the app fails on an empty block: nothing to set aside
            self._log_once(
                "propose",
                type(empty_exc).__name__,
                logging.ERROR,
                "cannot cut a block (the app fails even without transactions): %s",
                empty_exc,
            )
            self._last_cut = time.monotonic()
            return
        while bad - ok > 1:
            middle = (ok + bad) // 2
            try:
                self.ledger.propose([env for _, env in taken[:middle]], now)
                ok = middle
            except Exception:
                bad = middle
        self._quarantine("tx", taken[bad - 1][0], exc)

    def _publish_inflight(self) -> None:
        inflight = self._inflight
        assert inflight is not None and self.key is not None
        block = inflight.block
        env = sign_envelope(
            self.key,
            type="block",
            community=self.community,
            seq=block.height,
            body=block.to_body(),
            created=int(self.clock.now()),
        )
        self._candidates.setdefault(block.height, {})[block.hash] = block
        self.bus.publish(Topics.blocks(self.community), env.to_bytes(), retain=True)
        self._seal_and_publish(block)
        inflight.published_at = time.monotonic()

    def _restore(self) -> None:
        """After a restart: re-propose the unfinished block identically, reload the mempool."""
        saved = self.ledger.store.get_local(INFLIGHT_KEY)
        inflight_raws: list[bytes] = []
        data = None if saved is None else loads_strict(saved)
        if data is not None:
            block = Block.from_body(
                data["body"], community=self.community, interval_s=self.ledger.genesis.interval_s
            )
            inflight_raws = [r.encode("utf-8") for r in data["raws"]]
            if block.height == self.ledger.height + 1:
                self._inflight = Inflight(block, inflight_raws)
                for env in block.txs:
                    self._pending_keys.add((env.signer, env.seq))
            else:
                self._forget(inflight_raws)
        if self.mempool is not None:
            in_block = set(inflight_raws) if self._inflight else set()
            for raw in self.mempool.all():  # quarantined messages are not here: no crash loop
                if raw not in in_block:
                    self._inbox.put(("tx", "", raw))
        if self._inflight is not None:
            self._inflight.published_at = 0.0  # republish on the first step

    # -- validators and everyone ---------------------------------------------------------------

    def _seal_and_publish(self, block: Block) -> None:
        if self.role == "observer" or self.key_id not in self.ledger.validators():
            return
        try:
            seal = self.ledger.seal(block, self.key, now=int(self.clock.now()))
        except Equivocation as exc:
            self._halt(f"equivocation at height {block.height}", exc.evidence)
            return
        except InvalidBlock as exc:
            self._refuse_block(block.height, exc.reason, str(exc))
            return
        except Exception as exc:  # the app failed on this block: refuse it, never die of it
            self._refuse_block(block.height, "execution_failed", f"{type(exc).__name__}: {exc}")
            return
        self._seals.setdefault(block.height, {})[seal.signer] = seal
        self.bus.publish(Topics.seals(self.community, self.key_id), seal.to_bytes())

    def _refuse_block(self, height: int, reason: str, detail: str) -> None:
        self._count("blocks_refused", reason)
        log.warning("refused to seal block %d: %s", height, detail)

    def _halt(self, why: str, evidence: dict[str, Any]) -> None:
        self.halted = why
        log.error("ALARM: %s; node halted. Evidence stored in the node's local_alarms table.", why)

    def _take_block(self, raw: bytes) -> None:
        try:
            env = parse_envelope(raw, community=self.community, now=None, interval_s=None)
            if env.type != "block":
                raise Rejected("unknown_type", "not a block")
            block = Block.from_body(
                env.body, community=self.community, interval_s=self.ledger.genesis.interval_s
            )
        except Rejected as exc:
            self._count("rejected", f"block_{exc.reason}")
            return
        height = block.height
        if height <= self.ledger.height:
            self._reseal_final(block)
            return
        if height > self.ledger.height + 1:
            self._candidates.setdefault(height, {})[block.hash] = block
            self._catch_up()
            return
        sequencer = self.ledger.validators().get(self.ledger.sequencer())
        try:
            if env.signer != self.ledger.sequencer() or sequencer is None:
                raise Rejected("not_sequencer", "block not from the sequencer")
            verify_envelope(env, public_key_from_hex(sequencer["key"]), key_id_hex=env.signer)
        except Rejected as exc:
            self._count("rejected", f"block_{exc.reason}")
            return
        self._candidates.setdefault(height, {})[block.hash] = block
        self._seal_and_publish(block)

    def _reseal_final(self, block: Block) -> None:
        """A block we already hold as final is proposed again (the sequencer restarted before it
        saw the quorum): publish our seal for it again, so the sequencer can finish it too."""
        own = self.ledger.store.own_seal(block.height)
        if own is not None and own[0] == block.hash and self.key_id is not None:
            self.bus.publish(Topics.seals(self.community, self.key_id), own[1])

    def _take_seal(self, raw: bytes) -> None:
        try:
            seal = parse_envelope(raw, community=self.community, now=None, interval_s=None)
            if seal.type != "seal":
                raise Rejected("unknown_type", "not a seal")
        except Rejected as exc:
            self._count("rejected", f"seal_{exc.reason}")
            return
        height = seal.body["height"]
        if height <= self.ledger.height:
            self._store_late_seal(seal)
            return
        previous = self._seals.setdefault(height, {}).get(seal.signer)
        if previous is not None and previous.body["header"] != seal.body["header"]:
            evidence = self.ledger.detect_equivocation(previous, seal)
            if evidence is not None:
                self.ledger.store.add_alarm(int(time.time()), "equivocation", evidence)
                self._halt(f"validator {seal.signer} sealed two headers at height {height}", evidence)
                return
        self._seals[height][seal.signer] = seal
        if height > self.ledger.height + 1 and time.monotonic() > self._catchup_after:
            self._catch_up()

    def _store_late_seal(self, seal: Envelope) -> None:
        """Keep a valid seal that arrived after its block became final, so stores converge."""
        height = seal.body["height"]
        validators = self._validators_at.get(height)
        header = self.ledger.store.header(height) if validators is not None else None
        if header is None:
            return
        try:
            check_seal_for(validators, self.community, height, header_hash(header), seal)
        except InvalidBlock:
            self._count("rejected", "seal_invalid")
            return
        self.ledger.store.add_seals(height, [seal])

    def _valid_seal(self, block: Block, seal: Envelope) -> bool:
        try:
            self.ledger.check_seal(block, seal)
            return True
        except InvalidBlock as exc:
            self._count("rejected", f"seal_{exc.reason}")
            self._seals.get(block.height, {}).pop(seal.signer, None)
            return False

    def _try_finalize(self) -> bool:
        progressed = False
        while True:
            height = self.ledger.height + 1
            seals = self._seals.get(height, {})
            final = None
            for block_hash, block in self._candidates.get(height, {}).items():
                matching = [
                    s
                    for s in list(seals.values())
                    if s.body["header"] == block_hash.hex() and self._valid_seal(block, s)
                ]
                if self.ledger.is_final(matching):
                    final = (block, matching)
                    break
            if final is None:
                return progressed
            block, matching = final
            validators = dict(self.ledger.validators())
            try:
                self.ledger.commit(block, matching)
            except StoreError as exc:
                self._store_failed(height, exc)
                return progressed
            except Exception as exc:  # InvalidBlock, or the app failed on it: drop this candidate
                reason = exc.reason if isinstance(exc, InvalidBlock) else "execution_failed"
                self._count("blocks_refused", reason)
                log.warning("final block %d could not be committed: %s", height, exc)
                self._candidates[height].pop(block.hash, None)
                continue
            self._store_ok()
            self._validators_at[block.height] = validators
            self._after_commit(block)
            progressed = True

    def _store_failed(self, height: int, exc: StoreError) -> None:
        """Disk full or read-only: nothing was written (one SQLite transaction). Keep what we
        have and try again later, so the node recovers by itself when the disk accepts writes."""
        if self.store_error is None:
            log.error("cannot store block %d: %s; retrying until the disk accepts it", height, exc)
        self.store_error = str(exc)

    def _store_ok(self) -> None:
        if self.store_error is not None:
            log.info("storing blocks again")
            self.store_error = None

    def _after_commit(self, block: Block) -> None:
        with self._status_lock:
            self.metrics.blocks_committed += 1
            self.metrics.last_commit_real = time.time()
        for height in [h for h in self._candidates if h <= block.height]:
            del self._candidates[height]
        for height in [h for h in self._seals if h <= block.height]:
            del self._seals[height]
        for height in [h for h in self._validators_at if h < block.height - 16]:
            del self._validators_at[height]
        if self._inflight is not None and self._inflight.block.height <= block.height:
            done = set(self._inflight.raws)
            self._forget(list(done))
            with self._status_lock:
                self._pending = [(r, e) for r, e in self._pending if r not in done]
                for env in block.txs:
                    self._pending_keys.discard((env.signer, env.seq))
                self._inflight = None
            self.ledger.store.set_local(INFLIGHT_KEY, b"null")
        if self.role == "sequencer":
            self._publish_header(block.height)
            self._publish_seen(block)
            self._publish_receipts(block.height)
        log.debug("committed block %d (%d txs)", block.height, len(block.txs))

    def _tell_refused(self, raw: bytes, reason: str) -> str | None:
        """Tell a meter its message was refused for good, so its outbox stops resending it.

        Only when the message's signature verifies under that meter's enrolled key: anyone can
        write another's key id into junk, and a forged refusal would make that meter forget
        messages never booked. Returns the authenticated signer, or None.
        """
        if self.role != "sequencer":
            return None
        meters = self.ledger.chain_state["meters"]
        env = authenticated(raw, community=self.community, key_for=lambda s: (meters.get(s) or {}).get("key"))
        if env is None:
            return None
        self._notify(env.signer, [env.seq], refused=reason)
        return env.signer

    def _publish_seen(self, block: Block) -> None:
        """Each meter learns which of its messages a final block holds (its outbox forgets them)."""
        meters = self.ledger.chain_state["meters"]
        by_signer: dict[str, list[int]] = {}
        for env in block.txs:
            if env.signer in meters:
                by_signer.setdefault(env.signer, []).append(env.seq)
        for signer, seqs in by_signer.items():
            self._notify(signer, seqs, height=block.height)

    def _notify(
        self, meter: str, seqs: list[int], *, height: int | None = None, refused: str | None = None
    ) -> None:
        """Publish signed notices (chain/notice.py) on the meter's receipts topic."""
        assert self.key is not None
        for part in chunks(seqs):
            payload = sign_notice(
                self.key,
                community=self.community,
                meter=meter,
                seqs=part,
                created=int(self.clock.now()),
                seq=self.ledger.height,
                height=height,
                refused=refused,
            )
            self.bus.publish(Topics.receipts(self.community, meter), payload)

    def _publish_header(self, height: int) -> None:
        """A final header with its seals on the headers topic (retained): what households may read
        instead of the full blocks, which carry every household's readings and orders."""
        seals = [loads_strict(bytes(env)) for _, env in self.ledger.store.seal_rows(height)]
        message = {"header": self.ledger.store.header(height), "seals": seals}
        self.bus.publish(Topics.headers(self.community), dumps_checked(message), retain=True)

    def _publish_receipts(self, height: int) -> None:
        """Each meter gets its trades, settlements and order outcomes with inclusion proofs."""
        for meter, receipt in block_receipts(self.ledger.store, height):
            self.bus.publish(Topics.receipts(self.community, meter), dumps_checked(receipt))

    # -- catch-up over HTTP ------------------------------------------------------------------

    def catch_up_at_start(self) -> None:
        """Before joining live traffic: fetch what the peers finalised while we were down."""
        if self.peers:
            self._catch_up()

    def _catch_up(self) -> None:
        """Fetch missing final blocks from peers, verify each, and store it.

        A peer may be hostile: its reply is size- and depth-bounded, every block is verified
        (seals, roots, re-execution) before it is stored, and nothing it sends ends the node.
        """
        self._catchup_after = time.monotonic() + 2.0
        for peer in self.peers:
            try:
                while self._catch_up_batch(peer):
                    pass
            except StoreError as exc:
                self._store_failed(self.ledger.height + 1, exc)
                return
            except Exception as exc:  # unreachable, lying or broken peer: try the next one
                self._log_once(
                    "catch-up",
                    f"{peer}:{type(exc).__name__}",
                    logging.INFO,
                    "catch-up from %s stopped: %s",
                    peer,
                    exc,
                )
                continue
            self._store_ok()

    def _catch_up_batch(self, peer: str) -> bool:
        """Fetch, verify and store the next batch of final blocks; False when there are none."""
        url = f"{peer.rstrip('/')}/v1/blocks?from={self.ledger.height + 1}&limit={CATCHUP_BATCH}"
        with urllib.request.urlopen(url, timeout=5) as response:
            raw = response.read(MAX_CATCHUP_REPLY_BYTES + 1)
        if len(raw) > MAX_CATCHUP_REPLY_BYTES:
            raise ValueError(f"reply larger than {MAX_CATCHUP_REPLY_BYTES} bytes")
        try:
            blocks = loads_strict(raw, max_depth=CATCHUP_REPLY_DEPTH)["blocks"]
        except CanonicalError as exc:
            raise ValueError(f"malformed reply: {exc}") from None
        if not isinstance(blocks, list) or not blocks:
            return False
        for data in blocks:
            block, seals = block_from_json(data, self.community, self.ledger.genesis.interval_s)
            self.ledger.commit(block, seals)
            self._after_commit(block)
        return True

    # -- status --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """A snapshot for the HTTP API and metrics (another thread): copies under the lock."""
        with self._status_lock:
            return self._status_locked()

    def _status_locked(self) -> dict[str, Any]:
        head = self.ledger.head
        last = self.metrics.last_commit_real
        return {
            "community": self.community,
            "role": self.role,
            "key_id": self.key_id,
            "height": head["height"],
            "head_time": head["time"],
            "last_final_block_age_s": None if last is None else round(time.time() - last, 3),
            "broker_connected": self.bus.connected,
            "peers": list(self.peers),
            "pending": len(self._pending),
            "mempool": len(self.mempool) if self.mempool is not None else None,
            "accepted": self.metrics.accepted,
            "rejected": dict(self.metrics.rejected),
            "blocks_committed": self.metrics.blocks_committed,
            "blocks_refused": dict(self.metrics.blocks_refused),
            "quarantined": self.metrics.quarantined,
            "halted": self.halted,
            "store_error": self.store_error,
            "stalled": None if self.stalled is None else dict(self.stalled),
            "inflight": None if self._inflight is None else self._inflight.block.height,
        }
