"""Claim+finish cycles per second of the SQLite store, with 1 and 4 processes on one file.

Each process loops ``claim_due(limit)`` then ``finish_run`` for every claim
until nothing is due. ``concurrent`` finishes the batch's runs as independent
coroutines, as the engine's runs end (the store group-commits them);
``sequential`` awaits each finish before the next (one transaction each).
The rate is tasks / (last process end - first process start), measured after a
common start signal, so process start-up is not counted.

    python bench/store_claims.py [--tasks 10000] [--processes 1 4] [--limit 32]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

# Runnable from a checkout without installing: the repository root holds the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler.model import Claim, Outcome, RunResult, Status, Transition  # noqa: E402
from scheduler.spec import TaskSpec  # noqa: E402
from scheduler.store.sqlite import SQLiteStore  # noqa: E402

LEASE = timedelta(seconds=60)


async def create_tasks(path: Path, count: int) -> None:
    async with SQLiteStore(path) as store:
        due = store.now() - timedelta(seconds=1)
        specs = [
            TaskSpec.from_dict({"name": f"task-{i:06d}", "type": "noop", "schedule": {"at": "2030-01-01T00:00:00Z"}})
            for i in range(count)
        ]
        for first in range(0, count, 100):
            await asyncio.gather(*(store.upsert_spec(spec, first_due=due) for spec in specs[first:first + 100]))


async def finish(store: SQLiteStore, claim: Claim) -> None:
    transition = Transition(
        status=Status.COMPLETED, next_scheduled_execution=None, scheduled_for=None,
        attempt=claim.attempt, failure_count=0, success_count=1, last_error=None,
    )
    if not await store.finish_run(claim, RunResult(Outcome.SUCCESS, store.now()), transition):
        raise RuntimeError(f"{claim.node_id} was fenced out of {claim.run_id}")


async def claim_and_finish(path: str, node_id: str, limit: int, mode: str, ready, start, results) -> None:
    async with SQLiteStore(path) as store:
        ready.put(node_id)
        start.wait()
        began = time.time()
        done = 0
        # As an engine with an executor for "noop" claims.
        while claims := await store.claim_due(node_id, limit, LEASE, task_types={"noop"}):
            if mode == "concurrent":
                await asyncio.gather(*(finish(store, claim) for claim in claims))
            else:
                for claim in claims:
                    await finish(store, claim)
            done += len(claims)
        results.put((node_id, began, time.time(), done))


def worker(path: str, node_id: str, limit: int, mode: str, ready, start, results) -> None:
    asyncio.run(claim_and_finish(path, node_id, limit, mode, ready, start, results))


def run(template: Path, workdir: Path, tasks: int, processes: int, limit: int, mode: str) -> tuple[float, float]:
    path = workdir / f"bench-{processes}-{mode}.db"
    shutil.copyfile(template, path)
    context = multiprocessing.get_context("spawn")
    ready, start, results = context.Queue(), context.Event(), context.Queue()
    procs = [context.Process(target=worker, args=(str(path), f"node-{i}", limit, mode, ready, start, results))
             for i in range(processes)]
    for proc in procs:
        proc.start()
    for _ in procs:  # every process has opened the store: start them together
        ready.get(timeout=120)
    start.set()
    reports = [results.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(60)
        if proc.exitcode != 0:
            raise SystemExit(f"{proc.name} exited with {proc.exitcode}")
    total = sum(report[3] for report in reports)
    if total != tasks:
        raise SystemExit(f"{total} runs finished, expected {tasks}")
    elapsed = max(report[2] for report in reports) - min(report[1] for report in reports)
    return elapsed, tasks / elapsed


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, SQLite {__import__('sqlite3').sqlite_version}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--limit", type=int, default=32, help="claim batch size")
    parser.add_argument("--finish", nargs="+", default=["concurrent", "sequential"],
                        choices=["concurrent", "sequential"])
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        template = workdir / "template.db"
        began = time.perf_counter()
        asyncio.run(create_tasks(template, args.tasks))
        print(f"created {args.tasks} due tasks in {time.perf_counter() - began:.1f} s")
        print(f"{'processes':>9}  {'finish':>10}  {'tasks':>7}  {'seconds':>7}  {'cycles/s':>9}")
        for mode in args.finish:
            for processes in args.processes:
                elapsed, rate = run(template, workdir, args.tasks, processes, args.limit, mode)
                print(f"{processes:>9}  {mode:>10}  {args.tasks:>7}  {elapsed:>7.2f}  {rate:>9.0f}")


if __name__ == "__main__":
    main()
