"""Coverage-guided fuzzing of the message decoder (atheris, libFuzzer underneath).

Whatever bytes a client sends, decoding and validating must end in a checked message or a
Refusal carrying one of the contract's parse codes, never another exception; a message that is
accepted must encode back to JSON the decoder accepts again.

    python fuzz/fuzz_decoder.py -dict=fuzz/json.dict -runs=50000 CORPUS fuzz/seeds   # as tox -e fuzz
    python fuzz/fuzz_decoder.py -dict=fuzz/json.dict -max_total_time=600 CORPUS fuzz/seeds

CORPUS is a scratch directory (libFuzzer writes what it finds there); fuzz/seeds holds one valid
message of each type to start from.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import atheris

with atheris.instrument_imports():
    from vibews import protocol
    from vibews.protocol import Refusal

PARSE_CODES = {protocol.INVALID_JSON, protocol.INVALID_MESSAGE, protocol.UNKNOWN_TYPE}


def _outcome(parse: Callable[[bytes], object], data: bytes) -> object:
    try:
        return parse(data)
    except Refusal as refusal:
        return (refusal.code, refusal.message, refusal.id)


def _typed(value: object) -> object:
    """The value with every leaf's type (and a float's sign and bits) made part of equality."""
    if isinstance(value, dict):
        return [(key, _typed(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [_typed(item) for item in value]
    if isinstance(value, float):
        return (float, value.hex())
    return (type(value), value)


def test_one_input(data: bytes) -> None:
    new = _typed(_outcome(protocol.parse_object, data))
    old = _typed(_outcome(protocol.stdlib_parse_object, data))
    if new != old:
        raise AssertionError(f"orjson and stdlib paths differ for {data!r}: {new!r} != {old!r}")
    try:
        envelope = protocol.decode(data)
        message = protocol.validate(envelope)
    except Refusal as refusal:
        if refusal.code not in PARSE_CODES:
            raise AssertionError(f"unexpected code {refusal.code!r} for {data!r}") from None
        if refusal.id is not None and not protocol.is_valid_id(refusal.id):
            raise AssertionError(f"invalid id in a refusal for {data!r}") from None
        return
    if isinstance(message, protocol.DataMessage):
        again = protocol.encode({"type": message.type, "payload": dict(message.payload)})
        protocol.validate(protocol.decode(again))


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
