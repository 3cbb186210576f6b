"""Soak: one real ``scheduler run`` node running 1,000 no-op Python tasks every second, for ten minutes.

    python bench/soak.py                          # 1,000 sync tasks (worker threads), 600 s
    python bench/soak.py --tasks 200 --duration 120 --async
    python bench/soak.py --nodes 2 --tasks 2000 --duration 120   # two nodes on one store file

Writes ``--tasks`` task files (``every: 1s``, ``python: noop:noop`` of ``bench/jobs``, a plain
function, so each run goes to a worker thread; ``--async``: a coroutine function) into a tasks.d,
starts one node of this checkout (``--nodes``: that many, sharing the store and the tasks.d)
on a SQLite store in a temporary directory (the default ``scheduler.yaml`` but for the
``--config`` lines given) and, while it runs, samples (of every node, but RSS and the API: the first's):

- the node's RSS (``VmRSS`` of /proc/PID/status) every ``--sample`` seconds;
- runs finished (``scheduler_runs_total`` of ``GET /metrics``), scraped every 15 s, and the
  node's CPU time (/proc/PID/stat) at the same times: CPU per run tells what a run costs
  whatever else shares the machine;
- ``GET /cxs/tasks?limit=50``, timed twice a second by a client thread;
- start lateness: ``startedAt - scheduledFor`` of the run records (store clock when the
  executor is called, minus the slot), read from the store file once the node has stopped;
- slots missed: in the same records, each task's slots without a run between its first and
  last run after the warm-up (a run more than a period late covers the slots it missed);
- "lost the lease" warnings in the node's log, and ``scheduler_lease_losses_total``.

The first minute is warm-up (start, imports, the store's pages, thread pool): runs/s,
lateness and API latency are given from then to the end, and the RSS growth from the median
of the second minute to the median of the last one. Task files written at one instant make
every slot of a second due at the same instant; ``--spread`` offsets their first slots over
the second instead (``initialDelay``): bench/engine.py's two shapes of lateness.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support: the node is its Daemon

from engine import cpu_seconds, machine, percentile, rss_mb  # noqa: E402  (bench/engine.py)
from tests.support.daemon import Daemon  # noqa: E402

JOBS = Path(__file__).resolve().parent / "jobs"  # noop.py, on the node's PYTHONPATH

WARM_UP = 60.0  # seconds left out of the summary
SCRAPE = 15.0  # seconds between scrapes of /metrics, as a Prometheus server would


def write_tasks(tasks_dir: Path, count: int, function: str, spread: bool) -> None:
    tasks_dir.mkdir()
    for index in range(count):
        delay = f"\n  initialDelay: {index * 1000 // count}ms" if spread else ""
        (tasks_dir / f"t{index:05d}.yaml").write_text(
            f"apiVersion: scheduler/v1\nkind: Task\nname: t{index:05d}\n"
            f"schedule:\n  every: 1s{delay}\nrun: {{python: 'noop:{function}'}}\n"
        )


def get(url: str, token: str | None = None) -> bytes:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def metric(text: str, name: str) -> float:
    """The sum of every series of ``name`` in a Prometheus text exposition."""
    pattern = re.compile(rf"^{name}(?:{{[^}}]*}})? (\S+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text))


class ApiProbe(threading.Thread):
    """Times ``GET /cxs/tasks?limit=50`` every ``interval`` seconds: (seconds since start, ms) pairs."""

    def __init__(self, base: str, token: str, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.base, self.token, self.interval = base, token, interval
        self.samples: list[tuple[float, float]] = []
        self.errors = 0
        self.stopping = threading.Event()
        self.began = time.monotonic()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            started = time.monotonic()
            try:
                get(f"{self.base}/cxs/tasks?limit=50", self.token)
            except OSError:
                self.errors += 1
                continue
            self.samples.append((started - self.began, (time.monotonic() - started) * 1000))


def soak(args: argparse.Namespace, work: Path) -> None:
    # The tasks directory in a directory of its own, as /etc/scheduler/tasks.d is: its parent is watched
    # too (a link switch), and the store's writes or the logs beside it would wake the watcher all the time.
    tasks_dir = work / "etc" / "tasks.d"
    tasks_dir.parent.mkdir()
    write_tasks(tasks_dir, args.tasks, "noop_async" if args.use_async else "noop", args.spread)
    config = work / "scheduler.yaml"
    config.write_text("".join(f"{line}\n" for line in args.config))
    store = work / "soak.db"
    nodes = [
        Daemon(state_dir=work / f"state-{index}", tasks_dir=tasks_dir, node_id=f"soak-{index}",
               store=f"sqlite:///{store}", config=config, log_level=args.log_level,
               env={"PYTHONPATH": os.pathsep.join([str(ROOT), str(JOBS)])})  # this checkout's node
        for index in range(1, args.nodes + 1)
    ]
    for node in nodes:
        node.start(wait_ready=False)
    for node in nodes:
        node.wait_ready(timeout=60)
        print(f"node {node.node_id} pid {node.process.pid}, {node.url}, log {node.log_path}", flush=True)
    probe = ApiProbe(nodes[0].url, nodes[0].token)  # the first node's API, while every node runs
    probe.start()
    began, began_ms = time.monotonic(), time.time() * 1000
    rss: list[tuple[float, float]] = []  # (seconds since start, MB of the first node)
    runs: list[tuple[float, float, float]] = []  # (seconds since start, runs finished, CPU seconds), all nodes
    try:
        while (elapsed := time.monotonic() - began) <= args.duration:
            for node in nodes:
                if node.process.poll() is not None:
                    raise SystemExit(f"{node.node_id} exited with {node.process.returncode}; see {node.log_path}")
            rss.append((elapsed, rss_mb(nodes[0].process.pid)[0]))
            if not runs or elapsed - runs[-1][0] >= SCRAPE:
                runs.append((elapsed, *scrape(nodes)[:2]))
                if len(runs) % 2 == 1:
                    print(f"  {elapsed:5.0f} s  RSS {rss[-1][1]:6.1f} MB  {runs[-1][1]:9,.0f} runs"
                          f"  load {os.getloadavg()[0]:.1f}", flush=True)
            time.sleep(args.sample)  # the sampling period
        finished, cpu, losses_metric = scrape(nodes)
        runs.append((time.monotonic() - began, finished, cpu))
    finally:
        probe.stopping.set()
        for node in nodes:
            try:
                node.stop(timeout=60)
            except subprocess.TimeoutExpired:
                node.kill()
    warm_ms = began_ms + 1000 * min(WARM_UP, rss[-1][0])
    report(args, rss, runs, probe, lateness(store, warm_ms), missed_slots(store, warm_ms),
           [node.log_path for node in nodes], losses_metric)


def scrape(nodes: list[Daemon]) -> tuple[float, float, float]:
    """Runs finished, CPU seconds used and leases lost so far, summed over ``nodes``: one scrape each."""
    pages = [get(f"{node.url}/metrics").decode() for node in nodes]
    return (
        sum(metric(page, "scheduler_runs_total") for page in pages),
        sum(cpu_seconds(node.process.pid) for node in nodes),
        sum(metric(page, "scheduler_lease_losses_total") for page in pages),
    )


def lateness(store: Path, since_ms: float) -> list[float]:
    """Milliseconds each run started after its slot, for the runs that started after ``since_ms``."""
    with closing(sqlite3.connect(store)) as db:
        query = "SELECT started_at - scheduled_for FROM runs WHERE finished_at IS NOT NULL AND started_at >= ?"
        return [float(late) for (late,) in db.execute(query, (since_ms,))]


def missed_slots(store: Path, since_ms: float, period_ms: int = 1000) -> tuple[int, int]:
    """Slots after ``since_ms`` that no run record covers, between each task's first and last run
    there (every ``period_ms``: a task whose run came late ran once for the slots it missed); and the
    slots in that span. From the store, not from rates: a scrape's own time skews those by a percent."""
    missed = spanned = 0
    last: dict[str, int] = {}
    with closing(sqlite3.connect(store)) as db:
        query = "SELECT task_id, scheduled_for FROM runs WHERE scheduled_for >= ? ORDER BY task_id, scheduled_for"
        for task, slot in db.execute(query, (since_ms,)):
            before = last.get(task)
            if before is not None and slot > before:  # a retry of the same slot is no new slot
                slots = round((slot - before) / period_ms)
                missed += slots - 1
                spanned += slots
            last[task] = slot
    return missed, spanned


