"""The question lifecycle across a crash: deadlines, claims and receipts live in the store."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from vibews.testing import TwistdProcess, connect, initial_secrets
from vibews.timestamps import format_rfc3339


async def _run_first_server_until_sigkill(
    data: Path, tmp_path: Path, margin: float
) -> tuple[dict[str, str], int, float] | None:
    """Set up an expiring, a claimed and an answered question, then SIGKILL the server.

    Returns the secrets, the receipt's seq and the deadline; or None when the deadline had
    already passed before the kill (a slow machine), so the caller tries again with more margin.
    """
    first = TwistdProcess(["--port", "0", "--data", str(data)], tmp_path)
    try:
        port = await first.started()
        secrets = initial_secrets(data)
        dashboard = await connect(port, secrets["dashboard"])
        await dashboard.next_message()
        agent = await connect(port, secrets["agent"])
        await agent.next_message()
        deadline = time.time() + margin
        expiring = {"text": "soon?", "expires_at": format_rfc3339(deadline)}
        for qid, payload in (
            ("q-exp", expiring),
            ("q-claim", {"text": "c?"}),
            ("q-ans", {"text": "a?"}),
        ):
            reply = await agent.request({"type": "question", "id": qid, "payload": payload})
            assert reply["type"] == "ack"
        claim = await dashboard.request(
            {"type": "claim", "id": "c1", "payload": {"question_id": "q-claim"}}
        )
        assert claim["type"] == "ack"
        answer = await dashboard.request(
            {"type": "answer", "id": "a1", "payload": {"question_id": "q-ans", "text": "yes"}}
        )
        await agent.next_of("question_closed")
        agent.send_json({"type": "ack", "seq": answer["seq"]})
        receipt = await dashboard.next_of("receipt")
        assert receipt["payload"]["question_id"] == "q-ans"
        in_time = time.time() < deadline - 0.5
        first.signal(signal.SIGKILL)
        await first.ended()
    finally:
        await first.kill()
    if not in_time:
        return None
    return secrets, receipt["seq"], deadline


async def _dashboard_after_restart(port: int, secret: str) -> tuple[Any, dict[str, Any]]:
    """A dashboard and its welcome, taken after the restart's catch-up was stored. A connection can
    be accepted while that commit is still in flight (the store commits in a worker thread): its
    welcome then shows the state before the catch-up, and the expiry follows it, relayed with a
    newer seq. Then a second dashboard's welcome must show it."""
    dashboard = await connect(port, secret)
    welcome = await dashboard.next_message()
    questions = {q["id"]: q for q in welcome["payload"]["snapshot"]["questions"]}
    if questions["q-exp"]["state"] != "open":
        return dashboard, welcome
    while True:
        message = await dashboard.next_message()
        if message["type"] == "question_closed" and message["payload"]["question_id"] == "q-exp":
            assert message["seq"] > welcome["payload"]["seq"]
            break
    dashboard = await connect(port, secret)
    return dashboard, await dashboard.next_message()


@pytest_twisted.ensureDeferred
async def test_deadline_passed_while_down_expires_at_start_and_receipts_survive(
    tmp_path: Path,
) -> None:
    """After a SIGKILL: a question whose deadline passed while no server ran is closed as expired
    at start; the dead process's claim lapses (claimed by null); an answer's receipt is still in
    the snapshot; the journal carries on without a gap."""
    for attempt, margin in enumerate((3.0, 8.0, 20.0, 60.0)):
        data = tmp_path / f"data-{attempt}"
        first_run = await _run_first_server_until_sigkill(data, tmp_path, margin)
        if first_run is not None:
            break
    else:
        raise AssertionError("the machine never set up three questions within 60 s")
    secrets, receipt_seq, deadline = first_run
    while time.time() <= deadline + 0.2:  # let the deadline pass while no server runs
        await deferLater(reactor, 0.1, lambda: None)

    second = TwistdProcess(["--port", "0", "--data", str(data)], tmp_path)
    try:
        port = await second.started()
        dashboard, welcome = await _dashboard_after_restart(port, secrets["dashboard"])
        questions = {q["id"]: q for q in welcome["payload"]["snapshot"]["questions"]}
        assert questions["q-exp"]["state"] == "expired"
        assert questions["q-claim"]["state"] == "open" and questions["q-claim"]["claim"] is None
        assert questions["q-ans"]["state"] == "answered" and questions["q-ans"]["delivered"] is True
        replayed, resumed = await dashboard.resume(receipt_seq)
        kinds = [(m["type"], m["payload"].get("question_id")) for m in replayed]
        assert ("claimed", "q-claim") in kinds and ("question_closed", "q-exp") in kinds
        closed = next(m for m in replayed if m["type"] == "question_closed")
        assert closed["payload"]["reason"] == "expired"
        lapsed = next(m for m in replayed if m["type"] == "claimed")
        assert lapsed["payload"]["by"] is None
        seqs = [m["seq"] for m in replayed]
        assert seqs == list(range(receipt_seq + 1, receipt_seq + 1 + len(seqs)))
        assert resumed["payload"]["complete"] is True
    finally:
        second.signal(signal.SIGTERM)
        assert await second.ended() == 0
