"""The project's errors: one root, specific subclasses, the docstring as default message."""

from __future__ import annotations


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
    """No such task."""

    def __init__(self, item_id: str) -> None:
        super().__init__(f"No task exists with ID: {item_id}")
        self.item_id = item_id


class InvalidState(StoreError):
    """The task is not in a state that allows this action."""


class ExecutorError(SchedulerError):
    """A task could not be executed."""
