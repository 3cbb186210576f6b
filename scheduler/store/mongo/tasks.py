"""Specs, reads, operator actions, nodes and retention on MongoDB (blocking
functions, run on the driver thread).

Operator actions are one ``find_one_and_update`` whose filter holds the allowed
statuses, so an action never applies to a task that changed status meanwhile;
when nothing matched, a second read tells "no such task" from "wrong state".
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Mapping

from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from ...errors import InvalidState, StoreError, TaskNotFound
from ...spec import TaskSpec
from ..base import FINAL_STATUSES, NodeInfo, Page, PurgeCounts, Status, Task, TaskQuery, UpsertResult
from .documents import (
    aware,
    new_task_document,
    node_document,
    node_from_document,
    run_from_document,
    spec_fields,
    stored,
    task_from_document,
)
from .filters import check_page, claimable_by, not_final, query_filter, query_sort

# Rounds of read-compare-write before upsert_spec gives up: each lost round
# means another node or a claim changed the task between the read and the write.
_UPSERT_ROUNDS = 5
_CLEAR_LEASE = {"lease.owner": None, "lease.until": None}


# -- specs -------------------------------------------------------------------


def upsert_spec(
    db: Database,
    spec: TaskSpec,
    item_id: str,
    node: str | None,
    first_due: datetime | None,
    spec_version: float,
    now: datetime,
) -> UpsertResult:
    tasks = db["tasks"]
    fields = spec_fields(spec, node, spec_version)
    for _ in range(_UPSERT_ROUNDS):
        current = tasks.find_one({"_id": item_id}, projection=["specHash", "specVersion", "spec.schedule", "status"])
        if current is None:
            try:
                tasks.insert_one(new_task_document(item_id, spec, node, first_due, spec_version, now))
            except DuplicateKeyError:
                continue  # another node created it meanwhile: compare with what it wrote
            return UpsertResult.CREATED
        if current["specHash"] == fields["specHash"]:
            return UpsertResult.UNCHANGED
        if current.get("specVersion", 0.0) > spec_version:
            return UpsertResult.SUPERSEDED
        changes = {**fields, "lastModified": now}
        if current["spec"]["schedule"] != fields["spec"]["schedule"] and current["status"] != Status.RUNNING:
            due = stored(first_due)
            changes.update(nextScheduledExecution=due, scheduledFor=due, attempt=1)
        # Compare-and-set on what was read: the decisions above still hold when it matches.
        condition = {"_id": item_id, "specHash": current["specHash"], "status": current["status"]}
        if tasks.update_one(condition, {"$set": changes}).matched_count:
            return UpsertResult.UPDATED
    raise StoreError(f"task {item_id} kept changing while its spec was being updated; try again")


def remove_spec(db: Database, item_id: str) -> bool:
    return db["tasks"].delete_one({"_id": item_id}).deleted_count == 1


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
        cursor = db["runs"].find(criteria, sort=[("startedAt", -1), ("_id", -1)], skip=offset, limit=limit)
        items = [run_from_document(doc) for doc in cursor]
    return Page(items=items, offset=offset, total=total)


def next_due_time(db: Database, node_id: str) -> datetime | None:
    due = db["tasks"].find_one(
        {"$and": [claimable_by(node_id), {"nextScheduledExecution": {"$ne": None}}]},
        sort=[("nextScheduledExecution", 1)],
        projection=["nextScheduledExecution"],
    )
    expiry = db["tasks"].find_one(
        {"status": Status.RUNNING.value, "lease.until": {"$ne": None}}, sort=[("lease.until", 1)], projection=["lease"]
    )
    candidates = []
    if due is not None:
        candidates.append(aware(due["nextScheduledExecution"]))
    if expiry is not None:
        candidates.append(aware(expiry["lease"]["until"]))
    return min(candidates, default=None)


# -- operator actions --------------------------------------------------------


def _act(db: Database, item_id: str, allowed: Mapping[str, Any], update: Mapping[str, Any], refusal: str) -> Task:
    doc = db["tasks"].find_one_and_update(
        {"_id": item_id, "status": allowed}, update, return_document=ReturnDocument.AFTER
    )
    if doc is not None:
        return task_from_document(doc)
    current = db["tasks"].find_one({"_id": item_id}, projection=["status"])
    if current is None:
        raise TaskNotFound(item_id)
    raise InvalidState(f"task {item_id} is {current['status']}: {refusal}")


def cancel(db: Database, item_id: str, now: datetime) -> Task:
    # The lease stays: the running node's next renewal fails and it kills the run.
    update = {"$set": {"status": Status.CANCELLED.value, "nextScheduledExecution": None, "lastModified": now}}
    return _act(db, item_id, not_final(), update, "it has already ended and cannot be cancelled")


def retry(db: Database, item_id: str, reset_failure_count: bool, now: datetime) -> Task:
    changes: dict[str, Any] = {
        "status": Status.SCHEDULED.value,
        "nextScheduledExecution": now,
        "expireAt": None,  # a retried one-shot must not be purged
        "lastModified": now,
        **_CLEAR_LEASE,
    }
    if reset_failure_count:
        changes["failureCount"] = 0
    allowed = {"$in": [Status.FAILED.value, Status.CANCELLED.value]}
    update = {"$set": changes, "$inc": {"attempt": 1}}
    return _act(db, item_id, allowed, update, "only FAILED or CANCELLED tasks can be retried")


def resume(db: Database, item_id: str, now: datetime) -> Task:
    changes = {"status": Status.SCHEDULED.value, "nextScheduledExecution": now, "lastModified": now, **_CLEAR_LEASE}
    return _act(db, item_id, {"$eq": Status.CRASHED.value}, {"$set": changes}, "only CRASHED tasks can be resumed")


def run_now(db: Database, item_id: str, now: datetime) -> Task:
    changes = {
        "status": Status.SCHEDULED.value,
        "nextScheduledExecution": now,
        "scheduledFor": now,
        "attempt": 1,
        "expireAt": None,
        "lastModified": now,
        **_CLEAR_LEASE,
    }
    allowed = {"$ne": Status.RUNNING.value}
    return _act(db, item_id, allowed, {"$set": changes}, "it is running already; cancel it first")


def update_config(
    db: Database, item_id: str, max_retries: int | None, retry_delay: timedelta | None, now: datetime
) -> Task:
    changes: dict[str, Any] = {"lastModified": now}
    if max_retries is not None:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"maxRetries must be an integer >= 0, got {max_retries!r}")
        changes["maxRetriesOverride"] = max_retries
    if retry_delay is not None:
        if not isinstance(retry_delay, timedelta) or retry_delay < timedelta(0):
            raise ValueError(f"retryDelay must be a duration >= 0, got {retry_delay!r}")
        changes["retryDelayOverrideMs"] = retry_delay // timedelta(milliseconds=1)
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


def purge(db: Database, finished_before: datetime | None, keep_history: int | None, now: datetime) -> PurgeCounts:
    if keep_history is not None and (isinstance(keep_history, bool) or not isinstance(keep_history, int) or keep_history < 0):
        raise ValueError(f"keep_history must be an integer >= 0, got {keep_history!r}")
    tasks = db["tasks"].delete_many({"expireAt": {"$lte": now}}).deleted_count
    runs = db["runs"].delete_many({"expireAt": {"$lte": now}}).deleted_count
    if finished_before is not None:
        before = stored(finished_before)
        final = [status.value for status in FINAL_STATUSES]
        tasks += db["tasks"].delete_many({"status": {"$in": final}, "lastFinishDate": {"$lt": before}}).deleted_count
        runs += db["runs"].delete_many({"finishedAt": {"$lt": before}}).deleted_count
    if keep_history is not None:
        # Only documents with more entries than kept; an empty $each with $slice trims in place.
        db["tasks"].update_many(
            {f"history.{keep_history}": {"$exists": True}},
            {"$push": {"history": {"$each": [], "$slice": keep_history}}},
        )
    return PurgeCounts(tasks=tasks, runs=runs)
