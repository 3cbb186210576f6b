"""Threads for user functions, apart from the loop's default executor.

A function that blocks or ignores its cancel must never hold a thread that the
engine or the store needs, nor leave later runs queued behind it. So each call
gets a thread of its own: an idle one when there is one (starting a thread
costs a few hundred microseconds, too much for a no-op task), otherwise a new
one. A thread that never returns holds only itself. Idle threads beyond
``max_idle``, or idle for ``idle_timeout`` seconds, end.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from typing import Callable

logger = logging.getLogger(__name__)

Job = Callable[[], None]


class Workers:
    def __init__(self, *, max_idle: int = 32, idle_timeout: float = 60.0, name: str = "task") -> None:
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._name = name
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._numbers = itertools.count(1)

    @property
    def idle(self) -> int:
        with self._lock:
            return len(self._idle)

    def submit(self, job: Job) -> None:
        """Run ``job`` (which must not raise) in an idle thread or a new one."""
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is None:
            worker = _Worker(self, f"{self._name}-{next(self._numbers)}")
        worker.jobs.put(job)

    def _park(self, worker: _Worker) -> bool:
        """Make ``worker`` idle again; False when it should end instead."""
        with self._lock:
            if len(self._idle) >= self.max_idle:
                return False
            self._idle.append(worker)
            return True

    def _retire(self, worker: _Worker) -> bool:
        """An idle worker timed out: True if it left the idle list (no job can reach it now)."""
        with self._lock:
            if worker in self._idle:
                self._idle.remove(worker)
                return True
            return False  # taken by submit just now: its job is on the way


class _Worker:
    def __init__(self, workers: Workers, name: str) -> None:
        self.jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._workers = workers
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def _loop(self) -> None:
        job = self.jobs.get()
        while True:
            job()
            # An idle thread must not keep its last job alive: a run's function, its context and
            # all they reach would stay in memory as long as the thread waits (32 such threads).
            del job
            if not self._workers._park(self):
                return
            try:
                job = self.jobs.get(timeout=self._workers.idle_timeout)
            except queue.Empty:
                if self._workers._retire(self):
                    return
                job = self.jobs.get()


default_workers = Workers()
