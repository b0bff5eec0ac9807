"""No secret ever reaches the log: not from a handshake, a refusal, a query string or an access log."""

from __future__ import annotations

import pytest_twisted

from vibews.testing import RunningServer, connect, handshake_status, raw_exchange


@pytest_twisted.ensureDeferred
async def test_tokens_in_every_source_stay_out_of_the_log(
    server: RunningServer, captured_log: list[str]
) -> None:
    """Valid and invalid secrets sent in the header, the subprotocol and the query string, accepted
    or refused, over WebSocket and plain HTTP, appear in no log event."""
    wrong = "W" * 43
    for via in ("header", "subprotocol", "query"):
        client = await connect(server.port, server.agent_token, via=via)
        await client.next_message()
        client.disconnect()
        await client.wait_closed()
    for headers, path in (
        ({"Authorization": f"Bearer {wrong}"}, "/"),
        ({"Sec-WebSocket-Protocol": f"vibews.v1, vibews.token.{wrong}"}, "/"),
        ({}, f"/?token={wrong}"),
        ({"Origin": "http://evil.example"}, f"/?token={server.agent_token}"),
    ):
        assert await handshake_status(server.port, path=path, headers=headers) in (401, 403)
    await raw_exchange(
        server.port,
        f"GET /healthz?token={server.agent_token} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
    )
    text = "\n".join(captured_log)
    assert "healthz" in text, "the access log was not captured"
    for secret in (server.agent_token, wrong):
        assert secret not in text
