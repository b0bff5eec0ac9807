"""Frames are queued per connection and written once per reactor turn (issue 9's fan-out work);
nothing queued may be lost or reordered by that, least of all behind a close frame."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, StringTransport

from vibews.directwrite import write_now
from vibews.testing import RunningServer


@pytest_twisted.ensureDeferred
async def test_frames_queued_in_a_turn_go_out_before_a_close_started_in_that_turn(
    server: RunningServer,
) -> None:
    dashboard = await server.dashboard()
    session = next(s for s in server.service.hub.sessions.values() if not s.is_agent)
    for n in range(3):
        session.send({"type": "note", "n": n})  # queued until the next reactor turn
    session.peer.close(1008, "token revoked")  # in the same turn
    received = [await dashboard.next_message() for _ in range(3)]
    assert [m["n"] for m in received] == [0, 1, 2]
    code, _reason = await dashboard.closed
    assert code == 1008


@pytest_twisted.ensureDeferred
async def test_many_frames_in_one_turn_arrive_whole_and_in_order(server: RunningServer) -> None:
    """More than the 64 KiB that are written at once, so both paths (immediate and next turn)
    run in one burst."""
    dashboard = await server.dashboard()
    session = next(s for s in server.service.hub.sessions.values() if not s.is_agent)
    padding = "x" * 1000
    for n in range(200):
        session.send({"type": "note", "n": n, "padding": padding})
    received = [await dashboard.next_message() for _ in range(200)]
    assert [m["n"] for m in received] == list(range(200))
    assert all(m["padding"] == padding for m in received)


def _connection() -> tuple[tcp.Connection, socket.socket, MemoryReactor]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    reactor = MemoryReactor()
    connection = tcp.Connection(ours, Protocol(), reactor)
    connection.connected = 1
    return connection, theirs, reactor


def _receive_all(connection: tcp.Connection, theirs: socket.socket, size: int) -> bytes:
    """What the peer reads, letting the connection send what it buffered (as the reactor would
    when the socket is writable)."""
    received = b""
    while len(received) < size:
        connection.doWrite()
        try:
            received += theirs.recv(1 << 20)
        except BlockingIOError:
            pass
    return received


def test_write_now_sends_at_once_when_nothing_is_buffered() -> None:
    """No buffering and no registration with the reactor: the bytes are on the socket."""
    connection, theirs, reactor = _connection()
    write_now(connection, b"frame")
    assert theirs.recv(100) == b"frame"
    assert connection not in reactor.getWriters()
    assert connection._tempDataLen == 0


def test_write_now_queues_behind_bytes_already_buffered() -> None:
    """Something Autobahn wrote (a pong, a close frame) and not sent yet goes out first."""
    connection, theirs, reactor = _connection()
    connection.write(b"pong;")
    write_now(connection, b"frame")
    with pytest.raises(BlockingIOError):
        theirs.recv(100)  # nothing jumped the queue
    assert connection in reactor.getWriters()
    assert _receive_all(connection, theirs, 10) == b"pong;frame"


def test_write_now_buffers_what_the_kernel_does_not_take_in_order() -> None:
    """A frame larger than the socket buffer: the kernel takes a part, Twisted buffers the rest
    (so its pause of the producer, which detects slow readers, still sees it)."""
    connection, theirs, reactor = _connection()
    connection.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    data = bytes(range(256)) * 4096  # 1 MiB
    write_now(connection, data)
    assert 0 < connection._tempDataLen < len(data)
    assert connection in reactor.getWriters()
    write_now(connection, b"next")
    assert _receive_all(connection, theirs, len(data) + 4) == data + b"next"


def test_write_now_leaves_a_closing_connection_to_twisted() -> None:
    """After loseConnection nothing is sent directly (Twisted decides what still goes out)."""
    connection, theirs, _reactor = _connection()
    connection.disconnecting = True
    write_now(connection, b"late")
    with pytest.raises(BlockingIOError):
        theirs.recv(100)
    assert connection._tempDataLen == 4


def test_write_now_uses_write_on_other_transports() -> None:
    """TLS and test transports take their own ``write``."""
    transport = StringTransport()
    write_now(transport, b"frame")
    assert transport.value() == b"frame"


def _buffered(transport: Any) -> int:
    """Bytes Twisted's transport holds that the socket has not taken yet."""
    return int(len(transport.dataBuffer) - transport.offset + transport._tempDataLen)


