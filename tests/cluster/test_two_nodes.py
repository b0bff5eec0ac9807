"""Two vibews nodes on one Redis behave as one server: an agent on node A, a dashboard on node B."""

from __future__ import annotations

from pathlib import Path

import pytest_twisted

from vibews.testing_cluster import ClusterTokens, RedisProcess, start_node


@pytest_twisted.ensureDeferred
async def test_agent_on_a_dashboard_on_b(
    tmp_path: Path, redis: RedisProcess, tokens: ClusterTokens
) -> None:
    a = await start_node(tmp_path / "a", redis.url, tokens, presence_grace=0.0)
    b = await start_node(tmp_path / "b", redis.url, tokens, presence_grace=0.0)
    try:
        dash = await b.dashboard()
        agent = await a.agent()
        presence = await dash.next_message()
        assert presence["type"] == "presence" and presence["payload"]["online"] is True
        agent.send_json({"type": "question", "id": "q1", "payload": {"text": "ok?"}})
        ack = await agent.next_message()
        assert ack == {"type": "ack", "id": "q1", "seq": presence["seq"] + 1}
        question = await dash.next_message()
        assert question["type"] == "question" and question["seq"] == ack["seq"]
        dash.send_json(
            {"type": "answer", "id": "a1", "payload": {"question_id": "q1", "text": "y"}}
        )
        answer_ack = await dash.next_message()
        assert answer_ack["type"] == "ack"
        got = await agent.next_message()
        assert got["type"] == "answer" and got["payload"]["text"] == "y"
        assert got["seq"] == answer_ack["seq"]
        closed = await agent.next_message()
        assert closed["type"] == "question_closed"
        agent.disconnect()
        dash.disconnect()
    finally:
        await a.stop()
        await b.stop()


@pytest_twisted.ensureDeferred
async def test_duplicates_receipts_and_bytes_across_nodes(
    tmp_path: Path, redis: RedisProcess, tokens: ClusterTokens
) -> None:
    """An id re-sent to another node is a duplicate with the original seq; the agent's ack on
    node A sends a receipt to the dashboard on node B; frames arrive byte for byte on every node."""
    a = await start_node(tmp_path / "a", redis.url, tokens, presence_grace=0.0)
    b = await start_node(tmp_path / "b", redis.url, tokens, presence_grace=0.0)
    try:
        dash_a = await a.dashboard()
        dash_b = await b.dashboard()
        agent = await a.agent()
        status = {"type": "agent_status", "id": "s1", "payload": {"state": "🚀 naïve"}}
        first = await agent.request(status)
        assert first["type"] == "ack"
        other = await b.agent()
        again = await other.request(status)
        assert again == {"type": "ack", "id": "s1", "seq": first["seq"], "duplicate": True}
        seen_a = await dash_a.next_of("agent_status")
        seen_b = await dash_b.next_of("agent_status")
        assert seen_a == seen_b and seen_a["payload"]["state"] == "🚀 naïve"
        other.disconnect()

        await agent.request({"type": "question", "id": "q1", "payload": {"text": "go?"}})
        await dash_b.next_of("question")
        answered = await dash_b.request(
            {"type": "answer", "id": "a1", "payload": {"question_id": "q1", "text": "go"}}
        )
        answer = await agent.next_of("answer")
        agent.send_json({"type": "ack", "seq": answer["seq"]})
        receipt = await dash_b.next_of("receipt")
        assert receipt["payload"]["question_id"] == "q1"
        assert receipt["seq"] > answered["seq"]
        # A new dashboard sees the delivery in its snapshot, or (if its node had not applied the
        # receipt yet when it connected: the snapshot is older) as the next message.
        late = await a.dashboard()
        questions = late.welcome["payload"]["snapshot"]["questions"]
        if late.welcome["payload"]["seq"] < receipt["seq"]:
            assert await late.next_of("receipt") == receipt
        else:
            assert [(q["id"], q["state"], q["delivered"]) for q in questions] == [
                ("q1", "answered", True)
            ]
        for client in (dash_a, dash_b, agent, late):
            client.disconnect()
    finally:
        await a.stop()
        await b.stop()


