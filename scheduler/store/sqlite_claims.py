"""The claim protocol on SQLite: claim, renew, progress, finish, recover, abandon.

Each function runs inside the one ``BEGIN IMMEDIATE`` transaction that
``SQLiteStore`` opened, with ``now`` read from the store's clock after the
write lock was taken. Holding the lock makes select-then-update atomic; every
update still carries its compare-and-set condition (fence, owner, status) so
that each statement states the rule it enforces.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from datetime import datetime, timedelta
from typing import Collection

from ..errors import StoreError
from ..model import Claim, Outcome, RunResult, Status, Task, Transition
from .common import (
    crash_details,
    epoch_ms,
    from_epoch_ms,
    history_entry,
    lease_expired_error,
    make_run_id,
    push_history,
)
from .sqlite_schema import (
    NODE_ELIGIBLE, RUN_KEY, datetime_or_none, in_due_order, ms_or_none, task_from_row, to_json,
)

logger = logging.getLogger(__name__)

FENCED = "item_id = :item_id AND lease_owner = :owner AND fence = :fence AND status = 'RUNNING'"


def next_free_attempt(conn: sqlite3.Connection, item_id: str, scheduled_ms: int, attempt: int) -> int:
    """``attempt``, or the first attempt past the run records of that slot."""
    recorded = conn.execute(
        "SELECT MAX(attempt) FROM runs WHERE task_id = ? AND scheduled_for = ?", (item_id, scheduled_ms)
    ).fetchone()[0]
    return attempt if recorded is None else max(attempt, recorded + 1)


def run_key(item_id: str, scheduled_ms: int, attempt: int) -> dict[str, object]:
    return {"task_id": item_id, "scheduled_for": scheduled_ms, "attempt": attempt}


def close_run(conn: sqlite3.Connection, key: dict[str, object], now_ms: int, outcome: Outcome, error: str) -> None:
    """End a run record its node will never finish (crashed, cancelled)."""
    conn.execute(
        f"UPDATE runs SET finished_at = :now, outcome = :outcome, error = :error WHERE {RUN_KEY} AND finished_at IS NULL",
        {**key, "now": now_ms, "outcome": outcome.value, "error": error},
    )


def claim(
    conn: sqlite3.Connection, now: datetime, node_id: str, limit: int, lease_duration: timedelta,
    horizon: timedelta, task_types: Collection[str] | None,
) -> list[Claim]:
    now_ms = epoch_ms(now)
    until = now + lease_duration
    due_first, type_params = in_due_order(
        "item_id, fence, scheduled_for, attempt, next_at",
        f"next_at <= :horizon AND {NODE_ELIGIBLE} AND (lease_until IS NULL OR lease_until < :now)",
        task_types,
    )
    due = conn.execute(
        f"{due_first} LIMIT :limit",
        {
            "now": now_ms, "horizon": now_ms + horizon // timedelta(milliseconds=1), "node": node_id, "limit": limit,
            **type_params,
        },
    ).fetchall()
    claims = []
    for item_id, fence, scheduled_ms, attempt, next_ms in due:
        scheduled_for = from_epoch_ms(scheduled_ms)
        start_ms = max(now_ms, next_ms)  # claimed ahead: the run starts when due
        run_id = make_run_id(item_id, scheduled_for, attempt)
        inserted = conn.execute(
            "INSERT INTO runs (run_id, task_id, scheduled_for, attempt, node_id, fence, started_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (run_id, item_id, scheduled_ms, attempt, node_id, fence + 1, start_ms),
        ).rowcount
        if not inserted:
            # This slot already ran as this attempt (a task deleted and recreated, a
            # confused node): never start it twice; the next claim takes the next attempt.
            moved = next_free_attempt(conn, item_id, scheduled_ms, attempt)
            conn.execute("UPDATE tasks SET attempt = ? WHERE item_id = ?", (moved, item_id))
            logger.warning("run %s already exists: %s moves to attempt %s", run_id, item_id, moved)
            continue
        row = conn.execute(
            "UPDATE tasks SET status = 'RUNNING', lease_owner = ?, lease_until = ?, fence = fence + 1,"
            " last_execution_date = ?, last_modified = ? WHERE item_id = ? AND fence = ? RETURNING *",
            (node_id, epoch_ms(until), start_ms, now_ms, item_id, fence),
        ).fetchone()
        if row is None:  # impossible while this transaction holds the write lock
            raise StoreError(f"claim of {item_id} lost its compare-and-set inside the write lock")
        claims.append(
            Claim(
                task=task_from_row(row), node_id=node_id, fence=fence + 1, run_id=run_id,
                scheduled_for=scheduled_for, attempt=attempt, started_at=from_epoch_ms(start_ms), lease_until=until,
            )
        )
    return claims


def renew(
    conn: sqlite3.Connection, now: datetime, node_id: str, claims: list[Claim], lease_duration: timedelta
) -> set[str]:
    until = epoch_ms(now + lease_duration)
    lost = set()
    for held in claims:
        renewed = conn.execute(
            f"UPDATE tasks SET lease_until = :until WHERE {FENCED}",
            {"until": until, "item_id": held.item_id, "owner": node_id, "fence": held.fence},
        ).rowcount
        if not renewed:
            lost.add(held.item_id)
    return lost


def save_progress(conn: sqlite3.Connection, now: datetime, held: Claim, updates: dict[str, object]) -> bool:
    """``updates`` maps column names (chosen by the store, never by a caller) to values."""
    updates = {**updates, "last_modified": epoch_ms(now)}
    assignments = ", ".join(f"{column} = :{column}" for column in updates)
    return bool(
        conn.execute(
            f"UPDATE tasks SET {assignments} WHERE {FENCED}",
            {**updates, "item_id": held.item_id, "owner": held.node_id, "fence": held.fence},
        ).rowcount
    )


def finish(conn: sqlite3.Connection, now: datetime, held: Claim, result: RunResult, transition: Transition) -> bool:
    fence = {"item_id": held.item_id, "owner": held.node_id, "fence": held.fence}
    row = conn.execute(f"SELECT history FROM tasks WHERE {FENCED}", fence).fetchone()
    if row is None:
        return False
    entry = history_entry(
        run_id=held.run_id, scheduled_for=held.scheduled_for, attempt=held.attempt, node=held.node_id,
        started_at=held.started_at, finished_at=result.finished_at, outcome=result.outcome,
        exit_code=result.exit_code, error=result.error,
    )
    clear_checkpoint = ", checkpoint_data = NULL" if result.outcome == Outcome.SUCCESS else ""
    conn.execute(
        "UPDATE tasks SET status = :status, next_at = :next_at, scheduled_for = :scheduled_for,"
        " attempt = :attempt, failure_count = :failures, success_count = :successes, last_error = :error,"
        " expires_at = :expires_at, last_finish_date = :finished, lease_owner = NULL, lease_until = NULL,"
        f" history = :history, last_modified = :now{clear_checkpoint} WHERE {FENCED}",
        {
            **fence,
            "status": transition.status.value,
            "next_at": ms_or_none(transition.next_scheduled_execution),
            "scheduled_for": ms_or_none(transition.scheduled_for),
            "attempt": transition.attempt,
            "failures": transition.failure_count,
            "successes": transition.success_count,
            "error": transition.last_error,
            "expires_at": ms_or_none(transition.expires_at),
            "finished": epoch_ms(result.finished_at),
            "history": to_json(push_history(json.loads(row["history"]), entry)),
            "now": epoch_ms(now),
        },
    )
    conn.execute(
        "UPDATE runs SET finished_at = :finished, outcome = :outcome, exit_code = :exit_code, output = :output,"
        f" error = :error, expires_at = :expires_at WHERE {RUN_KEY}",
        {
            "finished": epoch_ms(result.finished_at), "outcome": result.outcome.value,
            "exit_code": result.exit_code, "output": result.output, "error": result.error,
            "expires_at": ms_or_none(transition.run_expires_at),
            **run_key(held.item_id, epoch_ms(held.scheduled_for), held.attempt),
        },
    )
    return True


def recover(conn: sqlite3.Connection, now: datetime, node_id: str) -> list[Task]:
    expired = conn.execute(
        "SELECT * FROM tasks WHERE status = 'RUNNING' AND lease_until < ? ORDER BY lease_until, item_id",
        (epoch_ms(now),),
    ).fetchall()
    recovered = []
    for row in expired:
        error = lease_expired_error(row["lease_owner"], from_epoch_ms(row["lease_until"]))
        task = mark_crashed(conn, now, row, row["lease_owner"], error, recovered_by=node_id)
        if task is not None:
            recovered.append(task)
    if recovered:
        logger.warning(
            "node %s recovered %s task(s) with expired leases: %s",
            node_id, len(recovered), ", ".join(task.item_id for task in recovered),
        )
    return recovered


def abandon(conn: sqlite3.Connection, now: datetime, claims: list[Claim], reason: str) -> list[str]:
    marked = []
    for held in claims:
        row = conn.execute(
            f"SELECT * FROM tasks WHERE {FENCED}",
            {"item_id": held.item_id, "owner": held.node_id, "fence": held.fence},
        ).fetchone()
        if row is not None and mark_crashed(conn, now, row, held.node_id, reason, recovered_by=held.node_id):
            marked.append(held.item_id)
    return marked


def mark_crashed(
    conn: sqlite3.Connection, now: datetime, row: sqlite3.Row, crashed_node: str, error: str, *, recovered_by: str
) -> Task | None:
    """RUNNING -> CRASHED under the fence read in ``row``; closes its run record."""
    now_ms = epoch_ms(now)
    scheduled_for = from_epoch_ms(row["scheduled_for"])
    run_id = make_run_id(row["item_id"], scheduled_for, row["attempt"])
    entry = history_entry(
        run_id=run_id, scheduled_for=scheduled_for, attempt=row["attempt"], node=crashed_node,
        started_at=datetime_or_none(row["last_execution_date"]), finished_at=now, outcome=Outcome.CRASHED,
        error=error, recoveredBy=recovered_by,
    )
    updated = conn.execute(
        "UPDATE tasks SET status = ?, last_error = ?, status_details = ?, history = ?,"
        " attempt = attempt + 1, next_at = ?, lease_owner = NULL, lease_until = NULL, last_modified = ?"
        " WHERE item_id = ? AND fence = ? AND status = 'RUNNING' RETURNING *",
        (
            Status.CRASHED.value, error,
            to_json(crash_details(json.loads(row["status_details"]), now, crashed_node)),
            to_json(push_history(json.loads(row["history"]), entry)), now_ms, now_ms,
            row["item_id"], row["fence"],
        ),
    ).fetchone()
    if updated is None:
        return None
    close_run(conn, run_key(row["item_id"], row["scheduled_for"], row["attempt"]), now_ms, Outcome.CRASHED, error)
    return task_from_row(updated)
