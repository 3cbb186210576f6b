"""``GET /cxs/timeline``: a page of tasks (the list's filters, sort and paging) with their runs in a
time window, for the console's timeline; ``GET /cxs/whoami``: who the credentials are.

The timeline loads only what it draws: one page of tasks, and for each the runs overlapping the
window (``Store.runs_in_window``: two bounded index reads), newest first and capped per task. A run
goes out without its output (up to 8 KiB each: ``GET .../runs/{runId}`` has it).
"""

from __future__ import annotations

from aiohttp import web

from ..model import RunRecord
from . import params, views
from .errors import bad_request
from .keys import FINDER, SERVICES

# Bounds on one answer: each task is two reads on the store's one connection, which the node's
# claims and renewals share, so one request never holds it for long.
MAX_TASKS = 100


def _bar(run: RunRecord) -> dict:
    return {
        "runId": run.run_id,
        "startedAt": views.iso(run.started_at),
        "finishedAt": views.iso(run.finished_at),
        "durationMs": views.millis(run.duration),
        "outcome": None if run.outcome is None else run.outcome.value,
        "node": run.node_id,
        "exitCode": run.exit_code,
        "attempt": run.attempt,
    }


async def timeline(request: web.Request) -> web.Response:
    finder = request.app[FINDER]
    query = params.task_query(request)
    if query.limit > MAX_TASKS:
        raise bad_request(f"Invalid limit: {query.limit} (the timeline shows at most {MAX_TASKS} tasks a page)")
    start, end, per_task = params.time_window(request, finder.stores[0].now())
    try:
        tasks, total = await finder.query(query)
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    ids = [task.item_id for task in tasks]
    runs: dict[str, list[RunRecord]] = {}
    for store in finder.stores:  # shared first: an id is the shared store's task when both have one
        wanted = [item_id for item_id in ids if not runs.get(item_id)]
        if wanted:
            for item_id, found in (await store.runs_in_window(wanted, start, end, per_task + 1)).items():
                runs[item_id] = runs.get(item_id) or found
    items = []
    for task in tasks:
        found = runs.get(task.item_id, [])
        items.append({
            "itemId": task.item_id,
            "taskType": task.spec.type,
            "status": task.status.value,
            "lastOutcome": views.last_outcome(task),
            "runs": [_bar(run) for run in found[:per_task]],
            "truncated": len(found) > per_task,  # older runs in the window were left out
        })
    body = views.page(items, query.offset, query.limit, total)
    body.update({"from": views.iso(start), "to": views.iso(end), "runsPerTask": per_task})
    return web.json_response(body)


async def whoami(request: web.Request) -> web.Response:
    """The token's name and roles, so that a client (the console) shows only what the caller may do."""
    principal = request.app[SERVICES].auth.authenticate(request.headers.get("Authorization"))
    assert principal is not None  # the authenticate middleware let the request through
    return web.json_response({"name": principal.name, "roles": sorted(role.value for role in principal.roles)})
