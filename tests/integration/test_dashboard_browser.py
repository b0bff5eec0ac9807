"""The dashboard page in a real browser: Debian's headless Chromium driven by Playwright, against a
real vibews (a twistd process, or one in this process) with real agent WebSocket clients.

Playwright's sync API runs on a thread of its own (:class:`BrowserThread`), so the reactor of this
process keeps serving the agents (and the in-process hub) while the browser works; every browser
step is a Deferred the test awaits. Nothing sleeps: the browser side waits with Playwright's
``expect`` (auto-retrying, with an explicit timeout), the agent side on Deferreds with deadlines.

Set ``VIBEWS_SCREENSHOT=docs/dashboard.png`` to save the screenshot shown in README.rst.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest
import pytest_twisted
from playwright.sync_api import Browser, BrowserContext, Page, WebSocket, expect, sync_playwright
from twisted.internet.defer import Deferred

from vibews.testing import (
    QueueClientProtocol,
    RunningServer,
    TwistdProcess,
    connect,
    initial_secrets,
    start_server,
)
from vibews.timestamps import format_rfc3339

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
WAIT_MS = 15_000  # how long the browser side waits for something to show
expect.set_options(timeout=WAIT_MS)
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "embedded_app.py"

# In CI a missing browser is a failure; elsewhere the browser tests are skipped with a reason.
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)",
)

T = TypeVar("T")


class BrowserThread:
    """One Chromium, driven through Playwright's sync API from one dedicated thread."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="playwright")
        self.browser: Browser = self._thread.submit(self._launch).result(timeout=120)

    def _launch(self) -> Browser:
        self._playwright = sync_playwright().start()
        return self._playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000
        )

    def __call__(self, step: Callable[[], T]) -> Deferred[T]:
        """Run ``step`` on the browser thread; the Deferred fires (in the reactor) with its result."""
        from twisted.internet import reactor as _reactor

        reactor: Any = _reactor
        d: Deferred[T] = Deferred()

        def fire(future: Future[T]) -> None:
            error = future.exception()
            if error is not None:
                d.errback(error)
            else:
                d.callback(future.result())

        self._thread.submit(step).add_done_callback(
            lambda future: reactor.callFromThread(fire, future)
        )
        return d

    def close(self) -> None:
        def stop() -> None:
            self.browser.close()
            self._playwright.stop()

        self._thread.submit(stop).result(timeout=60)
        self._thread.shutdown()


@pytest.fixture(scope="module")
def ui() -> Iterator[BrowserThread]:
    browser = BrowserThread()
    yield browser
    browser.close()


@attrs.define
class Opened:
    """A page in a browser context of its own (so its own sessionStorage), with every URL it
    requested and every WebSocket frame it sent or received, in order."""

    context: BrowserContext
    page: Page
    requested: list[str]
    frames: list[tuple[str, dict[str, Any]]]

    def sent(self, message_type: str) -> list[dict[str, Any]]:
        return [f for way, f in self.frames if way == "sent" and f.get("type") == message_type]

    def received(self, message_type: str) -> list[dict[str, Any]]:
        return [f for way, f in self.frames if way == "received" and f.get("type") == message_type]


def open_page(
    browser: Browser, url: str, *, init_script: str | None = None, **context_options: Any
) -> Opened:
    context = browser.new_context(**context_options)
    if init_script:
        context.add_init_script(init_script)
    page = context.new_page()
    opened = Opened(context, page, [], [])

    def on_socket(socket: WebSocket) -> None:
        opened.requested.append(socket.url)
        socket.on("framesent", lambda data: opened.frames.append(("sent", json.loads(data))))
        socket.on(
            "framereceived", lambda data: opened.frames.append(("received", json.loads(data)))
        )

    page.on("request", lambda request: opened.requested.append(request.url))
    page.on("websocket", on_socket)
    page.goto(url)
    return opened


# Records notifications instead of showing them; permission "granted" as after the person allowed.
NOTIFICATION_RECORDER = """
window.__notifications = [];
window.Notification = class {
  static permission = "granted";
  static requestPermission() { return Promise.resolve("granted"); }
  constructor(title, options) { window.__notifications.push({ title, body: options.body }); }
  close() {}
};
"""

