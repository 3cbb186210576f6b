"""API fixtures: the production app factory on real SQLite stores, real tokens, a manual clock.

Tasks are brought into each state through the store's own verbs (claim, finish,
recover...) with the engine's policy computing the transitions, as a node would.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from scheduler.api.app import create_app
from scheduler.api.auth import ApiAuth
from scheduler.api.metrics import Metrics
from scheduler.api.services import ApiServices
from scheduler.model import Claim, Outcome, RunResult
from scheduler.policy import Retention, after_run
from scheduler.schedule import first_slot
from scheduler.spec import Source, TaskSpec
from scheduler.store import open_store
from scheduler.store.base import Store
from tests.support.clock import ManualClock

START = datetime(2024, 3, 20, 14, 0, tzinfo=timezone.utc)
LEASE = timedelta(seconds=30)
ADMIN_TOKEN = "admin-secret-token"
VIEWER_TOKEN = "viewer-secret-token"
TOKENS = [
    {"name": "admin", "token": ADMIN_TOKEN, "roles": ["ADMINISTRATOR"]},
    {"name": "grafana", "sha256": hashlib.sha256(VIEWER_TOKEN.encode()).hexdigest(), "roles": ["VIEWER"]},
]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
VIEWER = {"Authorization": f"Bearer {VIEWER_TOKEN}"}


def basic(name: str, token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{token}".encode()).decode()}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def store(clock):
    store = open_store("sqlite:///:memory:", clock=clock)
    await store.start()
    yield store
    await store.close()


@pytest.fixture
async def memory_store(clock):
    store = open_store("sqlite:///:memory:", clock=clock)
    await store.start()
    yield store
    await store.close()


@dataclass
class Node:
    """What the app tells the node: wakes and reloads, counted."""

    wakes: int = 0
    reloads: int = 0
    problems: list[str] = field(default_factory=list)  # why it is not ready; empty: ready
    config: dict[str, Any] | None = None

    def wake(self) -> None:
        self.wakes += 1

    async def reload(self) -> dict[str, Any]:
        self.reloads += 1
        return {"ok": True, "at": "2024-03-20T14:00:00Z", "created": 0, "updated": 0, "removed": 0,
                "superseded": 0, "rejectedFiles": 0, "files": [], "errors": []}

    async def readiness(self) -> list[str]:
        return list(self.problems)


@pytest.fixture
def node() -> Node:
    return Node()


@pytest.fixture
def services(store, memory_store, node) -> ApiServices:
    return ApiServices(
        store=store,
        memory_store=memory_store,
        auth=ApiAuth.from_config(TOKENS),
        metrics=Metrics(),
        wake=node.wake,
        reload=node.reload,
        config_status=lambda: node.config or {"tasksDir": None, "lastReload": None, "files": []},
        readiness=node.readiness,
    )


@pytest.fixture
async def client(aiohttp_client, services):
    return await aiohttp_client(create_app(services))


@pytest.fixture
def make_client(aiohttp_client, services):
    """A client on an app built from ``services`` with some fields changed."""

    async def make(**changes: Any):
        return await aiohttp_client(create_app(replace(services, **changes)))

    return make


@dataclass
class Seeder:
    """Declares tasks and drives them through states with the store's verbs."""

    store: Store
    clock: ManualClock
    retention: Retention = field(default_factory=Retention)

    async def task(self, name: str, *, store: Store | None = None, source: Source | None = None, **fields: Any) -> str:
        doc: dict[str, Any] = {"name": name, "schedule": {"every": "1h"}}
        doc.update(fields)
        spec = TaskSpec.from_dict(doc, source=source or Source("/etc/scheduler/tasks.d/demo.yaml", 3))
        target = store or self.store
        node = None if spec.persistent else "node-1"
        await target.upsert_spec(spec, node=node, first_due=first_slot(spec.schedule, self.clock()))
        return name

    async def claim(self, store: Store | None = None) -> list[Claim]:
        return await (store or self.store).claim_due("node-1", 100, LEASE)

    async def finish(
        self, claim: Claim, outcome: Outcome, error: str | None = None, store: Store | None = None, output: str = "done"
    ) -> None:
        now = self.clock()
        transition = after_run(claim, outcome, error, now, self.retention)
        result = RunResult(outcome, now, exit_code=0 if outcome is Outcome.SUCCESS else 1, output=output, error=error)
        assert await (store or self.store).finish_run(claim, result, transition)

    async def run_all(self, outcome: Outcome, error: str | None = None, store: Store | None = None) -> None:
        """Claim everything due and finish each run with ``outcome`` a few seconds later."""
        claims = await self.claim(store)
        self.clock.advance(timedelta(seconds=5))
        for claim in claims:
            await self.finish(claim, outcome, error, store)

    async def crash(self, checkpoint: dict[str, Any] | None = None, store: Store | None = None) -> None:
        """Claim everything due, save ``checkpoint``, let the leases expire, recover as another node would."""
        target = store or self.store
        for claim in await self.claim(target):
            if checkpoint is not None:
                assert await target.save_progress(claim, checkpoint=checkpoint, step="Processing records")
        self.clock.advance(LEASE + timedelta(seconds=1))
        assert await target.recover_expired("node-2")


@pytest.fixture
def seed(store, clock) -> Seeder:
    return Seeder(store, clock)
