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
from typing import Any, Callable, Collection, Mapping

from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from ... import policy
from ...errors import StoreError, TaskNotFound
from ...model import (
    FINAL_STATUSES, ONE_MS, ExpiredLease, LeaseExpiries, NodeInfo, Outcome, Page, PurgeCounts, Requirement, Retention,
    RunRecord, Status, Task, TaskQuery, UpsertResult,
)
from ...policy import Change
from ...spec import TaskSpec
from .documents import (
    REMOVED_LEASES,
    aware,
    current_slot,
    expired_lease,
    new_task_document,
    node_document,
    node_from_document,
    run_from_document,
    spec_fields,
    stored,
    task_from_document,
)
from .filters import claimable_by, held, query_filter, query_sort, waiting
from .protocol import apply_change

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
            lease = _lease_of_removed(db, item_id)
            try:
                tasks.insert_one(new_task_document(item_id, spec, node, first_due, spec_version, now, lease))
            except DuplicateKeyError:
                continue  # another node created it meanwhile: compare with what it wrote
            if lease["until"] is not None and not db[REMOVED_LEASES].delete_one(_holding(item_id, lease)).deleted_count:
                # Released between the read and the insert (the old run stopped, or a recovery): the new
                # task must not keep a lease that nobody holds any more. No claim can have taken it meanwhile.
                tasks.update_one(_holding(item_id, lease), {"$set": {"lease.owner": None, "lease.until": None}})
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


def _lease_of_removed(db: Database, item_id: str) -> dict[str, Any]:
    """The lease and fence of a task created under ``item_id``: a deleted task's lease still held
    (its run may still be stopping; the new task is claimed once that run released it, or once it
    expired and was recovered), and fences past every one the id had (a holder of an old fence
    must never match the new task)."""
    held = db[REMOVED_LEASES].find_one({"_id": item_id})
    if held is not None:
        return held["lease"]
    last = db["runs"].find_one({"taskId": item_id}, sort=[("fence", -1)], projection=["fence"])
    return {"owner": None, "until": None, "fence": 0 if last is None else last["fence"]}


def _holding(item_id: str, lease: Mapping[str, Any]) -> dict[str, Any]:
    return held(item_id, lease["owner"], lease["fence"])


def delete_task(db: Database, condition: Mapping[str, Any], now: datetime) -> bool:
    """Delete the task matching ``condition`` (which names its ``_id``) and close its open run.

    A lease it still holds (its run is stopping) is kept in ``removedLeases`` first, for a task
    created again under its id; the delete is then fenced on that lease, and tried again if the
    lease changed in between."""
    item_id = condition["_id"]
    for _ in range(_ROUNDS):
        doc = db["tasks"].find_one(condition, projection=["lease"])
        if doc is None:
            return False
        lease = doc["lease"]
        if lease["until"] is not None:
            db[REMOVED_LEASES].replace_one({"_id": item_id}, {"_id": item_id, "lease": lease}, upsert=True)
        removed = db["tasks"].find_one_and_delete(
            {**condition, **_holding(item_id, lease)}, projection=["status"]
        )
        if removed is not None:
            close_open_runs(db, item_id, removed["status"], now)
            return True
        if lease["until"] is not None:  # released, renewed away or claimed meanwhile: not that lease
            db[REMOVED_LEASES].delete_one(_holding(item_id, lease))
    raise _busy(item_id, "its lease kept changing")


def remove_spec(db: Database, item_id: str, now: datetime) -> bool:
    return delete_task(db, {"_id": item_id}, now)


def close_open_runs(db: Database, item_id: str, status: str, now: datetime) -> None:
    """After a task was deleted: close its open run record, if it was RUNNING."""
    if status == Status.RUNNING:
        # Its node learns of the removal at its next renewal and writes nothing.
        db["runs"].update_many(
            {"taskId": item_id, "finishedAt": None},
            {"$set": {"finishedAt": now, "outcome": Outcome.CANCELLED.value, "error": policy.REMOVED_ERROR}},
        )


# -- reads -------------------------------------------------------------------


def get_task(db: Database, item_id: str) -> Task:
    doc = db["tasks"].find_one({"_id": item_id})
    if doc is None:
        raise TaskNotFound(item_id)
    return task_from_document(doc)


ID_BATCH = 1000  # ids per query: keeps each query document small


def known_ids(db: Database, item_ids: list[str]) -> set[str]:
    known: set[str] = set()
    for start in range(0, len(item_ids), ID_BATCH):
        found = db["tasks"].find({"_id": {"$in": item_ids[start : start + ID_BATCH]}}, projection={"_id": 1})
        known.update(doc["_id"] for doc in found)
    return known


