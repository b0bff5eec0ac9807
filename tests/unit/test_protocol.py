"""The wire format of protocol v1 (contract sections 2 and 6): decoding, checking and encoding."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from vibews.protocol import (
    INVALID_JSON,
    INVALID_MESSAGE,
    MAX_DEPTH,
    UNKNOWN_TYPE,
    Ack,
    ClientMessage,
    DataMessage,
    Refusal,
    Resume,
    ack,
    best_effort_id,
    decode,
    encode,
    encode_ack,
    error,
    parse_object,
    presence,
    relayed,
    resumed,
    validate,
)

# --- helpers ---------------------------------------------------------------------------------


def wire(message: Any) -> bytes:
    """A client frame: the JSON text of ``message`` in UTF-8 (non-ASCII sent as is)."""
    return json.dumps(message, ensure_ascii=False).encode("utf-8")


def check(frame: bytes) -> ClientMessage:
    """What the hub runs on a frame (without the role check): decode, then validate."""
    return validate(decode(frame))


def refused(frame: bytes) -> Refusal:
    """The refusal ``frame`` gets from decode/validate; any other exception fails the test."""
    with pytest.raises(Refusal) as info:
        check(frame)
    return info.value


def data(frame: bytes) -> DataMessage:
    message = check(frame)
    assert isinstance(message, DataMessage)
    return message


def status(state: Any = "working", **extra: Any) -> dict[str, Any]:
    return {"type": "agent_status", "id": "m1", "payload": {"state": state, **extra}}


def payload_of(message_type: str, payload: Any, **top: Any) -> bytes:
    return wire({"type": message_type, "id": "m1", "payload": payload, **top})


def assert_invalid(frame: bytes, field: str, message_id: str | None = "m1") -> None:
    """Refused with ``invalid_message``, naming ``field``, reporting ``message_id``."""
    refusal = refused(frame)
    assert refusal.code == INVALID_MESSAGE
    assert field in refusal.message
    assert refusal.id == message_id


def nested_status(depth: int) -> bytes:
    """An agent_status frame whose deepest container is at ``depth`` (the frame itself is 1)."""
    arrays = depth - 2  # the frame object and its payload object are two levels
    inner = "[" * arrays + "]" * arrays
    return (
        '{"type":"agent_status","id":"m1","payload":{"state":"x","deep":' + inner + "}}"
    ).encode()


# --- invalid JSON ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"   ",
        b"{",
        b'{"type":"ack","seq":1',
        b"{'type': 'ack', 'seq': 1}",
        b'{"type":"ack","seq":1,}',
        b'{"type" "ack"}',
        b'{"type":ack}',
        b'{"type":"ack","seq":01}',
        b"{type: 1}",
    ],
    ids=repr,
)
def test_syntax_errors_are_invalid_json(frame: bytes) -> None:
    """Text that is not JSON at all is refused with invalid_json and no id."""
    refusal = refused(frame)
    assert refusal.code == INVALID_JSON
    assert refusal.id is None


@pytest.mark.parametrize(
    "frame",
    [
        b'{"type":"ack","seq":1} {}',
        b'{"type":"ack","seq":1}x',
        b'{"type":"ack","seq":1}{"type":"ack","seq":2}',
        b'{"type":"ack","seq":1} 1',
    ],
    ids=repr,
)
def test_trailing_data_is_invalid_json(frame: bytes) -> None:
    """Anything but whitespace after the object is trailing data: invalid_json."""
    assert refused(frame).code == INVALID_JSON


def test_trailing_whitespace_is_allowed() -> None:
    """JSON allows whitespace around the value, so a trailing newline is not trailing data."""
    assert check(b' {"type":"ack","seq":3}\r\n\t ') == Ack(id=None, seq=3)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_invalid_json(constant: str) -> None:
    """NaN, Infinity and -Infinity are not JSON, wherever they appear."""
    for text in (
        '{"type":"agent_status","payload":{"state":"x","n":%s}}',
        '{"type":"task_update","payload":{"task_id":"t","status":"s","progress":%s}}',
        '{"type":"ack","seq":%s}',
    ):
        refusal = refused((text % constant).encode())
        assert refusal.code == INVALID_JSON


@pytest.mark.parametrize(
    "text",
    [
        r'{"type":"agent_status","payload":{"state":"\ud800"}}',
        r'{"type":"agent_status","payload":{"state":"a\udfffb"}}',
        r'{"type":"agent_status","payload":{"state":"\ude00\ud83d"}}',
        r'{"type":"agent_status","payload":{"state":"\ud800\u0041"}}',
        r'{"type":"agent_status","payload":{"state":"x","\ud800":1}}',
        r'{"type":"agent_status","payload":{"state":"x"},"\udbff":true}',
        r'{"type":"agent_status","payload":{"state":"x","list":[["\udc00"]]}}',
        r'{"type":"agent_status","id":"\ud800","payload":{"state":"x"}}',
    ],
)
def test_lone_surrogate_escapes_are_invalid_json(text: str) -> None:
    """A lone UTF-16 surrogate escape, in a key or a value at any depth, is invalid_json."""
    refusal = refused(text.encode())
    assert refusal.code == INVALID_JSON
    assert refusal.id is None


def test_escaped_surrogate_pair_is_accepted() -> None:
    """A high surrogate escape followed by a low one is one character, and valid."""
    message = data(rb'{"type":"agent_status","payload":{"state":"\ud83d\ude00","\ud83d\ude00":1}}')
    assert message.payload == {"state": "\U0001f600", "\U0001f600": 1}


def test_escaped_backslash_before_u_is_not_a_surrogate() -> None:
    r"""``"\\ud800"`` is a backslash followed by the letters ud800, not an escape."""
    message = data(rb'{"type":"agent_status","payload":{"state":"\\ud800"}}')
    assert message.payload["state"] == "\\ud800"


def test_utf8_bom_is_invalid_json() -> None:
    """A UTF-8 byte order mark before the object is not JSON text."""
    frame = b"\xef\xbb\xbf" + wire(status())
    refusal = refused(frame)
    assert refusal.code == INVALID_JSON


def test_invalid_utf8_is_invalid_json_in_parse_object() -> None:
    """parse_object refuses bytes that are not UTF-8 (the transport closes with 1007 first)."""
    with pytest.raises(Refusal) as info:
        parse_object(b'{"type":"ack","seq":1,"x":"\xff"}')
    assert info.value.code == INVALID_JSON


# --- not an object ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [b"[]", b'[{"type":"ack","seq":1}]', b'"ack"', b"1", b"-2.5", b"null", b"true", b"false"],
    ids=repr,
)
def test_json_that_is_not_an_object_is_invalid_message(frame: bytes) -> None:
    """Valid JSON that is not an object (array, string, number, null, bool) is invalid_message."""
    refusal = refused(frame)
    assert refusal.code == INVALID_MESSAGE
    assert "object" in refusal.message
    assert refusal.id is None


# --- nesting ---------------------------------------------------------------------------------


def test_exactly_64_levels_are_accepted() -> None:
    """A message whose deepest container is at level 64 is accepted through validate."""
    assert MAX_DEPTH == 64
    message = data(nested_status(64))
    assert message.payload["state"] == "x"


def test_65_levels_are_invalid_message() -> None:
    """One level more than 64 is refused with invalid_message."""
    refusal = refused(nested_status(65))
    assert refusal.code == INVALID_MESSAGE
    assert "64" in refusal.message


def test_nesting_limit_applies_to_objects_in_parse_object() -> None:
    """Nested objects count like arrays: 64 levels parse, 65 are invalid_message."""
    assert parse_object(('{"a":' * 64 + "1" + "}" * 64).encode()) is not None
    with pytest.raises(Refusal) as info:
        parse_object(('{"a":' * 65 + "1" + "}" * 65).encode())
    assert info.value.code == INVALID_MESSAGE


@pytest.mark.parametrize(
    "frame",
    [
        b"[" * 30_000 + b"]" * 30_000,
        b"[" * 30_000,
        b'{"a":' * 30_000 + b"1" + b"}" * 30_000,
        b'{"type":"agent_status","payload":{"state":"x","deep":'
        + b"[" * 30_000
        + b"]" * 30_000
        + b"}}",
    ],
    ids=["array", "unclosed-array", "objects", "inside-payload"],
)
def test_very_deep_nesting_is_invalid_message_without_recursion_error(frame: bytes) -> None:
    """30,000 levels are refused with invalid_message; no RecursionError escapes."""
    refusal = refused(frame)
    assert refusal.code == INVALID_MESSAGE
    with pytest.raises(Refusal):
        parse_object(frame)
    assert best_effort_id(frame) is None


def test_brackets_inside_strings_are_not_counted() -> None:
    """Brackets in string values and keys (escaped quotes included) do not count as nesting."""
    brackets = "[" * 100 + "{" * 100 + '\\"[[[' + "\\\\" + "[" * 100
    message = data(wire(status(state="[" * 64, note=brackets, **{"{" * 100: "]" * 100})))
    assert message.payload["note"] == brackets


def test_many_shallow_containers_are_accepted() -> None:
    """More than 64 brackets in total but little depth is fine: it is depth that is limited."""
    message = data(wire(status(lists=[[[]] for _ in range(200)], maps=[{} for _ in range(200)])))
    assert len(message.payload["lists"]) == 200


# --- envelope --------------------------------------------------------------------------------


def test_missing_type_is_invalid_message() -> None:
    """A message without ``type`` is invalid_message naming type, with its valid id."""
    assert_invalid(wire({"id": "m1", "payload": {"state": "x"}}), "type")


@pytest.mark.parametrize("value", [None, 1, 1.5, True, [], ["agent_status"], {}])
def test_non_string_type_is_invalid_message(value: Any) -> None:
    """A ``type`` that is not a string (null included) is invalid_message naming type."""
    assert_invalid(wire({"type": value, "id": "m1", "payload": {"state": "x"}}), "type")


@pytest.mark.parametrize(
    "value",
    [None, 1, 0, True, [], ["m1"], {}, "", "a" * 129, "\u00e9" * 129, "\U0001f600" * 129],
    ids=[
        "null",
        "int",
        "zero",
        "bool",
        "list",
        "list-of-str",
        "object",
        "empty",
        "129-ascii",
        "129-e-acute",
        "129-emoji",
    ],
)
def test_invalid_id_is_invalid_message_with_null_id(value: Any) -> None:
    """An id that is not a string of 1-128 code points is invalid_message, reported with id None."""
    frame = wire({"type": "agent_status", "id": value, "payload": {"state": "x"}})
    assert_invalid(frame, "id", message_id=None)


@pytest.mark.parametrize(
    "value",
    ["a", "a" * 128, "\u00e9" * 128, "\U0001f600" * 128, "\u4e2d" * 128],
    ids=["one", "128-ascii", "128-e-acute", "128-emoji", "128-cjk"],
)
def test_id_length_counts_code_points(value: str) -> None:
    """An id of up to 128 code points is accepted, however many UTF-8 bytes it takes."""
    message = data(wire({"type": "agent_status", "id": value, "payload": {"state": "x"}}))
    assert message.id == value


def test_id_is_optional() -> None:
    """Without ``id`` the message is accepted and its id is None (the server assigns one)."""
    assert data(wire({"type": "agent_status", "payload": {"state": "x"}})).id is None


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-25 10:00:00Z",
        "2026-11-25T10:00Z",
        "2026-11-25T10:00:00",
        "2026-11-25",
        "2026-02-30T10:00:00Z",
        "2026-11-25T10:00:00Z ",
        "",
        "now",
        1764064800,
        1764064800.5,
        None,
        True,
        [],
        {},
    ],
    ids=repr,
)
def test_timestamp_not_strict_rfc3339_is_invalid_message(value: Any) -> None:
    """A ``timestamp`` that is not a strict RFC 3339 string is invalid_message naming timestamp."""
    frame = wire(
        {"type": "agent_status", "id": "m1", "timestamp": value, "payload": {"state": "x"}}
    )
    assert_invalid(frame, "timestamp")


@pytest.mark.parametrize(
    "value", ["2026-11-25T10:00:00Z", "2026-11-25t10:00:00.123456+05:30", "2016-12-31T23:59:60z"]
)
def test_valid_timestamp_is_kept_exactly_as_sent(value: str) -> None:
    """A valid ``timestamp`` passes and is kept verbatim (it is relayed exactly as sent)."""
    frame = wire(
        {"type": "agent_status", "id": "m1", "timestamp": value, "payload": {"state": "x"}}
    )
    assert data(frame).timestamp == value


def test_timestamp_is_optional() -> None:
    """Without ``timestamp`` the message is accepted with timestamp None (the server sets one)."""
    assert data(wire(status())).timestamp is None


def test_year_zero_timestamp_is_accepted_or_refused_cleanly() -> None:
    """A year-0000 timestamp is either accepted or refused with invalid_message, never a crash."""
    frame = wire(
        {
            "type": "agent_status",
            "id": "m1",
            "timestamp": "0000-01-01T00:00:00Z",
            "payload": {"state": "x"},
        }
    )
    try:
        check(frame)
    except Refusal as refusal:
        assert refusal.code == INVALID_MESSAGE
        assert "timestamp" in refusal.message


def test_unknown_top_level_fields_are_ignored() -> None:
    """Unknown top-level fields (even ones that look like server fields) do not break decoding."""
    frame = wire(
        {
            **status(),
            "from": "mallory",
            "seq": "not-a-number",
            "extra": {"deep": [1, 2, {"x": None}]},
            "version": 99,
        }
    )
    message = data(frame)
    assert message == DataMessage(
        type="agent_status", id="m1", timestamp=None, payload={"state": "working"}
    )


# --- type ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["hello", "", "Agent_Status", "agent-status", " ack", "withdrawn"])
def test_unknown_type_is_unknown_type(name: str) -> None:
    """A type the contract does not name is unknown_type; the message names it; the id is kept."""
    refusal = refused(wire({"type": name, "id": "m1", "payload": {}}))
    assert refusal.code == UNKNOWN_TYPE
    assert f"'{name}'" in refusal.message
    assert refusal.id == "m1"


def test_long_unknown_type_is_truncated_in_the_message() -> None:
    """A very long unknown type is refused with its name shortened in the error text."""
    name = "x" * 64 + "z" * 10_000
    refusal = refused(wire({"type": name, "id": "m1"}))
    assert refusal.code == UNKNOWN_TYPE
    assert "x" * 64 in refusal.message
    assert "z" not in refusal.message
    assert len(refusal.message) < 200


@pytest.mark.parametrize(
    "name",
    ["welcome", "presence", "error", "resumed", "question_closed", "claimed", "receipt"],
)
def test_server_only_types_are_unknown_type(name: str) -> None:
    """Types only the server sends are refused with unknown_type, keeping the id."""
    refusal = refused(wire({"type": name, "id": "m1", "payload": {"agent": "a", "online": True}}))
    assert refusal.code == UNKNOWN_TYPE
    assert name in refusal.message
    assert refusal.id == "m1"


def test_envelope_is_checked_before_type() -> None:
    """An invalid envelope decides the error even when the type is unknown too."""
    bad_timestamp = {"type": "nope", "id": "m1", "timestamp": "yesterday"}
    assert_invalid(wire(bad_timestamp), "timestamp")
    assert_invalid(wire({"type": "welcome", "id": 7}), "id", message_id=None)


def test_type_is_checked_before_payload() -> None:
    """An unknown type with a broken payload is unknown_type, not invalid_message."""
    assert refused(wire({"type": "nope", "id": "m1", "payload": 3})).code == UNKNOWN_TYPE


# --- payload: common -------------------------------------------------------------------------


@pytest.mark.parametrize("message_type", ["agent_status", "task_update", "question", "answer"])
def test_missing_payload_is_invalid_message(message_type: str) -> None:
    """A data message without ``payload`` is invalid_message naming payload."""
    assert_invalid(wire({"type": message_type, "id": "m1"}), "payload")


@pytest.mark.parametrize("message_type", ["agent_status", "task_update", "question", "answer"])
@pytest.mark.parametrize("value", [None, [], ["state"], "working", 1, True])
def test_payload_not_an_object_is_invalid_message(message_type: str, value: Any) -> None:
    """A ``payload`` that is not a JSON object (null included) is invalid_message naming it."""
    assert_invalid(payload_of(message_type, value), "payload")


def test_unknown_payload_fields_are_kept() -> None:
    """Payload fields the contract does not name are kept in DataMessage.payload, unchanged."""
    payload = {
        "task_id": "t1",
        "status": "running",
        "progress": 0.25,
        "eta": "soon",
        "details": {"steps": [1, 2, 3], "ok": None, "ratio": -1.5e-7},
        "\u00e9t\u00e9": "\U0001f600",
    }
    message = data(payload_of("task_update", payload))
    assert message.payload == payload
    assert message.type == "task_update"


# --- agent_status ----------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["w", "x" * 64, "\U0001f600" * 64, "\u00e9" * 64])
def test_agent_status_state_up_to_64_code_points_is_valid(state: str) -> None:
    """``state`` is a non-empty string of at most 64 code points (64 emoji included)."""
    assert data(wire(status(state))).payload["state"] == state


@pytest.mark.parametrize(
    "state",
    ["", "x" * 65, "\U0001f600" * 65, 1, 0, True, None, [], ["working"], {}],
    ids=repr,
)
def test_agent_status_bad_state_is_invalid_message(state: Any) -> None:
    """An empty, too long (65) or non-string ``state`` is invalid_message naming payload.state."""
    assert_invalid(wire(status(state)), "payload.state")


def test_agent_status_missing_state_is_invalid_message() -> None:
    """``state`` is required."""
    assert_invalid(payload_of("agent_status", {"mood": "ok"}), "payload.state")


# --- task_update -----------------------------------------------------------------------------


def task(**payload: Any) -> bytes:
    return payload_of("task_update", {"task_id": "t1", "status": "running", **payload})


def test_task_update_limits_are_accepted() -> None:
    """``task_id`` may have 128 code points and ``status`` 64."""
    frame = payload_of("task_update", {"task_id": "\U0001f600" * 128, "status": "s" * 64})
    message = data(frame)
    assert message.payload["task_id"] == "\U0001f600" * 128
    assert "progress" not in message.payload


@pytest.mark.parametrize(
    "task_id", ["", "t" * 129, "\U0001f600" * 129, 1, None, True, ["t"]], ids=repr
)
def test_task_update_bad_task_id_is_invalid_message(task_id: Any) -> None:
    """``task_id`` must be a non-empty string of at most 128 code points."""
    assert_invalid(task(task_id=task_id), "payload.task_id")


def test_task_update_missing_fields_are_invalid_message() -> None:
    """``task_id`` and ``status`` are both required."""
    assert_invalid(payload_of("task_update", {"status": "running"}), "payload.task_id")
    assert_invalid(payload_of("task_update", {"task_id": "t1"}), "payload.status")


@pytest.mark.parametrize("value", ["", "s" * 65, "\U0001f600" * 65, 2, None, False], ids=repr)
def test_task_update_bad_status_is_invalid_message(value: Any) -> None:
    """``status`` must be a non-empty string of at most 64 code points."""
    assert_invalid(task(status=value), "payload.status")


@pytest.mark.parametrize("progress", [0, 1, 0.5, 0.0, 1.0, 1e-9, 0.999999])
def test_task_update_progress_in_range_is_valid(progress: float) -> None:
    """``progress`` is a number from 0 to 1 inclusive, integer or float."""
    assert data(task(progress=progress)).payload["progress"] == progress


@pytest.mark.parametrize(
    "progress",
    [-0.1, 1.1, -1, 2, 1.0000001, True, False, None, "0.5", [0.5], {"value": 0.5}],
    ids=repr,
)
def test_task_update_bad_progress_is_invalid_message(progress: Any) -> None:
    """Out-of-range, boolean, null, string or container ``progress`` is invalid_message."""
    assert_invalid(task(progress=progress), "payload.progress")


@pytest.mark.parametrize("literal", [b"1e400", b"-1e400"])
def test_task_update_overflowing_progress_is_refused(literal: bytes) -> None:
    """A number too large for a double is no valid progress: refused as out of range
    (invalid_json) or as a bad field (invalid_message naming payload.progress)."""
    frame = b'{"type":"task_update","id":"m1","payload":{"task_id":"t","status":"s","progress":'
    refusal = refused(frame + literal + b"}}")
    assert refusal.code in (INVALID_JSON, INVALID_MESSAGE)
    if refusal.code == INVALID_MESSAGE:
        assert "payload.progress" in refusal.message


# --- question --------------------------------------------------------------------------------


def test_question_with_text_only_is_valid() -> None:
    """A question needs only a non-empty ``text``."""
    message = data(payload_of("question", {"text": "Deploy now?"}))
    assert message.payload == {"text": "Deploy now?"}


@pytest.mark.parametrize("payload", [{}, {"text": ""}, {"text": 1}, {"text": None}, {"text": []}])
def test_question_bad_text_is_invalid_message(payload: dict[str, Any]) -> None:
    """``text`` is required and must be a non-empty string."""
    assert_invalid(payload_of("question", payload), "payload.text")


@pytest.mark.parametrize("options", [[], ["yes"], ["yes", "no", ""], ["\U0001f600"]])
def test_question_options_list_of_strings_is_valid(options: list[str]) -> None:
    """``options`` may be any list of strings, the empty list included."""
    message = data(payload_of("question", {"text": "?", "options": options}))
    assert message.payload["options"] == options


@pytest.mark.parametrize(
    "options", [["yes", 1], [None], [["a"]], [True], "yes", {"a": "b"}, None, 3], ids=repr
)
def test_question_bad_options_is_invalid_message(options: Any) -> None:
    """``options`` with a non-string item, or that is not a list, is invalid_message."""
    assert_invalid(payload_of("question", {"text": "?", "options": options}), "payload.options")


# --- answer ----------------------------------------------------------------------------------


def answer(**payload: Any) -> bytes:
    return payload_of("answer", {"question_id": "q1", **payload})


@pytest.mark.parametrize(
    "payload",
    [
        {"text": "yes"},
        {"text": ""},
        {"action": "accept", "text": "ok"},
        {"action": "accept", "text": ""},
        {"action": "decline"},
        {"action": "decline", "text": "no thanks"},
        {"action": "cancel"},
        {"action": "cancel", "text": ""},
    ],
    ids=repr,
)
def test_answer_valid_forms(payload: dict[str, Any]) -> None:
    """accept (the default) needs a string ``text``, possibly empty; decline/cancel need none."""
    message = data(answer(**payload))
    assert message.payload == {"question_id": "q1", **payload}


@pytest.mark.parametrize(
    "question_id",
    [None, "", 1, True, ["q1"], "q" * 129],
    ids=["null", "empty", "int", "bool", "list", "129"],
)
def test_answer_bad_question_id_is_invalid_message(question_id: Any) -> None:
    """``question_id`` must be an id: a string of 1-128 code points."""
    assert_invalid(answer(question_id=question_id, text="x"), "payload.question_id")


def test_answer_missing_question_id_is_invalid_message() -> None:
    """``question_id`` is required."""
    assert_invalid(payload_of("answer", {"text": "yes"}), "payload.question_id")


def test_answer_question_id_of_128_code_points_is_valid() -> None:
    """A ``question_id`` of 128 multi-byte code points is a valid id."""
    assert data(answer(question_id="\U0001f600" * 128, text="x")).payload["text"] == "x"


@pytest.mark.parametrize(
    "action", ["reject", "ACCEPT", "Accept", "", "accept ", None, 1, True], ids=repr
)
def test_answer_other_action_is_invalid_message(action: Any) -> None:
    """``action`` must be exactly accept, decline or cancel."""
    assert_invalid(answer(action=action, text="x"), "payload.action")


@pytest.mark.parametrize("action", [[], ["accept"], {}, {"accept": True}], ids=repr)
def test_answer_container_action_is_invalid_message(action: Any) -> None:
    """A list or object ``action`` is invalid_message naming payload.action, never a crash."""
    assert_invalid(answer(action=action, text="x"), "payload.action")


@pytest.mark.parametrize("payload", [{}, {"action": "accept"}, {"value": {"ok": True}}], ids=repr)
def test_answer_text_and_value_rules_wait_for_the_question(payload: dict[str, Any]) -> None:
    """Whether ``text`` or ``value`` is needed depends on the question's schema, so the wire check
    lets both shapes through; the lifecycle decides (tests/integration/test_lifecycle.py)."""
    assert isinstance(check(answer(**payload)), DataMessage)


@pytest.mark.parametrize("text", [None, 1, True, ["yes"], {}], ids=repr)
def test_answer_non_string_text_is_invalid_message(text: Any) -> None:
    """``text`` must be a string when present."""
    assert_invalid(answer(text=text), "payload.text")


# --- ack -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seq", [-1, 0, 1, 2**53, 2**70])
def test_ack_with_integer_seq(seq: int) -> None:
    """``ack`` needs a top-level integer ``seq`` (any integer: the contract says no more; a
    negative one simply clears nothing) and no payload."""
    assert check(wire({"type": "ack", "id": "a1", "seq": seq})) == Ack(id="a1", seq=seq)
    assert check(wire({"type": "ack", "seq": seq})) == Ack(id=None, seq=seq)


@pytest.mark.parametrize("seq", [True, False, 1.0, 1.5, "1", None, [1], {}], ids=repr)
def test_ack_bad_seq_is_invalid_message(seq: Any) -> None:
    """A boolean, float, string or null ``seq`` is invalid_message naming seq."""
    assert_invalid(wire({"type": "ack", "id": "m1", "seq": seq}), "seq")


def test_ack_seq_must_be_top_level() -> None:
    """``seq`` inside the payload does not count: it must be at the top level."""
    assert_invalid(wire({"type": "ack", "id": "m1", "payload": {"seq": 3}}), "seq")
    assert_invalid(wire({"type": "ack", "id": "m1"}), "seq")


# --- resume ----------------------------------------------------------------------------------


@pytest.mark.parametrize("since", [0, 42, 2**60])
def test_resume_with_since(since: int) -> None:
    """``resume`` needs ``payload.since``, an integer >= 0; ``epoch`` is optional."""
    assert check(payload_of("resume", {"since": since})) == Resume(id="m1", since=since, epoch=None)
    assert check(payload_of("resume", {"since": since, "epoch": "e-1"})) == Resume(
        id="m1", since=since, epoch="e-1"
    )


@pytest.mark.parametrize("since", [-1, True, False, 1.5, 1.0, "3", None, [0]], ids=repr)
def test_resume_bad_since_is_invalid_message(since: Any) -> None:
    """A negative, boolean, float, string or null ``since`` is invalid_message naming it."""
    assert_invalid(payload_of("resume", {"since": since}), "payload.since")


def test_resume_since_must_be_in_payload() -> None:
    """``since`` is read from the payload; a top-level one, or none, is refused."""
    assert_invalid(wire({"type": "resume", "id": "m1", "since": 3, "payload": {}}), "payload.since")
    assert_invalid(wire({"type": "resume", "id": "m1", "since": 3}), "payload")


@pytest.mark.parametrize("epoch", [1, True, [], {}], ids=repr)
def test_resume_non_string_epoch_is_invalid_message(epoch: Any) -> None:
    """``epoch``, when given, must be a string."""
    assert_invalid(payload_of("resume", {"since": 0, "epoch": epoch}), "payload.epoch")


# --- best_effort_id --------------------------------------------------------------------------


def test_best_effort_id_returns_a_valid_id() -> None:
    """The id of any parseable object is found, whatever else is wrong with the message."""
    assert best_effort_id(wire(status())) == "m1"
    assert best_effort_id(wire({"type": "nope", "id": "\U0001f600" * 128})) == "\U0001f600" * 128
    assert best_effort_id(wire({"id": "x", "payload": 5})) == "x"


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"{",
        b'{"id":"m1"} x',
        b'{"id":"m1","n":NaN}',
        rb'{"id":"m1","s":"\ud800"}',
        b'["m1"]',
        b'"m1"',
        wire({"type": "ack"}),
        wire({"id": 5}),
        wire({"id": ""}),
        wire({"id": "a" * 129}),
        wire({"id": None}),
        b"\xef\xbb\xbf" + wire({"id": "m1"}),
        b'{"id":"m1","d":' + b"[" * 65 + b"]" * 65 + b"}",
    ],
    ids=repr,
)
def test_best_effort_id_is_none_when_no_valid_id(frame: bytes) -> None:
    """Without a parseable object holding a valid id, best_effort_id is None (never raises)."""
    assert best_effort_id(frame) is None


# --- encoders --------------------------------------------------------------------------------


def test_encode_is_compact_utf8() -> None:
    """encode writes compact JSON (no spaces) in UTF-8, non-ASCII characters unescaped."""
    out = encode({"a": 1, "b": [1, 2], "c": {"d": None}, "s": "\u00e9\u4e2d\U0001f600"})
    assert out == '{"a":1,"b":[1,2],"c":{"d":null},"s":"\u00e9\u4e2d\U0001f600"}'.encode()
    assert b"\\u" not in out
    assert b" " not in out


def test_encode_refuses_non_json_numbers() -> None:
    """encode never writes NaN or Infinity, which are not JSON."""
    with pytest.raises(ValueError):
        encode({"n": float("nan")})
    with pytest.raises(ValueError):
        encode({"n": float("inf")})


def test_relayed_shape() -> None:
    """A relayed data message has exactly type, id, timestamp, from, seq and payload."""
    frame = relayed("agent_status", "m1", "2026-11-25T10:00:00Z", "claude", 7, {"state": "x"})
    assert frame == {
        "type": "agent_status",
        "id": "m1",
        "timestamp": "2026-11-25T10:00:00Z",
        "from": "claude",
        "seq": 7,
        "payload": {"state": "x"},
    }
    assert json.loads(encode(frame)) == frame


def test_ack_shape() -> None:
    """An ack is {type, id, seq}; ``duplicate: true`` appears only for a duplicate."""
    assert ack("m1", 3) == {"type": "ack", "id": "m1", "seq": 3}
    assert "duplicate" not in ack("m1", 3, duplicate=False)
    assert ack("m1", 3, duplicate=True) == {"type": "ack", "id": "m1", "seq": 3, "duplicate": True}
    assert encode(ack("m1", 3, True)) == b'{"type":"ack","id":"m1","seq":3,"duplicate":true}'


def test_error_shape() -> None:
    """An error is {type, id (or null), payload: {code, message}}."""
    assert error("m1", INVALID_MESSAGE, "payload.state: bad") == {
        "type": "error",
        "id": "m1",
        "payload": {"code": "invalid_message", "message": "payload.state: bad"},
    }
    assert encode(error(None, INVALID_JSON, "x")) == (
        b'{"type":"error","id":null,"payload":{"code":"invalid_json","message":"x"}}'
    )


def test_presence_shape() -> None:
    """presence is {type, seq, payload: {agent, online, last_seen}}."""
    assert presence(9, "claude", False, "2026-11-25T10:00:00.000Z") == {
        "type": "presence",
        "seq": 9,
        "payload": {"agent": "claude", "online": False, "last_seen": "2026-11-25T10:00:00.000Z"},
    }


def test_resumed_shape() -> None:
    """resumed is {type, payload: {since, seq, complete, epoch}} with no top-level seq."""
    assert resumed(5, 12, True, "e-1") == {
        "type": "resumed",
        "payload": {"since": 5, "seq": 12, "complete": True, "epoch": "e-1"},
    }


def test_refusal_to_error_frame() -> None:
    """A refusal's code, text and id map onto an error frame the client can parse."""
    refusal = refused(wire(status("")))
    frame = json.loads(encode(error(refusal.id, refusal.code, refusal.message)))
    assert frame["id"] == "m1"
    assert frame["payload"]["code"] == INVALID_MESSAGE
    assert "payload.state" in frame["payload"]["message"]