# A structured question: one control per property type of the contract's schema subset.
SCHEMA = {
    "type": "object",
    "title": "Canary release",
    "properties": {
        "hosts": {"type": "integer", "title": "Canary hosts", "minimum": 1, "maximum": 20},
        "notify": {"type": "string", "format": "email", "title": "Notify"},
        "env": {"type": "string", "enum": ["staging", "production"], "title": "Environment"},
        "dry_run": {"type": "boolean", "title": "Dry run"},
    },
    "required": ["hosts", "env"],
}


async def agent_connects(port: int, token: str) -> QueueClientProtocol:
    agent = await connect(port, token)
    welcome = await agent.next_message()
    assert welcome["type"] == "welcome"
    return agent


async def ask(agent: QueueClientProtocol, qid: str, **payload: Any) -> int:
    reply = await agent.request({"type": "question", "id": qid, "payload": payload})
    assert reply["type"] == "ack", reply
    seq: int = reply["seq"]
    return seq


def goes_live(page: Page) -> None:
    expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=WAIT_MS)


def card(page: Page, qid: str) -> Any:
    return page.locator(f'#questions article[data-question-id="{qid}"]')


def closed(page: Page, qid: str) -> Any:
    return page.locator(f'#answered li[data-question-id="{qid}"]')


