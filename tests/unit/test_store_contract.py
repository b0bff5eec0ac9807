"""The store contract, run against every store behind :class:`~vibews.store.IStore`: the embedded
SQLite file (committing on the reactor thread, and in the reactor's worker threads as the server
runs it) and the shared Redis (a real redis-server on a free port). The hub's rules rely on
exactly these properties, so the two stores cannot drift apart."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, DeferredList

from vibews.protocol import CONFLICT, Refusal
from vibews.store import IStoreTransaction, StoredMessage, StoreUnavailable
from vibews.store.redis import RedisStore
from vibews.store.sqlite import SQLiteStore, reactor_threads
from vibews.testing_cluster import RedisProcess, redis_server_binary

KINDS = [
    "sqlite",
    "sqlite-threads",
    pytest.param(
        "redis",
        marks=pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server"),
    ),
]

Opener = Callable[..., Deferred[Any]]


def _append(kind: str = "agent_status", sender: str = "a", message_id: str | None = None) -> Any:
    def work(txn: IStoreTransaction) -> StoredMessage:
        return txn.append(kind, sender, message_id, None, lambda seq: {"type": kind, "seq": seq})

    return work


async def _settle(deferreds: list[Deferred[Any]]) -> list[Any]:
    """Each Deferred's result, or its Failure."""
    results = await DeferredList(deferreds, consumeErrors=True)
    return [value for _, value in results]


