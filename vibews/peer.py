"""The hub's vocabulary towards the outside: what it needs of a connection (:class:`Peer`), the
frames it hands out (:class:`Outgoing`), its settings and the hooks it reports to (metrics)."""

from __future__ import annotations

from typing import Protocol

import attrs
from twisted.internet.defer import Deferred

# What an agent keeps being sent on every new connection until one of them acks it: answers, and
# the closing of a question that expired unanswered.
PENDING_TYPES = frozenset({"answer", "question_closed"})


@attrs.define(eq=False)
class Outgoing:
    """One encoded message, shared by all its recipients: the adapter caches its whole
    WebSocket frame in ``prepared`` on first send, so a message is framed once however many
    receive it. ``reply`` marks the answer to the recipient's own message (its ack or error):
    the client is waiting on it, so the adapter writes it before frames that only inform."""

    data: bytes
    prepared: bytes | None = None
    reply: bool = False


class Peer(Protocol):
    """What the hub needs of a connection."""

    def send(self, message: Outgoing) -> None:
        """Queue a frame; a peer that reads too slowly closes itself instead."""

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake."""

    def abort(self) -> None:
        """Drop the connection now."""

    def is_paused(self) -> bool:
        """True while the peer's write buffer is full."""

    def when_writable(self) -> Deferred[None]:
        """Fires once the write buffer has drained."""


class HubObserver:
    """Hooks for counting what the hub does (metrics); this base class ignores them all."""

    def connection_opened(self, role: str) -> None:
        """A connection was authenticated and registered."""

    def connection_closed(self, role: str) -> None:
        """A registered connection went away."""

    def message_received(self, message_type: str) -> None:
        """A client message passed every check up to dispatch."""

    def message_refused(self, code: str) -> None:
        """A client message was answered with ``error``."""

    def delivered(self, recipients: int) -> None:
        """A stored message was queued to ``recipients`` connections."""

    def acked(self, seconds: float) -> None:
        """A data message was acked ``seconds`` after it arrived."""


@attrs.frozen
class HubSettings:
    rate: float = 100
    burst: int = 200
    max_refused: int = 50
    refusal_window: float = 10.0
    presence_grace: float = 5.0
    heartbeat: float = 20.0
    shutdown_grace: float = 5.0
    claim_ttl: float = 60.0
    max_open_questions: int = 1000
