"""The app factory: one ``web.Application`` from the node's services, nothing global."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import yaml
from aiohttp import web

from . import middlewares
from .console import add_console_routes
from .keys import ACCESS, FINDER, OPENAPI, SERVICES
from .listing import TaskFinder
from .routes import add_routes
from .services import ApiServices


def load_openapi() -> dict[str, Any]:
    """The OpenAPI document shipped with the package (``scheduler/api/openapi.yaml``)."""
    text = resources.files("scheduler.api").joinpath("openapi.yaml").read_text()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 10x faster
    return yaml.load(text, Loader=loader)


def create_app(services: ApiServices) -> web.Application:
    stack = [middlewares.errors, middlewares.body_size, middlewares.authenticate]
    if services.cors_origins:
        stack.insert(0, middlewares.cors(services.cors_origins))
    app = web.Application(middlewares=stack, client_max_size=services.max_body_bytes)
    app[SERVICES] = services
    app[FINDER] = TaskFinder(services.store, services.memory_store)
    app[OPENAPI] = json.dumps(load_openapi())  # serialised once: the document never changes
    app[ACCESS] = add_routes(app, services.metrics_public)
    for route in add_console_routes(app):
        app[ACCESS][route] = None  # static files only: open
    return app
