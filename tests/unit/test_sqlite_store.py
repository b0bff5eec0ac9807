"""The SQLite store on a real file, driven by a fake clock: group commit, atomic units, failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from vibews.protocol import CONFLICT, Refusal
from vibews.store import IStoreTransaction, StoredMessage, StoreUnavailable
from vibews.store.sqlite import SQLiteStore, StoreLocked


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


def test_refused_unit_is_undone_and_leaves_no_gap(store: Any, clock: Clock) -> None:
    """A unit that raises has its writes rolled back; the units around it commit with consecutive
    seqs."""

    def refuse(txn: IStoreTransaction) -> None:
        txn.append("question", "a", "q", None, lambda seq: {"seq": seq})
        raise Refusal(CONFLICT, "taken")

    results = _results(
        [store.transact(_append(message_id="1")), store.transact(refuse), store.transact(_append())]
    )
    clock.advance(0)
    assert results[0].seq == 1
    assert results[1].check(Refusal)
    assert results[2].seq == 2
    assert [m.seq for m in store.read(0, None, 10)] == [1, 2]


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


def test_reopening_continues_seq_and_keeps_epoch(tmp_path: Path, clock: Clock) -> None:
    """A reopened store continues after its newest seq and names the same history (epoch)."""
    path = tmp_path / "s.sqlite3"
    first = SQLiteStore(path, clock)
    epoch = first.epoch
    _results([first.transact(_append()) for _ in range(3)])
    first.close()  # close() flushes what is queued
    second = SQLiteStore(path, clock)
    assert second.head() == 3 and second.epoch == epoch
    done = _results([second.transact(_append())])
    clock.advance(0)
    assert done[0].seq == 4
    second.close()


def test_second_process_on_the_same_file_is_refused(store: Any, tmp_path: Path) -> None:
    """Two stores on one file would hand out the same seq: the second is refused."""
    with pytest.raises(StoreLocked):
        SQLiteStore(tmp_path / "store.sqlite3", Clock())


def test_history_is_trimmed_but_pending_answers_are_kept(tmp_path: Path, clock: Clock) -> None:
    """Past --history the oldest messages are dropped (oldest() moves on), while a pending answer
    stays whatever its age."""
    store = SQLiteStore(tmp_path / "t.sqlite3", clock, history=100)

    def answer(txn: IStoreTransaction) -> StoredMessage:
        stored = txn.append("answer", "d", "a1", "bot", lambda seq: {"type": "answer", "seq": seq})
        txn.add_pending("bot", stored)
        return stored

    _results([store.transact(answer)])
    clock.advance(0)
    for i in range(400):
        store.transact(_append(message_id=f"m{i}"))
        clock.advance(0)
    assert store.oldest() > 1
    assert store.head() - store.oldest() + 1 <= 100 + 64
    assert [m.seq for m in store.pending_answers("bot")] == [1]
    assert store.read(0, "bot", 10) == []  # the journal copy left with the history
    store.close()


def test_read_filters_by_agent_and_pages(store: Any, clock: Clock) -> None:
    """read() pages through the journal; with an agent it returns only that agent's deliveries."""

    def to_bot(txn: IStoreTransaction) -> StoredMessage:
        return txn.append("answer", "d", None, "bot", lambda seq: {"seq": seq})

    for work in (_append(), to_bot, _append(), to_bot):
        store.transact(work)
    clock.advance(0)
    assert [m.seq for m in store.read(0, None, 3)] == [1, 2, 3]
    assert [m.seq for m in store.read(3, None, 3)] == [4]
    assert [m.seq for m in store.read(0, "bot", 10)] == [2, 4]


def test_duplicates_and_questions_are_seen_inside_the_same_batch(store: Any, clock: Clock) -> None:
    """A unit sees the writes of earlier units of its batch (duplicate ids, new questions)."""
    seen: list[Any] = []

    def ask(txn: IStoreTransaction) -> None:
        stored = txn.append("question", "a", "q1", None, lambda seq: {"seq": seq})
        txn.add_question("q1", "a", stored.seq, {"seq": stored.seq}, None, None)

    def look(txn: IStoreTransaction) -> None:
        seen.append(txn.find_duplicate("a", "q1"))
        seen.append(txn.get_question("q1"))

    store.transact(ask)
    store.transact(look)
    clock.advance(0)
    assert seen[0] == 1
    assert seen[1].state == "open" and seen[1].agent == "a"


def test_closed_store_refuses_new_work(store: Any) -> None:
    """After close(), transact raises StoreUnavailable instead of queueing work that never runs."""
    store.close()
    with pytest.raises(StoreUnavailable):
        store.transact(_append())