@pytest_twisted.ensureDeferred
async def test_a_flush_with_nothing_buffered_sends_at_once(server: RunningServer) -> None:
    """With nothing waiting in the transport, a flush hands its bytes to the socket in the same
    call: nothing is left in Twisted's buffer and the socket is not watched for writability."""
    from twisted.internet import reactor

    dashboard = await server.dashboard()
    session = next(s for s in server.service.hub.sessions.values() if not s.is_agent)
    transport = session.peer._protocol.transport  # type: ignore[attr-defined]
    assert _buffered(transport) == 0
    session.send({"type": "note", "n": 1})
    session.peer.flush()  # type: ignore[attr-defined]
    assert _buffered(transport) == 0
    assert transport not in reactor.getWriters()
    assert (await dashboard.next_message())["n"] == 1


@pytest_twisted.ensureDeferred
async def test_what_the_socket_does_not_take_is_buffered_and_arrives_in_order(
    server: RunningServer,
) -> None:
    """A client that stops reading fills the socket: the rest of a flush, and every flush after
    it, waits in Twisted's buffer behind it; once the client reads again everything arrives whole
    and in order."""
    dashboard = await server.dashboard()
    session = next(s for s in server.service.hub.sessions.values() if not s.is_agent)
    peer: Any = session.peer
    transport = peer._protocol.transport
    dashboard.pause_reading()
    padding = "x" * 16_000
    sent = 0
    while _buffered(transport) == 0 and sent < 4000:  # at most 64 MB: some socket fills first
        session.send({"type": "note", "n": sent, "padding": padding})
        peer.flush()
        sent += 1
    assert _buffered(transport) > 0, "the socket never filled"
    for _ in range(2):  # behind the buffered bytes, under the 64 KiB that pause the producer
        session.send({"type": "note", "n": sent, "padding": padding})
        peer.flush()
        sent += 1
    dashboard.resume_reading()
    received = [await dashboard.next_message() for _ in range(sent)]
    assert [m["n"] for m in received] == list(range(sent))
    assert all(m["padding"] == padding for m in received)


def _record_writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, bytes]]:
    """Every direct write of a flush, in order: (transport, bytes)."""
    from vibews import server as server_module

    writes: list[tuple[Any, bytes]] = []

    def recording_write_now(transport: Any, data: bytes) -> None:
        writes.append((transport, data))
        write_now(transport, data)

    monkeypatch.setattr(server_module, "write_now", recording_write_now)
    return writes


@pytest_twisted.ensureDeferred
async def test_the_ack_is_written_before_the_relays_of_its_turn(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent waits on its ack; the dashboards' copies only inform. In the turn after the
    commit the agent's connection is written first, though the relays were queued with it."""
    dashboards = [await server.dashboard() for _ in range(3)]
    agent = await server.agent()
    for dashboard in dashboards:
        await dashboard.next_of("presence")
    writes = _record_writes(monkeypatch)
    ack = await agent.request(
        {"type": "agent_status", "id": "s-1", "payload": {"state": "working"}}
    )
    assert ack["type"] == "ack"
    for dashboard in dashboards:
        assert (await dashboard.next_of("agent_status"))["seq"] == ack["seq"]
    agent_session = next(s for s in server.service.hub.sessions.values() if s.is_agent)
    agent_transport = agent_session.peer._protocol.transport  # type: ignore[attr-defined]
    first_transport, first_bytes = writes[0]
    assert first_transport is agent_transport
    assert b'"type":"ack"' in first_bytes
    assert len(writes) == 1 + len(dashboards)


@pytest_twisted.ensureDeferred
async def test_a_reply_does_not_overtake_frames_queued_before_it_on_its_connection(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection with a reply is flushed ahead of the others with everything it was sent in
    that turn, in the order sent: the reply never jumps the frames before it."""
    first, second = await server.dashboard(), await server.dashboard()
    sessions = [s for s in server.service.hub.sessions.values() if not s.is_agent]
    writes = _record_writes(monkeypatch)
    sessions[1].send({"type": "note", "n": 0})  # queued among the rest
    sessions[0].send({"type": "note", "n": 1})  # queued among the rest ...
    sessions[0].send_encoded(b'{"type":"ack","n":2}', reply=True)  # ... then made first
    sessions[0].send({"type": "note", "n": 3})
    clients = {id(sessions[0]): first, id(sessions[1]): second}
    received = [await clients[id(sessions[0])].next_message() for _ in range(3)]
    assert [m["n"] for m in received] == [1, 2, 3]
    assert (await clients[id(sessions[1])].next_message())["n"] == 0
    transports = [s.peer._protocol.transport for s in sessions]  # type: ignore[attr-defined]
    assert [transport for transport, _ in writes] == transports
