"""Contract: upsert and remove specs, read tasks back, query and page them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from scheduler.errors import TaskNotFound
from scheduler.model import SORT_FIELDS, Status, TaskQuery, UpsertResult
from scheduler.selectors import parse_selector
from scheduler.spec import Source

from .helpers import HOUR, LEASE, add_task, claim_one, failure, final, make_spec, success


async def test_new_task_is_scheduled_at_its_first_due_time(store, clock):
    due = clock() + HOUR
    assert await store.upsert_spec(make_spec("t", labels={"team": "crm"}), first_due=due) == UpsertResult.CREATED
    task = await store.get_task("t")
    assert task.status == Status.SCHEDULED
    assert task.next_scheduled_execution == due and task.scheduled_for == due
    assert (task.attempt, task.failure_count, task.success_count, task.fence) == (1, 0, 0, 0)
    assert task.spec == make_spec("t", labels={"team": "crm"})
    assert task.spec_hash == make_spec("t", labels={"team": "crm"}).spec_hash()
    assert task.creation_date == clock() and task.history == [] and task.lease_owner is None


async def test_same_spec_again_writes_nothing(store, clock):
    await store.upsert_spec(make_spec("t"), first_due=clock())
    before = await store.get_task("t")
    clock.advance(timedelta(minutes=5))
    assert await store.upsert_spec(make_spec("t"), first_due=clock() + HOUR, spec_version=9) == UpsertResult.UNCHANGED
    after = await store.get_task("t")
    assert after.last_modified == before.last_modified
    assert after.next_scheduled_execution == before.next_scheduled_execution
    assert after.spec_version == 0.0


async def test_older_spec_version_never_overwrites_a_newer_one(store, clock):
    await store.upsert_spec(make_spec("t", description="v2"), first_due=clock(), spec_version=2.0)
    result = await store.upsert_spec(make_spec("t", description="v1"), first_due=clock(), spec_version=1.0)
    assert result == UpsertResult.SUPERSEDED
    task = await store.get_task("t")
    assert task.spec.description == "v2" and task.spec_version == 2.0


async def test_update_keeps_runtime_state(store, clock):
    await add_task(store, clock(), "t")
    claim = await claim_one(store)
    await store.save_progress(claim, checkpoint={"page": 3})
    await store.finish_run(claim, *failure(claim, clock()))
    await store.update_config("t", max_retries=7)
    before = await store.get_task("t")

    result = await store.upsert_spec(make_spec("t", description="new"), first_due=clock() + HOUR, spec_version=1.0)
    assert result == UpsertResult.UPDATED
    task = await store.get_task("t")
    assert task.spec.description == "new" and task.spec_version == 1.0
    assert task.spec_hash == make_spec("t", description="new").spec_hash()
    assert (task.failure_count, task.attempt, task.fence) == (before.failure_count, before.attempt, before.fence)
    assert task.history == before.history and len(task.history) == 1
    assert task.checkpoint_data == {"page": 3}
    assert task.max_retries == 7 and task.last_error == "boom"
    # the schedule did not change: the pending retry keeps its time
    assert task.next_scheduled_execution == before.next_scheduled_execution


async def test_schedule_change_moves_the_next_run(store, clock):
    await add_task(store, clock() + HOUR, "t")
    new_due = clock() + timedelta(minutes=5)
    await store.upsert_spec(make_spec("t", schedule={"every": "5m"}), first_due=new_due)
    task = await store.get_task("t")
    assert task.next_scheduled_execution == new_due and task.scheduled_for == new_due and task.attempt == 1


async def test_schedule_change_leaves_a_running_task_alone(store, clock):
    await add_task(store, clock(), "t")
    claim = await claim_one(store)
    await store.upsert_spec(make_spec("t", schedule={"every": "5m"}), first_due=clock() + HOUR)
    task = await store.get_task("t")
    assert task.status == Status.RUNNING
    assert task.next_scheduled_execution == claim.task.next_scheduled_execution
    assert task.spec.schedule.every == timedelta(minutes=5)


async def test_schedule_change_reopens_a_completed_one_shot(store, clock):
    one_shot = {"at": "2030-01-01T12:00:00Z"}
    await add_task(store, clock(), "t", schedule=one_shot)
    claim = await claim_one(store)
    await store.finish_run(claim, *final(claim, clock(), Status.COMPLETED, expires_at=clock() + HOUR))
    later = clock() + timedelta(days=1)
    await store.upsert_spec(make_spec("t", schedule={"at": "2030-01-02T12:00:00Z"}), first_due=later)
    task = await store.get_task("t")
    assert task.status == Status.SCHEDULED and task.next_scheduled_execution == later
    assert task.expires_at is None


async def test_schedule_change_does_not_undo_a_cancel(store, clock):
    await add_task(store, clock(), "t")
    await store.cancel("t")
    await store.upsert_spec(make_spec("t", schedule={"every": "5m"}), first_due=clock() + HOUR)
    assert (await store.get_task("t")).status == Status.CANCELLED


async def test_item_id_and_node_pinning(store, clock):
    await store.upsert_spec(make_spec("t", runOn="all"), item_id="t@n1", node="n1", first_due=clock())
    task = await store.get_task("t@n1")
    assert task.node == "n1" and task.spec.name == "t"
    with pytest.raises(TaskNotFound):
        await store.get_task("t")


async def test_remove(store, clock):
    await add_task(store, clock(), "t")
    await add_task(store, clock(), "other")
    assert await store.remove_spec("t") is True
    assert await store.remove_spec("t") is False
    with pytest.raises(TaskNotFound) as error:
        await store.get_task("t")
    assert error.value.item_id == "t"
    assert (await store.get_task("other")).status == Status.SCHEDULED


async def test_remove_while_running_fences_the_run_and_closes_its_record(store, clock):
    await add_task(store, clock(), "t")
    claim = await claim_one(store)
    assert await store.remove_spec("t")
    assert await store.renew_leases("a", [claim], LEASE) == {claim.run_id}
    runs = await store.list_runs("t")
    assert runs.total == 1 and runs.items[0].outcome == "cancelled" and runs.items[0].finished_at == clock()


async def test_get_unknown_task(store):
    with pytest.raises(TaskNotFound):
        await store.get_task("nope")


# -- queries ------------------------------------------------------------------


async def _populate(store, clock):
    """Six tasks with distinct values in every sort field."""
    base = clock()
    await store.upsert_spec(make_spec("a1", type="sync", labels={"team": "crm"}, source=Source("/etc/t/a.yaml", 1)),
                            first_due=base + timedelta(minutes=1))
    await store.upsert_spec(make_spec("b2", type="sync", labels={"team": "web"}, source=Source("<api>")),
                            first_due=base + timedelta(minutes=5))
    await store.upsert_spec(make_spec("c3", type="clean", labels={"team": "crm", "tier": "1"}, persistent=False),
                            node="n1", first_due=base)
    await store.upsert_spec(make_spec("d4", type="clean"), first_due=None)
    await store.upsert_spec(make_spec("e5", type="report", source=Source("/etc/t/e.yaml", 3)),
                            first_due=base + timedelta(minutes=3))
    clock.advance(timedelta(seconds=1))
    await store.upsert_spec(make_spec("f6", type="report"), first_due=base + timedelta(minutes=2))
    claim = await claim_one(store, "n1")  # c3, the only due task
    assert claim.item_id == "c3"
    await store.finish_run(claim, *failure(claim, clock()))  # next run 12:01:01, one failure
    await store.run_now("e5")
    claim = await claim_one(store, "n2")
    assert claim.item_id == "e5"
    await store.finish_run(claim, *success(claim, clock()))  # next run 13:00:01, one success
    await store.cancel("b2")  # no next run


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (TaskQuery(), ["a1", "b2", "c3", "d4", "e5", "f6"]),
        (TaskQuery(status=Status.CANCELLED), ["b2"]),
        (TaskQuery(status=Status.SCHEDULED), ["a1", "c3", "d4", "e5", "f6"]),
        (TaskQuery(task_type="report"), ["e5", "f6"]),
        (TaskQuery(labels={"team": "crm"}), ["a1", "c3"]),
        (TaskQuery(labels={"team": "crm", "tier": "1"}), ["c3"]),
        (TaskQuery(labels={"team": "ops"}), []),
        (TaskQuery(label_selector=parse_selector("team=crm,tier==1")), ["c3"]),
        (TaskQuery(label_selector=parse_selector("team!=crm")), ["b2", "d4", "e5", "f6"]),  # no label: not crm
        (TaskQuery(label_selector=parse_selector("tier")), ["c3"]),
        (TaskQuery(label_selector=parse_selector("team,!tier")), ["a1", "b2"]),
        (TaskQuery(labels={"team": "crm"}, label_selector=parse_selector("!tier")), ["a1"]),
        (TaskQuery(label_selector=parse_selector("tie,team")), []),  # a key is never a prefix of another
        (TaskQuery(label_selector=parse_selector("team"), status=Status.SCHEDULED), ["a1", "c3"]),
        (TaskQuery(node="n1"), ["c3"]),
        (TaskQuery(persistent=False), ["c3"]),
        (TaskQuery(persistent=True, task_type="clean"), ["d4"]),
        (TaskQuery(origin_file=True), ["a1", "e5"]),
        (TaskQuery(origin_file=False), ["b2", "c3", "d4", "f6"]),
        (TaskQuery(task_type="sync", status=Status.SCHEDULED), ["a1"]),
        (TaskQuery(task_type="{'$ne': 1}"), []),
    ],
    ids=lambda value: "" if isinstance(value, list) else None,
)
async def test_query_filters(store, clock, query, expected):
    await _populate(store, clock)
    page = await store.query_tasks(query)
    assert [task.item_id for task in page.items] == expected
    assert page.total == len(expected) and page.offset == 0


# The state ``_populate`` leaves: missing values sort first ascending, ties go by itemId.
SORTED = {
    "nextScheduledExecution": ["b2", "d4", "a1", "c3", "f6", "e5"],
    "lastExecutionDate": ["a1", "b2", "d4", "f6", "c3", "e5"],
    "creationDate": ["a1", "b2", "c3", "d4", "e5", "f6"],
    "taskType": ["c3", "d4", "e5", "f6", "a1", "b2"],
    "status": ["b2", "a1", "c3", "d4", "e5", "f6"],
    "itemId": ["a1", "b2", "c3", "d4", "e5", "f6"],
    "failureCount": ["a1", "b2", "d4", "e5", "f6", "c3"],
    "successCount": ["a1", "b2", "c3", "d4", "f6", "e5"],
}


def test_every_sort_field_is_covered():
    assert set(SORTED) == SORT_FIELDS


@pytest.mark.parametrize("descending", [False, True], ids=["asc", "desc"])
@pytest.mark.parametrize("field", sorted(SORTED))
async def test_query_sorts(store, clock, field, descending):
    await _populate(store, clock)
    page = await store.query_tasks(TaskQuery(sort_by=field, descending=descending))
    expected = SORTED[field][::-1] if descending else SORTED[field]
    assert [task.item_id for task in page.items] == expected


async def test_query_pages(store, clock):
    await _populate(store, clock)
    seen = []
    for offset in (0, 4):
        page = await store.query_tasks(TaskQuery(sort_by="nextScheduledExecution", offset=offset, limit=4))
        assert page.total == 6 and page.offset == offset
        seen += [task.item_id for task in page.items]
    assert seen == SORTED["nextScheduledExecution"]
    empty = await store.query_tasks(TaskQuery(offset=10, limit=4))
    assert empty.items == [] and empty.total == 6


# Keys that a text match would confuse: a prefix, JSON's escaped quote, a dot, a dollar, the empty value.
ODD_LABELS = {"a": {"a": "1"}, "ab": {"ab": "1"}, "quote": {'a"': "1", "a": ""}, "dot": {"a.b": "x,y"}, "dollar": {"$a": "1"}}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("a", ["a", "quote"]),
        ("!a", ["ab", "dollar", "dot"]),
        ('a"', ["quote"]),
        ("a=", ["quote"]),
        ("a!=1", ["ab", "dollar", "dot", "quote"]),
        ("a.b", ["dot"]),
        ("$a==1", ["dollar"]),
        ("$a!=1,!a.b", ["a", "ab", "quote"]),
    ],
)
async def test_label_selectors_compare_keys_and_values_as_plain_text(store, clock, selector, expected):
    for name, labels in ODD_LABELS.items():
        await add_task(store, clock(), name, labels=labels)
    page = await store.query_tasks(TaskQuery(label_selector=parse_selector(selector), limit=2))
    assert [task.item_id for task in page.items] == expected[:2] and page.total == len(expected)


async def test_copies_of_a_task_are_its_ids_with_a_node(store, clock):
    for item_id in ("web", "web@n1", "web@n2", "web-extra@n1", "webA", "we", "web@"):
        spec = make_spec("web", runOn="all")  # the ids, not the names, are what is matched
        await store.upsert_spec(spec, item_id=item_id, node=item_id.partition("@")[2] or None, first_due=clock())
    page = await store.query_tasks(TaskQuery(copies_of="web", limit=2))
    assert [task.item_id for task in page.items] == ["web@", "web@n1"] and page.total == 3


@pytest.mark.parametrize(
    "query",
    [TaskQuery(sort_by="spec"), TaskQuery(sort_by="item_id; DROP TABLE tasks"), TaskQuery(offset=-1), TaskQuery(limit=-1)],
)
async def test_bad_queries_are_value_errors(store, clock, query):
    await add_task(store, clock(), "t")
    with pytest.raises(ValueError):
        await store.query_tasks(query)
    assert (await store.get_task("t")).item_id == "t"


async def test_list_runs_newest_first_and_paged(store, clock):
    await add_task(store, clock(), "t")
    for _ in range(3):
        claim = await claim_one(store)
        clock.advance(timedelta(seconds=1))
        await store.finish_run(claim, *failure(claim, clock()))
        clock.advance(timedelta(minutes=1))
    page = await store.list_runs("t", offset=0, limit=2)
    assert page.total == 3
    assert [run.attempt for run in page.items] == [3, 2]
    assert [run.attempt for run in (await store.list_runs("t", offset=2, limit=2)).items] == [1]
    assert (await store.list_runs("unknown")).total == 0
