"""``vibews check [twistd vibews options]``: would the server start with these options?

It parses the options with the very ``Options`` class ``twistd vibews`` uses, runs the same
side-effect-free checks as start-up (:func:`vibews.service.check_config`), and reads the tokens file
with the server's parser. Nothing is bound, created or opened for writing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from twisted.python import usage

from vibews.service import StartupError, check_config
from vibews.tap import Options
from vibews.tokens import TokensFileError, load_tokens


class CheckFailed(Exception):
    """What would stop the server, as one line."""


def check(argv: Sequence[str]) -> list[str]:
    """Return what the server would do, one line each; raise CheckFailed with what is wrong."""
    options = Options()
    try:
        options.parseOptions(list(argv))
    except usage.UsageError as error:
        raise CheckFailed(f"bad option: {error}") from None
    config = options.config
    from twisted.internet import reactor

    try:
        check_config(config, reactor)
    except StartupError as error:
        raise CheckFailed(str(error)) from None
    report = [f"listen on {', '.join(config.listen)}"]
    tokens = config.tokens_path
    if tokens.exists():
        try:
            table = load_tokens(tokens)
        except TokensFileError as error:
            raise CheckFailed(f"tokens file is invalid: {error}") from None
        agents, dashboards = table.names("agent"), table.names("dashboard")
        report.append(
            f"tokens file {tokens}: {len(table)} token(s) for {len(agents)} agent name(s) and "
            f"{len(dashboards)} dashboard name(s)"
        )
    elif config.tokens and config.default_tokens_path.exists():
        raise CheckFailed(
            f"tokens file {tokens} does not exist (but {config.default_tokens_path} does)"
        )
    else:
        report.append(f"tokens file {tokens} does not exist: the first start creates it")
    data = config.data_dir
    if data.exists() and not data.is_dir():
        raise CheckFailed(f"data directory {data} is not a directory")
    if data.is_dir() and not os.access(data, os.W_OK | os.X_OK):
        raise CheckFailed(f"data directory {data} is not writable")
    report.append(f"data in {data}" + ("" if data.exists() else " (created at first start)"))
    return report


def main(argv: Sequence[str]) -> int:
    try:
        lines = check(argv)
    except CheckFailed as error:
        sys.stderr.write(f"vibews: {error}\n")
        return 2
    for line in lines:
        sys.stdout.write(f"ok: {line}\n")
    return 0
