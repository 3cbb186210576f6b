"""What every executor shares: the run context, progress reports, the execution result.

An executor turns a ``RunContext`` into an ``Execution``. The engine builds the
context from a ``Claim``, passes progress reports (checkpoints, steps) on to the
store, and stamps times on the result. Executors stop a run in two cases, both
seen through the context: the engine cancels it (cancel, lease lost) or the
spec's ``run.timeout`` passes, which the executor itself turns into
``ctx.cancel(Outcome.TIMEOUT)`` so that task code sees one cancellation signal.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable, Mapping, Protocol

from ..model import Outcome
from ..spec import TaskSpec

logger = logging.getLogger(__name__)

OUTPUT_LIMIT = 8 * 1024  # bytes of output tail kept for the run record
STOP_REASONS = frozenset({Outcome.CANCELLED, Outcome.LEASE_LOST, Outcome.TIMEOUT})


@dataclass(frozen=True)
class Progress:
    """One progress report from a run: a checkpoint, a step, or both."""

    checkpoint: Mapping | None = None
    step: str | None = None
    details: Mapping | None = None


@dataclass(frozen=True)
class Execution:
    """What an executor returns; the engine stamps times and builds the ``RunResult``."""

    outcome: Outcome
    exit_code: int | None = None
    output: str = ""  # tail, at most OUTPUT_LIMIT bytes of text
    error: str | None = None  # one clear line for operators


class Executor(Protocol):
    async def execute(self, ctx: RunContext) -> Execution: ...


ProgressSink = Callable[[Progress], Awaitable[None]]


class CancelSignal:
    """A read-only view of a ``threading.Event``: task code may watch it, only the engine sets it."""

    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def __bool__(self) -> bool:
        return self._event.is_set()


def _json_copy(data: Any, what: str) -> Any:
    """A deep copy holding only JSON data: what the store can keep, detached from the caller's object."""
    try:
        return json.loads(json.dumps(data))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON data: {exc}") from None


def _open_gate(gate: asyncio.Future[None]) -> None:
    if not gate.done():  # a gate whose waiter was cancelled is done already
        gate.set_result(None)


