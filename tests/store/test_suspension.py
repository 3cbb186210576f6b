"""Contract: an operator's suspension holds a task in any status; claims skip it until it ends."""

from __future__ import annotations

from datetime import timedelta

import pytest

from scheduler.errors import InvalidState, TaskNotFound
from scheduler.model import Outcome, Requirement, Retention, RunResult, Status, TaskQuery
from scheduler.policy import after_run

from .helpers import HOUR, LEASE, MS, add_task, claim_one, make_spec


async def _claimed(store) -> list[str]:
    return [claim.item_id for claim in await store.claim_due("a", 10, LEASE)]


async def test_a_suspended_task_is_never_claimed_nor_counted_waiting(store, clock):
    await add_task(store, clock(), "held")
    await add_task(store, clock() + HOUR, "other")
    task = await store.suspend("held")
    assert task.suspended_at == clock() and task.status == Status.SCHEDULED

    clock.advance(2 * HOUR)
    assert await store.next_due_time("a") == clock() - HOUR  # "other"'s slot: the held one is not work
    assert await store.count_waiting() == {Requirement("other"): 1}  # no run: section: its type
    assert await _claimed(store) == ["other"]
    held = await store.get_task("held")
    assert (held.status, held.fence, held.next_scheduled_execution) == (Status.SCHEDULED, 0, clock() - 2 * HOUR)


async def test_unsuspend_makes_the_kept_slot_due_as_it_was(store, clock):
    slot = clock()
    await add_task(store, slot, "t")
    await store.suspend("t")
    clock.advance(3 * HOUR)  # three slots pass while it is held
    task = await store.unsuspend("t")
    assert task.suspended_at is None and task.next_scheduled_execution == slot
    claim = await claim_one(store)
    # The engine's policy (missedRuns) decides from this slot what the missed ones become.
    assert (claim.scheduled_for, claim.attempt) == (slot, 1)


async def test_a_run_in_progress_finishes_normally_and_the_task_stays_held(store, clock):
    await add_task(store, clock(), "t")
    claim = await claim_one(store)
    await store.suspend("t")
    assert await store.renew_leases("a", [claim], LEASE) == set()  # the run is not stopped
    clock.advance(timedelta(seconds=5))
    transition = after_run(claim, Outcome.SUCCESS, None, clock(), Retention())
    assert await store.finish_run(claim, RunResult(Outcome.SUCCESS, clock()), transition)
    task = await store.get_task("t")
    assert (task.status, task.success_count, task.suspended_at) == (Status.SCHEDULED, 1, claim.started_at)
    clock.advance(2 * HOUR)
    assert await _claimed(store) == []


async def test_a_crashed_task_held_by_a_suspension_waits(store, clock):
    await add_task(store, clock(), "t")
    await claim_one(store, "b")
    await store.suspend("t")
    clock.advance(LEASE + MS)
    assert [task.item_id for task in await store.recover_expired("c")] == ["t"]  # the crash is recorded
    assert (await store.get_task("t")).status == Status.CRASHED
    assert await _claimed(store) == []
    await store.unsuspend("t")
    assert await _claimed(store) == ["t"]


async def test_the_suspension_survives_spec_updates_and_goes_with_the_task(store, clock):
    await add_task(store, clock(), "t")
    suspended_at = (await store.suspend("t")).suspended_at
    await store.upsert_spec(make_spec("t", schedule={"every": "2h"}, description="new"), first_due=clock() + HOUR)
    task = await store.get_task("t")
    assert task.spec.description == "new" and task.suspended_at == suspended_at
    clock.advance(2 * HOUR)
    assert await _claimed(store) == []

    assert await store.remove_spec("t")
    await add_task(store, clock(), "t")
    assert not (await store.get_task("t")).suspended
    assert await _claimed(store) == ["t"]


@pytest.mark.parametrize("status", [Status.SCHEDULED, Status.RUNNING, Status.FAILED, Status.CANCELLED])
async def test_any_status_can_be_suspended_and_keeps_it(store, clock, status):
    await add_task(store, clock(), "t", schedule={"after": "0s"}, retry={"maxRetries": 0})
    if status == Status.CANCELLED:
        await store.cancel("t")
    elif status != Status.SCHEDULED:
        claim = await claim_one(store)
        if status == Status.FAILED:
            transition = after_run(claim, Outcome.FAILURE, "boom", clock(), Retention())
            await store.finish_run(claim, RunResult(Outcome.FAILURE, clock(), error="boom"), transition)
    before = await store.get_task("t")
    task = await store.suspend("t")
    assert task.status == status and task.fence == before.fence and task.attempt == before.attempt


async def test_suspending_twice_or_unsuspending_a_running_one_is_refused_and_changes_nothing(store, clock):
    await add_task(store, clock(), "t")
    with pytest.raises(InvalidState, match="^Task t is not suspended$"):
        await store.unsuspend("t")
    first = await store.suspend("t")
    clock.advance(timedelta(minutes=1))
    with pytest.raises(InvalidState, match=r"^Task t is already suspended \(since 2030-01-01T12:00:00Z\)$"):
        await store.suspend("t")
    assert await store.get_task("t") == first
    for verb in (store.suspend, store.unsuspend):
        with pytest.raises(TaskNotFound):
            await verb("nope")


async def test_run_now_is_refused_while_held_and_changes_nothing(store, clock):
    await add_task(store, clock() + HOUR, "suspended")
    await store.suspend("suspended")
    await add_task(store, clock() + HOUR, "disabled", enabled=False)
    for name, reason in (("suspended", "suspended"), ("disabled", "disabled")):
        before = await store.get_task(name)
        with pytest.raises(InvalidState, match=f"^Task {name} is {reason} "):
            await store.run_now(name)
        assert await store.get_task(name) == before


async def test_query_by_enabled_and_suspended(store, clock):
    await add_task(store, clock(), "plain")
    await add_task(store, clock(), "disabled", enabled=False)
    await add_task(store, clock(), "suspended")
    await store.suspend("suspended")

    async def names(**filters) -> list[str]:
        page = await store.query_tasks(TaskQuery(limit=0, **filters))
        assert page.items == []  # a count only
        return page.total

    assert await names(suspended=True) == 1 and await names(suspended=False) == 2
    assert await names(enabled=False) == 1 and await names(enabled=True, suspended=False) == 1
    listed = await store.query_tasks(TaskQuery(suspended=True))
    assert [task.item_id for task in listed.items] == ["suspended"]
