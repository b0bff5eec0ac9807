"""Admitting WebSocket opening handshakes: the Origin check, then the token."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from vibews.auth import (
    SUBPROTOCOL,
    TOKEN_SUBPROTOCOL_PREFIX,
    Admission,
    Denied,
    Gate,
    HandshakeRequest,
    normalize_origin,
    origin_allowed,
)
from vibews.tokens import Identity, TokenTable, digest_secret, parse_tokens

AGENT = "agent-secret-0123456789abcdef"
DASHBOARD = "dashboard_secret_0123456789"
UNKNOWN = "unknown-secret-0123456789"
TABLE = parse_tokens(
    f"claude agent sha256:{digest_secret(AGENT)}\n"
    f"alice dashboard sha256:{digest_secret(DASHBOARD)}\n"
)
CLAUDE = Identity("claude", "agent")
ALICE = Identity("alice", "dashboard")


def request(
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Sequence[str]] | None = None,
    protocols: Sequence[str] = (),
    secure: bool = False,
    host: str | None = "hub.example:3001",
) -> HandshakeRequest:
    all_headers = {} if host is None else {"host": host}
    all_headers.update(headers or {})
    return HandshakeRequest(all_headers, params or {}, protocols, secure)


def admit(req: HandshakeRequest, allowed: Sequence[str] = ()) -> Admission:
    return Gate(lambda: TABLE, allowed).admit(req)


def denied(req: HandshakeRequest, allowed: Sequence[str] = ()) -> Denied:
    with pytest.raises(Denied) as info:
        admit(req, allowed)
    return info.value


# Token sources


@pytest.mark.parametrize(
    "value",
    [f"Bearer {AGENT}", f"bearer {AGENT}", f"BEARER   {AGENT}", f"Bearer\t{AGENT} "],
    ids=repr,
)
def test_bearer_header(value: str) -> None:
    """Authorization: Bearer admits; the scheme is case-insensitive and spaces may repeat."""
    admission = admit(request({"authorization": value}))
    assert admission == Admission(CLAUDE, digest_secret(AGENT), None)


def test_subprotocol_token() -> None:
    """A browser's vibews.token.<secret> subprotocol admits, and vibews.v1 is selected."""
    admission = admit(request(protocols=[SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + DASHBOARD]))
    assert admission == Admission(ALICE, digest_secret(DASHBOARD), SUBPROTOCOL)


def test_query_token() -> None:
    """?token=<secret> admits as a last resort."""
    admission = admit(request(params={"token": [DASHBOARD]}))
    assert admission.identity == ALICE


def test_first_query_token_is_used() -> None:
    """With several token parameters the first decides."""
    assert admit(request(params={"token": [AGENT, "bad"]})).identity == CLAUDE
    assert denied(request(params={"token": ["bad", AGENT]})).status == 401


def test_first_token_subprotocol_is_used() -> None:
    """With several token subprotocols the first decides."""
    good, bad = TOKEN_SUBPROTOCOL_PREFIX + AGENT, TOKEN_SUBPROTOCOL_PREFIX + UNKNOWN
    assert admit(request(protocols=[good, bad])).identity == CLAUDE
    assert denied(request(protocols=[bad, good])).status == 401


def test_admission_digest_finds_identity_again() -> None:
    """The admission's digest lets a reload re-check the connection without the secret."""
    admission = admit(request({"authorization": f"Bearer {AGENT}"}))
    assert TABLE.identity_for_digest(admission.digest) == CLAUDE


# Precedence


def test_invalid_bearer_refused_even_with_valid_query_token() -> None:
    """A present Bearer header decides alone: invalid there means 401 despite a valid ?token=."""
    err = denied(request({"authorization": f"Bearer {UNKNOWN}"}, params={"token": [AGENT]}))
    assert err.status == 401


