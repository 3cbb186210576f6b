"""The claim protocol on MongoDB (blocking functions, run on the driver thread).

Every write here is one conditional update whose filter carries the condition
that makes it safe: the claim's filter holds the whole eligibility and the
lease condition (a compare-and-set), and every later write of a run is fenced on
``lease.owner``, ``lease.fence`` and ``status: RUNNING``. Nothing is read first
and written later without that condition in the filter.

The run record is inserted right after the claim succeeds. MongoDB cannot make
both one atomic step without a transaction (which needs a replica set), so a
node that dies or loses the server between the two leaves a RUNNING task without
a run record, and the claims it made before in the same batch unknown to it: no
run of them starts (``claim_due`` hands a run to the engine only once all its
writes are done), their leases expire and ``recover_expired`` marks them CRASHED
as for any other crash, which costs each one attempt. ``tests/store/test_mongo_wire.py``
cuts a claim there (``between_claim_and_record``) and checks that.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Collection, Mapping, Sequence

from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from ... import policy
from ...model import (
    HISTORY_LIMIT, Claim, DependencyState, ExpiredLease, Retention, Settled, RunResult, Status, Task, Transition,
    make_run_id,
)
from ...policy import Change
from ...spec import Source
from ..common import report_recovery, stored_spec
from .documents import (
    REMOVED_LEASES, TASK_FIELDS, aware, current_slot, expired_lease, new_run_document, plain, stored, task_from_document,
)
from .filters import due_and_free, fenced_claim, held_claim

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
            projection={"history": False},  # a claim never reads it
            return_document=ReturnDocument.BEFORE,  # the revert below needs the previous status
        )
        if before is None:
            break
        try:
            source = before.get("source")
            stored_spec(before["specHash"], lambda: before["spec"], None if source is None else Source(**source))
        except Exception as exc:  # whatever the reason, one task's spec must never stop the claims of the others
            _fail_unusable(db, before, node_id, exc, now)
            continue
        claim = _claim_of(before, node_id, until, now)
        between_claim_and_record(claim)
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


def between_claim_and_record(claim: Claim) -> None:
    """Does nothing: the point between a claim's two writes, where tests inject a fault."""


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
        previous_execution_date=aware(before.get("lastExecutionDate")),
    )


def _fail_unusable(db: Database, before: Mapping[str, Any], node_id: str, error: Exception, now: datetime) -> None:
    """A claimed task whose stored spec does not parse fails alone, visibly (no run record was inserted)."""
    item_id = before["_id"]
    claimed = {"_id": item_id, "lease.owner": node_id, "lease.fence": before["lease"]["fence"] + 1}
    apply_change(db, item_id, claimed, policy.unusable_spec(error), now, None)
    log.error("task %s failed: its stored spec cannot be used: %s", item_id, error, extra={"task": item_id})


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
    """A held lease of a task no longer RUNNING (cancelled meanwhile) is extended too, since its run
    is still stopping, but reported lost."""
    until = stored(now + lease_duration)
    lost = set()
    for claim in claims:
        condition = {**held_claim(claim), "lease.owner": node_id}
        held = db["tasks"].find_one_and_update(condition, {"$set": {"lease.until": until}}, projection=["status"])
        if held is None or held["status"] != Status.RUNNING.value:
            lost.add(claim.run_id)
        if held is None:  # the task was deleted: its lease is kept for a task created again under its id
            db[REMOVED_LEASES].update_one(condition, {"$set": {"lease.until": until}})
    return lost


def release_lease(db: Database, claim: Claim, now: datetime) -> bool:
    """The run of a cancelled (or retried, run-now) or deleted task has stopped: its lease no longer blocks a claim."""
    condition = {**held_claim(claim), "status": {"$ne": Status.RUNNING.value}}
    if db["tasks"].update_one(condition, {"$set": {"lease.owner": None, "lease.until": None}}).matched_count:
        return True
    return db[REMOVED_LEASES].delete_one(held_claim(claim)).deleted_count == 1


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


# -- the one write of a transition ---------------------------------------------------------------


def apply_change(
    db: Database, item_id: str, condition: Mapping[str, Any], change: Change, now: datetime,
    slot: datetime | None,
) -> bool:
    """Write ``change`` to task ``item_id`` where ``condition`` (the state it was decided from) still
    holds; ``slot`` is the task's slot as read. False, and nothing written, when it no longer holds."""
    sets = {field: encode(change.fields[name]) for name, (field, encode) in TASK_FIELDS.items()
            if name in change.fields}
    if "scheduled_for" in change.fields and stored(change.fields["scheduled_for"]) != stored(slot):
        sets["dependenciesReady"] = False  # another slot: its dependencies are checked again
        sets.setdefault("interruptions", 0)  # and none of its runs was handed back yet
    if "attempt" in sets and change.status in (Status.SCHEDULED, Status.CRASHED):
        slot = change.fields.get("scheduled_for", slot)
        if slot is not None:  # never point a run still to come at a run record that exists
            sets["attempt"] = next_free_attempt(db, item_id, stored(slot), sets["attempt"])
    sets["lastModified"] = now
    update: dict[str, Any] = {"$set": sets}
    if change.history is not None:
        update["$push"] = push_history(change.history)
    if db["tasks"].update_one(condition, update).matched_count == 0:
        return False
    end = change.run_end
    if end is not None:
        run = {"_id": make_run_id(item_id, end.scheduled_for, end.attempt), "finishedAt": None}
        if end.outcome is None:  # the run never started: its attempt is free again
            db["runs"].delete_one(run)
        else:
            closed = {
                "finishedAt": stored(end.finished_at or now), "outcome": end.outcome.value, "error": end.error,
                "exitCode": end.exit_code, "expireAt": stored(end.expires_at),
            }
            if end.output is not None:
                closed["output"] = end.output
            if end.started_at is not None:
                closed["startedAt"] = stored(end.started_at)
            db["runs"].update_one(run, {"$set": closed})
    return True


