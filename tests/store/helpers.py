"""Small builders shared by the contract tests: specs, results and transitions."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from scheduler.model import Claim, Outcome, RunResult, Status, Transition
from scheduler.spec import Source, TaskSpec
from scheduler.store.base import Store

LEASE = timedelta(seconds=30)
HOUR = timedelta(hours=1)
MS = timedelta(milliseconds=1)


def make_spec(name: str = "t", source: Source | None = None, **fields: Any) -> TaskSpec:
    doc: dict[str, Any] = {"name": name, "schedule": {"every": "1h"}}
    doc.update(fields)
    return TaskSpec.from_dict(doc, source=source)


async def add_task(store: Store, due: datetime | None, name: str = "t", **fields: Any) -> str:
    await store.upsert_spec(make_spec(name, **fields), first_due=due)
    return name


def success(claim: Claim, finished_at: datetime, next_due: datetime | None = None) -> tuple[RunResult, Transition]:
    """A successful run of a periodic task, next due ``next_due`` (default: one hour after its slot)."""
    upcoming = next_due or claim.scheduled_for + HOUR
    transition = Transition(
        status=Status.SCHEDULED, next_scheduled_execution=upcoming, scheduled_for=upcoming, attempt=1,
        failure_count=0, success_count=claim.task.success_count + 1, last_error=None,
    )
    return RunResult(Outcome.SUCCESS, finished_at, exit_code=0, output="done"), transition


def failure(claim: Claim, finished_at: datetime, error: str = "boom") -> tuple[RunResult, Transition]:
    """A failed run retried a minute later as the next attempt of the same slot."""
    transition = Transition(
        status=Status.SCHEDULED, next_scheduled_execution=finished_at + timedelta(minutes=1),
        scheduled_for=claim.scheduled_for, attempt=claim.attempt + 1,
        failure_count=claim.task.failure_count + 1, success_count=claim.task.success_count, last_error=error,
    )
    return RunResult(Outcome.FAILURE, finished_at, exit_code=1, error=error), transition


def final(claim: Claim, finished_at: datetime, status: Status, *, expires_at: datetime | None = None,
          run_expires_at: datetime | None = None) -> tuple[RunResult, Transition]:
    """A one-shot reaching a final status (COMPLETED on success, FAILED otherwise)."""
    outcome = Outcome.SUCCESS if status == Status.COMPLETED else Outcome.FAILURE
    transition = Transition(
        status=status, next_scheduled_execution=None, scheduled_for=None, attempt=claim.attempt,
        failure_count=0 if outcome == Outcome.SUCCESS else claim.task.failure_count + 1,
        success_count=claim.task.success_count + (outcome == Outcome.SUCCESS),
        last_error=None if outcome == Outcome.SUCCESS else "boom",
        expires_at=expires_at, run_expires_at=run_expires_at,
    )
    return RunResult(outcome, finished_at, error=None if outcome == Outcome.SUCCESS else "boom"), transition


async def claim_one(store: Store, node: str = "a", lease: timedelta = LEASE) -> Claim:
    claims = await store.claim_due(node, 1, lease)
    assert len(claims) == 1, f"expected one claim for {node}, got {claims}"
    return claims[0]


async def write_stored_spec(store: Store, item_id: str, document: dict[str, Any]) -> None:
    """Overwrite a task's stored spec document behind the store's back, as a newer scheduler
    version (or a system missing a time zone) could leave it: no public verb writes an
    invalid spec, so this reaches into each backend's own connection."""
    from scheduler.store.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        def update(conn, now):
            conn.execute("UPDATE tasks SET spec = ?, spec_hash = ? WHERE item_id = ?",
                         (json.dumps(document), "written-elsewhere", item_id))
        await store._write(update)
    else:
        await store._with_db("overwrite a spec", lambda db: db["tasks"].update_one(
            {"_id": item_id}, {"$set": {"spec": document, "specHash": "written-elsewhere"}}))
