"""The keep-alive sweep: pings every ``interval``, drops a connection whose pong is ``timeout``
late (at most one sweep period later), takes a data frame as an answer, and leaves no timer
behind once every connection is gone."""

from __future__ import annotations

from twisted.internet.task import Clock

from vibews.keepalive import KeepAlive


class _Connection:
    def __init__(self) -> None:
        self.ping_at = 0.0
        self.pong_by = 0.0
        self.ping_payload: bytes | None = None
        self.pings: list[tuple[float, bytes]] = []
        self.timeouts: list[float] = []
        self.clock: Clock | None = None

    def send_ping(self, payload: bytes) -> None:
        assert self.clock is not None
        self.pings.append((self.clock.seconds(), payload))

    def ping_timed_out(self) -> None:
        assert self.clock is not None
        self.timeouts.append(self.clock.seconds())


def _setup(interval: float = 20, timeout: float = 20) -> tuple[Clock, KeepAlive, _Connection]:
    clock = Clock()
    keepalive = KeepAlive(clock, interval, timeout)
    connection = _Connection()
    connection.clock = clock
    keepalive.add(connection)
    return clock, keepalive, connection


def _run(clock: Clock, until: float, step: float = 0.25) -> None:
    while clock.seconds() < until:
        clock.advance(step)


def test_first_ping_after_one_interval_then_one_interval_after_each_pong() -> None:
    clock, keepalive, connection = _setup()
    _run(clock, 19.5)
    assert connection.pings == []
    _run(clock, 21)
    assert len(connection.pings) == 1
    sent_at, payload = connection.pings[0]
    assert 20 <= sent_at <= 21
    _run(clock, 30)
    assert len(connection.pings) == 1  # no second ping while the first is unanswered
    keepalive.pong(connection, payload)
    _run(clock, 49.5)
    assert len(connection.pings) == 1
    _run(clock, 51)
    assert len(connection.pings) == 2
    assert connection.pings[1][1] != payload
    assert connection.timeouts == []


def test_a_silent_connection_is_dropped_after_the_timeout_and_not_before() -> None:
    clock, _keepalive, connection = _setup(interval=20, timeout=20)
    _run(clock, 21)
    sent_at = connection.pings[0][0]
    _run(clock, sent_at + 19.5)
    assert connection.timeouts == []
    _run(clock, sent_at + 21)
    assert len(connection.timeouts) == 1
    assert sent_at + 20 <= connection.timeouts[0] <= sent_at + 21


def test_a_pong_with_another_payload_is_no_answer() -> None:
    clock, keepalive, connection = _setup(interval=1, timeout=2)
    _run(clock, 1.5)
    keepalive.pong(connection, b"something else")
    _run(clock, 4)
    assert len(connection.timeouts) == 1


def test_data_while_a_pong_is_awaited_answers_it() -> None:
    """Autobahn's default (autoPingRestartOnAnyTraffic): a client busy sending is not dropped."""
    clock, keepalive, connection = _setup(interval=1, timeout=2)
    _run(clock, 1.5)
    assert len(connection.pings) == 1
    keepalive.traffic(connection)
    _run(clock, 2.25)
    assert len(connection.pings) == 1  # the next ping waits one interval from the answer
    _run(clock, 3)
    assert len(connection.pings) == 2
    assert connection.timeouts == []


def test_data_while_no_pong_is_awaited_does_not_delay_the_ping() -> None:
    clock, keepalive, connection = _setup(interval=1, timeout=2)
    _run(clock, 0.75)
    keepalive.traffic(connection)
    _run(clock, 1.25)
    assert len(connection.pings) == 1


def test_no_timer_is_left_once_every_connection_is_gone() -> None:
    clock, keepalive, connection = _setup()
    other = _Connection()
    other.clock = clock
    keepalive.add(other)
    keepalive.discard(connection)
    assert clock.getDelayedCalls()
    keepalive.discard(other)
    assert clock.getDelayedCalls() == []
    keepalive.add(connection)  # and the sweep starts again with the next connection
    _run(clock, 21)
    assert len(connection.pings) == 1


def test_a_dropped_connection_is_no_longer_pinged() -> None:
    clock, keepalive, connection = _setup(interval=1, timeout=1)
    _run(clock, 2.5)
    assert len(connection.timeouts) == 1
    keepalive.discard(connection)  # the adapter does this when the connection closes
    pings = len(connection.pings)
    _run(clock, 10)
    assert len(connection.pings) == pings
    assert clock.getDelayedCalls() == []
