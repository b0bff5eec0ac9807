"""BlockingClient and AsyncClient, as real programs (docs/examples) against a real hub."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue

from vibews.testing import QueueClientProtocol, start_server

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
ROOT = EXAMPLES.parents[1]


def run_example(name: str, port: int, token: str, **env: str) -> Deferred[Any]:
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "VIBEWS_URL": f"ws://127.0.0.1:{port}/",
        "VIBEWS_TOKEN": token,
        **env,
    }
    running: Deferred[Any] = getProcessOutputAndValue(
        sys.executable, [str(EXAMPLES / name)], env=environment
    )
    return running


async def answer(dashboard: QueueClientProtocol, question: dict[str, Any], **payload: Any) -> None:
    reply = await dashboard.request(
        {
            "type": "answer",
            "id": "a-" + question["id"],
            "payload": {"question_id": question["id"], **payload},
        }
    )
    assert reply["type"] == "ack", reply


@pytest_twisted.ensureDeferred
async def test_blocking_client_keeps_its_connection_while_the_program_blocks(
    tmp_path: Path,
) -> None:
    """The agent's main thread blocks for longer than ping interval + timeout (1 s + 1 s); its
    connection stays up (one connection in all) and its question is answered."""
    server = await start_server(tmp_path / "data", ping_interval=1.0, ping_timeout=1.0)
    try:
        dashboard = await server.dashboard()
        running = run_example(
            "agent_blocking.py", server.port, server.agent_token, AGENT_BUSY_SECONDS="3"
        )
        status = await dashboard.next_of("agent_status", timeout=30)
        assert status["payload"] == {"state": "working", "detail": "preparing the release"}
        task = await dashboard.next_of("task_update", timeout=30)
        assert task["payload"]["progress"] == 0.9
        question = await dashboard.next_of("question", timeout=30)
        await answer(dashboard, question, text="yes")
        out, err, code = await running
        assert code == 0, err
        assert out.decode().splitlines() == [
            "answer: yes (accept) from dashboard",
            "connections: 1",
        ]
        receipt = await dashboard.next_of("receipt")
        assert receipt["payload"]["question_id"] == question["id"]
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_async_client_two_questions_at_once(tmp_path: Path) -> None:
    server = await start_server(tmp_path / "data")
    try:
        dashboard = await server.dashboard()
        running = run_example("agent_asyncio.py", server.port, server.agent_token)
        questions = [await dashboard.next_of("question", timeout=30) for _ in range(2)]
        by_text = {q["payload"]["text"]: q for q in questions}
        # answered in the other order than asked
        await answer(dashboard, by_text["How many replicas?"], value={"replicas": 4})
        await answer(dashboard, by_text["Deploy now?"], text="no")
        out, err, code = await running
        assert code == 0, err
        assert out.decode().splitlines() == ["deploy: no", "replicas: 4"]
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_client_on_twisteds_asyncio_reactor(tmp_path: Path) -> None:
    """docs/client.rst: a program running Twisted's asyncio reactor uses ``Client`` directly and
    awaits its Deferreds with ``asFuture``."""
    server = await start_server(tmp_path / "data")
    try:
        dashboard = await server.dashboard()
        running = run_example("agent_asyncio_reactor.py", server.port, server.agent_token)
        status = await dashboard.next_of("agent_status", timeout=30)
        assert status["payload"] == {"state": "waiting", "detail": "one decision needed"}
        question = await dashboard.next_of("question", timeout=30)
        await answer(dashboard, question, text="yes")
        out, err, code = await running
        assert code == 0, err
        assert out.decode().splitlines() == ["ship: yes"]
    finally:
        await server.stop()
