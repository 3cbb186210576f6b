"""The SQLite schema: tables, indexes, connection settings, version check, row conversion.

Times are INTEGER epoch milliseconds (exact, and the precision of BSON dates).
JSON-shaped fields (spec, labels, nodes, history, details, checkpoint, task
types) are TEXT holding JSON. The ``meta`` table carries ``schema_version``;
opening an older file migrates it (``MIGRATIONS``), in the transaction that
checks the version, so concurrent openers migrate it once. ``declarations``
(what each node declares in its files, see ``Store.declare_spec``) came later
without a version change: older nodes never read it.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from datetime import datetime, timedelta
from typing import Any, Callable, Collection

from ..errors import StoreError
from ..model import NodeInfo, Outcome, RunRecord, Status, Task, epoch_ms, from_epoch_ms
from ..spec import Source, thaw
from .common import readable_spec

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 7
BUSY_TIMEOUT_MS = 5000

# The claim's eligibility apart from time, node and lease. The partial index
# below repeats it verbatim: SQLite uses a partial index only when the query's
# WHERE contains the index's WHERE terms as written.
# A task with dependencies is claimable once its slot passed the dependency check (``settle_dependencies``).
CLAIMABLE = (
    "enabled = 1 AND suspended_at IS NULL AND (depends_on IS NULL OR dependencies_ready = 1)"
    " AND (status = 'SCHEDULED' OR (status = 'CRASHED' AND on_crash = 'resume'))"
)
# The planner's estimates do not favour the partial index over (status, item_id)
# or (next_at, item_id), which would walk every scheduled task per claim: the
# claim queries name it, and fail loudly if it ever stops matching.
FROM_CLAIMABLE = "FROM tasks INDEXED BY tasks_claim"

# The claim index is (executor_type, next_at, item_id, node, nodes): a walk per
# executor type in due order; node and nodes (after the unique item_id, so the
# order is unchanged) let a claim test NODE_ELIGIBLE, and ``count_waiting``
# count, from the index alone.
#
# Up to this many task types, a claim walks the claim index once per executor
# type in due order and merges the walks (see ``in_due_order``); past it, one
# walk covers all the types and sorts what is due.
MAX_TYPE_WALKS = 64

# A node may claim a task pinned to it or to nobody, whose spec's ``nodes`` is empty or names it.
NODE_ELIGIBLE = (
    "(node IS NULL OR node = :node)"
    " AND (nodes = '[]' OR EXISTS (SELECT 1 FROM json_each(tasks.nodes) WHERE value = :node))"
)

# Tasks whose spec bounds their run records (``keepRuns``): the purge trims their runs. The partial
# index below repeats it verbatim, so that the purge reads only those tasks.
KEEPS_RUNS = "(keep_successful IS NOT NULL OR keep_failed IS NOT NULL)"

# A run record's identity, which its run id spells out: one b-tree, no second unique key.
RUN_KEY = "task_id = :task_id AND scheduled_for = :scheduled_for AND attempt = :attempt"

# API sort fields (``base.SORT_FIELDS``) -> columns: the only way a sort reaches SQL.
SORT_COLUMNS = {
    "nextScheduledExecution": "next_at",
    "lastExecutionDate": "last_execution_date",
    "creationDate": "creation_date",
    "taskType": "task_type",
    "status": "status",
    "itemId": "item_id",
    "failureCount": "failure_count",
    "successCount": "success_count",
}

DDL = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    item_id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    spec_version REAL NOT NULL,
    source_path TEXT,
    source_line INTEGER,
    task_type TEXT NOT NULL,
    executor_type TEXT,
    enabled INTEGER NOT NULL,
    persistent INTEGER NOT NULL,
    origin_file INTEGER NOT NULL,
    on_crash TEXT NOT NULL,
    nodes TEXT NOT NULL,
    labels TEXT NOT NULL,
    node TEXT,
    status TEXT NOT NULL,
    next_at INTEGER,
    scheduled_for INTEGER,
    attempt INTEGER NOT NULL,
    interruptions INTEGER NOT NULL DEFAULT 0, -- runs of the slot handed back at a node's shutdown
    last_execution_date INTEGER,
    last_finish_date INTEGER,
    last_success_date INTEGER,
    failure_count INTEGER NOT NULL,
    success_count INTEGER NOT NULL,
    current_step TEXT,
    status_details TEXT NOT NULL,
    checkpoint_data TEXT,
    last_error TEXT,
    lease_owner TEXT,
    lease_until INTEGER,
    fence INTEGER NOT NULL,
    max_retries_override INTEGER,
    retry_delay_override INTEGER,
    history TEXT NOT NULL,
    creation_date INTEGER NOT NULL,
    last_modified INTEGER NOT NULL,
    expires_at INTEGER,
    depends_on TEXT, -- the spec's dependsOn (JSON), NULL without dependencies
    waiting_on TEXT, -- JSON list of the dependencies a WAITING task waits for
    dependencies_ready INTEGER NOT NULL DEFAULT 0, -- its slot passed the dependency check
    dependencies_seen TEXT, -- JSON: dependency -> the success (ms) its last check consumed
    suspended_at INTEGER,
    keep_successful INTEGER,
    keep_failed INTEGER
);
CREATE INDEX IF NOT EXISTS tasks_dependents ON tasks (next_at) WHERE depends_on IS NOT NULL AND dependencies_ready = 0;
CREATE INDEX IF NOT EXISTS tasks_claim ON tasks (executor_type, next_at, item_id, node, nodes) WHERE {CLAIMABLE};
-- Every lease held: RUNNING tasks, and tasks cancelled (then maybe retried) whose run is still stopping.
CREATE INDEX IF NOT EXISTS tasks_leases ON tasks (lease_until, item_id) WHERE lease_until IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_expiry ON tasks (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status, item_id);
CREATE INDEX IF NOT EXISTS tasks_type ON tasks (task_type, item_id);
CREATE INDEX IF NOT EXISTS tasks_next ON tasks (next_at, item_id);
CREATE INDEX IF NOT EXISTS tasks_last_execution ON tasks (last_execution_date, item_id);
CREATE INDEX IF NOT EXISTS tasks_creation ON tasks (creation_date, item_id);
CREATE INDEX IF NOT EXISTS tasks_failures ON tasks (failure_count, item_id);
CREATE INDEX IF NOT EXISTS tasks_successes ON tasks (success_count, item_id);
CREATE INDEX IF NOT EXISTS tasks_keep_runs ON tasks (item_id) WHERE {KEEPS_RUNS};
-- Held tasks, few as a rule: the metrics count them at every scrape without reading every task.
CREATE INDEX IF NOT EXISTS tasks_disabled ON tasks (item_id) WHERE enabled = 0;
CREATE INDEX IF NOT EXISTS tasks_suspended ON tasks (item_id) WHERE suspended_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    scheduled_for INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    fence INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    outcome TEXT,
    exit_code INTEGER,
    output TEXT NOT NULL DEFAULT '',
    error TEXT,
    expires_at INTEGER,
    PRIMARY KEY (task_id, scheduled_for, attempt)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS runs_by_task ON runs (task_id, started_at DESC, attempt DESC);
CREATE INDEX IF NOT EXISTS runs_expiry ON runs (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY,
    executor INTEGER NOT NULL,
    heartbeat INTEGER NOT NULL,
    running INTEGER NOT NULL,
    started_at INTEGER,
    version TEXT NOT NULL,
    listen TEXT NOT NULL,
    task_types TEXT NOT NULL DEFAULT '[]',
    stuck INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS declarations (
    item_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    spec TEXT, -- NULL while it is the spec the task holds, which the task row has (sqlite_declarations)
    spec_hash TEXT NOT NULL,
    since INTEGER NOT NULL,
    declared_at INTEGER NOT NULL,
    source_path TEXT,
    source_line INTEGER,
    pinned TEXT,
    PRIMARY KEY (item_id, node_id)
);
CREATE INDEX IF NOT EXISTS declarations_by_node ON declarations (node_id, item_id);
-- The lease a task still held when it was deleted: its run may still be stopping. A task created
-- again under that id takes the lease over (sqlite_tasks.remove, upsert), so that it cannot start
-- beside that run, and its fences go on from the old ones.
CREATE TABLE IF NOT EXISTS removed_leases (
    item_id TEXT PRIMARY KEY,
    lease_owner TEXT NOT NULL,
    lease_until INTEGER NOT NULL,
    fence INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS removed_leases_expiry ON removed_leases (lease_until, item_id);
"""

