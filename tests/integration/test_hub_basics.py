"""The hub end to end over real sockets with Autobahn clients: welcome, routing, acks, seq, dedup."""

from __future__ import annotations

import time
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from vibews.testing import RunningServer


async def _online(server: RunningServer) -> tuple[Any, Any]:
    """A dashboard, then an agent; returns both with the agent's presence consumed."""
    dashboard = await server.dashboard()
    agent = await server.agent()
    presence = await dashboard.next_message()
    assert presence["type"] == "presence" and presence["payload"]["online"] is True
    return dashboard, agent


@pytest_twisted.ensureDeferred
async def test_agent_status_reaches_dashboard_after_ack(server: RunningServer) -> None:
    """An agent_status is acked with a seq and relayed with ``from`` and ``seq`` stamped by the
    server (a forged ``from`` and ``seq`` are ignored; unknown top-level fields are dropped)."""
    dashboard, agent = await _online(server)
    reply = await agent.request(
        {
            "type": "agent_status",
            "id": "s1",
            "from": "forged",
            "seq": 999,
            "extra": 1,
            "payload": {"state": "working", "detail": "kept"},
        }
    )
    assert reply["type"] == "ack" and reply["id"] == "s1"
    relayed = await dashboard.next_message()
    assert relayed == {
        "type": "agent_status",
        "id": "s1",
        "timestamp": relayed["timestamp"],
        "from": "agent",
        "seq": reply["seq"],
        "payload": {"state": "working", "detail": "kept"},
    }


@pytest_twisted.ensureDeferred
async def test_welcome_fields(server: RunningServer) -> None:
    """``welcome`` names the client, its role, the server and protocol, the newest seq, the
    heartbeat and the epoch; agents get no snapshot, dashboards do."""
    agent = await server.agent()
    payload = agent.welcome["payload"]
    assert payload["name"] == "agent" and payload["role"] == "agent"
    assert payload["server"].startswith("vibews/")
    assert payload["protocol"] == 1
    assert payload["heartbeat"] == 20.0
    assert isinstance(payload["connection"], str) and payload["connection"]
    assert isinstance(payload["epoch"], str) and payload["epoch"]
    assert "snapshot" not in payload
    # The agent's presence takes the next seq; its commit may still be in flight in the store's
    # worker thread, and a welcome names the newest committed seq: wait for it.
    deadline = time.monotonic() + 10
    while server.service.store.head() < payload["seq"] + 1 and time.monotonic() < deadline:
        await deferLater(reactor, 0.01, lambda: None)
    dashboard = await server.dashboard()
    assert dashboard.welcome["payload"]["seq"] == payload["seq"] + 1  # the agent's presence
    assert dashboard.selected_protocol == "vibews.v1"


@pytest_twisted.ensureDeferred
async def test_snapshot_shows_agents_statuses_tasks_and_open_questions(
    server: RunningServer,
) -> None:
    """A dashboard's snapshot lists every agent of the tokens file (even never seen), each agent's
    last status and presence, the last update of every task and the open questions as relayed."""
    server.add_token("idle-bot", "agent")
    _dashboard, agent = await _online(server)
    await agent.request({"type": "agent_status", "id": "a", "payload": {"state": "one"}})
    await agent.request({"type": "agent_status", "id": "b", "payload": {"state": "two"}})
    await agent.request(
        {"type": "task_update", "id": "t", "payload": {"task_id": "T1", "status": "running"}}
    )
    await agent.request(
        {"type": "task_update", "id": "t2", "payload": {"task_id": "T1", "status": "done"}}
    )
    asked = await agent.request({"type": "question", "id": "q1", "payload": {"text": "Ship?"}})
    late = await server.dashboard()
    snapshot = late.welcome["payload"]["snapshot"]
    assert late.welcome["payload"]["seq"] == asked["seq"]
    assert snapshot["agents"]["agent"]["online"] is True
    assert snapshot["agents"]["agent"]["status"] == {"state": "two"}
    assert snapshot["agents"]["idle-bot"] == {"online": False, "status": None, "last_seen": None}
    assert snapshot["tasks"]["T1"]["payload"] == {"task_id": "T1", "status": "done"}
    assert snapshot["tasks"]["T1"]["from"] == "agent"
    assert [q["id"] for q in snapshot["questions"]] == ["q1"]
    assert snapshot["questions"][0]["payload"] == {"text": "Ship?"}


