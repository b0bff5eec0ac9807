"""A session's per-connection containers are made on first use (memory per idle connection): they
must behave exactly like the sets and the close Deferred they replace."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock

from vibews.hub import Hub
from vibews.peer import HubSettings
from vibews.session import Session
from vibews.store.sqlite import SQLiteStore
from vibews.testing import RecordingPeer
from vibews.tokens import Identity


def _session(tmp_path: Path, role: str = "agent") -> Session:
    clock = Clock()
    store = SQLiteStore(tmp_path / "store.sqlite3", clock, durability="process")
    hub = Hub(store, clock, HubSettings(rate=0, presence_grace=0))
    return hub.open_session(RecordingPeer(), Identity("a", role), digest="d")  # type: ignore[arg-type]


def test_delivered_seqs_are_taken_up_to_the_acked_seq_and_can_be_restored(tmp_path: Path) -> None:
    """``take_delivered(n)`` returns and forgets exactly the seqs ≤ n; restored ones are pending
    again; an ack on a connection that was never sent anything takes nothing."""
    session = _session(tmp_path)
    assert session.take_delivered(100) == set()
    for seq in (5, 9, 12):
        session.mark_delivered(seq)
    assert session.take_delivered(9) == {5, 9}
    assert session.take_delivered(9) == set()
    session.restore_delivered({5, 9})
    assert session.take_delivered(11) == {5, 9}
    assert session.take_delivered(12) == {12}


def test_claims_are_empty_until_added(tmp_path: Path) -> None:
    """A connection that claimed nothing reports no claims; claims added are all reported."""
    session = _session(tmp_path, "dashboard")
    assert list(session.claims) == []
    session.add_claim("q1")
    session.add_claim("q2")
    session.add_claim("q1")
    assert sorted(session.claims) == ["q1", "q2"]


def test_when_closed_fires_on_close_and_at_once_after_it(tmp_path: Path) -> None:
    """Every waiter made while open fires when the connection closes; one made afterwards has
    already fired; the session is unregistered from the hub."""
    session = _session(tmp_path)
    fired: list[int] = []
    session.when_closed().addCallback(lambda _: fired.append(1))
    session.when_closed().addCallback(lambda _: fired.append(2))
    assert fired == []
    session.closed()
    assert fired == [1, 2]
    assert session.connection_id not in session.hub.sessions
    session.when_closed().addCallback(lambda _: fired.append(3))
    assert fired == [1, 2, 3]
