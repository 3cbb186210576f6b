"""The embedded scheduler: tasks created in code run on the engine and survive restarts."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta, timezone

import pytest

from scheduler import Scheduler
from scheduler.errors import SpecError
from scheduler.model import Status, TaskQuery
from tests.support.clock import ManualClock
from tests.support.wait import wait_for


@pytest.fixture
def clock():
    return ManualClock(datetime(2026, 3, 1, 12, tzinfo=timezone.utc))


async def test_builder_tasks_run_on_the_engine(tmp_path, clock):
    calls: list[str] = []
    scheduler = Scheduler(f"sqlite:///{tmp_path / 'app.db'}", node_id="app-1", clock=clock)
    await scheduler.open()
    try:
        await scheduler.new_task("dataSync").with_period(timedelta(hours=1)).with_simple_executor(
            lambda: calls.append("sync")
        ).schedule()
        await scheduler.new_task("localCache").non_persistent().with_period(timedelta(minutes=5)).with_simple_executor(
            lambda ctx: calls.append(f"cache:{ctx.task_id}")
        ).schedule()

        await scheduler.run_until_idle()
        clock.advance(timedelta(minutes=5))
        await scheduler.run_until_idle()

        assert sorted(calls) == ["cache:local-cache", "cache:local-cache", "sync"]
        assert (await scheduler.get_task("data-sync")).success_count == 1
        cache = await scheduler.get_task("local-cache")
        assert cache.success_count == 2 and cache.node == "app-1"
        assert (await scheduler.store.query_tasks(TaskQuery(persistent=False))).total == 0
    finally:
        await scheduler.stop()


async def test_executor_object_checkpoints_and_resumes(tmp_path, clock):
    class Export:
        def __init__(self):
            self.seen = []

        def execute(self, ctx):
            self.seen.append(ctx.checkpoint_data)
            start = (ctx.checkpoint_data or {}).get("next", 0)
            for item in range(start, 3):
                ctx.update_step("exporting", {"item": item})
                ctx.checkpoint({"next": item + 1})
                if item == 1 and ctx.attempt == 1:
                    raise RuntimeError("disk full")

    export = Export()
    scheduler = Scheduler(f"sqlite:///{tmp_path / 'app.db'}", node_id="app-1", clock=clock)
    await scheduler.open()
    try:
        await scheduler.new_task("export").as_one_shot().with_retry_delay(timedelta(seconds=1)).with_executor(
            export
        ).schedule()
        await scheduler.run_until_idle()
        failed = await scheduler.get_task("export")
        assert failed.status is Status.SCHEDULED and failed.checkpoint_data == {"next": 2}
        assert failed.current_step == "exporting" and failed.status_details == {"item": 1}

        clock.advance(timedelta(seconds=1))
        await scheduler.run_until_idle()

        assert export.seen == [None, {"next": 2}]
        assert (await scheduler.get_task("export")).status is Status.COMPLETED
    finally:
        await scheduler.stop()


async def test_a_named_task_created_again_after_restart_is_the_same_task(tmp_path, clock):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    for _ in range(2):
        scheduler = Scheduler(url, node_id="app-1", clock=clock)
        await scheduler.open()
        try:
            await scheduler.new_task("dataSync").with_period(timedelta(hours=1)).with_simple_executor(
                lambda: None
            ).schedule()
            await scheduler.run_until_idle()
        finally:
            await scheduler.stop()
        clock.advance(timedelta(hours=1))

    scheduler = Scheduler(url, node_id="app-1", clock=clock)
    await scheduler.open()
    try:
        page = await scheduler.store.query_tasks(TaskQuery())
        assert [t.item_id for t in page.items] == ["data-sync"]
        assert page.items[0].success_count == 2
    finally:
        await scheduler.stop()


async def test_schedule_without_an_executor_is_refused(tmp_path, clock):
    scheduler = Scheduler(f"sqlite:///{tmp_path / 'app.db'}", clock=clock)
    await scheduler.open()
    try:
        with pytest.raises(SpecError, match="nothing to run"):
            await scheduler.new_task("empty").with_period(timedelta(hours=1)).schedule()
    finally:
        await scheduler.stop()


async def test_start_and_stop_run_the_engine_in_the_background(tmp_path):
    done = []
    async with Scheduler(f"sqlite:///{tmp_path / 'app.db'}", poll_interval=timedelta(seconds=0.05)) as scheduler:
        await scheduler.new_task("hello").as_one_shot().with_simple_executor(lambda: done.append(1)).schedule()
        await wait_for(lambda: scheduler.get_task("hello"), lambda task: task.status is Status.COMPLETED)
    assert done == [1]


async def test_tasks_stored_earlier_wait_for_their_executor_instead_of_failing(tmp_path, clock):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    first = Scheduler(url, node_id="app-1", clock=clock)
    await first.open()
    try:
        await first.new_task("appJob").as_one_shot().with_simple_executor(lambda: None).schedule()
    finally:
        await first.stop()

    calls: list[str] = []
    again = Scheduler(url, node_id="app-1", clock=clock)  # started again, its executors not registered yet
    await again.open()
    try:
        await again.run_until_idle()
        waiting = await again.get_task("app-job")
        assert (waiting.status, waiting.failure_count, calls) == (Status.SCHEDULED, 0, [])
        assert (await again.store.list_runs("app-job")).total == 0
        await again.register_executor("appJob", lambda: calls.append("app"))
        await again.run_until_idle()
        assert (await again.get_task("app-job")).status == Status.COMPLETED and calls == ["app"]
    finally:
        await again.stop()

    given = Scheduler(url, node_id="app-1", clock=clock, executors={"appJob": lambda: calls.append("given")})
    await given.open()
    try:
        await given.store.run_now("app-job")
        await given.run_until_idle()  # registered before its first claim
        assert (await given.get_task("app-job")).status == Status.COMPLETED and calls == ["app", "given"]
    finally:
        await given.stop()


async def test_a_running_scheduler_publishes_the_types_it_runs(tmp_path):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    async with Scheduler(url, node_id="app-1", executors={"report": lambda: None}) as scheduler:
        await scheduler.new_task("appJob").with_period(timedelta(hours=1)).with_simple_executor(lambda: None).schedule()
        [node] = await scheduler.store.list_nodes()  # at once, not at the next heartbeat
        assert node.task_types == ("appJob", "report")


async def test_unomi_task_dependencies_a_one_shot_waits_for_two_created_after_it(tmp_path, clock):
    """Apache Unomi's testTaskDependencies, through the builder: the dependent is created first."""
    order: list[str] = []
    scheduler = Scheduler(f"sqlite:///{tmp_path / 'app.db'}", node_id="app-1", clock=clock)
    await scheduler.open()
    try:
        await scheduler.new_task("dependent").as_one_shot().with_dependencies("first", "second") \
            .with_simple_executor(lambda: order.append("dependent")).schedule()
        await scheduler.run_until_idle()
        dependent = await scheduler.get_task("dependent")
        assert (dependent.status, dependent.waiting_on) == (Status.WAITING, ("first", "second"))

        for name in ("first", "second"):  # no schedule at all: once, at once, as in Unomi
            await scheduler.new_task(name).with_simple_executor(functools.partial(order.append, name)).schedule()
        await scheduler.run_until_idle()

        assert order[2:] == ["dependent"] and sorted(order[:2]) == ["first", "second"]
        for name in ("first", "second", "dependent"):
            assert (await scheduler.get_task(name)).status is Status.COMPLETED
    finally:
        await scheduler.stop()


async def test_a_builder_pipeline_runs_in_order_every_period(tmp_path, clock):
    order: list[str] = []
    scheduler = Scheduler(f"sqlite:///{tmp_path / 'app.db'}", node_id="app-1", clock=clock)
    await scheduler.open()
    try:
        steps = (("report", ("transform",)), ("transform", ("export",)), ("export", ()))
        for name, dependencies in steps:  # dependents first: the order of declaration does not matter
            await scheduler.new_task(name).with_period(timedelta(hours=1)).with_dependencies(*dependencies) \
                .with_simple_executor(functools.partial(order.append, name)).schedule()
        for _ in range(3):
            await scheduler.run_until_idle()
            clock.advance(timedelta(hours=1))

        assert order == ["export", "transform", "report"] * 3
    finally:
        await scheduler.stop()
