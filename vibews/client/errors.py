"""What can go wrong for a client, one exception class per cause, so callers (and the ``vibews``
command's exit codes) can tell them apart without parsing text.

Every message is one line that says what happened and, where there is one, how to fix it.
"""

from __future__ import annotations


class VibewsError(Exception):
    """Base class of every error the client raises."""


class ConnectionFailed(VibewsError):
    """The hub could not be reached (refused, unknown host, TLS failure) or stopped being reachable
    before something could be done."""


class AuthenticationFailed(VibewsError):
    """The hub refused the opening handshake (401 or 403): the token is wrong, revoked or missing.

    Reconnecting with the same token cannot help, so the client stops for good."""

    def __init__(self, status: int, reason: str, url: str) -> None:
        hint = {
            401: "check --token / VIBEWS_TOKEN (create one with 'vibews token add NAME --role ...')",
            403: "the hub refused this origin; see --allow-origin on the server",
        }.get(status, "check --url / VIBEWS_URL")
        super().__init__(f"{url} refused the connection: HTTP {status} {reason}; {hint}")
        self.status = status
        self.reason = reason


class ClientStopped(VibewsError):
    """The client was closed while the operation was still waiting."""


class Refused(VibewsError):
    """The hub refused a message with an ``error`` (the contract's error codes). The message was not
    stored: nothing happened."""

    code = "refused"

    def __init__(self, code: str, message: str, message_id: str | None) -> None:
        super().__init__(f"the hub refused the message ({code}): {message}")
        self.code = code
        self.text = message
        self.message_id = message_id


class InvalidMessage(Refused):
    """``invalid_message``/``invalid_json``: the message's shape or a field is wrong."""


class Forbidden(Refused):
    """``forbidden``: this token's role may not send this type (or not for this question)."""


class UnknownType(Refused):
    """``unknown_type``."""


class UnknownQuestion(Refused):
    """``unknown_question``: no question has that id."""


class AlreadyAnswered(Refused):
    """``already_answered``: the question is no longer open."""


class Conflict(Refused):
    """``conflict``: another agent already asked a question with this id."""


class RateLimited(Refused):
    """``rate_limited``; the client retries these itself, so callers only see it when asked to."""


class Unavailable(Refused):
    """``unavailable``: the hub's store cannot take writes right now; the client retries."""


class InternalError(Refused):
    """``internal_error`` on the hub."""


_BY_CODE: dict[str, type[Refused]] = {
    "invalid_json": InvalidMessage,
    "invalid_message": InvalidMessage,
    "forbidden": Forbidden,
    "unknown_type": UnknownType,
    "unknown_question": UnknownQuestion,
    "already_answered": AlreadyAnswered,
    "conflict": Conflict,
    "rate_limited": RateLimited,
    "unavailable": Unavailable,
    "internal_error": InternalError,
}

# Codes a later attempt can succeed with: the message is kept and sent again after a backoff.
RETRIED_CODES = frozenset({"rate_limited", "unavailable"})


def refusal(code: str, message: str, message_id: str | None) -> Refused:
    """The exception for an ``error`` frame's code (an unknown code still gives a Refused)."""
    return _BY_CODE.get(code, Refused)(code, message, message_id)


class QuestionClosed(VibewsError):
    """A question ended without an answer for this client."""

    def __init__(self, question_id: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.question_id = question_id
        self.reason = reason


class QuestionExpired(QuestionClosed):
    """The question's deadline passed before anybody answered (``question_closed``, ``expired``)."""

    def __init__(self, question_id: str) -> None:
        super().__init__(
            question_id, "expired", f"question {question_id!r} expired: nobody answered in time"
        )


class QuestionWithdrawn(QuestionClosed):
    """The question was withdrawn (by this agent, perhaps from another connection)."""

    def __init__(self, question_id: str) -> None:
        super().__init__(question_id, "withdrawn", f"question {question_id!r} was withdrawn")
