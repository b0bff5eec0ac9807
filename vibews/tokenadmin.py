"""``vibews token list`` and ``vibews token revoke``: read and edit the tokens file in place.

Listing shows names, roles and a short key (the first hex digits of the stored SHA-256), never a
secret (the file holds none). Revoking rewrites the file atomically (a new file renamed over the
old one, so the running server, which watches the file, never reads half of it) after checking that
the result still parses.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import attrs

from vibews.tokens import TokensFileError, load_tokens, parse_tokens

KEY_LENGTH = 12


@attrs.frozen
class TokenEntry:
    line: int
    name: str
    role: str
    key: str  # the first KEY_LENGTH hex digits of the secret's SHA-256


def list_tokens(path: str | os.PathLike[str]) -> list[TokenEntry]:
    """Every token line of a valid tokens file, in file order."""
    filename = os.fspath(path)
    load_tokens(filename)  # the whole file must be valid first: same rules as the server's
    entries: list[TokenEntry] = []
    for number, raw in enumerate(_read(filename).split("\n"), start=1):
        fields = raw.split("#", 1)[0].split()
        if fields:
            name, role, digest = fields
            key = digest.removeprefix("sha256:").lower()[:KEY_LENGTH]
            entries.append(TokenEntry(number, name, role, key))
    return entries


def _read(filename: str) -> str:
    try:
        return Path(filename).read_bytes().decode("utf-8-sig")
    except OSError as error:
        raise TokensFileError(filename, None, error.strerror or type(error).__name__) from None


def revoke_tokens(path: str | os.PathLike[str], name: str, key: str | None = None) -> int:
    """Remove the tokens of ``name`` (only the one whose key starts with ``key``, when given) and
    return how many were removed. Raises ValueError when nothing matches."""
    filename = os.fspath(path)
    entries = list_tokens(filename)
    wanted = key.lower() if key else None
    doomed = {
        e.line
        for e in entries
        if e.name == name and (wanted is None or e.key.startswith(wanted[:KEY_LENGTH]))
    }
    if not doomed:
        what = f"no token named {name!r}" + (f" with key {key!r}" if key else "")
        raise ValueError(f"{what} in {filename} (see 'vibews token list')")
    lines = _read(filename).split("\n")
    kept = [line for number, line in enumerate(lines, start=1) if number not in doomed]
    text = "\n".join(kept)
    parse_tokens(text, filename)
    _replace(filename, text)
    return len(doomed)


def _replace(filename: str, text: str) -> None:
    """Write ``text`` next to the file and rename it over the file, keeping the file's mode."""
    directory = os.path.dirname(os.path.abspath(filename))
    mode = os.stat(filename).st_mode & 0o777
    fd, temporary = tempfile.mkstemp(prefix=".tokens-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, filename)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
