"""A host application with vibews inside it: its own page at ``/hello``, vibews under ``/vibews/``.

One port serves both. The host owns the ``Site`` and the service tree; vibews contributes a
twisted.web resource (``service.root``) and a service that must be parented so that stopping the host
closes every WebSocket with 1001 and flushes the store.

Run it (with vibews installed in the active virtualenv)::

    python docs/examples/embedded_app.py --endpoint tcp:8080:interface=127.0.0.1 --data ./host-data

then ``curl http://127.0.0.1:8080/hello``, ``curl http://127.0.0.1:8080/vibews/healthz`` and
``wscat -c ws://127.0.0.1:8080/vibews/ -H "Authorization: Bearer $AGENT"`` (secrets are in
``./host-data/initial-tokens`` after the first start). Ctrl-C (or SIGTERM) stops it cleanly.

Tests import this file and call ``make_application(reactor, data_dir, "tcp:0:interface=127.0.0.1")``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import attrs
from twisted.application.service import MultiService, Service
from twisted.internet import task
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.web.http import Request
from twisted.web.resource import Resource
from twisted.web.server import Site

from vibews.config import Config
from vibews.logs import json_observer
from vibews.service import StartupError, VibewsService, build_service
from vibews.web import make_site

DEFAULT_ENDPOINT = "tcp:8080:interface=127.0.0.1"
MOUNT = b"vibews"

_log = Logger()


class Hello(Resource):
    """The host's own page, standing in for whatever the application already serves."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"hello from the host application\n"


class Listener(Service):
    """Listens on an endpoint while running; ``listening`` fires with the bound port.

    ``strports.service`` does the same job but keeps the port to itself, and a host started on
    port 0 (a test) needs to learn which port it got. Started once; stopping closes the port.
    """

    def __init__(self, endpoint: IStreamServerEndpoint, site: Site) -> None:
        self._endpoint = endpoint
        self._site = site
        self._port: IListeningPort | None = None
        self.listening: Deferred[IListeningPort] = Deferred()

    def startService(self) -> None:
        super().startService()
        self._endpoint.listen(self._site).addCallbacks(self._bound, self.listening.errback)

    def _bound(self, port: IListeningPort) -> None:
        self._port = port
        self.listening.callback(port)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self._port = self._port, None
        return None if port is None else port.stopListening()


@attrs.frozen
class HostApplication:
    """What :func:`make_application` built: start and stop ``service``; the rest is for looking."""

    service: MultiService
    vibews: VibewsService
    site: Site
    listening: Deferred[IListeningPort]


def make_application(
    reactor: Any, data_dir: Path, port_description: str = DEFAULT_ENDPOINT, **options: Any
) -> HostApplication:
    """Build the host: ``/hello`` and vibews under ``/vibews/`` on one Site, nothing bound yet.

    ``options`` are any other :class:`vibews.config.Config` fields (``allow_origins``, ``rate``,
    ...). Raises :class:`vibews.service.StartupError` when vibews cannot start (a bad tokens file,
    a data directory another vibews uses).
    """
    config = Config(data=str(data_dir), **options)
    # listen=False: vibews binds nothing of its own; its resource goes on our Site instead.
    vibews = build_service(config, reactor, listen=False)

    root = Resource()
    root.putChild(b"hello", Hello())
    root.putChild(MOUNT, vibews.root)
    # make_site rather than a bare Site: its access log drops query strings (a client may send
    # ?token=<secret>), and its channel enforces vibews' opening-handshake limits on this port.
    site = make_site(root, config.handshake_timeout)

    host = MultiService()
    # Parenting is what orders the shutdown: stopping the host stops vibews, which closes every
    # WebSocket with 1001 and flushes the store before the host's stop Deferred fires.
    vibews.setServiceParent(host)
    listener = Listener(serverFromString(reactor, port_description), site)
    listener.setServiceParent(host)
    return HostApplication(host, vibews, site, listener.listening)


async def main(reactor: Any, *argv: str) -> None:
    """Run the host until SIGINT or SIGTERM, then stop it in order before the reactor exits."""
    parser = argparse.ArgumentParser(description="A Twisted web app with vibews mounted in it.")
    parser.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help="server endpoint description")
    parser.add_argument("--data", default="./vibews-data", help="vibews' data directory")
    parser.add_argument("--json-logs", action="store_true", help="log JSON lines to stdout")
    args = parser.parse_args(argv)
    observer = json_observer() if args.json_logs else textFileLogObserver(sys.stdout)
    globalLogBeginner.beginLoggingTo([observer])
    try:
        app = make_application(reactor, Path(args.data), args.endpoint)
    except StartupError as error:
        raise SystemExit(f"embedded_app: {error}") from None

    stopped: Deferred[None] = Deferred()

    async def stop() -> None:
        # A "before shutdown" trigger that returns a Deferred holds the reactor until it fires.
        try:
            await maybeDeferred(app.service.stopService)
        finally:
            stopped.callback(None)

    reactor.addSystemEventTrigger("before", "shutdown", lambda: Deferred.fromCoroutine(stop()))
    app.service.privilegedStartService()
    app.service.startService()
    try:
        port = await app.listening
    except Exception:
        _log.failure("cannot listen on {endpoint}", endpoint=args.endpoint)
        # react stops the reactor for a failed main; the shutdown trigger still stops vibews.
        raise SystemExit(1) from None
    address = port.getHost()
    _log.info(
        "host listening: http://{host}:{port}/hello, vibews at ws://{host}:{port}/vibews/",
        host=getattr(address, "host", "?"),
        port=getattr(address, "port", "?"),
    )
    await stopped


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
