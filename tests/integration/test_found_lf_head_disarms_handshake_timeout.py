"""A request head that ends in bare line feeds does not switch off the handshake timeout.

twisted.web ends a head only at CRLF CRLF; the channel once took a bare ``\\n\\n`` for the end, disarmed
its deadline, and left the connection open for Twisted's 12-hour idle timeout (two bytes per socket
were enough for slowloris). Found by the hostile-input review; kept as a regression test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted

from vibews.testing import raw_exchange, start_server


@pytest.mark.parametrize(
    "head",
    [b"\n\n", b"GET / HTTP/1.1\nHost: 127.0.0.1\n\n", b"GET / HTTP/1.1\r\nHost: x\r\n\n\n"],
)
@pytest_twisted.ensureDeferred
async def test_bare_lf_head_is_still_dropped_after_the_handshake_timeout(
    tmp_path: Path, head: bytes
) -> None:
    """Such a client is dropped without an answer at --handshake-timeout (1 s here; the test's
    own deadline is 30 s)."""
    server = await start_server(tmp_path / "data", handshake_timeout=1.0)
    try:
        assert await raw_exchange(server.port, head, timeout=30) == b""
    finally:
        await server.stop()
