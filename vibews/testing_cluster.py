"""Test helpers for a cluster: a real ``redis-server`` on a free loopback port, and vibews nodes on it
that share one tokens file (so one secret works on every node, as behind a load balancer)."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path
from typing import Any, cast

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from vibews.cluster import ClusterHub
from vibews.config import Config
from vibews.service import VibewsService, build_service
from vibews.testing import RunningServer, free_port
from vibews.tokens import add_token

READY = b"Ready to accept connections"


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


class _Output(ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.ready: Deferred[None] = Deferred()
        self.ended: Deferred[int | None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if READY in self.output and not self.ready.called:
            self.ready.callback(None)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        code: int | None = 0 if reason.check(ProcessDone) else None
        if reason.check(ProcessTerminated):
            code = reason.value.exitCode  # type: ignore[union-attr]
        if not self.ready.called:
            self.ready.errback(RuntimeError(f"redis-server ended:\n{self.output.decode()}"))
        self.ended.callback(code)


class RedisProcess:
    """``redis-server`` with an append-only file fsynced on every write (what makes an ack durable),
    its files in ``directory``; it can be stopped and started again on the same port and files."""

    def __init__(
        self, directory: Path, port: int | None = None, tls: tuple[Path, Path] | None = None
    ) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.tls = tls  # (certificate, key): serve TLS only, on ``port``
        self._output: _Output | None = None
        self._process: Any = None

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls[0]}"
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, timeout: float = 20) -> None:
        from twisted.internet import reactor

        binary = redis_server_binary()
        assert binary is not None, "redis-server is not installed"
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            binary,
            "--port",
            str(self.port) if self.tls is None else "0",
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ]
        if self.tls is not None:
            certificate, key = (str(path) for path in self.tls)
            args += ["--tls-port", str(self.port), "--tls-cert-file", certificate]
            args += ["--tls-key-file", key, "--tls-auth-clients", "no"]
        self._output = _Output()
        self._process = reactor.spawnProcess(self._output, binary, args, env=None)
        ready = self._output.ready
        ready.addTimeout(timeout, reactor)
        await ready

    async def stop(self, signum: int = signal.SIGTERM) -> None:
        if self._output is None or self._output.ended.called:
            return
        self._process.signalProcess(signum)
        await self._output.ended


@attrs.define
class ClusterTokens:
    path: Path
    agent: str
    dashboard: str
    extra: dict[str, str] = attrs.Factory(dict)

    @classmethod
    def create(cls, directory: Path, agents: tuple[str, ...] = ()) -> ClusterTokens:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "tokens"
        agent = add_token(path, "agent", "agent")
        dashboard = add_token(path, "dashboard", "dashboard")
        extra = {name: add_token(path, name, "agent") for name in agents}
        return cls(path, agent, dashboard, extra)


async def start_node(
    data: Path, redis_url: str, tokens: ClusterTokens, **options: Any
) -> RunningServer:
    """One vibews node on ``redis_url``, in this process, on a free port; returns once it has
    loaded the shared state and serves."""
    from twisted.internet import reactor

    config = Config(
        endpoints=("tcp:0:interface=127.0.0.1",),
        data=str(data),
        tokens=str(tokens.path),
        redis=redis_url,
        **options,
    )
    service: VibewsService = build_service(config, reactor)
    service.privilegedStartService()
    service.startService()
    port = (await service.listening_ports())[0].getHost().port
    await cast(ClusterHub, service.hub).started
    return RunningServer(service, port, data, tokens.agent, tokens.dashboard)