@pytest_twisted.ensureDeferred
async def test_answer_from_the_page_and_catch_up_after_a_server_crash(
    ui: BrowserThread, tmp_path: Path
) -> None:
    """The issue's scenario. An agent asks a question with options and one with a schema; two pages
    show both (most urgent first, title marked, a notification raised). Page A answers one with a
    click and one with a filled form (typing claims it: page B shows who is answering); the agent
    receives exactly those answers; page B sees both questions close, then the receipts once the
    agent acks. The server is killed (SIGKILL) and restarted on the same data and port: the page
    shows the lost connection, keeps an answer given meanwhile, reconnects by itself, resumes from
    the last seq and epoch it saw, sends the answer, and shows what was stored meanwhile (the agent
    marked offline at start-up, a new question)."""
    data = tmp_path / "data"
    first = TwistdProcess(["--port", "0", "--data", str(data), "--presence-grace", "1"], tmp_path)
    second: TwistdProcess | None = None
    try:
        port = await first.started()
        secrets = initial_secrets(data)
        agent = await agent_connects(port, secrets["agent"])
        for message in (
            {
                "type": "agent_status",
                "id": "s1",
                "payload": {"state": "working", "detail": "tests"},
            },
            {
                "type": "task_update",
                "id": "t1",
                "payload": {"task_id": "T-7", "status": "running", "progress": 0.4},
            },
        ):
            assert (await agent.request(message))["type"] == "ack"

        url = f"http://127.0.0.1:{port}/#token={secrets['dashboard']}"
        viewport = {"width": 1100, "height": 900}
        a = await ui(
            lambda: open_page(ui.browser, url, init_script=NOTIFICATION_RECORDER, viewport=viewport)
        )
        b = await ui(lambda: open_page(ui.browser, url))
        page_a, page_b = a.page, b.page
        for page in (page_a, page_b):
            await ui(partial(goes_live, page))
        await ui(
            lambda: expect(page_a.locator('#agents li[data-agent="agent"]')).to_contain_text(
                re.compile(r"online.*online since"), timeout=WAIT_MS
            )
        )
        await ui(lambda: expect(page_a.locator("#agents")).to_contain_text("working: tests"))
        task = page_a.locator('#tasks li[data-task="T-7"]')
        await ui(lambda: expect(task.locator("progress")).to_have_attribute("value", "0.4"))

        await ask(agent, "q-form", text="How many canary hosts, and notify whom?", schema=SCHEMA)
        await ask(
            agent,
            "q-opt",
            text="Deploy build 812?",
            options=["yes", "no"],
            urgency="high",
            timeout=600,
        )

        def shows_both(page: Page) -> None:
            expect(page.locator("#questions article")).to_have_count(2, timeout=WAIT_MS)

        for page in (page_a, page_b):
            await ui(partial(shows_both, page))
        # The urgent one first, although it was asked second; with a countdown to its deadline.
        await ui(
            lambda: expect(page_a.locator("#questions article").first).to_have_attribute(
                "data-question-id", "q-opt"
            )
        )
        await ui(lambda: expect(card(page_a, "q-opt")).to_contain_text(re.compile(r"expires in")))
        await ui(lambda: expect(page_a).to_have_title(re.compile(r"^● \(2\) vibews")))
        notified = await ui(lambda: page_a.evaluate("window.__notifications"))
        assert [n["title"] for n in notified] == ["Question from agent"] * 2

        # A click answers the question with options; the agent gets it and acks it: a receipt.
        await ui(lambda: card(page_a, "q-opt").get_by_role("button", name="yes").click())
        answer = await agent.next_of("answer")
        assert answer["payload"] == {"question_id": "q-opt", "action": "accept", "text": "yes"}
        await ui(
            lambda: expect(closed(page_b, "q-opt").locator(".receipt")).to_have_text(
                "not yet delivered", timeout=WAIT_MS
            )
        )
        agent.send_json({"type": "ack", "seq": answer["seq"]})
        await ui(
            lambda: expect(closed(page_b, "q-opt").locator(".receipt")).to_contain_text(
                "delivered at", timeout=WAIT_MS
            )
        )

        # Typing into the form claims the question: page B shows who is answering.
        form = card(page_a, "q-form")
        await ui(lambda: form.get_by_label("Canary hosts (required)").fill("3"))
        await ui(
            lambda: expect(card(page_b, "q-form").locator(".claim")).to_have_text(
                re.compile(r"^dashboard is answering this"), timeout=WAIT_MS
            )
        )
        await ui(lambda: expect(form.locator(".claim")).to_contain_text("You are answering this"))
        await ui(lambda: form.get_by_label("Notify", exact=True).fill("ops@example.com"))
        if os.environ.get("VIBEWS_SCREENSHOT"):
            target = os.environ["VIBEWS_SCREENSHOT"]
            await ui(lambda: page_a.screenshot(path=target, full_page=True))
        await ui(lambda: form.get_by_label("Environment (required)").select_option("staging"))
        await ui(lambda: form.get_by_label("Dry run").check())
        await ui(lambda: form.get_by_role("button", name="Submit").click())
        answer_form = await agent.next_of("answer")
        assert answer_form["payload"] == {
            "question_id": "q-form",
            "action": "accept",
            "value": {"hosts": 3, "notify": "ops@example.com", "env": "staging", "dry_run": True},
        }

        # Page B: the question closed at once, answered, not yet delivered; then the receipt.
        await ui(
            lambda: expect(page_b.locator("#questions article")).to_have_count(0, timeout=WAIT_MS)
        )
        await ui(
            lambda: expect(closed(page_b, "q-form").locator(".receipt")).to_have_text(
                "not yet delivered", timeout=WAIT_MS
            )
        )
        await ui(lambda: expect(closed(page_b, "q-form")).to_contain_text("env: staging"))
        agent.send_json({"type": "ack", "seq": answer_form["seq"]})
        await ui(
            lambda: expect(closed(page_b, "q-form").locator(".receipt")).to_contain_text(
                "delivered at", timeout=WAIT_MS
            )
        )
        await ui(lambda: expect(page_a).to_have_title("vibews dashboard", timeout=WAIT_MS))

        await ui(
            lambda: expect(closed(page_a, "q-form").locator(".receipt")).to_contain_text(
                "delivered at", timeout=WAIT_MS
            )
        )
        await ask(agent, "q-down", text="Carry on after the crash?", options=["carry on"])
        await ui(lambda: expect(card(page_a, "q-down")).to_be_visible(timeout=WAIT_MS))
        # The newest seq page A applied before the crash, and the history it came from.
        seen_before_crash = max(f["seq"] for _, f in a.frames if isinstance(f.get("seq"), int))
        epoch = a.received("welcome")[0]["payload"]["epoch"]
        first.signal(signal.SIGKILL)
        await first.ended()
        await ui(
            lambda: expect(page_a.locator("#connection")).to_contain_text(
                "Server unreachable; reconnecting in", timeout=WAIT_MS
            )
        )

        # Answered while the server is down: the answer waits in the page and goes out on its own.
        await ui(lambda: card(page_a, "q-down").get_by_role("button", name="carry on").click())
        await ui(
            lambda: expect(card(page_a, "q-down").locator(".sending")).to_have_text("Sending…")
        )

        second = TwistdProcess(
            ["--port", str(port), "--data", str(data), "--presence-grace", "1"], tmp_path
        )
        await second.started()
        agent = await agent_connects(port, secrets["agent"])
        answer_down = await agent.next_of("answer", timeout=WAIT_MS / 1000 * 2)
        assert answer_down["payload"] == {
            "question_id": "q-down",
            "action": "accept",
            "text": "carry on",
        }
        await ask(
            agent,
            "q-after",
            text="Back up: continue with the migration?",
            options=["continue", "stop"],
        )

        def caught_up(page: Page) -> None:
            goes_live(page)
            expect(card(page, "q-after")).to_be_visible(timeout=WAIT_MS)
            # Stored at start-up while no page was connected: the dead process left it online.
            expect(page.locator("#feed")).to_contain_text("agent is offline", timeout=WAIT_MS)
            expect(page.locator('#agents li[data-agent="agent"]')).to_contain_text("online since")

        for page in (page_a, page_b):
            await ui(partial(caught_up, page))
        # Page A kept what it knew (the receipts) and asked for the rest with resume.
        await ui(
            lambda: expect(closed(page_a, "q-form").locator(".receipt")).to_contain_text(
                "delivered at"
            )
        )
        assert a.sent("resume") == [
            {"type": "resume", "payload": {"since": seen_before_crash, "epoch": epoch}}
        ]
        assert a.received("resumed")[0]["payload"]["complete"] is True
        await ui(lambda: card(page_a, "q-after").get_by_role("button", name="continue").click())
        answer_after = await agent.next_of("answer")
        assert answer_after["payload"]["text"] == "continue"
        await ui(a.context.close)
        await ui(b.context.close)
    finally:
        await first.kill()
        if second is not None:
            second.signal(signal.SIGTERM)
            await second.ended()


