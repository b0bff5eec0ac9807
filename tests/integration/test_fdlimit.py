"""The server raises its own open-files soft limit at start (10,000 connections need 10,000
descriptors; the usual soft limit is 1024), and says so when the hard limit is too low."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest_twisted

from vibews.testing import TwistdProcess


def _limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open files line")


@pytest_twisted.ensureDeferred
async def test_twistd_raises_its_soft_open_files_limit_to_the_hard_one(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # The child inherits a low soft limit; the server must lift it.
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        process = TwistdProcess(["--port", "0", "--data", str(tmp_path / "data")], tmp_path)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        await process.started()
        pid = process._process.pid
        assert _limits(pid) == (hard, hard)
    finally:
        await process.kill()


def test_a_hard_limit_below_max_connections_is_reported() -> None:
    script = """
import json, resource
from twisted.logger import globalLogPublisher
events = []
globalLogPublisher.addObserver(events.append)
resource.setrlimit(resource.RLIMIT_NOFILE, (100, 300))
from vibews.fdlimit import raise_open_files_limit
limits = raise_open_files_limit(1000)
print(json.dumps([limits, [e.get("log_format") for e in events], [e.get("needed") for e in events]]))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    limits, formats, needed = json.loads(done.stdout)
    assert limits == [300, 300]
    assert any("below the {needed}" in f for f in formats), formats
    assert 1064 in needed
