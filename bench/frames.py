#!/usr/bin/env python3
"""Per-frame cost of reading client text frames: vibews' fast path against Autobahn's parser.

One VibeServerProtocol in memory (opening handshake done, a StringTransport, the hub replaced by
a no-op ``onMessage``), fed masked text frames with ``dataReceived``, timed with ``timeit``; the
same with the fast path switched off, which is the code path vibews used before
(``super().dataReceived``). Prints microseconds per frame, best of the repeats.

    python bench/frames.py                 # 90-byte frames (the latency scenario's size), 1 and 10 per read
    python bench/frames.py --sizes 90,300,1000,2000 --per-read 1,10
"""

from __future__ import annotations

import argparse
import timeit
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket.types import ConnectionRequest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from vibews import fastframes
from vibews.rawws import TEXT, frame
from vibews.server import ConnectionSettings, VibeServerProtocol, configure_factory
from vibews.testing import upgrade_request


class _Sink(VibeServerProtocol):
    def onConnect(self, request: ConnectionRequest) -> str | None:
        return None

    def onOpen(self) -> None:
        pass

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        pass


class _Factory(WebSocketServerFactory):
    protocol = _Sink  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.settings = ConnectionSettings()
        configure_factory(self, self.settings)
        options: Any = self.protocol
        options.openHandshakeTimeout = 0  # no timer on a reactor that never runs


def _open_protocol() -> Any:
    protocol: Any = _Factory().buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    protocol.makeConnection(StringTransport())
    protocol.dataReceived(upgrade_request())
    assert protocol.state == VibeServerProtocol.STATE_OPEN
    return protocol


def per_frame(size: int, per_read: int, fast: bool, number: int, repeat: int) -> float:
    """Microseconds per frame, best of ``repeat`` runs of ``number`` reads."""
    original = fastframes.parser_at_rest
    if not fast:
        fastframes.parser_at_rest = lambda protocol: False
    try:
        protocol = _open_protocol()
        text = (b'{"type":"agent_status","id":"m1","payload":{"state":"' + b"w" * size)[: size - 3]
        data = b"".join(frame(TEXT, text + b'"}}') for _ in range(per_read))
        receive = protocol.dataReceived
        best = min(timeit.repeat(lambda: receive(data), number=number, repeat=repeat))
    finally:
        fastframes.parser_at_rest = original
    return best / number / per_read * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="90", help="payload sizes in bytes, comma-separated")
    parser.add_argument("--per-read", default="1,10", help="frames per read, comma-separated")
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(f"{'payload':>8} {'frames/read':>11} {'autobahn us':>12} {'fast us':>8} {'ratio':>6}")
    for size in [int(s) for s in args.sizes.split(",")]:
        for per_read in [int(n) for n in args.per_read.split(",")]:
            slow = per_frame(size, per_read, False, args.number, args.repeat)
            fast = per_frame(size, per_read, True, args.number, args.repeat)
            print(f"{size:>8} {per_read:>11} {slow:>12.2f} {fast:>8.2f} {slow / fast:>5.1f}x")


if __name__ == "__main__":
    main()
