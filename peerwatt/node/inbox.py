"""The node's inboxes: transactions, and (``ConsensusInbox``, below) proposals and votes; one
bounded queue per sender in each, served in turn.

A meter's broker account may publish only on its own orders and readings topics (the ACL), so
such a topic stands for one account. Served first-in first-out across all topics, one member's
flood of signed messages the ledger refuses made every other household's orders wait behind it
until they missed their gate (a QA pass: 60,000 refused orders in a minute held the nodes for 125
s). Here each sender waits in its own queue, the queues are served in turn, and a queue with
``max_per_topic`` messages or ``max_bytes_per_topic`` bytes waiting takes no more until it drains
(the sender's outbox sends them again; a flood is dropped where it costs nothing). The byte bound
keeps junk near the 64 KiB limit (11 ms a message to refuse) to 64 messages a queue, where the
count alone let one household queue 2 x 2,000 of them (a QA pass: blocks stopped for 67 s).

``gov`` is one topic every operator account writes: as one queue, one account filling it had
every other's proposals and votes turned away as ``busy`` (a QA pass). On a shared topic the queue
is the envelope's signer's (read by parsing the payload, at most 64 KiB: the field is not signed
yet here, so a payload that names none queues as the signer ""), so one signer filling its share
does not turn away another's message; the whole topic is also bounded (SHARED_QUEUES shares), as
an account may name signers it does not hold. The node checks a shared topic's message (envelope,
the signer's enrolled key, the signature) before it asks for room, so the signer a queue is named
by is the one that signed (a QA pass: one operator account naming 8 made-up signers filled the
topic). The signer is known only where the payload is: ``has_room`` is told it by ``payload``;
without it, a shared topic is judged by its whole bound.

Items are ``(kind, topic, payload)``; ``get_nowait`` and ``put`` behave as ``queue.Queue``'s do,
so the tests that reorder what waits use it as they use a queue.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from chain import messages
from peerwatt.bus import TOPIC_ROOT

MAX_PER_TOPIC = 2000
MAX_BYTES_PER_TOPIC = 4 * 1024 * 1024  # an honest message is ~0.5 KB: 2,000 of them are ~1 MB
SHARED_KINDS = ("gov",)  # topics every account of a role writes: one queue per signer
SHARED_QUEUES = 8  # a shared topic holds at most this many signers' shares in all


def is_shared_topic(topic: str) -> bool:
    """Whether ``topic`` is one every account of a role writes (its queues are per signer)."""
    parts = topic.split("/")
    return len(parts) == 3 and parts[0] == TOPIC_ROOT and parts[2] in SHARED_KINDS


def signer_of(payload: bytes) -> str:
    """The envelope's ``signer`` field ("" if the payload is no JSON object naming one)."""
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return ""
    signer = value.get("signer") if isinstance(value, dict) else None
    return signer if isinstance(signer, str) and len(signer) <= 64 else ""


