"""A node running many short runs: nothing of a finished run stays behind, and no lease is reported lost."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from datetime import timedelta

import pytest

from scheduler.engine import Engine
from scheduler.listener import EngineListener
from scheduler.model import Status, TaskQuery

from .conftest import StoreWrapper, register, wait_for

pytestmark = pytest.mark.timeout(90)


async def twenty_recording_tasks(store, clock, make_engine, kind: str) -> tuple[Engine, list[weakref.ref]]:
    """An engine with 20 tasks every second whose runs, a plain or an ``async`` function, note weak
    references to their contexts in the list returned."""
    contexts: list[weakref.ref] = []

    def job(ctx) -> None:
        contexts.append(weakref.ref(ctx))

    async def async_job(ctx) -> None:
        job(ctx)

    for index in range(20):
        await register(store, clock, {"name": f"t{index}", "type": "job", "schedule": {"every": "1s"}})
    return make_engine(store, "a", job=job if kind == "sync" else async_job), contexts


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_finished_runs_leave_nothing_in_the_engine(store, clock, make_engine, kind):
    engine, contexts = await twenty_recording_tasks(store, clock, make_engine, kind)
    for _ in range(3):
        assert await engine.run_until_idle() == 20
        clock.advance(timedelta(seconds=1))
    assert len(contexts) == 60
    assert engine.running_count == 0 and engine.stuck_count == 0
    gc.collect()
    # Each run's context reaches its claim, task, spec and progress sink: none may outlive the run
    # (an idle worker thread kept the last function it ran, and so its run's context).
    assert [ref for ref in contexts if ref() is not None] == []


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_finished_runs_are_freed_without_the_garbage_collector(store, clock, make_engine, kind):
    """A run's objects must not form reference cycles: left to the collector, a thousand runs a second
    pile up until a full collection, which then pauses the loop for tens of milliseconds (late starts)."""
    engine, contexts = await twenty_recording_tasks(store, clock, make_engine, kind)
    assert await engine.run_until_idle() == 20  # the first runs import and cache what later runs reuse
    clock.advance(timedelta(seconds=1))
    contexts.clear()
    gc.collect()
    gc.disable()
    try:
        for _ in range(2):
            assert await engine.run_until_idle() == 20
            clock.advance(timedelta(seconds=1))
        assert len(contexts) == 40
        alive = [ref() for ref in contexts if ref() is not None]
    finally:
        gc.enable()
    assert alive == [], f"{len(alive)} of 40 finished runs' contexts are kept alive by reference cycles"


class ClaimSpy(StoreWrapper):
    """A store that counts the claims made through it that took something."""

    def __init__(self, store) -> None:
        super().__init__(store)
        self.claims: list[int] = []  # tasks taken by each claim

    async def claim_due(self, *args, **kwargs):
        claims = await self._store.claim_due(*args, **kwargs)
        if claims:
            self.claims.append(len(claims))
        return claims


@pytest.mark.realtime
@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_tasks_falling_due_one_after_another_are_claimed_in_batches(store, real_clock, make_engine):
    """Slots spread over time (a task due every 10 ms) are claimed a prefetch horizon's half at a time,
    not each alone as it enters the horizon: a claim is a transaction, and claiming every task alone
    cost a node spreading a thousand runs over each second 4 times the CPU per run of one instant's."""
    count = 40
    for index in range(count):  # due 300 ms from now, then every 10 ms
        await register(store, real_clock, {"name": f"t{index:02d}", "type": "job",
                                           "schedule": {"after": f"{300 + 10 * index}ms"}})
    spy = ClaimSpy(store)
    engine = make_engine(spy, "a", job=lambda: None, prefetch=timedelta(milliseconds=100))
    await engine.start()
    try:
        await wait_for(lambda: _finished(store), lambda done: done == count, timeout=30)
    finally:
        await engine.stop()
    assert sum(spy.claims) == count
    # 400 ms of slots, a claim at most every 50 ms: about nine; one claim per task would be forty.
    assert len(spy.claims) <= count // 2, spy.claims


async def _finished(store) -> int:
    page = await store.query_tasks(TaskQuery(status=Status.COMPLETED, limit=1))
    return page.total


