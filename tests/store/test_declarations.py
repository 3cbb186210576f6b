"""Contract: what each node declares in its files, the version in force, and when a task goes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from scheduler.errors import TaskNotFound
from scheduler.model import NodeInfo, UpsertResult
from scheduler.spec import Source

from .helpers import claim_one, make_spec

TIMEOUT = timedelta(seconds=60)


def spec(description: str, name: str = "t", path: str = "/etc/scheduler/tasks.d/t.yaml"):
    return make_spec(name, source=Source(path, 1), description=description)


async def beat(store, clock, *nodes: str) -> None:
    for node in nodes:
        await store.heartbeat(NodeInfo(node_id=node, executor=True, heartbeat=clock()))


async def description(store, item_id: str = "t") -> str:
    return (await store.get_task(item_id)).spec.description


async def test_a_declaration_creates_the_task_and_an_unchanged_one_writes_nothing(store, clock):
    assert await store.declare_spec("a", spec("v1")) is UpsertResult.CREATED
    created = clock()
    clock.advance(timedelta(minutes=1))
    assert await store.declare_spec("a", spec("v1")) is UpsertResult.UNCHANGED

    [declaration] = await store.list_declarations(with_documents=True)
    task = await store.get_task("t")
    assert (declaration.item_id, declaration.node_id, declaration.spec_hash) == ("t", "a", task.spec_hash)
    assert declaration.since == declaration.declared_at == created and declaration.in_force == task.spec_hash
    assert declaration.source == Source("/etc/scheduler/tasks.d/t.yaml", 1) and declaration.spec() == spec("v1")
    assert task.spec_version == declaration.version and task.last_modified == created


async def test_the_newest_content_is_in_force_and_never_flips_back(store, peer, clock):
    await store.declare_spec("a", spec("v1"))
    clock.advance(timedelta(minutes=1))
    assert await peer.declare_spec("b", spec("v2")) is UpsertResult.UPDATED  # b saw new content
    clock.advance(timedelta(minutes=1))
    assert await store.declare_spec("a", spec("v1")) is UpsertResult.SUPERSEDED  # a restarted, still on v1
    assert await store.declare_spec("c", spec("v1")) is UpsertResult.SUPERSEDED  # v1 is not new: it was a's
    assert await description(store) == "v2"

    assert await store.declare_spec("a", spec("v2")) is UpsertResult.UNCHANGED  # a catches up
    versions = {d.node_id: d.since for d in await store.list_declarations()}
    assert versions["a"] == versions["b"] < clock()  # v2 appeared with b
    clock.advance(timedelta(minutes=1))
    assert await store.declare_spec("a", spec("v1")) is UpsertResult.SUPERSEDED  # c's v1 is not newer either
    await store.declare_spec("c", spec("v3"))
    assert await description(store) == "v3"


async def test_the_same_instant_is_decided_by_the_hash(store, peer, clock):
    first, second = sorted([spec("x"), spec("y")], key=lambda s: s.spec_hash())
    await store.declare_spec("a", second)
    assert await peer.declare_spec("b", first) is UpsertResult.SUPERSEDED
    assert (await store.get_task("t")).spec_hash == second.spec_hash()


async def test_a_task_stays_while_a_live_node_declares_it(store, peer, clock):
    await store.declare_spec("a", spec("v1"))
    await peer.declare_spec("b", spec("v1"))
    clock.advance(TIMEOUT * 2)  # the declarations are old, the heartbeats are not
    await beat(store, clock, "a", "b")

    assert await store.withdraw_specs("a", ["t"], live_after=clock() - TIMEOUT) == []
    assert await description(store) == "v1"
    assert [d.node_id for d in await store.list_declarations()] == ["b"]
    assert await peer.withdraw_specs("b", ["t"], live_after=clock() - TIMEOUT) == ["t"]
    with pytest.raises(TaskNotFound):
        await store.get_task("t")
    assert await store.list_declarations() == []


async def test_a_node_without_heartbeat_stops_counting_but_a_fresh_declaration_counts(store, peer, clock):
    await store.declare_spec("a", spec("v1"))
    await peer.declare_spec("b", spec("v1"))
    assert await store.withdraw_specs("a", ["t"], live_after=clock() - TIMEOUT) == []  # b declared just now

    await store.declare_spec("a", spec("v1"))
    clock.advance(TIMEOUT * 2)
    await beat(store, clock, "a")  # b is gone
    assert await store.withdraw_specs("a", ["t"], live_after=clock() - TIMEOUT) == ["t"]
    assert await store.list_declarations() == []


async def test_a_withdrawn_version_in_force_gives_way_to_the_newest_left(store, peer, clock):
    await store.declare_spec("a", spec("v1"))
    clock.advance(timedelta(minutes=1))
    await peer.declare_spec("b", spec("v2"))
    clock.advance(timedelta(minutes=1))
    await store.declare_spec("c", spec("v3", path="/srv/other.yaml"))
    assert await description(store) == "v3"
    await beat(store, clock, "a", "b", "c")

    await store.withdraw_specs("c", ["t"], live_after=clock() - TIMEOUT)
    task = await store.get_task("t")
    assert (task.spec.description, task.spec.source) == ("v2", Source("/etc/scheduler/tasks.d/t.yaml", 1))
    await peer.withdraw_specs("b", ["t"], live_after=clock() - TIMEOUT)
    assert await description(store) == "v1"


async def test_withdrawing_a_running_task_closes_its_run(store, clock):
    await store.declare_spec("a", spec("v1"))
    claim = await claim_one(store)
    assert await store.withdraw_specs("a", ["t"], live_after=clock() - TIMEOUT) == ["t"]
    [run] = (await store.list_runs("t")).items
    assert run.run_id == claim.run_id and run.outcome is not None and run.finished_at == clock()


async def test_stale_declarations_are_dropped_without_moving_the_version_in_force(store, peer, clock):
    await store.declare_spec("a", spec("v1"))
    await store.declare_spec("a", spec("only-a", name="u"))
    await store.upsert_spec(make_spec("legacy", source=Source("/old.yaml", 1)), first_due=clock())
    clock.advance(timedelta(minutes=1))
    await peer.declare_spec("b", spec("v2"))  # newest: in force
    await peer.declare_spec("b", spec("only-b", name="w"))
    await peer.declare_spec("b", spec("pinned", name="x"), item_id="x@b", node="b")
    clock.advance(TIMEOUT * 2)
    await beat(store, clock, "a")

    removed = await store.drop_stale_declarations("a", live_after=clock() - TIMEOUT)

    assert sorted(removed) == ["w", "x@b"]
    assert await description(store) == "v2"  # a still declares t: b's version stays until a new one comes
    assert {(d.item_id, d.node_id) for d in await store.list_declarations()} == {("t", "a"), ("u", "a")}
    assert (await store.get_task("legacy")).item_id == "legacy"  # never declared: not touched
    assert await store.drop_stale_declarations("a", live_after=clock() - TIMEOUT) == []


async def test_a_task_stored_before_declarations_existed_goes_with_its_file(store, clock):
    await store.upsert_spec(spec("v1"), first_due=clock(), spec_version=1_700_000_000.0)
    assert await store.declare_spec("a", spec("v2")) is UpsertResult.UPDATED  # now is newer than any mtime
    await store.upsert_spec(make_spec("old", source=Source("/old.yaml", 1)), first_due=clock())
    assert await store.withdraw_specs("a", ["old"], live_after=clock() - TIMEOUT) == ["old"]


async def test_listing_filters_and_liveness(store, peer, clock):
    await store.declare_spec("a", spec("v1"))
    await store.declare_spec("a", spec("same", name="u"))
    clock.advance(timedelta(minutes=1))
    await peer.declare_spec("b", spec("v2"))
    await peer.declare_spec("b", spec("same", name="u"))
    clock.advance(TIMEOUT * 2)
    await beat(store, clock, "b")

    diverged = await store.list_declarations(diverged=True, live_after=clock() - TIMEOUT)
    assert [(d.item_id, d.node_id, d.live, d.spec_hash == d.in_force) for d in diverged] == [
        ("t", "a", False, False), ("t", "b", True, True)
    ]
    assert [d.item_id for d in await store.list_declarations(node_id="a")] == ["t", "u"]
    assert [d.node_id for d in await store.list_declarations(item_ids=["u"])] == ["a", "b"]
    assert await store.list_declarations(item_ids=[]) == []


async def test_a_pinned_copy_is_created_pinned(store, clock):
    await store.declare_spec("a", spec("v1", name="everywhere"), item_id="everywhere@a", node="a")
    task = await store.get_task("everywhere@a")
    assert task.node == "a"
    [declaration] = await store.list_declarations()
    assert declaration.pinned == "a"
