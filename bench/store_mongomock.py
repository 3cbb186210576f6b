"""Claim+finish cycles per second of the MongoDB store on mongomock.

This measures the Python side only (the store's code, driver-thread hand-offs,
document conversions and mongomock's in-memory matching, which copies and scans
every document of a collection on each query, so keep ``--tasks`` small): it says
nothing about MongoDB speed, where a cycle is three network round trips and the
claim filter is served by an index.

Each round claims every due task (in batches of ``--batch``) and finishes each
run with its next slot one simulated second later, so the same ``--tasks`` tasks
cycle until ``--cycles`` runs have been claimed and finished.

    python bench/store_mongomock.py [--tasks N] [--batch B] [--cycles C]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import mongomock

# Runnable from a checkout without installing: the repository root holds the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler.model import Outcome, RunResult, Status, Transition  # noqa: E402
from scheduler.spec import TaskSpec  # noqa: E402
from scheduler.store.mongo import MongoStore  # noqa: E402

LABEL = "Python overhead only (mongomock), not MongoDB speed"
LEASE = timedelta(seconds=30)
TICK = timedelta(seconds=1)


class SteppedClock:
    """Simulated time: moves one tick per round, so every round has new slots."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


async def run(tasks: int, batch: int, cycles: int) -> float:
    clock = SteppedClock()
    store = MongoStore("mongodb://127.0.0.1/bench", clock=clock, client_factory=mongomock.MongoClient, threads=1)
    async with store:
        for index in range(tasks):
            spec = TaskSpec.from_dict({"name": f"noop-{index:04d}", "type": "noop", "schedule": {"every": "1s"}})
            await store.upsert_spec(spec, first_due=clock())
        done = 0
        began = time.perf_counter()
        while done < cycles:
            while done < cycles and (
                claims := await store.claim_due("bench", min(batch, cycles - done), LEASE, task_types={"noop"})
            ):
                for claim in claims:
                    upcoming = clock() + TICK
                    successes = claim.task.success_count + 1
                    transition = Transition(Status.SCHEDULED, upcoming, upcoming, 1, 0, successes, None)
                    finished = await store.finish_run(claim, RunResult(Outcome.SUCCESS, clock()), transition)
                    assert finished, f"run {claim.run_id} was fenced out in a single-node benchmark"
                    done += 1
            clock.now += TICK
        elapsed = time.perf_counter() - began
    return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20, help="resident tasks, all due every simulated second")
    parser.add_argument("--batch", type=int, default=10, help="claim_due limit per call")
    parser.add_argument("--cycles", type=int, default=2000, help="claim+finish cycles to run")
    args = parser.parse_args()
    rate = asyncio.run(run(args.tasks, args.batch, args.cycles))
    print(f"{rate:,.0f} claim+finish cycles/s ({args.cycles} cycles, {args.tasks} tasks, batch {args.batch}): {LABEL}")


if __name__ == "__main__":
    main()
