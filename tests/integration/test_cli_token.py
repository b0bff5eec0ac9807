"""`vibews token add`, run as a real process."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from vibews.tokens import Identity, is_valid_secret, load_tokens

ROOT = Path(__file__).resolve().parents[2]


def vibews(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "vibews.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_usage_error(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("vibews: ")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_add_prints_only_the_secret(tmp_path: Path) -> None:
    """stdout is the new secret and a newline, nothing else; the file gets its digest."""
    tokens = tmp_path / "tokens"
    result = vibews(
        tmp_path, "token", "add", "alice", "--role", "dashboard", "--tokens", str(tokens)
    )
    assert result.returncode == 0, result.stderr
    secret = result.stdout.removesuffix("\n")
    assert result.stdout == secret + "\n"
    assert len(secret) == 43 and is_valid_secret(secret)
    assert secret not in tokens.read_text()
    assert hashlib.sha256(secret.encode()).hexdigest() in tokens.read_text()
    assert load_tokens(tokens).lookup(secret) == Identity("alice", "dashboard")
    assert result.stderr.count("\n") == 1
    assert "'alice'" in result.stderr and secret not in result.stderr


def test_add_to_default_data_directory(tmp_path: Path) -> None:
    """Without --tokens or --data the file is ./vibews-data/tokens, created 0600."""
    result = vibews(tmp_path, "token", "add", "claude", "--role", "agent")
    assert result.returncode == 0, result.stderr
    tokens = tmp_path / "vibews-data" / "tokens"
    assert load_tokens(tokens).lookup(result.stdout.strip()) == Identity("claude", "agent")
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600


def test_add_to_data_directory(tmp_path: Path) -> None:
    """--data DIR uses DIR/tokens."""
    result = vibews(tmp_path, "token", "add", "claude", "--role", "agent", "--data", "srv")
    assert result.returncode == 0, result.stderr
    assert load_tokens(tmp_path / "srv" / "tokens").names("agent") == ["claude"]


def test_add_twice_rotates(tmp_path: Path) -> None:
    """A second token for the same name is appended and both stay valid."""
    first = vibews(tmp_path, "token", "add", "claude", "--role", "agent").stdout.strip()
    second = vibews(tmp_path, "token", "add", "claude", "--role", "agent").stdout.strip()
    table = load_tokens(tmp_path / "vibews-data" / "tokens")
    assert first != second
    assert table.lookup(first) == table.lookup(second) == Identity("claude", "agent")


@pytest.mark.parametrize(
    "args",
    [
        ["token", "add", "al/ice", "--role", "dashboard"],
        ["token", "add", "alice", "--role", "admin"],
        ["token", "add", "alice"],
        ["token", "add", "alice", "--role", "agent", "--tokens", "t", "--data", "d"],
        ["token", "add"],
        ["token"],
        [],
        ["nonsense"],
    ],
    ids=[
        "bad-name",
        "bad-role",
        "no-role",
        "tokens-and-data",
        "no-name",
        "no-action",
        "none",
        "bad",
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    """Bad arguments give one 'vibews: ' line on stderr, exit 2, and create nothing."""
    result = vibews(tmp_path, *args)
    assert_usage_error(result)
    assert list(tmp_path.iterdir()) == []


def test_malformed_tokens_file_exit_2(tmp_path: Path) -> None:
    """A tokens file that does not parse is reported with its line and left unchanged."""
    tokens = tmp_path / "tokens"
    tokens.write_text("# ok\nbob admin sha256:" + "0" * 64 + "\n")
    before = tokens.read_text()
    result = vibews(tmp_path, "token", "add", "alice", "--role", "dashboard", "--tokens", "tokens")
    assert_usage_error(result)
    assert result.stderr == ("vibews: tokens:2: role must be 'agent' or 'dashboard', got 'admin'\n")
    assert tokens.read_text() == before


def test_name_with_other_role_exit_2(tmp_path: Path) -> None:
    """A name that already has the other role is refused."""
    assert vibews(tmp_path, "token", "add", "alice", "--role", "dashboard").returncode == 0
    result = vibews(tmp_path, "token", "add", "alice", "--role", "agent")
    assert_usage_error(result)
    assert "already has role 'dashboard'" in result.stderr


def test_unwritable_path_exit_2(tmp_path: Path) -> None:
    """A tokens path that cannot be created is one error line, not a traceback."""
    (tmp_path / "blocker").write_text("")
    result = vibews(tmp_path, "token", "add", "a", "--role", "agent", "--tokens", "blocker/tokens")
    assert_usage_error(result)
    assert "blocker/tokens" in result.stderr


def test_help_explains_each_option(tmp_path: Path) -> None:
    """--help at each level exits 0 and documents the subcommands and options."""
    top = vibews(tmp_path, "--help")
    assert top.returncode == 0
    assert "token" in top.stdout
    add = vibews(tmp_path, "token", "add", "--help")
    assert add.returncode == 0
    for word in ["NAME", "--role", "agent", "dashboard", "--tokens", "--data", "vibews-data"]:
        assert word in add.stdout
    assert add.stderr == ""
