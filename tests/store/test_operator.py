"""Contract: operator actions in right and wrong states, overrides, nodes, purge."""

from __future__ import annotations

import dataclasses

from datetime import timedelta

import pytest

from scheduler.errors import InvalidState, TaskNotFound
from scheduler.model import NodeInfo, Outcome, PurgeCounts, Retention, Status, TaskQuery
from scheduler.spec import Source

from .helpers import HOUR, LEASE, MS, add_task, claim_one, failure, final, make_spec, success

ONE_SHOT = {"at": "2030-01-01T12:00:00Z"}


async def _task_in(store, clock, status: Status) -> None:
    """Task "t" in ``status``, through the verbs a real run goes through."""
    await add_task(store, clock(), "t", schedule=ONE_SHOT, onCrash="manual")
    if status == Status.SCHEDULED:
        return
    if status == Status.CANCELLED:
        await store.cancel("t")
        return
    claim = await claim_one(store, "a")
    if status == Status.CRASHED:
        clock.advance(LEASE + MS)
        await store.recover_expired("b")
    elif status in (Status.COMPLETED, Status.FAILED):
        await store.finish_run(claim, *final(claim, clock(), status, expires_at=clock() + HOUR))
    assert (await store.get_task("t")).status == status


ACTIONS = {
    "cancel": lambda store: store.cancel("t"),
    "retry": lambda store: store.retry("t"),
    "resume": lambda store: store.resume("t"),
    "run_now": lambda store: store.run_now("t"),
}
ALLOWED = {
    "cancel": {Status.SCHEDULED, Status.RUNNING, Status.CRASHED, Status.COMPLETED},
    "retry": {Status.FAILED, Status.CANCELLED},
    "resume": {Status.CRASHED},
    "run_now": {Status.SCHEDULED, Status.CRASHED, Status.COMPLETED, Status.FAILED, Status.CANCELLED},
}
RESULT = {"cancel": Status.CANCELLED, "retry": Status.SCHEDULED, "resume": Status.SCHEDULED, "run_now": Status.SCHEDULED}
STATES = [Status.SCHEDULED, Status.RUNNING, Status.CRASHED, Status.COMPLETED, Status.FAILED, Status.CANCELLED]


@pytest.mark.parametrize("status", STATES, ids=str)
@pytest.mark.parametrize("action", sorted(ACTIONS))
async def test_operator_action_state_table(store, clock, action, status):
    await _task_in(store, clock, status)
    before = await store.get_task("t")
    clock.advance(timedelta(seconds=1))
    if status in ALLOWED[action]:
        task = await ACTIONS[action](store)
        assert task.status == RESULT[action] and task == await store.get_task("t")
        if RESULT[action] == Status.SCHEDULED:
            assert task.next_scheduled_execution == clock() and task.expires_at is None
    else:
        with pytest.raises(InvalidState) as error:
            await ACTIONS[action](store)
        assert str(status) in str(error.value)
        assert await store.get_task("t") == before


@pytest.mark.parametrize("action", sorted(ACTIONS))
async def test_operator_actions_on_unknown_task(store, action):
    with pytest.raises(TaskNotFound):
        await ACTIONS[action](store)


async def test_cancel_while_running_closes_the_run_and_keeps_the_lease(store, clock):
    await add_task(store, clock(), "t")
    claim = await claim_one(store, "a")
    clock.advance(timedelta(seconds=2))
    task = await store.cancel("t")
    assert task.status == Status.CANCELLED and task.next_scheduled_execution is None
    assert (task.lease_owner, task.lease_until, task.fence) == ("a", claim.lease_until, claim.fence)
    assert task.history[0]["outcome"] == "cancelled" and task.history[0]["runId"] == claim.run_id
    record = (await store.list_runs("t")).items[0]
    assert record.outcome == Outcome.CANCELLED and record.finished_at == clock()
    assert await store.renew_leases("a", [claim], LEASE) == {claim.run_id}


async def test_retry_takes_the_next_attempt_of_the_same_slot(store, clock):
    await add_task(store, clock(), "t", schedule=ONE_SHOT)
    claim = await claim_one(store)
    result, transition = final(claim, clock(), Status.FAILED)
    # As the engine records a one-shot out of retries: the slot stays the task's slot.
    await store.finish_run(claim, result, dataclasses.replace(transition, scheduled_for=claim.scheduled_for))
    slot = claim.scheduled_for
    clock.advance(HOUR)  # a retry later on: "now" is no longer the slot

    task = await store.retry("t")

    assert (task.scheduled_for, task.attempt, task.failure_count) == (slot, 2, 1)
    claim = await claim_one(store)
    assert (claim.scheduled_for, claim.attempt) == (slot, 2)


async def test_retry_can_reset_the_failure_count(store, clock):
    await _task_in(store, clock, Status.FAILED)
    clock.advance(HOUR)
    task = await store.retry("t", reset_failure_count=True)
    assert task.failure_count == 0
    # A fresh slot at attempt 1: the whole retry budget applies again.
    assert (task.scheduled_for, task.attempt) == (clock(), 1)
    claim = await claim_one(store)
    assert (claim.scheduled_for, claim.attempt) == (clock(), 1)


