"""The ``python`` executor and the wrapper that turns any user callable into an executor.

A coroutine function is awaited on the loop; a plain function runs in a thread
of its own. Returning means success, raising means failure.

Stopping (timeout, cancel, lease lost) is the hard part for a thread: Python
cannot kill one. The run's ``ctx.cancelled`` is set and the function gets the
grace period to notice it and return; after that the executor returns the stop
outcome anyway and the thread is left to finish in the background (logged as a
warning, and counted as stuck: it holds one of the node's run slots until it
returns, see ``RunContext.leave_running``). The trade-off: the engine can record the cancel and free the task
(waiting could keep a task RUNNING forever), but a function that ignores
``ctx.cancelled`` keeps running beside whatever runs next, and its late
progress reports are fenced out by the store. Long-running sync functions
should check ``ctx.cancelled`` between units of work. A coroutine is
cancelled with ``task.cancel()`` and gets the same grace period to unwind.

Sync functions run in threads of their own (``threads.Workers``), not in the
loop's default executor: user code that blocks or ignores a cancel must never
starve the threads the engine and the store rely on.

What the function prints and logs (and what its module prints when the first run
imports it) is the run's output, kept as a command's is (``scheduler.capture``):
each run writes to its own ``RunOutput``, so code still running after its run
was stopped never writes into another run's record.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import time
import traceback
from datetime import timedelta
from typing import Any, Callable

from .. import capture, loopcalls
from ..model import Outcome
from ..targets import import_target
from .base import OUTPUT_LIMIT, Execution, RunContext, run_timeout, stop_message, text_tail, wait_or_stop
from .threads import default_workers

logger = logging.getLogger(__name__)

DEFAULT_GRACE = 10.0  # seconds a stopped function gets to return


def executor_from_callable(fn: Any, *, grace_period: float = DEFAULT_GRACE) -> CallableExecutor:
    """Wrap a user callable, or an object with an ``execute(ctx)`` method (sync or async).

    A callable that takes no parameters is called without the context (Unomi's
    ``withSimpleExecutor(() -> ...)``), any other with it. Returning means success
    (an ``Execution`` returned is used as it is), raising means failure.
    """
    if inspect.isclass(fn):  # calling a class would build an instance, not run a task
        raise TypeError(f"expected an executor or a function, got the class {fn.__qualname__}: pass an instance")
    target = getattr(fn, "execute", None) if not inspect.isroutine(fn) else None
    if target is None:
        target = fn
    if not callable(target):
        raise TypeError(f"an executor must be callable or have an execute(ctx) method, got {fn!r}")
    return CallableExecutor(target, grace_period=grace_period)


class CallableExecutor:
    """Runs one user callable per execution; see the module docstring for how it stops."""

    def __init__(self, fn: Callable[..., Any], *, grace_period: float = DEFAULT_GRACE) -> None:
        self.fn = fn
        self.grace_period = grace_period
        self._takes_context = _takes_context(fn)
        self._is_async = _is_coroutine_function(fn)

    def __repr__(self) -> str:
        return f"CallableExecutor({_name(self.fn)})"

    async def execute(self, ctx: RunContext) -> Execution:
        return await self.call(ctx, run_timeout(ctx))

    async def call(self, ctx: RunContext, timeout: timedelta | None, output: capture.RunOutput | None = None) -> Execution:
        """One execution, stopped after ``timeout`` (what is left of the run's); ``output``: the run's
        output so far (what loading the target printed), else a new one."""
        args = (ctx,) if self._takes_context else ()
        if output is None:
            output = new_output()
        if self._is_async:
            try:
                work = _start_coroutine(self.fn, args, output)
            except Exception as exc:  # e.g. a signature that does not accept the context
                return with_output(_failure(exc), output)
        else:
            work = _start_thread(self.fn, args, ctx, output)
        try:
            stopped = await wait_or_stop(ctx, work, timeout)
        except asyncio.CancelledError:  # the engine abandoned this run: the function must stop too
            ctx.cancel(Outcome.CANCELLED)
            work.cancel()
            raise
        if not stopped:
            return with_output(_outcome_of(work, self.fn), output)
        if self._is_async:
            work.cancel()
        await asyncio.wait({work}, timeout=self.grace_period)
        if not work.done():
            kind = "coroutine" if self._is_async else "thread"
            logger.warning(
                "run %s: %s of %s still running %gs after the stop; it is left to finish in the background",
                ctx.run_id, kind, _name(self.fn), self.grace_period,
            )
            ctx.leave_running(work)
        elif not work.cancelled() and work.exception() is not None:
            logger.info("run %s: stopped function raised %r", ctx.run_id, work.exception())
        return with_output(Execution(ctx.cancel_reason, error=stop_message(ctx)), output)


class PythonExecutor:
    """Runs ``spec.run.python`` (``module:function``), loaded when its first run starts.

    Loading a target runs its module's import-time code, which is user code and
    may block (a connection, a sleep): it runs in a worker thread, never on the
    loop, within the run's timeout. A loaded target is kept, so later runs call
    it at once; a target that failed to load is tried again by the next run.
    """

    def __init__(self, *, grace_period: float = DEFAULT_GRACE) -> None:
        self.grace_period = grace_period
        self._loaded: dict[str, CallableExecutor] = {}

    async def execute(self, ctx: RunContext) -> Execution:
        target = ctx.spec.run.python if ctx.spec.run is not None else None
        if not target:
            return Execution(Outcome.FAILURE, error=f"task {ctx.task_id!r} has no python target")
        timeout = run_timeout(ctx)
        output = new_output()
        executor = self._loaded.get(target)
        if executor is None:
            began = time.monotonic()
            loading = _start_thread(self._load, (target,), ctx, output)
            if await wait_or_stop(ctx, loading, timeout):
                logger.warning("run %s: python target %r was still loading when the run stopped", ctx.run_id, target)
                ctx.leave_running(loading)
                return with_output(Execution(ctx.cancel_reason, error=stop_message(ctx)), output)
            try:
                executor = loading.result()
            except (Exception, SystemExit) as exc:  # an import runs arbitrary module code: any error is the target's
                failure = _failure(exc)
                failure = dataclasses.replace(failure, error=f"cannot load python target {target!r}: {failure.error}")
                return with_output(failure, output)
            if timeout is not None:
                timeout = max(timedelta(0), timeout - timedelta(seconds=time.monotonic() - began))
        return await executor.call(ctx, timeout, output)

    def _load(self, target: str) -> CallableExecutor:
        """In a worker thread: import the target and wrap it."""
        executor = executor_from_callable(import_target(target), grace_period=self.grace_period)
        self._loaded[target] = executor
        return executor


def new_output() -> capture.RunOutput:
    """A run's own output, with the capture in place (``scheduler.capture``)."""
    capture.install()
    return capture.RunOutput(OUTPUT_LIMIT)


def with_output(execution: Execution, output: capture.RunOutput) -> Execution:
    """``execution`` with what the run wrote before its own output (a traceback, an executor's text), cut to the tail."""
    written = output.data()
    if not written:
        return execution
    return dataclasses.replace(execution, output=text_tail(written + execution.output.encode(), OUTPUT_LIMIT))


def _outcome_of(work: asyncio.Future, fn: Callable[..., Any]) -> Execution:
    try:
        result = work.result()
    except (Exception, SystemExit) as exc:  # sys.exit() in a task fails the run, not the node
        return _failure(exc)
    if isinstance(result, Execution):  # an executor written to the protocol decides its own outcome
        return result
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()  # never awaited, on purpose
        return Execution(
            Outcome.FAILURE,
            error=f"{_name(fn)} is a plain function that returned an awaitable: declare it with 'async def'",
        )
    return Execution(Outcome.SUCCESS)


def _failure(exc: BaseException) -> Execution:
    output = "".join(traceback.format_exception(exc)).encode()
    return Execution(Outcome.FAILURE, output=text_tail(output, OUTPUT_LIMIT), error=f"{type(exc).__name__}: {exc}")


def _start_coroutine(fn: Callable[..., Any], args: tuple, output: capture.RunOutput) -> asyncio.Future:
    """Run the coroutine ``fn(*args)`` as a task of its own, writing to ``output``."""
    awaitable = fn(*args)
    if not asyncio.iscoroutine(awaitable):  # an object whose __call__ returns some other awaitable
        return asyncio.ensure_future(awaitable)
    return asyncio.get_running_loop().create_task(awaitable, context=capture.run_context(output))


def _start_thread(fn: Callable[..., Any], args: tuple, ctx: RunContext, output: capture.RunOutput) -> asyncio.Future:
    """Run ``fn(*args)`` in a worker thread, writing to ``output``; the returned future settles on the loop."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    context = capture.run_context(output)

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():  # nobody waits any more: the run was stopped
            if error is not None:
                logger.warning("run %s: abandoned function %s raised %r", ctx.run_id, _name(fn), error)
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    def body() -> None:
        try:
            result, error = context.run(fn, *args), None
        except BaseException as exc:  # handed over to the loop, which decides
            result, error = None, exc
        try:
            loopcalls.call_soon(loop, settle, result, error)
        except RuntimeError:  # the loop is closed: the node has shut down meanwhile
            logger.warning("run %s: function %s returned after its node's loop closed", ctx.run_id, _name(fn))

    default_workers.submit(body)
    return future


def _takes_context(fn: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature: give them the context
        return True
    return any(p.kind is not inspect.Parameter.VAR_KEYWORD for p in parameters)


def _is_coroutine_function(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
