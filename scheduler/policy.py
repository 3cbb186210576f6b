"""The status machine: every transition of a task as a pure function.

A transition takes a task's state (a ``Task`` as read, or the ``Claim`` a node
holds), the event and the time, and returns a ``Change``: the fields to write,
the history entry to add and what becomes of the open run record. A transition
that the state does not allow raises ``InvalidState`` with the reason an
operator reads. The store backends decide nothing: each applies a ``Change``
with one compare-and-set on the state it was computed from, so every rule
below is written once, for every backend.

====================  ===========================  =============================================  ==============
status                event                        next status                                    triggered by
====================  ===========================  =============================================  ==============
SCHEDULED             dependencies unmet           WAITING                                        any node
WAITING               dependencies met             SCHEDULED (due, its slot checked)              any node
SCHEDULED             claim (enabled, unsuspended) RUNNING                                        a node
CRASHED               claim (``onCrash: resume``)  RUNNING                                        a node
RUNNING               success                      SCHEDULED (next slot), COMPLETED (no slot)     the lease owner
RUNNING               failure, attempts left       SCHEDULED (same slot, after ``retryDelay``)    the lease owner
RUNNING               failure, no attempt left     SCHEDULED (next slot), FAILED (no slot)        the lease owner
RUNNING               crash, attempts left         CRASHED (due at once, next attempt)            any node
RUNNING               crash, no attempt left       SCHEDULED (next slot), FAILED (no slot)        any node
RUNNING               release (never started)      SCHEDULED (same attempt)                       the lease owner
all but FAILED        cancel                       CANCELLED                                      ADMINISTRATOR
FAILED, CANCELLED     retry                        SCHEDULED (due now)                            ADMINISTRATOR
CRASHED               resume                       SCHEDULED (due now, checkpoint kept)           ADMINISTRATOR
all but RUNNING       run now (enabled, unsusp.)   SCHEDULED (due now, new slot)                  ADMINISTRATOR
any                   suspend, unsuspend           the same (claims skip a suspended task)        ADMINISTRATOR
====================  ===========================  =============================================  ==============

A task disabled by its spec (``enabled: false``) or suspended by an operator
is *held*: it keeps its status, slot and counters, no claim takes it, and
run now is refused (it would either run nothing or run what the operator
held). A run in progress when the task is suspended finishes normally. When
the hold ends, the slot it kept is due: the ``missedRuns`` policy decides
what becomes of the slots that passed meanwhile, as after downtime.

A *crash* is a run whose node stopped renewing its lease (SIGKILL, a frozen
node, a lost store) or a run a stopping node hands back after its grace
period. Retry budget: each slot gets ``1 + maxRetries`` attempts and a crash
consumes one like a failure, so a task that kills its node cannot run forever.
``attempt`` counts the attempts of the current slot; ``failureCount`` counts
consecutive failed or crashed runs across slots; a success resets it to 0.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping

from .errors import InvalidState
from .model import (
    Claim, DependencyState, Outcome, Retention, RunResult, Status, Task, Transition, is_file_source, make_run_id,
)
from .schedule import fire_time, next_slot
from .spec import utc_iso

CANCELLED_ERROR = "Cancelled by an operator"
REMOVED_ERROR = "Task deleted while running"
SHUTDOWN_REASON = "Interrupted by scheduler shutdown"
UNUSABLE_SPEC = "its stored spec cannot be used"


@dataclass(frozen=True)
class RunEnd:
    """What a change does to the run record of ``(scheduled_for, attempt)``, while it is open."""

    scheduled_for: datetime
    attempt: int
    outcome: Outcome | None  # None: delete the record, the run never started
    finished_at: datetime | None = None
    error: str | None = None
    exit_code: int | None = None
    output: str | None = None  # None keeps what the record holds
    expires_at: datetime | None = None
    started_at: datetime | None = None  # None keeps what the record holds (the planned start, from the claim)


@dataclass(frozen=True)
class Change:
    """A task's next state: the fields to write (by ``Task`` attribute name), a history entry, a run's end.

    A change that sets ``attempt`` for a run still to come is moved past the
    run records that slot already has by the backend, which alone can see them:
    the same slot and attempt never start twice. A change that moves the task
    to another slot clears ``dependencies_ready`` (backends again): a dependency
    check holds for one slot and its retries.
    """

    fields: Mapping[str, Any]
    history: Mapping[str, Any] | None = None  # put first in the task's history
    run_end: RunEnd | None = None


    @property
    def status(self) -> Status:
        return self.fields["status"]


# -- runs: what follows a run's end --------------------------------------------------------------


# A run handed back by a node shutting down is not the task's fault, and rolling restarts must not
# fail a long run: such a hand-back uses no attempt. Only this many per slot, though: a task that stops
# its own node every time (a command that restarts the service) would otherwise run for ever.
FREE_INTERRUPTIONS = 10


def attempts_counted(task: Task, attempt: int) -> int:
    """How many of the slot's attempts up to ``attempt`` count against ``maxRetries``."""
    return attempt - min(task.interruptions, FREE_INTERRUPTIONS)


