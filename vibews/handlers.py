"""The hub's rules, one handler per message type: who may send it, what is stored, who receives it.

Handlers run inside a store transaction (:class:`vibews.store.IStoreTransaction`), so the checks that
depend on stored state (duplicate id, question conflict and state) are atomic with the append. A
handler refuses by raising :class:`vibews.protocol.Refusal`; the store then undoes its writes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, Final

import attrs

from vibews import protocol
from vibews.protocol import DataMessage, Envelope, Refusal
from vibews.store import IStoreTransaction, StoredMessage
from vibews.tokens import Identity

# Which role may send which client type (contract section 2).
SENDERS: Final[Mapping[str, frozenset[str]]] = {
    "agent_status": frozenset({"agent"}),
    "task_update": frozenset({"agent"}),
    "question": frozenset({"agent"}),
    "answer": frozenset({"dashboard"}),
    "ack": frozenset({"agent", "dashboard"}),
    "resume": frozenset({"agent", "dashboard"}),
}


def check_role(identity: Identity, envelope: Envelope) -> None:
    """Check 5 of the contract: the sender's role may send this type."""
    if identity.role not in SENDERS[envelope.type]:
        raise Refusal(
            protocol.FORBIDDEN,
            f"a {identity.role} may not send '{envelope.type}'",
            envelope.id,
        )


@attrs.frozen
class Accepted:
    """A data message that is stored (or was already): what to ack and what to relay."""

    message_id: str
    seq: int
    duplicate: bool = False
    deliveries: tuple[StoredMessage, ...] = ()


@attrs.frozen
class Incoming:
    """A checked data message with the server's fields decided (id, timestamp, sender)."""

    sender: Identity
    message: DataMessage
    message_id: str
    timestamp: str

    def frame(self, seq: int) -> dict[str, Any]:
        message = self.message
        return protocol.relayed(
            message.type, self.message_id, self.timestamp, self.sender.name, seq, message.payload
        )


Handler = Callable[[IStoreTransaction, Incoming], Accepted]


def _append(txn: IStoreTransaction, incoming: Incoming, agent: str | None = None) -> StoredMessage:
    return txn.append(
        incoming.message.type, incoming.sender.name, incoming.message_id, agent, incoming.frame
    )


def _agent_status(txn: IStoreTransaction, incoming: Incoming) -> Accepted:
    stored = _append(txn, incoming)
    txn.set_agent_status(incoming.sender.name, incoming.message.payload)
    return Accepted(incoming.message_id, stored.seq, deliveries=(stored,))


def _task_update(txn: IStoreTransaction, incoming: Incoming) -> Accepted:
    stored = _append(txn, incoming)
    txn.set_task(incoming.message.payload["task_id"], incoming.frame(stored.seq))
    return Accepted(incoming.message_id, stored.seq, deliveries=(stored,))


def _question(txn: IStoreTransaction, incoming: Incoming) -> Accepted:
    existing = txn.get_question(incoming.message_id)
    if existing is not None:
        if existing.agent != incoming.sender.name:
            raise Refusal(
                protocol.CONFLICT,
                f"question id '{incoming.message_id}' is already used by another agent;"
                " choose a unique id",
                incoming.message_id,
            )
        # The same agent re-sent a question whose id left the duplicate window: same question.
        return Accepted(incoming.message_id, existing.seq, duplicate=True)
    stored = _append(txn, incoming)
    txn.add_question(
        incoming.message_id, incoming.sender.name, stored.seq, incoming.frame(stored.seq)
    )
    return Accepted(incoming.message_id, stored.seq, deliveries=(stored,))


def _answer(txn: IStoreTransaction, incoming: Incoming) -> Accepted:
    question_id = incoming.message.payload["question_id"]
    question = txn.get_question(question_id)
    if question is None:
        raise Refusal(
            protocol.UNKNOWN_QUESTION,
            f"no question with id '{question_id}'",
            incoming.message_id,
        )
    if question.state != "open":
        raise Refusal(
            protocol.ALREADY_ANSWERED,
            f"question '{question_id}' is no longer open: it is {question.state}",
            incoming.message_id,
        )
    stored = _append(txn, incoming, agent=question.agent)
    txn.close_question(question_id, "answered", stored.seq)
    txn.add_pending(question.agent, stored)
    return Accepted(incoming.message_id, stored.seq, deliveries=(stored,))


HANDLERS: Final[Mapping[str, Handler]] = {
    "agent_status": _agent_status,
    "task_update": _task_update,
    "question": _question,
    "answer": _answer,
}


def data_work(incoming: Incoming) -> Callable[[IStoreTransaction], Accepted]:
    """The unit of work that stores one data message: duplicate check first (check 7), then the
    type's own rules (check 8) and the append."""

    def work(txn: IStoreTransaction) -> Accepted:
        seq = txn.find_duplicate(incoming.sender.name, incoming.message_id)
        if seq is not None:
            return Accepted(incoming.message_id, seq, duplicate=True)
        return HANDLERS[incoming.message.type](txn, incoming)

    return work


def presence_work(
    agent: str, online: bool, last_seen: str
) -> Callable[[IStoreTransaction], StoredMessage]:
    """Store an agent's arrival or departure; it is a journal message like any other."""

    def work(txn: IStoreTransaction) -> StoredMessage:
        txn.set_presence(agent, online, last_seen)
        return txn.append(
            "presence",
            None,
            None,
            None,
            lambda seq: protocol.presence(seq, agent, online, last_seen),
        )

    return work


def leftover_presence_work(last_seen: str) -> Callable[[IStoreTransaction], list[StoredMessage]]:
    """At start: agents a dead process left online are stored offline, so dashboards are not lied to."""

    def work(txn: IStoreTransaction) -> list[StoredMessage]:
        return [presence_work(agent, False, last_seen)(txn) for agent in txn.online_agents()]

    return work


def clear_pending_work(agent: str, seqs: Collection[int]) -> Callable[[IStoreTransaction], None]:
    def work(txn: IStoreTransaction) -> None:
        txn.clear_pending(agent, seqs)

    return work
