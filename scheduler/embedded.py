"""An in-process scheduler for Python programs: a store, an engine and the task builder.

    async with Scheduler("sqlite:///var/lib/myapp/tasks.db") as scheduler:
        await scheduler.new_task("dataSync").with_period(timedelta(hours=1)) \\
            .with_simple_executor(sync_data).schedule()
        ...

Persistent tasks go to the shared store (several processes may embed a
scheduler on the same store: they share the work as nodes of one cluster);
non-persistent ones to this process's in-memory store. Executors live in the
process, and a node claims only tasks it can run: a task without a ``run:``
section is claimed only by nodes that registered an executor for its type (a
``scheduler run`` node on the same store leaves the program's builder tasks
alone; while the program is down they wait, shown as runnable by no live node).
Tasks this program stored in an earlier run are claimed once their executor is
registered again: pass ``executors`` to ``Scheduler`` to have them from the start.
"""

from __future__ import annotations

import socket
from typing import Any, Mapping

from .builder import TaskBuilder
from .engine import Engine, EngineConfig
from .errors import TaskNotFound
from .executors import Executor, as_executor
from .model import Clock, Task, system_clock
from .schedule import first_slot
from .spec import TaskSpec
from .store import open_store
from .store.base import Store


class Scheduler:
    """``async with Scheduler(store_url) as scheduler`` starts the engine; leaving stops it."""

    def __init__(
        self,
        store: str = "sqlite:///:memory:",
        *,
        node_id: str | None = None,
        executor_node: bool = True,
        clock: Clock = system_clock,
        executors: Mapping[str, Any] | None = None,
        **engine_options: Any,
    ) -> None:
        """``executors``: executors by task type, for tasks stored earlier (any callable
        or object ``with_executor`` takes), registered before the first claim."""
        self._store_url = store
        self._clock = clock
        self._executors = {task_type: as_executor(obj) for task_type, obj in (executors or {}).items()}
        self._config = EngineConfig(node_id=node_id or socket.gethostname(), executor_node=executor_node, **engine_options)
        self._store: Store | None = None
        self._memory_store: Store | None = None
        self._engine: Engine | None = None
        self._running = False

    @property
    def node_id(self) -> str:
        return self._config.node_id

    @property
    def store(self) -> Store:
        assert self._store is not None, "scheduler not started"
        return self._store

    @property
    def memory_store(self) -> Store:
        assert self._memory_store is not None, "scheduler not started"
        return self._memory_store

    async def open(self) -> None:
        """Open the stores without running anything (``run_until_idle`` drives the work)."""
        self._store = open_store(self._store_url, clock=self._clock)
        self._memory_store = open_store("sqlite:///:memory:", clock=self._clock)
        await self._store.start()
        await self._memory_store.start()
        self._engine = Engine(self._config, [self._store, self._memory_store], executors=self._executors)

    async def start(self) -> None:
        """Open the stores and run the engine in the background."""
        await self.open()
        assert self._engine is not None
        await self._engine.start()
        self._running = True

    async def stop(self) -> None:
        """Stop the engine (running tasks get its grace period) and close the stores."""
        if self._engine is not None and self._running:
            await self._engine.stop()
            self._running = False
        for store in (self._memory_store, self._store):
            if store is not None:
                await store.close()
        self._engine = self._store = self._memory_store = None

    async def __aenter__(self) -> Scheduler:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def new_task(self, task_type: str, name: str | None = None) -> TaskBuilder:
        """A builder for a task of ``task_type``; its name (the itemId) defaults to the type."""
        return TaskBuilder(self, task_type, name)

    async def add_task(self, spec: TaskSpec, executor: Executor | None = None) -> Task:
        """Store ``spec`` (creating or updating it) and register ``executor`` for its type."""
        assert self._engine is not None, "scheduler not started"
        if executor is not None:
            await self.register_executor(spec.type, executor)
        store = self.store if spec.persistent else self.memory_store
        item_id, node = spec.placement(self.node_id)
        await store.upsert_spec(spec, item_id=item_id, node=node, first_due=first_slot(spec.schedule, store.now()))
        self._engine.wake()
        return await store.get_task(item_id)

    async def register_executor(self, task_type: str, executor: Any) -> None:
        """Run (and so claim) tasks of ``task_type`` without a ``run:`` section with ``executor``."""
        assert self._engine is not None, "scheduler not started"
        new_type = task_type not in self._engine.task_types
        self._engine.register_executor(task_type, as_executor(executor))
        if new_type and self._running:
            await self._engine.publish_heartbeat()  # other nodes see at once that this type has a node

    async def get_task(self, item_id: str) -> Task:
        """A task from the shared store, else from this process's memory store."""
        try:
            return await self.store.get_task(item_id)
        except TaskNotFound:
            return await self.memory_store.get_task(item_id)

    async def run_until_idle(self) -> int:
        """Run everything due now to completion (for scripts and tests); returns runs finished."""
        assert self._engine is not None, "scheduler not started"
        return await self._engine.run_until_idle()

