"""The tokens file: parsing, lookup, and the two ways vibews writes it."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import attrs
import pytest

from vibews.tokens import (
    ROLES,
    Identity,
    TokensFileError,
    TokenTable,
    add_token,
    create_initial_tokens,
    digest_secret,
    format_token_line,
    generate_secret,
    is_valid_secret,
    load_tokens,
    parse_tokens,
)

SECRET_A = "agent-secret-0123456789abcdef"
SECRET_D = "dashboard_secret_0123456789"
DIGEST_A = hashlib.sha256(SECRET_A.encode()).hexdigest()
DIGEST_D = hashlib.sha256(SECRET_D.encode()).hexdigest()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def parse_error(text: str) -> TokensFileError:
    with pytest.raises(TokensFileError) as info:
        parse_tokens(text, "tokens")
    return info.value


# Secrets


def test_generated_secret_is_43_base64url_chars() -> None:
    """Generated secrets are 32 random bytes in unpadded base64url, so they fit a subprotocol."""
    secrets = {generate_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert len(secret) == 43
        assert is_valid_secret(secret)


@pytest.mark.parametrize("secret", ["a" * 16, "A-Z_a-z_0-9-----", SECRET_A, "x" * 200], ids=repr)
def test_valid_secret_shapes(secret: str) -> None:
    """Any base64url text of 16 characters or more is a valid secret."""
    assert is_valid_secret(secret)


@pytest.mark.parametrize(
    "secret",
    [
        "",
        "a" * 15,
        "abcdefghijklmnop=",
        "abcdefghijklmnopq==",
        "abcdefghijklmno+",
        "abcdefghijklmno/",
        "abcdefghijklmno.",
        "abcdefgh ijklmnop",
        "abcdefghijklmnop\n",
        "abcdefghijklmnopé",
    ],
    ids=repr,
)
def test_invalid_secret_shapes(secret: str) -> None:
    """Padding, standard-base64 characters, whitespace, non-ASCII and short strings are refused."""
    assert not is_valid_secret(secret)


def test_digest_is_lowercase_hex_sha256_of_utf8() -> None:
    """The digest is the lowercase hex SHA-256 of the secret's UTF-8 bytes."""
    assert digest_secret(SECRET_A) == DIGEST_A
    assert digest_secret("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_format_token_line() -> None:
    """A token line is NAME ROLE sha256:HEX and ends with a newline."""
    assert (
        format_token_line("alice", "dashboard", SECRET_D) == f"alice dashboard sha256:{DIGEST_D}\n"
    )


# Parsing


def test_parse_valid_file_with_comments_and_blank_lines() -> None:
    """Comments (whole-line or after a token), blank lines and any whitespace are ignored."""
    text = (
        "# the team's tokens\n"
        "\n"
        f"claude  agent\tsha256:{DIGEST_A}   # rotated 2026-11\n"
        "   \t  \n"
        f"alice dashboard sha256:{DIGEST_D}#no space before the comment\r\n"
        "# trailing comment"
    )
    table = parse_tokens(text)
    assert len(table) == 2
    assert table.lookup(SECRET_A) == Identity("claude", "agent")
    assert table.lookup(SECRET_D) == Identity("alice", "dashboard")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n   # another\n"], ids=repr)
def test_file_without_tokens_is_an_empty_table(text: str) -> None:
    """A file with no token lines is valid and admits nobody."""
    table = parse_tokens(text)
    assert len(table) == 0
    assert table.names() == []
    assert table.lookup(SECRET_A) is None


def test_hex_digest_is_case_insensitive_and_stored_lowercase() -> None:
    """An upper-case hex digest matches, and is found again by its lower-case form."""
    table = parse_tokens(f"claude agent sha256:{DIGEST_A.upper()}\n")
    assert table.lookup(SECRET_A) == Identity("claude", "agent")
    assert table.identity_for_digest(DIGEST_A) == Identity("claude", "agent")


def test_name_may_have_several_tokens() -> None:
    """Key rotation: one name on several lines, each secret authenticates as that name."""
    table = parse_tokens(f"claude agent sha256:{DIGEST_A}\nclaude agent sha256:{DIGEST_D}\n")
    assert table.lookup(SECRET_A) == table.lookup(SECRET_D) == Identity("claude", "agent")
    assert table.names() == ["claude"]
    assert len(table) == 2


def test_names_sorted_unique_and_by_role() -> None:
    """names() lists each name once, sorted, optionally only one role's."""
    digests = [digest_secret(f"secret-number-{i:04d}") for i in range(4)]
    text = (
        f"zed agent sha256:{digests[0]}\n"
        f"bob dashboard sha256:{digests[1]}\n"
        f"amy agent sha256:{digests[2]}\n"
        f"zed agent sha256:{digests[3]}\n"
    )
    table = parse_tokens(text)
    assert table.names() == ["amy", "bob", "zed"]
    assert table.names("agent") == ["amy", "zed"]
    assert table.names("dashboard") == ["bob"]


@pytest.mark.parametrize("name", ["a", "A.b_c-9", "x" * 64], ids=repr)
def test_valid_names(name: str) -> None:
    """Names are 1 to 64 characters of letters, digits, dot, underscore and dash."""
    assert parse_tokens(f"{name} agent sha256:{DIGEST_A}").names() == [name]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("claude agent", "tokens:2: expected 'NAME ROLE sha256:HEX', got 2 field(s)"),
        (
            f"claude agent sha256:{DIGEST_A} extra",
            "tokens:2: expected 'NAME ROLE sha256:HEX', got 4 field(s)",
        ),
        (
            f"cla/ude agent sha256:{DIGEST_A}",
            "tokens:2: name must be 1 to 64 characters of A-Z a-z 0-9 . _ -, got 'cla/ude'",
        ),
        (
            f"{'x' * 65} agent sha256:{DIGEST_A}",
            "tokens:2: name must be 1 to 64 characters of A-Z a-z 0-9 . _ -, "
            "got a 65-character value",
        ),
        (
            f"claude admin sha256:{DIGEST_A}",
            "tokens:2: role must be 'agent' or 'dashboard', got 'admin'",
        ),
        (
            f"claude Agent sha256:{DIGEST_A}",
            "tokens:2: role must be 'agent' or 'dashboard', got 'Agent'",
        ),
        (
            f"claude agent {DIGEST_A}",
            "tokens:2: third field must be 'sha256:' and 64 hex digits (add the 'sha256:' prefix)",
        ),
        (
            f"claude agent sha1:{DIGEST_A}",
            "tokens:2: third field must be 'sha256:' and 64 hex digits",
        ),
        (
            f"claude agent sha256:{DIGEST_A[:-1]}",
            "tokens:2: third field must be 'sha256:' and 64 hex digits",
        ),
        (
            f"claude agent sha256:{DIGEST_A}0",
            "tokens:2: third field must be 'sha256:' and 64 hex digits",
        ),
        (
            f"claude agent sha256:{DIGEST_A[:-1]}g",
            "tokens:2: third field must be 'sha256:' and 64 hex digits",
        ),
    ],
    ids=[
        "too-few-fields",
        "too-many-fields",
        "name-bad-char",
        "name-too-long",
        "unknown-role",
        "role-wrong-case",
        "no-prefix",
        "other-hash",
        "hex-too-short",
        "hex-too-long",
        "not-hex",
    ],
)
def test_malformed_line_reported_with_line_number(line: str, expected: str) -> None:
    """Each kind of malformed line fails the whole file, naming its 1-based line and the problem."""
    err = parse_error(f"# header\n{line}\n")
    assert str(err) == expected
    assert (err.path, err.line) == ("tokens", 2)


