"""The ``vibews`` command: small administrative tasks next to a running server."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

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
    path = args.tokens or os.path.join(args.data, "tokens")
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
    where = add.add_mutually_exclusive_group()
    where.add_argument(
        "--tokens", metavar="FILE", help="the tokens file to append to (default: DATA/tokens)"
    )
    where.add_argument(
        "--data",
        metavar="DIR",
        default=DEFAULT_DATA_DIR,
        help=f"the server's data directory, holding 'tokens' (default: ./{DEFAULT_DATA_DIR})",
    )
    add.set_defaults(handler=_token_add)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vibews",
        description="Administer a vibews hub. The server itself runs as 'twistd -n vibews'.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_token_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (2 for any error), never a traceback."""
    try:
        args = build_parser().parse_args(argv)
        handler: Handler = args.handler
        return handler(args)
    except _Exit as done:
        if done.message:
            sys.stderr.write(done.message)
        return done.status
    except (TokensFileError, ValueError, OSError) as err:
        print(f"vibews: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
