"""The contract suite's backends: one ``store`` fixture parametrized over every backend.

Adding a backend is one entry in ``BACKENDS``: a function that, given the
test's temporary directory, returns a ``Backend`` able to open handles on one
fresh database. ``peer`` is a second handle on the same database, playing
another node; a backend that cannot open two handles on one database (SQLite
in memory) returns the same store, which still exercises the contract with
two node ids.
"""

from __future__ import annotations

import importlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from scheduler.store.base import Store
from scheduler.store.sqlite import SQLiteStore
from tests.support import mongo as mongo_server
from tests.support.clock import ManualClock


@dataclass
class Backend:
    """Opens handles on one fresh database of a backend."""

    open_handle: Callable[[ManualClock], Store]
    shares_database: bool = True  # False: every open() is a new database, so the peer is the same store
    atomic: bool = True  # False (mongomock): never use it to test mutual exclusion
    cleanup: Callable[[], None] = lambda: None
    opened: list[Store] = field(default_factory=list)

    async def open(self, clock: ManualClock) -> Store:
        if self.opened and not self.shares_database:
            return self.opened[0]
        store = self.open_handle(clock)
        await store.start()
        self.opened.append(store)
        return store


def _sqlite_file(tmp_path: Path) -> Backend:
    path = tmp_path / "store.db"
    return Backend(lambda clock: SQLiteStore(path, clock=clock))


def _sqlite_memory(tmp_path: Path) -> Backend:
    return Backend(lambda clock: SQLiteStore(":memory:", clock=clock), shares_database=False)


def _mongo_module() -> Any:
    # pymongo and mongomock are dependencies: an import error is a failure, never a skip.
    return importlib.import_module("scheduler.store.mongo")


def _mongomock(tmp_path: Path) -> Backend:
    mongo = _mongo_module()
    import mongomock

    # MongoStore creates its client from the URL; mongomock.patch answers for that server.
    patcher = mongomock.patch(servers=(("127.0.0.1", 27017),))
    patcher.start()
    url = f"mongodb://127.0.0.1:27017/scheduler_test_{uuid.uuid4().hex}"
    return Backend(lambda clock: mongo.MongoStore(url, clock=clock), atomic=False, cleanup=patcher.stop)


def _mongodb(tmp_path: Path) -> Backend:
    base = mongo_server.server_uri("to run the contract against one")
    mongo = _mongo_module()
    database = mongo_server.new_database_name("scheduler_test")
    url = mongo_server.database_url(base, database)
    return Backend(lambda clock: mongo.MongoStore(url, clock=clock),
                   cleanup=lambda: mongo_server.drop_database(base, database))


BACKENDS = [
    pytest.param(_sqlite_file, id="sqlite-file"),
    pytest.param(_sqlite_memory, id="sqlite-memory"),
    pytest.param(_mongomock, id="mongomock"),
    pytest.param(_mongodb, id="mongodb", marks=pytest.mark.mongodb),
]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=BACKENDS)
async def backend(request, tmp_path):
    backend = request.param(tmp_path)
    try:
        yield backend
    finally:
        try:
            for store in reversed(backend.opened):
                await store.close()
        finally:
            backend.cleanup()


@pytest.fixture
async def store(backend, clock) -> Store:
    return await backend.open(clock)


@pytest.fixture
async def peer(backend, clock, store) -> Store:
    """A second handle on ``store``'s database (the same store where a backend cannot share)."""
    return await backend.open(clock)
