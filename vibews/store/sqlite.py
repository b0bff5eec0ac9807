"""The embedded store: one SQLite file in WAL mode, one commit per reactor turn.

Why the units of work run on the reactor thread: the seq counter, the duplicate check and the question
state must be decided atomically with the append, and SQLite reads inside an open transaction see its
own writes. Running every queued unit of a turn in one transaction (begin, run the units) keeps that
atomic without locks. Only then is the batch committed (group commit: one fsync for every message that
arrived in the same turn), and only after the commit returned do its Deferreds fire, so no ack and no
relay ever precedes the commit.

Where the commit runs: given ``in_thread`` (the server passes :func:`reactor_threads`) and the
``full`` durability, the ``COMMIT`` (and with it the fsync) runs in a worker thread, so the reactor
keeps reading, parsing and writing while the disk syncs; the messages that arrive meanwhile form the
next batch, which begins once the commit in flight has returned (one connection, one transaction:
commits stay in order). While a commit is in flight, reads (``head``, ``snapshot``, ``read``...)
answer from a second connection pinned to the state before that commit, so nobody sees a ``seq``
whose commit has not returned. With the ``process`` durability the commit has no fsync and stays on
the reactor thread (cheaper than the trip to a thread and back). In both, the WAL checkpoints, which
SQLite would otherwise run inside the commit every thousand pages (with fsyncs: 6-7 ms of a blocked
reactor every 0.3 s at 2,000 msg/s), run on a connection of their own in a worker thread. Without
``in_thread`` (tests on a fake clock) commits and checkpoints run synchronously on the reactor
thread, as before.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads, IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vibews.protocol import encode
from vibews.store import (
    AgentRecord,
    Claim,
    IStore,
    IStoreTransaction,
    QuestionRecord,
    Snapshot,
    StoredMessage,
    StoreUnavailable,
)
from vibews.timestamps import format_rfc3339

T = TypeVar("T")
Durability = Literal["full", "process"]

InThread = Callable[[Callable[[], Any]], "Deferred[Any]"]
"""Runs a blocking function in a worker thread; the Deferred fires, on the reactor thread, with its
result or its exception."""

# Rows written since the last checkpoint after which the next one starts. SQLite's own automatic
# checkpoint runs every 1,000 pages of WAL; since the duplicate check's index left the file
# (_SEEN_SCHEMA), ten agents' messages (20 rows) write 3 to 5 pages, so 5,000 rows are about that.
# Fewer checkpoints also mean fewer stalls of the reactor thread: after a checkpoint the next commit
# restarts the WAL, and with synchronous=NORMAL SQLite syncs the WAL's new header in that commit
# (0.3-1 ms here). At 1,000 rows that happened 5 times a second at 2,000 msg/s, and the bursts that
# met it (3.5% of them) made the p99 of acks.
CHECKPOINT_ROWS = 5000

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    sender TEXT,
    message_id TEXT,
    agent TEXT,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_agent ON journal (agent, seq) WHERE agent IS NOT NULL;
CREATE TABLE IF NOT EXISTS agents (
    name TEXT PRIMARY KEY,
    online INTEGER NOT NULL DEFAULT 0,
    status TEXT,
    last_seen TEXT
);
CREATE TABLE IF NOT EXISTS tasks (task_id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS questions (
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    closing_seq INTEGER,
    data TEXT NOT NULL,
    deadline REAL,
    schema TEXT,
    answer_seq INTEGER,
    claim_by TEXT,
    claim_until REAL,
    claim_connection TEXT,
    delivered_at TEXT
);
CREATE INDEX IF NOT EXISTS questions_open ON questions (state, seq);
CREATE INDEX IF NOT EXISTS questions_closed ON questions (closing_seq);
CREATE INDEX IF NOT EXISTS questions_agent_open ON questions (agent) WHERE state = 'open';
CREATE UNIQUE INDEX IF NOT EXISTS questions_answer ON questions (answer_seq)
    WHERE answer_seq IS NOT NULL;
CREATE TABLE IF NOT EXISTS pending (
    seq INTEGER PRIMARY KEY,
    agent TEXT NOT NULL,
    type TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS pending_agent ON pending (agent, seq);
"""

