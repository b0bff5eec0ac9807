"""An ask() that waits while the hub is killed (SIGKILL) and started again on the same port and data
still gets its answer: the question is stored, and the answer is pending for the agent."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest_twisted
from twisted.application.internet import backoffPolicy

from vibews.client import Client
from vibews.testing import TwistdProcess, connect, free_port, initial_secrets


@pytest_twisted.ensureDeferred
async def test_ask_survives_a_hub_killed_and_restarted(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    args = ["--port", str(port), "--data", str(data)]
    first = TwistdProcess(args, tmp_path)
    second: TwistdProcess | None = None
    client: Client | None = None
    try:
        await first.started()
        secrets = initial_secrets(data)
        client = Client(
            f"ws://127.0.0.1:{port}/",
            secrets["agent"],
            retry_policy=backoffPolicy(initialDelay=0.1, maxDelay=0.5, factor=1.5),
        )
        await client.connect()
        dashboard = await connect(port, secrets["dashboard"])
        await dashboard.next_message()
        asked = client.ask("Deploy after the restart?", ["yes", "no"], question_id="q-restart")
        question = await dashboard.next_of("question")
        assert question["id"] == "q-restart"
        first.signal(signal.SIGKILL)
        await first.ended()
        assert not asked.called

        second = TwistdProcess(args, tmp_path)
        await second.started()
        dashboard = await connect(port, secrets["dashboard"])
        welcome = await dashboard.next_message()
        open_ids = [
            q["id"] for q in welcome["payload"]["snapshot"]["questions"] if q["state"] == "open"
        ]
        assert open_ids == ["q-restart"]
        reply = await dashboard.request(
            {"type": "answer", "id": "a1", "payload": {"question_id": "q-restart", "text": "yes"}}
        )
        assert reply["type"] == "ack"
        answer = await asked
        assert (answer.question_id, answer.text) == ("q-restart", "yes")
        assert client.connections >= 2
        receipt = await dashboard.next_of("receipt")  # the answer was acked on the new connection
        assert receipt["payload"]["question_id"] == "q-restart"
    finally:
        if client is not None:
            await client.close()
        await first.kill()
        if second is not None:
            second.signal(signal.SIGTERM)
            await second.ended()
