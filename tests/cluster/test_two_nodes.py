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
