"""Attacks on connections: slowloris, slow consumers, storms, floods past the rate, revoked
tokens, forged fields, foreign origins, mangled tokens. After each, a normal client still gets its
ack and deliveries and every acked message is in the store (``assert_still_serving``)."""

from __future__ import annotations

import json
import os
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, ensureDeferred, gatherResults
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from vibews.rawws import TEXT, RawWebSocket, open_raw
from vibews.testing import (
    RunningServer,
    assert_still_serving,
    handshake_status,
    start_server,
    status_of,
    upgrade_request,
)

THOUSAND = 1000


async def _eventually(condition: Any, timeout: float = 60.0, what: str = "") -> None:
    """Poll ``condition`` every 50 ms until it holds or the (generous) deadline passes."""
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"timed out waiting for {what or condition}")


async def _open_many(port: int, count: int, **kwargs: Any) -> list[RawWebSocket]:
    opened: list[RawWebSocket] = []
    for start in range(0, count, 100):  # in batches: the listen backlog is finite
        batch = [ensureDeferred(open_raw(port, **kwargs)) for _ in range(min(100, count - start))]
        opened += await gatherResults(batch)
    return opened


@pytest_twisted.ensureDeferred
async def test_slowloris_thousand_unfinished_handshakes(tmp_path: Path) -> None:
    """1000 connections send half a request head and stop. While they hang, a normal client's
    round trip completes (no deadline tighter than the helpers' 10 s); each is dropped by the
    handshake timeout, without a 101."""
    server = await start_server(tmp_path / "data", handshake_timeout=3)
    try:
        lorises = await _open_many(server.port, THOUSAND, upgrade=False)
        for loris in lorises:
            loris.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nX-a: ")
        acked = await assert_still_serving(server)
        results = await DeferredList([loris.wait_lost(timeout=60) for loris in lorises])
        assert all(ok for ok, _ in results), "a slowloris connection was never dropped"
        assert all(loris.status in (None, 0, 408) for loris in lorises)
        await assert_still_serving(server, acked)
    finally:
        await server.stop()


@pytest.mark.parametrize(
    "head",
    [
        b"X-Pad: " + b"a" * 17000 + b"\r\n",
        b"".join(b"X-%d: v\r\n" % i for i in range(101)),
    ],
    ids=["header-size", "header-count"],
)
@pytest_twisted.ensureDeferred
async def test_oversized_heads_get_431_while_others_are_served(
    server: RunningServer, head: bytes
) -> None:
    """300 connections with a head past 16 KiB or 100 lines each get 431 at once; a normal
    client's round trip completes while they are answered."""
    request = upgrade_request(host=f"127.0.0.1:{server.port}")[:-2] + head + b"\r\n"
    attacks = [ensureDeferred(status_of(server.port, request)) for _ in range(300)]
    acked = await assert_still_serving(server)
    statuses = await gatherResults(attacks)
    assert set(statuses) == {431}
    await assert_still_serving(server, acked)


@pytest_twisted.ensureDeferred
async def test_stalled_fragmented_messages_while_others_are_served(server: RunningServer) -> None:
    """200 connections each send 63 of a message's fragments (63 KB) and stall: a normal
    client's round trip completes meanwhile; the 64th fragment completes one message."""
    stallers = await _open_many(server.port, 200, token=server.agent_token)
    body = json.dumps({"type": "agent_status", "id": "st", "payload": {"state": "s"}}).encode()
    body = body[:-2] + b',"pad":"' + b"x" * (63500 - len(body) - 8) + b'"}}'
    pieces = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    assert len(pieces) == 64
    for staller in stallers:
        for k, piece in enumerate(pieces[:-1]):
            staller.send_frame(TEXT if k == 0 else 0, piece, fin=False)
    acked = await assert_still_serving(server)
    stallers[0].send_frame(0, pieces[-1])
    acked.append((await stallers[0].next_of("ack"))["seq"])
    for staller in stallers:
        staller.abort()
    await assert_still_serving(server, acked)


def _open_small_window(port: int, token: str, count: int) -> list[socket.socket]:
    """``count`` upgraded dashboards on plain sockets with a 4 KiB receive buffer, set before
    connecting (so the window is small from the start and the server's own buffer, which
    --max-write-buffer bounds, fills soon). Runs in a thread: the reactor answers meanwhile."""
    opened = []
    request = upgrade_request(
        headers={"Authorization": f"Bearer {token}"}, host=f"127.0.0.1:{port}"
    )
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(30)
        sock.connect(("127.0.0.1", port))
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)  # byte by byte: leave the frames in the socket
        assert head.startswith(b"HTTP/1.1 101 "), head[:40]
        opened.append(sock)
    return opened