# Version n -> n + 1, run in order before ``DDL`` (which then creates what is new).
MIGRATIONS = {
    # 1 -> 2: the executor type a node needs to claim a task (null with a run: section,
    # the spec's type otherwise; see FILL_EXECUTOR_TYPES), first in the claim index;
    # the types each node runs.
    1: """
ALTER TABLE tasks ADD COLUMN executor_type TEXT;
DROP INDEX IF EXISTS tasks_claim;
ALTER TABLE nodes ADD COLUMN task_types TEXT NOT NULL DEFAULT '[]'
""",
    # 2 -> 3: each node's count of stopped runs whose code has not ended.
    2: """
ALTER TABLE nodes ADD COLUMN stuck INTEGER NOT NULL DEFAULT 0
""",
    # 3 -> 4: when each task last succeeded (the metric alerts are written on); dependencies, which
    # the claim index's condition now names (DDL creates it again).
    3: """
ALTER TABLE tasks ADD COLUMN last_success_date INTEGER;
ALTER TABLE tasks ADD COLUMN depends_on TEXT;
ALTER TABLE tasks ADD COLUMN waiting_on TEXT;
ALTER TABLE tasks ADD COLUMN dependencies_ready INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN dependencies_seen TEXT;
DROP INDEX IF EXISTS tasks_claim
""",
    # 4 -> 5: an operator's suspension, which claims skip: it is part of CLAIMABLE, so the
    # claim index is built again with it (a scheduler of version 4 still running on the file
    # then finds no claim index for its own condition, and its claims fail until it is
    # upgraded, rather than run suspended tasks). The spec's keepRuns limits, for the purge.
    4: """
ALTER TABLE tasks ADD COLUMN suspended_at INTEGER;
ALTER TABLE tasks ADD COLUMN keep_successful INTEGER;
ALTER TABLE tasks ADD COLUMN keep_failed INTEGER;
DROP INDEX IF EXISTS tasks_claim
""",
    # 5 -> 6: how many runs of the current slot nodes handed back at shutdown, which use no attempt.
    5: """
ALTER TABLE tasks ADD COLUMN interruptions INTEGER NOT NULL DEFAULT 0
""",
    # 6 -> 7: claims wait until a lease is released, not merely expired, so every lease held is
    # indexed (not only those of RUNNING tasks); the leases of deleted tasks (DDL creates both).
    6: """
DROP INDEX IF EXISTS tasks_recover
""",
}

