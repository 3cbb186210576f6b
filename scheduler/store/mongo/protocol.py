"""The claim protocol on MongoDB (blocking functions, run on the driver thread).

Every write here is one conditional update whose filter carries the condition
that makes it safe: the claim's filter holds the whole eligibility and the
lease condition (a compare-and-set), and every later write of a run is fenced on
``lease.owner``, ``lease.fence`` and ``status: RUNNING``. Nothing is read first
and written later without that condition in the filter.

The run record is inserted right after the claim succeeds. MongoDB cannot make
both one atomic step without a transaction (which needs a replica set), so a
node that dies between the two leaves a RUNNING task without a run record: its
lease expires and ``recover_expired`` marks it CRASHED as for any other crash.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Collection, Mapping, Sequence

from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from ...model import HISTORY_LIMIT, Claim, Outcome, RunResult, Status, Task, Transition
from ..common import crash_details, history_entry, lease_expired_error, make_run_id
from .documents import aware, current_slot, new_run_document, plain, stored, task_from_document
from .filters import due_and_free, fenced, fenced_claim

log = logging.getLogger(__name__)


def push_history(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A ``$push`` adding ``entry`` first and keeping the HISTORY_LIMIT newest, in the same update."""
    return {"history": {"$each": [dict(entry)], "$position": 0, "$slice": HISTORY_LIMIT}}


def claim_due(
    db: Database, node_id: str, limit: int, lease_duration: timedelta, horizon: timedelta,
    task_types: Collection[str] | None, now: datetime,
) -> list[Claim]:
    until = stored(now + lease_duration)
    claims: list[Claim] = []
    duplicates: list[str] = []  # tasks whose run record already existed: not claimed this time
    while len(claims) < limit:
        before = db["tasks"].find_one_and_update(
            due_and_free(node_id, now, duplicates, horizon, task_types),
            {
                "$set": {
                    "status": Status.RUNNING.value,
                    "lease.owner": node_id,
                    "lease.until": until,
                    "lastExecutionDate": now,
                    "lastModified": now,
                },
                "$inc": {"lease.fence": 1},
            },
            sort=[("nextScheduledExecution", 1)],
            return_document=ReturnDocument.BEFORE,  # the revert below needs the previous status
        )
        if before is None:
            break
        claim = _claim_of(before, node_id, until, now)
        try:
            db["runs"].insert_one(new_run_document(claim))
        except DuplicateKeyError:
            _release_duplicate(db, claim, before)
            duplicates.append(claim.item_id)
            continue
        if claim.started_at > now:  # claimed ahead: the run starts when due, and says so
            db["tasks"].update_one(fenced_claim(claim), {"$set": {"lastExecutionDate": stored(claim.started_at)}})
        claims.append(claim)
    return claims


def _claim_of(before: Mapping[str, Any], node_id: str, until: datetime, now: datetime) -> Claim:
    """The claim as the update above wrote it, from the document it replaced."""
    fence = before["lease"]["fence"] + 1
    started = max(now, aware(before["nextScheduledExecution"]))  # claimed ahead: the run starts when due
    after = {
        **before,
        "status": Status.RUNNING.value,
        "lease": {"owner": node_id, "until": until, "fence": fence},
        "lastExecutionDate": started,
        "lastModified": now,
    }
    task = task_from_document(after)
    scheduled_for = current_slot(after)
    assert scheduled_for is not None, "a due task has a nextScheduledExecution"
    return Claim(
        task=task,
        node_id=node_id,
        fence=fence,
        run_id=make_run_id(task.item_id, scheduled_for, task.attempt),
        scheduled_for=scheduled_for,
        attempt=task.attempt,
        started_at=started,
        lease_until=until,
    )


def next_free_attempt(db: Database, item_id: str, scheduled_for: datetime, attempt: int) -> int:
    """``attempt``, or the first attempt past the run records of that slot."""
    latest = db["runs"].find_one(
        {"taskId": item_id, "scheduledFor": scheduled_for}, sort=[("attempt", -1)], projection=["attempt"]
    )
    return attempt if latest is None else max(attempt, latest["attempt"] + 1)


def _release_duplicate(db: Database, claim: Claim, before: Mapping[str, Any]) -> None:
    """Undo a claim whose run already exists, and move the attempt past the existing records."""
    next_attempt = next_free_attempt(db, claim.item_id, claim.scheduled_for, claim.attempt)
    db["tasks"].update_one(
        fenced_claim(claim),
        {
            "$set": {
                "status": before["status"],
                "lease.owner": None,
                "lease.until": None,
                "lastExecutionDate": before.get("lastExecutionDate"),
                "attempt": next_attempt,
            }
        },
    )
    log.warning(
        "run %s already exists: task %s not claimed, next attempt %d",
        claim.run_id,
        claim.item_id,
        next_attempt,
        extra={"task": claim.item_id, "run": claim.run_id},
    )


def renew_leases(
    db: Database, node_id: str, claims: Sequence[Claim], lease_duration: timedelta, now: datetime
) -> set[str]:
    until = stored(now + lease_duration)
    lost = set()
    for claim in claims:
        result = db["tasks"].update_one(fenced(claim.item_id, node_id, claim.fence), {"$set": {"lease.until": until}})
        if result.matched_count == 0:
            lost.add(claim.item_id)
    return lost


