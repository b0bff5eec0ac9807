"""vibews.client.Client against a real in-process hub: asking, answers, refusals, reconnects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.application.internet import backoffPolicy
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from vibews.client import (
    AuthenticationFailed,
    Client,
    ConnectionFailed,
    Forbidden,
    InvalidMessage,
    QuestionExpired,
    QuestionWithdrawn,
)
from vibews.testing import (
    QueueClientProtocol,
    RunningServer,
    free_port,
    self_signed_certificate,
    start_server,
)

FAST = backoffPolicy(initialDelay=0.05, maxDelay=0.5, factor=2.0)


def agent_client(server: RunningServer, token: str | None = None) -> Client:
    url = f"ws://127.0.0.1:{server.port}/"
    return Client(url, token or server.agent_token, retry_policy=FAST)


async def answer_next_question(dashboard: QueueClientProtocol, **payload: Any) -> dict[str, Any]:
    question = await dashboard.next_of("question")
    reply = await dashboard.request(
        {
            "type": "answer",
            "id": f"a-{question['id']}",
            "payload": {"question_id": question["id"], **payload},
        }
    )
    assert reply["type"] == "ack", reply
    return question


@pytest_twisted.ensureDeferred
async def test_ask_is_answered_and_acked(server: RunningServer) -> None:
    """ask() fires with the person's answer; the client acks it, so the dashboard gets a receipt."""
    dashboard = await server.dashboard()
    client = agent_client(server)
    welcome = await client.connect()
    assert (welcome.name, welcome.role) == ("agent", "agent")
    asked = client.ask("Deploy?", ["yes", "no"], timeout=60, urgency="high")
    question = await answer_next_question(dashboard, text="yes")
    assert question["payload"] == {
        "text": "Deploy?",
        "options": ["yes", "no"],
        "timeout": 60,
        "urgency": "high",
    }
    answer = await asked
    assert (answer.question_id, answer.text, answer.by, answer.accepted) == (
        question["id"],
        "yes",
        "dashboard",
        True,
    )
    receipt = await dashboard.next_of("receipt")
    assert receipt["payload"]["question_id"] == question["id"]
    await client.close()


@pytest_twisted.ensureDeferred
async def test_decline_is_an_answer_and_schema_values_arrive(server: RunningServer) -> None:
    """A decline is a reply (action 'decline'), not an error; a structured answer has its value."""
    dashboard = await server.dashboard()
    client = agent_client(server)
    await client.connect()
    declined = client.ask("Delete the branch?")
    await answer_next_question(dashboard, action="decline", text="not today")
    answer = await declined
    assert (answer.action, answer.text, answer.accepted) == ("decline", "not today", False)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    structured = client.ask("How many?", schema=schema)
    await answer_next_question(dashboard, value={"n": 3})
    assert (await structured).value == {"n": 3}
    await client.close()


@pytest_twisted.ensureDeferred
async def test_expired_and_withdrawn_fail_clearly(server: RunningServer) -> None:
    client = agent_client(server)
    await client.connect()
    with pytest.raises(QuestionExpired, match="expired"):
        await client.ask("Anyone?", timeout=0.2)
    waiting = client.ask("Still needed?", question_id="q-w")
    await client.withdraw("q-w")
    with pytest.raises(QuestionWithdrawn):
        await waiting
    await client.close()


@pytest_twisted.ensureDeferred
async def test_refused_messages_raise_their_code(server: RunningServer) -> None:
    """An error frame becomes the exception class of its code; the client stays usable."""
    client = agent_client(server)
    await client.connect()
    with pytest.raises(InvalidMessage, match=r"payload\.state") as caught:
        await client.status("")
    assert caught.value.code == "invalid_message"
    with pytest.raises(InvalidMessage, match=r"payload\.options"):
        await client.ask("Which?", options=[1, 2])  # type: ignore[list-item]
    with pytest.raises(Forbidden):
        await client.answer("nope", "x")
    ack = await client.status("fine")
    assert ack.seq > 0 and not ack.duplicate
    await client.close()


@pytest_twisted.ensureDeferred
async def test_wrong_token_and_unreachable_hub(server: RunningServer) -> None:
    wrong = agent_client(server, token="W" * 43)
    with pytest.raises(AuthenticationFailed, match="401") as caught:
        await wrong.connect()
    assert caught.value.status == 401
    with pytest.raises(AuthenticationFailed):  # it stays failed; nothing is retried
        await wrong.status("x")
    nowhere = Client(f"ws://127.0.0.1:{free_port()}/", server.agent_token)
    with pytest.raises(ConnectionFailed, match="cannot reach the hub"):
        await nowhere.connect()


@pytest_twisted.ensureDeferred
async def test_unacked_messages_are_resent_after_a_drop_exactly_once(
    server: RunningServer,
) -> None:
    """Messages queued while the connection is down are sent after the reconnect; the hub stores
    each once (a re-sent id gets a duplicate ack, not a second copy)."""
    dashboard = await server.dashboard()
    client = agent_client(server)
    await client.connect()
    first = client.status("one")
    client._current.transport.abortConnection()  # type: ignore[union-attr]
    second = client.status("two")
    acks = [await first, await second]
    assert client.connections == 2
    seen: list[dict[str, Any]] = []
    while len(seen) < 2:
        message = await dashboard.next_of("agent_status")
        seen.append(message)
    assert [m["payload"]["state"] for m in seen] == ["one", "two"]
    assert [m["seq"] for m in seen] == [a.seq for a in acks]
    replayed, _ = await dashboard.resume(dashboard.welcome["payload"]["seq"])
    assert [m["payload"]["state"] for m in replayed if m["type"] == "agent_status"] == [
        "one",
        "two",
    ]
    await client.close()


