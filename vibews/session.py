"""One authenticated connection's state in the hub, and the checks every client frame passes in
the contract's order (rate, JSON, envelope, type, role, payload) before the hub dispatches it."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed

from vibews import handlers, protocol
from vibews.peer import Outgoing, Peer
from vibews.protocol import Ack, DataMessage, Refusal, Resume
from vibews.ratelimit import RefusalWindow, TokenBucket
from vibews.tokens import Identity

if TYPE_CHECKING:
    from vibews.hub import Hub

CLOSE_POLICY = 1008


_NONE: frozenset[Any] = frozenset()


class Session:
    """One authenticated connection's state in the hub.

    Slotted, and what most connections never use (the answers sent to an agent, the claims, a
    waiter for the close) is made on first use: a process holds one of these per connection, and
    an empty ``set`` alone costs 216 bytes (10,000 idle dashboards held two each).
    """

    __slots__ = (
        "_bucket",
        "_claims",
        "_close_waiters",
        "_delivered",
        "_refusals",
        "_replay_generation",
        "connection_id",
        "delivering_pending",
        "digest",
        "hub",
        "identity",
        "live",
        "open",
        "peer",
        "waiting_resume",
    )

    def __init__(
        self, hub: Hub, peer: Peer, identity: Identity, digest: str, connection_id: str
    ) -> None:
        self.hub = hub
        self.peer = peer
        self.identity = identity
        self.digest = digest
        self.connection_id = connection_id
        now = hub.clock.seconds()
        self._bucket = TokenBucket(hub.settings.rate, hub.settings.burst, now)
        self._refusals = RefusalWindow(hub.settings.max_refused, hub.settings.refusal_window)
        # Answers sent on this connection and not yet acked here (agents only); None while empty.
        self._delivered: set[int] | None = None
        # False while a resume replays history: the replay reads live messages from the store.
        self.live = True
        # Questions this connection claimed (the claims lapse when it closes); None while none.
        self._claims: set[str] | None = None
        self._replay_generation = 0
        # A resume that arrived while pending answers were still being sent waits for them.
        self.delivering_pending = False
        self.waiting_resume: Resume | None = None
        self.open = True
        self._close_waiters: list[Deferred[None]] | None = None

    @property
    def is_agent(self) -> bool:
        return self.identity.role == "agent"

    # -- what the connection is owed ----------------------------------------------------------

    def mark_delivered(self, seq: int) -> None:
        """An answer (or closing) with this seq was sent here and waits for this agent's ack."""
        if self._delivered is None:
            self._delivered = set()
        self._delivered.add(seq)

    def take_delivered(self, upto: int) -> set[int]:
        """Forget, and return, the delivered seqs an ``ack`` of ``upto`` covers."""
        if not self._delivered:
            return set()
        acked = {seq for seq in self._delivered if seq <= upto}
        self._delivered -= acked
        return acked

    def restore_delivered(self, seqs: Iterable[int]) -> None:
        """Seqs taken by :meth:`take_delivered` whose clearing was not stored: pending again."""
        for seq in seqs:
            self.mark_delivered(seq)

    def add_claim(self, question_id: str) -> None:
        if self._claims is None:
            self._claims = set()
        self._claims.add(question_id)

    @property
    def claims(self) -> Collection[str]:
        """The questions this connection claimed (read-only view)."""
        return self._claims if self._claims is not None else _NONE

    def when_closed(self) -> Deferred[None]:
        """Fires once the connection has closed (at once if it already has)."""
        if not self.open:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        if self._close_waiters is None:
            self._close_waiters = []
        self._close_waiters.append(waiter)
        return waiter

    # -- from the adapter ---------------------------------------------------------------------

    def receive(self, frame: bytes) -> None:
        """One text message from the client: checks in the contract's order, then dispatch."""
        if not self._bucket.take(self.hub.clock.seconds()):
            self.refuse(
                Refusal(
                    protocol.RATE_LIMITED,
                    "too many messages; slow down and re-send this one",
                    protocol.best_effort_id(frame),
                )
            )
            return
        try:
            envelope = protocol.decode(frame)
            handlers.check_role(self.identity, envelope)
            message = protocol.validate(envelope)
        except Refusal as refusal:
            self.refuse(refusal)
            return
        self.hub.observer.message_received(envelope.type)
        if isinstance(message, DataMessage):
            self.hub.submit(self, message)
        elif isinstance(message, Ack):
            self.hub.acknowledge(self, message.seq)
        elif isinstance(message, Resume):
            self.hub.replay(self, message)

    def closed(self) -> None:
        if not self.open:
            return
        self.open = False
        self._replay_generation += 1
        self.hub.unregister(self)
        waiters, self._close_waiters = self._close_waiters, None
        for waiter in waiters or ():
            waiter.callback(None)

    # -- to the client ------------------------------------------------------------------------

    def send(self, frame: dict[str, Any]) -> None:
        self.send_encoded(protocol.encode(frame))

    def send_encoded(self, data: bytes, reply: bool = False) -> None:
        if self.open:
            self.peer.send(Outgoing(data, reply=reply))

    def refuse(self, refusal: Refusal) -> None:
        self.hub.observer.message_refused(refusal.code)
        self.send_encoded(
            protocol.encode(protocol.error(refusal.id, refusal.code, refusal.message)), reply=True
        )
        if self.open and self._refusals.add(self.hub.clock.seconds()):
            self.hub.log.info(
                "closing {connection} ({name}): too many refused messages",
                connection=self.connection_id,
                name=self.identity.name,
            )
            self.peer.close(CLOSE_POLICY, "too many refused messages")

    def next_replay(self) -> int:
        self._replay_generation += 1
        return self._replay_generation

    def replay_current(self, generation: int) -> bool:
        return self.open and generation == self._replay_generation