# The duplicate check's index, for a journal kept in memory (the Redis store's mirror). The file
# store keeps it in memory instead: see ``_SEEN_SCHEMA``.
JOURNAL_DEDUP = """
CREATE UNIQUE INDEX IF NOT EXISTS journal_dedup ON journal (sender, message_id)
    WHERE message_id IS NOT NULL;
"""

# The (sender, id) of every journal message, for the duplicate check: a table in an in-memory
# database attached to the file's connection, filled from the journal at start, written and trimmed
# in the same transactions as the journal. Why not an index in the file, as before: ids are random
# (UUIDs) and senders many, so every message landed in its own leaf page of that index; ten agents'
# messages committed together wrote 16 pages to the WAL, 13 of them the index's, and every one of
# them was written again by the next checkpoint. The index is derived from the journal's own
# columns, so nothing acknowledged depends on it surviving a crash: it is rebuilt from the journal.
# It costs about 55 bytes per journal message (5.5 MB at the default history of 100,000).
_SEEN_SCHEMA = """
CREATE TABLE ids.seen (
    sender TEXT NOT NULL,
    message_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (sender, message_id)
) WITHOUT ROWID;
INSERT INTO ids.seen (sender, message_id, seq)
    SELECT sender, message_id, seq FROM main.journal
    WHERE sender IS NOT NULL AND message_id IS NOT NULL;
"""

_FIND_SEEN = "SELECT seq FROM ids.seen WHERE sender = ? AND message_id = ?"
_FIND_IN_JOURNAL = "SELECT seq FROM journal WHERE sender = ? AND message_id = ?"

_log = Logger()

_LIFECYCLE_COLUMNS = (
    ("deadline", "REAL"),
    ("schema", "TEXT"),
    ("answer_seq", "INTEGER"),
    ("claim_by", "TEXT"),
    ("claim_until", "REAL"),
    ("claim_connection", "TEXT"),
    ("delivered_at", "TEXT"),
)

_QUESTION_COLUMNS = (
    "id, agent, state, seq, deadline, schema, answer_seq, claim_by, claim_until,"
    " claim_connection, delivered_at"
)


def _question(row: Any) -> QuestionRecord:
    qid, agent, state, seq, deadline, schema, answer_seq, by, until, connection, delivered = row
    return QuestionRecord(
        id=qid,
        agent=agent,
        state=state,
        seq=int(seq),
        deadline=deadline,
        schema=None if schema is None else json.loads(schema),
        answer_seq=answer_seq,
        claim=None if by is None else Claim(by=by, until=until, connection=connection),
        delivered=delivered is not None,
    )


class StoreLocked(Exception):
    """Another process already serves from this data directory."""


