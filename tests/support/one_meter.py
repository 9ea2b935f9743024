"""A market community of one member with one meter (serial SN1) on an in-memory broker, and a
listener that keeps every message published in it (and can publish, as a node): what the agent
tests that watch one agent's orders and readings start from."""

from __future__ import annotations

from typing import Any

from peerwatt.bus import MemoryBroker, MemoryBus, Topics
from tests.support.localnet import make_community


def one_meter_market(
    params: dict[str, Any], genesis_time: int
) -> tuple[Any, MemoryBroker, list[tuple[str, bytes]], MemoryBus]:
    """(the community, its broker, every (topic, payload) published on it from now on, the
    listener's bus)."""
    c = make_community(
        validators=1, members=1, meters_per_member=1, app="market", time=genesis_time,
        app_params=params, serials=["SN1"],
    )  # fmt: skip
    broker = MemoryBroker()
    seen: list[tuple[str, bytes]] = []
    listener = MemoryBus(broker, "node")
    listener.subscribe(Topics.pattern(c.community), lambda t, p: seen.append((t, p)))
    listener.start()
    return c, broker, seen, listener
