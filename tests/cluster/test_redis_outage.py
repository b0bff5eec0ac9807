"""Redis goes away under load: messages get ``unavailable`` (never an ack), ``/healthz`` says 503,
the nodes reconnect by themselves, and nothing that was acked is lost."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet.defer import Deferred

from vibews.testing import status_of
from vibews.testing_cluster import ClusterTokens, RedisProcess, start_node

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


async def _pause(seconds: float) -> None:
    from twisted.internet import reactor

    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    await d


async def _wait_health(port: int, want: int, deadline: float = 30.0) -> None:
    """Poll /healthz until it answers ``want`` (a deadline, not a timing assumption)."""
    from twisted.internet import reactor

    give_up = reactor.seconds() + deadline
    while True:
        status = await status_of(port, HEALTHZ)
        if status == want:
            return
        assert reactor.seconds() < give_up, f"/healthz stayed {status}, wanted {want}"
        await _pause(0.05)


@pytest_twisted.ensureDeferred
async def test_redis_restarted_under_load(
    tmp_path: Path, redis: RedisProcess, tokens: ClusterTokens
) -> None:
    a = await start_node(tmp_path / "a", redis.url, tokens)
    b = await start_node(tmp_path / "b", redis.url, tokens)
    try:
        agent = await a.agent()
        replies: dict[str, dict[str, Any]] = {}
        sent = 0

        async def send_and_wait(count: int) -> None:
            nonlocal sent
            for _ in range(count):
                message_id = f"m{sent}"
                sent += 1
                agent.send_json(
                    {"type": "agent_status", "id": message_id, "payload": {"state": "w"}}
                )
                reply = await agent.next_message()
                assert reply.get("id") == message_id, reply
                replies[message_id] = reply

        await send_and_wait(20)
        assert all(r["type"] == "ack" for r in replies.values())
        # Messages keep coming while Redis dies (SIGKILL: only the fsynced AOF survives).
        agent.send_json({"type": "agent_status", "id": "during", "payload": {"state": "w"}})
        await redis.stop(signal.SIGKILL)
        during = await agent.next_message()
        assert during["id"] == "during" and during["type"] in ("ack", "error")
        if during["type"] == "error":
            assert during["payload"]["code"] == "unavailable"
        replies["during"] = during
        await _wait_health(a.port, 503)
        await _wait_health(b.port, 503)
        await send_and_wait(5)
        refused = [replies[f"m{i}"] for i in range(20, 25)]
        for reply in refused:
            assert reply["type"] == "error", reply
            assert reply["payload"]["code"] == "unavailable"
        await redis.start()
        await _wait_health(a.port, 200)
        await _wait_health(b.port, 200)
        await send_and_wait(20)
        assert all(replies[f"m{i}"]["type"] == "ack" for i in range(25, 45))
        acked = {r["seq"]: mid for mid, r in replies.items() if r["type"] == "ack"}
        # A dashboard on the other node replays the whole history: every ack is there, under its
        # seq, and the sequence has no gap.
        dashboard = await b.dashboard()
        dashboard.send_json({"type": "resume", "payload": {"since": 0}})
        history: list[dict[str, Any]] = []
        while True:
            message = await dashboard.next_message()
            if message["type"] == "resumed":
                break
            history.append(message)
        assert message["payload"]["complete"] is True
        # Node B may relay the newest commits just after the replay: they follow it live.
        while history[-1]["seq"] < max(acked):
            history.append(await dashboard.next_message())
        # A live message may arrive before the resume is handled; the replay itself starts at 1.
        history = history[[m["seq"] for m in history].index(1) :]
        seqs = [m["seq"] for m in history]
        assert seqs == list(range(1, len(history) + 1))
        by_seq = {m["seq"]: m for m in history}
        for seq, message_id in acked.items():
            assert by_seq[seq]["id"] == message_id
        agent.disconnect()
        dashboard.disconnect()
    finally:
        await a.stop()
        await b.stop()


@pytest_twisted.ensureDeferred
async def test_a_node_started_before_redis_serves_once_redis_is_up(
    tmp_path: Path, tokens: ClusterTokens
) -> None:
    """Until it has loaded the shared state a node answers /healthz and upgrades with 503 (a load
    balancer sends it nothing); it keeps trying and serves as soon as Redis is there."""
    from twisted.internet import reactor

    from vibews.config import Config
    from vibews.service import build_service
    from vibews.testing import handshake_status

    redis = RedisProcess(tmp_path / "redis")
    config = Config(
        endpoints=("tcp:0:interface=127.0.0.1",),
        data=str(tmp_path / "node"),
        tokens=str(tokens.path),
        redis=redis.url,
    )
    service = build_service(config, reactor)
    service.startService()
    try:
        port = (await service.listening_ports())[0].getHost().port
        await _wait_health(port, 503)
        headers = {"Authorization": f"Bearer {tokens.agent}"}
        assert await handshake_status(port, headers=headers) == 503
        await redis.start()
        await _wait_health(port, 200)
        assert await handshake_status(port, headers=headers) == 101
    finally:
        await service.stopService()
        await redis.stop()


@pytest_twisted.ensureDeferred
async def test_a_redis_that_lost_its_data_starts_a_new_epoch(
    tmp_path: Path, redis: RedisProcess, tokens: ClusterTokens
) -> None:
    """If Redis comes back empty (no persistence, or a wiped disk), the nodes notice that its
    history went back, reload, and close their connections (1012); clients that reconnect see a
    new epoch, so a resume from the old history says ``complete: false`` instead of lying."""
    import subprocess

    a = await start_node(tmp_path / "a", redis.url, tokens)
    b = await start_node(tmp_path / "b", redis.url, tokens)
    try:
        agent = await a.agent()
        dashboard = await b.dashboard()
        old_epoch = dashboard.welcome["payload"]["epoch"]
        for i in range(3):
            assert (
                await agent.request(
                    {"type": "agent_status", "id": f"s{i}", "payload": {"state": "w"}}
                )
            )["type"] == "ack"
        subprocess.run(
            ["redis-cli", "-p", str(redis.port), "flushall"], check=True, capture_output=True
        )
        code, _ = await dashboard.wait_closed()  # node B writes nothing: its heartbeat notices
        assert code == 1012
        code, _ = await agent.wait_closed()
        assert code == 1012
        await _wait_health(b.port, 200)
        again = await b.dashboard()
        assert again.welcome["payload"]["epoch"] != old_epoch
        again.send_json({"type": "resume", "payload": {"since": 0, "epoch": old_epoch}})
        resumed = await again.next_of("resumed")
        assert resumed["payload"]["complete"] is False
        again.disconnect()
    finally:
        await a.stop()
        await b.stop()
