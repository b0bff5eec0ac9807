"""One port for HTTP and WebSocket: the twisted.web site, its resources, and the handshake limits.

The WebSocket upgrade happens at ``/`` and ``/ws``; ``/healthz`` reports the store; a plain ``GET /``
is the dashboard page, whose assets are under ``/dashboard/`` (:mod:`vibews.dashboard`). ``/metrics``
is one more resource on the same :class:`RootResource`.
"""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site
from twisted.web.util import redirectTo

from vibews.auth import Gate
from vibews.dashboard import ASSETS, dashboard_resources
from vibews.headlimits import HeadTooLarge, RequestHeadScanner
from vibews.server import VibeServerFactory
from vibews.store import IStore

_TOO_LARGE_BODY = b"request line and headers must stay within 16 KiB and 100 header lines\n"
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: " + str(len(_TOO_LARGE_BODY)).encode() + b"\r\n"
    b"Connection: close\r\n\r\n" + _TOO_LARGE_BODY
)

_log = Logger()
_CONNECTION_DONE = Failure(ConnectionDone())


class LimitedHTTPChannel(HTTPChannel):
    """HTTP/1.1 with the contract's opening-handshake limits.

    Twisted's own limits answer 400 and its timeout is an idle timeout, which a client sending one byte
    every few seconds (slowloris) never trips. This channel answers 431 as soon as the head of a request
    outgrows the limits, and drops a client that has not finished its request head within
    ``handshake_timeout`` seconds however steadily it trickles.
    """

    handshake_timeout: float = 10.0
    transport: Any

    def connectionMade(self) -> None:
        super().connectionMade()
        self._scanner = RequestHeadScanner()
        self._refused = False
        self._deadline: IDelayedCall | None = None
        self._arm_deadline()

    def _arm_deadline(self) -> None:
        if self._deadline is None or not self._deadline.active():
            self._deadline = self.callLater(self.handshake_timeout, self._head_too_slow)

    def _disarm_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _head_too_slow(self) -> None:
        self._deadline = None
        if self.transport is not None:
            _log.info(
                "dropping {peer}: request head not complete within {seconds} s",
                peer=str(self.transport.getPeer()),
                seconds=self.handshake_timeout,
            )
            self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        try:
            completed = self._scanner.feed(data)
        except HeadTooLarge as too_large:
            self._refuse_head(too_large)
            return
        if self._scanner.partial:
            self._arm_deadline()  # a (pipelined) head has begun: it has its deadline
        elif completed:
            self._disarm_deadline()
        super().dataReceived(data)

    def _refuse_head(self, too_large: HeadTooLarge) -> None:
        self._refused = True
        self._disarm_deadline()
        _log.info(
            "refused a request head of {size}+ bytes, {lines}+ header lines: too large",
            size=too_large.size,
            lines=too_large.lines,
        )
        self.transport.write(_TOO_LARGE)
        self.transport.loseConnection()

    def requestDone(self, request: Request) -> None:
        super().requestDone(request)
        # A keep-alive connection gets a deadline for its next request head.
        if self.transport is not None and not self._refused:
            self._arm_deadline()

    def connectionLost(self, reason: Failure = _CONNECTION_DONE) -> None:
        self._disarm_deadline()
        super().connectionLost(reason)


def log_line_without_query(timestamp: str, request: Request) -> str:
    """Access-log line in the combined format, but with the path only: a ``?token=`` must not land
    in a log."""
    path = request.uri.split(b"?", 1)[0].decode("latin-1")
    method = request.method.decode("latin-1")
    protocol = request.clientproto.decode("latin-1")
    referrer = (request.getHeader(b"referer") or b"-").split(b"?", 1)[0].decode("latin-1")
    agent = (request.getHeader(b"user-agent") or b"-").decode("latin-1")
    ip = request.getClientAddress()
    host = getattr(ip, "host", "-")
    return (
        f'"{host}" - - {timestamp} "{method} {path} {protocol}" {request.code} '
        f'{request.sentLength or "-"} "{referrer}" "{agent}"'
    )