@pytest_twisted.async_yield_fixture(params=KINDS)
async def open_store(request: Any, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Opens a store of this kind (again and again: the same file, or the same Redis)."""
    from twisted.internet import reactor

    opened: list[Any] = []
    redis: RedisProcess | None = None
    if request.param == "redis":
        redis = RedisProcess(tmp_path / "redis")
        await redis.start()

    async def open_one(history: int = 100_000) -> Any:
        store: Any
        if request.param == "sqlite":
            store = SQLiteStore(tmp_path / "store.sqlite3", reactor, history=history)
        elif request.param == "sqlite-threads":
            store = SQLiteStore(
                tmp_path / "store.sqlite3",
                reactor,
                history=history,
                in_thread=reactor_threads(reactor),
            )
        else:
            assert redis is not None
            store = RedisStore(redis.url, reactor, history=history)
            await store.open()
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        if not store._closed:
            await store.close()
    if redis is not None:
        await redis.stop()


@pytest_twisted.ensureDeferred
async def test_units_of_one_turn_get_consecutive_seqs(open_store: Any) -> None:
    store = await open_store()
    results = await _settle([store.transact(_append(message_id=str(i))) for i in range(5)])
    assert [r.seq for r in results] == [1, 2, 3, 4, 5]
    assert store.head() == 5 and store.oldest() == 1


@pytest_twisted.ensureDeferred
async def test_refused_unit_is_undone_and_leaves_no_gap(open_store: Any) -> None:
    """A unit that raises has its writes rolled back, its message id included (a retry is not a
    duplicate); the units around it commit with consecutive seqs."""
    store = await open_store()

    def refuse(txn: IStoreTransaction) -> None:
        txn.append("question", "a", "q", None, lambda seq: {"seq": seq})
        raise Refusal(CONFLICT, "taken")

    def look(txn: IStoreTransaction) -> int | None:
        return txn.find_duplicate("a", "q")

    results = await _settle(
        [
            store.transact(_append(message_id="1")),
            store.transact(refuse),
            store.transact(_append()),
            store.transact(look),
        ]
    )
    assert results[0].seq == 1
    assert results[1].check(Refusal)
    assert results[2].seq == 2
    assert results[3] is None
    assert [m.seq for m in store.read(0, None, 10)] == [1, 2]
    assert store.head() == 2


@pytest_twisted.ensureDeferred
async def test_reopening_continues_seq_and_keeps_epoch(open_store: Any) -> None:
    """A reopened store continues after its newest seq and names the same history (epoch)."""
    first = await open_store()
    epoch = first.epoch
    await _settle([first.transact(_append()) for _ in range(3)])
    await first.close()
    second = await open_store()
    assert second.head() == 3 and second.epoch == epoch
    done = await second.transact(_append())
    assert done.seq == 4


@pytest_twisted.ensureDeferred
async def test_history_is_trimmed_but_pending_answers_are_kept(open_store: Any) -> None:
    """Past --history the oldest messages are dropped (oldest() moves on), while a pending answer
    stays whatever its age."""
    store = await open_store(history=100)

    def answer(txn: IStoreTransaction) -> StoredMessage:
        stored = txn.append("answer", "d", "a1", "bot", lambda seq: {"type": "answer", "seq": seq})
        txn.add_pending("bot", stored)
        return stored

    await store.transact(answer)
    for i in range(300):
        await store.transact(_append(message_id=f"m{i}"))
    assert store.oldest() > 1
    assert store.head() - store.oldest() + 1 <= 100 + 64
    assert [m.seq for m in store.pending_answers("bot")] == [1]
    assert store.read(0, "bot", 10) == []  # the journal copy left with the history
    await store.close()
    again = await open_store(history=100)
    assert again.oldest() == store.oldest()
    assert [m.seq for m in again.pending_answers("bot")] == [1]


@pytest_twisted.ensureDeferred
async def test_read_filters_by_agent_and_pages(open_store: Any) -> None:
    """read() pages through the journal; with an agent it returns only that agent's deliveries."""
    store = await open_store()

    def to_bot(txn: IStoreTransaction) -> StoredMessage:
        return txn.append("answer", "d", None, "bot", lambda seq: {"seq": seq})

    await _settle([store.transact(work) for work in (_append(), to_bot, _append(), to_bot)])
    assert [m.seq for m in store.read(0, None, 3)] == [1, 2, 3]
    assert [m.seq for m in store.read(3, None, 3)] == [4]
    assert [m.seq for m in store.read(0, "bot", 10)] == [2, 4]


@pytest_twisted.ensureDeferred
async def test_duplicates_and_questions_are_seen_inside_the_same_batch(open_store: Any) -> None:
    """A unit sees the writes of earlier units of its batch (duplicate ids, new questions)."""
    store = await open_store()
    seen: list[Any] = []

    def ask(txn: IStoreTransaction) -> None:
        stored = txn.append("question", "a", "q1", None, lambda seq: {"seq": seq})
        txn.add_question("q1", "a", stored.seq, {"seq": stored.seq}, None, None)

    def look(txn: IStoreTransaction) -> None:
        seen.append(txn.find_duplicate("a", "q1"))
        seen.append(txn.get_question("q1"))

    await _settle([store.transact(ask), store.transact(look)])
    assert seen[0] == 1
    assert seen[1].state == "open" and seen[1].agent == "a"


@pytest_twisted.ensureDeferred
async def test_duplicates_are_found_after_a_reopen(open_store: Any) -> None:
    """The duplicate check covers every stored message, also those of an earlier run (the SQLite
    store rebuilds its in-memory index of ids from the journal at start)."""
    store = await open_store()
    await _settle([store.transact(_append(sender=s, message_id=f"m{s}")) for s in "abc"])
    await store.close()
    again = await open_store()
    found: list[int | None] = []

    def look(txn: IStoreTransaction) -> None:
        found.extend(txn.find_duplicate(s, f"m{s}") for s in "abcd")
        found.append(txn.find_duplicate("b", "ma"))  # an id is a duplicate only for its sender

    await again.transact(look)
    assert found == [1, 2, 3, None, None]


@pytest_twisted.ensureDeferred
async def test_trimmed_messages_are_no_longer_duplicates(open_store: Any) -> None:
    """Past --history the oldest messages leave the duplicate check with the journal, in this run
    and after a reopen; the retained ones stay in it."""
    store = await open_store(history=100)
    for i in range(300):
        await store.transact(_append(message_id=f"m{i}"))
    oldest = store.oldest()
    assert oldest > 1

    def look(txn: IStoreTransaction) -> list[int | None]:
        return [txn.find_duplicate("a", f"m{i}") for i in (0, oldest - 2, oldest - 1, 299)]

    assert await store.transact(look) == [None, None, oldest, 300]
    await store.close()
    again = await open_store(history=100)
    assert await again.transact(look) == [None, None, oldest, 300]


@pytest_twisted.ensureDeferred
async def test_state_survives_a_reopen(open_store: Any) -> None:
    """Questions, claims, tasks, statuses and presence are committed state: a reopened store (or
    another node) shows them in its snapshot."""
    store = await open_store()

    def work(txn: IStoreTransaction) -> None:
        stored = txn.append("question", "bot", "q1", None, lambda seq: {"id": "q1", "seq": seq})
        txn.add_question("q1", "bot", stored.seq, {"id": "q1", "seq": stored.seq}, 4e9, None)
        txn.set_task("t1", {"task_id": "t1"})
        txn.set_agent_status("bot", {"state": "working"})
        txn.set_presence("bot", True, "2026-11-26T00:00:00Z")

    await store.transact(work)
    await store.close()
    again = await open_store()
    snapshot = again.snapshot(["other"])
    assert snapshot.seq == 1
    assert snapshot.agents["bot"].online and snapshot.agents["bot"].status == {"state": "working"}
    assert not snapshot.agents["other"].online
    assert snapshot.tasks == {"t1": {"task_id": "t1"}}
    assert [q["id"] for q in snapshot.questions] == ["q1"]
    assert snapshot.questions[0]["state"] == "open"
    assert again.deadlines() == [("q1", 4e9)]


@pytest_twisted.ensureDeferred
async def test_closed_store_refuses_new_work(open_store: Any) -> None:
    """After close(), transact raises StoreUnavailable instead of queueing work that never runs."""
    store = await open_store()
    await store.close()
    with pytest.raises(StoreUnavailable):
        store.transact(_append())