def test_secret_pasted_instead_of_digest_is_refused_without_echoing_it() -> None:
    """A raw secret in the digest column gets a hint, and the secret is not in the message."""
    err = parse_error(f"claude agent {SECRET_A}\n")
    assert err.line == 1
    assert "looks like a secret" in str(err)
    assert SECRET_A not in str(err)


@pytest.mark.parametrize("column", [0, 1], ids=["name", "role"])
def test_secret_in_wrong_column_not_echoed(column: int) -> None:
    """Error messages describe a long field by its length, so a misplaced secret never leaks."""
    fields = ["claude", "agent", f"sha256:{DIGEST_A}"]
    fields[column] = "secret+with/chars" + "x" * 60
    err = parse_error(" ".join(fields))
    assert "secret" not in str(err)
    assert "-character value" in str(err)


@pytest.mark.parametrize("upper", [False, True], ids=["same-case", "other-case"])
def test_same_digest_twice_is_an_error(upper: bool) -> None:
    """The same secret on two lines (whatever the hex case) is reported at the second line."""
    second = DIGEST_A.upper() if upper else DIGEST_A
    err = parse_error(f"claude agent sha256:{DIGEST_A}\n\nclaude agent sha256:{second}\n")
    assert str(err) == "tokens:3: the same secret is already listed on line 1"


