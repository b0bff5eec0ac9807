"""The tokens file: who may connect, under which name and role (pure: no Twisted)."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import attrs

Role = Literal["agent", "dashboard"]
ROLES: tuple[Role, ...] = ("agent", "dashboard")

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{16,}")
_DIGEST_FIELD = re.compile(r"sha256:([0-9A-Fa-f]{64})")
_ROLE_BY_NAME: dict[str, Role] = {role: role for role in ROLES}
_NAME_RULE = "1 to 64 characters of A-Z a-z 0-9 . _ -"
_LINE_SHAPE = "NAME ROLE sha256:HEX"


@attrs.frozen
class Identity:
    name: str
    role: Role


class TokensFileError(Exception):
    """The tokens file (or a file written next to it) cannot be used.

    ``str(err)`` is one line, ``'<path>:<line>: <what is wrong>'``, ready for a log or a terminal.
    It never contains a secret: values that could be one are described by their length, not shown.
    """

    def __init__(self, path: str, line: int | None, problem: str) -> None:
        super().__init__(path, line, problem)
        self.path = path
        self.line = line
        self.problem = problem

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.problem}"


def is_valid_secret(secret: str) -> bool:
    """Whether ``secret`` has the shape of a token: base64url without padding, at least 16 chars.

    Refusing other shapes before hashing keeps tokens usable in a subprotocol name and a URL.
    """
    return _SECRET.fullmatch(secret) is not None


def digest_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def generate_secret() -> str:
    return secrets.token_urlsafe(32)


def _index(by_digest: Mapping[str, Identity]) -> Mapping[str, tuple[str, Identity]]:
    """Keep each digest next to its identity so a match can be confirmed against the stored copy."""
    return MappingProxyType({d.lower(): (d.lower(), i) for d, i in by_digest.items()})


@attrs.frozen
class TokenTable:
    """Digest -> identity. Immutable: a reload swaps in a new table, nobody sees half of one."""

    _by_digest: Mapping[str, tuple[str, Identity]] = attrs.field(
        factory=dict, converter=_index, hash=False
    )
    # names() by role, computed once: the table never changes, and the hub asks on every
    # dashboard handshake (its welcome lists agents never seen).
    _names: dict[Role | None, tuple[str, ...]] = attrs.field(
        factory=dict, init=False, eq=False, hash=False, repr=False
    )

    def lookup(self, secret: str) -> Identity | None:
        """The identity a presented secret authenticates, or None.

        Why this is constant-time where it matters: the secret is hashed first, and only its
        SHA-256 digest is used to search the table. The time the dict lookup takes can only reveal
        something about that digest, and an attacker cannot choose secrets whose digests creep
        towards a stored one without breaking SHA-256. ``hmac.compare_digest`` then confirms the
        match against the stored digest without an early exit. Malformed secrets are refused first,
        even when their digest is listed, so only well-formed tokens ever authenticate.
        """
        found = self.authenticate(secret)
        return None if found is None else found[0]

    def authenticate(self, secret: str) -> tuple[Identity, str] | None:
        """:meth:`lookup`, also returning the table's own copy of the secret's digest, which a
        connection keeps (one shared string per token rather than one per connection)."""
        if not is_valid_secret(secret):
            return None
        digest = digest_secret(secret)
        entry = self._by_digest.get(digest)
        if entry is None:
            return None
        stored, identity = entry
        return (identity, stored) if hmac.compare_digest(stored, digest) else None

    def identity_for_digest(self, digest: str) -> Identity | None:
        """Who a digest belongs to now: a reload re-checks connections without keeping secrets."""
        entry = self._by_digest.get(digest.lower())
        if entry is None:
            return None
        stored, identity = entry
        return identity if hmac.compare_digest(stored, digest.lower()) else None

    def names(self, role: Role | None = None) -> list[str]:
        cached = self._names.get(role)
        if cached is None:
            identities = (identity for _, identity in self._by_digest.values())
            cached = tuple(sorted({i.name for i in identities if role is None or i.role == role}))
            self._names[role] = cached
        return list(cached)

    def __len__(self) -> int:
        return len(self._by_digest)


def _shown(value: str) -> str:
    """Quote a field in an error message unless it is long enough to be a secret."""
    return repr(value) if len(value) < 16 else f"a {len(value)}-character value"


def _parse_line(fields: list[str]) -> tuple[str, Role, str]:
    """One line's (name, role, digest); raises ValueError with what is wrong."""
    if len(fields) != 3:
        raise ValueError(f"expected '{_LINE_SHAPE}', got {len(fields)} field(s)")
    name, role, digest_field = fields
    if _NAME.fullmatch(name) is None:
        raise ValueError(f"name must be {_NAME_RULE}, got {_shown(name)}")
    checked_role = _ROLE_BY_NAME.get(role)
    if checked_role is None:
        raise ValueError(f"role must be 'agent' or 'dashboard', got {_shown(role)}")
    match = _DIGEST_FIELD.fullmatch(digest_field)
    if match is None:
        hint = ""
        if re.fullmatch(r"[0-9A-Fa-f]{64}", digest_field):
            hint = " (add the 'sha256:' prefix)"
        elif is_valid_secret(digest_field):
            hint = " (it looks like a secret: store its SHA-256, e.g. via 'vibews token add')"
        raise ValueError(f"third field must be 'sha256:' and 64 hex digits{hint}")
    return name, checked_role, match.group(1).lower()


