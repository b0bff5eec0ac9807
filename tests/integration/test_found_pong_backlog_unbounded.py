"""Pongs count towards the slow-reader limit.

Contract (protocol-v1.md, section 4): "A client that reads too slowly (more than 1 MiB waiting to
be written to it) is closed with code 1013". Pings are free (they do not count toward the rate), and
Autobahn writes each pong straight to the transport; before the fix, a client that pinged and never
read made the server hold its pongs without bound (50 MB of pings grew a real server by 60 MB).
Found by the hostile-input review; kept as a regression test.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread, deferToThread

from vibews.testing import start_server

PING = 0x9
PONG = 0xA
CLOSE = 0x8


def _masked(opcode: int, payload: bytes) -> bytes:
    key = os.urandom(4)
    return (
        bytes([0x80 | opcode, 0x80 | len(payload)])
        + key
        + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    )


def _scenario(
    port: int, token: str, upload: int, detached: Callable[[], bool]
) -> tuple[int, int | None]:
    """Upload ``upload`` bytes of pings without reading, then read: (pong bytes seen before a close
    frame or the end, the close code if any)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(4096)
    assert buf.startswith(b"HTTP/1.1 101"), buf[:60]
    buf = buf.partition(b"\r\n\r\n")[2]

    chunk = _masked(PING, b"p" * 125) * 1000
    sent = 0
    while sent < upload and not detached():
        sock.sendall(chunk)
        sent += len(chunk)
    # Poll (with a deadline) until the server has given up on this reader, then read.
    give_up = time.monotonic() + 30
    while not detached() and time.monotonic() < give_up:
        time.sleep(0.05)

    pong_bytes, code = 0, None
    deadline = time.monotonic() + 30
    sock.settimeout(3)
    try:
        while time.monotonic() < deadline:
            while len(buf) < 2:
                data = sock.recv(1 << 16)
                if not data:
                    raise EOFError
                buf += data
            length, offset = buf[1] & 0x7F, 2
            if length == 126:
                while len(buf) < 4:
                    buf += sock.recv(1 << 16)
                length, offset = struct.unpack(">H", buf[2:4])[0], 4
            while len(buf) < offset + length:
                data = sock.recv(1 << 16)
                if not data:
                    raise EOFError
                buf += data
            opcode = buf[0] & 0x0F
            payload, buf = buf[offset : offset + length], buf[offset + length :]
            if opcode == PONG:
                pong_bytes += length + 2
            elif opcode == CLOSE:
                code = struct.unpack(">H", payload[:2])[0]
                break
    except (EOFError, OSError):
        pass
    finally:
        sock.close()
    return pong_bytes, code


@pytest_twisted.ensureDeferred
async def test_unread_pongs_count_toward_the_slow_reader_limit(tmp_path: Path) -> None:
    """A client that pings and never reads is closed with 1013 like any slow reader."""
    limit = 1 << 20
    server = await start_server(tmp_path / "data", max_write_buffer=limit)

    def detached() -> bool:
        count: int = blockingCallFromThread(
            reactor,  # type: ignore[arg-type]
            server.service.hub.connection_count,
        )
        return count == 0

    try:
        pong_bytes, code = await deferToThread(
            _scenario, server.port, server.agent_token, 8 << 20, detached
        )
    finally:
        await server.stop()
    # At most the limit plus socket buffers may wait for a client before it is closed with 1013.
    assert code == 1013 and pong_bytes < 4 * limit, (pong_bytes, code)
