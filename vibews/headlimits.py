"""The opening-handshake limits on a stream of HTTP/1.1 requests (pure: no Twisted).

A head ends where Twisted's parser ends it, at the first CRLF CRLF (a bare LF LF does not end it),
and a ``Content-Length`` body follows it; so pipelined requests are each checked, not just the first
one of a read. A body in chunked transfer encoding stops the scan (Twisted's own limits still
apply after it): no request vibews serves has a body.
"""

from __future__ import annotations

import re

import attrs

MAX_HEADER_BYTES = 16 * 1024  # request line, headers and the final blank line
MAX_HEADER_LINES = 100  # header lines, not counting the request line

_END = b"\r\n\r\n"
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*(\d{1,18})[ \t]*\r\n", re.IGNORECASE)
_TRANSFER_ENCODING = re.compile(rb"\r\ntransfer-encoding[ \t]*:", re.IGNORECASE)


@attrs.frozen
class HeadTooLarge(Exception):
    size: int
    lines: int


class RequestHeadScanner:
    """Checks every request head of a connection against the limits as its bytes arrive."""

    def __init__(
        self, max_bytes: int = MAX_HEADER_BYTES, max_lines: int = MAX_HEADER_LINES
    ) -> None:
        self._max_bytes = max_bytes
        self._max_lines = max_lines
        self._head = b""
        self._body_left = 0
        self._blind = False

    @property
    def partial(self) -> bool:
        """Some bytes of a head that is not complete yet have arrived."""
        return bool(self._head)

    def feed(self, data: bytes) -> int:
        """Scan more bytes; returns how many heads they completed. Raises :class:`HeadTooLarge`."""
        completed = 0
        position = 0
        while position < len(data) and not self._blind:
            if self._body_left:
                taken = min(self._body_left, len(data) - position)
                self._body_left -= taken
                position += taken
                continue
            already = len(self._head)
            self._head += data[position:]
            end = self._head.find(_END)
            if end < 0:
                self._check(self._head, complete=False)
                return completed
            head = self._head[: end + len(_END)]
            self._check(head, complete=True)
            position += len(head) - already
            self._head = b""
            completed += 1
            self._after(head)
        return completed

    def _check(self, head: bytes, complete: bool) -> None:
        # Header lines: every line break but the request line's and (once complete) the blank line's.
        lines = head.count(b"\n") - (2 if complete else 1)
        if len(head) > self._max_bytes or lines > self._max_lines:
            raise HeadTooLarge(size=len(head), lines=max(lines, 0))

    def _after(self, head: bytes) -> None:
        if _TRANSFER_ENCODING.search(head):
            self._blind = True
            return
        length = _CONTENT_LENGTH.search(head)
        self._body_left = int(length.group(1)) if length else 0
