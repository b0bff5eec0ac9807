"""The clock side of the question lifecycle: a reactor timer per deadline and per claim.

The store is the memory (deadlines and claims survive a restart there); these timers only decide
*when* the lifecycle's server-side transitions run. Each transition re-checks the stored state, so a
timer that fires late, or for a question that already closed, changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from vibews import lifecycle

RunWork = Callable[[lifecycle.Work, str], None]


def _cancel(timer: IDelayedCall | None) -> None:
    if timer is not None and timer.active():
        timer.cancel()


class QuestionTimers:
    """Expiry deadlines and claim lapses of open questions."""

    def __init__(self, clock: IReactorTime, run: RunWork) -> None:
        self._clock = clock
        self._run = run
        self._deadlines: dict[str, IDelayedCall] = {}
        self._claims: dict[str, tuple[str, IDelayedCall]] = {}  # question -> (connection, lapse)

    def _delay(self, when: float) -> float:
        return max(0.0, when - self._clock.seconds())

    def arm_deadline(self, question_id: str, deadline: float) -> None:
        _cancel(self._deadlines.pop(question_id, None))
        self._deadlines[question_id] = self._clock.callLater(
            self._delay(deadline), self._expire, question_id
        )

    def _expire(self, question_id: str) -> None:
        self._deadlines.pop(question_id, None)
        self._run(lifecycle.expire_work(question_id, self._clock.seconds()), "expiry")

    def hold_claim(self, question_id: str, connection_id: str, until: float) -> None:
        """A newer claim replaces the old one (the store already did): only its timer counts."""
        previous = self._claims.pop(question_id, None)
        if previous is not None:
            _cancel(previous[1])
        timer = self._clock.callLater(self._delay(until), self.lapse, question_id, connection_id)
        self._claims[question_id] = (connection_id, timer)

    def lapse(self, question_id: str, connection_id: str) -> None:
        """The claim's time is up or its connection closed (if it is still that connection's)."""
        held = self._claims.get(question_id)
        if held is None or held[0] != connection_id:
            return
        del self._claims[question_id]
        _cancel(held[1])
        self._run(lifecycle.lapse_claim_work(question_id, connection_id), "claim lapse")

    def forget(self, question_id: str) -> None:
        """The question left ``open``: its timers have nothing left to do."""
        _cancel(self._deadlines.pop(question_id, None))
        held = self._claims.pop(question_id, None)
        if held is not None:
            _cancel(held[1])

    def cancel_all(self) -> None:
        """At shutdown: the next start re-arms deadlines from the store and lapses claims."""
        for timer in self._deadlines.values():
            _cancel(timer)
        for _, timer in self._claims.values():
            _cancel(timer)
        self._deadlines.clear()
        self._claims.clear()
