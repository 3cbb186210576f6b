"""The status machine as tables: every status against every event, and the retry budget of crashes."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from scheduler import policy
from scheduler.errors import InvalidState
from scheduler.model import Claim, Outcome, Retention, RunResult, Status, Task
from scheduler.spec import TaskSpec

NOW = datetime(2030, 1, 1, 12, tzinfo=timezone.utc)
SLOT = NOW - timedelta(minutes=5)
ROOT = Path(__file__).resolve().parents[2]


def make_task(status: Status, *, one_shot: bool = False, max_retries: int = 3, attempt: int = 1, **state) -> Task:
    schedule = {"after": "0s"} if one_shot else {"every": "1h"}
    spec = TaskSpec.from_dict({"name": "t", "schedule": schedule, "retry": {"maxRetries": max_retries}})
    running = status is Status.RUNNING
    return Task(
        item_id="t", spec=spec, spec_hash="h", status=status, scheduled_for=SLOT, attempt=attempt,
        next_scheduled_execution=None if running else SLOT, last_execution_date=SLOT if running else None,
        lease_owner="a" if running else None, lease_until=NOW + timedelta(seconds=30) if running else None,
        fence=4, **state,
    )


def apply(event: str, task: Task) -> policy.Change:
    return {
        "cancel": lambda: policy.cancel(task, NOW),
        "retry": lambda: policy.retry(task, NOW),
        "resume": lambda: policy.resume(task, NOW),
        "run now": lambda: policy.run_now(task, NOW),
        "crash": lambda: policy.crash(task, NOW, error="gone", crashed_node="a", recovered_by="b",
                                      retention=Retention()),
        "interrupt": lambda: policy.interrupt(task, NOW, reason="stopping", node="a", retention=Retention()),
    }[event]()


EVENTS = ["cancel", "retry", "resume", "run now", "crash", "interrupt"]
STATUSES = list(Status)

# status -> event -> the status that follows, or None for a refusal.
TABLE = {
    Status.SCHEDULED: {"cancel": Status.CANCELLED, "retry": None, "resume": None, "run now": Status.SCHEDULED,
                       "crash": None, "interrupt": None},
    Status.RUNNING: {"cancel": Status.CANCELLED, "retry": None, "resume": None, "run now": None,
                     "crash": Status.CRASHED, "interrupt": Status.CRASHED},
    Status.WAITING: {"cancel": Status.CANCELLED, "retry": None, "resume": None, "run now": Status.SCHEDULED,
                     "crash": None, "interrupt": None},
    Status.COMPLETED: {"cancel": Status.CANCELLED, "retry": None, "resume": None, "run now": Status.SCHEDULED,
                       "crash": None, "interrupt": None},
    Status.FAILED: {"cancel": None, "retry": Status.SCHEDULED, "resume": None, "run now": Status.SCHEDULED,
                    "crash": None, "interrupt": None},
    Status.CANCELLED: {"cancel": None, "retry": Status.SCHEDULED, "resume": None, "run now": Status.SCHEDULED,
                       "crash": None, "interrupt": None},
    Status.CRASHED: {"cancel": Status.CANCELLED, "retry": None, "resume": Status.SCHEDULED,
                     "run now": Status.SCHEDULED, "crash": None, "interrupt": None},
}


@pytest.mark.parametrize("status", STATUSES, ids=str)
@pytest.mark.parametrize("event", EVENTS)
def test_every_status_against_every_event(status, event):
    expected = TABLE[status][event]
    task = make_task(status)
    if expected is None:
        with pytest.raises(InvalidState, match=f"^Task t is (already )?{status.value}: "):
            apply(event, task)
    else:
        assert apply(event, task).status is expected


def test_the_readme_table_is_the_policy_table():
    """The README's status machine lists exactly the operator transitions the policy allows."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### The status machine", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    documented = {}
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        statuses = re.findall(r"`([A-Z]+)`", cells[0])
        event = cells[1].strip("`")
        follows = re.findall(r"`([A-Z]+)`", cells[2])
        for status in statuses:
            documented[(Status(status), event)] = {Status(name) for name in follows}
    for status in STATUSES:
        for event in EVENTS:
            expected = TABLE[status][event]
            if expected is None:
                assert (status, event) not in documented, f"README allows {event} from {status}"
            else:
                assert expected in documented.get((status, event), set()), f"README lacks {event} from {status}"


def test_a_cancel_keeps_a_running_tasks_lease_and_ends_its_run():
    change = policy.cancel(make_task(Status.RUNNING), NOW)
    assert "lease_owner" not in change.fields and "lease_until" not in change.fields
    assert change.run_end.outcome is Outcome.CANCELLED and change.history["outcome"] == "cancelled"
    assert policy.cancel(make_task(Status.SCHEDULED), NOW).run_end is None


