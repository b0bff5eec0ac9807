"""The WebSocket adapter: Autobahn's handshake and frames on one side, the hub on the other.

Close codes decided here: 1003 for a binary frame, 1009 for an oversize message or too many
fragments (Autobahn closes oversize itself), 1013 for a client that reads too slowly, 1011 when the
server fails to set a connection up.
"""

from __future__ import annotations

from typing import Any

import attrs
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket import protocol as autobahn_protocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime, ISSLTransport
from twisted.logger import Logger
from zope.interface import implementer

from vibews import __version__, fastframes
from vibews.auth import Admission, Denied, Gate, HandshakeRequest
from vibews.directwrite import write_now
from vibews.hub import Hub, Outgoing, Session
from vibews.keepalive import KeepAlive
from vibews.protocol import INTERNAL_ERROR, Refusal, best_effort_id

CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INTERNAL_ERROR = 1011
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_TRY_AGAIN_LATER = 1013

# A peer's place in the TurnWriter: not scheduled, among the rest, or among the first.
_IDLE, _LATER, _FIRST = 0, 1, 2

# What Twisted's TCP transport buffers before it pauses its producer: while paused, at least this
# much is already waiting.
TRANSPORT_BUFFER = 2**16


@attrs.frozen
class ConnectionSettings:
    max_message_size: int = 65536
    max_fragments: int = 64
    max_write_buffer: int = 1 << 20
    max_connections: int = 10_000
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    handshake_timeout: float = 10.0


def encode_text_frame(data: bytes) -> bytes:
    """One unmasked, unfragmented text frame (RFC 6455 section 5.2) as a server sends it: what
    Autobahn's ``prepareMessage(data).payloadHybi`` returns without compression, built directly
    (0.24 µs, not 0.75: the prepared message object and its options are never used)."""
    size = len(data)
    if size < 126:
        return b"\x81" + size.to_bytes(1, "big") + data
    if size < 65536:
        return b"\x81\x7e" + size.to_bytes(2, "big") + data
    return b"\x81\x7f" + size.to_bytes(8, "big") + data


