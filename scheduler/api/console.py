"""The web console: static files shipped in the package (``scheduler/console/``), served at ``/ui/``.

The page holds no data: it is HTML, CSS and JavaScript that read the JSON API with
the token the user types, so these routes need no credentials. The files are read
once, when the app is built, into a table keyed by file name: a request names an
entry of that table or gets a 404, so no path a client sends ever reaches the file
system (no ``..``, no encoded slash, no symbolic link can lead elsewhere).

Every console answer carries a strict Content-Security-Policy: scripts, styles and
connections only from this origin, no inline script or style, no framing, no
``<base>``; so even a task description that slipped through unescaped could run
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from .errors import error_response

PREFIX = "/ui/"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors' elder, for browsers that ignore CSP
    # Revalidated at each load: an upgraded node serves its own console, never a cached older one.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str


def load_assets() -> dict[str, Asset]:
    """The console's files by name, read from the package; other files of the folder are not served."""
    assets: dict[str, Asset] = {}
    for entry in resources.files("scheduler.console").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in CONTENT_TYPES and not entry.name.startswith("."):
            assets[entry.name] = Asset(entry.read_bytes(), CONTENT_TYPES[suffix])
    return assets


def _secured(response: web.StreamResponse) -> web.StreamResponse:
    response.headers.update(SECURITY_HEADERS)
    return response


def add_console_routes(app: web.Application) -> list[web.AbstractRoute]:
    """Register the console's routes (open: the files hold no data); returns them."""
    assets = load_assets()

    async def to_console(request: web.Request) -> web.StreamResponse:
        return _secured(web.Response(status=302, headers={"Location": PREFIX}))

    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name") or "index.html"
        found = assets.get(name)
        if found is None:
            return _secured(error_response(404, "Not Found", "No such console file"))
        return _secured(web.Response(body=found.body, headers={"Content-Type": found.content_type}))

    return [
        app.router.add_get("/", to_console),
        app.router.add_get(PREFIX.rstrip("/"), to_console),
        app.router.add_get(PREFIX, asset),
        app.router.add_get(PREFIX + "{name}", asset),
    ]