def test_one_name_with_two_roles_is_an_error() -> None:
    """A name is an agent or a dashboard, never both: the conflicting line is reported."""
    err = parse_error(f"alice dashboard sha256:{DIGEST_D}\nalice agent sha256:{DIGEST_A}\n")
    assert str(err) == "tokens:2: name 'alice' already has role 'dashboard' on line 1"


def test_tokens_file_error_without_line() -> None:
    """An error about the whole file has no line part."""
    err = TokensFileError("/srv/tokens", None, "No such file or directory")
    assert str(err) == "/srv/tokens: No such file or directory"


# Lookup


@pytest.fixture
def table() -> TokenTable:
    return parse_tokens(f"claude agent sha256:{DIGEST_A}\nalice dashboard sha256:{DIGEST_D}\n")


def test_lookup_unknown_secret(table: TokenTable) -> None:
    """A well-formed secret that is not listed authenticates nobody."""
    assert table.lookup(generate_secret()) is None


def test_lookup_is_case_sensitive(table: TokenTable) -> None:
    """base64url is case-sensitive: a secret with its case changed is another, unknown secret."""
    assert table.lookup(SECRET_A.upper()) is None
    assert table.lookup(SECRET_D.swapcase()) is None


@pytest.mark.parametrize(
    "secret", ["short-secret", "padded-secret-012345==", "plus+slash/secret00"], ids=repr
)
def test_lookup_refuses_malformed_secret_even_if_listed(secret: str) -> None:
    """A secret that is not base64url of 16+ characters is refused even if its digest is listed."""
    listed = parse_tokens(f"mallory agent sha256:{digest_secret(secret)}\n")
    assert listed.identity_for_digest(digest_secret(secret)) is not None
    assert listed.lookup(secret) is None


def test_identity_for_digest(table: TokenTable) -> None:
    """A connection's stored digest maps back to its identity, and unknown digests to None."""
    assert table.identity_for_digest(DIGEST_A) == Identity("claude", "agent")
    assert table.identity_for_digest(DIGEST_D.upper()) == Identity("alice", "dashboard")
    assert table.identity_for_digest("0" * 64) is None
    assert table.identity_for_digest("not a digest") is None


def test_table_is_immutable() -> None:
    """A table cannot change after it is built, even if the mapping it came from does."""
    source = {DIGEST_A: Identity("claude", "agent")}
    table = TokenTable(source)
    source[DIGEST_D] = Identity("alice", "dashboard")
    assert len(table) == 1
    assert table.lookup(SECRET_D) is None
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        table._by_digest = {}  # type: ignore[misc]


def test_tables_with_same_tokens_are_equal() -> None:
    """Two reads of the same file give equal tables, so a reload can tell nothing changed."""
    text = f"claude agent sha256:{DIGEST_A}\n"
    assert parse_tokens(text) == parse_tokens(text + "# comment\n")
    assert parse_tokens(text) != parse_tokens("")


# Loading


def test_load_tokens_reads_file(tmp_path: Path) -> None:
    """load_tokens parses the file and reports errors under its path."""
    path = tmp_path / "tokens"
    path.write_text(f"\ufeffclaude agent sha256:{DIGEST_A}\n", encoding="utf-8")
    assert load_tokens(path).lookup(SECRET_A) == Identity("claude", "agent")
    path.write_text("claude\n")
    with pytest.raises(TokensFileError) as info:
        load_tokens(str(path))
    assert str(info.value).startswith(f"{path}:1: ")


def test_load_missing_file(tmp_path: Path) -> None:
    """A missing file is a whole-file error naming the path."""
    path = tmp_path / "missing"
    with pytest.raises(TokensFileError) as info:
        load_tokens(path)
    assert info.value.line is None
    assert str(info.value) == f"{path}: No such file or directory"


def test_load_directory_is_an_error(tmp_path: Path) -> None:
    """An unreadable tokens path (here a directory) is a whole-file error, not an OSError."""
    with pytest.raises(TokensFileError) as info:
        load_tokens(tmp_path)
    assert info.value.line is None


