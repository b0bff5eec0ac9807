"""The opening handshake over real sockets: token sources, 401/403/503/431, subprotocols, timeouts."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted

from vibews.testing import (
    Closed,
    RunningServer,
    connect,
    handshake_status,
    raw_exchange,
    start_server,
    status_of,
    upgrade_request,
)


@pytest.mark.parametrize("via", ["header", "subprotocol", "query"])
@pytest.mark.parametrize("path", ["/", "/ws"])
@pytest_twisted.ensureDeferred
async def test_each_token_source_is_accepted(server: RunningServer, via: str, path: str) -> None:
    """A token in the Authorization header, a vibews.token. subprotocol or ?token= opens the
    WebSocket at / and /ws; vibews.v1 is selected, never the token subprotocol."""
    client = await connect(server.port, server.agent_token, via=via, path=path)
    welcome = await client.next_message()
    assert welcome["type"] == "welcome" and welcome["payload"]["name"] == "agent"
    assert client.selected_protocol == "vibews.v1"


@pytest_twisted.ensureDeferred
async def test_no_subprotocol_selected_when_not_offered(server: RunningServer) -> None:
    """A client that offers no subprotocol still connects; none is selected."""
    client = await connect(server.port, server.agent_token, protocols=[])
    assert (await client.next_message())["type"] == "welcome"
    assert client.selected_protocol is None


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-known-token-at-all-xyz"},
        {"Authorization": "Bearer short"},
        {"Sec-WebSocket-Protocol": "vibews.v1, vibews.token.AAAAAAAAAAAAAAAAAAAAAAAA"},
    ],
    ids=["missing", "unknown", "malformed", "unknown-subprotocol"],
)
@pytest_twisted.ensureDeferred
async def test_missing_or_unknown_token_gets_401(
    server: RunningServer, headers: dict[str, str]
) -> None:
    """No token, an unknown one or a malformed one: HTTP 401 and no WebSocket."""
    assert await handshake_status(server.port, headers=headers) == 401


@pytest_twisted.ensureDeferred
async def test_invalid_header_wins_over_valid_query_token(server: RunningServer) -> None:
    """The first source present decides alone: a bad Bearer header is refused even with a valid
    ?token=; a non-Bearer Authorization header is ignored."""
    bad_header = {"Authorization": "Bearer wrong-wrong-wrong-wrong"}
    path = f"/?token={server.agent_token}"
    assert await handshake_status(server.port, path=path, headers=bad_header) == 401
    basic = {"Authorization": "Basic dXNlcjpwYXNz"}
    assert await handshake_status(server.port, path=path, headers=basic) == 101


@pytest_twisted.ensureDeferred
async def test_foreign_origin_gets_403_before_the_token_is_looked_at(
    server: RunningServer,
) -> None:
    """A browser Origin other than the server's own is refused with 403, even with a valid token;
    the same origin is allowed; Origin null is foreign."""
    auth = {"Authorization": f"Bearer {server.agent_token}"}
    for origin in ("http://evil.example", "null", f"https://127.0.0.1:{server.port}"):
        status = await handshake_status(server.port, headers={**auth, "Origin": origin})
        assert status == 403, origin
    no_token_foreign = await handshake_status(
        server.port, headers={"Origin": "http://evil.example"}
    )
    assert no_token_foreign == 403
    own = {**auth, "Origin": f"http://127.0.0.1:{server.port}"}
    assert await handshake_status(server.port, headers=own) == 101


@pytest_twisted.ensureDeferred
async def test_allow_origin_admits_a_listed_origin(tmp_path: Path) -> None:
    """--allow-origin adds an origin besides the server's own."""
    server = await start_server(tmp_path / "data", allow_origins=("https://app.example",))
    try:
        auth = {"Authorization": f"Bearer {server.agent_token}"}
        listed = {**auth, "Origin": "https://app.example"}
        assert await handshake_status(server.port, headers=listed) == 101
        other = {**auth, "Origin": "https://other.example"}
        assert await handshake_status(server.port, headers=other) == 403
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_max_connections_gives_503(tmp_path: Path) -> None:
    """Past --max-connections, a new upgrade is answered 503; a slot frees when one closes."""
    server = await start_server(tmp_path / "data", max_connections=2)
    try:
        first = await server.agent()
        await server.dashboard()
        auth = {"Authorization": f"Bearer {server.agent_token}"}
        assert await handshake_status(server.port, headers=auth) == 503
        first.disconnect()
        await first.wait_closed()
        assert await handshake_status(server.port, headers=auth) == 101
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_oversized_request_head_gets_431(server: RunningServer) -> None:
    """More than 16 KiB of request head, or more than 100 header lines: 431 at once."""
    big = {"X-Big": "a" * (16 * 1024)}
    response = await raw_exchange(server.port, upgrade_request(headers=big))
    assert response.startswith(b"HTTP/1.1 431 ")
    many = {f"X-H{i}": "v" for i in range(101)}
    response = await raw_exchange(server.port, upgrade_request(headers=many))
    assert response.startswith(b"HTTP/1.1 431 ")


