import gc
import threading
import weakref

from scheduler.executors.threads import Workers

from executor_support import eventually


async def test_an_idle_thread_is_reused():
    workers = Workers()
    seen = []
    workers.submit(lambda: seen.append(threading.get_ident()))
    await eventually(lambda: workers.idle == 1)
    workers.submit(lambda: seen.append(threading.get_ident()))
    await eventually(lambda: len(seen) == 2 and workers.idle == 1)
    assert seen[0] == seen[1]


async def test_a_blocked_function_does_not_hold_up_the_next_one():
    workers = Workers()
    release, second_ran = threading.Event(), threading.Event()
    workers.submit(lambda: release.wait(60))
    workers.submit(second_ran.set)
    await eventually(second_ran.is_set)
    release.set()
    await eventually(lambda: workers.idle == 2)


async def test_idle_threads_beyond_the_limit_or_timeout_end():
    workers = Workers(max_idle=1, idle_timeout=0.05, name="t-test")
    release = threading.Event()
    for _ in range(3):
        workers.submit(lambda: release.wait(60))
    release.set()
    await eventually(lambda: not any(t.name.startswith("t-test") for t in threading.enumerate()))
    assert workers.idle == 0


async def test_an_idle_thread_keeps_nothing_of_its_last_job():
    workers = Workers()

    class Payload:  # what a job reaches: for a run, its context, spec and state
        pass

    payload = Payload()
    gone = weakref.ref(payload)
    workers.submit(lambda payload=payload: None)
    del payload
    await eventually(lambda: workers.idle == 1)
    gc.collect()
    assert gone() is None
