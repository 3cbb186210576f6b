"""Handlers of the node and cluster: nodes, config, reload, health, metrics, OpenAPI."""

from __future__ import annotations

import inspect
import logging

from aiohttp import web

from ..model import TaskQuery
from . import views
from .errors import ApiError
from .keys import FINDER, OPENAPI, SERVICES
from .metrics import CONTENT_TYPE

log = logging.getLogger(__name__)

# Per-task timestamps are exported for at most this many tasks per store (the
# first by itemId): a scrape stays one bounded query (~0.1 s) with 100,000 tasks,
# and Prometheus is not handed 200,000 series. ``scheduler_tasks`` shows the total.
METRICS_TASK_LIMIT = 1000


async def list_nodes(request: web.Request) -> web.Response:
    nodes = await request.app[SERVICES].store.list_nodes()
    items = [views.node_info(n) for n in nodes]
    return web.json_response({"list": items, "totalSize": len(items)})


async def show_config(request: web.Request) -> web.Response:
    config_status = request.app[SERVICES].config_status
    if config_status is None:
        raise ApiError(503, "This node has no task directory configuration to show")
    status = config_status()
    if inspect.isawaitable(status):  # a node checks its files' versions against the store
        status = await status
    return web.json_response(status)


async def reload(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    if services.reload is None:
        raise ApiError(503, "This node has no tasks directory to reload")
    result = await services.reload()
    services.wake()
    return web.json_response(result)


async def livez(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """The status code is the answer (200 ready, 503 not); the body says why not."""
    problems = await request.app[SERVICES].readiness()
    if problems:
        return web.json_response({"status": "not ready", "ready": False, "problems": problems}, status=503)
    return web.json_response({"status": "ready", "ready": True, "problems": []})


async def metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    tasks, total = [], 0
    nodes = await services.store.list_nodes()
    now = services.store.now()
    unrunnable = 0
    held = {"disabled": 0, "suspended": 0}
    for store in request.app[FINDER].stores:
        page = await store.query_tasks(TaskQuery(limit=METRICS_TASK_LIMIT))
        tasks.extend(page.items)
        total += page.total
        held["disabled"] += (await store.query_tasks(TaskQuery(enabled=False, limit=0))).total
        held["suspended"] += (await store.query_tasks(TaskQuery(suspended=True, limit=0))).total
        for requirement, count in (await store.count_waiting()).items():
            if not requirement.met_by_any(nodes, now, services.node_timeout):
                unrunnable += count
    services.metrics.set_task_times(tasks, total)
    services.metrics.unrunnable.set(unrunnable)
    for reason, count in held.items():
        services.metrics.held.labels(reason=reason).set(count)
    # A task's run counts go with the task: only ids the snapshot did not show are looked up.
    unseen = services.metrics.counted_tasks() - {task.item_id for task in tasks}
    for store in request.app[FINDER].stores:
        if unseen:
            unseen -= await store.known_ids(unseen)
    services.metrics.forget_tasks(unseen)
    live_after = services.store.now() - services.node_timeout
    diverged = await services.store.list_declarations(diverged=True, live_after=live_after)
    by_task: dict[str, list] = {}
    for declaration in diverged:
        by_task.setdefault(declaration.item_id, []).append(declaration)
    services.metrics.set_divergence(
        d for task in sorted(by_task)[:METRICS_TASK_LIMIT] for d in by_task[task]
        if d.live and len({x.spec_hash for x in by_task[task] if x.live} | {d.in_force}) > 1
    )
    return web.Response(body=services.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(text=request.app[OPENAPI])
