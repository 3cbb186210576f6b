"""Run records tell what happened: a run's start is when its executor really started."""

from __future__ import annotations

from datetime import timedelta

from scheduler.engine import Engine, EngineConfig
from scheduler.executors import executor_from_callable
from scheduler.model import Outcome, Status

from .conftest import StoreWrapper, register

LOOP_LAG = timedelta(seconds=7)


class LaggingLoop(StoreWrapper):
    """A store whose claims return after ``LOOP_LAG`` of injected time: a node too busy to start runs at once."""

    def __init__(self, store, clock) -> None:
        super().__init__(store)
        self._clock = clock

    async def claim_due(self, *args, **kwargs):
        claims = await self._store.claim_due(*args, **kwargs)
        if claims:
            self._clock.advance(LOOP_LAG)
        return claims


async def test_a_run_that_starts_late_records_its_real_start(store, clock):
    await register(store, clock, {"name": "late", "type": "job", "schedule": {"every": "1h"}})
    due = (await store.get_task("late")).next_scheduled_execution
    clock.set(due)
    started_seen_by_the_function = []
    engine = Engine(
        EngineConfig(node_id="n"), [LaggingLoop(store, clock)],
        executors={"job": executor_from_callable(lambda ctx: started_seen_by_the_function.append(clock()))},
    )

    assert await engine.run_until_idle() == 1

    real_start = due + LOOP_LAG
    assert started_seen_by_the_function == [real_start]
    (run,) = (await store.list_runs("late")).items
    assert run.outcome is Outcome.SUCCESS
    assert run.scheduled_for == due
    assert run.started_at == real_start  # not the claim's planned start, ``due``
    task = await store.get_task("late")
    assert task.status is Status.SCHEDULED
    assert task.last_execution_date == real_start
    assert task.history[0]["startedAt"] == real_start.isoformat().replace("+00:00", "Z")
