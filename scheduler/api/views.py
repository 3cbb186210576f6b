"""Store objects as the JSON a client sees: Unomi's task shape, plus run records and nodes.

Dates are ISO 8601 UTC strings (``2024-03-20T15:00:00Z``) or null; durations
shown to clients are milliseconds, as in Unomi (``retryDelay: 60000``). Errors and
run output go out with the URLs in them redacted (``scheduler.redact``): they may
quote a task's URL with its credentials, and viewers read them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Mapping

from ..model import Declaration, NodeInfo, Page, RunRecord, Task
from ..redact import redact_optional, redact_text, redact_url
from ..preview import FireTime
from ..spec import RunSpec, Schedule, utc_iso


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else utc_iso(moment)


def millis(delta: timedelta | None) -> int | None:
    return None if delta is None else int(delta.total_seconds() * 1000)


def jsonable(value: Any) -> Any:
    """Plain JSON data from stored free-form values (frozen mappings, tuples, datetimes)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return utc_iso(value)
    return value


def task_summary(task: Task) -> dict[str, Any]:
    """The list item: the fields of Unomi's ``GET /cxs/tasks`` example, then ours (``task-list -o wide``).

    A held task (disabled in its spec, or suspended) shows no next run: it runs nothing, whatever
    slot it keeps for when the hold ends."""
    return {
        "itemId": task.item_id,
        "taskType": task.spec.type,
        "status": task.status.value,
        "nextScheduledExecution": None if task.held else iso(task.next_scheduled_execution),
        "lastExecutionDate": iso(task.last_execution_date),
        "failureCount": task.failure_count,
        "persistent": task.spec.persistent,
        "parameters": jsonable(task.spec.parameters),
        "successCount": task.success_count,
        "lastOutcome": last_outcome(task),
        "node": task.node,
        "labels": jsonable(task.spec.labels),
        "enabled": task.spec.enabled,
        "suspended": task.suspended,
    }


def last_outcome(task: Task) -> str | None:
    """How the newest run or slot in the history ended (``success``, ``crashed``, ``skipped``...); None before any."""
    return task.history[0].get("outcome") if task.history else None


def task_detail(task: Task, *, runnable: bool, history: bool = True) -> dict[str, Any]:
    """The full task of ``GET /cxs/tasks/{id}`` (and of the action answers).

    ``runnable``: whether some live executor node may claim the task (``Requirement.met_by_any``)."""
    spec = task.spec
    doc = task_summary(task)
    doc.update(
        currentStep=task.current_step,
        statusDetails=jsonable(task.status_details),
        checkpointData=jsonable(task.checkpoint_data),
        maxRetries=task.max_retries,
        retryDelay=millis(task.retry_delay),
        suspendedAt=iso(task.suspended_at),
        description=spec.description,
        schedule=spec.schedule.to_dict(),
        lastError=redact_optional(task.last_error),
        lastFinishDate=iso(task.last_finish_date),
        lastSuccessDate=iso(task.last_success_date),
        dependsOn=list(spec.depends_on),
        waitingOnTasks=list(task.waiting_on),
        attempt=task.attempt,
        lease=None
        if task.lease_owner is None
        else {"owner": task.lease_owner, "until": iso(task.lease_until), "fence": task.fence},
        creationDate=iso(task.creation_date),
        lastModified=iso(task.last_modified),
        source=None if spec.source is None else {"path": spec.source.path, "line": spec.source.line},
        executorType=spec.executor_type,
        runnable=runnable,
        run=run_shown(spec.run),
        concurrency=spec.concurrency,
        onCrash=spec.on_crash,
    )
    overrides = task_overrides(task)
    if overrides:
        doc["overrides"] = overrides
    if history:
        doc["history"] = shown_history(task.history)
    return doc