class FairInbox:
    """Per-sender FIFO queues served round-robin (see the module docstring). Thread-safe: the
    bus thread puts, the node's thread gets."""

    def __init__(
        self, max_per_topic: int = MAX_PER_TOPIC, max_bytes_per_topic: int = MAX_BYTES_PER_TOPIC
    ) -> None:
        self.max_per_topic = max_per_topic
        self.max_bytes_per_topic = max_bytes_per_topic
        # queue key: the topic, or (a shared topic) "topic signer"
        self._queues: collections.OrderedDict[str, collections.deque] = collections.OrderedDict()
        self._bytes: collections.Counter[str] = collections.Counter()  # payload bytes waiting per key
        self._shared: collections.Counter[str] = collections.Counter()  # items waiting per shared topic
        self._shared_bytes: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    @staticmethod
    def _key(topic: str, payload: bytes) -> str:
        return f"{topic} {signer_of(payload)}" if is_shared_topic(topic) else topic

    def has_room(self, topic: str, size: int = 0, payload: bytes | None = None) -> bool:
        """Whether a message of ``size`` bytes on ``topic`` may wait: fewer than ``max_per_topic``
        wait in its queue, and its bytes stay within ``max_bytes_per_topic``. On a shared topic its
        queue is its signer's, read from ``payload`` (not given: the topic's whole bound only)."""
        with self._lock:
            if is_shared_topic(topic):
                if self._shared[topic] >= SHARED_QUEUES * self.max_per_topic:
                    return False
                if self._shared_bytes[topic] + size > SHARED_QUEUES * self.max_bytes_per_topic:
                    return False
                if payload is None:
                    return True
            key = topic if payload is None else self._key(topic, payload)
            waiting = self._queues.get(key)
            if waiting is None:
                return True
            return len(waiting) < self.max_per_topic and self._bytes[key] + size <= self.max_bytes_per_topic

    def put(self, item: tuple[str, str, bytes]) -> None:
        """Queue ``item`` behind the others of its sender (no bound: see ``has_room``)."""
        key = self._key(item[1], item[2])
        with self._lock:
            self._queues.setdefault(key, collections.deque()).append(item)
            self._bytes[key] += len(item[2])
            if key != item[1]:
                self._shared[item[1]] += 1
                self._shared_bytes[item[1]] += len(item[2])

    def get_nowait(self) -> tuple[str, str, bytes]:
        """The oldest item of the next sender in turn; ``queue.Empty`` when nothing waits."""
        with self._lock:
            if not self._queues:
                raise queue.Empty
            key, waiting = self._queues.popitem(last=False)
            item = waiting.popleft()
            if waiting:
                self._queues[key] = waiting  # to the back of the turn
                self._bytes[key] -= len(item[2])
            else:
                del self._bytes[key]
            if key != item[1]:
                for counter, less in ((self._shared, 1), (self._shared_bytes, len(item[2]))):
                    counter[item[1]] -= less
                    if counter[item[1]] <= 0:
                        del counter[item[1]]
            return item

    def qsize(self) -> int:
        with self._lock:
            return sum(len(waiting) for waiting in self._queues.values())


# -- the consensus inbox --------------------------------------------------------------------------
#
# Proposals (the blocks topic) and votes (each validator's seals topic) wait in one share per
# sender, served in turn like the transactions above. A QA pass: one validator's flood of the
# consensus topics (40 signed proposals of 8 MB; 8 MB of junk 3 times a second on its own seals
# topic; one valid seal replayed 10,000 times a second) went into one unbounded queue, first in
# first out: every honest node froze for 30 to 100 s behind it and grew from 46 to 626 MB.
#
# A share holds a few rounds of an honest validator's messages with room to spare: per round a
# validator sends a prevote and a seal on its own topic, and relays there at most the prevotes
# behind its lock and the seals of a block a peer lacks (one per validator each), every message
# of the height again every 5 s (copies of one waiting or handled are dropped before they count);
# a proposer sends one block a round it proposes in. An honest vote is ~350 bytes; a block at most
# MAX_BLOCK_BYTES, which the builder is sized to (peerwatt/node/runtime.py, first_that_fit).
VOTE_SHARE = (1_000, 1024 * 1024)  # messages, bytes waiting per seals topic
BLOCK_SHARE = (64, 2 * messages.MAX_BLOCK_BYTES)  # ... per validator on the blocks topic
# a share that drops nothing for this long ends its sender's flood episode (logged once each)
FLOOD_QUIET_S = 60.0


@dataclass
class Flood:
    """A sender whose share was full: when its episode began, its last drop, drops since."""

    began: float
    last: float
    dropped: int = 0


