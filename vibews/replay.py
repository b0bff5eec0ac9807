"""``resume``: replay what a client missed, in pages, paced by how fast it reads.

While a replay runs the connection is not "live": live messages for it stay in the store and the next
page picks them up, so the switch back to live happens in one reactor turn with nothing lost or doubled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vibews import protocol
from vibews.peer import Outgoing
from vibews.protocol import Resume
from vibews.session import Session

if TYPE_CHECKING:
    from vibews.hub import Hub

REPLAY_PAGE = 256


def replay(hub: Hub, session: Session, resume: Resume) -> None:
    """Send what the client missed since ``resume.since``, paced by how fast it reads."""
    store = hub.store
    head = store.head()
    generation = session.next_replay()
    if resume.epoch not in (None, store.epoch) or resume.since > head:
        session.live = True
        session.send(protocol.resumed(resume.since, head, False, store.epoch))
        return
    complete = resume.since >= store.oldest() - 1
    session.live = False
    _step(hub, session, generation, resume.since, resume.since, complete)


def _step(
    hub: Hub, session: Session, generation: int, since: int, cursor: int, complete: bool
) -> None:
    if not session.replay_current(generation):
        return
    if session.peer.is_paused():
        d = session.peer.when_writable()
        d.addCallback(lambda _: _step(hub, session, generation, since, cursor, complete))
        return
    agent = session.identity.name if session.is_agent else None
    page = hub.store.read(cursor, agent, REPLAY_PAGE)
    for message in page:
        session.peer.send(Outgoing(message.data))
        cursor = message.seq
        if session.is_agent and message.type == "answer":
            session.delivered.add(message.seq)
        if session.peer.is_paused():
            break
    if page:
        hub.clock.callLater(0, _step, hub, session, generation, since, cursor, complete)
        return
    session.live = True
    session.send(protocol.resumed(since, hub.store.head(), complete, hub.store.epoch))
