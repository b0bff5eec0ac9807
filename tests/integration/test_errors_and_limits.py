"""Refusals keep the connection open; limits close it with the contract's codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from vibews import handlers
from vibews.testing import RunningServer, connect, raw_exchange, start_server, upgrade_request


async def _refused(client: Any, raw: bytes) -> dict[str, Any]:
    client.send_raw(raw)
    reply: dict[str, Any] = await client.next_of("error")
    return reply


@pytest.mark.parametrize(
    ("raw", "code", "mentions"),
    [
        (b"{not json", "invalid_json", "JSON"),
        (b'{"type": "agent_status", "payload": {"state": NaN}}', "invalid_json", "JSON"),
        (b'{"type":"agent_status","payload":{"state":"x"}} trailing', "invalid_json", "JSON"),
        (b'{"type":"agent_status","payload":{"state":"\\ud800"}}', "invalid_json", "surrogate"),
        (b"[1, 2]", "invalid_message", "object"),
        (b"[" * 65 + b"]" * 65, "invalid_message", "nested"),
        (b'{"type": 7}', "invalid_message", "type"),
        (b'{"type":"agent_status","id":"","payload":{"state":"x"}}', "invalid_message", "id"),
        (
            b'{"type":"agent_status","timestamp":"yesterday","payload":{"state":"x"}}',
            "invalid_message",
            "timestamp",
        ),
        (b'{"type":"dance","id":"d1"}', "unknown_type", "dance"),
        (b'{"type":"welcome","id":"w1"}', "unknown_type", "server"),
        (b'{"type":"answer","id":"f1","payload":{}}', "forbidden", "answer"),
        (b'{"type":"agent_status","id":"p1","payload":{"state":""}}', "invalid_message", "state"),
        (b'{"type":"agent_status","id":"p2"}', "invalid_message", "payload"),
        (
            b'{"type":"task_update","id":"p3","payload":{"task_id":"t","status":"s","progress":2}}',
            "invalid_message",
            "progress",
        ),
        (b'{"type":"ack","seq":"3"}', "invalid_message", "seq"),
        (b'{"type":"resume","payload":{"since":-1}}', "invalid_message", "since"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_each_refusal_names_its_code_and_keeps_the_connection(
    server: RunningServer, raw: bytes, code: str, mentions: str
) -> None:
    """A refused message gets one ``error`` with the contract's code and a message naming the
    problem; the connection stays open and the next good message is acked."""
    agent = await server.agent()
    error = await _refused(agent, raw)
    assert error["payload"]["code"] == code
    assert mentions.lower() in error["payload"]["message"].lower()
    parsed_id = None
    try:
        parsed_id = json.loads(raw).get("id")
    except (ValueError, AttributeError):
        pass
    assert error["id"] == (parsed_id or None)
    ok = await agent.request({"type": "agent_status", "id": "ok", "payload": {"state": "s"}})
    assert ok["type"] == "ack"


@pytest_twisted.ensureDeferred
async def test_invalid_id_is_reported_with_null_id(server: RunningServer) -> None:
    """An id that is not a string of 1-128 characters is reported with "id": null."""
    agent = await server.agent()
    error = await _refused(agent, json.dumps({"type": "x", "id": "i" * 129}).encode())
    assert error["id"] is None and error["payload"]["code"] == "invalid_message"


@pytest_twisted.ensureDeferred
async def test_dashboard_may_not_send_agent_types(server: RunningServer) -> None:
    """A dashboard sending agent_status is refused with forbidden."""
    dashboard = await server.dashboard()
    error = await dashboard.request({"type": "agent_status", "id": "x", "payload": {"state": "s"}})
    assert error["payload"]["code"] == "forbidden"


@pytest_twisted.ensureDeferred
async def test_internal_error_is_reported_and_logged(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure inside a handler answers internal_error; the connection and the server go on."""

    def broken(txn: Any, incoming: Any) -> Any:
        raise RuntimeError("injected fault")

    monkeypatch.setitem(handlers.HANDLERS, "task_update", broken)
    agent = await server.agent()
    error = await agent.request(
        {"type": "task_update", "id": "t", "payload": {"task_id": "t", "status": "s"}}
    )
    assert error["payload"]["code"] == "internal_error"
    ok = await agent.request({"type": "agent_status", "id": "ok", "payload": {"state": "s"}})
    assert ok["type"] == "ack"


