"""The node's inbox of transactions: one bounded queue per topic, served in turn.

A meter's broker account may publish only on its own orders and readings topics (the ACL), so a
topic stands for one account. Served first-in first-out across all topics, one member's flood of
signed messages the ledger refuses made every other household's orders wait behind it until they
missed their gate (a QA pass: 60,000 refused orders in a minute held the nodes for 125 s). Here
each topic waits in its own queue, the queues are served in turn, and a topic with
``max_per_topic`` messages or ``max_bytes_per_topic`` bytes waiting takes no more until it drains
(the sender's outbox sends them again; a flood is dropped where it costs nothing). The byte bound
keeps junk near the 64 KiB limit (11 ms a message to refuse) to 64 messages a topic, where the
count alone let one household queue 2 x 2,000 of them (a QA pass: blocks stopped for 67 s).

Items are ``(kind, topic, payload)``; ``get_nowait`` and ``put`` behave as ``queue.Queue``'s do,
so the tests that reorder what waits use it as they use a queue.
"""

from __future__ import annotations

import collections
import queue
import threading

MAX_PER_TOPIC = 2000
MAX_BYTES_PER_TOPIC = 4 * 1024 * 1024  # an honest message is ~0.5 KB: 2,000 of them are ~1 MB


class FairInbox:
    """Per-topic FIFO queues served round-robin (see the module docstring). Thread-safe: the
    bus thread puts, the node's thread gets."""

    def __init__(
        self, max_per_topic: int = MAX_PER_TOPIC, max_bytes_per_topic: int = MAX_BYTES_PER_TOPIC
    ) -> None:
        self.max_per_topic = max_per_topic
        self.max_bytes_per_topic = max_bytes_per_topic
        self._queues: collections.OrderedDict[str, collections.deque] = collections.OrderedDict()
        self._bytes: collections.Counter[str] = collections.Counter()  # payload bytes waiting per topic
        self._lock = threading.Lock()

    def has_room(self, topic: str, size: int = 0) -> bool:
        """Whether a message of ``size`` bytes on ``topic`` may wait (fewer than ``max_per_topic``
        wait on it, and its bytes stay within ``max_bytes_per_topic``)."""
        with self._lock:
            waiting = self._queues.get(topic)
            if waiting is None:
                return True
            return len(waiting) < self.max_per_topic and self._bytes[topic] + size <= self.max_bytes_per_topic

    def put(self, item: tuple[str, str, bytes]) -> None:
        """Queue ``item`` behind the others of its topic (no bound: see ``has_room``)."""
        with self._lock:
            self._queues.setdefault(item[1], collections.deque()).append(item)
            self._bytes[item[1]] += len(item[2])

    def get_nowait(self) -> tuple[str, str, bytes]:
        """The oldest item of the next topic in turn; ``queue.Empty`` when nothing waits."""
        with self._lock:
            if not self._queues:
                raise queue.Empty
            topic, waiting = self._queues.popitem(last=False)
            item = waiting.popleft()
            if waiting:
                self._queues[topic] = waiting  # to the back of the turn
                self._bytes[topic] -= len(item[2])
            else:
                del self._bytes[topic]
            return item

    def qsize(self) -> int:
        with self._lock:
            return sum(len(waiting) for waiting in self._queues.values())