def save_progress(
    db: Database,
    claim: Claim,
    checkpoint: Mapping[str, Any] | None,
    step: str | None,
    details: Mapping[str, Any] | None,
    now: datetime,
) -> bool:
    changes: dict[str, Any] = {"lastModified": now}
    if checkpoint is not None:
        changes["checkpointData"] = plain(checkpoint)
    if step is not None:
        changes["currentStep"] = step
    if details is not None:
        changes["statusDetails"] = plain(details)
    return db["tasks"].update_one(fenced_claim(claim), {"$set": changes}).matched_count == 1


def finish_run(db: Database, claim: Claim, result: RunResult, transition: Transition, now: datetime) -> bool:
    finished_at = stored(result.finished_at)
    changes: dict[str, Any] = {
        "status": Status(transition.status).value,
        "nextScheduledExecution": stored(transition.next_scheduled_execution),
        "scheduledFor": stored(transition.scheduled_for),
        "attempt": transition.attempt,
        "failureCount": transition.failure_count,
        "successCount": transition.success_count,
        "lastError": transition.last_error,
        "expireAt": stored(transition.expires_at),
        "lastFinishDate": finished_at,
        "lease.owner": None,
        "lease.until": None,
        "lastModified": now,
    }
    if result.outcome == Outcome.SUCCESS:
        changes["checkpointData"] = None
    entry = history_entry(
        run_id=claim.run_id,
        scheduled_for=claim.scheduled_for,
        attempt=claim.attempt,
        node=claim.node_id,
        started_at=claim.started_at,
        finished_at=finished_at,
        outcome=result.outcome,
        exit_code=result.exit_code,
        error=result.error,
    )
    updated = db["tasks"].update_one(fenced_claim(claim), {"$set": changes, "$push": push_history(entry)})
    if updated.matched_count == 0:
        return False
    db["runs"].update_one(
        {"_id": claim.run_id, "fence": claim.fence},
        {
            "$set": {
                "finishedAt": finished_at,
                "outcome": Outcome(result.outcome).value,
                "exitCode": result.exit_code,
                "output": result.output,
                "error": result.error,
                "expireAt": stored(transition.run_expires_at),
            }
        },
    )
    return True


def recover_expired(db: Database, node_id: str, now: datetime) -> list[Task]:
    recovered = []
    expired = db["tasks"].find(
        {"status": Status.RUNNING.value, "lease.until": {"$lt": now}},
        sort=[("lease.until", 1), ("_id", 1)],
        projection=_CRASH_FIELDS,
    )
    for doc in list(expired):
        lease = doc["lease"]
        error = lease_expired_error(lease["owner"], aware(lease["until"]))
        # Fenced on the fence read, and on the lease still being expired: a renewal
        # that landed meanwhile leaves the fence unchanged but moves ``until``.
        condition = {
            "_id": doc["_id"],
            "status": Status.RUNNING.value,
            "lease.fence": lease["fence"],
            "lease.until": {"$lt": now},
        }
        task = _mark_crashed(db, condition, doc, lease["owner"], error, node_id, now)
        if task is not None:
            recovered.append(task)
    if recovered:
        log.warning(
            "node %s recovered %d task(s) with expired leases: %s",
            node_id,
            len(recovered),
            ", ".join(task.item_id for task in recovered),
        )
    return recovered


def abandon_runs(db: Database, claims: Sequence[Claim], reason: str, now: datetime) -> list[str]:
    marked = []
    for claim in claims:
        doc = db["tasks"].find_one(fenced_claim(claim), projection=_CRASH_FIELDS)
        if doc is None:
            continue
        if _mark_crashed(db, fenced_claim(claim), doc, claim.node_id, reason, claim.node_id, now) is not None:
            marked.append(claim.item_id)
    return marked


# What ``_mark_crashed`` reads of the task to write its history entry.
_CRASH_FIELDS = ["lease", "scheduledFor", "nextScheduledExecution", "attempt", "lastExecutionDate"]


def _mark_crashed(
    db: Database,
    condition: Mapping[str, Any],
    doc: Mapping[str, Any],
    crashed_node: str,
    error: str,
    recovered_by: str,
    now: datetime,
) -> Task | None:
    """One fenced update: CRASHED, due now, next attempt, lease cleared, checkpoint kept."""
    scheduled_for = current_slot(doc)
    crashed_run = make_run_id(doc["_id"], scheduled_for, doc["attempt"])
    entry = history_entry(
        run_id=crashed_run,
        scheduled_for=scheduled_for,
        attempt=doc["attempt"],
        node=crashed_node,
        started_at=aware(doc.get("lastExecutionDate")),
        finished_at=now,
        outcome=Outcome.CRASHED,
        error=error,
        recoveredBy=recovered_by,
    )
    crash = crash_details({}, now, crashed_node)  # merged into statusDetails field by field
    after = db["tasks"].find_one_and_update(
        condition,
        {
            "$set": {
                "status": Status.CRASHED.value,
                "lastError": error,
                **{f"statusDetails.{key}": value for key, value in crash.items()},
                "nextScheduledExecution": now,
                "lease.owner": None,
                "lease.until": None,
                "lastModified": now,
            },
            "$inc": {"attempt": 1},
            "$push": push_history(entry),
        },
        return_document=ReturnDocument.AFTER,
    )
    if after is None:
        return None
    close_run(db, crashed_run, now, Outcome.CRASHED, error)
    return task_from_document(after)


def close_run(db: Database, run: str, now: datetime, outcome: Outcome, error: str) -> None:
    """End a run record its node will never finish (crash, cancel)."""
    db["runs"].update_one(
        {"_id": run, "finishedAt": None}, {"$set": {"finishedAt": now, "outcome": outcome.value, "error": error}}
    )
