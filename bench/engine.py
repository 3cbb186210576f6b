"""Engine benchmarks against DESIGN.md's targets, on SQLite.

    python bench/engine.py               # all of them (about a minute)
    python bench/engine.py throughput    # or one: throughput | cluster | lateness | idle

- throughput: no-op Python one-shots claimed, run and finished by one node (target >= 2,000 runs/s)
- cluster:    the same with three processes on one SQLite file; checks no loss and no duplicate
- lateness:   1,000 tasks due every second on one node, start minus due time (target p50 <= 5 ms, p99 <= 50 ms),
              with their slots spread over the second and with all of them due at the same instant
- idle:       CPU of a node holding 10,000 hourly tasks with nothing due (target < 1% of a core)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler.engine import Engine, EngineConfig  # noqa: E402
from scheduler.executors import executor_from_callable  # noqa: E402
from scheduler.node import tune_gc_for_daemon  # noqa: E402
from scheduler.schedule import first_slot  # noqa: E402
from scheduler.spec import Source, TaskSpec  # noqa: E402
from scheduler.store import open_store  # noqa: E402


async def noop(ctx) -> None:
    return None


async def seed(url: str, count: int, schedule: dict, spread: timedelta = timedelta(0)) -> None:
    """``count`` tasks registered at one instant, their first slots spaced evenly over ``spread``."""
    store = open_store(url)
    await store.start()
    now = store.now()
    for i in range(count):
        spec = TaskSpec.from_dict({"name": f"t{i:06d}", "type": "noop", "schedule": schedule}, source=Source("<bench>"))
        await store.upsert_spec(spec, first_due=first_slot(spec.schedule, now + spread * i / count))
    await store.close()


async def drain(url: str, node_id: str, capacity: int = 64, cpu: dict[str, float] | None = None) -> int:
    """Run every due task; ``cpu`` gets the CPU seconds of the event loop's thread and of the store's writer."""
    loop_cpu = time.thread_time()
    store = open_store(url)
    await store.start()
    engine = Engine(
        EngineConfig(node_id=node_id, max_concurrent_runs=capacity), [store],
        executors={"noop": executor_from_callable(noop)},
    )
    finished = await engine.run_until_idle(max_rounds=1_000_000)
    if cpu is not None:
        cpu.update(loop=time.thread_time() - loop_cpu, store=thread_cpu_seconds("sqlite-store"))
    await store.close()
    return finished


def cpu_seconds(pid: int | str = "self", thread: int | None = None) -> float:
    """User and system CPU time so far of process ``pid`` (all its threads), or of one of its threads."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    fields = Path(path).read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def thread_cpu_seconds(name_prefix: str) -> float:
    """CPU seconds of this process's live threads whose name starts with ``name_prefix``."""
    return sum(cpu_seconds(thread=thread.native_id) for thread in threading.enumerate()
               if thread.name.startswith(name_prefix) and thread.native_id is not None)


def throughput(count: int = 10_000) -> str:
    cpu: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        asyncio.run(seed(url, count, {"after": "0s"}))
        start = time.perf_counter()
        finished = asyncio.run(drain(url, "node-1", cpu=cpu))
        elapsed = time.perf_counter() - start
    assert finished == count, (finished, count)
    # The store's writer is one thread: its CPU per run bounds the rate whatever the loop does.
    return (
        f"throughput, 1 node:    {count / elapsed:8,.0f} runs/s ({count:,} no-op runs in {elapsed:.2f} s;"
        f" CPU per run: store writer {cpu['store'] / count * 1e6:.0f} us,"
        f" event loop {cpu['loop'] / count * 1e6:.0f} us)"
    )


def _cluster_worker(url: str, node_id: str, results) -> None:
    results.put((node_id, asyncio.run(drain(url, node_id))))


