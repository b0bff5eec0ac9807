"""Three nodes with clients spread over them: one gapless order, seen identically everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted

from vibews.testing import QueueClientProtocol
from vibews.testing_cluster import ClusterTokens, RedisProcess, start_node

PER_AGENT = 40


async def _collect(dashboard: QueueClientProtocol, until: int) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    while not seen or seen[-1]["seq"] < until:
        seen.append(await dashboard.next_message())
    return seen


@pytest_twisted.ensureDeferred
async def test_three_nodes_every_dashboard_sees_every_message_in_one_gapless_order(
    tmp_path: Path, redis: RedisProcess, tokens: ClusterTokens
) -> None:
    nodes = [
        await start_node(tmp_path / f"n{i}", redis.url, tokens, presence_grace=0.0)
        for i in range(3)
    ]
    try:
        dashboards = [await node.dashboard() for node in nodes]
        start = dashboards[0].welcome["payload"]["seq"]
        assert all(d.welcome["payload"]["seq"] == start for d in dashboards)
        secrets = [tokens.agent, tokens.extra["agent2"], tokens.extra["agent3"]]
        agents = [await node.agent(secret) for node, secret in zip(nodes, secrets, strict=True)]
        # Every agent writes at once on its own node: the nodes race for every commit.
        for number in range(PER_AGENT):
            for agent in agents:
                agent.send_json(
                    {"type": "agent_status", "id": f"s{number}", "payload": {"state": str(number)}}
                )
        acked: list[int] = []
        for agent in agents:
            for number in range(PER_AGENT):
                ack = await agent.next_message()
                assert ack["type"] == "ack" and ack["id"] == f"s{number}", ack
                acked.append(ack["seq"])
        # Each agent's own messages are acked in the order it sent them.
        for index in range(3):
            mine = acked[index * PER_AGENT : (index + 1) * PER_AGENT]
            assert mine == sorted(mine)
        last = max(acked)
        views = [await _collect(d, last) for d in dashboards]
        seqs = [m["seq"] for m in views[0]]
        # 3 presences + 3 * PER_AGENT statuses, numbered start+1 .. last without a gap.
        assert seqs == list(range(start + 1, last + 1))
        assert last - start == 3 + 3 * PER_AGENT
        assert set(acked) <= set(seqs)
        for view in views[1:]:
            assert view == views[0]
        for client in [*dashboards, *agents]:
            client.disconnect()
    finally:
        for node in nodes:
            await node.stop()
