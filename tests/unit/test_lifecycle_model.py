"""A model of the question lifecycle (protocol sections 5 and 6) run against the real Hub and store.

Hypothesis interleaves asks, answers, withdrawals, claims, acks, the passing of time, disconnects and
restarts. A small model predicts the ack or error for every message a client sends, every message each
connection receives, what the store's snapshot, journal and pending lists say about each question.
No sockets: fake peers stand in for connections, a SQLite file for the store and a ``Clock`` for time
(every step ends with ``clock.advance``, which commits the store's batch and fires its Deferreds).

Where the contract leaves room, the model follows docs/lifecycle.rst: ``withdraw`` checks the asker
(``forbidden``) before the state (``already_answered``), and the ``question_closed`` of an expiry is
pending for the agent like an answer (sent again after each ``welcome`` until it is acked).

Re-sent messages and ``resume`` are modelled too: a message re-sent with an id its sender name
already stored gets the original ``seq`` with ``"duplicate": true`` and stores nothing; ``resume``
from any step boundary replays exactly the model's messages after it (an agent: only its own
answers and closings), then ``resumed``. The model keeps its own journal (``log``), one item per
stored message, so it also predicts the store's ``seq`` count after every step.

Times are on a quarter-second grid, so deadlines are often met exactly (a question expires *at* its
deadline). When a question's claim would lapse at the very instant it expires, the contract does not
say whether ``claimed`` (by null) comes before ``question_closed``: the model accepts either.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from hypothesis import event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent, globalLogPublisher
from zope.interface import implementer

from vibews.hub import Hub
from vibews.peer import HubSettings, Outgoing
from vibews.session import Session
from vibews.store.sqlite import SQLiteStore
from vibews.timestamps import format_rfc3339
from vibews.tokens import Identity, Role

AGENTS = ("a1", "a2")
DASHBOARDS = ("d1", "d2")
CLIENTS = DASHBOARDS + AGENTS
CLAIM_TTL = 5.0
# No rate limit, and no closing for too many refusals (50 in 10 s): longer runs than the default
# 30 steps would trip it, and it is not what this model is about.
HUB_SETTINGS = HubSettings(rate=0, presence_grace=0, claim_ttl=CLAIM_TTL, max_refused=1_000_000)
START = 1_800_000_000.0  # 2027: an `expires_at` in 2020 is in the past

OPEN, ANSWERED, EXPIRED, WITHDRAWN = "open", "answered", "expired", "withdrawn"

SCHEMA = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "env": {"type": "string", "enum": ["staging", "prod"]},
        "replicas": {"type": "integer", "minimum": 1, "maximum": 3},
    },
    "required": ["ok"],
}
VALUES = st.fixed_dictionaries(
    {"ok": st.booleans()},
    optional={"env": st.sampled_from(["staging", "prod"]), "replicas": st.integers(1, 3)},
)
TIMEOUTS = st.integers(4, 80).map(lambda k: k / 4)  # 1 s .. 20 s
# 0.5 s .. 30 s, mostly short, so that questions with a timeout are often still open.
STEPS = st.one_of(st.integers(1, 8), st.integers(1, 60)).map(lambda k: k / 2)
# Restarts reset every claim: a few per run, so that claims get the chance to lapse.
MAX_RESTARTS = 2
DOWN_TIMES = st.integers(0, 60).map(lambda k: k / 2)

# One expected delivery, in a comparable form: ("question", qid), ("answer", qid, action),
# ("question_closed", qid, reason), ("claimed", qid, by, until), ("receipt", qid),
# ("presence", agent, online). Element 1 names what it is about.
Item = tuple[Any, ...]

SETTINGS = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    database=None,  # nothing is written into the working tree
)


class FakePeer:
    """The hub's ``Peer`` without a socket: keeps what it is sent, decoded."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.session: Session | None = None
        self.close_code: int | None = None
        self.aborted = False

    def send(self, message: Outgoing) -> None:
        self.messages.append(json.loads(message.data))

    def close(self, code: int, reason: str) -> None:
        self.close_code = code
        if self.session is not None:
            self.session.closed()

    def abort(self) -> None:
        self.aborted = True
        if self.session is not None:
            self.session.closed()

    def is_paused(self) -> bool:
        return False

    def when_writable(self) -> Deferred[None]:
        return succeed(None)


