"""The engine: one asyncio loop per node that claims, runs, renews, finishes, recovers and purges.

It never busy-polls: it sleeps until the earliest due time of the tasks it could
claim (or the next look for expired leases), bounded by ``poll_interval`` so that
changes made by other nodes are seen, and ``wake()`` cuts the sleep short when
something changes locally (a reload, an API action, a finished run).

All exclusion comes from the store: the engine only ever acts on a ``Claim``
and every write it makes is fenced by it. Two coroutines run beside the main
loop's claims: the keep-alive (lease renewal every ``lease_duration / 3``,
heartbeat, ``concurrency: replace``) and the purge. Each of the three is
supervised: an unexpected error is logged with its traceback, counted
(``scheduler_loop_errors_total``), and the loop backs off and goes on;
``health()`` says when one of them has not completed a round for too long.

``run_until_idle()`` is the burst mode used by tests and one-shot callers: run
everything due now to completion, then return.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable, Mapping, Sequence

from . import __version__
from .errors import ExecutorError, StoreError, TaskNotFound
from .executors import Execution, Executor, Progress, RunContext, resolve_executor, runnable_types
from .listener import EngineListener
from .model import Claim, ExpiredLease, NodeInfo, Outcome, Retention, RunResult
from .policy import SHUTDOWN_REASON, after_run, replaced_run
from .schedule import fire_time, is_missed, next_slot
from .spec import thaw, utc_iso
from .store.base import Store

log = logging.getLogger(__name__)

# Backoff of a loop after an unexpected error: doubles from the loop's own interval up to this.
MAX_LOOP_BACKOFF = timedelta(seconds=30)
# A loop is unhealthy when it has not completed a round for this many of its intervals.
STALLED_ROUNDS = 3
# A stopped run's record is among its task's newest few (a retry may have started since).
RECENT_RUNS = 5


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

    @property
    def recovery_grace(self) -> timedelta:
        """How long this node must itself have seen a lease expired before it recovers it.

        A pause of the whole machine (a virtual machine snapshotted or migrated) stops the lease's owner
        and its watchdog with everyone else: at the resume every node finds the lease long expired at
        once. The grace, counted from this node's first sight of the expired lease, lets the owner's
        watchdog stop the command before a peer starts the next attempt. It delays every crash recovery
        by as much.
        """
        return self.lease_duration / 2


@dataclass
class ActiveRun:
    store: Store
    claim: Claim
    context: RunContext | None = None
    replaced_by: datetime | None = None  # concurrency: replace, the slot that took over
    task: asyncio.Task[None] | None = None
    started_at: datetime | None = None  # when the executor was called (a prefetched run waits for its due time)
    handed_back: bool = False  # shutdown gave it back: it must not start, and writes nothing more
    lost: bool = False  # a renewal found its task no longer RUNNING under its lease: it is being stopped
    ended: bool = False  # its execution is over: it is recording its end, and there is nothing left to stop
    lease_deadline: float = 0.0  # time.monotonic() when the lease runs out unless renewed (RunContext.lease_deadline)

    def lease_renewed(self, deadline: float) -> None:
        self.lease_deadline = deadline
        if self.context is not None:
            self.context.renew_lease(deadline)


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
        # By run id, not by task: a run still stopping and the next run of its task are two entries.
        self._active: dict[str, ActiveRun] = {}
        # Code of stopped runs that could not be killed and has not ended (RunContext.leave_running):
        # each holds a run slot until it ends.
        self._stuck: dict[asyncio.Future, str] = {}  # -> run id
        self._wake: asyncio.Event | None = None
        self._renew_now: asyncio.Event | None = None  # cuts the keep-alive's wait short
        self._claiming = False
        self._stopping = False
        self._give_up_grace: asyncio.Event | None = None  # set: hand running runs back without waiting
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._loop_ok: dict[str, float] = {}  # loop name -> event-loop time its last round completed
        self._started_at: datetime | None = None
        self._wake_at = 0.0  # loop time the main loop sleeps until
        self._next_recovery = 0.0  # loop time of the next look for expired leases and met dependencies
        # Per store, the expired leases this node has seen, with the store's time of the first sight:
        # each is recovered once it has been seen expired for ``recovery_grace``.
        self._expiry_seen: list[dict[ExpiredLease, datetime]] = [{} for _ in self.stores]
        self._waiting_dependents = 0  # WAITING tasks at the last look: a success here looks again at once
        # For health(): when the keep-alive last wrote the heartbeat (time.monotonic()), and each loop's
        # last store error.
        self._heartbeat_written_at: float | None = None
        self._loop_error: dict[str, str] = {}

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Start the main loop, the keep-alive and the purge as supervised background tasks."""
        self._wake = asyncio.Event()
        self._renew_now = asyncio.Event()
        self._give_up_grace = asyncio.Event()
        self._claiming = self.config.executor_node
        self._stopping = False
        self._started_at = self.stores[0].now()
        await self._heartbeat()
        poll = self.config.poll_interval.total_seconds()
        loops = {  # name: (one round, its interval, how it waits between rounds)
            "main": (self._main_round, poll, self._sleep_or_wake),
            "keepalive": (
                self._keepalive_round, self.config.lease_duration.total_seconds() / 3,
                lambda delay: self._wait_for(self._renew_now, delay),
            ),
            "purge": (self._purge_round, self.config.purge_interval.total_seconds(), asyncio.sleep),
        }
        now = asyncio.get_running_loop().time()
        for name, (round_, interval, pause) in loops.items():
            self._loop_ok[name] = now
            self._loops[name] = asyncio.create_task(
                self._supervise(name, round_, interval, pause), name=f"engine {name}"
            )

    async def stop(self) -> None:
        """Stop claiming, give running runs ``shutdown_grace``, then hand the rest back.

        Nothing is left RUNNING: the main loop finishes the claim it may be in
        the middle of (a claim is never dropped), runs claimed ahead that have
        not started go back as they were (``release_claims``), and runs still
        going after the grace period (or at once after ``give_up_grace()``) are
        stopped and handed back (``abandon_runs``: CRASHED, but using no attempt),
        so that a peer resumes them from their last checkpoint. Leases are renewed meanwhile.
        """
        if not self._loops:
            return
        self._claiming = False
        self._stopping = True
        self.wake()
        await asyncio.gather(self._loops.pop("main"), return_exceptions=True)
        purge = self._loops.pop("purge")
        purge.cancel()
        await asyncio.gather(purge, return_exceptions=True)
        await self._release([run for run in self._active.values() if run.started_at is None])
        running = [run.task for run in self._active.values() if run.task is not None]
        if running:
            log.info(
                "waiting up to %.0fs for %d running run(s) to finish", self.config.shutdown_grace.total_seconds(),
                len(running),
            )
            assert self._give_up_grace is not None
            all_done = asyncio.ensure_future(asyncio.wait(running))
            give_up = asyncio.ensure_future(self._give_up_grace.wait())
            await asyncio.wait(
                [all_done, give_up], timeout=self.config.shutdown_grace.total_seconds(),
                return_when=asyncio.FIRST_COMPLETED,
            )
            all_done.cancel()  # stops waiting; the runs themselves go on until handed back below
            give_up.cancel()
        await self._abandon(list(self._active.values()))
        keepalive = self._loops.pop("keepalive")
        keepalive.cancel()
        await asyncio.gather(keepalive, return_exceptions=True)

    def give_up_grace(self) -> None:
        """During ``stop()``: stop waiting for running runs and hand them back now."""
        if self._give_up_grace is not None:
            self._give_up_grace.set()

    async def _release(self, runs: list[ActiveRun]) -> None:
        """Give back runs that never started: their tasks are SCHEDULED again as before their claims."""
        self._stop_runs(runs)
        for store in self.stores:
            claims = [run.claim for run in runs if run.store is store]
            if claims:
                released = await store.release_claims(claims)
                log.info("released %d run(s) claimed ahead that had not started", len(released))

    async def _abandon(self, runs: list[ActiveRun]) -> None:
        """Stop ``runs`` (they write nothing more), wait until they have stopped (a command gets
        its kill grace, a function the grace of its executor), then hand them back as
        interrupted, for a peer to resume: never while they still run."""
        self._stop_runs(runs)
        stopping = [run.task for run in runs if run.task is not None and not run.task.done()]
        if stopping:
            log.warning("stopping %d run(s) to hand them back", len(stopping))
            await asyncio.gather(*stopping, return_exceptions=True)
        for store in self.stores:
            claims = [run.claim for run in runs if run.store is store]
            if claims:
                marked = await store.abandon_runs(claims, SHUTDOWN_REASON, self.config.retention)
                log.warning("handed back %d unfinished run(s) at shutdown", len(marked))

    @staticmethod
    def _stop_runs(runs: list[ActiveRun]) -> None:
        for run in runs:  # before any await: a run waiting for its due time must not start meanwhile
            run.handed_back = True
            if run.context is not None:
                run.context.cancel(Outcome.LEASE_LOST)

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

    def check_leases(self) -> None:
        """A task may have been cancelled or deleted here: renew leases now, so that a run whose task
        is no longer RUNNING stops at once rather than at the next renewal."""
        if self._renew_now is not None and self._active:
            self._renew_now.set()

    @property
    def running_count(self) -> int:
        return len(self._active)

    @property
    def stuck_count(self) -> int:
        """Stopped runs whose code has not ended yet; each holds one of ``max_concurrent_runs``."""
        return len(self._stuck)

    # -- health ---------------------------------------------------------------

    def health(self) -> list[str]:
        """What keeps this node from doing its job now, one sentence each; empty when nothing does.

        - A loop that died, or a main loop that has not completed a round for
          ``STALLED_ROUNDS`` poll intervals: nothing is claimed.
        - Every run slot is held by stuck code (``stuck_count``): nothing can start.
        - The heartbeat is the store write the keep-alive makes every
          ``lease_duration / 3``, after renewing the leases: none written for two of
          those intervals means the store refuses or stalls this node's writes (disk
          full, server unreachable), and so its claims, renewals and results too.
          One missed heartbeat is tolerated.
        """
        if self._stopping:
            return ["the node is stopping"]
        problems = []
        now = asyncio.get_running_loop().time()
        for name, task in self._loops.items():
            if task.done():
                problems.append(f"the engine's {name} loop has stopped")
        silent = now - self._loop_ok.get("main", now)
        if silent > STALLED_ROUNDS * self.config.poll_interval.total_seconds():
            problem = f"the engine's main loop has not completed a round for {silent:.0f}s"
            problems.append(_with_error(problem, self._loop_error.get("main")))
        interval = self.config.lease_duration / 3  # the keep-alive's period
        limit = 2 * interval
        if self._heartbeat_written_at is None:
            problems.append("the engine has not written its first heartbeat")
        elif time.monotonic() - self._heartbeat_written_at > limit.total_seconds():
            problem = (
                f"no heartbeat written to the store for more than {_seconds(limit)} "
                f"(one is due every {_seconds(interval)})"
            )
            problems.append(_with_error(problem, self._loop_error.get("keepalive")))
        if self._stuck and self._free_capacity() == 0 and not self._active:
            problems.append(
                f"all {self.config.max_concurrent_runs} run slots are held by stopped runs whose code has not "
                "ended (functions that ignore their cancel): nothing can start"
            )
        return problems

    # -- burst mode -----------------------------------------------------------

    async def run_until_idle(self, max_rounds: int = 10_000) -> int:
        """Recover, claim and run everything due now, until nothing is due; returns runs finished.

        No background task is needed: tests drive time with an injected clock and
        call this to make the node do all the work that time allows.
        """
        finished = 0
        for _ in range(max_rounds):
            await self._recover()
            await self._settle_dependencies()
            started = await self._claim_and_start(prefetch=False) if self.config.executor_node else []
            if not started and not self._active:
                return finished
            pending = [run.task for run in self._active.values() if run.task is not None]
            await asyncio.gather(*pending)
            finished += len(pending)
        raise RuntimeError(f"still busy after {max_rounds} rounds: a task is due again at once forever")

    # -- the loops --------------------------------------------------------------

    async def _supervise(
        self, name: str, round_: Callable[[], Awaitable[float]], interval: float,
        pause: Callable[[float], Awaitable[object]],
    ) -> None:
        """Run ``round_`` again and again; it returns how long to ``pause`` before the next one.

        An error never ends the loop: a store error is logged, anything else is
        logged with its traceback and counted, and the loop backs off (from its
        interval, doubling, up to MAX_LOOP_BACKOFF) and goes on.
        """
        loop = asyncio.get_running_loop()
        failures = 0
        # The main loop ends by itself at stop(): cancelled, it could drop a claim the store committed.
        while not (name == "main" and self._stopping):
            try:
                delay = await round_()
            except asyncio.CancelledError:
                raise
            except StoreError as exc:
                failures += 1
                delay = self._backoff(interval, failures)
                self._loop_error[name] = str(exc)
                log.error("%s loop: store unavailable, retrying in %.1fs: %s", name, delay, exc)
            except Exception as exc:
                failures += 1
                delay = self._backoff(interval, failures)
                self._loop_error[name] = f"{type(exc).__name__}: {exc}"
                log.exception("%s loop failed, retrying in %.1fs", name, delay)
                self.listener.loop_error(name)
            else:
                failures = 0
                self._loop_error.pop(name, None)
                self._loop_ok[name] = loop.time()
            await pause(delay)

    @staticmethod
    def _backoff(interval: float, failures: int) -> float:
        return min(max(interval, 0.05) * 2 ** (failures - 1), MAX_LOOP_BACKOFF.total_seconds())

    async def _sleep_or_wake(self, delay: float) -> None:
        if self._stopping:
            return
        self._wake_at = asyncio.get_running_loop().time() + delay
        assert self._wake is not None
        await self._wait_for(self._wake, delay)

    @staticmethod
    async def _wait_for(event: asyncio.Event | None, delay: float) -> None:
        """Sleep ``delay`` seconds, or until ``event`` is set.

        Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancel that lands as
        the event is set, and a loop cancelled at stop() would then run on for ever.
        """
        assert event is not None
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({waiter}, timeout=delay)
        finally:
            waiter.cancel()

    async def _main_round(self) -> float:
        """Recover expired leases (once per poll interval), claim and start what is due; the time to sleep."""
        assert self._wake is not None
        self._wake.clear()
        loop = asyncio.get_running_loop()
        # Expired leases and met dependencies are looked for once per poll interval, and when a lease
        # expires or a sighting's grace ends, not at every wake-up: at thousands of runs per second
        # those queries would dominate.
        if loop.time() >= self._next_recovery:
            look_again = min(await self._recover(), self.config.poll_interval.total_seconds())
            await self._settle_dependencies()
            self._next_recovery = loop.time() + look_again
        if self._claiming:
            await self._claim_and_start()
        return await self._sleep_time()

    async def _sleep_time(self) -> float:
        """Seconds until something could be claimed or recovered here, never more than ``poll_interval``."""
        to_recovery = self._next_recovery - asyncio.get_running_loop().time()
        delay = max(0.0, min(self.config.poll_interval.total_seconds(), to_recovery))
        if self._free_capacity() == 0 or self._stopping:
            return delay  # a finishing run wakes the loop
        # While tasks keep falling due (slots spread over the second), claims wait at least half the
        # prefetch horizon for one another: each then takes what fell due meanwhile, not the one or two
        # tasks of the last millisecond, and every task is still claimed at least that long before it is due.
        gap = self.config.prefetch.total_seconds() / 2
        for store in self.stores:
            due = await store.next_due_time(self.config.node_id, task_types=self.task_types)
            if due is not None:
                ahead = (due - store.now() - self.config.prefetch).total_seconds()
                # Due within the horizon already (a peer took the claim's place, a run came due again): now.
                delay = min(delay, 0.0 if ahead <= 0 else max(ahead, gap))
        return delay

    async def _keepalive_round(self) -> float:
        assert self._renew_now is not None
        self._renew_now.clear()
        await self._renew()
        await self._heartbeat()
        return self.config.lease_duration.total_seconds() / 3

    async def _purge_round(self) -> float:
        for store in self.stores:  # the store logs what it purged
            await store.purge(keep_history=self.config.keep_history, retention=self.config.retention)
        return self.config.purge_interval.total_seconds()

    # -- steps ----------------------------------------------------------------

    def _free_capacity(self) -> int:
        return max(0, self.config.max_concurrent_runs - len(self._active) - len(self._stuck))

    def _left_running(self, run_id: str, work: asyncio.Future) -> None:
        """A stopped run's code goes on (``RunContext.leave_running``): it holds a run slot until it ends."""
        self._stuck[work] = run_id
        self.listener.stuck_changed(len(self._stuck))
        work.add_done_callback(self._stuck_ended)

    def _stuck_ended(self, work: asyncio.Future) -> None:
        run_id = self._stuck.pop(work)
        self.listener.stuck_changed(len(self._stuck))
        error = None if work.cancelled() else work.exception()  # retrieved: never "never retrieved"
        if error is None:
            log.info("run %s: its code ended after the run was stopped", run_id)
        else:
            log.warning("run %s: its code raised %r after the run was stopped", run_id, error)
        self.wake()  # the slot it held is free again

    async def _recover(self) -> float:
        """Recover the leases this node has seen expired for ``recovery_grace``; the seconds until
        another lease expires or a sighting ripens (infinite if none)."""
        if not self.config.executor_node:
            return math.inf
        look_again = math.inf
        for index, store in enumerate(self.stores):
            expiries = await store.lease_expiries()
            now = store.now()
            ripe, next_look = [], expiries.next_expiry
            for lease, first_seen in self._sight_expired(index, expiries.expired, now).items():
                ripe_at = first_seen + self.config.recovery_grace
                if ripe_at <= now:
                    ripe.append(lease)
                elif next_look is None or ripe_at < next_look:
                    next_look = ripe_at
            if next_look is not None:
                look_again = min(look_again, (next_look - now).total_seconds())
            if not ripe:
                continue
            for task in await store.recover_expired(self.config.node_id, self.config.retention, only=ripe):
                log.warning(
                    "recovered task %s from crashed node %s (now %s)",
                    task.item_id, task.status_details.get("crashedNode"), task.status.value,
                    extra={"task": task.item_id},
                )
                self.listener.recovered(task)
        return max(0.0, look_again)

    def _sight_expired(self, index: int, expired: Sequence[ExpiredLease], now: datetime) -> dict[ExpiredLease, datetime]:
        """Note the expired leases of store ``index`` seen now; each with the time it was first seen."""
        earlier = self._expiry_seen[index]
        for lease in expired:
            if lease not in earlier:
                log.info(
                    "the lease of task %s expired at %s: recovering it in %.1fs unless it is renewed",
                    lease.item_id, utc_iso(lease.until), self.config.recovery_grace.total_seconds(),
                    extra={"task": lease.item_id},
                )
        sightings = self._expiry_seen[index] = {lease: earlier.get(lease, now) for lease in expired}
        return sightings

    async def _settle_dependencies(self) -> None:
        if not self.config.executor_node:
            return
        waiting = 0
        for store in self.stores:
            settled = await store.settle_dependencies()
            waiting += settled.waiting
            for item_id in settled.ready:
                log.info("task %s: its dependencies are met", item_id, extra={"task": item_id})
        self._waiting_dependents = waiting

    def _dependency_may_be_met(self) -> None:
        """A run succeeded here: a WAITING task may wait for it, and should not wait for the next poll."""
        if self._waiting_dependents:
            self._next_recovery = 0.0
            self.wake()

    async def _claim_and_start(self, prefetch: bool = True) -> list[ActiveRun]:
        horizon = self.config.prefetch if prefetch else timedelta(0)
        started: list[ActiveRun] = []
        for store in self.stores:
            free = self._free_capacity()
            if free == 0:
                break
            deadline = self._lease_deadline()
            claims = await store.claim_due(
                self.config.node_id, free, self.config.lease_duration, horizon=horizon, task_types=self.task_types
            )
            for claim in claims:
                run = ActiveRun(store=store, claim=claim, lease_deadline=deadline)
                self._active[claim.run_id] = run
                run.task = asyncio.create_task(self._run(run), name=f"run {claim.run_id}")
                started.append(run)
        return started

    async def _renew(self) -> None:
        for store in self.stores:
            runs = [run for run in self._active.values() if run.store is store]
            if not runs:
                continue
            deadline = self._lease_deadline()
            lost = await store.renew_leases(
                self.config.node_id, [run.claim for run in runs], self.config.lease_duration
            )
            now = store.now()
            renewed = []
            for run in runs:
                if self._active.get(run.claim.run_id) is not run:
                    continue  # it ended while the renewal was under way: nothing of it was lost
                if run.claim.run_id not in lost:
                    run.lease_renewed(deadline)
                    renewed.append(run)
                elif not run.lost and not run.ended:
                    # A run recording its end is not lost: its finish may have landed before this renewal
                    # and come back after it (MongoDB's calls share a thread pool); if the lease really went,
                    # the finish is fenced out and says so.
                    run.lost = True
                    item_id = run.claim.item_id
                    log.warning("lost the lease of %s: stopping its run", item_id, extra={"task": item_id})
                    self.listener.lease_lost(run.claim)
                    if run.context is not None:
                        run.context.cancel(Outcome.LEASE_LOST)
            # Once every deadline is pushed back: the check may read the store, which may fail.
            for run in renewed:
                if self._active.get(run.claim.run_id) is run:
                    await self._replace_if_overdue(run, now)

    def _lease_deadline(self) -> float:
        """Taken just before a claim or renewal is asked for: never later than the expiry the store writes."""
        return time.monotonic() + self.config.lease_duration.total_seconds()

    async def _replace_if_overdue(self, run: ActiveRun, now: datetime) -> None:
        """``concurrency: replace``: stop a run that overlaps its next slot so that slot can start.

        Not while the task is held (suspended, or disabled by its spec since the claim): the next
        slot would not start, and a run in progress when a task is held finishes normally."""
        claim = run.claim
        spec = claim.task.spec
        if spec.concurrency != "replace" or spec.schedule.one_shot or not spec.schedule.fixed_rate:
            return
        following = next_slot(spec.schedule, claim.scheduled_for, finished_at=claim.started_at)
        if following is None or now < fire_time(following, spec.schedule.jitter, claim.item_id):
            return
        try:  # read only for a run that overlaps its next slot: rare, and once per renewal at most
            if (await run.store.get_task(claim.item_id)).held:
                return
        except TaskNotFound:
            return  # removed: the renewal reports the run lost
        except StoreError as exc:  # the run goes on; the next renewal looks again
            log.warning("cannot tell whether %s is held: %s", claim.item_id, exc, extra={"task": claim.item_id})
            return
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
                stuck=len(self._stuck),
                started_at=self._started_at,
                version=__version__,
                listen=self.config.listen,
                task_types=tuple(sorted(self.task_types)),
            )
        )
        self._heartbeat_written_at = time.monotonic()

    # -- one run ----------------------------------------------------------------

    async def _run(self, run: ActiveRun) -> None:
        claim = run.claim
        next_due = None
        try:
            execution = await self._execute(run)
            run.ended = True
            next_due = await self._finish(run, execution)
        except StoreError as exc:
            # The lease will expire and a peer (or this node) recovers the task.
            log.error("could not record the end of %s: %s", claim.run_id, exc, extra={"task": claim.item_id})
        finally:
            was_full = self._free_capacity() == 0
            del self._active[claim.run_id]
            # The run's context holds its progress sink, which holds the run: without this cut, every
            # run's objects (about 25) would wait for a full garbage collection, and at a thousand runs
            # a second those collections paused the loop for 50-80 ms. Code left running keeps its own
            # reference to the context.
            run.context = None
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
            and not spec.waits_for  # a slot that waited for its dependencies is late on purpose
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
            lease_deadline=run.lease_deadline,
            on_left_running=lambda work: self._left_running(claim.run_id, work),
            trigger=await self._trigger_of(run),
        )
        try:
            executor = resolve_executor(spec, self.executors)
        except ExecutorError as exc:
            return Execution(outcome=Outcome.FAILURE, error=exc.message)
        early = (claim.started_at - store.now()).total_seconds()
        if early > 0:  # claimed ahead: wait for the due time, or for a cancel, takeover or hand-back
            await context.sleep_unless_stopped(early)
        if run.handed_back or context.cancel_reason is not None:  # cancelled, taken over or handed back
            return Execution(outcome=context.cancel_reason or Outcome.LEASE_LOST, error="stopped before it started")
        if context.lease_lapsed:  # the node stalled since the claim (frozen, starved): a peer may run the task now
            context.cancel(Outcome.LEASE_LOST)
            return Execution(outcome=Outcome.LEASE_LOST, error="the lease ran out before the run started")
        run.started_at = store.now()
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
                return None
            if run.started_at is None and await store.release_claims([claim]):
                # Nothing ran (its lease ran out before the start: a node frozen or starved since the
                # claim) and the task is still this claim's: it goes back as it was, its attempt unused.
                log.warning("run %s did not start, its lease ran out: handed back", claim.run_id, extra=extra)
                return claim.scheduled_for
            log.warning("run %s stopped: task cancelled, removed or taken over", claim.run_id, extra=extra)
            await self._release_lease(run)
            if run.started_at is not None:
                self.listener.run_finished(claim, await self._stopped_result(run, execution), applied=False)
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
            started_at=run.started_at,
        )
        applied = await store.finish_run(claim, result, transition)
        self.listener.run_finished(claim, result, applied)
        if not applied:
            log.warning("run %s ended after losing its lease: its result was not recorded", claim.run_id, extra=extra)
            await self._release_lease(run)
            return None
        if execution.outcome in (Outcome.SUCCESS, Outcome.SKIPPED):
            log.info("run %s %s", claim.run_id, execution.outcome.value, extra=extra)
            if execution.outcome is Outcome.SUCCESS:
                self._dependency_may_be_met()
        else:
            log.warning(
                "run %s %s: %s (next: %s)", claim.run_id, execution.outcome.value, execution.error,
                transition.status.value, extra=extra,
            )
        return transition.next_scheduled_execution

    async def _trigger_of(self, run: ActiveRun) -> dict[str, Any] | None:
        """A chain's run follows one success of its parent: that run and the parent's parameters."""
        claim, store = run.claim, run.store
        parent = claim.task.spec.schedule.after_success_of
        if parent is None:
            return None
        finished = claim.task.dependencies_seen.get(parent)
        records = await store.list_runs(parent, limit=RECENT_RUNS)
        success = next(
            (r for r in records.items if r.outcome is Outcome.SUCCESS and r.finished_at == finished), None
        )
        try:
            parameters = thaw((await store.get_task(parent)).spec.parameters)
        except TaskNotFound:
            parameters = {}
        return {
            "taskId": parent, "runId": None if success is None else success.run_id,
            "finishedAt": None if finished is None else utc_iso(finished), "parameters": parameters,
        }

    async def _stopped_result(self, run: ActiveRun, execution: Execution) -> RunResult:
        """A run stopped because its task left RUNNING under it ends as its record says: cancelled (an
        operator's cancel, a removal) or crashed (a peer took it over); lease_lost if it says nothing yet."""
        records = await run.store.list_runs(run.claim.item_id, limit=RECENT_RUNS)
        outcome = next(
            (r.outcome for r in records.items if r.run_id == run.claim.run_id and r.outcome is not None),
            Outcome.LEASE_LOST,
        )
        return RunResult(outcome, run.store.now(), execution.exit_code, execution.output, execution.error,
                         started_at=run.started_at)

    async def _release_lease(self, run: ActiveRun) -> None:
        """The run has stopped after its task left RUNNING (a cancel): free the lease it still holds,
        so that a retry or run-now starts now rather than when the lease expires."""
        if await run.store.release_lease(run.claim):
            self.wake()  # a retry or run-now may already be waiting for it


def _seconds(duration: timedelta) -> str:
    return f"{round(duration.total_seconds(), 3):g}s"


def _with_error(problem: str, error: str | None) -> str:
    return problem if error is None else f"{problem}: {error}"