async def test_resume_keeps_the_checkpoint(store, clock):
    await add_task(store, clock(), "t", onCrash="manual")
    claim = await claim_one(store)
    await store.save_progress(claim, checkpoint={"offset": 3})
    clock.advance(LEASE + MS)
    await store.recover_expired("b")
    task = await store.resume("t")
    assert task.checkpoint_data == {"offset": 3} and task.attempt == 2
    assert (await claim_one(store, "b")).task.checkpoint_data == {"offset": 3}


async def test_run_now_is_a_new_slot(store, clock):
    await add_task(store, clock() + HOUR, "t")
    clock.advance(timedelta(minutes=1))
    task = await store.run_now("t")
    assert task.scheduled_for == clock() and task.next_scheduled_execution == clock() and task.attempt == 1
    claim = await claim_one(store)
    assert claim.scheduled_for == clock() and claim.attempt == 1


async def test_update_config_overrides_survive_spec_updates(store, clock):
    await add_task(store, clock(), "t")
    task = await store.update_config("t", max_retries=5, retry_delay=timedelta(milliseconds=60000))
    assert task.max_retries == 5 and task.retry_delay == timedelta(minutes=1)
    task = await store.update_config("t", retry_delay=timedelta(seconds=90))
    assert task.max_retries == 5 and task.retry_delay == timedelta(seconds=90)
    await store.upsert_spec(make_spec("t", retry={"maxRetries": 1, "retryDelay": "5s"}), first_due=clock())
    task = await store.get_task("t")
    assert task.spec.retry.max_retries == 1
    assert (task.max_retries_override, task.retry_delay_override) == (5, timedelta(seconds=90))
    assert task.max_retries == 5 and task.retry_delay == timedelta(seconds=90)


async def test_update_config_clear_brings_back_the_specs_values(store, clock):
    await add_task(store, clock(), "t", retry={"maxRetries": 1, "retryDelay": "5s"})
    await store.update_config("t", max_retries=5, retry_delay=timedelta(seconds=90))
    task = await store.update_config("t", clear=True)
    assert (task.max_retries_override, task.retry_delay_override) == (None, None)
    assert (task.max_retries, task.retry_delay) == (1, timedelta(seconds=5))
    assert (await store.get_task("t")).max_retries_override is None
    task = await store.update_config("t", max_retries=7, clear=True)  # cleared, then set, in one write
    assert (task.max_retries_override, task.retry_delay_override) == (7, None)
    await store.upsert_spec(make_spec("t", retry={"maxRetries": 2, "retryDelay": "6s"}), first_due=clock())
    task = await store.get_task("t")
    assert (task.max_retries, task.retry_delay) == (7, timedelta(seconds=6))


@pytest.mark.parametrize(("max_retries", "retry_delay"), [(-1, None), (None, timedelta(seconds=-1))])
async def test_update_config_rejects_negative_values(store, clock, max_retries, retry_delay):
    await add_task(store, clock(), "t")
    with pytest.raises(ValueError):
        await store.update_config("t", max_retries=max_retries, retry_delay=retry_delay)
    assert (await store.get_task("t")).max_retries_override is None


async def test_update_config_unknown_task(store):
    with pytest.raises(TaskNotFound):
        await store.update_config("nope", max_retries=1)


# -- nodes ------------------------------------------------------------------------


async def test_heartbeat_registers_and_refreshes_nodes(store, clock):
    await store.heartbeat(NodeInfo("n2", executor=False, heartbeat=clock(), listen="127.0.0.1:8181"))
    await store.heartbeat(NodeInfo("n1", executor=True, heartbeat=clock(), running=2, started_at=clock(), version="1"))
    clock.advance(timedelta(seconds=5))
    await store.heartbeat(NodeInfo("n1", executor=True, heartbeat=clock(), running=3, started_at=clock() - HOUR,
                                   version="2", stuck=1))
    nodes = await store.list_nodes()
    assert [node.node_id for node in nodes] == ["n1", "n2"]
    assert nodes[0] == NodeInfo("n1", executor=True, heartbeat=clock(), running=3, started_at=clock() - HOUR,
                                version="2", stuck=1)
    assert nodes[1].executor is False and nodes[1].listen == "127.0.0.1:8181" and nodes[1].started_at is None


async def test_known_ids_finds_the_tasks_among_any_number_of_ids(store, clock):
    for index in range(0, 1_200, 3):
        await add_task(store, clock(), f"t{index}")
    asked = [f"t{index}" for index in range(1_200)] + ["", "x' OR '1'='1", "t0"]

    assert await store.known_ids(asked) == {f"t{index}" for index in range(0, 1_200, 3)}
    assert await store.known_ids([]) == set()


# -- purge ---------------------------------------------------------------------------


async def _finished_one_shot(store, clock, name, status, *, expires_in, run_expires_in):
    await add_task(store, clock(), name, schedule=ONE_SHOT)
    claim = await claim_one(store)
    await store.finish_run(claim, *final(claim, clock(), status, expires_at=clock() + expires_in,
                                         run_expires_at=clock() + run_expires_in))
    return claim


