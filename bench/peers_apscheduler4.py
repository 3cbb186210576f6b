"""bench/peers.py's workloads on APScheduler 4.0 (a pre-release); runs in its own virtual environment.

    python bench/peers_apscheduler4.py throughput --count 10000 --dir DIR
    python bench/peers_apscheduler4.py lateness --count 1000 --seconds 10 --spread 1 --dir DIR

Prints one JSON object. Configuration (the README's Benchmarks section says the same):
AsyncScheduler (role both: it schedules and runs) with its default executors, the no-op coroutine on
the "async" executor (awaited on the event loop); `max_concurrent_jobs` set to what our engine is given
in the same workload (64 for throughput, 2,000 for lateness; its default is 100); one
SQLAlchemyDataStore on `sqlite+aiosqlite` in DIR, SQLAlchemy's defaults; the default LocalEventBroker.
Each of the N tasks is its own APScheduler task (`configure_task`, `max_running_jobs=1`, its default:
our `concurrency: forbid`), with one schedule: a DateTrigger for a one-shot, an IntervalTrigger of 1 s
for a periodic task, `misfire_grace_time=None` (its default: run however late) and `coalesce=latest`
(its default: one job for several missed fire times, as our `missedRuns: runOnce`). All N schedules of
one function would share one task, and with it `max_running_jobs=1`: they would run one at a time.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import anyio
from apscheduler import AsyncScheduler, JobOutcome, JobReleased, current_job
from apscheduler.datastores.sqlalchemy import SQLAlchemyDataStore
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from peers_worker import serve  # beside this file: the command line every side shares

samples: list[tuple[float, float]] = []  # (slot, lateness) of each run, appended by the run itself


async def noop() -> None:
    return None


async def measure() -> None:
    slot = current_job.get().scheduled_fire_time.timestamp()
    samples.append((slot, time.time() - slot))


def new_scheduler(directory: str, max_concurrent_jobs: int) -> AsyncScheduler:
    store = SQLAlchemyDataStore(f"sqlite+aiosqlite:///{directory}/jobs.sqlite")
    return AsyncScheduler(store, max_concurrent_jobs=max_concurrent_jobs)


async def add_tasks(scheduler: AsyncScheduler, func, triggers) -> None:
    for i, trigger in enumerate(triggers):
        task = await scheduler.configure_task(f"t{i:06d}", func=func, max_running_jobs=1)
        await scheduler.add_schedule(task.id, trigger, misfire_grace_time=None)


async def throughput(count: int, directory: str) -> dict:
    problems: list[str] = []
    async with new_scheduler(directory, max_concurrent_jobs=64) as scheduler:
        due = datetime.now(timezone.utc)
        await add_tasks(scheduler, noop, (DateTrigger(due) for _ in range(count)))
        all_ran = anyio.Event()
        ran = 0

        def released(event: JobReleased) -> None:
            nonlocal ran
            ran += 1
            if event.outcome is not JobOutcome.success:
                problems.append(f"{event.task_id}: {event.outcome.name} {event.exception_type or ''}")
            if ran == count:
                all_ran.set()

        scheduler.subscribe(released, {JobReleased})
        start = time.perf_counter()
        await scheduler.start_in_background()
        await all_ran.wait()
        elapsed = time.perf_counter() - start
        await scheduler.stop()
    return {"runs": ran, "elapsed": elapsed, "problems": problems[:5]}


async def lateness(count: int, seconds: float, spread: float, directory: str) -> dict:
    problems: list[str] = []
    async with new_scheduler(directory, max_concurrent_jobs=2000) as scheduler:
        first = time.time() + 2  # as bench/engine.py: first slots 2 s after the tasks are registered
        triggers = (
            IntervalTrigger(seconds=1, start_time=datetime.fromtimestamp(first + spread * i / count, timezone.utc))
            for i in range(count)
        )
        await add_tasks(scheduler, measure, triggers)

        def released(event: JobReleased) -> None:
            if event.outcome is not JobOutcome.success:
                problems.append(f"{event.task_id}: {event.outcome.name} {event.exception_type or ''}")

        scheduler.subscribe(released, {JobReleased})
        await scheduler.start_in_background()
        started = time.time()
        await anyio.sleep(max(first, started) + seconds + 2 - time.time())  # the window, then 2 s for late runs
        await scheduler.stop()
    return {"first": first, "started": started, "samples": samples, "problems": problems[:5]}


def main() -> None:
    serve(anyio.run, throughput, lateness)


if __name__ == "__main__":
    main()
