"""The engine: one asyncio loop per node that claims, runs, renews, finishes, recovers and purges.

It never busy-polls: it sleeps until the earliest due time of the tasks it could
claim (or the earliest lease to recover), bounded by ``poll_interval`` so that
changes made by other nodes are seen, and ``wake()`` cuts the sleep short when
something changes locally (a reload, an API action, a finished run).

All exclusion comes from the store: the engine only ever acts on a ``Claim``
and every write it makes is fenced by it. Two coroutines run beside the main
loop's claims: the keep-alive (lease renewal every ``lease_duration / 3``,
heartbeat, ``concurrency: replace``) and the purge.

``run_until_idle()`` is the burst mode used by tests and one-shot callers: run
everything due now to completion, then return.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Mapping, Sequence

from . import __version__
from .errors import ExecutorError, StoreError
from .executors import Execution, Executor, Progress, RunContext, resolve_executor, runnable_types
from .listener import EngineListener
from .model import Claim, NodeInfo, Outcome, Retention, RunResult
from .policy import after_run, replaced_run
from .schedule import fire_time, is_missed, next_slot
from .store.base import Store

log = logging.getLogger(__name__)

SHUTDOWN_REASON = "Interrupted by scheduler shutdown"


@dataclass(frozen=True)
class EngineConfig:
    node_id: str = field(default_factory=socket.gethostname)
    executor_node: bool = True
    lease_duration: timedelta = timedelta(seconds=30)
    poll_interval: timedelta = timedelta(seconds=1)
    max_concurrent_runs: int = 64
    # Claim tasks due within this horizon in one batch and start each at its due
    # time: one claim transaction serves many runs, and runs start on time.
    prefetch: timedelta = timedelta(milliseconds=100)
    shutdown_grace: timedelta = timedelta(seconds=10)
    purge_interval: timedelta = timedelta(minutes=1)
    retention: Retention = Retention()
    keep_history: int | None = None
    listen: str = ""


@dataclass
class ActiveRun:
    store: Store
    claim: Claim
    context: RunContext | None = None
    replaced_by: datetime | None = None  # concurrency: replace, the slot that took over
    task: asyncio.Task[None] | None = None
    started: bool = False  # the executor was called (a prefetched run waits for its due time first)
    handed_back: bool = False  # shutdown gave it back before it started: it must not start


class Engine:
    """Runs the due tasks of ``stores`` (the shared store, then the node's in-memory one)."""

    def __init__(
        self,
        config: EngineConfig,
        stores: Sequence[Store],
        executors: Mapping[str, Executor] | None = None,
        listener: EngineListener | None = None,
    ) -> None:
        self.config = config
        self.stores = list(stores)
        self.executors = dict(executors or {})
        self.listener = listener or EngineListener()
        self._active: dict[tuple[Store, str], ActiveRun] = {}  # by (store, item id)
        self._wake: asyncio.Event | None = None
        self._claiming = False
        self._stopping = False
        self._background: list[asyncio.Task[None]] = []
        self._started_at: datetime | None = None
        self._wake_at = 0.0  # loop time the main loop sleeps until

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Start the loop, the keep-alive and the purge as background tasks."""
        self._wake = asyncio.Event()
        self._claiming = self.config.executor_node
        self._stopping = False
        self._started_at = self.stores[0].now()
        await self._heartbeat()
        for coroutine in (self._main_loop(), self._keepalive_loop(), self._purge_loop()):
            self._background.append(asyncio.create_task(coroutine))

    async def stop(self) -> None:
        """Stop claiming, give running tasks ``shutdown_grace``, then hand the rest back.

        Runs still going after the grace period are stopped and marked CRASHED
        with "Interrupted by scheduler shutdown", so that a peer resumes them at
        once from their last checkpoint.
        """
        self._claiming = False
        self._stopping = True
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()
        # Runs claimed ahead that have not started go back at once; the others get the grace period.
        await self._hand_back([run for run in self._active.values() if not run.started])
        runs = [run.task for run in self._active.values() if run.task is not None]
        if runs:
            await asyncio.wait(runs, timeout=self.config.shutdown_grace.total_seconds())
        leftovers = list(self._active.values())
        await self._hand_back(leftovers)
        remaining = [run.task for run in leftovers if run.task is not None]
        if remaining:
            await asyncio.gather(*remaining, return_exceptions=True)

    async def _hand_back(self, runs: list[ActiveRun]) -> None:
        """Stop ``runs`` (they write nothing more), then mark them CRASHED for a peer to resume."""
        for run in runs:  # before any await: a run waiting for its due time must not start meanwhile
            run.handed_back = True
            if run.context is not None:
                run.context.cancel(Outcome.LEASE_LOST)
        for store in self.stores:
            claims = [run.claim for run in runs if run.store is store]
            if claims:
                marked = await store.abandon_runs(claims, SHUTDOWN_REASON)
                log.warning("handed back %d unfinished run(s) at shutdown", len(marked))

    def register_executor(self, task_type: str, executor: Executor) -> None:
        """Run tasks of ``task_type`` (without a ``run:`` section) with ``executor``.

        From now on this node claims them (and only now: a node claims only tasks
        it can run). The heartbeat tells the other nodes at its next beat, or at
        once through ``publish_heartbeat``."""
        self.executors[task_type] = executor
        self.wake()

    @property
    def task_types(self) -> frozenset[str]:
        """The types of tasks without a ``run:`` section this node can run, and so claims."""
        return runnable_types(self.executors)

    async def publish_heartbeat(self) -> None:
        """Write the heartbeat now, e.g. with the task types just registered."""
        await self._heartbeat()

    def wake(self) -> None:
        """Something changed locally: look for due work now instead of at the next poll."""
        if self._wake is not None:
            self._wake.set()

    @property
    def running_count(self) -> int:
        return len(self._active)

    # -- burst mode -----------------------------------------------------------

    async def run_until_idle(self, max_rounds: int = 10_000) -> int:
        """Recover, claim and run everything due now, until nothing is due; returns runs finished.

        No background task is needed: tests drive time with an injected clock and
        call this to make the node do all the work that time allows.
        """
        finished = 0
        for _ in range(max_rounds):
            await self._recover()
            started = await self._claim_and_start(prefetch=False) if self.config.executor_node else []
            if not started and not self._active:
                return finished
            pending = [run.task for run in self._active.values() if run.task is not None]
            await asyncio.gather(*pending)
            finished += len(pending)
        raise RuntimeError(f"still busy after {max_rounds} rounds: a task is due again at once forever")

    # -- the loops --------------------------------------------------------------

    async def _main_loop(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        poll = self.config.poll_interval.total_seconds()
        next_recovery = loop.time()
        # Not ``while True``: on Python 3.11, ``wait_for`` below swallows a cancel that
        # lands as the wake-up completes, and stop() would wait for this loop forever.
        while not self._stopping:
            self._wake.clear()
            try:
                # Expired leases are looked for once per poll interval, not at every
                # wake-up: at thousands of runs per second that query would dominate.
                if loop.time() >= next_recovery:
                    await self._recover()
                    next_recovery = loop.time() + poll
                if self._claiming:
                    await self._claim_and_start()
                delay = await self._sleep_time()
            except StoreError as exc:
                log.error("store unavailable, retrying in %.1fs: %s", poll, exc)
                delay = poll
            self._wake_at = loop.time() + delay
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass

    async def _sleep_time(self) -> float:
        """Seconds until something could be claimed here, never more than ``poll_interval``."""
        delay = self.config.poll_interval.total_seconds()
        if self._free_capacity() == 0:
            return delay  # a finishing run wakes the loop
        for store in self.stores:
            due = await store.next_due_time(self.config.node_id, task_types=self.task_types)
            if due is not None:
                ahead = due - store.now() - self.config.prefetch
                delay = min(delay, max(0.0, ahead.total_seconds()))
        return delay

    async def _keepalive_loop(self) -> None:
        interval = self.config.lease_duration.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self._renew()
                await self._heartbeat()
            except StoreError as exc:
                log.error("could not renew leases: %s", exc)

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.purge_interval.total_seconds())
            for store in self.stores:
                try:  # the store logs what it purged
                    await store.purge(keep_history=self.config.keep_history, retention=self.config.retention)
                except StoreError as exc:
                    log.error("purge failed: %s", exc)

    # -- steps ----------------------------------------------------------------

    def _free_capacity(self) -> int:
        return max(0, self.config.max_concurrent_runs - len(self._active))

    async def _recover(self) -> None:
        if not self.config.executor_node:
            return
        for store in self.stores:
            for task in await store.recover_expired(self.config.node_id):
                log.warning(
                    "recovered task %s from crashed node %s",
                    task.item_id, task.status_details.get("crashedNode"), extra={"task": task.item_id},
                )
                self.listener.recovered(task)

    async def _claim_and_start(self, prefetch: bool = True) -> list[ActiveRun]:
        horizon = self.config.prefetch if prefetch else timedelta(0)
        started: list[ActiveRun] = []
        for store in self.stores:
            free = self._free_capacity()
            if free == 0:
                break
            claims = await store.claim_due(
                self.config.node_id, free, self.config.lease_duration, horizon=horizon, task_types=self.task_types
            )
            for claim in claims:
                run = ActiveRun(store=store, claim=claim)
                self._active[(store, claim.item_id)] = run
                run.task = asyncio.create_task(self._run(run), name=f"run {claim.run_id}")
                started.append(run)
        return started

    async def _renew(self) -> None:
        for store in self.stores:
            runs = {item_id: run for (held_in, item_id), run in self._active.items() if held_in is store}
            if not runs:
                continue
            lost = await store.renew_leases(
                self.config.node_id, [run.claim for run in runs.values()], self.config.lease_duration
            )
            for item_id in lost:
                run = runs[item_id]
                log.warning("lost the lease of %s: stopping its run", item_id, extra={"task": item_id})
                self.listener.lease_lost(run.claim)
                if run.context is not None:
                    run.context.cancel(Outcome.LEASE_LOST)
            now = store.now()
            for item_id, run in runs.items():
                if item_id not in lost:
                    self._replace_if_overdue(run, now)

    def _replace_if_overdue(self, run: ActiveRun, now: datetime) -> None:
        """``concurrency: replace``: stop a run that overlaps its next slot so that slot can start."""
        claim = run.claim
        spec = claim.task.spec
        if spec.concurrency != "replace" or spec.schedule.one_shot or not spec.schedule.fixed_rate:
            return
        following = next_slot(spec.schedule, claim.scheduled_for, finished_at=claim.started_at)
        if following is not None and now >= fire_time(following, spec.schedule.jitter, claim.item_id):
            run.replaced_by = following
            if run.context is not None:
                run.context.cancel(Outcome.CANCELLED)

    async def _heartbeat(self) -> None:
        await self.stores[0].heartbeat(
            NodeInfo(
                node_id=self.config.node_id,
                executor=self.config.executor_node,
                heartbeat=self.stores[0].now(),
                running=len(self._active),
                started_at=self._started_at,
                version=__version__,
                listen=self.config.listen,
                task_types=tuple(sorted(self.task_types)),
            )
        )

    # -- one run ----------------------------------------------------------------

    async def _run(self, run: ActiveRun) -> None:
        claim = run.claim
        next_due = None
        try:
            execution = await self._execute(run)
            next_due = await self._finish(run, execution)
        except StoreError as exc:
            # The lease will expire and a peer (or this node) recovers the task.
            log.error("could not record the end of %s: %s", claim.run_id, exc, extra={"task": claim.item_id})
        finally:
            was_full = self._free_capacity() == 0
            del self._active[(run.store, claim.item_id)]
            # Wake the loop only when this changes its plan: capacity came back, or
            # the task is due again before the loop meant to look (a retry, a run now).
            if was_full or (next_due is not None and self._due_before_wake(run.store, next_due)):
                self.wake()

    def _due_before_wake(self, store: Store, due: datetime) -> bool:
        seconds = (due - store.now()).total_seconds()
        return asyncio.get_running_loop().time() + seconds < self._wake_at

    async def _execute(self, run: ActiveRun) -> Execution:
        claim, store = run.claim, run.store
        spec = claim.task.spec
        if (
            spec.schedule.missed_runs == "skip"
            and claim.attempt == 1
            and is_missed(spec.schedule, claim.scheduled_for, claim.started_at)
        ):
            log.info("skipping missed slot %s of %s", claim.scheduled_for, claim.item_id, extra={"task": claim.item_id})
            return Execution(outcome=Outcome.SKIPPED)

        async def save(progress: Progress) -> None:
            stored = await store.save_progress(
                claim, checkpoint=progress.checkpoint, step=progress.step, details=progress.details
            )
            if not stored and run.context is not None:
                run.context.cancel(Outcome.LEASE_LOST)

        # Everything a run needs is prepared before its due time, so that a run
        # claimed ahead (prefetch) starts on time even when many are due at once.
        context = run.context = RunContext(
            task_id=claim.item_id,
            run_id=claim.run_id,
            node_id=self.config.node_id,
            fence=claim.fence,
            scheduled_for=claim.scheduled_for,
            attempt=claim.attempt,
            spec=spec,
            checkpoint_data=claim.task.checkpoint_data,
            progress_sink=save,
            loop=asyncio.get_running_loop(),
        )
        try:
            executor = resolve_executor(spec, self.executors)
        except ExecutorError as exc:
            return Execution(outcome=Outcome.FAILURE, error=exc.message)
        early = (claim.started_at - store.now()).total_seconds()
        if early > 0:  # claimed ahead: wait for the due time, or for a cancel, takeover or hand-back
            try:
                await asyncio.wait_for(context.wait_cancelled(), timeout=early)
            except TimeoutError:
                pass
        if run.handed_back or context.cancel_reason is not None:  # cancelled, taken over or handed back
            return Execution(outcome=context.cancel_reason or Outcome.LEASE_LOST, error="stopped before it started")
        run.started = True
        log.info("run %s started", claim.run_id, extra={"task": claim.item_id, "run": claim.run_id})
        self.listener.run_started(claim)
        try:
            execution = await executor.execute(context)
        except Exception as exc:  # an executor bug must not leave the task RUNNING forever
            log.exception("executor of %s raised", claim.item_id, extra={"task": claim.item_id})
            execution = Execution(outcome=Outcome.FAILURE, error=f"executor error: {type(exc).__name__}: {exc}")
        await context.drain()
        reason = context.cancel_reason
        if reason is not None and execution.outcome is not reason:
            # Asked to stop (cancel, takeover, replace, timeout): whatever the code
            # returned afterwards, the run did not complete as a normal run.
            execution = dataclasses.replace(execution, outcome=reason, error=execution.error or f"stopped: {reason.value}")
        return execution

    async def _finish(self, run: ActiveRun, execution: Execution) -> datetime | None:
        """Record the run's end; returns when the task is due next, if it was recorded."""
        claim, store = run.claim, run.store
        extra = {"task": claim.item_id, "run": claim.run_id}
        if execution.outcome is Outcome.LEASE_LOST:
            if run.handed_back:
                log.info("run %s handed back at shutdown", claim.run_id, extra=extra)
            else:
                log.warning("run %s stopped: task cancelled, removed or taken over", claim.run_id, extra=extra)
            return None
        now = store.now()
        retention = self.config.retention
        if execution.outcome is Outcome.CANCELLED and run.replaced_by is not None:
            transition = replaced_run(claim, run.replaced_by, now, retention)
            execution = dataclasses.replace(execution, error=transition.last_error)
        else:
            transition = after_run(claim, execution.outcome, execution.error, now, retention)
        result = RunResult(
            outcome=execution.outcome,
            finished_at=now,
            exit_code=execution.exit_code,
            output=execution.output,
            error=execution.error,
        )
        applied = await store.finish_run(claim, result, transition)
        self.listener.run_finished(claim, result, applied)
        if not applied:
            log.warning("run %s ended after losing its lease: its result was not recorded", claim.run_id, extra=extra)
            return None
        if execution.outcome in (Outcome.SUCCESS, Outcome.SKIPPED):
            log.info("run %s %s", claim.run_id, execution.outcome.value, extra=extra)
        else:
            log.warning(
                "run %s %s: %s (next: %s)", claim.run_id, execution.outcome.value, execution.error,
                transition.status.value, extra=extra,
            )
        return transition.next_scheduled_execution
