"""Prometheus metrics for ``GET /metrics``, on a registry of our own (so two servers embedded in one
process do not collide, and nothing touches prometheus_client's global registry).

Label children are created once up front: the hot path increments a pre-bound child and never looks a
label up. ``prometheus_client.twisted`` is not used: it imports the reactor when imported.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.web.http import Request
from twisted.web.resource import Resource

from vibews import protocol
from vibews.hub import HubObserver

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_ROLES = ("agent", "dashboard")
_ERROR_CODES = (
    protocol.INVALID_JSON,
    protocol.INVALID_MESSAGE,
    protocol.UNKNOWN_TYPE,
    protocol.FORBIDDEN,
    protocol.UNKNOWN_QUESTION,
    protocol.ALREADY_ANSWERED,
    protocol.CONFLICT,
    protocol.RATE_LIMITED,
    protocol.UNAVAILABLE,
    protocol.INTERNAL_ERROR,
)


class Metrics(HubObserver):
    """The hub's observer hooks and the store's commit hook, as Prometheus instruments."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        connections = Gauge(
            "vibews_connections", "Open WebSocket connections.", ["role"], registry=self.registry
        )
        self._connections = {role: connections.labels(role) for role in _ROLES}
        received = Counter(
            "vibews_messages_received",
            "Client messages that passed the checks, by type.",
            ["type"],
            registry=self.registry,
        )
        self._received = {kind: received.labels(kind) for kind in sorted(protocol.CLIENT_TYPES)}
        errors = Counter(
            "vibews_errors",
            "Refused client messages, by error code.",
            ["code"],
            registry=self.registry,
        )
        self._errors = {code: errors.labels(code) for code in _ERROR_CODES}
        self._deliveries = Counter(
            "vibews_deliveries",
            "Stored messages sent to clients (one per recipient).",
            registry=self.registry,
        )
        self._ack_latency = Histogram(
            "vibews_ack_latency_seconds",
            "From receiving a data message to sending its ack (includes the commit).",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._commit_latency = Histogram(
            "vibews_store_commit_seconds",
            "Time to commit one batch to the store.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._batch_size = Histogram(
            "vibews_store_batch_size",
            "Units of work per commit (messages that shared one fsync).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=self.registry,
        )
        self._seq = Gauge("vibews_seq", "The newest stored seq.", registry=self.registry)

    def track_head(self, head: Callable[[], int]) -> None:
        self._seq.set_function(lambda: float(head()))

    # HubObserver
    def connection_opened(self, role: str) -> None:
        self._connections[role].inc()

    def connection_closed(self, role: str) -> None:
        self._connections[role].dec()

    def message_received(self, message_type: str) -> None:
        self._received[message_type].inc()

    def message_refused(self, code: str) -> None:
        self._errors[code].inc()

    def delivered(self, recipients: int) -> None:
        self._deliveries.inc(recipients)

    def acked(self, seconds: float) -> None:
        self._ack_latency.observe(seconds)

    # store hook
    def committed(self, seconds: float, units: int) -> None:
        self._commit_latency.observe(seconds)
        self._batch_size.observe(units)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsResource(Resource):
    """``GET /metrics`` in the Prometheus text format."""

    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self._metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        if getattr(request, "postpath", []) not in ([], [b""]):
            request.setResponseCode(404)
            return b"not found\n"
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return self._metrics.render()
