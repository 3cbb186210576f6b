"""``Engine.health``: the problems that keep a node from doing its job, the heartbeat's first."""

from __future__ import annotations

from datetime import timedelta

import pytest

from scheduler.errors import StoreError
from scheduler.model import NodeInfo

from .conftest import wait_for

pytestmark = pytest.mark.realtime

# The keep-alive writes a heartbeat every lease / 3 = 0.1 s; two missed (0.2 s) make the engine unhealthy.
LEASE = timedelta(seconds=0.3)


async def test_an_engine_that_has_not_started_has_written_no_heartbeat(store, make_engine):
    engine = make_engine(store, "node-1", lease_duration=LEASE)

    assert engine.health() == ["the engine has not written its first heartbeat"]


async def test_heartbeats_that_fail_make_the_engine_unhealthy_until_one_is_written(store, make_engine, monkeypatch):
    engine = make_engine(store, "node-1", lease_duration=LEASE)
    await engine.start()
    try:
        assert engine.health() == []

        async def disk_full(node: NodeInfo) -> None:
            raise StoreError(f"SQLite store {store!r}: database or disk is full")

        monkeypatch.setattr(store, "heartbeat", disk_full)
        [problem] = await wait_for(lambda: _async(engine.health()), bool, timeout=10)
        assert problem.startswith("no heartbeat written to the store for more than 0.2s (one is due every 0.1s): ")
        assert problem.endswith("database or disk is full")

        monkeypatch.undo()  # the disk has room again
        assert await wait_for(lambda: _async(engine.health()), lambda problems: not problems, timeout=10) == []
    finally:
        await engine.stop()


async def _async(value):
    return value
