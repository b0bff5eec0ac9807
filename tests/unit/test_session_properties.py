"""Whatever one frame a client sends, the whole path (rate, decode, role, validate, handlers,
store) answers it with exactly what the contract says: one ``ack`` (whose seq is stored) or one
``error`` with a contract code other than ``internal_error``, or nothing for ``ack``; never an
exception. The decoder alone is covered by test_protocol_properties.py; this adds the handlers."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from vibews import protocol
from vibews.hub import Hub
from vibews.peer import HubSettings, Outgoing
from vibews.session import Session
from vibews.store.sqlite import SQLiteStore
from vibews.tokens import Identity

CODES = {
    protocol.INVALID_JSON,
    protocol.INVALID_MESSAGE,
    protocol.UNKNOWN_TYPE,
    protocol.FORBIDDEN,
    protocol.UNKNOWN_QUESTION,
    protocol.ALREADY_ANSWERED,
    protocol.CONFLICT,
    protocol.RATE_LIMITED,
    protocol.UNAVAILABLE,
}
FAST = settings(max_examples=300, deadline=None, database=None)


class Peer:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.closed: int | None = None

    def send(self, message: Outgoing) -> None:
        self.messages.append(json.loads(message.data))

    def close(self, code: int, reason: str) -> None:
        self.closed = code

    def abort(self) -> None:
        self.closed = -1

    def is_paused(self) -> bool:
        return False

    def when_writable(self) -> Deferred[None]:
        return succeed(None)


class World:
    """One hub on a real SQLite file, an agent and a dashboard, and an open question."""

    def __init__(self, directory: Path) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.store = SQLiteStore(directory / "store.sqlite3", self.clock, durability="process")
        self.hub = Hub(self.store, self.clock, HubSettings(rate=0, max_refused=10**9))
        self.peers: dict[str, Peer] = {}
        self.sessions: dict[str, Session] = {}
        for name, role in (("agent", "agent"), ("dashboard", "dashboard")):
            peer = Peer()
            self.peers[name] = peer
            self.sessions[name] = self.hub.open_session(
                peer,
                Identity(name, role),  # type: ignore[arg-type]
                digest=f"d-{name}",
            )
        self.sessions["agent"].receive(
            b'{"type":"question","id":"q","payload":{"text":"?","schema":{"type":"object",'
            b'"properties":{"n":{"type":"integer"}},"required":["n"]}}}'
        )
        self.clock.advance(0)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    directory = Path(tempfile.mkdtemp(prefix="vibews-session-props-"))
    try:
        yield World(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)
types = st.sampled_from(sorted(protocol.CLIENT_TYPES | protocol.SERVER_ONLY_TYPES)) | st.text(
    max_size=6
)
keys = st.sampled_from(
    "state task_id status progress text options timeout expires_at urgency schema question_id"
    " action value since epoch".split()
)
messages = st.fixed_dictionaries(
    {"type": types},
    optional={
        "id": st.text(min_size=1, max_size=6) | scalars,
        "seq": values,
        "timestamp": st.sampled_from(["2026-11-25T10:00:00Z", "x"]) | scalars,
        "payload": st.dictionaries(keys | st.text(max_size=4), values, max_size=5)
        | st.dictionaries(keys, st.just("q"), max_size=3)
        | values,
    },
)
frames = st.binary(max_size=200) | messages.map(lambda m: json.dumps(m).encode())


@FAST
@given(frame=frames, sender=st.sampled_from(["agent", "dashboard"]))
def test_any_frame_gets_its_contract_answer_through_the_handlers(
    world: World, frame: bytes, sender: str
) -> None:
    peer = world.peers[sender]
    before = len(peer.messages)
    head = world.store.head()
    world.sessions[sender].receive(frame)
    world.clock.advance(0)
    replies = [m for m in peer.messages[before:] if m["type"] in ("ack", "error", "resumed")]
    try:
        parsed = json.loads(frame)
    except ValueError:
        parsed = None
    silent = isinstance(parsed, dict) and parsed.get("type") == "ack"
    assert len(replies) <= 1 if silent else len(replies) == 1, replies
    for reply in replies:
        if reply["type"] == "error":
            assert reply["payload"]["code"] in CODES, reply
        elif reply["type"] == "ack":
            assert 0 < reply["seq"] <= world.store.head(), reply
            if "duplicate" not in reply:
                assert world.store.head() > head
    if not any(r["type"] == "ack" and "duplicate" not in r for r in replies):
        # Refused, duplicate, ack or resume: nothing stored (only answers' closings may follow
        # an accepted message).
        assert world.store.head() == head
    assert peer.closed is None
