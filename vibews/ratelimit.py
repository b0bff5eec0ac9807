"""Per-connection limits that need only a clock: the message rate and the refused-message window."""

from __future__ import annotations

from collections import deque


class TokenBucket:
    """``rate`` messages a second sustained, ``burst`` at once; a rate of 0 means no limit."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")  # one per connection

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(max(burst, 1))
        self._tokens = self._burst
        self._stamp = now

    def take(self, now: float) -> bool:
        if self._rate <= 0:
            return True
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class RefusalWindow:
    """Counts refusals in a sliding window, to close a client that keeps sending garbage.

    Memory is bounded: the deque never holds more than ``limit + 1`` stamps. It is made on the
    first refusal: most connections never have one, and an empty deque costs 760 bytes, which
    over 10,000 idle connections is 7 MiB.
    """

    __slots__ = ("_limit", "_stamps", "_window")  # one per connection

    def __init__(self, limit: int, window: float) -> None:
        self._limit = limit
        self._window = window
        self._stamps: deque[float] | None = None

    def add(self, now: float) -> bool:
        """Record one refusal; True when the limit is now exceeded."""
        stamps = self._stamps
        if stamps is None:
            stamps = self._stamps = deque(maxlen=self._limit + 1)
        stamps.append(now)
        while stamps and stamps[0] <= now - self._window:
            stamps.popleft()
        return len(stamps) > self._limit
