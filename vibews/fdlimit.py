"""Raise the open-files soft limit at start: every connection is a file descriptor, and the usual
soft limit (1024) would refuse connections long before ``--max-connections`` (10,000) is reached.
The hard limit is the administrator's ceiling; the soft one is ours to raise up to it."""

from __future__ import annotations

import resource

from twisted.logger import Logger

_log = Logger()

# Descriptors that are not client connections: the store, listeners, logs, the tokens watcher.
SPARE = 64


def raise_open_files_limit(max_connections: int) -> tuple[int, int]:
    """Set the soft ``RLIMIT_NOFILE`` to the hard limit; warn when even that is below what
    ``max_connections`` needs. Returns the (soft, hard) limits now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as error:
            _log.warn("cannot raise the open files limit: {error}", error=str(error))
    needed = max_connections + SPARE
    if soft != resource.RLIM_INFINITY and soft < needed:
        _log.warn(
            "open files limit {limit} is below the {needed} that --max-connections {max} needs;"
            " connections past it will be refused (raise the hard limit: ulimit -Hn, LimitNOFILE=)",
            limit=soft,
            needed=needed,
            max=max_connections,
        )
    return soft, hard
