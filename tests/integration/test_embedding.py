"""vibews mounted in a host's own twisted.web Site: ``docs/examples/embedded_app.py`` as a real
application on 127.0.0.1, with real HTTP and WebSocket clients.

The example is imported by path, so what the documentation shows is what is tested.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError

from vibews.config import Config
from vibews.service import build_service
from vibews.testing import connect, handshake_status, initial_secrets, raw_exchange

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "embedded_app.py"
ALLOWED_ORIGIN = "https://app.example"
DEADLINE = 10.0


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vibews_docs_embedded_app", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


embedded_app = _load_example()


@attrs.define
class Host:
    """The example application, started, with what a test needs to talk to it."""

    app: Any
    port: int
    agent_token: str
    dashboard_token: str
    timers_before: set[Any]

    async def stop(self) -> None:
        result = self.app.service.stopService()
        if isinstance(result, Deferred):
            await result.addTimeout(DEADLINE, _reactor())


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest_twisted.async_yield_fixture
async def host(tmp_path: Path) -> AsyncIterator[Host]:
    reactor = _reactor()
    timers_before = set(reactor.getDelayedCalls())
    data = tmp_path / "data"
    app = embedded_app.make_application(
        reactor, data, "tcp:0:interface=127.0.0.1", allow_origins=(ALLOWED_ORIGIN,)
    )
    app.service.privilegedStartService()
    app.service.startService()
    port = await app.listening.addTimeout(DEADLINE, reactor)
    secrets = initial_secrets(data)
    running = Host(app, port.getHost().port, secrets["agent"], secrets["dashboard"], timers_before)
    yield running
    if app.service.running:
        await running.stop()


async def _get(port: int, path: str) -> tuple[int, bytes]:
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    response = await raw_exchange(port, request.encode())
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest_twisted.ensureDeferred
async def test_host_pages_and_vibews_http_share_the_port(host: Host) -> None:
    """The host's own ``/hello`` is served next to vibews' ``/vibews/healthz`` (200, store ok) and
    ``/vibews/metrics``; paths vibews does not serve under the prefix are 404."""
    status, body = await _get(host.port, "/hello")
    assert (status, body) == (200, b"hello from the host application\n")
    status, body = await _get(host.port, "/vibews/healthz")
    assert status == 200
    assert json.loads(body) == {"status": "ok", "store": "ok"}
    status, body = await _get(host.port, "/vibews/metrics")
    assert status == 200 and b"vibews_connections" in body
    status, _ = await _get(host.port, "/vibews/nothing-here")
    assert status == 404


@pytest_twisted.ensureDeferred
async def test_the_mount_point_without_a_slash_redirects_and_drops_the_query(host: Host) -> None:
    """``/vibews`` redirects to ``/vibews/``, without the query string (it may hold a token)."""
    request = f"GET /vibews?token=abc HTTP/1.1\r\nHost: 127.0.0.1:{host.port}\r\nConnection: close\r\n\r\n"
    response = await raw_exchange(host.port, request.encode())
    head = response.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 302 ")
    assert b"\r\nlocation: /vibews/\r\n" in head + b"\r\n"
    assert b"abc" not in head


@pytest_twisted.ensureDeferred
async def test_websocket_upgrade_at_both_paths_under_the_prefix(host: Host) -> None:
    """``/vibews/`` and ``/vibews/ws`` accept the upgrade, with the token in each of its three
    places: the client gets ``welcome``, an ack for what it sends, and a dashboard connected at the
    other path sees it relayed."""
    dashboard = await connect(host.port, host.dashboard_token, path="/vibews/ws")
    welcome = await dashboard.next_message()
    assert welcome["type"] == "welcome" and welcome["payload"]["role"] == "dashboard"
    for number, (path, via) in enumerate(
        [("/vibews/", "header"), ("/vibews/ws", "subprotocol"), ("/vibews/", "query")]
    ):
        agent = await connect(host.port, host.agent_token, path=path, via=via)
        assert agent.selected_protocol == "vibews.v1"
        welcome = await agent.next_message()
        assert welcome["type"] == "welcome" and welcome["payload"]["name"] == "agent"
        message = {"type": "agent_status", "id": f"s{number}", "payload": {"state": path}}
        reply = await agent.request(message)
        assert reply["type"] == "ack" and reply["id"] == f"s{number}"
        relayed = await dashboard.next_of("agent_status")
        assert relayed["seq"] == reply["seq"] and relayed["payload"] == {"state": path}
        agent.sendClose(code=1000)
        await agent.wait_closed()


@pytest_twisted.ensureDeferred
async def test_origin_rule_holds_under_the_prefix(host: Host) -> None:
    """The same-origin check compares ``Origin`` with the request's ``Host``, wherever vibews is
    mounted: the host's own origin and an ``--allow-origin`` are admitted, others get 403 before
    the token is looked at, and a missing token is still 401."""
    auth = {"Authorization": f"Bearer {host.agent_token}"}
    own = f"http://127.0.0.1:{host.port}"
    for path in ("/vibews/", "/vibews/ws"):
        assert await handshake_status(host.port, path, {**auth, "Origin": own}) == 101
        assert await handshake_status(host.port, path, {**auth, "Origin": ALLOWED_ORIGIN}) == 101
        foreign = {**auth, "Origin": "http://evil.example"}
        assert await handshake_status(host.port, path, foreign) == 403
        assert await handshake_status(host.port, path, {"Origin": "http://evil.example"}) == 403
        assert await handshake_status(host.port, path, {"Origin": own}) == 401


@pytest_twisted.ensureDeferred
async def test_host_access_log_shows_no_token(host: Host, captured_log: list[str]) -> None:
    """The example's Site (``vibews.web.make_site``) logs paths without their query string, so a
    ``?token=`` sent to the mounted vibews stays out of the host's access log."""
    client = await connect(host.port, host.agent_token, path="/vibews/ws", via="query")
    await client.next_message()
    client.sendClose(code=1000)
    await client.wait_closed()
    status, _ = await _get(host.port, f"/vibews/healthz?token={host.agent_token}")
    assert status == 200
    text = "\n".join(captured_log)
    assert '"GET /vibews/healthz HTTP/1.1" 200' in text, "the access log was not captured"
    assert host.agent_token not in text


