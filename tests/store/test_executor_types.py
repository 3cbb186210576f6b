"""Contract: a node claims only tasks it can run.

A task with a ``run:`` section (stored executor type null) any executor node
runs; a task without one needs an executor for its type, which a node names in
``task_types``. Tasks waiting for another node's executor are left as they are,
never claimed and failed, and never hide the tasks a node can run.
"""

from __future__ import annotations

import pytest

from scheduler.model import NodeInfo, Requirement, Status

from .helpers import HOUR, LEASE, MS, add_task, claim_one, make_spec

RUN = {"shell": "true"}


@pytest.mark.parametrize(
    ("fields", "task_types", "claimable"),
    [
        ({"run": RUN}, (), True),
        ({"run": RUN, "type": "appJob"}, (), True),  # with a run: section the type needs no executor
        ({"run": RUN, "type": "appJob"}, ("report",), True),
        ({"type": "appJob"}, (), False),
        ({"type": "appJob"}, ("appJob",), True),
        ({"type": "appJob"}, ("report", "zeta"), False),
        ({"type": "appJob"}, ("appjob",), False),  # types match exactly
        ({"type": "appJob"}, ("report", "appJob", "zeta"), True),
        ({}, ("t",), True),  # the type defaults to the name
        ({"type": "appJob"}, None, True),  # None: a caller running every type
    ],
    ids=[
        "run-no-types", "run-typed-no-types", "run-typed-other-types", "typed-no-types", "typed-own-type",
        "typed-other-types", "typed-other-case", "typed-among-types", "type-from-name", "typed-any-type",
    ],
)
async def test_claim_eligibility_by_executor_type(store, clock, fields, task_types, claimable):
    await add_task(store, clock(), "t", **fields)

    assert await store.next_due_time("a", task_types=task_types) == (clock() if claimable else None)
    claims = await store.claim_due("a", 10, LEASE, task_types=task_types)

    task = await store.get_task("t")
    if claimable:
        assert [claim.item_id for claim in claims] == ["t"]
        assert task.status == Status.RUNNING and task.lease_owner == "a"
    else:
        assert claims == []
        assert task.status == Status.SCHEDULED and task.fence == 0 and task.lease_owner is None
        assert (await store.list_runs("t")).total == 0


async def test_a_crashed_task_resumes_only_on_a_node_that_can_run_it(store, clock):
    await add_task(store, clock(), "t", type="appJob")
    await claim_one(store, "b")  # a node that had the executor, then died
    clock.advance(LEASE + MS)
    assert [task.item_id for task in await store.recover_expired("c")] == ["t"]

    assert await store.claim_due("c", 10, LEASE, task_types=("report",)) == []
    assert [claim.item_id for claim in await store.claim_due("d", 10, LEASE, task_types=("appJob",))] == ["t"]


async def test_tasks_waiting_for_other_executors_never_hide_the_ones_a_node_can_run(store, clock):
    for index in range(30):  # due first, and a node without their executor must walk past them
        await add_task(store, clock() - HOUR + index * MS, f"other-{index:02d}", type="appJob")
    await add_task(store, clock() - 2 * MS, "report-1", type="report")
    await add_task(store, clock() - MS, "shell-1", run=RUN)
    await add_task(store, clock(), "report-2", type="report")

    assert await store.next_due_time("a", task_types={"report"}) == clock() - 2 * MS
    first = await store.claim_due("a", 2, LEASE, task_types={"report"})
    rest = await store.claim_due("a", 10, LEASE, task_types={"report"})

    assert [claim.item_id for claim in first] == ["report-1", "shell-1"]
    assert [claim.item_id for claim in rest] == ["report-2"]
    assert await store.claim_due("a", 10, LEASE, task_types={"report"}) == []
    assert (await store.get_task("other-00")).status == Status.SCHEDULED
    assert [claim.item_id for claim in await store.claim_due("b", 1, LEASE, task_types={"appJob"})] == ["other-00"]


@pytest.mark.parametrize("extra_types", [0, 200], ids=["few-types", "many-types"])
async def test_a_claim_takes_the_earliest_due_first_across_run_sections_and_types(store, clock, extra_types):
    kinds = [{"run": RUN}, {"type": "type-a"}, {"type": "type-b"}, {"type": "type-c"}]
    for index in range(12):  # due in the reverse order of their names and of their creation
        await add_task(store, clock() - index * MS, f"t{index:02d}", **kinds[index % 4])
    await add_task(store, clock() - 100 * MS, "first-b", type="type-b")
    task_types = {"type-a", "type-b", *(f"extra-{index}" for index in range(extra_types))}

    assert await store.next_due_time("a", task_types=task_types) == clock() - 100 * MS
    claims = await store.claim_due("a", 20, LEASE, task_types=task_types)

    runnable = [f"t{index:02d}" for index in reversed(range(12)) if index % 4 != 3]  # not type-c
    assert [claim.item_id for claim in claims] == ["first-b", *runnable]


async def test_a_spec_update_changes_the_executor_a_node_needs(store, clock):
    await add_task(store, clock(), "t", type="appJob")
    assert await store.claim_due("a", 10, LEASE, task_types=()) == []

    await store.upsert_spec(make_spec("t", type="appJob", run=RUN), first_due=clock(), spec_version=1)
    claim = await claim_one(store, "a")  # any executor node: it has a run: section now
    assert claim.item_id == "t"


async def test_count_waiting_groups_the_waiting_tasks_by_what_a_node_needs(store, clock):
    await add_task(store, clock(), "shell-now", run=RUN)
    await add_task(store, clock() + HOUR, "shell-later", run=RUN)
    await add_task(store, clock() - HOUR, "app-1", type="appJob")
    await add_task(store, clock() + HOUR, "app-2", type="appJob")
    await add_task(store, clock(), "app-on-n1", type="appJob", nodes=["n1", "n2"])
    await store.upsert_spec(make_spec("app-copy", type="appJob"), item_id="app-copy@n3", node="n3", first_due=clock())
    # Not waiting: disabled, never due, running, manual after a crash.
    await add_task(store, clock(), "off", type="appJob", enabled=False)
    await add_task(store, None, "never", type="appJob")
    await add_task(store, clock() - 2 * HOUR, "running", type="report")
    await claim_one(store, "b")

    assert await store.count_waiting() == {
        Requirement(None): 2,
        Requirement("appJob"): 2,
        Requirement("appJob", nodes=("n1", "n2")): 1,
        Requirement("appJob", node="n3"): 1,
    }


async def test_count_waiting_counts_crashed_tasks_that_resume(store, clock):
    await add_task(store, clock(), "resumes", type="report")
    await add_task(store, clock(), "manual", type="report", onCrash="manual")
    assert len(await store.claim_due("b", 10, LEASE)) == 2
    clock.advance(LEASE + MS)
    assert len(await store.recover_expired("c")) == 2

    assert await store.count_waiting() == {Requirement("report"): 1}


async def test_heartbeat_keeps_the_task_types_a_node_runs(store, clock):
    await store.heartbeat(NodeInfo("n1", executor=True, heartbeat=clock(), task_types=("appJob", "report")))
    await store.heartbeat(NodeInfo("n2", executor=True, heartbeat=clock()))
    assert [node.task_types for node in await store.list_nodes()] == [("appJob", "report"), ()]

    await store.heartbeat(NodeInfo("n1", executor=True, heartbeat=clock(), task_types=("report",)))
    assert (await store.list_nodes())[0].task_types == ("report",)
