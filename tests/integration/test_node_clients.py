"""Real Node.js clients against the hub: the `ws` package (as agents, dashboards and browsers
use it) and wscat (the classic manual check), run as subprocesses while the in-process server
answers.

They need Node.js and the packages of ``tests/integration/node/package.json``
(``npm install --no-audit --no-fund`` in that folder, or in the folder ``VIBEWS_NODE_DIR`` names).
Without them they are skipped, unless ``VIBEWS_REQUIRE_NODE=1`` or ``CI`` is set (as CI services
do): there a broken install fails instead of passing silently.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, TimeoutError, ensureDeferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from vibews.testing import RunningServer, connect

pytestmark = pytest.mark.node

CLIENT = Path(__file__).parent / "node" / "client.mjs"
# The folder whose node_modules holds ws and wscat (client.mjs reads the same variable).
NODE_DIR = Path(os.environ.get("VIBEWS_NODE_DIR") or CLIENT.parent).absolute()
NODE_MODULES = NODE_DIR / "node_modules"
# The Python-side limit on one Node run; client.mjs gives up on its own after 10 s.
PROCESS_DEADLINE = 30.0
WAIT_DEADLINE = 10.0

reactor: Any = _reactor


def _unavailable(reason: str) -> None:
    in_ci = os.environ.get("CI", "").lower() not in ("", "0", "false")
    if in_ci or os.environ.get("VIBEWS_REQUIRE_NODE") == "1":
        pytest.fail(f"{reason} (and VIBEWS_REQUIRE_NODE=1 or CI is set)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def node() -> str:
    """The node executable, with the ``ws`` package installed in ``NODE_DIR``."""
    executable = shutil.which("node")
    if executable is None:
        _unavailable("Node.js (node) is not on PATH")
    if not NODE_MODULES.is_dir():
        _unavailable(
            f"{NODE_MODULES} is missing: run `npm install --no-audit --no-fund` in {NODE_DIR}"
        )
    if not (NODE_MODULES / "ws" / "package.json").is_file():
        _unavailable(f"the ws package is not installed in {NODE_MODULES}")
    assert executable is not None
    return executable


@pytest.fixture
def wscat(node: str) -> str:
    """The wscat command-line script (run with ``node``)."""
    package = NODE_MODULES / "wscat" / "package.json"
    if not package.is_file():
        _unavailable(f"wscat is not installed in {NODE_MODULES}")
    bin_field = json.loads(package.read_text())["bin"]
    script = bin_field if isinstance(bin_field, str) else bin_field["wscat"]
    return str(package.parent / script)


@attrs.frozen(repr=False)
class NodeRun:
    """What a finished Node process printed and how it exited."""

    command: str
    stdout: str
    stderr: str
    code: int

    def lines(self) -> list[Any]:
        """Every non-empty stdout line, parsed as JSON."""
        try:
            return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]
        except ValueError as error:
            raise AssertionError(f"stdout is not JSON lines ({error}): {self!r}") from None

    def events(self) -> list[dict[str, Any]]:
        """The events client.mjs printed, in order."""
        return self.lines()

    def messages(self) -> list[dict[str, Any]]:
        """The messages client.mjs received, in order."""
        return [event["data"] for event in self.events() if event["event"] == "message"]

    def __repr__(self) -> str:
        # What pytest shows when an assertion about this run fails.
        return (
            f"{self.command}: exit {self.code}\n--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


class _RecordingReactor:
    """Spawns through the real reactor and keeps the process, so a run past its deadline can be
    killed (getProcessOutputAndValue does not hand it out)."""

    def __init__(self) -> None:
        self.processes: list[IProcessTransport] = []

    def spawnProcess(self, *args: Any, **kwargs: Any) -> IProcessTransport:
        process: IProcessTransport = reactor.spawnProcess(*args, **kwargs)
        self.processes.append(process)
        return process


def _shown(arg: str) -> str:
    """An argument as failure messages show it: scripts by name, secrets hidden."""
    if "Bearer " in arg:
        return "Authorization: Bearer ..."
    return Path(arg).name if arg.startswith("/") else arg


async def run_node(
    node: str, args: list[str], token: str | None = None, deadline: float = PROCESS_DEADLINE
) -> NodeRun:
    """Run ``node ARGS`` in ``NODE_DIR`` without blocking the reactor; kill it and fail if it has
    not exited within ``deadline`` seconds."""
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "NO_COLOR": "1",
        "VIBEWS_NODE_DIR": str(NODE_DIR),
    }
    if token is not None:
        env["VIBEWS_TOKEN"] = token
    command = " ".join(["node", *map(_shown, args)])
    spawner = _RecordingReactor()
    running: Deferred[tuple[bytes, bytes, int]] = getProcessOutputAndValue(
        node, args, env=env, path=str(NODE_DIR), reactor=spawner
    )
    running.addTimeout(deadline, reactor)
    try:
        out, err, code = await running
    except TimeoutError:
        for process in spawner.processes:
            try:
                process.signalProcess("KILL")
            except ProcessExitedAlready:
                pass
        raise AssertionError(f"{command} did not exit within {deadline} s") from None
    return NodeRun(command, out.decode(errors="replace"), err.decode(errors="replace"), code)


def client_args(scenario: str, url: str, *options: str) -> list[str]:
    return [str(CLIENT), scenario, url, *options]


@implementer(ILogObserver)
class _LogWatch:
    def __init__(self, matches: Callable[[LogEvent], bool]) -> None:
        self.matches = matches
        self.seen: Deferred[LogEvent] = Deferred()

    def __call__(self, event: LogEvent) -> None:
        if not self.seen.called and self.matches(event):
            self.seen.callback(event)


def next_log_event(matches: Callable[[LogEvent], bool]) -> Deferred[LogEvent]:
    """The next log event of this process that ``matches`` (with a deadline)."""
    watch = _LogWatch(matches)
    globalLogPublisher.addObserver(watch)

    def stop_watching(result: object) -> object:
        globalLogPublisher.removeObserver(watch)
        return result

    watch.seen.addBoth(stop_watching)
    watch.seen.addTimeout(WAIT_DEADLINE, reactor)
    return watch.seen


def _is_dashboard_connected(event: LogEvent) -> bool:
    return event.get("role") == "dashboard" and "connection" in event


@pytest.mark.parametrize("path", ["/", "/ws"])
@pytest_twisted.ensureDeferred
async def test_node_ws_agent_gets_welcome_and_ack(
    node: str, server: RunningServer, path: str
) -> None:
    """A Node `ws` agent with an `Authorization: Bearer` header, at `/` and `/ws`, is welcomed as
    `agent` without permessage-deflate (which `ws` offers), and its agent_status is acked with its
    id and a new seq; the status is then in a dashboard's snapshot (acked means stored)."""
    url = f"ws://127.0.0.1:{server.port}{path}"
    run = await run_node(node, client_args("agent", url), token=server.agent_token)

    assert run.code == 0, run
    events = run.events()
    assert events[0] == {"event": "open", "protocol": "", "extensions": ""}, run
    messages = run.messages()
    assert len(messages) == 2, run
    welcome, ack = messages
    assert welcome["type"] == "welcome", run
    assert welcome["payload"]["name"] == "agent"
    assert welcome["payload"]["role"] == "agent"
    assert welcome["payload"]["protocol"] == 1
    assert isinstance(ack.get("seq"), int), run
    assert ack == {"type": "ack", "id": "n1", "seq": ack["seq"]}
    assert ack["seq"] > welcome["payload"]["seq"]
    assert events[-1]["event"] == "close", run
    assert events[-1]["code"] == 1000, run

    dashboard = await connect(server.port, server.dashboard_token)
    later_welcome = await dashboard.next_message()
    assert later_welcome["type"] == "welcome"
    assert later_welcome["payload"]["snapshot"]["agents"]["agent"]["status"] == {"state": "working"}
    dashboard.sendClose()