def test_invalid_bearer_refused_even_with_valid_subprotocol() -> None:
    """The Bearer header comes before the subprotocol token."""
    req = request(
        {"authorization": "Bearer short"}, protocols=[TOKEN_SUBPROTOCOL_PREFIX + DASHBOARD]
    )
    assert denied(req).status == 401


def test_invalid_subprotocol_refused_even_with_valid_query_token() -> None:
    """The subprotocol token comes before the query parameter."""
    req = request(protocols=[TOKEN_SUBPROTOCOL_PREFIX + UNKNOWN], params={"token": [AGENT]})
    assert denied(req).status == 401


def test_bearer_wins_over_other_sources() -> None:
    """With valid tokens in several places, the Bearer header's identity is the one admitted."""
    req = request(
        {"authorization": f"Bearer {AGENT}"},
        params={"token": [DASHBOARD]},
        protocols=[TOKEN_SUBPROTOCOL_PREFIX + DASHBOARD],
    )
    assert admit(req).identity == CLAUDE


def test_subprotocol_wins_over_query() -> None:
    """With valid tokens in the subprotocol and the query, the subprotocol's is admitted."""
    req = request(protocols=[TOKEN_SUBPROTOCOL_PREFIX + AGENT], params={"token": [DASHBOARD]})
    assert admit(req).identity == CLAUDE


@pytest.mark.parametrize(
    "value", [f"Basic {AGENT}", "Digest username=x", "Token abc", f"Bearer{AGENT}", ""], ids=repr
)
def test_non_bearer_authorization_is_ignored(value: str) -> None:
    """An Authorization header of another scheme is skipped and the next source decides."""
    assert admit(request({"authorization": value}, params={"token": [DASHBOARD]})).identity == ALICE
    assert denied(request({"authorization": value})).reason == "missing token"


# Refusals


def test_missing_token() -> None:
    """No token anywhere: 401 missing token."""
    err = denied(request(protocols=[SUBPROTOCOL]))
    assert (err.status, err.reason) == (401, "missing token")


@pytest.mark.parametrize(
    "secret",
    [
        UNKNOWN,
        AGENT.upper(),
        AGENT + "=",
        "short",
        "",
        "a" * 15,
        "agent+secret/0123456789",
        f"{AGENT}, Bearer {DASHBOARD}",
    ],
    ids=["unknown", "wrong-case", "padding", "short", "empty", "15-chars", "std-b64", "joined"],
)
@pytest.mark.parametrize("source", ["bearer", "subprotocol", "query"])
def test_invalid_token_from_each_source(secret: str, source: str) -> None:
    """Unknown or malformed secrets are 401 from every source, and the reason never shows them."""
    if source == "bearer":
        req = request({"authorization": f"Bearer {secret}"})
    elif source == "subprotocol":
        req = request(protocols=[SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + secret])
    else:
        req = request(params={"token": [secret]})
    err = denied(req)
    assert (err.status, err.reason) == (401, "invalid token")
    if secret:
        assert secret not in str(err)


def test_malformed_secret_refused_even_if_its_digest_is_listed() -> None:
    """A secret that is not base64url of 16+ characters gets 401 even when listed."""
    padded = "padded-secret-0123456789=="
    table = parse_tokens(f"mallory agent sha256:{digest_secret(padded)}\n")
    gate = Gate(lambda: table)
    with pytest.raises(Denied) as info:
        gate.admit(request({"authorization": f"Bearer {padded}"}))
    assert info.value.status == 401


def test_tokens_are_read_on_every_admit() -> None:
    """A reloaded table takes effect for the next handshake."""
    current = [TABLE]
    gate = Gate(lambda: current[0])
    req = request({"authorization": f"Bearer {AGENT}"})
    assert gate.admit(req).identity == CLAUDE
    current[0] = TokenTable()
    with pytest.raises(Denied):
        gate.admit(req)


# Subprotocol selection


