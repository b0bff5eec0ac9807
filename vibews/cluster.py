"""A hub that is one node of several on one Redis (:mod:`vibews.store.redis`).

What differs from a single server, and only that, lives here:

- every node relays the other nodes' commits to its own clients (in the deployment's one order), and
  arms the question timers they imply, so a deadline or a claim's end is acted on even if the node
  that stored it died (every node may act; the guard on the question's row lets exactly one change
  land);
- presence is decided across nodes: an agent is online while any node holds one of its connections.
  Each node records which agents it holds (``members``) and refreshes a heartbeat key with a TTL of
  half the ping timeout; the other nodes notice a node whose key expired and take its agents
  offline, so an agent whose only node died goes offline within the ping timeout;
- a node that starts or stops touches only its own agents, never the whole deployment's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from vibews import handlers, lifecycle
from vibews.hub import Hub, HubObserver, HubSettings
from vibews.store import IStoreTransaction, StoredMessage, StoreUnavailable
from vibews.store.redis import ClusterTransaction, RedisStore

CLOSE_SERVICE_RESTART = 1012
_TIMER_TYPES = frozenset({"question", "question_closed", "claimed"})


def presence_sync_work(node: str, agent: str, present: bool, last_seen: str) -> lifecycle.Work:
    """Record that ``node`` holds (or no longer holds) connections of ``agent``; store a
    ``presence`` only when that changes whether any node holds one. Idempotent, so it can be
    re-run to repair what a failed write left behind."""

    def work(txn: IStoreTransaction) -> list[StoredMessage]:
        cluster = cast(ClusterTransaction, txn)
        nodes = cluster.agent_nodes(agent)
        if present:
            if node in nodes:
                return []
            cluster.join(node, agent)
            if nodes:
                return []
            return [handlers.presence_work(agent, True, last_seen)(txn)]
        if node not in nodes:
            return []
        cluster.leave(node, agent)
        if nodes - {node}:
            return []
        return [handlers.presence_work(agent, False, last_seen)(txn)]

    return work


def connection_prefix(node: str) -> str:
    """What every connection id of ``node`` starts with, so that its claims can be found."""
    return f"{node}."


def node_gone_work(node: str, last_seen: str) -> lifecycle.Work:
    """A node stopped (or died): its agents leave; those it was the only node of go offline; the
    claims of its dashboards lapse, as when a claimer disconnects (protocol section 5)."""

    def work(txn: IStoreTransaction) -> list[StoredMessage]:
        messages: list[StoredMessage] = []
        for agent in cast(ClusterTransaction, txn).node_agents(node):
            messages += presence_sync_work(node, agent, False, last_seen)(txn)
        prefix = connection_prefix(node)
        for question in txn.claimed_questions():
            assert question.claim is not None
            if question.claim.connection.startswith(prefix):
                messages.append(lifecycle.lapse(txn, question))
        return messages

    return work


def cluster_start_work(now: float) -> lifecycle.Work:
    """At a node's start: only questions whose deadline passed expire. Claims and agents belong to
    live nodes (a dead node's are handled when its heartbeat expires)."""

    def work(txn: IStoreTransaction) -> list[StoredMessage]:
        return [lifecycle._close(txn, q, lifecycle.EXPIRED) for q in txn.overdue_questions(now)]

    return work


class ClusterHub(Hub):
    """The hub of one node in a cluster sharing a :class:`RedisStore`."""

    store: RedisStore

    def __init__(
        self,
        store: RedisStore,
        clock: IReactorTime,
        settings: HubSettings,
        agent_names: Callable[[], Collection[str]] = lambda: (),
        observer: HubObserver | None = None,
        ping_timeout: float = 20.0,
    ) -> None:
        super().__init__(store, clock, settings, agent_names, observer)
        self.heartbeat_ttl = max(ping_timeout / 2, 0.5)
        store.on_foreign = self._foreign
        store.on_resync = self._resync
        self._beat = LoopingCall(self._tick)
        self._beat.clock = clock
        self._checking = False
        self._reachable_since: float | None = None
        # Fires once this node has loaded the shared state and serves (tests, embedding hosts).
        self.started: Deferred[None] = Deferred()

    def new_connection_id(self) -> str:
        return connection_prefix(self.store.node) + super().new_connection_id()

    @property
    def accepting(self) -> bool:
        return self._accepting and self.store.ready

    def start(self) -> Deferred[Any]:
        d: Deferred[Any] = self.store.open()
        d.addCallback(lambda _: self._joined())
        d.addBoth(self._fire_started)
        return d

    def _fire_started(self, result: Any) -> Any:
        if not self.started.called:
            self.started.callback(None)
        return result

    def _joined(self) -> Deferred[Any] | None:
        if not self._accepting:
            return None
        self._beat.start(self.heartbeat_ttl / 4, now=True)
        now = self.clock.seconds()
        d = self.store.transact(cluster_start_work(now))
        d.addCallback(self._deliver_all)
        d.addCallback(lambda _: self._arm_all())
        return d

    def _arm_all(self) -> None:
        self._arm_stored_deadlines()
        for question in self.store.claimed():
            assert question.claim is not None
            self.timers.hold_claim(question.id, question.claim.connection, question.claim.until)

    # -- what other nodes committed -------------------------------------------------------------

    def _foreign(self, messages: list[StoredMessage], dropped: bool) -> None:
        for message in messages:
            self.deliver(message)
            if message.type in _TIMER_TYPES:
                self._follow_timers(message)
        if dropped:
            self.log.warn("another node took this node for dead; announcing its agents again")
            self._tick()

    def _follow_timers(self, message: StoredMessage) -> None:
        frame: Mapping[str, Any] = json.loads(message.data)
        if message.type == "question":
            question_id = frame["id"]
        else:
            question_id = frame["payload"]["question_id"]
        question = self.store.question(question_id)
        if question is None or question.state != lifecycle.OPEN:
            self.timers.forget(question_id)
            return
        if message.type == "question" and question.deadline is not None:
            self.timers.arm_deadline(question_id, question.deadline)
        if message.type == "claimed" and question.claim is not None:
            claim = question.claim
            self.timers.hold_claim(question_id, claim.connection, claim.until)

    def _resync(self) -> None:
        """This node missed commits it can no longer read: its clients reconnect and resume."""
        for session in list(self.sessions.values()):
            session.peer.close(CLOSE_SERVICE_RESTART, "node resynchronised; reconnect and resume")

    # -- presence ---------------------------------------------------------------------------------

    def _store_presence(self, name: str, online: bool, last_seen: str | None = None) -> None:
        self._run_server_work(
            presence_sync_work(self.store.node, name, online, last_seen or self.now()), "presence"
        )

    def _held_agents(self) -> set[str]:
        """Agents this node holds: connected, or inside their presence grace."""
        return set(self._agents) | set(self._leaving)

    def _tick(self) -> None:
        """Heartbeat; repair this node's membership if a write failed (or another node took this
        one for dead); take dead nodes' agents offline."""
        if not self._accepting or not self.store.ready:
            return
        client = self.store.client
        ttl_ms = max(1, int(self.heartbeat_ttl * 1000))
        client.set(self.store.node_key(self.store.node), "1", pexpire=ttl_ms).addErrback(
            lambda _: None
        )
        self.store.verify()
        recorded = set(self.store.members_of(self.store.node))
        held = self._held_agents()
        for agent in sorted(held - recorded):
            self._run_server_work(
                presence_sync_work(self.store.node, agent, True, self.now()), "presence"
            )
        for agent in sorted(recorded - held):
            self._run_server_work(
                presence_sync_work(self.store.node, agent, False, self.now()), "presence"
            )
        self._check_nodes()

    def _nodes_holding_something(self) -> set[str]:
        """Nodes that hold an agent's connection or a dashboard's claim: what a dead node leaves
        behind for the others to clean up."""
        nodes = set(self.store.member_nodes())
        for question in self.store.claimed():
            assert question.claim is not None
            node, dot, _ = question.claim.connection.partition(".")
            if dot:
                nodes.add(node)
        return nodes

    def _check_nodes(self) -> None:
        # After Redis was away every node's heartbeat may have lapsed: judge the others only once
        # this node has been connected for a whole TTL, so they had the time to beat again.
        now = self.clock.seconds()
        if not self.store.reachable():
            self._reachable_since = None
            return
        if self._reachable_since is None:
            self._reachable_since = now
        if now - self._reachable_since < self.heartbeat_ttl:
            return
        others = sorted(self._nodes_holding_something() - {self.store.node})
        if not others or self._checking:
            return
        self._checking = True
        keys = [self.store.node_key(node) for node in others]
        d = self.store.client.execute_command("MGET", *keys)

        def checked(values: list[Any]) -> None:
            for node, value in zip(others, values, strict=True):
                if value is None:
                    self.log.info("node {node} is gone; its agents leave", node=node)
                    self._run_server_work(node_gone_work(node, self.now()), "node departure")

        d.addCallback(checked)
        d.addErrback(lambda _: None)  # Redis away: the next tick checks again
        d.addBoth(lambda _: setattr(self, "_checking", False))

    # -- stop -------------------------------------------------------------------------------------

    def shutdown(self) -> Deferred[Any]:
        if self._beat.running:
            self._beat.stop()
        return super().shutdown()

    def _store_departures(self, departures: dict[str, str]) -> Deferred[Any] | None:
        """A clean stop: this node's agents leave (offline unless another node holds them)."""
        node = self.store.node

        def work(txn: IStoreTransaction) -> list[StoredMessage]:
            messages: list[StoredMessage] = []
            for agent in cast(ClusterTransaction, txn).node_agents(node):
                last_seen = departures.get(agent, self.now())
                messages += presence_sync_work(node, agent, False, last_seen)(txn)
            return messages

        try:
            d = self.store.transact(work)
        except StoreUnavailable:
            return None
        d.addCallback(self._deliver_all)
        d.addErrback(self._log_failure, "presence at shutdown")
        d.addBoth(lambda _: self._forget_node())
        return d

    def _forget_node(self) -> Deferred[Any] | None:
        if not self.store.ready:
            return None
        d: Deferred[Any] = self.store.client.execute_command(
            "DEL", self.store.node_key(self.store.node)
        )
        return d.addErrback(lambda _: None)

    def _log_failure(self, failure: Failure, what: str) -> None:
        if failure.check(StoreUnavailable):
            self.log.warn("{what} not stored: {error}", what=what, error=failure.getErrorMessage())
            return
        super()._log_failure(failure, what)
