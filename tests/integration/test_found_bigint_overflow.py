"""A JSON integer too large for a float (strict JSON, and ``> 0``) in a question's ``timeout`` or
schema is answered like any other value (acked, or ``invalid_message`` naming the field), never
``internal_error``: it once raised OverflowError in the deadline and schema checks. Found by the
hostile-input review; kept as a regression test."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from vibews.testing import RunningServer

BIG = "1" + "0" * 400

CASES = {
    "timeout": '{"type":"question","id":"big-timeout","payload":{"text":"?","timeout":BIG}}',
    "schema-minimum": (
        '{"type":"question","id":"big-minimum","payload":{"text":"?","schema":{"type":"object",'
        '"properties":{"n":{"type":"number","minimum":BIG}}}}}'
    ),
    "schema-enum": (
        '{"type":"question","id":"big-enum","payload":{"text":"?","schema":{"type":"object",'
        '"properties":{"n":{"type":"number","enum":[BIG]}}}}}'
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest_twisted.ensureDeferred
async def test_huge_integer_is_not_an_internal_error(server: RunningServer, case: str) -> None:
    agent = await server.agent()
    agent.send_raw(CASES[case].replace("BIG", BIG).encode())
    reply: dict[str, Any] = await agent.next_message()
    assert reply["type"] in ("ack", "error"), reply
    if reply["type"] == "error":
        assert reply["payload"]["code"] == "invalid_message", reply
        # The message had a valid id, so the error names it.
        assert reply["id"] is not None, reply
    agent.disconnect()