def _close_code(sock: socket.socket) -> int | None:
    """Read until the server ends the connection; the code of its close frame, if it sent one."""
    data = b""
    try:
        while chunk := sock.recv(1 << 16):
            data += chunk
    except OSError:
        pass
    finally:
        sock.close()
    code = None
    while len(data) >= 2:
        size, offset = data[1] & 0x7F, 2
        if size == 126:
            size, offset = struct.unpack("!H", data[2:4])[0], 4
        elif size == 127:
            size, offset = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < offset + size:
            break
        if data[0] & 0x0F == 0x8:
            code = struct.unpack("!H", data[offset : offset + 2])[0]
        data = data[offset + size :]
    return code


@pytest_twisted.ensureDeferred
async def test_thousand_slow_consumers_are_closed_and_lose_nothing(tmp_path: Path) -> None:
    """1000 dashboards stop reading while an agent sends 16 KB messages: the server closes each
    with 1013 once more than --max-write-buffer waits for it (memory stays bounded), a dashboard
    that reads gets everything, and a resume afterwards replays every acked message."""
    server = await start_server(
        tmp_path / "data", max_write_buffer=64 * 1024, rate=0, max_connections=5000
    )
    try:
        slow = await deferToThread(
            _open_small_window, server.port, server.dashboard_token, THOUSAND
        )
        assert server.service.hub.connection_count() == THOUSAND
        agent = await server.agent()
        reader = await server.dashboard()
        blob = "x" * 16000
        acked: list[int] = []
        sent = 0
        while server.service.hub.connection_count() > 2 and sent < 400:
            reply = await agent.request(
                {"type": "agent_status", "id": f"s{sent}", "payload": {"state": "s", "b": blob}},
                timeout=60,
            )
            acked.append(reply["seq"])
            sent += 1
        assert server.service.hub.connection_count() == 2, "slow consumers still attached"
        seen: list[int] = []
        while len(seen) < len(acked):
            message = await reader.next_message(timeout=60)
            if message["type"] == "agent_status":
                seen.append(message["seq"])
        assert seen == acked
        # Each got 1013, or (the close frame waits behind the backlog, docs/protocol.rst
        # deviation 2) was dropped when it did not read the close within 5 s.
        codes = await deferToThread(lambda: [_close_code(sock) for sock in slow])
        assert set(codes) <= {1013, None}, set(codes)
        await assert_still_serving(server, acked)
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_connection_storm(server: RunningServer) -> None:
    """1000 connections opened and dropped at once (half mid-handshake, half right after the
    upgrade, none closing cleanly): the server forgets every one and goes on serving."""
    half = THOUSAND // 2
    unfinished = await _open_many(server.port, half, upgrade=False)
    for raw in unfinished:
        raw.send(b"GET / HTTP/1.1\r\n")
        raw.abort()
    upgraded = await _open_many(server.port, half, token=server.agent_token)
    assert all(raw.status == 101 for raw in upgraded)
    for raw in upgraded:
        raw.abort()
    await _eventually(lambda: server.service.hub.connection_count() == 0, what="storm forgotten")
    await assert_still_serving(server)


