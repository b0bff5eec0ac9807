"""The question lifecycle over real sockets: deadlines, withdraw, claims, structured answers,
question_closed and receipts (protocol section 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted

from vibews.testing import QueueClientProtocol, RunningServer, start_server
from vibews.timestamps import parse_rfc3339

SCHEMA = {
    "type": "object",
    "properties": {
        "env": {"type": "string", "enum": ["staging", "prod"]},
        "replicas": {"type": "integer", "minimum": 1, "maximum": 10},
    },
    "required": ["env"],
}


async def _ask(agent: QueueClientProtocol, qid: str, **payload: Any) -> dict[str, Any]:
    reply = await agent.request(
        {"type": "question", "id": qid, "payload": {"text": "?", **payload}}
    )
    assert reply["type"] == "ack", reply
    return reply


async def _answer(
    dashboard: QueueClientProtocol, aid: str, qid: str, **payload: Any
) -> dict[str, Any]:
    return await dashboard.request(
        {"type": "answer", "id": aid, "payload": {"question_id": qid, **payload}}
    )


@pytest_twisted.ensureDeferred
async def test_answer_closes_the_question_and_the_agents_ack_sends_a_receipt(
    server: RunningServer,
) -> None:
    """An answer is followed by question_closed (answered) for dashboards and the agent; when the
    agent acks the answer every dashboard gets a receipt, and the snapshot shows it all."""
    dashboard = await server.dashboard()
    agent = await server.agent()
    await _ask(agent, "q1")
    answer = await _answer(dashboard, "a1", "q1", text="yes")
    for client in (dashboard, agent):
        got = await client.next_of("answer")
        closed = await client.next_message()
        assert closed == {
            "type": "question_closed",
            "seq": got["seq"] + 1,
            "payload": {"question_id": "q1", "reason": "answered"},
        }
    agent.send_json({"type": "ack", "seq": answer["seq"]})
    receipt = await dashboard.next_message()
    assert receipt["type"] == "receipt"
    assert receipt["payload"]["question_id"] == "q1"
    assert parse_rfc3339(receipt["payload"]["delivered_at"]) is not None
    agent.send_json({"type": "ack", "seq": answer["seq"]})  # a second ack sends no second receipt
    await agent.request({"type": "agent_status", "id": "s", "payload": {"state": "s"}})
    assert (await dashboard.next_message())["type"] == "agent_status"
    late = await server.dashboard()
    [question] = late.welcome["payload"]["snapshot"]["questions"]
    assert question["id"] == "q1"
    assert (question["state"], question["claim"], question["delivered"]) == ("answered", None, True)


@pytest_twisted.ensureDeferred
async def test_deadline_expires_the_question(server: RunningServer) -> None:
    """A question with a timeout is closed as expired at its deadline, for dashboards and the
    agent; an answer afterwards is already_answered naming 'expired'."""
    dashboard = await server.dashboard()
    agent = await server.agent()
    await _ask(agent, "q1", timeout=0.3)
    closed = await agent.next_of("question_closed")
    assert closed["payload"] == {"question_id": "q1", "reason": "expired"}
    assert (await dashboard.next_of("question_closed"))["seq"] == closed["seq"]
    late = await _answer(dashboard, "a1", "q1", text="too late")
    assert late["payload"]["code"] == "already_answered"
    assert "expired" in late["payload"]["message"]


@pytest_twisted.ensureDeferred
async def test_expires_at_in_the_past_expires_at_once(server: RunningServer) -> None:
    """An expires_at already past: the question is stored and closed as expired right away."""
    dashboard = await server.dashboard()
    agent = await server.agent()
    asked = await _ask(agent, "q1", expires_at="2020-01-01T00:00:00Z")
    question = await dashboard.next_of("question")
    closed = await dashboard.next_message()
    assert question["seq"] == asked["seq"]
    assert closed["type"] == "question_closed" and closed["payload"]["reason"] == "expired"


@pytest_twisted.ensureDeferred
async def test_question_field_refusals(server: RunningServer) -> None:
    """timeout with expires_at, a non-positive timeout, a bad urgency and a schema outside the
    subset are refused with invalid_message naming the field."""
    agent = await server.agent()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"timeout": 5, "expires_at": "2030-01-01T00:00:00Z"}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"expires_at": "tomorrow"}, "expires_at"),
        ({"urgency": "urgent"}, "urgency"),
        ({"schema": {"type": "object", "properties": {"a": {"type": "array"}}}}, "schema"),
    ]
    for i, (payload, field) in enumerate(cases):
        error = await agent.request(
            {"type": "question", "id": f"bad{i}", "payload": {"text": "?", **payload}}
        )
        assert error["payload"]["code"] == "invalid_message", payload
        assert field in error["payload"]["message"], (payload, error)
    ok = await _ask(agent, "fine", timeout=1.5, urgency="high", schema=SCHEMA)
    assert ok["type"] == "ack"


@pytest_twisted.ensureDeferred
async def test_withdraw(server: RunningServer) -> None:
    """The asking agent withdraws its open question: acked with the seq of the question_closed it
    causes, never relayed itself; a retry is a duplicate; another agent is forbidden; withdrawing
    again is already_answered naming 'withdrawn'."""
    dashboard = await server.dashboard()
    agent = await server.agent()
    other = await server.agent(server.add_token("bot-2", "agent"))
    await _ask(agent, "q1")
    stranger = await other.request(
        {"type": "withdraw", "id": "w0", "payload": {"question_id": "q1"}}
    )
    assert stranger["payload"]["code"] == "forbidden"
    ack = await agent.request({"type": "withdraw", "id": "w1", "payload": {"question_id": "q1"}})
    closed = await agent.next_of("question_closed")
    assert ack == {"type": "ack", "id": "w1", "seq": closed["seq"]}
    assert closed["payload"]["reason"] == "withdrawn"
    seen = await dashboard.next_of("question_closed")
    assert seen["seq"] == closed["seq"]
    retry = await agent.request({"type": "withdraw", "id": "w1", "payload": {"question_id": "q1"}})
    assert retry == {"type": "ack", "id": "w1", "seq": closed["seq"], "duplicate": True}
    again = await agent.request({"type": "withdraw", "id": "w2", "payload": {"question_id": "q1"}})
    assert again["payload"]["code"] == "already_answered"
    assert "withdrawn" in again["payload"]["message"]
    unknown = await agent.request(
        {"type": "withdraw", "id": "w3", "payload": {"question_id": "nope"}}
    )
    assert unknown["payload"]["code"] == "unknown_question"
    assert not any(m["type"] == "withdraw" for m in dashboard.all_received)


@pytest_twisted.ensureDeferred
async def test_claims_replace_lapse_on_disconnect_and_after_their_ttl(tmp_path: Path) -> None:
    """A claim is announced to every dashboard with by/until and acked with that seq; a newer
    claim replaces it; it lapses (claimed by null) when the claimer disconnects and when its time
    is up; agents may not claim; claiming a closed question is already_answered."""
    server = await start_server(tmp_path / "data", claim_ttl=1.0)
    try:
        alice = await server.dashboard()
        bob = await server.dashboard(server.add_token("bob", "dashboard"))
        agent = await server.agent()
        await _ask(agent, "q1")
        await _ask(agent, "q2")
        ack = await alice.request({"type": "claim", "id": "c1", "payload": {"question_id": "q1"}})
        claimed = await bob.next_of("claimed")
        assert ack["seq"] == claimed["seq"] == (await alice.next_of("claimed"))["seq"]
        assert claimed["payload"]["by"] == "dashboard" and claimed["payload"]["question_id"] == "q1"
        assert parse_rfc3339(claimed["payload"]["until"]) is not None
        await bob.request({"type": "claim", "id": "c2", "payload": {"question_id": "q1"}})
        replaced = await alice.next_of("claimed")
        assert replaced["payload"]["by"] == "bob"
        bob.disconnect()
        lapsed = await alice.next_of("claimed")
        assert lapsed["payload"] == {"question_id": "q1", "by": None, "until": None}
        await alice.request({"type": "claim", "id": "c3", "payload": {"question_id": "q2"}})
        await alice.next_of("claimed")
        timed_out = await alice.next_of("claimed", timeout=10)
        assert timed_out["payload"] == {"question_id": "q2", "by": None, "until": None}
        forbidden = await agent.request(
            {"type": "claim", "id": "c4", "payload": {"question_id": "q2"}}
        )
        assert forbidden["payload"]["code"] == "forbidden"
        await _answer(alice, "a1", "q2", text="done")
        closed = await alice.request(
            {"type": "claim", "id": "c5", "payload": {"question_id": "q2"}}
        )
        assert closed["payload"]["code"] == "already_answered"
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_snapshot_shows_a_live_claim(server: RunningServer) -> None:
    """The snapshot lists an open question's current claim."""
    dashboard = await server.dashboard()
    agent = await server.agent()
    await _ask(agent, "q1")
    await dashboard.request({"type": "claim", "id": "c1", "payload": {"question_id": "q1"}})
    late = await server.dashboard()
    [question] = late.welcome["payload"]["snapshot"]["questions"]
    assert question["state"] == "open"
    assert question["claim"]["by"] == "dashboard"
    assert question["delivered"] is False


