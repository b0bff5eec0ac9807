"""The ``vibews`` subcommands that talk to a running hub: status, task, ask, send, listen.

Each runs the Twisted reactor on the main thread for one short conversation, maps every outcome to
one line on stderr and an exit status from :mod:`vibews.exitcodes`, and never shows a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from vibews import exitcodes

if TYPE_CHECKING:  # imported when a command runs, so 'vibews token ...' starts quickly
    from twisted.python.failure import Failure

    from vibews.client import Client

DEFAULT_URL = "ws://localhost:3001/"

Command = Callable[["Client", argparse.Namespace], Coroutine[Any, Any, int]]


class UsageProblem(Exception):
    """Bad input found after parsing (a JSON argument, a missing token): exit 2."""


def hub_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connecting to the hub")
    group.add_argument(
        "--url",
        default=os.environ.get("VIBEWS_URL", DEFAULT_URL),
        help=f"the hub's WebSocket URL, ws:// or wss:// (default: $VIBEWS_URL or {DEFAULT_URL})",
    )
    group.add_argument(
        "--token",
        default=os.environ.get("VIBEWS_TOKEN"),
        help="the token's secret (default: $VIBEWS_TOKEN; prefer the variable: arguments are "
        "visible to other users in the process list)",
    )
    group.add_argument(
        "--cafile",
        default=os.environ.get("VIBEWS_CAFILE"),
        metavar="PEM",
        help="wss://: trust this CA certificate instead of the system's (default: $VIBEWS_CAFILE)",
    )


def json_object(text: str, what: str) -> dict[str, Any]:
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as handle:
                text = handle.read()
        except OSError as error:
            raise UsageProblem(f"{what}: cannot read {text[1:]}: {error.strerror}") from None
    try:
        value = json.loads(text)
    except ValueError as error:
        raise UsageProblem(f"{what} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise UsageProblem(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _say(text: str) -> None:
    sys.stderr.write(f"vibews: {text}\n")
    sys.stderr.flush()


def run(command: Command, args: argparse.Namespace) -> int:
    """Connect, run ``command``, close; returns the exit status."""
    if not args.token:
        raise UsageProblem("no token: pass --token or set VIBEWS_TOKEN")
    from twisted.internet.defer import Deferred

    from vibews.client import Client

    try:
        client = Client(args.url, args.token, cafile=args.cafile)
    except ValueError as error:
        raise UsageProblem(str(error)) from None
    from twisted.internet import reactor

    outcome: list[int] = []

    async def body() -> int:
        try:
            await client.connect(fail_fast=True)
            return await command(client, args)
        finally:
            await client.close()

    def finish(result: int | Failure) -> None:
        outcome.append(result if isinstance(result, int) else _report(result))
        reactor.stop()

    def start() -> None:
        Deferred.fromCoroutine(body()).addBoth(finish)

    reactor.callWhenRunning(start)
    reactor.run()
    if not outcome:
        question = getattr(args, "question_id", None)
        if question:
            _say(
                f"interrupted; question {question!r} stays open: run the same command with "
                f"--id {question} to wait for its answer again"
            )
        else:
            _say("interrupted")
        return exitcodes.INTERRUPTED
    return outcome[0]


def _report(failure: Failure) -> int:
    from vibews.client import (
        AuthenticationFailed,
        ClientStopped,
        ConnectionFailed,
        QuestionExpired,
        QuestionWithdrawn,
        Refused,
    )

    error = failure.value
    if isinstance(error, UsageProblem | ValueError):
        _say(str(error))
        return exitcodes.USAGE
    if isinstance(error, AuthenticationFailed):
        _say(str(error))
        return exitcodes.AUTH
    if isinstance(error, ConnectionFailed | ClientStopped):
        _say(str(error))
        return exitcodes.UNREACHABLE
    if isinstance(error, Refused):
        _say(str(error))
        return exitcodes.REFUSED
    if isinstance(error, QuestionExpired):
        _say(str(error))
        return exitcodes.EXPIRED
    if isinstance(error, QuestionWithdrawn):
        _say(str(error))
        return exitcodes.WITHDRAWN
    _say(f"unexpected failure: {type(error).__name__}: {error}")
    return exitcodes.FAILURE


def _print_json(message: Any) -> None:
    sys.stdout.write(json.dumps(message, ensure_ascii=False, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def status(client: Client, args: argparse.Namespace) -> int:
    extra = json_object(args.extra, "--extra") if args.extra else {}
    await client.status(args.state, args.detail, **extra)
    return exitcodes.OK


async def task(client: Client, args: argparse.Namespace) -> int:
    await client.task(args.task_id, args.status, args.progress)
    return exitcodes.OK


async def send(client: Client, args: argparse.Namespace) -> int:
    ack = await client.send(args.type, json_object(args.payload, "PAYLOAD"), args.id)
    _print_json({"id": ack.id, "seq": ack.seq, "duplicate": ack.duplicate})
    return exitcodes.OK


async def ask(client: Client, args: argparse.Namespace) -> int:
    schema = json_object(args.schema, "--schema") if args.schema else None
    args.question_id = args.id or uuid.uuid4().hex
    answer = await client.ask(
        args.text,
        options=args.option,
        schema=schema,
        timeout=args.timeout,
        urgency=args.urgency,
        question_id=args.question_id,
    )
    if args.json:
        _print_json(answer.message)
    who = answer.by or "someone"
    reason = f": {answer.text}" if answer.text else ""
    if answer.action == "decline":
        _say(f"{who} declined{reason}")
        return exitcodes.DECLINED
    if answer.action == "cancel":
        _say(f"{who} cancelled{reason}")
        return exitcodes.CANCELLED
    if not args.json:
        if answer.value is not None:
            _print_json(answer.value)
        else:
            sys.stdout.write((answer.text or "") + "\n")
            sys.stdout.flush()
    return exitcodes.OK


async def listen(client: Client, args: argparse.Namespace) -> int:
    from twisted.internet.defer import Deferred

    welcome = client.welcome
    if welcome is None or welcome.role != "dashboard":
        raise UsageProblem(
            "listen needs a dashboard token (an agent's listener would take its answers)"
        )
    done: Deferred[int] = Deferred()
    printed = [0]

    def show(message: dict[str, Any]) -> None:
        if done.called:
            return
        _print_json(message)
        printed[0] += 1
        if args.count is not None and printed[0] >= args.count:
            done.callback(exitcodes.OK)

    def ended(failure: Failure) -> None:
        if not done.called:
            done.errback(failure)

    client.ended().addErrback(ended)
    show(welcome.message)
    if not done.called:
        client.on_message(show)
    return await done