class HealthResource(Resource):
    """``GET /healthz``: 200 when the store takes writes, 503 naming the problem otherwise."""

    isLeaf = True

    def __init__(self, store: IStore) -> None:
        super().__init__()
        self._store = store

    def render_GET(self, request: Request) -> bytes:
        if not _exact(request):
            return notFound().render(request)  # type: ignore[no-any-return]
        problem = self._store.problem()
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        if problem is None:
            return json.dumps({"status": "ok", "store": "ok"}).encode()
        request.setResponseCode(503)
        return json.dumps({"status": "unavailable", "store": problem}).encode()


def _exact(request: Any) -> bool:
    """Leaf resources answer their own path only (a trailing slash allowed), not any path below."""
    return request.postpath in ([], [b""])


def _refuse(request: Request, code: int, text: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return text.encode() + b"\n"


class WebSocketEntry(Resource):
    """Where the upgrade happens (``/`` and ``/ws``). The Origin rule is applied here, before
    Autobahn parses the header: Autobahn answers a malformed or repeated Origin with 400, and the
    contract wants every foreign origin refused with 403 before the token is looked at. The gate
    checks again in ``onConnect``."""

    isLeaf = True

    def __init__(self, websocket: WebSocketResource, gate: Gate, page: IResource | None) -> None:
        super().__init__()
        self._websocket = websocket
        self._gate = gate
        self._page = page

    def render(self, request: Request) -> Any:
        if not _exact(request):
            return notFound().render(request)
        upgrade = (request.getHeader(b"upgrade") or b"").lower()
        if b"websocket" not in upgrade and self._page is not None:
            return self._page.render(request)
        origins = request.requestHeaders.getRawHeaders(b"origin")
        if origins is not None:
            host = (request.getHeader(b"host") or b"").decode("latin-1")
            origin = origins[0].decode("latin-1")
            if len(origins) != 1 or not self._gate.allows_origin(origin, host, request.isSecure()):
                return _refuse(request, 403, "origin not allowed")
        return self._websocket.render(request)


class _NoDashboard(Resource):
    isLeaf = True

    def render(self, request: Request) -> Any:
        return notFound("No dashboard", "This vibews serves no dashboard (--no-dashboard).").render(
            request
        )


class RootResource(Resource):
    """The site's root. More resources (``metrics``) are added with putChild."""

    def __init__(self, factory: VibeServerFactory, store: IStore, dashboard: bool) -> None:
        super().__init__()
        websocket = WebSocketResource(factory)
        page: IResource = _NoDashboard()
        if dashboard:
            page, assets = dashboard_resources()
            self.putChild(ASSETS, assets)
        self.putChild(b"", WebSocketEntry(websocket, factory.gate, page))
        self.putChild(b"ws", WebSocketEntry(websocket, factory.gate, None))
        self.putChild(b"healthz", HealthResource(store))

    def getChild(self, path: bytes, request: Request) -> IResource:
        return notFound()

    def render(self, request: Any) -> bytes:
        """Mounted under a prefix, ``/prefix`` (no slash) lands here: send it to ``/prefix/``.
        The query is dropped on purpose: it may hold a token, and a Location header gets logged."""
        path = request.uri.split(b"?", 1)[0]
        return redirectTo(path + b"/", request)


def make_site(root: Resource, handshake_timeout: float) -> Site:
    """A Site whose channels enforce the handshake limits and whose access log omits queries."""

    class Channel(LimitedHTTPChannel):
        pass

    Channel.handshake_timeout = handshake_timeout
    site = Site(root, logFormatter=log_line_without_query)
    site.protocol = Channel  # type: ignore[assignment,method-assign]  # HTTP/1.1 only, by design
    site.displayTracebacks = False
    return site
