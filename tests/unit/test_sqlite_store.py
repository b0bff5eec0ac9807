"""What only the SQLite store does, on a real file driven by a fake clock: one COMMIT per turn, a
failed commit, the file lock, and the commit handed to a worker thread (held here until the test
lets it finish, and once with the reactor's real threads). What every store does is in
test_store_contract.py."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure

from vibews.store import IStoreTransaction, StoredMessage, StoreUnavailable
from vibews.store.sqlite import CHECKPOINT_ROWS, SQLiteStore, StoreLocked, reactor_threads


def _append(kind: str = "agent_status", sender: str = "a", message_id: str | None = None) -> Any:
    def work(txn: IStoreTransaction) -> StoredMessage:
        return txn.append(kind, sender, message_id, None, lambda seq: {"type": kind, "seq": seq})

    return work


def _results(deferreds: list[Any]) -> list[Any]:
    out: list[Any] = []
    for d in deferreds:
        d.addBoth(out.append)
    return out


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Any:
    opened = SQLiteStore(tmp_path / "store.sqlite3", clock)
    yield opened
    if not opened._closed:
        opened.close()


def test_work_of_one_turn_shares_one_commit_and_fires_after_it(store: Any, clock: Clock) -> None:
    """Units queued in one reactor turn run in one transaction with a single COMMIT, and no
    Deferred fires before that commit."""
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    results = _results([store.transact(_append(message_id=str(i))) for i in range(5)])
    assert results == []
    clock.advance(0)
    assert [r.seq for r in results] == [1, 2, 3, 4, 5]
    assert sum(1 for s in statements if s.strip().upper() == "COMMIT") == 1
    assert store.head() == 5


def test_failed_commit_refuses_the_whole_batch_as_unavailable(store: Any, clock: Clock) -> None:
    """When the commit cannot be written every unit of the batch fails with StoreUnavailable, the
    head is restored, problem() says why, and the next batch after recovery commits normally."""
    first = _results([store.transact(_append(message_id="ok"))])
    clock.advance(0)
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")

    def big(txn: IStoreTransaction) -> StoredMessage:
        return txn.append("x", "a", "big", None, lambda seq: {"blob": "x" * 200_000})

    failed = _results([store.transact(big), store.transact(_append(message_id="small"))])
    clock.advance(0)
    assert all(r.check(StoreUnavailable) for r in failed)
    assert store.head() == first[0].seq
    assert store.problem() is not None
    store._db.execute("PRAGMA max_page_count = 1073741823")
    again = _results([store.transact(_append(message_id="small"))])
    clock.advance(0)
    assert again[0].seq == first[0].seq + 1
    assert store.problem() is None


def test_second_process_on_the_same_file_is_refused(store: Any, tmp_path: Path) -> None:
    """Two stores on one file would hand out the same seq: the second is refused."""
    with pytest.raises(StoreLocked):
        SQLiteStore(tmp_path / "store.sqlite3", Clock())


def test_a_file_from_schema_2_loses_its_index_of_ids_and_keeps_its_duplicates(
    tmp_path: Path, clock: Clock
) -> None:
    """Earlier versions kept the duplicate check's index in the file (``journal_dedup``), where
    every message with a random id wrote a page of its own; it is dropped at start and the check
    answers from the in-memory index rebuilt from the journal."""
    import sqlite3

    path = tmp_path / "store.sqlite3"
    first = SQLiteStore(path, clock)
    _results([first.transact(_append(message_id="m1"))])
    clock.advance(0)
    first.close()
    old = sqlite3.connect(path)
    old.execute(
        "CREATE UNIQUE INDEX journal_dedup ON journal (sender, message_id)"
        " WHERE message_id IS NOT NULL"
    )
    old.close()
    second = SQLiteStore(path, clock)
    found = _results([second.transact(lambda txn: txn.find_duplicate("a", "m1"))])
    clock.advance(0)
    assert found == [1]
    second.close()
    check = sqlite3.connect(path)
    indexes = {
        row[0] for row in check.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
    }
    check.close()
    assert "journal_dedup" not in indexes


def test_a_message_stored_twice_by_mistake_fails_its_batch(store: Any, clock: Clock) -> None:
    """The in-memory index is unique like the file's was: a second append of one (sender, id),
    which the hub never attempts (it checks first), refuses the batch instead of storing both."""
    first = _results([store.transact(_append(message_id="m1"))])
    clock.advance(0)
    assert first[0].seq == 1
    again = _results([store.transact(_append(message_id="m1"))])
    clock.advance(0)
    assert isinstance(again[0], Failure) and again[0].check(StoreUnavailable)
    assert store.head() == 1


class HeldThreads:
    """An ``in_thread`` whose "worker thread" finishes only when the test says so: a commit can be
    observed while it is in flight. ``finish`` runs the function and fires its Deferred, as the
    reactor's thread pool would."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def __call__(self, function: Callable[[], Any]) -> Deferred[Any]:
        done: Deferred[Any] = Deferred()
        self.jobs.append((function, done))
        return done

    def commits(self) -> list[int]:
        return [i for i, (f, _) in enumerate(self.jobs) if f.__name__ == "_commit_statement"]

    def finish(self, index: int) -> None:
        function, done = self.jobs.pop(index)
        try:
            result = function()
        except Exception:
            done.errback(Failure())
        else:
            done.callback(result)

    def finish_commit(self) -> None:
        (index,) = self.commits()
        self.finish(index)


