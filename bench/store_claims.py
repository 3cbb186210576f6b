"""Claim+finish cycles per second of a store, with 1 and 4 processes sharing it.

Each process opens its own store from the URL (as a node does) and loops
``claim_due(limit)`` then ``finish_run`` for every claim until nothing is due.
``concurrent`` finishes the batch's runs as independent coroutines, as the
engine's runs end (SQLite group-commits them); ``sequential`` awaits each finish
before the next (one transaction each). The rate is tasks / (last process end -
first process start), measured after a common start signal, so process start-up
and task creation are not counted. Every measurement starts from a fresh store
holding ``--tasks`` due one-shots: a new SQLite file, or a new MongoDB database
named after the URL's (``<database>_bench_<random>``), dropped afterwards.

    python bench/store_claims.py [--store URL] [--tasks 10000] [--processes 1 4] [--limit 32]

Without ``--store``: a SQLite file in a temporary directory. The first line says
which server was measured; a stand-in's timings say nothing about MongoDB's.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import sqlite3
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

# Runnable from a checkout without installing: the repository root holds the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler.model import Claim, Outcome, RunResult, Status, Transition  # noqa: E402
from scheduler.redact import redact_url  # noqa: E402
from scheduler.spec import TaskSpec  # noqa: E402
from scheduler.store import open_store  # noqa: E402
from scheduler.store.base import Store  # noqa: E402

LEASE = timedelta(seconds=60)


def is_mongodb(url: str) -> bool:
    return url.startswith(("mongodb://", "mongodb+srv://"))


async def create_tasks(url: str, count: int) -> None:
    async with open_store(url) as store:
        due = store.now() - timedelta(seconds=1)
        specs = [
            TaskSpec.from_dict({"name": f"task-{i:06d}", "type": "noop", "schedule": {"at": "2030-01-01T00:00:00Z"}})
            for i in range(count)
        ]
        for first in range(0, count, 100):
            await asyncio.gather(*(store.upsert_spec(spec, first_due=due) for spec in specs[first:first + 100]))


async def finish(store: Store, claim: Claim) -> None:
    transition = Transition(
        status=Status.COMPLETED, next_scheduled_execution=None, scheduled_for=None,
        attempt=claim.attempt, failure_count=0, success_count=1, last_error=None,
    )
    if not await store.finish_run(claim, RunResult(Outcome.SUCCESS, store.now()), transition):
        raise RuntimeError(f"{claim.node_id} was fenced out of {claim.run_id}")


async def claim_and_finish(url: str, node_id: str, limit: int, mode: str, ready, start, results) -> None:
    async with open_store(url) as store:
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


def worker(url: str, node_id: str, limit: int, mode: str, ready, start, results) -> None:
    asyncio.run(claim_and_finish(url, node_id, limit, mode, ready, start, results))


def run(url: str, tasks: int, processes: int, limit: int, mode: str) -> tuple[float, float]:
    context = multiprocessing.get_context("spawn")
    ready, start, results = context.Queue(), context.Event(), context.Queue()
    procs = [context.Process(target=worker, args=(url, f"node-{i}", limit, mode, ready, start, results))
             for i in range(processes)]
    for proc in procs:
        proc.start()
    for _ in procs:  # every process has opened the store: start them together
        ready.get(timeout=120)
    start.set()
    reports = [results.get(timeout=3600) for _ in procs]
    for proc in procs:
        proc.join(60)
        if proc.exitcode != 0:
            raise SystemExit(f"{proc.name} exited with {proc.exitcode}")
    total = sum(report[3] for report in reports)
    if total != tasks:
        raise SystemExit(f"{total} runs finished, expected {tasks}")
    elapsed = max(report[2] for report in reports) - min(report[1] for report in reports)
    return elapsed, tasks / elapsed


class FreshStores:
    """A new store URL per measurement: a SQLite file in ``workdir``, or a database on the server."""

    def __init__(self, base: str | None, workdir: Path) -> None:
        self.base, self.workdir = base, workdir
        self.databases: list[str] = []

    def new(self, name: str) -> str:
        if self.base is None:
            return f"sqlite://{self.workdir / (name + '.db')}"
        if not is_mongodb(self.base):
            raise SystemExit("--store: a mongodb:// URL (a SQLite file is created in a temporary directory)")
        parts = urlsplit(self.base)
        database = f"{parts.path.strip('/') or 'scheduler'}_bench_{uuid.uuid4().hex[:8]}"
        self.databases.append(database)
        return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))

    def drop(self) -> None:
        if self.databases:
            import pymongo

            with pymongo.MongoClient(self.base) as client:
                for database in self.databases:
                    client.drop_database(database)


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", load average %.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}{load}"


def server(base: str | None) -> str:
    """Which server is measured: a stand-in says so, since its timings say nothing about MongoDB."""
    if base is None:
        return f"SQLite {sqlite3.sqlite_version}, a file in a temporary directory"
    import pymongo

    with pymongo.MongoClient(base, serverSelectionTimeoutMS=10_000) as client:
        build = client.admin.command("buildInfo")
        hello = client.admin.command("hello")
    topology = f"replica set {hello['setName']}" if "setName" in hello else "standalone"
    text = f"MongoDB {build.get('version', '?')} at {redact_url(base)} ({topology})"
    if "secantusVersion" in build:
        text += f": a secantusdb {build['secantusVersion']} stand-in, not MongoDB; its timings say nothing about MongoDB's"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="mongodb://... URL (default: a SQLite file in a temporary directory)")
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--limit", type=int, default=32, help="claim batch size")
    parser.add_argument("--finish", nargs="+", default=["concurrent", "sequential"],
                        choices=["concurrent", "sequential"])
    args = parser.parse_args()
    print(machine())
    print(f"store: {server(args.store)}")
    with tempfile.TemporaryDirectory() as tmp:
        stores = FreshStores(args.store, Path(tmp))
        try:
            print(f"{'processes':>9}  {'finish':>10}  {'tasks':>7}  {'seconds':>7}  {'cycles/s':>9}")
            for mode in args.finish:
                for processes in args.processes:
                    url = stores.new(f"bench-{processes}-{mode}")
                    asyncio.run(create_tasks(url, args.tasks))
                    elapsed, rate = run(url, args.tasks, processes, args.limit, mode)
                    print(f"{processes:>9}  {mode:>10}  {args.tasks:>7}  {elapsed:>7.2f}  {rate:>9.0f}")
        finally:
            stores.drop()


if __name__ == "__main__":
    main()
