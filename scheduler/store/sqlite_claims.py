"""The claim protocol on SQLite: claim, renew, progress, and the one way a task's state changes.

Each function runs inside the one ``BEGIN IMMEDIATE`` transaction that
``SQLiteStore`` opened, with ``now`` read from the store's clock after the
write lock was taken. Holding the lock makes select-then-update atomic; every
update still carries its compare-and-set condition (fence, owner, status) so
that each statement states the rule it enforces.

Every transition (finish, crash, release, the operator actions) is decided by
``scheduler.policy`` and written by ``apply_change``: this module decides nothing.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from datetime import datetime, timedelta
from typing import Any, Callable, Collection, Iterator, Mapping, TypeVar

from .. import policy
from ..errors import StoreError, TaskNotFound
from ..model import (
    HISTORY_LIMIT, Claim, DependencyState, ExpiredLease, Retention, RunResult, Settled, Status, Task, Transition,
    epoch_ms, from_epoch_ms, run_id_at,
)
from ..policy import Change
from ..spec import Source
from .common import report_recovery, stored_spec
from .sqlite_schema import (
    NODE_ELIGIBLE, RUN_KEY, TASK_COLUMNS, TASK_WITHOUT_HISTORY, datetime_or_none, in_due_order, task_from_row,
    to_json,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Tasks claimed per pair of statements: 7 parameters a row, well within SQLite's 32,766 per statement.
CLAIM_ROWS_PER_STATEMENT = 500

FENCED = "item_id = :item_id AND lease_owner = :owner AND fence = :fence AND status = 'RUNNING'"
HELD = "item_id = :item_id AND lease_owner = :owner AND fence = :fence"

# The history with :history_entry first, bounded to HISTORY_LIMIT entries, in SQL: decoding and encoding
# twenty entries in Python took about 0.1 ms of the store thread per finish, holding the GIL the event
# loop needs. Every stored history is a JSON array this module wrote, without spaces; pushes only ever
# add one entry, so dropping the one past the limit keeps the bound.
PUSH_HISTORY = (
    "history = json_remove(CASE WHEN json_array_length(history) = 0 THEN json_array(json(:history_entry))"
    f" ELSE '[' || :history_entry || ',' || substr(history, 2) END, '$[{HISTORY_LIMIT}]')"
)


# ``next_free_attempt`` inside the UPDATE that sets the attempt: one statement less per finished run.
FREE_ATTEMPT = (
    "attempt = MAX(:set_attempt, COALESCE((SELECT MAX(attempt) FROM runs"
    " WHERE task_id = :item_id AND scheduled_for = :attempt_slot) + 1, 0))"
)


def fence_of(held: Claim) -> dict[str, object]:
    return {"item_id": held.item_id, "owner": held.node_id, "fence": held.fence}


def next_free_attempt(conn: sqlite3.Connection, item_id: str, scheduled_ms: int, attempt: int) -> int:
    """``attempt``, or the first attempt past the run records of that slot."""
    recorded = conn.execute(
        "SELECT MAX(attempt) FROM runs WHERE task_id = ? AND scheduled_for = ?", (item_id, scheduled_ms)
    ).fetchone()[0]
    return attempt if recorded is None else max(attempt, recorded + 1)


def run_key(item_id: str, scheduled_ms: int, attempt: int) -> dict[str, object]:
    return {"task_id": item_id, "scheduled_for": scheduled_ms, "attempt": attempt}


# -- the one write of a transition ---------------------------------------------------------------


def apply_change(
    conn: sqlite3.Connection, now: datetime, row: Mapping[str, Any], change: Change, where: str,
    params: dict[str, Any],
) -> bool:
    """Write ``change`` to the task ``row`` was read from, where ``where`` still holds.

    ``row`` must hold ``item_id`` and ``scheduled_for``. False (and nothing
    written) when the condition no longer holds.
    """
    item_id = row["item_id"]
    values = {}
    for name, value in change.fields.items():
        column, encode = TASK_COLUMNS[name]
        values[column] = encode(value)
    slot = values.get("scheduled_for", row["scheduled_for"])
    if slot != row["scheduled_for"]:
        values["dependencies_ready"] = 0  # another slot: its dependencies are checked again
        values.setdefault("interruptions", 0)  # and none of its runs was handed back yet
    values["last_modified"] = epoch_ms(now)
    assignments = [f"{column} = :set_{column}" for column in values]
    values = {f"set_{column}": value for column, value in values.items()}
    if "set_attempt" in values and change.status in (Status.SCHEDULED, Status.CRASHED) and slot is not None:
        # Never point a run still to come at a run record that exists: past the slot's recorded attempts.
        assignments[list(values).index("set_attempt")] = FREE_ATTEMPT
        values["attempt_slot"] = slot
    if change.history is not None:
        assignments.append(PUSH_HISTORY)
        values["history_entry"] = to_json(dict(change.history))
    updated = conn.execute(
        f"UPDATE tasks SET {', '.join(assignments)} WHERE item_id = :item_id AND {where}",
        {**values, **params, "item_id": item_id},
    ).rowcount
    if not updated:
        return False
    end = change.run_end
    if end is not None:
        key = run_key(item_id, epoch_ms(end.scheduled_for), end.attempt)
        if end.outcome is None:  # the run never started: its attempt is free again
            conn.execute(f"DELETE FROM runs WHERE {RUN_KEY} AND finished_at IS NULL", key)
        else:
            output = "" if end.output is None else ", output = :output"
            conn.execute(
                "UPDATE runs SET finished_at = :finished, outcome = :outcome, error = :error,"
                " started_at = COALESCE(:started, started_at),"
                f" exit_code = :exit_code, expires_at = :expires_at{output} WHERE {RUN_KEY} AND finished_at IS NULL",
                {
                    **key, "finished": epoch_ms(end.finished_at or now), "outcome": end.outcome.value,
                    "error": end.error, "exit_code": end.exit_code, "output": end.output,
                    "started": None if end.started_at is None else epoch_ms(end.started_at),
                    "expires_at": None if end.expires_at is None else epoch_ms(end.expires_at),
                },
            )
    return True


def transition(
    conn: sqlite3.Connection, now: datetime, item_id: str, decide: Callable[[Task], Change]
) -> Task:
    """Read a task, let the policy ``decide`` (or refuse), apply; the task as it now is."""
    row = read_row(conn, item_id)
    change = decide(task_from_row(row))
    # Inside the write lock the state read cannot change; the condition still states the rule.
    if not apply_change(conn, now, row, change, "fence = :fence AND status = :status",
                        {"fence": row["fence"], "status": row["status"]}):
        raise StoreError(f"task {item_id} changed inside the write lock")
    return task_from_row(read_row(conn, item_id))


def read_row(conn: sqlite3.Connection, item_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM tasks WHERE item_id = ?", (item_id,)).fetchone()
    if row is None:
        raise TaskNotFound(item_id)
    return row


# -- the claim protocol --------------------------------------------------------------------------


def claim(
    conn: sqlite3.Connection, now: datetime, node_id: str, limit: int, lease_duration: timedelta,
    horizon: timedelta, task_types: Collection[str] | None,
) -> list[Claim]:
    now_ms = epoch_ms(now)
    until = now + lease_duration
    due_first, type_params = in_due_order(
        "item_id, fence, scheduled_for, attempt, next_at, last_execution_date, spec_hash, spec, source_path,"
        " source_line",
        # Only a released lease frees a task: one that expired is recovered first, after a grace.
        f"next_at <= :horizon AND {NODE_ELIGIBLE} AND lease_until IS NULL",
        task_types,
    )
    due = conn.execute(
        f"{due_first} LIMIT :limit",
        {
            "now": now_ms, "horizon": now_ms + horizon // timedelta(milliseconds=1), "node": node_id, "limit": limit,
            **type_params,
        },
    ).fetchall()
    due = [row for row in due if _spec_usable(conn, now, row)]
    claims = []
    for batch in _chunks(due, CLAIM_ROWS_PER_STATEMENT):
        claims += _claim_rows(conn, now_ms, node_id, epoch_ms(until), batch)
    return claims


def _claim_rows(
    conn: sqlite3.Connection, now_ms: int, node_id: str, until_ms: int, due: list[sqlite3.Row]
) -> list[Claim]:
    """Claim the ``due`` tasks in two statements, whatever their number: their run records, then their rows."""
    runs = {}  # run id -> (due row, planned start)
    for row in due:
        item_id, fence, scheduled_ms, attempt, next_ms = row[:5]
        start_ms = max(now_ms, next_ms)  # claimed ahead: the run starts when due
        runs[run_id_at(item_id, scheduled_ms, attempt)] = (row, start_ms)
    inserted = {
        run_id for (run_id,) in conn.execute(
            "INSERT INTO runs (run_id, task_id, scheduled_for, attempt, node_id, fence, started_at) VALUES "
            + ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(runs)) + " ON CONFLICT DO NOTHING RETURNING run_id",
            [value for run_id, (row, start_ms) in runs.items()
             for value in (run_id, row["item_id"], row["scheduled_for"], row["attempt"], node_id, row["fence"] + 1,
                           start_ms)],
        )
    }
    for run_id, (row, _) in runs.items():
        if run_id not in inserted:
            # This slot already ran as this attempt (a task deleted and recreated, a
            # confused node): never start it twice; the next claim takes the next attempt.
            item_id = row["item_id"]
            moved = next_free_attempt(conn, item_id, row["scheduled_for"], row["attempt"])
            conn.execute("UPDATE tasks SET attempt = ? WHERE item_id = ?", (moved, item_id))
            logger.warning("run %s already exists: %s moves to attempt %s", run_id, item_id, moved)
    claimed = [(run_id, row, start_ms) for run_id, (row, start_ms) in runs.items() if run_id in inserted]
    if not claimed:
        return []
    # The compare-and-set on each task's fence states the rule; inside the write lock it always holds.
    # (Not "(item_id, fence) IN (VALUES ...)": SQLite scans the whole table for that one.)
    marks = ", ".join("?" * len(claimed))
    updated = {
        row["item_id"]: row for row in conn.execute(
            "UPDATE tasks SET status = 'RUNNING', lease_owner = ?, lease_until = ?, fence = fence + 1,"
            f" last_execution_date = MAX(?, next_at), last_modified = ? WHERE item_id IN ({marks})"
            f" AND fence = CASE item_id {' '.join(['WHEN ? THEN ?'] * len(claimed))} END"
            f" RETURNING {TASK_WITHOUT_HISTORY}",
            [node_id, until_ms, now_ms, now_ms, *(row["item_id"] for _, row, _ in claimed),
             *(value for _, row, _ in claimed for value in (row["item_id"], row["fence"]))],
        )
    }
    claims = []
    lease_until = from_epoch_ms(until_ms)
    for run_id, due_row, start_ms in claimed:
        row = updated.get(due_row["item_id"])
        if row is None:  # impossible while this transaction holds the write lock
            raise StoreError(f"claim of {due_row['item_id']} lost its compare-and-set inside the write lock")
        claims.append(
            Claim(
                task=task_from_row(row, with_history=False), node_id=node_id, fence=row["fence"], run_id=run_id,
                scheduled_for=from_epoch_ms(due_row["scheduled_for"]), attempt=due_row["attempt"],
                started_at=from_epoch_ms(start_ms), lease_until=lease_until,
                previous_execution_date=datetime_or_none(due_row["last_execution_date"]),
            )
        )
    return claims


def _chunks(rows: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def _spec_usable(conn: sqlite3.Connection, now: datetime, due: sqlite3.Row) -> bool:
    """Whether the stored spec of a due task parses (once per spec hash); if not, the task fails alone, visibly."""
    source = None if due["source_path"] is None else Source(due["source_path"], due["source_line"] or 0)
    try:
        stored_spec(due["spec_hash"], lambda: json.loads(due["spec"]), source)
    except Exception as exc:  # whatever the reason, one task's spec must never stop the claims of the others
        row = read_row(conn, due["item_id"])
        apply_change(conn, now, row, policy.unusable_spec(exc), "fence = :fence", {"fence": row["fence"]})
        logger.error("task %s failed: its stored spec cannot be used: %s", row["item_id"], exc,
                     extra={"task": row["item_id"]})
        return False
    return True


def renew(
    conn: sqlite3.Connection, now: datetime, node_id: str, claims: list[Claim], lease_duration: timedelta
) -> set[str]:
    """Extend each lease still held; a held lease of a task no longer RUNNING (cancelled meanwhile)
    is extended too, since its run is still stopping, but reported lost."""
    until = epoch_ms(now + lease_duration)
    lost = set()
    for held in claims:
        params = {"until": until, **fence_of(held), "owner": node_id}
        row = conn.execute(f"UPDATE tasks SET lease_until = :until WHERE {HELD} RETURNING status", params).fetchone()
        if row is None or row[0] != Status.RUNNING:
            lost.add(held.run_id)
        if row is None:  # the task was deleted: its lease is kept for a task created again under its id
            conn.execute(f"UPDATE removed_leases SET lease_until = :until WHERE {HELD}", params)
    return lost


def release_lease(conn: sqlite3.Connection, now: datetime, held: Claim) -> bool:
    """The run of a cancelled (or retried, run-now) or deleted task has stopped: its lease no longer blocks a claim."""
    released = conn.execute(
        f"UPDATE tasks SET lease_owner = NULL, lease_until = NULL WHERE {HELD} AND status != 'RUNNING'",
        fence_of(held),
    ).rowcount
    return bool(released or conn.execute(f"DELETE FROM removed_leases WHERE {HELD}", fence_of(held)).rowcount)


def save_progress(conn: sqlite3.Connection, now: datetime, held: Claim, updates: dict[str, object]) -> bool:
    """``updates`` maps column names (chosen by the store, never by a caller) to values."""
    updates = {**updates, "last_modified": epoch_ms(now)}
    assignments = ", ".join(f"{column} = :{column}" for column in updates)
    return bool(
        conn.execute(f"UPDATE tasks SET {assignments} WHERE {FENCED}", {**updates, **fence_of(held)}).rowcount
    )


def _held_row(conn: sqlite3.Connection, held: Claim) -> sqlite3.Row | None:
    return conn.execute(f"SELECT * FROM tasks WHERE {FENCED}", fence_of(held)).fetchone()


def finish(conn: sqlite3.Connection, now: datetime, held: Claim, result: RunResult, transition: Transition) -> bool:
    # No read first: while the fence holds, the task is at the claim's slot, and the fenced UPDATE says whether it holds.
    row = {"item_id": held.item_id, "scheduled_for": epoch_ms(held.scheduled_for)}
    return apply_change(conn, now, row, policy.finish(held, result, transition), FENCED, fence_of(held))


# -- dependencies --------------------------------------------------------------------------------


def settle_dependencies(conn: sqlite3.Connection, now: datetime) -> Settled:
    candidates = conn.execute(
        "SELECT * FROM tasks INDEXED BY tasks_dependents WHERE depends_on IS NOT NULL AND dependencies_ready = 0"
        " AND next_at <= :now AND status = 'SCHEDULED' AND enabled = 1"
        " UNION ALL SELECT * FROM tasks WHERE status = 'WAITING'",
        {"now": epoch_ms(now)},
    ).fetchall()
    ready, waiting = [], 0
    for row in candidates:
        task = task_from_row(row, with_history=False)
        change = policy.settle_dependencies(task, dependency_states(conn, task.spec.waits_for))
        if change is not None:
            apply_change(conn, now, row, change, "fence = :fence AND status = :status",
                         {"fence": row["fence"], "status": row["status"]})
        if change is None or change.status is Status.WAITING:
            waiting += 1
        else:
            ready.append(task.item_id)
    return Settled(tuple(ready), waiting)


def dependency_states(conn: sqlite3.Connection, item_ids: Collection[str]) -> dict[str, DependencyState]:
    if not item_ids:
        return {}
    marks = ", ".join("?" * len(item_ids))
    return {
        row[0]: DependencyState(row[0], Status(row[1]), datetime_or_none(row[2]))
        for row in conn.execute(
            f"SELECT item_id, status, last_success_date FROM tasks WHERE item_id IN ({marks})", list(item_ids)
        )
    }


def recover(
    conn: sqlite3.Connection, now: datetime, node_id: str, retention: Retention, only: frozenset[ExpiredLease] | None
) -> list[Task]:
    now_ms = epoch_ms(now)
    expired = conn.execute(
        "SELECT * FROM tasks WHERE lease_until < ? ORDER BY lease_until, item_id", (now_ms,)
    ).fetchall()
    recovered, released = [], []
    for row in expired:
        lease = expired_lease(row)
        if only is not None and lease not in only:
            continue
        # Fenced on the lease read: a renewal that landed meanwhile moves ``lease_until``.
        still_held = {"fence": lease.fence, "until": row["lease_until"]}
        if row["status"] != Status.RUNNING:  # a cancelled run that never said it stopped
            if conn.execute(
                "UPDATE tasks SET lease_owner = NULL, lease_until = NULL"
                " WHERE item_id = :item_id AND fence = :fence AND lease_until = :until AND status != 'RUNNING'",
                {**still_held, "item_id": lease.item_id},
            ).rowcount:
                released.append(lease.item_id)
            continue
        error = policy.lease_expired_error(row["lease_owner"], from_epoch_ms(row["lease_until"]))
        change = policy.crash(task_from_row(row), now, error=error, crashed_node=row["lease_owner"],
                              recovered_by=node_id, retention=retention)
        if apply_change(conn, now, row, change, "fence = :fence AND status = 'RUNNING' AND lease_until = :until",
                        still_held):
            recovered.append(task_from_row(read_row(conn, row["item_id"])))
    for row in conn.execute(
        "SELECT item_id, fence, lease_until FROM removed_leases WHERE lease_until < ?", (now_ms,)
    ).fetchall():
        lease = expired_lease(row)
        if only is None or lease in only:
            conn.execute("DELETE FROM removed_leases WHERE item_id = ? AND fence = ? AND lease_until = ?",
                         (lease.item_id, lease.fence, row["lease_until"]))
            released.append(lease.item_id)
    report_recovery(logger, node_id, [task.item_id for task in recovered], released)
    return recovered


def expired_lease(row: sqlite3.Row) -> ExpiredLease:
    """The lease a task's row (or a deleted task's lease) holds, as ``recover(only=...)`` names it."""
    return ExpiredLease(row["item_id"], row["fence"], from_epoch_ms(row["lease_until"]))


def abandon(conn: sqlite3.Connection, now: datetime, claims: list[Claim], reason: str, retention: Retention) -> list[str]:
    marked = []
    for held in claims:
        row = _held_row(conn, held)
        if row is None:
            continue
        change = policy.interrupt(task_from_row(row), now, reason=reason, node=held.node_id, retention=retention)
        if apply_change(conn, now, row, change, FENCED, fence_of(held)):
            marked.append(held.item_id)
    return marked


def release(conn: sqlite3.Connection, now: datetime, claims: list[Claim]) -> list[str]:
    released = []
    for held in claims:
        row = _held_row(conn, held)
        if row is not None and apply_change(conn, now, row, policy.release(held), FENCED, fence_of(held)):
            released.append(held.item_id)
    return released

