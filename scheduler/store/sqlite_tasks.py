"""Specs, reads, operator actions, nodes and retention on SQLite.

Like ``sqlite_claims``, each function runs inside a transaction opened by
``SQLiteStore`` (``BEGIN IMMEDIATE`` for writes, ``BEGIN`` for reads) and gets
``now`` from the store's clock.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from datetime import datetime, timedelta
from typing import Any, Collection

from .. import policy
from ..model import (
    FINAL_STATUSES, LabelOperator, LeaseExpiries, NodeInfo, Outcome, Page, PurgeCounts, Requirement,
    Retention, RunRecord, Status, Task, TaskQuery, UpsertResult, copies_range, epoch_ms, from_epoch_ms, is_file_source,
    prefix_range,
)
from ..spec import TaskSpec
from .sqlite_claims import expired_lease, read_row, transition
from .sqlite_schema import (
    CLAIMABLE,
    FROM_CLAIMABLE,
    KEEPS_RUNS,
    NODE_ELIGIBLE,
    SORT_COLUMNS,
    TASK_WITHOUT_HISTORY,
    in_due_order,
    ms_or_none,
    node_from_row,
    run_from_row,
    task_from_row,
    to_json,
)

logger = logging.getLogger(__name__)

FINAL_SQL = "status IN ({})".format(", ".join(f"'{status.value}'" for status in sorted(FINAL_STATUSES)))


# -- specs -------------------------------------------------------------------------


_CURRENT_SPEC = "SELECT spec, spec_hash, spec_version, status FROM tasks WHERE item_id = ?"
_READ = object()  # upsert's ``current`` when the caller has not read the row


def upsert(
    conn: sqlite3.Connection, now: datetime, spec: TaskSpec, item_id: str, node: str | None,
    first_due: datetime | None, spec_version: float, *, document: dict[str, Any] | None = None,
    spec_json: str | None = None, spec_hash: str | None = None, force: bool = False,
    current: sqlite3.Row | None | object = _READ,
) -> UpsertResult:
    """``Store.upsert_spec``. ``document``, ``spec_json``, ``spec_hash`` and ``current`` (the task's
    ``_CURRENT_SPEC`` row, None when absent): what the caller built or read already.
    ``force``: replace the spec whatever its version (a declaration put in force when another is withdrawn)."""
    if document is None:
        document = spec.to_dict()
    if spec_json is None:
        spec_json = to_json(document)
    if spec_hash is None:
        spec_hash = json_hash(spec_json)
    row = conn.execute(_CURRENT_SPEC, (item_id,)).fetchone() if current is _READ else current
    if row is not None and row["spec_hash"] == spec_hash:
        return UpsertResult.UNCHANGED  # before building anything: the common case of every reload
    if row is not None and row["spec_version"] > spec_version and not force:
        return UpsertResult.SUPERSEDED
    now_ms = epoch_ms(now)
    due = ms_or_none(first_due)
    declared = {
        "spec": spec_json,
        "spec_hash": spec_hash,
        "spec_version": spec_version,
        "source_path": None if spec.source is None else spec.source.path,
        "source_line": None if spec.source is None else spec.source.line,
        "task_type": spec.task_type,
        "executor_type": spec.executor_type,
        "depends_on": to_json(list(spec.waits_for)) if spec.waits_for else None,
        "dependencies_ready": 0,  # a new spec, a new check (its dependencies may have changed)
        "enabled": int(spec.enabled),
        "persistent": int(spec.persistent),
        "origin_file": int(is_file_source(spec.source)),
        "on_crash": spec.on_crash,
        "keep_successful": None if spec.keep_runs is None else spec.keep_runs.successful,
        "keep_failed": None if spec.keep_runs is None else spec.keep_runs.failed,
        "nodes": to_json(list(spec.nodes)),
        "labels": to_json(dict(spec.labels)),
        "node": node,
        "last_modified": now_ms,
    }
    if row is None:
        values = {
            **declared, "item_id": item_id, "status": Status.SCHEDULED.value, "next_at": due,
            "scheduled_for": due, "attempt": 1, "failure_count": 0, "success_count": 0,
            "status_details": "{}", "history": "[]", "creation_date": now_ms, **_lease_of_removed(conn, item_id),
        }
        placeholders = ", ".join(f":{column}" for column in values)
        conn.execute(f"INSERT INTO tasks ({', '.join(values)}) VALUES ({placeholders})", values)
        return UpsertResult.CREATED
    keep_declared_specs(conn, item_id, row["spec"])
    updates = dict(declared)
    schedule_changed = json.loads(row["spec"])["schedule"] != document["schedule"]
    if schedule_changed and row["status"] != Status.RUNNING:
        updates.update(next_at=due, scheduled_for=due, attempt=1)
        if due is not None and row["status"] in (Status.COMPLETED, Status.FAILED):
            updates.update(status=Status.SCHEDULED.value, expires_at=None)
    _update(conn, item_id, updates)
    return UpsertResult.UPDATED


def json_hash(spec_json: str) -> str:
    """``document_hash`` of the document ``spec_json`` (``to_json``) was made from: both are the same
    canonical JSON (sorted keys, no spaces), so one encoding serves the column and the hash."""
    return hashlib.sha256(spec_json.encode()).hexdigest()


def keep_declared_specs(conn: sqlite3.Connection, item_id: str, spec_json: str) -> None:
    """The task's spec ``spec_json`` is about to change or go: the declarations that left theirs to the
    task (NULL: it is the one the task holds) keep a copy of it."""
    conn.execute("UPDATE declarations SET spec = ? WHERE item_id = ? AND spec IS NULL", (spec_json, item_id))


def _lease_of_removed(conn: sqlite3.Connection, item_id: str) -> dict[str, Any]:
    """The lease and fence of a task created under ``item_id``: a deleted task's lease still held
    (its run may still be stopping; the new task is claimed once that run released it, or once it
    expired and was recovered), and fences past every one the id had (a holder of an old fence
    must never match the new task)."""
    held = conn.execute(
        "DELETE FROM removed_leases WHERE item_id = ? RETURNING lease_owner, lease_until, fence", (item_id,)
    ).fetchone()
    if held is not None:
        return dict(held)
    (last_fence,) = conn.execute("SELECT MAX(fence) FROM runs WHERE task_id = ?", (item_id,)).fetchone()
    return {"lease_owner": None, "lease_until": None, "fence": last_fence or 0}


def remove(conn: sqlite3.Connection, now: datetime, item_id: str) -> bool:
    deleted = conn.execute(
        "DELETE FROM tasks WHERE item_id = ? RETURNING status, spec, lease_owner, lease_until, fence", (item_id,)
    ).fetchone()
    if deleted is None:
        return False
    keep_declared_specs(conn, item_id, deleted["spec"])
    if deleted["lease_until"] is not None:
        conn.execute(
            "INSERT OR REPLACE INTO removed_leases (item_id, lease_owner, lease_until, fence) VALUES (?, ?, ?, ?)",
            (item_id, deleted["lease_owner"], deleted["lease_until"], deleted["fence"]),
        )
    if deleted["status"] == Status.RUNNING:
        conn.execute(
            "UPDATE runs SET finished_at = ?, outcome = ?, error = ? WHERE task_id = ? AND finished_at IS NULL",
            (epoch_ms(now), Outcome.CANCELLED.value, policy.REMOVED_ERROR, item_id),
        )
    return True


# -- reads ---------------------------------------------------------------------------


def get(conn: sqlite3.Connection, now: datetime, item_id: str) -> Task:
    return task_from_row(read_row(conn, item_id))


ID_BATCH = 500  # ids per query: under SQLite's limit on bound parameters (999 before 3.32)


def known_ids(conn: sqlite3.Connection, now: datetime, item_ids: list[str]) -> set[str]:
    known: set[str] = set()
    for start in range(0, len(item_ids), ID_BATCH):
        batch = item_ids[start : start + ID_BATCH]
        marks = ", ".join("?" * len(batch))
        known.update(row[0] for row in conn.execute(f"SELECT item_id FROM tasks WHERE item_id IN ({marks})", batch))
    return known


_HAS_LABEL = "EXISTS (SELECT 1 FROM json_each(tasks.labels) WHERE key = ?"
# Each selector operator: its condition on the task row and the requirement fields bound to it, in order.
LABEL_CONDITIONS = {
    LabelOperator.EQUALS: (f"{_HAS_LABEL} AND value = ?)", ("key", "value")),
    LabelOperator.NOT_EQUALS: (f"NOT {_HAS_LABEL} AND value = ?)", ("key", "value")),
    LabelOperator.EXISTS: (f"{_HAS_LABEL})", ("key",)),
    LabelOperator.ABSENT: (f"NOT {_HAS_LABEL})", ("key",)),
}


def query(conn: sqlite3.Connection, now: datetime, request: TaskQuery) -> Page:
    column = SORT_COLUMNS[request.sort_by]  # checked by the store before the transaction
    direction = "DESC" if request.descending else "ASC"
    order = f"{column} {direction}" if column == "item_id" else f"{column} {direction}, item_id {direction}"
    conditions: list[str] = []
    params: list[Any] = []
    plain = {
        "status": None if request.status is None else Status(request.status).value,
        "task_type": request.task_type,
        "node": request.node,
        "persistent": None if request.persistent is None else int(request.persistent),
        "origin_file": None if request.origin_file is None else int(request.origin_file),
    }
    for name, value in plain.items():
        if value is not None:
            conditions.append(f"{name} = ?")
            params.append(value)
    for requirement in request.label_requirements():
        condition, values = LABEL_CONDITIONS[requirement.operator]
        conditions.append(condition)
        params.extend(str(getattr(requirement, name)) for name in values)
    if request.copies_of is not None:
        conditions.append("item_id >= ? AND item_id < ?")
        params.extend(copies_range(str(request.copies_of)))
    if request.id_prefix is not None:
        conditions.append("item_id >= ? AND item_id < ?")
        params.extend(prefix_range(str(request.id_prefix)))
    # Written out, not bound: the partial indexes tasks_disabled and tasks_suspended serve a literal condition only.
    if request.enabled is not None:
        conditions.append("enabled = 1" if request.enabled else "enabled = 0")
    if request.suspended is not None:
        conditions.append("suspended_at IS NOT NULL" if request.suspended else "suspended_at IS NULL")
    where = " AND ".join(conditions) or "1"
    total = conn.execute(f"SELECT COUNT(*) FROM tasks WHERE {where}", params).fetchone()[0]
    rows = conn.execute(
        f"SELECT {TASK_WITHOUT_HISTORY}, json_extract(history, '$[0]') AS newest FROM tasks WHERE {where}"
        f" ORDER BY {order} LIMIT ? OFFSET ?",
        [*params, request.limit, request.offset],
    ).fetchall()
    return Page(items=[_listed(row) for row in rows], offset=request.offset, total=total)


def _listed(row: sqlite3.Row) -> Task:
    """A listed task, with only the newest entry of its history (``Store.query_tasks``)."""
    task = task_from_row(row, with_history=False)
    if row["newest"] is not None:
        task.history.append(json.loads(row["newest"]))
    return task


def list_runs(conn: sqlite3.Connection, now: datetime, item_id: str, offset: int, limit: int) -> Page:
    total = conn.execute("SELECT COUNT(*) FROM runs WHERE task_id = ?", (item_id,)).fetchone()[0]
    rows = conn.execute(
        "SELECT * FROM runs WHERE task_id = ? ORDER BY started_at DESC, attempt DESC LIMIT ? OFFSET ?",
        (item_id, limit, offset),
    ).fetchall()
    return Page(items=[run_from_row(row) for row in rows], offset=offset, total=total)


# A window's runs are drawn, never read: up to 8 KiB of output each, for up to 100,000 runs an
# answer, would only be decoded to be dropped, on the thread the claims share.
RUN_COLUMNS_BUT_OUTPUT = (
    "run_id, task_id, scheduled_for, attempt, node_id, fence, started_at, finished_at, outcome, exit_code,"
    " '' AS output, error, expires_at"
)


def runs_in_window(
    conn: sqlite3.Connection, now: datetime, item_ids: list[str], start: datetime, end: datetime, limit: int
) -> dict[str, list[RunRecord]]:
    """``Store.runs_in_window``: per task, two range reads of the index runs_by_task."""
    low, high = epoch_ms(start), epoch_ms(end)
    found: dict[str, list[RunRecord]] = {}
    for item_id in item_ids:
        rows = conn.execute(
            f"SELECT {RUN_COLUMNS_BUT_OUTPUT} FROM runs WHERE task_id = ? AND started_at >= ? AND started_at < ?"
            " ORDER BY started_at DESC, attempt DESC LIMIT ?",
            (item_id, low, high, limit),
        ).fetchall()
        runs = [run_from_row(row) for row in rows]
        if len(runs) < limit:
            before = conn.execute(
                f"SELECT {RUN_COLUMNS_BUT_OUTPUT} FROM runs WHERE task_id = ? AND started_at < ?"
                " ORDER BY started_at DESC, attempt DESC LIMIT 1",
                (item_id, low),
            ).fetchone()
            if before is not None and (before["finished_at"] is None or before["finished_at"] > low):
                runs.append(run_from_row(before))
        found[item_id] = runs
    return found


def get_run(conn: sqlite3.Connection, now: datetime, item_id: str, run_id: str) -> RunRecord | None:
    # The primary key starts with task_id: this reads only that task's records.
    row = conn.execute("SELECT * FROM runs WHERE task_id = ? AND run_id = ?", (item_id, run_id)).fetchone()
    return None if row is None else run_from_row(row)


def next_due(
    conn: sqlite3.Connection, now: datetime, node_id: str, task_types: Collection[str] | None
) -> datetime | None:
    # A task that still carries a lease (a cancelled run stopping) waits for its release, which
    # ``lease_expiries`` and the release itself wake the engine for.
    due_first, type_params = in_due_order(
        "next_at, item_id", f"next_at IS NOT NULL AND lease_until IS NULL AND {NODE_ELIGIBLE}", task_types
    )
    first = conn.execute(f"{due_first} LIMIT 1", {"node": node_id, **type_params}).fetchone()
    return None if first is None else from_epoch_ms(first[0])


def lease_expiries(conn: sqlite3.Connection, now: datetime) -> LeaseExpiries:
    # Every lease held: of RUNNING tasks, of tasks whose cancelled run is stopping, of deleted tasks.
    held = (
        "SELECT item_id, fence, lease_until FROM tasks WHERE lease_until IS NOT NULL AND {condition}"
        " UNION ALL SELECT item_id, fence, lease_until FROM removed_leases WHERE {condition}"
    )
    now_ms = epoch_ms(now)
    expired = tuple(expired_lease(row) for row in conn.execute(
        held.format(condition="lease_until < :now") + " ORDER BY lease_until, item_id", {"now": now_ms}
    ))
    next_until = conn.execute(
        f"SELECT MIN(lease_until) FROM ({held.format(condition='lease_until >= :now')})", {"now": now_ms}
    ).fetchone()[0]
    return LeaseExpiries(expired, None if next_until is None else from_epoch_ms(next_until + 1))


def count_waiting(conn: sqlite3.Connection, now: datetime) -> dict[Requirement, int]:
    # Two reads of the claim index alone: the many tasks any executor node may run are
    # only counted; only the others (typed, pinned) are grouped, which sorts them.
    waiting = f"{FROM_CLAIMABLE} WHERE {CLAIMABLE} AND next_at IS NOT NULL"
    anyone = "executor_type IS NULL AND node IS NULL AND nodes = '[]'"
    counts = {
        Requirement(executor_type, node, tuple(json.loads(nodes))): count
        for executor_type, node, nodes, count in conn.execute(
            f"SELECT executor_type, node, nodes, COUNT(*) {waiting} AND NOT ({anyone})"
            " GROUP BY executor_type, node, nodes"
        )
    }
    unrestricted = conn.execute(f"SELECT COUNT(*) {waiting} AND {anyone}").fetchone()[0]
    if unrestricted:
        counts[Requirement()] = unrestricted
    return counts


# -- operator actions -------------------------------------------------------------------


def cancel(conn: sqlite3.Connection, now: datetime, item_id: str) -> Task:
    return transition(conn, now, item_id, lambda task: policy.cancel(task, now))


def retry(conn: sqlite3.Connection, now: datetime, item_id: str, reset_failure_count: bool) -> Task:
    return transition(conn, now, item_id, lambda task: policy.retry(task, now, reset_failure_count))


def resume(conn: sqlite3.Connection, now: datetime, item_id: str) -> Task:
    return transition(conn, now, item_id, lambda task: policy.resume(task, now))


def run_now(conn: sqlite3.Connection, now: datetime, item_id: str) -> Task:
    return transition(conn, now, item_id, lambda task: policy.run_now(task, now))


def suspend(conn: sqlite3.Connection, now: datetime, item_id: str) -> Task:
    return transition(conn, now, item_id, lambda task: policy.suspend(task, now))


def unsuspend(conn: sqlite3.Connection, now: datetime, item_id: str) -> Task:
    return transition(conn, now, item_id, lambda task: policy.unsuspend(task, now))


def update_config(
    conn: sqlite3.Connection, now: datetime, item_id: str, max_retries: int | None, retry_delay: timedelta | None,
    clear: bool,
) -> Task:
    read_row(conn, item_id)
    updates: dict[str, Any] = {"last_modified": epoch_ms(now)}
    if clear:
        updates.update(max_retries_override=None, retry_delay_override=None)
    if max_retries is not None:
        updates["max_retries_override"] = max_retries
    if retry_delay is not None:
        updates["retry_delay_override"] = retry_delay // timedelta(milliseconds=1)
    return _update(conn, item_id, updates)


# -- nodes and retention ------------------------------------------------------------------


def heartbeat(conn: sqlite3.Connection, now: datetime, node: NodeInfo) -> None:
    conn.execute(
        "INSERT INTO nodes (node_id, executor, heartbeat, running, started_at, version, listen, task_types, stuck)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET executor = excluded.executor,"
        " heartbeat = excluded.heartbeat, running = excluded.running, started_at = excluded.started_at,"
        " version = excluded.version, listen = excluded.listen, task_types = excluded.task_types,"
        " stuck = excluded.stuck",
        (
            node.node_id, int(node.executor), epoch_ms(node.heartbeat), node.running,
            ms_or_none(node.started_at), node.version, node.listen, to_json(list(node.task_types)), node.stuck,
        ),
    )


def list_nodes(conn: sqlite3.Connection, now: datetime) -> list[NodeInfo]:
    return [node_from_row(row) for row in conn.execute("SELECT * FROM nodes ORDER BY node_id")]


def purge(
    conn: sqlite3.Connection, now: datetime, finished_before: datetime | None, keep_history: int | None,
    retention: Retention | None,
) -> PurgeCounts:
    now_ms = epoch_ms(now)
    task_terms = ["expires_at < :now"]
    run_terms = ["expires_at < :now"]
    if finished_before is not None:
        task_terms.append("last_modified < :before")
        run_terms.append("finished_at < :before")
    params = {"now": now_ms, "before": ms_or_none(finished_before)}
    if retention is not None:
        for status in (Status.COMPLETED, Status.FAILED, Status.CANCELLED):
            params[f"ttl_{status.value}"] = now_ms - retention.for_status(status) // timedelta(milliseconds=1)
            task_terms.append(
                f"(origin_file = 0 AND status = '{status.value}' AND last_modified < :ttl_{status.value})"
            )
        params["ttl_runs"] = now_ms - retention.runs // timedelta(milliseconds=1)
        run_terms.append("finished_at < :ttl_runs")
    # Never a task that still holds a lease (cancelled, its run still stopping): the next purge takes it.
    tasks = conn.execute(
        f"DELETE FROM tasks WHERE {FINAL_SQL} AND lease_until IS NULL AND ({' OR '.join(task_terms)})", params
    ).rowcount
    runs = conn.execute(
        f"DELETE FROM runs WHERE finished_at IS NOT NULL AND ({' OR '.join(run_terms)})", params
    ).rowcount
    beyond = sum(conn.execute(statement).rowcount for statement in _BEYOND_KEEP_RUNS_BY_KIND)
    if keep_history is not None:
        for item_id, history in conn.execute(
            "SELECT item_id, history FROM tasks WHERE json_array_length(history) > ?", (keep_history,)
        ).fetchall():
            conn.execute(
                "UPDATE tasks SET history = ? WHERE item_id = ?", (to_json(json.loads(history)[:keep_history]), item_id)
            )
    if tasks or runs or beyond:
        logger.info("purged %s task(s), %s run record(s) and %s beyond keepRuns", tasks, runs, beyond)
    return PurgeCounts(tasks=tasks, runs=runs, runs_beyond_keep_runs=beyond)


# The finished run records of each task past its spec's ``keepRuns`` for one kind of outcome, ranked
# newest first as ``list_runs`` shows them. One statement per kind, each walking the tasks that have
# limits, then their runs in the order of ``runs_by_task`` (CROSS JOIN keeps that nesting): the runs
# of other tasks are never read, and nothing is sorted.
_BEYOND_KEEP_RUNS = """
DELETE FROM runs WHERE (task_id, scheduled_for, attempt) IN (
    SELECT task_id, scheduled_for, attempt FROM (
        SELECT runs.task_id, runs.scheduled_for, runs.attempt, {keep} AS keep,
            ROW_NUMBER() OVER (PARTITION BY tasks.item_id ORDER BY runs.started_at DESC, runs.attempt DESC) AS position
        FROM tasks INDEXED BY tasks_keep_runs CROSS JOIN runs INDEXED BY runs_by_task ON runs.task_id = tasks.item_id
        WHERE {keeps_runs} AND {keep} IS NOT NULL AND runs.finished_at IS NOT NULL AND {outcome}
    ) WHERE position > keep
)"""
_BEYOND_KEEP_RUNS_BY_KIND = [
    _BEYOND_KEEP_RUNS.format(keep=keep, keeps_runs=KEEPS_RUNS, outcome=outcome)
    for keep, outcome in (("keep_successful", "runs.outcome = 'success'"), ("keep_failed", "runs.outcome != 'success'"))
]


# -- helpers -------------------------------------------------------------------------------


def _update(conn: sqlite3.Connection, item_id: str, updates: dict[str, Any]) -> Task:
    """Apply ``updates`` (column names chosen by this module, never by a caller)."""
    assignments = ", ".join(f"{column} = :{column}" for column in updates)
    row = conn.execute(
        f"UPDATE tasks SET {assignments} WHERE item_id = :item_id RETURNING *", {**updates, "item_id": item_id}
    ).fetchone()
    return task_from_row(row)
