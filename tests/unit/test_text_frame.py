"""The server's text frames are built by hand (vibews.server.encode_text_frame); they must be the bytes
Autobahn's own prepared message would have put on the wire, at every length encoding."""

from __future__ import annotations

import pytest
from autobahn.twisted.websocket import WebSocketServerFactory

from vibews.server import encode_text_frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_encode_text_frame_is_autobahns_prepared_frame(size: int) -> None:
    """7-bit, 16-bit and 64-bit lengths: the same header and payload as Autobahn writes."""
    data = (b'{"type":"ack","seq":1}' * (size // 22 + 1))[:size]
    assert encode_text_frame(data) == WebSocketServerFactory().prepareMessage(data).payloadHybi


def test_encode_text_frame_header() -> None:
    """FIN and the text opcode, no mask, the length; then the payload untouched."""
    assert encode_text_frame(b"{}") == b"\x81\x02{}"
    assert encode_text_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