class RunContext:
    """What a run sees: given to python callables (one argument) and registered executors.

    ``checkpoint`` and ``update_step`` may be called from the loop thread or any
    other thread. Reports reach ``progress_sink`` on the loop, one at a time, in
    the order they were made; a failing sink is logged and never stops the run.
    """

    def __init__(
        self,
        *,
        task_id: str,
        run_id: str,
        node_id: str,
        fence: int,
        scheduled_for: datetime,
        attempt: int,
        spec: TaskSpec,
        checkpoint_data: Mapping[str, Any] | None,
        progress_sink: ProgressSink,
        loop: asyncio.AbstractEventLoop,
        lease_deadline: float | None = None,
        on_left_running: Callable[[asyncio.Future], None] | None = None,
        trigger: Mapping[str, Any] | None = None,
    ) -> None:
        self._task_id = task_id
        self._run_id = run_id
        self._node_id = node_id
        self._fence = fence
        self._scheduled_for = scheduled_for
        self._attempt = attempt
        self._spec = spec
        self._checkpoint_data = None if checkpoint_data is None else dict(checkpoint_data)
        self._sink = progress_sink
        self._loop = loop
        # Made when task code first looks (``cancelled``): most runs never do, and a threading.Event
        # costs a lock and a condition, a few microseconds before every run starts.
        self._cancel_event: threading.Event | None = None
        self._cancelled: CancelSignal | None = None
        self._stop_gates: list[asyncio.Future[None]] = []  # sleep_unless_stopped's, opened by a stop
        self.cancel_reason: Outcome | None = None
        # Progress bookkeeping. Reports are numbered under the lock and queued on
        # the loop in that order, so "delivered >= n" means reports 1..n reached the sink.
        self._lock = threading.Lock()
        self._reported = 0
        self._delivered = 0
        self._pending: collections.deque[Progress] = collections.deque()
        self._pump: asyncio.Task | None = None
        self._drain_waiters: list[tuple[int, asyncio.Future]] = []
        self._lease_deadline = lease_deadline
        self._lease_watchers: list[Callable[[float], None]] = []
        self._on_left_running = on_left_running
        self._trigger = trigger

    # -- what task code reads ------------------------------------------------

    @property
    def task_id(self) -> str:
        return self._task_id

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def fence(self) -> int:
        return self._fence

    @property
    def scheduled_for(self) -> datetime:
        return self._scheduled_for

    @property
    def attempt(self) -> int:
        return self._attempt

    @property
    def spec(self) -> TaskSpec:
        return self._spec

    @property
    def task_type(self) -> str:
        return self._spec.type

    @property
    def parameters(self) -> Mapping[str, Any]:
        return self._spec.parameters

    @property
    def trigger(self) -> Mapping[str, Any] | None:
        """A chain's run (``schedule.afterSuccessOf``): the success it follows, ``taskId``, ``runId``,
        ``finishedAt`` and that task's ``parameters``; None for any other run."""
        return self._trigger

    @property
    def checkpoint_data(self) -> dict[str, Any] | None:
        """The last checkpoint: the stored one at start, then the last one this run saved."""
        return self._checkpoint_data

    @property
    def cancelled(self) -> CancelSignal:
        """Set when the run must stop (cancel, lease lost, timeout); see ``cancel_reason``."""
        with self._lock:  # cancel() sets it under the same lock: never made unset after the stop
            if self._cancelled is None:
                self._cancel_event = threading.Event()
                if self.cancel_reason is not None:
                    self._cancel_event.set()
                self._cancelled = CancelSignal(self._cancel_event)
            return self._cancelled

    # -- what task code calls ------------------------------------------------

    def checkpoint(self, data: Mapping[str, Any]) -> None:
        """Save a checkpoint: a resumed run of this slot receives it as ``checkpoint_data``."""
        if not isinstance(data, Mapping):
            raise TypeError(f"a checkpoint must be a mapping, got {type(data).__name__}")
        copy = _json_copy(data, "checkpoint data")
        with self._lock:
            self._checkpoint_data = copy
        self._report(Progress(checkpoint=copy))

    def update_step(self, step: str, details: Mapping[str, Any] | None = None) -> None:
        """Report the current step (``currentStep``) and its details (``statusDetails``)."""
        if not isinstance(step, str):
            raise TypeError(f"a step must be a string, got {type(step).__name__}")
        if details is not None and not isinstance(details, Mapping):
            raise TypeError(f"step details must be a mapping, got {type(details).__name__}")
        copy = None if details is None else _json_copy(details, "step details")
        self._report(Progress(step=step, details=copy))

    async def wait_cancelled(self) -> None:
        """Return once the run must stop."""
        if self.cancel_reason is None:
            await self.sleep_unless_stopped(None)

    # -- engine side -----------------------------------------------------------

    def sleep_unless_stopped(self, seconds: float | None) -> asyncio.Future[None]:
        """A future done after ``seconds`` (None: never), or as soon as the run must stop if that comes first.

        One timer and one future: ``asyncio.wait_for(self.wait_cancelled(), seconds)`` makes a
        task and raises TimeoutError for every run, about 50 us each; a thousand runs claimed
        ahead and due at one instant started 50 ms later from first to last for that alone.
        """
        gate = self._loop.create_future()
        if self.cancel_reason is not None:
            gate.set_result(None)
            return gate
        timer = None if seconds is None else self._loop.call_later(seconds, _open_gate, gate)

        def closed(_: asyncio.Future[None]) -> None:  # timed out, or its waiter cancelled, or the stop came
            if timer is not None:
                timer.cancel()
            if gate in self._stop_gates:  # not after a stop, which took the list: task code waiting
                self._stop_gates.remove(gate)  # in a loop (wait_for(wait_cancelled(), 1)) must not pile gates up

        gate.add_done_callback(closed)
        self._stop_gates.append(gate)
        return gate

    def _stopped_on_loop(self) -> None:
        gates, self._stop_gates = self._stop_gates, []
        for gate in gates:
            _open_gate(gate)

    def cancel(self, reason: Outcome) -> None:
        """Ask the run to stop. Idempotent: the first reason is the run's outcome."""
        if reason not in STOP_REASONS:
            raise ValueError(f"a run is stopped for one of {sorted(STOP_REASONS)}, not {reason!r}")
        with self._lock:
            if self.cancel_reason is not None:
                return
            self.cancel_reason = reason
            if self._cancel_event is not None:
                self._cancel_event.set()
        if self._on_loop_thread():
            self._stopped_on_loop()
        else:
            self._loop.call_soon_threadsafe(self._stopped_on_loop)

    @property
    def lease_deadline(self) -> float | None:
        """When the run's lease ends unless renewed, as a ``time.monotonic()`` instant (None: no lease).

        The engine's local estimate of the expiry the store wrote: the time just before
        the claim or renewal was asked for, plus the lease duration. It is never later
        than the store's expiry, from which a peer may claim the task.
        """
        return self._lease_deadline

    @property
    def lease_lapsed(self) -> bool:
        """Whether the deadline passed: a command's watchdog stops it then, and a peer may run the task."""
        return self._lease_deadline is not None and time.monotonic() >= self._lease_deadline

    def renew_lease(self, deadline: float) -> None:
        """The store extended the lease until ``deadline``; called on the loop.

        A renewal that comes once the deadline has passed changes nothing: a lapse is
        final, since the watchdog may already have stopped the run's command.
        """
        if self._lease_deadline is None or self.lease_lapsed or deadline <= self._lease_deadline:
            return
        self._lease_deadline = deadline
        for watcher in list(self._lease_watchers):
            watcher(deadline)

    def on_lease_renewed(self, watcher: Callable[[float], None]) -> Callable[[], None]:
        """Call ``watcher(deadline)`` at each renewal (on the loop); returns what stops it."""
        self._lease_watchers.append(watcher)
        return lambda: self._lease_watchers.remove(watcher)

    def leave_running(self, work: asyncio.Future) -> None:
        """The run stopped but its code did not: ``work`` settles when that code ends.

        Executors call this for what they cannot kill: a thread past its grace
        period, a coroutine that swallowed its cancel. The engine counts such code
        as stuck; each holds a run slot until it ends, so stuck code can never
        grow beyond the node's capacity, and the count is visible.
        """
        if self._on_left_running is not None:
            self._on_left_running(work)

    async def drain(self) -> None:
        """Wait until every report made so far has been passed to the sink."""
        with self._lock:
            target = self._reported
        if self._delivered >= target:
            return
        waiter = self._loop.create_future()
        self._drain_waiters.append((target, waiter))
        await waiter

    # -- delivery ----------------------------------------------------------------

    def _on_loop_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _report(self, progress: Progress) -> None:
        on_loop = self._on_loop_thread()
        # Delivery is the engine's work, not the run's: it must not run in the task code's context,
        # where what it logs would count as the run's output (``scheduler.capture``).
        engine_context = contextvars.Context()
        with self._lock:
            try:
                if on_loop:
                    self._loop.call_soon(self._enqueue, progress, context=engine_context)
                else:
                    self._loop.call_soon_threadsafe(self._enqueue, progress, context=engine_context)
            except RuntimeError:  # the loop is closed: the run is long over
                logger.warning("run %s: progress report after the run ended was dropped: %s", self._run_id, progress)
                return
            self._reported += 1

    def _enqueue(self, progress: Progress) -> None:
        self._pending.append(progress)
        if self._pump is None:
            self._pump = self._loop.create_task(self._deliver())

    async def _deliver(self) -> None:
        while self._pending:
            progress = self._pending.popleft()
            try:
                await self._sink(progress)
            except Exception:
                logger.exception("run %s: storing progress %s failed", self._run_id, progress)
            self._delivered += 1
            self._wake_drainers()
        self._pump = None

    def _wake_drainers(self) -> None:
        still_waiting = []
        for target, waiter in self._drain_waiters:
            if self._delivered >= target:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                still_waiting.append((target, waiter))
        self._drain_waiters = still_waiting


