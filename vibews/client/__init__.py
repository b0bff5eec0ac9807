"""Talk to a vibews hub as an agent (or a dashboard's script), without ever losing a message.

* :class:`Client` for Twisted programs (methods return Deferreds);
* :class:`BlockingClient` for plain synchronous code (the reactor runs on a thread of its own);
* :class:`AsyncClient` for asyncio programs.

See ``docs/client.rst``.
"""

from typing import TYPE_CHECKING

from vibews.client.core import Ack, Answer, Client, Welcome
from vibews.client.errors import (
    AlreadyAnswered,
    AuthenticationFailed,
    ClientStopped,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InternalError,
    InvalidMessage,
    QuestionClosed,
    QuestionExpired,
    QuestionWithdrawn,
    RateLimited,
    Refused,
    Unavailable,
    UnknownQuestion,
    UnknownType,
    VibewsError,
)

if TYPE_CHECKING:
    from vibews.client.threaded import AsyncClient, BlockingClient


def __getattr__(name: str) -> object:
    # The threaded clients import crochet; a Twisted program that only needs Client does not.
    if name in ("BlockingClient", "AsyncClient"):
        from vibews.client import threaded

        return getattr(threaded, name)
    raise AttributeError(name)


__all__ = [
    "Ack",
    "AlreadyAnswered",
    "Answer",
    "AsyncClient",
    "AuthenticationFailed",
    "BlockingClient",
    "Client",
    "ClientStopped",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "InternalError",
    "InvalidMessage",
    "QuestionClosed",
    "QuestionExpired",
    "QuestionWithdrawn",
    "RateLimited",
    "Refused",
    "Unavailable",
    "UnknownQuestion",
    "UnknownType",
    "VibewsError",
    "Welcome",
]
