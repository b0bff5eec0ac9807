"""``--port`` listens with a backlog of LISTEN_BACKLOG, not Twisted's 50: with 50, a few hundred
clients connecting at once overflowed the accept queue and were reset (issue 9's idle scenario)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest_twisted

from vibews.config import LISTEN_BACKLOG, Config
from vibews.testing import TwistdProcess, free_port


def test_port_option_listens_with_a_large_backlog() -> None:
    config = Config(port=3001)
    assert config.listen == (f"tcp:3001:interface=127.0.0.1:backlog={LISTEN_BACKLOG}",)


@pytest_twisted.ensureDeferred
async def test_the_listening_socket_has_that_backlog(tmp_path: Path) -> None:
    port = free_port()
    process = TwistdProcess(["--port", str(port), "--data", str(tmp_path / "data")], tmp_path)
    try:
        await process.started()
        # For a listening socket, ss shows the backlog in the Send-Q column.
        listing = subprocess.run(
            ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
        ).stdout.split()
        assert listing[2] == str(LISTEN_BACKLOG), listing
    finally:
        await process.kill()
