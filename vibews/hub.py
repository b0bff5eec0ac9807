"""The hub: who is connected, what each connection is owed, and the path of every message.

The hub knows connections only through :class:`Peer`, so this module has no Autobahn or twisted.web in
it; the WebSocket adapter (:mod:`vibews.server`) implements Peer. Time comes from an injected clock.

Ordering: everything the store commits is delivered from the store's Deferred callbacks, which fire in
``seq`` order within one synchronous call. A connection is registered (and its ``welcome`` snapshot read)
outside that call, so it sees exactly the messages after its ``welcome.seq``, none twice, none missing.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Collection
from typing import Any, Protocol

import attrs
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from vibews import __version__, handlers, lifecycle, protocol
from vibews.protocol import Ack, DataMessage, Refusal, Resume
from vibews.ratelimit import RefusalWindow, TokenBucket
from vibews.store import IStore, Snapshot, StoredMessage, StoreUnavailable
from vibews.timestamps import format_rfc3339
from vibews.tokens import Identity

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008

REPLAY_PAGE = 256


@attrs.define(eq=False)
class Outgoing:
    """One encoded frame, shared by all its recipients: the adapter caches its wire form in
    ``prepared`` on first send, so a message is framed once however many receive it."""

    data: bytes
    prepared: Any = None


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


class Session:
    """One authenticated connection's state in the hub."""

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
        # Answers sent on this connection and not yet acked here (agents only).
        self.delivered: set[int] = set()
        # False while a resume replays history: the replay reads live messages from the store.
        self.live = True
        # Questions this connection claimed: the claims lapse when it closes.
        self.claims: set[str] = set()
        self._replay_generation = 0
        self.open = True
        self.closed_deferred: Deferred[None] = Deferred()

    @property
    def is_agent(self) -> bool:
        return self.identity.role == "agent"

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
        self.closed_deferred.callback(None)

    # -- to the client ------------------------------------------------------------------------

    def send(self, frame: dict[str, Any]) -> None:
        if self.open:
            self.peer.send(Outgoing(protocol.encode(frame)))

    def refuse(self, refusal: Refusal) -> None:
        self.hub.observer.message_refused(refusal.code)
        self.send(protocol.error(refusal.id, refusal.code, refusal.message))
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


