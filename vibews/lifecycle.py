"""The question state machine, in one place: ``open`` → ``answered`` | ``expired`` | ``withdrawn``.

Every transition is a function run inside a store transaction, so the state it reads and the messages it
stores are one atomic step whatever store is behind it. Clients cause transitions with ``question``,
``answer``, ``withdraw`` and ``claim``; the server causes them when a deadline passes, a claim lapses,
or the asking agent acks an answer (receipt). Each returns the stored messages to deliver; the hub
turns the ``opened``/``closed``/``claimed`` hints of :class:`Accepted` into timers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from vibews import protocol
from vibews.protocol import Refusal
from vibews.schema import ValueRefused, validate_value
from vibews.store import Claim, IStoreTransaction, QuestionRecord, StoredMessage
from vibews.timestamps import format_rfc3339, parse_rfc3339
from vibews.tokens import Identity

OPEN = "open"
ANSWERED = "answered"
EXPIRED = "expired"
WITHDRAWN = "withdrawn"


@attrs.frozen
class Accepted:
    """A client message that is stored (or was already): what to ack, what to relay, and which
    question timers change."""

    message_id: str
    seq: int
    duplicate: bool = False
    deliveries: tuple[StoredMessage, ...] = ()
    opened: tuple[str, float] | None = None  # a question with a deadline: arm its expiry
    closed: str | None = None  # a question left ``open``: drop its timers
    claimed: tuple[str, float] | None = None  # claimed by the sender's connection until then


@attrs.frozen
class Incoming:
    """A checked client message with the server's fields decided."""

    sender: Identity
    message: protocol.DataMessage
    message_id: str
    timestamp: str
    now: float
    connection_id: str = ""
    claim_ttl: float = 60.0
    max_open_questions: int = 1000

    @property
    def payload(self) -> Mapping[str, Any]:
        return self.message.payload

    def frame(self, seq: int) -> dict[str, Any]:
        return protocol.relayed(
            self.message.type, self.message_id, self.timestamp, self.sender.name, seq, self.payload
        )


def append(txn: IStoreTransaction, incoming: Incoming, agent: str | None = None) -> StoredMessage:
    """Store the client's message as relayed (``agent``: also delivered to that agent)."""
    return txn.append(
        incoming.message.type, incoming.sender.name, incoming.message_id, agent, incoming.frame
    )


def _question_or_refuse(txn: IStoreTransaction, incoming: Incoming) -> QuestionRecord:
    question_id = incoming.payload["question_id"]
    question = txn.get_question(question_id)
    if question is None:
        raise Refusal(
            protocol.UNKNOWN_QUESTION, f"no question with id '{question_id}'", incoming.message_id
        )
    return question


def _require_open(question: QuestionRecord, incoming: Incoming) -> None:
    if question.state != OPEN:
        raise Refusal(
            protocol.ALREADY_ANSWERED,
            f"question '{question.id}' is no longer open: it is {question.state}",
            incoming.message_id,
        )


def _close(
    txn: IStoreTransaction,
    question: QuestionRecord,
    reason: str,
    incoming: Incoming | None = None,
    answer_seq: int | None = None,
) -> StoredMessage:
    """Store ``question_closed`` (to dashboards and the asking agent) and the new state. When a
    client caused it (withdraw), the message carries the client's id, so a retry is a duplicate."""
    closing = txn.append(
        "question_closed",
        None if incoming is None else incoming.sender.name,
        None if incoming is None else incoming.message_id,
        question.agent,
        lambda seq: protocol.question_closed(seq, question.id, reason),
    )
    txn.close_question(question.id, reason, closing.seq, answer_seq)
    if reason == EXPIRED:
        # Nobody answered: the agent must still learn it, even if it was offline at the deadline,
        # so the closing waits for its ack like an answer would.
        txn.add_pending(question.agent, closing)
    return closing


def _deadline(payload: Mapping[str, Any], now: float) -> float | None:
    if "timeout" in payload:
        return now + float(payload["timeout"])
    if "expires_at" in payload:
        return parse_rfc3339(payload["expires_at"])
    return None


def ask(txn: IStoreTransaction, incoming: Incoming) -> Accepted:
    existing = txn.get_question(incoming.message_id)
    if existing is not None:
        if existing.agent != incoming.sender.name:
            raise Refusal(
                protocol.CONFLICT,
                f"question id '{incoming.message_id}' is already used by another agent; choose a unique id",
                incoming.message_id,
            )
        # The same agent re-sent a question whose id left the duplicate window: same question.
        return Accepted(incoming.message_id, existing.seq, duplicate=True)
    if txn.count_open_questions(incoming.sender.name) >= incoming.max_open_questions:
        # Open questions live in every dashboard's snapshot: an agent that asks without end
        # would grow every welcome. A quota, like the rate: wait (for answers) and re-send.
        raise Refusal(
            protocol.RATE_LIMITED,
            f"agent '{incoming.sender.name}' already has {incoming.max_open_questions} open"
            " questions (--max-open-questions); re-send this one once some are answered,"
            " withdrawn or expired",
            incoming.message_id,
        )
    stored = append(txn, incoming)
    deadline = _deadline(incoming.payload, incoming.now)
    schema = incoming.payload.get("schema")
    txn.add_question(
        incoming.message_id,
        incoming.sender.name,
        stored.seq,
        incoming.frame(stored.seq),
        deadline,
        schema,
    )
    if deadline is not None and deadline <= incoming.now:
        question = txn.get_question(incoming.message_id)
        assert question is not None
        closing = _close(txn, question, EXPIRED)
        return Accepted(
            incoming.message_id, stored.seq, deliveries=(stored, closing), closed=question.id
        )
    opened = None if deadline is None else (incoming.message_id, deadline)
    return Accepted(incoming.message_id, stored.seq, deliveries=(stored,), opened=opened)


