"""The fast path for incoming text frames (vibews.fastframes) reads exactly what Autobahn reads, and
leaves Autobahn everything else: the same messages, replies, close codes and counters, whatever
the frames and however the bytes are split into reads."""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket.types import ConnectionRequest
from autobahn.websocket.utf8validator import Utf8Validator
from autobahn.websocket.xormasker import create_xor_masker  # type: ignore[attr-defined]
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from vibews import fastframes
from vibews.rawws import BINARY, CLOSE, CONTINUATION, PING, TEXT, frame
from vibews.server import ConnectionSettings, VibeServerProtocol, _WebSocketPeer, configure_factory
from vibews.testing import upgrade_request

SEED = 8
KEY = b"\x9a\x05\xe3\x71"


def masked(payload: bytes, key: bytes = KEY, **options: Any) -> bytes:
    """A client frame with a fixed key, so a test can be read back byte for byte."""
    head = bytes([0x80 | (options.get("rsv", 0) << 4) | options.get("opcode", TEXT)])
    size = len(payload)
    if size < 126:
        head += bytes([0x80 | size])
    else:
        head += bytes([0x80 | 126]) + struct.pack("!H", size)
    return head + key + create_xor_masker(key, size).process(payload) if size else head + key


# --- the pure parts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, 2, 3, 4, 5, 7, 8, 125, 126, fastframes.C_MASK_FROM - 1, fastframes.C_MASK_FROM]
)
def test_unmask_matches_autobahn(size: int) -> None:
    """Both ways of unmasking (integers below C_MASK_FROM, the C masker from it on) give
    Autobahn's bytes, at every offset of the 4-byte key."""
    rng = random.Random(SEED + size)
    for extra in range(4):
        data = rng.randbytes(size + extra)
        key = rng.randbytes(4)
        assert fastframes.unmask(data, key) == create_xor_masker(key, len(data)).process(data)


def test_unmask_large_payloads_match_autobahn() -> None:
    rng = random.Random(SEED)
    for size in (500, 1000, 2000, 65535):
        data, key = rng.randbytes(size), rng.randbytes(4)
        assert fastframes.unmask(data, key) == create_xor_masker(key, size).process(data)


def _autobahn_accepts(payload: bytes) -> bool:
    validator = Utf8Validator()
    valid, ended, _, _ = validator.validate(payload)
    return bool(valid and ended)


def _texts() -> Iterator[bytes]:
    """Byte strings near the edges of UTF-8: every lead byte with every kind of continuation,
    then random mixes of valid text, stray continuation bytes, surrogates, overlong forms."""
    for lead in range(256):
        for tail in (
            b"",
            b"\x80",
            b"\xbf",
            b"\x80\x80",
            b"\xa0\x80",
            b"\x8f\xbf\xbf",
            b"\x90\x80\x80",
        ):
            yield bytes([lead]) + tail
    rng = random.Random(SEED)
    pieces = [b"a", "é".encode(), "€".encode(), "𝄞".encode(), b"\x80", b"\xc0\xaf", b"\xed\xa0\x80"]
    pieces += [
        b"\xf4\x90\x80\x80",
        b"\xe2\x82",
        b"\xf0",
        b"\xff",
        b"\xef\xbf\xbf",
        b"\xf4\x8f\xbf\xbf",
    ]
    for _ in range(20000):
        yield b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 6)))
    for _ in range(5000):
        yield rng.randbytes(rng.randrange(1, 8))


def test_utf8_decision_is_autobahns() -> None:
    """A payload the fast path takes is one Autobahn's validator accepts, and the other way
    round: CPython's strict decoder and Autobahn's validator agree on every one of these."""
    disagreements = []
    for text in _texts():
        fast = fastframes.read_text_frame(masked(text), 0, 1000) is not None
        if fast != _autobahn_accepts(text):
            disagreements.append(text)
    assert not disagreements, disagreements[:10]


