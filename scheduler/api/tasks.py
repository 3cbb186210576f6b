"""Handlers of ``/cxs/tasks``: list, show, runs, and the operator actions.

Every action acts on the store that holds the task (shared first, then this
node's memory store) and then wakes the engine so the node acts at once.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from aiohttp import web

from .. import preview
from ..model import Task
from . import params, views
from .errors import ApiError, bad_request
from .keys import FINDER, SERVICES
from .listing import Located

log = logging.getLogger(__name__)


async def _locate(request: web.Request) -> Located:
    return await request.app[FINDER].locate(request.match_info["id"])


async def _detail(request: web.Request, task: Task, *, history: bool = True) -> dict:
    """The task as shown, with whether a live node can run it (heartbeats are in the shared store)."""
    services = request.app[SERVICES]
    nodes = await services.store.list_nodes()
    runnable = task.requirement.met_by_any(nodes, services.store.now(), services.node_timeout)
    return views.task_detail(task, runnable=runnable, history=history)


async def _task_answer(request: web.Request, task: Task) -> web.Response:
    request.app[SERVICES].wake()
    return web.json_response(await _detail(request, task, history=False))


async def list_tasks(request: web.Request) -> web.Response:
    query = params.task_query(request)
    try:
        tasks, total = await request.app[FINDER].query(query)
    except ValueError as exc:  # the store refused the query (e.g. a sort it cannot do)
        raise bad_request(str(exc)) from None
    items = [views.task_summary(t) for t in tasks]
    return web.json_response(views.page(items, query.offset, query.limit, total))


async def show_task(request: web.Request) -> web.Response:
    located = await _locate(request)
    return web.json_response(await _detail(request, located.task))


async def list_declarations(request: web.Request) -> web.Response:
    """Which nodes declare the task in their files, with which spec, and which is in force."""
    located = await _locate(request)
    live_after = located.store.now() - request.app[SERVICES].node_timeout
    found = await located.store.list_declarations(item_ids=[located.task.item_id], live_after=live_after)
    return web.json_response(views.declarations(located.task, found))


async def list_runs(request: web.Request) -> web.Response:
    offset, limit = params.paging(request)
    located = await _locate(request)
    runs = await located.store.list_runs(located.task.item_id, offset=offset, limit=limit)
    return web.json_response(views.runs_page(runs, limit))


async def show_run(request: web.Request) -> web.Response:
    """One run record of the task, by its ``runId`` (``<taskId>:<slot ms>:<attempt>``)."""
    located = await _locate(request)
    run_id = request.match_info["runId"]
    run = await located.store.get_run(located.task.item_id, run_id)
    if run is None:
        raise ApiError(404, f"No run {run_id} is recorded for task {located.task.item_id}", "Run not found")
    return web.json_response(views.run_record(run))


async def next_runs(request: web.Request) -> web.Response:
    """The task's next fire times, in its time zone and in UTC, daylight-saving rules applied."""
    count, after = params.next_runs(request)
    located = await _locate(request)
    entries, reason = preview.for_task(located.task, count, after, located.store.now())
    return web.json_response(views.next_runs(located.task.item_id, located.task.spec.schedule, entries, reason))


async def cancel_task(request: web.Request) -> web.Response:
    located = await _locate(request)
    await located.store.cancel(located.task.item_id)
    log.info("task %s cancelled through the API", located.task.item_id, extra={"task": located.task.item_id})
    request.app[SERVICES].check_leases()  # if it runs on this node, it stops now
    request.app[SERVICES].wake()
    return web.Response(status=204)


async def retry_task(request: web.Request) -> web.Response:
    reset = params.bool_param(request, "resetFailureCount")
    located = await _locate(request)
    task = await located.store.retry(located.task.item_id, reset_failure_count=reset)
    return await _task_answer(request, task)


async def resume_task(request: web.Request) -> web.Response:
    located = await _locate(request)
    return await _task_answer(request, await located.store.resume(located.task.item_id))


async def configure_task(request: web.Request) -> web.Response:
    max_retries, retry_delay = params.retry_config(request)
    located = await _locate(request)
    if max_retries is None and retry_delay is None:  # nothing to change: answer the settings in force
        return web.json_response(await _detail(request, located.task, history=False))
    task = await located.store.update_config(located.task.item_id, max_retries=max_retries, retry_delay=retry_delay)
    return await _task_answer(request, task)


async def clear_task_config(request: web.Request) -> web.Response:
    """Remove the retry overrides: the values of the task's file are in force again."""
    located = await _locate(request)
    return await _task_answer(request, await located.store.update_config(located.task.item_id, clear=True))


async def run_task(request: web.Request) -> web.Response:
    located = await _locate(request)
    return await _task_answer(request, await located.store.run_now(located.task.item_id))


async def suspend_task(request: web.Request) -> web.Response:
    located = await _locate(request)
    task = await located.store.suspend(located.task.item_id)
    log.info("task %s suspended through the API", task.item_id, extra={"task": task.item_id})
    return await _task_answer(request, task)


async def unsuspend_task(request: web.Request) -> web.Response:
    located = await _locate(request)
    task = await located.store.unsuspend(located.task.item_id)
    log.info("task %s unsuspended through the API", task.item_id, extra={"task": task.item_id})
    return await _task_answer(request, task)  # wakes the engine: its kept slot may be due


async def purge_tasks(request: web.Request) -> web.Response:
    """Delete tasks that ended (COMPLETED, FAILED, CANCELLED) and run records older than ``days``."""
    days = params.purge_days(request)
    tasks = runs = beyond = 0
    for store in request.app[FINDER].stores:
        counts = await store.purge(finished_before=store.now() - timedelta(days=days))
        tasks, runs, beyond = tasks + counts.tasks, runs + counts.runs, beyond + counts.runs_beyond_keep_runs
    log.info("purged %d task(s) and %d run record(s) older than %d day(s) through the API, and %d run record(s) "
             "beyond their task's keepRuns", tasks, runs, days, beyond)
    return web.json_response({"tasks": tasks, "runs": runs, "runsBeyondKeepRuns": beyond})
