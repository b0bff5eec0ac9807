"""Properties of the wire format: whatever a client sends, decoding ends in a value or a contract
refusal; whatever the server encodes, parsing gives it back."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from vibews.protocol import (
    ALREADY_ANSWERED,
    CONFLICT,
    FORBIDDEN,
    INTERNAL_ERROR,
    INVALID_JSON,
    INVALID_MESSAGE,
    RATE_LIMITED,
    UNAVAILABLE,
    UNKNOWN_QUESTION,
    UNKNOWN_TYPE,
    ClientMessage,
    DataMessage,
    Refusal,
    decode,
    encode,
    parse_object,
    validate,
)

# The ten error codes of contract section 2; parsing can only produce the first three.
PARSE_CODES = frozenset({INVALID_JSON, INVALID_MESSAGE, UNKNOWN_TYPE})
CONTRACT_CODES = PARSE_CODES | {
    FORBIDDEN,
    UNKNOWN_QUESTION,
    ALREADY_ANSWERED,
    CONFLICT,
    RATE_LIMITED,
    UNAVAILABLE,
    INTERNAL_ERROR,
}

# No example database: nothing is written into the working tree.
FAST = settings(max_examples=300, deadline=None, database=None)

# --- strategies ------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)

json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=8,
)

# Values that break a field: scalars of every JSON kind and small containers, about half each.
wrong_values = (
    json_scalars
    | st.lists(json_scalars, max_size=2)
    | st.dictionaries(st.text(max_size=4), json_scalars, max_size=2)
    | json_values
)

json_objects = st.dictionaries(st.text(max_size=12), json_values, max_size=6)

client_types = st.sampled_from(
    ["agent_status", "task_update", "question", "answer", "ack", "resume"]
)
other_types = st.sampled_from(
    ["welcome", "presence", "error", "resumed", "claimed", "withdraw", "claim"]
) | st.text(max_size=10)

valid_timestamps = st.datetimes().map(
    lambda moment: moment.isoformat(timespec="milliseconds") + "Z"
)
bad_timestamps = (
    st.sampled_from(["2026-11-25 10:00:00Z", "2026-11-25T10:00Z", "2025-02-29T00:00:00Z", ""])
    | st.text(max_size=30)
    | json_scalars
)

# True nine times in ten (shrinking goes toward the False case).
mostly = st.sampled_from([False] + [True] * 9)

short_text = st.text(min_size=1, max_size=20)

# A valid payload for each client type; the envelope strategy then breaks some of its fields.
valid_payloads: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "agent_status": st.fixed_dictionaries({"state": st.text(min_size=1, max_size=64)}),
    "task_update": st.fixed_dictionaries(
        {"task_id": st.text(min_size=1, max_size=128), "status": st.text(min_size=1, max_size=64)},
        optional={"progress": st.floats(min_value=0, max_value=1)},
    ),
    "question": st.fixed_dictionaries(
        {"text": short_text}, optional={"options": st.lists(st.text(max_size=10), max_size=4)}
    ),
    "answer": st.fixed_dictionaries(
        {"question_id": short_text, "action": st.sampled_from(["accept", "decline", "cancel"])},
        optional={"text": st.text(max_size=10)},
    ),
    "resume": st.fixed_dictionaries(
        {"since": st.integers(min_value=0)}, optional={"epoch": short_text}
    ),
    "ack": st.just({}),
}

payload_keys = st.sampled_from(
    (
        "state task_id status progress text options question_id value since epoch action extra"
    ).split()
)


@st.composite
def payloads(draw: st.DrawFn, message_type: str) -> dict[str, Any]:
    """A valid payload for ``message_type`` (any one for other types), with some fields broken."""
    if message_type in valid_payloads:
        payload = dict(draw(valid_payloads[message_type]))
    else:
        payload = dict(draw(st.one_of(*valid_payloads.values())))
    own_keys = st.sampled_from(sorted(payload)) if payload else payload_keys
    for key in draw(st.lists(own_keys | payload_keys, max_size=3)):
        if draw(st.booleans()):
            payload.pop(key, None)
        else:
            payload[key] = draw(wrong_values)
    return payload


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """Objects shaped like client messages: mostly valid, with some fields missing or wrong."""
    message_type = draw(client_types if draw(mostly) else other_types)
    message: dict[str, Any] = {}
    if draw(mostly):
        message["type"] = message_type
    elif draw(st.booleans()):
        message["type"] = draw(json_values)
    if draw(st.booleans()):
        message["id"] = draw(st.text(min_size=1, max_size=128) if draw(mostly) else wrong_values)
    if draw(st.booleans()):
        message["timestamp"] = draw(valid_timestamps if draw(mostly) else bad_timestamps)
    if draw(mostly):
        message["payload"] = draw(payloads(message_type))
    elif draw(st.booleans()):
        message["payload"] = draw(wrong_values)
    if message_type == "ack" or draw(st.booleans()):
        message["seq"] = draw(st.integers(min_value=0) if draw(mostly) else wrong_values)
    message.update(draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2)))
    return message


@st.composite
def one_field_broken(draw: st.DrawFn) -> dict[str, Any]:
    """A valid client message with one field (a payload field, or ack's seq) set to any value."""
    message_type = draw(st.sampled_from(sorted(valid_payloads)))
    payload = dict(draw(valid_payloads[message_type]))
    message: dict[str, Any] = {"type": message_type, "id": "m1", "payload": payload}
    if message_type == "ack":
        message["seq"] = draw(wrong_values)
        return message
    key = draw(st.sampled_from([*sorted(payload), "extra"]))
    payload[key] = draw(wrong_values)
    return message


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    """A client-shaped message's JSON text with a few bytes replaced, inserted or removed."""
    frame = bytearray(json.dumps(draw(envelopes()), ensure_ascii=draw(st.booleans())).encode())
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        position = draw(st.integers(min_value=0, max_value=len(frame)))
        operation = draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = draw(st.sampled_from(b'{}[]",:\\\x00\xff\xc3 0e-ntu') | st.integers(0, 255))
        if operation == "insert":
            frame.insert(position, byte)
        elif position < len(frame):
            if operation == "replace":
                frame[position] = byte
            else:
                del frame[position]
    return bytes(frame)


def decode_and_validate(frame: bytes) -> ClientMessage | Refusal:
    """What the hub does with a frame (role check aside); a Refusal is returned, not raised."""
    try:
        return validate(decode(frame))
    except Refusal as refusal:
        return refusal


def assert_value_or_contract_refusal(frame: bytes) -> None:
    outcome = decode_and_validate(frame)
    if isinstance(outcome, Refusal):
        assert outcome.code in CONTRACT_CODES
        assert outcome.code in PARSE_CODES
        assert isinstance(outcome.message, str) and outcome.message
        assert outcome.id is None or isinstance(outcome.id, str)


# --- properties ------------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=512))
def test_arbitrary_bytes_give_a_value_or_a_contract_refusal(frame: bytes) -> None:
    """For any bytes, decode then validate returns a value or raises Refusal with a contract code."""
    assert_value_or_contract_refusal(frame)


@FAST
@given(mutated_frames())
def test_mutated_messages_give_a_value_or_a_contract_refusal(frame: bytes) -> None:
    """Near-JSON frames (a valid message's text with bytes changed) never raise anything else."""
    assert_value_or_contract_refusal(frame)


@FAST
@given(envelopes())
def test_message_shaped_objects_give_a_value_or_a_contract_refusal(message: dict[str, Any]) -> None:
    """Objects with right and wrong envelope and payload fields never raise anything else."""
    assert_value_or_contract_refusal(json.dumps(message, ensure_ascii=False).encode())


@FAST
@given(one_field_broken())
def test_any_value_in_any_field_gives_a_value_or_a_contract_refusal(
    message: dict[str, Any],
) -> None:
    """Whatever JSON value one checked field holds, the result is a value or a contract refusal."""
    assert_value_or_contract_refusal(encode(message))


@FAST
@given(json_objects)
def test_encode_then_parse_object_round_trips(value: dict[str, Any]) -> None:
    """parse_object(encode(d)) == d for JSON-able dicts; encode's output is UTF-8 JSON."""
    frame = encode(value)
    assert parse_object(frame) == value
    assert json.loads(frame.decode("utf-8")) == value


@FAST
@given(
    st.text(min_size=1, max_size=64),
    st.dictionaries(
        st.text(max_size=12).filter(lambda key: key != "state"), json_values, max_size=5
    ),
)
def test_valid_agent_status_keeps_every_payload_field(state: str, extra: dict[str, Any]) -> None:
    """A valid agent_status is accepted and its payload, unknown fields included, is kept intact."""
    payload = {"state": state, **extra}
    outcome = decode_and_validate(encode({"type": "agent_status", "id": "m1", "payload": payload}))
    assert isinstance(outcome, DataMessage)
    assert outcome.payload == payload