@pytest_twisted.ensureDeferred
async def test_seq_is_gapless_and_every_dashboard_sees_the_same_order(
    server: RunningServer,
) -> None:
    """Messages from two agents get consecutive seqs; two dashboards see them in the same order,
    the first one right after their welcome's seq."""
    second_token = server.add_token("bot-2", "agent")
    first = await server.dashboard()
    second = await server.dashboard()
    agent_a = await server.agent()
    agent_b = await server.agent(second_token)
    for i in range(20):
        agent_a.send_json({"type": "agent_status", "id": f"a{i}", "payload": {"state": "x"}})
        agent_b.send_json({"type": "agent_status", "id": f"b{i}", "payload": {"state": "y"}})
    seen: list[list[int]] = []
    for dashboard in (first, second):
        seqs = [(await dashboard.next_message())["seq"] for _ in range(42)]
        seen.append(seqs)
    start = first.welcome["payload"]["seq"] + 1
    assert seen[0] == list(range(start, start + 42))
    assert seen[1] == seen[0]


@pytest_twisted.ensureDeferred
async def test_server_assigns_id_and_timestamp(server: RunningServer) -> None:
    """Without ``id`` the ack carries a ``srv-`` id; without ``timestamp`` the server sets UTC time;
    a client's own timestamp is relayed exactly as sent."""
    dashboard, agent = await _online(server)
    reply = await agent.request({"type": "agent_status", "payload": {"state": "s"}})
    assert reply["id"].startswith("srv-")
    relayed = await dashboard.next_message()
    assert relayed["id"] == reply["id"]
    assert relayed["timestamp"].endswith("Z")
    await agent.request(
        {
            "type": "agent_status",
            "id": "t",
            "timestamp": "2026-11-25T10:00:00.5+01:00",
            "payload": {"state": "s"},
        }
    )
    assert (await dashboard.next_message())["timestamp"] == "2026-11-25T10:00:00.5+01:00"


@pytest_twisted.ensureDeferred
async def test_duplicate_id_is_acked_again_and_not_relayed(server: RunningServer) -> None:
    """Re-sending an id this sender already stored gets the original seq with duplicate: true and
    is not relayed again; the same id from another agent is a different message."""
    other = server.add_token("bot-2", "agent")
    dashboard, agent = await _online(server)
    first = await agent.request({"type": "agent_status", "id": "same", "payload": {"state": "a"}})
    again = await agent.request({"type": "agent_status", "id": "same", "payload": {"state": "b"}})
    assert again == {"type": "ack", "id": "same", "seq": first["seq"], "duplicate": True}
    second_agent = await server.agent(other)
    theirs = await second_agent.request(
        {"type": "agent_status", "id": "same", "payload": {"state": "c"}}
    )
    assert "duplicate" not in theirs
    relayed = [await dashboard.next_message() for _ in range(3)]
    assert [(m["type"], m.get("seq")) for m in relayed] == [
        ("agent_status", first["seq"]),
        ("presence", first["seq"] + 1),
        ("agent_status", theirs["seq"]),
    ]


@pytest_twisted.ensureDeferred
async def test_agents_do_not_receive_other_agents_traffic(server: RunningServer) -> None:
    """Statuses, tasks and questions go to dashboards only: another agent receives none of them."""
    other = server.add_token("bot-2", "agent")
    listener = await server.agent(other)
    _dashboard, agent = await _online(server)
    await agent.request({"type": "agent_status", "id": "1", "payload": {"state": "a"}})
    await agent.request(
        {"type": "task_update", "id": "2", "payload": {"task_id": "t", "status": "s"}}
    )
    await agent.request({"type": "question", "id": "3", "payload": {"text": "?"}})
    # The listener's own next traffic: an ack for a message it sends now.
    reply = await listener.request({"type": "agent_status", "id": "x", "payload": {"state": "s"}})
    assert reply["type"] == "ack"
    assert [m["type"] for m in listener.all_received] == ["welcome", "ack"]
