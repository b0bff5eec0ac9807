"""The cyclic garbage collector's thresholds for a server process (``twistd vibews`` only).

CPython starts a young-generation collection after every 700 net allocations of container
objects. Each connection holds a few dozen such objects (Autobahn's protocol, Twisted's transport,
Deferreds, the hub's session), and a handshake allocates a few hundred more that die young, so
while thousands of clients connect the collector ran every few handshakes and cost about a fifth
of the server's CPU per handshake (``bench/run --scenario idle``; the CPU time per handshake fell
from about 420 to 340 µs with a threshold of 10,000, and to 305-330 µs with the collector off).
Collecting ten times less often collects the same garbage, in larger batches: reference cycles
left by closed connections live a little longer (at most about 10,000 young objects, a few MiB).

Only the twistd service calls this: an application embedding vibews keeps its own settings.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


def tune_garbage_collector() -> tuple[int, int, int]:
    """Raise the young generation's threshold (never lower it); returns the thresholds now set."""
    young, middle, old = gc.get_threshold()
    if 0 < young < YOUNG_THRESHOLD:
        gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    return gc.get_threshold()
