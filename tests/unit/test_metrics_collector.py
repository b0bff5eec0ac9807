"""The per-message instruments are plain numbers turned into metric families at scrape time; what a
scrape shows must be what prometheus_client's own Counter and Histogram show for the same calls."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from vibews.metrics import _LATENCY_BUCKETS, Metrics

LATENCIES = (0.0, 0.0002, 0.0005, 0.00050001, 0.001, 0.004, 0.05, 2.5, 2.6, 30.0)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by name and labels; a ``_created`` one as 1 (it is a time, here or there)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): (
            1.0 if sample.name.endswith("_created") else sample.value
        )
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_per_message_instruments_match_prometheus_client() -> None:
    metrics = Metrics()
    reference = CollectorRegistry()
    received = Counter("vibews_messages_received", "", ["type"], registry=reference)
    deliveries = Counter("vibews_deliveries", "", registry=reference)
    latency = Histogram(
        "vibews_ack_latency_seconds", "", buckets=_LATENCY_BUCKETS, registry=reference
    )
    for kind in ("agent_status", "agent_status", "ack", "question"):
        metrics.message_received(kind)
        received.labels(kind).inc()
    for recipients in (0, 1, 100):
        metrics.delivered(recipients)
        deliveries.inc(recipients)
    for seconds in LATENCIES:
        metrics.acked(seconds)
        latency.observe(seconds)

    ours = samples(metrics.render().decode())
    theirs = samples(generate_latest(reference).decode())
    for key, value in theirs.items():
        if key[1] and key[0].startswith("vibews_messages_received") and key not in ours:
            continue  # prometheus_client only shows labels it was given; we show every type
        assert ours[key] == value, key
    assert ours[("vibews_messages_received_total", (("type", "resume"),))] == 0
    assert ours[("vibews_ack_latency_seconds_count", ())] == len(LATENCIES)