def parse_tokens(text: str, path: str = "<tokens>") -> TokenTable:
    """Build a table from the file's text, refusing the whole file at its first bad line.

    All-or-nothing, so that a half-edited file never silently drops tokens on reload.
    """
    by_digest: dict[str, Identity] = {}
    digest_line: dict[str, int] = {}
    role_of: dict[str, tuple[Role, int]] = {}
    # split("\n") rather than splitlines(): the latter also breaks on form feeds and other
    # characters that editors don't show as line breaks, which would skew the line numbers.
    for number, raw in enumerate(text.split("\n"), start=1):
        fields = raw.split("#", 1)[0].split()
        if not fields:
            continue
        try:
            name, role, digest = _parse_line(fields)
        except ValueError as err:
            raise TokensFileError(path, number, str(err)) from None
        if digest in digest_line:
            problem = f"the same secret is already listed on line {digest_line[digest]}"
            raise TokensFileError(path, number, problem)
        earlier = role_of.setdefault(name, (role, number))
        if earlier[0] != role:
            problem = f"name {name!r} already has role {earlier[0]!r} on line {earlier[1]}"
            raise TokensFileError(path, number, problem)
        by_digest[digest] = Identity(name, role)
        digest_line[digest] = number
    return TokenTable(by_digest)


def _decode(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise TokensFileError(path, line, "not valid UTF-8") from None


def _io_error(path: str, err: OSError) -> TokensFileError:
    return TokensFileError(path, None, err.strerror or type(err).__name__)


def load_tokens(path: str | os.PathLike[str]) -> TokenTable:
    name = os.fspath(path)
    try:
        data = Path(name).read_bytes()
    except OSError as err:
        raise _io_error(name, err) from None
    return parse_tokens(_decode(data, name), name)


def format_token_line(name: str, role: Role, secret: str) -> str:
    return f"{name} {role} sha256:{digest_secret(secret)}\n"


def _check_name_and_role(name: str, role: str) -> None:
    if _NAME.fullmatch(name) is None:
        raise ValueError(f"invalid token name {_shown(name)}: use {_NAME_RULE}")
    if role not in _ROLE_BY_NAME:
        raise ValueError(f"invalid role {_shown(role)}: use 'agent' or 'dashboard'")


def _make_parents(path: str) -> None:
    """Create the missing directories above ``path``, each 0700: they will hold secrets."""
    missing: list[str] = []
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    for directory in reversed(missing):
        os.mkdir(directory, 0o700)


def add_token(path: str | os.PathLike[str], name: str, role: Role) -> str:
    """Append a new token for ``name`` and return its secret, which is shown nowhere else.

    The existing file is parsed first and the result is parsed again before writing, so the command
    never turns a working tokens file into one the server would refuse.
    """
    _check_name_and_role(name, role)
    filename = os.fspath(path)
    secret = generate_secret()
    try:
        _make_parents(filename)
        # One descriptor for both the check and the append; O_APPEND keeps a concurrent
        # writer's lines whole. 0600 only applies when the file is created here.
        fd = os.open(filename, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "r+b") as handle:
            existing = _decode(handle.read(), filename)
            table = parse_tokens(existing, filename)
            other_roles = [r for r in ROLES if r != role and name in table.names(r)]
            if other_roles:
                raise ValueError(f"name {name!r} already has role {other_roles[0]!r} in {filename}")
            addition = format_token_line(name, role, secret)
            if existing and not existing.endswith("\n"):
                addition = "\n" + addition
            try:
                parse_tokens(existing + addition, filename)
            except TokensFileError as err:
                raise ValueError(f"cannot add {name!r}: {err.problem}") from None
            handle.write(addition.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        raise _io_error(filename, err) from None
    return secret


_TOKENS_HEADER = """\
# vibews tokens: one token a line, NAME ROLE sha256:HEX (the SHA-256 of the token's secret).
# ROLE is agent or dashboard; '#' starts a comment. A name may have several lines (key rotation).
# Add a token with: vibews token add NAME --role agent|dashboard
"""

_INITIAL_HEADER = """\
# vibews initial tokens, written at the server's first start.
# Each line is NAME ROLE SECRET. The tokens file ({tokens}) keeps only their SHA-256,
# so these secrets are shown nowhere else: give each to its client, then delete this file.
# An agent sends 'Authorization: Bearer SECRET'; open the dashboard with #token=SECRET.
"""


def _write_new(path: str, text: str) -> None:
    """Write a file that must not exist yet, 0600 from its creation (never readable by others)."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(text.encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())


def create_initial_tokens(
    tokens_path: str | os.PathLike[str], initial_tokens_path: str | os.PathLike[str]
) -> list[tuple[str, Role, str]]:
    """First start: make one agent and one dashboard token so the hub is usable at once.

    The secrets file is written first: if the tokens file then cannot be written, the secrets file
    is removed again, so a later start retries instead of leaving tokens nobody knows. Neither file
    is ever overwritten; an I/O failure raises TokensFileError naming the file.
    """
    tokens_file = os.fspath(tokens_path)
    initial_file = os.fspath(initial_tokens_path)
    created: list[tuple[str, Role, str]] = [
        ("agent", "agent", generate_secret()),
        ("dashboard", "dashboard", generate_secret()),
    ]
    initial_text = _INITIAL_HEADER.format(tokens=tokens_file) + "".join(
        f"{name} {role} {secret}\n" for name, role, secret in created
    )
    tokens_text = _TOKENS_HEADER + "".join(format_token_line(*entry) for entry in created)
    try:
        _make_parents(initial_file)
        _write_new(initial_file, initial_text)
    except OSError as err:
        raise _io_error(initial_file, err) from None
    try:
        _make_parents(tokens_file)
        _write_new(tokens_file, tokens_text)
    except OSError as err:
        os.unlink(initial_file)
        raise _io_error(tokens_file, err) from None
    return created