@pytest.fixture
def held() -> HeldThreads:
    return HeldThreads()


@pytest.fixture
def threaded(tmp_path: Path, clock: Clock, held: HeldThreads) -> Any:
    opened = SQLiteStore(tmp_path / "threaded.sqlite3", clock, in_thread=held)
    yield opened
    while held.jobs:
        held.finish(0)
    if not opened._closed:
        opened.close()


def test_no_deferred_fires_before_the_threaded_commit_returned(
    threaded: Any, clock: Clock, held: HeldThreads
) -> None:
    """The batch's units run on the reactor thread, the COMMIT goes to the worker; until it has
    returned nothing fires, and every Deferred fires after the COMMIT statement, in order."""
    statements: list[str] = []
    threaded._db.set_trace_callback(statements.append)
    commits_when_fired: list[int] = []

    def fired(result: StoredMessage) -> StoredMessage:
        commits_when_fired.append(sum(1 for s in statements if s.strip().upper() == "COMMIT"))
        return result

    results = _results(
        [threaded.transact(_append(message_id=str(i))).addCallback(fired) for i in range(3)]
    )
    clock.advance(0)
    assert len(held.commits()) == 1
    assert results == [] and not any(s.strip().upper() == "COMMIT" for s in statements)
    held.finish_commit()
    assert [r.seq for r in results] == [1, 2, 3]
    assert commits_when_fired == [1, 1, 1]


def test_reads_during_a_commit_in_flight_see_only_what_was_committed(
    threaded: Any, clock: Clock, held: HeldThreads
) -> None:
    """While a commit is in flight, head, read and snapshot answer as before it (nobody may see a
    seq that could still be lost); work queued meanwhile becomes the next batch, which starts as
    soon as the commit returned, and commits stay in order."""
    first = _results([threaded.transact(_append(message_id="1"))])
    clock.advance(0)
    held.finish_commit()
    assert first[0].seq == 1

    second = _results([threaded.transact(_append(message_id="2"))])
    clock.advance(0)
    assert second == [] and threaded._head == 2  # prepared, not committed
    assert threaded.head() == 1 and threaded.oldest() == 1
    assert [m.seq for m in threaded.read(0, None, 10)] == [1]
    assert threaded.snapshot([]).seq == 1

    third = _results([threaded.transact(_append(message_id="3"))])
    clock.advance(0)
    assert len(held.commits()) == 1, "one commit in flight at a time"
    held.finish_commit()
    assert [r.seq for r in second] == [2] and third == []
    assert len(held.commits()) == 1, "the queued batch was committed at once"
    assert threaded.head() == 2
    assert [m.seq for m in threaded.read(0, None, 10)] == [1, 2]
    held.finish_commit()
    assert [r.seq for r in third] == [3]
    assert threaded.head() == 3 and [m.seq for m in threaded.read(0, None, 10)] == [1, 2, 3]


