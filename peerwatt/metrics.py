"""Prometheus metrics for nodes and agents, read from their status at scrape time.

One collector per process turns ``status()`` into metrics, so no counter is scattered through the
code and the numbers are the ones `node status` / `agent status` show. Nodes serve them on their
HTTP API at ``/metrics``; agents on ``metrics_port`` when configured (docs/operations.md), with
``serve_metrics``: a bounded server (prometheus_client's ``start_http_server`` held a thread for
every connection that never finished its request, found in a QA pass: 300 of them, still there
20 s later). At most ``max_connections`` are served at once (any more is answered 503 and closed),
a connection's request must arrive in full within ``read_deadline_s`` however slowly it trickles,
and a reply the client does not take within WRITE_TIMEOUT_S is dropped. Such trouble is logged
in one line per episode (until every connection has closed), never with a traceback.

``?name[]=NAME`` (repeatable) restricts the answer to those metrics, by a family's name or a
sample's (``peerwatt_agent_meter_read_errors`` or ``..._total``).
"""

from __future__ import annotations

import gzip
import logging
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder, gzip_accepted

from peerwatt.http_bounds import BoundedRequestHandler, answer_busy

log = logging.getLogger("peerwatt.metrics")

READ_DEADLINE_S = 5.0  # for the whole request line and headers of a connection
MAX_CONNECTIONS = 16  # served at once, each on its own thread (Prometheus scrapes one at a time)
WRITE_TIMEOUT_S = 10.0  # for the reply (a few kB)


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
    yield _gauge("peerwatt_agent_p2p_sold_wh", "Energy sold to neighbours (settled)", totals["sold_wh"])
    yield _gauge("peerwatt_agent_p2p_bought_wh", "Energy bought (settled)", totals["bought_wh"])
    yield _gauge(
        "peerwatt_agent_p2p_earnings_micro",
        "P2P earnings minus costs as settled, micro-units",
        totals["earnings"],
    )
    for side in ("sold", "bought"):
        yield _gauge(
            f"peerwatt_agent_p2p_{side}_pending_wh",
            f"Energy {side} in trades the ledger has not settled yet (no money moved)",
            totals[f"{side}_pending_wh"],
        )


class _StatusRegistry(CollectorRegistry):
    """A registry whose ``name[]`` restriction works for a collector that cannot describe its
    metrics before ``status()`` is called (prometheus_client's found no name in it, so a QA pass
    got an empty answer to ``?name[]=peerwatt_agent_power_watts``)."""

    def restricted_registry(self, names: Iterable[str]) -> _Restricted:  # type: ignore[override]
        return _Restricted(set(names), self)


class _Restricted:
    """The families of ``registry`` named in ``names``, and the samples so named of the others."""

    def __init__(self, names: set[str], registry: CollectorRegistry) -> None:
        self.names = names
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            if family.name in self.names:
                yield family
                continue
            samples = [sample for sample in family.samples if sample.name in self.names]
            if samples:
                restricted = Metric(family.name, family.documentation, family.type, family.unit)
                restricted.samples = samples
                yield restricted


def registry_for(kind: str, status: Callable[[], dict[str, Any]]) -> CollectorRegistry:
    """A registry holding only this process's status collector (``status()`` is called at each
    scrape, not when registering: an agent's is not ready then)."""
    registry = _StatusRegistry(auto_describe=False)
    registry.register(StatusCollector(kind, status))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The Prometheus text format of a registry."""
    return generate_latest(registry)


def serve_metrics(
    port: int,
    addr: str,
    registry: CollectorRegistry,
    *,
    read_deadline_s: float = READ_DEADLINE_S,
    max_connections: int = MAX_CONNECTIONS,
) -> MetricsServer:
    """Serve ``registry``'s metrics on ``addr``:``port`` (every path but /favicon.ico, as
    prometheus_client's ``start_http_server(port, addr=, registry=)`` does, which this replaces)
    from a daemon thread, bounded as the module docstring says. ``OSError`` when the address
    cannot be bound. ``stop()`` ends it."""
    server = MetricsServer((addr, port), registry, read_deadline_s, max_connections)
    server.start()
    return server


class MetricsServer(ThreadingHTTPServer):
    """See ``serve_metrics``."""

    daemon_threads = True
    # a burst of connections is accepted and answered (served or 503) rather than left to SYN retries
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        read_deadline_s: float,
        max_connections: int,
    ) -> None:
        self.registry = registry
        self.read_deadline_s = read_deadline_s
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._open = 0  # connections being served
        self._in_episode = False  # trouble was logged, and not every connection has closed since
        self._failing: str | None = None  # why collecting failed, logged, until it works again
        super().__init__(address, _MetricsHandler)
        self._thread = threading.Thread(target=self.serve_forever, name="metrics-http", daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.shutdown()
        self.server_close()

    def trouble(self, what: str) -> None:
        """Log ``what`` unless this episode of trouble was logged already."""
        with self._lock:
            if self._in_episode:
                return
            self._in_episode = True
        log.warning(
            "metrics server on %s: %s (not logged again until every connection has closed)",
            self.address,
            what,
        )

    def collected(self, failure: str | None) -> None:
        """Log a failure to collect the metrics once, until they are collected again."""
        with self._lock:
            logged, self._failing = self._failing, failure
        if failure is not None and failure != logged:
            log.warning(
                "metrics server on %s: the metrics cannot be collected: %s (scrapes are answered 500)",
                self.address,
                failure,
            )

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.trouble(
                f"more than {self.max_connections} connections at once; the others are answered "
                "503 (a scraper gone wrong, or a local program holding connections open)"
            )
            answer_busy(request, _BUSY)
            self.shutdown_request(request)
            return
        with self._lock:
            self._open += 1
        try:
            super().process_request(request, client_address)  # starts the connection's thread
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._lock:
            self._open -= 1
            if self._open == 0:
                self._in_episode = False
        self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("a metrics client went away: %s", exc)
        else:
            self.trouble(f"a request failed: {type(exc).__name__}: {exc}")


class _MetricsHandler(BoundedRequestHandler):
    server: MetricsServer
    timeout = WRITE_TIMEOUT_S  # the socket's; reading is bounded by the server's deadline

    @property
    def read_deadline_s(self) -> float:  # type: ignore[override]
        return self.server.read_deadline_s

    def request_late(self) -> None:
        self.server.trouble(
            f"a client sent no complete request within {self.server.read_deadline_s:g} s; such "
            "connections are closed"
        )

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlparse(self.path)
        if url.path == "/favicon.ico":
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        registry: Any = self.server.registry
        names = parse_qs(url.query).get("name[]")
        if names:
            registry = registry.restricted_registry(names)
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        try:
            data = encoder(registry)
        except Exception as exc:  # a status() that fails: the scraper is told, the log has one line
            self.server.collected(f"{type(exc).__name__}: {exc}")
            self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR, "the metrics cannot be collected")
            return
        self.server.collected(None)
        self.send_response(HTTPStatus.OK)
        if gzip_accepted(self.headers.get("Accept-Encoding", "")):
            data = gzip.compress(data)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


_BUSY_BODY = b"too many connections, try again later\n"
_BUSY = b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (
    len(_BUSY_BODY),
    _BUSY_BODY,
)
