"""The Twisted client: a connection to the hub that never loses a message.

How it keeps that promise, in the contract's own terms (``docs/protocol.rst``):

* Every message gets a stable id (a UUID) before it is first sent and stays in the *outbox* until
  the hub's ``ack`` for that id arrives. After a reconnect every message still in the outbox is
  sent again with the same id; the hub stores a repeated id once and acks it again with
  ``"duplicate": true``, so each message takes effect exactly once.
* Deliveries (messages with a ``seq``) are handed to the code waiting for them, then ``ack``-ed on
  the connection that brought them, which is what clears an agent's pending answers on the hub.
* On a reconnect to the same history (``epoch``) the client sends ``resume`` with the last ``seq``
  it saw, so nothing that was relayed while it was away is missed; deliveries seen twice (pending
  answers, replays) are dropped by ``seq``.
* :meth:`Client.ask` sends a ``question`` and waits for its ``answer`` or ``question_closed``. The
  question lives on the hub, so the wait survives reconnects and hub restarts. Asking again with the
  same ``question_id`` (from another process, say) attaches to the question that is already there.

Reconnecting is Twisted's ``ClientService`` with a jittered exponential backoff.
"""

from __future__ import annotations

import random
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from vibews.client._wire import (
    FATAL_STATUSES,
    HandshakeRefused,
    HubProtocol,
    make_endpoint,
    make_factory,
    parse_url,
)
from vibews.client.errors import (
    RETRIED_CODES,
    AuthenticationFailed,
    ClientStopped,
    ConnectionFailed,
    QuestionExpired,
    QuestionWithdrawn,
    refusal,
)

MessageCallback = Callable[[dict[str, Any]], None]
UNCLAIMED_KEPT = 1000  # answers nobody here waits for, kept for a later ask() with their id


def new_id() -> str:
    return uuid.uuid4().hex


def check_id(message_id: str) -> str:
    if not isinstance(message_id, str) or not 1 <= len(message_id) <= 128:
        raise ValueError(
            f"a message id must be a string of 1 to 128 characters, got {message_id!r}"
        )
    return message_id


@attrs.frozen
class Ack:
    """The hub stored the message: its id, its ``seq``, and whether it had been stored before."""

    id: str
    seq: int
    duplicate: bool = False


@attrs.frozen
class Answer:
    """A person's reply to a question. ``action`` is ``accept``, ``decline`` or ``cancel``: a
    decline is a reply too (the person chose not to do it), so it is an Answer, not an error."""

    question_id: str
    action: str
    text: str | None
    value: dict[str, Any] | None
    by: str | None
    seq: int
    message: dict[str, Any] = attrs.field(repr=False, eq=False)

    @property
    def accepted(self) -> bool:
        return self.action == "accept"

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> Answer:
        payload = message.get("payload") or {}
        text = payload.get("text")
        value = payload.get("value")
        return cls(
            question_id=str(payload.get("question_id")),
            action=str(payload.get("action", "accept")),
            text=text if isinstance(text, str) else None,
            value=value if isinstance(value, dict) else None,
            by=message.get("from"),
            seq=int(message.get("seq", 0)),
            message=dict(message),
        )


@attrs.frozen
class Welcome:
    name: str
    role: str
    seq: int
    epoch: str | None
    message: dict[str, Any] = attrs.field(repr=False, eq=False)


@attrs.define
class _Outgoing:
    message: dict[str, Any]
    deferred: Deferred[Ack]
    attempts: int = 0
    retry: IDelayedCall | None = None


@attrs.define
class _Waiter:
    question: dict[str, Any]
    deferred: Deferred[Answer]


def _describe(failure: Failure) -> str:
    text = str(failure.value).strip() or type(failure.value).__name__
    return text.rstrip(".")


