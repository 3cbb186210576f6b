"""Dependencies in the store: a dependent is claimable only once its slot passed the dependency check."""

from __future__ import annotations

from datetime import timedelta

from scheduler.model import Settled, Status

from .helpers import LEASE, add_task, failure, success

MINUTE = timedelta(minutes=1)


async def claimed(store, node="n1") -> list[str]:
    return sorted(claim.item_id for claim in await store.claim_due(node, 10, LEASE))


async def run(store, clock, **outcomes) -> None:
    """Claim what is due, which must be the tasks named, and finish each run with its outcome."""
    claims = await store.claim_due("runner", 10, LEASE)
    assert sorted(claim.item_id for claim in claims) == sorted(outcomes)
    clock.advance(MINUTE)
    for claim in claims:
        assert await store.finish_run(claim, *outcomes[claim.item_id](claim, clock()))


async def test_a_due_dependent_waits_for_its_dependency_then_runs_on_its_success(store, clock):
    await add_task(store, clock() + timedelta(hours=1), "export")
    await add_task(store, clock(), "report", dependsOn=["export"])

    assert await claimed(store) == []  # due, but its slot has not been checked
    assert await store.next_due_time("n1") == clock() + timedelta(hours=1)  # so it is not due for a claim
    assert await store.settle_dependencies() == Settled(waiting=1)
    report = await store.get_task("report")
    assert (report.status, report.waiting_on) == (Status.WAITING, ("export",))
    assert await claimed(store) == []

    clock.advance(timedelta(hours=1))
    await run(store, clock, export=success)
    assert await store.settle_dependencies() == Settled(ready=("report",))
    report = await store.get_task("report")
    assert (report.status, report.waiting_on, report.dependencies_ready) == (Status.SCHEDULED, (), True)
    assert await claimed(store) == ["report"]


async def test_one_success_of_a_dependency_runs_each_slot_of_the_dependent_once(store, clock):
    await add_task(store, clock(), "export")
    await run(store, clock, export=success)
    clock.advance(MINUTE)
    await add_task(store, clock(), "report", dependsOn=["export"])  # created after that success
    assert await store.settle_dependencies() == Settled(waiting=1)

    clock.advance(timedelta(hours=1))
    await run(store, clock, export=success)
    assert (await store.settle_dependencies()).ready == ("report",)
    await run(store, clock, report=failure)  # a failure: its retry keeps the slot's check
    clock.advance(MINUTE)
    assert await store.settle_dependencies() == Settled()
    await run(store, clock, report=success)  # the next slot needs a new success of export

    clock.advance(timedelta(hours=1))
    assert await store.settle_dependencies() == Settled(waiting=1)
    assert (await store.get_task("report")).waiting_on == ("export",)


async def test_a_completed_one_shot_is_met_a_failed_or_missing_dependency_is_waited_for(store, clock):
    await add_task(store, clock(), "setup", schedule={"after": "0s"})
    await add_task(store, clock(), "flaky", retry={"maxRetries": 0}, schedule={"after": "0s"})
    await add_task(store, clock(), "job", dependsOn=["setup", "flaky", "elsewhere"])
    await run(store, clock, setup=success_final, flaky=failure_final)

    assert await store.settle_dependencies() == Settled(waiting=1)
    job = await store.get_task("job")
    assert (job.status, job.waiting_on) == (Status.WAITING, ("flaky", "elsewhere"))


async def test_a_waiting_task_whose_dependencies_were_removed_from_its_spec_runs(store, clock):
    await add_task(store, clock(), "job", dependsOn=["never"])
    await store.settle_dependencies()
    assert (await store.get_task("job")).status is Status.WAITING

    await add_task(store, clock(), "job")  # its file no longer names a dependency
    assert await store.settle_dependencies() == Settled(ready=("job",))
    assert await claimed(store) == ["job"]


async def test_a_cancelled_waiting_task_is_no_longer_checked(store, clock):
    await add_task(store, clock(), "job", dependsOn=["never"])
    await store.settle_dependencies()
    assert (await store.cancel("job")).status is Status.CANCELLED
    assert await store.settle_dependencies() == Settled()


def success_final(claim, finished_at):
    from .helpers import final

    return final(claim, finished_at, Status.COMPLETED)


def failure_final(claim, finished_at):
    from .helpers import final

    return final(claim, finished_at, Status.FAILED)
