"""Merging the shared and the memory store into one page: the windowed merge equals a full sort."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from scheduler.api.listing import merge_window, sort_key
from scheduler.model import Status, Task, TaskQuery
from scheduler.spec import TaskSpec

T0 = datetime(2024, 3, 20, 14, tzinfo=timezone.utc)


def task(item_id: str, next_in: int | None, failures: int, status: Status) -> Task:
    spec = TaskSpec.from_dict({"name": item_id, "type": f"type-{failures % 2}", "schedule": {"every": "1h"}})
    return Task(
        item_id=item_id, spec=spec, spec_hash="", status=status, failure_count=failures,
        next_scheduled_execution=None if next_in is None else T0 + timedelta(minutes=next_in),
    )


# Ties, nulls and interleavings on purpose.
SHARED = [task(f"s{i:02d}", None if i % 4 == 0 else i % 5, i % 3, list(Status)[i % 7]) for i in range(13)]
LOCAL = [task(f"m{i}", None if i == 2 else i, i % 2, list(Status)[(i * 3) % 7]) for i in range(4)]


@pytest.mark.parametrize("sort_by", ["nextScheduledExecution", "failureCount", "itemId", "status", "taskType"])
@pytest.mark.parametrize("descending", [False, True])
def test_every_window_matches_the_full_sort(sort_by, descending):
    base = TaskQuery(sort_by=sort_by, descending=descending)
    key = sort_key(base)
    shared, local = sorted(SHARED, key=key), sorted(LOCAL, key=key)
    everything = sorted(SHARED + LOCAL, key=key)

    for offset in range(len(everything) + 2):
        for limit in (1, 2, 5, 50):
            query = TaskQuery(sort_by=sort_by, descending=descending, offset=offset, limit=limit)
            end = offset + limit
            start = max(0, offset - min(len(local), end))
            page = merge_window(query, shared[start:end], start, local[:end])
            assert [t.item_id for t in page] == [t.item_id for t in everything[offset:end]], (offset, limit)


def ids(tasks: list[Task]) -> list[str]:
    return [t.item_id for t in tasks]


def test_nulls_sort_first_ascending_and_last_descending():
    tasks = [task("a", None, 0, Status.SCHEDULED), task("b", 5, 0, Status.SCHEDULED), task("c", 1, 0, Status.SCHEDULED)]

    ascending = sorted(tasks, key=sort_key(TaskQuery(sort_by="nextScheduledExecution")))
    descending = sorted(tasks, key=sort_key(TaskQuery(sort_by="nextScheduledExecution", descending=True)))

    assert ids(ascending) == ["a", "c", "b"]
    assert ids(descending) == ["b", "c", "a"]
