"""The typed keys under which the app holds its state (no globals)."""

from __future__ import annotations

from aiohttp import web

from .auth import Role
from .listing import TaskFinder
from .services import ApiServices

SERVICES = web.AppKey("services", ApiServices)
FINDER = web.AppKey("finder", TaskFinder)
# The role each route requires (None: open to anyone), filled from the routes table.
ACCESS = web.AppKey("access", dict[web.AbstractRoute, Role | None])
OPENAPI = web.AppKey("openapi", str)  # the OpenAPI document as JSON text
