"""Prometheus metrics of one node, in a registry of its own (never the process-global one).

Counters and the histogram are fed by the engine through the ``EngineListener``
hooks and by the reconciler through ``reload_finished``. The per-task next/last
run timestamps and the count of tasks no live node can run are a snapshot the
``/metrics`` handler refreshes from the stores just before rendering; it also
drops the run counts of tasks that no longer exist, so that no series outlives
its task.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..listener import EngineListener
from ..model import Claim, Declaration, RunResult, Task

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# From a no-op Python call to a long batch job.
DURATION_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1, 5, 30, 120, 600, 1800, 3600, float("inf"))


class _TaskTimes(Collector):
    """Yields the per-task timestamps of the last snapshot."""

    def __init__(self) -> None:
        # (task, why it is held, next run, last run, last success), not the tasks: a snapshot lives until
        # the next scrape, and up to a thousand tasks per store, their specs and states, would stay with it.
        self.times: list[tuple[str, tuple[str, ...], datetime | None, datetime | None, datetime | None]] = []
        self.total = 0

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "scheduler_tasks", "Tasks in the shared store and this node's memory store.", value=self.total
        )
        next_run = GaugeMetricFamily(
            "scheduler_task_next_run_timestamp_seconds",
            "When the task is next due (Unix time); absent when it is not scheduled, or held (scheduler_task_held).",
            labels=["task"],
        )
        last_run = GaugeMetricFamily(
            "scheduler_task_last_run_timestamp_seconds",
            "When the task's last run started (Unix time).",
            labels=["task"],
        )
        last_success = GaugeMetricFamily(
            "scheduler_task_last_success_timestamp_seconds",
            "When the task's last successful run ended (Unix time); absent until it has succeeded.",
            labels=["task"],
        )
        held = GaugeMetricFamily(
            "scheduler_task_held",
            "1 for a task that runs nothing until the hold ends: reason disabled (enabled: false in its spec) "
            "or suspended (by an operator); absent otherwise.",
            labels=["task", "reason"],
        )
        for item_id, holds, *moments in self.times:
            for reason in holds:
                held.add_metric([item_id, reason], 1)
            for family, moment in zip((next_run, last_run, last_success), moments):
                if moment is not None:
                    family.add_metric([item_id], moment.timestamp())
        yield next_run
        yield last_run
        yield last_success
        yield held


class _Divergence(Collector):
    """Yields the declarations of the tasks on which live nodes disagree, from the last snapshot."""

    def __init__(self) -> None:
        self.declarations: list[Declaration] = []

    def collect(self) -> Iterator[Metric]:
        declared = GaugeMetricFamily(
            "scheduler_task_declaration",
            "1 for each live node declaring a task on which live nodes disagree: the spec (hash prefix) it "
            "holds, and in_force 1 when that spec is the one in force.",
            labels=["task", "node", "spec", "in_force"],
        )
        for d in self.declarations:
            declared.add_metric([d.item_id, d.node_id, d.spec_hash[:12], str(int(d.spec_hash == d.in_force))], 1)
        yield declared
        yield GaugeMetricFamily(
            "scheduler_tasks_diverged", "Tasks declared in files on which live nodes disagree.",
            value=len({d.item_id for d in self.declarations}),
        )


class Metrics(EngineListener):
    """The node's metrics: an engine listener plus the reconciler's reload results."""

    def __init__(self) -> None:
        # No `_created` series beside every counter and histogram: they double what is scraped and say
        # nothing here (a node's counters start with the node). Process-wide in the client library.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        self.runs = Counter(
            "scheduler_runs", "Runs finished on this node, by task and outcome.",
            ["task", "outcome"], registry=self.registry,
        )
        self.fenced = Counter(
            "scheduler_runs_fenced", "Runs whose result was not recorded: cancelled, removed or taken over meanwhile.",
            registry=self.registry,
        )
        self.duration = Histogram(
            "scheduler_run_duration_seconds", "Run durations on this node, by outcome.",
            ["outcome"], buckets=DURATION_BUCKETS, registry=self.registry,
        )
        self.claims = Counter("scheduler_claims", "Runs claimed by this node.", registry=self.registry)
        self.lease_losses = Counter(
            "scheduler_lease_losses", "Runs stopped because their lease was lost.", registry=self.registry
        )
        self.recoveries = Counter(
            "scheduler_recoveries", "Crashed runs of other nodes this node recovered.", registry=self.registry
        )
        self.loop_errors = Counter(
            "scheduler_loop_errors", "Unexpected errors in the engine's loops, which back off and go on, by loop.",
            ["loop"], registry=self.registry,
        )
        # Named as Prometheus names its own configuration reloads.
        self.reload_success = Gauge(
            "scheduler_config_last_reload_successful", "1 if the last reload of tasks.d rejected no file, else 0.",
            registry=self.registry,
        )
        self.reload_timestamp = Gauge(
            "scheduler_config_last_reload_success_timestamp_seconds",
            "When tasks.d was last reloaded without rejecting a file (Unix time).", registry=self.registry,
        )
        self.files_rejected = Gauge(
            "scheduler_files_rejected", "Task files rejected by the last reload.", registry=self.registry
        )
        self.stuck = Gauge(
            "scheduler_stuck_runs",
            "Stopped runs whose code has not ended (functions that ignore their cancel); each holds a run slot.",
            registry=self.registry,
        )
        self.held = Gauge(
            "scheduler_tasks_held",
            "Tasks that run nothing until the hold ends, by reason: disabled (enabled: false in their spec) or "
            "suspended (by an operator). A task may be both.",
            ["reason"], registry=self.registry,
        )
        self.unrunnable = Gauge(
            "scheduler_tasks_unrunnable",
            "Tasks waiting to run that no live node can run (no executor for their type, or their nodes are gone).",
            registry=self.registry,
        )
        # task -> outcome -> its series of ``runs``; outcome -> its of ``duration``. Kept here, since
        # ``labels()`` looks a series up under a lock, validating its labels: 7 us of every run's end.
        self._run_series: dict[str, dict[str, Any]] = {}
        self._duration_series: dict[str, Any] = {}
        self._task_times = _TaskTimes()
        self.registry.register(self._task_times)
        self._divergence = _Divergence()
        self.registry.register(self._divergence)

    # -- EngineListener --------------------------------------------------------

    def run_started(self, claim: Claim) -> None:
        self.claims.inc()

    def run_finished(self, claim: Claim, result: RunResult, applied: bool) -> None:
        outcome = result.outcome.value
        by_outcome = self._run_series.setdefault(claim.item_id, {})
        series = by_outcome.get(outcome)
        if series is None:
            series = by_outcome[outcome] = self.runs.labels(task=claim.item_id, outcome=outcome)
        series.inc()
        duration = self._duration_series.get(outcome)
        if duration is None:
            duration = self._duration_series[outcome] = self.duration.labels(outcome=outcome)
        duration.observe(max(0.0, (result.finished_at - (result.started_at or claim.started_at)).total_seconds()))
        if not applied:
            self.fenced.inc()

    def lease_lost(self, claim: Claim) -> None:
        self.lease_losses.inc()

    def recovered(self, task: Task) -> None:
        self.recoveries.inc()

    def stuck_changed(self, count: int) -> None:
        self.stuck.set(count)

    def loop_error(self, loop: str) -> None:
        self.loop_errors.labels(loop=loop).inc()

    # -- reconciler --------------------------------------------------------------

    def reload_finished(self, ok: bool, rejected_files: int, at: datetime) -> None:
        self.reload_success.set(1 if ok else 0)
        if ok:
            self.reload_timestamp.set(at.timestamp())
        self.files_rejected.set(rejected_files)

    # -- exposition --------------------------------------------------------------

    def set_task_times(self, tasks: Iterable[Task], total: int) -> None:
        """Replace the snapshot rendered by ``render``: per-task timestamps of ``tasks``, out of ``total`` tasks."""
        self._task_times.times = [
            (t.item_id, _held_reasons(t), None if t.held else t.next_scheduled_execution, t.last_execution_date,
             t.last_success_date)
            for t in tasks
        ]
        self._task_times.total = total

    def counted_tasks(self) -> set[str]:
        """The tasks that have run counts here."""
        return set(self._run_series)

    def forget_tasks(self, item_ids: Iterable[str]) -> None:
        """Remove the run counts of tasks that are gone."""
        for item_id in item_ids:
            for outcome in self._run_series.pop(item_id, {}):
                self.runs.remove(item_id, outcome)

    def set_divergence(self, declarations: Iterable[Declaration]) -> None:
        """Replace the snapshot of the live declarations of tasks on which live nodes disagree."""
        self._divergence.declarations = list(declarations)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _held_reasons(task: Task) -> tuple[str, ...]:
    """Why nothing runs ``task``: disabled (its spec), suspended (an operator); empty when nothing holds it."""
    return tuple(reason for reason, holds in (("disabled", not task.spec.enabled), ("suspended", task.suspended))
                 if holds)
