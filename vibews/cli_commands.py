"""The argument parsers of the hub commands (status, task, ask, send, listen) and of check and mcp;
what each does lives in :mod:`vibews.cli_hub`, :mod:`vibews.check` and :mod:`vibews.mcpserver`."""

from __future__ import annotations

import argparse
from typing import Any

from vibews import cli_hub, exitcodes


def _hub_command(parser: argparse.ArgumentParser, command: cli_hub.Command) -> None:
    """Finish the parser of a command that talks to the hub: every such command takes the same
    connection options (last, in their own help group) and runs through :func:`cli_hub.run`,
    which connects, runs the reactor and turns failures into exit codes."""
    cli_hub.hub_options(parser)
    parser.set_defaults(handler=lambda args: cli_hub.run(command, args))


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def add_hub_commands(commands: argparse._SubParsersAction[Any]) -> None:
    status = commands.add_parser(
        "status",
        help="report this agent's state (agent_status)",
        description="Tell the dashboards what this agent is doing now. Exits once the hub stored it.",
    )
    status.add_argument("state", metavar="STATE", help="a short word: working, blocked, idle ...")
    status.add_argument("--detail", help="a sentence with more detail")
    status.add_argument("--extra", metavar="JSON", help="more payload fields, as a JSON object")
    _hub_command(status, cli_hub.status)

    task = commands.add_parser(
        "task",
        help="report a task's status and progress (task_update)",
        description="Report a task's status (and progress from 0 to 1). Exits once stored.",
    )
    task.add_argument("task_id", metavar="TASK_ID", help="the task's id (global to the hub)")
    task.add_argument("status", metavar="STATUS", help="e.g. started, running, done, failed")
    task.add_argument("--progress", type=_fraction, help="how far along, from 0 to 1")
    _hub_command(task, cli_hub.task)

    ask = commands.add_parser(
        "ask",
        help="ask the people watching, wait, print the answer",
        description=(
            "Ask a question on every dashboard and wait for the answer, across reconnects and hub "
            "restarts. An accepted answer is printed on stdout (its text, or its value as JSON "
            "with --schema) and the exit status is 0; a decline, a cancel, an expiry and errors "
            "each have their own exit status (below). Interrupted, the question stays open: run "
            "the same command with --id ID to wait for it again."
        ),
        epilog=exitcodes.epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ask.add_argument("text", metavar="TEXT", help="the question")
    ask.add_argument(
        "--option",
        action="append",
        metavar="CHOICE",
        help="a choice to offer (repeat for each: --option yes --option no)",
    )
    ask.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="the hub closes the question as expired after this long (exit status 5)",
    )
    ask.add_argument("--urgency", choices=("low", "normal", "high"), help="how to show it")
    ask.add_argument(
        "--schema",
        metavar="JSON",
        help="a JSON Schema (flat object) for a structured answer, or @FILE; the answer's value "
        "is printed as JSON",
    )
    ask.add_argument(
        "--id",
        metavar="ID",
        help="the question's id (default: a new UUID); asking again with the same id waits for "
        "the same question instead of asking twice",
    )
    ask.add_argument(
        "--json", action="store_true", help="print the whole answer message as JSON instead"
    )
    _hub_command(ask, cli_hub.ask)

    send = commands.add_parser(
        "send",
        help="send any message; print its ack",
        description=(
            "Send one message of TYPE with the JSON object PAYLOAD (or @FILE) and print its ack "
            '({"id", "seq", "duplicate"}) as JSON once the hub stored it.'
        ),
    )
    send.add_argument(
        "type", metavar="TYPE", help="agent_status, task_update, question, answer ..."
    )
    send.add_argument("payload", metavar="PAYLOAD", help="the payload, a JSON object, or @FILE")
    send.add_argument("--id", help="the message id (default: a new UUID); a repeat is a no-op")
    _hub_command(send, cli_hub.send)

    listen = commands.add_parser(
        "listen",
        help="print every message on the hub as one JSON line (dashboard token)",
        description=(
            "Connect with a dashboard token and print every message the hub sends, one JSON "
            "object per line: welcome (with its snapshot), then every stored message in seq "
            "order. Reconnects and resumes, so nothing is missed or printed twice."
        ),
    )
    listen.add_argument(
        "--count", type=_count, metavar="N", help="exit after N lines (welcome included)"
    )
    _hub_command(listen, cli_hub.listen)


def add_admin_commands(commands: argparse._SubParsersAction[Any]) -> None:
    check = commands.add_parser(
        "check",
        help="validate server options and the tokens file without starting",
        description=(
            "Check the options you would give 'twistd vibews' (the same options, parsed by the "
            "same code) and the tokens file they name, without binding a port or creating "
            "anything. Exit status 0 when the server would start, 2 when not. "
            "'vibews check -- --help' lists the options."
        ),
    )
    check.add_argument(
        "options", nargs="*", metavar="OPTION", help="the options of 'twistd vibews'"
    )
    check.set_defaults(handler=_check)

    mcp = commands.add_parser(
        "mcp",
        help="run an MCP server on stdio for coding agents",
        description=(
            "Serve the Model Context Protocol on stdin/stdout, connected to the hub as an agent: "
            "tools ask_human, report_status and update_task. Put it in your coding agent's MCP "
            'configuration: {"command": "vibews", "args": ["mcp"], "env": {"VIBEWS_URL": ..., '
            '"VIBEWS_TOKEN": ...}}. Needs the mcp extra: pip install "vibews[mcp]".'
        ),
    )
    mcp.add_argument(
        "--ack-timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="how long report_status and update_task wait for the hub (default 10)",
    )
    cli_hub.hub_options(mcp)
    mcp.set_defaults(handler=_mcp)


def _check(args: argparse.Namespace) -> int:
    from vibews.check import main

    options = list(args.options)
    if options[:1] == ["--"]:
        options = options[1:]
    return main(options)


def _mcp(args: argparse.Namespace) -> int:
    try:
        from vibews.mcpserver import main
    except ImportError as error:
        raise cli_hub.UsageProblem(
            f"'vibews mcp' needs the MCP SDK ({error.name} is missing): pip install \"vibews[mcp]\""
        ) from None
    return main(args)
