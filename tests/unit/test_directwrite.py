"""write_now: bytes sent straight to the socket and bytes left to the transport arrive in order,
over real loopback TCP connections."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest_twisted
from twisted.internet import protocol
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import deferLater

from vibews.directwrite import write_now

reactor: Any = _reactor


class _Server(protocol.Protocol):
    factory: _ServerFactory

    def connectionMade(self) -> None:
        self.factory.connected.callback(self)


class _ServerFactory(protocol.ServerFactory):
    protocol = _Server  # type: ignore[assignment]

    def __init__(self) -> None:
        self.connected: Deferred[_Server] = Deferred()


class _Reader(protocol.Protocol):
    """Collects what arrives; can stop reading, so the server's socket buffer fills up."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


@attrs.define
class _Pair:
    server: _Server
    client: _Reader


@pytest_twisted.async_yield_fixture
async def pair() -> AsyncIterator[_Pair]:
    factory = _ServerFactory()
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    client = _Reader()
    await protocol.ClientCreator(reactor, lambda: client).connectTCP(
        "127.0.0.1", port.getHost().port
    )
    server = await factory.connected
    yield _Pair(server, client)
    server.transport.abortConnection()  # type: ignore[union-attr]
    await client.lost
    await maybeDeferred(port.stopListening)


async def _received(pair: _Pair, size: int) -> bytes:
    while len(pair.client.received) < size:  # bounded by the test timeout
        await deferLater(reactor, 0.001, lambda: None)
    return bytes(pair.client.received)


@pytest_twisted.ensureDeferred
async def test_a_small_write_goes_out_without_the_transport(pair: _Pair) -> None:
    transport = pair.server.transport
    write_now(transport, b"hello")
    assert not transport._tempDataBuffer  # type: ignore[union-attr]
    assert transport.dataBuffer == b""  # type: ignore[union-attr]
    assert await _received(pair, 5) == b"hello"


@pytest_twisted.ensureDeferred
async def test_what_the_socket_does_not_take_is_queued_and_later_writes_wait_behind_it(
    pair: _Pair,
) -> None:
    """A reader that does not read: the socket takes part of a large write, the transport
    queues the rest; a later small write must not overtake it, even though the socket has room
    again by then."""
    pair.client.transport.pauseProducing()  # type: ignore[union-attr]
    big = bytes(range(256)) * (64 * 1024)  # 16 MiB: more than any loopback socket buffer
    write_now(pair.server.transport, big)
    transport = pair.server.transport
    assert transport._tempDataBuffer, "the socket took 16 MiB at once?"  # type: ignore[union-attr]
    write_now(transport, b"after")
    pair.client.transport.resumeProducing()  # type: ignore[union-attr]
    assert await _received(pair, len(big) + 5) == big + b"after"


@pytest_twisted.ensureDeferred
async def test_a_write_to_a_connection_the_peer_reset_does_not_raise(pair: _Pair) -> None:
    pair.client.transport.abortConnection()  # type: ignore[union-attr]
    await pair.client.lost
    for _ in range(3):  # the first send may still succeed; later ones hit the reset
        write_now(pair.server.transport, b"x" * 100_000)
        await deferLater(reactor, 0.01, lambda: None)


def test_other_transports_are_written_through_their_own_write() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.written: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.written.append(data)

    recorder = Recorder()
    write_now(recorder, b"frame")
    assert recorder.written == [b"frame"]
