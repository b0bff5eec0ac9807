"""orjson on the message path answers exactly as the stdlib decoder and encoder did before it:
the same value (types, key order, ``-0.0``, big integers) for every frame the stdlib path
accepts, the same refusal (code and message) for every frame it refuses, and bytes meaning the
same value from the encoder."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from vibews.protocol import (
    MAX_DEPTH,
    Refusal,
    encode,
    encode_ack,
    encode_value,
    parse_object,
    stdlib_encode,
    stdlib_parse_object,
)

MANY = settings(max_examples=1500, deadline=None, database=None)


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down, floats by their bits (``-0.0`` is not ``0.0``),
    dict keys in the same order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return math.copysign(1.0, a) == math.copysign(1.0, b) and (a == b or (a != a and b != b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[key], b[key]) for key in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def outcome(parse: Any, frame: bytes) -> Any:
    try:
        return parse(frame)
    except Refusal as refusal:
        return refusal


def assert_same_outcome(frame: bytes) -> None:
    new, old = outcome(parse_object, frame), outcome(stdlib_parse_object, frame)
    if isinstance(old, Refusal):
        assert isinstance(new, Refusal), (frame, new)
        assert (new.code, new.message, new.id) == (old.code, old.message, old.id), frame
    else:
        assert not isinstance(new, Refusal), (frame, new)
        assert same(new, old), frame


# --- hand-picked frames ------------------------------------------------------------------------

NUMBERS = [
    "0", "-0", "-0.0", "0.0", "1E-7", "1e-7", "1e2", "1E+2", "1.5e300", "1e308", "1.7976931348623157e308",
    "1.7976931348623159e308", "1e400", "-1e400", "1e-400", "2.2250738585072014e-308", "4.9e-324",
    "2e-324", "0.1", "0.30000000000000004", "9007199254740993", "9007199254740993.0",
    "123456789012345678", "999999999999999999", "1234567890123456789", "9223372036854775807",
    "9223372036854775808", "-9223372036854775808", "-9223372036854775809", "18446744073709551615",
    "18446744073709551616", "-18446744073709551616", "1" * 40, "-" + "9" * 30, "1" * 5000,
    "0.000000000000000000001", "1.00000000000000011102230246251565404236316680908203125",
    "1.0000000000000002220446049250313080847263336181640625", "7.2057594037927933e16",
    "1e-99999999999", "1.5e999999999999999999", "0e999999", "01", "1.", ".5", "-", "1e", "+1",
    "0x10", "1_0", "NaN", "-NaN", "Infinity", "-Infinity", "nan", "inf",
]  # fmt: skip

STRINGS = [
    r'"\ud800"', r'"\udc00"', r'"\ud83d\ude00"', r'"\ud800\u0041"', r'"\ud800\ud800"', r'"a\udfffb"',
    r'"\u0000"', r'"\u001f"', r'"\u2028\u2029"', '"\u2028"', '"\x7f"', '"\x00"', '"\x1f"', '"\t"',
    '"\n"', r'"\/"', r'"\x"', r'"\u00zz"', r'"\U0041"', '"é中😀"', '"\\"', '"abc',
]  # fmt: skip

SPECIAL_FRAMES = [
    b"",
    b" ",
    b"{}",
    b"[]",
    b"null",
    b'"x"',
    b"1",
    b"\xef\xbb\xbf{}",
    b"\xef\xbb\xbf",
    b" \xef\xbb\xbf{}",
    b"\xff",
    b'{"a":"\xed\xa0\x80"}',
    b'{"a":"\xc3"}',
    b'{"a":"\xf4\x90\x80\x80"}',
    b'{"a":"\xc0\xaf"}',
    b'{"a":1,"a":2}',
    b'{"a":1,"b":0,"a":2}',
    b'{"a":{"x":1},"a":[1]}',
    b"{}\x00",
    b"\x0c{}",
    b"\x0b{}",
    b"\xc2\xa0{}",
    b"{} ",
    b"\t\r\n {}\t\r\n ",
    b'{"a":1}x',
    b'{"a":1}{}',
    b"{,}",
    b'{"a":1,}',
    b"[1,]",
    b"{'a':1}",
    b'{"a" 1}',
    b'{"a":tru}',
    b'{"a":True}',
    b"{a:1}",
    b'{"a":1}/*c*/',
    b'{"id":"\xe2\x80\xa8","type":"agent_status"}',
]

DEPTHS = [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 200, 1100, 5000]


def _nested(depth: int, opener: str, closer: str) -> bytes:
    return ('{"a":' + opener * (depth - 1) + "1" + closer * (depth - 1) + "}").encode()


HAND_PICKED = (
    SPECIAL_FRAMES
    + [f'{{"n":{number}}}'.encode() for number in NUMBERS]
    + [f'{{"n":[{number},1]}}'.encode() for number in NUMBERS]
    + [f'{{"s":{text}}}'.encode() for text in STRINGS]
    + [f"{{{text}:1}}".encode() for text in STRINGS]
    + [_nested(depth, "[", "]") for depth in DEPTHS]
    + [_nested(depth, '{"b":', "}") for depth in DEPTHS]
    + [_nested(depth, "[", "") for depth in DEPTHS]  # unclosed
    + [('{"s":"' + "[" * 100 + '"}').encode(), ('{"s":"\\"' + "{" * 100 + '"}').encode()]
)


@pytest.mark.parametrize("frame", HAND_PICKED)
def test_hand_picked_frames_give_the_stdlib_outcome(frame: bytes) -> None:
    """Frames at every edge the contract names (numbers, surrogates, BOM, depth, duplicates,
    control characters, invalid UTF-8) give the value or the refusal the stdlib path gives."""
    assert_same_outcome(frame)


def test_the_edges_still_mean_what_the_contract_says() -> None:
    """A guard against both paths drifting together: the answers the contract requires."""
    assert parse_object(b'{"n":18446744073709551616}') == {"n": 2**64}
    assert parse_object(b'{"n":-0}')["n"] == 0
    assert math.copysign(1.0, parse_object(b'{"n":-0.0}')["n"]) == -1.0
    assert parse_object(b'{"a":1,"b":0,"a":2}') == {"a": 2, "b": 0}
    for bad in (b'{"n":1e400}', b'{"s":"\\ud800"}', b"\xef\xbb\xbf{}", b'{"n":NaN}', b"\xff"):
        with pytest.raises(Refusal) as refused:
            parse_object(bad)
        assert refused.value.code == "invalid_json"


# --- generated frames --------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text()
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)
objects = st.dictionaries(st.text(max_size=10), values, max_size=6)


@MANY
@given(objects, st.booleans())
def test_any_stdlib_written_object_gives_the_stdlib_outcome(
    value: dict[str, Any], ascii: bool
) -> None:
    """Objects written by the stdlib encoder (NaN and infinity included, ASCII-escaped or not)."""
    assert_same_outcome(json.dumps(value, ensure_ascii=ascii).encode())


number_literals = st.from_regex(
    r"\A-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,3})?\Z", fullmatch=True
)


@MANY
@given(number_literals)
@example("1e-7")
@example("1.7976931348623158e308")
def test_any_number_gives_the_stdlib_value(number: str) -> None:
    """Any JSON number literal: the same int or the same float (correct rounding), or the same
    refusal when it overflows to infinity."""
    assert_same_outcome(f'{{"n":{number}}}'.encode())
    assert_same_outcome(f'{{"n":[{number}]}}'.encode())


escapes = st.lists(
    st.one_of(
        st.integers(min_value=0, max_value=0xFFFF).map(lambda code: f"\\u{code:04x}"),
        st.sampled_from(["\\ud83d", "\\ude00", "\\ud800", "\\udfff", '\\"', "\\\\", "\\n", "\\/"]),
        st.text(max_size=3).map(lambda text: json.dumps(text, ensure_ascii=False)[1:-1]),
    ),
    max_size=8,
).map("".join)


@MANY
@given(escapes)
def test_any_escape_sequence_gives_the_stdlib_outcome(body: str) -> None:
    """Strings of \\u escapes, surrogate halves alone, in pairs and reversed, as values and keys."""
    assert_same_outcome(f'{{"s":"{body}"}}'.encode())
    assert_same_outcome(f'{{"{body}":0}}'.encode())


@MANY
@given(st.binary(max_size=256))
def test_arbitrary_bytes_give_the_stdlib_outcome(frame: bytes) -> None:
    assert_same_outcome(frame)


SEED = b'{"type":"agent_status","id":"m1","payload":{"state":"x","n":[1,2.5,-0.0,"\\u00e9"]}}'
INSERTS = [
    b"\xef\xbb\xbf",
    b"\xff",
    b"\\ud800",
    b"1e400",
    b"NaN",
    b"\x00",
    b"\t",
    b"\xe2\x80\xa8",
    b"[",
    b"}",
]


@MANY
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=len(SEED)),
            st.integers(min_value=0, max_value=3),
            st.sampled_from(INSERTS) | st.binary(max_size=3),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_mutated_messages_give_the_stdlib_outcome(edits: list[tuple[int, int, bytes]]) -> None:
    """A valid message with bytes cut and edge tokens spliced in."""
    frame = SEED
    for at, cut, insert in edits:
        frame = frame[:at] + insert + frame[at + cut :]
    assert_same_outcome(frame)


# --- the encoder -------------------------------------------------------------------------------


def encoded(encoder: Any, value: Any) -> Any:
    try:
        return encoder(value)
    except (TypeError, ValueError) as error:
        return type(error)


@MANY
@given(values | st.dictionaries(st.integers(), scalars, max_size=3))
def test_the_encoder_means_what_the_stdlib_encoder_wrote(value: Any) -> None:
    """Same refusal (NaN, infinity), or bytes that parse to the same value; byte for byte the
    same but for a float's exponent (``1e-7`` for ``1e-07``; orjson 3.10 also writes ``1e16``
    for ``1e+16``)."""
    new, old = encoded(encode_value, value), encoded(stdlib_encode, value)
    if not isinstance(old, bytes):
        assert new is old
        return
    assert isinstance(new, bytes)
    assert same(json.loads(new), json.loads(old))
    if b"e-0" not in old and b"e+" not in old:
        assert new == old


@pytest.mark.parametrize(
    "value",
    [
        {"n": float("nan")},
        {"n": [float("inf")]},
        {"n": 2**64},
        {"n": -(2**63) - 1},
        {1: "a"},
        {"s": '\u2028\x7f\x00\x1f"\\/'},
        {"f": [1e-7, 1e16, -0.0, 5e-324, 0.1]},
        {"d": [[[[[[]]]]]] * 3},
        [[]] * 300,
    ],
)
def test_encoder_edges(value: Any) -> None:
    new, old = encoded(encode, value), encoded(stdlib_encode, value)
    if isinstance(old, bytes):
        assert isinstance(new, bytes) and same(json.loads(new), json.loads(old))
    else:
        assert new is old


def test_deep_values_fall_back_to_the_stdlib_encoder() -> None:
    """orjson stops at 254 levels; the stdlib encoder writes deeper values, so encode does too."""
    value: Any = 1
    for _ in range(300):
        value = [value]
    assert encode_value(value) == stdlib_encode(value)


@MANY
@given(st.text(), st.integers(min_value=0, max_value=2**70), st.booleans())
def test_encode_ack_is_the_stdlib_encoding(message_id: str, seq: int, duplicate: bool) -> None:
    """The ack's bytes are exactly what the stdlib encoder wrote before orjson."""
    frame: dict[str, Any] = {"type": "ack", "id": message_id, "seq": seq}
    if duplicate:
        frame["duplicate"] = True
    assert encode_ack(message_id, seq, duplicate) == stdlib_encode(frame)
