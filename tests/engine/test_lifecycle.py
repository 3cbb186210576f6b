"""The engine's own lifecycle: a stop that drops no claim, loops that survive their errors."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta

import pytest

from scheduler.engine import Engine, EngineConfig
from scheduler.executors import executor_from_callable
from scheduler.listener import EngineListener
from scheduler.model import Status

from .conftest import StoreWrapper, register, wait_for


class SlowClaims(StoreWrapper):
    """A store whose claims commit, then keep their caller waiting until ``release`` is set."""

    def __init__(self, store) -> None:
        super().__init__(store)
        self.committed = asyncio.Event()
        self.release = asyncio.Event()

    async def claim_due(self, *args, **kwargs):
        claims = await self._store.claim_due(*args, **kwargs)
        if claims:
            self.committed.set()
            await self.release.wait()
        return claims


@pytest.mark.realtime
async def test_stop_in_the_middle_of_a_claim_hands_the_claimed_tasks_back(store, real_clock):
    for name in ("a", "b"):
        await register(store, real_clock, {"name": name, "type": "job", "schedule": {"after": "10s"}})
    slow = SlowClaims(store)
    engine = Engine(
        EngineConfig(node_id="n", prefetch=timedelta(seconds=60), poll_interval=timedelta(seconds=0.05)), [slow],
        executors={"job": executor_from_callable(lambda ctx: None)},
    )
    await engine.start()
    await asyncio.wait_for(slow.committed.wait(), 10)  # the store holds both claims; the engine has not heard yet
    stopping = asyncio.create_task(engine.stop())
    await asyncio.sleep(0)  # let stop() begin while the claim is still on its way back
    slow.release.set()
    await asyncio.wait_for(stopping, 10)

    for name in ("a", "b"):
        task = await store.get_task(name)
        assert task.status is Status.SCHEDULED and task.lease_owner is None and task.history == []
        assert task.attempt == 1
    assert (await store.list_runs("a")).total == 0


class CountingListener(EngineListener):
    def __init__(self) -> None:
        self.loop_errors: list[str] = []

    def loop_error(self, loop: str) -> None:
        self.loop_errors.append(loop)


class FailingHeartbeats(StoreWrapper):
    """A store whose heartbeat raises an unexpected error ``failures`` times."""

    def __init__(self, store, failures: int) -> None:
        super().__init__(store)
        self.failures = failures

    async def heartbeat(self, node):
        if self.failures:
            self.failures -= 1
            raise RuntimeError("heartbeat exploded")
        await self._store.heartbeat(node)


@pytest.mark.realtime
async def test_a_loop_that_fails_logs_counts_backs_off_and_goes_on(store, real_clock, caplog):
    await register(store, real_clock, {"name": "tick", "type": "job", "schedule": {"every": "200ms"}})
    runs = []
    failing = FailingHeartbeats(store, failures=0)
    listener = CountingListener()
    engine = Engine(
        EngineConfig(node_id="n", lease_duration=timedelta(seconds=0.3), poll_interval=timedelta(seconds=0.05)),
        [failing], executors={"job": executor_from_callable(lambda ctx: runs.append(ctx.run_id))}, listener=listener,
    )
    await engine.start()  # the first heartbeat is written
    failing.failures = 2
    try:
        with caplog.at_level(logging.ERROR, logger="scheduler.engine"):
            await wait_for(lambda: _value(listener.loop_errors), lambda errors: len(errors) == 2, timeout=10)
            count = len(runs)
            await wait_for(lambda: _value(len(runs)), lambda n: n >= count + 2, timeout=10)  # the main loop went on
            await wait_for(lambda: store.list_nodes(), lambda nodes: nodes[0].heartbeat > engine._started_at,
                           timeout=10)  # and the keep-alive is back
        assert listener.loop_errors == ["keepalive", "keepalive"]
        assert "heartbeat exploded" in caplog.text and "Traceback" in caplog.text
        assert engine.health() == []
    finally:
        await engine.stop()


@pytest.mark.realtime
async def test_health_says_when_the_heartbeat_can_no_longer_be_written_and_why(store, real_clock):
    failing = FailingHeartbeats(store, failures=0)
    engine = Engine(
        EngineConfig(node_id="n", lease_duration=timedelta(seconds=0.3), poll_interval=timedelta(seconds=0.05)),
        [failing],
    )
    await engine.start()
    failing.failures = 10_000  # the store refuses every heartbeat from now on
    try:
        [problem] = await wait_for(lambda: _value(engine.health()), bool, timeout=10)
        assert problem.startswith("no heartbeat written to the store for more than 0.2s")
        assert problem.endswith(": RuntimeError: heartbeat exploded")
    finally:
        failing.failures = 0
        await engine.stop()


async def _value(value):
    return value


@pytest.mark.realtime
async def test_a_run_is_handed_back_only_once_it_has_stopped(store, real_clock):
    ended = []

    def slow_to_stop(ctx):  # a thread: it gets its executor's grace to return
        ctx.cancelled.wait(30)
        time.sleep(0.3)  # winds down after its cancel, as a command in its kill grace
        ended.append(real_clock())

    await register(store, real_clock, {"name": "t", "type": "job", "schedule": {"after": "0s"}})
    engine = Engine(
        EngineConfig(node_id="n", poll_interval=timedelta(seconds=0.05), shutdown_grace=timedelta(seconds=0.1)),
        [store], executors={"job": executor_from_callable(slow_to_stop)},
    )
    await engine.start()
    await wait_for(lambda: store.get_task("t"), lambda task: task.status is Status.RUNNING)
    await engine.stop()

    task = await store.get_task("t")
    assert task.status is Status.CRASHED and len(ended) == 1
    crashed_at = datetime.fromisoformat(task.status_details["crashTime"].replace("Z", "+00:00"))
    assert crashed_at >= ended[0].replace(microsecond=ended[0].microsecond // 1000 * 1000)


@pytest.mark.realtime
async def test_a_run_stopped_by_a_cancel_is_counted_as_its_record_says(store, real_clock):
    from scheduler.api.metrics import Metrics

    started = asyncio.Event()

    async def wait_for_cancel(ctx) -> None:
        started.set()
        await ctx.wait_cancelled()

    await register(store, real_clock, {"name": "long", "type": "job", "schedule": {"after": "0s"}})
    metrics = Metrics()
    engine = Engine(EngineConfig(node_id="n", poll_interval=timedelta(seconds=0.05)), [store],
                    executors={"job": executor_from_callable(wait_for_cancel)}, listener=metrics)
    await engine.start()
    try:
        await asyncio.wait_for(started.wait(), 10)
        await store.cancel("long")
        engine.check_leases()
        await wait_for(lambda: asyncio.sleep(0, engine.running_count), lambda running: running == 0)
    finally:
        await engine.stop()

    text = metrics.render().decode()
    assert 'scheduler_runs_total{outcome="cancelled",task="long"} 1.0' in text
    assert "scheduler_runs_fenced_total 1.0" in text