@implementer(IStoreTransaction)
class _Transaction:
    """The view handed to a unit of work while the batch transaction is open."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self._db = store._db

    def find_duplicate(self, sender: str, message_id: str) -> int | None:
        sql = _FIND_SEEN if self._store._keeps_seen else _FIND_IN_JOURNAL
        row = self._db.execute(sql, (sender, message_id)).fetchone()
        return None if row is None else int(row[0])

    def append(
        self,
        message_type: str,
        sender: str | None,
        message_id: str | None,
        agent: str | None,
        build: Callable[[int], Mapping[str, Any]],
    ) -> StoredMessage:
        seq = self._store._head + 1
        data = encode(build(seq))
        self._db.execute(
            "INSERT INTO journal (seq, type, sender, message_id, agent, data)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (seq, message_type, sender, message_id, agent, data),
        )
        if self._store._keeps_seen and sender is not None and message_id is not None:
            self._db.execute(
                "INSERT INTO ids.seen (sender, message_id, seq) VALUES (?, ?, ?)",
                (sender, message_id, seq),
            )
        self._store._head = seq
        return StoredMessage(seq=seq, type=message_type, data=data, agent=agent)

    def set_agent_status(self, name: str, payload: Mapping[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO agents (name, status) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET status = excluded.status",
            (name, encode(payload).decode()),
        )

    def set_presence(self, name: str, online: bool, last_seen: str) -> None:
        self._db.execute(
            "INSERT INTO agents (name, online, last_seen) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET online = excluded.online,"
            " last_seen = excluded.last_seen",
            (name, int(online), last_seen),
        )

    def online_agents(self) -> list[str]:
        rows = self._db.execute("SELECT name FROM agents WHERE online = 1 ORDER BY name")
        return [str(row[0]) for row in rows]

    def set_task(self, task_id: str, frame: Mapping[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO tasks (task_id, data) VALUES (?, ?)"
            " ON CONFLICT (task_id) DO UPDATE SET data = excluded.data",
            (task_id, encode(frame).decode()),
        )

    def get_question(self, question_id: str) -> QuestionRecord | None:
        row = self._db.execute(
            f"SELECT {_QUESTION_COLUMNS} FROM questions WHERE id = ?",  # noqa: S608 (constant columns)
            (question_id,),
        ).fetchone()
        return None if row is None else _question(row)

    def count_open_questions(self, agent: str) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM questions WHERE agent = ? AND state = 'open'", (agent,)
        ).fetchone()
        return int(row[0])

    def add_question(
        self,
        question_id: str,
        agent: str,
        seq: int,
        frame: Mapping[str, Any],
        deadline: float | None,
        schema: Mapping[str, Any] | None,
    ) -> None:
        self._db.execute(
            "INSERT INTO questions (id, agent, seq, state, data, deadline, schema)"
            " VALUES (?, ?, ?, 'open', ?, ?, ?)",
            (
                question_id,
                agent,
                seq,
                encode(frame).decode(),
                deadline,
                None if schema is None else encode(schema).decode(),
            ),
        )

    def close_question(
        self, question_id: str, state: str, closing_seq: int, answer_seq: int | None = None
    ) -> None:
        self._db.execute(
            "UPDATE questions SET state = ?, closing_seq = ?, answer_seq = ?, claim_by = NULL,"
            " claim_until = NULL, claim_connection = NULL WHERE id = ?",
            (state, closing_seq, answer_seq, question_id),
        )

    def set_claim(self, question_id: str, claim: Claim | None) -> None:
        self._db.execute(
            "UPDATE questions SET claim_by = ?, claim_until = ?, claim_connection = ? WHERE id = ?",
            (
                None if claim is None else claim.by,
                None if claim is None else claim.until,
                None if claim is None else claim.connection,
                question_id,
            ),
        )

    def claimed_questions(self) -> list[QuestionRecord]:
        rows = self._db.execute(
            f"SELECT {_QUESTION_COLUMNS} FROM questions"  # noqa: S608 (constant columns)
            " WHERE state = 'open' AND claim_by IS NOT NULL ORDER BY seq"
        )
        return [_question(row) for row in rows]

    def overdue_questions(self, now: float) -> list[QuestionRecord]:
        rows = self._db.execute(
            f"SELECT {_QUESTION_COLUMNS} FROM questions"  # noqa: S608 (constant columns)
            " WHERE state = 'open' AND deadline IS NOT NULL AND deadline <= ? ORDER BY deadline",
            (now,),
        )
        return [_question(row) for row in rows]

    def mark_delivered(self, answer_seq: int, delivered_at: str) -> str | None:
        row = self._db.execute(
            "SELECT id FROM questions WHERE answer_seq = ? AND delivered_at IS NULL", (answer_seq,)
        ).fetchone()
        if row is None:
            return None
        self._db.execute(
            "UPDATE questions SET delivered_at = ? WHERE answer_seq = ?",
            (delivered_at, answer_seq),
        )
        return str(row[0])

    def add_pending(self, agent: str, message: StoredMessage) -> None:
        self._db.execute(
            "INSERT INTO pending (seq, agent, type, data) VALUES (?, ?, ?, ?)",
            (message.seq, agent, message.type, message.data),
        )

    def clear_pending(self, agent: str, seqs: Collection[int]) -> list[int]:
        cleared = []
        for seq in sorted(seqs):
            cursor = self._db.execute(
                "DELETE FROM pending WHERE agent = ? AND seq = ?", (agent, seq)
            )
            if cursor.rowcount:
                cleared.append(seq)
        return cleared


def reactor_threads(reactor: Any) -> InThread:
    """Run blocking store work in the reactor's thread pool (started and stopped with the
    reactor), handing results back to the reactor thread. ``reactor`` provides IReactorThreads
    and IReactorFromThreads (the global reactor's type names neither)."""
    assert IReactorThreads.providedBy(reactor) and IReactorFromThreads.providedBy(reactor)
    pool = reactor.getThreadPool()
    return lambda function: deferToThreadPool(reactor, pool, function)


class _Commit:
    """The batch whose ``COMMIT`` is in flight in a worker thread, and the state before it."""

    def __init__(
        self,
        batch: list[tuple[Callable[[IStoreTransaction], Any], Deferred[Any]]],
        outcomes: list[Any],
        head_before: int,
        oldest_before: int,
        started: float,
    ) -> None:
        self.batch = batch
        self.outcomes = outcomes
        self.head_before = head_before
        self.oldest_before = oldest_before
        self.started = started
        self.done: list[Deferred[None]] = []


@implementer(IStore)
class SQLiteStore:
    """The default store: a SQLite file under the data directory."""

    # Class-level defaults: RedisStore subclasses this store without calling __init__, and keeps
    # the synchronous model (no commit in flight, reads on ``_db``).
    _committing: _Commit | None = None
    _commit_in_thread = False
    _reader: sqlite3.Connection | None = None
    _closing = False
    _restart_in_worker = False
    _writer_lock: threading.Lock | None = None
    # Where the duplicate check looks (see _SEEN_SCHEMA); the Redis store's mirror keeps the
    # journal's own index.
    _keeps_seen = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        clock: IReactorTime,
        durability: Durability = "full",
        history: int = 100_000,
        on_commit: Callable[[float, int], None] | None = None,
        in_thread: InThread | None = None,
    ) -> None:
        self._path = Path(path)
        self._clock = clock
        self._history = history
        self._on_commit = on_commit
        self._in_thread = in_thread
        self._lock_fd = self._take_lock(self._path)
        self._db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = WAL")
        synchronous = "FULL" if durability == "full" else "NORMAL"
        self._db.execute(f"PRAGMA synchronous = {synchronous}")
        self._migrate()
        self._db.executescript(_SCHEMA)
        self._db.execute("DROP INDEX IF EXISTS journal_dedup")  # schema 2 kept it in the file
        self._db.execute("ATTACH DATABASE ':memory:' AS ids")
        self._db.executescript(_SEEN_SCHEMA)
        self._keeps_seen = True
        self.epoch = self._meta("epoch", lambda: uuid.uuid4().hex)
        self._meta("schema_version", lambda: str(SCHEMA_VERSION))
        self._head = int(
            self._db.execute("SELECT coalesce(max(seq), 0) FROM journal").fetchone()[0]
        )
        self._oldest = int(
            self._db.execute(
                "SELECT coalesce(min(seq), ?) FROM journal", (self._head + 1,)
            ).fetchone()[0]
        )
        self._queue: list[tuple[Callable[[IStoreTransaction], Any], Deferred[Any]]] = []
        self._flush_call: Any = None
        self._problem: str | None = None
        self._closed = False
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpointing: Deferred[Any] | None = None
        self._rows_at_checkpoint = 0
        # Only a commit that fsyncs is worth a trip to a worker thread and back (two thread
        # wake-ups, measured at 0.3 ms at p50 on a busy 2-core machine); without the fsync a
        # commit of a turn's batch takes about 60 µs.
        self._commit_in_thread = in_thread is not None and durability == "full"
        if self._commit_in_thread:
            self._reader = self._connect(synchronous)
        if in_thread is not None:
            # Checkpoints move to a worker thread (see the module's docstring): the writer never
            # runs one inside its commit.
            self._db.execute("PRAGMA wal_autocheckpoint = 0")
            self._checkpointer = self._connect(synchronous)
            # With the commit on the reactor thread, the worker also restarts the WAL after a
            # checkpoint (see _checkpoint): the two writers take turns through this lock, which
            # the reactor thread only ever tries, never waits for.
            self._restart_in_worker = not self._commit_in_thread
            self._writer_lock = threading.Lock()

    def _connect(self, synchronous: str) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA synchronous = {synchronous}")
        return db

    @staticmethod
    def _take_lock(path: Path) -> int:
        """Two processes appending to one journal would hand out the same seq: refuse the second."""
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLocked(f"{path} is in use by another vibews process") from None
        return fd

    def _migrate(self) -> None:
        """Schema 1 (before the question lifecycle) to 2: add the lifecycle columns."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(questions)")}
        if not columns or "deadline" in columns:
            return
        for name, kind in _LIFECYCLE_COLUMNS:
            self._db.execute(f"ALTER TABLE questions ADD COLUMN {name} {kind}")
        self._db.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
        )

    def _meta(self, key: str, default: Callable[[], str]) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is not None:
            return str(row[0])
        value = default()
        self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
        return value

    # -- writes --------------------------------------------------------------------------------

    def transact(self, work: Callable[[IStoreTransaction], T]) -> Deferred[T]:
        if self._closed:
            raise StoreUnavailable("the store is closed")
        done: Deferred[T] = Deferred()
        self._queue.append((work, done))
        if self._flush_call is None:
            self._flush_call = self._clock.callLater(0, self._flush)
        return done

    def _flush(self) -> None:
        self._flush_call = None
        if self._committing is not None:
            return  # the queue becomes the next batch once the commit in flight has returned
        if not self._queue:
            return
        lock = self._writer_lock if self._restart_in_worker else None
        if lock is not None and not lock.acquire(blocking=False):
            return  # the worker is restarting the WAL; _checkpoint_done flushes the queue
        batch, self._queue = self._queue, []
        head_before, oldest_before = self._head, self._oldest
        started = time.perf_counter()
        outcomes: list[Any] = []
        failed: sqlite3.Error | None = None
        try:
            self._db.execute("BEGIN IMMEDIATE")
            txn = _Transaction(self)
            for work, _ in batch:
                outcomes.append(self._run_one(work, txn))
            self._trim_history()
            if not self._commit_in_thread or self._closing:
                self._db.execute("COMMIT")
        except sqlite3.Error as error:
            failed = error
        finally:
            if lock is not None:
                lock.release()  # before any Deferred fires: a callback may flush again
        if failed is not None:
            self._refuse(batch, head_before, oldest_before, failed)
            return
        commit = _Commit(batch, outcomes, head_before, oldest_before, started)
        if not self._commit_in_thread or self._closing:
            self._fire_committed(commit)
            self._checkpoint_if_due()
            return
        self._committing = commit
        self._pin_reads()
        assert self._in_thread is not None
        d = self._in_thread(self._commit_statement)
        d.addCallbacks(
            self._commit_returned,
            self._commit_refused,
            callbackArgs=(commit,),
            errbackArgs=(commit,),
        )

    def _commit_statement(self) -> None:
        """In the worker thread: the COMMIT (and its fsync). The reactor thread does not touch the
        writer connection until this has returned."""
        self._db.execute("COMMIT")

    def _commit_returned(self, _: object, commit: _Commit) -> None:
        self._release(commit)
        self._fire_committed(commit)
        self._after_commit(commit)

    def _commit_refused(self, failure: Failure, commit: _Commit) -> None:
        self._release(commit)
        error = failure.value
        if not isinstance(error, sqlite3.Error):
            _log.failure("committing a batch failed", failure)
            error = sqlite3.OperationalError(str(error))
        self._refuse(commit.batch, commit.head_before, commit.oldest_before, error)
        self._after_commit(commit)

    def _release(self, commit: _Commit) -> None:
        """The commit in flight has returned: reads see the writer's state again."""
        self._committing = None
        self._unpin_reads()

    def _after_commit(self, commit: _Commit) -> None:
        """Start the next batch at once (its messages waited for this commit) and wake whoever
        waits for the store to be idle."""
        self._checkpoint_if_due()
        if self._queue and self._committing is None:
            if self._flush_call is not None:
                self._flush_call.cancel()
            self._flush()
        for waiter in commit.done:
            waiter.callback(None)

    def _fire_committed(self, commit: _Commit) -> None:
        """Fire the Deferreds of a committed batch, in the order its units ran."""
        self._problem = None
        if self._on_commit is not None:
            self._on_commit(time.perf_counter() - commit.started, len(commit.batch))
        for (_, done), outcome in zip(commit.batch, commit.outcomes, strict=True):
            if isinstance(outcome, Failure):
                done.errback(outcome)
            else:
                done.callback(outcome)

    def _refuse(
        self,
        batch: list[tuple[Callable[[IStoreTransaction], Any], Deferred[Any]]],
        head_before: int,
        oldest_before: int,
        error: sqlite3.Error,
    ) -> None:
        """Nothing of the batch was committed: every unit fails with StoreUnavailable."""
        self._abandon(head_before, error)
        self._oldest = oldest_before
        failure = Failure(StoreUnavailable(f"the store cannot take writes: {error}"))
        for _, done in batch:
            done.errback(failure)

    def _pin_reads(self) -> None:
        """Hold the reader connection on the state before the commit in flight (a WAL read
        transaction keeps the snapshot it began with), so no read sees that commit before its
        Deferreds fire."""
        assert self._reader is not None
        self._reader.execute("BEGIN")
        self._reader.execute("SELECT 1 FROM meta LIMIT 1").fetchall()

    def _unpin_reads(self) -> None:
        assert self._reader is not None
        try:
            self._reader.execute("COMMIT")
        except sqlite3.Error as error:
            # Never leave the batch's Deferreds unfired over a read transaction: end it anyhow.
            _log.error("ending the pinned read failed: {error}", error=str(error))
            if self._reader.in_transaction:
                self._reader.execute("ROLLBACK")

    @property
    def _reads(self) -> sqlite3.Connection:
        """The connection for reads outside a unit of work."""
        return self._db if self._reader is None else self._reader

    def _checkpoint_if_due(self) -> None:
        """Start a WAL checkpoint in a worker thread once enough rows were written since the last
        one, unless one still runs. A passive checkpoint never blocks the writer or readers."""
        if self._checkpointer is None or self._checkpointing is not None:
            return
        if self._in_thread is None or self._closing:
            return
        if self._db.total_changes - self._rows_at_checkpoint < CHECKPOINT_ROWS:
            return
        self._rows_at_checkpoint = self._db.total_changes
        d = self._in_thread(self._checkpoint)
        self._checkpointing = d
        d.addErrback(self._checkpoint_failed)
        d.addBoth(self._checkpoint_done)

    def _checkpoint(self) -> None:
        """In the worker thread: a passive checkpoint, then, if it took in the whole WAL, the WAL's
        restart. The first commit after a complete checkpoint starts the WAL over from its
        beginning, and with ``synchronous=NORMAL`` SQLite syncs the new WAL header inside that
        commit (without it, its source says, a power loss could corrupt the database). Left to
        the next batch, that sync (0.3-1 ms here) stalled the reactor thread once per checkpoint;
        a commit of one small row here does it in the worker instead, between batches. The
        reactor thread never waits for it: while this holds the writer lock, the queue waits for
        _checkpoint_done."""
        checkpointer = self._checkpointer
        assert checkpointer is not None
        busy, wal_frames, copied = checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if not self._restart_in_worker or busy or wal_frames <= 0 or copied != wal_frames:
            return
        assert self._writer_lock is not None
        with self._writer_lock:
            checkpointer.execute("BEGIN IMMEDIATE")
            try:
                # A row that really changes (SQLite writes no page for an unchanged one): the
                # count of these restarts, which nothing else reads.
                checkpointer.execute(
                    "INSERT INTO meta (key, value) VALUES ('wal_restarts', '1') ON CONFLICT (key)"
                    " DO UPDATE SET value = CAST(value AS INTEGER) + 1"
                )
                checkpointer.execute("COMMIT")
            except sqlite3.Error:
                checkpointer.execute("ROLLBACK")
                raise

    def _checkpoint_failed(self, failure: Failure) -> None:
        # Not fatal: the WAL grows until the next checkpoint succeeds.
        _log.warn("WAL checkpoint failed: {error}", error=failure.getErrorMessage())

    def _checkpoint_done(self, _: object) -> None:
        self._checkpointing = None
        if self._restart_in_worker and self._queue and self._flush_call is None:
            self._flush()  # it waited for the worker's writer lock

    def _run_one(self, work: Callable[[IStoreTransaction], Any], txn: _Transaction) -> Any:
        """One unit of work in a savepoint, so a refusal undoes its writes and nothing else."""
        head_before = self._head
        self._db.execute("SAVEPOINT unit")
        try:
            result = work(txn)
        except sqlite3.Error:
            raise
        except Exception:
            self._db.execute("ROLLBACK TO unit")
            self._db.execute("RELEASE unit")
            self._head = head_before
            return Failure()
        self._db.execute("RELEASE unit")
        return result

    def _abandon(self, head_before: int, error: sqlite3.Error) -> None:
        self._head = head_before
        self._problem = f"commit failed: {error}"
        _log.error("store commit failed, batch refused as unavailable: {error}", error=str(error))
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # no transaction was open

    def _trim_history(self) -> None:
        """Keep ``history`` messages; trim in chunks so a trim never costs a whole table scan."""
        keep_from = self._head - self._history + 1
        slack = max(64, self._history // 100)
        if keep_from - self._oldest < slack:
            return
        if self._keeps_seen:
            self._db.execute(
                "DELETE FROM ids.seen WHERE (sender, message_id) IN (SELECT sender, message_id"
                " FROM main.journal WHERE seq < ? AND message_id IS NOT NULL)",
                (keep_from,),
            )
        self._db.execute("DELETE FROM journal WHERE seq < ?", (keep_from,))
        self._oldest = keep_from

    # -- reads ---------------------------------------------------------------------------------

    def head(self) -> int:
        committing = self._committing
        return self._head if committing is None else committing.head_before

    def oldest(self) -> int:
        committing = self._committing
        if committing is None:
            return min(self._oldest, self._head + 1)
        return min(committing.oldest_before, committing.head_before + 1)

    def snapshot(self, agent_names: Collection[str]) -> Snapshot:
        agents: dict[str, AgentRecord] = {
            name: AgentRecord(name=name, online=False, status=None, last_seen=None)
            for name in agent_names
        }
        for name, online, status, last_seen in self._reads.execute(
            "SELECT name, online, status, last_seen FROM agents"
        ):
            agents[name] = AgentRecord(
                name=name,
                online=bool(online),
                status=None if status is None else json.loads(status),
                last_seen=last_seen,
            )
        questions = []
        for data, state, by, until, delivered in self._reads.execute(
            "SELECT data, state, claim_by, claim_until, delivered_at IS NOT NULL FROM questions"
            " WHERE state = 'open' OR closing_seq >= ? ORDER BY seq",
            (self.oldest(),),
        ):
            question = json.loads(data)
            question["state"] = state
            question["claim"] = None if by is None else {"by": by, "until": format_rfc3339(until)}
            question["delivered"] = bool(delivered)
            questions.append(question)
        tasks = {
            task_id: json.loads(data)
            for task_id, data in self._reads.execute("SELECT task_id, data FROM tasks")
        }
        return Snapshot(seq=self.head(), agents=agents, questions=questions, tasks=tasks)

    def pending_answers(self, agent: str) -> list[StoredMessage]:
        rows = self._reads.execute(
            "SELECT seq, type, data FROM pending WHERE agent = ? ORDER BY seq", (agent,)
        )
        return [StoredMessage(seq=s, type=t, data=bytes(d), agent=agent) for s, t, d in rows]

    def deadlines(self) -> list[tuple[str, float]]:
        rows = self._reads.execute(
            "SELECT id, deadline FROM questions WHERE state = 'open' AND deadline IS NOT NULL"
        )
        return [(str(qid), float(deadline)) for qid, deadline in rows]

    def read(self, after: int, agent: str | None, limit: int) -> list[StoredMessage]:
        if agent is None:
            rows = self._reads.execute(
                "SELECT seq, type, agent, data FROM journal WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            )
        else:
            rows = self._reads.execute(
                "SELECT seq, type, agent, data FROM journal WHERE agent = ? AND seq > ?"
                " ORDER BY seq LIMIT ?",
                (agent, after, limit),
            )
        return [StoredMessage(seq=s, type=t, data=bytes(d), agent=a) for s, t, a, d in rows]

    def problem(self) -> str | None:
        if self._problem is None:
            try:
                self._reads.execute("SELECT 1").fetchone()
            except sqlite3.Error as error:
                return f"store unreadable: {error}"
        return self._problem

    def close(self) -> Deferred[None]:
        """Flush what is queued (so it is acked), then close the files and release the lock.
        A commit or checkpoint in flight in a worker thread is waited for first; what is queued
        after it commits on the reactor thread."""
        if self._closed:
            return succeed(None)
        self._closing = True
        if self._committing is not None:
            idle: Deferred[None] = Deferred()
            self._committing.done.append(idle)
            return idle.addCallback(lambda _: self.close())
        if self._checkpointing is not None:
            return self._checkpointing.addCallback(lambda _: self.close())
        if self._flush_call is not None:
            self._flush_call.cancel()
            self._flush_call = None
        self._flush()
        self._closed = True
        for db in (self._checkpointer, self._reader):
            if db is not None:
                db.close()
        self._db.close()
        os.close(self._lock_fd)
        return succeed(None)
