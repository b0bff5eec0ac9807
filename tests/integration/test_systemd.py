"""contrib/systemd: the units pass ``systemd-analyze verify``, and the unit's own command line serves
clients on a listening socket inherited the way systemd passes it (fd 3, LISTEN_FDS, LISTEN_PID,
LISTEN_FDNAMES).

Nothing here sleeps: every wait is on a process or a Deferred, with a deadline.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure

from vibews.testing import QueueClientProtocol, connect, free_port, initial_secrets, twistd
from vibews.tokens import add_token

UNITS = Path(__file__).resolve().parents[2] / "contrib" / "systemd"
INSTALLED_TWISTD = "/opt/vibews/bin/twistd"
DEADLINE = 30.0
# systemd names an inherited descriptor after its socket unit unless FileDescriptorName= says
# otherwise. Twisted's ListenFDs ignores every inherited descriptor when LISTEN_FDNAMES is missing.
FD_NAME = "vibews.socket"

# What systemd does between fork and exec, for a child that starts with the socket as fd 3:
# LISTEN_PID is the pid of the process that will run vibews, known only in that process (exec keeps
# it). With --mdwe, first the kernel's memory-deny-write-execute (PR_SET_MDWE,
# PR_MDWE_REFUSE_EXEC_GAIN, Linux 6.3+), kept across exec: what MemoryDenyWriteExecute=yes enforces
# (recent systemd with this prctl, older systemd with a seccomp filter refusing the same mappings).
EXEC_AS_SYSTEMD = """\
import os, sys
if sys.argv[1] == "--mdwe":
    import ctypes
    if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:
        sys.exit("PR_SET_MDWE failed: " + os.strerror(ctypes.get_errno()))
    del sys.argv[1]
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[1], sys.argv[1:])
"""

MDWE_PROBE = """\
import ctypes, sys
sys.exit(0 if ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) == 0 else 1)
"""


def _tool(name: str) -> str:
    """The path of a tool from Debian's systemd package; skips without it, fails in CI (which
    installs it)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing although CI is set: .ci/run installs Debian's systemd")
        pytest.skip(f"{name} is not installed (Debian package systemd)")
    return path


def _setting(unit: str, key: str) -> str:
    """The value of the last ``key=`` line of a unit file's text."""
    values = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(f"{key}=")]
    assert values, f"no {key}= in the unit"
    return values[-1]


def _unit_command(data: Path) -> list[str]:
    """vibews.service's ExecStart=, with this environment's twistd and ``data`` as the state
    directory, the way systemd would expand it."""
    argv = shlex.split(_setting((UNITS / "vibews.service").read_text(), "ExecStart"))
    assert argv[0] == INSTALLED_TWISTD, argv
    argv[0] = shutil.which(twistd()) or twistd()
    return [str(data) if arg == "${STATE_DIRECTORY}" else arg for arg in argv]


class _Process(ProcessProtocol):
    """A child process whose output (stdout and stderr) can be awaited."""

    def __init__(self) -> None:
        self.output = b""
        self.code: int | None = None
        self.ended: defer.Deferred[int | None] = defer.Deferred()
        self._waits: list[tuple[re.Pattern[bytes], defer.Deferred[re.Match[bytes]]]] = []

    def outReceived(self, data: bytes) -> None:
        self.output += data
        for pattern, waiting in list(self._waits):
            match = pattern.search(self.output)
            if match is not None:
                self._waits.remove((pattern, waiting))
                if not waiting.called:
                    waiting.callback(match)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        if reason.check(ProcessDone):
            self.code = 0
        elif reason.check(ProcessTerminated):
            value: Any = reason.value
            self.code = value.exitCode if value.exitCode is not None else -value.signal
        waits, self._waits = self._waits, []
        for pattern, waiting in waits:
            if not waiting.called:
                waiting.errback(
                    AssertionError(
                        f"process ended ({self.code}) before {pattern.pattern!r}:\n{self.text}"
                    )
                )
        self.ended.callback(self.code)

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")

    async def wait_for(self, pattern: bytes, timeout: float = DEADLINE) -> re.Match[bytes]:
        from twisted.internet import reactor

        compiled = re.compile(pattern)
        match = compiled.search(self.output)
        if match is not None:
            return match
        if self.ended.called:
            raise AssertionError(f"process ended ({self.code}) before {pattern!r}:\n{self.text}")
        waiting: defer.Deferred[re.Match[bytes]] = defer.Deferred()
        self._waits.append((compiled, waiting))
        waiting.addTimeout(timeout, reactor)
        try:
            return await waiting
        except defer.TimeoutError:
            raise AssertionError(f"no {pattern!r} within {timeout} s:\n{self.text}") from None

    async def exit_code(self, timeout: float = DEADLINE) -> int | None:
        from twisted.internet import reactor

        if self.ended.called:
            return self.code
        ended: defer.Deferred[int | None] = defer.Deferred()
        self.ended.addBoth(lambda result: ended.callback(result) if not ended.called else None)
        ended.addTimeout(timeout, reactor)
        result: int | None = await ended
        return result