class ConsensusInbox:
    """Consensus messages in per-sender shares served in turn, each bounded (VOTE_SHARE,
    BLOCK_SHARE), with exact copies of a waiting message dropped (a look-up). Items are ``(kind,
    sender, payload)``, kind ``block`` or ``vote``; ``sender`` names the share: the node decides it
    (a validator's seals topic, or a block's verified signer) and ``offer`` enforces its bound.
    ``put`` (no bound) and ``get_nowait`` behave as ``queue.Queue``'s do: the node puts back the
    messages it parked for a later height, which Parked bounds already. Thread-safe: the bus thread
    offers, the node's thread gets; ``clock`` times the flood episodes (the node's monotonic)."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, shares: dict[str, tuple[int, int]] | None = None
    ) -> None:
        self.limits = {"block": BLOCK_SHARE, "vote": VOTE_SHARE} | (shares or {})
        self._clock = clock
        self._queues: collections.OrderedDict[tuple[str, str], collections.deque] = collections.OrderedDict()
        self._bytes: collections.Counter[tuple[str, str]] = collections.Counter()
        self._waiting: set[bytes] = set()  # digests of the offered items waiting
        self._floods: dict[tuple[str, str], Flood] = {}
        self._lock = threading.Lock()

    def has_room(self, kind: str, sender: str, size: int) -> bool:
        """Whether ``sender``'s share of ``kind`` takes one more message of ``size`` bytes."""
        with self._lock:
            return self._room(kind, sender, size)

    def _room(self, kind: str, sender: str, size: int) -> bool:
        count, max_bytes = self.limits[kind]
        waiting = self._queues.get((kind, sender))
        return waiting is None or (len(waiting) < count and self._bytes[(kind, sender)] + size <= max_bytes)

    def offer(self, item: tuple[str, str, bytes], digest: bytes) -> str:
        """Queue ``item`` (``digest``: its payload's SHA-256) if its share has room: ``queued``; the
        same bytes wait already: ``copy`` (dropped); its share is full: ``full``, or ``flood`` when
        that begins its sender's flood episode (dropped, and recorded for ``flooding``)."""
        kind, sender, payload = item
        with self._lock:
            if digest in self._waiting:
                return "copy"
            if not self._room(kind, sender, len(payload)):
                return "flood" if self._dropped(kind, sender) else "full"
            self._waiting.add(digest)
            self._append((kind, sender), (item, digest))
            return "queued"

    def drop(self, kind: str, sender: str) -> bool:
        """Record a message of ``sender`` dropped because its share is full (``has_room`` said no);
        True if that begins its flood episode."""
        with self._lock:
            return self._dropped(kind, sender)

    def _dropped(self, kind: str, sender: str) -> bool:
        now = self._clock()
        flood = self._floods.get((kind, sender))
        new = flood is None or now - flood.last >= FLOOD_QUIET_S
        if new:
            flood = self._floods[(kind, sender)] = Flood(began=now, last=now)
        assert flood is not None
        flood.last = now
        flood.dropped += 1
        return new

    def flooding(self) -> dict[tuple[str, str], int]:
        """The senders flooding now (a message dropped less than FLOOD_QUIET_S ago): (kind,
        sender) -> messages dropped in that episode so far."""
        with self._lock:
            now = self._clock()
            for share in [s for s, f in self._floods.items() if now - f.last >= FLOOD_QUIET_S]:
                del self._floods[share]  # an episode that ended (the dict stays small)
            return {share: flood.dropped for share, flood in self._floods.items()}

    def _append(self, share: tuple[str, str], entry: tuple[tuple[str, str, bytes], bytes | None]) -> None:
        self._queues.setdefault(share, collections.deque()).append(entry)
        self._bytes[share] += len(entry[0][2])

    def put(self, item: tuple[str, str, bytes]) -> None:
        """Queue ``item`` in its share without a bound (see the class docstring)."""
        with self._lock:
            self._append((item[0], item[1]), (item, None))

    def get_nowait(self) -> tuple[str, str, bytes]:
        """The oldest item of the next share in turn; ``queue.Empty`` when nothing waits."""
        with self._lock:
            if not self._queues:
                raise queue.Empty
            share, waiting = self._queues.popitem(last=False)
            item, digest = waiting.popleft()
            if waiting:
                self._queues[share] = waiting  # to the back of the turn
                self._bytes[share] -= len(item[2])
            else:
                del self._bytes[share]
            if digest is not None:
                self._waiting.discard(digest)
            return item

    def qsize(self) -> int:
        with self._lock:
            return sum(len(waiting) for waiting in self._queues.values())
