"""Recovery of expired leases: a node recovers a lease once it has itself seen it expired for a grace.

A pause of the whole machine (a virtual machine snapshotted or migrated) freezes a lease's owner, its
watchdog and every peer on the host together. At the resume every node finds the lease long expired;
the grace, counted from a node's own first sight, gives the owner's watchdog time to stop the command
before a peer starts the next attempt.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from scheduler.model import Status

from .conftest import register, wait_for

LEASE = timedelta(seconds=30)
MS = timedelta(milliseconds=1)


async def test_a_lease_found_long_expired_is_recovered_a_grace_after_the_first_sight(store, clock, make_engine):
    runs: list[int] = []
    await register(store, clock, {"name": "t", "type": "job", "schedule": {"after": "0s"}})
    [claim] = await store.claim_due("a", 1, LEASE)  # node a claims, then the machine pauses
    clock.advance(timedelta(minutes=10))
    peer = make_engine(store, "b", job=lambda ctx: runs.append(ctx.attempt), lease_duration=LEASE)
    grace = peer.config.recovery_grace
    assert grace == LEASE / 2

    assert await peer.run_until_idle() == 0  # the first sight, ten minutes after the expiry
    clock.advance(grace - MS)
    assert await peer.run_until_idle() == 0
    task = await store.get_task("t")
    assert (task.status, task.lease_owner, task.fence) == (Status.RUNNING, "a", claim.fence)

    clock.advance(MS)
    assert await peer.run_until_idle() == 1
    task = await store.get_task("t")
    assert task.status == Status.COMPLETED and runs == [2]
    assert task.history[-1]["outcome"] == "crashed" and task.history[-1]["recoveredBy"] == "b"


async def test_a_lease_renewed_during_the_grace_is_left_to_its_owner(store, clock, make_engine):
    await register(store, clock, {"name": "t", "type": "job", "schedule": {"after": "0s"}})
    [claim] = await store.claim_due("a", 1, LEASE)
    clock.advance(LEASE + timedelta(seconds=5))
    peer = make_engine(store, "b", job=lambda ctx: None, lease_duration=LEASE)
    assert await peer.run_until_idle() == 0  # seen expired

    clock.advance(peer.config.recovery_grace / 2)
    assert await store.renew_leases("a", [claim], LEASE) == set()  # the owner is back
    clock.advance(peer.config.recovery_grace)
    assert await peer.run_until_idle() == 0
    assert (await store.get_task("t")).lease_owner == "a"

    # It expires again: the grace starts over from the new sight, not from the first one.
    clock.advance(LEASE)
    assert await peer.run_until_idle() == 0
    assert (await store.get_task("t")).status == Status.RUNNING
    clock.advance(peer.config.recovery_grace)
    assert await peer.run_until_idle() == 1
    assert (await store.get_task("t")).status == Status.COMPLETED


async def test_a_retried_cancel_whose_node_died_runs_once_its_lease_is_released(store, clock, make_engine):
    """The old run's node never says the run stopped: its lease is released like any expired one, after the grace."""
    runs: list[int] = []
    await register(store, clock, {"name": "t", "type": "job", "schedule": {"after": "0s"}})
    [claim] = await store.claim_due("a", 1, LEASE)
    await store.cancel("t")
    await store.retry("t")  # due now, behind the lease of the run being stopped
    peer = make_engine(store, "b", job=lambda ctx: runs.append(ctx.attempt), lease_duration=LEASE)

    assert await peer.run_until_idle() == 0
    clock.advance(LEASE + MS)  # node a died: the lease expires
    assert await peer.run_until_idle() == 0  # the first sight
    clock.advance(peer.config.recovery_grace - MS)
    assert await peer.run_until_idle() == 0
    assert (await store.get_task("t")).lease_owner == "a"

    clock.advance(MS)
    assert await peer.run_until_idle() == 1
    task = await store.get_task("t")
    assert task.status == Status.COMPLETED and runs == [claim.attempt + 1]
    assert [entry["outcome"] for entry in task.history] == ["success", "cancelled"]  # released, not a crash


@pytest.mark.realtime
async def test_the_loop_wakes_for_the_expiry_and_the_end_of_the_grace_without_polling(store, real_clock, make_engine):
    """With a poll interval far longer than the test, only the expiry and the grace can wake the loop."""
    ran = asyncio.Event()
    await register(store, real_clock, {"name": "t", "type": "job", "schedule": {"after": "0s"}})
    await store.claim_due("a", 1, timedelta(seconds=0.5))  # a node that dies at once
    peer = make_engine(
        store, "b", job=lambda ctx: ran.set(), lease_duration=timedelta(seconds=1), poll_interval=timedelta(minutes=5)
    )
    looks = 0
    look = store.lease_expiries

    async def counted():
        nonlocal looks
        looks += 1
        return await look()

    store.lease_expiries = counted
    await peer.start()
    try:
        await asyncio.wait_for(ran.wait(), timeout=20)
        await wait_for(lambda: store.get_task("t"), lambda task: task.status is Status.COMPLETED)
    finally:
        await peer.stop()
    # The start, the expiry, the end of the grace; a few more if a look lands a millisecond early.
    assert 3 <= looks <= 10, looks
