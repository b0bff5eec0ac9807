"""Shared fixtures: a real vibews server in this process, on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_twisted

from vibews.testing import RunningServer, start_server


@pytest_twisted.async_yield_fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    running = await start_server(tmp_path / "data")
    yield running
    await running.stop()
