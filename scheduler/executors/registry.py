"""Which executor runs a task: its ``run:`` section, else one registered for its ``taskType``.

Registered executors come from the embedding program (the builder's
``with_executor``) or from installed packages through the entry point group
``scheduler.executors``: the entry point's name is the task type, its object
an executor instance, an executor class (instantiated without arguments) or a
plain callable taking the run context.
"""

from __future__ import annotations

import functools
import inspect
import logging
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Mapping

from ..errors import ExecutorError
from ..spec import TaskSpec
from .base import Executor
from .command import CommandExecutor
from .http import HttpExecutor
from .python import PythonExecutor, executor_from_callable

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "scheduler.executors"

DEFAULT_BUILTINS: Mapping[str, Executor] = {
    "command": CommandExecutor(),
    "http": HttpExecutor(),
    "python": PythonExecutor(),
}


def resolve_executor(
    spec: TaskSpec, registry: Mapping[str, Any], *, builtins: Mapping[str, Executor] | None = None
) -> Executor:
    """The executor for ``spec``, or ``ExecutorError`` (which the engine records as a failed run).

    ``spec.run.kind`` picks one of ``builtins`` (``command``, ``http``, ``python``;
    the defaults, with a 10 s grace period, unless a caller passes its own). Without a ``run:`` section:
    ``registry[spec.type]``, then the entry point named ``spec.type``.
    """
    if spec.run is not None:
        return (builtins or DEFAULT_BUILTINS)[spec.run.kind]
    if spec.type in registry:
        return as_executor(registry[spec.type])
    entry_point = _entry_points().get(spec.type)
    if entry_point is not None:
        return _load(entry_point, spec.type)
    raise ExecutorError(
        f"no executor for task type {spec.type!r}: add a run: section or register an executor for this type"
    )


def runnable_types(registry: Mapping[str, Any]) -> frozenset[str]:
    """The task types ``resolve_executor`` finds an executor for without a ``run:``
    section: those of ``registry`` and the entry points' names."""
    return frozenset(registry) | frozenset(_entry_points())


def as_executor(obj: Any) -> Executor:
    """An object with an async ``execute`` as it is; anything else through ``executor_from_callable``."""
    if inspect.iscoroutinefunction(getattr(obj, "execute", None)):
        return obj
    return executor_from_callable(obj)


@functools.cache
def _entry_points() -> dict[str, EntryPoint]:
    # Reading package metadata walks sys.path: done once per process.
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


@functools.cache
def _load(entry_point: EntryPoint, task_type: str) -> Executor:
    try:
        obj = entry_point.load()
        if inspect.isclass(obj):
            obj = obj()
        return as_executor(obj)
    except Exception as exc:  # loading runs the package's code: any error is that package's
        raise ExecutorError(
            f"cannot load executor {entry_point.value!r} for task type {task_type!r}: {type(exc).__name__}: {exc}"
        ) from exc