@pytest_twisted.ensureDeferred
async def test_store_that_cannot_write_answers_unavailable(server: RunningServer) -> None:
    """When SQLite cannot commit (here: the database is full), messages are refused with
    ``unavailable`` instead of acked, /healthz says 503, and writes resume once space is back."""
    agent = await server.agent()
    dashboard = await server.dashboard()
    # The seq of the last stored message, from its ack (a welcome can be older than a commit still
    # in flight, such as the agent's presence).
    first = await agent.request({"type": "agent_status", "id": "first", "payload": {"state": "s"}})
    db = server.service.store._db
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")
    error = await agent.request(
        {"type": "agent_status", "id": "big", "payload": {"state": "s", "blob": "x" * 60000}}
    )
    assert error["payload"]["code"] == "unavailable"
    health = await raw_exchange(
        server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert health.startswith(b"HTTP/1.1 503 ")
    db.execute("PRAGMA max_page_count = 1073741823")
    ok = await agent.request(
        {"type": "agent_status", "id": "big", "payload": {"state": "s", "blob": "x" * 60000}}
    )
    assert ok["type"] == "ack" and "duplicate" not in ok
    relayed = await dashboard.next_of("agent_status")
    assert relayed["id"] == "first"
    relayed = await dashboard.next_of("agent_status")
    assert relayed["seq"] == ok["seq"] == first["seq"] + 1


@pytest_twisted.ensureDeferred
async def test_binary_frame_closes_with_1003(server: RunningServer) -> None:
    """A binary frame closes the connection with 1003."""
    agent = await server.agent()
    agent.send_raw(b'{"type":"agent_status"}', binary=True)
    code, _ = await agent.wait_closed()
    assert code == 1003


@pytest_twisted.ensureDeferred
async def test_oversize_message_closes_with_1009(tmp_path: Path) -> None:
    """A message above --max-message-size closes with 1009; one at the limit is fine."""
    server = await start_server(tmp_path / "data", max_message_size=1000)
    try:
        agent = await server.agent()
        frame = b'{"type":"agent_status","payload":{"state":"s","pad":"%s"}}'
        at_limit = frame % (b"x" * (1000 - len(frame % b"")))
        assert len(at_limit) == 1000
        agent.send_raw(at_limit)
        reply = await agent.next_message()
        assert reply["type"] in ("ack", "error")  # handled, not closed
        agent.send_raw(b'{"type":"agent_status","payload":{"state":"' + b"x" * 1000 + b'"}}')
        code, _ = await agent.wait_closed()
        assert code == 1009
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_too_many_fragments_closes_with_1009(server: RunningServer) -> None:
    """A message split into more than 64 fragments closes with 1009; 64 fragments are fine."""
    agent = await server.agent()
    message = json.dumps({"type": "agent_status", "id": "f", "payload": {"state": "s" * 40}})
    payload = message.encode()
    size = -(-len(payload) // 64)
    agent.sendMessage(payload, fragmentSize=size)
    ack = await agent.next_message()
    assert ack["type"] == "ack"
    agent.sendMessage(payload, fragmentSize=1)
    code, _ = await agent.wait_closed()
    assert code == 1009


@pytest_twisted.ensureDeferred
async def test_rate_limit_refuses_with_rate_limited(tmp_path: Path) -> None:
    """Past the burst, messages are refused with rate_limited (naming the message's id), not
    stored; acks count against the rate too."""
    server = await start_server(tmp_path / "data", rate=1, burst=5)
    try:
        agent = await server.agent()
        for _ in range(4):
            agent.send_json({"type": "ack", "seq": 0})
        for i in range(3):
            agent.send_json({"type": "agent_status", "id": f"m{i}", "payload": {"state": "s"}})
        # Refusals are immediate; the ack waits for the commit, so it may come last.
        replies = {r["id"]: r for r in [await agent.next_message() for _ in range(3)]}
        assert replies["m0"]["type"] == "ack"
        assert replies["m1"]["payload"]["code"] == "rate_limited"
        assert replies["m2"]["payload"]["code"] == "rate_limited"
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_too_many_refused_messages_close_with_1008(tmp_path: Path) -> None:
    """More than --max-refused refused messages within 10 s close the connection with 1008."""
    server = await start_server(tmp_path / "data", max_refused=5)
    try:
        agent = await server.agent()
        for _ in range(5):
            agent.send_raw(b"garbage")
        errors = [await agent.next_message() for _ in range(5)]
        assert all(e["type"] == "error" for e in errors)
        agent.send_raw(b"garbage")
        code, _ = await agent.wait_closed()
        assert code == 1008
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_slow_reader_closes_with_1013_and_others_keep_receiving(tmp_path: Path) -> None:
    """A dashboard that stops reading is closed with 1013 once more than --max-write-buffer bytes
    wait for it; a dashboard that reads gets everything; the slow one can resume without loss."""
    server = await start_server(tmp_path / "data", max_write_buffer=256 * 1024, rate=0)
    try:
        slow = await server.dashboard()
        fast = await server.dashboard()
        agent = await server.agent()
        await slow.next_of("presence")
        slow.pause_reading()  # stop reading from the socket
        blob = "x" * 30000
        sent = 0
        closed: Deferred[Any] = slow.wait_closed(timeout=60)
        last_seq = 0
        while server.service.hub.connection_count() == 3 and sent < 4000:
            reply = await agent.request(
                {"type": "agent_status", "id": f"m{sent}", "payload": {"state": "s", "b": blob}}
            )
            last_seq = reply["seq"]
            sent += 1
        assert server.service.hub.connection_count() == 2, "slow reader still connected"
        slow.resume_reading()
        code, _ = await closed
        assert code == 1013
        seqs: list[int] = []
        while len(seqs) < sent:
            message = await fast.next_message()
            if message["type"] == "agent_status":
                seqs.append(message["seq"])
        assert seqs[-1] == last_seq
        back = await server.dashboard()
        replayed, resumed = await back.resume(0)
        assert [m["seq"] for m in replayed] == list(range(1, last_seq + 1))
        assert resumed["payload"]["complete"] is True
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_unanswered_pings_drop_the_connection_and_the_agent_goes_offline(
    tmp_path: Path,
) -> None:
    """A client that never answers pings is dropped after the ping timeout, and (with no grace)
    its agent is announced offline."""
    server = await start_server(
        # Whole seconds: Autobahn's timers are quantised to the second (txaio's batched timer).
        tmp_path / "data",
        ping_interval=1,
        ping_timeout=2,
        presence_grace=0,
    )
    try:
        dashboard = await server.dashboard()
        request = upgrade_request(headers={"Authorization": f"Bearer {server.agent_token}"})
        # A raw client: completes the handshake, then never answers a ping.
        response = await raw_exchange(server.port, request, timeout=15)
        assert response.startswith(b"HTTP/1.1 101 ")
        online = await dashboard.next_of("presence")
        offline = await dashboard.next_of("presence")
        assert online["payload"]["online"] is True
        assert offline["payload"]["online"] is False
        assert offline["payload"]["agent"] == "agent"
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_presence_grace_hides_a_quick_reconnect(tmp_path: Path) -> None:
    """An agent that reconnects within --presence-grace causes no presence at all; one that stays
    away is announced offline with its last_seen."""
    server = await start_server(tmp_path / "data", presence_grace=0.5)
    try:
        dashboard = await server.dashboard()
        agent = await server.agent()
        assert (await dashboard.next_message())["payload"]["online"] is True
        agent.disconnect()
        await agent.wait_closed()
        again = await server.agent()
        status = await again.request(
            {"type": "agent_status", "id": "s", "payload": {"state": "back"}}
        )
        assert (await dashboard.next_message())["seq"] == status["seq"]
        again.disconnect()
        await again.wait_closed()
        offline = await dashboard.next_message()
        assert offline["type"] == "presence" and offline["payload"]["online"] is False
        assert offline["payload"]["last_seen"].endswith("Z")
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_connections_are_independent(server: RunningServer) -> None:
    """A client closed for bad behaviour does not disturb another client's round trip."""
    victim = await server.agent()
    bystander = await connect(server.port, server.agent_token)
    await bystander.next_message()
    victim.send_raw(b"\x00", binary=True)
    await victim.wait_closed()
    reply = await bystander.request({"type": "agent_status", "id": "s", "payload": {"state": "s"}})
    assert reply["type"] == "ack"


@pytest_twisted.ensureDeferred
async def test_invalid_utf8_in_a_text_frame_closes_with_1007(server: RunningServer) -> None:
    """A text frame that is not valid UTF-8 closes the connection with 1007."""
    agent = await server.agent()
    agent.send_raw(b'{"type":"agent_status","payload":{"state":"\xff\xfe"}}')
    code, _ = await agent.wait_closed()
    assert code == 1007


@pytest_twisted.ensureDeferred
async def test_number_out_of_range_is_refused_not_stored(server: RunningServer) -> None:
    """A number that overflows to infinity is refused as invalid_json (it could not be relayed)."""
    agent = await server.agent()
    error = await _refused(
        agent, b'{"type":"agent_status","id":"n","payload":{"state":"s","n":1e400}}'
    )
    assert error["payload"]["code"] == "invalid_json"
    ok = await agent.request({"type": "agent_status", "id": "n", "payload": {"state": "s"}})
    assert ok["type"] == "ack" and "duplicate" not in ok
