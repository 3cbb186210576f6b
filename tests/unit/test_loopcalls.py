"""Calls handed to an event loop from other threads (``scheduler.loopcalls``)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from scheduler import loopcalls


async def test_calls_from_many_threads_all_run_on_the_loop_each_thread_in_its_order():
    loop = asyncio.get_running_loop()
    seen: list[tuple[int, int, int]] = []
    done = asyncio.Event()
    threads, per_thread = 4, 500

    def record(thread: int, i: int) -> None:
        seen.append((thread, i, threading.get_ident()))
        if len(seen) == threads * per_thread:
            done.set()

    def hand_over(thread: int) -> None:
        for i in range(per_thread):
            loopcalls.call_soon(loop, record, thread, i)

    workers = [threading.Thread(target=hand_over, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    await asyncio.wait_for(done.wait(), 30)
    for worker in workers:
        worker.join(10)
    assert {ident for _, _, ident in seen} == {threading.get_ident()}
    for thread in range(threads):
        assert [i for t, i, _ in seen if t == thread] == list(range(per_thread))


async def test_a_call_that_raises_is_reported_and_the_calls_after_it_still_run():
    loop = asyncio.get_running_loop()
    reported, ran = [], asyncio.Event()
    loop.set_exception_handler(lambda _, context: reported.append(context["exception"]))
    try:
        def fail() -> None:
            raise ValueError("boom")

        def queue_both() -> None:
            loopcalls.call_soon(loop, fail)
            loopcalls.call_soon(loop, ran.set)

        await asyncio.to_thread(queue_both)
        await asyncio.wait_for(ran.wait(), 10)
    finally:
        loop.set_exception_handler(None)
    assert [str(error) for error in reported] == ["boom"]


def test_a_closed_loop_refuses_calls_as_call_soon_threadsafe_does():
    loop = asyncio.new_event_loop()
    loop.close()
    with pytest.raises(RuntimeError):
        loopcalls.call_soon(loop, print)
