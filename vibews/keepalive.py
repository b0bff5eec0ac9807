"""Pings every open connection every ``interval`` seconds and drops one that has not answered
within ``timeout`` seconds (contract section 4), from one periodic sweep over all connections.

Autobahn's own auto-ping does the same with two timer objects per connection (the next ping, the
pong's deadline), each a ``_BatchedCall`` with its closure, created again at every ping and pong:
about half a kilobyte of every idle connection, and a few percent of each handshake's CPU. Here a
connection holds two numbers and the payload it was pinged with; one reactor timer runs a sweep
at most every second (a quarter of the shorter period when that is less), so a ping goes out and a
silent connection is dropped at most one sweep late. Autobahn's other rule is kept: a data frame
that arrives while a pong is awaited counts as an answer (``autoPingRestartOnAnyTraffic``, its
default), so a client busy sending is not dropped for a late pong.
"""

from __future__ import annotations

import struct
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime

MAX_SWEEP_PERIOD = 1.0


class Pingable(Protocol):
    """What the sweep needs of a connection: its timing state and two actions."""

    ping_at: float  # when the next ping is due (while no pong is awaited)
    pong_by: float  # when the awaited pong is overdue; 0 when none is awaited
    ping_payload: bytes | None

    def send_ping(self, payload: bytes) -> None: ...

    def ping_timed_out(self) -> None: ...


class KeepAlive:
    """The connections to keep alive, and the sweep that pings them and drops the silent."""

    def __init__(self, reactor: IReactorTime, interval: float, timeout: float) -> None:
        self._reactor = reactor
        self.interval = interval
        self.timeout = timeout
        self._period = min(MAX_SWEEP_PERIOD, interval / 4, timeout / 4)
        self._connections: set[Pingable] = set()
        self._call: IDelayedCall | None = None
        self._pings = 0

    def add(self, connection: Pingable) -> None:
        """A connection just opened: its first ping is due one interval from now."""
        connection.ping_at = self._reactor.seconds() + self.interval
        connection.pong_by = 0.0
        connection.ping_payload = None
        self._connections.add(connection)
        if self._call is None:
            self._call = self._reactor.callLater(self._period, self._sweep)

    def discard(self, connection: Pingable) -> None:
        """A connection closed; with none left, no timer stays pending."""
        self._connections.discard(connection)
        if not self._connections and self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None

    def pong(self, connection: Pingable, payload: bytes) -> None:
        """A pong arrived: the answer if it carries the payload of the awaited ping."""
        if connection.pong_by and payload == connection.ping_payload:
            self._answered(connection)

    def traffic(self, connection: Pingable) -> None:
        """A data frame arrived: it answers an awaited ping as well as a pong would."""
        if connection.pong_by:
            self._answered(connection)

    def _answered(self, connection: Pingable) -> None:
        connection.pong_by = 0.0
        connection.ping_payload = None
        connection.ping_at = self._reactor.seconds() + self.interval

    def _sweep(self) -> None:
        self._call = None
        now = self._reactor.seconds()
        # A copy: dropping a connection discards it from the set.
        for connection in list(self._connections):
            if connection.pong_by:
                if now >= connection.pong_by:
                    connection.pong_by = 0.0
                    connection.ping_timed_out()
            elif now >= connection.ping_at:
                self._pings += 1
                payload = struct.pack(">Q", self._pings)
                connection.ping_payload = payload
                connection.pong_by = now + self.timeout
                connection.send_ping(payload)
        if self._connections and self._call is None:
            self._call = self._reactor.callLater(self._period, self._sweep)