def query_tasks(db: Database, query: TaskQuery) -> Page:
    criteria = query_filter(query)
    sort = query_sort(query)
    total = db["tasks"].count_documents(criteria)
    items: list[Task] = []
    if query.limit:  # the driver reads limit 0 as "no limit"
        cursor = db["tasks"].find(criteria, sort=sort, skip=query.offset, limit=query.limit)
        # Only the newest history entry (Store.query_tasks), cut here rather than by a projection
        # {"history": {"$slice": 1}}, which mongomock reads as "history alone".
        items = [task_from_document({**doc, "history": doc.get("history", [])[:1]}) for doc in cursor]
    return Page(items=items, offset=query.offset, total=total)


def list_runs(db: Database, item_id: str, offset: int, limit: int) -> Page:
    criteria = {"taskId": {"$eq": item_id}}
    total = db["runs"].count_documents(criteria)
    items = []
    if limit:
        cursor = db["runs"].find(criteria, sort=[("startedAt", -1), ("attempt", -1)], skip=offset, limit=limit)
        items = [run_from_document(doc) for doc in cursor]
    return Page(items=items, offset=offset, total=total)


WITHOUT_OUTPUT = {"output": False}  # a window's runs are drawn, not read: their output stays on the server


def runs_in_window(db: Database, item_ids: list[str], start: datetime, end: datetime, limit: int) -> dict[str, list[RunRecord]]:
    """``Store.runs_in_window``: per task, two range reads of the index runs_by_task."""
    found: dict[str, list[RunRecord]] = {}
    for item_id in item_ids:
        runs = []
        if limit:  # the driver reads limit 0 as "no limit"
            cursor = db["runs"].find(
                {"taskId": {"$eq": item_id}, "startedAt": {"$gte": start, "$lt": end}}, WITHOUT_OUTPUT,
                sort=[("startedAt", -1), ("attempt", -1)], limit=limit,
            )
            runs = [run_from_document(doc) for doc in cursor]
        if len(runs) < limit:
            before = db["runs"].find_one(
                {"taskId": {"$eq": item_id}, "startedAt": {"$lt": start}}, WITHOUT_OUTPUT,
                sort=[("startedAt", -1), ("attempt", -1)],
            )
            if before is not None:
                record = run_from_document(before)
                if record.finished_at is None or record.finished_at > start:
                    runs.append(record)
        found[item_id] = runs
    return found


def get_run(db: Database, item_id: str, run_id: str) -> RunRecord | None:
    doc = db["runs"].find_one({"_id": {"$eq": run_id}, "taskId": {"$eq": item_id}})
    return None if doc is None else run_from_document(doc)


def next_due_time(db: Database, node_id: str, task_types: Collection[str] | None) -> datetime | None:
    # A task that still carries a lease (a cancelled run stopping) waits for its release, which
    # ``lease_expiries`` and the release itself wake the engine for.
    first = db["tasks"].find_one(
        {"$and": [claimable_by(node_id, task_types), {"nextScheduledExecution": {"$ne": None}, "lease.until": None}]},
        sort=[("nextScheduledExecution", 1), ("_id", 1)],
        projection=["nextScheduledExecution"],
    )
    return None if first is None else aware(first["nextScheduledExecution"])


def lease_expiries(db: Database, now: datetime) -> LeaseExpiries:
    # Every lease held: of RUNNING tasks, of tasks whose cancelled run is stopping, of deleted tasks.
    expired: list[ExpiredLease] = []
    next_expiry = None
    for collection in ("tasks", REMOVED_LEASES):
        expired += (expired_lease(doc) for doc in db[collection].find(
            {"lease.until": {"$lt": now}}, projection=["lease.fence", "lease.until"],
        ))
        expiring = db[collection].find_one(
            {"lease.until": {"$gte": now}}, sort=[("lease.until", 1)], projection=["lease.until"]
        )
        if expiring is not None:
            until = aware(expiring["lease"]["until"]) + ONE_MS
            next_expiry = until if next_expiry is None else min(next_expiry, until)
    expired.sort(key=lambda lease: (lease.until, lease.item_id))
    return LeaseExpiries(tuple(expired), next_expiry)


def count_waiting(db: Database) -> dict[Requirement, int]:
    groups = db["tasks"].aggregate(
        [
            {"$match": {**waiting(), "nextScheduledExecution": {"$ne": None}}},
            {"$group": {"_id": {"type": "$executorType", "node": "$node", "nodes": "$nodes"}, "count": {"$sum": 1}}},
        ]
    )
    counts: dict[Requirement, int] = {}
    for group in groups:
        key = group["_id"]  # a field missing from every document of a group is missing here too
        requirement = Requirement(key.get("type"), key.get("node"), tuple(key.get("nodes") or ()))
        counts[requirement] = counts.get(requirement, 0) + group["count"]
    return counts


