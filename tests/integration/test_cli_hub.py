"""The vibews command run as a real process against a real hub: every exit status, one-line errors,
listen, token list and revoke against a running server, and check."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure

from vibews import exitcodes
from vibews.testing import QueueClientProtocol, RunningServer, free_port

ROOT = Path(__file__).resolve().parents[2]


def vibews(server: RunningServer | None, *args: str, token: str | None = None) -> Deferred[Any]:
    """Run ``python -m vibews.cli ARGS`` without blocking the reactor; fires (out, err, status)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIBEWS_")}
    env["PYTHONPATH"] = str(ROOT)
    if server is not None:
        env["VIBEWS_URL"] = f"ws://127.0.0.1:{server.port}/"
        env["VIBEWS_TOKEN"] = token or server.agent_token
    cwd = str(server.data.parent) if server is not None else str(ROOT)
    running: Deferred[Any] = getProcessOutputAndValue(
        sys.executable, ["-m", "vibews.cli", *args], env=env, path=cwd
    )
    return running


def one_line(err: bytes) -> str:
    text = err.decode()
    assert text.startswith("vibews: ") and text.count("\n") == 1, text
    assert "Traceback" not in text
    return text


async def answer(dashboard: QueueClientProtocol, **payload: Any) -> dict[str, Any]:
    question = await dashboard.next_of("question")
    reply = await dashboard.request(
        {
            "type": "answer",
            "id": "a-" + question["id"],
            "payload": {"question_id": question["id"], **payload},
        }
    )
    assert reply["type"] == "ack", reply
    return question


@pytest_twisted.ensureDeferred
async def test_ask_prints_the_answer_and_exits_0(server: RunningServer) -> None:
    dashboard = await server.dashboard()
    running = vibews(server, "ask", "Deploy to prod?", "--option", "yes", "--option", "no")
    question = await answer(dashboard, text="yes")
    assert question["payload"] == {"text": "Deploy to prod?", "options": ["yes", "no"]}
    out, err, status = await running
    assert (out, err, status) == (b"yes\n", b"", 0)
    receipt = await dashboard.next_of("receipt")  # acked before the command exited
    assert receipt["payload"]["question_id"] == question["id"]


@pytest_twisted.ensureDeferred
async def test_ask_with_schema_prints_the_value(server: RunningServer) -> None:
    dashboard = await server.dashboard()
    schema = '{"type":"object","properties":{"replicas":{"type":"integer"}}}'
    running = vibews(server, "ask", "How many?", "--schema", schema, "--id", "q-s")
    await answer(dashboard, value={"replicas": 3})
    out, err, status = await running
    assert (json.loads(out), err, status) == ({"replicas": 3}, b"", 0)