class _Child:
    """One spawned process and its :class:`_Process`."""

    def __init__(
        self,
        argv: list[str],
        cwd: Path,
        env: Mapping[str, str],
        child_fds: dict[int, Any] | None = None,
    ) -> None:
        from twisted.internet import reactor

        self.protocol = _Process()
        self._transport = reactor.spawnProcess(
            self.protocol, argv[0], argv, env=dict(env), path=str(cwd), childFDs=child_fds
        )

    def signal(self, signum: int) -> None:
        self._transport.signalProcess(signum)

    async def kill(self) -> None:
        if not self.protocol.ended.called:
            self.signal(signal.SIGKILL)
            await self.protocol.exit_code()


def _child_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    env["PYTHONUNBUFFERED"] = "1"  # what the unit's Environment= sets
    return env


def _listening_socket() -> socket.socket:
    """What vibews.socket's ListenStream= makes, on a free loopback port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    return listener


def _start_with_inherited_socket(
    listener: socket.socket, cwd: Path, data: Path, mdwe: bool = False
) -> _Child:
    """The unit's command with ``listener`` as fd 3 and LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES set for
    the process itself, as systemd starts a socket-activated service."""
    env = _child_environment()
    env.update(LISTEN_FDS="1", LISTEN_FDNAMES=FD_NAME)
    wrapper = [sys.executable, "-c", EXEC_AS_SYSTEMD, *(["--mdwe"] if mdwe else [])]
    fds = {0: "w", 1: "r", 2: "r", 3: listener.fileno()}
    return _Child([*wrapper, *_unit_command(data)], cwd, env, fds)


async def _agent(port: int, secret: str) -> QueueClientProtocol:
    client = await connect(port, secret, timeout=DEADLINE)
    welcome = await client.next_message(DEADLINE)
    assert welcome["type"] == "welcome", welcome
    return client


async def _stop(child: _Child, *clients: QueueClientProtocol) -> None:
    """SIGTERM, as systemctl stop sends (KillSignal=): clients get 1001 and the exit status is 0."""
    child.signal(signal.SIGTERM)
    for client in clients:
        code, _ = await client.wait_closed(DEADLINE)
        assert code == 1001
    assert await child.protocol.exit_code() == 0, child.protocol.text
    assert "vibews stopped; store flushed" in child.protocol.text


@pytest_twisted.ensureDeferred
async def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify`` accepts vibews.service and vibews.socket: exit 0 and no unknown
    key, unknown section or invalid value. It checks that executables exist, so it runs on copies
    whose ExecStart=/ExecReload= point at this environment's twistd and kill; nothing else changes
    (DynamicUser= and all hardening stay as shipped)."""
    analyze = _tool("systemd-analyze")
    service = (UNITS / "vibews.service").read_text()
    socket_unit = (UNITS / "vibews.socket").read_text()
    assert _setting(service, "ExecStart").startswith(INSTALLED_TWISTD + " ")
    assert _setting(service, "ExecReload") == "/bin/kill -HUP $MAINPID"
    local_twistd = shutil.which(twistd()) or twistd()
    local_kill = shutil.which("kill") or "/bin/kill"
    service = service.replace(INSTALLED_TWISTD, local_twistd).replace("/bin/kill", local_kill)
    (tmp_path / "vibews.service").write_text(service)
    (tmp_path / "vibews.socket").write_text(socket_unit)

    from twisted.internet import reactor

    running = getProcessOutputAndValue(
        analyze,
        ("verify", str(tmp_path / "vibews.service"), str(tmp_path / "vibews.socket")),
        env=dict(os.environ),
        path=str(tmp_path),
    )
    running.addTimeout(60, reactor)
    out, err, code = await running
    report = (out + err).decode(errors="replace")
    complaints = [
        line
        for line in report.splitlines()
        if re.search(r"unknown key|unknown section|invalid|ignoring|failed to parse", line, re.I)
    ]
    assert code == 0, report
    assert complaints == [], report


