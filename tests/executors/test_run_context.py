import asyncio
import logging
import threading
import time

import pytest

from scheduler.executors import Progress, RunContext
from scheduler.model import Outcome

from conftest import SLOT, make_spec


async def test_exposes_the_run_and_its_spec(make_ctx):
    ctx = make_ctx({"python": "m:f"}, type="dataSync", parameters={"batch": 10}, checkpoint={"offset": 3})
    assert (ctx.task_id, ctx.node_id, ctx.fence, ctx.attempt, ctx.scheduled_for) == ("job", "node-a", 7, 2, SLOT)
    assert ctx.task_type == "dataSync"
    assert ctx.parameters == {"batch": 10}
    assert ctx.checkpoint_data == {"offset": 3}
    with pytest.raises(TypeError):
        ctx.parameters["batch"] = 11


async def test_reports_reach_the_sink_in_order_and_drain_waits_for_them():
    delivered = []

    async def slow_sink(progress):
        await asyncio.sleep(0)  # a store write yields to the loop
        delivered.append(progress)

    ctx = RunContext(
        task_id="t", run_id="r", node_id="n", fence=1, scheduled_for=SLOT, attempt=1, spec=make_spec(),
        checkpoint_data=None, progress_sink=slow_sink, loop=asyncio.get_running_loop(),
    )
    ctx.update_step("load", {"rows": 1})
    ctx.checkpoint({"offset": 10})
    ctx.update_step("save")
    await ctx.drain()
    assert delivered == [
        Progress(step="load", details={"rows": 1}),
        Progress(checkpoint={"offset": 10}),
        Progress(step="save"),
    ]
    assert ctx.checkpoint_data == {"offset": 10}


async def test_reports_from_a_thread_keep_their_order(make_ctx):
    ctx = make_ctx()

    def work():
        for i in range(200):
            ctx.checkpoint({"i": i})

    await asyncio.to_thread(work)
    await ctx.drain()
    assert [p.checkpoint["i"] for p in ctx.reports] == list(range(200))
    assert ctx.checkpoint_data == {"i": 199}


async def test_checkpoint_is_a_copy_of_json_data(make_ctx):
    ctx = make_ctx()
    data = {"items": [1, 2]}
    ctx.checkpoint(data)
    data["items"].append(3)
    await ctx.drain()
    assert ctx.reports[0].checkpoint == {"items": [1, 2]}
    with pytest.raises(ValueError, match="checkpoint data must be JSON data"):
        ctx.checkpoint({"when": object()})
    with pytest.raises(TypeError, match="a checkpoint must be a mapping"):
        ctx.checkpoint([1, 2])
    with pytest.raises(TypeError, match="a step must be a string"):
        ctx.update_step(3)


async def test_a_failing_sink_is_logged_and_later_reports_still_arrive(caplog):
    delivered = []

    async def flaky_sink(progress):
        if progress.step == "bad":
            raise RuntimeError("store down")
        delivered.append(progress.step)

    ctx = RunContext(
        task_id="t", run_id="r-1", node_id="n", fence=1, scheduled_for=SLOT, attempt=1, spec=make_spec(),
        checkpoint_data=None, progress_sink=flaky_sink, loop=asyncio.get_running_loop(),
    )
    for step in ("one", "bad", "two"):
        ctx.update_step(step)
    with caplog.at_level(logging.ERROR):
        await ctx.drain()
    assert delivered == ["one", "two"]
    assert "run r-1: storing progress" in caplog.text and "store down" in caplog.text


async def test_cancel_keeps_the_first_reason_and_wakes_every_waiter(make_ctx):
    ctx = make_ctx()
    assert not ctx.cancelled.is_set() and ctx.cancel_reason is None
    thread_saw = []
    waiter = threading.Thread(target=lambda: thread_saw.append(ctx.cancelled.wait(30)))
    waiter.start()
    async_waiter = asyncio.ensure_future(ctx.wait_cancelled())
    await asyncio.to_thread(ctx.cancel, Outcome.LEASE_LOST)  # the engine may cancel from any thread
    ctx.cancel(Outcome.CANCELLED)
    await asyncio.wait_for(async_waiter, 10)
    await asyncio.to_thread(waiter.join, 10)
    assert thread_saw == [True]
    assert ctx.cancelled and ctx.cancel_reason is Outcome.LEASE_LOST