def retry_delay(task: Task, failures_in_slot: int) -> timedelta:
    """The wait before the next attempt; an operator's ``retryDelay`` override replaces the base delay."""
    return dataclasses.replace(task.spec.retry, retry_delay=task.retry_delay).delay(failures_in_slot)


def _next_slot_transition(
    task: Task, slot: datetime, attempt: int, now: datetime, retention: Retention, *, failure_count: int,
    success_count: int, final: Status, last_error: str | None,
) -> Transition:
    """Move on to the slot after ``slot``, or to ``final`` when there is none."""
    following = next_slot(task.spec.schedule, slot, finished_at=now)
    if following is None:
        return Transition(
            status=final,
            next_scheduled_execution=None,
            scheduled_for=slot,
            attempt=attempt,
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
        next_scheduled_execution=fire_time(following, task.spec.schedule.jitter, task.item_id),
        scheduled_for=following,
        attempt=1,
        failure_count=failure_count,
        success_count=success_count,
        last_error=last_error,
        run_expires_at=now + retention.runs,
    )


def _after_failure(
    task: Task, slot: datetime, attempt: int, error: str | None, now: datetime, retention: Retention,
    *, retry_status: Status, retry_at: datetime,
) -> Transition:
    """A failed or crashed attempt: the next attempt while the slot has one left, else the next slot or FAILED."""
    failures = task.failure_count + 1
    if attempts_counted(task, attempt) <= task.max_retries:
        return Transition(
            status=retry_status,
            next_scheduled_execution=retry_at,
            scheduled_for=slot,
            attempt=attempt + 1,
            failure_count=failures,
            success_count=task.success_count,
            last_error=error,
            run_expires_at=now + retention.runs,
        )
    return _next_slot_transition(
        task, slot, attempt, now, retention,
        failure_count=failures, success_count=task.success_count, final=Status.FAILED, last_error=error,
    )


