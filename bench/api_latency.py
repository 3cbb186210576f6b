"""API latency over real HTTP with 100,000 tasks in SQLite, and the node's memory.

    python bench/api_latency.py [--tasks 100000] [--requests 1000] [--db /tmp/scheduler-api-bench.db]

Builds the app with the production factory (``create_app``) on a SQLite file
seeded through the store's own verbs (reused on later runs when it already holds
the tasks), serves it on 127.0.0.1 with ``web.AppRunner``, and times a loop of
sequential aiohttp requests on loopback for each endpoint: p50/p99 in ms.
Statuses are mixed: 5% of the tasks RUNNING, 1% FAILED, the rest SCHEDULED.
RSS is this process (server and client together, so an upper bound for the node).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

from aiohttp import ClientSession, web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import percentile, rss_mb  # noqa: E402  (bench/engine.py)
from scheduler.api.app import create_app  # noqa: E402
from scheduler.api.auth import ApiAuth  # noqa: E402
from scheduler.api.metrics import Metrics  # noqa: E402
from scheduler.api.services import ApiServices  # noqa: E402
from scheduler.model import Outcome, RunResult, TaskQuery  # noqa: E402
from scheduler.policy import Retention, after_run  # noqa: E402
from scheduler.schedule import first_slot  # noqa: E402
from scheduler.spec import Source, TaskSpec  # noqa: E402
from scheduler.store import open_store  # noqa: E402
from scheduler.store.base import Store  # noqa: E402

TOKEN = "bench-token"
TYPES = ("dataSync", "purge", "report", "cacheRefresh")


async def seed(store: Store, count: int) -> None:
    """``count`` tasks: 1% one-shots that failed (FAILED), 5% periodic ones running (RUNNING), the rest SCHEDULED."""
    existing = (await store.query_tasks(TaskQuery(limit=1))).total
    if existing >= count:
        print(f"reusing {existing} tasks in the store")
        return
    if existing:
        raise SystemExit(f"the store holds {existing} tasks, fewer than {count}: remove it and start again")
    started = time.perf_counter()
    now = store.now()
    failed, running = count // 100, count // 20
    for index in range(count):
        doc = {
            "name": f"task-{index:06d}",
            "type": TYPES[index % len(TYPES)],
            "parameters": {"targetSystem": "CRM", "batchSize": 1000},
        }
        if index < failed:
            doc.update(schedule={"after": "0s"}, retry={"maxRetries": 0})
        elif index < failed + running:
            doc["schedule"] = {"every": "1h"}  # due now
        else:
            doc["schedule"] = {"every": "1h", "initialDelay": f"{60 + index % 3600}s"}
        spec = TaskSpec.from_dict(doc, source=Source("/etc/scheduler/tasks.d/bench.yaml", index + 1))
        await store.upsert_spec(spec, first_due=first_slot(spec.schedule, now))
    claims = await store.claim_due("bench-node", failed + running, timedelta(hours=1))
    retention = Retention()
    for claim in claims:
        if claim.task.spec.schedule.one_shot:
            finished = store.now()
            transition = after_run(claim, Outcome.FAILURE, "bench failure", finished, retention)
            await store.finish_run(claim, RunResult(Outcome.FAILURE, finished, error="bench failure"), transition)
    print(f"seeded {count} tasks in {time.perf_counter() - started:.1f}s")


async def measure(session: ClientSession, base: str, label: str, paths: list[str], requests: int) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for path in paths[:20]:  # warm up
        async with session.get(base + path, headers=headers) as response:
            await response.read()
    timings = []
    for index in range(requests):
        path = paths[index % len(paths)]
        started = time.perf_counter()
        async with session.get(base + path, headers=headers) as response:
            await response.read()
            assert response.status == 200, (path, response.status)
        timings.append((time.perf_counter() - started) * 1000)
    print(
        f"{label:<48} p50 {percentile(timings, 0.50):6.2f} ms  p99 {percentile(timings, 0.99):6.2f} ms"
        f"  mean {statistics.fmean(timings):6.2f} ms  ({requests} requests)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=1000, help="timed requests per endpoint")
    parser.add_argument("--db", type=Path, default=Path("/tmp/scheduler-api-bench.db"))
    args = parser.parse_args()

    store = open_store(f"sqlite:///{args.db.resolve()}")
    memory_store = open_store("sqlite:///:memory:")
    await store.start()
    await memory_store.start()
    await seed(store, args.tasks)
    services = ApiServices(
        store=store,
        memory_store=memory_store,
        auth=ApiAuth.from_config([{"name": "bench", "token": TOKEN, "roles": ["VIEWER"]}]),
        metrics=Metrics(),
    )
    runner = web.AppRunner(create_app(services), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    base = f"http://{host}:{port}"
    ids = [f"task-{random.randrange(args.tasks):06d}" for _ in range(500)]
    offsets = [random.randrange(0, 2000) * 50 for _ in range(200)]
    try:
        async with ClientSession() as session:
            await measure(session, base, "GET /cxs/tasks?status=SCHEDULED&limit=50",
                          ["/cxs/tasks?status=SCHEDULED&limit=50"], args.requests)
            await measure(session, base, "GET /cxs/tasks?status=FAILED&limit=50",
                          ["/cxs/tasks?status=FAILED&limit=50"], args.requests)
            await measure(session, base, "GET /cxs/tasks?status=RUNNING&limit=50&sortBy=...",
                          ["/cxs/tasks?status=RUNNING&limit=50&sortBy=lastExecutionDate:desc"], args.requests)
            await measure(session, base, "GET /cxs/tasks?limit=50&offset=<random>",
                          [f"/cxs/tasks?limit=50&offset={o}" for o in offsets], args.requests)
            await measure(session, base, "GET /cxs/tasks/{id}", [f"/cxs/tasks/{i}" for i in ids], args.requests)
            await measure(session, base, "GET /metrics (1,000 tasks' timestamps)", ["/metrics"], 50)
            # What the console asks for: its list page (every two seconds while open), filtered by
            # id prefix or sorted, its timeline of 50 tasks over the last hour, and its files.
            await measure(session, base, "console list: /cxs/tasks?sortBy=itemId&limit=50",
                          ["/cxs/tasks?sortBy=itemId&offset=0&limit=50"], args.requests)
            await measure(session, base, "console list: ...&idPrefix=task-0<random>",
                          [f"/cxs/tasks?idPrefix=task-0{random.randrange(100):02d}&limit=50" for _ in range(100)],
                          args.requests)
            await measure(session, base, "console list: ...&sortBy=nextScheduled...:desc",
                          ["/cxs/tasks?sortBy=nextScheduledExecution:desc&limit=50"], args.requests)
            await measure(session, base, "console list: ...&offset=<random>&sortBy=lastExec...",
                          [f"/cxs/tasks?sortBy=lastExecutionDate&limit=50&offset={o}" for o in offsets], args.requests)
            await measure(session, base, "console timeline: /cxs/timeline?limit=50 (1 h)",
                          ["/cxs/timeline?limit=50", "/cxs/timeline?status=RUNNING&limit=50"], args.requests)
            await measure(session, base, "console files: /ui/ and /ui/app.js", ["/ui/", "/ui/app.js"], args.requests)
    finally:
        await runner.cleanup()
        await memory_store.close()
        await store.close()
    current, peak = rss_mb()
    print(f"RSS {current:.0f} MB (peak {peak:.0f} MB), server and client in one process")


if __name__ == "__main__":
    asyncio.run(main())
