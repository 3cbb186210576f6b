"""Engine fixtures: stores on an injected clock, engines with registered test executors."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

import pytest

from scheduler.engine import Engine, EngineConfig
from scheduler.executors import executor_from_callable
from scheduler.model import system_clock
from scheduler.schedule import first_slot
from scheduler.spec import Source, TaskSpec
from scheduler.store import open_store
from tests.support.clock import ManualClock
from tests.support.wait import wait_for  # noqa: F401  (re-exported for the scenarios)

# In the future: mongomock hides documents whose TTL field has passed by the real wall clock.
START = datetime(2031, 1, 6, 8, 0, tzinfo=timezone.utc)


class StoreWrapper:
    """A store seen through a test's wrapper: what the wrapper does not define goes to the store."""

    def __init__(self, store) -> None:
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def real_clock():
    return system_clock


def _uses_real_time(request) -> bool:
    return request.node.get_closest_marker("realtime") is not None


@pytest.fixture(params=["sqlite", "mongomock"])
async def store(request, tmp_path, clock, real_clock):
    chosen_clock = real_clock if _uses_real_time(request) else clock
    if request.param == "sqlite":
        store = open_store(f"sqlite:///{tmp_path / 'scheduler.db'}", clock=chosen_clock)
    else:
        import mongomock

        from scheduler.store.mongo import MongoStore

        store = MongoStore("mongodb://localhost/scheduler", clock=chosen_clock, client_factory=mongomock.MongoClient)
    await store.start()
    yield store
    await store.close()


@pytest.fixture
async def shared_stores(request, tmp_path, clock, real_clock):
    """Two handles on one SQLite file: two nodes of one cluster (real locking, unlike mongomock)."""
    chosen_clock = real_clock if _uses_real_time(request) else clock
    url = f"sqlite:///{tmp_path / 'cluster.db'}"
    stores = [open_store(url, clock=chosen_clock) for _ in range(2)]
    for store in stores:
        await store.start()
    yield stores
    for store in stores:
        await store.close()


@pytest.fixture
def make_engine():
    def make(store, node_id: str, *, job: Callable | None = None, **options: Any) -> Engine:
        executors = {"job": executor_from_callable(job)} if job is not None else {}
        config = EngineConfig(node_id=node_id, **options)
        return Engine(config, [store], executors=executors)

    return make


async def register(store, clock, doc: dict, *, item_id=None, node=None, origin: str | None = None):
    """Declare a task as the reconciler (origin: a file) or the API/builder (origin: "<api>") would."""
    spec = TaskSpec.from_dict(doc, source=Source(origin or "tasks.d/test.yaml", 0 if origin else 1))
    return await store.upsert_spec(spec, item_id=item_id, node=node, first_due=first_slot(spec.schedule, clock()))


class Recorder:
    """A job that records when it ran, optionally fails its first calls and takes (clock) time."""

    def __init__(self, clock, *, failures: int = 0, duration: timedelta = timedelta(0)) -> None:
        self.clock = clock
        self.failures = failures
        self.duration = duration
        self.registered_at = clock()
        self.starts: list[datetime] = []
        self.ends: list[datetime] = []
        self.slots: list[datetime] = []

    def job(self) -> Callable[[Any], Awaitable[None]]:
        async def run(ctx) -> None:
            self.starts.append(self.clock())
            self.slots.append(ctx.scheduled_for)
            if self.duration:
                self.clock.advance(self.duration)
            self.ends.append(self.clock())
            if len(self.starts) <= self.failures:
                raise RuntimeError(f"boom #{len(self.starts)}")

        return run
