"""Contract: claim eligibility, leases at their exact boundary, renew, progress, finish, fencing."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from scheduler.model import HISTORY_LIMIT, Outcome, Status, TaskQuery

from .helpers import HOUR, LEASE, MS, add_task, claim_one, failure, final, make_spec, success


async def _due_now(store, clock):
    await add_task(store, clock(), "t")


async def _due_in_the_past(store, clock):
    await add_task(store, clock() - HOUR, "t")


async def _due_in_1ms(store, clock):
    await add_task(store, clock() + MS, "t")


async def _never_due(store, clock):
    await add_task(store, None, "t")


async def _disabled(store, clock):
    await add_task(store, clock(), "t", enabled=False)


async def _suspended(store, clock):
    await add_task(store, clock(), "t")
    await store.suspend("t")


async def _unsuspended(store, clock):
    await _suspended(store, clock)
    await store.unsuspend("t")


async def _pinned_to_me(store, clock):
    await store.upsert_spec(make_spec("t"), item_id="t", node="a", first_due=clock())


async def _pinned_to_other_node(store, clock):
    await store.upsert_spec(make_spec("t"), item_id="t", node="b", first_due=clock())


async def _nodes_include_me(store, clock):
    await add_task(store, clock(), "t", nodes=["b", "a"])


async def _nodes_exclude_me(store, clock):
    await add_task(store, clock(), "t", nodes=["b", "c"])


async def _crash(store, clock, on_crash):
    await add_task(store, clock(), "t", onCrash=on_crash)
    await claim_one(store, "b")
    clock.advance(LEASE + MS)
    assert [task.item_id for task in await store.recover_expired("c")] == ["t"]


async def _crashed_resume(store, clock):
    await _crash(store, clock, "resume")


async def _crashed_manual(store, clock):
    await _crash(store, clock, "manual")


async def _running_elsewhere(store, clock):
    await add_task(store, clock(), "t")
    await claim_one(store, "b")


async def _final(store, clock, status):
    await add_task(store, clock(), "t", schedule={"at": "2030-01-01T12:00:00Z"})
    claim = await claim_one(store, "b")
    await store.finish_run(claim, *final(claim, clock(), status))


async def _completed(store, clock):
    await _final(store, clock, Status.COMPLETED)


async def _failed(store, clock):
    await _final(store, clock, Status.FAILED)


async def _cancelled(store, clock):
    await add_task(store, clock(), "t")
    await store.cancel("t")


async def _lease(store, clock, offset):
    """A run cancelled then retried: SCHEDULED, but still carrying the old run's lease."""
    await add_task(store, clock(), "t")
    claim = await claim_one(store, "b")
    await store.cancel("t")
    await store.retry("t")
    clock.set(claim.lease_until + offset)


async def _lease_held_at_until(store, clock):
    await _lease(store, clock, timedelta(0))


async def _lease_held_1ms_before_until(store, clock):
    await _lease(store, clock, -MS)


async def _lease_expired_1ms_after_until(store, clock):
    """Expired is not released: the old run may still be stopping on a node paused with its machine."""
    await _lease(store, clock, MS)


async def _lease_expired_and_recovered(store, clock):
    await _lease(store, clock, MS)
    assert await store.recover_expired("c") == []  # released, not a crash: the task is not RUNNING


@pytest.mark.parametrize(
    ("setup", "claimable"),
    [
        (_due_now, True),
        (_due_in_the_past, True),
        (_due_in_1ms, False),
        (_never_due, False),
        (_disabled, False),
        (_suspended, False),
        (_unsuspended, True),
        (_pinned_to_me, True),
        (_pinned_to_other_node, False),
        (_nodes_include_me, True),
        (_nodes_exclude_me, False),
        (_crashed_resume, True),
        (_crashed_manual, False),
        (_running_elsewhere, False),
        (_completed, False),
        (_failed, False),
        (_cancelled, False),
        (_lease_held_1ms_before_until, False),
        (_lease_held_at_until, False),
        (_lease_expired_1ms_after_until, False),
        (_lease_expired_and_recovered, True),
    ],
    ids=lambda value: value.__name__.lstrip("_") if callable(value) else ("claimed" if value else "not-claimed"),
)
async def test_claim_eligibility(store, clock, setup, claimable):
    await setup(store, clock)
    before = await store.get_task("t")
    claims = await store.claim_due("a", 10, LEASE)
    after = await store.get_task("t")
    if claimable:
        assert [claim.item_id for claim in claims] == ["t"]
        assert after.status == Status.RUNNING and after.lease_owner == "a" and after.fence == before.fence + 1
    else:
        assert claims == []
        assert (after.status, after.fence, after.lease_owner) == (before.status, before.fence, before.lease_owner)


