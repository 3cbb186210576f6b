"""Mutual exclusion and crash recovery between real processes sharing one SQLite file.

mongomock could not prove any of this (it is not atomic across threads); these
tests use separate OS processes, each with its own connection, racing for the
write lock exactly as several nodes on one host do.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from scheduler.model import Status, TaskQuery
from scheduler.store.sqlite import SQLiteStore
from tests.support import store_worker

from .helpers import make_spec

pytestmark = pytest.mark.slow

TASKS = 2000
PROCESSES = 4
JOIN_TIMEOUT = 90.0
SPAWN = multiprocessing.get_context("spawn")


async def _create_due_tasks(path: Path, count: int) -> list[str]:
    names = [f"task-{index:04d}" for index in range(count)]
    async with SQLiteStore(path) as store:
        due = store.now() - timedelta(seconds=1)
        for name in names:
            await store.upsert_spec(make_spec(name, schedule={"at": "2030-01-01T00:00:00Z"}), first_due=due)
    return names


async def _join(process, timeout: float = JOIN_TIMEOUT) -> None:
    await asyncio.to_thread(process.join, timeout)
    if process.is_alive():
        process.kill()
        await asyncio.to_thread(process.join, 10)
        pytest.fail(f"{process.name} still running after {timeout} s")
    assert process.exitcode == 0, f"{process.name} exited with {process.exitcode}"


async def test_racing_processes_claim_every_task_exactly_once(tmp_path):
    path = tmp_path / "race.db"
    names = await _create_due_tasks(path, TASKS)
    start = SPAWN.Event()
    accounts = [tmp_path / f"node-{index}.json" for index in range(PROCESSES)]
    workers = [
        SPAWN.Process(target=store_worker.claim_until_idle, args=(f"sqlite://{path}", f"node-{index}", str(account), start),
                      name=f"node-{index}")
        for index, account in enumerate(accounts)
    ]
    for worker in workers:
        worker.start()
    start.set()  # all at once: they race for the same due tasks
    for worker in workers:
        await _join(worker)

    reports = [json.loads(account.read_text()) for account in accounts]
    claims = Counter(item for report in reports for item in report["claimed"])
    assert sorted(claims) == names
    assert set(claims.values()) == {1}, [item for item, times in claims.items() if times > 1]
    for report in reports:
        assert report["finished"] == report["claimed"], f"{report['node']} was fenced out of its own runs"
    claimed_by = {item: report["node"] for report in reports for item in report["claimed"]}

    async with SQLiteStore(path) as store:
        completed = await store.query_tasks(TaskQuery(status=Status.COMPLETED, limit=0))
        assert completed.total == TASKS
        for name in names:
            runs = await store.list_runs(name)
            assert runs.total == 1, f"{name} has {runs.total} run records"
            assert runs.items[0].node_id == claimed_by[name] and runs.items[0].outcome == "success"


async def test_tasks_of_a_killed_process_are_recovered_by_another(tmp_path):
    path = tmp_path / "crash.db"
    names = await _create_due_tasks(path, 40)
    ready = SPAWN.Event()
    victim_account = tmp_path / "victim.json"
    victim = SPAWN.Process(target=store_worker.hold_leases, args=(f"sqlite://{path}", "victim", 25, str(victim_account), ready),
                           name="victim")
    victim.start()
    assert await asyncio.to_thread(ready.wait, JOIN_TIMEOUT), "the victim never claimed its tasks"
    held = json.loads(victim_account.read_text())["claimed"]
    assert len(held) == 25
    async with SQLiteStore(path) as store:
        for name in held:
            task = await store.get_task(name)
            assert task.status == Status.RUNNING and task.lease_owner == "victim"

    victim.kill()  # SIGKILL: no cleanup, the leases stay in the file
    await asyncio.to_thread(victim.join, JOIN_TIMEOUT)
    assert victim.exitcode == -9

    rescuer_account = tmp_path / "rescuer.json"
    # The victim's leases last 30 s: the rescuer's clock runs 31 s ahead instead of the test waiting.
    rescuer = SPAWN.Process(target=store_worker.recover_and_finish, args=(f"sqlite://{path}", "rescuer", 31.0, str(rescuer_account)),
                            name="rescuer")
    rescuer.start()
    await _join(rescuer)

    report = json.loads(rescuer_account.read_text())
    assert sorted(report["recovered"]) == sorted(held)
    assert sorted(report["claimed"]) == names  # the 25 recovered and the 15 nobody had claimed
    async with SQLiteStore(path) as store:
        for name in held:
            task = await store.get_task(name)
            assert task.status == Status.COMPLETED
            assert task.status_details["crashedNode"] == "victim"
            assert [entry["outcome"] for entry in task.history] == ["success", "crashed"]
            runs = (await store.list_runs(name)).items
            assert [(run.node_id, run.attempt, run.outcome) for run in runs] == [
                ("rescuer", 2, "success"), ("victim", 1, "crashed")]


async def test_runs_ended_by_a_node_killed_before_their_commit_are_run_again_by_another(tmp_path):
    """A run's end waits up to FINISH_LINGER for other run ends to share its commit. A node SIGKILLed
    meanwhile leaves the run unrecorded: its lease expires, and a peer records it crashed and runs it
    again; the end committed before stays recorded once."""
    path = tmp_path / "linger.db"
    await _create_due_tasks(path, 2)
    ready = SPAWN.Event()
    victim_account = tmp_path / "victim.json"
    victim = SPAWN.Process(target=store_worker.end_runs_then_hang, args=(f"sqlite://{path}", "victim",
                                                                         str(victim_account), ready), name="victim")
    victim.start()
    assert await asyncio.to_thread(ready.wait, JOIN_TIMEOUT), "the victim never ended its runs"
    victim.kill()
    await asyncio.to_thread(victim.join, JOIN_TIMEOUT)
    assert victim.exitcode == -9
    ended = json.loads(victim_account.read_text())

    rescuer_account = tmp_path / "rescuer.json"
    rescuer = SPAWN.Process(target=store_worker.recover_and_finish, args=(f"sqlite://{path}", "rescuer", 31.0,
                                                                          str(rescuer_account)), name="rescuer")
    rescuer.start()
    await _join(rescuer)

    report = json.loads(rescuer_account.read_text())
    assert report["recovered"] == report["claimed"] == [ended["unrecorded"]]
    async with SQLiteStore(path) as store:
        recorded = (await store.list_runs(ended["recorded"])).items
        assert [(run.node_id, run.outcome) for run in recorded] == [("victim", "success")]
        unrecorded = (await store.list_runs(ended["unrecorded"])).items
        assert [(run.node_id, run.attempt, run.outcome) for run in unrecorded] == [
            ("rescuer", 2, "success"), ("victim", 1, "crashed")]


# Without waiting for the lock, 6 processes failed 20 to 35 openings in 300 rounds: 200 rounds
# leave the race no chance to hide.
OPENERS = 6
OPENING_ROUNDS = 200


async def test_processes_opening_one_new_file_at_once_all_wait_for_the_lock(tmp_path):
    """Switching a new file to WAL takes a lock that SQLite does not wait for on its own.

    Several nodes, embedded schedulers or CLI calls opening one new store
    together must each wait for the others, as any write does, never fail
    with "database is locked".
    """
    barrier = SPAWN.Barrier(OPENERS)
    accounts = [tmp_path / f"opener-{index}.json" for index in range(OPENERS)]
    workers = [
        SPAWN.Process(target=store_worker.open_fresh_files, args=(str(tmp_path), OPENING_ROUNDS, barrier, str(account)),
                      name=f"opener-{index}")
        for index, account in enumerate(accounts)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        await _join(worker)

    errors = [error for account in accounts for error in json.loads(account.read_text())["errors"]]
    assert errors == [], f"{len(errors)} failed opening(s), the first: {errors[:3]}"
