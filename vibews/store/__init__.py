"""The store: the hub's memory. One interface, so the embedded SQLite store and a shared one (Redis)
can stand behind the same hub.

Writes go through :meth:`IStore.transact`: the hub hands over a function that reads and writes through
an :class:`IStoreTransaction`; the store runs it atomically together with the other work of the same
reactor turn, commits once, and only then fires the Deferred. That is how "ack only after durably
stored" and "relay only after durably stored" hold, and why the rules (handlers) are written once,
against the transaction interface, whatever store is behind it.

Reads outside a transaction (snapshot, replay, pending answers) see committed state only.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred
from zope.interface import Interface

T = TypeVar("T")


class StoreUnavailable(Exception):
    """The store cannot take writes right now (disk full, I/O error, Redis away). Retry later."""


@attrs.frozen
class StoredMessage:
    """A journal entry: the frame exactly as relayed, and who besides dashboards receives it."""

    seq: int
    type: str
    data: bytes
    agent: str | None = None  # also delivered to this agent's connections (answers)


@attrs.frozen
class Claim:
    by: str
    until: float  # POSIX time
    connection: str


@attrs.frozen
class QuestionRecord:
    """A question's place in its lifecycle: ``open`` → ``answered`` | ``expired`` | ``withdrawn``."""

    id: str
    agent: str
    state: str
    seq: int
    deadline: float | None = None  # POSIX time it expires at, if it has one
    schema: Mapping[str, Any] | None = None
    answer_seq: int | None = None
    claim: Claim | None = None
    delivered: bool = False


@attrs.frozen
class AgentRecord:
    name: str
    online: bool
    status: Mapping[str, Any] | None
    last_seen: str | None


@attrs.frozen
class Snapshot:
    """Committed state at ``seq``: what a dashboard's ``welcome`` shows."""

    seq: int
    agents: Mapping[str, AgentRecord]
    questions: list[Mapping[str, Any]]
    tasks: Mapping[str, Mapping[str, Any]]


class IStoreTransaction(Interface):
    """Reads and writes inside one atomic unit of work. Reads see this unit's own writes."""

    def find_duplicate(sender: str, message_id: str) -> int | None:
        """The ``seq`` under which ``sender`` already stored ``message_id``, if it is still known."""

    def append(
        message_type: str,
        sender: str | None,
        message_id: str | None,
        agent: str | None,
        build: Callable[[int], Mapping[str, Any]],
    ) -> StoredMessage:
        """Give the next ``seq`` to the frame ``build(seq)`` returns and add it to the journal."""

    def set_agent_status(name: str, payload: Mapping[str, Any]) -> None:
        """Remember an agent's last ``agent_status`` payload for the snapshot."""

    def set_presence(name: str, online: bool, last_seen: str) -> None:
        """Remember whether an agent is online, and when it was last seen."""

    def online_agents() -> list[str]:
        """Agents the store believes online (at start: those a dead process left online)."""

    def set_task(task_id: str, frame: Mapping[str, Any]) -> None:
        """Remember the last ``task_update`` of a task, as relayed."""

    def get_question(question_id: str) -> QuestionRecord | None:
        """The stored question with this id, open or not."""

    def count_open_questions(agent: str) -> int:
        """How many of ``agent``'s questions are ``open`` (for ``--max-open-questions``)."""

    def add_question(
        question_id: str,
        agent: str,
        seq: int,
        frame: Mapping[str, Any],
        deadline: float | None,
        schema: Mapping[str, Any] | None,
    ) -> None:
        """Store a new open question, as relayed."""

    def close_question(
        question_id: str, state: str, closing_seq: int, answer_seq: int | None = None
    ) -> None:
        """Move a question out of ``open`` (its claim goes with it)."""

    def set_claim(question_id: str, claim: Claim | None) -> None:
        """Replace (or with None, drop) a question's claim."""

    def claimed_questions() -> list[QuestionRecord]:
        """Open questions that carry a claim."""

    def overdue_questions(now: float) -> list[QuestionRecord]:
        """Open questions whose deadline is at or before ``now``."""

    def mark_delivered(answer_seq: int, delivered_at: str) -> str | None:
        """Record that the answer ``answer_seq`` reached its agent; the question's id the first
        time, None if it was already recorded (or is unknown)."""

    def add_pending(agent: str, message: StoredMessage) -> None:
        """Keep an answer for ``agent`` until one of its connections acks it."""

    def clear_pending(agent: str, seqs: Collection[int]) -> list[int]:
        """Forget the pending answers ``seqs`` of ``agent`` (they were acked); returns the seqs
        that were still pending."""


class IStore(Interface):
    """The hub's memory, committed durably before anything is acked or relayed."""

    epoch: str  # names this store's history; a resume from another epoch is incomplete

    def transact(work: Callable[[IStoreTransaction], T]) -> Deferred[T]:
        """Run ``work`` atomically with the rest of this turn's work; fire after the commit.

        The Deferred fails with whatever ``work`` raised (its writes undone), or with
        :class:`StoreUnavailable` when the commit itself failed (every write of the batch undone).
        """

    def head() -> int:
        """The newest committed ``seq`` (0 before the first message)."""

    def oldest() -> int:
        """The oldest ``seq`` still in the history (``head() + 1`` when it is empty)."""

    def snapshot(agent_names: Collection[str]) -> Snapshot:
        """Committed state for a dashboard's ``welcome``; ``agent_names`` are listed even if unseen."""

    def pending_answers(agent: str) -> list[StoredMessage]:
        """Answers for ``agent`` not yet acked by any of its connections, in ``seq`` order."""

    def deadlines() -> list[tuple[str, float]]:
        """(question id, deadline) of every open question that has one, to re-arm timers."""

    def read(after: int, agent: str | None, limit: int) -> list[StoredMessage]:
        """Up to ``limit`` journal entries with ``seq > after``: all of them (``agent`` None, for a
        dashboard) or those delivered to ``agent``."""

    def problem() -> str | None:
        """None when the store takes writes; otherwise what is wrong, for ``/healthz``."""

    def close() -> Deferred[None]:
        """Commit what is queued, then release the store."""