class RenewalSpy(StoreWrapper):
    """A store that counts the renewals made through it and the runs they found no longer held."""

    def __init__(self, store) -> None:
        super().__init__(store)
        self.renewals = 0
        self.not_held = 0

    async def renew_leases(self, node_id, claims, lease_duration):
        lost = await self._store.renew_leases(node_id, claims, lease_duration)
        self.renewals += 1
        self.not_held += len(lost)
        return lost


class Outcomes(EngineListener):
    def __init__(self) -> None:
        self.finished: list[tuple[str, bool]] = []  # (outcome, applied)
        self.lost: list[str] = []

    def run_finished(self, claim, result, applied) -> None:
        self.finished.append((result.outcome.value, applied))

    def lease_lost(self, claim) -> None:
        self.lost.append(claim.run_id)


TASKS = 1000  # every second, their slots spread over it: about a thousand runs a second


@pytest.mark.realtime
@pytest.mark.parametrize("store", ["sqlite"], indirect=True)  # the store of a single node, at this rate
async def test_renewals_racing_finishes_and_next_claims_lose_no_lease(store, real_clock, make_engine, caplog):
    """A renewal sent while runs of its batch finish (and the node claims their tasks' next slots)
    finds those runs' leases gone: the store says so, and the engine must not call a run that
    finished, nor the next run of its task, lost."""
    await asyncio.gather(*(
        register(store, real_clock, {
            "name": f"t{index:04d}", "type": "job", "schedule": {"every": "1s", "initialDelay": f"{index}ms"},
        })
        for index in range(TASKS)
    ))
    spy = RenewalSpy(store)
    engine = make_engine(spy, "a", job=lambda: None, max_concurrent_runs=256)  # a plain function: a worker thread
    outcomes = Outcomes()
    engine.listener = outcomes

    async def renew_now() -> RenewalSpy:
        engine.check_leases()  # a renewal now rather than every leaseDuration / 3: many more of them race
        return spy

    caplog.set_level(logging.WARNING, logger="scheduler.engine")
    await engine.start()
    try:
        await wait_for(
            renew_now, lambda s: s.renewals >= 10 and s.not_held >= 20 and len(outcomes.finished) >= 2 * TASKS,
            timeout=60,
        )
    finally:
        await engine.stop()
    assert outcomes.lost == []
    assert [r.getMessage() for r in caplog.records if "lost the lease" in r.getMessage()] == []
    assert set(outcomes.finished) == {("success", True)}


class LateFinish(StoreWrapper):
    """A store whose finishes are written at once but come back only once ``deliver`` is set, as on
    MongoDB, whose calls share a thread pool: a renewal sent later may come back first."""

    def __init__(self, store) -> None:
        super().__init__(store)
        self.written = asyncio.Event()
        self.deliver = asyncio.Event()
        self.not_held = 0

    async def finish_run(self, claim, result, transition):
        applied = await self._store.finish_run(claim, result, transition)
        self.written.set()
        await self.deliver.wait()
        return applied

    async def renew_leases(self, node_id, claims, lease_duration):
        lost = await self._store.renew_leases(node_id, claims, lease_duration)
        self.not_held += len(lost)
        return lost


@pytest.mark.realtime
async def test_a_renewal_that_comes_back_before_a_written_finish_loses_no_lease(store, real_clock, make_engine, caplog):
    await register(store, real_clock, {"name": "t", "type": "job", "schedule": {"after": "0s"}})
    late = LateFinish(store)
    engine = make_engine(late, "a", job=lambda: None)
    outcomes = Outcomes()
    engine.listener = outcomes
    caplog.set_level(logging.WARNING, logger="scheduler.engine")
    await engine.start()
    try:
        await asyncio.wait_for(late.written.wait(), 10)
        engine.check_leases()
        await wait_for(lambda: asyncio.sleep(0, late.not_held), lambda count: count == 1)  # the task is no longer held
        late.deliver.set()
        await wait_for(lambda: asyncio.sleep(0, engine.running_count), lambda count: count == 0)
    finally:
        late.deliver.set()
        await engine.stop()
    assert outcomes.lost == []
    assert [r.getMessage() for r in caplog.records if "lost the lease" in r.getMessage()] == []
    assert outcomes.finished == [("success", True)]
