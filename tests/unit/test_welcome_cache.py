"""A dashboard's ``welcome`` snapshot is read and encoded once while nothing changes (handshake
cost, issue 9): every welcome must still be exactly what encoding the state of that moment gives,
and any change (a stored message, the present moment for online agents, the tokens' agent
names) must show in the next welcome."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock

from vibews import __version__, protocol
from vibews.hub import Hub
from vibews.peer import HubSettings
from vibews.session import Session
from vibews.store.sqlite import SQLiteStore
from vibews.testing import RecordingPeer
from vibews.tokens import Identity
from vibews.welcome import snapshot_payload


class _World:
    def __init__(self, directory: Path) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.store = SQLiteStore(directory / "store.sqlite3", self.clock, durability="process")
        self.names = ["agent"]
        self.hub = Hub(
            self.store,
            self.clock,
            HubSettings(rate=0, presence_grace=0),
            agent_names=lambda: list(self.names),
        )

    def connect(self, name: str, role: str) -> tuple[Session, RecordingPeer]:
        peer = RecordingPeer()
        session = self.hub.open_session(peer, Identity(name, role), digest=f"d-{name}")  # type: ignore[arg-type]
        self.clock.advance(0)  # the store's batch (presence) commits
        return session, peer

    def welcome(self) -> tuple[bytes, dict[str, Any]]:
        """A new dashboard's welcome: its bytes, and what encoding the state now would give."""
        session, peer = self.connect("dash", "dashboard")
        snapshot = self.store.snapshot(self.names)
        expected = {
            "type": "welcome",
            "payload": {
                "name": "dash",
                "role": "dashboard",
                "connection": session.connection_id,
                "server": f"vibews/{__version__}",
                "protocol": protocol.PROTOCOL_VERSION,
                "seq": snapshot.seq,
                "heartbeat": self.hub.settings.heartbeat,
                "epoch": self.store.epoch,
                "snapshot": snapshot_payload(snapshot, self.hub.now()),
            },
        }
        assert peer.sent[0] == protocol.encode(expected)
        return peer.sent[0], json.loads(peer.sent[0])


def test_welcomes_are_the_state_of_their_moment(tmp_path: Path) -> None:
    world = _World(tmp_path)
    _, first = world.welcome()
    assert first["payload"]["snapshot"]["agents"]["agent"]["online"] is False

    agent, _ = world.connect("agent", "agent")  # presence: a new seq
    _, second = world.welcome()
    assert second["payload"]["seq"] == first["payload"]["seq"] + 1
    assert second["payload"]["snapshot"]["agents"]["agent"]["online"] is True

    agent.receive(b'{"type":"agent_status","id":"s1","payload":{"state":"working"}}')
    world.clock.advance(0)
    _, third = world.welcome()
    assert third["payload"]["snapshot"]["agents"]["agent"]["status"] == {"state": "working"}


def test_the_same_state_gives_the_same_snapshot_and_a_new_connection_id(tmp_path: Path) -> None:
    world = _World(tmp_path)
    _, first = world.welcome()
    _, second = world.welcome()
    assert first["payload"]["snapshot"] == second["payload"]["snapshot"]
    assert first["payload"]["connection"] != second["payload"]["connection"]


def test_online_agents_last_seen_follows_the_clock(tmp_path: Path) -> None:
    """An online agent's ``last_seen`` is now: the next second shows in the next welcome."""
    world = _World(tmp_path)
    world.connect("agent", "agent")
    _, before = world.welcome()
    world.clock.advance(1)
    _, after = world.welcome()
    seen_before = before["payload"]["snapshot"]["agents"]["agent"]["last_seen"]
    seen_after = after["payload"]["snapshot"]["agents"]["agent"]["last_seen"]
    assert seen_before != seen_after
    assert seen_after == world.hub.now()


def test_a_new_agent_name_shows_without_a_new_seq(tmp_path: Path) -> None:
    """A tokens reload adds an agent name but stores nothing: it still shows."""
    world = _World(tmp_path)
    _, before = world.welcome()
    world.names.append("newcomer")
    _, after = world.welcome()
    assert after["payload"]["seq"] == before["payload"]["seq"]
    assert sorted(after["payload"]["snapshot"]["agents"]) == ["agent", "newcomer"]


def test_a_mix_of_online_and_offline_agents_encodes_byte_for_byte(tmp_path: Path) -> None:
    """Online agents between offline ones, a non-ASCII nested status, to the millisecond: each
    welcome is exactly the encoding of the whole state (``welcome()`` compares the bytes)."""
    world = _World(tmp_path)
    world.names[:] = ["a", "b", "c", "d"]
    b, _ = world.connect("b", "agent")
    world.connect("d", "agent")
    b.receive(
        '{"type":"agent_status","id":"s","payload":{"state":"été ☃","detail":"x\\ny"}}'.encode()
    )
    world.clock.advance(0)
    _, first = world.welcome()
    world.clock.advance(0.001)
    _, second = world.welcome()
    agents = second["payload"]["snapshot"]["agents"]
    assert list(agents) == ["a", "b", "c", "d"]
    assert agents["b"]["status"] == {"state": "été ☃", "detail": "x\ny"}
    assert [agents[n]["online"] for n in "abcd"] == [False, True, False, True]
    assert agents["b"]["last_seen"] != first["payload"]["snapshot"]["agents"]["b"]["last_seen"]
    assert agents["b"]["last_seen"] == agents["d"]["last_seen"] == world.hub.now()