def after_run(claim: Claim, outcome: Outcome, error: str | None, now: datetime, retention: Retention) -> Transition:
    """The task's next state after its run ended with ``outcome`` at ``now``.

    ``claim.task`` is the task as it was claimed: nobody else may change its
    counters while the lease is held, so they are a sound base.
    """
    task = claim.task
    if outcome is Outcome.SUCCESS:
        return _next_slot_transition(
            task, claim.scheduled_for, claim.attempt, now, retention,
            failure_count=0, success_count=task.success_count + 1, final=Status.COMPLETED, last_error=None,
        )
    if outcome is Outcome.SKIPPED:
        return _next_slot_transition(
            task, claim.scheduled_for, claim.attempt, now, retention,
            failure_count=task.failure_count, success_count=task.success_count,
            final=Status.COMPLETED, last_error=task.last_error,
        )
    return _after_failure(
        task, claim.scheduled_for, claim.attempt, error, now, retention,
        retry_status=Status.SCHEDULED, retry_at=now + retry_delay(task, attempts_counted(task, claim.attempt)),
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


def _transition_fields(transition: Transition) -> dict[str, Any]:
    return {
        "status": transition.status,
        "next_scheduled_execution": transition.next_scheduled_execution,
        "scheduled_for": transition.scheduled_for,
        "attempt": transition.attempt,
        "failure_count": transition.failure_count,
        "success_count": transition.success_count,
        "last_error": transition.last_error,
        "expires_at": transition.expires_at,
    }


_NO_LEASE = {"lease_owner": None, "lease_until": None}


def finish(claim: Claim, result: RunResult, transition: Transition) -> Change:
    """The lease owner records its run's end: ``transition`` (from ``after_run``), the lease released."""
    if transition.status is Status.RUNNING:
        raise ValueError(f"a finished run cannot leave {claim.item_id} RUNNING")
    fields = {**_transition_fields(transition), **_NO_LEASE, "last_finish_date": result.finished_at}
    if result.started_at is not None:  # the claim wrote the planned start; this is the real one
        fields["last_execution_date"] = result.started_at
    if result.outcome is Outcome.SUCCESS:
        fields["checkpoint_data"] = None  # the work is done: the next run starts afresh
        fields["last_success_date"] = result.finished_at
    entry = history_entry(
        run_id=claim.run_id, scheduled_for=claim.scheduled_for, attempt=claim.attempt, node=claim.node_id,
        started_at=result.started_at or claim.started_at, finished_at=result.finished_at, outcome=result.outcome,
        exit_code=result.exit_code, error=result.error,
    )
    end = RunEnd(
        claim.scheduled_for, claim.attempt, result.outcome, finished_at=result.finished_at, error=result.error,
        exit_code=result.exit_code, output=result.output, expires_at=transition.run_expires_at,
        started_at=result.started_at,
    )
    return Change(fields, entry, end)


def crash(
    task: Task, now: datetime, *, error: str, crashed_node: str, recovered_by: str, retention: Retention,
) -> Change:
    """A RUNNING task whose run ended without its node recording it: a lease that expired.

    The crash consumes the attempt. With attempts left the task is CRASHED and,
    with ``onCrash: resume``, claimable again at once from its checkpoint; with
    none left it moves on as a failure does (next slot, or FAILED).
    """
    _require(task, {Status.RUNNING}, "only a RUNNING task can crash")
    slot = current_slot(task)
    transition = _after_failure(
        task, slot, task.attempt, error, now, retention, retry_status=Status.CRASHED, retry_at=now,
    )
    if transition.status is not Status.CRASHED:
        transition = dataclasses.replace(transition, last_error=f"{error}; its retry budget is spent")
    details = {**task.status_details, "crashTime": utc_iso(now), "crashedNode": crashed_node}
    fields = {**_transition_fields(transition), **_NO_LEASE, "status_details": details}
    entry = history_entry(
        run_id=make_run_id(task.item_id, slot, task.attempt), scheduled_for=slot, attempt=task.attempt,
        node=crashed_node, started_at=task.last_execution_date, finished_at=now, outcome=Outcome.CRASHED,
        error=error, recoveredBy=recovered_by,
    )
    end = RunEnd(slot, task.attempt, Outcome.CRASHED, finished_at=now, error=error,
                 expires_at=transition.run_expires_at)
    return Change(fields, entry, end)


def interrupt(task: Task, now: datetime, *, reason: str, node: str, retention: Retention) -> Change:
    """A RUNNING task whose node stopped its run and handed it back while shutting down.

    As after a crash, the task is CRASHED with its checkpoint (claimable again at
    once with ``onCrash: resume``; ``manual`` waits for an operator), and the run is
    recorded as ``interrupted``. Unlike a crash, the attempt does not count against
    ``maxRetries`` and is no failure (``failureCount`` unchanged), up to
    ``FREE_INTERRUPTIONS`` hand-backs per slot; beyond that one is a crash.
    """
    _require(task, {Status.RUNNING}, "only a RUNNING task can be interrupted")
    if task.interruptions >= FREE_INTERRUPTIONS:
        error = f"{reason}, after {FREE_INTERRUPTIONS} hand-backs in this slot: counted as a crash"
        return crash(task, now, error=error, crashed_node=node, recovered_by=node, retention=retention)
    slot = current_slot(task)
    fields = {
        **_NO_LEASE, "status": Status.CRASHED, "next_scheduled_execution": now, "scheduled_for": slot,
        "attempt": task.attempt + 1, "interruptions": task.interruptions + 1, "last_error": reason,
        "status_details": {**task.status_details, "crashTime": utc_iso(now), "crashedNode": node},
    }
    entry = history_entry(
        run_id=make_run_id(task.item_id, slot, task.attempt), scheduled_for=slot, attempt=task.attempt,
        node=node, started_at=task.last_execution_date, finished_at=now, outcome=Outcome.INTERRUPTED, error=reason,
    )
    end = RunEnd(slot, task.attempt, Outcome.INTERRUPTED, finished_at=now, error=reason,
                 expires_at=now + retention.runs)
    return Change(fields, entry, end)


def lease_expired_error(owner: str, until: datetime) -> str:
    return f"Node {owner} stopped renewing its lease, which expired at {utc_iso(until)}"


def release(claim: Claim) -> Change:
    """A claim handed back before its run started (claimed ahead, then the node stopped).

    Nothing ran: the task goes back as it was before the claim, due at the same
    time as the same attempt, with no history entry, and its run record goes
    so that this attempt can start later on any node.
    """
    fields = {**_NO_LEASE, "status": Status.SCHEDULED, "last_execution_date": claim.previous_execution_date}
    return Change(fields, run_end=RunEnd(claim.scheduled_for, claim.attempt, outcome=None))


def unusable_spec(error: Exception) -> Change:
    """A due task whose stored spec no longer parses (written by a newer version, a time zone gone):
    it fails alone and says why, instead of stopping the claims of every other task."""
    message = f"{UNUSABLE_SPEC}: {error}"
    return Change({**_NO_LEASE, "status": Status.FAILED, "next_scheduled_execution": None, "last_error": message})


# -- dependencies ------------------------------------------------------------------------------------


def unmet_dependencies(task: Task, states: Mapping[str, DependencyState]) -> list[str]:
    """The dependencies of ``task`` its next run still waits for, in ``dependsOn`` order.

    A dependency is met when it is a COMPLETED one-shot, or when it has succeeded
    since the success the task's last run consumed (since the task was created,
    before its first run). A dependency that does not exist, has never succeeded,
    or FAILED or was CANCELLED since, is waited for: nothing runs on stale input.
    """
    unmet = []
    for item_id in task.spec.waits_for:
        state = states.get(item_id)
        if state is not None and state.status is Status.COMPLETED:
            continue
        success = None if state is None else state.last_success_date
        if success is None:
            unmet.append(item_id)
        elif item_id in task.dependencies_seen:
            consumed = task.dependencies_seen[item_id]
            if consumed is not None and success <= consumed:  # the success its last run ran on
                unmet.append(item_id)
        elif task.creation_date is not None and success < task.creation_date:  # before the task existed
            unmet.append(item_id)
    return unmet


def settle_dependencies(task: Task, states: Mapping[str, DependencyState]) -> Change | None:
    """A due dependent (SCHEDULED, its slot unchecked) or a WAITING task, against its dependencies now:

    - all met: SCHEDULED, its slot checked (a node may claim it), the successes it runs on recorded;
    - some unmet: WAITING on them (or still WAITING, the list brought up to date);
    - None when nothing changes.
    """
    unmet = unmet_dependencies(task, states)
    if not unmet:
        seen = {item_id: _success_of(states.get(item_id)) for item_id in task.spec.waits_for}
        return Change({"status": Status.SCHEDULED, "waiting_on": (), "dependencies_ready": True,
                       "dependencies_seen": seen})
    if task.status is Status.WAITING and tuple(unmet) == task.waiting_on:
        return None
    return Change({"status": Status.WAITING, "waiting_on": tuple(unmet)})


def _success_of(state: DependencyState | None) -> datetime | None:
    return None if state is None else state.last_success_date


# -- operator actions ------------------------------------------------------------------------------


def cancel(task: Task, now: datetime) -> Change:
    """Any status but FAILED and CANCELLED -> CANCELLED (a COMPLETED one-shot too, as Apache Unomi allows).

    A RUNNING task keeps its lease: its node's next renewal fails, the run is
    stopped, and the node releases the lease once the run has stopped, so that
    nothing else starts the task while it still runs. Its run record is ended
    here, since its node will write nothing.
    """
    if task.status in (Status.FAILED, Status.CANCELLED):
        raise InvalidState(
            f"Task {task.item_id} is already {task.status.value}: a FAILED or CANCELLED task cannot be cancelled"
        )
    fields = {"status": Status.CANCELLED, "next_scheduled_execution": None}
    if task.status is not Status.RUNNING:
        return Change(fields)
    slot = current_slot(task)
    entry = history_entry(
        run_id=make_run_id(task.item_id, slot, task.attempt), scheduled_for=slot, attempt=task.attempt,
        node=task.lease_owner or "", started_at=task.last_execution_date, finished_at=now,
        outcome=Outcome.CANCELLED, error=CANCELLED_ERROR,
    )
    return Change(fields, entry, RunEnd(slot, task.attempt, Outcome.CANCELLED, finished_at=now, error=CANCELLED_ERROR))


def retry(task: Task, now: datetime, reset_failure_count: bool = False) -> Change:
    """FAILED or CANCELLED -> SCHEDULED, due now: one more attempt of the same slot.

    With ``reset_failure_count`` (or when the task never had a slot) it is a new
    slot at attempt 1, so the whole retry budget applies again.
    """
    _require(task, {Status.FAILED, Status.CANCELLED}, "only a FAILED or CANCELLED task can be retried")
    fresh = reset_failure_count or task.scheduled_for is None
    fields: dict[str, Any] = {
        "status": Status.SCHEDULED,
        "next_scheduled_execution": now,
        "scheduled_for": now if fresh else task.scheduled_for,
        "attempt": 1 if fresh else task.attempt,
        "expires_at": None,  # a retried one-shot must not be purged
    }
    if reset_failure_count:
        fields["failure_count"] = 0
    return Change(fields)


def resume(task: Task, now: datetime) -> Change:
    """CRASHED -> SCHEDULED, due now, the checkpoint kept."""
    _require(task, {Status.CRASHED}, "only a CRASHED task can be resumed")
    return Change({
        "status": Status.SCHEDULED, "next_scheduled_execution": now, "scheduled_for": current_slot(task),
        "attempt": task.attempt,
    })


def run_now(task: Task, now: datetime) -> Change:
    """Any status but RUNNING -> SCHEDULED, due now, as a new slot (attempt 1); the checkpoint kept.

    Refused for a held task: no claim would take it, and taking it would run what the operator
    (or the file) held."""
    if task.status is Status.RUNNING:
        raise InvalidState(f"Task {task.item_id} is RUNNING: it cannot be run again before this run ends")
    if not task.spec.enabled:
        where = f" in {task.spec.source}" if is_file_source(task.spec.source) else ""
        raise InvalidState(
            f"Task {task.item_id} is disabled (enabled: false{where}): it runs nothing until its spec enables it"
        )
    if task.suspended_at is not None:
        raise InvalidState(
            f"Task {task.item_id} is suspended (since {utc_iso(task.suspended_at)}): it runs nothing until it is "
            "unsuspended"
        )
    return Change({
        "status": Status.SCHEDULED, "next_scheduled_execution": now, "scheduled_for": now, "attempt": 1,
        "expires_at": None,
    })


def suspend(task: Task, now: datetime) -> Change:
    """Hold the task in whatever status it is: no claim takes it until ``unsuspend``.

    Nothing else changes: a run in progress finishes normally (its result moves the
    task on as usual, and the task stays suspended), a retry or a crash resume waits.
    """
    if task.suspended_at is not None:
        raise InvalidState(f"Task {task.item_id} is already suspended (since {utc_iso(task.suspended_at)})")
    return Change({"suspended_at": now})


def unsuspend(task: Task, now: datetime) -> Change:
    """End a suspension. The task is due when its kept slot is: slots that passed meanwhile
    go by its ``missedRuns`` policy, as after downtime (runOnce: one run now; skip: the late
    slot is skipped; runAll: each runs)."""
    if task.suspended_at is None:
        raise InvalidState(f"Task {task.item_id} is not suspended")
    return Change({"suspended_at": None})


# -- helpers ----------------------------------------------------------------------------------------


def current_slot(task: Task) -> datetime:
    """The slot of the task's next or running run (its due time when no slot was recorded)."""
    slot = task.scheduled_for or task.next_scheduled_execution or task.last_execution_date
    if slot is None:
        raise InvalidState(f"Task {task.item_id} has no slot")
    return slot


def _require(task: Task, allowed: set[Status], rule: str) -> None:
    if task.status not in allowed:
        raise InvalidState(f"Task {task.item_id} is {task.status.value}: {rule}")


def history_entry(
    *,
    run_id: str,
    scheduled_for: datetime,
    attempt: int,
    node: str,
    started_at: datetime | None,
    finished_at: datetime,
    outcome: Outcome,
    exit_code: int | None = None,
    error: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One entry of ``Task.history``: plain JSON, times in ISO 8601 UTC."""
    entry: dict[str, Any] = {
        "runId": run_id,
        "scheduledFor": utc_iso(scheduled_for),
        "attempt": attempt,
        "node": node,
        "startedAt": None if started_at is None else utc_iso(started_at),
        "finishedAt": utc_iso(finished_at),
        "outcome": str(outcome),
        "exitCode": exit_code,
        "error": error,
    }
    entry.update(extra)
    return entry