async def test_claim_sets_the_lease_and_returns_the_run(store, clock):
    await add_task(store, clock() - timedelta(seconds=5), "t")
    claim = await claim_one(store, "a")
    assert claim.node_id == "a" and claim.fence == 1 and claim.attempt == 1
    assert claim.started_at == clock() and claim.lease_until == clock() + LEASE
    assert claim.scheduled_for == clock() - timedelta(seconds=5)
    assert claim.run_id == f"t:{int(claim.scheduled_for.timestamp() * 1000)}:1"
    assert claim.task.status == Status.RUNNING and claim.task.fence == 1
    task = await store.get_task("t")
    assert (task.lease_owner, task.lease_until, task.last_execution_date) == ("a", clock() + LEASE, clock())
    runs = await store.list_runs("t")
    assert runs.total == 1
    record = runs.items[0]
    assert (record.run_id, record.node_id, record.fence, record.started_at) == (claim.run_id, "a", 1, clock())
    assert record.outcome is None and record.finished_at is None


async def test_a_run_record_is_read_by_its_task_and_run_id(store, clock):
    await add_task(store, clock(), "t")
    await add_task(store, clock(), "u")
    claim = await claim_one(store, "a")
    other = await claim_one(store, "a")
    await store.finish_run(claim, *success(claim, clock()))
    assert await store.get_run(claim.item_id, claim.run_id) == (await store.list_runs(claim.item_id)).items[0]
    assert await store.get_run(other.item_id, other.run_id) == (await store.list_runs(other.item_id)).items[0]
    assert await store.get_run(other.item_id, claim.run_id) is None  # another task's run
    assert await store.get_run(claim.item_id, claim.run_id + "0") is None


async def test_claim_takes_the_earliest_due_first_up_to_the_limit(store, clock):
    for minutes_ago, name in [(5, "late"), (1, "early"), (3, "middle"), (0, "now")]:
        await add_task(store, clock() - timedelta(minutes=minutes_ago), name)
    await add_task(store, clock() + MS, "future")
    first = await store.claim_due("a", 2, LEASE)
    assert [claim.item_id for claim in first] == ["late", "middle"]
    rest = await store.claim_due("a", 10, LEASE)
    assert [claim.item_id for claim in rest] == ["early", "now"]
    assert await store.claim_due("a", 10, LEASE) == []


@pytest.mark.parametrize(("limit", "lease"), [(-1, LEASE), (1, timedelta(0)), (1, -LEASE)])
async def test_claim_rejects_bad_arguments(store, clock, limit, lease):
    await add_task(store, clock(), "t")
    with pytest.raises(ValueError):
        await store.claim_due("a", limit, lease)
    assert (await store.get_task("t")).status == Status.SCHEDULED


async def test_claim_limit_zero_claims_nothing(store, clock):
    await add_task(store, clock(), "t")
    assert await store.claim_due("a", 0, LEASE) == []
    assert (await store.get_task("t")).status == Status.SCHEDULED


async def test_existing_run_record_moves_the_attempt_on(store, clock):
    await add_task(store, clock(), "t")
    claim = await claim_one(store)
    await store.finish_run(claim, *success(claim, clock()))
    # deleted and declared again with the same first slot: that slot's attempt 1 already ran
    await store.remove_spec("t")
    await add_task(store, claim.scheduled_for, "t")
    assert await store.claim_due("a", 10, LEASE) == []
    task = await store.get_task("t")
    assert task.status == Status.SCHEDULED and task.attempt == 2
    again = await claim_one(store)
    assert again.attempt == 2 and again.run_id.endswith(":2")
    assert (await store.list_runs("t")).total == 2


async def test_concurrent_claims_never_share_a_task(backend, store, peer, clock):
    if not backend.atomic:
        pytest.skip("this backend is not atomic across threads: it proves nothing about mutual exclusion")
    for index in range(40):
        await add_task(store, clock(), f"t{index:02d}")
    batches = await asyncio.gather(*(handle.claim_due(node, 7, LEASE) for _ in range(4)
                                     for handle, node in ((store, "a"), (peer, "b"))))
    claimed = [claim.item_id for batch in batches for claim in batch]
    assert len(claimed) == len(set(claimed)) == 40


