"""Code of a stopped run that cannot be killed (a function ignoring its cancel) is bounded and visible."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest

from scheduler.api.metrics import Metrics
from scheduler.engine import Engine, EngineConfig
from scheduler.executors import executor_from_callable
from scheduler.model import Status

from .conftest import StoreWrapper, register, wait_for

pytestmark = pytest.mark.realtime

SLOTS = 2


class CountedHeartbeats(StoreWrapper):
    """A store that counts the heartbeats written through it."""

    def __init__(self, store) -> None:
        super().__init__(store)
        self.heartbeats = 0

    async def heartbeat(self, node) -> None:
        await self._store.heartbeat(node)
        self.heartbeats += 1


async def test_stuck_functions_hold_run_slots_until_they_return(store, real_clock):
    release = threading.Event()
    started, quick_runs = [], []

    def stubborn(ctx) -> None:  # ignores ctx.cancelled
        started.append(ctx.task_id)
        release.wait(60)

    metrics = Metrics()
    counted = CountedHeartbeats(store)
    engine = Engine(
        EngineConfig(node_id="n", max_concurrent_runs=SLOTS, lease_duration=timedelta(seconds=3),
                     poll_interval=timedelta(seconds=0.05)),
        [counted],
        executors={"stubborn": executor_from_callable(stubborn, grace_period=0.05),
                   "quick": executor_from_callable(lambda: quick_runs.append(1))},
        listener=metrics,
    )
    for name in ("a", "b"):
        await register(store, real_clock, {"name": name, "type": "stubborn", "schedule": {"after": "0s"}})
    await engine.start()
    try:
        await wait_for(lambda: asyncio.sleep(0, sorted(started)), lambda names: names == ["a", "b"])
        for name in ("a", "b"):
            await store.cancel(name)
        engine.check_leases()  # the runs are stopped; after their grace period, their threads are left running
        await wait_for(lambda: asyncio.sleep(0, (engine.stuck_count, engine.running_count)), lambda n: n == (2, 0))

        assert engine.health() == [
            f"all {SLOTS} run slots are held by stopped runs whose code has not ended "
            "(functions that ignore their cancel): nothing can start"
        ]
        assert "scheduler_stuck_runs 2.0" in metrics.render().decode()
        await register(store, real_clock, {"name": "c", "type": "quick", "schedule": {"after": "0s"}})
        engine.wake()
        # Two heartbeats later (a second apart, many polls), c is still waiting for a free slot.
        seen = counted.heartbeats
        await wait_for(lambda: asyncio.sleep(0, counted.heartbeats), lambda n: n >= seen + 2)
        assert [(node.running, node.stuck) for node in await store.list_nodes()] == [(0, 2)]
        assert (await store.get_task("c")).status is Status.SCHEDULED and quick_runs == []

        release.set()  # the functions return: their slots are free again
        await wait_for(lambda: store.get_task("c"), lambda task: task.status is Status.COMPLETED)
        assert engine.stuck_count == 0 and engine.health() == []
        assert "scheduler_stuck_runs 0.0" in metrics.render().decode()
        for name in ("a", "b"):
            assert (await store.get_task(name)).status is Status.CANCELLED
    finally:
        release.set()
        await engine.stop()
