"""The node's inbox of transactions: one bounded queue per sender, served in turn.

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

import orjson

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