def run_shown(run: RunSpec | None) -> dict[str, Any] | None:
    """What a task runs, as shown to viewers: the program and its arguments, the script, the method and
    URL, or the python target, and the timeout (ms). Never the request's headers and body nor the values
    of ``env``, which hold credentials; URLs anywhere in it are redacted."""
    if run is None:
        return None
    shown: dict[str, Any]
    if run.command is not None:
        shown = {"command": [redact_text(arg) for arg in run.command]}
    elif run.shell is not None:
        shown = {"shell": redact_text(run.shell)}
    elif run.http is not None:
        shown = {"http": {"method": run.http.method, "url": redact_url(run.http.url)}}
    else:
        shown = {"python": run.python}
    shown["timeout"] = millis(run.timeout)
    return shown


def shown_history(entries: Any) -> list[dict[str, Any]]:
    """The task's history as shown: each run's error with its URLs redacted."""
    shown = jsonable(entries)
    for entry in shown:
        if entry.get("error"):
            entry["error"] = redact_text(entry["error"])
    return shown


def task_overrides(task: Task) -> dict[str, int]:
    """The retry settings changed through the API, which win over the task's file."""
    overrides: dict[str, int] = {}
    if task.max_retries_override is not None:
        overrides["maxRetries"] = task.max_retries_override
    if task.retry_delay_override is not None:
        overrides["retryDelay"] = millis(task.retry_delay_override)
    return overrides


def run_record(run: RunRecord) -> dict[str, Any]:
    return {
        "runId": run.run_id,
        "taskId": run.task_id,
        "scheduledFor": iso(run.scheduled_for),
        "attempt": run.attempt,
        "node": run.node_id,
        "fence": run.fence,
        "startedAt": iso(run.started_at),
        "finishedAt": iso(run.finished_at),
        "durationMs": millis(run.duration),
        "outcome": None if run.outcome is None else run.outcome.value,
        "exitCode": run.exit_code,
        "output": redact_optional(run.output),
        "error": redact_optional(run.error),
    }


def next_runs(item_id: str, schedule: Schedule, entries: list[FireTime], reason: str | None) -> dict[str, Any]:
    """``GET /cxs/tasks/{id}/next`` (and ``scheduler next`` of a file): each run's slot and fire time in
    UTC, the fire time in the task's time zone (ISO 8601 with its offset), and what moved it."""
    zone = schedule.zone
    return {
        "itemId": item_id,
        "schedule": schedule.to_dict(),
        "timezone": schedule.timezone,
        "list": [
            {
                "slot": iso(entry.slot),
                "fireTime": iso(entry.fire_time),
                "local": entry.fire_time.astimezone(zone).isoformat(
                    timespec="milliseconds" if entry.fire_time.microsecond else "seconds"
                ),
                "note": entry.note,
            }
            for entry in entries
        ],
        "reason": reason,
    }


def node_info(node: NodeInfo) -> dict[str, Any]:
    return {
        "nodeId": node.node_id,
        "executor": node.executor,
        "heartbeat": iso(node.heartbeat),
        "running": node.running,
        "stuck": node.stuck,
        "startedAt": iso(node.started_at),
        "version": node.version,
        "listen": node.listen,
        "taskTypes": list(node.task_types),
    }


def page(items: list[dict[str, Any]], offset: int, page_size: int, total: int) -> dict[str, Any]:
    """Unomi's paged list: ``pageSize`` is the size asked for, as in its example."""
    return {"list": items, "offset": offset, "pageSize": page_size, "totalSize": total}


def runs_page(runs: Page, page_size: int) -> dict[str, Any]:
    return page([run_record(r) for r in runs.items], runs.offset, page_size, runs.total)


def declarations(task: Task, found: list[Declaration]) -> dict[str, Any]:
    """``GET /cxs/tasks/{id}/declarations``: the nodes declaring a file task, and whether they agree."""
    live = [d for d in found if d.live]
    return {
        "itemId": task.item_id,
        "inForce": task.spec_hash,
        "diverged": len({d.spec_hash for d in live} | {task.spec_hash}) > 1 if live else False,
        "declarations": [
            {
                "node": d.node_id,
                "specHash": d.spec_hash,
                "inForce": d.spec_hash == task.spec_hash,
                "since": iso(d.since),
                "declaredAt": iso(d.declared_at),
                "source": None if d.source is None else {"path": d.source.path, "line": d.source.line},
                "live": d.live,
            }
            for d in found
        ],
    }
