"""What happens to a task after a run: the status machine of DESIGN.md as pure functions.

    SCHEDULED --claim--> RUNNING --success--> SCHEDULED (periodic, next slot) | COMPLETED (one-shot)
                            |--failure--> SCHEDULED (retry after delay, while the slot has retries left)
                            |             | FAILED (one-shot out of retries) | SCHEDULED next slot (periodic)

Retry budget: each slot gets ``1 + maxRetries`` attempts. ``attempt`` counts the
attempts of the current slot (a crash recovery also consumes one, so a task
that kills its node cannot crash-loop forever). ``failureCount`` counts
consecutive failed runs across slots and is what operators see; a success
resets it to 0.
"""

from __future__ import annotations

import dataclasses

from datetime import datetime, timedelta

from .model import is_file_source
from .model import Claim, Outcome, Retention, Status, Task, Transition
from .schedule import fire_time, next_slot


def retry_delay(task: Task, failures_in_slot: int) -> timedelta:
    """The wait before the next attempt; an operator's ``retryDelay`` override replaces the base delay."""
    return dataclasses.replace(task.spec.retry, retry_delay=task.retry_delay).delay(failures_in_slot)


def _next_slot_transition(
    task: Task, claim: Claim, now: datetime, retention: Retention, *, failure_count: int, success_count: int,
    final: Status, last_error: str | None,
) -> Transition:
    """Move on to the slot after ``claim.scheduled_for``, or to ``final`` when there is none."""
    slot = next_slot(task.spec.schedule, claim.scheduled_for, finished_at=now)
    if slot is None:
        return Transition(
            status=final,
            next_scheduled_execution=None,
            scheduled_for=claim.scheduled_for,
            attempt=claim.attempt,
            failure_count=failure_count,
            success_count=success_count,
            last_error=last_error,
            # A task declared in a file lives as long as its file: purging it would
            # make the next reload create it again, and a one-shot would run twice.
            expires_at=None if is_file_source(task.spec.source) else now + retention.for_status(final),
            run_expires_at=now + retention.runs,
        )
    return Transition(
        status=Status.SCHEDULED,
        next_scheduled_execution=fire_time(slot, task.spec.schedule.jitter, task.item_id),
        scheduled_for=slot,
        attempt=1,
        failure_count=failure_count,
        success_count=success_count,
        last_error=last_error,
        run_expires_at=now + retention.runs,
    )


def after_run(claim: Claim, outcome: Outcome, error: str | None, now: datetime, retention: Retention) -> Transition:
    """The task's next state after its run ended with ``outcome`` at ``now``.

    ``claim.task`` is the task as it was claimed: nobody else may change its
    counters while the lease is held, so they are a sound base.
    """
    task = claim.task
    if outcome is Outcome.SUCCESS:
        return _next_slot_transition(
            task, claim, now, retention,
            failure_count=0, success_count=task.success_count + 1, final=Status.COMPLETED, last_error=None,
        )
    if outcome is Outcome.SKIPPED:
        return _next_slot_transition(
            task, claim, now, retention,
            failure_count=task.failure_count, success_count=task.success_count,
            final=Status.COMPLETED, last_error=task.last_error,
        )
    failures = task.failure_count + 1
    if claim.attempt <= task.max_retries:
        return Transition(
            status=Status.SCHEDULED,
            next_scheduled_execution=now + retry_delay(task, claim.attempt),
            scheduled_for=claim.scheduled_for,
            attempt=claim.attempt + 1,
            failure_count=failures,
            success_count=task.success_count,
            last_error=error,
            run_expires_at=now + retention.runs,
        )
    return _next_slot_transition(
        task, claim, now, retention,
        failure_count=failures, success_count=task.success_count, final=Status.FAILED, last_error=error,
    )


def replaced_run(claim: Claim, next_slot_at: datetime, now: datetime, retention: Retention) -> Transition:
    """``concurrency: replace``: the run was stopped because the slot ``next_slot_at`` came due."""
    task = claim.task
    return Transition(
        status=Status.SCHEDULED,
        next_scheduled_execution=now,
        scheduled_for=next_slot_at,
        attempt=1,
        failure_count=task.failure_count,
        success_count=task.success_count,
        last_error=f"replaced by the run of {next_slot_at.isoformat()}",
        run_expires_at=now + retention.runs,
    )
