"""What only the SQLite store does, on a real file driven by a fake clock: one COMMIT per turn, a
failed commit, the file lock. What every store does is in test_store_contract.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

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
