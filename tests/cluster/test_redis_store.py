"""What only the Redis store does: several stores (nodes) on one Redis commit in one order, each
sees the others' commits, and a Redis that is away refuses writes instead of acking them."""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import DeferredList
from twisted.internet.task import deferLater

from vibews.protocol import encode
from vibews.store import Claim, IStoreTransaction, StoredMessage, StoreUnavailable
from vibews.store.redis import RedisAddress, RedisStore
from vibews.testing import self_signed_certificate
from vibews.testing_cluster import RedisProcess


def _append(sender: str, message_id: str) -> Any:
    def work(txn: IStoreTransaction) -> StoredMessage:
        if txn.find_duplicate(sender, message_id) is not None:
            raise ValueError("duplicate")
        return txn.append("s", sender, message_id, None, lambda seq: {"seq": seq})

    return work


@pytest_twisted.async_yield_fixture
async def pair(redis: RedisProcess) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    from twisted.internet import reactor

    stores = (RedisStore(redis.url, reactor), RedisStore(redis.url, reactor))
    for store in stores:
        await store.open()
    yield stores
    for store in stores:
        await store.close()


async def _caught_up(reactor: Any, *stores: RedisStore, head: int) -> None:
    while any(store.head() < head for store in stores):  # bounded by the test timeout
        await deferLater(reactor, 0.01, lambda: None)


@pytest_twisted.ensureDeferred
async def test_racing_nodes_share_one_gapless_seq(pair: tuple[RedisStore, RedisStore]) -> None:
    """Both nodes append in the same turns. Neither read what the other wrote, so neither runs
    its batch again: the commit script gives each batch the seqs after the deployment's head, and
    moves the seqs of a batch computed before the other node's append (the entry, and the frame's
    own "seq"). The seqs are one gapless sequence, each node acks what was stored, and every
    mirror holds the same journal."""
    from twisted.internet import reactor

    a, b = pair
    foreign: dict[str, list[int]] = {"a": [], "b": []}
    a.on_foreign = lambda messages, _: foreign["a"].extend(m.seq for m in messages)
    b.on_foreign = lambda messages, _: foreign["b"].extend(m.seq for m in messages)
    results: list[tuple[bool, Any]] = []
    for i in range(30):  # each round both nodes start from the same head: one is moved
        results += await DeferredList(
            [a.transact(_append("x", f"a{i}")), b.transact(_append("x", f"b{i}"))],
            consumeErrors=True,
        )
    assert a.conflicts + b.conflicts == 0
    assert a.moved + b.moved >= 30
    assert all(ok for ok, _ in results)
    seqs = sorted(r.seq for _, r in results)
    assert seqs == list(range(1, 61))
    for _, message in results:  # what the hub would relay: the frame of the seq it was stored at
        assert message.data == encode({"seq": message.seq})
    await _caught_up(reactor, a, b, head=60)
    journal = a.read(0, None, 100)
    assert journal == b.read(0, None, 100)
    assert [m.data for m in journal] == [encode({"seq": seq}) for seq in range(1, 61)]
    assert set(journal) == {r for _, r in results}
    mine_a = {r.seq for _, r in results[0::2]}
    assert sorted(foreign["a"]) == sorted(set(range(1, 61)) - mine_a)


def _task_question_answer(round_: int, agent: str = "bot") -> Any:
    """One batch that writes every kind of row holding a seq: a task (its frame), a question (its
    seq and frame, a deadline with all its digits), and a pending answer (keyed by its seq)."""

    def work(txn: IStoreTransaction) -> list[StoredMessage]:
        def relayed(kind: str) -> Any:
            return lambda seq: {"type": kind, "id": f"{kind}{round_}", "seq": seq, "payload": {}}

        task = txn.append("task_update", agent, f"t{round_}", None, relayed("task_update"))
        txn.set_task(f"task{round_}", json.loads(task.data))
        question = txn.append("question", agent, f"q{round_}", None, relayed("question"))
        txn.add_question(
            f"q{round_}", agent, question.seq, json.loads(question.data), 1764133200.1234567, None
        )
        answer = txn.append("answer", "ops", f"a{round_}", agent, relayed("answer"))
        txn.close_question(f"q{round_}", "answered", answer.seq, answer.seq)
        txn.add_pending(agent, answer)
        return [task, question, answer]

    return work