@pytest.mark.parametrize(
    ("protocols", "selected"),
    [
        ([SUBPROTOCOL], SUBPROTOCOL),
        ([TOKEN_SUBPROTOCOL_PREFIX + AGENT, SUBPROTOCOL], SUBPROTOCOL),
        ([TOKEN_SUBPROTOCOL_PREFIX + AGENT], None),
        (["chat", "vibews.v2"], None),
        ([], None),
    ],
    ids=["v1-only", "token-then-v1", "token-only", "others", "none"],
)
def test_selected_subprotocol_is_v1_or_none(protocols: list[str], selected: str | None) -> None:
    """vibews.v1 is selected when offered; the token subprotocol is never echoed."""
    admission = admit(request({"authorization": f"Bearer {AGENT}"}, protocols=protocols))
    assert admission.subprotocol == selected


# Origin


@pytest.mark.parametrize(
    ("origin", "host", "secure"),
    [
        ("http://hub.example:3001", "hub.example:3001", False),
        ("HTTP://Hub.Example:3001", "hub.example:3001", False),
        ("http://hub.example", "hub.example", False),
        ("http://hub.example:80", "hub.example", False),
        ("http://hub.example", "hub.example:80", False),
        ("https://hub.example", "hub.example:443", True),
        ("https://hub.example:443", "HUB.example", True),
        ("http://[::1]:3001", "[::1]:3001", False),
        ("http://127.0.0.1:3001", "127.0.0.1:3001", False),
    ],
    ids=repr,
)
def test_same_origin_admitted(origin: str, host: str, secure: bool) -> None:
    """The server's own pages (scheme, host and port of Host, default ports normalised) pass."""
    req = request({"origin": origin, "authorization": f"Bearer {AGENT}"}, host=host, secure=secure)
    assert admit(req).identity == CLAUDE


@pytest.mark.parametrize(
    ("origin", "host", "secure"),
    [
        ("http://evil.example", "hub.example", False),
        ("http://hub.example:3002", "hub.example:3001", False),
        ("http://hub.example:3001", "hub.example:3001", True),
        ("https://hub.example:3001", "hub.example:3001", False),
        ("http://hub.example.evil.example", "hub.example", False),
        ("null", "hub.example", False),
        ("NULL", "hub.example", False),
        ("file://", "hub.example", False),
        ("file:///home/me/page.html", "hub.example", False),
        ("", "hub.example", False),
        ("garbage", "hub.example", False),
        ("http://hub.example, http://evil.example", "hub.example", False),
        ("http://hub.example/path", "hub.example", False),
        ("http://user@hub.example", "hub.example", False),
        ("http://hub.example", "", False),
    ],
    ids=repr,
)
def test_foreign_origin_denied_403(origin: str, host: str, secure: bool) -> None:
    """Any other origin, null, file:// or an unparseable one is 403, even with a valid token."""
    req = request({"origin": origin, "authorization": f"Bearer {AGENT}"}, host=host, secure=secure)
    err = denied(req)
    assert (err.status, err.reason) == (403, "origin not allowed")


def test_origin_without_host_header_denied() -> None:
    """Without a Host header the server's own origin is unknown, so a browser origin is foreign."""
    req = request({"origin": "http://hub.example", "authorization": f"Bearer {AGENT}"}, host=None)
    assert denied(req).status == 403


def test_origin_checked_before_token() -> None:
    """A foreign page gets 403 whether its token is missing, invalid or valid."""
    foreign = {"origin": "https://evil.example"}
    assert denied(request(foreign)).status == 403
    assert denied(request({**foreign, "authorization": f"Bearer {UNKNOWN}"})).status == 403
    assert denied(request({**foreign, "authorization": f"Bearer {AGENT}"})).status == 403


def test_no_origin_header_is_not_checked() -> None:
    """Non-browser clients send no Origin and are judged on the token alone."""
    assert admit(request({"authorization": f"Bearer {AGENT}"}, host=None)).identity == CLAUDE


