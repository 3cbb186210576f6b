"""Targets for ``python:`` runs and entry points in the executor tests."""

import asyncio
import threading

from scheduler.executors import Execution
from scheduler.model import Outcome

calls = []
release = threading.Event()  # lets a test end a thread that ignored its cancel


def sync_job(ctx):
    calls.append(("sync", threading.current_thread() is threading.main_thread(), dict(ctx.parameters)))
    ctx.update_step("half", {"done": 1})
    ctx.checkpoint({"offset": 1})


async def async_job(ctx):
    await asyncio.sleep(0)
    ctx.checkpoint({"offset": 2})


def no_argument_job():
    calls.append("no-arg")


def wait_for_cancel(ctx):
    ctx.cancelled.wait(60)  # cooperative: returns as soon as the run is stopped
    calls.append(("stopped", ctx.cancel_reason))


def ignore_cancel(ctx):
    ctx.update_step("started")
    release.wait(60)


async def async_wait_forever(ctx):
    calls.append("async-started")
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        calls.append("async-cancelled")
        raise


def failing_job(ctx):
    raise ValueError("batch 3 is corrupt")


def exiting_job(ctx):
    raise SystemExit(3)


def returns_a_coroutine(ctx):
    return async_job(ctx)


class SyncExecutor:
    def execute(self, ctx):
        calls.append(("class", ctx.task_type))


class AsyncExecutor:
    async def execute(self, ctx):
        return Execution(Outcome.SUCCESS, output="from AsyncExecutor")


raise_on_import = None
