"""Questions, answers, pending answers for offline agents, and resume."""

from __future__ import annotations

from pathlib import Path

import pytest_twisted

from vibews.testing import RunningServer, start_server


@pytest_twisted.ensureDeferred
async def test_answer_reaches_every_connection_of_the_asking_agent_and_dashboards(
    server: RunningServer,
) -> None:
    """An answer goes to all connections of the agent that asked and to every dashboard (the
    answering one included); another agent gets nothing."""
    other = await server.agent(server.add_token("bot-2", "agent"))
    dashboard = await server.dashboard()
    agent_one = await server.agent()
    agent_two = await server.agent()
    question = await agent_one.request(
        {"type": "question", "id": "q1", "payload": {"text": "Deploy?", "options": ["yes", "no"]}}
    )
    relayed_question = await dashboard.next_of("question")
    assert relayed_question["seq"] == question["seq"]
    assert relayed_question["payload"]["options"] == ["yes", "no"]
    answer = await dashboard.request(
        {"type": "answer", "id": "a1", "payload": {"question_id": "q1", "text": "yes"}}
    )
    assert answer["type"] == "ack"
    for receiver in (dashboard, agent_one, agent_two):
        got = await receiver.next_of("answer")
        assert got["seq"] == answer["seq"]
        assert got["from"] == "dashboard"
        assert got["payload"] == {"question_id": "q1", "text": "yes"}
    ping = await other.request({"type": "agent_status", "id": "p", "payload": {"state": "s"}})
    assert ping["type"] == "ack"
    assert [m["type"] for m in other.all_received] == ["welcome", "ack"]


@pytest_twisted.ensureDeferred
async def test_answer_errors(server: RunningServer) -> None:
    """Unknown question → unknown_question; a second answer → already_answered naming the state;
    a question id taken by another agent → conflict; the connection stays open throughout."""
    dashboard = await server.dashboard()
    agent = await server.agent()
    other = await server.agent(server.add_token("bot-2", "agent"))
    unknown = await dashboard.request(
        {"type": "answer", "id": "a0", "payload": {"question_id": "nope", "text": "x"}}
    )
    assert unknown["payload"]["code"] == "unknown_question"
    assert unknown["id"] == "a0"
    await agent.request({"type": "question", "id": "q1", "payload": {"text": "?"}})
    await dashboard.request(
        {"type": "answer", "id": "a1", "payload": {"question_id": "q1", "text": "x"}}
    )
    twice = await dashboard.request(
        {"type": "answer", "id": "a2", "payload": {"question_id": "q1", "text": "y"}}
    )
    assert twice["payload"]["code"] == "already_answered"
    assert "answered" in twice["payload"]["message"]
    retried = await dashboard.request(
        {"type": "answer", "id": "a1", "payload": {"question_id": "q1", "text": "x"}}
    )
    assert retried["type"] == "ack" and retried["duplicate"] is True
    clash = await other.request({"type": "question", "id": "q1", "payload": {"text": "mine?"}})
    assert clash["payload"]["code"] == "conflict"
    still_open = await other.request({"type": "question", "id": "q2", "payload": {"text": "?"}})
    assert still_open["type"] == "ack"


@pytest_twisted.ensureDeferred
async def test_offline_agent_gets_pending_answer_on_reconnect_until_it_acks(
    server: RunningServer,
) -> None:
    """An answer given while the agent is offline is sent right after ``welcome`` on every new
    connection of that agent, until a connection acks its seq."""
    dashboard = await server.dashboard()
    agent = await server.agent()
    await agent.request({"type": "question", "id": "q1", "payload": {"text": "Go?"}})
    agent.disconnect()
    await agent.wait_closed()
    answer = await dashboard.request(
        {"type": "answer", "id": "a1", "payload": {"question_id": "q1", "text": "go"}}
    )
    back = await server.agent()
    pending = await back.next_message()
    assert pending["type"] == "answer" and pending["seq"] == answer["seq"]
    back.disconnect()
    await back.wait_closed()
    again = await server.agent()
    pending_again = await again.next_message()
    assert pending_again["seq"] == answer["seq"]
    again.send_json({"type": "ack", "seq": answer["seq"]})
    # Acks are never acked; prove the ack was handled by waiting for a later message's ack.
    await again.request({"type": "agent_status", "id": "after", "payload": {"state": "s"}})
    again.disconnect()
    await again.wait_closed()
    cleared = await server.agent()
    reply = await cleared.request({"type": "agent_status", "id": "x", "payload": {"state": "s"}})
    assert reply["type"] == "ack"
    assert [m["type"] for m in cleared.all_received] == ["welcome", "ack"]