# Run at every open, after any migration: a scheduler of version 1 still running on
# the file during an upgrade writes tasks without their executor type (~50 ms per
# 100,000 tasks).
FILL_EXECUTOR_TYPES = (
    "UPDATE tasks SET executor_type = task_type WHERE executor_type IS NULL AND json_extract(spec, '$.run') IS NULL"
)


def connect(path: str) -> sqlite3.Connection:
    """Open and prepare a connection: settings, schema, version check.

    Autocommit mode (``isolation_level=None``): every write transaction is an
    explicit ``BEGIN IMMEDIATE``, so a writer takes the lock before reading.
    """
    if path != ":memory:":
        _create_private(path)
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if path != ":memory:":
            mode = _switch_to_wal(conn)
            if mode.lower() != "wal":
                raise StoreError(f"SQLite store {path}: cannot switch to WAL journal mode (got {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        _create_schema(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _create_private(path: str) -> None:
    """Create the store file readable by its owner only, unless it exists.

    The store holds every task's parameters, checkpoints and run output. SQLite
    would create it with the process's umask (0644 as a rule) and gives its
    -wal and -shm files the mode of the database file.
    """
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError:
        pass  # a missing directory, no permission: opening it says why, in SQLite's words


def _switch_to_wal(conn: sqlite3.Connection) -> str:
    """``PRAGMA journal_mode = WAL``, waiting for the lock up to the busy timeout like any write.

    Changing the journal mode of a fresh file needs an exclusive lock, and SQLite
    answers "database is locked" at once, without calling the busy handler, when
    another connection holds a lock on the file: several nodes opening one new
    file together failed about once in twenty starts. Retried here instead.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = 0.001
    while True:
        try:
            return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(2 * pause, 0.05)


def _create_schema(conn: sqlite3.Connection, path: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        found = None
        if has_meta:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            found = None if row is None else int(row[0])
        if found is not None and found > SCHEMA_VERSION:
            raise StoreError(
                f"SQLite store {path} has schema version {found}, newer than the {SCHEMA_VERSION} this "
                "scheduler supports: upgrade the scheduler (or point it at another database)"
            )
        for version in range(found or SCHEMA_VERSION, SCHEMA_VERSION):
            _execute_script(conn, MIGRATIONS[version])
        _execute_script(conn, DDL)
        conn.execute(FILL_EXECUTOR_TYPES)
        if found is None:
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            # A node's in-memory store is created at every start: nothing an operator needs to read.
            level = logging.DEBUG if path == ":memory:" else logging.INFO
            logger.log(level, "created SQLite store schema version %s in %s", SCHEMA_VERSION, path)
        elif found < SCHEMA_VERSION:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            logger.info("migrated SQLite store %s from schema version %s to %s", path, found, SCHEMA_VERSION)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _execute_script(conn: sqlite3.Connection, script: str) -> None:
    # One statement at a time: ``executescript`` would commit the open transaction first.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def in_due_order(
    columns: str, condition: str, task_types: Collection[str] | None
) -> tuple[str, dict[str, str]]:
    """A SELECT of ``columns`` (which include ``next_at`` and ``item_id``) of claimable
    tasks matching ``condition`` that a node running ``task_types`` (None: every
    type) may claim, ordered by ``next_at, item_id``; and its type parameters.

    Tasks with a run: section (executor type null) and each type are one walk of
    the claim index each, already in due order, merged by the compound SELECT:
    a claim reads at most its limit per walk, and never the due tasks of types
    it cannot run, however many pile up waiting for their node. ``None`` (tests,
    tools) reads and sorts every matching task.
    """
    where = f"{FROM_CLAIMABLE} WHERE {CLAIMABLE} AND {condition}"
    if task_types is None:
        return f"SELECT {columns} {where} ORDER BY next_at, item_id", {}
    types = sorted(set(task_types))
    walks = [f"SELECT {columns} {where} AND executor_type IS NULL"]
    params: dict[str, str] = {}
    if len(types) <= MAX_TYPE_WALKS:
        for index, task_type in enumerate(types):
            walks.append(f"SELECT {columns} {where} AND executor_type = :type_{index}")
            params[f"type_{index}"] = task_type
    else:
        walks.append(f"SELECT {columns} {where} AND executor_type IN (SELECT value FROM json_each(:types))")
        params["types"] = to_json(types)
    return " UNION ALL ".join(walks) + " ORDER BY next_at, item_id", params


def ms_or_none(moment: datetime | None) -> int | None:
    return None if moment is None else epoch_ms(moment)


def datetime_or_none(ms: int | None) -> datetime | None:
    return None if ms is None else from_epoch_ms(ms)


# The columns ``task_from_row(with_history=False)`` reads. Claims and listings select these: the
# history (up to HISTORY_LIMIT entries, kilobytes a task) cost a claim about 10 us per task to return.
TASK_WITHOUT_HISTORY = (
    "item_id, spec, spec_hash, spec_version, source_path, source_line, status, node, next_at, scheduled_for,"
    " attempt, interruptions, last_execution_date, last_finish_date, last_success_date, failure_count,"
    " success_count, current_step, status_details, checkpoint_data, last_error, lease_owner, lease_until, fence,"
    " max_retries_override, retry_delay_override, creation_date, last_modified, expires_at, waiting_on,"
    " dependencies_ready, dependencies_seen, suspended_at"
)


def task_from_row(row: sqlite3.Row, *, with_history: bool = True) -> Task:
    """The task of a row; without its history for a claim, which never reads it (a claim is
    the hottest read: decoding twenty entries per run was most of what it allocated)."""
    # A dict first: ``sqlite3.Row`` finds a column by comparing its name with each column's in turn,
    # and 35 such lookups were half of what this function cost a claim.
    row = dict(zip(row.keys(), row))
    checkpoint = row["checkpoint_data"]
    delay = row["retry_delay_override"]
    return Task(
        item_id=row["item_id"],
        spec=readable_spec(
            row["item_id"], row["spec_hash"], lambda: json.loads(row["spec"]),
            None if row["source_path"] is None else Source(row["source_path"], row["source_line"] or 0),
        ),
        spec_hash=row["spec_hash"],
        status=Status(row["status"]),
        node=row["node"],
        next_scheduled_execution=datetime_or_none(row["next_at"]),
        scheduled_for=datetime_or_none(row["scheduled_for"]),
        attempt=row["attempt"],
        interruptions=row["interruptions"],
        last_execution_date=datetime_or_none(row["last_execution_date"]),
        last_finish_date=datetime_or_none(row["last_finish_date"]),
        last_success_date=datetime_or_none(row["last_success_date"]),
        failure_count=row["failure_count"],
        success_count=row["success_count"],
        current_step=row["current_step"],
        status_details=_json_object(row["status_details"]),
        checkpoint_data=None if checkpoint is None else json.loads(checkpoint),
        last_error=row["last_error"],
        lease_owner=row["lease_owner"],
        lease_until=datetime_or_none(row["lease_until"]),
        fence=row["fence"],
        max_retries_override=row["max_retries_override"],
        retry_delay_override=None if delay is None else timedelta(milliseconds=delay),
        history=json.loads(row["history"]) if with_history else [],
        spec_version=row["spec_version"],
        creation_date=datetime_or_none(row["creation_date"]),
        last_modified=datetime_or_none(row["last_modified"]),
        expires_at=datetime_or_none(row["expires_at"]),
        waiting_on=tuple(json.loads(row["waiting_on"])) if row["waiting_on"] else (),
        dependencies_ready=bool(row["dependencies_ready"]),
        dependencies_seen={
            item_id: datetime_or_none(ms) for item_id, ms in _json_object(row["dependencies_seen"]).items()
        },
        suspended_at=datetime_or_none(row["suspended_at"]),
    )


def _json_object(text: str | None) -> dict[str, Any]:
    """A stored JSON object; most are empty, and those need no decoder."""
    return {} if not text or text == "{}" else json.loads(text)


def run_from_row(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        run_id=row["run_id"],
        task_id=row["task_id"],
        scheduled_for=from_epoch_ms(row["scheduled_for"]),
        attempt=row["attempt"],
        node_id=row["node_id"],
        fence=row["fence"],
        started_at=from_epoch_ms(row["started_at"]),
        finished_at=datetime_or_none(row["finished_at"]),
        outcome=None if row["outcome"] is None else Outcome(row["outcome"]),
        exit_code=row["exit_code"],
        output=row["output"],
        error=row["error"],
        expires_at=datetime_or_none(row["expires_at"]),
    )


def node_from_row(row: sqlite3.Row) -> NodeInfo:
    return NodeInfo(
        node_id=row["node_id"],
        executor=bool(row["executor"]),
        heartbeat=from_epoch_ms(row["heartbeat"]),
        running=row["running"],
        started_at=datetime_or_none(row["started_at"]),
        version=row["version"],
        listen=row["listen"],
        task_types=tuple(json.loads(row["task_types"])),
        stuck=row["stuck"],
    )


def to_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _json_or_none(value: Any) -> str | None:
    return None if value is None else to_json(thaw(value))


# ``Task`` attributes a ``policy.Change`` may write -> (column, encoder): the inverse of ``task_from_row``.
TASK_COLUMNS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "status": ("status", lambda status: Status(status).value),
    "next_scheduled_execution": ("next_at", ms_or_none),
    "scheduled_for": ("scheduled_for", ms_or_none),
    "attempt": ("attempt", int),
    "interruptions": ("interruptions", int),
    "failure_count": ("failure_count", int),
    "success_count": ("success_count", int),
    "last_error": ("last_error", lambda error: error),
    "expires_at": ("expires_at", ms_or_none),
    "last_execution_date": ("last_execution_date", ms_or_none),
    "last_finish_date": ("last_finish_date", ms_or_none),
    "last_success_date": ("last_success_date", ms_or_none),
    "waiting_on": ("waiting_on", lambda ids: to_json(list(ids)) if ids else None),
    "dependencies_ready": ("dependencies_ready", int),
    "dependencies_seen": ("dependencies_seen", lambda seen: to_json({k: ms_or_none(v) for k, v in seen.items()})),
    "lease_owner": ("lease_owner", lambda owner: owner),
    "lease_until": ("lease_until", ms_or_none),
    "checkpoint_data": ("checkpoint_data", _json_or_none),
    "status_details": ("status_details", lambda details: to_json(thaw(details))),
    "suspended_at": ("suspended_at", ms_or_none),
}
