"""token list and revoke on the file itself: what is shown, what is kept."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from vibews.tokenadmin import list_tokens, revoke_tokens
from vibews.tokens import TokensFileError, add_token, digest_secret, load_tokens


def test_list_shows_keys_never_secrets(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    secret = add_token(tokens, "alice", "dashboard")
    entries = list_tokens(tokens)
    assert [(e.name, e.role, e.key) for e in entries] == [
        ("alice", "dashboard", digest_secret(secret)[:12])
    ]
    assert secret not in repr(entries)


def test_revoke_one_key_keeps_comments_other_lines_and_mode(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# header\n")
    os.chmod(tokens, 0o640)
    old = add_token(tokens, "bot", "agent")
    new = add_token(tokens, "bot", "agent")
    other = add_token(tokens, "alice", "dashboard")
    assert revoke_tokens(tokens, "bot", key=digest_secret(old)[:8].upper()) == 1
    table = load_tokens(tokens)
    assert table.lookup(old) is None
    assert table.lookup(new) is not None and table.lookup(other) is not None
    assert tokens.read_text().startswith("# header\n")
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o640
    assert revoke_tokens(tokens, "bot") == 1
    assert load_tokens(tokens).names() == ["alice"]


def test_revoke_unknown_name_or_bad_file_changes_nothing(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    add_token(tokens, "alice", "dashboard")
    before = tokens.read_bytes()
    with pytest.raises(ValueError, match="no token named 'bob'"):
        revoke_tokens(tokens, "bob")
    with pytest.raises(ValueError, match="with key 'ffff'"):
        revoke_tokens(tokens, "alice", key="ffff")
    assert tokens.read_bytes() == before
    tokens.write_text("alice admin sha256:" + "0" * 64 + "\n")
    with pytest.raises(TokensFileError, match="tokens:1: role"):
        revoke_tokens(tokens, "alice")
    with pytest.raises(TokensFileError, match="No such file"):
        list_tokens(tmp_path / "missing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens"]  # no temporary file left
