"""An open connection drops the attributes that hold their usual values (memory per idle
connection, issue 9): it must still behave exactly as before, through Autobahn's own paths."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest_twisted
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.task import deferLater

from vibews.server import VibeServerProtocol
from vibews.testing import RunningServer, start_server


def _protocol(server: RunningServer) -> VibeServerProtocol:
    session = next(s for s in server.service.hub.sessions.values() if not s.is_agent)
    protocol: VibeServerProtocol = session.peer._protocol  # type: ignore[attr-defined]
    return protocol


@pytest_twisted.ensureDeferred
async def test_an_open_connection_keeps_a_small_dictionary_and_reads_usual_values(
    server: RunningServer,
) -> None:
    """About 20 instance attributes (CPython's dictionary stays at its 21-entry size); the ones
    dropped read their values from the class."""
    await server.dashboard()
    protocol = _protocol(server)
    assert len(vars(protocol)) <= 21, sorted(vars(protocol))
    assert "wasClean" not in vars(protocol)
    assert protocol.wasClean is False
    assert protocol.closedByMe is False
    assert protocol.state == WebSocketProtocol.STATE_OPEN
    assert "http_headers" not in vars(protocol)  # the handshake's text is forgotten
    assert protocol.connected == 1


@pytest_twisted.ensureDeferred
async def test_autobahn_queued_sends_still_go_out_in_order(server: RunningServer) -> None:
    """Autobahn's own send queue (used for "synchronous" sends) still delivers, and frames vibews
    sends afterwards wait behind it."""
    dashboard = await server.dashboard()
    protocol = _protocol(server)
    session = next(s for s in server.service.hub.sessions.values() if not s.is_agent)
    for n in (0, 1):
        frame = protocol.factory.prepareMessage(json.dumps({"type": "note", "n": n}).encode())
        protocol.sendData(frame.payloadHybi, sync=True)  # the first goes now, the second waits
    assert len(protocol.send_queue) == 1
    session.send({"type": "note", "n": 2})
    received = [await dashboard.next_message() for _ in range(3)]
    assert [m["n"] for m in received] == [0, 1, 2]
    assert len(protocol.send_queue) == 0


@pytest_twisted.ensureDeferred
async def test_a_close_after_open_records_how_it_closed(server: RunningServer) -> None:
    """Closing sets the flags again on the instance; the client gets the code."""
    dashboard = await server.dashboard()
    protocol = _protocol(server)
    protocol.close_with(1008, "token revoked")
    code, _reason = await dashboard.closed
    assert code == 1008
    assert protocol.closedByMe is True
    assert protocol.state == WebSocketProtocol.STATE_CLOSED


async def _until(condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    """Poll ``condition`` every 50 ms until it holds, failing after ``timeout`` seconds."""
    from twisted.internet import reactor

    deadline = reactor.seconds() + timeout
    while not condition():
        assert reactor.seconds() < deadline, f"timed out waiting for {what}"
        await deferLater(reactor, 0.05)


@pytest_twisted.ensureDeferred
async def test_the_keepalive_sweep_pings_and_a_client_that_answers_stays(
    tmp_path: Path,
) -> None:
    """With a 1 s interval the sweep pings the dashboard, Autobahn's client answers, and two
    answered pings later the connection is still registered; once it closes the sweep forgets it
    and leaves no timer of its own."""
    server = await start_server(tmp_path / "data", ping_interval=1.0, ping_timeout=1.0)
    try:
        dashboard = await server.dashboard()
        protocol = _protocol(server)
        peer = protocol._peer
        assert peer is not None
        keepalive = protocol.factory.keepalive
        first_due = peer.ping_at
        await _until(lambda: peer.ping_at >= first_due + 2, "two answered pings")
        assert any(s.peer is peer for s in server.service.hub.sessions.values())
        dashboard.disconnect()
        await dashboard.wait_closed()
        await _until(lambda: peer not in keepalive._connections, "the sweep to forget it")
        assert keepalive._call is None
    finally:
        await server.stop()


def test_no_usual_value_hides_a_base_class_attribute() -> None:
    """Every value the compaction relies on is a class attribute of vibews' protocol only:
    Autobahn's and Twisted's classes define none of those names."""
    from autobahn.twisted.websocket import WebSocketServerProtocol

    from vibews.server import _USUAL_VALUES

    assert len(_USUAL_VALUES) > 30
    for name, usual in _USUAL_VALUES.items():
        assert not hasattr(WebSocketServerProtocol, name), name
        assert VibeServerProtocol.__dict__[name] is usual
