"""``twistd vibews``: command-line options and ``makeService``. Only here is the reactor fetched."""

from __future__ import annotations

import signal

from twisted.application.service import IService
from twisted.python import usage

from vibews.config import Config
from vibews.fdlimit import raise_open_files_limit
from vibews.service import StartupError, build_service


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"must be at least 1, got {number}")
    return number


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(f"must be 0 or more, got {number}")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError(f"must be more than 0, got {value}")
    return number


def _non_negative_float(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return number


def _port(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise ValueError(f"must be a TCP port from 0 to 65535, got {number}")
    return number


def _durability(value: str) -> str:
    if value not in ("full", "process"):
        raise ValueError(f"must be 'full' or 'process', got {value!r}")
    return value


class Options(usage.Options):
    """Every option of the protocol contract's table (section 3)."""

    synopsis = "[options]"
    longdesc = (
        "Run the vibews hub: agents report and ask over WebSocket, people watch and answer. "
        "With no options it listens on 127.0.0.1:3001, keeps its data in ./vibews-data and "
        "creates one agent and one dashboard token on first start."
    )

    optFlags = [["no-dashboard", None, "Serve no dashboard page."]]

    optParameters = [
        ["port", None, 3001, "Listen on this TCP port (on --interface).", _port],
        [
            "interface",
            None,
            "127.0.0.1",
            "With --port: the address to bind (0.0.0.0 or :: to serve the network).",
        ],
        ["tokens", None, None, "The tokens file (default: DATA/tokens)."],
        ["data", None, "./vibews-data", "Where the store and generated tokens live."],
        [
            "redis",
            None,
            None,
            "redis://host:port/db (rediss:// for TLS): share state and fan-out with every node on it.",
        ],
        [
            "max-message-size",
            None,
            65536,
            "Largest message a client may send, in bytes.",
            _positive_int,
        ],
        ["ping-interval", None, 20.0, "Seconds between pings.", _positive_float],
        ["ping-timeout", None, 20.0, "Seconds to wait for a pong before closing.", _positive_float],
        [
            "handshake-timeout",
            None,
            10.0,
            "Seconds a client has to finish the opening handshake.",
            _positive_float,
        ],
        [
            "rate",
            None,
            100.0,
            "Messages per second per connection; 0 turns the limit off.",
            _non_negative_float,
        ],
        ["burst", None, 200, "Messages a connection may send at once.", _positive_int],
        [
            "max-write-buffer",
            None,
            1048576,
            "Bytes waiting for one client before it is closed (1013).",
            _positive_int,
        ],
        [
            "max-refused",
            None,
            50,
            "Refused messages within 10 s before a connection is closed (1008).",
            _non_negative_int,
        ],
        ["history", None, 100000, "Stored messages kept for resume.", _positive_int],
        [
            "durability",
            None,
            "full",
            "full: an ack survives a machine crash (fsync); process: a process crash.",
            _durability,
        ],
        [
            "presence-grace",
            None,
            5.0,
            "Seconds before a disconnected agent is announced offline.",
            _non_negative_float,
        ],
        ["claim-ttl", None, 60.0, "Seconds a claim on a question lasts.", _positive_float],
        ["max-connections", None, 10000, "Past it, new upgrades get HTTP 503.", _positive_int],
        [
            "max-open-questions",
            None,
            1000,
            "Open questions one agent name may have; past it, rate_limited.",
            _positive_int,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["endpoint"] = []
        self["allow-origin"] = []

    def opt_endpoint(self, description: str) -> None:
        """A Twisted server endpoint description replacing --port (repeatable), e.g.
        tcp:3001:interface=127.0.0.1, ssl:3443:privateKey=key.pem:certKey=cert.pem,
        systemd:domain=INET:index=0."""
        self["endpoint"].append(description)

    def opt_allow_origin(self, origin: str) -> None:
        """A browser origin allowed besides the server's own (repeatable); 'null' allows file:// pages."""
        self["allow-origin"].append(origin)

    def postOptions(self) -> None:
        if self["ping-timeout"] is None or self["ping-interval"] is None:
            raise usage.UsageError("--ping-interval and --ping-timeout need a value")
        self.config = Config(
            port=self["port"],
            interface=self["interface"],
            endpoints=tuple(self["endpoint"]),
            tokens=self["tokens"],
            data=self["data"],
            redis=self["redis"],
            allow_origins=tuple(self["allow-origin"]),
            max_message_size=self["max-message-size"],
            ping_interval=self["ping-interval"],
            ping_timeout=self["ping-timeout"],
            handshake_timeout=self["handshake-timeout"],
            rate=self["rate"],
            burst=self["burst"],
            max_write_buffer=self["max-write-buffer"],
            max_refused=self["max-refused"],
            history=self["history"],
            durability=self["durability"],
            presence_grace=self["presence-grace"],
            claim_ttl=self["claim-ttl"],
            max_connections=self["max-connections"],
            max_open_questions=self["max-open-questions"],
            dashboard=not self["no-dashboard"],
        )


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    raise_open_files_limit(options.config.max_connections)
    try:
        service: IService = build_service(options.config, reactor)
    except StartupError as error:
        raise SystemExit(f"vibews: {error}") from None
    reactor.addSystemEventTrigger("after", "shutdown", _exit_zero_after_sigterm, reactor)
    return service


def _exit_zero_after_sigterm(reactor: object) -> None:
    """twistd re-raises the signal that stopped it, so a clean SIGTERM shutdown would exit as
    "killed by SIGTERM"; the contract wants exit status 0 once the store is flushed. This runs
    only after every service stopped (the store is closed by then)."""
    if getattr(reactor, "_exitSignal", None) == signal.SIGTERM:
        reactor._exitSignal = None  # type: ignore[attr-defined]


__all__ = ["Options", "makeService"]