@implementer(IPushProducer)
class _WebSocketPeer:
    """The hub's view of one connection; also the transport's producer, which is how we learn that
    the client stopped reading (Autobahn itself has no cap on queued outgoing bytes).

    One per connection, so slotted, and its lists exist only while they hold something."""

    __slots__ = (
        "_failed",
        "_max_write_buffer",
        "_paused",
        "_pending",
        "_pending_bytes",
        "_protocol",
        "_queued_while_paused",
        "_scheduled",
        "_waiters",
        "ping_at",
        "ping_payload",
        "pong_by",
    )

    def __init__(self, protocol: VibeServerProtocol, max_write_buffer: int) -> None:
        self._protocol = protocol
        self._max_write_buffer = max_write_buffer
        self._paused = False
        self._queued_while_paused = 0
        self._waiters: list[Deferred[None]] | None = None
        self._failed = False
        # Frames queued for the next flush; None when there are none.
        self._pending: list[bytes] | None = None
        self._pending_bytes = 0
        self._scheduled = _IDLE
        # The keep-alive sweep's state for this connection (vibews.keepalive).
        self.ping_at = 0.0
        self.pong_by = 0.0
        self.ping_payload: bytes | None = None

    def send(self, message: Outgoing) -> None:
        protocol = self._protocol
        if self._failed or protocol.state != WebSocketServerProtocol.STATE_OPEN:
            return
        # reserve() only refuses a paused connection (_failed was checked just above): skip the
        # call for the others, as it is made for every recipient of every message.
        if self._paused and not self.reserve(len(message.data)):
            return
        if getattr(protocol, "_perMessageCompress", None) is not None:
            # Never happens (_accept_no_compression), but a compressed frame is per connection.
            self.flush()
            protocol.sendMessage(message.data)
            return
        if message.prepared is None:
            # The whole frame, built once for every recipient. Sound because no extension is
            # negotiated (checked just above): the frame is the same on every connection.
            message.prepared = encode_text_frame(message.data)
        if self._pending is None:
            self._pending = [message.prepared]
        else:
            self._pending.append(message.prepared)
        self._pending_bytes += len(message.prepared)
        if self._pending_bytes >= TRANSPORT_BUFFER:
            # Hand a large backlog over now, so the transport's pause (which paces replays and
            # detects slow readers) sees it this turn.
            self.flush()
        elif message.reply:
            if self._scheduled != _FIRST:
                self._scheduled = _FIRST
                protocol.factory.turn_writer.schedule_first(self)
        elif self._scheduled == _IDLE:
            self._scheduled = _LATER
            protocol.factory.turn_writer.schedule(self)

    def flush(self) -> None:
        """Write every frame queued since the last flush in one ``transport.write``: one call
        into the transport (and one syscall) per connection per reactor turn, not per frame."""
        self._scheduled = _IDLE
        pending, self._pending = self._pending, None
        if not pending:
            return
        data = b"".join(pending)
        self._pending_bytes = 0
        protocol = self._protocol
        if protocol.state != WebSocketServerProtocol.STATE_OPEN:
            return  # the client closed meanwhile; nothing may follow a close frame
        if protocol.send_queue:
            protocol.sendData(data)  # behind Autobahn's own queued frames, in order
        else:
            # Not Autobahn's sendData: it formats a debug log line (unused) on every call, which
            # cost a quarter of the fan-out's time in the profile.
            write_now(protocol.transport, data)

    def reserve(self, size: int) -> bool:
        """Account for ``size`` bytes about to be queued; False (and the 1013 close) when the
        client already has more than the limit waiting. Counts what is already queued, not these
        bytes, so one large frame never trips it alone."""
        if self._failed:
            return False
        if self._paused and TRANSPORT_BUFFER + self._queued_while_paused > self._max_write_buffer:
            self._too_slow()
            return False
        if self._paused:
            self._queued_while_paused += size
        return True

    def _too_slow(self) -> None:
        self._failed = True
        self._protocol._log.info(
            "closing {peer}: it reads too slowly (more than {limit} bytes waiting)",
            peer=self._protocol.peer,
            limit=self._max_write_buffer,
        )
        self._protocol.close_with(CLOSE_TRY_AGAIN_LATER, "reading too slowly; reconnect and resume")
        # The close frame waits behind the backlog (Autobahn drops the socket if the client never
        # reads it); the hub forgets the connection now, so nothing more is queued for it.
        self._protocol.detach_session()

    def close(self, code: int, reason: str) -> None:
        self._protocol.close_with(code, reason)

    def abort(self) -> None:
        self._pending = None
        self._pending_bytes = 0
        self._protocol.dropConnection(abort=True)

    def is_paused(self) -> bool:
        return self._paused

    # Pingable, for the keep-alive sweep.
    def send_ping(self, payload: bytes) -> None:
        self._protocol.sendPing(payload)

    def ping_timed_out(self) -> None:
        self._protocol.ping_timed_out()

    def when_writable(self) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        if self._paused:
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
        else:
            waiter.callback(None)
        return waiter

    # IPushProducer, called by the transport.
    def pauseProducing(self) -> None:
        # Twisted calls this again on every write while the buffer is over its size.
        if not self._paused:
            self._paused = True
            self._queued_while_paused = 0

    def resumeProducing(self) -> None:
        self._paused = False
        self._queued_while_paused = 0
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            waiter.callback(None)

    def stopProducing(self) -> None:
        self._waiters = None