# -- renew ----------------------------------------------------------------------


async def test_renew_extends_the_lease(store, clock):
    await add_task(store, clock(), "t")
    claim = await claim_one(store)
    clock.advance(timedelta(seconds=10))
    assert await store.renew_leases("a", [claim], LEASE) == set()
    task = await store.get_task("t")
    assert task.lease_until == clock() + LEASE and task.status == Status.RUNNING
    clock.advance(LEASE)  # exactly the renewed until: still held
    assert await store.recover_expired("b") == []


async def test_renew_reports_cancel_delete_and_takeover(store, peer, clock):
    for name in ("kept", "cancelled", "deleted", "taken"):
        await add_task(store, clock(), name)
    claims = {claim.item_id: claim for claim in await store.claim_due("a", 10, LEASE)}
    await store.cancel("cancelled")
    await store.remove_spec("deleted")
    # "taken": its lease expires, another node recovers and claims it
    clock.advance(LEASE + MS)
    await store.renew_leases("a", [claims["kept"]], LEASE)
    assert [task.item_id for task in await peer.recover_expired("b")] == ["taken"]
    taken = await claim_one(peer, "b")
    assert taken.item_id == "taken" and taken.fence == claims["taken"].fence + 1

    lost = await store.renew_leases("a", list(claims.values()), LEASE)
    assert lost == {claims[name].run_id for name in ("cancelled", "deleted", "taken")}
    assert (await store.get_task("taken")).lease_owner == "b"
    assert (await store.get_task("taken")).lease_until == taken.lease_until
    assert (await store.get_task("cancelled")).status == Status.CANCELLED


async def test_renew_by_another_node_is_refused(store, clock):
    await add_task(store, clock(), "t")
    claim = await claim_one(store)
    assert await store.renew_leases("b", [claim], HOUR) == {claim.run_id}
    assert (await store.get_task("t")).lease_until == claim.lease_until


# -- progress -------------------------------------------------------------------


async def test_save_progress(store, clock):
    await add_task(store, clock(), "t")
    claim = await claim_one(store)
    assert await store.save_progress(claim, checkpoint={"offset": 10})
    assert await store.save_progress(claim, step="copying", details={"done": 10, "total": 40})
    task = await store.get_task("t")
    assert task.checkpoint_data == {"offset": 10}
    assert task.current_step == "copying" and task.status_details == {"done": 10, "total": 40}


async def test_save_progress_is_fenced(store, peer, clock):
    await add_task(store, clock(), "t")
    stale = await claim_one(store)
    clock.advance(LEASE + MS)
    await peer.recover_expired("b")
    current = await claim_one(peer, "b")
    assert await peer.save_progress(current, checkpoint={"offset": 5}, step="new")
    assert not await store.save_progress(stale, checkpoint={"offset": 99}, step="stale", details={"x": 1})
    task = await store.get_task("t")
    assert task.checkpoint_data == {"offset": 5} and task.current_step == "new"


# -- finish ---------------------------------------------------------------------


async def test_finish_applies_the_transition(store, clock):
    await add_task(store, clock(), "t")
    claim = await claim_one(store)
    await store.save_progress(claim, checkpoint={"offset": 10}, step="half")
    clock.advance(timedelta(seconds=3))
    result, transition = success(claim, clock())
    assert await store.finish_run(claim, result, transition)
    task = await store.get_task("t")
    assert task.status == Status.SCHEDULED
    assert task.next_scheduled_execution == claim.scheduled_for + HOUR == task.scheduled_for
    assert (task.success_count, task.failure_count, task.attempt) == (1, 0, 1)
    assert task.lease_owner is None and task.lease_until is None and task.fence == 1
    assert task.checkpoint_data is None  # cleared on success
    assert task.current_step == "half"
    assert task.last_finish_date == clock() and task.last_execution_date == claim.started_at
    assert task.history == [
        {
            "runId": claim.run_id, "scheduledFor": "2030-01-01T12:00:00Z", "attempt": 1, "node": "a",
            "startedAt": "2030-01-01T12:00:00Z", "finishedAt": "2030-01-01T12:00:03Z", "outcome": "success",
            "exitCode": 0, "error": None,
        }
    ]
    record = (await store.list_runs("t")).items[0]
    assert (record.outcome, record.finished_at, record.exit_code, record.output) == (
        Outcome.SUCCESS, clock(), 0, "done")
    assert record.duration == timedelta(seconds=3)


