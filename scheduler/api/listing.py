"""Finding tasks across the node's two stores: the shared one, then the in-memory one.

A task id is looked up in the shared store first, then in the memory store.
A listing is one sorted, paged sequence over both. The memory store holds a
node's few non-persistent tasks, so the common case (it has no match) is a
single query on the shared store. Otherwise the page is merged from the first
``offset + limit`` memory matches and a window of the shared store that is
provably enough: at most ``m`` memory tasks precede any position, so the shared
tasks of merged positions ``[offset, offset + limit)`` have shared indices in
``[offset - m, offset + limit)``.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, replace
from typing import Any

from ..errors import TaskNotFound
from ..model import Task, TaskQuery
from ..store.base import Store

MAX_COPIES_NAMED = 10  # in the message of an unknown id

_SORT_VALUES = {
    "nextScheduledExecution": lambda t: t.next_scheduled_execution,
    "lastExecutionDate": lambda t: t.last_execution_date,
    "creationDate": lambda t: t.creation_date,
    "taskType": lambda t: t.spec.type,
    "status": lambda t: t.status.value,
    "itemId": lambda t: t.item_id,
    "failureCount": lambda t: t.failure_count,
    "successCount": lambda t: t.success_count,
}


class _Desc:
    """Inverts the order of a value (for descending sorts); equality is kept."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Desc) -> bool:
        return other.value < self.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and other.value == self.value


def sort_key(query: TaskQuery):
    """The stores' order as a Python key: nulls lowest, ties broken by itemId in the same direction."""
    value_of = _SORT_VALUES[query.sort_by]

    def key(task: Task) -> Any:
        value = value_of(task)
        # (False, None) sorts before any (True, value) and is never compared further.
        ascending = ((value is not None, value), task.item_id)
        return _Desc(ascending) if query.descending else ascending

    return key


@dataclass(frozen=True)
class Located:
    task: Task
    store: Store


class TaskFinder:
    def __init__(self, store: Store, memory_store: Store | None) -> None:
        self.stores = [store] if memory_store is None else [store, memory_store]

    async def locate(self, item_id: str) -> Located:
        """The task and the store holding it; ``TaskNotFound`` if no store has it, naming
        the copies ``<item_id>@<node>`` when it is a ``runOn: all`` task's name."""
        for store in self.stores:
            try:
                return Located(await store.get_task(item_id), store)
            except TaskNotFound:
                continue
        # runOn: all copies are persistent: they live in the shared store only.
        copies = await self.stores[0].query_tasks(TaskQuery(copies_of=item_id, limit=MAX_COPIES_NAMED))
        raise TaskNotFound(item_id, [t.item_id for t in copies.items], more=copies.total - len(copies.items))

    async def query(self, query: TaskQuery) -> tuple[list[Task], int]:
        """The page of tasks of ``query`` over both stores, and the total of matches."""
        if len(self.stores) == 1:
            page = await self.stores[0].query_tasks(query)
            return page.items, page.total
        shared, memory = self.stores
        end = query.offset + query.limit
        local = await memory.query_tasks(replace(query, offset=0, limit=end))
        if local.total == 0:
            page = await shared.query_tasks(query)
            return page.items, page.total
        start = max(0, query.offset - len(local.items))
        window = await shared.query_tasks(replace(query, offset=start, limit=end - start))
        return merge_window(query, window.items, start, local.items), window.total + local.total


def merge_window(query: TaskQuery, window: list[Task], start: int, local: list[Task]) -> list[Task]:
    """Tasks at merged positions ``[offset, offset + limit)``.

    ``window`` is the shared store's matches from index ``start``; ``local`` the
    first memory-store matches. The merged position of an item is its index in
    its own store plus the number of items of the other store sorting before it.
    """
    key = sort_key(query)
    window_keys = [key(t) for t in window]
    local_keys = [key(t) for t in local]
    first = window_keys[0] if window_keys else None
    ranked: list[tuple[int, Task]] = []
    for index, (task, task_key) in enumerate(zip(window, window_keys)):
        ranked.append((start + index + bisect_left(local_keys, task_key), task))
    for index, (task, task_key) in enumerate(zip(local, local_keys)):
        if start > 0 and (first is None or task_key < first):
            continue  # sorts before the window: its position is before ``offset``
        ranked.append((index + start + bisect_left(window_keys, task_key), task))
    end = query.offset + query.limit
    return [task for position, task in sorted(ranked, key=lambda r: r[0]) if query.offset <= position < end]
