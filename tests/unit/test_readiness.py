"""``Readiness``: the engine's, the reconciler's and the store's problems, each change logged once."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest

from scheduler.readiness import Readiness, ReadinessLimits
from scheduler.store.sqlite import SQLiteStore
from tests.support.wait import wait_for

LIMITS = ReadinessLimits(store_check=timedelta(seconds=5), reload=timedelta(seconds=10))


class Engine:
    """Reports the problems it is given, and counts how often it was asked."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.asked = 0

    def health(self) -> list[str]:
        self.asked += 1
        return list(self.problems)


class HangingStore:
    """A store whose check hangs until released, as a store whose disk or server stopped answering."""

    def __init__(self) -> None:
        self.released = asyncio.Event()
        self.checks = 0

    async def check(self) -> None:
        self.checks += 1
        await self.released.wait()


@pytest.fixture
async def store():
    async with SQLiteStore(":memory:") as store:
        yield store


def test_the_limits_follow_the_lease_with_a_floor_for_reloads():
    seconds = lambda value: timedelta(seconds=value)  # noqa: E731

    assert ReadinessLimits.for_lease(seconds(30)) == ReadinessLimits(store_check=seconds(10), reload=seconds(30))
    assert ReadinessLimits.for_lease(seconds(3)) == ReadinessLimits(store_check=seconds(1), reload=seconds(10))


async def test_a_node_with_nothing_wrong_is_ready(store):
    assert await Readiness("node-1", store, Engine(), None, LIMITS).problems() == []


async def test_the_engine_and_the_store_problems_are_listed_together(store):
    engine = Engine()
    engine.problems = ["no heartbeat written to the store for more than 20s (one is due every 10s)"]
    readiness = Readiness("node-1", store, engine, None, LIMITS)
    await store.close()

    problems = await readiness.problems()

    assert problems[0] == engine.problems[0]
    assert problems[1].startswith("SQLiteStore(':memory:') is not started") and len(problems) == 2


async def test_a_store_check_that_hangs_is_a_problem_and_only_one_check_waits_at_a_time():
    store = HangingStore()
    readiness = Readiness("node-1", store, Engine(), None, ReadinessLimits(timedelta(seconds=0.01), LIMITS.reload))

    answers = [await readiness.problems() for _ in range(3)]

    assert answers == [["the store did not answer a check within 0.01s"]] * 3
    assert store.checks == 1
    store.released.set()
    assert await readiness.problems() == []


async def test_each_change_is_logged_once_from_the_start_of_the_watch(store, caplog):
    engine = Engine()
    engine.problems = ["the first reload of /etc/scheduler/tasks.d has not finished"]
    readiness = Readiness("node-1", store, engine, None, LIMITS)
    caplog.set_level(logging.INFO, logger="scheduler.readiness")
    await readiness.problems()  # starting: not ready by design, not logged
    engine.problems = []

    async def evaluated_again(times: int) -> None:
        target = engine.asked + times
        await wait_for(lambda: _now(engine.asked), lambda asked: asked >= target)

    watch = asyncio.create_task(readiness.watch(timedelta(seconds=0.01)))
    try:
        await evaluated_again(3)
        engine.problems = ["SQLite store file /var/lib/scheduler/scheduler.db was deleted"]
        await evaluated_again(3)
        engine.problems = []
        await evaluated_again(3)
        for silent in (3, 4, 5):  # the same state, however long it lasts
            engine.problems = [f"the engine's main loop has not completed a round for {silent}s"]
            await evaluated_again(2)
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)

    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", "node node-1 not ready: SQLite store file /var/lib/scheduler/scheduler.db was deleted"),
        ("INFO", "node node-1 ready again"),
        ("ERROR", "node node-1 not ready: the engine's main loop has not completed a round for 3s"),
    ]


async def _now(value):
    return value


class CancellingStore:
    """A store whose check answers at once, and whose first answer is followed, ``turns`` turns
    of the event loop later, by a cancel of the readiness watch: a node stopping on SIGTERM
    cancels the watch whenever the signal comes, maybe while a check is answering."""

    def __init__(self, turns: int) -> None:
        self.turns = turns
        self.watch: asyncio.Task | None = None

    async def check(self) -> None:
        if self.watch is not None:
            _cancel_later(self.watch, self.turns)
            self.watch = None  # once: a second cancel would hide a first one lost


def _cancel_later(task: asyncio.Task, turns: int) -> None:
    if turns == 0:
        task.cancel()
    else:
        asyncio.get_running_loop().call_soon(_cancel_later, task, turns - 1)


@pytest.mark.parametrize("turns", range(8))
async def test_the_watch_ends_when_cancelled_whenever_a_store_check_answers(turns):
    # Python 3.11's asyncio.wait_for returned the answer and dropped a cancel that landed while it
    # was being delivered: the watch ran on, and a node stopping on SIGTERM waited for it for ever,
    # its engine still claiming tasks, until it was killed.
    store = CancellingStore(turns)
    readiness = Readiness("node-1", store, Engine(), None, LIMITS)
    watch = store.watch = asyncio.create_task(readiness.watch(timedelta(minutes=1)))
    try:
        await asyncio.wait({watch}, timeout=5)
        assert watch.cancelled()
    finally:
        watch.cancel()