async def test_failed_run_keeps_the_checkpoint_and_records_the_error(store, clock):
    await add_task(store, clock(), "t")
    claim = await claim_one(store)
    await store.save_progress(claim, checkpoint={"offset": 10})
    assert await store.finish_run(claim, *failure(claim, clock(), "exit 3"))
    task = await store.get_task("t")
    assert task.checkpoint_data == {"offset": 10}
    assert (task.failure_count, task.attempt, task.last_error) == (1, 2, "exit 3")
    assert task.next_scheduled_execution == clock() + timedelta(minutes=1)
    assert task.history[0]["error"] == "exit 3" and task.history[0]["outcome"] == "failure"
    record = (await store.list_runs("t")).items[0]
    assert record.outcome == Outcome.FAILURE and record.error == "exit 3"


async def test_finish_records_expiry_of_task_and_run(store, clock):
    await add_task(store, clock(), "t", schedule={"at": "2030-01-01T12:00:00Z"})
    claim = await claim_one(store)
    await store.finish_run(claim, *final(claim, clock(), Status.COMPLETED, expires_at=clock() + HOUR,
                                         run_expires_at=clock() + 2 * HOUR))
    task = await store.get_task("t")
    assert task.status == Status.COMPLETED and task.expires_at == clock() + HOUR
    assert task.next_scheduled_execution is None
    assert (await store.list_runs("t")).items[0].expires_at == clock() + 2 * HOUR


async def test_stale_finish_after_takeover_changes_nothing(store, peer, clock):
    await add_task(store, clock(), "t")
    stale = await claim_one(store, "a")
    clock.advance(LEASE + MS)
    await peer.recover_expired("b")
    current = await claim_one(peer, "b")
    before = await peer.get_task("t")
    assert not await store.finish_run(stale, *success(stale, clock()))
    assert await store.renew_leases("a", [stale], LEASE) == {stale.run_id}
    after = await peer.get_task("t")
    assert after == before
    assert after.status == Status.RUNNING and after.lease_owner == "b" and after.fence == current.fence
    runs = {run.run_id: run for run in (await peer.list_runs("t")).items}
    assert runs[stale.run_id].outcome == Outcome.CRASHED  # closed by the recovery, not by the stale finish
    assert runs[current.run_id].outcome is None
    assert await peer.finish_run(current, *success(current, clock()))


async def test_finish_after_cancel_leaves_the_task_cancelled(store, clock):
    await add_task(store, clock(), "t")
    claim = await claim_one(store)
    await store.cancel("t")
    assert not await store.finish_run(claim, *success(claim, clock()))
    task = await store.get_task("t")
    assert task.status == Status.CANCELLED and task.success_count == 0 and task.next_scheduled_execution is None


async def test_finish_rejects_a_running_transition(store, clock):
    await add_task(store, clock(), "t")
    claim = await claim_one(store)
    result, transition = success(claim, clock())
    with pytest.raises(ValueError):
        await store.finish_run(claim, result, transition.__class__(**{**transition.__dict__, "status": Status.RUNNING}))
    assert (await store.get_task("t")).status == Status.RUNNING


async def test_history_is_bounded_newest_first(store, clock):
    await add_task(store, clock(), "t")
    run_ids = []
    for _ in range(HISTORY_LIMIT + 3):
        claim = await claim_one(store)
        run_ids.append(claim.run_id)
        await store.finish_run(claim, *success(claim, clock(), next_due=clock() + timedelta(seconds=1)))
        clock.advance(timedelta(seconds=1))
    history = (await store.get_task("t")).history
    assert len(history) == HISTORY_LIMIT
    assert [entry["runId"] for entry in history] == run_ids[::-1][:HISTORY_LIMIT]
    assert (await store.list_runs("t")).total == HISTORY_LIMIT + 3


async def test_a_listing_carries_only_the_newest_history_entry(store, clock):
    await add_task(store, clock(), "t")
    for _ in range(2):
        claim = await claim_one(store)
        assert await store.finish_run(claim, *success(claim, clock(), next_due=clock() + timedelta(seconds=1)))
        clock.advance(timedelta(seconds=1))
    history = (await store.get_task("t")).history
    [listed] = (await store.query_tasks(TaskQuery())).items
    assert (len(history), listed.item_id, listed.success_count, listed.history) == (2, "t", 2, history[:1])