@pytest.mark.parametrize(
    ("one_shot", "attempt", "max_retries", "status", "next_attempt"),
    [
        (True, 1, 1, Status.CRASHED, 2),  # an attempt left: resumable at once
        (True, 2, 1, Status.FAILED, 2),  # the budget is spent: the one-shot fails
        (False, 2, 1, Status.SCHEDULED, 1),  # the budget is spent: the next slot
        (True, 1, 0, Status.FAILED, 1),
    ],
)
def test_a_crash_consumes_an_attempt(one_shot, attempt, max_retries, status, next_attempt):
    task = make_task(Status.RUNNING, one_shot=one_shot, attempt=attempt, max_retries=max_retries, failure_count=2,
                     status_details={"done": 3}, checkpoint_data={"offset": 7})
    change = apply("crash", task)
    fields = change.fields
    assert (fields["status"], fields["attempt"], fields["failure_count"]) == (status, next_attempt, 3)
    assert fields["lease_owner"] is None and fields["lease_until"] is None and "checkpoint_data" not in fields
    assert fields["status_details"] == {"done": 3, "crashTime": "2030-01-01T12:00:00Z", "crashedNode": "a"}
    assert change.run_end.outcome is Outcome.CRASHED and change.history["recoveredBy"] == "b"
    if status is Status.CRASHED:
        assert fields["next_scheduled_execution"] == NOW and fields["last_error"] == "gone"
    else:
        assert fields["last_error"] == "gone; its retry budget is spent"
    if not one_shot and status is Status.SCHEDULED:
        assert fields["scheduled_for"] == SLOT + timedelta(hours=1)


@pytest.mark.parametrize("max_retries", [0, 2])
def test_a_hand_back_at_shutdown_uses_no_attempt(max_retries):
    """Rolling restarts must not fail a long run: ten hand-backs of one slot leave its whole retry budget."""
    state = {"failure_count": 2, "status_details": {"done": 3}, "checkpoint_data": {"offset": 7}}
    task = make_task(Status.RUNNING, one_shot=True, max_retries=max_retries, **state)
    for hand_back in range(1, policy.FREE_INTERRUPTIONS + 1):
        change = policy.interrupt(task, NOW, reason="stopping", node="a", retention=Retention())
        fields = change.fields
        assert (fields["status"], fields["attempt"], fields["interruptions"]) == (Status.CRASHED, hand_back + 1,
                                                                               hand_back)
        assert fields["next_scheduled_execution"] == NOW and fields["scheduled_for"] == SLOT
        assert fields["last_error"] == "stopping" and "failure_count" not in fields and "checkpoint_data" not in fields
        assert fields["status_details"] == {"done": 3, "crashTime": "2030-01-01T12:00:00Z", "crashedNode": "a"}
        assert change.run_end.outcome is Outcome.INTERRUPTED and change.run_end.attempt == hand_back
        assert change.history["outcome"] == "interrupted" and change.history["attempt"] == hand_back
        task = make_task(Status.RUNNING, one_shot=True, max_retries=max_retries, attempt=hand_back + 1,
                         interruptions=hand_back, **state)  # claimed again
    # The budget is whole: the next run's failures get every retry, a crash uses one attempt.
    claim = Claim(task=task, node_id="b", fence=4, run_id="r", scheduled_for=SLOT, attempt=task.attempt,
                  started_at=NOW, lease_until=NOW + timedelta(seconds=30))
    after = policy.after_run(claim, Outcome.FAILURE, "boom", NOW, Retention())
    assert after.status is (Status.SCHEDULED if max_retries else Status.FAILED)
    if max_retries:
        assert after.next_scheduled_execution == NOW + task.spec.retry.delay(1)  # the first retry's delay
    assert apply("crash", task).status is (Status.CRASHED if max_retries else Status.FAILED)
    # One more hand-back than the free ones is a crash: a task that stops its own node comes to an end.
    beyond = apply("interrupt", task)
    assert beyond.status is (Status.CRASHED if max_retries else Status.FAILED)
    assert beyond.run_end.outcome is Outcome.CRASHED and "counted as a crash" in beyond.fields["last_error"]


def test_a_claim_released_before_it_started_goes_back_as_it_was():
    task = make_task(Status.RUNNING)
    claim = Claim(task=task, node_id="a", fence=4, run_id="t:1:1", scheduled_for=SLOT, attempt=1, started_at=NOW,
                  lease_until=NOW + timedelta(seconds=30), previous_execution_date=SLOT - timedelta(hours=1))
    change = policy.release(claim)
    assert change.fields == {"status": Status.SCHEDULED, "lease_owner": None, "lease_until": None,
                             "last_execution_date": SLOT - timedelta(hours=1)}
    assert change.history is None and change.run_end.outcome is None  # the record goes, no history