def cluster(count: int = 10_000, processes: int = 3) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        asyncio.run(seed(url, count, {"after": "0s"}))
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        workers = [context.Process(target=_cluster_worker, args=(url, f"node-{i}", results)) for i in range(processes)]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        counts = dict(results.get(timeout=600) for _ in workers)
        elapsed = time.perf_counter() - start
        for worker in workers:
            worker.join()
        db = sqlite3.connect(f"{tmp}/bench.db")
        runs, distinct = db.execute("SELECT count(*), count(DISTINCT task_id) FROM runs").fetchone()
        completed = db.execute("SELECT count(*) FROM tasks WHERE status = 'COMPLETED'").fetchone()[0]
    assert runs == distinct == completed == count, (runs, distinct, completed)
    split = ", ".join(f"{node} {n:,}" for node, n in sorted(counts.items()))
    return (
        f"throughput, {processes} nodes:   {count / elapsed:8,.0f} runs/s aggregate ({split}; "
        f"{runs:,} runs for {distinct:,} tasks: no loss, no duplicate; includes process start-up)"
    )


async def _lateness(url: str, seconds: float) -> tuple[list[float], float]:
    """Each run's lateness, and the CPU seconds the process used meanwhile."""
    store = open_store(url)
    await store.start()
    lateness: list[float] = []

    async def measure(ctx) -> None:
        lateness.append((store.now() - ctx.scheduled_for).total_seconds())

    engine = Engine(
        EngineConfig(node_id="node-1", max_concurrent_runs=2000), [store],
        executors={"noop": executor_from_callable(measure)},
    )
    tune_gc_for_daemon()  # as `scheduler run` does
    await engine.start()
    cpu = time.process_time()
    await asyncio.sleep(seconds)  # the measurement window: the benchmark's own duration
    cpu = time.process_time() - cpu
    await engine.stop()
    await store.close()
    return lateness, cpu


def lateness(count: int = 1000, seconds: float = 10) -> str:
    """Two shapes of "1,000 tasks every second": slots spread over the second, and all at one instant."""
    lines = []
    for shape, spread in (("spread over each second", timedelta(seconds=1)), ("all due at the same instant", timedelta(0))):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.db"
            asyncio.run(seed(url, count, {"every": "1s", "initialDelay": "2s"}, spread=spread))
            samples, cpu = asyncio.run(_lateness(url, seconds))
        warm = sorted(samples[count:])  # the first second includes start-up
        p50 = statistics.median(warm) * 1000
        p99 = warm[int(len(warm) * 0.99)] * 1000
        lines.append(
            f"lateness, {count:,} tasks/s, {shape}: p50 {p50:6.1f} ms, p99 {p99:6.1f} ms ({len(warm):,} runs;"
            f" CPU {1000 * cpu / len(samples):.2f} ms per run)"
        )
    return "\n".join(lines)


async def _idle(url: str, seconds: float) -> float:
    store = open_store(url)
    await store.start()
    engine = Engine(EngineConfig(node_id="node-1"), [store], executors={"noop": executor_from_callable(noop)})
    await engine.start()
    await asyncio.sleep(1)  # settle after start
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)  # the measurement window
    used = (time.process_time() - cpu) / (time.perf_counter() - wall)
    await engine.stop()
    await store.close()
    return used


def idle(count: int = 10_000, seconds: float = 10) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        asyncio.run(seed(url, count, {"every": "1h", "initialDelay": "1h"}))
        used = asyncio.run(_idle(url, seconds))
    return f"idle, {count:,} hourly tasks: {used * 100:5.2f} % of one core"


def machine() -> str:
    model = "unknown CPU"
    try:
        model = next(
            line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def rss_mb(pid: int | str = "self") -> tuple[float, float]:
    """(current, peak) resident set size of process ``pid`` in MB."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


BENCHMARKS = {"throughput": throughput, "cluster": cluster, "lateness": lateness, "idle": idle}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", metavar="BENCHMARK", help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    args = parser.parse_args()
    unknown = set(args.which) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    logging.basicConfig(level=logging.ERROR)  # the engine's per-run lines are not the benchmark's output
    print(machine())
    for name in args.which or BENCHMARKS:
        print(BENCHMARKS[name](), flush=True)


if __name__ == "__main__":
    main()
