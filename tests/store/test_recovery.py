"""Contract: expired leases seen and recovered at their exact boundary, abandoned runs, next due time."""

from __future__ import annotations

from datetime import timedelta

from scheduler.model import ExpiredLease, LeaseExpiries, Outcome, Status, TaskQuery

from .helpers import HOUR, LEASE, MS, add_task, claim_one, make_spec, success, write_stored_spec


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


async def test_lease_expiries_name_the_expired_leases_and_the_next_to_expire(store, peer, clock):
    assert await store.lease_expiries() == LeaseExpiries((), None)
    await add_task(store, clock(), "short")
    short = await claim_one(store, "a", lease=timedelta(seconds=10))
    await add_task(store, clock(), "long")
    long = await claim_one(store, "b", lease=timedelta(seconds=60))
    await add_task(store, clock() + HOUR, "later")
    assert await peer.next_due_time("c") == clock() + HOUR  # an expiring lease is no work to claim
    assert await peer.lease_expiries() == LeaseExpiries((), short.lease_until + MS)

    clock.set(short.lease_until)  # until == now: the lease still holds
    assert await peer.lease_expiries() == LeaseExpiries((), short.lease_until + MS)
    clock.advance(MS)
    assert await peer.lease_expiries() == LeaseExpiries(
        (ExpiredLease("short", short.fence, short.lease_until),), long.lease_until + MS
    )
    clock.set(long.lease_until + MS)
    assert await peer.lease_expiries() == LeaseExpiries(
        (ExpiredLease("short", short.fence, short.lease_until), ExpiredLease("long", long.fence, long.lease_until)),
        None,
    )


async def test_recover_only_the_leases_named(store, peer, clock):
    for name in ("x", "y"):
        await add_task(store, clock(), name)
    claims = {claim.item_id: claim for claim in await store.claim_due("a", 10, LEASE)}
    clock.advance(LEASE + MS)
    expired = {lease.item_id: lease for lease in (await peer.lease_expiries()).expired}
    assert [task.item_id for task in await peer.recover_expired("b", only=[expired["y"]])] == ["y"]
    assert (await peer.get_task("x")).status == Status.RUNNING
    assert await peer.recover_expired("b", only=[expired["y"]]) == []  # done once

    # A lease renewed since it was seen is another lease: it is not recovered, even once expired again.
    assert await store.renew_leases("a", [claims["x"]], LEASE) == set()
    clock.advance(LEASE + MS)
    assert await peer.recover_expired("b", only=[expired["x"]]) == []
    assert (await peer.get_task("x")).status == Status.RUNNING
    [again] = (await peer.lease_expiries()).expired
    assert again.fence == expired["x"].fence and again.until > expired["x"].until
    assert [task.item_id for task in await peer.recover_expired("b", only=[again])] == ["x"]


# -- a lease outlives its run's status: cancelled, retried, deleted, created again ----------------


async def cancel_and_retry(store, clock):
    """A run cancelled then retried: SCHEDULED and due, but still carrying the old run's lease."""
    await add_task(store, clock(), "t")
    claim = await claim_one(store, "a")
    await store.cancel("t")
    await store.retry("t")
    return claim


async def test_a_retried_cancel_waits_until_its_old_run_releases_the_lease(store, peer, clock):
    claim = await cancel_and_retry(store, clock)
    assert await peer.next_due_time("b") is None
    assert await peer.claim_due("b", 1, LEASE) == []
    assert await store.release_lease(claim)  # the old run stopped
    assert await peer.next_due_time("b") == clock()
    assert (await claim_one(peer, "b")).attempt == 2


