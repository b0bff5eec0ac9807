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
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from vibews import __version__, handlers, lifecycle, protocol
from vibews.peer import PENDING_TYPES, HubObserver, HubSettings, Outgoing, Peer
from vibews.protocol import DataMessage, Refusal, Resume
from vibews.question_timers import QuestionTimers
from vibews.replay import deliver_pending, replay
from vibews.session import Session
from vibews.store import IStore, StoredMessage, StoreUnavailable
from vibews.timestamps import format_rfc3339
from vibews.tokens import Identity
from vibews.welcome import SnapshotCache

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008

__all__ = ["Hub", "HubObserver", "HubSettings", "Outgoing", "Peer", "Session"]


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
        # Agents inside their presence grace: the timer that announces them, and when they left.
        self._leaving: dict[str, tuple[IDelayedCall, str]] = {}
        self.timers = QuestionTimers(clock, self._run_server_work)
        self._accepting = True
        self._snapshots = SnapshotCache(store, agent_names, self.now)

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
            self.timers.arm_deadline(question_id, deadline)

    def _deliver_all(self, messages: list[StoredMessage]) -> None:
        for message in messages:
            self.deliver(message)

    def shutdown(self) -> Deferred[Any]:
        """Close every connection with 1001; drop those still open after the grace period; store
        every agent offline with the time it left, so a clean stop leaves nobody online."""
        self._accepting = False
        departures = {name: now for name, (_, now) in self._leaving.items()}
        departures.update({name: self.now() for name in self._agents})
        for timer, _ in self._leaving.values():
            if timer.active():
                timer.cancel()
        self._leaving.clear()
        self.timers.cancel_all()
        sessions = list(self.sessions.values())
        for session in sessions:
            session.peer.close(CLOSE_GOING_AWAY, "server shutting down")
        waiting = DeferredList([s.when_closed() for s in sessions])
        timer = self.clock.callLater(self.settings.shutdown_grace, self._abort_all)
        waiting.addBoth(lambda result: timer.cancel() if timer.active() else None)
        waiting.addCallback(lambda _: self._store_departures(departures))
        return waiting

    def _store_departures(self, departures: dict[str, str]) -> Deferred[Any] | None:
        try:
            d = self.store.transact(handlers.departures_work(departures, self.now()))
        except StoreUnavailable:
            return None
        d.addErrback(self._log_failure, "presence at shutdown")
        return d

    def _abort_all(self) -> None:
        for session in list(self.sessions.values()):
            session.peer.abort()

    @property
    def accepting(self) -> bool:
        return self._accepting

    def connection_count(self) -> int:
        return len(self.sessions)

    # -- connections --------------------------------------------------------------------------

    def new_connection_id(self) -> str:
        """A connection's id, as claims record it (a cluster node prefixes its own name)."""
        return secrets.token_hex(8)

    def open_session(self, peer: Peer, identity: Identity, digest: str) -> Session:
        """Register a connection, send its ``welcome`` (and an agent's pending answers)."""
        session = Session(self, peer, identity, digest, self.new_connection_id())
        self.sessions[session.connection_id] = session
        self.observer.connection_opened(identity.role)
        if session.is_agent:
            self._open_agent(session)
        else:
            seq, snapshot_json = self._snapshots.current()
            session.send_encoded(self._dashboard_welcome(session, seq, snapshot_json))
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
        head = self.store.head()
        session.send(self._welcome(session, head))
        deliver_pending(self, session, self.store.pending_answers(name), head)
        connections = self._agents.setdefault(name, set())
        first = not connections
        connections.add(session)
        if first:
            leaving = self._leaving.pop(name, None)
            if leaving is not None:
                leaving[0].cancel()  # back within the grace period: no presence flap
            else:
                self._store_presence(name, True)

    def unregister(self, session: Session) -> None:
        if self.sessions.pop(session.connection_id, None) is not None:
            self.observer.connection_closed(session.identity.role)
        if self._accepting:
            for question_id in session.claims:
                self.timers.lapse(question_id, session.connection_id)
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
        left_at = self.now()
        if self.settings.presence_grace > 0:
            timer = self.clock.callLater(self.settings.presence_grace, self._left, name, left_at)
            self._leaving[name] = (timer, left_at)
        else:
            self._left(name, left_at)

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

    def _dashboard_welcome(self, session: Session, seq: int, snapshot_json: bytes) -> bytes:
        """A dashboard's ``welcome``: the bytes of the welcome with ``"snapshot"`` added as the
        payload's last field, with the snapshot's encoding spliced in."""
        welcome = protocol.encode(self._welcome(session, seq))
        assert welcome.endswith(b"}}")
        return welcome[:-2] + b',"snapshot":' + snapshot_json + b"}}"

    def _welcome(self, session: Session, seq: int) -> dict[str, Any]:
        """A ``welcome`` without a snapshot (an agent's; a dashboard's gets it spliced in)."""
        payload: dict[str, Any] = {
            "name": session.identity.name,
            "role": session.identity.role,
            "connection": session.connection_id,
            "server": f"vibews/{__version__}",
            "protocol": protocol.PROTOCOL_VERSION,
            "seq": seq,
            "heartbeat": self.settings.heartbeat,
            "epoch": self.store.epoch,
        }
        return {"type": "welcome", "payload": payload}

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
            max_open_questions=self.settings.max_open_questions,
        )
        try:
            d = self.store.transact(handlers.data_work(incoming))
        except StoreUnavailable as error:
            session.refuse(Refusal(protocol.UNAVAILABLE, str(error), message.id))
            return
        d.addCallbacks(
            self._stored,
            self._refused,
            callbackArgs=(session, now),
            errbackArgs=(session, incoming),
        )

    def _stored(self, accepted: handlers.Accepted, session: Session, received: float) -> None:
        session.send_encoded(
            protocol.encode_ack(accepted.message_id, accepted.seq, accepted.duplicate), reply=True
        )
        self.observer.acked(self.clock.seconds() - received)
        for message in accepted.deliveries:
            self.deliver(message)
        if accepted.closed is not None:
            self.timers.forget(accepted.closed)
        if accepted.opened is not None:
            self.timers.arm_deadline(*accepted.opened)
        if accepted.claimed is not None:
            question_id, until = accepted.claimed
            self.timers.hold_claim(question_id, session.connection_id, until)
            session.add_claim(question_id)
            if not session.open:  # the claimer left before its claim was stored
                self.timers.lapse(question_id, session.connection_id)

    # -- work the server starts itself ----------------------------------------------------------

    def _run_server_work(self, work: lifecycle.Work, what: str) -> None:
        try:
            d = self.store.transact(work)
        except StoreUnavailable:
            self.log.warn("{what} not stored: the store is closed", what=what)
            return
        d.addCallbacks(self._deliver_all, self._log_failure, errbackArgs=(what,))

    def _refused(self, failure: Failure, session: Session, incoming: handlers.Incoming) -> None:
        # The error names the id the client sent, or null: a server-assigned srv- id was never
        # seen by the client (it only comes back in an ack).
        client_id = incoming.message.id
        if isinstance(failure.value, Refusal):
            refusal = failure.value
            session.refuse(Refusal(refusal.code, refusal.message, client_id))
        elif failure.check(StoreUnavailable):
            session.refuse(
                Refusal(
                    protocol.UNAVAILABLE,
                    "the store cannot take writes right now; retry later",
                    client_id,
                )
            )
        else:
            self._log_failure(failure, incoming.message.type)
            session.refuse(
                Refusal(
                    protocol.INTERNAL_ERROR, "the server failed to handle this message", client_id
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
                    if message.type in PENDING_TYPES:
                        session.mark_delivered(message.seq)
        self.observer.delivered(sent)

    def acknowledge(self, session: Session, seq: int) -> None:
        """An agent's ``ack`` clears the answers up to ``seq`` that this connection was sent; the
        first ack of each answer sends every dashboard a ``receipt``."""
        acked = session.take_delivered(seq)
        if not acked:
            return
        work = lifecycle.delivered_work(session.identity.name, acked, self.clock.seconds())
        try:
            d = self.store.transact(work)
        except StoreUnavailable:
            session.restore_delivered(acked)  # still pending; a later ack may clear them
            return
        d.addCallbacks(self._deliver_all, self._restore_delivered, errbackArgs=(session, acked))

    def _restore_delivered(self, failure: Failure, session: Session, acked: set[int]) -> None:
        """The clear was not stored: the answers stay pending, so a later ack may clear them."""
        session.restore_delivered(acked)
        if not failure.check(StoreUnavailable):
            self._log_failure(failure, "ack")

    def replay(self, session: Session, resume: Resume) -> None:
        replay(self, session, resume)