def report(args, rss, runs, probe: ApiProbe, late: list[float], missed: tuple[int, int], log_paths: list[Path],
           losses_metric: float) -> None:
    warm = [sample for sample in rss if sample[0] >= WARM_UP] or rss
    t0, t1 = warm[0][0], rss[-1][0]
    # Medians over a minute: single samples zigzag by a few MB (the node returns freed memory once a minute).
    rss0 = statistics.median(mb for at, mb in warm if at < t0 + WARM_UP)
    rss1 = statistics.median(mb for at, mb in warm if at > t1 - WARM_UP)
    (r0_at, runs0, cpu0), (r1_at, runs1, cpu1) = next((r for r in runs if r[0] >= WARM_UP), runs[0]), runs[-1]
    api = [ms for at, ms in probe.samples if at >= WARM_UP] or [ms for _, ms in probe.samples]
    losses_log = sum(line.count("lost the lease") for path in log_paths for line in path.open(errors="replace"))
    kind = "async" if args.use_async else "sync"
    nodes = "one node" if args.nodes == 1 else f"{args.nodes} nodes on one store file"
    print(f"{args.tasks:,} {kind} no-op tasks every 1s{' (slots spread)' if args.spread else ''},"
          f" {t1:.0f} s through `scheduler run`, {nodes}, SQLite; warm from {t0:.0f} s")
    print(f"RSS{' of the first node' if args.nodes > 1 else ''}: {rss[0][1]:.1f} MB at start;"
          f" median {rss0:.1f} MB over the second minute, {rss1:.1f} MB over the"
          f" last one: {100 * (rss1 - rss0) / rss0:+.1f} % after the first minute"
          f" (max {max(mb for _, mb in rss):.1f} MB)")
    step = max(1, len(warm) // 10)
    print("RSS series (s: MB): " + ", ".join(f"{t:.0f}: {mb:.1f}" for t, mb in sorted(set(warm[::step] + [rss[-1]]))))
    rate = (runs1 - runs0) / (r1_at - r0_at)
    whose = "the nodes'" if args.nodes > 1 else "the node's"
    print(f"slots: {args.tasks:,} due every second, {rate:,.0f} run per second after the first minute"
          f" ({100 * rate / args.tasks:.0f} %: a late task runs once for the slots it missed, missedRuns: runOnce);"
          f" in the run records, {missed[0]:,} of {missed[1]:,} slots missed"
          f" ({100 * missed[0] / max(1, missed[1]):.2f} %)")
    print(f"runs: {runs1:,.0f} finished, {rate:,.0f} runs/s after the first minute;"
          f" {whose} CPU {1000 * (cpu1 - cpu0) / (runs1 - runs0):.2f} ms per run"
          f" ({100 * (cpu1 - cpu0) / (r1_at - r0_at):.0f} % of a core)")
    print(f"start lateness: p50 {statistics.median(late):.0f} ms, p99 {percentile(late, 0.99):.0f} ms,"
          f" max {max(late):.0f} ms ({len(late):,} runs)")
    print(f"GET /cxs/tasks?limit=50: p50 {statistics.median(api):.1f} ms, p99 {percentile(api, 0.99):.1f} ms,"
          f" max {max(api):.1f} ms ({len(api)} requests, {probe.errors} failed)")
    print(f"lease losses: {losses_log} 'lost the lease' warning(s) in the log, metric {losses_metric:.0f}")
    print(f"load average at the end {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--async", dest="use_async", action="store_true",
                        help="coroutine no-ops (default: plain functions)")
    parser.add_argument("--nodes", type=int, default=1, help="nodes sharing the store file and tasks.d (default 1)")
    parser.add_argument("--spread", action="store_true", help="spread the tasks' slots over each second")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples (default 5)")
    parser.add_argument("--config", action="append", default=[], metavar="LINE",
                        help="a line of scheduler.yaml, e.g. 'maxConcurrentRuns: 256' (repeatable)")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                        help="the node's --log-level (default: info, a line as each run starts and ends)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (log, store)")
    args = parser.parse_args()
    print(machine(), f"load average {os.getloadavg()[0]:.2f}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    try:
        soak(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