class Client:
    """A reconnecting connection to a vibews hub, for agents (and dashboards' scripts).

    Use it from Twisted code; :class:`vibews.client.BlockingClient` and
    :class:`vibews.client.AsyncClient` wrap it for plain and asyncio programs.
    """

    log = Logger()

    def __init__(
        self,
        url: str,
        token: str,
        *,
        reactor: Any = None,
        cafile: str | None = None,
        retry_policy: Callable[[int], float] | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        if not token:
            raise ValueError("no token: pass one (--token or VIBEWS_TOKEN)")
        self.reactor = reactor
        self.address = parse_url(url)
        self._factory = make_factory(self, self.address, token)
        self._policy = retry_policy or backoffPolicy(initialDelay=0.5, maxDelay=30.0, factor=2.0)
        self._refusals = 0  # handshakes refused in a row (ClientService counts TCP failures only)
        self._service = ClientService(
            make_endpoint(reactor, self.address, cafile),
            self._factory,
            retryPolicy=lambda attempt: self._policy(max(attempt, self._refusals)),
            clock=reactor,
        )
        self.welcome: Welcome | None = None
        self._current: HubProtocol | None = None
        self._outbox: dict[str, _Outgoing] = {}
        self._waiters: dict[str, _Waiter] = {}
        self._unclaimed: OrderedDict[str, Answer | Exception] = OrderedDict()
        self._listeners: list[MessageCallback] = []
        self._welcomed: list[Deferred[Welcome]] = []
        self._epoch: str | None = None
        self._last_seq = 0
        self._seen: set[int] = set()
        self._holding: list[dict[str, Any]] | None = None
        self._resuming = False
        self._next_resume: int | None = None
        self._fatal: Exception | None = None
        self._stopped = False
        self._fail_fast = False
        self._service_stopped: Deferred[None] | None = None
        self._end_watchers: list[Deferred[None]] = []
        self.connections = 0  # how many times a welcome arrived (1 + reconnects)

    # --- connecting ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._current is not None and self._current.ready

    def connect(self, fail_fast: bool = True) -> Deferred[Welcome]:
        """Start connecting (and reconnecting for as long as the client runs). Fires with the first
        ``welcome``. With ``fail_fast`` the first failure to get there ends the client with
        :class:`ConnectionFailed` or :class:`AuthenticationFailed`; without it the client keeps
        retrying, and only a wrong token ends it."""
        if self._fatal is not None:
            return fail(self._fatal)
        d: Deferred[Welcome] = Deferred()
        if self.welcome is not None and self.connected:
            d.callback(self.welcome)
            return d
        self._welcomed.append(d)
        self._fail_fast = fail_fast and self.welcome is None
        if not self._service.running:
            self._service.startService()
        if self._fail_fast:
            first = self._service.whenConnected(failAfterFailures=1)
            first.addErrback(self._first_attempt_failed)
        return d

    def _first_attempt_failed(self, failure: Failure) -> None:
        if self.welcome is not None or self._stopped or self._fatal is not None:
            return
        error = failure.value
        if not isinstance(error, ConnectionFailed | AuthenticationFailed):
            where = f"{self.address.host}:{self.address.port}"
            error = ConnectionFailed(
                f"cannot reach the hub at {self.address.url} ({where}): {_describe(failure)};"
                " is the server running? (check --url / VIBEWS_URL)"
            )
        self._end(error)

    def handshake_failed(self, error: Exception) -> None:
        """A connection closed before ``welcome``: retried with the reconnect backoff, unless
        retrying cannot help (a wrong token) or this is a fail-fast first connection."""
        fatal = isinstance(error, AuthenticationFailed) or (
            isinstance(error, HandshakeRefused) and error.status in FATAL_STATUSES
        )
        if fatal or (self._fail_fast and self.welcome is None):
            self._end(error)
        else:
            self._refusals += 1
            self.log.info("connection to the hub failed: {why}", why=str(error))

    def opened(self, protocol: HubProtocol, message: dict[str, Any]) -> None:
        payload = message.get("payload") or {}
        epoch = payload.get("epoch")
        seq: int = payload["seq"] if isinstance(payload.get("seq"), int) else 0
        first = self.welcome is None
        self.connections += 1
        self._refusals = 0
        self._current = protocol
        self.welcome = Welcome(
            str(payload.get("name")), str(payload.get("role")), seq, epoch, message
        )
        new_history = not first and epoch != self._epoch
        if first or new_history:
            self._epoch = epoch
            self._last_seq = seq
            self._seen.clear()
        else:
            self._request_resume(self._last_seq)
        self._notify(message)
        for out in list(self._outbox.values()):
            if out.retry is None:
                protocol.send_json(out.message)
        if new_history:
            self.log.warn("the hub's history changed (new epoch); asking open questions again")
            self._ask_again()
        welcomed, self._welcomed = self._welcomed, []
        for d in welcomed:
            d.callback(self.welcome)

    def _ask_again(self) -> None:
        """After the hub lost its history, questions still awaited are unknown to it: send them again
        (same ids), or their askers would wait for ever."""
        for question_id, waiter in list(self._waiters.items()):
            if question_id not in self._outbox:
                self._queue(waiter.question).addErrback(self._question_refused, question_id)

    def lost(self, protocol: HubProtocol, code: int | None, reason: str | None) -> None:
        if protocol is not self._current:
            return
        self._current = None
        self._release_held()
        self._resuming, self._next_resume = False, None
        if not self._stopped:
            self.log.info(
                "connection to the hub lost ({code} {reason}); reconnecting",
                code=code,
                reason=reason,
            )

    # --- receiving ----------------------------------------------------------------------------

    def on_message(self, callback: MessageCallback) -> None:
        """Call ``callback`` with every ``welcome``, every delivery (once, in ``seq`` order for a
        dashboard) and every ``resumed``."""
        self._listeners.append(callback)

    def _notify(self, message: dict[str, Any]) -> None:
        for callback in list(self._listeners):
            try:
                callback(message)
            except Exception:
                self.log.failure("a message callback failed")

    def received(self, protocol: HubProtocol, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "ack":
            self._acked(message)
        elif kind == "error":
            self._refused(message)
        elif kind == "resumed":
            self._resumed(protocol, message)
        elif isinstance(message.get("seq"), int):
            if self._holding is not None and protocol is self._current:
                self._holding.append(message)
            else:
                self._deliver(protocol, message)
        else:
            self._notify(message)

    @property
    def _is_agent(self) -> bool:
        return self.welcome is not None and self.welcome.role == "agent"

    def _deliver(self, protocol: HubProtocol, message: dict[str, Any]) -> None:
        seq: int = message["seq"]
        if self._is_agent:
            if seq in self._seen:
                protocol.ack(seq)  # a pending answer seen before: acking it here clears it
                return
            self._seen.add(seq)
        elif seq <= self._last_seq:
            return
        self._last_seq = max(self._last_seq, seq)
        if self._is_agent:
            # Scheduled, not sent: it leaves at the end of this reactor turn, after the callbacks
            # below acted on the message (or sooner, if one of them closes the client).
            protocol.ack(seq)
        kind = message.get("type")
        if kind == "answer":
            self._answered(message)
        elif kind == "question_closed":
            self._closed(message)
        self._notify(message)

    def _answered(self, message: dict[str, Any]) -> None:
        answer = Answer.from_message(message)
        self._settle(answer.question_id, answer)

    def _closed(self, message: dict[str, Any]) -> None:
        payload = message.get("payload") or {}
        question_id = str(payload.get("question_id"))
        reason = payload.get("reason")
        if reason == "expired":
            self._settle(question_id, QuestionExpired(question_id))
        elif reason == "withdrawn":
            self._settle(question_id, QuestionWithdrawn(question_id))

    def _settle(self, question_id: str, outcome: Answer | Exception) -> None:
        waiter = self._waiters.pop(question_id, None)
        if waiter is None:
            if self._is_agent:
                self._unclaimed[question_id] = outcome
                while len(self._unclaimed) > UNCLAIMED_KEPT:
                    self._unclaimed.popitem(last=False)
            return
        if isinstance(outcome, Exception):
            waiter.deferred.errback(Failure(outcome))
        else:
            waiter.deferred.callback(outcome)

    def _acked(self, message: dict[str, Any]) -> None:
        out = self._outbox.pop(str(message.get("id")), None)
        if out is None:
            return
        if out.retry is not None and out.retry.active():
            out.retry.cancel()
        ack = Ack(
            str(message.get("id")), int(message.get("seq", 0)), bool(message.get("duplicate"))
        )
        out.deferred.callback(ack)

    def _refused(self, message: dict[str, Any]) -> None:
        payload = message.get("payload") or {}
        code = str(payload.get("code"))
        text = str(payload.get("message"))
        message_id = message.get("id")
        out = self._outbox.get(str(message_id)) if message_id is not None else None
        if out is None:
            self.log.warn("the hub refused a message ({code}): {text}", code=code, text=text)
            return
        if code in RETRIED_CODES:
            out.attempts += 1
            delay = min(30.0, 2.0 ** (out.attempts - 1)) + random.random()  # 1, 2, 4 ... s
            out.retry = self.reactor.callLater(delay, self._resend, str(message_id))
            return
        del self._outbox[str(message_id)]
        out.deferred.errback(Failure(refusal(code, text, message_id)))

    def _resend(self, message_id: str) -> None:
        out = self._outbox.get(message_id)
        if out is None:
            return
        out.retry = None
        if self.connected and self._current is not None:
            self._current.send_json(out.message)

    # --- resume -------------------------------------------------------------------------------

    def _request_resume(self, since: int) -> None:
        """One ``resume`` at a time (a second would cut the first short); later requests wait."""
        if self._current is None or not self._current.ready:
            return
        if self._resuming:
            queued = self._next_resume
            self._next_resume = since if queued is None else min(queued, since)
            return
        self._resuming = True
        if not self._is_agent:
            self._holding = []  # a dashboard's live messages wait, so all arrive in seq order
        payload: dict[str, Any] = {"since": since}
        if self._epoch is not None:
            payload["epoch"] = self._epoch
        self._current.send_json({"type": "resume", "payload": payload})

    def _resumed(self, protocol: HubProtocol, message: dict[str, Any]) -> None:
        if protocol is not self._current:
            return
        self._resuming = False
        self._release_held()
        payload = message.get("payload") or {}
        if isinstance(payload.get("seq"), int):
            self._last_seq = max(self._last_seq, payload["seq"])
        self._notify(message)
        queued, self._next_resume = self._next_resume, None
        if queued is not None:
            self._request_resume(queued)

    def _release_held(self) -> None:
        held, self._holding = self._holding, None
        if held and self._current is not None:
            for message in sorted(held, key=lambda m: int(m["seq"])):
                self._deliver(self._current, message)

    # --- sending ------------------------------------------------------------------------------

    def _queue(self, message: dict[str, Any]) -> Deferred[Ack]:
        if self._fatal is not None:
            return fail(self._fatal)
        if self._stopped:
            return fail(ClientStopped("the client was closed"))
        message_id = message["id"]
        if message_id in self._outbox:
            raise ValueError(f"a message with id {message_id!r} is already waiting for its ack")
        out = _Outgoing(message, Deferred())
        self._outbox[message_id] = out
        if self.connected and self._current is not None:
            self._current.send_json(message)
        return out.deferred

    def send(
        self, message_type: str, payload: Mapping[str, Any], message_id: str | None = None
    ) -> Deferred[Ack]:
        """Send any message; fires with its :class:`Ack` once the hub stored it (even if this takes
        reconnects), or fails with a :class:`~vibews.client.errors.Refused` subclass."""
        if message_type in ("ack", "resume"):
            raise ValueError(f"'{message_type}' is never acked; the client sends it itself")
        message: dict[str, Any] = {"type": message_type, "id": check_id(message_id or new_id())}
        message["payload"] = dict(payload)
        return self._queue(message)

    def status(self, state: str, detail: str | None = None, **extra: Any) -> Deferred[Ack]:
        """``agent_status``: what this agent is doing now."""
        payload: dict[str, Any] = {"state": state, **extra}
        if detail is not None:
            payload["detail"] = detail
        return self.send("agent_status", payload)

    def task(
        self, task_id: str, status: str, progress: float | None = None, **extra: Any
    ) -> Deferred[Ack]:
        """``task_update``: a task's status and optional progress (0 to 1)."""
        payload: dict[str, Any] = {"task_id": task_id, "status": status, **extra}
        if progress is not None:
            payload["progress"] = progress
        return self.send("task_update", payload)

    def withdraw(self, question_id: str) -> Deferred[Ack]:
        """Take an open question back; its waiting :meth:`ask` fails with QuestionWithdrawn."""
        return self.send("withdraw", {"question_id": question_id})

    def answer(
        self,
        question_id: str,
        text: str | None = None,
        *,
        value: Mapping[str, Any] | None = None,
        action: str = "accept",
    ) -> Deferred[Ack]:
        """(dashboard) Answer a question."""
        payload: dict[str, Any] = {"question_id": question_id, "action": action}
        if text is not None:
            payload["text"] = text
        if value is not None:
            payload["value"] = dict(value)
        return self.send("answer", payload)

    def ask(
        self,
        text: str,
        options: list[str] | None = None,
        schema: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        *,
        urgency: str | None = None,
        question_id: str | None = None,
        **extra: Any,
    ) -> Deferred[Answer]:
        """Ask the people on the dashboards; fires with their :class:`Answer`.

        Fails with :class:`~vibews.client.errors.QuestionExpired` when ``timeout`` seconds (kept by
        the hub, across its restarts) pass unanswered, :class:`QuestionWithdrawn`, or a
        :class:`Refused` subclass when the hub refuses the question. Cancelling the Deferred stops
        waiting here; the question stays open on the hub (see :meth:`withdraw`). Passing the
        ``question_id`` of a question asked earlier (by any process of this agent) waits for that
        question's answer instead of asking a new one.
        """
        question_id = check_id(question_id or new_id())
        if question_id in self._waiters:
            raise ValueError(f"already waiting for question {question_id!r}")
        payload: dict[str, Any] = {"text": text, **extra}
        if options is not None:
            payload["options"] = list(options)
        if schema is not None:
            payload["schema"] = dict(schema)
        if timeout is not None:
            payload["timeout"] = timeout
        if urgency is not None:
            payload["urgency"] = urgency
        message = {"type": "question", "id": question_id, "payload": payload}

        def cancel(_: Deferred[Answer]) -> None:
            self._waiters.pop(question_id, None)

        answered: Deferred[Answer] = Deferred(cancel)
        known = self._unclaimed.pop(question_id, None)
        if known is not None:
            if isinstance(known, Exception):
                answered.errback(Failure(known))
            else:
                answered.callback(known)
            return answered
        self._waiters[question_id] = _Waiter(message, answered)
        sent = self._queue(message)
        sent.addCallbacks(
            self._question_acked,
            self._question_refused,
            callbackArgs=(question_id,),
            errbackArgs=(question_id,),
        )
        return answered

    def _question_acked(self, ack: Ack, question_id: str) -> None:
        if ack.duplicate and question_id in self._waiters:
            # Asked before, perhaps by an earlier process: its answer may have been delivered and
            # acked there. A replay from the question's own seq brings it here.
            self._request_resume(ack.seq)

    def _question_refused(self, failure: Failure, question_id: str) -> None:
        waiter = self._waiters.pop(question_id, None)
        if waiter is not None:
            waiter.deferred.errback(failure)

    # --- ending -------------------------------------------------------------------------------

    def _end(self, error: Exception) -> None:
        """Stop for good (a wrong token, an unreachable hub with fail_fast, close()): everything
        still waiting fails with ``error``."""
        if self._fatal is not None:
            return
        self._fatal = error
        # Not at once: this may run inside the connection's connectionLost, and ClientService
        # must see that disconnect before it is stopped.
        stopped: Deferred[None] = Deferred()
        self._service_stopped = stopped

        def stop() -> None:
            self._service.stopService().chainDeferred(stopped)

        self.reactor.callLater(0, stop)
        self._fail_all(error)
        watchers, self._end_watchers = self._end_watchers, []
        for d in watchers:
            d.errback(Failure(error))

    def _fail_all(self, error: Exception) -> None:
        outbox, self._outbox = self._outbox, {}
        waiters, self._waiters = self._waiters, {}
        welcomed, self._welcomed = self._welcomed, []
        for out in outbox.values():
            if out.retry is not None and out.retry.active():
                out.retry.cancel()
            out.deferred.errback(Failure(error))
        for waiter in waiters.values():
            waiter.deferred.errback(Failure(error))
        for d in welcomed:
            d.errback(Failure(error))

    def ended(self) -> Deferred[None]:
        """Fails with the reason once the client stopped for good (never fires otherwise)."""
        if self._fatal is not None:
            return fail(self._fatal)
        d: Deferred[None] = Deferred()
        self._end_watchers.append(d)
        return d

    @property
    def failure(self) -> Exception | None:
        """Why the client stopped for good, if it did."""
        return self._fatal

    def close(self) -> Deferred[None]:
        """Send pending acks, close the WebSocket cleanly (1000) and stop reconnecting. Anything
        still waiting fails with :class:`ClientStopped`."""
        self._stopped = True
        protocol = self._current
        done: Deferred[None] = Deferred()

        def stop(_: object = None) -> None:
            self._end(ClientStopped("the client was closed"))
            stopped = self._service_stopped
            if stopped is None or stopped.called:
                done.callback(None)
            else:
                stopped.addBoth(lambda _: done.callback(None))

        if protocol is not None and protocol.ready:
            protocol.flush_ack()
            protocol.sendClose(1000)
            # Wait for the closing handshake, but not longer than autobahn's own 5 s limit.
            closed: Deferred[None] = Deferred()

            def settle(result: object = None) -> object:
                if not closed.called:
                    closed.callback(None)
                return result

            timer = self.reactor.callLater(6, settle)
            protocol.is_closed.addBoth(settle)
            closed.addCallback(lambda _: timer.cancel() if timer.active() else None)
            closed.addCallback(stop)
        else:
            stop()
        return done
