"""Fan-out throughput: one vibews node on SQLite vs two nodes sharing one Redis, in the same run.

Each setup gets fresh processes: ``twistd vibews`` nodes (and a ``redis-server`` with
``appendonly yes``, ``appendfsync always``: the Redis equivalent of ``--durability full``). Agents
send ``agent_status`` messages as fast as their acks come back (a window of unacked messages each);
dashboards are spread over the nodes. Measured: messages stored per second (acked) and messages
delivered per second (every dashboard received every message), from the first send until the last
dashboard has the last message.

    python bench/redis_fanout.py [--messages 2000] [--agents 4] [--dashboards 10] [--window 32]

Keep it short on a shared machine; it is not a timed test, its numbers are for comparing the two
setups on the same machine in the same run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater, react

from vibews.testing import QueueClientProtocol, TwistdProcess, connect, status_of
from vibews.testing_cluster import ClusterTokens, RedisProcess

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


async def _ready(reactor: Any, port: int) -> None:
    give_up = time.monotonic() + 30
    while await status_of(port, HEALTHZ) != 200:
        if time.monotonic() > give_up:
            raise RuntimeError(f"node on port {port} never became ready")
        await deferLater(reactor, 0.05, lambda: None)


async def _agent(client: QueueClientProtocol, name: str, count: int, window: int) -> None:
    sent = acked = 0
    while acked < count:
        while sent < count and sent - acked < window:
            client.send_json(
                {"type": "agent_status", "id": f"{name}-{sent}", "payload": {"state": "busy"}}
            )
            sent += 1
        reply = await client.next_message(timeout=60)
        if reply.get("type") != "ack":
            raise RuntimeError(f"unexpected reply {reply}")
        acked += 1


async def _dashboard(client: QueueClientProtocol, count: int) -> None:
    got = 0
    while got < count:
        message = await client.next_message(timeout=60)
        if message["type"] == "agent_status":
            got += 1


async def _run(
    reactor: Any, label: str, node_args: list[list[str]], options: argparse.Namespace, work: Path
) -> dict[str, Any]:
    tokens = ClusterTokens.create(
        work / f"{label}-tokens", agents=tuple(f"agent{i}" for i in range(1, options.agents))
    )
    secrets = [tokens.agent, *tokens.extra.values()]
    processes = []
    try:
        for index, args in enumerate(node_args):
            data = work / f"{label}-node{index}"
            processes.append(
                TwistdProcess(
                    [
                        "--port=0",
                        f"--data={data}",
                        f"--tokens={tokens.path}",
                        "--rate=0",
                        "--presence-grace=0",
                        *args,
                    ],
                    work,
                )
            )
        ports = [await process.started() for process in processes]
        for port in ports:
            await _ready(reactor, port)
        dashboards = []
        for index in range(options.dashboards):
            client = await connect(ports[index % len(ports)], tokens.dashboard)
            await client.next_message()
            dashboards.append(client)
        agents = []
        for index in range(options.agents):
            client = await connect(ports[index % len(ports)], secrets[index])
            await client.next_message()
            agents.append(client)
        for client in dashboards:  # the agents' presence messages
            for _ in range(options.agents):
                await client.next_message()
        per_agent = options.messages // options.agents
        total = per_agent * options.agents
        started = time.perf_counter()
        sending = gatherResults(
            [
                Deferred.fromCoroutine(_agent(client, f"a{i}", per_agent, options.window))
                for i, client in enumerate(agents)
            ]
        )
        receiving = gatherResults(
            [Deferred.fromCoroutine(_dashboard(client, total)) for client in dashboards]
        )
        await sending
        stored = time.perf_counter() - started
        await receiving
        delivered = time.perf_counter() - started
        for client in dashboards + agents:
            client.disconnect()
        return {
            "setup": label,
            "nodes": len(node_args),
            "messages": total,
            "dashboards": options.dashboards,
            "stored_per_s": round(total / stored),
            "delivered_per_s": round(total * options.dashboards / delivered),
            "seconds": round(delivered, 2),
        }
    finally:
        for process in processes:
            await process.kill()


async def main(reactor: Any, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--dashboards", type=int, default=10)
    parser.add_argument("--window", type=int, default=32)
    options = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed")
    work = Path(tempfile.mkdtemp(prefix="vibews-bench-"))
    try:
        results = [await _run(reactor, "sqlite", [[]], options, work)]
        redis = RedisProcess(work / "redis")
        await redis.start()
        try:
            results.append(
                await _run(reactor, "redis", [[f"--redis={redis.url}"]] * 2, options, work)
            )
        finally:
            await redis.stop()
        for result in results:
            print(json.dumps(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, sys.argv[1:])))