async def test_an_expired_lease_of_a_cancelled_run_frees_the_task_only_once_recovered(store, peer, clock):
    claim = await cancel_and_retry(store, clock)
    clock.set(claim.lease_until + MS)
    # Its node may be paused with its machine, the old command still running: expired is not released.
    assert await peer.claim_due("b", 1, LEASE) == []
    assert await peer.next_due_time("b") is None
    assert (await peer.lease_expiries()).expired == (ExpiredLease("t", claim.fence, claim.lease_until),)

    assert await peer.recover_expired("b") == []  # released, not a crash: the task is not RUNNING
    task = await peer.get_task("t")
    assert task.status == Status.SCHEDULED and task.lease_owner is None and task.lease_until is None
    assert task.failure_count == 0 and [entry["outcome"] for entry in task.history] == ["cancelled"]
    assert await peer.lease_expiries() == LeaseExpiries((), None)
    assert (await claim_one(peer, "b")).attempt == 2
    assert not await store.release_lease(claim)  # the old node, late: nothing to release
    assert await store.renew_leases("a", [claim], LEASE) == {claim.run_id}


async def test_recovery_leaves_a_cancelled_runs_lease_renewed_since_it_was_seen(store, peer, clock):
    claim = await cancel_and_retry(store, clock)
    clock.set(claim.lease_until + MS)
    [seen] = (await peer.lease_expiries()).expired
    await store.renew_leases("a", [claim], LEASE)  # the paused node resumed and renewed
    assert await peer.recover_expired("b", only=[seen]) == []
    assert (await peer.get_task("t")).lease_owner == "a"


async def test_a_task_deleted_while_it_runs_and_created_again_waits_for_the_old_run(store, peer, clock):
    await add_task(store, clock(), "t")
    claim = await claim_one(store, "a")
    assert await store.remove_spec("t")
    clock.advance(LEASE / 3)
    assert await store.renew_leases("a", [claim], LEASE) == {claim.run_id}  # lost, and kept while it stops
    await add_task(peer, clock(), "t")
    task = await peer.get_task("t")
    assert task.status == Status.SCHEDULED and task.next_scheduled_execution == clock()
    assert (task.lease_owner, task.lease_until, task.fence) == ("a", clock() + LEASE, claim.fence)
    assert await peer.next_due_time("b") is None
    assert await peer.claim_due("b", 1, LEASE) == []

    assert await store.release_lease(claim)  # the old run stopped
    again = await claim_one(peer, "b")
    assert again.fence == claim.fence + 1
    assert await store.renew_leases("a", [claim], LEASE) == {claim.run_id}
    assert not await store.finish_run(claim, *success(claim, clock()))
    assert (await peer.get_task("t")).lease_owner == "b"


async def test_a_deleted_tasks_lease_that_expires_is_released_by_recovery(store, peer, clock):
    await add_task(store, clock(), "t")
    claim = await claim_one(store, "a")
    assert await store.remove_spec("t")
    clock.set(claim.lease_until + MS)
    seen = ExpiredLease("t", claim.fence, claim.lease_until)
    assert await peer.lease_expiries() == LeaseExpiries((seen,), None)
    assert await peer.recover_expired("b", only=[]) == []
    assert (await peer.lease_expiries()).expired == (seen,)  # only what was named
    assert await peer.recover_expired("b", only=[seen]) == []
    assert await peer.lease_expiries() == LeaseExpiries((), None)
    await add_task(peer, clock(), "t")
    assert (await peer.get_task("t")).lease_owner is None
    assert (await claim_one(peer, "b")).fence == claim.fence + 1


async def test_the_next_expiry_counts_the_leases_of_deleted_and_cancelled_tasks(store, clock):
    await add_task(store, clock(), "gone")
    gone = await claim_one(store, "a")
    clock.advance(timedelta(seconds=5))
    await add_task(store, clock(), "cancelled")
    cancelled = await claim_one(store, "a")
    await store.cancel("cancelled")
    assert (await store.lease_expiries()).next_expiry == gone.lease_until + MS
    await store.remove_spec("gone")
    assert (await store.lease_expiries()).next_expiry == gone.lease_until + MS
    assert await store.release_lease(gone)
    assert (await store.lease_expiries()).next_expiry == cancelled.lease_until + MS


