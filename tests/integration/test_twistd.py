"""``twistd -n vibews`` as a real process: first start, signals, and nothing acked lost on SIGKILL."""

from __future__ import annotations

import re
import shlex
import signal
import stat
import time
from pathlib import Path

import pytest_twisted
from twisted.internet.defer import Deferred

from vibews.testing import (
    TwistdProcess,
    connect,
    free_port,
    handshake_status,
    initial_secrets,
    raw_exchange,
    upgrade_request,
)
from vibews.timestamps import parse_rfc3339
from vibews.tokens import add_token

README = Path(__file__).resolve().parents[2] / "README.rst"


def _readme_start_command() -> list[str]:
    """The server command exactly as README.rst shows it (the line that runs ``twistd -n vibews``)."""
    for line in README.read_text().splitlines():
        if "twistd -n vibews" in line:
            return shlex.split(line[line.index("twistd -n vibews") :])
    raise AssertionError("README.rst shows no 'twistd -n vibews' command")


@pytest_twisted.ensureDeferred
async def test_readme_command_starts_with_zero_configuration(tmp_path: Path) -> None:
    """README's command starts the server: it creates ./vibews-data with 0600 token files, logs the
    files' paths but no secret, and a client connects with the generated agent token. SIGTERM then
    closes the client with 1001 and the process exits 0."""
    command = _readme_start_command()
    assert command[:3] == ["twistd", "-n", "vibews"]
    args = command[3:]
    port = free_port()
    if "--port" in args:
        args[args.index("--port") + 1] = str(port)
    else:
        args += ["--port", str(port)]
    process = TwistdProcess(args, tmp_path)
    try:
        assert await process.started() == port
        data = tmp_path / "vibews-data"
        for name in ("tokens", "initial-tokens"):
            assert stat.S_IMODE((data / name).stat().st_mode) == 0o600
        secrets = initial_secrets(data)
        assert set(secrets) == {"agent", "dashboard"}
        assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", s) for s in secrets.values())
        assert "initial-tokens" in process.output
        client = await connect(port, secrets["agent"])
        welcome = await client.next_message()
        assert welcome["type"] == "welcome" and welcome["payload"]["role"] == "agent"
        process.signal(signal.SIGTERM)
        code, _ = await client.wait_closed()
        assert code == 1001
        assert await process.ended() == 0
        assert "vibews stopped; store flushed" in process.output
        for secret in secrets.values():
            assert secret not in process.output
    finally:
        await process.kill()


@pytest_twisted.ensureDeferred
async def test_sigkill_right_after_acks_loses_nothing(tmp_path: Path) -> None:
    """Every message acked before a SIGKILL is in the snapshot and in ``resume`` after a restart on
    the same --data, and seq goes on without a gap."""
    data = tmp_path / "data"
    process = TwistdProcess(["--port", "0", "--data", str(data), "--rate", "0"], tmp_path)
    try:
        port = await process.started()
        secrets = initial_secrets(data)
        agent = await connect(port, secrets["agent"])
        await agent.next_message()
        for i in range(300):
            agent.send_json(
                {"type": "agent_status", "id": f"m{i}", "payload": {"state": f"state-{i}"}}
            )
        agent.send_json({"type": "question", "id": "q", "payload": {"text": "still there?"}})
        acks: dict[str, int] = {}
        while len(acks) < 301:
            reply = await agent.next_message()
            assert reply["type"] == "ack", reply
            acks[reply["id"]] = reply["seq"]
        process.signal(signal.SIGKILL)
        assert await process.ended() != 0
    finally:
        await process.kill()

    restarted = TwistdProcess(["--port", "0", "--data", str(data)], tmp_path)
    try:
        port = await restarted.started()
        dashboard = await connect(port, secrets["dashboard"])
        welcome = await dashboard.next_message()
        snapshot = welcome["payload"]["snapshot"]
        assert snapshot["agents"]["agent"]["status"] == {"state": "state-299"}
        assert [q["id"] for q in snapshot["questions"]] == ["q"]
        if snapshot["agents"]["agent"]["online"]:
            # Welcomed while the restart's catch-up (the agent goes offline) was still being
            # committed in the store's worker thread: it follows, relayed, before the resume.
            presence = await dashboard.next_message()
            assert presence["type"] == "presence" and presence["payload"]["online"] is False
            assert presence["seq"] == welcome["payload"]["seq"] + 1
        replayed, resumed = await dashboard.resume(0)
        seqs = [m["seq"] for m in replayed]
        assert seqs == list(range(1, len(seqs) + 1)), "seq has a gap"
        by_id = {m.get("id"): m["seq"] for m in replayed if "id" in m}
        for message_id, seq in acks.items():
            assert by_id[message_id] == seq
        # The process died with the agent online: the restart stores it offline.
        assert replayed[-1]["type"] == "presence" and replayed[-1]["payload"]["online"] is False
        assert resumed["payload"]["complete"] is True
    finally:
        restarted.signal(signal.SIGTERM)
        await restarted.ended()