async def test_purge_by_expiry_at_the_exact_boundary(store, clock):
    await _finished_one_shot(store, clock, "done", Status.COMPLETED, expires_in=HOUR, run_expires_in=2 * HOUR)
    await add_task(store, clock() - timedelta(days=1), "periodic")
    start = clock()
    clock.set(start + HOUR)  # expires_at == now: not passed yet
    assert await store.purge() == PurgeCounts(tasks=0, runs=0)
    clock.set(start + HOUR + MS)
    assert await store.purge() == PurgeCounts(tasks=1, runs=0)
    with pytest.raises(TaskNotFound):
        await store.get_task("done")
    assert (await store.list_runs("done")).total == 1  # the run record has its own expiry
    clock.set(start + 2 * HOUR + MS)
    assert await store.purge() == PurgeCounts(tasks=0, runs=1)
    assert (await store.list_runs("done")).total == 0
    assert (await store.get_task("periodic")).status == Status.SCHEDULED


async def test_purge_finished_before_removes_old_final_tasks_only(store, clock):
    long = timedelta(days=365)
    await _finished_one_shot(store, clock, "old-done", Status.COMPLETED, expires_in=long, run_expires_in=long)
    await _finished_one_shot(store, clock, "old-failed", Status.FAILED, expires_in=long, run_expires_in=long)
    await add_task(store, clock(), "old-cancelled")
    await store.cancel("old-cancelled")
    await add_task(store, clock(), "periodic")
    periodic = await claim_one(store)
    await store.finish_run(periodic, *success(periodic, clock(), next_due=clock() + long))
    await add_task(store, clock(), "running")
    running = await claim_one(store)
    cutoff = clock() + MS
    clock.advance(timedelta(days=2))
    await _finished_one_shot(store, clock, "new-done", Status.COMPLETED, expires_in=long, run_expires_in=long)

    counts = await store.purge(finished_before=cutoff)
    assert counts == PurgeCounts(tasks=3, runs=3)  # three final tasks; the runs of old-done, old-failed, periodic
    left = {task.item_id for task in (await store.query_tasks(TaskQuery())).items}
    assert left == {"periodic", "running", "new-done"}
    assert (await store.list_runs("running")).items[0].run_id == running.run_id  # open record kept
    assert (await store.list_runs("new-done")).total == 1


async def test_purge_keeps_a_cancelled_task_until_its_run_released_the_lease(store, clock):
    """Purged while its command still stops, a task declared again would start beside that command."""
    await add_task(store, clock(), "t")
    claim = await claim_one(store)
    await store.cancel("t")
    clock.advance(timedelta(days=2))
    await store.renew_leases("a", [claim], LEASE)  # still stopping
    assert (await store.purge(finished_before=clock())).tasks == 0
    assert (await store.get_task("t")).status == Status.CANCELLED
    assert await store.release_lease(claim)
    assert (await store.purge(finished_before=clock())).tasks == 1


async def test_purge_keep_history_trims_every_task(store, clock):
    await add_task(store, clock(), "short")
    claim = await claim_one(store)
    await store.finish_run(claim, *success(claim, clock()))
    await add_task(store, clock(), "t")
    for _ in range(4):
        claim = await claim_one(store)
        await store.finish_run(claim, *failure(claim, clock()))  # retried a minute later
        clock.advance(timedelta(minutes=2))
    before = await store.get_task("t")
    assert len(before.history) == 4
    assert await store.purge(keep_history=2) == PurgeCounts()
    assert (await store.get_task("t")).history == before.history[:2]
    assert len((await store.get_task("short")).history) == 1


async def test_purge_with_retention_applies_each_final_status_ttl_to_api_tasks_only(store, clock):
    api = Source("<api>")
    retention = Retention(completed=timedelta(days=1), failed=timedelta(days=2), cancelled=timedelta(days=3),
                          runs=timedelta(days=4))
    for name in ("done", "failed", "declared"):
        source = None if name == "declared" else api
        await store.upsert_spec(make_spec(name, source=source or Source("tasks.d/x.yaml", 3), schedule=ONE_SHOT),
                                first_due=clock())
        claim = await claim_one(store)
        await store.finish_run(claim, *final(claim, clock(), Status.FAILED if name == "failed" else Status.COMPLETED))
    await store.upsert_spec(make_spec("cancelled", source=api), first_due=clock() + HOUR)
    await store.cancel("cancelled")
    await store.upsert_spec(make_spec("periodic", source=api), first_due=clock() + HOUR)

    def left():
        return store.query_tasks(TaskQuery())

    for days, gone in ((1, set()), (1, {"done"}), (1, {"done", "failed"}), (1, {"done", "failed", "cancelled"})):
        counts = await store.purge(retention=retention)
        names = {t.item_id for t in (await left()).items}
        assert names == {"done", "failed", "cancelled", "declared", "periodic"} - gone
        clock.advance(timedelta(days=days, milliseconds=1))
    assert counts.runs == 0
    assert (await store.purge(retention=retention)).runs == 3  # four days after the runs ended
    assert {t.item_id for t in (await left()).items} == {"declared", "periodic"}
