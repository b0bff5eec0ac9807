"""The hub's rules, one handler per client message type: who may send it, what is stored, who
receives it. The question types are handled by the lifecycle state machine (:mod:`vibews.lifecycle`).

Handlers run inside a store transaction (:class:`vibews.store.IStoreTransaction`), so the checks that
depend on stored state (duplicate id, question conflict and state) are atomic with the append. A
handler refuses by raising :class:`vibews.protocol.Refusal`; the store then undoes its writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from vibews import lifecycle, protocol
from vibews.lifecycle import Accepted, Incoming
from vibews.protocol import Envelope, Refusal
from vibews.store import IStoreTransaction, StoredMessage
from vibews.tokens import Identity

__all__ = ["HANDLERS", "SENDERS", "Accepted", "Incoming", "check_role", "data_work"]

# Which role may send which client type (contract sections 2 and 5).
SENDERS: Final[Mapping[str, frozenset[str]]] = {
    "agent_status": frozenset({"agent"}),
    "task_update": frozenset({"agent"}),
    "question": frozenset({"agent"}),
    "withdraw": frozenset({"agent"}),
    "answer": frozenset({"dashboard"}),
    "claim": frozenset({"dashboard"}),
    "ack": frozenset({"agent", "dashboard"}),
    "resume": frozenset({"agent", "dashboard"}),
}


def check_role(identity: Identity, envelope: Envelope) -> None:
    """Check 5 of the contract: the sender's role may send this type."""
    if identity.role not in SENDERS[envelope.type]:
        raise Refusal(
            protocol.FORBIDDEN,
            f"{'an' if identity.role == 'agent' else 'a'} {identity.role} may not send"
            f" '{envelope.type}'",
            envelope.id,
        )


Handler = Callable[[IStoreTransaction, Incoming], Accepted]


def _agent_status(txn: IStoreTransaction, incoming: Incoming) -> Accepted:
    stored = lifecycle.append(txn, incoming)
    txn.set_agent_status(incoming.sender.name, incoming.payload)
    return Accepted(incoming.message_id, stored.seq, deliveries=(stored,))


def _task_update(txn: IStoreTransaction, incoming: Incoming) -> Accepted:
    stored = lifecycle.append(txn, incoming)
    txn.set_task(incoming.payload["task_id"], incoming.frame(stored.seq))
    return Accepted(incoming.message_id, stored.seq, deliveries=(stored,))


HANDLERS: Final[Mapping[str, Handler]] = {
    "agent_status": _agent_status,
    "task_update": _task_update,
    "question": lifecycle.ask,
    "answer": lifecycle.answer,
    "withdraw": lifecycle.withdraw,
    "claim": lifecycle.claim,
}


def data_work(incoming: Incoming) -> Callable[[IStoreTransaction], Accepted]:
    """The unit of work that stores one client message: duplicate check first (check 7), then the
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


def departures_work(departures: Mapping[str, str], now: str) -> lifecycle.Work:
    """At a clean stop: every agent still online in the store goes offline, with when it left
    (``departures``; ``now`` for one the hub no longer knew about)."""

    def work(txn: IStoreTransaction) -> list[StoredMessage]:
        return [
            presence_work(agent, False, departures.get(agent, now))(txn)
            for agent in txn.online_agents()
        ]

    return work


def restart_work(now: float, last_seen: str) -> lifecycle.Work:
    """At start: agents a dead process left online are stored offline (so dashboards are not lied
    to), then the question lifecycle catches up with the time the server was down."""

    def work(txn: IStoreTransaction) -> list[StoredMessage]:
        messages = [presence_work(agent, False, last_seen)(txn) for agent in txn.online_agents()]
        return messages + lifecycle.restart_work(now)(txn)

    return work