def test_load_non_utf8_reports_line(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are reported at their line."""
    path = tmp_path / "tokens"
    path.write_bytes(b"# ok\n# caf\xe9\n")
    with pytest.raises(TokensFileError) as info:
        load_tokens(path)
    assert str(info.value) == f"{path}:2: not valid UTF-8"


# add_token


def test_add_token_creates_file_and_directories(tmp_path: Path) -> None:
    """The first token creates the directories (0700) and the file (0600)."""
    path = tmp_path / "data" / "sub" / "tokens"
    secret = add_token(path, "alice", "dashboard")
    assert is_valid_secret(secret) and len(secret) == 43
    assert path.read_text() == format_token_line("alice", "dashboard", secret)
    assert mode(path) == 0o600
    assert mode(tmp_path / "data") == 0o700
    assert mode(tmp_path / "data" / "sub") == 0o700
    assert load_tokens(path).lookup(secret) == Identity("alice", "dashboard")


def test_add_token_appends_and_keeps_existing_lines(tmp_path: Path) -> None:
    """Existing lines, comments and the file's mode are left as they were."""
    path = tmp_path / "tokens"
    original = f"# mine\nclaude agent sha256:{DIGEST_A}  # keep me\n"
    path.write_text(original)
    path.chmod(0o640)
    secret = add_token(str(path), "alice", "dashboard")
    assert path.read_text() == original + format_token_line("alice", "dashboard", secret)
    assert mode(path) == 0o640
    table = load_tokens(path)
    assert table.lookup(SECRET_A) == Identity("claude", "agent")
    assert table.lookup(secret) == Identity("alice", "dashboard")


def test_add_token_after_missing_final_newline(tmp_path: Path) -> None:
    """A last line without a newline is not glued to the new one."""
    path = tmp_path / "tokens"
    path.write_text(f"claude agent sha256:{DIGEST_A}")
    secret = add_token(path, "alice", "dashboard")
    table = load_tokens(path)
    assert len(table) == 2
    assert table.lookup(secret) == Identity("alice", "dashboard")


def test_add_token_rotation(tmp_path: Path) -> None:
    """Adding a second token for a name keeps the first one valid."""
    path = tmp_path / "tokens"
    first = add_token(path, "claude", "agent")
    second = add_token(path, "claude", "agent")
    assert first != second
    table = load_tokens(path)
    assert table.lookup(first) == table.lookup(second) == Identity("claude", "agent")


@pytest.mark.parametrize("name", ["", "a b", "al/ice", "x" * 65, "é"], ids=repr)
def test_add_token_refuses_bad_name(tmp_path: Path, name: str) -> None:
    """A bad name is a ValueError and nothing is created."""
    path = tmp_path / "data" / "tokens"
    with pytest.raises(ValueError, match="invalid token name"):
        add_token(path, name, "agent")
    assert not (tmp_path / "data").exists()


def test_add_token_refuses_bad_role(tmp_path: Path) -> None:
    """A role other than agent or dashboard is a ValueError and nothing is created."""
    path = tmp_path / "tokens"
    with pytest.raises(ValueError, match="invalid role 'admin'"):
        add_token(path, "alice", "admin")  # type: ignore[arg-type]
    assert not path.exists()


def test_add_token_refuses_second_role(tmp_path: Path) -> None:
    """A name that already has the other role is refused and the file is unchanged."""
    path = tmp_path / "tokens"
    original = f"alice dashboard sha256:{DIGEST_D}\n"
    path.write_text(original)
    with pytest.raises(ValueError, match="'alice' already has role 'dashboard'"):
        add_token(path, "alice", "agent")
    assert path.read_text() == original


def test_add_token_refuses_malformed_file(tmp_path: Path) -> None:
    """A tokens file that does not parse is reported with its line and left untouched."""
    path = tmp_path / "tokens"
    original = f"claude agent sha256:{DIGEST_A}\nbob admin sha256:{DIGEST_D}\n"
    path.write_text(original)
    with pytest.raises(TokensFileError) as info:
        add_token(path, "alice", "dashboard")
    assert str(info.value) == f"{path}:2: role must be 'agent' or 'dashboard', got 'admin'"
    assert path.read_text() == original


def test_add_token_unwritable_path(tmp_path: Path) -> None:
    """A path that cannot be written (its parent is a file) is a TokensFileError, not an OSError."""
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    with pytest.raises(TokensFileError) as info:
        add_token(blocker / "tokens", "alice", "dashboard")
    assert info.value.line is None


# create_initial_tokens


def test_create_initial_tokens(tmp_path: Path) -> None:
    """First start makes one agent and one dashboard token; only the secrets file shows secrets."""
    tokens = tmp_path / "data" / "tokens"
    initial = tmp_path / "data" / "initial-tokens"
    created = create_initial_tokens(tokens, initial)
    assert [(name, role) for name, role, _ in created] == [
        ("agent", "agent"),
        ("dashboard", "dashboard"),
    ]
    table = load_tokens(tokens)
    for name, role, secret in created:
        assert len(secret) == 43
        assert table.lookup(secret) == Identity(name, role)
        assert secret not in tokens.read_text()
    lines = initial.read_text().splitlines()
    assert lines[0].startswith("#")
    entries = [line.split() for line in lines if line and not line.startswith("#")]
    assert entries == [[name, role, secret] for name, role, secret in created]
    assert mode(tokens) == 0o600
    assert mode(initial) == 0o600
    assert mode(tmp_path / "data") == 0o700


def test_create_initial_tokens_in_separate_directories(tmp_path: Path) -> None:
    """With --tokens elsewhere, both files' directories are created."""
    tokens = tmp_path / "etc" / "vibews" / "tokens"
    initial = tmp_path / "data" / "initial-tokens"
    created = create_initial_tokens(str(tokens), str(initial))
    assert load_tokens(tokens).names() == ["agent", "dashboard"]
    assert len(created) == len(ROLES)
    assert mode(tmp_path / "etc") == 0o700
    assert mode(tmp_path / "etc" / "vibews") == 0o700


def test_create_initial_tokens_never_overwrites_secrets_file(tmp_path: Path) -> None:
    """An existing initial-tokens file is an error; neither file is touched."""
    tokens = tmp_path / "tokens"
    initial = tmp_path / "initial-tokens"
    initial.write_text("old\n")
    with pytest.raises(TokensFileError) as info:
        create_initial_tokens(tokens, initial)
    assert str(info.value) == f"{initial}: File exists"
    assert initial.read_text() == "old\n"
    assert not tokens.exists()


def test_create_initial_tokens_never_overwrites_tokens_file(tmp_path: Path) -> None:
    """An existing tokens file is an error, and the new secrets file is removed again."""
    tokens = tmp_path / "tokens"
    initial = tmp_path / "initial-tokens"
    tokens.write_text("# mine\n")
    with pytest.raises(TokensFileError) as info:
        create_initial_tokens(tokens, initial)
    assert info.value.path == str(tokens)
    assert tokens.read_text() == "# mine\n"
    assert not initial.exists()


def test_created_files_are_0600_whatever_the_umask(tmp_path: Path) -> None:
    """Even with a permissive umask, files holding secrets or digests are private."""
    previous = os.umask(0)
    try:
        create_initial_tokens(tmp_path / "d" / "tokens", tmp_path / "d" / "initial-tokens")
        add_token(tmp_path / "e" / "tokens", "alice", "dashboard")
    finally:
        os.umask(previous)
    assert mode(tmp_path / "d" / "tokens") == 0o600
    assert mode(tmp_path / "d" / "initial-tokens") == 0o600
    assert mode(tmp_path / "e" / "tokens") == 0o600
    assert mode(tmp_path / "d") == 0o700
    assert mode(tmp_path / "e") == 0o700


def test_authenticate_returns_the_identity_and_one_shared_digest_per_token() -> None:
    """Every connection with the same token keeps the same digest string (memory per idle
    connection); a wrong or malformed secret authenticates nothing."""
    secret = generate_secret()
    table = parse_tokens(f"claude agent sha256:{digest_secret(secret)}\n")
    first = table.authenticate(secret)
    second = table.authenticate(secret)
    assert first is not None and second is not None
    assert first == (Identity("claude", "agent"), digest_secret(secret))
    assert first[1] is second[1]
    assert table.authenticate(generate_secret()) is None
    assert table.authenticate("short") is None


def test_names_are_a_fresh_list_each_time() -> None:
    """names() is computed once per role, but a caller changing its list changes nothing."""
    table = parse_tokens(
        f"b agent sha256:{digest_secret(generate_secret())}\n"
        f"a agent sha256:{digest_secret(generate_secret())}\n"
        f"d dashboard sha256:{digest_secret(generate_secret())}\n"
    )
    names = table.names("agent")
    assert names == ["a", "b"]
    names.append("x")
    assert table.names("agent") == ["a", "b"]
    assert table.names() == ["a", "b", "d"]
    assert table.names("dashboard") == ["d"]
