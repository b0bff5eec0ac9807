"""Composition: build the whole server from a :class:`Config` and a reactor, and order its start and
stop. This is also the embedding API: ``build_service(config, reactor).setServiceParent(app)``.

Stop order matters and ``MultiService`` would stop its children all at once: first stop listening,
then close every connection with 1001 (waiting at most the grace period), then flush and close the
store, so everything acked is on disk and nothing arrives after the store closed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from twisted.application import strports
from twisted.application.service import MultiService, Service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger

from vibews.auth import Gate
from vibews.cluster import ClusterHub
from vibews.config import Config
from vibews.hub import Hub, HubSettings
from vibews.metrics import Metrics, MetricsResource
from vibews.server import ConnectionSettings, VibeServerFactory
from vibews.store.redis import RedisAddress, RedisStore
from vibews.store.sqlite import SQLiteStore, StoreLocked, reactor_threads
from vibews.tokens import TokensFileError, TokenTable, create_initial_tokens, load_tokens
from vibews.tokenwatch import TokenWatcher
from vibews.web import RootResource, make_site

_log = Logger()
STDOUT = 1


class StartupError(Exception):
    """The server cannot start with this configuration; the message says why and what to do."""


def _prepare_tokens(config: Config) -> tuple[TokenTable, list[tuple[str, str, str]]]:
    path = config.tokens_path
    if path.exists():
        created: list[tuple[str, str, str]] = []
    elif config.tokens and config.default_tokens_path.exists():
        raise StartupError(
            f"tokens file {path} does not exist (but {config.default_tokens_path} does);"
            " pass the file that exists, or create this one with 'vibews token add'"
        )
    else:
        created = [
            (name, str(role), secret)
            for name, role, secret in create_initial_tokens(path, config.initial_tokens_path)
        ]
    try:
        return load_tokens(path), created
    except TokensFileError as error:
        raise StartupError(f"tokens file is invalid: {error}") from None


def dashboard_url(description: str) -> str | None:
    """The browser address for a listening endpoint description, when one can be told."""
    parts = description.split(":")
    kind = parts[0]
    if kind not in ("tcp", "ssl") or len(parts) < 2:
        return None
    options = dict(p.split("=", 1) for p in parts[2:] if "=" in p)
    host = options.get("interface", "").replace("\\", "")
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 (naming the wildcard, not binding it)
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    scheme = "https" if kind == "ssl" else "http"
    return f"{scheme}://{host}:{parts[1]}/"


def _announce_first_start(
    config: Config, created: list[tuple[str, str, str]], listen: bool
) -> None:
    """Secrets go to the 0600 file and, once, to a terminal on stdout: never to the log. Embedded
    (``listen`` False) the address is the host's to tell, so none is shown."""
    url = dashboard_url(config.listen[0]) if listen else None
    _log.info(
        "first start: created tokens file {tokens}; the new secrets are in {initial}",
        tokens=str(config.tokens_path),
        initial=str(config.initial_tokens_path),
    )
    if url is not None:
        _log.info("dashboard: {url} (add #token=<dashboard secret>)", url=url)
    secret = next((s for _, role, s in created if role == "dashboard"), None)
    # File descriptor 1, not sys.stdout: twistd may already route sys.stdout into the log.
    if url is not None and secret is not None and os.isatty(STDOUT):
        os.write(STDOUT, f"\nvibews dashboard: {url}#token={secret}\n\n".encode())


class VibewsService(MultiService):
    """The running server: token watcher, listeners, hub and store, started and stopped in order."""

    def __init__(
        self,
        config: Config,
        reactor: Any,
        store: SQLiteStore,
        hub: Hub,
        watcher: TokenWatcher,
        root: RootResource,
        listeners: Sequence[Service],
    ) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.store = store
        self.hub = hub
        self.watcher = watcher
        self.root = root
        self.listeners = list(listeners)
        watcher.setServiceParent(self)
        for listener in listeners:
            listener.setServiceParent(self)

    def listening_ports(self) -> Deferred[list[Any]]:
        """The ``IListeningPort`` of each listener, once bound (to learn a port 0 choice)."""
        waiting = [listener._waitingForPort for listener in self.listeners]  # type: ignore[attr-defined]
        ports = DeferredList(waiting, fireOnOneErrback=True, consumeErrors=True)
        return ports.addCallback(lambda results: [port for _, port in results])

    def startService(self) -> None:
        self.hub.start().addErrback(lambda f: _log.failure("marking agents offline failed", f))
        super().startService()
        if self.listeners:
            _log.info(
                "vibews listening on {endpoints}, data in {data}",
                endpoints=", ".join(self.config.listen),
                data=str(self.config.data_dir),
            )
        else:
            _log.info(
                "vibews started, embedded in its host's site; data in {data}",
                data=str(self.config.data_dir),
            )

    @inlineCallbacks
    def stopService(self) -> Any:
        Service.stopService(self)
        stops = [Deferred.fromCoroutine(_stop(listener)) for listener in self.listeners]
        yield DeferredList(stops)
        yield self.hub.shutdown()
        self.watcher.stopService()
        yield self.store.close()
        _log.info("vibews stopped; store flushed")


