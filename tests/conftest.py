"""Shared fixtures: a real vibews server in this process, on a free loopback port."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from hypothesis import settings
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from zope.interface import implementer

from vibews.testing import RunningServer, start_server

# In CI the property tests run the same examples every time (a landing must not depend on luck);
# on a developer's machine they explore new ones on every run.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest_twisted.async_yield_fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    running = await start_server(tmp_path / "data")
    yield running
    await running.stop()


@pytest.fixture
def captured_log() -> Iterator[list[str]]:
    """Every log event while the test runs, formatted and with all its fields (repr), so a test
    can look for a secret anywhere in it."""
    lines: list[str] = []

    @implementer(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event) + " " + repr(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)
