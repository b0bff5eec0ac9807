"""The built-in dashboard: static HTML, CSS and JavaScript modules shipped as package data, served
from the hub's own site with headers that keep the page safe.

There is no build step and nothing is fetched from elsewhere: the files under ``static/`` are what
the browser runs. Every response carries a strict Content-Security-Policy (scripts and styles from
this site only, no inline code, WebSockets and fetches to this site only), so text an agent sends
can never become script even if a bug let it into markup. The files are read once, when the site is
built; they are revalidated by ETag on every load (``Cache-Control: no-cache``), so a browser never
mixes the page of one version with the scripts of another.

The page links its assets relatively (``dashboard/main.js``) and computes its WebSocket address from
its own location, so the same files work at ``/`` and under any prefix a host mounts vibews at.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any, Final

import attrs
from twisted.web.http import NOT_MODIFIED, Request
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource

#: The path segment under which the page's assets are served (``/dashboard/main.js``).
ASSETS: Final = b"dashboard"

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_CONTENT_TYPES: Final = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
}


@attrs.frozen
class StaticFile:
    """One file of the page, in memory, with what it is served with."""

    body: bytes
    content_type: bytes
    etag: bytes

    @classmethod
    def of(cls, name: str, body: bytes) -> StaticFile:
        suffix = name[name.rfind(".") :]
        digest = hashlib.sha256(body).hexdigest()[:32]
        return cls(body, _CONTENT_TYPES[suffix], f'"{digest}"'.encode())

    def serve(self, request: Request) -> bytes:
        request.setHeader(b"content-type", self.content_type)
        request.setHeader(b"etag", self.etag)
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"content-security-policy", CONTENT_SECURITY_POLICY.encode())
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        request.setHeader(b"x-frame-options", b"DENY")
        request.setHeader(b"cross-origin-opener-policy", b"same-origin")
        request.setHeader(b"cross-origin-resource-policy", b"same-origin")
        if self.etag in _etags(request.getHeader(b"if-none-match")):
            request.setResponseCode(NOT_MODIFIED)
            return b""
        return self.body


def _etags(header: bytes | None) -> list[bytes]:
    if header is None:
        return []
    return [tag.strip().removeprefix(b"W/") for tag in header.split(b",")]


def load_files() -> dict[str, StaticFile]:
    """Every file under ``static/``, by name (a flat directory: no paths, nothing to traverse)."""
    folder = resources.files(__name__) / "static"
    return {
        entry.name: StaticFile.of(entry.name, entry.read_bytes())
        for entry in folder.iterdir()
        if entry.is_file() and entry.name[entry.name.rfind(".") :] in _CONTENT_TYPES
    }


class DashboardPage(Resource):
    """The page itself (``index.html``), for a plain ``GET /``."""

    isLeaf = True

    def __init__(self, page: StaticFile) -> None:
        super().__init__()
        self._page = page

    def render_GET(self, request: Request) -> bytes:
        return self._page.serve(request)


class _Asset(Resource):
    isLeaf = True

    def __init__(self, file: StaticFile) -> None:
        super().__init__()
        self._file = file

    def render_GET(self, request: Request) -> bytes:
        if request.postpath not in ([], [b""]):  # type: ignore[attr-defined]
            return notFound().render(request)  # type: ignore[no-any-return]
        return self._file.serve(request)


class DashboardAssets(Resource):
    """``/dashboard/<name>``: the page's scripts, stylesheet and icon; any other name is 404."""

    def __init__(self, files: dict[str, StaticFile]) -> None:
        super().__init__()
        for name, file in files.items():
            if name != "index.html":
                self.putChild(name.encode(), _Asset(file))

    def getChild(self, path: bytes, request: Any) -> IResource:
        return notFound()

    def render(self, request: Any) -> bytes:
        return notFound().render(request)  # type: ignore[no-any-return]


def dashboard_resources() -> tuple[DashboardPage, DashboardAssets]:
    """The page and its assets, read from the package once."""
    files = load_files()
    return DashboardPage(files["index.html"]), DashboardAssets(files)