def finish_run(db: Database, claim: Claim, result: RunResult, transition: Transition, now: datetime) -> bool:
    change = policy.finish(claim, result, transition)
    return apply_change(db, claim.item_id, fenced_claim(claim), change, now, claim.scheduled_for)


def settle_dependencies(db: Database, now: datetime) -> Settled:
    ready, waiting = [], 0
    candidates = db["tasks"].find(
        {"$or": [
            {"status": Status.WAITING.value},
            {"status": Status.SCHEDULED.value, "enabled": True, "dependsOn": {"$ne": None},
             "dependenciesReady": {"$ne": True}, "nextScheduledExecution": {"$lte": now}},
        ]},
        projection={"history": False},
    )
    for doc in list(candidates):
        task = task_from_document(doc)
        change = policy.settle_dependencies(task, dependency_states(db, task.spec.waits_for))
        if change is None or change.status is Status.WAITING:
            waiting += 1
        condition = {"_id": task.item_id, "lease.fence": task.fence, "status": task.status.value}
        if change is not None and apply_change(db, task.item_id, condition, change, now, task.scheduled_for) and (
            change.status is Status.SCHEDULED
        ):
            ready.append(task.item_id)
    return Settled(tuple(ready), waiting)


def dependency_states(db: Database, item_ids: Sequence[str]) -> dict[str, DependencyState]:
    if not item_ids:
        return {}
    found = db["tasks"].find({"_id": {"$in": list(item_ids)}}, projection={"status": 1, "lastSuccessDate": 1})
    return {doc["_id"]: DependencyState(doc["_id"], Status(doc["status"]), aware(doc.get("lastSuccessDate")))
            for doc in found}


def recover_expired(
    db: Database, node_id: str, retention: Retention, only: frozenset[ExpiredLease] | None, now: datetime
) -> list[Task]:
    recovered, released = [], []
    expired = db["tasks"].find({"lease.until": {"$lt": now}}, sort=[("lease.until", 1), ("_id", 1)])
    for doc in list(expired):
        lease = doc["lease"]
        if only is not None and expired_lease(doc) not in only:
            continue
        # Fenced on the lease read: a renewal that landed meanwhile leaves the fence but moves ``until``.
        still_held = {"_id": doc["_id"], "lease.fence": lease["fence"], "lease.until": lease["until"]}
        if doc["status"] != Status.RUNNING.value:  # a cancelled run that never said it stopped
            if db["tasks"].update_one(
                {**still_held, "status": doc["status"]}, {"$set": {"lease.owner": None, "lease.until": None}}
            ).matched_count:
                released.append(doc["_id"])
            continue
        error = policy.lease_expired_error(lease["owner"], aware(lease["until"]))
        change = policy.crash(task_from_document(doc), now, error=error, crashed_node=lease["owner"],
                              recovered_by=node_id, retention=retention)
        if apply_change(db, doc["_id"], {**still_held, "status": Status.RUNNING.value}, change, now, current_slot(doc)):
            recovered.append(task_from_document(db["tasks"].find_one({"_id": doc["_id"]})))
    for doc in list(db[REMOVED_LEASES].find({"lease.until": {"$lt": now}})):
        lease = doc["lease"]
        if (only is None or expired_lease(doc) in only) and db[REMOVED_LEASES].delete_one(
            {"_id": doc["_id"], "lease.fence": lease["fence"], "lease.until": lease["until"]}
        ).deleted_count:
            released.append(doc["_id"])
    report_recovery(log, node_id, [task.item_id for task in recovered], released)
    return recovered


def abandon_runs(db: Database, claims: Sequence[Claim], reason: str, retention: Retention, now: datetime) -> list[str]:
    marked = []
    for claim in claims:
        doc = db["tasks"].find_one(fenced_claim(claim))
        if doc is None:
            continue
        change = policy.interrupt(task_from_document(doc), now, reason=reason, node=claim.node_id,
                                  retention=retention)
        if apply_change(db, claim.item_id, fenced_claim(claim), change, now, current_slot(doc)):
            marked.append(claim.item_id)
    return marked


def release_claims(db: Database, claims: Sequence[Claim], now: datetime) -> list[str]:
    return [
        claim.item_id for claim in claims
        if apply_change(db, claim.item_id, fenced_claim(claim), policy.release(claim), now, claim.scheduled_for)
    ]