@pytest_twisted.ensureDeferred
async def test_faster_than_the_rate_limit(tmp_path: Path) -> None:
    """1000 messages at once with the default rate (100/s, burst 200): about the burst is acked,
    the rest refused with rate_limited and not stored; past --max-refused refusals the connection
    closes with 1008; every acked message is in the store."""
    server = await start_server(tmp_path / "data")
    try:
        flooder = await open_raw(server.port, server.agent_token)
        for i in range(THOUSAND):
            flooder.send_json({"type": "agent_status", "id": f"r{i}", "payload": {"state": "s"}})
        assert await flooder.wait_lost(timeout=60) == 1008
        refusals = [m for m in flooder.received if m["type"] == "error"]
        assert {r["payload"]["code"] for r in refusals} == {"rate_limited"}
        assert len(refusals) == 51  # --max-refused 50, the 51st closes
        # Refusals go out at once; the accepted ones are acked after their commit, which can
        # still be in flight in the store's worker thread when the 1008 arrives.
        await server.settled()
        stored = {
            json.loads(m.data)["id"]: m.seq
            for m in server.service.store.read(0, None, 5000)
            if m.type == "agent_status"
        }
        # The burst is stored (and a few the bucket refilled for), nothing after the closing
        # refusal. The 1008 can overtake the acks of the last ones (they wait for the commit): a
        # retry gets them as duplicates, nothing is lost.
        last = max(int(r["id"][1:]) for r in refusals)
        assert all(int(message_id[1:]) < last for message_id in stored)
        assert 200 <= len(stored) < 300, len(stored)
        assert {r["id"] for r in refusals}.isdisjoint(stored)
        retry = await server.agent()
        for message_id, seq in stored.items():
            message = {"type": "agent_status", "id": message_id, "payload": {"state": "s"}}
            again = await retry.request(message)
            # The re-sends count against the same rate limit: a refused one is re-sent after a
            # pause, as the error asks (how many are refused depends on the machine's speed).
            while again["type"] == "error" and again["payload"]["code"] == "rate_limited":
                await deferLater(reactor, 0.1, lambda: None)
                again = await retry.request(message)
            assert again == {"type": "ack", "id": message_id, "seq": seq, "duplicate": True}
        acks = [{"seq": seq} for seq in stored.values()]
        await assert_still_serving(server, [a["seq"] for a in acks])
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_token_revoked_mid_stream(server: RunningServer) -> None:
    """An agent streams messages while its token is removed: it is closed with 1008, everything
    acked before is stored, nothing after; the revoked token then gets 401."""
    secret = server.add_token("doomed", "agent")
    doomed = await open_raw(server.port, secret)
    for i in range(300):
        doomed.send_json({"type": "agent_status", "id": f"d{i}", "payload": {"state": "s"}})
        if i == 150:
            tokens = server.data / "tokens"
            kept = [ln for ln in tokens.read_text().splitlines() if not ln.startswith("doomed")]
            tokens.write_text("\n".join(kept) + "\n")
            server.service.watcher.reload("test")
    assert await doomed.wait_lost() == 1008
    acked = {m["id"]: m["seq"] for m in doomed.received if m["type"] == "ack"}
    stored = {
        m.seq
        for m in server.service.store.read(0, None, 5000)
        if json.loads(m.data).get("from") == "doomed" and m.type == "agent_status"
    }
    assert set(acked.values()) <= stored
    assert await handshake_status(server.port, headers={"Authorization": f"Bearer {secret}"}) == 401
    await assert_still_serving(server, acked.values())


@pytest_twisted.ensureDeferred
async def test_forged_from_and_seq(server: RunningServer) -> None:
    """``from`` and ``seq`` written by a client are replaced by the server's; unknown top-level
    fields are dropped, payload fields kept; an ack of a seq far in the future is harmless."""
    dashboard = await server.dashboard()
    agent = await server.agent()
    ack = await agent.request(
        {
            "type": "agent_status",
            "id": "forged",
            "from": "dashboard",
            "seq": 999999,
            "duplicate": True,
            "payload": {"state": "s", "from": "mallory", "seq": -1},
        }
    )
    assert ack["type"] == "ack" and "duplicate" not in ack and ack["seq"] != 999999
    relayed = await dashboard.next_of("agent_status")
    assert relayed["from"] == "agent" and relayed["seq"] == ack["seq"]
    assert "duplicate" not in relayed
    assert relayed["payload"] == {"state": "s", "from": "mallory", "seq": -1}
    agent.send_json({"type": "ack", "seq": 2**62})
    agent.send_json({"type": "ack", "seq": -(2**62)})
    agent.send_json({"type": "ack", "seq": 10**30})
    reply = await agent.request({"type": "agent_status", "id": "after", "payload": {"state": "s"}})
    assert reply["type"] == "ack", reply
    await assert_still_serving(server, [ack["seq"], reply["seq"]])


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("http://evil.example", 403),
        ("null", 403),
        ("file://", 403),
        ("http://127.0.0.1.evil.example", 403),
        ("https://127.0.0.1:{port}", 403),  # another scheme is another origin
        ("http://127.0.0.1:{port}", 101),
    ],
)
@pytest_twisted.ensureDeferred
async def test_cross_site_origin(server: RunningServer, origin: str, status: int) -> None:
    """A foreign Origin gets 403 even with a valid token; the server's own origin gets 101."""
    headers = {
        "Origin": origin.format(port=server.port),
        "Authorization": f"Bearer {server.dashboard_token}",
    }
    assert await handshake_status(server.port, headers=headers) == status
    await assert_still_serving(server)


def _mangled(token: str) -> dict[str, str]:
    return {
        "swapped-case": token.swapcase(),
        "upper": token.upper(),
        "padded": token + "=",
        "double-padded": token + "==",
        "truncated": token[:-1],
        "extended": token + "A",
        "percent-escaped": token[:5] + "%41" + token[6:],
    }