# --- regressions: accepted messages the server cannot relay, and slow parsing -------------


@pytest.mark.parametrize("literal", [b"1e400", b"-1e400", b"[1e999]"])
def test_accepted_payload_can_be_relayed(literal: bytes) -> None:
    """A message validate accepts can be encoded for relay (or is refused up front)."""
    frame = b'{"type":"agent_status","id":"m1","payload":{"state":"x","n":' + literal + b"}}"
    try:
        message = data(frame)
    except Refusal as refusal:
        assert refusal.code in (INVALID_JSON, INVALID_MESSAGE)
        return
    encode(relayed(message.type, "m1", "2026-11-25T10:00:00Z", "claude", 1, message.payload))


@pytest.mark.parametrize(
    "frame",
    [
        b"[" * 65 + b'"' + b'\\"' * 32_000,
        b"{" * 65 + b'"' * 65_000,
        b"[" * 65 + b'"\\' * 21_000,
    ],
    ids=["escaped-quotes", "quotes", "quote-backslash"],
)
def test_parsing_a_frame_of_the_size_limit_is_fast(frame: bytes) -> None:
    """A 64 KiB frame full of unterminated strings is decoded (here: refused) in well under a
    second: the nesting check must not rescan the text from every quote (it once took ~25 s)."""
    started = time.perf_counter()
    refusal = refused(frame)
    elapsed = time.perf_counter() - started
    assert refusal.code in (INVALID_JSON, INVALID_MESSAGE)
    assert elapsed < 1.0, f"took {elapsed:.1f} s"


@pytest.mark.parametrize(
    ("message_id", "seq", "duplicate"),
    [
        ("m1", 1, False),
        ("m1", 1, True),
        ("srv-0b0e8d1c-5f2a-4c7e-9d3a-1f2e3d4c5b6a", 10**12, False),
        ('quote " backslash \\ tab \t \u2028 é 😀', 7, True),
    ],
)
def test_encode_ack_is_the_encoded_ack(message_id: str, seq: int, duplicate: bool) -> None:
    """The ack is formatted by hand on the hot path; it must be byte for byte what the general
    encoder makes of :func:`ack`, escapes and non-ASCII ids included."""
    assert encode_ack(message_id, seq, duplicate) == encode(ack(message_id, seq, duplicate))
    assert json.loads(encode_ack(message_id, seq, duplicate)) == ack(message_id, seq, duplicate)
