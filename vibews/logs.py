"""Structured logs: ``twistd --logger vibews.logs.json_observer`` writes one JSON object per line.

twistd loads ``--logger`` with ``namedAny`` and calls it with no arguments before it starts logging
(``twisted.application.app.AppLogger.start``), so :func:`json_observer` is a zero-argument factory.
Each line is Twisted's own ``eventAsJSON`` of the event (so ``eventFromJSON`` reads it back and
``formatEvent`` still renders it), plus three plain fields a log shipper can use without knowing
Twisted: ``@timestamp`` (RFC 3339, UTC), ``@level`` (``debug``, ``info``, ``warn``, ``error`` or
``critical``) and ``@text`` (the message the text logger would have written, with the traceback
when the event carries a failure). They start with ``@`` because an event's own fields are Python
keyword names and can never collide with them (legacy ``log.msg`` events already use ``time``,
``message`` and ``system``).

Unlike the text logger, this writes *every* field of an event, not only those its format names: an
event must never carry a secret in any field (``tests/integration/test_no_secrets_in_logs.py``
checks every field, not only the formatted text).
"""

from __future__ import annotations

import sys
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LoggingFile,
    LogLevel,
    eventAsJSON,
    eventAsText,
)

from vibews.timestamps import format_rfc3339

__all__ = ["json_line", "json_observer"]


def json_line(event: dict[str, Any]) -> str:
    """One event as one line of JSON, newline included.

    The event is copied first: the same dict goes to every observer, and ``eventAsJSON`` adds
    ``log_flattened`` to what it is given.
    """
    record = dict(event)
    level = event.get("log_level")
    if isinstance(level, type(LogLevel.info)):
        record["@level"] = level.name
    log_time = event.get("log_time")
    if isinstance(log_time, int | float):
        record["@timestamp"] = format_rfc3339(log_time)
    record["@text"] = eventAsText(event, includeTimestamp=False, includeSystem=False)
    # eventAsJSON escapes newlines inside strings, so a multi-line message stays on one line.
    return eventAsJSON(record) + "\n"


def _real_stdout() -> IO[Any]:
    """The process's standard output, even once twistd has redirected ``sys.stdout`` into the log
    system: writing a log line there would log it again, forever."""
    if isinstance(sys.stdout, LoggingFile) and sys.__stdout__ is not None:
        return sys.__stdout__
    return sys.stdout


def json_observer() -> ILogObserver:
    """An ``ILogObserver`` writing each event to standard output as one line of JSON, flushed at
    once (a journal or a container runtime reads a pipe, and a buffered line is a lost line on a
    crash). A zero-argument factory, as ``twistd --logger`` requires."""
    observer: ILogObserver = FileLogObserver(_real_stdout(), json_line)
    return observer
