"""Calls from other threads onto an event loop: one wake-up for as many calls as queue up meanwhile.

``loop.call_soon_threadsafe`` writes a byte to the loop's self-pipe for every
call: a system call in the calling thread (about 28 us measured in the store's
writer), then a read and a pass of the loop. The threads that hand results to
a loop at the rate runs end (the store's writer settling a commit's writes,
worker threads returning what a run's function returned) call ``call_soon``
instead. Calls queue per loop; only the call that finds the queue empty wakes
the loop, which then makes every queued call, in the order they were queued.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import weakref
from typing import Any, Callable


class _Queue:
    """The calls waiting for one loop. Holds no reference to the loop: the registry's key must stay weak."""

    __slots__ = ("calls", "lock")

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.lock = threading.Lock()

    def run_all(self) -> None:
        """On the loop: every call queued until now; one that raises is reported as a failed callback is."""
        with self.lock:
            calls, self.calls = self.calls, []
        for fn, args in calls:
            try:
                fn(*args)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                asyncio.get_running_loop().call_exception_handler(
                    {"message": f"Exception in callback {fn!r}", "exception": exc}
                )


_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = weakref.WeakKeyDictionary()
_queues_lock = threading.Lock()


def call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    """``fn(*args)`` on ``loop`` soon, from any thread, after the calls queued before it.

    Raises RuntimeError, as ``call_soon_threadsafe`` does, when the loop is closed.
    The call runs in an empty context, as one made by a thread of its own would.
    """
    queue = _queues.get(loop)
    if queue is None:
        with _queues_lock:
            queue = _queues.setdefault(loop, _Queue())
    if loop.is_closed():
        raise RuntimeError("Event loop is closed")
    with queue.lock:
        queue.calls.append((fn, args))
        if len(queue.calls) > 1:  # the first call's wake-up is on its way and will make this one too
            return
    try:
        loop.call_soon_threadsafe(queue.run_all, context=contextvars.Context())
    except RuntimeError:  # closed just now: nothing queued for it will ever run
        with queue.lock:
            queue.calls.clear()
        raise
