"""Helpers for testing vibews and code that talks to it: a real in-process server on a free loopback
port, a WebSocket client that queues what it receives, and a raw handshake for HTTP status checks.

Everything waits on Deferreds with a deadline: nothing here sleeps.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import attrs
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import endpoints, ssl
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.python.failure import Failure

from vibews.config import Config
from vibews.peer import Outgoing
from vibews.service import VibewsService, build_service
from vibews.tokens import add_token

DEFAULT_TIMEOUT = 10.0
T = TypeVar("T")


class Closed(Exception):
    """The connection closed while a message was awaited."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"connection closed with {code}: {reason}")
        self.code = code
        self.reason = reason


class QueueClientProtocol(WebSocketClientProtocol):
    """Keeps every received message in order; ``next_message`` hands them out."""

    transport: Any

    def __init__(self) -> None:
        super().__init__()
        self.welcome: dict[str, Any] = {}
        self.received: deque[dict[str, Any]] = deque()
        self.all_received: list[dict[str, Any]] = []
        self._waiting: deque[Deferred[dict[str, Any]]] = deque()
        self.opened: Deferred[QueueClientProtocol] = Deferred()
        self.closed: Deferred[tuple[int | None, str | None]] = Deferred()
        self.selected_protocol: str | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None

    def onConnect(self, response: Any) -> None:
        self.selected_protocol = response.protocol

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        message = json.loads(payload)
        self.all_received.append(message)
        if self._waiting:
            self._waiting.popleft().callback(message)
        else:
            self.received.append(message)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.close_code, self.close_reason = code, reason
        if not self.opened.called:
            self.opened.errback(Closed(code, reason))
        self.closed.callback((code, reason))
        waiting, self._waiting = self._waiting, deque()
        for d in waiting:
            d.errback(Closed(code, reason))

    def disconnect(self) -> None:
        """Close the TCP connection without a closing handshake (a client that vanished)."""
        self.transport.loseConnection()

    def pause_reading(self) -> None:
        """Stop reading from the socket: the server sees a client that reads too slowly."""
        self.transport.pauseProducing()

    def resume_reading(self) -> None:
        self.transport.resumeProducing()

    def send_json(self, message: Any) -> None:
        self.sendMessage(json.dumps(message).encode())

    def send_raw(self, payload: bytes, binary: bool = False) -> None:
        self.sendMessage(payload, isBinary=binary)

    def next_message(self, timeout: float = DEFAULT_TIMEOUT) -> Deferred[dict[str, Any]]:
        from twisted.internet import reactor

        if self.received:
            d: Deferred[dict[str, Any]] = Deferred()
            d.callback(self.received.popleft())
            return d
        if self.closed.called:
            return _failed(Closed(self.close_code, self.close_reason))
        d = Deferred()
        self._waiting.append(d)
        d.addTimeout(timeout, reactor)
        return d

    async def next_of(self, message_type: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """The next message of ``message_type``, skipping others (presence, say)."""
        while True:
            message = await self.next_message(timeout)
            if message["type"] == message_type:
                return message

    async def request(
        self, message: dict[str, Any], timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, Any]:
        """Send a message and return the ``ack`` or ``error`` that answers it."""
        self.send_json(message)
        while True:
            reply = await self.next_message(timeout)
            if reply["type"] in ("ack", "error") and reply.get("id") == message.get("id"):
                return reply
            if reply["type"] in ("ack", "error") and "id" not in message:
                return reply

    async def resume(
        self, since: int, epoch: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Send ``resume`` and collect the replay: (replayed messages, the ``resumed`` frame)."""
        payload: dict[str, Any] = {"since": since}
        if epoch is not None:
            payload["epoch"] = epoch
        self.send_json({"type": "resume", "payload": payload})
        replayed: list[dict[str, Any]] = []
        while True:
            message = await self.next_message(timeout)
            if message["type"] == "resumed":
                return replayed, message
            replayed.append(message)

    def wait_closed(
        self, timeout: float = DEFAULT_TIMEOUT
    ) -> Deferred[tuple[int | None, str | None]]:
        return observe(self.closed, timeout)


def observe(source: Deferred[T], timeout: float = DEFAULT_TIMEOUT) -> Deferred[T]:
    """A new Deferred that fires with ``source``'s result, or fails with a timeout after
    ``timeout`` seconds. ``source`` is a connection's own (``closed``, ``lost``) that other waiters
    and the protocol share: awaiting it directly would take its result from them, and a timeout on
    it would cancel it for everyone. ``source`` keeps its result and is never cancelled."""
    from twisted.internet import reactor

    d: Deferred[T] = Deferred()

    def relay(result: Any) -> Any:
        if not d.called:
            d.callback(result)
        return result

    source.addBoth(relay)
    d.addTimeout(timeout, reactor)
    return d


def _failed(error: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(Failure(error))
    return d


async def connect(
    port: int,
    token: str | None = None,
    *,
    path: str = "/",
    via: str = "header",
    protocols: list[str] | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    tls_ca: bytes | None = None,
    host: str = "127.0.0.1",
) -> QueueClientProtocol:
    """Open a WebSocket to a local vibews with ``token`` sent ``via`` header, subprotocol or query.

    Fails with :class:`Closed` when the handshake is refused (check status codes with
    :func:`handshake_status` instead: Autobahn hides them).
    """
    from twisted.internet import reactor

    headers = dict(headers or {})
    offered = list(protocols) if protocols is not None else ["vibews.v1"]
    params = dict(query or {})
    if token is not None:
        if via == "header":
            headers["Authorization"] = f"Bearer {token}"
        elif via == "subprotocol":
            offered.append(f"vibews.token.{token}")
        elif via == "query":
            params["token"] = token
        else:
            raise ValueError(f"unknown token source {via!r}")
    url = f"{'wss' if tls_ca else 'ws'}://{host}:{port}{path}"
    if params:
        url += "?" + urlencode(params)
    factory = WebSocketClientFactory(url, headers=headers, protocols=offered or None)
    factory.protocol = QueueClientProtocol
    factory.setProtocolOptions(
        autoPingInterval=None, maxMessagePayloadSize=0, maxFramePayloadSize=0
    )
    endpoint: Any = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=timeout)
    if tls_ca is not None:
        # Certificate verification on, against the given CA, for the name in the URL.
        tls = ssl.optionsForClientTLS(host, trustRoot=ssl.Certificate.loadPEM(tls_ca))
        endpoint = endpoints.wrapClientTLS(tls, endpoint)
    client: QueueClientProtocol = await endpoint.connect(factory)
    opened = client.opened
    opened.addTimeout(timeout, reactor)
    await opened
    return client


class _RawResponse(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.done.called:
            self.done.callback(self.data)


async def raw_exchange(port: int, request: bytes, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """Send raw bytes, return everything the server sent until it closed (or the deadline)."""
    from twisted.internet import reactor

    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=timeout)
    protocol: Any = await endpoint.connect(Factory.forProtocol(_RawResponse))
    protocol.transport.write(request)
    done = protocol.done
    done.addTimeout(timeout, reactor)
    try:
        data: bytes = await done
        return data
    finally:
        protocol.transport.loseConnection()


def upgrade_request(
    path: str = "/", headers: dict[str, str] | None = None, host: str = "127.0.0.1"
) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def handshake_status(
    port: int, path: str = "/", headers: dict[str, str] | None = None, host: str | None = None
) -> int:
    """The HTTP status the server answers an upgrade request with."""
    return await status_of(port, upgrade_request(path, headers, host or f"127.0.0.1:{port}"))


async def status_of(port: int, request: bytes, timeout: float = DEFAULT_TIMEOUT) -> int:
    """Send raw request bytes; the status code of the response's first line (the connection may
    stay open: only the status line is awaited)."""
    from twisted.internet import reactor

    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    protocol: Any = await endpoint.connect(Factory.forProtocol(_RawResponse))
    got_line: Deferred[bytes] = Deferred()
    original = protocol.dataReceived

    def data_received(data: bytes) -> None:
        original(data)
        if b"\r\n" in protocol.data and not got_line.called:
            got_line.callback(protocol.data)

    def finish(data: bytes) -> None:
        if not got_line.called:
            got_line.callback(data)

    protocol.dataReceived = data_received
    protocol.done.addCallback(finish)
    protocol.transport.write(request)
    got_line.addTimeout(timeout, reactor)
    data = await got_line
    protocol.transport.loseConnection()
    return int(data.split(b" ", 2)[1])


@attrs.define
class RunningServer:
    """An in-process vibews on 127.0.0.1 with a fresh data directory and known tokens."""

    service: VibewsService
    port: int
    data: Path
    agent_token: str
    dashboard_token: str

    def add_token(self, name: str, role: str) -> str:
        secret = add_token(self.data / "tokens", name, role)  # type: ignore[arg-type]
        self.service.watcher.reload("test")
        return secret

    async def agent(self, token: str | None = None, **kwargs: Any) -> QueueClientProtocol:
        client = await connect(self.port, token or self.agent_token, **kwargs)
        welcome = await client.next_message()
        assert welcome["type"] == "welcome", welcome
        client.welcome = welcome
        return client

    async def dashboard(self, token: str | None = None, **kwargs: Any) -> QueueClientProtocol:
        return await self.agent(token or self.dashboard_token, **kwargs)

    async def settled(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until the store has no commit in flight and nothing queued. The store commits in
        a worker thread (SQLite at FULL) or in Redis (a cluster node), so an immediate answer (a
        refusal, a policy close) can reach a client before the commit of messages accepted just
        before it; reading the store after this sees all of them."""
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        store: Any = self.service.store
        for _ in range(int(timeout / 0.01)):
            in_flight = getattr(store, "_committing", None) or getattr(store, "_in_flight", None)
            if in_flight is None and not store._queue:
                return
            await deferLater(reactor, 0.01, lambda: None)
        raise AssertionError("the store did not settle")

    async def stop(self) -> None:
        result = self.service.stopService()
        if isinstance(result, Deferred):
            await result


async def assert_still_serving(server: RunningServer, acked: Iterable[int] = ()) -> list[int]:
    """What every hostile test checks after its attack: a new agent and dashboard connect; the
    agent's status is acked and relayed to the dashboard; its question is answered and the answer
    reaches it; and every ``seq`` in ``acked`` (plus the probe's own) is still in the store and
    replayed to a fresh ``resume``. Returns the probe's acked seqs."""
    tag = uuid.uuid4().hex[:12]
    agent = await server.agent()
    dashboard = await server.dashboard()
    status = await agent.request(
        {"type": "agent_status", "id": f"probe-{tag}", "payload": {"state": "probing"}}
    )
    assert status["type"] == "ack", status
    while (relayed := await dashboard.next_message())["seq"] != status["seq"]:
        pass
    assert relayed["id"] == f"probe-{tag}" and relayed["from"] == "agent", relayed
    question = await agent.request(
        {"type": "question", "id": f"probe-q-{tag}", "payload": {"text": "still there?"}}
    )
    assert question["type"] == "ack", question
    answer = await dashboard.request(
        {
            "type": "answer",
            "id": f"probe-a-{tag}",
            "payload": {"question_id": f"probe-q-{tag}", "text": "yes"},
        }
    )
    assert answer["type"] == "ack", answer
    while (got := await agent.next_message())["type"] != "answer":
        pass
    assert got["seq"] == answer["seq"] and got["payload"]["text"] == "yes", got
    mine = [status["seq"], question["seq"], answer["seq"]]
    wanted = sorted({*acked, *mine})
    stored = {m.seq for m in server.service.store.read(wanted[0] - 1, None, 1 << 30)}
    missing = [seq for seq in wanted if seq not in stored]
    assert not missing, f"acked but not in the store: {missing[:20]}"
    watcher = await server.dashboard()
    replayed, resumed = await watcher.resume(wanted[0] - 1)
    replayed_seqs = {m["seq"] for m in replayed if "seq" in m}
    assert not [seq for seq in wanted if seq not in replayed_seqs], "a resume lost acked messages"
    assert resumed["payload"]["complete"] is True
    for client in (agent, dashboard, watcher):
        client.disconnect()
    return mine


def initial_secrets(data: Path) -> dict[str, str]:
    """Token name -> secret, from the ``initial-tokens`` file a first start wrote in ``data``."""
    found: dict[str, str] = {}
    for line in (data / "initial-tokens").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _role, secret = line.split()
            found[name] = secret
    return found


async def start_server(
    data: Path | None = None,
    endpoint: str = "tcp:0:interface=127.0.0.1",
    **options: Any,
) -> RunningServer:
    """Start vibews in this process on a free loopback port (the reactor must be running)."""
    from twisted.internet import reactor

    data = data or Path(tempfile.mkdtemp(prefix="vibews-test-"))
    cluster_port = os.environ.get("VIBEWS_TEST_REDIS_PORT")
    if cluster_port and "redis" not in options:
        # Opt-in: run the whole suite against a one-node cluster on that (emptied) Redis.
        subprocess.run(
            ["redis-cli", "-p", cluster_port, "flushall"], check=True, capture_output=True
        )
        options["redis"] = f"redis://127.0.0.1:{cluster_port}/0"
    config = Config(endpoints=(endpoint,), data=str(data), **options)
    service = build_service(config, reactor)
    service.privilegedStartService()
    service.startService()
    started = getattr(service.hub, "started", None)  # a cluster node loads the shared state first
    if started is not None:
        await started
    port = (await service.listening_ports())[0].getHost().port
    secrets = initial_secrets(data)
    return RunningServer(service, port, data, secrets["agent"], secrets["dashboard"])


# --- TLS ---------------------------------------------------------------------------------------


@attrs.frozen
class SelfSigned:
    """A certificate and its key as files, and the certificate as PEM (for a client's CA)."""

    certificate: Path
    key: Path
    pem: bytes


def self_signed_certificate(directory: Path, hosts: Sequence[str]) -> SelfSigned:
    """A self-signed certificate for ``hosts`` (IP addresses or DNS names; the first is the
    common name), written as ``cert.pem`` and ``key.pem`` into ``directory``. Tests of wss:// and
    rediss:// make their own here: no network, no openssl command line, nothing to expire in the
    repository. It is its own CA, so a client that trusts it verifies the server for ``hosts``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([_alternative_name(host) for host in hosts]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return SelfSigned(cert_path, key_path, pem)


def _alternative_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


# --- vibews as a real process ------------------------------------------------------------------

LISTENING = re.compile(rb"Site starting on (\d+)")
READY = b"vibews listening on"  # logged once every service has started


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
        self.port: int | None = None
        self._waiting: list[Deferred[int]] = []
        self.ended: Deferred[int | None] = Deferred()

    def listening(self) -> Deferred[int]:
        """Fires with the port once the server is up; fails if the process ends first. Created on
        demand, so a process that is expected to fail leaves no unhandled failure behind."""
        d: Deferred[int] = Deferred()
        if self.port is not None:
            d.callback(self.port)
        elif self.ended.called:
            d.errback(RuntimeError(f"twistd ended:\n{self.output.decode()}"))
        else:
            self._waiting.append(d)
        return d

    def outReceived(self, data: bytes) -> None:
        self.output += data
        match = LISTENING.search(self.output)
        if match and READY in self.output and self.port is None:
            self.port = int(match.group(1))
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(self.port)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        code: int | None = None
        if reason.check(ProcessDone):
            code = 0
        elif reason.check(ProcessTerminated):
            value: Any = reason.value
            code = value.exitCode if value.exitCode is not None else -value.signal
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(RuntimeError(f"twistd ended ({code}):\n{self.output.decode()}"))
        self.ended.callback(code)


class TwistdProcess:
    """One running ``twistd -n vibews ...``; ``port`` is known once ``started`` fired."""

    def __init__(self, args: Sequence[str], cwd: Path, terminal: bool = False) -> None:
        self.args = [twistd(), "--pidfile=", "-n", "vibews", *args]
        self.cwd = cwd
        self._watcher = _Watcher()
        self.port = 0
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        from twisted.internet import reactor

        self._process = reactor.spawnProcess(
            self._watcher, self.args[0], self.args, env=env, path=str(cwd), usePTY=terminal
        )

    @property
    def output(self) -> str:
        return self._watcher.output.decode(errors="replace")

    async def started(self, timeout: float = 30) -> int:
        from twisted.internet import reactor

        listening = self._watcher.listening()
        listening.addTimeout(timeout, reactor)
        self.port = await listening
        return self.port

    def signal(self, signum: int) -> None:
        self._process.signalProcess(signum)

    async def ended(self, timeout: float = 30) -> int | None:
        from twisted.internet import reactor

        ended = self._watcher.ended
        ended.addTimeout(timeout, reactor)
        result: int | None = await ended
        return result

    async def kill(self) -> None:
        if not self._watcher.ended.called:
            self.signal(signal.SIGKILL)
            await self.ended()


class RecordingPeer:
    """A hub peer without a connection, for unit tests of the hub and its sessions: it records the
    frames it is sent, never pauses, and closing it does nothing."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, message: Outgoing) -> None:
        self.sent.append(message.data)

    def close(self, code: int, reason: str) -> None:
        pass

    def abort(self) -> None:
        pass

    def is_paused(self) -> bool:
        return False

    def when_writable(self) -> Deferred[None]:
        return succeed(None)
