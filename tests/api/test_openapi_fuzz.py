"""Generated requests against the OpenAPI document: never a 500, always a documented answer.

schemathesis derives requests (valid and invalid parameters, odd ids) from the
document and runs its checks on each answer. The app is the production factory
served on 127.0.0.1 from a thread of its own, since schemathesis calls it
synchronously. The number of examples is bounded so the run stays short.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timezone

import pytest
import schemathesis
from aiohttp import web
from hypothesis import settings

from scheduler.api.app import create_app, load_openapi
from scheduler.api.auth import ApiAuth
from scheduler.api.metrics import Metrics
from scheduler.api.services import ApiServices
from scheduler.model import Outcome
from scheduler.store import open_store
from tests.api.conftest import ADMIN, TOKENS, Node, Seeder
from tests.support.clock import ManualClock

SCHEMA = schemathesis.openapi.from_dict(load_openapi())


class LiveApp:
    """The app on a free port of 127.0.0.1, served by an event loop in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-app", daemon=True)
        self.url = ""

    def start(self) -> LiveApp:
        self.thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=30)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()

    async def _start(self) -> str:
        clock = ManualClock(datetime(2024, 3, 20, 14, tzinfo=timezone.utc))
        self.store = open_store("sqlite:///:memory:", clock=clock)
        self.memory_store = open_store("sqlite:///:memory:", clock=clock)
        await self.store.start()
        await self.memory_store.start()
        seed = Seeder(self.store, clock)
        await seed.task("failed", schedule={"after": "0s"}, retry={"maxRetries": 0})
        await seed.run_all(Outcome.FAILURE, error="boom")
        await seed.task("crashed", onCrash="manual")
        await seed.crash(checkpoint={"step": 1})
        await seed.task("data-sync")
        await seed.task("local-cache", persistent=False, store=self.memory_store)
        node = Node(config={"tasksDir": None, "lastReload": None, "files": []})
        services = ApiServices(
            store=self.store, memory_store=self.memory_store, auth=ApiAuth.from_config(TOKENS), metrics=Metrics(),
            wake=node.wake, reload=node.reload, config_status=lambda: node.config, readiness=node.readiness,
        )
        self.runner = web.AppRunner(create_app(services), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def _stop(self) -> None:
        await self.runner.cleanup()
        await self.memory_store.close()
        await self.store.close()


@pytest.fixture(scope="module")
def live_app():
    app = LiveApp().start()
    yield app
    app.stop()


@SCHEMA.parametrize()
@settings(max_examples=25, deadline=None, database=None)
def test_generated_requests_get_documented_answers(case, live_app):
    case.call_and_validate(base_url=live_app.url, headers=dict(ADMIN))
