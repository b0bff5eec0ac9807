"""Messages that arrive after the server sent its close are not taken.

Contract (protocol-v1.md, section 2): "A client that sends more than a set number of refused
messages in a short time is closed with code 1008", and "A refused message is neither stored nor
relayed". Before the fix, Autobahn went on handing the closing connection's frames to the hub: a
flood closed with 1008 kept being stored (900 of 1000 messages in a burst), and those messages could
never be acked (no data frames after a close). Found by the hostile suite
(test_faster_than_the_rate_limit); kept as a regression test.
"""

from __future__ import annotations

from pathlib import Path

import pytest_twisted

from vibews.rawws import TEXT, frame, open_raw
from vibews.testing import assert_still_serving, start_server


@pytest_twisted.ensureDeferred
async def test_nothing_is_stored_after_a_policy_close(tmp_path: Path) -> None:
    """Five garbage frames close with 1008 (--max-refused 4); the good messages sent right after
    them, in the same burst, are not stored."""
    server = await start_server(tmp_path / "data", max_refused=4)
    try:
        raw = await open_raw(server.port, server.agent_token)
        burst = [b"garbage"] * 5 + [
            b'{"type":"agent_status","id":"late%d","payload":{"state":"s"}}' % i for i in range(100)
        ]
        raw.send(b"".join(frame(TEXT, payload) for payload in burst))
        assert await raw.wait_lost() == 1008
        await server.settled()  # a commit still in flight would be missed by the read
        stored = server.service.store.read(0, None, 1000)
        assert [m.seq for m in stored if m.type == "agent_status"] == []
        await assert_still_serving(server)
    finally:
        await server.stop()
