"""The client for programs that do not run Twisted: plain blocking code and asyncio.

The Twisted reactor runs on a thread of its own, started by ``crochet`` (which also stops it when
the program exits). The WebSocket therefore keeps answering the hub's pings while the program's own
thread is busy or blocked, so a slow agent is not dropped. Every call is handed to the reactor
thread; :class:`BlockingClient` waits for the result, :class:`AsyncClient` returns an awaitable.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import crochet
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

from vibews.client.core import Ack, Answer, Client, Welcome

T = TypeVar("T")

FOREVER: float = None  # type: ignore[assignment]  # threading.Event.wait(None) waits for ever


def _in_reactor(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``function`` on the reactor thread and return its crochet EventualResult."""
    return crochet.run_in_reactor(function)(*args, **kwargs)


class _Threaded:
    """Creates the :class:`Client` on the reactor thread; subclasses decide how results come back."""

    def __init__(self, url: str, token: str, *, cafile: str | None = None) -> None:
        crochet.setup()
        from twisted.internet import reactor

        self._reactor: Any = reactor
        self.client: Client = _in_reactor(Client, url, token, cafile=cafile).wait(30)


class BlockingClient(_Threaded):
    """A :class:`Client` for synchronous code; each method blocks until the hub answered.

    ``with BlockingClient(url, token) as hub: answer = hub.ask("Deploy?", ["yes", "no"])``
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        cafile: str | None = None,
        fail_fast: bool = True,
        connect_timeout: float = 30.0,
    ) -> None:
        super().__init__(url, token, cafile=cafile)
        try:
            self.welcome: Welcome = self._wait(
                connect_timeout, self.client.connect, fail_fast=fail_fast
            )
        except BaseException:
            self.close()
            raise

    def _wait(
        self, timeout: float | None, function: Callable[..., Deferred[T]], *a: Any, **k: Any
    ) -> T:
        eventual = _in_reactor(function, *a, **k)
        try:
            result: T = eventual.wait(FOREVER if timeout is None else timeout)
        except crochet.TimeoutError:
            eventual.cancel()
            raise TimeoutError(f"no result within {timeout} seconds") from None
        return result

    def ask(
        self,
        text: str,
        options: list[str] | None = None,
        schema: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        *,
        wait: float | None = None,
        **kwargs: Any,
    ) -> Answer:
        """Block until the question is answered (see :meth:`Client.ask`). ``timeout`` is the
        question's deadline on the hub; ``wait`` only limits how long this call blocks
        (``TimeoutError``; the question stays open)."""
        return self._wait(wait, self.client.ask, text, options, schema, timeout, **kwargs)

    def send(self, message_type: str, payload: Mapping[str, Any], **kwargs: Any) -> Ack:
        return self._wait(None, self.client.send, message_type, payload, **kwargs)

    def status(self, state: str, detail: str | None = None, **extra: Any) -> Ack:
        return self._wait(None, self.client.status, state, detail, **extra)

    def task(self, task_id: str, status: str, progress: float | None = None, **extra: Any) -> Ack:
        return self._wait(None, self.client.task, task_id, status, progress, **extra)

    def withdraw(self, question_id: str) -> Ack:
        return self._wait(None, self.client.withdraw, question_id)

    def close(self) -> None:
        self._wait(30, self.client.close)

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient(_Threaded):
    """A :class:`Client` for asyncio code: every method returns an awaitable for the running loop.

    ``async with AsyncClient(url, token) as hub: answer = await hub.ask("Deploy?")``
    Cancelling an awaited call cancels it in the client (a cancelled ``ask`` stops waiting; the
    question stays open on the hub).
    """

    def _future(self, function: Callable[..., Deferred[T]], *a: Any, **k: Any) -> asyncio.Future[T]:
        bridge: concurrent.futures.Future[T] = concurrent.futures.Future()
        holder: list[Deferred[T]] = []

        def settle_ok(result: T) -> None:
            if not bridge.done():
                bridge.set_result(result)

        def settle_error(failure: Failure) -> None:
            if not bridge.done():
                bridge.set_exception(failure.value)

        def start() -> None:
            if bridge.cancelled():
                return
            d: Deferred[T] = maybeDeferred(function, *a, **k)
            holder.append(d)
            d.addCallbacks(settle_ok, settle_error)

        def cancel_all() -> None:
            for d in holder:
                d.cancel()

        def cancelled(future: concurrent.futures.Future[T]) -> None:
            if future.cancelled():
                self._reactor.callFromThread(cancel_all)

        bridge.add_done_callback(cancelled)
        self._reactor.callFromThread(start)
        return asyncio.wrap_future(bridge)

    async def connect(self, fail_fast: bool = True) -> Welcome:
        self.welcome: Welcome = await self._future(self.client.connect, fail_fast=fail_fast)
        return self.welcome

    async def ask(
        self,
        text: str,
        options: list[str] | None = None,
        schema: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Answer:
        return await self._future(self.client.ask, text, options, schema, timeout, **kwargs)

    async def send(self, message_type: str, payload: Mapping[str, Any], **kwargs: Any) -> Ack:
        return await self._future(self.client.send, message_type, payload, **kwargs)

    async def status(self, state: str, detail: str | None = None, **extra: Any) -> Ack:
        return await self._future(self.client.status, state, detail, **extra)

    async def task(
        self, task_id: str, status: str, progress: float | None = None, **extra: Any
    ) -> Ack:
        return await self._future(self.client.task, task_id, status, progress, **extra)

    async def withdraw(self, question_id: str) -> Ack:
        return await self._future(self.client.withdraw, question_id)

    async def close(self) -> None:
        await self._future(self.client.close)

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