class Hub:
    """Routes messages between agents and dashboards through the store."""

    log = Logger()

    def __init__(
        self,
        store: IStore,
        clock: IReactorTime,
        settings: HubSettings,
        agent_names: Callable[[], Collection[str]] = lambda: (),
        observer: HubObserver | None = None,
    ) -> None:
        self.store = store
        self.observer = observer or HubObserver()
        self.clock = clock
        self.settings = settings
        self._agent_names = agent_names
        self.sessions: dict[str, Session] = {}
        self._dashboards: set[Session] = set()
        self._agents: dict[str, set[Session]] = {}
        self._leaving: dict[str, IDelayedCall] = {}
        self._deadlines: dict[str, IDelayedCall] = {}
        self._claims: dict[str, tuple[str, IDelayedCall]] = {}  # question -> (connection, lapse)
        self._accepting = True

    def now(self) -> str:
        return format_rfc3339(self.clock.seconds())

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Deferred[Any]:
        """Catch up with what happened while no server ran: agents left online go offline (contract
        section 6), claims lapse, overdue questions expire; then arm the remaining deadlines."""
        now = self.clock.seconds()
        d = self.store.transact(handlers.restart_work(now, format_rfc3339(now)))
        d.addCallback(self._deliver_all)
        d.addCallback(lambda _: self._arm_stored_deadlines())
        return d

    def _arm_stored_deadlines(self) -> None:
        for question_id, deadline in self.store.deadlines():
            self._arm_deadline(question_id, deadline)

    def _deliver_all(self, messages: list[StoredMessage]) -> None:
        for message in messages:
            self.deliver(message)

    def shutdown(self) -> Deferred[Any]:
        """Close every connection with 1001; drop those still open after the grace period."""
        self._accepting = False
        timers = [*self._leaving.values(), *self._deadlines.values()]
        timers += [lapse for _, lapse in self._claims.values()]
        for timer in timers:
            if timer.active():
                timer.cancel()
        self._leaving.clear()
        self._deadlines.clear()
        self._claims.clear()
        sessions = list(self.sessions.values())
        for session in sessions:
            session.peer.close(CLOSE_GOING_AWAY, "server shutting down")
        waiting = DeferredList([s.closed_deferred for s in sessions])
        timer = self.clock.callLater(self.settings.shutdown_grace, self._abort_all)
        waiting.addBoth(lambda result: timer.cancel() if timer.active() else None)
        return waiting

    def _abort_all(self) -> None:
        for session in list(self.sessions.values()):
            session.peer.abort()

    @property
    def accepting(self) -> bool:
        return self._accepting

    def connection_count(self) -> int:
        return len(self.sessions)

    # -- connections --------------------------------------------------------------------------

    def open_session(self, peer: Peer, identity: Identity, digest: str) -> Session:
        """Register a connection, send its ``welcome`` (and an agent's pending answers)."""
        session = Session(self, peer, identity, digest, secrets.token_hex(8))
        self.sessions[session.connection_id] = session
        self.observer.connection_opened(identity.role)
        if session.is_agent:
            self._open_agent(session)
        else:
            snapshot = self.store.snapshot(self._agent_names())
            session.send(self._welcome(session, snapshot))
            self._dashboards.add(session)
        self.log.info(
            "{name} connected as {role} ({connection})",
            name=identity.name,
            role=identity.role,
            connection=session.connection_id,
        )
        return session

    def _open_agent(self, session: Session) -> None:
        name = session.identity.name
        session.send(self._welcome(session, None))
        for answer in self.store.pending_answers(name):
            session.peer.send(Outgoing(answer.data))
            session.delivered.add(answer.seq)
        connections = self._agents.setdefault(name, set())
        first = not connections
        connections.add(session)
        if first:
            leaving = self._leaving.pop(name, None)
            if leaving is not None:
                leaving.cancel()  # back within the grace period: no presence flap
            else:
                self._store_presence(name, True)

    def unregister(self, session: Session) -> None:
        if self.sessions.pop(session.connection_id, None) is not None:
            self.observer.connection_closed(session.identity.role)
        for question_id in session.claims:
            held = self._claims.get(question_id)
            if held is not None and held[0] == session.connection_id and self._accepting:
                self._lapse_claim(question_id, session.connection_id)
        self.log.info(
            "{name} disconnected ({connection})",
            name=session.identity.name,
            connection=session.connection_id,
        )
        if not session.is_agent:
            self._dashboards.discard(session)
            return
        name = session.identity.name
        connections = self._agents.get(name, set())
        connections.discard(session)
        if connections or not self._accepting:
            return
        del self._agents[name]
        if self.settings.presence_grace > 0:
            self._leaving[name] = self.clock.callLater(
                self.settings.presence_grace, self._left, name, self.now()
            )
        else:
            self._left(name, self.now())

    def _left(self, name: str, last_seen: str) -> None:
        self._leaving.pop(name, None)
        self._store_presence(name, False, last_seen)

    def _store_presence(self, name: str, online: bool, last_seen: str | None = None) -> None:
        work = handlers.presence_work(name, online, last_seen or self.now())
        try:
            d = self.store.transact(work)
        except StoreUnavailable:
            self.log.warn("presence of {agent} not stored: the store is closed", agent=name)
            return
        d.addCallbacks(self.deliver, self._log_failure, errbackArgs=("presence",))

    def revalidate(self, lookup: Callable[[str], Identity | None]) -> None:
        """After a tokens reload: close connections whose token is gone or now means someone else."""
        for session in list(self.sessions.values()):
            if lookup(session.digest) != session.identity:
                self.log.info(
                    "closing {connection} ({name}): its token was revoked",
                    connection=session.connection_id,
                    name=session.identity.name,
                )
                session.peer.close(CLOSE_POLICY, "token revoked")

    def _welcome(self, session: Session, snapshot: Snapshot | None) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "name": session.identity.name,
            "role": session.identity.role,
            "connection": session.connection_id,
            "server": f"vibews/{__version__}",
            "protocol": protocol.PROTOCOL_VERSION,
            "seq": self.store.head() if snapshot is None else snapshot.seq,
            "heartbeat": self.settings.heartbeat,
            "epoch": self.store.epoch,
        }
        if snapshot is not None:
            payload["snapshot"] = self._snapshot_payload(snapshot)
        return {"type": "welcome", "payload": payload}

    def _snapshot_payload(self, snapshot: Snapshot) -> dict[str, Any]:
        now = self.now()
        agents = {
            name: {
                "online": record.online,
                "status": record.status,
                "last_seen": now if record.online else record.last_seen,
            }
            for name, record in sorted(snapshot.agents.items())
        }
        return {"agents": agents, "questions": snapshot.questions, "tasks": dict(snapshot.tasks)}

    # -- messages -----------------------------------------------------------------------------

    def submit(self, session: Session, message: DataMessage) -> None:
        now = self.clock.seconds()
        incoming = handlers.Incoming(
            sender=session.identity,
            message=message,
            message_id=message.id or f"srv-{uuid.uuid4()}",
            timestamp=message.timestamp or format_rfc3339(now),
            now=now,
            connection_id=session.connection_id,
            claim_ttl=self.settings.claim_ttl,
        )
        try:
            d = self.store.transact(handlers.data_work(incoming))
        except StoreUnavailable as error:
            session.refuse(Refusal(protocol.UNAVAILABLE, str(error), incoming.message_id))
            return
        d.addCallbacks(
            self._stored,
            self._refused,
            callbackArgs=(session, now),
            errbackArgs=(session, incoming),
        )

    def _stored(self, accepted: handlers.Accepted, session: Session, received: float) -> None:
        session.send(protocol.ack(accepted.message_id, accepted.seq, accepted.duplicate))
        self.observer.acked(self.clock.seconds() - received)
        for message in accepted.deliveries:
            self.deliver(message)
        if accepted.closed is not None:
            self._forget_question(accepted.closed)
        if accepted.opened is not None:
            self._arm_deadline(*accepted.opened)
        if accepted.claimed is not None:
            question_id, until = accepted.claimed
            self._hold_claim(session, question_id, until)

    # -- question timers ----------------------------------------------------------------------

    def _arm_deadline(self, question_id: str, deadline: float) -> None:
        delay = max(0.0, deadline - self.clock.seconds())
        self._deadlines[question_id] = self.clock.callLater(delay, self._expire, question_id)

    def _expire(self, question_id: str) -> None:
        self._deadlines.pop(question_id, None)
        self._run_server_work(lifecycle.expire_work(question_id, self.clock.seconds()), "expiry")

    def _hold_claim(self, session: Session, question_id: str, until: float) -> None:
        """A newer claim replaces the old one (the store already did): only its timer counts."""
        previous = self._claims.pop(question_id, None)
        if previous is not None and previous[1].active():
            previous[1].cancel()
        delay = max(0.0, until - self.clock.seconds())
        timer = self.clock.callLater(delay, self._lapse_claim, question_id, session.connection_id)
        self._claims[question_id] = (session.connection_id, timer)
        session.claims.add(question_id)

    def _lapse_claim(self, question_id: str, connection_id: str) -> None:
        held = self._claims.get(question_id)
        if held is None or held[0] != connection_id:
            return
        del self._claims[question_id]
        if held[1].active():
            held[1].cancel()
        self._run_server_work(lifecycle.lapse_claim_work(question_id, connection_id), "claim lapse")

    def _forget_question(self, question_id: str) -> None:
        """The question left ``open``: its deadline and claim timers have nothing left to do."""
        deadline = self._deadlines.pop(question_id, None)
        if deadline is not None and deadline.active():
            deadline.cancel()
        held = self._claims.pop(question_id, None)
        if held is not None and held[1].active():
            held[1].cancel()

    def _run_server_work(self, work: lifecycle.Work, what: str) -> None:
        try:
            d = self.store.transact(work)
        except StoreUnavailable:
            self.log.warn("{what} not stored: the store is closed", what=what)
            return
        d.addCallbacks(self._deliver_all, self._log_failure, errbackArgs=(what,))

    def _refused(self, failure: Failure, session: Session, incoming: handlers.Incoming) -> None:
        if isinstance(failure.value, Refusal):
            session.refuse(failure.value)
        elif failure.check(StoreUnavailable):
            session.refuse(
                Refusal(
                    protocol.UNAVAILABLE,
                    "the store cannot take writes right now; retry later",
                    incoming.message_id,
                )
            )
        else:
            self._log_failure(failure, incoming.message.type)
            session.refuse(
                Refusal(
                    protocol.INTERNAL_ERROR,
                    "the server failed to handle this message",
                    incoming.message_id,
                )
            )

    def _log_failure(self, failure: Failure, what: str) -> None:
        self.log.failure("storing {what} failed", failure, what=what)

    def deliver(self, message: StoredMessage) -> None:
        """Fan one stored message out: every live dashboard, and its agent's connections."""
        out = Outgoing(message.data)
        sent = 0
        # Copies: a send may close a slow reader, which leaves these sets mid-loop.
        for session in tuple(self._dashboards):
            if session.live:
                session.peer.send(out)
                sent += 1
        if message.agent is not None:
            for session in tuple(self._agents.get(message.agent, ())):
                if session.live:
                    session.peer.send(out)
                    sent += 1
                    if message.type == "answer":
                        session.delivered.add(message.seq)
        self.observer.delivered(sent)

    def acknowledge(self, session: Session, seq: int) -> None:
        """An agent's ``ack`` clears the answers up to ``seq`` that this connection was sent; the
        first ack of each answer sends every dashboard a ``receipt``."""
        acked = {s for s in session.delivered if s <= seq}
        if not acked:
            return
        session.delivered -= acked
        work = lifecycle.delivered_work(session.identity.name, acked, self.clock.seconds())
        try:
            d = self.store.transact(work)
        except StoreUnavailable:
            session.delivered |= acked  # still pending; a later ack may clear them
            return
        d.addCallbacks(self._deliver_all, self._restore_delivered, errbackArgs=(session, acked))

    def _restore_delivered(self, failure: Failure, session: Session, acked: set[int]) -> None:
        """The clear was not stored: the answers stay pending, so a later ack may clear them."""
        session.delivered |= acked
        if not failure.check(StoreUnavailable):
            self._log_failure(failure, "ack")

    # -- resume -------------------------------------------------------------------------------

    def replay(self, session: Session, resume: Resume) -> None:
        """Send what the client missed since ``resume.since``, paced by how fast it reads."""
        head = self.store.head()
        generation = session.next_replay()
        if resume.epoch not in (None, self.store.epoch) or resume.since > head:
            session.live = True
            session.send(protocol.resumed(resume.since, head, False, self.store.epoch))
            return
        complete = resume.since >= self.store.oldest() - 1
        session.live = False
        self._replay_step(session, generation, resume.since, resume.since, complete)

    def _replay_step(
        self, session: Session, generation: int, since: int, cursor: int, complete: bool
    ) -> None:
        if not session.replay_current(generation):
            return
        if session.peer.is_paused():
            d = session.peer.when_writable()
            d.addCallback(lambda _: self._replay_step(session, generation, since, cursor, complete))
            return
        agent = session.identity.name if session.is_agent else None
        page = self.store.read(cursor, agent, REPLAY_PAGE)
        for message in page:
            session.peer.send(Outgoing(message.data))
            cursor = message.seq
            if session.is_agent and message.type == "answer":
                session.delivered.add(message.seq)
            if session.peer.is_paused():
                break
        if page:
            self.clock.callLater(0, self._replay_step, session, generation, since, cursor, complete)
            return
        session.live = True
        session.send(protocol.resumed(since, self.store.head(), complete, self.store.epoch))