@pytest_twisted.ensureDeferred
async def test_node_ws_dashboard_with_subprotocol_token_gets_relayed_status(
    node: str, server: RunningServer
) -> None:
    """A Node `ws` dashboard that offers ["vibews.v1", "vibews.token.<token>"] (the browser way)
    gets `vibews.v1` selected, a welcome with a snapshot, and then the agent_status an Autobahn
    agent sends, relayed with `from` = "agent", the acked seq, the id and the payload; everything
    after the welcome comes in increasing seq order."""
    url = f"ws://127.0.0.1:{server.port}/"
    # The agent must send only once the dashboard is registered (else the status would only be in
    # its snapshot); the hub's "connected as dashboard" log event says when, without polling.
    connected = next_log_event(_is_dashboard_connected)
    running = ensureDeferred(
        run_node(node, client_args("dashboard", url, "--count", "1"), server.dashboard_token)
    )

    def node_ended_first(result: NodeRun | Failure) -> NodeRun | Failure | None:
        # Fail the wait for the connection at once, with what node printed, if it ends first.
        if connected.called:
            return result
        if isinstance(result, Failure):
            connected.errback(result)
            return None
        connected.errback(AssertionError(f"node exited before the dashboard connected: {result!r}"))
        return result

    running.addBoth(node_ended_first)
    connection = (await connected)["connection"]

    agent = await server.agent()
    reply = await agent.request(
        {"type": "agent_status", "id": "py1", "payload": {"state": "working"}}
    )
    assert reply["type"] == "ack", reply
    run = await running
    agent.sendClose()

    assert run.code == 0, run
    events = run.events()
    assert events[0] == {"event": "open", "protocol": "vibews.v1", "extensions": ""}, run
    welcome, *later = run.messages()
    assert welcome["type"] == "welcome", run
    assert welcome["payload"]["role"] == "dashboard"
    assert welcome["payload"]["connection"] == connection
    assert "snapshot" in welcome["payload"]
    relayed = [message for message in later if "from" in message]
    assert len(relayed) == 1, run
    status = relayed[0]
    assert status["type"] == "agent_status"
    assert status["from"] == "agent"
    assert status["seq"] == reply["seq"]
    assert status["id"] == "py1"
    assert status["payload"] == {"state": "working"}
    assert isinstance(status["timestamp"], str)
    seqs = [message["seq"] for message in later]
    assert seqs == sorted(set(seqs)), run