@pytest_twisted.ensureDeferred
async def test_stopping_the_host_closes_websockets_with_1001_and_leaves_no_timers(
    host: Host,
) -> None:
    """Stopping the host's service tree stops vibews with it: open WebSockets are closed with 1001,
    the port is closed, and no timer vibews (or Autobahn for it) started is left pending."""
    agent = await connect(host.port, host.agent_token, path="/vibews/")
    await agent.next_message()
    dashboard = await connect(host.port, host.dashboard_token, path="/vibews/ws")
    await dashboard.next_message()
    await host.stop()
    assert not host.app.vibews.running
    for client in (agent, dashboard):
        code, _ = await client.wait_closed()
        assert code == 1001
    left = [
        call
        for call in _reactor().getDelayedCalls()
        if call.active() and call not in host.timers_before
    ]
    assert left == [], [str(call) for call in left]


@pytest_twisted.ensureDeferred
async def test_service_on_its_own_port_starts_and_stops_with_its_parent(tmp_path: Path) -> None:
    """The other way to embed: ``build_service(config, reactor)`` listening on its own endpoint,
    parented to the host's ``MultiService``. Starting the host starts it; stopping the host closes
    its WebSockets with 1001 and its port."""
    reactor = _reactor()
    host = MultiService()
    config = Config(endpoints=("tcp:0:interface=127.0.0.1",), data=str(tmp_path / "data"))
    vibews = build_service(config, reactor)
    vibews.setServiceParent(host)
    host.privilegedStartService()
    host.startService()
    ports = await vibews.listening_ports().addTimeout(DEADLINE, reactor)
    port = ports[0].getHost().port
    agent = await connect(port, initial_secrets(tmp_path / "data")["agent"])
    assert (await agent.next_message())["type"] == "welcome"
    await host.stopService().addTimeout(DEADLINE, reactor)
    code, _ = await agent.wait_closed()
    assert code == 1001
    with pytest.raises(ConnectionRefusedError):
        await raw_exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
