"""What only the Redis store does: several stores (nodes) on one Redis commit in one order, each
sees the others' commits, and a Redis that is away refuses writes instead of acking them."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import DeferredList
from twisted.internet.task import deferLater

from vibews.store import IStoreTransaction, StoredMessage, StoreUnavailable
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


@pytest_twisted.ensureDeferred
async def test_racing_nodes_share_one_gapless_seq(pair: tuple[RedisStore, RedisStore]) -> None:
    """Both nodes write in the same turns: every commit is decided on the latest state (the loser
    of a race runs its batch again), so the seqs are one sequence and each node's mirror has all
    of them, in the same order."""
    from twisted.internet import reactor

    a, b = pair
    foreign: dict[str, list[int]] = {"a": [], "b": []}
    a.on_foreign = lambda messages, _: foreign["a"].extend(m.seq for m in messages)
    b.on_foreign = lambda messages, _: foreign["b"].extend(m.seq for m in messages)
    results: list[tuple[bool, Any]] = []
    for i in range(30):  # each round both nodes start from the same state: one must lose
        results += await DeferredList(
            [a.transact(_append("x", f"a{i}")), b.transact(_append("x", f"b{i}"))],
            consumeErrors=True,
        )
    assert a.conflicts + b.conflicts >= 1
    seqs = sorted(r.seq for ok, r in results if ok)
    assert len(seqs) == 60 and seqs == list(range(1, 61))
    while a.head() < 60 or b.head() < 60:  # the tails catch up; bounded by the test timeout
        await deferLater(reactor, 0.01, lambda: None)
    assert [m.data for m in a.read(0, None, 100)] == [m.data for m in b.read(0, None, 100)]
    mine_a = {r.seq for ok, r in results[0::2] if ok}
    assert sorted(foreign["a"]) == sorted(set(range(1, 61)) - mine_a)


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