@pytest.mark.parametrize(
    ("allowed", "origin"),
    [
        ("https://dash.example", "https://dash.example"),
        ("HTTPS://Dash.Example:443/", "https://dash.example"),
        ("https://dash.example", "https://DASH.example:443"),
        ("http://localhost:5173", "http://localhost:5173"),
    ],
    ids=repr,
)
def test_allowed_origin_admitted(allowed: str, origin: str) -> None:
    """An origin listed with --allow-origin passes, both sides normalised."""
    req = request({"origin": origin, "authorization": f"Bearer {AGENT}"})
    assert admit(req, [allowed]).identity == CLAUDE


def test_allowed_origin_is_exact() -> None:
    """Listing one origin does not allow its other ports or schemes."""
    allowed = ["https://dash.example"]
    for origin in ["http://dash.example", "https://dash.example:8443", "https://x.dash.example"]:
        req = request({"origin": origin, "authorization": f"Bearer {AGENT}"})
        assert denied(req, allowed).status == 403


@pytest.mark.parametrize("origin", ["null", "file://", "file:///tmp/page.html"], ids=repr)
def test_null_and_file_origins_allowed_with_null(origin: str) -> None:
    """--allow-origin null lets null and file:// pages connect."""
    req = request({"origin": origin, "authorization": f"Bearer {AGENT}"})
    assert admit(req, ["null"]).identity == CLAUDE
    assert admit(req, ["NULL"]).identity == CLAUDE


@pytest.mark.parametrize("bad", ["", "dash.example", "https://dash.example/app", "ftp:"], ids=repr)
def test_unparseable_allowed_origin_is_refused_at_construction(bad: str) -> None:
    """A typo in --allow-origin fails at start instead of silently allowing nothing."""
    with pytest.raises(ValueError, match="not an origin"):
        Gate(lambda: TABLE, [bad])


def test_origin_allowed_function() -> None:
    """origin_allowed compares against normalised origins and the request's Host."""
    allowed = frozenset({"https://dash.example"})
    assert origin_allowed("https://dash.example:443", "hub", True, allowed)
    assert origin_allowed("https://hub:8443", "hub:8443", True, allowed)
    assert not origin_allowed("http://hub:8443", "hub:8443", True, allowed)
    assert not origin_allowed("null", "hub", False, allowed)
    assert origin_allowed("null", "hub", False, frozenset({"null"}))


@pytest.mark.parametrize(
    ("origin", "normalized"),
    [
        ("http://example.com", "http://example.com"),
        ("HTTP://EXAMPLE.com:80", "http://example.com"),
        ("https://example.com:443", "https://example.com"),
        ("https://example.com:80", "https://example.com:80"),
        ("http://example.com:443", "http://example.com:443"),
        ("http://example.com/", "http://example.com"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://[::1]:80", "http://[::1]"),
        ("chrome-extension://abcdef", "chrome-extension://abcdef"),
        (" https://example.com ", "https://example.com"),
    ],
    ids=repr,
)
def test_normalize_origin(origin: str, normalized: str) -> None:
    """Origins are lower-cased and lose default ports, so equal origins compare equal."""
    assert normalize_origin(origin) == normalized


@pytest.mark.parametrize(
    "origin",
    [
        "",
        "null",
        "example.com",
        "http://",
        "http://example.com/path",
        "http://example.com?x=1",
        "http://example.com#frag",
        "http://user:pw@example.com",
        "http://example.com:99999",
        "http://example.com:port",
        "http://exa mple.com",
        "http://a.com, http://b.com",
        "file:///etc/passwd",
    ],
    ids=repr,
)
def test_normalize_origin_rejects(origin: str) -> None:
    """Anything that is not scheme://host[:port] is not an origin."""
    assert normalize_origin(origin) is None


def test_denied_is_status_and_reason() -> None:
    """Denied carries the HTTP status and a short reason for the status line."""
    err = Denied(401, "missing token")
    assert (err.status, err.reason, str(err)) == (401, "missing token", "401 missing token")