class TurnWriter:
    """Flushes every connection that was sent frames during this reactor turn, once, at the
    start of the next turn: a message fanned out to many connections, or many messages committed
    together, cost one ``transport.write`` per connection instead of one per frame.

    Connections with a reply (an ack or error) go first: their clients wait on it, while the
    relays to everyone else only inform. When ten agents' messages are committed together, the
    last agent's ack then leaves before the ten dashboards' writes instead of among them. Each
    connection still gets its own frames in the order they were sent."""

    def __init__(self, reactor: IReactorTime) -> None:
        self._reactor = reactor
        self._first: list[_WebSocketPeer] = []
        self._dirty: list[_WebSocketPeer] = []
        self._call: IDelayedCall | None = None

    def schedule(self, peer: _WebSocketPeer) -> None:
        self._dirty.append(peer)
        if self._call is None:
            self._call = self._reactor.callLater(0, self._flush)

    def schedule_first(self, peer: _WebSocketPeer) -> None:
        """Like :meth:`schedule`, ahead of the rest. A peer already scheduled among the rest is
        flushed here; its later turn in the rest finds nothing left to write."""
        self._first.append(peer)
        if self._call is None:
            self._call = self._reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._call = None
        first, self._first = self._first, []
        dirty, self._dirty = self._dirty, []
        for peer in first:
            peer.flush()
        for peer in dirty:
            peer.flush()


# Attributes Autobahn's server protocol fills during the opening handshake and reads only then.
_HANDSHAKE_TEXT = (
    "http_request_data",
    "http_status_line",
    "http_headers",
    "http_request_uri",
    "http_request_path",
    "http_request_params",
    "http_request_host",
    "http_response_data",
    "websocket_origin",
    "_wskey",
    "websocket_protocols",
    "websocket_extensions",
)

# Autobahn's per-connection attributes that keep these values for most of an open connection's
# life (flags of how it closed, timers not running, the frame parser at rest ...), and the
# handshake's text once forgotten. An open connection's instance dictionary held 61 entries;
# CPython's dictionaries double at 21 and 42 entries (464 -> 832 -> 1,584 bytes), so dropping
# the entries that hold these values, with the same values as class attributes (see
# ``_install_usual_values``), keeps only about 20 and saves over a kilobyte per connection.
_USUAL_VALUES: dict[str, object] = {
    **dict.fromkeys(_HANDSHAKE_TEXT),
    **dict.fromkeys(
        (
            "_perMessageCompress",
            "trackedTimings",
            "wasNotCleanReason",
            "localCloseCode",
            "localCloseReason",
            "remoteCloseCode",
            "remoteCloseReason",
            "openHandshakeTimeoutCall",
            "closeHandshakeTimeoutCall",
            "autoPingTimeoutCall",
            "autoPingPending",
            "autoPingPendingSent",
            "autoPingPendingCall",
            "websocket_protocol_in_use",
            "current_frame",
        )
    ),
    **dict.fromkeys(
        (
            "triggered",
            "wasMaxFramePayloadSizeExceeded",
            "wasMaxMessagePayloadSizeExceeded",
            "closedByMe",
            "failedByMe",
            "droppedByMe",
            "wasClean",
            "wasServerConnectionDropTimeout",
            "wasOpenHandshakeTimeout",
            "wasCloseHandshakeTimeout",
            "wasServingFlashSocketPolicyFile",
            "inside_message",
        ),
        False,
    ),
    "state": WebSocketServerProtocol.STATE_OPEN,
    "send_state": WebSocketServerProtocol.SEND_STATE_GROUND,
    "autoPingPendingSeq": 0,
    "websocket_version": 13,
    "data": b"",
}


def _is_usual(value: object, usual: object) -> bool:
    return value is usual or (type(value) is type(usual) and value == usual)