@pytest_twisted.ensureDeferred
async def test_ack_of_a_lower_seq_keeps_the_answer_pending(server: RunningServer) -> None:
    """An ack below the answer's seq does not clear it."""
    dashboard = await server.dashboard()
    agent = await server.agent()
    await agent.request({"type": "question", "id": "q1", "payload": {"text": "Go?"}})
    answer = await dashboard.request(
        {"type": "answer", "id": "a1", "payload": {"question_id": "q1", "text": "go"}}
    )
    await agent.next_of("answer")
    agent.send_json({"type": "ack", "seq": answer["seq"] - 1})
    await agent.request({"type": "agent_status", "id": "after", "payload": {"state": "s"}})
    agent.disconnect()
    await agent.wait_closed()
    back = await server.agent()
    assert (await back.next_message())["seq"] == answer["seq"]


@pytest_twisted.ensureDeferred
async def test_resume_replays_missed_messages_in_order(server: RunningServer) -> None:
    """A dashboard that reconnects and resumes from its last seq gets exactly what it missed, in
    order, then ``resumed`` with complete: true; live traffic follows without a gap."""
    dashboard = await server.dashboard()
    agent = await server.agent()
    first = await agent.request({"type": "agent_status", "id": "1", "payload": {"state": "a"}})
    last_seen = first["seq"]
    dashboard.disconnect()
    missed = [
        await agent.request({"type": "agent_status", "id": str(i), "payload": {"state": "b"}})
        for i in range(2, 8)
    ]
    back = await server.dashboard()
    back.send_json({"type": "resume", "payload": {"since": last_seen}})
    replayed = [await back.next_message() for _ in missed]
    assert [m["seq"] for m in replayed] == [m["seq"] for m in missed]
    resumed = await back.next_message()
    assert resumed["type"] == "resumed"
    assert resumed["payload"]["since"] == last_seen
    assert resumed["payload"]["seq"] == missed[-1]["seq"]
    assert resumed["payload"]["complete"] is True
    assert resumed["payload"]["epoch"] == back.welcome["payload"]["epoch"]
    live = await agent.request({"type": "agent_status", "id": "9", "payload": {"state": "c"}})
    assert (await back.next_message())["seq"] == live["seq"]


@pytest_twisted.ensureDeferred
async def test_resume_incomplete_cases(server: RunningServer) -> None:
    """``since`` beyond the newest seq, or another epoch, gets complete: false at once."""
    dashboard = await server.dashboard()
    head = dashboard.welcome["payload"]["seq"]
    dashboard.send_json({"type": "resume", "payload": {"since": head + 100}})
    ahead = await dashboard.next_message()
    assert ahead["type"] == "resumed" and ahead["payload"]["complete"] is False
    dashboard.send_json({"type": "resume", "payload": {"since": 0, "epoch": "another-history"}})
    foreign = await dashboard.next_message()
    assert foreign["type"] == "resumed" and foreign["payload"]["complete"] is False


