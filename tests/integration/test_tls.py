"""``--endpoint ssl:…`` serves wss:// on the same code path; the Origin check knows it is https."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted

from vibews.testing import Closed, connect, self_signed_certificate, start_server


@pytest_twisted.ensureDeferred
async def test_wss_with_certificate_verification(tmp_path: Path) -> None:
    """A client that verifies the server certificate connects over wss://, authenticates and gets
    acks; the page's own https origin is allowed, the http one is foreign."""
    tls = self_signed_certificate(tmp_path, ["localhost", "127.0.0.1"])
    key, cert, pem = tls.key, tls.certificate, tls.pem
    endpoint = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    server = await start_server(tmp_path / "data", endpoint=endpoint)
    try:
        origin = {"Origin": f"https://localhost:{server.port}"}
        agent = await connect(
            server.port, server.agent_token, tls_ca=pem, host="localhost", headers=origin
        )
        assert (await agent.next_message())["type"] == "welcome"
        reply = await agent.request({"type": "agent_status", "id": "t", "payload": {"state": "s"}})
        assert reply["type"] == "ack"
        with pytest.raises(Closed):
            await connect(
                server.port,
                server.agent_token,
                tls_ca=pem,
                host="localhost",
                headers={"Origin": f"http://localhost:{server.port}"},
            )
    finally:
        await server.stop()