async def test_a_task_created_again_never_reuses_a_fence_of_the_old_one(store, peer, clock):
    await add_task(store, clock(), "t")
    stale = await claim_one(store, "a")
    clock.set(stale.lease_until + MS)
    await peer.recover_expired("b")  # node a was frozen: it still believes it holds the run
    assert await peer.remove_spec("t")
    await add_task(peer, clock(), "t")
    again = await claim_one(store, "a")  # node a resumes and claims the new task first
    assert again.fence > stale.fence
    assert await store.renew_leases("a", [stale], LEASE) == {stale.run_id}
    assert not await store.finish_run(stale, *success(stale, clock()))
    assert await store.renew_leases("a", [again], LEASE) == set()


# -- the retry budget applies to crashes -------------------------------------------------------------


async def crash_by_expiry(store, clock, node: str = "a"):
    """Claim the task, let its lease expire, recover it: one crash."""
    claim = await claim_one(store, node)
    clock.set(claim.lease_until + MS)
    [task] = await store.recover_expired("b")
    return claim, task


async def test_a_one_shot_that_keeps_crashing_fails_once_its_attempts_are_spent(store, clock):
    await add_task(store, clock(), "t", schedule={"after": "0s"}, retry={"maxRetries": 1})
    _, task = await crash_by_expiry(store, clock)
    assert task.status == Status.CRASHED and task.attempt == 2 and task.failure_count == 1

    last, task = await crash_by_expiry(store, clock)
    assert task.status == Status.FAILED and task.failure_count == 2 and task.next_scheduled_execution is None
    assert "retry budget is spent" in task.last_error and task.attempt == last.attempt == 2
    assert task.history[0]["outcome"] == "crashed" and task.history[0]["attempt"] == 2
    assert await store.claim_due("a", 10, LEASE) == [] and await store.next_due_time("a") is None
    records = (await store.list_runs("t")).items
    assert [(record.attempt, record.outcome) for record in records] == [(2, Outcome.CRASHED), (1, Outcome.CRASHED)]


async def test_a_periodic_task_that_keeps_crashing_moves_on_to_its_next_slot(store, clock):
    await add_task(store, clock(), "t", retry={"maxRetries": 0})
    claim, task = await crash_by_expiry(store, clock)
    assert task.status == Status.SCHEDULED and task.attempt == 1 and task.failure_count == 1
    assert task.scheduled_for == claim.scheduled_for + HOUR
    assert await store.claim_due("a", 10, LEASE) == []  # nothing due before the next slot


async def test_runs_handed_back_at_shutdown_use_no_attempt(store, peer, clock):
    await add_task(store, clock(), "t", schedule={"after": "0s"}, retry={"maxRetries": 0})
    for attempt in (1, 2, 3):  # three rolling restarts, each in the middle of the run
        claim = await claim_one(store, f"node-{attempt}")
        assert claim.attempt == attempt
        await store.save_progress(claim, checkpoint={"offset": attempt}, details=None)
        assert await store.abandon_runs([claim], "Interrupted by scheduler shutdown") == ["t"]
        task = await peer.get_task("t")
        assert (task.status, task.attempt, task.interruptions, task.failure_count) == (
            Status.CRASHED, attempt + 1, attempt, 0)
        assert task.checkpoint_data == {"offset": attempt} and task.history[0]["outcome"] == "interrupted"
    runs = (await peer.list_runs("t")).items
    assert sorted((run.attempt, run.outcome) for run in runs) == [(n, Outcome.INTERRUPTED) for n in (1, 2, 3)]
    # maxRetries: 0 gives the slot one attempt, and it is still there: a crash now ends the task.
    _, task = await crash_by_expiry(store, clock)
    assert task.status == Status.FAILED and task.attempt == 4


async def test_the_hand_backs_of_one_slot_are_forgotten_in_the_next(store, clock):
    await add_task(store, clock(), "t", retry={"maxRetries": 0})  # every hour
    assert await store.abandon_runs([await claim_one(store, "a")], "Interrupted by scheduler shutdown") == ["t"]
    claim = await claim_one(store, "b")
    assert (claim.attempt, claim.task.interruptions) == (2, 1)
    await store.finish_run(claim, *success(claim, clock()))
    task = await store.get_task("t")
    assert (task.scheduled_for, task.attempt, task.interruptions) == (claim.scheduled_for + HOUR, 1, 0)


