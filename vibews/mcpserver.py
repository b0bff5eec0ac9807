"""``vibews mcp``: a Model Context Protocol server on stdio, so a coding agent can ask a person,
report its status and update tasks through the hub with one entry in its MCP configuration.

The MCP SDK runs asyncio on the main thread; the hub connection is an :class:`AsyncClient`, whose
Twisted reactor runs on a thread of its own, so a long ``ask_human`` never stalls either side.
The connection is made in the background and kept up (reconnecting with backoff), so the agent
can start before the hub does; a wrong token ends it, and every tool then says so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from vibews import __version__
from vibews.client import (
    AsyncClient,
    AuthenticationFailed,
    ClientStopped,
    QuestionClosed,
    Refused,
    VibewsError,
)

INSTRUCTIONS = (
    "vibews connects you to the people who watch your work. Use ask_human when you need a "
    "decision or information only a person can give (it waits for the answer), report_status to "
    "say what you are doing, and update_task to report progress on a task."
)


def build_server(hub: AsyncClient, ack_timeout: float) -> MCPServer:
    server: MCPServer = MCPServer(name="vibews", version=__version__, instructions=INSTRUCTIONS)

    async def stored(call: Any, what: str) -> str:
        try:
            ack = await asyncio.wait_for(asyncio.shield(call), ack_timeout)
        except TimeoutError:
            raise ToolError(
                f"the hub at {hub.client.address.url} did not confirm the {what} within "
                f"{ack_timeout:g} s; it is queued and will be sent when the hub is reachable"
            ) from None
        except VibewsError as error:
            raise ToolError(str(error)) from None
        return f"{what} stored by the hub (seq {ack.seq})"

    @server.tool()
    async def ask_human(
        text: str,
        options: list[str] | None = None,
        schema: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> str:
        """Ask the people watching you a question and wait for their answer.

        text: the question. options: choices to offer. schema: a JSON Schema object of flat
        properties (string, number, integer, boolean) for a structured answer. timeout: seconds
        after which the question expires unanswered. Returns the answer's text (or its value as
        JSON); says so when the person declined or cancelled, or nobody answered in time.
        """
        try:
            answer = await hub.ask(text, options, schema, timeout)
        except QuestionClosed as closed:
            return f"No answer: {closed}."
        except (Refused, AuthenticationFailed, ClientStopped) as error:
            raise ToolError(str(error)) from None
        who = answer.by or "the person"
        if answer.action == "decline":
            return f"{who} declined." + (f" Reason: {answer.text}" if answer.text else "")
        if answer.action == "cancel":
            return f"{who} dismissed the question without answering."
        if answer.value is not None:
            return json.dumps(answer.value, ensure_ascii=False)
        return answer.text or ""

    @server.tool()
    async def report_status(state: str, detail: str | None = None) -> str:
        """Tell the people watching what you are doing now: state is a short word (working,
        blocked, waiting, done); detail an optional sentence."""
        return await stored(asyncio.ensure_future(hub.status(state, detail)), "status")

    @server.tool()
    async def update_task(task_id: str, status: str, progress: float | None = None) -> str:
        """Report a task's status (started, running, done, failed ...) and optional progress
        from 0 to 1."""
        call = asyncio.ensure_future(hub.task(task_id, status, progress))
        return await stored(call, "task update")

    return server


async def serve(args: argparse.Namespace) -> None:
    hub = AsyncClient(args.url, args.token, cafile=args.cafile)
    connecting = asyncio.ensure_future(hub.connect(fail_fast=False))
    connecting.add_done_callback(_report_connection)
    try:
        await build_server(hub, args.ack_timeout).run_stdio_async()
    finally:
        connecting.cancel()
        await hub.close()


def _report_connection(future: asyncio.Future[Any]) -> None:
    # stderr is the MCP client's log of this server; stdout carries the protocol.
    if future.cancelled():
        return
    error = future.exception()
    if error is not None:
        sys.stderr.write(f"vibews mcp: {error}\n")


def main(args: argparse.Namespace) -> int:
    from vibews.cli_hub import UsageProblem

    if not args.token:
        raise UsageProblem("no token: pass --token or set VIBEWS_TOKEN (an agent token)")
    try:
        asyncio.run(serve(args))
    except ValueError as error:
        raise UsageProblem(str(error)) from None
    return 0
