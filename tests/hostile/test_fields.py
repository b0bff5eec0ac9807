"""Every field of every client message type with a wrong type, empty or oversized value: each
case is refused with the contract's code (section 6), names the field, stores nothing, and the
connection goes on serving. The cases are generated from the table below, one test per case.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import pytest_twisted

from vibews.testing import QueueClientProtocol, RunningServer, assert_still_serving, start_server

MISSING = object()  # the field is left out


@attrs.frozen
class Case:
    type: str
    field: str  # "id", "payload" or "payload.state": where the bad value goes
    value: Any
    code: str  # the contract's code; "ack" for an edge value that must be accepted
    label: str

    @property
    def test_id(self) -> str:
        return f"{self.type}-{self.field}-{self.label}"


ROLE = {
    "agent_status": "agent",
    "task_update": "agent",
    "question": "agent",
    "withdraw": "agent",
    "answer": "dashboard",
    "claim": "dashboard",
    "ack": "agent",
    "resume": "dashboard",
}
# A valid message of each type (the open question "q-open" exists in the fixture).
VALID: dict[str, dict[str, Any]] = {
    "agent_status": {"type": "agent_status", "payload": {"state": "working"}},
    "task_update": {"type": "task_update", "payload": {"task_id": "t1", "status": "running"}},
    "question": {"type": "question", "payload": {"text": "Deploy?"}},
    "withdraw": {"type": "withdraw", "payload": {"question_id": "q-open"}},
    "answer": {"type": "answer", "payload": {"question_id": "q-open", "text": "yes"}},
    "claim": {"type": "claim", "payload": {"question_id": "q-open"}},
    "ack": {"type": "ack", "seq": 0},
    "resume": {"type": "resume", "payload": {"since": 0}},
}
WRONG_TYPES: dict[str, Any] = {
    "null": None,
    "int": 7,
    "bool": True,
    "list": ["x"],
    "object": {"x": 1},
}


def _text(limit: int | None, *, empty_ok: bool = False) -> dict[str, tuple[Any, str]]:
    """A string field: wrong types, empty, one code point over the limit; at the limit it is
    accepted (counted in code points: 'é' is two bytes, one code point)."""
    cases: dict[str, tuple[Any, str]] = {
        label: (value, "invalid_message") for label, value in WRONG_TYPES.items()
    }
    cases["missing"] = (MISSING, "invalid_message")
    cases["empty"] = ("", "ack" if empty_ok else "invalid_message")
    if limit is not None:
        cases["over-limit"] = ("é" * (limit + 1), "invalid_message")
        cases["at-limit"] = ("é" * limit, "ack")
    else:
        cases["large"] = ("x" * 60000, "ack")
    return cases


def _question_id() -> dict[str, tuple[Any, str]]:
    cases: dict[str, tuple[Any, str]] = {
        label: (value, "invalid_message") for label, value in WRONG_TYPES.items()
    }
    cases |= {
        "missing": (MISSING, "invalid_message"),
        "empty": ("", "invalid_message"),
        "over-limit": ("q" * 129, "invalid_message"),
        "unknown": ("no-such-question", "unknown_question"),
    }
    return cases


def _payload() -> dict[str, tuple[Any, str]]:
    return {
        "missing": (MISSING, "invalid_message"),
        "null": (None, "invalid_message"),
        "list": ([], "invalid_message"),
        "string": ("state", "invalid_message"),
        "int": (1, "invalid_message"),
    }


FIELDS: dict[str, dict[str, dict[str, tuple[Any, str]]]] = {
    "agent_status": {"payload.state": _text(64), "payload": _payload()},
    "task_update": {
        "payload.task_id": _text(128),
        "payload.status": _text(64),
        "payload.progress": {
            "null": (None, "invalid_message"),
            "string": ("0.5", "invalid_message"),
            "bool": (True, "invalid_message"),
            "negative": (-0.01, "invalid_message"),
            "above-one": (1.01, "invalid_message"),
            "huge": (10**400, "invalid_message"),
            "list": ([0.5], "invalid_message"),
            "zero": (0, "ack"),
            "one": (1.0, "ack"),
        },
        "payload": _payload(),
    },
    "question": {
        "payload.text": _text(None),
        "payload.options": {
            "string": ("a", "invalid_message"),
            "null": (None, "invalid_message"),
            "ints": ([1, 2], "invalid_message"),
            "nested": ([["a"]], "invalid_message"),
            "object": ({"a": "b"}, "invalid_message"),
            "empty": ([], "ack"),
            "many": (["o"] * 5000, "ack"),
        },
        "payload.timeout": {
            "zero": (0, "invalid_message"),
            "negative": (-5, "invalid_message"),
            "string": ("5", "invalid_message"),
            "bool": (True, "invalid_message"),
            "null": (None, "invalid_message"),
            "centuries": (10**12, "invalid_message"),
            "bigint": (10**4000, "invalid_message"),
            "fraction": (3600.5, "ack"),
        },
        "payload.expires_at": {
            "prose": ("tomorrow", "invalid_message"),
            "empty": ("", "invalid_message"),
            "int": (1764000000, "invalid_message"),
            "null": (None, "invalid_message"),
            "no-zone": ("2026-11-25T10:00:00", "invalid_message"),
            "month-13": ("2026-13-01T00:00:00Z", "invalid_message"),
        },
        "payload.urgency": {
            "unknown": ("urgent", "invalid_message"),
            "empty": ("", "invalid_message"),
            "upper": ("HIGH", "invalid_message"),
            "int": (1, "invalid_message"),
            "null": (None, "invalid_message"),
        },
        "payload.schema": {
            "string": ("object", "invalid_message"),
            "array-type": ({"type": "array"}, "invalid_message"),
            "nested-object": (
                {"type": "object", "properties": {"a": {"type": "object"}}},
                "invalid_message",
            ),
            "unknown-keyword": (
                {"type": "object", "properties": {"a": {"type": "string", "pattern": ".*"}}},
                "invalid_message",
            ),
            "null": (None, "invalid_message"),
        },
        "payload": _payload(),
    },
    "withdraw": {"payload.question_id": _question_id(), "payload": _payload()},
    "claim": {"payload.question_id": _question_id(), "payload": _payload()},
    "answer": {
        "payload.question_id": _question_id(),
        "payload.action": {
            "unknown": ("maybe", "invalid_message"),
            "empty": ("", "invalid_message"),
            "upper": ("ACCEPT", "invalid_message"),
            "int": (1, "invalid_message"),
            "null": (None, "invalid_message"),
        },
        "payload.text": {
            "int": (7, "invalid_message"),
            "null": (None, "invalid_message"),
            "list": (["yes"], "invalid_message"),
            "object": ({"t": "yes"}, "invalid_message"),
            "missing": (MISSING, "invalid_message"),
        },
        "payload.value": {"without-schema": ({"ok": True}, "invalid_message")},
        "payload": _payload(),
    },
    "ack": {
        "seq": {
            "missing": (MISSING, "invalid_message"),
            "string": ("3", "invalid_message"),
            "float": (1.5, "invalid_message"),
            "bool": (True, "invalid_message"),
            "null": (None, "invalid_message"),
            "list": ([3], "invalid_message"),
        },
    },
    "resume": {
        "payload.since": {
            "missing": (MISSING, "invalid_message"),
            "negative": (-1, "invalid_message"),
            "string": ("0", "invalid_message"),
            "float": (0.5, "invalid_message"),
            "bool": (False, "invalid_message"),
            "null": (None, "invalid_message"),
        },
        "payload.epoch": {
            "int": (5, "invalid_message"),
            "list": (["e"], "invalid_message"),
            "object": ({}, "invalid_message"),
        },
        "payload": _payload(),
    },
}
# The envelope, for every type: id, type and timestamp (contract section 6, check 3).
ENVELOPE: dict[str, dict[str, tuple[Any, str]]] = {
    "id": {
        "empty": ("", "invalid_message"),
        "over-limit": ("i" * 129, "invalid_message"),
        "int": (7, "invalid_message"),
        "null": (None, "invalid_message"),
        "list": (["i"], "invalid_message"),
        "bool": (True, "invalid_message"),
    },
    "type": {
        "int": (7, "invalid_message"),
        "null": (None, "invalid_message"),
        "list": (["agent_status"], "invalid_message"),
        "empty": ("", "unknown_type"),
        "upper": ("AGENT_STATUS", "unknown_type"),
        "server-only": ("welcome", "unknown_type"),
        "huge": ("t" * 60000, "unknown_type"),
    },
    "timestamp": {
        "prose": ("yesterday", "invalid_message"),
        "int": (1764000000, "invalid_message"),
        "null": (None, "invalid_message"),
        "space": ("2026-11-25 10:00:00Z", "invalid_message"),
        "empty": ("", "invalid_message"),
    },
}


def _cases() -> list[Case]:
    cases = []
    for message_type, fields in FIELDS.items():
        for field, values in fields.items():
            for label, (value, code) in values.items():
                cases.append(Case(message_type, field, value, code, label))
        for field, values in ENVELOPE.items():
            for label, (value, code) in values.items():
                cases.append(Case(message_type, field, value, code, label))
        wrong_role = "dashboard" if ROLE[message_type] == "agent" else "agent"
        if message_type not in ("ack", "resume"):
            cases.append(Case(message_type, "role", wrong_role, "forbidden", f"from-{wrong_role}"))
    return cases


CASES = _cases()


def _build(case: Case, message_id: str) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(json.dumps(VALID[case.type]))
    message["id"] = message_id
    if case.field == "role":
        return message
    target, _, key = case.field.rpartition(".")
    holder = message[target] if target else message
    if case.value is MISSING:
        holder.pop(key, None)
    else:
        holder[key] = case.value
    return message


@attrs.define
class Arena:
    server: RunningServer
    acked: list[int]
    watcher: QueueClientProtocol  # a dashboard that sees every delivery
    counter: int = 0


@pytest_twisted.async_yield_fixture(scope="module")
async def arena(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Arena]:
    """One server for the whole table (a server a case would cost more than the cases): no rate
    limit and no refusal limit, so only the table's checks decide. An agent stays connected (no
    presence traffic from the cases) and has asked the open question "q-open"."""
    server = await start_server(
        tmp_path_factory.mktemp("fields") / "data", rate=0, max_refused=1_000_000
    )
    keeper = await server.agent()
    asked = await keeper.request({"type": "question", "id": "q-open", "payload": {"text": "?"}})
    arena = Arena(server, [asked["seq"]], await server.dashboard())
    yield arena
    await assert_still_serving(server, arena.acked)
    await server.stop()


async def _client(arena: Arena, role: str) -> QueueClientProtocol:
    if role == "agent":
        return await arena.server.agent()
    client = await arena.server.dashboard()
    return client


@pytest.mark.parametrize("case", CASES, ids=[case.test_id for case in CASES])
@pytest_twisted.ensureDeferred
async def test_field(arena: Arena, case: Case) -> None:
    """The case's message gets the contract's code (with the message's id, or null for a bad id)
    and a text naming the field; nothing is stored; the connection then serves a good message,
    which a dashboard receives."""
    arena.counter += 1
    message_id = f"m{arena.counter}"
    message = _build(case, message_id)
    role = case.value if case.field == "role" else ROLE[case.type]
    client = await _client(arena, role)
    await arena.server.settled()  # the new client's presence may still be committing
    head = arena.server.service.store.head()
    client.send_json(message)
    reply = await client.next_of("error" if case.code != "ack" else "ack")
    if case.code == "ack":
        assert reply["id"] == message_id
        arena.acked.append(reply["seq"])
    else:
        assert reply["payload"]["code"] == case.code, reply
        assert reply["id"] == (None if case.field == "id" else message_id), reply
        if case.code == "invalid_message":
            named = case.field if case.field != "role" else case.type
            assert named in reply["payload"]["message"], reply
        await arena.server.settled()
        assert arena.server.service.store.head() == head, "a refused message was stored"
    # The connection is still fine: a good message from the same connection is answered.
    if role == "agent":
        ok = await client.request(
            {"type": "agent_status", "id": f"{message_id}-ok", "payload": {"state": "ok"}}
        )
        assert ok["type"] == "ack", ok
        arena.acked.append(ok["seq"])
        # ... and delivered: the watching dashboard gets it (after anything the case stored).
        while (relayed := await arena.watcher.next_message())["seq"] != ok["seq"]:
            assert relayed["seq"] < ok["seq"], relayed
        assert relayed["id"] == f"{message_id}-ok" and relayed["from"] == "agent"
    else:
        _replayed, resumed = await client.resume(arena.server.service.store.head())
        assert resumed["payload"]["complete"] is True
    client.disconnect()
