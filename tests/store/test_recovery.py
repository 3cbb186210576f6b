"""Contract: expired leases recovered at their exact boundary, abandoned runs, next due time."""

from __future__ import annotations

from datetime import timedelta

from scheduler.model import Outcome, Status

from .helpers import HOUR, LEASE, MS, add_task, claim_one, make_spec


async def test_recover_waits_for_the_exact_boundary(store, peer, clock):
    await add_task(store, clock(), "t")
    claim = await claim_one(store, "a")
    await store.save_progress(claim, checkpoint={"offset": 7}, details={"done": 7})
    clock.set(claim.lease_until)  # until == now: the lease still holds
    assert await peer.recover_expired("b") == []
    assert (await peer.get_task("t")).status == Status.RUNNING

    clock.advance(MS)  # until < now: expired
    [task] = await peer.recover_expired("b")
    assert task.item_id == "t" and task.status == Status.CRASHED
    assert task == await peer.get_task("t")
    assert task.attempt == 2 and task.next_scheduled_execution == clock()
    assert task.scheduled_for == claim.scheduled_for
    assert task.lease_owner is None and task.lease_until is None and task.fence == claim.fence
    assert task.checkpoint_data == {"offset": 7}
    assert task.status_details == {"done": 7, "crashTime": "2030-01-01T12:00:30.001Z", "crashedNode": "a"}
    assert "a" in task.last_error and "lease" in task.last_error
    entry = task.history[0]
    assert (entry["runId"], entry["outcome"], entry["node"], entry["recoveredBy"]) == (
        claim.run_id, "crashed", "a", "b")
    record = (await peer.list_runs("t")).items[0]
    assert record.outcome == Outcome.CRASHED and record.finished_at == clock() and record.error == task.last_error
    assert await peer.recover_expired("b") == []  # done once


async def test_recovered_task_resumes_from_its_checkpoint(store, peer, clock):
    await add_task(store, clock(), "t")
    first = await claim_one(store, "a")
    await store.save_progress(first, checkpoint={"offset": 7})
    clock.advance(LEASE + MS)
    await peer.recover_expired("b")
    second = await claim_one(peer, "b")
    assert second.attempt == 2 and second.scheduled_for == first.scheduled_for
    assert second.task.checkpoint_data == {"offset": 7}
    assert second.fence == first.fence + 1 and second.run_id != first.run_id


async def test_recover_leaves_manual_tasks_crashed(store, clock):
    await add_task(store, clock(), "t", onCrash="manual")
    await claim_one(store, "a")
    clock.advance(LEASE + MS)
    [task] = await store.recover_expired("b")
    assert task.status == Status.CRASHED
    assert await store.claim_due("b", 10, LEASE) == []
    await store.resume("t")
    assert (await claim_one(store, "b")).attempt == 2


async def test_recover_only_touches_expired_running_tasks(store, clock):
    await add_task(store, clock(), "short")
    await claim_one(store, "a", lease=timedelta(seconds=10))
    await add_task(store, clock(), "long")
    await claim_one(store, "a", lease=timedelta(seconds=60))
    await add_task(store, clock() - HOUR, "scheduled")
    clock.advance(timedelta(seconds=30))
    assert [task.item_id for task in await store.recover_expired("b")] == ["short"]
    assert (await store.get_task("long")).status == Status.RUNNING
    assert (await store.get_task("scheduled")).status == Status.SCHEDULED


async def test_abandon_runs_marks_own_claims_crashed_at_once(store, peer, clock):
    for name in ("x", "y"):
        await add_task(store, clock(), name)
    claims = await store.claim_due("a", 10, LEASE)
    await store.cancel("y")
    marked = await store.abandon_runs(claims, "Interrupted by scheduler shutdown")
    assert marked == ["x"]
    task = await peer.get_task("x")
    assert task.status == Status.CRASHED and task.last_error == "Interrupted by scheduler shutdown"
    assert task.status_details["crashedNode"] == "a" and task.attempt == 2
    assert (await peer.get_task("y")).status == Status.CANCELLED
    assert [claim.item_id for claim in await peer.claim_due("b", 10, LEASE)] == ["x"]
    assert await store.abandon_runs(claims, "again") == []  # fenced: the claims are stale now


async def test_next_due_time(store, clock):
    assert await store.next_due_time("a") is None
    await add_task(store, clock() + HOUR, "later")
    await add_task(store, clock() + timedelta(minutes=10), "disabled", enabled=False)
    await store.upsert_spec(make_spec("pinned"), node="b", first_due=clock() + timedelta(minutes=5))
    await add_task(store, clock() + timedelta(minutes=20), "elsewhere", nodes=["b"])
    assert await store.next_due_time("a") == clock() + HOUR
    assert await store.next_due_time("b") == clock() + timedelta(minutes=5)


async def test_next_due_time_includes_the_first_instant_a_lease_counts_expired(store, clock):
    await add_task(store, clock(), "t")
    claim = await claim_one(store, "a")
    await add_task(store, clock() + HOUR, "later")
    assert await store.next_due_time("b") == claim.lease_until + MS
    clock.set(claim.lease_until + MS)
    assert [task.item_id for task in await store.recover_expired("b")] == ["t"]


async def test_next_due_time_waits_for_a_cancelled_runs_lease(store, clock):
    await add_task(store, clock(), "t")
    claim = await claim_one(store, "a")
    await store.cancel("t")
    await store.retry("t")  # due now, but the killed run's lease still holds
    assert await store.next_due_time("a") == claim.lease_until + MS
    assert await store.claim_due("a", 1, LEASE) == []
    clock.set(claim.lease_until + MS)
    assert (await claim_one(store, "a")).attempt == 2
