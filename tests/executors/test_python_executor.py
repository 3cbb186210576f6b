import asyncio
import logging

import pytest

import executor_jobs
from executor_jobs import AsyncExecutor, SyncExecutor, calls
from scheduler.executors import Progress, PythonExecutor, executor_from_callable
from scheduler.model import Outcome

from conftest import make_spec
from tests.support.wait import wait_for


@pytest.fixture(autouse=True)
def fresh_calls():
    calls.clear()
    executor_jobs.release.clear()
    yield
    executor_jobs.release.set()


@pytest.fixture
def python():
    return PythonExecutor(grace_period=0.3)


async def test_a_sync_function_runs_in_a_thread_with_the_context(make_ctx, python):
    ctx = make_ctx({"python": "executor_jobs:sync_job"}, parameters={"batch": 5})
    result = await python.execute(ctx)
    await ctx.drain()
    assert result.outcome is Outcome.SUCCESS and result.error is None
    assert calls == [("sync", False, {"batch": 5})]
    assert ctx.reports == [Progress(step="half", details={"done": 1}), Progress(checkpoint={"offset": 1})]


async def test_a_coroutine_function_is_awaited(make_ctx, python):
    ctx = make_ctx({"python": "executor_jobs:async_job"})
    result = await python.execute(ctx)
    assert result.outcome is Outcome.SUCCESS
    assert ctx.checkpoint_data == {"offset": 2}


async def test_a_function_without_parameters_is_called_without_the_context(make_ctx):
    result = await executor_from_callable(executor_jobs.no_argument_job).execute(make_ctx())
    assert result.outcome is Outcome.SUCCESS and calls == ["no-arg"]


@pytest.mark.parametrize(
    ("obj", "outcome", "output"),
    [
        (SyncExecutor(), Outcome.SUCCESS, ""),
        (AsyncExecutor(), Outcome.SUCCESS, "from AsyncExecutor"),  # its Execution is kept
        (lambda ctx: None, Outcome.SUCCESS, ""),
    ],
)
async def test_objects_with_an_execute_method_and_lambdas(make_ctx, obj, outcome, output):
    result = await executor_from_callable(obj).execute(make_ctx(type="report"))
    assert (result.outcome, result.output) == (outcome, output)


async def test_a_raised_exception_is_a_failure_with_its_traceback(make_ctx, python):
    result = await python.execute(make_ctx({"python": "executor_jobs:failing_job"}))
    assert (result.outcome, result.error) == (Outcome.FAILURE, "ValueError: batch 3 is corrupt")
    assert 'raise ValueError("batch 3 is corrupt")' in result.output


async def test_sys_exit_fails_the_run_not_the_node(make_ctx, python):
    result = await python.execute(make_ctx({"python": "executor_jobs:exiting_job"}))
    assert (result.outcome, result.error) == (Outcome.FAILURE, "SystemExit: 3")


async def test_a_plain_function_returning_a_coroutine_is_a_clear_failure(make_ctx, python):
    result = await python.execute(make_ctx({"python": "executor_jobs:returns_a_coroutine"}))
    assert result.outcome is Outcome.FAILURE
    assert result.error == "returns_a_coroutine is a plain function that returned an awaitable: declare it with 'async def'"


async def test_timeout_sets_the_cancel_signal_of_a_cooperative_function(make_ctx, python):
    ctx = make_ctx({"python": "executor_jobs:wait_for_cancel", "timeout": "200ms"})
    result = await python.execute(ctx)
    assert (result.outcome, result.error) == (Outcome.TIMEOUT, "timed out after 0.2s")
    assert calls == [("stopped", Outcome.TIMEOUT)], "the function noticed the stop and returned within the grace"


async def test_cancel_returns_after_the_grace_period_when_the_thread_ignores_it(make_ctx, python, caplog):
    def cancel_when_started(ctx, progress):
        ctx.cancel(Outcome.CANCELLED)

    ctx = make_ctx({"python": "executor_jobs:ignore_cancel"}, on_report=cancel_when_started)
    with caplog.at_level(logging.WARNING):
        result = await python.execute(ctx)
    assert (result.outcome, result.error) == (Outcome.CANCELLED, "cancelled while running")
    assert "thread of ignore_cancel still running 0.3s after the stop" in caplog.text


async def test_a_stopped_coroutine_is_cancelled(make_ctx, python):
    ctx = make_ctx({"python": "executor_jobs:async_wait_forever"})
    execution = asyncio.ensure_future(python.execute(ctx))
    await wait_for(lambda: asyncio.sleep(0, calls), lambda c: c == ["async-started"])  # loaded in a thread first
    ctx.cancel(Outcome.LEASE_LOST)
    result = await execution
    assert (result.outcome, result.error) == (
        Outcome.LEASE_LOST,
        "stopped: the lease was lost (the task was taken over or deleted)",
    )
    assert calls == ["async-started", "async-cancelled"]


async def test_a_target_is_loaded_off_the_loop_within_the_run_timeout_then_kept(make_ctx, python):
    first = make_ctx({"python": "blocking_import_jobs:job", "timeout": "200ms"})
    result = await python.execute(first)  # the loop runs on while the import blocks: the timeout fires
    assert (result.outcome, result.error) == (Outcome.TIMEOUT, "timed out after 0.2s")
    assert calls == ["importing"]

    executor_jobs.release.set()  # the import ends in its thread; the next run finds the target loaded
    await wait_for(lambda: python.execute(make_ctx({"python": "blocking_import_jobs:job"})),
                   lambda result: result.outcome is Outcome.SUCCESS)
    assert calls == ["importing", "ran"]


async def test_a_callable_executor_abandoned_by_the_engine_cancels_its_function(make_ctx):
    ctx = make_ctx(on_report=lambda ctx, progress: execution.cancel())  # gives up once the thread runs
    execution = asyncio.ensure_future(executor_from_callable(executor_jobs.ignore_cancel).execute(ctx))
    with pytest.raises(asyncio.CancelledError):
        await execution
    assert ctx.cancelled.is_set() and ctx.cancel_reason is Outcome.CANCELLED


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("no_such_module:job", "cannot load python target 'no_such_module:job': ModuleNotFoundError: No module named 'no_such_module'"),
        ("executor_jobs:missing", "cannot load python target 'executor_jobs:missing': AttributeError: module 'executor_jobs' has no attribute 'missing'"),
        ("broken_jobs:job", "cannot load python target 'broken_jobs:job': RuntimeError: broken at import"),
        ("executor_jobs:raise_on_import", "cannot load python target 'executor_jobs:raise_on_import': TypeError: an executor must be callable or have an execute(ctx) method, got None"),
    ],
)
async def test_a_target_that_cannot_be_loaded_is_a_failed_run(make_ctx, python, target, error):
    result = await python.execute(make_ctx(spec=make_spec({"python": target})))
    assert (result.outcome, result.error) == (Outcome.FAILURE, error)


def test_a_class_is_refused_with_a_clear_error():
    with pytest.raises(TypeError, match="got the class SyncExecutor: pass an instance"):
        executor_from_callable(SyncExecutor)
