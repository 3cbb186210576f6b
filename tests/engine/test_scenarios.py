"""Engine scenarios of the status machine, driven by an injected clock and run_until_idle.

Each scenario asserts what the API would show: the task's status and counters,
its history and its run records. Scenarios that need real time passing (lease
renewal, cancel of a live process, shutdown) use short leases and bounded waits
on real conditions.
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timedelta

import pytest

from scheduler.engine import SHUTDOWN_REASON
from scheduler.executors import executor_from_callable
from scheduler.model import Outcome, Retention, Status, TaskQuery

from .conftest import Recorder, register, wait_for

pytestmark = pytest.mark.timeout(60)


async def test_one_shot_reaches_completed_with_history(store, clock, make_engine):
    recorder = Recorder(clock)
    await register(store, clock, {"name": "once", "type": "job", "schedule": {"after": "0s"}})
    engine = make_engine(store, "a", job=recorder.job())

    assert await engine.run_until_idle() == 1

    task = await store.get_task("once")
    assert task.status is Status.COMPLETED
    assert task.success_count == 1 and task.failure_count == 0
    assert task.next_scheduled_execution is None
    assert [h["outcome"] for h in task.history] == ["success"]
    runs = (await store.list_runs("once")).items
    assert [(r.outcome, r.attempt, r.node_id) for r in runs] == [(Outcome.SUCCESS, 1, "a")]
    assert len(recorder.starts) == 1


async def test_fixed_rate_runs_once_per_period(store, clock, make_engine):
    recorder = Recorder(clock)
    await register(store, clock, {"name": "tick", "type": "job", "schedule": {"every": "10s"}})
    engine = make_engine(store, "a", job=recorder.job())
    start = clock()

    for _ in range(5):
        await engine.run_until_idle()
        clock.advance(timedelta(seconds=10))

    assert len(recorder.starts) == 5
    assert recorder.slots == [start + timedelta(seconds=10 * i) for i in range(5)]
    task = await store.get_task("tick")
    assert task.success_count == 5 and task.status is Status.SCHEDULED
    assert task.next_scheduled_execution == start + timedelta(seconds=50)


@pytest.mark.parametrize(("missed_runs", "expected_runs"), [("runOnce", 1), ("runAll", 4), ("skip", 0)])
async def test_missed_runs_after_downtime(store, clock, make_engine, missed_runs, expected_runs):
    recorder = Recorder(clock)
    await register(
        store, clock, {"name": "t", "type": "job", "schedule": {"every": "1m", "missedRuns": missed_runs}}
    )
    engine = make_engine(store, "a", job=recorder.job())
    clock.advance(timedelta(minutes=3, seconds=30))  # slots at 0, 1, 2, 3 minutes were missed

    await engine.run_until_idle()

    assert len(recorder.starts) == expected_runs
    task = await store.get_task("t")
    assert task.status is Status.SCHEDULED
    assert task.scheduled_for == recorder.registered_at + timedelta(minutes=4)


@pytest.mark.parametrize(("missed_runs", "expected_runs"), [("runOnce", 1), ("runAll", 4), ("skip", 0)])
async def test_slots_missed_while_suspended_go_by_missed_runs_as_after_downtime(
    store, clock, make_engine, missed_runs, expected_runs
):
    recorder = Recorder(clock)
    await register(
        store, clock, {"name": "t", "type": "job", "schedule": {"every": "1m", "missedRuns": missed_runs}}
    )
    engine = make_engine(store, "a", job=recorder.job())
    await store.suspend("t")
    clock.advance(timedelta(minutes=3, seconds=30))  # slots at 0, 1, 2, 3 minutes pass while it is held
    await engine.run_until_idle()
    assert recorder.starts == []

    await store.unsuspend("t")
    await engine.run_until_idle()

    assert len(recorder.starts) == expected_runs
    task = await store.get_task("t")
    assert task.status is Status.SCHEDULED
    assert task.scheduled_for == recorder.registered_at + timedelta(minutes=4)


@pytest.mark.parametrize(("late_by", "ran"), [(timedelta(minutes=4), True), (timedelta(minutes=6), False)])
async def test_missed_run_grace_decides_when_a_late_slot_is_skipped(store, clock, make_engine, late_by, ran):
    recorder = Recorder(clock)
    schedule = {"every": "1h", "missedRuns": "skip", "missedRunGrace": "5m"}
    await register(store, clock, {"name": "t", "type": "job", "schedule": schedule})
    engine = make_engine(store, "a", job=recorder.job())
    clock.advance(late_by)  # the node comes late to the first slot (60 s late would be skipped without the grace)

    await engine.run_until_idle()

    assert recorder.slots == ([recorder.registered_at] if ran else [])
    [run] = (await store.list_runs("t")).items
    assert run.outcome is (Outcome.SUCCESS if ran else Outcome.SKIPPED)


async def test_fixed_delay_keeps_gaps_of_at_least_the_period(store, clock, make_engine):
    recorder = Recorder(clock, duration=timedelta(seconds=3))
    await register(store, clock, {"name": "t", "type": "job", "schedule": {"every": "10s", "fixedRate": False}})
    engine = make_engine(store, "a", job=recorder.job())

    for _ in range(4):
        await engine.run_until_idle()
        task = await store.get_task("t")
        clock.set(task.next_scheduled_execution)

    assert len(recorder.starts) == 4
    for previous_end, next_start in zip(recorder.ends, recorder.starts[1:]):
        assert next_start - previous_end >= timedelta(seconds=10)


async def test_status_is_running_during_a_run(store, clock, make_engine):
    started, release = asyncio.Event(), asyncio.Event()

    async def job(ctx):
        started.set()
        await release.wait()

    await register(store, clock, {"name": "t", "type": "job", "schedule": {"after": "0s"}})
    engine = make_engine(store, "a", job=job)
    burst = asyncio.create_task(engine.run_until_idle())
    await asyncio.wait_for(started.wait(), 10)

    task = await store.get_task("t")
    assert task.status is Status.RUNNING and task.lease_owner == "a"

    release.set()
    await burst
    assert (await store.get_task("t")).status is Status.COMPLETED


async def test_one_shot_failing_three_times_then_succeeding(store, clock, make_engine):
    recorder = Recorder(clock, failures=3)
    await register(
        store, clock,
        {"name": "t", "type": "job", "schedule": {"after": "0s"}, "retry": {"maxRetries": 3, "retryDelay": "60s"}},
    )
    engine = make_engine(store, "a", job=recorder.job())

    await run_following_schedule(engine, store, clock, "t")

    task = await store.get_task("t")
    assert task.status is Status.COMPLETED
    assert len(recorder.starts) == 4
    assert all(b - a >= timedelta(seconds=60) for a, b in zip(recorder.starts, recorder.starts[1:]))
    assert task.failure_count == 0 and task.success_count == 1
    runs = (await store.list_runs("t")).items
    assert sorted((r.attempt, r.outcome) for r in runs) == [
        (1, Outcome.FAILURE), (2, Outcome.FAILURE), (3, Outcome.FAILURE), (4, Outcome.SUCCESS)
    ]


async def test_one_shot_out_of_retries_fails_then_manual_retry_with_reset(store, clock, make_engine):
    recorder = Recorder(clock, failures=2)
    await register(
        store, clock,
        {"name": "t", "type": "job", "schedule": {"after": "0s"}, "retry": {"maxRetries": 1, "retryDelay": "5s"}},
    )
    engine = make_engine(store, "a", job=recorder.job())
    await run_following_schedule(engine, store, clock, "t")

    task = await store.get_task("t")
    assert task.status is Status.FAILED and task.failure_count == 2
    assert "boom" in task.last_error

    retried = await store.retry("t", reset_failure_count=True)
    assert retried.status is Status.SCHEDULED and retried.failure_count == 0
    await engine.run_until_idle()

    task = await store.get_task("t")
    assert task.status is Status.COMPLETED and len(recorder.starts) == 3


async def test_periodic_task_out_of_retries_waits_for_next_slot_then_recovers(store, clock, make_engine):
    recorder = Recorder(clock, failures=3)
    await register(
        store, clock,
        {"name": "t", "type": "job", "schedule": {"every": "1h"}, "retry": {"maxRetries": 2, "retryDelay": "1m"}},
    )
    engine = make_engine(store, "a", job=recorder.job())
    first_slot = clock()

    for _ in range(3):  # the first try and two retries of the first slot all fail
        await engine.run_until_idle()
        clock.set((await store.get_task("t")).next_scheduled_execution)
    task = await store.get_task("t")
    assert task.status is Status.SCHEDULED and task.failure_count == 3
    assert task.scheduled_for == first_slot + timedelta(hours=1)

    await engine.run_until_idle()
    task = await store.get_task("t")
    assert task.failure_count == 0 and task.success_count == 1
    assert len(recorder.starts) == 4


async def test_a_task_no_executor_can_run_waits_unclaimed_until_one_is_registered(store, clock, make_engine):
    recorder = Recorder(clock)
    await register(
        store, clock, {"name": "t", "type": "nobody", "schedule": {"after": "0s"}, "retry": {"maxRetries": 0}}
    )
    await register(
        store, clock, {"name": "shell", "type": "nobody", "schedule": {"after": "0s"}, "run": {"shell": "true"}}
    )
    engine = make_engine(store, "a")

    assert await engine.run_until_idle() == 1  # only the task with a run: section

    task = await store.get_task("t")
    assert task.status is Status.SCHEDULED and task.failure_count == 0 and task.last_error is None
    assert (await store.list_runs("t")).total == 0
    assert (await store.get_task("shell")).status is Status.COMPLETED

    engine.register_executor("nobody", executor_from_callable(recorder.job()))
    assert await engine.run_until_idle() == 1
    assert (await store.get_task("t")).status is Status.COMPLETED
    assert len(recorder.starts) == 1


async def test_a_node_publishes_the_task_types_it_runs_in_its_heartbeat(store, clock, make_engine):
    engine = make_engine(store, "a", job=Recorder(clock).job())
    await engine.publish_heartbeat()
    [node] = await store.list_nodes()
    assert node.task_types == ("job",)

    engine.register_executor("appJob", executor_from_callable(Recorder(clock).job()))
    await engine.publish_heartbeat()
    [node] = await store.list_nodes()
    assert node.task_types == ("appJob", "job")


async def test_non_executor_node_never_runs_anything(store, clock, make_engine):
    recorder = Recorder(clock)
    await register(store, clock, {"name": "t", "type": "job", "schedule": {"after": "0s"}})
    engine = make_engine(store, "api-only", executor_node=False, job=recorder.job())

    assert await engine.run_until_idle() == 0

    assert recorder.starts == []
    assert (await store.get_task("t")).status is Status.SCHEDULED
    assert (await store.list_runs("t")).total == 0


async def test_run_on_all_copies_run_on_their_own_node_only(store, clock, make_engine):
    spec = {"name": "t", "type": "job", "schedule": {"after": "0s"}, "runOn": "all"}
    for node in ("a", "b"):
        await register(store, clock, spec, item_id=f"t@{node}", node=node)
    ran: dict[str, list[str]] = {"a": [], "b": []}

    def job_for(node):
        return lambda ctx: ran[node].append(ctx.task_id)

    for node in ("a", "b"):
        await make_engine(store, node, job=job_for(node)).run_until_idle()

    assert ran == {"a": ["t@a"], "b": ["t@b"]}


async def test_a_crashed_run_is_resumed_from_its_last_checkpoint(store, clock, make_engine):
    seen: list[tuple[int, dict | None]] = []
    checkpointed = asyncio.Event()

    async def job(ctx):
        seen.append((ctx.attempt, ctx.checkpoint_data))
        if ctx.attempt == 1:
            ctx.checkpoint({"progress": 50})
            checkpointed.set()
            await asyncio.Event().wait()  # hangs until its node dies

    await register(store, clock, {"name": "t", "type": "job", "schedule": {"after": "0s"}})
    node_a = make_engine(store, "a", job=job)
    dying = asyncio.create_task(node_a.run_until_idle())
    await asyncio.wait_for(checkpointed.wait(), 10)
    await wait_for(lambda: store.get_task("t"), lambda t: t.checkpoint_data == {"progress": 50})
    dying.cancel()  # node a dies: no finish, no abandon, its lease just runs out
    await asyncio.gather(dying, return_exceptions=True)

    clock.advance(timedelta(seconds=31))
    node_b = make_engine(store, "b", job=job)
    await node_b.run_until_idle()  # sees the lease expired
    clock.advance(node_b.config.recovery_grace)
    await node_b.run_until_idle()

    assert seen == [(1, None), (2, {"progress": 50})]
    task = await store.get_task("t")
    assert task.status is Status.COMPLETED
    assert [h["outcome"] for h in task.history] == ["success", "crashed"]


async def test_manual_on_crash_waits_for_resume(store, clock, make_engine):
    attempts: list[int] = []
    started = asyncio.Event()

    async def job(ctx):
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            started.set()
            await asyncio.Event().wait()

    await register(store, clock, {"name": "t", "type": "job", "schedule": {"after": "0s"}, "onCrash": "manual"})
    dying = asyncio.create_task(make_engine(store, "a", job=job).run_until_idle())
    await asyncio.wait_for(started.wait(), 10)
    dying.cancel()
    await asyncio.gather(dying, return_exceptions=True)
    clock.advance(timedelta(seconds=31))
    survivor = make_engine(store, "b", job=job)

    await survivor.run_until_idle()  # sees the lease expired
    clock.advance(survivor.config.recovery_grace)
    await survivor.run_until_idle()
    task = await store.get_task("t")
    assert task.status is Status.CRASHED and attempts == [1]

    await store.resume("t")
    await survivor.run_until_idle()
    assert (await store.get_task("t")).status is Status.COMPLETED and attempts == [1, 2]


async def test_two_nodes_never_overlap_an_exclusive_task(shared_stores, clock, make_engine):
    store_a, store_b = shared_stores
    inside = 0
    overlaps = 0
    slots: list = []

    async def job(ctx):
        nonlocal inside, overlaps
        inside += 1
        overlaps += inside > 1
        slots.append(ctx.scheduled_for)
        for _ in range(5):
            await asyncio.sleep(0)  # yield so the other node gets every chance to claim
        inside -= 1

    await register(store_a, clock, {"name": "t", "type": "job", "schedule": {"every": "1s"}})
    node_a, node_b = make_engine(store_a, "a", job=job), make_engine(store_b, "b", job=job)
    for _ in range(20):
        await asyncio.gather(node_a.run_until_idle(), node_b.run_until_idle())
        clock.advance(timedelta(seconds=1))

    assert overlaps == 0
    assert len(slots) == 20 and len(set(slots)) == 20


async def test_purge_removes_expired_final_records_and_nothing_else(store, clock, make_engine):
    def job(ctx):
        if ctx.task_id == "bad":
            raise RuntimeError("boom")
    await register(store, clock, {"name": "ok", "type": "job", "schedule": {"after": "0s"}}, origin="<api>")
    await register(
        store, clock, {"name": "bad", "type": "job", "schedule": {"after": "1s"}, "retry": {"maxRetries": 0}},
        origin="<api>",
    )
    await register(store, clock, {"name": "gone", "type": "job", "schedule": {"after": "1h"}}, origin="<api>")
    await register(store, clock, {"name": "periodic", "type": "job", "schedule": {"every": "1d"}}, origin="<api>")
    engine = make_engine(store, "a", job=job)
    clock.advance(timedelta(seconds=1))
    await engine.run_until_idle()
    await store.cancel("gone")
    statuses = {t: (await store.get_task(t)).status for t in ("ok", "bad", "gone", "periodic")}
    assert statuses == {
        "ok": Status.COMPLETED, "bad": Status.FAILED, "gone": Status.CANCELLED, "periodic": Status.SCHEDULED
    }

    retention = Retention(completed=timedelta(days=7), failed=timedelta(days=30), cancelled=timedelta(days=30))
    clock.advance(timedelta(days=6))
    assert (await store.purge(retention=retention)).tasks == 0
    clock.advance(timedelta(days=2))
    assert (await store.purge(retention=retention)).tasks == 1  # "ok": COMPLETED is kept 7 days
    clock.advance(timedelta(days=29))
    counts = await store.purge(retention=retention)

    remaining = {t.item_id for t in (await store.query_tasks(TaskQuery())).items}
    assert remaining == {"periodic"}
    assert counts.tasks == 2


# -- scenarios that need real time: leases renewed by the keep-alive ------------------------


@pytest.mark.realtime
async def test_a_task_running_longer_than_its_lease_is_never_started_twice(shared_stores, real_clock, make_engine):
    store_a, store_b = shared_stores
    runs: list[str] = []

    async def job(ctx):
        runs.append(ctx.node_id)
        await asyncio.sleep(3)  # the job's own duration: three lease lengths

    await register(store_a, real_clock, {"name": "t", "type": "job", "schedule": {"after": "0s"}})
    lease = {"lease_duration": timedelta(seconds=1), "poll_interval": timedelta(seconds=0.05)}
    nodes = [make_engine(store_a, "a", job=job, **lease), make_engine(store_b, "b", job=job, **lease)]
    for node in nodes:
        await node.start()
    try:
        await wait_for(lambda: store_a.get_task("t"), lambda t: t.status is Status.COMPLETED, timeout=20)
    finally:
        for node in nodes:
            await node.stop()

    assert len(runs) == 1
    assert (await store_a.list_runs("t")).total == 1


@pytest.mark.realtime
async def test_cancel_during_a_run_kills_it_and_stays_cancelled(store, real_clock, make_engine, tmp_path):
    pid_file = tmp_path / "pid"
    spec = {
        "name": "t", "schedule": {"after": "0s"},
        "run": {"shell": f"echo $$ > {pid_file}; exec sleep 60"},
    }
    await register(store, real_clock, spec)
    engine = make_engine(store, "a", lease_duration=timedelta(seconds=0.6), poll_interval=timedelta(seconds=0.05))
    await engine.start()
    try:
        await wait_for(lambda: store.get_task("t"), lambda t: t.status is Status.RUNNING and _pid_written(pid_file))
        pid = int(pid_file.read_text())
        await store.cancel("t")
        await wait_for(lambda: _async(engine.running_count), lambda n: n == 0, timeout=10)
    finally:
        await engine.stop()

    assert not _alive(pid)
    task = await store.get_task("t")
    assert task.status is Status.CANCELLED


@pytest.mark.realtime
async def test_shutdown_hands_in_flight_runs_to_a_peer(shared_stores, real_clock, make_engine):
    store_a, store_b = shared_stores
    attempts: list[tuple[str, int, dict | None]] = []
    started = asyncio.Event()

    async def job(ctx):
        attempts.append((ctx.node_id, ctx.attempt, ctx.checkpoint_data))
        if ctx.node_id == "a":
            ctx.checkpoint({"done": 3})
            started.set()
            await ctx.wait_cancelled()

    await register(store_a, real_clock, {"name": "t", "type": "job", "schedule": {"after": "0s"}})
    node_a = make_engine(store_a, "a", job=job, shutdown_grace=timedelta(seconds=0.1))
    await node_a.start()
    await asyncio.wait_for(started.wait(), 10)
    await wait_for(lambda: store_a.get_task("t"), lambda t: t.checkpoint_data == {"done": 3})
    await node_a.stop()

    task = await store_a.get_task("t")
    assert task.status is Status.CRASHED and task.last_error == SHUTDOWN_REASON
    await make_engine(store_b, "b", job=job).run_until_idle()

    assert attempts == [("a", 1, None), ("b", 2, {"done": 3})]
    assert (await store_b.get_task("t")).status is Status.COMPLETED


@pytest.mark.realtime
async def test_stop_right_after_a_wake_up_ends_the_loop(store, make_engine):
    """A wake-up completing as stop() cancels the sleeping loop must not keep it running forever."""
    engine = make_engine(store, "a", poll_interval=timedelta(seconds=30))
    await engine.start()
    # The loop has gone to sleep (it sets when it will wake up just before).
    await wait_for(lambda: _async(engine._wake_at), lambda wake_at: wake_at > 0)

    engine.wake()
    await asyncio.wait_for(engine.stop(), timeout=10)


# -- helpers ------------------------------------------------------------------------------------


async def run_following_schedule(engine, store, clock, item_id, limit=20):
    """Run the task, then jump the clock to each next due time, until it reaches a final status."""
    for _ in range(limit):
        await engine.run_until_idle()
        task = await store.get_task(item_id)
        if task.next_scheduled_execution is None:
            return
        clock.set(max(clock(), task.next_scheduled_execution))
    raise AssertionError(f"{item_id} still not final after {limit} rounds")


async def _async(value):
    return value


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.realtime
async def test_concurrency_replace_stops_an_overrunning_run_for_the_next_slot(store, real_clock, make_engine):
    slots: list = []

    async def job(ctx):
        slots.append(ctx.scheduled_for)
        if len(slots) == 1:
            await ctx.wait_cancelled()  # overruns its slot until replaced

    await register(
        store, real_clock, {"name": "t", "type": "job", "schedule": {"every": "1s"}, "concurrency": "replace"}
    )
    engine = make_engine(store, "a", job=job, lease_duration=timedelta(seconds=1.2), poll_interval=timedelta(seconds=0.05))
    await engine.start()
    try:
        await wait_for(lambda: store.list_runs("t"), lambda page: page.total >= 2, timeout=15)
    finally:
        await engine.stop()

    assert slots[1] - slots[0] == timedelta(seconds=1)
    first = (await store.list_runs("t")).items[-1]
    assert first.outcome is Outcome.CANCELLED and "replaced by the run of" in first.error


@pytest.mark.realtime
async def test_a_run_in_progress_when_its_task_is_suspended_finishes_normally_even_with_replace(
    store, real_clock, make_engine
):
    slots: list = []
    release = asyncio.Event()

    async def job(ctx):
        slots.append(ctx.scheduled_for)
        await release.wait()  # overruns its slot: replace would stop it, were the task not suspended

    await register(
        store, real_clock, {"name": "t", "type": "job", "schedule": {"every": "1s"}, "concurrency": "replace"}
    )
    lease = timedelta(seconds=1.2)
    engine = make_engine(store, "a", job=job, lease_duration=lease, poll_interval=timedelta(seconds=0.05))
    await engine.start()
    try:
        await wait_for(lambda: _async(slots), lambda started: len(started) == 1, timeout=15)
        await store.suspend("t")
        next_slot_at = slots[0] + timedelta(seconds=1)
        # A renewal after the next slot came due: the point where replace would have stopped the run.
        task = await wait_for(
            lambda: store.get_task("t"),
            lambda task: task.lease_until is None or task.lease_until > next_slot_at + lease, timeout=15,
        )
        assert task.status is Status.RUNNING
        release.set()
        task = await wait_for(lambda: store.get_task("t"), lambda task: task.status is not Status.RUNNING, timeout=15)
    finally:
        await engine.stop()

    [run] = (await store.list_runs("t")).items
    assert run.outcome is Outcome.SUCCESS and len(slots) == 1
    assert (task.status, task.suspended, task.success_count) == (Status.SCHEDULED, True, 1)


@pytest.mark.realtime
async def test_a_run_claimed_ahead_starts_at_its_due_time_and_shutdown_hands_back_unstarted_ones(
    store, real_clock, make_engine
):
    started: list = []

    async def job(ctx):
        started.append((ctx.task_id, real_clock()))

    await register(store, real_clock, {"name": "soon", "type": "job", "schedule": {"after": "300ms"}})
    await register(store, real_clock, {"name": "later", "type": "job", "schedule": {"after": "30s"}})
    engine = make_engine(store, "a", job=job, prefetch=timedelta(seconds=60), poll_interval=timedelta(seconds=0.05))
    await engine.start()
    try:
        soon = await wait_for(lambda: store.get_task("soon"), lambda t: t.status is Status.COMPLETED)
        await wait_for(lambda: store.get_task("later"), lambda t: t.status is Status.RUNNING)
    finally:
        await engine.stop()

    assert [task for task, _ in started] == ["soon"]
    due = soon.history[0]["scheduledFor"]
    assert started[0][1] >= datetime.fromisoformat(due.replace("Z", "+00:00"))
    # Claimed ahead but never started: back as it was, not a crash that would use up an attempt.
    later = await store.get_task("later")
    assert later.status is Status.SCHEDULED and later.attempt == 1 and later.last_error is None
    assert later.lease_owner is None and later.history == [] and later.last_execution_date is None
    assert (await store.list_runs("later")).total == 0


def _pid_written(path) -> bool:
    """The shell creates the file before it writes the pid: wait for the whole line."""
    return path.exists() and path.read_text().endswith("\n")
