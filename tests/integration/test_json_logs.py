"""``twistd --logger vibews.logs.json_observer -n vibews``: the real process writes JSON lines only.

``vibews.testing.TwistdProcess`` merges stdout and stderr and looks for the text logger's lines, so
this test watches the process with its own protocol: stdout alone, parsed line by line.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import eventFromJSON, formatEvent
from twisted.python.failure import Failure

from vibews.testing import connect, handshake_status, initial_secrets, raw_exchange, twistd

SITE_STARTING = re.compile(r"Site starting on (\d+)")
DEADLINE = 30.0


class JSONLinesWatcher(ProcessProtocol):
    """Collects stdout as lines and stderr apart; ``listening`` fires with the port once the
    server logged both its port and that every service started."""

    def __init__(self) -> None:
        self.stdout = b""
        self.stderr = b""
        self.events: list[dict[str, Any]] = []
        self.not_json: list[str] = []
        self._port: int | None = None
        self._ready = False
        self.listening: Deferred[int] = Deferred()
        self.ended: Deferred[int | None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        pending = self.stdout[self.stdout.rfind(b"\n") + 1 :] + data
        self.stdout += data
        *lines, _rest = pending.split(b"\n")
        for line in lines:
            self._line(line.decode())

    def _line(self, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            self.not_json.append(line)
            return
        self.events.append(event)
        text = event.get("@text", "") if isinstance(event, dict) else ""
        match = SITE_STARTING.search(text)
        if match:
            self._port = int(match.group(1))
        if text.startswith("vibews listening on"):
            self._ready = True
        if self._port is not None and self._ready and not self.listening.called:
            self.listening.callback(self._port)

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        code: int | None = None
        if reason.check(ProcessDone):
            code = 0
        elif reason.check(ProcessTerminated):
            value: Any = reason.value
            code = value.exitCode if value.exitCode is not None else -value.signal
        if not self.listening.called:
            output = (self.stdout + self.stderr).decode(errors="replace")
            self.listening.errback(RuntimeError(f"twistd ended ({code}):\n{output}"))
        self.ended.callback(code)


def _with_deadline(d: Deferred[Any], seconds: float = DEADLINE) -> Deferred[Any]:
    from twisted.internet import reactor

    return d.addTimeout(seconds, reactor)


def _formats(events: list[dict[str, Any]], log_format: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("log_format") == log_format]


@pytest_twisted.ensureDeferred
async def test_twistd_json_logger_writes_only_json_lines_and_no_secret(tmp_path: Path) -> None:
    """With ``--logger vibews.logs.json_observer`` every line on stdout is one JSON event with
    ``log_format``, ``log_level`` and ``log_namespace`` (plus ``@timestamp``, ``@level`` and
    ``@text``) that Twisted can read back; connections, a refused token and closes are logged; and
    neither a valid secret sent in each of the three places nor a wrong one appears anywhere in
    the output."""
    from twisted.internet import reactor

    data = tmp_path / "data"
    args = [
        twistd(),
        "--pidfile=",
        "--logger",
        "vibews.logs.json_observer",
        "-n",
        "vibews",
        "--port",
        "0",
        "--data",
        str(data),
    ]
    watcher = JSONLinesWatcher()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = reactor.spawnProcess(watcher, args[0], args, env=env, path=str(tmp_path))
    wrong = "W" * 43
    try:
        port = await _with_deadline(watcher.listening)
        secrets = initial_secrets(data)
        agent = secrets["agent"]
        for via in ("header", "subprotocol", "query"):
            client = await connect(port, agent, via=via)
            welcome = await client.next_message()
            assert welcome["type"] == "welcome"
            client.sendClose(code=1000)
            code, _ = await client.wait_closed()
            assert code == 1000
        for headers, path in (
            ({"Authorization": f"Bearer {wrong}"}, "/"),
            ({"Sec-WebSocket-Protocol": f"vibews.v1, vibews.token.{wrong}"}, "/ws"),
            ({}, f"/?token={wrong}"),
        ):
            assert await handshake_status(port, path=path, headers=headers) == 401
        # A plain request with a secret in its query string: the access log shows the path only.
        reply = await raw_exchange(
            port,
            f"GET /healthz?token={agent} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
        )
        assert reply.startswith(b"HTTP/1.1 200 ")
        process.signalProcess(signal.SIGTERM)
        assert await _with_deadline(watcher.ended) == 0
    finally:
        if not watcher.ended.called:
            process.signalProcess(signal.SIGKILL)
            await _with_deadline(watcher.ended)

    output = (watcher.stdout + watcher.stderr).decode(errors="replace")
    assert watcher.stdout.endswith(b"\n"), "the last line was cut"
    assert watcher.not_json == [], f"lines that are not JSON: {watcher.not_json}"
    assert watcher.stderr == b"", watcher.stderr.decode(errors="replace")
    for event in watcher.events:
        assert isinstance(event, dict)
        for key in ("log_format", "log_level", "log_namespace", "@timestamp", "@level", "@text"):
            assert key in event, (key, event)

    connected = _formats(watcher.events, "{name} connected as {role} ({connection})")
    assert [(e["name"], e["role"]) for e in connected] == [("agent", "agent")] * 3
    refused = _formats(watcher.events, "refused a handshake from {peer}: {status} {reason}")
    assert [e["status"] for e in refused] == [401, 401, 401]
    assert len(_formats(watcher.events, "{name} disconnected ({connection})")) == 3
    assert _formats(watcher.events, "vibews stopped; store flushed")
    access = [e["@text"] for e in watcher.events if '"GET /healthz HTTP/1.1" 200' in e["@text"]]
    assert len(access) == 1, "the access log line is missing"

    # Twisted reads its own format back: the event renders as the text logger would show it.
    first = connected[0]
    line = next(raw for raw in watcher.stdout.decode().splitlines() if first["@text"] in raw)
    assert formatEvent(eventFromJSON(line)) == first["@text"]
    assert first["@level"] == "info" and first["log_namespace"] == "vibews.hub.Hub"

    for secret in (*secrets.values(), wrong):
        assert secret not in output
