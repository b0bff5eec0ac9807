"""Exit statuses of the ``vibews`` command, one per outcome a script may want to tell apart."""

from __future__ import annotations

OK = 0
FAILURE = 1  # something unexpected; still one line, never a traceback
USAGE = 2  # bad arguments, a bad tokens file or configuration
DECLINED = 3  # ask: the person declined
CANCELLED = 4  # ask: the person dismissed the question without choosing
EXPIRED = 5  # ask: nobody answered before the --timeout
WITHDRAWN = 6  # ask: the question was withdrawn
REFUSED = 7  # the hub refused the message (error code printed)
AUTH = 8  # the hub refused the token (HTTP 401/403)
UNREACHABLE = 9  # no hub at --url (refused, unknown host, TLS failure)
INTERRUPTED = 130  # Ctrl-C

TABLE = (
    (OK, "success (ask: the question was answered)"),
    (FAILURE, "an unexpected failure"),
    (USAGE, "bad arguments, tokens file or options"),
    (DECLINED, "ask: the person declined"),
    (CANCELLED, "ask: the person cancelled"),
    (EXPIRED, "ask: nobody answered before --timeout"),
    (WITHDRAWN, "ask: the question was withdrawn"),
    (REFUSED, "the hub refused the message (its error code is printed)"),
    (AUTH, "the hub refused the token"),
    (UNREACHABLE, "the hub cannot be reached"),
    (INTERRUPTED, "interrupted (Ctrl-C)"),
)


def epilog() -> str:
    return "exit status:\n" + "\n".join(f"  {code:>3}  {meaning}" for code, meaning in TABLE)