def _check_answer_content(question: QuestionRecord, incoming: Incoming) -> None:
    """The payload checks that need the question: ``value`` against its schema, or ``text``."""
    payload = incoming.payload
    accepting = payload.get("action", "accept") == "accept"

    def refuse(text: str) -> Refusal:
        return Refusal(protocol.INVALID_MESSAGE, text, incoming.message_id)

    if question.schema is None:
        if "value" in payload:
            raise refuse("payload.value: is only allowed for a question that has a schema")
        if accepting and "text" not in payload:
            raise refuse("payload.text: is required (a string) to accept")
        return
    if not accepting:
        if "value" in payload:
            raise refuse("payload.value: is only allowed with action 'accept'")
        return
    if "value" not in payload:
        raise refuse("payload.value: is required to accept a question that has a schema")
    try:
        validate_value(question.schema, payload["value"])
    except ValueRefused as refused:
        raise refuse(str(refused)) from None


def answer(txn: IStoreTransaction, incoming: Incoming) -> Accepted:
    question = _question_or_refuse(txn, incoming)
    _check_answer_content(question, incoming)
    _require_open(question, incoming)
    stored = append(txn, incoming, agent=question.agent)
    txn.add_pending(question.agent, stored)
    closing = _close(txn, question, ANSWERED, answer_seq=stored.seq)
    return Accepted(
        incoming.message_id, stored.seq, deliveries=(stored, closing), closed=question.id
    )


def withdraw(txn: IStoreTransaction, incoming: Incoming) -> Accepted:
    question = _question_or_refuse(txn, incoming)
    if question.agent != incoming.sender.name:
        raise Refusal(
            protocol.FORBIDDEN,
            f"only the agent that asked may withdraw question '{question.id}'",
            incoming.message_id,
        )
    _require_open(question, incoming)
    closing = _close(txn, question, WITHDRAWN, incoming)
    return Accepted(incoming.message_id, closing.seq, deliveries=(closing,), closed=question.id)


def claim(txn: IStoreTransaction, incoming: Incoming) -> Accepted:
    question = _question_or_refuse(txn, incoming)
    _require_open(question, incoming)
    until = incoming.now + incoming.claim_ttl
    txn.set_claim(
        question.id, Claim(by=incoming.sender.name, until=until, connection=incoming.connection_id)
    )
    stored = txn.append(
        "claimed",
        incoming.sender.name,
        incoming.message_id,
        None,
        lambda seq: protocol.claimed(seq, question.id, incoming.sender.name, format_rfc3339(until)),
    )
    return Accepted(
        incoming.message_id, stored.seq, deliveries=(stored,), claimed=(question.id, until)
    )


# -- transitions the server causes ---------------------------------------------------------------

Work = Callable[[IStoreTransaction], list[StoredMessage]]


def expire_work(question_id: str, now: float) -> Work:
    """At a question's deadline: close it as expired, if it is still open and really due."""

    def work(txn: IStoreTransaction) -> list[StoredMessage]:
        question = txn.get_question(question_id)
        if question is None or question.state != OPEN or question.deadline is None:
            return []
        if question.deadline > now + 0.001:
            return []
        return [_close(txn, question, EXPIRED)]

    return work


def lapse(txn: IStoreTransaction, question: QuestionRecord) -> StoredMessage:
    """Announce that ``question``'s claim ended (``claimed`` with ``by: null``)."""
    txn.set_claim(question.id, None)
    return txn.append(
        "claimed", None, None, None, lambda seq: protocol.claimed(seq, question.id, None, None)
    )


def lapse_claim_work(question_id: str, connection_id: str) -> Work:
    """A claim's time is up or its connection closed: announce ``claimed`` with ``by: null``,
    unless a newer claim (another connection) replaced it meanwhile."""

    def work(txn: IStoreTransaction) -> list[StoredMessage]:
        question = txn.get_question(question_id)
        if question is None or question.state != OPEN or question.claim is None:
            return []
        if question.claim.connection != connection_id:
            return []
        return [lapse(txn, question)]

    return work


def delivered_work(agent: str, seqs: set[int], now: float) -> Work:
    """The asking agent acked answers: they stop being pending, and the first ack of each answer
    tells every dashboard with a ``receipt``."""

    def work(txn: IStoreTransaction) -> list[StoredMessage]:
        delivered_at = format_rfc3339(now)
        receipts = []
        for seq in txn.clear_pending(agent, seqs):
            question_id = txn.mark_delivered(seq, delivered_at)
            if question_id is not None:
                receipts.append(_receipt(txn, question_id, delivered_at))
        return receipts

    return work


def _receipt(txn: IStoreTransaction, question_id: str, delivered_at: str) -> StoredMessage:
    return txn.append(
        "receipt", None, None, None, lambda seq: protocol.receipt(seq, question_id, delivered_at)
    )


def restart_work(now: float) -> Work:
    """At start: claims lapse (their connections died with the old process) and questions whose
    deadline passed while the server was down expire."""

    def work(txn: IStoreTransaction) -> list[StoredMessage]:
        messages = [lapse(txn, question) for question in txn.claimed_questions()]
        messages += [_close(txn, question, EXPIRED) for question in txn.overdue_questions(now)]
        return messages

    return work