@pytest_twisted.ensureDeferred
async def test_reconnecting_to_another_node_within_the_grace_sends_no_presence(
    tmp_path: Path, redis: RedisProcess, tokens: ClusterTokens
) -> None:
    """An agent that drops on node A and comes back on node B within --presence-grace does not
    flap; presence goes offline only once its last connection on any node is gone."""
    a = await start_node(tmp_path / "a", redis.url, tokens, presence_grace=2.0)
    b = await start_node(tmp_path / "b", redis.url, tokens, presence_grace=0.0)
    try:
        dashboard = await b.dashboard()
        first = await a.agent()
        assert (await dashboard.next_message())["payload"]["online"] is True
        first.disconnect()
        await first.wait_closed()
        second = await b.agent()
        # Something observable after the grace would have ended: nothing else came before it.
        marker = await second.request(
            {"type": "agent_status", "id": "m", "payload": {"state": "x"}}
        )
        relayed = await dashboard.next_message()
        assert relayed["type"] == "agent_status" and relayed["seq"] == marker["seq"]
        second.disconnect()  # node B has no grace: offline at once, its last connection left
        offline = await dashboard.next_message(timeout=10)
        assert offline["type"] == "presence" and offline["payload"]["online"] is False
        dashboard.disconnect()
    finally:
        await a.stop()
        await b.stop()


@pytest_twisted.ensureDeferred
async def test_a_question_expires_once_although_every_node_has_its_timer(
    tmp_path: Path, redis: RedisProcess, tokens: ClusterTokens
) -> None:
    """Every node arms the deadline (the asking node may die); the guard on the question's row
    lets exactly one ``question_closed`` land."""
    nodes = [
        await start_node(tmp_path / f"n{i}", redis.url, tokens, presence_grace=0.0)
        for i in range(3)
    ]
    try:
        dashboard = await nodes[2].dashboard()
        agent = await nodes[0].agent()
        asked = await agent.request(
            {"type": "question", "id": "q1", "payload": {"text": "now?", "timeout": 0.5}}
        )
        closed = await agent.next_of("question_closed")
        assert closed["payload"] == {"question_id": "q1", "reason": "expired"}
        marker = await agent.request({"type": "agent_status", "id": "m", "payload": {"state": "x"}})
        kinds = []
        while True:
            message = await dashboard.next_message()
            kinds.append(message["type"])
            if message["seq"] == marker["seq"]:
                break
        assert kinds == ["presence", "question", "question_closed", "agent_status"]
        assert marker["seq"] == asked["seq"] + 2
        agent.disconnect()
        dashboard.disconnect()
    finally:
        for node in nodes:
            await node.stop()


@pytest_twisted.ensureDeferred
async def test_a_claim_on_one_node_is_seen_and_lapses_on_the_other(
    tmp_path: Path, redis: RedisProcess, tokens: ClusterTokens
) -> None:
    """A claim made through node B is announced on node A, and when the claiming connection
    closes, the lapse (``by: null``) reaches node A too."""
    a = await start_node(tmp_path / "a", redis.url, tokens, presence_grace=0.0)
    b = await start_node(tmp_path / "b", redis.url, tokens, presence_grace=0.0)
    try:
        watcher = await a.dashboard()
        agent = await a.agent()
        await agent.request({"type": "question", "id": "q1", "payload": {"text": "who?"}})
        claimer = await b.dashboard()
        claimed = await claimer.request(
            {"type": "claim", "id": "c1", "payload": {"question_id": "q1"}}
        )
        seen = await watcher.next_of("claimed")
        assert seen["seq"] == claimed["seq"] and seen["payload"]["by"] == "dashboard"
        claimer.disconnect()
        lapsed = await watcher.next_of("claimed")
        assert lapsed["payload"]["by"] is None and lapsed["seq"] > seen["seq"]
        late = await b.dashboard()
        if late.welcome["payload"]["seq"] < lapsed["seq"]:  # node B's view was a moment older
            assert await late.next_of("claimed") == lapsed
        else:
            assert late.welcome["payload"]["snapshot"]["questions"][0]["claim"] is None
        watcher.disconnect()
        agent.disconnect()
    finally:
        await a.stop()
        await b.stop()
