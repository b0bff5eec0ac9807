"""``GET /metrics`` in the Prometheus text format, parsed with prometheus_client's own parser."""

from __future__ import annotations

import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families

from vibews.testing import RunningServer, raw_exchange


async def _scrape(server: RunningServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await raw_exchange(
        server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"text/plain" in head.lower()
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


@pytest_twisted.ensureDeferred
async def test_metrics_count_connections_messages_errors_and_latency(
    server: RunningServer,
) -> None:
    """Connections by role, messages by type, errors by code, deliveries, the newest seq and the
    ack and commit latency histograms are exposed and move with traffic."""
    dashboard = await server.dashboard()
    agent = await server.agent()
    reply = await agent.request({"type": "agent_status", "id": "s", "payload": {"state": "s"}})
    await agent.request({"type": "dance", "id": "d"})
    await dashboard.next_of("agent_status")
    samples = await _scrape(server)
    assert samples[("vibews_connections", (("role", "agent"),))] == 1
    assert samples[("vibews_connections", (("role", "dashboard"),))] == 1
    assert samples[("vibews_messages_received_total", (("type", "agent_status"),))] == 1
    assert samples[("vibews_errors_total", (("code", "unknown_type"),))] == 1
    assert samples[("vibews_deliveries_total", ())] >= 2  # presence and status, to the dashboard
    assert samples[("vibews_seq", ())] == reply["seq"]
    assert samples[("vibews_ack_latency_seconds_count", ())] == 1
    assert samples[("vibews_store_commit_seconds_count", ())] >= 2
