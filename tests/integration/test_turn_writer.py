"""Frames are queued per connection and written once per reactor turn (issue 9's fan-out work);
nothing queued may be lost or reordered by that, least of all behind a close frame."""

from __future__ import annotations

import pytest_twisted

from vibews.testing import RunningServer


@pytest_twisted.ensureDeferred
async def test_frames_queued_in_a_turn_go_out_before_a_close_started_in_that_turn(
    server: RunningServer,
) -> None:
    dashboard = await server.dashboard()
    session = next(s for s in server.service.hub.sessions.values() if not s.is_agent)
    for n in range(3):
        session.send({"type": "note", "n": n})  # queued until the next reactor turn
    session.peer.close(1008, "token revoked")  # in the same turn
    received = [await dashboard.next_message() for _ in range(3)]
    assert [m["n"] for m in received] == [0, 1, 2]
    code, _reason = await dashboard.closed
    assert code == 1008


@pytest_twisted.ensureDeferred
async def test_many_frames_in_one_turn_arrive_whole_and_in_order(server: RunningServer) -> None:
    """More than the 64 KiB that are written at once, so both paths (immediate and next turn)
    run in one burst."""
    dashboard = await server.dashboard()
    session = next(s for s in server.service.hub.sessions.values() if not s.is_agent)
    padding = "x" * 1000
    for n in range(200):
        session.send({"type": "note", "n": n, "padding": padding})
    received = [await dashboard.next_message() for _ in range(200)]
    assert [m["n"] for m in received] == list(range(200))
    assert all(m["padding"] == padding for m in received)