@pytest_twisted.ensureDeferred
async def test_sighup_reloads_tokens_and_closes_revoked_connections(tmp_path: Path) -> None:
    """After removing a token from the file and SIGHUP, its connections are closed with 1008 and
    it is refused; other connections stay. A malformed file on reload keeps the old tokens."""
    data = tmp_path / "data"
    process = TwistdProcess(["--port", "0", "--data", str(data)], tmp_path)
    try:
        port = await process.started()
        secrets = initial_secrets(data)
        extra = add_token(data / "tokens", "temp-bot", "agent")
        tokens_file = data / "tokens"
        process.signal(signal.SIGHUP)
        temp = None
        for _ in range(50):  # the reload is asynchronous: retry until the new token is known
            if await handshake_status(port, headers={"Authorization": f"Bearer {extra}"}) == 101:
                temp = await connect(port, extra)
                break
        assert temp is not None, "new token never accepted"
        assert (await temp.next_message())["payload"]["name"] == "temp-bot"
        keeper = await connect(port, secrets["agent"])
        await keeper.next_message()
        lines = tokens_file.read_text().splitlines()
        tokens_file.write_text("\n".join(x for x in lines if not x.startswith("temp-bot")) + "\n")
        process.signal(signal.SIGHUP)
        code, _ = await temp.wait_closed()
        assert code == 1008
        assert await handshake_status(port, headers={"Authorization": f"Bearer {extra}"}) == 401
        tokens_file.write_text("garbage line here\n")
        process.signal(signal.SIGHUP)
        reply = await keeper.request({"type": "agent_status", "id": "s", "payload": {"state": "s"}})
        assert reply["type"] == "ack"
        auth = {"Authorization": f"Bearer {secrets['dashboard']}"}
        assert await handshake_status(port, headers=auth) == 101
    finally:
        await process.kill()
    assert "tokens file not reloaded" in process.output
    assert "line 1" in process.output or ":1:" in process.output


@pytest_twisted.ensureDeferred
async def test_malformed_tokens_file_refuses_to_start(tmp_path: Path) -> None:
    """A malformed tokens file stops the start with its line number and no traceback."""
    tokens = tmp_path / "tokens"
    tokens.write_text("# comment\nalice admin sha256:" + "0" * 64 + "\n")
    process = TwistdProcess(["--port", "0", "--tokens", str(tokens)], tmp_path)
    code = await process.ended()
    assert code not in (0, None)
    assert ":2:" in process.output
    assert "Traceback" not in process.output


@pytest_twisted.ensureDeferred
async def test_first_start_on_a_terminal_prints_the_dashboard_url_once(tmp_path: Path) -> None:
    """When standard output is a terminal, the first start prints the dashboard URL with
    #token=<dashboard secret> there once; a second start prints no secret."""
    process = TwistdProcess(["--port", "0"], tmp_path, terminal=True)
    try:
        await process.started()
        secrets = initial_secrets(tmp_path / "vibews-data")
        assert process.output.count(f"#token={secrets['dashboard']}") == 1
        assert secrets["agent"] not in process.output
    finally:
        await process.kill()
    again = TwistdProcess(["--port", "0"], tmp_path, terminal=True)
    try:
        await again.started()
        assert "#token=" not in again.output
    finally:
        await again.kill()