def test_a_finish_releases_the_lease_and_clears_the_checkpoint_only_on_success():
    task = make_task(Status.RUNNING)
    claim = Claim(task=task, node_id="a", fence=4, run_id="t:1:1", scheduled_for=SLOT, attempt=1, started_at=SLOT,
                  lease_until=NOW)
    for outcome, cleared in ((Outcome.SUCCESS, True), (Outcome.FAILURE, False)):
        result = RunResult(outcome, NOW, exit_code=0, output="out")
        change = policy.finish(claim, result, policy.after_run(claim, outcome, None, NOW, Retention()))
        assert change.fields["lease_owner"] is None and ("checkpoint_data" in change.fields) is cleared
        assert change.run_end.output == "out" and change.history["outcome"] == outcome.value


def test_retry_with_reset_is_a_fresh_slot_with_the_whole_budget():
    task = make_task(Status.FAILED, attempt=4, failure_count=4)
    assert policy.retry(task, NOW).fields["attempt"] == 4 and "failure_count" not in policy.retry(task, NOW).fields
    fresh = policy.retry(task, NOW, reset_failure_count=True).fields
    assert (fresh["scheduled_for"], fresh["attempt"], fresh["failure_count"]) == (NOW, 1, 0)


def dependent(**state) -> Task:
    spec = TaskSpec.from_dict({"name": "d", "schedule": {"every": "1h"}, "dependsOn": ["a", "b"]})
    fields = {"status": Status.SCHEDULED, "creation_date": SLOT, **state}
    return Task(item_id="d", spec=spec, spec_hash="h", **fields)


def states(**dependencies) -> dict:
    from scheduler.model import DependencyState

    return {name: DependencyState(name, status, success) for name, (status, success) in dependencies.items()}


@pytest.mark.parametrize(
    ("a", "seen", "met"),
    [
        ((Status.SCHEDULED, SLOT), {}, True),  # a success at the very instant the dependent was created
        ((Status.SCHEDULED, SLOT - timedelta(seconds=1)), {}, False),  # before the dependent existed
        ((Status.SCHEDULED, SLOT), {"a": SLOT}, False),  # the success its last run consumed
        ((Status.SCHEDULED, NOW), {"a": SLOT}, True),  # a new one
        ((Status.COMPLETED, SLOT - timedelta(days=1)), {"a": SLOT}, True),  # a completed one-shot, whenever
        ((Status.FAILED, None), {}, False),
        ((Status.SCHEDULED, None), {}, False),  # never succeeded
    ],
)
def test_when_a_dependency_is_met(a, seen, met):
    task = dependent(dependencies_seen=seen)
    found = states(a=a, b=(Status.COMPLETED, NOW))
    assert policy.unmet_dependencies(task, found) == ([] if met else ["a"])
    assert policy.unmet_dependencies(task, {}) == ["a", "b"]  # missing tasks are waited for


def test_settling_a_dependent():
    ready = policy.settle_dependencies(dependent(), states(a=(Status.SCHEDULED, NOW), b=(Status.COMPLETED, SLOT)))
    assert ready.fields == {"status": Status.SCHEDULED, "waiting_on": (), "dependencies_ready": True,
                            "dependencies_seen": {"a": NOW, "b": SLOT}}
    waiting = policy.settle_dependencies(dependent(), states(a=(Status.SCHEDULED, NOW)))
    assert waiting.fields == {"status": Status.WAITING, "waiting_on": ("b",)}
    unchanged = dependent(status=Status.WAITING, waiting_on=("b",))
    assert policy.settle_dependencies(unchanged, states(a=(Status.SCHEDULED, NOW))) is None


@pytest.mark.parametrize("status", STATUSES, ids=str)
def test_suspend_and_unsuspend_keep_the_status_slot_and_counters(status):
    task = make_task(status, failure_count=2)
    change = policy.suspend(task, NOW)
    assert change.fields == {"suspended_at": NOW} and change.history is None and change.run_end is None
    held = make_task(status, failure_count=2, suspended_at=NOW)
    assert held.held and policy.unsuspend(held, NOW + timedelta(hours=1)).fields == {"suspended_at": None}


def test_suspend_and_unsuspend_refuse_what_would_change_nothing():
    with pytest.raises(InvalidState, match=r"^Task t is already suspended \(since 2030-01-01T11:00:00Z\)$"):
        policy.suspend(make_task(Status.SCHEDULED, suspended_at=NOW - timedelta(hours=1)), NOW)
    with pytest.raises(InvalidState, match="^Task t is not suspended$"):
        policy.unsuspend(make_task(Status.SCHEDULED), NOW)


@pytest.mark.parametrize("status", [s for s in STATUSES if s is not Status.RUNNING], ids=str)
def test_run_now_refuses_a_held_task(status):
    with pytest.raises(InvalidState, match=r"^Task t is suspended \(since 2030-01-01T12:00:00Z\): it runs nothing"):
        policy.run_now(make_task(status, suspended_at=NOW), NOW)
    disabled = make_task(status)
    disabled.spec = TaskSpec.from_dict({"name": "t", "schedule": {"every": "1h"}, "enabled": False})
    with pytest.raises(InvalidState, match=r"^Task t is disabled \(enabled: false\): it runs nothing"):
        policy.run_now(disabled, NOW)