def _load_example() -> Any:
    spec = importlib.util.spec_from_file_location("vibews_docs_embedded_app_dashboard", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboard_url(server: RunningServer, token: str | None = None) -> str:
    return f"http://127.0.0.1:{server.port}/#token={token or server.dashboard_token}"


@pytest_twisted.ensureDeferred
async def test_a_wrong_token_shows_a_clear_message_and_another_can_be_entered(
    ui: BrowserThread, server: RunningServer
) -> None:
    """A token the server refuses (the handshake gets 401, which a browser cannot see) is reported
    as refused while the server is reachable, not as a blank page or an endless spinner; the token
    form then takes the right token, and the page goes live."""
    wrong = "A" * 43
    opened = await ui(lambda: open_page(ui.browser, dashboard_url(server, wrong)))
    page = opened.page
    await ui(
        lambda: expect(page.locator("#token-message")).to_contain_text(
            "refused the connection: the token is wrong", timeout=WAIT_MS
        )
    )
    await ui(
        lambda: expect(page.locator("#connection")).to_have_attribute("data-state", "rejected")
    )
    await ui(lambda: expect(page.get_by_label("Dashboard token", exact=True)).to_be_focused())
    await ui(lambda: expect(page.locator("main")).to_be_hidden())  # nothing stale, nothing empty
    # It gave up after the refusals instead of hammering the server.
    attempts = [url for url in opened.requested if url.endswith("/ws")]
    assert len(attempts) == 2, attempts

    await ui(lambda: page.get_by_label("Dashboard token", exact=True).fill(server.dashboard_token))
    await ui(lambda: page.get_by_role("button", name="Connect").click())
    await ui(
        lambda: expect(page.locator("#connection")).to_have_attribute(
            "data-state", "live", timeout=WAIT_MS
        )
    )
    await ui(lambda: expect(page.locator("#token-panel")).to_be_hidden())

    # An agent's token is a valid token, but not for a dashboard: said so.
    other = await ui(lambda: open_page(ui.browser, dashboard_url(server, server.agent_token)))
    await ui(
        lambda: expect(other.page.locator("#token-message")).to_contain_text(
            "is an agent token; the dashboard needs a dashboard token", timeout=WAIT_MS
        )
    )
    # No token at all: the form, with a word on where to find one.
    bare = await ui(lambda: open_page(ui.browser, f"http://127.0.0.1:{server.port}/"))
    await ui(lambda: expect(bare.page.locator("#token-message")).to_contain_text("#token="))
    for context in (opened.context, other.context, bare.context):
        await ui(context.close)


@pytest_twisted.ensureDeferred
async def test_the_token_leaves_the_address_bar_and_is_never_in_a_url(
    ui: BrowserThread, server: RunningServer, captured_log: list[str]
) -> None:
    """The #token= fragment is moved to sessionStorage and removed from the address bar at once;
    no request the page makes (page, assets, healthz, WebSocket) carries it in its URL, and the
    server's log never shows it. The WebSocket presents it as the vibews.token. subprotocol."""
    token = server.dashboard_token
    opened = await ui(lambda: open_page(ui.browser, dashboard_url(server)))
    page = opened.page
    await ui(
        lambda: expect(page.locator("#connection")).to_have_attribute(
            "data-state", "live", timeout=WAIT_MS
        )
    )
    assert page.url == f"http://127.0.0.1:{server.port}/"
    stored = await ui(lambda: page.evaluate("Object.values(sessionStorage)"))
    assert stored == [token]
    assert f"ws://127.0.0.1:{server.port}/ws" in opened.requested
    assert all(token not in url for url in opened.requested), opened.requested
    welcome = opened.received("welcome")[0]["payload"]
    assert (welcome["name"], welcome["role"]) == ("dashboard", "dashboard")
    # A reload keeps the session (sessionStorage), still without the token in the address.
    await ui(page.reload)
    await ui(
        lambda: expect(page.locator("#connection")).to_have_attribute(
            "data-state", "live", timeout=WAIT_MS
        )
    )
    assert page.url == f"http://127.0.0.1:{server.port}/"
    assert all(token not in url for url in opened.requested)
    assert all(token not in line for line in captured_log)
    assert any('"GET / HTTP/1.1" 200' in line for line in captured_log), "no access log seen"
    await ui(opened.context.close)


XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


@pytest_twisted.ensureDeferred
async def test_what_agents_send_is_shown_as_text_never_as_markup(
    ui: BrowserThread, server: RunningServer
) -> None:
    """Markup in everything an agent controls (status, task, question text, options, schema titles)
    appears literally, as text; nothing of it becomes an element or runs."""
    agent = await server.agent()
    for message in (
        {"type": "agent_status", "id": "s", "payload": {"state": "<b>st</b>", "detail": XSS}},
        {"type": "task_update", "id": "t", "payload": {"task_id": XSS, "status": "<i>s</i>"}},
    ):
        assert (await agent.request(message))["type"] == "ack"
    await ask(agent, "q-x", text=XSS, options=[XSS])
    await ask(
        agent,
        "q-s",
        text="schema",
        schema={
            "type": "object",
            "description": XSS,
            "properties": {
                "f": {"type": "string", "title": XSS, "description": XSS, "enum": [XSS]}
            },
        },
    )
    opened = await ui(lambda: open_page(ui.browser, dashboard_url(server)))
    page = opened.page
    await ui(lambda: expect(page.locator("#questions article")).to_have_count(2, timeout=WAIT_MS))
    await ui(lambda: expect(card(page, "q-x").locator(".question-text")).to_have_text(XSS))
    await ui(lambda: expect(card(page, "q-x").get_by_role("button", name=XSS)).to_be_visible())
    await ui(lambda: expect(card(page, "q-s").get_by_label(XSS)).to_be_visible())
    await ui(lambda: expect(page.locator("#agents")).to_contain_text(XSS))
    await ui(lambda: expect(page.locator("#tasks")).to_contain_text(XSS))
    # And live, through the feed, once more.
    await ask(agent, "q-live", text=XSS)
    await ui(lambda: expect(page.locator("#feed")).to_contain_text(XSS, timeout=WAIT_MS))
    counts = await ui(
        lambda: page.evaluate(
            "[window.__xss, document.querySelectorAll('main img, main script, main b, main i').length]"
        )
    )
    assert counts == [None, 0]
    await ui(opened.context.close)


@pytest_twisted.ensureDeferred
async def test_keyboard_only_answering_at_phone_width(
    ui: BrowserThread, server: RunningServer
) -> None:
    """At 375 px, with the keyboard only: the skip link leads to the questions, Tab reaches the
    first option (with a visible focus ring), Enter answers; the focus then moves on to the next
    question, whose text box is answered with Ctrl+Enter. Nothing is wider than the screen."""
    agent = await server.agent()
    await ask(agent, "q-1", text="Merge the branch?", options=["merge", "wait"], urgency="high")
    await ask(agent, "q-2", text="Name for the release?")
    opened = await ui(
        lambda: open_page(
            ui.browser,
            dashboard_url(server),
            viewport={"width": 375, "height": 740},
            is_mobile=True,
            has_touch=True,
        )
    )
    page = opened.page
    await ui(lambda: expect(page.locator("#questions article")).to_have_count(2, timeout=WAIT_MS))
    width = await ui(lambda: page.evaluate("document.documentElement.scrollWidth"))
    assert width <= 375

    await ui(lambda: page.keyboard.press("Tab"))
    await ui(
        lambda: expect(page.get_by_role("link", name="Skip to open questions")).to_be_focused()
    )
    await ui(lambda: page.keyboard.press("Enter"))
    await ui(lambda: expect(page.locator("#questions-heading")).to_be_focused())
    await ui(lambda: page.keyboard.press("Tab"))
    first_option = card(page, "q-1").get_by_role("button", name="merge")
    await ui(lambda: expect(first_option).to_be_focused())
    ring = await ui(
        lambda: page.evaluate(
            "(() => { const s = getComputedStyle(document.activeElement);"
            " return [s.outlineStyle, s.outlineWidth]; })()"
        )
    )
    assert ring == ["solid", "3px"]
    await ui(lambda: page.keyboard.press("Enter"))
    answer = await agent.next_of("answer")
    assert answer["payload"]["text"] == "merge"

    await ui(lambda: expect(card(page, "q-2")).to_be_focused(timeout=WAIT_MS))
    await ui(lambda: page.keyboard.press("Tab"))
    await ui(lambda: expect(card(page, "q-2").get_by_label("Your answer")).to_be_focused())
    await ui(lambda: page.keyboard.type("v2.4 <nightly>"))
    await ui(lambda: page.keyboard.press("Control+Enter"))
    answer = await agent.next_of("answer")
    assert answer["payload"]["text"] == "v2.4 <nightly>"
    await ui(lambda: expect(page.locator("#no-questions")).to_be_visible(timeout=WAIT_MS))
    await ui(opened.context.close)


@pytest_twisted.ensureDeferred
async def test_the_page_works_under_a_prefix(ui: BrowserThread, tmp_path: Path) -> None:
    """Mounted by a host under /vibews/ (docs/examples/embedded_app.py), the page loads its assets
    and opens its WebSocket relative to where it is: /vibews/dashboard/..., /vibews/ws."""
    from twisted.internet import reactor

    example = _load_example()
    data = tmp_path / "data"
    app = example.make_application(reactor, data, "tcp:0:interface=127.0.0.1")
    app.service.privilegedStartService()
    app.service.startService()
    try:
        port = (await app.listening).getHost().port
        secrets = initial_secrets(data)
        url = f"http://127.0.0.1:{port}/vibews/#token={secrets['dashboard']}"
        opened = await ui(lambda: open_page(ui.browser, url))
        await ui(
            lambda: expect(opened.page.locator("#connection")).to_have_attribute(
                "data-state", "live", timeout=WAIT_MS
            )
        )
        base = f"127.0.0.1:{port}/vibews/"
        assert f"http://{base}dashboard/main.js" in opened.requested
        assert f"ws://{base}ws" in opened.requested
        assert all(base in url for url in opened.requested), opened.requested
        await ui(opened.context.close)
    finally:
        stopped = app.service.stopService()
        if isinstance(stopped, Deferred):
            await stopped


@pytest_twisted.ensureDeferred
async def test_countdowns_to_deadlines_and_an_expiring_question(
    ui: BrowserThread, server: RunningServer
) -> None:
    """Open questions count down to their deadline (exactly with expires_at, "about" with timeout,
    which is counted from when the server received the question); when the server expires one,
    the page moves it from the open questions to the closed ones, marked expired unanswered."""
    agent = await server.agent()
    opened = await ui(lambda: open_page(ui.browser, dashboard_url(server)))
    page = opened.page
    await ui(lambda: goes_live(page))
    in_an_hour = format_rfc3339(time.time() + 3600)
    await ask(agent, "q-exact", text="Approve the budget?", expires_at=in_an_hour)
    await ask(agent, "q-later", text="Rotate the keys?", timeout=600)
    await ask(agent, "q-soon", text="Quick: retry the flaky job?", timeout=1)
    await ui(
        lambda: expect(card(page, "q-exact")).to_contain_text(
            re.compile(r"expires in (1 h 00 min|59:\d\d)")
        )
    )
    await ui(
        lambda: expect(card(page, "q-later")).to_contain_text(
            re.compile(r"expires in about (10:00|[0-9]:\d\d)")
        )
    )
    await ui(
        lambda: expect(closed(page, "q-soon").locator(".receipt")).to_have_text(
            "expired unanswered"
        )
    )
    await ui(lambda: expect(card(page, "q-soon")).to_have_count(0))
    await ui(lambda: expect(page.locator("#feed")).to_contain_text("expired"))
    await ui(opened.context.close)


@pytest_twisted.ensureDeferred
async def test_another_history_means_a_fresh_snapshot_not_a_resume(
    ui: BrowserThread, tmp_path: Path
) -> None:
    """A server restarted on a new data directory (same tokens, same port) has another epoch: the
    page does not resume from a seq of the old history; it rebuilds from the new snapshot, so a
    question of the old store disappears and one of the new store shows."""
    tokens = tmp_path / "tokens"
    first = TwistdProcess(
        ["--port", "0", "--data", str(tmp_path / "old"), "--tokens", str(tokens)], tmp_path
    )
    second: TwistdProcess | None = None
    try:
        port = await first.started()
        secrets = initial_secrets(tmp_path / "old")
        agent = await agent_connects(port, secrets["agent"])
        await ask(agent, "q-old", text="From the old store?")
        url = f"http://127.0.0.1:{port}/#token={secrets['dashboard']}"
        opened = await ui(lambda: open_page(ui.browser, url))
        await ui(lambda: expect(card(opened.page, "q-old")).to_be_visible())
        first.signal(signal.SIGTERM)
        assert await first.ended() == 0
        await ui(
            lambda: expect(opened.page.locator("#connection")).not_to_have_attribute(
                "data-state", "live"
            )
        )

        second = TwistdProcess(
            ["--port", str(port), "--data", str(tmp_path / "new"), "--tokens", str(tokens)],
            tmp_path,
        )
        await second.started()
        agent = await agent_connects(port, secrets["agent"])
        await ask(agent, "q-new", text="From the new store?")
        await ui(lambda: expect(card(opened.page, "q-new")).to_be_visible())
        await ui(lambda: expect(card(opened.page, "q-old")).to_have_count(0))
        epochs = {w["payload"]["epoch"] for w in opened.received("welcome")}
        assert len(epochs) == 2
        assert opened.sent("resume") == []
        await ui(opened.context.close)
    finally:
        await first.kill()
        if second is not None:
            second.signal(signal.SIGTERM)
            await second.ended()


@pytest_twisted.ensureDeferred
async def test_agents_online_then_offline_with_last_seen(ui: BrowserThread, tmp_path: Path) -> None:
    """An agent that never connected says so; one that connects shows online since when; when it
    goes (after the presence grace) it shows offline, last seen, and the feed says it left."""
    running = await start_server(tmp_path / "data", presence_grace=0.5)
    try:
        opened = await ui(lambda: open_page(ui.browser, dashboard_url(running)))
        row = opened.page.locator('#agents li[data-agent="agent"]')
        await ui(lambda: expect(row).to_contain_text(re.compile(r"offline.*never connected")))
        agent = await running.agent()
        await ui(lambda: expect(row).to_contain_text(re.compile(r"online.*online since")))
        agent.disconnect()
        await ui(lambda: expect(row).to_contain_text(re.compile(r"offline.*last seen")))
        await ui(lambda: expect(opened.page.locator("#feed")).to_contain_text("agent is offline"))
        await ui(opened.context.close)
    finally:
        await running.stop()