def run_timeout(ctx: RunContext) -> timedelta | None:
    return ctx.spec.run.timeout if ctx.spec.run is not None else None


async def wait_or_stop(ctx: RunContext, work: asyncio.Future, timeout: timedelta | None) -> bool:
    """Wait for ``work``, a cancel or the timeout. True when the run must stop.

    A timeout is recorded as ``ctx.cancel(Outcome.TIMEOUT)``; ``ctx.cancel_reason``
    then says why the run stops (an earlier cancel wins). Work that finished
    wins over a stop that arrived at the same time.
    """
    if work.done():
        return False
    # One future opened by whichever comes first, not asyncio.wait on a task waiting for the stop:
    # that made a task and three futures per run, about a tenth of a busy node's event loop.
    gate = ctx.sleep_unless_stopped(None if timeout is None else timeout.total_seconds())
    work.add_done_callback(lambda _: _open_gate(gate))
    await gate  # cancelled, it cancels its timer as well
    if work.done():
        return False
    ctx.cancel(Outcome.TIMEOUT)  # no-op when the run was cancelled first
    return True


def stop_message(ctx: RunContext) -> str:
    """Why a stopped run ended, for operators."""
    if ctx.cancel_reason is Outcome.TIMEOUT:
        timeout = run_timeout(ctx)
        return f"timed out after {timeout.total_seconds():g}s" if timeout else "timed out"
    if ctx.cancel_reason is Outcome.LEASE_LOST:
        return "stopped: the lease was lost (the task was taken over or deleted)"
    return "cancelled while running"


def text_tail(data: bytes, limit: int = OUTPUT_LIMIT) -> str:
    """The last ``limit`` bytes as text, not starting in the middle of a UTF-8 character."""
    if len(data) > limit:
        data = data[-limit:]
        skip = 0
        while skip < min(3, len(data)) and 0x80 <= data[skip] <= 0xBF:  # continuation bytes
            skip += 1
        data = data[skip:]
    return data.decode("utf-8", errors="replace")
