"""The connection side of the client: the URL, the endpoint (TLS verified for ``wss://``) and the
Autobahn protocol that hands frames to the :class:`~vibews.client.core.Client`.

Kept apart from the client's bookkeeping so that the bookkeeping reads as the protocol contract
(ids, acks, resume) and this file as plumbing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import endpoints, ssl
from twisted.internet.interfaces import IStreamClientEndpoint

from vibews.client.errors import AuthenticationFailed, ConnectionFailed

if TYPE_CHECKING:
    from vibews.client.core import Client

SUBPROTOCOL = "vibews.v1"
HANDSHAKE_TIMEOUT = 10.0

# Handshake answers that retrying cannot fix: a wrong token, a refused origin, no vibews there.
FATAL_STATUSES = frozenset({400, 401, 403, 404, 426})


@attrs.frozen
class HubAddress:
    url: str
    secure: bool
    host: str
    port: int


def parse_url(url: str) -> HubAddress:
    """Check a ``ws://`` or ``wss://`` URL; raises ValueError with what is wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise ValueError(f"bad hub URL {url!r}: {error}") from None
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"bad hub URL {url!r}: it must start with ws:// or wss://")
    if not parts.hostname:
        raise ValueError(f"bad hub URL {url!r}: no host")
    if parts.query or parts.fragment or parts.username:
        raise ValueError(f"bad hub URL {url!r}: no user, query or fragment (pass the token apart)")
    secure = parts.scheme == "wss"
    return HubAddress(url, secure, parts.hostname, port or (443 if secure else 80))


def make_endpoint(
    reactor: Any, address: HubAddress, cafile: str | None = None
) -> IStreamClientEndpoint:
    """A TCP endpoint, wrapped in TLS that verifies the certificate for the URL's host name
    (``optionsForClientTLS`` checks it with service-identity) against the system's trusted roots,
    or against ``cafile`` when one is given."""
    endpoint: IStreamClientEndpoint = endpoints.HostnameEndpoint(
        reactor, address.host, address.port, timeout=HANDSHAKE_TIMEOUT
    )
    if not address.secure:
        return endpoint
    if cafile is not None:
        try:
            pem = Path(cafile).read_bytes()
            trust: Any = ssl.Certificate.loadPEM(pem)
        except Exception as error:  # unreadable, or not a PEM certificate (OpenSSL's own errors)
            raise ValueError(f"cannot use CA file {cafile}: {error}") from None
    else:
        trust = ssl.platformTrust()
    options = ssl.optionsForClientTLS(address.host, trustRoot=trust)
    return endpoints.wrapClientTLS(options, endpoint)


class HubProtocol(WebSocketClientProtocol):
    """One WebSocket connection: tells the client when ``welcome`` arrived, what else arrived, and
    why it closed (or why it never opened)."""

    factory: HubFactory

    def __init__(self) -> None:
        super().__init__()
        self.welcomed = False
        self.ready = False  # open and welcomed (autobahn's own is_open is a Deferred)
        self._pending_ack = 0
        self._ack_scheduled = False

    @property
    def client(self) -> Client:
        return self.factory.client

    def onOpen(self) -> None:
        self.ready = True

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            self.client.log.warn("ignored a frame that is not JSON from the hub")
            return
        if not isinstance(message, dict):
            return
        if message.get("type") == "welcome" and not self.welcomed:
            self.welcomed = True
            self.client.opened(self, message)
            return
        self.client.received(self, message)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.ready = False
        if not self.welcomed:
            self.client.handshake_failed(self._why_not_open(reason))
        else:
            self.client.lost(self, code, reason)

    def _why_not_open(self, reason: str | None) -> Exception:
        status_line: str | None = getattr(self, "http_status_line", None)
        url = self.factory.url
        if status_line:
            fields = status_line.split(" ", 2)
            if len(fields) >= 2 and fields[1].isdigit():
                status = int(fields[1])
                text = fields[2] if len(fields) > 2 else ""
                if status in (401, 403):
                    return AuthenticationFailed(status, text, url)
                return HandshakeRefused(status, text, url)
        detail = (reason or "connection closed").removeprefix("connection was closed uncleanly ")
        detail = detail.strip('()"')
        return ConnectionFailed(f"cannot open a WebSocket to {url}: {detail}")

    def send_json(self, message: dict[str, Any]) -> None:
        self.sendMessage(json.dumps(message, separators=(",", ":")).encode())

    def ack(self, seq: int) -> None:
        """Acknowledge deliveries up to ``seq`` on this connection, one frame per reactor turn:
        acks count against the hub's rate limit."""
        self._pending_ack = max(self._pending_ack, seq)
        if not self._ack_scheduled:
            self._ack_scheduled = True
            self.client.reactor.callLater(0, self.flush_ack)

    def flush_ack(self) -> None:
        self._ack_scheduled = False
        if self._pending_ack and self.ready and self.state == self.STATE_OPEN:
            self.send_json({"type": "ack", "seq": self._pending_ack})
        self._pending_ack = 0


class HandshakeRefused(ConnectionFailed):
    """The hub answered the upgrade with an HTTP status other than 101."""

    def __init__(self, status: int, reason: str, url: str) -> None:
        what = {
            404: "no vibews WebSocket at this path (use / or /ws)",
            503: "the hub is busy or shutting down",
        }.get(status, "not a WebSocket upgrade")
        super().__init__(f"{url} answered HTTP {status} {reason}: {what}")
        self.status = status


class HubFactory(WebSocketClientFactory):
    protocol = HubProtocol  # type: ignore[assignment]  # autobahn's own stub is narrower
    noisy = False  # no "Starting factory" line on every reconnect

    def __init__(self, client: Client, url: str, headers: dict[str, str]) -> None:
        super().__init__(url, headers=headers, protocols=[SUBPROTOCOL])
        self.client = client


def make_factory(client: Client, address: HubAddress, token: str, max_frame: int = 0) -> HubFactory:
    factory = HubFactory(client, address.url, {"Authorization": f"Bearer {token}"})
    factory.setProtocolOptions(
        openHandshakeTimeout=HANDSHAKE_TIMEOUT,
        closeHandshakeTimeout=5,
        maxMessagePayloadSize=max_frame,
        maxFramePayloadSize=max_frame,
        # The hub pings us; our own pings notice a hub that vanished without closing (a dead
        # network path) long before TCP would.
        autoPingInterval=30,
        autoPingTimeout=30,
    )
    return factory
