"""The fluent task builder of embedded schedulers (Unomi's ``newTask(...)...schedule()``).

    await scheduler.new_task("dataSync").with_period(timedelta(hours=1)) \\
        .with_simple_executor(sync_data).schedule()

Each ``with_*`` call returns the builder; ``build()`` checks the combination and
returns the ``TaskSpec`` (raising ``SpecError`` with a clear message);
``schedule()`` builds, registers the executor and stores the task.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .errors import SpecError
from .executors import Executor, executor_from_callable
from .model import Task
from .spec import (
    NAME_PATTERN, KeepRuns, RetryPolicy, RunSpec, Schedule, Source, TaskSpec, dependencies, format_seconds, freeze,
)

if TYPE_CHECKING:
    from .embedded import Scheduler

BUILDER_SOURCE = Source("<builder>")


def default_name(task_type: str) -> str:
    """A task name (the itemId) from a Unomi-style type: ``dataSync`` -> ``data-sync``."""
    kebab = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", task_type).lower()
    return re.sub(r"[^a-z0-9_-]+", "-", kebab).strip("-_")[:63]


class TaskBuilder:
    """Collects a task's settings; nothing is checked or stored before ``build``/``schedule``."""

    def __init__(self, scheduler: Scheduler | None, task_type: str, name: str | None = None) -> None:
        self._scheduler = scheduler
        self._type = task_type
        self._name = name or default_name(task_type)
        self._period: timedelta | None = None
        self._fixed_rate = True
        self._cron: tuple[str, str] | None = None
        self._initial_delay = timedelta(0)
        self._at: datetime | None = None
        self._one_shot = False
        self._parameters: Mapping[str, Any] = {}
        self._max_retries: int | None = None
        self._retry_delay: timedelta | None = None
        self._persistent = True
        self._run_on = "any"
        self._executor: Executor | None = None
        self._run: RunSpec | None = None
        self._on_crash = "resume"
        self._depends_on: tuple[str, ...] = ()
        self._missed_runs: str | None = None
        self._missed_run_grace: timedelta | None = None
        self._keep_runs: dict[str, int] | None = None

    # -- when -------------------------------------------------------------------

    def with_period(self, period: timedelta) -> TaskBuilder:
        """Run every ``period`` (fixed rate unless ``with_fixed_delay`` is also called)."""
        self._period = period
        return self

    def with_fixed_delay(self, period: timedelta | None = None) -> TaskBuilder:
        """Wait ``period`` after each run ends before the next starts."""
        if period is not None:
            self._period = period
        self._fixed_rate = False
        return self

    def with_fixed_rate(self) -> TaskBuilder:
        self._fixed_rate = True
        return self

    def with_cron(self, expression: str, timezone: str = "UTC") -> TaskBuilder:
        self._cron = (expression, timezone)
        return self

    def with_initial_delay(self, delay: timedelta) -> TaskBuilder:
        self._initial_delay = delay
        return self

    def as_one_shot(self, at: datetime | None = None) -> TaskBuilder:
        """Run once: at ``at``, or after the initial delay (at once without one)."""
        self._one_shot = True
        self._at = at
        return self

    def with_missed_runs(self, policy: str, grace: timedelta | None = None) -> TaskBuilder:
        """What becomes of slots missed while no node ran the task (or while it was suspended):
        ``"runOnce"`` (the default), ``"skip"`` or ``"runAll"``. With ``"skip"``, ``grace`` is how late
        a slot may start before it is skipped (the file's ``missedRunGrace``)."""
        self._missed_runs = policy
        self._missed_run_grace = grace
        return self

    # -- what -------------------------------------------------------------------

    def with_parameters(self, parameters: Mapping[str, Any]) -> TaskBuilder:
        self._parameters = dict(parameters)
        return self

    def with_simple_executor(self, function: Callable[..., Any]) -> TaskBuilder:
        """A function called with no argument, or with the run context if it takes one."""
        self._executor = executor_from_callable(function)
        return self

    def with_executor(self, executor: Any) -> TaskBuilder:
        """An object with ``execute(ctx)`` (sync or async) that can checkpoint and resume."""
        self._executor = executor_from_callable(executor)
        return self

    def with_run(self, run: RunSpec) -> TaskBuilder:
        """A command, HTTP call or ``module:function`` instead of an in-process executor."""
        self._run = run
        return self

    def with_dependencies(self, *item_ids: str) -> TaskBuilder:
        """Each run waits for a success of each of these tasks since the last run (README: Dependencies).

        Names may be given one by one or as one list (Unomi's ``withDependencies``)."""
        if len(item_ids) == 1 and isinstance(item_ids[0], (list, tuple, set, frozenset)):
            item_ids = tuple(item_ids[0])
        self._depends_on = tuple(item_ids)
        return self

    # -- how --------------------------------------------------------------------

    def with_max_retries(self, max_retries: int) -> TaskBuilder:
        self._max_retries = max_retries
        return self

    def with_retry_delay(self, delay: timedelta) -> TaskBuilder:
        self._retry_delay = delay
        return self

    def non_persistent(self) -> TaskBuilder:
        """Keep the task in this node's memory only; it runs here and is gone after a restart."""
        self._persistent = False
        return self

    def run_on_all_nodes(self) -> TaskBuilder:
        self._run_on = "all"
        return self

    def with_keep_runs(self, successful: int | None = None, failed: int | None = None) -> TaskBuilder:
        """Keep at most this many finished run records of each kind, newest first (the file's
        ``keepRuns``): ``successful`` runs, and ``failed`` ones (every other outcome)."""
        self._keep_runs = {key: value for key, value in (("successful", successful), ("failed", failed))
                           if value is not None}
        return self

    def with_manual_resume(self) -> TaskBuilder:
        """After a crash, wait for an operator's resume instead of resuming at once."""
        self._on_crash = "manual"
        return self

    # -- results ----------------------------------------------------------------

    def build(self) -> TaskSpec:
        if not NAME_PATTERN.match(self._name):
            raise SpecError(f"task name must match [a-z0-9][a-z0-9_-]{{0,62}}, got {self._name!r}")
        return TaskSpec(
            name=self._name,
            type=self._type,
            schedule=self._schedule(),
            run=self._run,
            parameters=freeze(self._parameters),
            retry=self._retry(),
            persistent=self._persistent,
            run_on=self._run_on,
            on_crash=self._on_crash,
            depends_on=dependencies(self._name, list(self._depends_on)),
            keep_runs=None if self._keep_runs is None else KeepRuns.from_dict(self._keep_runs),
            source=BUILDER_SOURCE,
        )

    async def schedule(self) -> Task:
        """Build, register the executor and store the task (the same name again updates it)."""
        if self._scheduler is None:
            raise RuntimeError("this builder is not attached to a scheduler: use Scheduler.new_task")
        spec = self.build()
        if self._executor is None and self._run is None:
            raise SpecError(f"task {spec.name!r} has nothing to run: call with_simple_executor, with_executor or with_run")
        return await self._scheduler.add_task(spec, self._executor)

    def _schedule(self) -> Schedule:
        """The schedule, with its missed-run settings checked as a file's would be."""
        schedule = self._slots()
        if self._missed_runs is None and self._missed_run_grace is None:
            return schedule
        doc = {**schedule.to_dict(), "missedRuns": self._missed_runs or "runOnce"}
        if self._missed_run_grace is not None:
            doc["missedRunGrace"] = format_seconds(self._missed_run_grace)
        return Schedule.from_dict(doc)

    def _slots(self) -> Schedule:
        if self._period is not None and self._period <= timedelta(0):
            raise SpecError(f"the period must be positive, got {self._period}")
        if self._initial_delay < timedelta(0):
            raise SpecError(f"the initial delay must not be negative, got {self._initial_delay}")
        kinds = sum(x for x in (self._period is not None, self._cron is not None, self._one_shot))
        if kinds > 1:
            raise SpecError("choose one of with_period, with_cron and as_one_shot")
        if self._cron is not None:
            if self._initial_delay:
                raise SpecError("a cron task has no initial delay")
            expression, timezone = self._cron
            return Schedule.from_dict({"cron": expression, "timezone": timezone})
        if self._period is not None:
            return Schedule(every=self._period, fixed_rate=self._fixed_rate, initial_delay=self._initial_delay)
        if not self._fixed_rate:
            raise SpecError("with_fixed_delay needs a period")
        if self._at is not None:
            if self._at.tzinfo is None:
                raise SpecError("as_one_shot(at=...) needs an aware datetime")
            return Schedule(at=self._at)
        # A one-shot, and without any of with_period, with_cron or as_one_shot too: Apache Unomi runs
        # such a task once, at once (or after its initial delay).
        return Schedule(after=self._initial_delay)

    def _retry(self) -> RetryPolicy:
        if self._max_retries is not None and self._max_retries < 0:
            raise SpecError(f"max retries must be >= 0, got {self._max_retries}")
        if self._retry_delay is not None and self._retry_delay < timedelta(0):
            raise SpecError(f"the retry delay must not be negative, got {self._retry_delay}")
        defaults = RetryPolicy()
        return RetryPolicy(
            max_retries=defaults.max_retries if self._max_retries is None else self._max_retries,
            retry_delay=defaults.retry_delay if self._retry_delay is None else self._retry_delay,
        )