def test_read_text_frame_reads_a_frame_and_says_where_it_ends() -> None:
    first, second = masked(b'{"a":1}'), masked("é".encode() * 100)
    data = first + second
    assert fastframes.read_text_frame(data, 0, 1000) == (b'{"a":1}', len(first))
    assert fastframes.read_text_frame(data, len(first), 1000) == ("é".encode() * 100, len(data))
    assert fastframes.read_text_frame(masked(b""), 0, 1000) == (b"", 6)


@pytest.mark.parametrize(
    "data",
    [
        masked(b"{}")[:5],  # incomplete header
        masked(b"x" * 200)[:7],  # incomplete 16-bit length and key
        masked(b"{}")[:-1],  # incomplete payload
        masked(b"{}", opcode=BINARY),
        masked(b"{}", opcode=CONTINUATION),
        masked(b"", opcode=PING),
        masked(b"", opcode=CLOSE),
        masked(b"{}", rsv=4),
        masked(b"{}", rsv=1),
        frame(TEXT, b"{}", fin=False),
        frame(TEXT, b"{}", mask=False),
        frame(TEXT, b"x" * 130, mask=False),
        b"\x81\xfe\x00\x05" + KEY + b"hello",  # 16-bit length for 5 bytes: not minimal
        b"\x81\xff" + struct.pack("!Q", 5) + KEY + b"hello",  # 64-bit length
        masked(b"x" * 101),  # over the limit of 100
        masked(b"\xed\xa0\x80"),  # invalid UTF-8
    ],
    ids=[
        "short-header",
        "short-extended-header",
        "short-payload",
        "binary",
        "continuation",
        "ping",
        "close",
        "rsv1",
        "rsv3",
        "fragment",
        "unmasked",
        "unmasked-long",
        "non-minimal-16",
        "64-bit-length",
        "oversize",
        "invalid-utf8",
    ],
)
def test_read_text_frame_leaves_everything_else_to_autobahn(data: bytes) -> None:
    assert fastframes.read_text_frame(data, 0, 100) is None


def test_payload_limit_is_autobahns_smallest_limit() -> None:
    class Options:
        maxFramePayloadSize = 0
        maxMessagePayloadSize = 0

    options = Options()
    assert fastframes.payload_limit(options) == 65535
    options.maxMessagePayloadSize = 4096
    assert fastframes.payload_limit(options) == 4096
    options.maxFramePayloadSize = 100
    assert fastframes.payload_limit(options) == 100
    options.maxFramePayloadSize = 1 << 20
    assert fastframes.payload_limit(options) == 4096


# --- the protocol: the fast path against Autobahn's own, on the same bytes -------------------------

LIMIT = 300  # a small message limit, so the oversize frames stay small


class FakeKeepAlive:
    def __init__(self, events: list[Any]) -> None:
        self.events = events

    def traffic(self, connection: object) -> None:
        self.events.append("traffic")


class Recorder(VibeServerProtocol):
    """The production protocol with the hub replaced by a list: what each message did. A message
    ``close`` starts a policy close, as the hub does for a revoked token."""

    factory: RecorderFactory  # type: ignore[assignment]

    def onConnect(self, request: ConnectionRequest) -> str | None:
        return None

    def onOpen(self) -> None:
        self._peer = _WebSocketPeer(self, 1 << 20)
        self.transport.registerProducer(self._peer, True)

    def onMessageBegin(self, isBinary: bool) -> None:
        self.factory.autobahn_messages += 1
        super().onMessageBegin(isBinary)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.state != VibeServerProtocol.STATE_OPEN:
            return
        self.factory.events.append(("message", payload, isBinary))
        if isBinary:
            self.close_with(1003, "binary")
        elif payload == b"close":
            self.close_with(1008, "policy")


class RecorderFactory(WebSocketServerFactory):
    protocol = Recorder  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.settings = ConnectionSettings(max_message_size=LIMIT, max_fragments=4)
        self.events: list[Any] = []
        self.autobahn_messages = 0
        self.keepalive = FakeKeepAlive(self.events)
        configure_factory(self, self.settings)
        # No timers on the global reactor: this test runs without one.
        options: Any = self.protocol
        options.openHandshakeTimeout = 0
        options.closeHandshakeTimeout = 0
        options.serverConnectionDropTimeout = 0


