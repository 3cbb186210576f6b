"""The project's errors: one root, specific subclasses, the docstring as default message."""

from __future__ import annotations

from typing import Sequence


class SchedulerError(Exception):
    """Scheduler error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class SpecError(SchedulerError):
    """Invalid task specification.

    ``pointer`` is the JSON pointer of the offending field ("" for the whole
    task) so that the loader can map it back to a line and column of the file.
    """

    def __init__(self, message: str, pointer: str = "") -> None:
        super().__init__(message)
        self.pointer = pointer


class ConfigError(SchedulerError):
    """Invalid node configuration."""


class StoreError(SchedulerError):
    """The task store failed."""


class TaskNotFound(StoreError):
    """No such task; ``copies`` names the per-node copies of a ``runOn: all`` task of that name."""

    def __init__(self, item_id: str, copies: Sequence[str] = (), more: int = 0) -> None:
        message = f"No task exists with ID: {item_id}"
        if copies:
            others = f" and {more} more" if more else ""
            message += f" (it runs as one copy per node: {', '.join(copies)}{others})"
        super().__init__(message)
        self.item_id = item_id


class InvalidState(StoreError):
    """The task is not in a state that allows this action."""


class ExecutorError(SchedulerError):
    """A task could not be executed."""