@pytest_twisted.ensureDeferred
async def test_unit_command_serves_clients_on_a_socket_passed_like_systemd(tmp_path: Path) -> None:
    """The unit's ExecStart= adopts a listening socket passed as fd 3 with LISTEN_FDS=1 and
    LISTEN_PID set to its own pid: it logs that it listens, a client connects with the generated
    agent token and gets ``welcome``; SIGHUP (ExecReload=) reloads the tokens file so a token added
    meanwhile is accepted; SIGTERM closes the clients with 1001 and the process exits 0."""
    data = tmp_path / "state"
    listener = _listening_socket()
    port = listener.getsockname()[1]
    child = _start_with_inherited_socket(listener, tmp_path, data)
    try:
        started = await child.protocol.wait_for(rb"Site starting on (\d+)")
        assert int(started.group(1)) == port
        await child.protocol.wait_for(rb"vibews listening on systemd:domain=INET:index=0")
        agent = await _agent(port, initial_secrets(data)["agent"])
        # systemd runs it in / (read-only under ProtectSystem=strict): no twistd.pid written.
        assert not (tmp_path / "twistd.pid").exists()

        added = add_token(data / "tokens", "reloaded-bot", "agent")
        child.signal(signal.SIGHUP)
        await child.protocol.wait_for(rb"tokens reloaded from .* \(SIGHUP\)")
        newcomer = await _agent(port, added)

        await _stop(child, agent, newcomer)
    finally:
        await child.kill()
        listener.close()
    for secret in (*initial_secrets(data).values(), added):
        assert secret not in child.protocol.text


@pytest_twisted.ensureDeferred
async def test_systemd_socket_activate_starts_it_on_the_first_connection(tmp_path: Path) -> None:
    """Under Debian's ``systemd-socket-activate`` (which binds the socket, then on the first
    connection execs the command with fd 3 and LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES, as the
    .socket unit does), a client that connected before vibews ran is served once it has started;
    SIGTERM then makes it exit 0."""
    activate = _tool("systemd-socket-activate")
    data = tmp_path / "state"
    port = free_port()
    # It passes a clean environment (PATH, HOME, ...) like systemd: hand on Python's settings.
    pass_on = [f"--setenv={k}={v}" for k, v in _child_environment().items() if k[:6] == "PYTHON"]
    argv = [
        activate,
        f"--listen=127.0.0.1:{port}",
        f"--fdname={FD_NAME}",
        *pass_on,
        "--",
        *_unit_command(data),
    ]
    # The first connection starts vibews, so its token must exist before: as 'vibews token add'.
    secret = add_token(data / "tokens", "early-bot", "agent")
    child = _Child(argv, tmp_path, _child_environment())
    try:
        await child.protocol.wait_for(rb"Listening on 127\.0\.0\.1:%d as 3\." % port)
        assert b"vibews" not in child.protocol.output  # not started yet: nobody connected
        agent = await _agent(port, secret)
        assert "vibews listening on systemd:domain=INET:index=0" in child.protocol.text
        await _stop(child, agent)
    finally:
        await child.kill()


@pytest_twisted.ensureDeferred
async def test_memory_deny_write_execute_does_not_break_it(tmp_path: Path) -> None:
    """MemoryDenyWriteExecute=yes is safe: under the kernel's equivalent (PR_SET_MDWE, which refuses
    writable-and-executable memory to the process and what it execs) the unit's command adopts the
    socket, serves an agent's message with an ack, and exits 0 on SIGTERM."""
    probe = await getProcessOutputAndValue(sys.executable, ("-c", MDWE_PROBE), env=dict(os.environ))
    if probe[2] != 0:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3 or newer)")
    data = tmp_path / "state"
    listener = _listening_socket()
    port = listener.getsockname()[1]
    child = _start_with_inherited_socket(listener, tmp_path, data, mdwe=True)
    try:
        await child.protocol.wait_for(rb"vibews listening on")
        agent = await _agent(port, initial_secrets(data)["agent"])
        reply = await agent.request(
            {"type": "agent_status", "id": "s1", "payload": {"state": "working"}}, DEADLINE
        )
        assert reply["type"] == "ack", reply
        await _stop(child, agent)
    finally:
        await child.kill()
        listener.close()


@pytest_twisted.ensureDeferred
async def test_systemd_endpoint_without_an_inherited_socket_refuses_to_start(
    tmp_path: Path,
) -> None:
    """The unit's command started by hand, with no socket passed (``--endpoint
    systemd:domain=INET:index=0`` and no LISTEN_FDS), stops at once with a non-zero status and one
    ``bad endpoint`` line, no traceback."""
    child = _Child(_unit_command(tmp_path / "state"), tmp_path, _child_environment())
    try:
        code = await child.protocol.exit_code()
    finally:
        await child.kill()
    output = child.protocol.text
    assert code not in (0, None), output
    assert "bad endpoint 'systemd:domain=INET:index=0'" in output, output
    assert "Traceback" not in output, output
    assert len(output.strip().splitlines()) == 1, output
