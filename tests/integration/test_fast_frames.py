"""Incoming text frames over real sockets, however the client packs or splits them: the fast path
(vibews.fastframes) and Autobahn's parser together answer every frame in order, and every unusual
frame after a common one still ends in the close code it always did."""

from __future__ import annotations

import json
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.task import deferLater

from vibews.rawws import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    RawWebSocket,
    frame,
    open_raw,
)
from vibews.server import VibeServerProtocol
from vibews.testing import DEFAULT_TIMEOUT, RunningServer, assert_still_serving, start_server


@pytest_twisted.async_yield_fixture
async def unlimited(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """A server without a rate limit, so a burst of hundreds of messages is all accepted."""
    running = await start_server(tmp_path / "data", rate=0)
    yield running
    await running.stop()


def status(message_id: str, padding: int = 0) -> bytes:
    message = {"type": "agent_status", "id": message_id, "payload": {"state": "s" + "é" * padding}}
    return json.dumps(message, ensure_ascii=False).encode()


async def acks(agent: RawWebSocket, count: int) -> list[dict[str, Any]]:
    return [await agent.next_of("ack") for _ in range(count)]


def server_side(server: RunningServer, agent_count_before: int) -> VibeServerProtocol:
    """The server's protocol of the agent connection opened last."""
    sessions = [s for s in server.service.hub.sessions.values() if s.is_agent]
    assert len(sessions) == agent_count_before + 1
    protocol: VibeServerProtocol = sessions[-1].peer._protocol  # type: ignore[attr-defined]
    return protocol


async def read_by_server(protocol: VibeServerProtocol, octets: int) -> None:
    """Wait (with a deadline) until the server has read ``octets`` bytes of frames."""
    from twisted.internet import reactor

    for _ in range(int(DEFAULT_TIMEOUT / 0.001)):
        if protocol.trafficStats.incomingOctetsWireLevel >= octets:
            return
        await deferLater(reactor, 0.001, lambda: None)
    raise AssertionError(f"the server read {protocol.trafficStats.incomingOctetsWireLevel} octets")


@pytest_twisted.ensureDeferred
async def test_many_frames_in_one_write_are_acked_and_relayed_in_order(
    unlimited: RunningServer,
) -> None:
    """300 messages of 60 to 180 bytes in one write: 300 acks and 300 relays, in order."""
    server = unlimited
    agent = await open_raw(server.port, server.agent_token)
    dashboard = await server.dashboard()
    ids = [f"m{i}" for i in range(300)]
    agent.send(b"".join(frame(TEXT, status(i, n % 60)) for n, i in enumerate(ids)))
    got = await acks(agent, 300)
    assert [a["id"] for a in got] == ids
    seqs = [a["seq"] for a in got]
    assert seqs == sorted(seqs)
    relayed: list[dict[str, Any]] = []
    while len(relayed) < 300:
        message = await dashboard.next_message()
        if message["type"] == "agent_status":
            relayed.append(message)
    assert [(m["id"], m["seq"]) for m in relayed] == list(zip(ids, seqs, strict=True))
    assert relayed[7]["payload"]["state"] == "s" + "é" * 7
    await assert_still_serving(server, seqs)


@pytest_twisted.ensureDeferred
async def test_a_frame_split_at_every_byte_is_acked_once(server: RunningServer) -> None:
    """One message sent in two writes, cut after each of its bytes in turn (a 16-bit length
    frame, so the cut falls in the header, the extended length, the key and the payload); the
    server reads the first part before the second is sent. Every one is acked, once, in order."""
    agent = await open_raw(server.port, server.agent_token)
    protocol = server_side(server, 0)
    payload = status("split", padding=60)
    assert 126 <= len(payload) < 65536
    read = protocol.trafficStats.incomingOctetsWireLevel
    for cut in range(1, len(payload) + 8):
        data = frame(TEXT, payload.replace(b"split", f"s{cut:04d}".encode()))
        agent.send(data[:cut])
        await read_by_server(protocol, read + cut)
        agent.send(data[cut:])
        read += len(data)
        assert (await agent.next_of("ack"))["id"] == f"s{cut:04d}"
    assert [m["type"] for m in agent.received] == ["welcome"]
    await assert_still_serving(server)


@pytest_twisted.ensureDeferred
async def test_control_frames_and_fragments_after_common_frames_in_one_write(
    server: RunningServer,
) -> None:
    """A message, a ping, a fragmented message, another message, all in one write: three acks
    in order, and the pong."""
    agent = await open_raw(server.port, server.agent_token)
    whole = status("fragmented")
    agent.send(
        frame(TEXT, status("first"))
        + frame(PING, b"are you there")
        + frame(TEXT, whole[:10], fin=False)
        + frame(CONTINUATION, whole[10:])
        + frame(TEXT, status("last"))
    )
    assert [a["id"] for a in await acks(agent, 3)] == ["first", "fragmented", "last"]
    assert (PONG, b"are you there") in agent.frames
    await assert_still_serving(server)


async def stored_ids(server: RunningServer) -> list[str]:
    await server.settled()
    stored = [json.loads(m.data) for m in server.service.store.read(0, None, 1 << 20)]
    return [m["id"] for m in stored if m["type"] == "agent_status"]


@pytest_twisted.ensureDeferred
async def test_a_close_after_a_message_in_one_write(server: RunningServer) -> None:
    """The close is answered with 1000; the message before it is stored (its ack would follow
    the close frame, so none is sent, as before the fast path), the one after it is not."""
    agent = await open_raw(server.port, server.agent_token)
    agent.send(
        frame(TEXT, status("before-close"))
        + frame(CLOSE, struct.pack("!H", 1000))
        + frame(TEXT, status("after-close"))
    )
    assert await agent.wait_lost() == 1000
    assert await stored_ids(server) == ["before-close"]
    await assert_still_serving(server)


@pytest.mark.parametrize(
    ("unusual", "code"),
    [
        (frame(BINARY, b"\x00\x01"), 1003),
        (frame(TEXT, b'{"type":"agent_status","id":"\xed\xa0\x80"}'), 1007),
        (frame(TEXT, b'{"type":"agent_status","id":"\xe2\x82'), 1007),
        (frame(TEXT, b"x" * 65537), 1009),
        (frame(TEXT, b"{}", mask=False), 1002),
        (frame(TEXT, b"{}", rsv=1), 1002),
        (b"\x81\xfe\x00\x02\x00\x00\x00\x00{}", 1002),  # 16-bit length for 2 bytes
        (frame(TEXT, b"{", fin=False) + frame(TEXT, b"}"), 1002),
    ],
    ids=[
        "binary",
        "surrogate",
        "truncated-utf8",
        "oversize",
        "unmasked",
        "reserved-bit",
        "non-minimal-length",
        "interleaved-message",
    ],
)
@pytest_twisted.ensureDeferred
async def test_unusual_frames_after_messages_close_as_before(
    server: RunningServer, unusual: bytes, code: int
) -> None:
    """Two messages, an unusual frame and another message in one write: the unusual frame ends
    the connection with its code, the two messages before it are stored in order, the one after
    it is not."""
    agent = await open_raw(server.port, server.agent_token)
    agent.send(
        frame(TEXT, status("one"))
        + frame(TEXT, status("two"))
        + unusual
        + frame(TEXT, status("after"))
    )
    assert await agent.wait_lost() == code
    assert await stored_ids(server) == ["one", "two"]
    await assert_still_serving(server)