def _break_commits(store: Any) -> Callable[[IStoreTransaction], StoredMessage]:
    """A unit whose writes pass but make the COMMIT itself fail: a deferred foreign key is only
    checked when the transaction commits."""
    store._db.execute("PRAGMA foreign_keys = ON")
    store._db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    store._db.execute(
        "CREATE TABLE child (parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
    )

    def orphan(txn: IStoreTransaction) -> StoredMessage:
        store._db.execute("INSERT INTO child (parent) VALUES (42)")
        message: StoredMessage = _append(message_id="orphan")(txn)
        return message

    return orphan


def test_a_failed_threaded_commit_refuses_the_batch_as_unavailable(
    threaded: Any, clock: Clock, held: HeldThreads
) -> None:
    """When the COMMIT fails in the worker thread, every unit of the batch fails with
    StoreUnavailable (the hub answers ``unavailable``), the head is back where it was, problem()
    says why, and the next batch commits normally."""
    orphan = _break_commits(threaded)
    failed = _results([threaded.transact(_append(message_id="a")), threaded.transact(orphan)])
    clock.advance(0)
    held.finish_commit()
    assert len(failed) == 2 and all(r.check(StoreUnavailable) for r in failed)
    assert threaded.head() == 0 and threaded.read(0, None, 10) == []
    assert threaded.problem() is not None
    again = _results([threaded.transact(_append(message_id="a"))])
    clock.advance(0)
    held.finish_commit()
    assert again[0].seq == 1
    assert threaded.problem() is None


def test_close_waits_for_the_commit_in_flight_and_commits_the_queue(
    tmp_path: Path, threaded: Any, clock: Clock, held: HeldThreads
) -> None:
    """close() during a commit in flight fires after it, with the work queued behind it acked
    too; everything is in the file afterwards."""
    in_flight = _results([threaded.transact(_append(message_id="1"))])
    clock.advance(0)
    queued = _results([threaded.transact(_append(message_id="2"))])
    closed = _results([threaded.close()])
    assert closed == [] and not threaded._closed
    held.finish_commit()
    assert [r.seq for r in in_flight + queued] == [1, 2]
    assert closed == [None] and threaded._closed
    reopened = SQLiteStore(tmp_path / "threaded.sqlite3", Clock())
    assert reopened.head() == 2
    reopened.close()


def test_checkpoints_run_in_the_worker_not_in_the_commit(
    threaded: Any, clock: Clock, held: HeldThreads
) -> None:
    """SQLite's automatic checkpoint (run inside a commit, with its fsyncs) is off; once enough
    rows were written, a passive checkpoint is handed to the worker on a connection of its own,
    and it moves the WAL into the database."""
    assert threaded._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    _results([threaded.transact(_append()) for _ in range(CHECKPOINT_ROWS)])
    clock.advance(0)
    assert len(held.jobs) == 1
    held.finish_commit()
    assert len(held.jobs) == 1 and held.commits() == []
    function, done = held.jobs.pop()
    function()
    done.callback(None)
    busy, frames, moved = threaded._checkpointer.execute("PRAGMA wal_checkpoint").fetchone()
    assert busy == 0 and frames > 0 and moved == frames
    assert threaded._checkpointing is None


@pytest_twisted.ensureDeferred
async def test_the_reactor_turns_while_a_real_worker_thread_commits(tmp_path: Path) -> None:
    """With the reactor's thread pool: the COMMIT runs on another thread, the reactor keeps
    running timed calls while it is held there, and the Deferred fires on the reactor thread after
    the commit returned."""
    from twisted.internet import reactor

    threads = reactor_threads(reactor)
    release = threading.Event()
    dispatched: Deferred[None] = Deferred()
    commit_threads: list[int] = []

    def in_thread(function: Callable[[], Any]) -> Deferred[Any]:
        if function.__name__ != "_commit_statement":
            return threads(function)

        def held_commit() -> Any:
            release.wait(30)
            commit_threads.append(threading.get_ident())
            return function()

        reactor.callLater(0, dispatched.callback, None)
        return threads(held_commit)

    store = SQLiteStore(tmp_path / "real.sqlite3", reactor, in_thread=in_thread)
    fired_on: list[int] = []

    def fired(result: StoredMessage) -> StoredMessage:
        fired_on.append(threading.get_ident())
        return result

    try:
        done = store.transact(_append(message_id="1")).addCallback(fired)
        await dispatched
        await deferLater(reactor, 0, lambda: None)
        assert fired_on == [] and commit_threads == [] and store.head() == 0
    finally:
        release.set()
    message = await done
    assert message.seq == 1 and store.head() == 1
    assert fired_on == [threading.get_ident()]
    assert commit_threads and commit_threads[0] != threading.get_ident()
    await store.close()
    assert SQLiteStore(tmp_path / "real.sqlite3", Clock()).head() == 1


