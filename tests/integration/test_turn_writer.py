"""Frames are queued per connection and written once per reactor turn (issue 9's fan-out work);
nothing queued may be lost or reordered by that, least of all behind a close frame."""

from __future__ import annotations

from typing import Any

import pytest_twisted

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