@pytest_twisted.ensureDeferred
async def test_header_limits_are_inclusive(server: RunningServer) -> None:
    """Exactly 100 header lines is allowed (the request line does not count)."""
    auth = {"Authorization": f"Bearer {server.agent_token}"}
    # upgrade_request writes 5 headers of its own besides these.
    filler = {f"X-H{i}": "v" for i in range(100 - 5 - 1)}
    status = await handshake_status(server.port, headers={**auth, **filler})
    assert status == 101


@pytest_twisted.ensureDeferred
async def test_unfinished_handshake_is_dropped_after_the_timeout(tmp_path: Path) -> None:
    """A client that starts a request head and never finishes it is dropped after
    --handshake-timeout, while a normal client keeps being served."""
    server = await start_server(tmp_path / "data", handshake_timeout=0.5)
    try:
        partial = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        response = await raw_exchange(server.port, partial, timeout=10)
        assert response == b""  # dropped without an answer, well before the 10 s deadline
        agent = await server.agent()
        assert agent.welcome["type"] == "welcome"
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_refused_client_never_gets_a_websocket(server: RunningServer) -> None:
    """An Autobahn client with a wrong token fails to open."""
    with pytest.raises(Closed):
        await connect(server.port, "x" * 43)


@pytest_twisted.ensureDeferred
async def test_plain_http_routes(server: RunningServer) -> None:
    """GET /healthz answers 200 with the store status; GET / serves a page; unknown paths 404."""
    health = await raw_exchange(
        server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert health.startswith(b"HTTP/1.1 200 ")
    assert health.endswith(b'{"status": "ok", "store": "ok"}')
    page = await raw_exchange(
        server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert page.startswith(b"HTTP/1.1 200 ") and b"vibews" in page
    missing = await raw_exchange(
        server.port, b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert missing.startswith(b"HTTP/1.1 404 ")


@pytest.mark.parametrize(
    "origin_lines",
    [["Origin: http://"], ["Origin: http://127.0.0.1:99999"], ["Origin: a", "Origin: b"]],
    ids=["no-host", "bad-port", "repeated"],
)
@pytest_twisted.ensureDeferred
async def test_malformed_or_repeated_origin_is_foreign(
    server: RunningServer, origin_lines: list[str]
) -> None:
    """An Origin that is not a plain origin, or is sent twice, is refused with 403 like any foreign
    one (not Autobahn's 400), before the token is looked at."""
    request = upgrade_request(headers={"Authorization": f"Bearer {server.agent_token}"})
    request = request[:-2] + "\r\n".join(origin_lines).encode() + b"\r\n\r\n"
    assert await status_of(server.port, request) == 403


@pytest_twisted.ensureDeferred
async def test_only_the_named_paths_answer(server: RunningServer) -> None:
    """The upgrade is accepted at / and /ws only; /ws/x and /healthz/x are 404."""
    auth = {"Authorization": f"Bearer {server.agent_token}"}
    assert await handshake_status(server.port, path="/ws/x", headers=auth) == 404
    assert await handshake_status(server.port, path="/nope", headers=auth) == 404
    assert await status_of(server.port, b"GET /healthz/x HTTP/1.1\r\nHost: x\r\n\r\n") == 404
    assert await status_of(server.port, b"GET /metrics/x HTTP/1.1\r\nHost: x\r\n\r\n") == 404
