"""The request-head scanner: every head of a connection against 16 KiB and 100 header lines."""

from __future__ import annotations

import pytest

from vibews.headlimits import HeadTooLarge, RequestHeadScanner


def _head(lines: int, pad: int = 0) -> bytes:
    headers = "".join(f"X-{i}: v\r\n" for i in range(lines))
    return f"GET / HTTP/1.1\r\n{headers}X-Pad: {'p' * pad}\r\n\r\n".encode()


def test_exactly_100_header_lines_and_16_kib_pass() -> None:
    """The limits are inclusive: 100 header lines (the request line excluded) and 16 KiB (the
    final blank line included) are fine."""
    assert RequestHeadScanner().feed(_head(99)) == 1
    base = len(_head(0))
    assert RequestHeadScanner().feed(_head(0, pad=16 * 1024 - base)) == 1


def test_one_line_or_byte_more_is_too_large() -> None:
    """101 header lines, or 16 KiB + 1 byte, raise HeadTooLarge."""
    with pytest.raises(HeadTooLarge):
        RequestHeadScanner().feed(_head(100))
    base = len(_head(0))
    with pytest.raises(HeadTooLarge):
        RequestHeadScanner().feed(_head(0, pad=16 * 1024 - base + 1))


def test_limits_hit_before_the_head_ends() -> None:
    """A head that never ends is refused as soon as it is past a limit, fed a byte at a time."""
    scanner = RequestHeadScanner()
    with pytest.raises(HeadTooLarge):
        for byte in b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200:
            scanner.feed(bytes([byte]))


def test_pipelined_heads_are_each_checked() -> None:
    """A second head in the same read is checked too."""
    scanner = RequestHeadScanner()
    assert scanner.feed(_head(1) + _head(2)) == 2
    with pytest.raises(HeadTooLarge):
        RequestHeadScanner().feed(_head(1) + _head(150))


def test_a_content_length_body_is_skipped() -> None:
    """A body (even one full of line breaks) is not taken for the next head."""
    body = b"\r\n" * 500
    request = b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    scanner = RequestHeadScanner()
    assert scanner.feed(request + _head(1)) == 2
    assert not scanner.partial


def test_bare_line_feeds_do_not_end_a_head() -> None:
    """Twisted ends a head only at CRLF CRLF, so a bare LF LF leaves it partial (its deadline runs)."""
    scanner = RequestHeadScanner()
    assert scanner.feed(b"GET / HTTP/1.1\nHost: x\n\n") == 0
    assert scanner.partial
