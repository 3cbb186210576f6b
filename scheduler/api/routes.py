"""The routes table: method, path, handler and the role each route requires."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable

from aiohttp import web

from . import system, tasks, timeline
from .auth import Role

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

OPEN = None  # no credentials needed
METRICS = "metrics"  # open or VIEWER, as configured (``api.metrics.public``)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    role: Role | str | None


ROUTES: tuple[Route, ...] = (
    Route("GET", "/cxs/tasks", tasks.list_tasks, Role.VIEWER),
    Route("GET", "/cxs/tasks/{id}", tasks.show_task, Role.VIEWER),
    Route("DELETE", "/cxs/tasks/{id}", tasks.cancel_task, Role.ADMINISTRATOR),
    Route("GET", "/cxs/tasks/{id}/runs", tasks.list_runs, Role.VIEWER),
    Route("GET", "/cxs/tasks/{id}/runs/{runId}", tasks.show_run, Role.VIEWER),
    Route("GET", "/cxs/tasks/{id}/declarations", tasks.list_declarations, Role.VIEWER),
    Route("GET", "/cxs/tasks/{id}/next", tasks.next_runs, Role.VIEWER),
    Route("POST", "/cxs/tasks/{id}/retry", tasks.retry_task, Role.ADMINISTRATOR),
    Route("POST", "/cxs/tasks/{id}/resume", tasks.resume_task, Role.ADMINISTRATOR),
    Route("PUT", "/cxs/tasks/{id}/config", tasks.configure_task, Role.ADMINISTRATOR),
    Route("DELETE", "/cxs/tasks/{id}/config", tasks.clear_task_config, Role.ADMINISTRATOR),
    Route("POST", "/cxs/tasks/{id}/run", tasks.run_task, Role.ADMINISTRATOR),
    Route("POST", "/cxs/tasks/{id}/suspend", tasks.suspend_task, Role.ADMINISTRATOR),
    Route("POST", "/cxs/tasks/{id}/unsuspend", tasks.unsuspend_task, Role.ADMINISTRATOR),
    Route("GET", "/cxs/timeline", timeline.timeline, Role.VIEWER),
    Route("GET", "/cxs/whoami", timeline.whoami, Role.VIEWER),
    Route("GET", "/cxs/nodes", system.list_nodes, Role.VIEWER),
    Route("GET", "/cxs/config", system.show_config, Role.VIEWER),
    Route("POST", "/-/reload", system.reload, Role.ADMINISTRATOR),
    # Not under /cxs/tasks/: "purge" is a valid task id there.
    Route("POST", "/-/purge", tasks.purge_tasks, Role.ADMINISTRATOR),
    Route("GET", "/livez", system.livez, OPEN),
    Route("GET", "/readyz", system.readyz, OPEN),
    Route("GET", "/metrics", system.metrics, METRICS),
    Route("GET", "/openapi.json", system.openapi, OPEN),  # describes the API, holds no data
)


def add_routes(app: web.Application, metrics_public: bool) -> dict[web.AbstractRoute, Role | None]:
    """Register ``ROUTES`` on ``app``; returns the role each registered route requires."""
    access: dict[web.AbstractRoute, Role | None] = {}
    for route in ROUTES:
        registered = app.router.add_route(route.method, route.path, route.handler)
        role = route.role
        if role == METRICS:
            role = OPEN if metrics_public else Role.VIEWER
        access[registered] = role
    return access
