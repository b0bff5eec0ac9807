"""Malformed frames and hostile payloads over raw sockets: each ends in the contract's close code
or error, and after each a normal client still gets its ack and deliveries, nothing acked lost."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import pytest_twisted

from vibews.rawws import BINARY, CONTINUATION, PING, PONG, TEXT, open_raw
from vibews.testing import RunningServer, assert_still_serving, start_server

SEED = 8  # the random inputs are the same on every run


@pytest_twisted.ensureDeferred
async def test_random_bytes_in_text_frames(tmp_path: Path) -> None:
    """200 random byte strings and 200 random texts (code points below U+D800, JSON's punctuation
    mixed in) as text frames: invalid UTF-8 closes with 1007, valid UTF-8 that is not a JSON
    object is refused with invalid_json or invalid_message and the connection stays (no refusal
    limit here: it is not what this test is about)."""
    server = await start_server(tmp_path / "data", max_refused=1_000_000)
    try:
        await _random_frames(server)
    finally:
        await server.stop()


async def _random_frames(server: RunningServer) -> None:
    rng = random.Random(SEED)
    closed = refused = 0
    alphabet = '{}[]":,0123456789.eE-+ \\ntrufalsu' + "é€𝄞\u2028\x00"
    agent = await open_raw(server.port, server.agent_token)
    for i in range(400):
        if i % 2:
            payload = rng.randbytes(rng.randrange(1, 300))
        else:
            size = rng.randrange(1, 300)
            garbage = "".join(
                rng.choice(alphabet) if rng.random() < 0.7 else chr(rng.randrange(0xD800))
                for _ in range(size)
            )
            payload = garbage.encode()
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            text = None
        agent.send_frame(TEXT, payload)
        if text is None:
            assert await agent.wait_lost() == 1007
            closed += 1
            agent = await open_raw(server.port, server.agent_token)
        else:
            error = await agent.next_of("error")
            assert error["payload"]["code"] in ("invalid_json", "invalid_message")
            refused += 1
    assert closed > 150 and refused > 150, (closed, refused)
    await assert_still_serving(server)


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc0\xaf",  # overlong
        b"\xed\xa0\x80",  # a UTF-16 surrogate encoded in UTF-8
        b"\xf4\x90\x80\x80",  # above U+10FFFF
        b'{"type":"agent_status","payload":{"state":"\xe2\x82"}}',  # truncated sequence
    ],
    ids=["overlong", "surrogate", "above-max", "truncated"],
)
@pytest_twisted.ensureDeferred
async def test_invalid_utf8_closes_with_1007(server: RunningServer, payload: bytes) -> None:
    """Each kind of invalid UTF-8 in a text frame closes the connection with 1007."""
    agent = await open_raw(server.port, server.agent_token)
    agent.send_frame(TEXT, payload)
    assert await agent.wait_lost() == 1007
    await assert_still_serving(server)


@pytest_twisted.ensureDeferred
async def test_invalid_utf8_split_across_fragments_closes_with_1007(server: RunningServer) -> None:
    """A code point split across two fragments is fine; an invalid one so split closes 1007."""
    agent = await open_raw(server.port, server.agent_token)
    good = json.dumps({"type": "agent_status", "id": "é", "payload": {"state": "é"}}).encode()
    good = good.replace(b"\\u00e9", "é".encode())
    cut = good.index("é".encode()) + 1
    agent.send_frame(TEXT, good[:cut], fin=False)
    agent.send_frame(CONTINUATION, good[cut:])
    assert (await agent.next_of("ack"))["id"] == "é"
    agent.send_frame(TEXT, b'{"type":"agent_status","id":"x\xe2', fin=False)
    agent.send_frame(CONTINUATION, b'\x28"}')
    assert await agent.wait_lost() == 1007
    await assert_still_serving(server)


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([(TEXT, b"{}", {"mask": False})], 1002),
        ([(TEXT, b"{}", {"rsv": 4})], 1002),
        ([(0x3, b"{}", {})], 1002),  # reserved data opcode
        ([(0xB, b"", {})], 1002),  # reserved control opcode
        ([(PING, b"p" * 126, {})], 1002),  # control frame over 125 bytes
        ([(PING, b"p", {"fin": False})], 1002),  # fragmented control frame
        ([(CONTINUATION, b"{}", {})], 1002),  # continuation with nothing to continue
        ([(TEXT, b"{", {"fin": False}), (TEXT, b"}", {})], 1002),  # new message mid-message
        ([(BINARY, b"\x00\x01", {})], 1003),
        ([(TEXT, b"x" * 65537, {})], 1009),
    ],
    ids=[
        "unmasked",
        "reserved-bit",
        "reserved-opcode",
        "reserved-control",
        "long-control",
        "fragmented-control",
        "orphan-continuation",
        "interleaved-message",
        "binary",
        "oversize",
    ],
)
@pytest_twisted.ensureDeferred
async def test_protocol_violations_close_with_their_code(
    server: RunningServer, frames: list[tuple[int, bytes, dict[str, object]]], code: int
) -> None:
    """Each RFC 6455 violation closes the connection with its code; the server goes on."""
    agent = await open_raw(server.port, server.agent_token)
    for opcode, payload, options in frames:
        agent.send_frame(opcode, payload, **options)
    assert await agent.wait_lost() == code
    await assert_still_serving(server)


@pytest_twisted.ensureDeferred
async def test_deeply_nested_and_huge_json(server: RunningServer) -> None:
    """Nesting at 64 levels is stored, at 65 and at 30000 levels refused with invalid_message
    (no RecursionError); 64 KiB of numbers, of keys, of escapes are stored and relayed intact."""
    agent = await open_raw(server.port, server.agent_token)
    acked: list[int] = []

    def nested(depth: int) -> bytes:
        inner = "[" * (depth - 2) + "]" * (depth - 2)
        return (
            f'{{"type":"agent_status","id":"n{depth}","payload":{{"state":"s","n":{inner}}}}}'
        ).encode()

    agent.send_frame(TEXT, nested(64))
    acked.append((await agent.next_of("ack"))["seq"])
    for depth in (65, 30000):
        agent.send_frame(TEXT, nested(depth) if depth < 100 else b"[" * depth + b"]" * depth)
        error = await agent.next_of("error")
        assert error["payload"]["code"] == "invalid_message"
        assert "nested" in error["payload"]["message"]
    bodies = {
        "numbers": [1] * 30000,
        "keys": {f"k{i}": i for i in range(5000)},
        "escapes": '\\"\n\t\u2028' * 2500,
    }
    for name, body in bodies.items():
        message = {"type": "agent_status", "id": name, "payload": {"state": "s", "b": body}}
        frame = json.dumps(message, separators=(",", ":"))
        assert len(frame) < 65536, (name, len(frame))
        agent.send_frame(TEXT, frame.encode())
        acked.append((await agent.next_of("ack"))["seq"])
    stored = server.service.store.read(acked[-4] - 1, None, 10)
    by_seq = {m.seq: json.loads(m.data) for m in stored}
    for seq, (name, body) in zip(acked[1:], bodies.items(), strict=True):
        assert by_seq[seq]["payload"]["b"] == body, name
    await assert_still_serving(server, acked)


@pytest_twisted.ensureDeferred
async def test_ping_flood_is_answered_and_others_are_served(server: RunningServer) -> None:
    """5000 pings from a client that reads: every one gets its pong, in order, the connection
    stays open and another client's round trip completes meanwhile."""
    flooder = await open_raw(server.port, server.agent_token)
    for i in range(5000):
        flooder.send_frame(PING, str(i).encode())
    acked = await assert_still_serving(server)
    flooder.send_json({"type": "agent_status", "id": "after-flood", "payload": {"state": "s"}})
    ack = await flooder.next_of("ack")
    pongs = [payload for opcode, payload in flooder.frames if opcode == PONG]
    assert pongs == [str(i).encode() for i in range(5000)]
    await assert_still_serving(server, [*acked, ack["seq"]])


@pytest_twisted.ensureDeferred
async def test_fragment_flood_is_capped_while_others_are_served(server: RunningServer) -> None:
    """A client that sends 1-byte fragments without end is closed with 1009 at the 65th; 200
    messages of exactly 64 fragments are all accepted; a bystander's round trip completes while
    the endless one is sent."""
    honest = await open_raw(server.port, server.agent_token)
    acked = []
    for i in range(200):
        data = json.dumps({"type": "agent_status", "id": f"f{i}", "payload": {"state": "s"}})
        payload = data.encode().ljust(64, b" ")
        size = len(payload) // 64
        pieces = [payload[k * size : (k + 1) * size] for k in range(63)] + [payload[63 * size :]]
        for k, piece in enumerate(pieces):
            honest.send_frame(TEXT if k == 0 else CONTINUATION, piece, fin=k == 63)
    for _ in range(200):
        acked.append((await honest.next_of("ack"))["seq"])
    endless = await open_raw(server.port, server.agent_token)
    endless.send_frame(TEXT, b"{", fin=False)
    for _ in range(100000):
        endless.send_frame(CONTINUATION, b" ", fin=False)
    acked += await assert_still_serving(server)
    assert await endless.wait_lost() == 1009
    await assert_still_serving(server, acked)
