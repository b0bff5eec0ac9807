"""Fixtures for the cluster tests: a real redis-server per test, and a shared tokens file."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_twisted

from vibews.testing_cluster import ClusterTokens, RedisProcess, redis_server_binary

if redis_server_binary() is None:
    if os.environ.get("CI"):  # .ci/run installs it: a skip there would hide lost checks
        raise RuntimeError("redis-server is not installed (CI must install it)")
    pytest.skip("redis-server is not installed", allow_module_level=True)


@pytest_twisted.async_yield_fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    process = RedisProcess(tmp_path / "redis")
    await process.start()
    yield process
    await process.stop()


@pytest.fixture
def tokens(tmp_path: Path) -> ClusterTokens:
    return ClusterTokens.create(tmp_path / "tokens", agents=("agent2", "agent3"))