async def test_sleep_unless_stopped_ends_at_its_time(make_ctx):
    ctx = make_ctx()
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.wait_for(ctx.sleep_unless_stopped(0.05), timeout=10)
    assert loop.time() - began >= 0.05 and ctx.cancel_reason is None


@pytest.mark.parametrize("from_thread", [False, True])
async def test_a_stop_ends_sleep_unless_stopped_at_once(make_ctx, from_thread):
    ctx = make_ctx()
    gate = ctx.sleep_unless_stopped(3600)
    if from_thread:
        await asyncio.to_thread(ctx.cancel, Outcome.LEASE_LOST)
    else:
        ctx.cancel(Outcome.CANCELLED)
    await asyncio.wait_for(gate, timeout=10)  # an hour early
    assert ctx.sleep_unless_stopped(3600).done()  # stopped already: nothing to wait for


async def test_a_sleep_abandoned_by_its_waiter_does_not_break_a_later_stop(make_ctx):
    ctx = make_ctx()
    waiter = asyncio.ensure_future(ctx.sleep_unless_stopped(3600))
    await asyncio.sleep(0)
    waiter.cancel()  # the engine's run task cancelled while it waited
    with pytest.raises(asyncio.CancelledError):
        await waiter
    ctx.cancel(Outcome.CANCELLED)  # opens no gate twice, raises nothing
    await asyncio.wait_for(ctx.wait_cancelled(), timeout=10)


async def test_the_cancel_signal_first_looked_at_after_the_stop_is_set(make_ctx):
    ctx = make_ctx()
    ctx.cancel(Outcome.TIMEOUT)
    assert ctx.cancelled.is_set() and ctx.cancelled.wait(0) and ctx.cancelled is ctx.cancelled


async def test_task_code_waiting_for_its_stop_in_a_loop_leaves_nothing_behind(make_ctx):
    """``wait_for(ctx.wait_cancelled(), 0.01)`` again and again, as a run polls between steps:
    each abandoned wait is forgotten (a run of hours must not pile them up), and the stop still comes."""
    ctx = make_ctx()
    for _ in range(50):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ctx.wait_cancelled(), 0.001)
        await asyncio.wait_for(ctx.sleep_unless_stopped(0), 10)  # timed out on its own
    assert ctx._stop_gates == []
    waiting = asyncio.ensure_future(ctx.wait_cancelled())
    await asyncio.sleep(0)
    assert len(ctx._stop_gates) == 1
    ctx.cancel(Outcome.CANCELLED)
    await asyncio.wait_for(waiting, 10)


async def test_cancel_rejects_an_outcome_that_is_not_a_stop(make_ctx):
    ctx = make_ctx()
    with pytest.raises(ValueError):
        ctx.cancel(Outcome.SUCCESS)
    assert ctx.cancel_reason is None


async def test_a_renewal_pushes_the_lease_deadline_back_and_tells_the_watchers(make_ctx):
    ctx = make_ctx(lease_deadline=time.monotonic() + 30)
    seen = []
    stop_watching = ctx.on_lease_renewed(seen.append)
    later = time.monotonic() + 60
    ctx.renew_lease(later)
    stop_watching()
    ctx.renew_lease(later + 1)
    assert seen == [later] and ctx.lease_deadline == later + 1 and not ctx.lease_lapsed


async def test_a_lapsed_lease_stays_lapsed(make_ctx):
    """From the deadline on, the watchdog may have stopped the command: a late renewal cannot undo that."""
    ctx = make_ctx(lease_deadline=time.monotonic() - 0.1)
    seen = []
    ctx.on_lease_renewed(seen.append)
    ctx.renew_lease(time.monotonic() + 60)
    assert ctx.lease_lapsed and seen == []


async def test_a_run_without_a_lease_never_lapses(make_ctx):
    ctx = make_ctx()
    ctx.renew_lease(time.monotonic() + 60)
    assert ctx.lease_deadline is None and not ctx.lease_lapsed