class _SendQueue(list[Any]):
    """Autobahn's queue of frames waiting for a later reactor turn, which it only fills for
    "synchronous" or chopped sends (vibews uses neither): the three operations Autobahn uses,
    without the 760 bytes an empty ``deque`` allocates up front."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


class VibeServerProtocol(WebSocketServerProtocol):
    """One WebSocket connection: authenticate in the handshake, then hand frames to the hub."""

    factory: VibeServerFactory
    transport: Any
    _log = Logger()

    # Class attributes, not set per instance: one dictionary entry less each (see _USUAL_VALUES).
    _admission: Admission | None = None
    _peer: _WebSocketPeer | None = None
    _session: Session | None = None
    _fragments = 0

    def onConnect(self, request: ConnectionRequest) -> str | None:
        factory = self.factory
        if not factory.hub.accepting:
            raise ConnectionDeny(503, "Server shutting down")
        handshake = HandshakeRequest(
            headers=request.headers,
            params=request.params,
            protocols=request.protocols,
            secure=ISSLTransport.providedBy(self.transport),
        )
        try:
            admission = factory.gate.admit(handshake)
        except Denied as denied:
            self._log.info(
                "refused a handshake from {peer}: {status} {reason}",
                peer=self.peer,
                status=denied.status,
                reason=denied.reason,
            )
            raise ConnectionDeny(denied.status, denied.reason) from None
        if factory.hub.connection_count() >= factory.settings.max_connections:
            self._log.warn(
                "refused a handshake from {peer}: {limit} connections already open",
                peer=self.peer,
                limit=factory.settings.max_connections,
            )
            raise ConnectionDeny(503, "Too many connections")
        self._admission = admission
        return admission.subprotocol

    def onOpen(self) -> None:
        admission = self._admission
        assert admission is not None
        del self._admission
        self._forget_handshake()
        try:
            peer = _WebSocketPeer(self, self.factory.settings.max_write_buffer)
            # twisted.web's channel was the transport's producer until the upgrade; now we are.
            self.transport.unregisterProducer()
            self.transport.registerProducer(peer, True)
            self._peer = peer
            self.factory.keepalive.add(peer)
            self._session = self.factory.hub.open_session(
                peer, admission.identity, admission.digest
            )
        except Exception:
            self._log.failure("setting up a connection failed")
            self.close_with(CLOSE_INTERNAL_ERROR, "internal error")

    def _forget_handshake(self) -> None:
        """Drop the opening handshake's text, which Autobahn keeps for the connection's whole life
        but never reads again once the connection is open (in Autobahn 26.10 only
        ``processHandshake`` and ``succeedHandshake`` read these; the response is kept "for the
        testsuite"). That is about 1.8 KiB of an idle connection's 12 KiB: the raw request, its
        parsed headers, the response, the key, the URL parts. Everything vibews needs from the
        request was taken in ``onConnect``.

        Then the rest of what an idle connection need not hold: an empty send queue that costs
        less than Autobahn's ``deque``, and the instance dictionary rebuilt without the entries
        that hold their usual values (:meth:`_compact`)."""
        for name in _HANDSHAKE_TEXT:
            setattr(self, name, None)
        if not self.send_queue:
            # Duck-typed: append, popleft and len are all Autobahn uses of the deque.
            self.send_queue = _SendQueue()  # type: ignore[assignment]
        self._compact()

    def _compact(self) -> None:
        """Rebuild the instance dictionary without the entries that hold their usual value (a
        dictionary never shrinks when entries are deleted). Reading one of them then finds the
        class attribute of the same value; setting one adds it back, as before."""
        attributes = self.__dict__
        for name, usual in _USUAL_VALUES.items():
            if name in attributes and _is_usual(attributes[name], usual):
                del attributes[name]
        self.__dict__ = dict(attributes)

    def close_with(self, code: int, reason: str) -> None:
        """Start the closing handshake with any close code: Autobahn's ``sendClose`` only lets
        applications use 1000 and 3000-4999, but the contract needs 1001, 1003, 1008 and 1013."""
        if self.state == WebSocketServerProtocol.STATE_OPEN:
            if self._peer is not None:
                self._peer.flush()  # what was sent before the close goes out before it
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode()[:123], isReply=False)

    def dataReceived(self, data: bytes) -> None:
        """Complete, unfragmented, masked, valid text frames at the start of a read go straight to
        :meth:`onMessage` (:mod:`vibews.fastframes`: Autobahn's frame machinery was a third of a
        message's cost); the first byte that is not such a frame, and everything after it, go to
        Autobahn, so its parser is the only judge of every unusual frame and of every close code.

        Each message gets what Autobahn's path gives it here: the keep-alive's notice of traffic
        (:meth:`onMessageFrameBegin`; one frame is one fragment, within any ``max_fragments`` of
        at least 1) and Autobahn's traffic counters. A message may close the connection: the loop
        stops there and Autobahn reads the rest in its closing state, as it would have."""
        max_fragments = self.factory.settings.max_fragments
        if max_fragments < 1 or not fastframes.parser_at_rest(self):
            super().dataReceived(data)
            return
        limit = fastframes.payload_limit(self)
        peer = self._peer
        read_text_frame = fastframes.read_text_frame
        start = messages = payload_bytes = 0
        size = len(data)
        while start < size:
            frame = read_text_frame(data, start, limit)
            if frame is None:
                break
            payload, start = frame
            messages += 1
            payload_bytes += len(payload)
            if peer is not None:
                self.factory.keepalive.traffic(peer)
            self.onMessage(payload, False)
            if self.state != WebSocketServerProtocol.STATE_OPEN:
                break
        if messages:
            stats = self.trafficStats
            # Autobahn counts a read's octets when the read starts on an open connection: the
            # rest is counted below only if it still is.
            open_now = self.state == WebSocketServerProtocol.STATE_OPEN
            stats.incomingOctetsWireLevel += start if open_now else size
            stats.incomingOctetsWebSocketLevel += payload_bytes
            stats.incomingOctetsAppLevel += payload_bytes
            stats.incomingWebSocketFrames += messages
            stats.incomingWebSocketMessages += messages
        if start < size:
            super().dataReceived(data[start:] if start else data)

    def onMessageBegin(self, isBinary: bool) -> None:
        self._fragments = 0
        super().onMessageBegin(isBinary)

    def onMessageFrameBegin(self, length: int) -> None:
        if self._peer is not None:
            self.factory.keepalive.traffic(self._peer)
        self._fragments += 1
        if self._fragments > self.factory.settings.max_fragments:
            self._fail_connection(
                CLOSE_MESSAGE_TOO_BIG,
                f"a message may have at most {self.factory.settings.max_fragments} fragments",
            )
            return
        super().onMessageFrameBegin(length)

    def onPing(self, payload: bytes) -> None:
        """Autobahn writes pongs straight to the transport; a client that pings and never reads
        would queue them without bound, so they count towards the slow-reader limit too."""
        if self._peer is None or self._peer.reserve(len(payload) + 2):
            super().onPing(payload)

    def onPong(self, payload: bytes) -> None:
        if self._peer is not None:
            self.factory.keepalive.pong(self._peer, payload)

    def ping_timed_out(self) -> None:
        """No pong (nor data) within the ping timeout: drop the connection, as Autobahn's own
        ``onAutoPingTimeout`` did."""
        self._log.info(
            "dropping {peer}: no answer to a ping within {seconds} s",
            peer=self.peer,
            seconds=self.factory.keepalive.timeout,
        )
        self.wasClean = False
        self.wasNotCleanReason = "WebSocket ping timeout (peer did not respond with pong in time)"
        self.dropConnection(abort=True)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._session is None or self.state != WebSocketServerProtocol.STATE_OPEN:
            # Once we sent a close (1008, 1013, 1001 ...) nothing more is taken: it could be
            # stored but never acked (no data frames after a close), and a policy close must
            # end the flood, not just its replies.
            return
        if isBinary:
            self.close_with(
                CLOSE_UNSUPPORTED_DATA, "binary frames are not accepted; send JSON text"
            )
            return
        try:
            self._session.receive(payload)
        except Exception:
            self._log.failure("handling a message failed")
            self._session.refuse(
                Refusal(
                    INTERNAL_ERROR,
                    "the server failed to handle this message",
                    best_effort_id(payload),
                )
            )

    def detach_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.closed()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.detach_session()
        if self._peer is not None:
            self.factory.keepalive.discard(self._peer)
            self._peer.stopProducing()


def _install_usual_values() -> None:
    """The class attributes behind :meth:`VibeServerProtocol._compact`. Only for names that no
    base class defines: a default a base class already has (``connected`` = 0 on Twisted's
    ``Protocol``) must not change, so such a name (should a later Autobahn define one) is left
    out of the compaction instead."""
    for name in [name for name in _USUAL_VALUES if hasattr(WebSocketServerProtocol, name)]:
        del _USUAL_VALUES[name]
    for name, usual in _USUAL_VALUES.items():
        setattr(VibeServerProtocol, name, usual)


_install_usual_values()


class VibeServerFactory(WebSocketServerFactory):
    """Builds connections; holds the hub, the gate and the connection limits.

    Autobahn owns ``server``, ``url``, ``port`` and ``reactor`` on factories: ours are ``hub``,
    ``gate`` and ``settings``.
    """

    protocol = VibeServerProtocol  # type: ignore[assignment]

    def __init__(self, hub: Hub, gate: Gate, settings: ConnectionSettings) -> None:
        super().__init__(server=f"vibews/{__version__}")
        self.hub = hub
        self.gate = gate
        self.settings = settings
        self.turn_writer = TurnWriter(self.reactor)
        self.keepalive = KeepAlive(self.reactor, settings.ping_interval, settings.ping_timeout)
        configure_factory(self, settings)


def _options_on_class(
    base: type[autobahn_protocol.WebSocketServerProtocol], factory: WebSocketServerFactory
) -> type[autobahn_protocol.WebSocketServerProtocol]:
    """A subclass of ``base`` that carries the factory's WebSocket options as class attributes.

    Autobahn's ``_connectionMade`` copies every option named in ``CONFIG_ATTRS`` (about 30) from
    the factory into each new protocol instance unless the instance already has it, and then
    pretty-prints all of them for a debug line that is built even when debug logging is off: in
    the idle scenario's profile that ``pformat`` was 12% of the server's time, and the copies made
    each connection's ``__dict__`` larger. With the options on the class, ``hasattr`` finds them,
    nothing is copied, and an empty ``CONFIG_ATTRS`` leaves nothing to format. The values are
    the factory's at the time of the last ``setProtocolOptions``, as Autobahn's copies would be;
    a function among them (``perMessageCompressionAccept``) is wrapped in ``staticmethod`` so that
    it is not bound to the connection as a method.
    """
    options = {name: _plain(getattr(factory, name)) for name in base.CONFIG_ATTRS}
    return type(base.__name__, (base,), {**options, "CONFIG_ATTRS": ()})


def configure_factory(factory: WebSocketServerFactory, settings: ConnectionSettings) -> None:
    """Apply the WebSocket options vibews serves with. One function, so that the conformance test's
    echo server (tests/hostile/test_conformance.py) runs with exactly the production options.
    Call it last: the options are fixed on the factory's protocol class here (see
    :func:`_options_on_class`), so a later ``setProtocolOptions`` would not reach connections."""
    factory.setProtocolOptions(
        maxFramePayloadSize=settings.max_message_size,
        maxMessagePayloadSize=settings.max_message_size,
        # No Autobahn auto-ping: VibeServerFactory.keepalive pings from one sweep (two timer
        # objects per connection were half a kilobyte of an idle connection).
        autoPingInterval=0,
        autoPingTimeout=0,
        openHandshakeTimeout=settings.handshake_timeout,
        closeHandshakeTimeout=5,
        # No permessage-deflate: compressed frames have bypassed size limits before.
        perMessageCompressionAccept=_accept_no_compression,
        utf8validateIncoming=True,
        failByDrop=False,
        webStatus=False,
        # Origins are checked by our Gate (403 before the token); Autobahn must let all through.
        allowedOrigins=["*"],
        allowNullOrigin=True,
    )
    factory.protocol = _options_on_class(factory.protocol, factory)


def _plain(value: Any) -> Any:
    return staticmethod(value) if hasattr(type(value), "__get__") else value


def _accept_no_compression(offers: Any) -> None:
    return None
