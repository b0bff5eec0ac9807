"""The common incoming frame read without Autobahn's frame machinery; every other frame is Autobahn's.

Almost every frame a client sends is one complete, masked, unfragmented text frame of a few hundred
bytes. Autobahn reads each one through about fifteen method calls (frame begin, data, end, message
begin, frame, end ...), a C masker object created for it through CFFI, a UTF-8 validator call and
list joins: about 15 us of the 43 us a message cost in the latency scenario's profile. This module
recognises that one kind of frame and nothing else; :meth:`vibews.server.VibeServerProtocol.dataReceived`
hands the payload to ``onMessage`` itself, and passes the first byte that is not such a frame, and
everything after it, to Autobahn as before. So Autobahn stays the only judge of every unusual frame
(control frames, fragments, binary, reserved bits, unmasked, oversize, invalid UTF-8, partial).
"""

from __future__ import annotations

from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol

try:
    # The C masker Autobahn compiles at install (CFFI); optional there, so optional here.
    from _nvx_xormasker import ffi as _ffi  # type: ignore[import-not-found]
    from _nvx_xormasker import lib as _nvx
except ImportError:  # pragma: no cover - Autobahn installed without its native extensions
    _nvx = None

# FIN set, no reserved bit, opcode 1 (text): the first byte of the only frame taken here.
_FINAL_TEXT = 0x81
_MASKED = 0x80
# Autobahn's 16-bit length; a 64-bit one (127) means at least 64 KiB and is left to Autobahn.
_LENGTH_16 = 126
_LARGEST = 0xFFFF

# From this payload size on, Autobahn's C masker (called directly: no Python object per frame) is
# quicker than XOR on Python integers, whose cost grows with the size. Measured with timeit on
# this machine: integers 0.44 us at 50 bytes, 0.89 at 300, 2.3 at 1,000, 3.9 at 2,000; the C
# masker 0.84 to 0.99 us at any of these sizes (Autobahn's own XorMasker object: 2.3 to 2.5 us).
C_MASK_FROM = 320


def unmask(masked: bytes, key: bytes) -> bytes:
    """``masked`` XORed with the 4-byte ``key`` repeated (RFC 6455, 5.3)."""
    size = len(masked)
    if size >= C_MASK_FROM and _nvx is not None:
        buffer = bytearray(masked)
        masker = _nvx.nvx_xormask_new(_ffi.from_buffer("uint8_t[]", key))
        try:
            _nvx.nvx_xormask_process(masker, _ffi.from_buffer("uint8_t[]", buffer), size)
        finally:
            _nvx.nvx_xormask_free(masker)
        return bytes(buffer)
    repeated = (key * ((size >> 2) + 1))[:size]
    return (int.from_bytes(masked, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
        size, "little"
    )


def read_text_frame(data: bytes, start: int, limit: int) -> tuple[bytes, int] | None:
    """The unmasked payload of the frame at ``data[start:]`` and the offset just after it, if that
    frame is complete, final, a text frame, masked, without reserved bits, with a minimally
    encoded length of at most ``limit`` (and below 64 KiB), and its payload is valid UTF-8.
    None for anything else, which is Autobahn's to read (and to close the connection for)."""
    available = len(data) - start
    if available < 6 or data[start] != _FINAL_TEXT:
        return None
    second = data[start + 1]
    if not second & _MASKED:
        return None
    size = second & 0x7F
    head = start + 6
    if size >= _LENGTH_16:
        if size != _LENGTH_16 or available < 8:
            return None
        size = (data[start + 2] << 8) | data[start + 3]
        if size < _LENGTH_16:
            return None  # not the shortest encoding: a protocol error Autobahn reports
        head = start + 8
    end = head + size
    if size > limit or end > len(data):
        return None
    payload = unmask(data[head:end], data[head - 4 : head])
    # Strict: CPython's UTF-8 decoder refuses what Autobahn's validator refuses (overlong forms,
    # surrogates, code points above U+10FFFF, truncated sequences); tests/unit/test_fastframes.py
    # compares the two. Invalid text goes to Autobahn, which closes with 1007 as it always did.
    if not payload.isascii():
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return payload, end


def payload_limit(protocol: Any) -> int:
    """The largest text frame payload the fast path takes on this connection: Autobahn's own
    frame and message limits (0 means none), and never a 64-bit length."""
    limit = _LARGEST
    for option in (protocol.maxFramePayloadSize, protocol.maxMessagePayloadSize):
        if 0 < option < limit:
            limit = option
    return limit


def parser_at_rest(protocol: Any) -> bool:
    """Whether a read may start with the fast path: the connection is open, Autobahn's frame
    parser (Autobahn 26.10's ``processData``) is between frames and messages with nothing
    buffered, and none of the Autobahn features the fast path does not replicate is on (compression,
    disabled unmasking, timing and octet/frame logging, auto-ping, ``on("message")`` listeners)."""
    return (
        protocol.state == WebSocketProtocol.STATE_OPEN
        and not protocol.data
        and protocol.current_frame is None
        and not protocol.inside_message
        and not protocol.failedByMe
        and protocol._perMessageCompress is None
        and protocol.applyMask
        and not protocol.trackedTimings
        and not protocol.logOctets
        and not protocol.logFrames
        and protocol.autoPingTimeoutCall is None
        and protocol._listeners is None
    )
