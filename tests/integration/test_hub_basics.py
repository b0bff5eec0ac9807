"""The hub end to end over real sockets with Autobahn clients: welcome, relay, acks, errors."""

from __future__ import annotations

import pytest_twisted

from vibews.testing import RunningServer


@pytest_twisted.ensureDeferred
async def test_agent_status_reaches_dashboard_after_ack(server: RunningServer) -> None:
    """An agent_status is acked with a seq and relayed to a dashboard with from and seq stamped."""
    dashboard = await server.dashboard()
    assert dashboard.welcome["payload"]["role"] == "dashboard"
    agent = await server.agent()
    presence = await dashboard.next_message()
    assert presence["type"] == "presence"
    assert presence["payload"]["online"] is True
    reply = await agent.request(
        {"type": "agent_status", "id": "s1", "from": "forged", "payload": {"state": "working"}}
    )
    assert reply == {"type": "ack", "id": "s1", "seq": presence["seq"] + 1}
    relayed = await dashboard.next_message()
    assert relayed["type"] == "agent_status"
    assert relayed["from"] == "agent"
    assert relayed["seq"] == reply["seq"]
    assert relayed["payload"] == {"state": "working"}
