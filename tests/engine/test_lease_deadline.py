"""The engine tells each run when its lease runs out, for the command watchdog to hold (scheduler/watchdog.py)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from scheduler.model import Status

from .conftest import register, wait_for

pytestmark = pytest.mark.timeout(60)

LEASE = 1.5  # seconds


@pytest.mark.realtime
async def test_a_run_learns_its_lease_deadline_at_claim_and_at_each_renewal(store, real_clock, make_engine):
    seen: list[tuple[float, float]] = []  # (time.monotonic() when seen, the deadline)
    renewed = asyncio.Event()

    async def job(ctx):
        seen.append((time.monotonic(), ctx.lease_deadline))

        def on_renewal(deadline: float) -> None:
            seen.append((time.monotonic(), deadline))
            renewed.set()

        ctx.on_lease_renewed(on_renewal)
        await asyncio.wait_for(renewed.wait(), 10)

    await register(store, real_clock, {"name": "t", "type": "job", "schedule": {"after": "0s"}})
    engine = make_engine(
        store, "a", job=job, lease_duration=timedelta(seconds=LEASE), poll_interval=timedelta(seconds=0.05)
    )
    await engine.start()
    try:
        await wait_for(lambda: store.get_task("t"), lambda t: t.status is Status.COMPLETED)
    finally:
        await engine.stop()

    (started, first), (renewed_at, second) = seen
    # Taken before the claim (and the renewal) was asked for: ahead, but never more than a lease.
    assert started < first <= started + LEASE
    assert renewed_at < second <= renewed_at + LEASE and second > first


async def test_a_run_whose_lease_ran_out_before_it_started_does_not_start(store, clock, make_engine):
    # A node that stalls between a claim and the start of the run (frozen, starved of CPU: the
    # chaos soak froze one while a run claimed ahead waited for its due time) may find its lease
    # gone, and a peer running the task already. A lease of a microsecond has run out by the start.
    calls: list[int] = []
    await register(store, clock, {"name": "t", "type": "job", "schedule": {"after": "0s"}})
    engine = make_engine(store, "a", job=lambda ctx: calls.append(ctx.attempt), lease_duration=timedelta(microseconds=1))

    with pytest.raises(RuntimeError, match="still busy"):  # the task is claimable again at once
        await engine.run_until_idle(max_rounds=1)

    assert calls == []
    task = await store.get_task("t")  # nothing ran: it is back as it was, its attempt unused
    assert (task.status, task.attempt, task.lease_owner) == (Status.SCHEDULED, 1, None)
    assert (await store.list_runs("t")).total == 0