async def _stop(service: Service) -> None:
    result = service.stopService()
    if isinstance(result, Deferred):
        await result


def _redis_store(config: Config, reactor: Any, metrics: Metrics) -> RedisStore:
    """``--redis``: this node shares its state and fan-out with every node on that Redis."""
    try:
        return RedisStore(
            config.redis or "", reactor, history=config.history, on_commit=metrics.committed
        )
    except ValueError as error:
        raise StartupError(f"bad --redis: {error}") from None


def check_config(config: Config, reactor: Any, listen: bool = True) -> None:
    """The checks that need no side effect (nothing bound, created or opened); raises
    :class:`StartupError`. ``build_service`` and ``vibews check`` share them."""
    if config.redis:
        try:
            RedisAddress.parse(config.redis)
        except ValueError as error:
            raise StartupError(f"bad --redis: {error}") from None
    for description in config.listen if listen else ():
        try:
            endpoints.serverFromString(reactor, description)
        except Exception as error:
            if description.startswith("systemd:"):
                raise StartupError(
                    f"bad endpoint {description!r}: no listening socket was inherited at that index"
                    " (systemd passes them with LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES; start"
                    " vibews through its .socket unit)"
                ) from None
            raise StartupError(f"bad endpoint {description!r}: {error}") from None
    try:
        Gate(TokenTable, config.allow_origins)
    except ValueError as error:
        raise StartupError(f"bad --allow-origin: {error}") from None


def build_service(config: Config, reactor: Any, listen: bool = True) -> VibewsService:
    """Build the server graph; raises :class:`StartupError` with a readable reason.

    With ``listen=False`` nothing is bound: the host application mounts ``service.root`` (a
    twisted.web resource serving the WebSocket upgrade, ``healthz`` and ``metrics``) under a path of
    its own Site, and parents the service so start-up and shut-down stay in order.
    """
    check_config(config, reactor, listen)
    try:
        config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise StartupError(f"cannot create data directory {config.data_dir}: {error}") from None
    table, created = _prepare_tokens(config)
    metrics = Metrics()
    store: SQLiteStore
    if config.redis:
        store = _redis_store(config, reactor, metrics)
    else:
        try:
            store = SQLiteStore(
                config.database_path,
                reactor,
                durability=config.durability,
                history=config.history,
                on_commit=metrics.committed,
                # Commits (their fsync) and WAL checkpoints off the reactor thread: see
                # vibews/store/sqlite.py. A reactor without threads commits synchronously.
                in_thread=reactor_threads(reactor) if IReactorThreads.providedBy(reactor) else None,
            )
        except StoreLocked as error:
            raise StartupError(str(error)) from None
        except Exception as error:
            raise StartupError(f"cannot open the store {config.database_path}: {error}") from None
    hub_settings = HubSettings(
        rate=config.rate,
        burst=config.burst,
        max_refused=config.max_refused,
        presence_grace=config.presence_grace,
        heartbeat=config.ping_interval,
        claim_ttl=config.claim_ttl,
        max_open_questions=config.max_open_questions,
    )
    holder: dict[str, TokenWatcher] = {}
    metrics.track_head(store.head)
    agent_names = lambda: holder["watcher"].table.names("agent")  # noqa: E731
    hub: Hub
    if isinstance(store, RedisStore):
        cluster_store = store
        metrics.track_cluster(lambda: cluster_store.moved, lambda: cluster_store.conflicts)
        hub = ClusterHub(
            store, reactor, hub_settings, agent_names, metrics, ping_timeout=config.ping_timeout
        )
    else:
        hub = Hub(store, reactor, hub_settings, agent_names, observer=metrics)
    watcher = TokenWatcher(
        config.tokens_path,
        table,
        reactor,
        lambda new_table: hub.revalidate(new_table.identity_for_digest),
    )
    holder["watcher"] = watcher
    try:
        gate = Gate(lambda: watcher.table, config.allow_origins)
    except ValueError as error:
        raise StartupError(f"bad --allow-origin: {error}") from None
    factory = VibeServerFactory(
        hub,
        gate,
        ConnectionSettings(
            max_message_size=config.max_message_size,
            max_write_buffer=config.max_write_buffer,
            max_connections=config.max_connections,
            ping_interval=config.ping_interval,
            ping_timeout=config.ping_timeout,
            handshake_timeout=config.handshake_timeout,
        ),
    )
    root = RootResource(factory, store, dashboard=config.dashboard)
    root.putChild(b"metrics", MetricsResource(metrics))
    site = make_site(root, config.handshake_timeout)
    listeners = (
        [strports.service(d, site, reactor=reactor) for d in config.listen] if listen else []
    )
    if created:
        _announce_first_start(config, created, listen)
    return VibewsService(config, reactor, store, hub, watcher, root, listeners)
