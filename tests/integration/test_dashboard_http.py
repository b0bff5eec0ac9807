"""The dashboard as HTTP: what is served, with which headers, and what ``--no-dashboard`` leaves.

The page's behaviour is tested in a real browser in ``test_dashboard_browser.py``; these tests pin
the server side (content types, the Content-Security-Policy, caching, 404s) and check the shipped
files for what would break the policy or the offline promise.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest
import pytest_twisted

from vibews.dashboard import CONTENT_SECURITY_POLICY
from vibews.tap import Options
from vibews.testing import RunningServer, connect, raw_exchange, start_server

STATIC = resources.files("vibews.dashboard") / "static"
ASSETS = {
    "/": "text/html; charset=utf-8",
    "/dashboard/main.js": "text/javascript; charset=utf-8",
    "/dashboard/session.js": "text/javascript; charset=utf-8",
    "/dashboard/style.css": "text/css; charset=utf-8",
    "/dashboard/icon.svg": "image/svg+xml",
}


async def get(port: int, path: str, *headers: str) -> tuple[int, dict[str, str], bytes]:
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close", *headers]
    response = await raw_exchange(port, ("\r\n".join(lines) + "\r\n\r\n").encode())
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return int(status_line.split(" ", 2)[1]), fields, body


@pytest.mark.parametrize("path", sorted(ASSETS))
@pytest_twisted.ensureDeferred
async def test_page_and_assets_are_served_with_strict_headers(
    server: RunningServer, path: str
) -> None:
    """Each file comes with its content type, nosniff, the strict Content-Security-Policy (scripts,
    styles and connections to this site only; no inline code; no framing) and no-cache with an
    ETag, so a browser revalidates and never mixes files of two versions."""
    status, headers, body = await get(server.port, path)
    assert status == 200 and body
    assert headers["content-type"] == ASSETS[path]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert "connect-src 'self' ws: wss:" in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert headers["cache-control"] == "no-cache"
    assert headers["referrer-policy"] == "no-referrer"
    again, _, unchanged = await get(server.port, path, f"If-None-Match: {headers['etag']}")
    assert (again, unchanged) == (304, b"")


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/",
        "/dashboard",
        "/dashboard/nope.js",
        "/dashboard/main.js/x",
        "/dashboard/index.html",
        "/dashboard/..%2fweb.py",
    ],
)
@pytest_twisted.ensureDeferred
async def test_only_the_shipped_files_are_served(server: RunningServer, path: str) -> None:
    """No directory listing, no other names, nothing below a file, no way out of the folder."""
    status, _, _ = await get(server.port, path)
    assert status == 404


@pytest_twisted.ensureDeferred
async def test_no_dashboard_serves_no_page_and_no_assets(tmp_path: Path) -> None:
    """With ``--no-dashboard`` (``dashboard=False``), ``GET /`` and the assets are 404, and the
    WebSocket endpoint at ``/`` works as before."""
    running = await start_server(tmp_path / "data", dashboard=False)
    try:
        for path in ("/", "/dashboard/main.js"):
            status, _, _ = await get(running.port, path)
            assert status == 404, path
        assert b"--no-dashboard" in (await get(running.port, "/"))[2]
        client = await connect(running.port, running.dashboard_token)
        assert (await client.next_message())["type"] == "welcome"
        client.disconnect()
    finally:
        await running.stop()


def test_the_command_line_flag_turns_the_dashboard_off() -> None:
    options = Options()
    options.parseOptions(["--no-dashboard"])
    assert options.config.dashboard is False
    options = Options()
    options.parseOptions([])
    assert options.config.dashboard is True


def _shipped() -> dict[str, str]:
    return {f.name: f.read_text(encoding="utf-8") for f in STATIC.iterdir() if f.is_file()}


def test_shipped_files_need_nothing_from_elsewhere_and_nothing_inline() -> None:
    """The page works offline and under the policy: no URL to another site (fonts, CDNs), no inline
    script, style element or style attribute, and every link relative (the page may be mounted
    under any prefix)."""
    files = _shipped()
    assert {"index.html", "main.js", "style.css"} <= set(files)
    for name, text in files.items():
        code = re.sub(r'xmlns="http://www.w3.org/2000/svg"', "", text)
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", code, re.I), name
        assert "@import" not in text and "url(" not in text, name
    page = files["index.html"]
    assert "<style" not in page and " style=" not in page
    scripts = re.findall(r"<script\b[^>]*>", page)
    assert scripts and all('src="dashboard/' in s for s in scripts)
    for link in re.findall(r'(?:href|src)="([^"]+)"', page):
        assert link.startswith(("dashboard/", "#")), link


def test_scripts_never_build_markup_from_strings() -> None:
    """What agents send must never become markup: the scripts create elements and text nodes only
    (the browser test checks the behaviour; this keeps the dangerous APIs out altogether)."""
    for name, text in _shipped().items():
        if name.endswith(".js"):
            for sink in (
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
            ):
                assert sink not in text, f"{name} uses {sink}"