# -- operator actions --------------------------------------------------------


def _transition(db: Database, item_id: str, decide: Callable[[Task], Change], now: datetime) -> Task:
    """Read the task, let the policy ``decide`` (or refuse), compare-and-set the change on the
    status, fence and attempt read; again from a fresh read if the task changed meanwhile."""
    for _ in range(_ROUNDS):
        doc = db["tasks"].find_one({"_id": item_id})
        if doc is None:
            raise TaskNotFound(item_id)
        change = decide(task_from_document(doc))
        condition = {
            "_id": item_id,
            "status": doc["status"],
            "lease.fence": doc["lease"]["fence"],
            "attempt": doc["attempt"],
        }
        if apply_change(db, item_id, condition, change, now, current_slot(doc)):
            return get_task(db, item_id)
    raise _busy(item_id, "an operator action was applied")


def cancel(db: Database, item_id: str, now: datetime) -> Task:
    return _transition(db, item_id, lambda task: policy.cancel(task, now), now)


def retry(db: Database, item_id: str, reset_failure_count: bool, now: datetime) -> Task:
    return _transition(db, item_id, lambda task: policy.retry(task, now, reset_failure_count), now)


def resume(db: Database, item_id: str, now: datetime) -> Task:
    return _transition(db, item_id, lambda task: policy.resume(task, now), now)


def run_now(db: Database, item_id: str, now: datetime) -> Task:
    return _transition(db, item_id, lambda task: policy.run_now(task, now), now)


def suspend(db: Database, item_id: str, now: datetime) -> Task:
    return _transition(db, item_id, lambda task: policy.suspend(task, now), now)


def unsuspend(db: Database, item_id: str, now: datetime) -> Task:
    return _transition(db, item_id, lambda task: policy.unsuspend(task, now), now)


def update_config(
    db: Database, item_id: str, max_retries: int | None, retry_delay: timedelta | None, clear: bool, now: datetime
) -> Task:
    changes: dict[str, Any] = {"lastModified": now}
    if clear:  # null reads as no override (``task_from_document``); one $set, so a cleared field can be set again
        changes.update(maxRetriesOverride=None, retryDelayOverrideMs=None)
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
    # Never a task that still holds a lease (cancelled, its run still stopping): the next purge takes it.
    tasks = db["tasks"].delete_many({"status": {"$in": final}, "lease.until": None, "$or": task_terms}).deleted_count
    runs = db["runs"].delete_many({"finishedAt": {"$ne": None}, "$or": run_terms}).deleted_count
    beyond = _delete_beyond_keep_runs(db)
    if keep_history is not None:
        # Only documents holding more entries than kept; an empty $each with $slice trims in place.
        db["tasks"].update_many(
            {f"history.{keep_history}": {"$exists": True}},
            {"$push": {"history": {"$each": [], "$slice": keep_history}}},
        )
    if tasks or runs or beyond:
        log.info("purged %d task(s), %d run record(s) and %d beyond keepRuns", tasks, runs, beyond)
    return PurgeCounts(tasks=tasks, runs=runs, runs_beyond_keep_runs=beyond)


# Run ids per delete: keeps each command document far below MongoDB's 16 MB.
_DELETE_BATCH = 1000
# keepRuns kind -> the outcomes it counts: a success, or any other end.
_KEPT_OUTCOMES = {"successful": {"$eq": "success"}, "failed": {"$ne": "success"}}


def _delete_beyond_keep_runs(db: Database) -> int:
    """The finished run records of each task past its spec's ``keepRuns``, newest ``startedAt`` first
    (as ``list_runs`` shows them). The limits are read from the spec itself, the one in force."""
    deleted = 0
    for task in db["tasks"].find({"spec.keepRuns": {"$exists": True}}, projection=["spec.keepRuns"]):
        for kind, outcomes in _KEPT_OUTCOMES.items():
            keep = task["spec"]["keepRuns"].get(kind)
            if keep is None:
                continue
            beyond = db["runs"].find(
                {"taskId": task["_id"], "finishedAt": {"$ne": None}, "outcome": outcomes},
                sort=[("startedAt", -1), ("attempt", -1)], skip=keep, projection=["_id"],
            )
            ids = [run["_id"] for run in beyond]
            for start in range(0, len(ids), _DELETE_BATCH):
                batch = ids[start : start + _DELETE_BATCH]
                deleted += db["runs"].delete_many({"_id": {"$in": batch}, "finishedAt": {"$ne": None}}).deleted_count
    return deleted


def _busy(item_id: str, what: str) -> StoreError:
    return StoreError(f"task {item_id} kept changing while {what}; try again")