def run(reads: list[bytes], fast: bool, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Everything observable after the handshake and then these reads, with or without the fast
    path: the messages and keep-alive notices in order, the bytes sent, the connection's state,
    close code and traffic counters."""
    with monkeypatch.context() as patch:
        if not fast:
            patch.setattr(fastframes, "parser_at_rest", lambda protocol: False)
        factory = RecorderFactory()
        protocol: Any = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(upgrade_request())
        assert protocol.state == VibeServerProtocol.STATE_OPEN
        transport.clear()
        for data in reads:
            protocol.dataReceived(data)
        stats = protocol.trafficStats.__json__()
        return {
            "events": factory.events,
            "sent": transport.value(),
            "state": protocol.state,
            "close": (protocol.localCloseCode, protocol.localCloseReason),
            "dropped": transport.disconnecting,
            "stats": {k: v for k, v in stats.items() if not k.startswith("outgoing")},
            "autobahn_messages": factory.autobahn_messages,
        }


def splits(data: bytes) -> Iterator[list[bytes]]:
    """All at once, one byte per read, every cut into two reads, and seeded cuts into several."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    for cut in range(1, len(data)):
        yield [data[:cut], data[cut:]]
    rng = random.Random(SEED)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(data)), min(4, len(data) - 1)))
        yield [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


M1, M2, M3 = b'{"n":1}', "é€𝄞".encode() * 30, b"x" * LIMIT  # short, 16-bit length, at the limit

STREAMS = {
    "fast frames": masked(M1) + masked(M2) + masked(M3) + masked(b""),
    "with a ping": masked(M1) + masked(b"p", opcode=PING) + masked(M2),
    "with a fragmented message": masked(M1)
    + frame(TEXT, b"ab", fin=False)
    + frame(CONTINUATION, b"cd")
    + masked(M2),
    "with a close": masked(M1) + masked(struct.pack("!H", 1000), opcode=CLOSE) + masked(M2),
    "closed by a message": masked(M1) + masked(b"close") + masked(M2),
    "with a binary frame": masked(M1) + masked(b"\x00", opcode=BINARY) + masked(M2),
    "with an oversize frame": masked(M1) + masked(b"x" * (LIMIT + 1)) + masked(M2),
    "with invalid UTF-8": masked(M1) + masked(b'{"a":"\xed\xa0\x80"}') + masked(M2),
    "with truncated UTF-8": masked(M1) + masked(b'{"a":"\xe2\x82') + masked(M2),
    "with an unmasked frame": masked(M1) + frame(TEXT, b"{}", mask=False) + masked(M2),
    "with a reserved bit": masked(M1) + masked(b"{}", rsv=2) + masked(M2),
    "with a non-minimal length": masked(M1) + b"\x81\xfe\x00\x02" + KEY + b"{}" + masked(M2),
    "with too many fragments": masked(M1)
    + frame(TEXT, b"a", fin=False)
    + b"".join(frame(CONTINUATION, b"a", fin=False) for _ in range(4))
    + masked(M2),
}


@pytest.mark.parametrize("name", list(STREAMS))
def test_fast_path_is_indistinguishable_from_autobahn(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However the stream is cut into reads, the fast path delivers the same messages with the
    same keep-alive notices in the same order, sends the same bytes (pongs, close frames), ends
    in the same state with the same close code and counts the same traffic as Autobahn alone;
    and with the whole stream in one read it took every fast frame before the first other one."""
    stream = STREAMS[name]
    for reads in splits(stream):
        expected = run(reads, False, monkeypatch)
        assert expected["events"], "the stream delivers at least its first message"
        got = run(reads, True, monkeypatch)
        assert got["autobahn_messages"] <= expected["autobahn_messages"]
        del got["autobahn_messages"], expected["autobahn_messages"]
        assert got == expected, reads
    whole, alone = run([stream], True, monkeypatch), run([stream], False, monkeypatch)
    assert whole["autobahn_messages"] < alone["autobahn_messages"]
