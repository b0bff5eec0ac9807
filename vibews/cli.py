"""The ``vibews`` command: one entry point for agents' scripts (status, task, ask, send), watching
(listen), administration (token, check) and coding agents (mcp). The server itself is ``twistd
vibews``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from vibews import exitcodes
from vibews.cli_hub import UsageProblem
from vibews.tokenadmin import list_tokens, revoke_tokens
from vibews.tokens import ROLES, TokensFileError, add_token

DEFAULT_DATA_DIR = "vibews-data"

Handler = Callable[[argparse.Namespace], int]


class _Exit(Exception):
    def __init__(self, status: int, message: str | None) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that reports usage errors as one ``vibews: ...`` line and never exits the
    process itself, so ``main`` returns a code and stays callable from tests."""

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise _Exit(status, message)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"vibews: {message} (see '{self.prog} --help')\n")


def _token_add(args: argparse.Namespace) -> int:
    path = _tokens_path(args)
    secret = add_token(path, args.name, args.role)
    # stdout carries the secret alone, so `TOKEN=$(vibews token add ...)` just works.
    print(secret)
    print(
        f"added {args.role} token {args.name!r} to {path}; a running server picks it up within 5 s",
        file=sys.stderr,
    )
    return 0


def _add_token_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    token = commands.add_parser(
        "token", help="manage the tokens file", description="Manage the tokens file."
    )
    token_commands = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    add = token_commands.add_parser(
        "add",
        help="add a token and print its secret",
        description=(
            "Append a token for NAME to the tokens file and print its secret on standard output "
            "(and nothing else there). The file keeps only the secret's SHA-256, so this is the "
            "only time the secret is shown. A name may get several tokens (key rotation), all "
            "with the same role."
        ),
    )
    add.add_argument("name", metavar="NAME", help="who the token is for: 1-64 of A-Z a-z 0-9 . _ -")
    add.add_argument(
        "--role",
        required=True,
        choices=ROLES,
        help="agent: a program that reports and asks; dashboard: a person who watches and answers",
    )
    _where(add, "the tokens file to append to (default: DATA/tokens)")
    add.set_defaults(handler=_token_add)

    listing = token_commands.add_parser(
        "list",
        help="list names, roles and keys (never a secret)",
        description=(
            "List every token of the tokens file: its NAME, ROLE and KEY, the first hex digits of "
            "the secret's SHA-256 (the file holds no secrets, so none can be shown). Use KEY with "
            "'revoke --key' to remove one of several tokens of a name."
        ),
    )
    _where(listing)
    listing.set_defaults(handler=_token_list)

    revoke = token_commands.add_parser(
        "revoke",
        help="remove a name's tokens; a running server closes their connections",
        description=(
            "Remove every token of NAME (or only the one whose KEY starts with --key) from the "
            "tokens file, atomically. A running server re-reads the file within 5 seconds and "
            "closes the connections that used a removed token (code 1008)."
        ),
    )
    revoke.add_argument("name", metavar="NAME", help="whose tokens to remove")
    revoke.add_argument("--key", help="only the token whose KEY (see 'token list') starts so")
    _where(revoke)
    revoke.set_defaults(handler=_token_revoke)


def _where(
    parser: argparse.ArgumentParser, tokens_help: str = "the tokens file (default: DATA/tokens)"
) -> None:
    """--tokens FILE or --data DIR, for every token command: the file is found the same way the
    server finds it (DATA/tokens unless named), see :func:`_tokens_path`."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--tokens", metavar="FILE", help=tokens_help)
    where.add_argument(
        "--data",
        metavar="DIR",
        default=DEFAULT_DATA_DIR,
        help=f"the server's data directory, holding 'tokens' (default: ./{DEFAULT_DATA_DIR})",
    )


def _tokens_path(args: argparse.Namespace) -> str:
    """The tokens file that --tokens or --data (see :func:`_where`) names."""
    return str(args.tokens or os.path.join(args.data, "tokens"))


def _token_list(args: argparse.Namespace) -> int:
    entries = list_tokens(_tokens_path(args))
    width = max([len(e.name) for e in entries] + [4])
    print(f"{'NAME':<{width}}  {'ROLE':<9}  KEY")
    for entry in entries:
        print(f"{entry.name:<{width}}  {entry.role:<9}  {entry.key}")
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    path = _tokens_path(args)
    count = revoke_tokens(path, args.name, args.key)
    print(
        f"revoked {count} token(s) of {args.name!r} in {path}; a running server closes their "
        "connections within 5 s",
        file=sys.stderr,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vibews",
        description=(
            "Talk to a vibews hub from scripts and agents, watch it, administer it. The server "
            "itself runs as 'twistd -n vibews'. Run 'vibews COMMAND --help' for each command."
        ),
        epilog=exitcodes.epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from vibews import cli_commands

    cli_commands.add_hub_commands(commands)
    _add_token_commands(commands)
    cli_commands.add_admin_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (see :mod:`vibews.exitcodes`), never a
    traceback."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (``vibews listen | head``): not an error worth a word.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return exitcodes.OK


def _main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["check"] and argv[1:2] not in (["-h"], ["--help"]):
        # The server's options go to its own parser untouched (argparse would claim them).
        from vibews.check import main as check

        return check(argv[2:] if argv[1:2] == ["--"] else argv[1:])
    try:
        args = build_parser().parse_args(argv)
        handler: Handler = args.handler
        return handler(args)
    except _Exit as done:
        if done.message:
            sys.stderr.write(done.message)
        return done.status
    except (TokensFileError, ValueError, OSError, UsageProblem) as err:
        print(f"vibews: {err}", file=sys.stderr)
        return exitcodes.USAGE
    except KeyboardInterrupt:
        print("vibews: interrupted", file=sys.stderr)
        return exitcodes.INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
