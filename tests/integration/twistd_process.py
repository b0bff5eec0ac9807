"""Run ``twistd -n vibews`` as a real subprocess and wait for it, without blocking the reactor."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

LISTENING = re.compile(rb"Site starting on (\d+)")


def twistd() -> str:
    """The twistd of the interpreter running the tests (the tox env's, or the venv's)."""
    candidate = Path(sys.executable).parent / "twistd"
    return str(candidate) if candidate.exists() else "twistd"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Watcher(ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.listening: Deferred[int] = Deferred()
        self.ended: Deferred[int | None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        match = LISTENING.search(self.output)
        if match and not self.listening.called:
            self.listening.callback(int(match.group(1)))

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        code: int | None = None
        if reason.check(ProcessDone):
            code = 0
        elif reason.check(ProcessTerminated):
            value = reason.value
            code = value.exitCode if value.exitCode is not None else -value.signal
        if not self.listening.called:
            self.listening.errback(RuntimeError(f"twistd ended ({code}):\n{self.output.decode()}"))
        self.ended.callback(code)


class TwistdProcess:
    """One running ``twistd -n vibews ...``; ``port`` is known once ``started`` fired."""

    def __init__(self, args: Sequence[str], cwd: Path) -> None:
        self.args = [twistd(), "--pidfile=", "-n", "vibews", *args]
        self.cwd = cwd
        self._watcher = _Watcher()
        self.port = 0
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self._process = reactor.spawnProcess(  # type: ignore[attr-defined]
            self._watcher, self.args[0], self.args, env=env, path=str(cwd)
        )

    @property
    def output(self) -> str:
        return self._watcher.output.decode(errors="replace")

    async def started(self, timeout: float = 30) -> int:
        listening = self._watcher.listening
        listening.addTimeout(timeout, reactor)
        self.port = await listening
        return self.port

    def signal(self, signum: int) -> None:
        self._process.signalProcess(signum)

    async def ended(self, timeout: float = 30) -> int | None:
        ended = self._watcher.ended
        ended.addTimeout(timeout, reactor)
        result: int | None = await ended
        return result

    async def kill(self) -> None:
        if not self._watcher.ended.called:
            self.signal(signal.SIGKILL)
            await self.ended()