@implementer(ILogObserver)
class FailureLog:
    """Failures the hub logs (a Deferred errback it swallowed) instead of raising."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def __call__(self, event: LogEvent) -> None:
        if event.get("log_failure") is not None or event.get("log_level") == LogLevel.critical:
            self.failures.append(formatEvent(event) or repr(event))


@attrs.define
class ModelClaim:
    by: str
    connection: int  # Conn.number of the claiming connection
    until: float


@attrs.define
class ModelQuestion:
    id: str
    asker: str
    schema: bool
    deadline: float | None
    state: str = OPEN
    claim: ModelClaim | None = None
    answer_seq: int | None = None  # from the answer's ack
    delivered: bool = False  # the agent acked the answer (a receipt was sent)
    closing_acked: bool = False  # expired: the agent acked the question_closed


@attrs.define
class Expected:
    """The reply a sent message must get: an ack whose seq is a journal entry of ``kind`` about
    ``question`` (None: no journal check), or an error with ``code``."""

    message_id: str
    code: str | None = None
    kind: str | None = None
    question: str | None = None
    duplicate_of: int | None = None  # a re-sent message: the original ack's seq
    frame: dict[str, Any] | None = None  # what was sent (filled in by _send)


@attrs.define(eq=False)
class Conn:
    name: str
    role: Role
    number: int
    peer: FakePeer
    session: Session
    checked: int = 0  # messages of peer.messages already checked
    last_seq: int = 0  # dashboards: the seq of the last delivery (welcome.seq at first)
    newest: int = 0  # the newest seq this connection was told about, for an agent's ack
    # Agents: (type, question) -> seq of the answers and closings sent here and not acked here.
    unacked: dict[tuple[str, str], int] = attrs.Factory(dict)
    replies: list[Expected] = attrs.Factory(list)

    @property
    def is_agent(self) -> bool:
        return self.role == "agent"


def _item(frame: dict[str, Any]) -> Item:
    kind = frame["type"]
    payload = frame.get("payload") or {}
    if kind == "question":
        return (kind, frame["id"])
    if kind == "answer":
        return (kind, payload["question_id"], payload.get("action", "accept"))
    if kind == "question_closed":
        return (kind, payload["question_id"], payload["reason"])
    if kind == "claimed":
        return (kind, payload["question_id"], payload["by"], payload["until"])
    if kind == "receipt":
        return (kind, payload["question_id"])
    if kind == "presence":
        return (kind, payload["agent"], payload["online"])
    return ("unexpected", json.dumps(frame, sort_keys=True))


def _by_subject(items: Iterable[Item]) -> dict[str, list[Item]]:
    """Items grouped by the question (or agent) they are about, each group in order: timers of
    different questions that fall due together may be stored in either order."""
    grouped: dict[str, list[Item]] = {}
    for item in items:
        grouped.setdefault(str(item[1]), []).append(item)
    return grouped


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="vibews-model-"))
        self.path = self.directory / "store.sqlite3"
        self.clock = Clock()
        self.clock.advance(START)
        self.failure_log = FailureLog()
        globalLogPublisher.addObserver(self.failure_log)
        self.store = self._open_store()
        self.hub = self._new_hub()
        self.questions: dict[str, ModelQuestion] = {}
        self.conns: dict[str, Conn | None] = dict.fromkeys(CLIENTS)
        self.dead: list[tuple[FakePeer, int]] = []  # closed peers and how much they had got
        self.events: list[tuple[Item, str | None]] = []  # this step's deliveries (item, agent)
        self.tied: set[str] = set()  # questions whose claim ran out as they expired, this step
        self.counter = 0
        self.restarts = 0
        # The model's journal: every stored message, in the order the steps stored them; and the
        # journal's length after each step (where a resume's ``since`` may point).
        self.log: list[tuple[Item, str | None]] = []
        self.boundaries: set[int] = {0}
        # Per sender name: message id -> (the frame, its seq), for every message acked (not
        # ``ack``/``resume``, which are never acked).
        self.sent: dict[str, dict[str, tuple[dict[str, Any], int]]] = {}
        for name in CLIENTS:
            self._connect(name)
        self._settle()

    # -- plumbing ---------------------------------------------------------------------------------

    def _open_store(self) -> SQLiteStore:
        # "process" only skips the fsync: what is committed, and when, is the same as with "full".
        return SQLiteStore(self.path, self.clock, durability="process")

    def _new_hub(self) -> Hub:
        return Hub(self.store, self.clock, HUB_SETTINGS, agent_names=lambda: AGENTS)

    def _fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def _now(self) -> float:
        return self.clock.seconds()

    def _journal(self) -> list[dict[str, Any]]:
        return [json.loads(m.data) for m in self.store.read(0, None, 1_000_000)]

    def _live(self, role: Role | None = None) -> list[str]:
        return [
            name
            for name, conn in self.conns.items()
            if conn is not None and (role is None or conn.role == role)
        ]

    def _conn(self, name: str) -> Conn:
        conn = self.conns[name]
        assert conn is not None
        return conn

    def _emit(self, item: Item, agent: str | None = None) -> None:
        """The model's prediction: ``item`` is stored in this step and delivered to every connected
        dashboard (and to ``agent``'s connection)."""
        event(f"delivered: {item[0]}{'' if len(item) < 3 else f' {item[2]}'}")
        self.events.append((item, agent))

    def _send(self, conn: Conn, frame: dict[str, Any], expected: Expected) -> None:
        note(f"{conn.name}#{conn.number} sends {json.dumps(frame)}; expects {expected}")
        event(f"reply: {expected.code or 'ack'} to {frame['type']}")
        expected.frame = frame
        conn.replies.append(expected)
        conn.session.receive(json.dumps(frame).encode())

    def _settle(self, seconds: float = 0.0) -> None:
        self.clock.advance(seconds)
        self._check_deliveries()

    # -- model transitions ------------------------------------------------------------------------

    def _close(self, question: ModelQuestion, reason: str) -> None:
        assert question.state == OPEN
        question.state = reason
        question.claim = None
        self._emit(("question_closed", question.id, reason), question.asker)

    def _lapse(self, question: ModelQuestion) -> None:
        question.claim = None
        self._emit(("claimed", question.id, None, None))

    def _time_passes(self, until: float) -> None:
        """Deadlines and claim TTLs that fall due up to ``until``, in time order."""
        due: list[tuple[float, str, str]] = []
        for question in self.questions.values():
            if question.state != OPEN:
                continue
            if question.deadline is not None and question.deadline <= until:
                due.append((question.deadline, "expire", question.id))
            if question.claim is not None and question.claim.until <= until:
                due.append((question.claim.until, "lapse", question.id))
        for when, what, question_id in sorted(due):
            question = self.questions[question_id]
            if question.state != OPEN:
                continue
            if (when, "lapse", question_id) in due and (when, "expire", question_id) in due:
                event("a claim ran out as its question expired")
                self.tied.add(question_id)
            if what == "expire":
                self._close(question, EXPIRED)
            else:
                self._lapse(question)

    # -- connections ------------------------------------------------------------------------------

    def _connect(self, name: str) -> None:
        role: Role = "agent" if name in AGENTS else "dashboard"
        peer = FakePeer()
        session = self.hub.open_session(peer, Identity(name, role), digest=f"d-{name}")
        peer.session = session
        conn = Conn(name, role, self.counter, peer, session)
        self.counter += 1
        self.conns[name] = conn
        note(f"{name} connects as #{conn.number}")
        welcome = peer.messages[0]
        assert welcome["type"] == "welcome", welcome
        assert welcome["payload"]["name"] == name and welcome["payload"]["role"] == role
        conn.last_seq = conn.newest = welcome["payload"]["seq"]
        assert conn.last_seq == self.store.head()
        conn.checked = 1
        if conn.is_agent:
            assert "snapshot" not in welcome["payload"]
            pending = self._pending(name)
            sent = peer.messages[1 : 1 + len(pending)]
            assert sorted(_item(m)[:2] for m in sent) == pending, (
                "an agent's pending answers and expiries follow its welcome",
                sent,
            )
            seqs = [m["seq"] for m in sent]
            assert seqs == sorted(seqs) and all(s <= conn.newest for s in seqs), sent
            for frame in sent:
                conn.unacked[_item(frame)[:2]] = frame["seq"]
            conn.checked += len(pending)
            if pending:
                event("pending answers or expiries re-sent after welcome")
            self._emit(("presence", name, True))
        else:
            self._check_questions(welcome["payload"]["snapshot"]["questions"], "welcome snapshot")

    def _pending(self, agent: str) -> list[tuple[str, str]]:
        """What ``agent`` is owed until it acks: answers, and the closings of expired questions
        (documented in docs/lifecycle.rst: an agent offline at the deadline still learns it)."""
        pending = []
        for question in self.questions.values():
            if question.asker != agent:
                continue
            if question.state == ANSWERED and not question.delivered:
                pending.append(("answer", question.id))
            if question.state == EXPIRED and not question.closing_acked:
                pending.append(("question_closed", question.id))
        return sorted(pending)

    def _disconnect(self, name: str) -> None:
        conn = self._conn(name)
        note(f"{name}#{conn.number} disconnects")
        conn.session.closed()  # what the adapter does when the socket goes away
        self._bury(conn)
        if conn.is_agent:
            self._emit(("presence", name, False))
            return
        for question in self.questions.values():
            if (
                question.state == OPEN
                and question.claim is not None
                and question.claim.connection == conn.number
            ):
                event("a claim lapsed because its connection closed")
                self._lapse(question)

    def _bury(self, conn: Conn) -> None:
        assert conn.peer.messages[conn.checked :] == [], "unchecked messages at close"
        assert conn.replies == [], "messages left without a reply"
        self.dead.append((conn.peer, len(conn.peer.messages)))
        self.conns[conn.name] = None

    # -- checks -----------------------------------------------------------------------------------

    def _check_questions(self, listed: Sequence[Mapping[str, Any]], where: str) -> None:
        got = {q["id"]: q for q in listed}
        assert set(got) == set(self.questions), (where, sorted(got), sorted(self.questions))
        for question_id, model in self.questions.items():
            shown = got[question_id]
            claim = (
                None
                if model.claim is None
                else {"by": model.claim.by, "until": format_rfc3339(model.claim.until)}
            )
            assert (shown["state"], shown["claim"], shown["delivered"]) == (
                model.state,
                claim,
                model.delivered,
            ), (where, question_id, shown, model)
            assert shown["from"] == model.asker

    def _check_deliveries(self) -> None:
        """Every connection got exactly the replies and deliveries the model predicted."""
        journal = {m["seq"]: m for m in self._journal()}
        for conn in self.conns.values():
            if conn is None:
                continue
            new = conn.peer.messages[conn.checked :]
            conn.checked = len(conn.peer.messages)
            replies = [m for m in new if m["type"] in ("ack", "error")]
            deliveries = [m for m in new if m["type"] not in ("ack", "error")]
            self._check_replies(conn, replies, journal)
            expected = [
                item for item, agent in self.events if not conn.is_agent or agent == conn.name
            ]
            got = [_item(m) for m in deliveries]
            assert _by_subject(self._untie(got)) == _by_subject(self._untie(expected)), (
                conn.name,
                conn.number,
                got,
                expected,
            )
            for frame in deliveries:
                conn.newest = max(conn.newest, frame["seq"])
                if conn.is_agent:
                    assert frame["type"] in ("answer", "question_closed"), frame
                    subject = _item(frame)[1]
                    assert self.questions[subject].asker == conn.name, (conn.name, frame)
                    conn.unacked[(frame["type"], subject)] = frame["seq"]
                else:
                    assert frame["seq"] == conn.last_seq + 1, ("seq gap", conn.name, frame)
                    conn.last_seq = frame["seq"]
                    assert journal[frame["seq"]] == frame, "delivered as stored"
        self.log.extend(self.events)
        self.boundaries.add(len(self.log))
        self.events.clear()
        self.tied.clear()
        for peer, count in self.dead:
            assert len(peer.messages) == count, "a closed connection was sent something"

    def _untie(self, items: list[Item]) -> list[Item]:
        """Without the ``claimed`` (by null) that may or may not precede a tied expiry."""
        return [i for i in items if not (i[0] == "claimed" and i[2] is None and i[1] in self.tied)]

    def _check_replies(
        self, conn: Conn, replies: list[dict[str, Any]], journal: dict[int, dict[str, Any]]
    ) -> None:
        expected, conn.replies = conn.replies, []
        got = [(m["type"], m["id"], m.get("payload", {}).get("code")) for m in replies]
        want = [("ack" if e.code is None else "error", e.message_id, e.code) for e in expected]
        assert got == want, (conn.name, replies)
        for reply, wanted in zip(replies, expected, strict=True):
            if reply["type"] != "ack":
                continue
            if wanted.duplicate_of is not None:
                assert reply == {
                    "type": "ack",
                    "id": wanted.message_id,
                    "seq": wanted.duplicate_of,
                    "duplicate": True,
                }, reply
                continue
            assert "duplicate" not in reply, reply
            assert wanted.frame is not None
            self.sent.setdefault(conn.name, {})[wanted.message_id] = (wanted.frame, reply["seq"])
            conn.newest = max(conn.newest, reply["seq"])
            entry = journal[reply["seq"]]
            assert wanted.kind is not None and wanted.question is not None
            assert _item(entry)[:2] == (wanted.kind, wanted.question), (reply, entry)
            if wanted.kind == "answer":
                self.questions[wanted.question].answer_seq = reply["seq"]

    @invariant()
    def store_agrees_with_the_model(self) -> None:
        self._check_questions(self.store.snapshot(AGENTS).questions, "store snapshot")
        now = self._now()
        for question in self.questions.values():
            if question.deadline is not None and question.deadline <= now:
                assert question.state != OPEN, (question, "past its deadline")

    @invariant()
    def pending_agrees_with_the_model(self) -> None:
        for agent in AGENTS:
            stored = self.store.pending_answers(agent)
            assert sorted(_item(json.loads(m.data))[:2] for m in stored) == self._pending(agent)

    @invariant()
    def journal_agrees_with_the_model(self) -> None:
        journal = self._journal()
        assert [m["seq"] for m in journal] == list(range(1, len(journal) + 1)), "journal gap"
        closed: dict[str, str] = {}
        receipts: set[str] = set()
        for message in journal:
            item = _item(message)
            if item[0] == "question_closed":
                assert item[1] not in closed, ("a question left open twice", item)
                closed[item[1]] = item[2]
            elif item[0] == "claimed":
                assert item[1] not in closed, ("claimed after question_closed", item)
            elif item[0] == "receipt":
                assert item[1] not in receipts, ("second receipt", item)
                assert closed.get(item[1]) == ANSWERED, ("receipt for an unanswered question", item)
                receipts.add(item[1])
        for question in self.questions.values():
            assert closed.get(question.id, OPEN) == question.state, (question, closed)
            assert (question.id in receipts) == question.delivered, question

    @invariant()
    def every_stored_message_is_in_the_model(self) -> None:
        assert self.store.head() == len(self.log), (self.store.head(), len(self.log))

    @invariant()
    def nothing_failed_in_the_hub(self) -> None:
        assert self.failure_log.failures == []

    # -- rules ------------------------------------------------------------------------------------

    def _agent(self, data: st.DataObject) -> Conn:
        return self._conn(data.draw(st.sampled_from(self._live("agent")), label="agent"))

    def _dashboard(self, data: st.DataObject) -> Conn:
        return self._conn(data.draw(st.sampled_from(self._live("dashboard")), label="dashboard"))

    def _target(
        self, data: st.DataObject, claimed: bool = False
    ) -> tuple[str, ModelQuestion | None]:
        """The question a message names: mostly an open one (with ``claimed``, often one that is
        claimed), sometimes any known one (open or not), now and then an id nobody used (None)."""
        still_open = [q.id for q in self.questions.values() if q.state == OPEN]
        held = [q.id for q in self.questions.values() if q.claim is not None]
        kinds = ["open", "open", "known", "unknown"] if still_open else ["known", "unknown"]
        if claimed and held:
            kinds.insert(0, "claimed")
        kind = data.draw(st.sampled_from(kinds), label="target")
        if kind == "unknown":
            return self._fresh("nope"), None
        pool = {"open": still_open, "claimed": held}.get(kind, list(self.questions))
        question_id = data.draw(st.sampled_from(pool), label="question")
        return question_id, self.questions[question_id]

    def _refusal(self, question: ModelQuestion | None) -> str | None:
        """Check 8 of the contract for answer and claim."""
        if question is None:
            return "unknown_question"
        return None if question.state == OPEN else "already_answered"

    @precondition(lambda self: self._live("agent"))
    @rule(
        data=st.data(),
        timeout=st.none() | TIMEOUTS,
        schema=st.booleans(),
        past=st.sampled_from([False, False, False, True]),
    )
    def ask(self, data: st.DataObject, timeout: float | None, schema: bool, past: bool) -> None:
        """A new question: without a deadline, with a ``timeout``, or (``past``) with an
        ``expires_at`` already past, which is stored and closed as expired at once."""
        self._ask(self._agent(data), timeout, schema, past)

    @initialize(
        asks=st.lists(
            st.tuples(st.sampled_from(AGENTS), st.none() | TIMEOUTS, st.booleans()), max_size=4
        )
    )
    def some_questions_to_begin_with(self, asks: list[tuple[str, float | None, bool]]) -> None:
        """Open questions from the start leave the steps for what happens to them."""
        for agent, timeout, schema in asks:
            self._ask(self._conn(agent), timeout, schema, past=False)

    def _ask(self, agent: Conn, timeout: float | None, schema: bool, past: bool) -> None:
        question_id = self._fresh("q")
        payload: dict[str, Any] = {"text": "Deploy?"}
        deadline = None
        if past:
            payload["expires_at"] = "2020-01-01T00:00:00Z"
            deadline = 0.0
        elif timeout is not None:
            payload["timeout"] = timeout
            deadline = self._now() + timeout
        if schema:
            payload["schema"] = SCHEMA
        question = ModelQuestion(question_id, agent.name, schema, deadline)
        self.questions[question_id] = question
        frame = {"type": "question", "id": question_id, "payload": payload}
        self._send(agent, frame, Expected(question_id, kind="question", question=question_id))
        self._emit(("question", question_id))
        if past:
            self._close(question, EXPIRED)
        self._settle()

    @precondition(lambda self: self._live("dashboard") and self.questions)
    @rule(data=st.data(), action=st.sampled_from([None, "accept", "decline", "cancel"]))
    def answer(self, data: st.DataObject, action: str | None) -> None:
        """Valid content (a ``value`` for a question with a schema, else ``text``), so only the
        question's existence and state decide."""
        dashboard = self._dashboard(data)
        question_id, question = self._target(data)
        payload: dict[str, Any] = {"question_id": question_id}
        if action is not None:
            payload["action"] = action
        if action in (None, "accept"):
            if question is not None and question.schema:
                payload["value"] = data.draw(VALUES, label="value")
            else:
                payload["text"] = data.draw(st.text(max_size=5), label="text")
        message_id = self._fresh("m")
        code = self._refusal(question)
        frame = {"type": "answer", "id": message_id, "payload": payload}
        self._send(dashboard, frame, Expected(message_id, code, "answer", question_id))
        if question is not None and code is None:
            self._emit(("answer", question_id, action or "accept"), question.asker)
            self._close(question, ANSWERED)
        self._settle()

    @precondition(lambda self: self._live("agent") and self.questions)
    @rule(data=st.data())
    def withdraw(self, data: st.DataObject) -> None:
        """By the asking agent or (forbidden) by the other one."""
        agent = self._agent(data)
        question_id, question = self._target(data)
        message_id = self._fresh("m")
        code = self._refusal(question)
        if question is not None and question.asker != agent.name:
            code = "forbidden"
        frame = {"type": "withdraw", "id": message_id, "payload": {"question_id": question_id}}
        self._send(agent, frame, Expected(message_id, code, "question_closed", question_id))
        if question is not None and code is None:
            self._close(question, WITHDRAWN)
        self._settle()

    @precondition(lambda self: self._live("dashboard") and self.questions)
    @rule(data=st.data())
    def claim(self, data: st.DataObject) -> None:
        """A claim, or a newer one replacing it: often renewed by the connection that holds it,
        or taken over by another."""
        question_id, question = self._target(data, claimed=True)
        holder = None if question is None or question.claim is None else question.claim.by
        if holder is not None and self.conns[holder] is not None:
            choices = st.just(holder) | st.sampled_from(self._live("dashboard"))
            dashboard = self._conn(data.draw(choices, label="dashboard"))
        else:
            dashboard = self._dashboard(data)
        message_id = self._fresh("m")
        code = self._refusal(question)
        frame = {"type": "claim", "id": message_id, "payload": {"question_id": question_id}}
        self._send(dashboard, frame, Expected(message_id, code, "claimed", question_id))
        if question is not None and code is None:
            until = self._now() + CLAIM_TTL
            question.claim = ModelClaim(dashboard.name, dashboard.number, until)
            self._emit(("claimed", question_id, dashboard.name, format_rfc3339(until)))
        self._settle()

    @precondition(lambda self: any(self._conn(name).unacked for name in self._live("agent")))
    @rule(data=st.data(), newest=st.booleans())
    def ack(self, data: st.DataObject, newest: bool) -> None:
        """The agent acks the newest seq it was told about, or (to clear only some answers) the
        seq of one answer it holds. Mostly an agent that holds some (the other one's ack must
        change nothing)."""
        holding = [name for name in self._live("agent") if self._conn(name).unacked]
        choices = st.sampled_from(holding) | st.sampled_from(self._live("agent"))
        agent = self._conn(data.draw(choices, label="agent"))
        seq = agent.newest
        if not newest and agent.unacked:
            seq = data.draw(st.sampled_from(sorted(agent.unacked.values())), label="seq")
        note(f"{agent.name}#{agent.number} acks {seq}")
        acked = sorted((s, key) for key, s in agent.unacked.items() if s <= seq)
        for _, (kind, question_id) in acked:
            del agent.unacked[(kind, question_id)]
            question = self.questions[question_id]
            if kind == "question_closed":
                if question.state == EXPIRED:  # only an expiry's closing was pending; no receipt
                    question.closing_acked = True
            elif not question.delivered:
                question.delivered = True
                self._emit(("receipt", question_id))
        agent.session.receive(json.dumps({"type": "ack", "seq": seq}).encode())
        self._settle()

    @rule(seconds=STEPS, aim=st.sampled_from([None, "at", "before"]))
    def time_passes(self, seconds: float, aim: str | None) -> None:
        """``seconds`` pass; or time runs exactly to the next deadline or claim end (``at``), to
        meet it on the dot, or to a quarter second before it (``before``), to act just in time."""
        timers = [q.deadline for q in self.questions.values() if q.state == OPEN and q.deadline]
        timers += [q.claim.until for q in self.questions.values() if q.claim is not None]
        if aim is not None and timers:
            assert min(timers) > self._now(), "a timer that fell due was not run"
            seconds = min(timers) - self._now() - (0.25 if aim == "before" else 0.0)
        note(f"{seconds} s pass")
        self._time_passes(self._now() + seconds)
        self._settle(seconds)

    @rule(client=st.sampled_from(CLIENTS))
    def disconnect_or_reconnect(self, client: str) -> None:
        """A connected client goes away (its TCP connection drops); one that is away comes back."""
        if self.conns[client] is None:
            self._connect(client)
        else:
            self._disconnect(client)
        self._settle()

    @precondition(lambda self: self.restarts < MAX_RESTARTS)
    @rule(crash=st.booleans(), down=DOWN_TIMES, order=st.permutations(CLIENTS))
    def restart(self, crash: bool, down: float, order: list[str]) -> None:
        """Stop (SIGTERM, or a crash: nothing closes), stay down a while, start on the same file,
        and reconnect everyone. Claims do not survive; deadlines passed while down expire at start."""
        self.restarts += 1
        live = [conn for conn in self.conns.values() if conn is not None]
        if not crash:
            self.hub.shutdown()
            for conn in live:
                assert conn.peer.close_code == 1001
        for conn in live:
            self._bury(conn)
        self.store.close()
        # A crashed hub's timers still fire: they find the store closed and store nothing.
        self.clock.advance(down)
        self.store = self._open_store()
        self.hub = self._new_hub()
        started = self.hub.start()
        self.clock.advance(0)
        outcome: list[Any] = []
        started.addBoth(outcome.append)
        assert len(outcome) == 1 and not hasattr(outcome[0], "getTraceback"), outcome
        for question in self.questions.values():
            if question.state == OPEN and question.claim is not None:
                self._lapse(question)
        # Stored while nobody was connected: claims lapse and every agent that was online goes
        # offline (at the stop, or for a crash at the start), then deadlines passed while down
        # expire.
        for conn in live:
            if conn.is_agent:
                self._emit(("presence", conn.name, False))
        self._time_passes(self._now())
        if any(item[0] == "question_closed" for item, _ in self.events):
            event("a deadline passed while the server was down")
        stored = [_item(m) for m in self._journal()[len(self.log) :]]
        assert _by_subject(stored) == _by_subject(item for item, _ in self.events), stored
        self.log.extend(self.events)
        self.boundaries.add(len(self.log))
        self.events.clear()
        for name in order:
            self._connect(name)
        self._settle()

    @precondition(lambda self: any(self.sent.get(name) for name in self._live()))
    @rule(data=st.data())
    def resend(self, data: st.DataObject) -> None:
        """A client re-sends a message its name already stored (a retry after a lost ack, maybe
        on a new connection, maybe after a restart, maybe after the question moved on): the
        original seq with ``duplicate``, nothing stored, nothing delivered."""
        names = [name for name in self._live() if self.sent.get(name)]
        conn = self._conn(data.draw(st.sampled_from(names), label="sender"))
        message_id = data.draw(st.sampled_from(sorted(self.sent[conn.name])), label="id")
        frame, seq = self.sent[conn.name][message_id]
        event(f"re-sent: {frame['type']}")
        self._send(conn, frame, Expected(message_id, duplicate_of=seq))
        self._settle()

    @precondition(lambda self: self._live())
    @rule(data=st.data(), other_epoch=st.sampled_from([False, False, False, True]))
    def resume(self, data: st.DataObject, other_epoch: bool) -> None:
        """A client resumes from a step boundary (or beyond the head, or from another epoch): the
        replay is exactly the model's journal after ``since`` that this client may see, in seq
        order and as stored, then ``resumed`` (complete unless it could not be)."""
        conn = self._conn(data.draw(st.sampled_from(self._live()), label="client"))
        head = len(self.log)
        choices = sorted(self.boundaries | {head + 1, head + 5})
        since = data.draw(st.sampled_from(choices), label="since")
        payload: dict[str, Any] = {"since": since}
        if other_epoch:
            payload["epoch"] = "another-store"
        note(f"{conn.name}#{conn.number} resumes {payload}")
        assert conn.peer.messages[conn.checked :] == [], "unchecked messages before resume"
        conn.session.receive(json.dumps({"type": "resume", "payload": payload}).encode())
        self.clock.advance(0)
        new = conn.peer.messages[conn.checked :]
        kinds = [m["type"] for m in new]
        assert "resumed" in kinds and kinds.index("resumed") == len(new) - 1, kinds
        replayed, resumed = new[:-1], new[-1]
        conn.checked = len(conn.peer.messages)
        complete = not other_epoch and since <= head
        expected = [
            item
            for item, agent in (self.log[since:] if complete else [])
            if not conn.is_agent or agent == conn.name
        ]
        got = [_item(m) for m in replayed]
        assert _by_subject(got) == _by_subject(expected), (got, expected)
        seqs = [m["seq"] for m in replayed]
        assert seqs == sorted(set(seqs)) and all(seq > since for seq in seqs), seqs
        journal = {m["seq"]: m for m in self._journal()}
        assert all(journal[m["seq"]] == m for m in replayed), "replayed as stored"
        assert resumed["payload"]["since"] == since
        assert resumed["payload"]["seq"] == head
        assert resumed["payload"]["complete"] is complete
        event(f"resume: {'complete' if complete else 'incomplete'}, {len(replayed)} replayed")
        if conn.is_agent:
            for frame in replayed:
                # Replayed answers and closings count as delivered on this connection.
                conn.unacked[_item(frame)[:2]] = frame["seq"]
        self._settle()

    def teardown(self) -> None:
        globalLogPublisher.removeObserver(self.failure_log)
        try:
            self.store.close()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def test_question_lifecycle_matches_the_model() -> None:
    """Random interleavings of the whole lifecycle agree with the model, step by step."""
    run_state_machine_as_test(LifecycleMachine, settings=SETTINGS)