@pytest_twisted.ensureDeferred
async def test_structured_answers_follow_the_schema(server: RunningServer) -> None:
    """With a schema, accepting needs a valid ``value`` (text alone, a failing field or an unknown
    property → invalid_message naming it); decline needs none; without a schema ``value`` is
    refused."""
    dashboard = await server.dashboard()
    agent = await server.agent()
    await _ask(agent, "form", schema=SCHEMA)
    await _ask(agent, "plain")
    refusals: list[tuple[str, dict[str, Any], str]] = [
        ("form", {"text": "prod please"}, "payload.value"),
        ("form", {"value": {"env": "dev"}}, "env"),
        ("form", {"value": {"env": "prod", "replicas": 11}}, "replicas"),
        ("form", {"value": {"env": "prod", "colour": "red"}}, "colour"),
        ("form", {"value": {}}, "env"),
        ("plain", {"value": {"x": 1}}, "payload.value"),
        ("plain", {}, "payload.text"),
    ]
    for i, (qid, payload, field) in enumerate(refusals):
        error = await _answer(dashboard, f"bad{i}", qid, **payload)
        assert error["payload"]["code"] == "invalid_message", (payload, error)
        assert field in error["payload"]["message"], (payload, error)
    ok = await _answer(dashboard, "good", "form", value={"env": "prod", "replicas": 3.0})
    assert ok["type"] == "ack"
    got = await agent.next_of("answer")
    assert got["payload"]["value"] == {"env": "prod", "replicas": 3.0}
    declined = await _answer(dashboard, "no", "plain", action="decline")
    assert declined["type"] == "ack"


@pytest_twisted.ensureDeferred
async def test_agent_offline_at_the_deadline_learns_of_the_expiry_on_reconnect(
    server: RunningServer,
) -> None:
    """A question that expires while its agent is offline is not lost on the agent: the
    question_closed waits for it (after welcome, like a pending answer) until it is acked."""
    agent = await server.agent()
    await _ask(agent, "q1", timeout=0.3)
    agent.disconnect()
    await agent.wait_closed()
    dashboard = await server.dashboard()
    if not any(
        q["state"] == "expired" for q in dashboard.welcome["payload"]["snapshot"]["questions"]
    ):
        await dashboard.next_of("question_closed")
    back = await server.agent()
    closed = await back.next_message()
    assert closed["type"] == "question_closed" and closed["payload"]["reason"] == "expired"
    back.send_json({"type": "ack", "seq": closed["seq"]})
    await back.request({"type": "agent_status", "id": "s", "payload": {"state": "s"}})
    back.disconnect()
    await back.wait_closed()
    again = await server.agent()
    reply = await again.request({"type": "agent_status", "id": "s2", "payload": {"state": "s"}})
    assert reply["type"] == "ack"
    assert [m["type"] for m in again.all_received] == ["welcome", "ack"]
