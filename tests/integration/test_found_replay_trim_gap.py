"""A resume replay paused by a slow reader while history is trimmed does not pass over the gap:
it either replays without a gap or says ``complete: false`` (contract sections 2 and 6). Before the
fix it skipped the trimmed messages and said ``complete: true``. Found by the hostile-input review;
kept as a regression test."""

from __future__ import annotations

import itertools
import json
import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread, deferToThread

from vibews.testing import start_server


class _Client:
    """A blocking WebSocket client on a raw socket with a tiny receive buffer (a slow reader)."""

    def __init__(self, port: int, token: str, rcvbuf: int | None = None) -> None:
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(30)
        sock.connect(("127.0.0.1", port))
        self.sock = sock
        self.buf = b""
        sock.sendall(
            (
                f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
            ).encode()
        )
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def _recv(self) -> bytes:
        data = self.sock.recv(1 << 16)
        if not data:
            raise EOFError
        return data

    def send(self, message: dict[str, Any]) -> None:
        payload = json.dumps(message).encode()
        n = len(payload)
        header = bytes([0x81])
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        key = os.urandom(4)
        self.sock.sendall(header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload)))

    def recv(self) -> dict[str, Any]:
        while True:
            while len(self.buf) < 2:
                self.buf += self._recv()
            length, offset = self.buf[1] & 0x7F, 2
            if length == 126:
                while len(self.buf) < 4:
                    self.buf += self._recv()
                length, offset = struct.unpack(">H", self.buf[2:4])[0], 4
            elif length == 127:
                while len(self.buf) < 10:
                    self.buf += self._recv()
                length, offset = struct.unpack(">Q", self.buf[2:10])[0], 10
            while len(self.buf) < offset + length:
                self.buf += self._recv()
            opcode = self.buf[0] & 0x0F
            payload, self.buf = self.buf[offset : offset + length], self.buf[offset + length :]
            if opcode == 0x1:
                return json.loads(payload)  # type: ignore[no-any-return]
            if opcode == 0x8:
                raise EOFError(payload)

    def close(self) -> None:
        self.sock.close()


def _scenario(
    port: int, agent_token: str, dashboard_token: str, replay_paused: Callable[[], bool]
) -> tuple[list[int], Any]:
    detail = "x" * 60_000
    agent = _Client(port, agent_token)
    assert agent.recv()["type"] == "welcome"

    def flood(count: int, tag: str) -> None:
        for i in range(count):
            agent.send(
                {
                    "type": "agent_status",
                    "id": f"{tag}-{i}",
                    "payload": {"state": "s", "detail": detail},
                }
            )
        acks, deadline = 0, time.monotonic() + 60
        while acks < count and time.monotonic() < deadline:
            if agent.recv()["type"] == "ack":
                acks += 1
        assert acks == count

    flood(150, "before")
    dashboard = _Client(port, dashboard_token, rcvbuf=4096)
    welcome = dashboard.recv()
    since = welcome["payload"]["seq"] - 80  # well inside the retained history (100)
    dashboard.send({"type": "resume", "payload": {"since": since}})
    # Poll (with a deadline) until the replay has filled the socket buffers and paused.
    give_up = time.monotonic() + 30
    while not replay_paused() and time.monotonic() < give_up:
        time.sleep(0.05)
    flood(300, "during")  # meanwhile history moves on and is trimmed
    seqs: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        message = dashboard.recv()
        if message["type"] == "resumed":
            agent.close()
            dashboard.close()
            return [since, *seqs], message
        seqs.append(message["seq"])
    raise AssertionError("no resumed")


@pytest_twisted.ensureDeferred
async def test_replay_paused_across_a_trim_has_no_silent_gap(tmp_path: Path) -> None:
    """A replay paused across a history trim is gap-free or reports complete: false."""
    server = await start_server(tmp_path / "data", history=100, rate=0, durability="process")

    def paused() -> bool:
        sessions = server.service.hub.sessions.values()
        return any(not s.live and s.peer.is_paused() for s in sessions)

    def replay_paused() -> bool:
        result: bool = blockingCallFromThread(reactor, paused)  # type: ignore[arg-type]
        return result

    try:
        seqs, resumed = await deferToThread(
            _scenario, server.port, server.agent_token, server.dashboard_token, replay_paused
        )
    finally:
        await server.stop()
    gaps = [(a, b) for a, b in itertools.pairwise(seqs) if b != a + 1]
    # Either the replay is gap-free, or it admits it is incomplete.
    assert not gaps or resumed["payload"]["complete"] is False, (gaps, resumed)
