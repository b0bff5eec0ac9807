"""Catching a client up, paced by how fast it reads: ``resume`` replays, and an agent's pending
answers after ``welcome``.

While a catch-up runs the connection is not "live": live messages for it stay in the store and the
next page picks them up, so the switch back to live happens in one reactor turn with nothing lost or
doubled. Nothing is sent while the connection's write buffer is full, so a catch-up never trips the
slow-reader close, and the journal is read a page at a time, never whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from vibews import protocol
from vibews.peer import PENDING_TYPES, Outgoing
from vibews.protocol import Resume
from vibews.session import Session
from vibews.store import StoredMessage

if TYPE_CHECKING:
    from vibews.hub import Hub

REPLAY_PAGE = 256

# Called once the catch-up is complete, with the cursor reached and whether history it still had
# to send was trimmed away meanwhile (then the replay is not complete).
Done = Callable[[int, bool], None]


def replay(hub: Hub, session: Session, resume: Resume) -> None:
    """Send what the client missed since ``resume.since``, then ``resumed``."""
    if session.delivering_pending:
        session.waiting_resume = resume  # the newest one wins, as a newer resume always does
        return
    store = hub.store
    head = store.head()
    generation = session.next_replay()  # a newer resume supersedes one still running
    if resume.epoch not in (None, store.epoch) or resume.since > head:
        session.live = True
        session.send(protocol.resumed(resume.since, head, False, store.epoch))
        return
    complete = resume.since >= store.oldest() - 1

    def done(cursor: int, lost: bool) -> None:
        whole = complete and not lost
        session.send(protocol.resumed(resume.since, store.head(), whole, store.epoch))

    _catch_up(hub, session, generation, resume.since, done)


def deliver_pending(
    hub: Hub, session: Session, pending: Sequence[StoredMessage], head: int
) -> None:
    """Right after an agent's ``welcome`` (whose seq was ``head``): its pending answers, then what
    was stored for it meanwhile, then live."""
    if not pending:
        return
    generation = session.next_replay()
    session.live = False
    session.delivering_pending = True
    _send_list(hub, session, generation, pending, 0, head)


def _pending_done(hub: Hub, session: Session) -> None:
    session.delivering_pending = False
    waiting, session.waiting_resume = session.waiting_resume, None
    if waiting is not None:
        replay(hub, session, waiting)


def _send(session: Session, message: StoredMessage) -> None:
    session.peer.send(Outgoing(message.data))
    if session.is_agent and message.type in PENDING_TYPES:
        session.mark_delivered(message.seq)


def _wait_writable(session: Session, resume: Callable[[], None]) -> bool:
    if not session.peer.is_paused():
        return False
    session.peer.when_writable().addCallback(lambda _: resume())
    return True


def _send_list(
    hub: Hub,
    session: Session,
    generation: int,
    messages: Sequence[StoredMessage],
    index: int,
    head: int,
) -> None:
    if not session.replay_current(generation):
        return
    if _wait_writable(session, lambda: _send_list(hub, session, generation, messages, index, head)):
        return
    while index < len(messages):
        _send(session, messages[index])
        index += 1
        if session.peer.is_paused():
            hub.clock.callLater(0, _send_list, hub, session, generation, messages, index, head)
            return
    _catch_up(hub, session, generation, head, lambda cursor, lost: _pending_done(hub, session))


def _catch_up(
    hub: Hub, session: Session, generation: int, cursor: int, done: Done, lost: bool = False
) -> None:
    """Journal pages after ``cursor`` that this client would have been sent, then live."""
    if not session.replay_current(generation):
        return
    session.live = False
    if _wait_writable(session, lambda: _catch_up(hub, session, generation, cursor, done, lost)):
        return
    # While a slow client was paused, the history may have moved past the cursor.
    lost = lost or hub.store.oldest() > cursor + 1
    agent = session.identity.name if session.is_agent else None
    page = hub.store.read(cursor, agent, REPLAY_PAGE)
    for message in page:
        _send(session, message)
        cursor = message.seq
        if session.peer.is_paused():
            break
    if page:
        hub.clock.callLater(0, _catch_up, hub, session, generation, cursor, done, lost)
        return
    session.live = True
    done(cursor, lost)
