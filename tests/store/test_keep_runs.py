"""Contract: the purge keeps at most a task's ``keepRuns`` finished run records of each kind."""

from __future__ import annotations

from datetime import timedelta

from scheduler.model import Outcome, PurgeCounts, Retention, RunResult, Status, Transition

from .helpers import HOUR, add_task, claim_one, make_spec

SECOND = timedelta(seconds=1)


async def _run(store, clock, name: str, outcome: Outcome) -> str:
    """One run of ``name`` ending with ``outcome``, the task due again at once; its run id."""
    claim = await claim_one(store)
    assert claim.item_id == name
    clock.advance(SECOND)
    transition = Transition(
        status=Status.SCHEDULED, next_scheduled_execution=clock(), scheduled_for=clock(), attempt=1,
        failure_count=0, success_count=0, last_error=None,
    )
    assert await store.finish_run(claim, RunResult(outcome, clock()), transition)
    clock.advance(SECOND)
    return claim.run_id


async def _runs(store, clock, name: str, outcomes: list[Outcome]) -> list[str]:
    return [await _run(store, clock, name, outcome) for outcome in outcomes]


async def _kept(store, name: str) -> list[str]:
    return [run.run_id for run in (await store.list_runs(name, limit=100)).items]


S, F = Outcome.SUCCESS, Outcome.FAILURE


async def test_the_purge_keeps_the_newest_runs_of_each_kind(store, clock):
    await add_task(store, clock(), "t", keepRuns={"successful": 2, "failed": 1})
    ids = await _runs(store, clock, "t", [S, F, S, Outcome.TIMEOUT, S, Outcome.SKIPPED, S])
    open_run = (await claim_one(store)).run_id  # a run still going is never deleted nor counted

    assert await store.purge() == PurgeCounts(runs_beyond_keep_runs=4)
    # Newest first: the two newest successes, the newest of the others (skipped, a non-success).
    assert await _kept(store, "t") == [open_run, ids[6], ids[5], ids[4]]
    assert await store.purge() == PurgeCounts()


async def test_a_limit_of_one_kind_leaves_the_other_kind_and_other_tasks_alone(store, clock):
    await add_task(store, clock(), "t", keepRuns={"failed": 0})
    ids = await _runs(store, clock, "t", [F, S, F, S])
    await store.suspend("t")  # out of the way of the claims below
    await add_task(store, clock(), "u")
    others = await _runs(store, clock, "u", [F, F, S])

    assert await store.purge() == PurgeCounts(runs_beyond_keep_runs=2)
    assert await _kept(store, "t") == [ids[3], ids[1]]
    assert await _kept(store, "u") == others[::-1]


async def test_the_records_of_a_removed_task_go_by_time_only(store, clock):
    await add_task(store, clock(), "t", keepRuns={"successful": 0, "failed": 0})
    ids = await _runs(store, clock, "t", [F, S])
    await store.remove_spec("t")
    assert await store.purge() == PurgeCounts()
    assert await _kept(store, "t") == ids[::-1]


async def test_the_limits_are_those_of_the_spec_in_force(store, clock):
    await add_task(store, clock(), "t", keepRuns={"successful": 1})
    ids = await _runs(store, clock, "t", [S, S, S])
    await store.upsert_spec(make_spec("t", description="no limit any more"), first_due=clock())
    assert await store.purge() == PurgeCounts()
    await store.upsert_spec(make_spec("t", keepRuns={"successful": 2}), first_due=clock())
    assert await store.purge() == PurgeCounts(runs_beyond_keep_runs=1)
    assert await _kept(store, "t") == [ids[2], ids[1]]


async def test_time_retention_still_deletes_what_the_limits_keep(store, clock):
    await add_task(store, clock(), "t", keepRuns={"successful": 10})
    await _runs(store, clock, "t", [S, S])
    clock.advance(2 * HOUR)
    assert await store.purge(retention=Retention(runs=HOUR)) == PurgeCounts(runs=2)
    assert await _kept(store, "t") == []
