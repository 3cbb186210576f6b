"""What only a MongoDB store must get right between nodes: the gap between a claim's two
writes, and leases read on the server's clock by nodes whose own clocks disagree.

The gap tests run on mongomock and on the server given by ``SCHEDULER_TEST_MONGO_URI``;
the clock tests need a server that answers ``hello`` with its time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import AsyncIterator, Callable

import mongomock
import pytest
from pymongo.errors import ConnectionFailure

from scheduler.errors import StoreError
from scheduler.model import Claim, Outcome, Status, system_clock
from scheduler.store.mongo import MongoStore, protocol
from tests.support.wait import wait_for

from .helpers import LEASE, MS, add_task, claim_one, final

# -- the two-write gap ---------------------------------------------------------


@pytest.fixture(params=["mongomock", pytest.param("mongodb", marks=pytest.mark.mongodb)])
async def nodes(request, clock) -> AsyncIterator[tuple[MongoStore, MongoStore]]:
    """Two nodes on one database, on the test's manual clock."""
    if request.param == "mongomock":
        shared = mongomock.MongoClient(tz_aware=True)
        stores = [MongoStore("mongodb://127.0.0.1/gap", clock=clock, client_factory=lambda url, **_: shared)
                  for _ in range(2)]
    else:
        url = request.getfixturevalue("mongo_url")
        stores = [MongoStore(url, clock=clock) for _ in range(2)]
    for store in stores:
        await store.start()
    yield stores[0], stores[1]
    for store in stores:
        await store.close()


def cut_off_at(claim_number: int) -> Callable[[Claim], None]:
    """A ``between_claim_and_record`` that loses the server at the ``claim_number``-th claim."""
    seen = []

    def cut(claim: Claim) -> None:
        seen.append(claim.item_id)
        if len(seen) == claim_number:
            raise ConnectionFailure("connection reset by peer (injected between the claim and its run record)")

    return cut


async def test_a_claim_cut_off_before_its_run_record_is_recovered_and_its_slot_runs_once(
        nodes, clock, monkeypatch):
    node_a, node_b = nodes
    for name in ("t1", "t2", "t3"):
        await add_task(node_a, clock(), name)
    slots = {name: (await node_a.get_task(name)).next_scheduled_execution for name in ("t1", "t2", "t3")}

    # Node a claims t1 (claim and run record written), then t2, and loses the server between
    # t2's claim and its run record: the whole batch fails, so node a starts none of them.
    monkeypatch.setattr(protocol, "between_claim_and_record", cut_off_at(2))
    with pytest.raises(StoreError, match="MongoDB unreachable"):
        await node_a.claim_due("a", 3, LEASE)
    monkeypatch.undo()

    for name in ("t1", "t2"):
        task = await node_b.get_task(name)
        assert (task.status, task.lease_owner, task.attempt) == (Status.RUNNING, "a", 1)
    assert (await node_b.list_runs("t2")).total == 0  # the second write never happened
    # While node a's leases last, nobody else takes those two: only t3 is free.
    [t3] = await node_b.claim_due("b", 3, LEASE)
    assert t3.item_id == "t3" and await node_b.finish_run(t3, *final(t3, clock(), Status.COMPLETED))
    assert await node_b.recover_expired("b") == []

    clock.advance(LEASE + MS)  # node a never renews what it does not know it holds
    recovered = await node_b.recover_expired("b")
    assert sorted(task.item_id for task in recovered) == ["t1", "t2"]
    for task in recovered:
        assert (task.status, task.attempt, task.status_details["crashedNode"]) == (Status.CRASHED, 2, "a")

    retried = await node_b.claim_due("b", 3, LEASE)
    assert sorted((claim.item_id, claim.attempt) for claim in retried) == [("t1", 2), ("t2", 2)]
    for claim in retried:
        assert claim.scheduled_for == slots[claim.item_id]  # the same slot, its next attempt
        assert await node_b.finish_run(claim, *final(claim, clock(), Status.COMPLETED))

    # Each slot ran once: attempt 1 of t1 never started (its record says crashed), t2's has no record.
    runs = {name: [(run.attempt, run.node_id, run.outcome) for run in (await node_b.list_runs(name)).items]
            for name in ("t1", "t2")}
    assert runs == {
        "t1": [(2, "b", Outcome.SUCCESS), (1, "a", Outcome.CRASHED)],
        "t2": [(2, "b", Outcome.SUCCESS)],
    }
    for name in ("t1", "t2"):
        assert (await node_b.get_task(name)).status == Status.COMPLETED


# -- leases on the server's clock ----------------------------------------------

SKEW = timedelta(hours=1)
# Each node's estimate of the server's time is off by at most half the round trip of its
# ``hello``: milliseconds, more on a loaded test machine, never near the skew.
ESTIMATE_ERROR = timedelta(seconds=5)


def skewed(offset: timedelta) -> Callable[[], datetime]:
    return lambda: system_clock() + offset


@pytest.fixture
async def skewed_nodes(mongo_url) -> AsyncIterator[dict[str, MongoStore]]:
    """Three nodes on one server: one whose clock is right, one an hour ahead, one an hour behind."""
    stores = {
        "right": MongoStore(mongo_url),
        "ahead": MongoStore(mongo_url, clock=skewed(SKEW), server_clock=True),
        "behind": MongoStore(mongo_url, clock=skewed(-SKEW), server_clock=True),
    }
    for store in stores.values():
        await store.start()
    yield stores
    for store in stores.values():
        await store.close()


@pytest.mark.mongodb
@pytest.mark.parametrize(("holder", "taker"), [("behind", "ahead"), ("right", "ahead"), ("behind", "right")])
async def test_a_node_with_a_skewed_clock_cannot_take_a_live_lease(skewed_nodes, holder, taker):
    nodes = skewed_nodes
    await add_task(nodes[holder], nodes[holder].now(), "t")
    claim = await claim_one(nodes[holder], holder, lease=timedelta(minutes=10))
    # Without the server's clock, the node behind would have written a lease that ended
    # fifty minutes ago for its peers, and the node ahead would take any lease as expired.
    assert claim.lease_until - nodes["right"].now() > timedelta(minutes=9)
    assert await nodes[taker].recover_expired(taker) == []
    assert await nodes[taker].claim_due(taker, 1, LEASE) == []
    task = await nodes[taker].get_task("t")
    assert (task.status, task.lease_owner) == (Status.RUNNING, holder)


@pytest.mark.mongodb
async def test_nodes_with_skewed_clocks_agree_on_when_a_lease_expires(skewed_nodes):
    nodes = skewed_nodes
    await add_task(nodes["behind"], nodes["behind"].now(), "t")
    claim = await claim_one(nodes["behind"], "behind", lease=timedelta(seconds=1))

    # The node ahead looks until it finds the lease expired: by then the server's time (read
    # by the node whose clock is right) has reached the lease's end, and not an hour before.
    [task] = await wait_for(lambda: nodes["ahead"].recover_expired("ahead"), bool, timeout=30)
    assert nodes["right"].now() > claim.lease_until - ESTIMATE_ERROR
    assert task.item_id == "t" and task.status == Status.CRASHED
    assert task.status_details["crashedNode"] == "behind"
    # The crash is recorded in the server's time too.
    crash_time = datetime.fromisoformat(task.status_details["crashTime"].replace("Z", "+00:00"))
    assert claim.lease_until < crash_time < nodes["right"].now() + ESTIMATE_ERROR