@pytest.mark.parametrize("source", ["header", "subprotocol", "query"])
@pytest.mark.parametrize(
    "mangling",
    [
        "swapped-case",
        "upper",
        "padded",
        "double-padded",
        "truncated",
        "extended",
        "percent-escaped",
    ],
)
@pytest_twisted.ensureDeferred
async def test_mangled_token_in_each_source_gets_401(
    server: RunningServer, source: str, mangling: str
) -> None:
    """A token with its case changed, base64 padding added, a character more or less: 401 in
    every source; the first source present decides alone."""
    bad = _mangled(server.agent_token)[mangling]
    port = server.port
    if source == "header":
        request = upgrade_request(
            headers={"Authorization": f"Bearer {bad}"}, host=f"127.0.0.1:{port}"
        )
    elif source == "subprotocol":
        request = upgrade_request(
            headers={"Sec-WebSocket-Protocol": f"vibews.v1, vibews.token.{bad}"},
            host=f"127.0.0.1:{port}",
        )
    else:
        request = upgrade_request(path=f"/?token={bad}", host=f"127.0.0.1:{port}")
    assert await status_of(port, request) == 401
    await assert_still_serving(server)


@pytest.mark.parametrize(
    "authorization",
    ["BEARER {t}", "bearer {t}", "Bearer  {t} ", "Bearer\t{t}"],
)
@pytest_twisted.ensureDeferred
async def test_bearer_scheme_is_case_insensitive(server: RunningServer, authorization: str) -> None:
    """The auth scheme is case-insensitive and whitespace around the token is not part of it
    (RFC 9110); the token itself is compared exactly."""
    headers = {"Authorization": authorization.format(t=server.agent_token)}
    assert await handshake_status(server.port, headers=headers) == 101


@pytest_twisted.ensureDeferred
async def test_max_connections_answers_503_and_frees_up(tmp_path: Path) -> None:
    """Past --max-connections new upgrades get 503; once one closes, a new one gets in."""
    server = await start_server(tmp_path / "data", max_connections=20)
    try:
        held = await _open_many(server.port, 20, token=server.agent_token)
        assert all(raw.status == 101 for raw in held)
        auth = {"Authorization": f"Bearer {server.agent_token}"}
        assert await handshake_status(server.port, headers=auth) == 503
        for raw in held[:5]:
            raw.abort()
        await _eventually(lambda: server.service.hub.connection_count() == 15)
        for raw in held[5:]:
            raw.abort()
        await _eventually(lambda: server.service.hub.connection_count() == 0)
        await assert_still_serving(server)
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_max_open_questions_per_agent(tmp_path: Path) -> None:
    """Past --max-open-questions, an agent's new question is refused with rate_limited (not
    stored); another agent is not affected; once one is answered, the next is accepted."""
    server = await start_server(tmp_path / "data", max_open_questions=5)
    try:
        agent = await server.agent()
        dashboard = await server.dashboard()
        acked = []
        for i in range(5):
            reply = await agent.request(
                {"type": "question", "id": f"q{i}", "payload": {"text": "?"}}
            )
            acked.append(reply["seq"])
        head = server.service.store.head()
        refused = await agent.request({"type": "question", "id": "q5", "payload": {"text": "?"}})
        assert refused["type"] == "error" and refused["payload"]["code"] == "rate_limited"
        assert "5 open questions" in refused["payload"]["message"]
        assert server.service.store.head() == head
        other = await server.agent(server.add_token("other", "agent"))
        reply = await other.request({"type": "question", "id": "o1", "payload": {"text": "?"}})
        assert reply["type"] == "ack"
        answer = await dashboard.request(
            {"type": "answer", "id": "a0", "payload": {"question_id": "q0", "text": "ok"}}
        )
        again = await agent.request({"type": "question", "id": "q5", "payload": {"text": "?"}})
        assert again["type"] == "ack", again
        # Room for the probe's own question.
        await dashboard.request(
            {"type": "answer", "id": "a1", "payload": {"question_id": "q1", "text": "ok"}}
        )
        await assert_still_serving(server, [*acked, reply["seq"], answer["seq"], again["seq"]])
    finally:
        await server.stop()


def test_enough_open_files_for_the_thousands() -> None:
    """The fixture raised the soft limit on open files (or it was high enough already)."""
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == resource.RLIM_INFINITY or soft >= 2 * THOUSAND + 100, soft
    assert os.cpu_count()