@pytest.mark.parametrize(
    ("action", "status", "said"),
    [
        ("decline", exitcodes.DECLINED, "declined: no way"),
        ("cancel", exitcodes.CANCELLED, "cancelled"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_ask_declined_and_cancelled_have_their_own_status(
    server: RunningServer, action: str, status: int, said: str
) -> None:
    dashboard = await server.dashboard()
    running = vibews(server, "ask", "Drop the table?")
    await answer(dashboard, action=action, **({"text": "no way"} if action == "decline" else {}))
    out, err, code = await running
    assert (out, code) == (b"", status)
    assert said in one_line(err)


@pytest_twisted.ensureDeferred
async def test_ask_expired(server: RunningServer) -> None:
    out, err, status = await vibews(server, "ask", "Anyone?", "--timeout", "0.3")
    assert (out, status) == (b"", exitcodes.EXPIRED)
    assert "expired" in one_line(err)


@pytest_twisted.ensureDeferred
async def test_connection_errors_are_one_line_with_distinct_status(server: RunningServer) -> None:
    cases = [
        (vibews(server, "ask", "x?", token="W" * 43), exitcodes.AUTH, "HTTP 401 invalid token"),
        (
            vibews(server, "status", "x", "--url", f"ws://127.0.0.1:{free_port()}/"),
            exitcodes.UNREACHABLE,
            "cannot reach the hub",
        ),
        (
            vibews(server, "send", "agent_status", '{"state": ""}'),
            exitcodes.REFUSED,
            "(invalid_message): payload.state",
        ),
        (
            vibews(server, "send", "agent_status", "[1]"),
            exitcodes.USAGE,
            "must be a JSON object",
        ),
        (vibews(None, "status", "x"), exitcodes.USAGE, "no token"),
        (vibews(server, "send", "ack", '{"seq": 1}'), exitcodes.USAGE, "'ack' is never acked"),
        (vibews(server, "ask", "x?", "--id", "i" * 129), exitcodes.USAGE, "1 to 128 characters"),
        (
            vibews(server, "status", "x", "--url", "http://127.0.0.1:1/"),
            exitcodes.USAGE,
            "ws:// or wss://",
        ),
    ]
    results = await gatherResults([running for running, _, _ in cases])
    for (out, err, status), (_, expected, said) in zip(results, cases, strict=True):
        assert (out, status) == (b"", expected), err
        assert said in one_line(err)


@pytest_twisted.ensureDeferred
async def test_status_task_send_and_listen(server: RunningServer) -> None:
    """status, task and send are stored as given; listen prints welcome and then each message."""
    listening = vibews(server, "listen", "--count", "4", token=server.dashboard_token)
    dashboard = await server.dashboard()
    assert (await vibews(server, "status", "working", "--detail", "tests"))[2] == 0
    assert (await vibews(server, "task", "t-1", "running", "--progress", "0.5"))[2] == 0
    out, _, status = await vibews(server, "send", "agent_status", '{"state":"x"}', "--id", "m1")
    ack = json.loads(out)
    assert (status, ack["id"], ack["duplicate"]) == (0, "m1", False)
    again, _, _ = await vibews(server, "send", "agent_status", '{"state":"x"}', "--id", "m1")
    assert json.loads(again) == {**ack, "duplicate": True}
    stored: list[dict[str, Any]] = []
    while len(stored) < 3:
        message = await dashboard.next_message()
        if message["type"] in ("agent_status", "task_update"):
            stored.append(message["payload"])
    assert stored == [
        {"state": "working", "detail": "tests"},
        {"task_id": "t-1", "status": "running", "progress": 0.5},
        {"state": "x"},
    ]
    out, err, status = await listening
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert status == 0, err
    assert lines[0]["type"] == "welcome"
    seqs = [m["seq"] for m in lines[1:]]
    assert seqs == list(range(lines[0]["payload"]["seq"] + 1, lines[0]["payload"]["seq"] + 4))
    _, err, status = await vibews(server, "listen", "--count", "1")
    assert status == exitcodes.USAGE and "dashboard token" in one_line(err)


@pytest_twisted.ensureDeferred
async def test_token_list_and_revoke_with_a_running_server(server: RunningServer) -> None:
    """list shows names, roles and keys but no secret; revoke makes the running hub close the
    token's connections (1008), and the next command with it gets exit status 8."""
    secret = server.add_token("bot", "agent")
    agent = await server.agent(secret)
    tokens = str(server.data / "tokens")
    out, _, status = await vibews(None, "token", "list", "--tokens", tokens)
    assert status == 0
    rows = [line.split() for line in out.decode().splitlines()]
    assert rows[0] == ["NAME", "ROLE", "KEY"]
    assert {(r[0], r[1]) for r in rows[1:]} == {
        ("agent", "agent"),
        ("dashboard", "dashboard"),
        ("bot", "agent"),
    }
    for known in (secret, server.agent_token, server.dashboard_token):
        assert known not in out.decode()
    out, err, status = await vibews(None, "token", "revoke", "bot", "--tokens", tokens)
    assert (out, status) == (b"", 0)
    assert "revoked 1 token(s) of 'bot'" in err.decode()
    code, reason = await agent.wait_closed()
    assert (code, reason) == (1008, "token revoked")
    _, err, status = await vibews(server, "status", "x", token=secret)
    assert status == exitcodes.AUTH
    _, err, status = await vibews(None, "token", "revoke", "bot", "--tokens", tokens)
    assert status == exitcodes.USAGE and "no token named 'bot'" in one_line(err)


async def test_check(tmp_path: Path) -> None:
    """check passes the options through twistd's own Options and reads the tokens file."""
    (tmp_path / "tokens").write_text("alice admin sha256:" + "0" * 64 + "\n")
    good, bad_tokens, bad_option, bad_endpoint = await gatherResults(
        [
            vibews(None, "check", "--data", str(tmp_path / "d"), "--port", "0"),
            vibews(None, "check", "--tokens", str(tmp_path / "tokens")),
            vibews(None, "check", "--port", "nope"),
            vibews(None, "check", "--endpoint", "nonsense:1"),
        ]
    )
    out, err, status = good
    assert status == 0, err
    assert b"ok: listen on tcp:0:interface=127.0.0.1" in out
    assert b"first start creates it" in out
    assert not (tmp_path / "d").exists()
    assert bad_tokens[2] == exitcodes.USAGE
    assert "tokens:1: role must be" in one_line(bad_tokens[1])
    assert bad_option[2] == exitcodes.USAGE and "bad option" in one_line(bad_option[1])
    assert bad_endpoint[2] == exitcodes.USAGE and "bad endpoint" in one_line(bad_endpoint[1])


test_check = pytest_twisted.ensureDeferred(test_check)


class _Collect(ProcessProtocol):
    def __init__(self) -> None:
        self.out, self.err = b"", b""
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        value: Any = reason.value
        self.ended.callback(value.exitCode if value.exitCode is not None else -value.signal)


@pytest_twisted.ensureDeferred
async def test_interrupted_ask_can_wait_again_with_its_id(server: RunningServer) -> None:
    """Ctrl-C ends 'vibews ask' with 130 and names the question, which stays open; the same
    command with --id ID then waits for that question and prints its answer."""
    from twisted.internet import reactor

    dashboard = await server.dashboard()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIBEWS_")}
    env |= {
        "PYTHONPATH": str(ROOT),
        "VIBEWS_URL": f"ws://127.0.0.1:{server.port}/",
        "VIBEWS_TOKEN": server.agent_token,
    }
    first = _Collect()
    command = [sys.executable, "-m", "vibews.cli", "ask", "Rotate keys?"]
    process = reactor.spawnProcess(first, sys.executable, command, env=env)
    question = await dashboard.next_of("question")
    process.signalProcess("INT")
    assert await first.ended == exitcodes.INTERRUPTED
    assert f"--id {question['id']}" in one_line(first.err)
    again = vibews(server, "ask", "Rotate keys?", "--id", question["id"])
    reply = await dashboard.request(
        {"type": "answer", "id": "a1", "payload": {"question_id": question["id"], "text": "now"}}
    )
    assert reply["type"] == "ack"
    out, err, status = await again
    assert (out, err, status) == (b"now\n", b"", 0)
    snapshot = (await server.dashboard()).welcome["payload"]["snapshot"]
    assert [q["id"] for q in snapshot["questions"]] == [question["id"]]  # asked once
