"""A node killed with SIGKILL: the other nodes keep serving, and an agent whose only node died goes
offline within the ping timeout (the dead node's heartbeat key expires; another node notices)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest_twisted

from vibews.store.redis import RedisStore
from vibews.testing import QueueClientProtocol, RunningServer, TwistdProcess, connect, status_of
from vibews.testing_cluster import ClusterTokens, RedisProcess, start_node

PING_TIMEOUT = 6.0
SURVIVOR_OPTIONS = {"ping_timeout": PING_TIMEOUT, "ping_interval": 2.0, "presence_grace": 0.0}
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


class _Nodes(NamedTuple):
    survivor: RunningServer
    doomed: TwistdProcess
    port: int  # the doomed node's


@pytest_twisted.async_yield_fixture
async def nodes(
    tmp_path: Path, redis: RedisProcess, tokens: ClusterTokens
) -> AsyncIterator[_Nodes]:
    """Two serving nodes on one Redis: the survivor in this process, and the node a test SIGKILLs
    as a twistd process of its own, so that the kill is a real crash (nothing closes, only the
    heartbeat stops). Both have the same ping and grace settings, so that they agree when the dead
    node's agents time out."""
    survivor = await start_node(tmp_path / "b", redis.url, tokens, **SURVIVOR_OPTIONS)
    doomed = TwistdProcess(
        [
            "--port=0",
            f"--data={tmp_path / 'a'}",
            f"--tokens={tokens.path}",
            f"--redis={redis.url}",
            f"--ping-timeout={PING_TIMEOUT}",
            "--ping-interval=2",
            "--presence-grace=0",
        ],
        tmp_path,
    )
    try:
        port = await doomed.started()
        await _serving(port)
        yield _Nodes(survivor, doomed, port)
    finally:
        await doomed.kill()
        await survivor.stop()


async def _serving(port: int) -> None:
    """Wait (with a deadline) until a node has loaded the shared state: /healthz 200."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    give_up = reactor.seconds() + 30
    while await status_of(port, HEALTHZ) != 200:
        assert reactor.seconds() < give_up, "the node never became ready"
        await deferLater(reactor, 0.05, lambda: None)


async def _agent_on_the_doomed_node(
    nodes: _Nodes, tokens: ClusterTokens
) -> tuple[QueueClientProtocol, QueueClientProtocol, dict[str, Any]]:
    """A dashboard on the survivor, and the agent connected to the doomed node: (dashboard, agent,
    the ``presence`` that announced the agent online)."""
    dashboard = await nodes.survivor.dashboard()
    agent = await connect(nodes.port, tokens.agent)
    assert (await agent.next_message())["type"] == "welcome"
    online = await dashboard.next_message()
    assert online["type"] == "presence" and online["payload"]["online"] is True
    return dashboard, agent, online


@pytest_twisted.ensureDeferred
async def test_sigkilled_node_its_agent_goes_offline_and_the_others_keep_serving(
    nodes: _Nodes, tokens: ClusterTokens
) -> None:
    survivor, doomed, _ = nodes
    dashboard, agent, online = await _agent_on_the_doomed_node(nodes, tokens)
    agent.send_json({"type": "question", "id": "q1", "payload": {"text": "deploy?"}})
    assert (await agent.next_message())["type"] == "ack"
    assert (await dashboard.next_message())["type"] == "question"

    doomed.signal(9)
    await doomed.ended()
    # Nobody closed anything: only the expired heartbeat tells the survivor.
    offline = await dashboard.next_message(timeout=PING_TIMEOUT)
    assert offline["type"] == "presence", offline
    assert offline["payload"] == {
        "agent": "agent",
        "online": False,
        "last_seen": offline["payload"]["last_seen"],
    }
    assert offline["seq"] == online["seq"] + 2

    # The survivor serves on: the answer waits for the agent, which comes back here.
    dashboard.send_json(
        {"type": "answer", "id": "a1", "payload": {"question_id": "q1", "text": "yes"}}
    )
    ack = await dashboard.next_message()
    assert ack["type"] == "ack"
    back = await survivor.agent()
    pending = await back.next_message()
    assert pending["type"] == "answer" and pending["seq"] == ack["seq"]
    assert pending["payload"]["text"] == "yes"
    back.disconnect()
    dashboard.disconnect()


@pytest_twisted.ensureDeferred
async def test_sigkilled_node_its_dashboards_claims_lapse(
    nodes: _Nodes, tokens: ClusterTokens
) -> None:
    """A claim lapses when its claimer disconnects; a claimer whose node died is disconnected too:
    the node that notices announces ``claimed`` with ``by: null`` within the ping timeout."""
    survivor, doomed, port = nodes
    watcher = await survivor.dashboard()
    agent = await survivor.agent()
    asked = await agent.request({"type": "question", "id": "q1", "payload": {"text": "ok?"}})
    assert asked["type"] == "ack"
    claimer = await connect(port, tokens.dashboard)
    assert (await claimer.next_message())["type"] == "welcome"
    claimed = await claimer.request({"type": "claim", "id": "c1", "payload": {"question_id": "q1"}})
    assert claimed["type"] == "ack"
    held = await watcher.next_of("claimed")
    assert held["payload"]["by"] == "dashboard"

    doomed.signal(9)
    await doomed.ended()
    lapsed = await watcher.next_of("claimed", timeout=PING_TIMEOUT)
    assert lapsed["payload"] == {"question_id": "q1", "by": None, "until": None}
    assert lapsed["seq"] > held["seq"]
    watcher.disconnect()
    agent.disconnect()


@pytest_twisted.ensureDeferred
async def test_an_agent_also_on_a_surviving_node_stays_online(
    nodes: _Nodes, tokens: ClusterTokens
) -> None:
    """Presence is per agent across nodes: an agent with a connection on the dead node and one on
    the survivor stays online when the dead node is noticed, and goes offline only when its last
    connection (the survivor's) closes."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    survivor, doomed, _ = nodes
    dashboard, _, _ = await _agent_on_the_doomed_node(nodes, tokens)
    on_survivor = await survivor.agent()
    store = survivor.service.hub.store
    assert isinstance(store, RedisStore)
    while len(store.member_nodes()) < 2:  # both nodes recorded as holding the agent
        await deferLater(reactor, 0.05, lambda: None)

    doomed.signal(9)
    await doomed.ended()
    give_up = reactor.seconds() + 2 * PING_TIMEOUT
    while len(store.member_nodes()) > 1:  # the survivor noticed, and took the dead node's away
        assert reactor.seconds() < give_up, "the dead node was never noticed"
        await deferLater(reactor, 0.05, lambda: None)
    marker = await on_survivor.request(
        {"type": "agent_status", "id": "after", "payload": {"state": "still here"}}
    )
    relayed = await dashboard.next_message()  # nothing (no offline presence) came before it
    assert relayed["type"] == "agent_status" and relayed["seq"] == marker["seq"]

    on_survivor.disconnect()
    offline = await dashboard.next_message(timeout=PING_TIMEOUT)
    assert offline["type"] == "presence" and offline["payload"]["online"] is False
    assert offline["seq"] == marker["seq"] + 1
    dashboard.disconnect()