@pytest_twisted.ensureDeferred
async def test_a_failed_commit_in_a_real_worker_thread_refuses_the_batch(tmp_path: Path) -> None:
    """The same failed COMMIT as above, in the reactor's thread pool."""
    from twisted.internet import reactor

    store = SQLiteStore(
        tmp_path / "real.sqlite3",
        reactor,
        in_thread=reactor_threads(reactor),
    )
    orphan = _break_commits(store)
    results: list[Any] = []
    for d in [store.transact(_append(message_id="a")), store.transact(orphan)]:
        d.addBoth(results.append)
    with pytest.raises(StoreUnavailable):
        await store.transact(_append(message_id="b"))  # the same batch: refused with it
    assert len(results) == 2 and all(isinstance(r, Failure) for r in results)
    assert all(r.check(StoreUnavailable) for r in results)
    assert store.head() == 0 and store.problem() is not None
    assert (await store.transact(_append(message_id="b"))).seq == 1
    await store.close()


def test_process_durability_commits_on_the_reactor_thread_and_checkpoints_in_the_worker(
    tmp_path: Path, clock: Clock, held: HeldThreads
) -> None:
    """Without an fsync per commit the commit stays on the reactor thread (no trip to a worker);
    the checkpoints still go to the worker."""
    store = SQLiteStore(tmp_path / "process.sqlite3", clock, durability="process", in_thread=held)
    results = _results([store.transact(_append()) for _ in range(CHECKPOINT_ROWS)])
    clock.advance(0)
    assert len(results) == CHECKPOINT_ROWS and store.head() == CHECKPOINT_ROWS
    assert held.commits() == [] and len(held.jobs) == 1
    held.finish(0)
    assert store._checkpointing is None
    store.close()


def _wal_frames(path: Path) -> int:
    """How many frames the WAL holds (a passive checkpoint from a connection of the test's own)."""
    import sqlite3

    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
    finally:
        db.close()


def test_process_durability_restarts_the_wal_in_the_worker_after_a_checkpoint(
    tmp_path: Path, clock: Clock, held: HeldThreads
) -> None:
    """After a checkpoint that took in the whole WAL, the worker commits once more, which starts
    the WAL over (and syncs its new header) in the worker, not in the next batch's commit on the
    reactor thread: the WAL then holds that one commit's pages, not the hundreds before."""
    path = tmp_path / "process.sqlite3"
    store = SQLiteStore(path, clock, durability="process", in_thread=held)
    _results([store.transact(_append()) for _ in range(CHECKPOINT_ROWS)])
    clock.advance(0)
    assert _wal_frames(path) > 50
    held.finish(0)
    assert _wal_frames(path) <= 3
    after = _results([store.transact(_append(message_id="after"))])
    clock.advance(0)
    assert after[0].seq == CHECKPOINT_ROWS + 1
    store.close()
    assert SQLiteStore(path, Clock()).head() == CHECKPOINT_ROWS + 1


def test_a_batch_waits_for_the_workers_wal_restart_instead_of_blocking(
    tmp_path: Path, clock: Clock, held: HeldThreads
) -> None:
    """While the worker holds the writer lock (its restart commit), the reactor thread does not
    wait for SQLite's lock: the batch stays queued, and is committed when the worker is done."""
    store = SQLiteStore(tmp_path / "process.sqlite3", clock, durability="process", in_thread=held)
    lock = store._writer_lock
    assert lock is not None and lock.acquire(blocking=False)  # the worker, mid-restart
    results = _results([store.transact(_append(message_id="m1"))])
    clock.advance(0)
    assert results == [] and store.head() == 0
    lock.release()
    store._checkpoint_done(None)  # the worker's job returned
    assert [r.seq for r in results] == [1]
    store.close()
