"""Mutual exclusion between real processes claiming through ``MongoStore`` on one server.

mongomock cannot prove this (it is not atomic, and lives in one process): here
four OS processes, each with its own client and connection pool, race for the
same due tasks over the wire, as four nodes of a cluster do.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from collections import Counter
from datetime import timedelta

import pytest

from scheduler.model import Status, TaskQuery
from scheduler.store.mongo import MongoStore
from tests.support import store_worker

from .helpers import make_spec

pytestmark = [pytest.mark.mongodb, pytest.mark.slow]

# Every claim picks the earliest due task, so the four processes contend for the same
# document on every one of them: each task is one contested compare-and-set. A hundred
# of them prove what five hundred did, in a fifth of the time on a server that scans
# its collections for every query (the stand-in takes about 100 ms per claim here).
TASKS = 100
PROCESSES = 4
JOIN_TIMEOUT = 90.0
SPAWN = multiprocessing.get_context("spawn")


async def _create_due_tasks(url: str, count: int) -> list[str]:
    names = [f"task-{index:04d}" for index in range(count)]
    async with MongoStore(url) as store:
        due = store.now() - timedelta(seconds=1)
        await asyncio.gather(*(
            store.upsert_spec(make_spec(name, schedule={"at": "2030-01-01T00:00:00Z"}), first_due=due)
            for name in names
        ))
    return names


async def _join(process, timeout: float = JOIN_TIMEOUT) -> None:
    await asyncio.to_thread(process.join, timeout)
    if process.is_alive():
        process.kill()
        await asyncio.to_thread(process.join, 10)
        pytest.fail(f"{process.name} still running after {timeout} s")
    assert process.exitcode == 0, f"{process.name} exited with {process.exitcode}"


async def test_racing_processes_claim_every_task_exactly_once(tmp_path, mongo_url):
    names = await _create_due_tasks(mongo_url, TASKS)
    start = SPAWN.Barrier(PROCESSES)  # each starts claiming once all four are connected
    accounts = [tmp_path / f"node-{index}.json" for index in range(PROCESSES)]
    workers = [
        SPAWN.Process(target=store_worker.claim_until_idle, args=(mongo_url, f"node-{index}", str(account), start),
                      kwargs={"limit": 4}, name=f"node-{index}")
        for index, account in enumerate(accounts)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        await _join(worker)

    reports = [json.loads(account.read_text()) for account in accounts]
    claims = Counter(item for report in reports for item in report["claimed"])
    assert sorted(claims) == names
    assert set(claims.values()) == {1}, [item for item, times in claims.items() if times > 1]
    for report in reports:
        assert report["finished"] == report["claimed"], f"{report['node']} was fenced out of its own runs"
    claimed_by = {item: report["node"] for report in reports for item in report["claimed"]}
    # Not a timing check: a race that one process ran alone would have proved nothing.
    assert len({node for node in claimed_by.values()}) > 1, "one process claimed everything: there was no race"

    async with MongoStore(mongo_url) as store:
        completed = await store.query_tasks(TaskQuery(status=Status.COMPLETED, limit=0))
        assert completed.total == TASKS
        for name in names:
            runs = await store.list_runs(name)
            assert runs.total == 1, f"{name} has {runs.total} run records"
            assert runs.items[0].node_id == claimed_by[name] and runs.items[0].outcome == "success"
