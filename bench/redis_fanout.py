"""Fan-out throughput: one vibews node on SQLite vs one and two nodes sharing one Redis, same run.

Each setup gets fresh processes: ``twistd vibews`` nodes (and a ``redis-server`` with
``appendonly yes``, ``appendfsync always``: the Redis equivalent of ``--durability full``). The
clients are the benchmark's C load generator (``bench/loadgen.c``, compiled here): agents send
``agent_status`` messages with a window of unacked messages each, and dashboards check that they
got every acked seq exactly once, in one increasing order (a run that loses or reorders anything
fails). Agents and dashboards are spread over the nodes round robin (``--ports``), so with two
nodes half the agents write through each node and every dashboard needs the other node's messages.
Reported: acks per second (stored) and deliveries per second, as the generator measured them, and
how many commits the nodes' script moved or re-ran (from their ``/metrics``).

    python bench/redis_fanout.py [--messages 10000] [--agents 2] [--dashboards 100] [--window 64]

Keep it short on a shared machine; it is not a timed test, its numbers are for comparing the
setups on the same machine in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater, react
from twisted.internet.utils import getProcessOutputAndValue

from vibews.testing import TwistdProcess, status_of
from vibews.testing_cluster import ClusterTokens, RedisProcess

BENCH = Path(__file__).resolve().parent
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


async def _ready(reactor: Any, port: int) -> None:
    give_up = time.monotonic() + 30
    while await status_of(port, HEALTHZ) != 200:
        if time.monotonic() > give_up:
            raise RuntimeError(f"node on port {port} never became ready")
        await deferLater(reactor, 0.05, lambda: None)


async def _run(
    reactor: Any,
    label: str,
    node_args: list[list[str]],
    options: argparse.Namespace,
    work: Path,
    loadgen: Path,
) -> dict[str, Any]:
    tokens = ClusterTokens.create(
        work / f"{label}-tokens", agents=tuple(f"agent{i}" for i in range(1, options.agents))
    )
    secrets = work / f"{label}-secrets"
    secrets.write_text(
        f"agent agent {tokens.agent}\n"
        + "".join(f"{name} agent {secret}\n" for name, secret in tokens.extra.items())
        + f"dashboard dashboard {tokens.dashboard}\n"
    )
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
        command = [
            str(loadgen),
            "--ports", ",".join(map(str, ports)),
            "--tokens", str(secrets),
            "--mode", "fanout",
            "--agents", str(options.agents),
            "--dashboards", str(options.dashboards),
            "--messages", str(options.messages),
            "--window", str(options.window),
            "--timeout", "600",
        ]  # fmt: skip
        done = await getProcessOutputAndValue(command[0], command[1:], env=dict(os.environ))
        stdout, stderr, code = done
        lines = [line for line in stdout.decode().splitlines() if line.startswith("{")]
        result = json.loads(lines[-1]) if lines else {"ok": False}
        if code != 0 or not result.get("ok"):
            raise RuntimeError(f"{label}: {result.get('error') or stderr.decode().strip()}")
        counters = [await _counters(port) for port in ports]
        return {
            "setup": label,
            "nodes": len(node_args),
            "agents": options.agents,
            "dashboards": options.dashboards,
            "messages": result["acks"],
            "acks_per_s": round(result["acks_per_s"]),
            "deliveries_per_s": round(result["deliveries_per_s"]),
            "seconds": round(result["seconds"], 2),
            "moved_commits": sum(c.get("moved", 0) for c in counters),
            "conflicts": sum(c.get("conflicts", 0) for c in counters),
        }
    finally:
        for process in processes:
            await process.kill()


async def _counters(port: int) -> dict[str, int]:
    """The cluster store's counters from a node's /metrics (absent for the SQLite store). The load
    is over: a blocking read is fine here."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body = response.read().decode()
    found = {}
    for line in body.splitlines():
        for name in ("moved", "conflicts"):
            if line.startswith(f"vibews_redis_commits_{name}_total "):
                found[name] = int(float(line.split()[1]))
    return found


async def main(reactor: Any, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10000, help="per agent")
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--dashboards", type=int, default=100)
    parser.add_argument("--window", type=int, default=64)
    options = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed")
    work = Path(tempfile.mkdtemp(prefix="vibews-bench-"))
    try:
        loadgen = work / "loadgen"
        subprocess.run(
            [os.environ.get("CC", "gcc"), "-O2", "-o", str(loadgen), str(BENCH / "loadgen.c")],
            check=True,
        )
        results = [await _run(reactor, "sqlite", [[]], options, work, loadgen)]
        print(json.dumps(results[-1]), flush=True)
        for nodes in (1, 2):
            redis = RedisProcess(work / f"redis-{nodes}")
            await redis.start()
            try:
                node_args = [[f"--redis={redis.url}"]] * nodes
                results.append(await _run(reactor, "redis", node_args, options, work, loadgen))
            finally:
                await redis.stop()
            print(json.dumps(results[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, sys.argv[1:])))
