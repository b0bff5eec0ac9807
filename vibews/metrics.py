"""Prometheus metrics for ``GET /metrics``, on a registry of our own (so two servers embedded in one
process do not collide, and nothing touches prometheus_client's global registry).

Label children are created once up front: the hot path increments a pre-bound child and never looks a
label up. ``prometheus_client.twisted`` is not used: it imports the reactor when imported.
"""

from __future__ import annotations

import bisect
import itertools
import math
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString
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


class _PerMessage(Collector):
    """The instruments touched for every message, as plain numbers read when a scrape collects.

    A prometheus_client Counter or Histogram takes a lock per ``inc`` (two for an ``observe``);
    with four such calls per message that was 5% of the message path's profile. These numbers are
    only changed and read on the reactor thread (the hub's callbacks, and ``/metrics`` served by
    twisted.web), so they need no lock; a scrape still sees every value as of that moment.
    """

    def __init__(self, latency_buckets: tuple[float, ...]) -> None:
        self._created = time.time()
        self.received = dict.fromkeys(sorted(protocol.CLIENT_TYPES), 0)
        self.deliveries = 0
        self._bounds = latency_buckets
        self._le = [floatToGoString(bound) for bound in (*latency_buckets, math.inf)]
        self._ack_counts = [0] * (len(latency_buckets) + 1)
        self._ack_sum = 0.0

    def observe_ack(self, seconds: float) -> None:
        # The first bucket whose bound is >= seconds, as Histogram.observe picks it.
        self._ack_counts[bisect.bisect_left(self._bounds, seconds)] += 1
        self._ack_sum += seconds

    def collect(self) -> Iterator[Metric]:
        received = CounterMetricFamily(
            "vibews_messages_received",
            "Client messages that passed the checks, by type.",
            labels=["type"],
        )
        for kind, count in self.received.items():
            received.add_metric([kind], count, created=self._created)
        yield received
        deliveries = CounterMetricFamily(
            "vibews_deliveries", "Stored messages sent to clients (one per recipient)."
        )
        deliveries.add_metric([], self.deliveries, created=self._created)
        yield deliveries
        ack_latency = HistogramMetricFamily(
            "vibews_ack_latency_seconds",
            "From receiving a data message to sending its ack (includes the commit).",
        )
        cumulative = itertools.accumulate(self._ack_counts)
        ack_latency.add_metric([], list(zip(self._le, cumulative, strict=True)), self._ack_sum)
        # The ``_created`` series prometheus_client's Histogram has (add_metric has no argument).
        ack_latency.samples.append(Sample("vibews_ack_latency_seconds_created", {}, self._created))
        yield ack_latency


class _ClusterCommits(Collector):
    def __init__(self, moved: Callable[[], int], conflicts: Callable[[], int]) -> None:
        self._moved = moved
        self._conflicts = conflicts

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "vibews_redis_commits_moved",
            "Commits whose seqs the commit script moved, because other nodes appended meanwhile.",
            value=self._moved(),
        )
        yield CounterMetricFamily(
            "vibews_redis_commits_conflicts",
            "Batches run again because another node wrote what they had read.",
            value=self._conflicts(),
        )


class Metrics(HubObserver):
    """The hub's observer hooks and the store's commit hook, as Prometheus instruments."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        connections = Gauge(
            "vibews_connections", "Open WebSocket connections.", ["role"], registry=self.registry
        )
        self._connections = {role: connections.labels(role) for role in _ROLES}
        self._per_message = _PerMessage(_LATENCY_BUCKETS)
        self.registry.register(self._per_message)
        errors = Counter(
            "vibews_errors",
            "Refused client messages, by error code.",
            ["code"],
            registry=self.registry,
        )
        self._errors = {code: errors.labels(code) for code in _ERROR_CODES}
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

    def track_cluster(self, moved: Callable[[], int], conflicts: Callable[[], int]) -> None:
        """With ``--redis``: how often other nodes' writes touched this node's commits (read at
        scrape time, like the per-message counters, so commits pay nothing for it)."""
        self.registry.register(_ClusterCommits(moved, conflicts))

    # HubObserver
    def connection_opened(self, role: str) -> None:
        self._connections[role].inc()

    def connection_closed(self, role: str) -> None:
        self._connections[role].dec()

    def message_received(self, message_type: str) -> None:
        self._per_message.received[message_type] += 1

    def message_refused(self, code: str) -> None:
        self._errors[code].inc()

    def delivered(self, recipients: int) -> None:
        self._per_message.deliveries += recipients

    def acked(self, seconds: float) -> None:
        self._per_message.observe_ack(seconds)

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