@pytest_twisted.ensureDeferred
async def test_ask_again_with_the_same_id_gets_the_earlier_answer(server: RunningServer) -> None:
    """A second process asking with the same question_id attaches to the question (no second
    question) and gets its answer, even though the first process already acked it."""
    dashboard = await server.dashboard()
    first = agent_client(server)
    await first.connect()
    asked = first.ask("Ship it?", question_id="ship-42")
    await answer_next_question(dashboard, text="ship")
    assert (await asked).text == "ship"
    await dashboard.next_of("receipt")
    await first.close()
    second = agent_client(server)
    await second.connect()
    again = await second.ask("Ship it?", question_id="ship-42")
    assert (again.question_id, again.text) == ("ship-42", "ship")
    await second.close()


@pytest_twisted.ensureDeferred
async def test_dashboard_client_resumes_without_gaps_or_repeats(server: RunningServer) -> None:
    """A dashboard Client sees every stored message once, in seq order, across a reconnect."""
    agent = await server.agent()
    watcher = Client(f"ws://127.0.0.1:{server.port}/", server.dashboard_token, retry_policy=FAST)
    seen: list[dict[str, Any]] = []
    target: list[int] = []
    reached: Deferred[None] = Deferred()

    def collect(message: dict[str, Any]) -> None:
        if "seq" in message:
            seen.append(message)
            if target and message["seq"] >= target[0] and not reached.called:
                reached.callback(None)

    watcher.on_message(collect)
    welcome = await watcher.connect()
    for n in range(3):
        await agent.request({"type": "agent_status", "id": f"s{n}", "payload": {"state": f"{n}"}})
    watcher._current.transport.abortConnection()  # type: ignore[union-attr]
    for n in range(3, 6):
        await agent.request({"type": "agent_status", "id": f"s{n}", "payload": {"state": f"{n}"}})
    last = await agent.request({"type": "agent_status", "id": "end", "payload": {"state": "end"}})
    target.append(last["seq"])
    if not (seen and seen[-1]["seq"] >= last["seq"]):
        reached.addTimeout(10, reactor)
        await reached
    assert watcher.connections == 2
    await watcher.close()
    seqs = [m["seq"] for m in seen]
    assert seqs == list(range(welcome.seq + 1, last["seq"] + 1))


@pytest_twisted.ensureDeferred
async def test_wss_verifies_the_certificate(tmp_path: Path) -> None:
    """wss:// connects when the certificate verifies against the given CA for the URL's host, and
    fails with ConnectionFailed against the system's roots (a self-signed certificate)."""
    tls = self_signed_certificate(tmp_path, ["localhost", "127.0.0.1"])
    key, cert = tls.key, tls.certificate
    server = await start_server(
        tmp_path / "data", endpoint=f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    )
    try:
        url = f"wss://localhost:{server.port}/"
        trusted = Client(url, server.agent_token, cafile=str(cert))
        assert (await trusted.connect()).role == "agent"
        assert (await trusted.status("over tls")).seq > 0
        await trusted.close()
        untrusted = Client(url, server.agent_token)
        with pytest.raises(ConnectionFailed, match="certificate"):
            await untrusted.connect()
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_a_hub_with_a_new_history_is_asked_again(tmp_path: Path) -> None:
    """The hub comes back with another store (a new epoch, the question unknown to it): the waiting
    ask() sends its question again, with the same id, and gets the answer from the new hub."""
    first = await start_server(tmp_path / "one")
    port = first.port
    client = agent_client(first)
    await client.connect()
    dashboard = await first.dashboard()
    asked = client.ask("Still there?", question_id="q-epoch")
    await dashboard.next_of("question")
    await first.stop()
    (tmp_path / "two").mkdir(mode=0o700)
    for name in ("tokens", "initial-tokens"):
        (tmp_path / "two" / name).write_bytes((tmp_path / "one" / name).read_bytes())
    second = await start_server(tmp_path / "two", endpoint=f"tcp:{port}:interface=127.0.0.1")
    try:
        assert client.welcome is not None
        old_epoch = client.welcome.epoch
        dashboard = await second.dashboard()
        # The client may have reconnected before this dashboard did (the question is then in the
        # snapshot) or after (it arrives live).
        if not dashboard.welcome["payload"]["snapshot"]["questions"]:
            assert (await dashboard.next_of("question"))["id"] == "q-epoch"
        reply = await dashboard.request(
            {"type": "answer", "id": "a1", "payload": {"question_id": "q-epoch", "text": "yes"}}
        )
        assert reply["type"] == "ack", reply
        answer = await asked
        assert answer.text == "yes" and client.welcome.epoch != old_epoch
        await client.close()
    finally:
        await second.stop()


@pytest_twisted.ensureDeferred
async def test_rate_limited_messages_are_sent_again_until_stored(tmp_path: Path) -> None:
    """rate_limited is not an error for the caller: the message stays in the outbox and is sent
    again after a backoff, and each is stored once."""
    server = await start_server(tmp_path / "data", rate=5.0, burst=2)
    try:
        dashboard = await server.dashboard()
        client = agent_client(server)
        await client.connect()
        codes: list[str] = []
        handle = client._refused

        def spy(message: dict[str, Any]) -> None:
            codes.append(message["payload"]["code"])
            handle(message)

        client._refused = spy  # type: ignore[method-assign]
        acks = [await d for d in [client.status(f"s{n}") for n in range(4)]]
        assert codes and set(codes) == {"rate_limited"}
        assert sorted(a.seq for a in acks) == sorted({a.seq for a in acks})
        states: list[str] = []
        while len(states) < 4:
            states.append((await dashboard.next_of("agent_status"))["payload"]["state"])
        assert sorted(states) == ["s0", "s1", "s2", "s3"]
        await client.close()
    finally:
        await server.stop()