@pytest_twisted.ensureDeferred
async def test_moved_seqs_reach_every_row_that_holds_one(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    """When the script moves a batch's seqs, the rows it wrote move with them: a task's frame, a
    question's seq, closing and answer seqs and frame, a pending answer's key and frame. Both
    mirrors, and the hub's outcome, agree with the journal. (Two agents: batches that change the
    same agent's questions guard its open-question count, and would run again instead.)"""
    from twisted.internet import reactor

    a, b = pair
    outcomes: dict[int, list[StoredMessage]] = {}
    for i in range(10):  # both nodes start each round from the same head: one of them is moved
        results = await DeferredList(
            [
                a.transact(_task_question_answer(i, "bot0")),
                b.transact(_task_question_answer(100 + i, "bot1")),
            ],
            consumeErrors=True,
        )
        assert all(ok for ok, _ in results)
        outcomes[i], outcomes[100 + i] = results[0][1], results[1][1]
    assert a.moved + b.moved >= 10 and a.conflicts + b.conflicts == 0
    await _caught_up(reactor, a, b, head=60)
    for store in (a, b):
        journal = {m.seq: m for m in store.read(0, None, 100)}
        assert sorted(journal) == list(range(1, 61))
        snapshot = store.snapshot(())
        pending = {m.seq: m for m in store.pending_answers("bot0") + store.pending_answers("bot1")}
        assert sorted(pending) == sorted(answer.seq for _, _, answer in outcomes.values())
        for i, (task, question, answer) in outcomes.items():
            for message in (task, question, answer):
                assert journal[message.seq] == message
                assert json.loads(message.data)["seq"] == message.seq
            assert snapshot.tasks[f"task{i}"]["seq"] == task.seq
            record = store.question(f"q{i}")
            assert record is not None
            assert (record.seq, record.answer_seq) == (question.seq, answer.seq)
            assert record.deadline == 1764133200.1234567
            assert pending[answer.seq] == answer
        in_order = sorted(question.seq for _, question, _ in outcomes.values())
        assert [q["seq"] for q in snapshot.questions] == in_order


def _claim_if_free(by: str) -> Any:
    """Read the question, then claim it unless someone has: the claim rests on what was read."""

    def work(txn: IStoreTransaction) -> str:
        question = txn.get_question("q0")
        assert question is not None
        if question.claim is not None:
            raise ValueError(f"already claimed by {question.claim.by}")
        txn.set_claim("q0", Claim(by=by, until=1764133200.5, connection=by))
        return by

    return work


@pytest_twisted.ensureDeferred
async def test_a_batch_that_read_what_another_node_wrote_runs_again(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    """Guards: two nodes claim the same free question in the same turn. Each read it free; the
    second commit finds the question's row changed since, writes nothing, and its batch runs
    again on the new state, where the question is taken."""
    from twisted.internet import reactor

    a, b = pair
    await a.transact(_task_question_answer(0))
    await a.transact(lambda txn: txn.set_claim("q0", None))
    await _caught_up(reactor, b, head=a.head())
    for _ in range(5):
        results = await DeferredList(
            [a.transact(_claim_if_free("a")), b.transact(_claim_if_free("b"))],
            consumeErrors=True,
        )
        assert sorted(ok for ok, _ in results) == [False, True]
        winner = next(r for ok, r in results if ok)
        loser = next(r for ok, r in results if not ok)
        assert loser.check(ValueError)
        assert loser.getErrorMessage() == f"already claimed by {winner}"
        await a.transact(lambda txn: txn.set_claim("q0", None))
        while b.question("q0").claim is not None:  # type: ignore[union-attr]  # bounded by timeout
            await deferLater(reactor, 0.01, lambda: None)
    assert a.conflicts + b.conflicts >= 5


@pytest_twisted.ensureDeferred
async def test_a_duplicate_written_on_two_nodes_at_once_is_stored_once(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    """The same sender and id arriving on two nodes in the same turn: one wins, the other's batch
    is re-run and finds the duplicate."""
    a, b = pair
    results = await DeferredList(
        [a.transact(_append("x", "same")), b.transact(_append("x", "same"))], consumeErrors=True
    )
    outcomes = sorted(ok for ok, _ in results)
    assert outcomes == [False, True]
    failed = next(r for ok, r in results if not ok)
    assert failed.check(ValueError)


@pytest_twisted.ensureDeferred
async def test_redis_away_refuses_writes_and_healthz_problem(redis: RedisProcess) -> None:
    from twisted.internet import reactor

    store = RedisStore(redis.url, reactor)
    await store.open()
    try:
        assert store.problem() is None
        await redis.stop(signal.SIGKILL)
        with pytest.raises(StoreUnavailable):
            await store.transact(_append("x", "1"))
        assert store.problem() == "redis is not reachable"
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6380/2", RedisAddress("127.0.0.1", 6380, 2, None, False)),
        ("redis://localhost", RedisAddress("localhost", 6379, 0, None, False)),
        ("rediss://:s%40cret@h:1/0", RedisAddress("h", 1, 0, "s@cret", True)),
        ("rediss://h/0?ssl_ca_certs=/ca.pem", RedisAddress("h", 6379, 0, None, True, "/ca.pem")),
    ],
)
def test_redis_urls(url: str, expected: RedisAddress) -> None:
    assert RedisAddress.parse(url) == expected


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("http://127.0.0.1:6379/0", "expected redis://"),
        ("redis:///0", "no host"),
        ("redis://h:port/0", "bad port"),
        ("redis://h:1/zero", "bad port or database"),
        ("redis://h:1/0?ssl_ca_certs=/ca.pem", "needs rediss://"),
        ("redis://h:1/0?timeout=3", "unknown parameter 'timeout'"),
    ],
)
def test_bad_redis_urls_say_why(url: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        RedisAddress.parse(url)


@pytest_twisted.ensureDeferred
async def test_rediss_connects_with_tls_and_verifies_the_certificate(tmp_path: Path) -> None:
    """rediss:// with the CA given as ssl_ca_certs: commits go over TLS. Without that CA (the
    system's trust store does not know this certificate) the store never loads."""
    from twisted.internet import reactor

    tls = self_signed_certificate(tmp_path / "tls", ["127.0.0.1"])
    tls_redis = RedisProcess(tmp_path / "redis", tls=(tls.certificate, tls.key))
    await tls_redis.start()
    store = RedisStore(tls_redis.url, reactor)
    untrusted = RedisStore(tls_redis.url.split("?")[0], reactor)
    try:
        await store.open()
        assert (await store.transact(_append("x", "1"))).seq == 1
        untrusted.open()
        await deferLater(reactor, 1.0, lambda: None)  # a few connection attempts
        assert not untrusted.ready
        assert untrusted.problem() is not None
    finally:
        await store.close()
        await untrusted.close()
        await tls_redis.stop()


def test_a_bad_ca_file_is_refused_at_start(tmp_path: Path) -> None:
    from twisted.internet import reactor

    with pytest.raises(ValueError, match="cannot read ssl_ca_certs"):
        RedisStore(f"rediss://127.0.0.1:1/0?ssl_ca_certs={tmp_path / 'missing.pem'}", reactor)
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ValueError, match="ssl_ca_certs"):
        RedisStore(f"rediss://127.0.0.1:1/0?ssl_ca_certs={tmp_path / 'junk.pem'}", reactor)


@pytest_twisted.ensureDeferred
async def test_a_node_behind_the_retained_commits_reloads(
    pair: tuple[RedisStore, RedisStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node that missed commits Redis no longer keeps reloads the whole state and tells its hub
    (which closes its connections so clients resume) instead of going on with a gap."""
    from twisted.internet import reactor

    monkeypatch.setattr("vibews.store.redis.COMMITS_KEPT", 10)
    a, b = pair
    resyncs: list[int] = []
    b.on_resync = lambda: resyncs.append(b.head())
    b._closed = True  # its tail stops at the next reply: node B "stalls"
    await deferLater(reactor, 1.5, lambda: None)  # the blocking XREAD in flight times out
    for i in range(400):
        await a.transact(_append("x", f"m{i}"))
    b._closed = False
    b._tail()
    while not resyncs:  # bounded by the test timeout
        await deferLater(reactor, 0.01, lambda: None)
    assert resyncs == [400]
    assert b.read(0, None, 1000) == a.read(0, None, 1000)
    assert (await b.transact(_append("x", "after"))).seq == 401
