"""``vibews mcp`` driven by the MCP SDK's own stdio client against a real hub, a dashboard
answering. The MCP client (asyncio) runs on a worker thread; the hub and the dashboard on the
test's reactor."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from vibews.testing import RunningServer, free_port

mcp = pytest.importorskip("mcp")

from mcp.client.session import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def text_of(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


async def session_calls(url: str, token: str, calls: list[tuple[str, dict[str, Any]]]) -> Any:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "vibews.cli", "mcp", "--ack-timeout", "2"],
        env={"VIBEWS_URL": url, "VIBEWS_TOKEN": token, "PYTHONPATH": str(ROOT)},
        cwd=str(ROOT),
    )
    with open(os.devnull, "w") as quiet:
        async with stdio_client(params, errlog=quiet) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                results = [await session.call_tool(name, args) for name, args in calls]
                return [t.name for t in tools.tools], results


def in_thread(url: str, token: str, calls: list[tuple[str, dict[str, Any]]]) -> Any:
    return deferToThread(lambda: asyncio.run(session_calls(url, token, calls)))


@pytest_twisted.ensureDeferred
async def test_tools_report_and_ask_a_human(server: RunningServer) -> None:
    dashboard = await server.dashboard()
    url = f"ws://127.0.0.1:{server.port}/"
    calls: list[tuple[str, dict[str, Any]]] = [
        ("report_status", {"state": "working", "detail": "via MCP"}),
        ("update_task", {"task_id": "t-mcp", "status": "running", "progress": 0.25}),
        ("ask_human", {"text": "Merge the PR?", "options": ["yes", "no"], "timeout": 60}),
        ("ask_human", {"text": "Anyone there?", "timeout": 0.3}),
        ("report_status", {"state": ""}),
    ]
    running = in_thread(url, server.agent_token, calls)
    status = await dashboard.next_of("agent_status", timeout=30)
    assert status["payload"] == {"state": "working", "detail": "via MCP"}
    task = await dashboard.next_of("task_update")
    assert task["payload"] == {"task_id": "t-mcp", "status": "running", "progress": 0.25}
    question = await dashboard.next_of("question")
    assert question["payload"] == {"text": "Merge the PR?", "options": ["yes", "no"], "timeout": 60}
    reply = await dashboard.request(
        {"type": "answer", "id": "a1", "payload": {"question_id": question["id"], "text": "yes"}}
    )
    assert reply["type"] == "ack"
    names, results = await running
    assert sorted(names) == ["ask_human", "report_status", "update_task"]
    assert [r.is_error for r in results] == [False, False, False, False, True]
    assert text_of(results[0]).startswith("status stored by the hub (seq ")
    assert text_of(results[2]) == "yes"
    assert "expired" in text_of(results[3])
    assert "invalid_message" in text_of(results[4]) and "payload.state" in text_of(results[4])
    receipt = await dashboard.next_of("receipt")
    assert receipt["payload"]["question_id"] == question["id"]


@pytest_twisted.ensureDeferred
async def test_tools_say_what_is_wrong_with_the_hub(server: RunningServer) -> None:
    """A wrong token and an unreachable hub are tool errors with a clear text, not hangs."""
    url = f"ws://127.0.0.1:{server.port}/"
    _, results = await in_thread(url, "W" * 43, [("report_status", {"state": "x"})])
    assert results[0].is_error and "HTTP 401" in text_of(results[0])
    nowhere = f"ws://127.0.0.1:{free_port()}/"
    _, results = await in_thread(
        nowhere, server.agent_token, [("update_task", {"task_id": "t", "status": "s"})]
    )
    assert results[0].is_error and "did not confirm" in text_of(results[0])
