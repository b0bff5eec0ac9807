"""Writing a connection's frames to its socket at once, when nothing is queued ahead of them.

Why: ``transport.write`` only queues. The transport then asks the reactor to watch the socket for
writability (one ``epoll_ctl``), waits for the next reactor iteration, sends, and stops watching
(a second ``epoll_ctl``). For one broadcast to 10,000 dashboards that is 20,000 system calls and
10,000 dispatches on top of the 10,000 sends. A socket whose send buffer has room takes the bytes
at once, so trying ``send`` first (as Node's libuv does) skips all of that in the common case. What
the socket does not take goes through ``transport.write`` as before, behind nothing, so the
transport's buffering, producer pauses (slow readers) and error handling are unchanged.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp


def write_now(transport: Any, data: bytes) -> None:
    """``transport.write(data)``, sending what the socket takes right away when the transport
    holds nothing unsent (only then is the order of bytes kept). Only a plain TCP connection
    qualifies (TLS and test transports take the usual path). Reads Twisted's buffer attributes,
    which ``FileDescriptor`` has kept since 2011."""
    if (
        isinstance(transport, tcp.Connection)
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnecting
        and not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
    ):
        try:
            sent = transport.socket.send(memoryview(data)[: transport.SEND_LIMIT])
        except OSError:
            sent = 0  # EAGAIN, or an error that Twisted's own send will meet and report
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)
