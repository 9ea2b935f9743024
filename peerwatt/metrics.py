"""Prometheus metrics for nodes and agents, read from their status at scrape time.

One collector per process turns ``status()`` into metrics, so no counter is scattered through the
code and the numbers are the ones `node status` / `agent status` show. Nodes serve them on their
HTTP API at ``/metrics``; agents on ``metrics_port`` when configured (docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class StatusCollector:
    """A Prometheus collector over a ``status()`` callable (node or agent)."""

    def __init__(self, kind: str, status: Callable[[], dict[str, Any]]) -> None:
        self.kind = kind
        self.status = status

    def collect(self) -> Iterator[Any]:
        s = self.status()
        if self.kind == "node":
            yield from _node_metrics(s)
        else:
            yield from _agent_metrics(s)


def _gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
    metric = GaugeMetricFamily(name, doc)
    if value is not None:
        metric.add_metric([], float(value))
    return metric


def _node_metrics(s: dict[str, Any]) -> Iterator[Any]:
    yield _gauge("peerwatt_node_height", "Height of the last final block", s["height"])
    yield _gauge(
        "peerwatt_node_last_final_block_age_seconds",
        "Seconds since this node stored a final block",
        s["last_final_block_age_s"],
    )
    yield _gauge(
        "peerwatt_node_broker_connected", "1 while connected to the MQTT broker", int(s["broker_connected"])
    )
    yield _gauge(
        "peerwatt_node_pending_transactions", "Checked transactions waiting for a block", s["pending"]
    )
    yield _gauge("peerwatt_node_mempool", "Durable mempool depth (sequencer)", s["mempool"])
    yield _gauge(
        "peerwatt_node_store_error",
        "1 while blocks cannot be stored (disk full?)",
        int(bool(s["store_error"])),
    )
    stalled = s.get("stalled")
    yield _gauge(
        "peerwatt_node_stalled", "1 while a known next block lacks its quorum of seals", int(bool(stalled))
    )
    missing = GaugeMetricFamily(
        "peerwatt_node_stall_missing_validator",
        "1 for each validator whose seal a stalled chain lacks",
        labels=["validator"],
    )
    for validator in (stalled or {}).get("missing", []):
        missing.add_metric([validator], 1.0)
    yield missing
    accepted = CounterMetricFamily("peerwatt_node_accepted", "Transactions accepted by the sequencer")
    accepted.add_metric([], s["accepted"])
    yield accepted
    rejected = CounterMetricFamily("peerwatt_node_rejected", "Messages refused, by reason", labels=["reason"])
    for reason, count in sorted(s["rejected"].items()):
        rejected.add_metric([reason], count)
    yield rejected
    quarantined = CounterMetricFamily(
        "peerwatt_node_quarantined", "Messages set aside because handling them failed unexpectedly"
    )
    quarantined.add_metric([], s.get("quarantined", 0))
    yield quarantined
    committed = CounterMetricFamily("peerwatt_node_blocks_committed", "Final blocks stored since start")
    committed.add_metric([], s["blocks_committed"])
    yield committed
    refused = CounterMetricFamily(
        "peerwatt_node_blocks_refused", "Blocks this node refused, by reason", labels=["reason"]
    )
    for reason, count in sorted(s["blocks_refused"].items()):
        refused.add_metric([reason], count)
    yield refused
    failovers = CounterMetricFamily(
        "peerwatt_node_failovers", "Rounds above 0 entered: a proposer's block was not final in time"
    )
    failovers.add_metric([], s.get("failovers", 0))
    yield failovers
    equivocations = CounterMetricFamily(
        "peerwatt_node_equivocations", "Two different messages of one kind in one round by one validator"
    )
    equivocations.add_metric([], s.get("equivocations", 0))
    yield equivocations
    if s.get("round") is not None:
        yield _gauge("peerwatt_node_round", "Consensus round of the height in progress", s["round"])


def _agent_metrics(s: dict[str, Any]) -> Iterator[Any]:
    yield _gauge(
        "peerwatt_agent_outbox_depth", "Signed messages not yet acknowledged by the broker", s["outbox"]
    )
    yield _gauge("peerwatt_agent_meter_ok", "1 while the meter answers", int(s["meter_ok"]))
    yield _gauge(
        "peerwatt_agent_broker_connected", "1 while connected to the MQTT broker", int(s["broker_connected"])
    )
    yield _gauge(
        "peerwatt_agent_state_error",
        "1 while the agent's state cannot be written",
        int(bool(s["state_error"])),
    )
    yield _gauge("peerwatt_agent_power_watts", "Grid power (> 0 import)", s["power_w"])
    errors = CounterMetricFamily("peerwatt_agent_meter_read_errors", "Failed meter reads since start")
    errors.add_metric([], s["meter_read_errors"])
    yield errors
    totals = s["totals"]
    yield _gauge(
        "peerwatt_agent_p2p_sold_wh", "Energy sold to neighbours (settled where settled)", totals["sold_wh"]
    )
    yield _gauge("peerwatt_agent_p2p_bought_wh", "Energy bought from neighbours", totals["bought_wh"])
    yield _gauge(
        "peerwatt_agent_p2p_earnings_micro", "P2P earnings minus costs, micro-units", totals["earnings"]
    )


def registry_for(kind: str, status: Callable[[], dict[str, Any]]) -> CollectorRegistry:
    """A registry holding only this process's status collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(kind, status))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The Prometheus text format of a registry."""
    return generate_latest(registry)