@pytest_twisted.ensureDeferred
async def test_sigterm_drops_a_client_that_ignores_the_close_and_exits_zero(
    tmp_path: Path,
) -> None:
    """A client that never answers the 1001 close frame is dropped after the grace period; the
    process still exits 0."""
    data = tmp_path / "data"
    process = TwistdProcess(["--port", "0", "--data", str(data), "--presence-grace", "0"], tmp_path)
    try:
        port = await process.started()
        secrets = initial_secrets(data)
        dashboard = await connect(port, secrets["dashboard"])
        await dashboard.next_message()
        request = upgrade_request(headers={"Authorization": f"Bearer {secrets['agent']}"})
        stuck = Deferred.fromCoroutine(raw_exchange(port, request, timeout=30))
        presence = await dashboard.next_message()
        assert presence["type"] == "presence" and presence["payload"]["online"] is True
        process.signal(signal.SIGTERM)
        received = await stuck
        assert received.startswith(b"HTTP/1.1 101 ")
        # The close frame it was sent and never answered: opcode 8, code 1001, the reason.
        assert b"\x88\x16\x03\xe9server shutting down" in received
        assert await process.ended() == 0
    finally:
        await process.kill()


@pytest_twisted.ensureDeferred
async def test_bad_configuration_refuses_to_start_with_a_clear_message(tmp_path: Path) -> None:
    """Each configuration error stops the start with one readable line and no traceback."""
    cases = [
        (["--port", "99999"], "65535"),
        (["--durability", "sometimes"], "'full' or 'process'"),
        (["--redis", "http://127.0.0.1:6379/0"], "bad --redis"),
        (["--endpoint", "nonsense:1"], "bad endpoint"),
        (["--allow-origin", "not an origin"], "--allow-origin"),
        (["--data", "/proc/vibews-cannot-be-here"], "cannot create data directory"),
    ]
    for args, expected in cases:
        process = TwistdProcess(["--port", "0", *args], tmp_path)
        code = await process.ended()
        assert code not in (0, None), args
        assert expected in process.output, (args, process.output)
        assert "Traceback" not in process.output, args


@pytest_twisted.ensureDeferred
async def test_second_server_on_the_same_data_directory_is_refused(tmp_path: Path) -> None:
    """Two servers on one store would hand out the same seq: the second refuses to start."""
    first = TwistdProcess(["--port", "0", "--data", str(tmp_path / "d")], tmp_path)
    try:
        await first.started()
        second = TwistdProcess(["--port", "0", "--data", str(tmp_path / "d")], tmp_path)
        assert await second.ended() not in (0, None)
        assert "in use by another vibews process" in second.output
    finally:
        await first.kill()


@pytest_twisted.ensureDeferred
async def test_clean_stop_stores_agents_offline_with_the_time_they_left(tmp_path: Path) -> None:
    """After SIGTERM no agent is left online in the store: the stop itself stores presence offline
    with the time of the stop, so the next start has nothing to correct."""
    data = tmp_path / "data"
    process = TwistdProcess(["--port", "0", "--data", str(data)], tmp_path)
    try:
        port = await process.started()
        secrets = initial_secrets(data)
        agent = await connect(port, secrets["agent"])
        await agent.next_message()
        process.signal(signal.SIGTERM)
        assert await process.ended() == 0
    finally:
        await process.kill()
    stopped_at = time.time()
    restarted = TwistdProcess(["--port", "0", "--data", str(data)], tmp_path)
    try:
        port = await restarted.started()
        dashboard = await connect(port, secrets["dashboard"])
        welcome = await dashboard.next_message()
        record = welcome["payload"]["snapshot"]["agents"]["agent"]
        assert record["online"] is False
        left = parse_rfc3339(record["last_seen"])
        assert left is not None and left <= stopped_at
        replayed, _ = await dashboard.resume(0)
        assert [m["payload"]["online"] for m in replayed if m["type"] == "presence"] == [
            True,
            False,
        ]
    finally:
        restarted.signal(signal.SIGTERM)
        await restarted.ended()
