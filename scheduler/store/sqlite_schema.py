"""The SQLite schema: tables, indexes, connection settings, version check, row conversion.

Times are INTEGER epoch milliseconds (exact, and the precision of BSON dates).
JSON-shaped fields (spec, labels, nodes, history, details, checkpoint) are TEXT
holding JSON. The ``meta`` table carries ``schema_version`` for later migrations.
``declarations`` (what each node declares in its files, see ``Store.declare_spec``)
came later without a version change: older nodes never read it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from datetime import datetime, timedelta
from typing import Any

from ..errors import StoreError
from ..model import NodeInfo, Outcome, RunRecord, Status, Task
from ..spec import Source
from .common import epoch_ms, from_epoch_ms, stored_spec

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5000

# The claim's eligibility apart from time, node and lease. The partial index
# below repeats it verbatim: SQLite uses a partial index only when the query's
# WHERE contains the index's WHERE terms as written.
CLAIMABLE = "enabled = 1 AND (status = 'SCHEDULED' OR (status = 'CRASHED' AND on_crash = 'resume'))"
# The planner's estimates do not favour the partial index over (status, item_id)
# or (next_at, item_id), which would walk every scheduled task per claim: the
# claim queries name it, and fail loudly if it ever stops matching.
FROM_CLAIMABLE = "FROM tasks INDEXED BY tasks_claim"

# A node may claim a task pinned to it or to nobody, whose spec's ``nodes`` is empty or names it.
NODE_ELIGIBLE = (
    "(node IS NULL OR node = :node)"
    " AND (nodes = '[]' OR EXISTS (SELECT 1 FROM json_each(tasks.nodes) WHERE value = :node))"
)

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
    last_execution_date INTEGER,
    last_finish_date INTEGER,
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
    expires_at INTEGER
);
CREATE INDEX IF NOT EXISTS tasks_claim ON tasks (next_at, item_id) WHERE {CLAIMABLE};
CREATE INDEX IF NOT EXISTS tasks_recover ON tasks (lease_until, item_id) WHERE status = 'RUNNING';
CREATE INDEX IF NOT EXISTS tasks_expiry ON tasks (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status, item_id);
CREATE INDEX IF NOT EXISTS tasks_type ON tasks (task_type, item_id);
CREATE INDEX IF NOT EXISTS tasks_next ON tasks (next_at, item_id);
CREATE INDEX IF NOT EXISTS tasks_last_execution ON tasks (last_execution_date, item_id);
CREATE INDEX IF NOT EXISTS tasks_creation ON tasks (creation_date, item_id);
CREATE INDEX IF NOT EXISTS tasks_failures ON tasks (failure_count, item_id);
CREATE INDEX IF NOT EXISTS tasks_successes ON tasks (success_count, item_id);
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
    listen TEXT NOT NULL
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
"""


def connect(path: str) -> sqlite3.Connection:
    """Open and prepare a connection: settings, schema, version check.

    Autocommit mode (``isolation_level=None``): every write transaction is an
    explicit ``BEGIN IMMEDIATE``, so a writer takes the lock before reading.
    """
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if path != ":memory:":
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"SQLite store {path}: cannot switch to WAL journal mode (got {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        _create_schema(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


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
        # Version 1 is the first: nothing to migrate yet. Later versions migrate here, in this transaction.
        for statement in DDL.split(";"):
            if statement.strip():
                conn.execute(statement)
        if found is None:
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            logger.info("created SQLite store schema version %s in %s", SCHEMA_VERSION, path)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def ms_or_none(moment: datetime | None) -> int | None:
    return None if moment is None else epoch_ms(moment)


def datetime_or_none(ms: int | None) -> datetime | None:
    return None if ms is None else from_epoch_ms(ms)


def task_from_row(row: sqlite3.Row) -> Task:
    checkpoint = row["checkpoint_data"]
    delay = row["retry_delay_override"]
    return Task(
        item_id=row["item_id"],
        spec=stored_spec(
            row["spec_hash"], lambda: json.loads(row["spec"]),
            None if row["source_path"] is None else Source(row["source_path"], row["source_line"] or 0),
        ),
        spec_hash=row["spec_hash"],
        status=Status(row["status"]),
        node=row["node"],
        next_scheduled_execution=datetime_or_none(row["next_at"]),
        scheduled_for=datetime_or_none(row["scheduled_for"]),
        attempt=row["attempt"],
        last_execution_date=datetime_or_none(row["last_execution_date"]),
        last_finish_date=datetime_or_none(row["last_finish_date"]),
        failure_count=row["failure_count"],
        success_count=row["success_count"],
        current_step=row["current_step"],
        status_details=json.loads(row["status_details"]),
        checkpoint_data=None if checkpoint is None else json.loads(checkpoint),
        last_error=row["last_error"],
        lease_owner=row["lease_owner"],
        lease_until=datetime_or_none(row["lease_until"]),
        fence=row["fence"],
        max_retries_override=row["max_retries_override"],
        retry_delay_override=None if delay is None else timedelta(milliseconds=delay),
        history=json.loads(row["history"]),
        spec_version=row["spec_version"],
        creation_date=datetime_or_none(row["creation_date"]),
        last_modified=datetime_or_none(row["last_modified"]),
        expires_at=datetime_or_none(row["expires_at"]),
    )


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
    )


def to_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
