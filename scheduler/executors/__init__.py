"""Executors: what runs a task (a command, an HTTP call, a Python callable, a registered executor).

The engine builds a ``RunContext`` per run, finds the executor with
``resolve_executor`` and awaits ``execute(ctx)``, which returns an ``Execution``.
"""

from .base import Execution, Executor, Progress, RunContext
from .command import CommandExecutor
from .http import HttpExecutor
from .python import CallableExecutor, PythonExecutor, executor_from_callable
from .registry import ENTRY_POINT_GROUP, as_executor, resolve_executor, runnable_types

__all__ = [
    "ENTRY_POINT_GROUP",
    "CallableExecutor",
    "CommandExecutor",
    "Execution",
    "Executor",
    "HttpExecutor",
    "Progress",
    "PythonExecutor",
    "RunContext",
    "as_executor",
    "executor_from_callable",
    "resolve_executor",
    "runnable_types",
]
