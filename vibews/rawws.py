"""A raw WebSocket client for hostile tests: frames built by hand, so a test can send what no
well-behaved library would (bad opcodes, reserved bits, unmasked or endless fragments, floods).

It speaks just enough RFC 6455 to read the server's replies: the 101, text frames, the close code.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from vibews.testing import DEFAULT_TIMEOUT, observe, upgrade_request

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True
) -> bytes:
    """One frame as a client sends it (masked unless ``mask`` is False)."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    size = len(payload)
    bit = 0x80 if mask else 0
    if size < 126:
        head += bytes([bit | size])
    elif size < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", size)
    if not mask:
        return head + payload
    key = os.urandom(4)
    repeated = (key * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        size, "big"
    )
    return head + key + masked


class RawWebSocket(Protocol):
    """Sends the upgrade, then hands-built frames; parses what the server sends back."""

    def __init__(self) -> None:
        self.buffer = b""
        self.status: int | None = None
        self.upgraded: Deferred[int] = Deferred()
        self.frames: list[tuple[int, bytes]] = []
        self.close_code: int | None = None
        self.lost: Deferred[int | None] = Deferred()
        self.received: list[dict[str, Any]] = []
        self._waiting: list[tuple[str, Deferred[dict[str, Any]]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if self.status is None:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            self.status = int(head.split(b" ", 2)[1])
            self.buffer = rest
            self.upgraded.callback(self.status)
        self._parse()

    def _parse(self) -> None:
        while len(self.buffer) >= 2:
            opcode, size, offset = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
            if size == 126:
                if len(self.buffer) < 4:
                    return
                size, offset = struct.unpack("!H", self.buffer[2:4])[0], 4
            elif size == 127:
                if len(self.buffer) < 10:
                    return
                size, offset = struct.unpack("!Q", self.buffer[2:10])[0], 10
            if len(self.buffer) < offset + size:
                return
            payload = self.buffer[offset : offset + size]
            self.buffer = self.buffer[offset + size :]
            self.frames.append((opcode, payload))
            if opcode == CLOSE:
                if len(payload) >= 2:
                    self.close_code = struct.unpack("!H", payload[:2])[0]
                # Answer the close as a client should, so the server need not wait it out.
                self.send_frame(CLOSE, payload[:2])
            if opcode == TEXT:
                self._deliver(json.loads(payload))

    def _deliver(self, message: dict[str, Any]) -> None:
        for entry in self._waiting:
            wanted_type, d = entry
            if message.get("type") == wanted_type:
                self._waiting.remove(entry)
                d.callback(message)
                return
        self.received.append(message)

    def next_of(self, message_type: str, timeout: float = DEFAULT_TIMEOUT) -> Deferred[Any]:
        """The first text message of ``message_type`` not yet handed out."""
        from twisted.internet import reactor

        d: Deferred[dict[str, Any]] = Deferred()
        for message in self.received:
            if message.get("type") == message_type:
                self.received.remove(message)
                d.callback(message)
                return d
        self._waiting.append((message_type, d))
        d.addTimeout(timeout, reactor)
        return d

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.upgraded.called:
            self.upgraded.callback(0)
        self.lost.callback(self.close_code)

    def send(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def send_frame(self, opcode: int, payload: bytes, **options: Any) -> None:
        self.send(frame(opcode, payload, **options))

    def send_json(self, message: Any) -> None:
        self.send_frame(TEXT, json.dumps(message).encode())

    def wait_lost(self, timeout: float = DEFAULT_TIMEOUT) -> Deferred[int | None]:
        """Fires with the close code the server sent (None if none) once the TCP connection ends."""
        return observe(self.lost, timeout)

    def abort(self) -> None:
        self.transport.abortConnection()  # type: ignore[union-attr]


async def open_raw(
    port: int,
    token: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    upgrade: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> RawWebSocket:
    """A raw connection; with ``upgrade`` it sends the opening handshake (``token`` in the
    Authorization header) and waits for the status line. Check ``status`` for 101."""
    from twisted.internet import reactor

    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=timeout)
    raw: Any = await endpoint.connect(Factory.forProtocol(RawWebSocket))
    if upgrade:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        raw.send(upgrade_request(headers=all_headers, host=f"127.0.0.1:{port}"))
        upgraded = raw.upgraded
        upgraded.addTimeout(timeout, reactor)
        await upgraded
    opened: RawWebSocket = raw
    return opened
