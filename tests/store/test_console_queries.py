"""What the console reads beyond the task API's lists: runs in a time window, ids by prefix."""

from __future__ import annotations

from datetime import timedelta

import pytest

from scheduler.model import TaskQuery

from .helpers import add_task, claim_one, success

MINUTE = timedelta(minutes=1)
HOUR_LATER = timedelta(hours=1)


async def _run(store, clock, name: str, minutes: int | None) -> str:
    """Claim ``name`` now and, unless ``minutes`` is None, finish it that many minutes later."""
    claim = await claim_one(store)
    assert claim.item_id == name
    if minutes is not None:
        clock.advance(minutes * MINUTE)
        assert await store.finish_run(claim, *success(claim, clock(), next_due=clock()))
    return claim.run_id


async def test_runs_in_window_are_those_overlapping_it_newest_first(store, clock):
    origin = clock()
    await add_task(store, clock(), "t")
    old = await _run(store, clock, "t", 5)            # 0-5: ends before the window
    clock.advance(5 * MINUTE)
    spanning = await _run(store, clock, "t", 20)      # 10-30: started before, ends inside
    first = await _run(store, clock, "t", 5)          # 30-35
    clock.advance(5 * MINUTE)
    second = await _run(store, clock, "t", 5)         # 40-45
    clock.advance(15 * MINUTE)
    await _run(store, clock, "t", 5)                  # 60-65: starts at the window's end, outside

    window = await store.runs_in_window(["t"], origin + 20 * MINUTE, origin + 60 * MINUTE, 10)

    assert [run.run_id for run in window["t"]] == [second, first, spanning]
    assert old not in {run.run_id for run in window["t"]}
    # Drawn, not read: the output stays in the store, where get_run finds it.
    assert {run.output for run in window["t"]} == {""}
    assert (await store.get_run("t", second)).output == "done"


async def test_runs_in_window_keeps_the_newest_up_to_the_limit(store, clock):
    origin = clock()
    await add_task(store, clock(), "t")
    ids = [await _run(store, clock, "t", 1) for _ in range(4)]

    window = await store.runs_in_window(["t"], origin, origin + 10 * MINUTE, 2)

    assert [run.run_id for run in window["t"]] == ids[:-3:-1]


async def test_a_run_still_going_overlaps_every_later_window(store, clock):
    await add_task(store, clock(), "t")
    running = await _run(store, clock, "t", None)
    clock.advance(90 * MINUTE)

    window = await store.runs_in_window(["t"], clock() - MINUTE, clock(), 10)

    assert [(run.run_id, run.finished_at) for run in window["t"]] == [(running, None)]


async def test_runs_in_window_are_per_task_and_unknown_ids_are_empty(store, clock):
    origin = clock()
    await add_task(store, clock(), "a")
    await add_task(store, clock() + timedelta(seconds=1), "b")
    a_run = await _run(store, clock, "a", 1)
    clock.advance(MINUTE)
    b_run = await _run(store, clock, "b", 1)

    window = await store.runs_in_window(["b", "nope", "a", "b"], origin, origin + HOUR_LATER, 10)

    assert {key: [run.run_id for run in runs] for key, runs in window.items()} == {
        "a": [a_run], "b": [b_run], "nope": []}


async def test_runs_in_window_refuses_a_window_ending_before_it_starts(store, clock):
    with pytest.raises(ValueError, match="ends"):
        await store.runs_in_window(["t"], clock(), clock() - MINUTE, 10)
    with pytest.raises(ValueError, match="limit"):
        await store.runs_in_window(["t"], clock(), clock(), -1)


@pytest.mark.parametrize("prefix, expected", [
    ("web-", ["web-a", "web-b"]),
    ("web", ["web-a", "web-b", "webhook"]),
    ("webhook", ["webhook"]),
    ("x", []),
    ("%", []),  # plain text, never a pattern
])
async def test_query_by_id_prefix(store, clock, prefix, expected):
    for name in ("db", "web-a", "web-b", "webhook", "zz"):
        await add_task(store, clock(), name)

    page = await store.query_tasks(TaskQuery(id_prefix=prefix, sort_by="itemId", descending=True, limit=2))

    assert [task.item_id for task in page.items] == sorted(expected, reverse=True)[:2]
    assert page.total == len(expected)
