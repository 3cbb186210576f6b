"""bench/peers.py's workloads on this project's engine, in process as bench/engine.py runs it.

    python bench/peers_ours.py throughput --count 10000 --dir DIR
    python bench/peers_ours.py lateness --count 1000 --seconds 10 --spread 1 --dir DIR

Prints one JSON object, as the peers' workers do. Configuration: bench/engine.py's, which is the
engine's default but for the capacity: one Engine on a SQLite store in DIR (WAL, synchronous=NORMAL:
the store's own settings), no-op coroutine tasks (`type: noop`, defaults otherwise: `concurrency:
forbid`, `missedRuns: runOnce`, no missed-run grace), `maxConcurrentRuns` 64 for throughput (the
default) and 2,000 for lateness, the garbage collector tuned for lateness as `scheduler run` does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from engine import drain, seed  # bench/engine.py, beside this file; it puts the checkout on sys.path

from scheduler.engine import Engine, EngineConfig
from scheduler.executors import executor_from_callable
from scheduler.node import tune_gc_for_daemon
from scheduler.store import open_store

from peers_worker import serve  # beside this file: the command line every side shares


async def throughput(count: int, directory: str) -> dict:
    url = f"sqlite:///{directory}/bench.db"
    await seed(url, count, {"after": "0s"})
    start = time.perf_counter()
    ran = await drain(url, "node-1")  # bench/engine.py's throughput, timed the same way
    return {"runs": ran, "elapsed": time.perf_counter() - start, "problems": []}


async def lateness(count: int, seconds: float, spread: float, directory: str) -> dict:
    url = f"sqlite:///{directory}/bench.db"
    first = time.time() + 2  # seed's first slots: 2 s (initialDelay) after the tasks are registered
    await seed(url, count, {"every": "1s", "initialDelay": "2s"}, spread=timedelta(seconds=spread))
    store = open_store(url)
    await store.start()
    samples: list[tuple[float, float]] = []

    async def measure(ctx) -> None:
        slot = ctx.scheduled_for.timestamp()
        samples.append((slot, time.time() - slot))

    engine = Engine(
        EngineConfig(node_id="node-1", max_concurrent_runs=2000), [store],
        executors={"noop": executor_from_callable(measure)},
    )
    tune_gc_for_daemon()
    await engine.start()
    started = time.time()
    await asyncio.sleep(max(first, started) + seconds + 2 - time.time())  # the window, then 2 s for late runs
    await engine.stop()
    await store.close()
    return {"first": first, "started": started, "samples": samples, "problems": []}


def main() -> None:
    logging.basicConfig(level=logging.ERROR)  # as bench/engine.py: the per-run lines are not the output
    serve(lambda workload, *args: asyncio.run(workload(*args)), throughput, lateness)


if __name__ == "__main__":
    main()