async def test_a_manual_retry_after_crashes_is_one_more_attempt(store, clock):
    await add_task(store, clock(), "t", schedule={"after": "0s"}, retry={"maxRetries": 0})
    await crash_by_expiry(store, clock)
    assert (await store.retry("t")).attempt == 2
    assert (await claim_one(store, "a")).attempt == 2


# -- claims handed back before their runs started ------------------------------------------------------


async def test_release_claims_puts_a_task_back_as_it_was_before_its_claim(store, peer, clock):
    await add_task(store, clock() + timedelta(seconds=5), "t")
    before = await store.get_task("t")
    [claim] = await store.claim_due("a", 1, LEASE, horizon=timedelta(seconds=10))
    assert await store.release_claims([claim]) == ["t"]
    task = await peer.get_task("t")
    assert task.status == Status.SCHEDULED and task.attempt == before.attempt == 1
    assert task.next_scheduled_execution == before.next_scheduled_execution
    assert task.lease_owner is None and task.history == [] and task.last_execution_date is None
    assert task.last_error is None and task.failure_count == 0
    assert (await peer.list_runs("t")).total == 0
    assert await store.release_claims([claim]) == []  # fenced: nothing more to release

    clock.advance(timedelta(seconds=5))
    again = await claim_one(peer, "b")  # the same slot and attempt can start after all
    assert (again.scheduled_for, again.attempt) == (claim.scheduled_for, claim.attempt)


# -- a cancelled run's lease ----------------------------------------------------------------------------


async def test_a_cancelled_runs_lease_is_renewed_until_its_node_releases_it(store, clock):
    await add_task(store, clock(), "t")
    claim = await claim_one(store, "a")
    await store.cancel("t")
    await store.retry("t")  # due now, yet the cancelled run is still stopping on node a
    clock.advance(LEASE - MS)
    assert await store.renew_leases("a", [claim], LEASE) == {claim.run_id}  # reported lost, but held on
    clock.set(claim.lease_until + MS)
    assert await store.claim_due("b", 1, LEASE) == []  # the renewal moved the lease on

    assert await store.release_lease(claim) is True  # the run has stopped
    task = await store.get_task("t")
    assert task.lease_owner is None and task.lease_until is None and task.status == Status.SCHEDULED
    assert (await claim_one(store, "b")).attempt == 2
    assert await store.release_lease(claim) is False


async def test_release_lease_never_frees_a_running_task(store, clock):
    await add_task(store, clock(), "t")
    claim = await claim_one(store, "a")
    assert await store.release_lease(claim) is False
    assert (await store.get_task("t")).lease_owner == "a"


async def test_a_renewal_that_races_a_finish_reports_the_run_lost_and_writes_nothing(store, clock):
    await add_task(store, clock(), "t")
    claim = await claim_one(store, "a")
    await store.finish_run(claim, *success(claim, clock()))
    assert await store.renew_leases("a", [claim], LEASE) == {claim.run_id}
    assert (await store.get_task("t")).lease_until is None


# -- a stored spec that no longer parses ---------------------------------------------------------------


async def test_a_task_whose_stored_spec_cannot_be_used_fails_alone_and_stays_readable(store, clock):
    await add_task(store, clock(), "broken")
    await add_task(store, clock(), "healthy")
    # As a newer version, or a system without this time zone, would leave it.
    await write_stored_spec(store, "broken", {"name": "broken", "schedule": {"every": "1h", "timezone": "Mars/Olympus"}})

    [claim] = await store.claim_due("a", 10, LEASE)
    assert claim.item_id == "healthy"
    broken = await store.get_task("broken")
    assert broken.status == Status.FAILED and broken.next_scheduled_execution is None
    assert broken.last_error.startswith("its stored spec cannot be used") and "Mars/Olympus" in broken.last_error
    assert "its stored spec cannot be used" in broken.spec.description and not broken.spec.enabled
    page = await store.query_tasks(TaskQuery(status=Status.FAILED))
    assert [task.item_id for task in page.items] == ["broken"]
    assert await store.remove_spec("broken") is True  # an operator can still get rid of it
