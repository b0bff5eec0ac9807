"""The ``snapshot`` of a dashboard's ``welcome``, read from the store and encoded once for every
dashboard that connects while the state it shows stays the same.

Reading the snapshot from SQLite, building it and encoding it for each connection was about a
tenth of a handshake's CPU with 10,000 dashboards connecting. What a snapshot shows changes only
with a stored message (each takes the next seq), with the trimming of history (closed questions
are listed while their closing is kept), with a new store epoch and with the tokens file's agent
names (agents never seen are listed offline): those are the cache's key. One part changes all the
time: an online agent's ``last_seen`` is the present moment (to the millisecond), so the cached
encoding keeps a gap there that each welcome fills with its own time. The bytes are those of
encoding :func:`snapshot_payload` whole (JSON's compact encoding is the concatenation of its
parts' encodings).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from vibews import protocol
from vibews.store import IStore, Snapshot


def snapshot_payload(snapshot: Snapshot, now: str) -> dict[str, Any]:
    """The ``snapshot`` field of a dashboard's ``welcome`` at the moment ``now``."""
    agents = {
        name: {
            "online": record.online,
            "status": record.status,
            "last_seen": now if record.online else record.last_seen,
        }
        for name, record in sorted(snapshot.agents.items())
    }
    return {"agents": agents, "questions": snapshot.questions, "tasks": dict(snapshot.tasks)}


def _template(snapshot: Snapshot) -> list[bytes | None]:
    """The encoding of :func:`snapshot_payload` in pieces, ``None`` where ``now`` goes."""
    pieces: list[bytes | None] = [b'{"agents":{']
    for index, (name, record) in enumerate(sorted(snapshot.agents.items())):
        separator = b"," if index else b""
        if record.online:
            status = protocol.encode({"online": True, "status": record.status})[:-1]
            pieces += [
                separator + protocol.encode_value(name) + b":" + status + b',"last_seen":',
                None,
            ]
            pieces.append(b"}")
        else:
            fields = {"online": False, "status": record.status, "last_seen": record.last_seen}
            pieces.append(separator + protocol.encode_value(name) + b":" + protocol.encode(fields))
    pieces.append(b'},"questions":' + protocol.encode_value(snapshot.questions))
    pieces.append(b',"tasks":' + protocol.encode(dict(snapshot.tasks)) + b"}")
    # Join what needs no filling in, so a welcome joins as few pieces as possible.
    joined: list[bytes | None] = []
    for piece in pieces:
        if piece is not None and joined and joined[-1] is not None:
            joined[-1] += piece
        else:
            joined.append(piece)
    return joined


class SnapshotCache:
    """The latest dashboard snapshot, encoded, and the key it was read under."""

    def __init__(
        self, store: IStore, agent_names: Callable[[], Collection[str]], now: Callable[[], str]
    ) -> None:
        self._store = store
        self._agent_names = agent_names
        self._now = now
        self._key: tuple[Any, ...] | None = None
        self._seq = 0
        self._template: list[bytes | None] = []

    def current(self) -> tuple[int, bytes]:
        """The seq and the encoded snapshot of this moment."""
        names = tuple(self._agent_names())
        store = self._store
        key = (store.head(), store.oldest(), store.epoch, names)
        if key != self._key:
            snapshot = store.snapshot(names)
            self._seq = snapshot.seq
            self._template = _template(snapshot)
            self._key = key
        template = self._template
        if len(template) == 1:
            piece = template[0]
            assert piece is not None
            return self._seq, piece
        now = protocol.encode_value(self._now())
        return self._seq, b"".join(now if piece is None else piece for piece in template)
