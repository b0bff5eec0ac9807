"""Whether a WebSocket opening handshake is admitted: Origin first, then the token (pure)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from urllib.parse import urlsplit

import attrs

from vibews.tokens import Identity, TokenTable

SUBPROTOCOL = "vibews.v1"
TOKEN_SUBPROTOCOL_PREFIX = "vibews.token."  # noqa: S105 (a prefix, not a secret)

_DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
# A registered name or IPv4 address; anything else (spaces, commas from a joined repeated header,
# stray characters) makes the origin unparseable rather than quietly matching something.
_HOSTNAME = re.compile(r"[a-z0-9._~-]+")
_IPV6 = re.compile(r"[0-9a-f:.]+")
_BEARER = re.compile(r"[ \t]*(\S+)(?:[ \t]+(.*))?", re.DOTALL)


@attrs.frozen
class HandshakeRequest:
    """What the gate needs from an opening handshake, independent of Autobahn."""

    headers: Mapping[str, str]
    params: Mapping[str, Sequence[str]]
    protocols: Sequence[str]
    secure: bool


@attrs.frozen
class Admission:
    identity: Identity
    digest: str
    subprotocol: str | None


class Denied(Exception):
    """The handshake is refused with ``status``; ``reason`` goes on the HTTP status line and into
    Autobahn's logs, so it never contains the presented secret."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"


def normalize_origin(origin: str) -> str | None:
    """``scheme://host[:port]``, lower-cased and without a default port, so equal origins compare
    equal however they were written; None when it is not a plain origin (path, userinfo, ...)."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if _SCHEME.fullmatch(scheme) is None or parts.username is not None:
        return None
    if parts.path not in ("", "/") or "?" in origin or "#" in origin:
        return None
    host = parts.hostname
    if not host:
        return None
    if ":" in host:
        if _IPV6.fullmatch(host) is None:
            return None
        host = f"[{host}]"
    elif _HOSTNAME.fullmatch(host) is None:
        return None
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def origin_allowed(origin: str, host: str, secure: bool, allowed: frozenset[str]) -> bool:
    """Whether a browser page at ``origin`` may open a socket here (``allowed`` is normalised).

    Its own pages may, as may the listed origins. Pages with no real origin (``null``, ``file://``)
    only when ``null`` is listed, since any local file or sandboxed frame could be one.
    """
    stripped = origin.strip()
    if stripped.lower() == "null" or stripped.lower().startswith("file:"):
        return "null" in allowed
    normalized = normalize_origin(stripped)
    if normalized is None:
        return False
    if normalized in allowed:
        return True
    own = normalize_origin(f"{'https' if secure else 'http'}://{host.strip()}") if host else None
    return normalized == own


def _presented_secret(request: HandshakeRequest) -> str | None:
    """The token from the first source present, which alone decides (contract, section 6)."""
    authorization = request.headers.get("authorization")
    if authorization is not None:
        match = _BEARER.fullmatch(authorization)
        if match is not None and match.group(1).lower() == "bearer":
            return (match.group(2) or "").strip()
    for protocol in request.protocols:
        if protocol.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            return protocol[len(TOKEN_SUBPROTOCOL_PREFIX) :]
    values = request.params.get("token")
    if values:
        return values[0]
    return None


def _normalize_allowed(origins: Iterable[str]) -> frozenset[str]:
    result = set()
    for origin in origins:
        normalized = "null" if origin.strip().lower() == "null" else normalize_origin(origin)
        if normalized is None:
            raise ValueError(f"not an origin (scheme://host[:port]): {origin!r}")
        result.add(normalized)
    return frozenset(result)


class Gate:
    """Admits or denies opening handshakes.

    ``tokens`` is called on every handshake rather than captured once, so a reloaded tokens file
    takes effect for the very next connection. An unparseable allowed origin raises ValueError here,
    at start-up, rather than silently never matching.
    """

    def __init__(
        self, tokens: Callable[[], TokenTable], allowed_origins: Iterable[str] = ()
    ) -> None:
        self._tokens = tokens
        self._allowed_origins = _normalize_allowed(allowed_origins)

    def allows_origin(self, origin: str, host: str, secure: bool) -> bool:
        """The Origin rule alone, for the HTTP layer to apply before Autobahn parses the header."""
        return origin_allowed(origin, host, secure, self._allowed_origins)

    def admit(self, request: HandshakeRequest) -> Admission:
        # Origin before token, so a foreign page learns nothing about a token's validity.
        origin = request.headers.get("origin")
        if origin is not None:
            host = request.headers.get("host", "")
            if not origin_allowed(origin, host, request.secure, self._allowed_origins):
                raise Denied(403, "origin not allowed")
        secret = _presented_secret(request)
        if secret is None:
            raise Denied(401, "missing token")
        found = self._tokens().authenticate(secret)
        if found is None:
            raise Denied(401, "invalid token")
        identity, digest = found
        subprotocol = SUBPROTOCOL if SUBPROTOCOL in request.protocols else None
        return Admission(identity, digest, subprotocol)