@pytest.mark.parametrize("via", ["header", "subprotocol"])
@pytest_twisted.ensureDeferred
async def test_node_ws_wrong_token_is_refused_with_401(
    node: str, server: RunningServer, via: str
) -> None:
    """A well-formed but unknown token, in the header or in a subprotocol, gets HTTP 401 and no
    WebSocket is opened."""
    url = f"ws://127.0.0.1:{server.port}/"
    wrong = secrets.token_urlsafe(32)
    run = await run_node(node, client_args("refused", url, "--via", via), token=wrong)

    assert run.code == 0, run
    assert run.events() == [{"event": "unexpected-response", "status": 401}], run


@pytest_twisted.ensureDeferred
async def test_wscat_with_bearer_header_gets_welcome_and_ack(
    node: str, wscat: str, server: RunningServer
) -> None:
    """The classic check, `wscat -c ws://127.0.0.1:PORT -H "Authorization: Bearer TOKEN"`, connects
    and receives `welcome`; an agent_status sent with `-x` is acked with its id and a seq."""
    status = {"type": "agent_status", "id": "w1", "payload": {"state": "idle"}}
    args = [
        wscat,
        "-c",
        f"ws://127.0.0.1:{server.port}",
        "-H",
        f"Authorization: Bearer {server.agent_token}",
        "-x",
        json.dumps(status),
        "-w",
        "2",
    ]
    run = await run_node(node, args)

    assert run.code == 0, run
    messages = run.lines()
    assert messages[0]["type"] == "welcome", run
    assert messages[0]["payload"]["role"] == "agent"
    acks = [message for message in messages[1:] if message["type"] == "ack"]
    assert len(acks) == 1, run
    assert isinstance(acks[0].get("seq"), int), run
    assert acks[0] == {"type": "ack", "id": "w1", "seq": acks[0]["seq"]}
    assert acks[0]["seq"] > messages[0]["payload"]["seq"]
