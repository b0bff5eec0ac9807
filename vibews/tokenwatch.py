"""Keeps the tokens table current: re-reads the file when it changes (polled) and on SIGHUP.

Polling the file's identity (inode, size, mtime) once a second is what makes an edit, an atomic rename
or ``vibews token add`` take effect within the contract's 5 seconds without inotify.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from vibews.tokens import TokensFileError, TokenTable, load_tokens

_log = Logger()

FileIdentity = tuple[int, int, int] | None


def _identity(path: Path) -> FileIdentity:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


class TokenWatcher(Service):
    """Holds the current :class:`TokenTable`; ``on_change`` runs after each successful reload."""

    def __init__(
        self,
        path: Path,
        table: TokenTable,
        reactor: Any,
        on_change: Callable[[TokenTable], None],
        interval: float = 1.0,
    ) -> None:
        self.path = path
        self.table = table
        self._reactor = reactor
        self._on_change = on_change
        self._seen = _identity(path)
        self._poll = LoopingCall(self._check)
        clock: IReactorTime = reactor
        self._poll.clock = clock
        self._interval = interval
        self._previous_handler: Any = None

    def privilegedStartService(self) -> None:
        # Before the listeners bind (they do it in their privilegedStartService): a SIGHUP that
        # arrives while the server starts must reload, not kill it with the default action.
        if threading.current_thread() is threading.main_thread() and self._previous_handler is None:
            self._previous_handler = signal.signal(signal.SIGHUP, self._on_sighup)
        super().privilegedStartService()

    def startService(self) -> None:
        super().startService()
        self._poll.start(self._interval, now=False)

    def stopService(self) -> None:
        if self._poll.running:
            self._poll.stop()
        if self._previous_handler is not None:
            signal.signal(signal.SIGHUP, self._previous_handler)
            self._previous_handler = None
        super().stopService()

    def _on_sighup(self, signum: int, frame: FrameType | None) -> None:
        threads: IReactorFromThreads = self._reactor
        threads.callFromThread(self.reload, "SIGHUP")
        # Embedded in a host that uses SIGHUP too: the host's handler still runs.
        if callable(self._previous_handler):
            self._previous_handler(signum, frame)

    def _check(self) -> None:
        current = _identity(self.path)
        if current != self._seen:
            self._seen = current
            self.reload("file changed")

    def reload(self, why: str = "reload") -> bool:
        """Re-read the file; on error keep the previous tokens and log what is wrong."""
        try:
            table = load_tokens(self.path)
        except TokensFileError as error:
            _log.error(
                "tokens file not reloaded ({why}), previous tokens kept: {error}",
                why=why,
                error=str(error),
            )
            return False
        self.table = table
        _log.info(
            "tokens reloaded from {path} ({why}): {count} tokens",
            path=str(self.path),
            why=why,
            count=len(table),
        )
        self._on_change(table)
        return True
