"""Specs, reads, operator actions, nodes and retention on MongoDB (blocking
functions, run on the driver thread).

Operator actions read the task, decide from what they read (or refuse with
``InvalidState``), then write with a compare-and-set on the status, fence and
attempt they read: a claim, finish or other action that lands in between makes
the write match nothing, and the action decides again from a fresh read.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from ...errors import InvalidState, StoreError, TaskNotFound
from ...spec import TaskSpec
from ...model import (
    FINAL_STATUSES, NodeInfo, Outcome, Page, PurgeCounts, Retention, Status, Task, TaskQuery, UpsertResult,
)
from ..common import CANCELLED_ERROR, ONE_MS, REMOVED_ERROR, history_entry, make_run_id
from .documents import (
    aware,
    current_slot,
    new_task_document,
    node_document,
    node_from_document,
    run_from_document,
    spec_fields,
    stored,
    task_from_document,
)
from .filters import check_page, claimable_by, query_filter, query_sort
from .protocol import close_run, next_free_attempt, push_history

log = logging.getLogger(__name__)

# Rounds of read-decide-compare-and-set before a write gives up: each lost round
# means a claim, a finish or another node changed the task in between.
_ROUNDS = 5


# -- specs -------------------------------------------------------------------


def upsert_spec(
    db: Database,
    spec: TaskSpec,
    item_id: str,
    node: str | None,
    first_due: datetime | None,
    spec_version: float,
    now: datetime,
    *,
    force: bool = False,
    declared: bool = False,
    replacing: str | None = None,
) -> UpsertResult:
    """``Store.upsert_spec``. ``force``: replace the spec whatever its version (a declaration put in force
    when another is withdrawn), only while the task holds the spec hash ``replacing`` (else SUPERSEDED:
    a newer declaration came meanwhile). ``declared``: a new declaration of the task; its ``declRev``
    moves on even when the spec is unchanged (see ``declarations``)."""
    tasks = db["tasks"]
    fields = spec_fields(spec, node, spec_version)
    for _ in range(_ROUNDS):
        current = tasks.find_one({"_id": item_id}, projection=["specHash", "specVersion", "spec.schedule", "status"])
        if current is None:
            try:
                tasks.insert_one(new_task_document(item_id, spec, node, first_due, spec_version, now))
            except DuplicateKeyError:
                continue  # another node created it meanwhile: compare with what it wrote
            return UpsertResult.CREATED
        if replacing is not None and current["specHash"] not in (replacing, fields["specHash"]):
            return UpsertResult.SUPERSEDED
        if current["specHash"] == fields["specHash"]:
            if declared:
                tasks.update_one({"_id": item_id}, {"$inc": {"declRev": 1}})
            return UpsertResult.UNCHANGED
        if current.get("specVersion", 0.0) > spec_version and not force:
            if declared:
                tasks.update_one({"_id": item_id}, {"$inc": {"declRev": 1}})
            return UpsertResult.SUPERSEDED
        changes = {**fields, "lastModified": now}
        if current["spec"]["schedule"] != fields["spec"]["schedule"] and current["status"] != Status.RUNNING:
            due = stored(first_due)
            changes.update(nextScheduledExecution=due, scheduledFor=due, attempt=1)
            if due is not None and current["status"] in (Status.COMPLETED, Status.FAILED):
                changes.update(status=Status.SCHEDULED.value, expireAt=None)  # a new plan
        # Compare-and-set on what was read: the decisions above still hold when it matches.
        condition = {
            "_id": item_id,
            "specHash": current["specHash"],
            "specVersion": current.get("specVersion"),
            "status": current["status"],
        }
        update: dict[str, Any] = {"$set": changes}
        if declared:
            update["$inc"] = {"declRev": 1}
        if tasks.update_one(condition, update).matched_count:
            return UpsertResult.UPDATED
    raise _busy(item_id, "its spec was being updated")


def remove_spec(db: Database, item_id: str, now: datetime) -> bool:
    removed = db["tasks"].find_one_and_delete({"_id": item_id}, projection=["status"])
    if removed is None:
        return False
    close_open_runs(db, item_id, removed["status"], now)
    return True


def close_open_runs(db: Database, item_id: str, status: str, now: datetime) -> None:
    """After a task was deleted: close its open run record, if it was RUNNING."""
    if status == Status.RUNNING:
        # Its node learns of the removal at its next renewal and writes nothing.
        db["runs"].update_many(
            {"taskId": item_id, "finishedAt": None},
            {"$set": {"finishedAt": now, "outcome": Outcome.CANCELLED.value, "error": REMOVED_ERROR}},
        )


# -- reads -------------------------------------------------------------------


def get_task(db: Database, item_id: str) -> Task:
    doc = db["tasks"].find_one({"_id": item_id})
    if doc is None:
        raise TaskNotFound(item_id)
    return task_from_document(doc)


def query_tasks(db: Database, query: TaskQuery) -> Page:
    criteria = query_filter(query)
    sort = query_sort(query)
    check_page(query.offset, query.limit)
    total = db["tasks"].count_documents(criteria)
    items: list[Task] = []
    if query.limit:  # the driver reads limit 0 as "no limit"
        cursor = db["tasks"].find(criteria, sort=sort, skip=query.offset, limit=query.limit)
        items = [task_from_document(doc) for doc in cursor]
    return Page(items=items, offset=query.offset, total=total)


def list_runs(db: Database, item_id: str, offset: int, limit: int) -> Page:
    check_page(offset, limit)
    criteria = {"taskId": {"$eq": item_id}}
    total = db["runs"].count_documents(criteria)
    items = []
    if limit:
        cursor = db["runs"].find(criteria, sort=[("startedAt", -1), ("attempt", -1)], skip=offset, limit=limit)
        items = [run_from_document(doc) for doc in cursor]
    return Page(items=items, offset=offset, total=total)


def next_due_time(db: Database, node_id: str) -> datetime | None:
    best: datetime | None = None
    # Walk claimable tasks in due order (the claim index): a lease still held (a
    # cancelled run being retried) delays a task to just past its expiry, so walk
    # on only while a later task could still be earlier.
    with db["tasks"].find(
        {"$and": [claimable_by(node_id), {"nextScheduledExecution": {"$ne": None}}]},
        sort=[("nextScheduledExecution", 1), ("_id", 1)],
        projection=["nextScheduledExecution", "lease.until"],
    ) as candidates:
        for doc in candidates:
            due = aware(doc["nextScheduledExecution"])
            if best is not None and due >= best:
                break
            until = aware(doc["lease"]["until"])
            candidate = due if until is None else max(due, until + ONE_MS)
            best = candidate if best is None else min(best, candidate)
    expiring = db["tasks"].find_one(
        {"status": Status.RUNNING.value, "lease.until": {"$ne": None}}, sort=[("lease.until", 1)], projection=["lease"]
    )
    if expiring is not None:
        expired_at = aware(expiring["lease"]["until"]) + ONE_MS
        best = expired_at if best is None else min(best, expired_at)
    return best


# -- operator actions --------------------------------------------------------


Decide = Callable[[Mapping[str, Any]], Mapping[str, Any]]


def _act(db: Database, item_id: str, decide: Decide) -> tuple[Task, Mapping[str, Any]]:
    """Read the task, ``decide`` the update (or raise), compare-and-set it on the
    status, fence and attempt read; again from a fresh read if the task changed.
    Returns the updated task and the document the decision was made on."""
    for _ in range(_ROUNDS):
        doc = db["tasks"].find_one({"_id": item_id})
        if doc is None:
            raise TaskNotFound(item_id)
        condition = {
            "_id": item_id,
            "status": doc["status"],
            "lease.fence": doc["lease"]["fence"],
            "attempt": doc["attempt"],
        }
        after = db["tasks"].find_one_and_update(condition, decide(doc), return_document=ReturnDocument.AFTER)
        if after is not None:
            return task_from_document(after), doc
    raise _busy(item_id, "an operator action was applied")


def _running_run_id(doc: Mapping[str, Any]) -> str:
    return make_run_id(doc["_id"], current_slot(doc), doc["attempt"])


def cancel(db: Database, item_id: str, now: datetime) -> Task:
    def decide(doc: Mapping[str, Any]) -> dict[str, Any]:
        status = Status(doc["status"])
        if status in FINAL_STATUSES:
            raise InvalidState(f"Task {item_id} is already {status.value}: only an unfinished task can be cancelled")
        # The lease stays: the running node's next renewal fails and it kills the run.
        update: dict[str, Any] = {
            "$set": {"status": Status.CANCELLED.value, "nextScheduledExecution": None, "lastModified": now}
        }
        if status == Status.RUNNING:
            # Its node will write nothing: record the end of the run here.
            entry = history_entry(
                run_id=_running_run_id(doc),
                scheduled_for=current_slot(doc),
                attempt=doc["attempt"],
                node=doc["lease"]["owner"],
                started_at=aware(doc.get("lastExecutionDate")),
                finished_at=now,
                outcome=Outcome.CANCELLED,
                error=CANCELLED_ERROR,
            )
            update["$push"] = push_history(entry)
        return update

    task, before = _act(db, item_id, decide)
    if before["status"] == Status.RUNNING:
        close_run(db, _running_run_id(before), now, Outcome.CANCELLED, CANCELLED_ERROR)
    return task


def retry(db: Database, item_id: str, reset_failure_count: bool, now: datetime) -> Task:
    def decide(doc: Mapping[str, Any]) -> dict[str, Any]:
        if doc["status"] not in (Status.FAILED, Status.CANCELLED):
            raise InvalidState(f"Task {item_id} is {doc['status']}: only a FAILED or CANCELLED task can be retried")
        fresh = reset_failure_count or doc["scheduledFor"] is None  # a new slot: the whole retry budget again
        slot = now if fresh else aware(doc["scheduledFor"])
        changes: dict[str, Any] = {
            "status": Status.SCHEDULED.value,
            "nextScheduledExecution": now,
            "scheduledFor": slot,
            "attempt": next_free_attempt(db, item_id, slot, 1 if fresh else doc["attempt"]),
            "expireAt": None,  # a retried one-shot must not be purged
            "lastModified": now,
        }
        if reset_failure_count:
            changes["failureCount"] = 0
        return {"$set": changes}

    return _act(db, item_id, decide)[0]


def resume(db: Database, item_id: str, now: datetime) -> Task:
    def decide(doc: Mapping[str, Any]) -> dict[str, Any]:
        if doc["status"] != Status.CRASHED:
            raise InvalidState(f"Task {item_id} is {doc['status']}: only a CRASHED task can be resumed")
        attempt = next_free_attempt(db, item_id, current_slot(doc), doc["attempt"])
        changes = {"status": Status.SCHEDULED.value, "nextScheduledExecution": now, "attempt": attempt}
        return {"$set": {**changes, "lastModified": now}}

    return _act(db, item_id, decide)[0]


def run_now(db: Database, item_id: str, now: datetime) -> Task:
    def decide(doc: Mapping[str, Any]) -> dict[str, Any]:
        if doc["status"] == Status.RUNNING:
            raise InvalidState(f"Task {item_id} is RUNNING: it cannot be run again before this run ends")
        changes = {
            "status": Status.SCHEDULED.value,
            "nextScheduledExecution": now,
            "scheduledFor": now,
            "attempt": next_free_attempt(db, item_id, now, 1),
            "expireAt": None,
            "lastModified": now,
        }
        return {"$set": changes}

    return _act(db, item_id, decide)[0]


def update_config(
    db: Database, item_id: str, max_retries: int | None, retry_delay: timedelta | None, now: datetime
) -> Task:
    changes: dict[str, Any] = {"lastModified": now}
    if max_retries is not None:
        changes["maxRetriesOverride"] = max_retries
    if retry_delay is not None:
        changes["retryDelayOverrideMs"] = retry_delay // ONE_MS
    doc = db["tasks"].find_one_and_update({"_id": item_id}, {"$set": changes}, return_document=ReturnDocument.AFTER)
    if doc is None:
        raise TaskNotFound(item_id)
    return task_from_document(doc)


# -- nodes -------------------------------------------------------------------


def heartbeat(db: Database, node: NodeInfo) -> None:
    doc = node_document(node)
    db["nodes"].replace_one({"_id": doc["_id"]}, doc, upsert=True)


def list_nodes(db: Database) -> list[NodeInfo]:
    return [node_from_document(doc) for doc in db["nodes"].find(sort=[("_id", 1)])]


# -- retention ---------------------------------------------------------------


def purge(
    db: Database, finished_before: datetime | None, keep_history: int | None, retention: Retention | None,
    now: datetime,
) -> PurgeCounts:
    task_terms: list[dict[str, Any]] = [{"expireAt": {"$lt": now}}]
    run_terms: list[dict[str, Any]] = [{"expireAt": {"$lt": now}}]
    if finished_before is not None:
        before = stored(finished_before)
        task_terms.append({"lastModified": {"$lt": before}})
        run_terms.append({"finishedAt": {"$lt": before}})
    if retention is not None:
        for status in FINAL_STATUSES:
            cutoff = stored(now - retention.for_status(status))
            task_terms.append({"originFile": False, "status": status.value, "lastModified": {"$lt": cutoff}})
        run_terms.append({"finishedAt": {"$lt": stored(now - retention.runs)}})
    final = [status.value for status in FINAL_STATUSES]
    tasks = db["tasks"].delete_many({"status": {"$in": final}, "$or": task_terms}).deleted_count
    runs = db["runs"].delete_many({"finishedAt": {"$ne": None}, "$or": run_terms}).deleted_count
    if keep_history is not None:
        # Only documents holding more entries than kept; an empty $each with $slice trims in place.
        db["tasks"].update_many(
            {f"history.{keep_history}": {"$exists": True}},
            {"$push": {"history": {"$each": [], "$slice": keep_history}}},
        )
    if tasks or runs:
        log.info("purged %d task(s) and %d run record(s)", tasks, runs)
    return PurgeCounts(tasks=tasks, runs=runs)


def _busy(item_id: str, what: str) -> StoreError:
    return StoreError(f"task {item_id} kept changing while {what}; try again")
