"""Every request head of a connection is held to the opening-handshake limits, pipelined ones
included (the first fix checked only the first head of a read). Found by the hostile-input review;
kept as a regression test."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol

from vibews.testing import RunningServer, raw_exchange


class _Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        if not self.lost.called:
            self.lost.callback(None)


def _upgrade(port: int, token: str, extra_lines: int) -> bytes:
    lines = [
        "GET / HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        f"Authorization: Bearer {token}",
    ]
    lines += [f"X-Filler-{i}: v" for i in range(extra_lines)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest_twisted.ensureDeferred
async def test_pipelined_upgrade_with_too_many_header_lines_is_refused(
    server: RunningServer,
) -> None:
    """A second, pipelined request head is held to the same limits as the first: 431 (here at
    once, for the whole connection), never a 101."""
    upgrade = _upgrade(server.port, server.agent_token, 300)
    assert len(upgrade) < 16 * 1024  # only the line count is over the limit
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + upgrade
    data = await raw_exchange(server.port, request)  # the server closes after its 431
    assert b"HTTP/1.1 101" not in data, "the over-limit upgrade was accepted"
    assert b"HTTP/1.1 431" in data, data[-300:]
