"""The tokens file is watched: edits take effect without a signal, revoked connections close."""

from __future__ import annotations

import os

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from vibews.testing import RunningServer, connect, handshake_status
from vibews.tokens import add_token


async def _eventually_status(server: RunningServer, secret: str, wanted: int) -> None:
    """Poll the handshake until it answers ``wanted`` (deadline 15 s; the contract says 5 s)."""
    auth = {"Authorization": f"Bearer {secret}"}
    for _ in range(150):
        if await handshake_status(server.port, headers=auth) == wanted:
            return
        await deferLater(reactor, 0.1, lambda: None)
    raise AssertionError(f"status never became {wanted}")


@pytest_twisted.ensureDeferred
async def test_added_token_works_without_a_signal(server: RunningServer) -> None:
    """A token appended to the file (as 'vibews token add' does) is accepted without SIGHUP."""
    secret = add_token(server.data / "tokens", "newcomer", "dashboard")
    await _eventually_status(server, secret, 101)
    client = await connect(server.port, secret)
    welcome = await client.next_message()
    assert welcome["payload"]["name"] == "newcomer"


@pytest_twisted.ensureDeferred
async def test_atomic_rename_that_drops_a_token_closes_its_connections(
    server: RunningServer,
) -> None:
    """Replacing the file by an atomic rename without a token closes that token's connections with
    1008; a connection whose token stays is untouched."""
    revoked = server.add_token("leaving", "agent")
    leaving = await server.agent(revoked)
    staying = await server.agent()
    tokens = server.data / "tokens"
    kept = [line for line in tokens.read_text().splitlines() if not line.startswith("leaving")]
    replacement = tokens.with_name("tokens.new")
    replacement.write_text("\n".join(kept) + "\n")
    os.replace(replacement, tokens)
    code, _ = await leaving.wait_closed(timeout=15)
    assert code == 1008
    reply = await staying.request({"type": "agent_status", "id": "s", "payload": {"state": "s"}})
    assert reply["type"] == "ack"


@pytest_twisted.ensureDeferred
async def test_token_moved_to_another_role_closes_the_connection(server: RunningServer) -> None:
    """A secret that now maps to another name or role closes its connections with 1008."""
    tokens = server.data / "tokens"
    agent = await server.agent()
    text = tokens.read_text().replace("agent agent sha256:", "agent-renamed agent sha256:")
    tokens.write_text(text)
    code, _ = await agent.wait_closed(timeout=15)
    assert code == 1008