@pytest_twisted.ensureDeferred
async def test_resume_older_than_history_is_incomplete(tmp_path: object) -> None:
    """With ``--history`` small, a resume from before the retained range replays what is kept and
    says complete: false."""
    server = await start_server(tmp_path / "data", history=10)  # type: ignore[operator]
    try:
        agent = await server.agent()
        # Within the burst (200), so that "end" is acked, not refused: its ack then follows the
        # commits of all the others (an immediate refusal would not).
        for i in range(150):
            agent.send_json({"type": "agent_status", "id": str(i), "payload": {"state": "s"}})
        end = await agent.request({"type": "agent_status", "id": "end", "payload": {"state": "s"}})
        assert end["type"] == "ack"
        dashboard = await server.dashboard()
        replayed, resumed = await dashboard.resume(0)
        seqs = [m["seq"] for m in replayed]
        assert resumed["payload"]["complete"] is False
        assert seqs == sorted(seqs) and seqs[-1] == resumed["payload"]["seq"]
        assert 10 <= len(seqs) < 150
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_agent_resume_replays_only_its_answers(server: RunningServer) -> None:
    """An agent's resume replays the answers to its questions and their question_closed, nothing
    else (not its own statuses)."""
    dashboard = await server.dashboard()
    agent = await server.agent()
    asked = await agent.request({"type": "question", "id": "q1", "payload": {"text": "?"}})
    await agent.request({"type": "agent_status", "id": "s", "payload": {"state": "s"}})
    answer = await dashboard.request(
        {"type": "answer", "id": "a1", "payload": {"question_id": "q1", "text": "ok"}}
    )
    await agent.next_of("question_closed")
    replayed, resumed = await agent.resume(asked["seq"] - 1)
    assert [(m["type"], m["seq"]) for m in replayed] == [
        ("answer", answer["seq"]),
        ("question_closed", answer["seq"] + 1),
    ]
    assert resumed["payload"]["complete"] is True


@pytest_twisted.ensureDeferred
async def test_many_large_pending_answers_are_paced_not_closed(tmp_path: Path) -> None:
    """Pending answers larger in total than --max-write-buffer reach a reconnecting agent paced by
    its reading, in seq order, instead of tripping the slow-reader close."""
    server = await start_server(tmp_path / "data", max_write_buffer=256 * 1024, rate=0)
    try:
        dashboard = await server.dashboard()
        agent = await server.agent()
        for i in range(20):
            await agent.request({"type": "question", "id": f"q{i}", "payload": {"text": "?"}})
        agent.disconnect()
        await agent.wait_closed()
        answers = [
            await dashboard.request(
                {
                    "type": "answer",
                    "id": f"a{i}",
                    "payload": {"question_id": f"q{i}", "text": "x" * 60000},
                }
            )
            for i in range(20)
        ]
        back = await server.agent()
        got = [await back.next_of("answer") for _ in answers]
        assert [m["seq"] for m in got] == [a["seq"] for a in answers]
        reply = await back.request(
            {"type": "agent_status", "id": "alive", "payload": {"state": "s"}}
        )
        assert reply["type"] == "ack"
        assert back.close_code is None
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_resume_sent_during_pending_delivery_waits_for_it(tmp_path: Path) -> None:
    """A resume sent right after welcome, while large pending answers are still being paced out,
    neither cuts them short nor overtakes them: every pending answer arrives, then the replay."""
    server = await start_server(tmp_path / "data", max_write_buffer=256 * 1024, rate=0)
    try:
        dashboard = await server.dashboard()
        agent = await server.agent()
        for i in range(20):
            await agent.request({"type": "question", "id": f"q{i}", "payload": {"text": "?"}})
        agent.disconnect()
        await agent.wait_closed()
        for i in range(20):
            payload = {"question_id": f"q{i}", "text": "x" * 60000}
            await dashboard.request({"type": "answer", "id": f"a{i}", "payload": payload})
        back = await server.agent()
        replayed, resumed = await back.resume(back.welcome["payload"]["seq"])
        answers = [m for m in replayed if m["type"] == "answer"]
        assert len(answers) == 20
        assert resumed["payload"]["complete"] is True
    finally:
        await server.stop()
