"""bench/peers.py's workloads on APScheduler 3.11; runs in its own virtual environment (see bench/peers.py).

    python bench/peers_apscheduler3.py throughput --count 10000 --dir DIR
    python bench/peers_apscheduler3.py lateness --count 1000 --seconds 10 --spread 1 --dir DIR

Prints one JSON object. Configuration (the README's Benchmarks section says the same):
AsyncIOScheduler with its default AsyncIOExecutor, which runs a coroutine function as a task on the
event loop (no pool, no limit); one SQLAlchemyJobStore on a SQLite file in DIR, SQLAlchemy's defaults;
each job `misfire_grace_time=None` (run however late; the default, 1 s, would drop late runs instead of
measuring them), `coalesce=True` (one run for several missed slots, as our `missedRuns: runOnce`),
`max_instances=1` (the default: a job never runs beside itself, as our `concurrency: forbid`).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from peers_worker import serve  # beside this file: the command line every side shares


async def noop() -> float:
    """The no-op; returns when it started, which the EXECUTED event carries to the listener."""
    return time.time()


def new_scheduler(directory: str) -> AsyncIOScheduler:
    return AsyncIOScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{directory}/jobs.sqlite")},
        job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        timezone=timezone.utc,
    )


def listen_for_problems(scheduler: AsyncIOScheduler, problems: list[str]) -> None:
    def record(event) -> None:
        problems.append(f"{event.job_id}: {'missed' if event.code == EVENT_JOB_MISSED else event.exception!r}")

    scheduler.add_listener(record, EVENT_JOB_ERROR | EVENT_JOB_MISSED)


async def throughput(count: int, directory: str) -> dict:
    scheduler = new_scheduler(directory)
    scheduler.start(paused=True)  # jobs are written to the store now, timed from resume()
    due = datetime.now(timezone.utc)
    for _ in range(count):
        scheduler.add_job(noop, "date", run_date=due)
    problems: list[str] = []
    listen_for_problems(scheduler, problems)
    done = asyncio.Event()
    ran = 0

    def executed(event) -> None:
        nonlocal ran
        ran += 1
        if ran == count:
            done.set()

    scheduler.add_listener(executed, EVENT_JOB_EXECUTED)
    start = time.perf_counter()
    scheduler.resume()
    await done.wait()
    elapsed = time.perf_counter() - start
    scheduler.shutdown(wait=False)
    return {"runs": ran, "elapsed": elapsed, "problems": problems[:5]}


async def lateness(count: int, seconds: float, spread: float, directory: str) -> dict:
    scheduler = new_scheduler(directory)
    scheduler.start(paused=True)
    first = time.time() + 2  # as bench/engine.py: first slots 2 s after the tasks are registered
    for i in range(count):
        start = datetime.fromtimestamp(first + spread * i / count, timezone.utc)
        scheduler.add_job(noop, IntervalTrigger(seconds=1, start_date=start, timezone=timezone.utc))
    problems: list[str] = []
    listen_for_problems(scheduler, problems)
    samples: list[tuple[float, float]] = []

    def executed(event) -> None:
        slot = event.scheduled_run_time.timestamp()
        samples.append((slot, event.retval - slot))

    scheduler.add_listener(executed, EVENT_JOB_EXECUTED)
    scheduler.resume()
    started = time.time()
    await asyncio.sleep(max(first, started) + seconds + 2 - time.time())  # the window, then 2 s for late runs
    seen = problems[:5]  # before shutdown, which cancels the runs still waiting (logged as errors)
    scheduler.shutdown(wait=False)
    return {"first": first, "started": started, "samples": samples, "problems": seen}


def main() -> None:
    serve(lambda workload, *args: asyncio.run(workload(*args)), throughput, lateness)


if __name__ == "__main__":
    main()
